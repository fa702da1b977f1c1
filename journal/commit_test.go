package journal

import (
	"context"
	"errors"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// memWriter is an in-memory batchWriter that takes a while per batch, as a
// commit does, and records each batch.
type memWriter struct {
	mu      sync.Mutex
	head    int64
	batches [][]Entry
	delay   time.Duration
	fail    func(entries []Entry) error
}

func (w *memWriter) writeBatch(ctx context.Context, entries []Entry, expect int64) (int64, error) {
	time.Sleep(w.delay)
	w.mu.Lock()
	defer w.mu.Unlock()
	if w.fail != nil {
		if err := w.fail(entries); err != nil {
			return 0, err
		}
	}
	if expect >= 0 && expect != w.head {
		return 0, ErrConflict
	}
	w.batches = append(w.batches, entries)
	first := w.head + 1
	w.head += int64(len(entries))
	return first, nil
}

func TestCommitterCoalesces(t *testing.T) {
	w := &memWriter{delay: 2 * time.Millisecond}
	c := newCommitter(w, time.Minute)
	defer c.close(context.Background())
	const goroutines, each = 16, 20
	var wg sync.WaitGroup
	got := make(chan int64, goroutines*each)
	for range goroutines {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for range each {
				revs, err := c.append(context.Background(), -1, []Entry{{Producer: "p"}})
				assert.NoError(t, err)
				got <- revs[0]
			}
		}()
	}
	wg.Wait()
	close(got)
	seen := map[int64]bool{}
	for r := range got {
		require.False(t, seen[r], "revision %d handed out twice", r)
		seen[r] = true
	}
	require.Len(t, seen, goroutines*each)
	st := c.statsSnapshot()
	require.EqualValues(t, goroutines*each, st.Appends)
	require.EqualValues(t, goroutines*each, st.Records)
	require.Less(t, st.Batches, st.Appends/2, "appends waiting during a commit share the next one")
}

func TestCommitterConditionalAlone(t *testing.T) {
	w := &memWriter{delay: time.Millisecond}
	c := newCommitter(w, time.Minute)
	defer c.close(context.Background())
	var wg sync.WaitGroup
	for i := range 20 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			if i%4 == 0 {
				_, err := c.append(context.Background(), 1_000_000, []Entry{{Producer: "cond"}})
				assert.ErrorIs(t, err, ErrConflict)
				return
			}
			_, err := c.append(context.Background(), -1, []Entry{{Producer: "plain"}})
			assert.NoError(t, err)
		}()
	}
	wg.Wait()
	for _, b := range w.batches {
		for _, e := range b {
			require.Equal(t, "plain", e.Producer, "a failed conditional append wrote nothing and shared no batch")
		}
	}
}

func TestCommitterBatchLimits(t *testing.T) {
	w := &memWriter{delay: 5 * time.Millisecond}
	c := newCommitter(w, time.Minute)
	defer c.close(context.Background())
	big := make([]Entry, MaxAppendEntries)
	for i := range big {
		big[i] = Entry{Producer: "p"}
	}
	var wg sync.WaitGroup
	for range 4 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			revs, err := c.append(context.Background(), -1, big)
			assert.NoError(t, err)
			for k := 1; k < len(revs); k++ {
				assert.Equal(t, revs[k-1]+1, revs[k], "one append's revisions are consecutive")
			}
		}()
	}
	wg.Wait()
	for _, b := range w.batches {
		require.LessOrEqual(t, len(b), MaxAppendEntries, "no batch exceeds the limit")
	}
}

func TestCommitterFailedBatch(t *testing.T) {
	boom := errors.New("boom")
	w := &memWriter{delay: 2 * time.Millisecond, fail: func(entries []Entry) error {
		for _, e := range entries {
			if e.Producer == "poison" {
				return boom
			}
		}
		return nil
	}}
	c := newCommitter(w, time.Minute)
	defer c.close(context.Background())
	_, err := c.append(context.Background(), -1, []Entry{{Producer: "poison"}})
	require.ErrorIs(t, err, boom, "every append of a failed batch gets its error")
	revs, err := c.append(context.Background(), -1, []Entry{{Producer: "ok"}})
	require.NoError(t, err)
	require.Equal(t, []int64{1}, revs, "a failed batch consumed no revisions")
	require.EqualValues(t, 1, c.statsSnapshot().FailedBatches)
}

func TestCommitterClose(t *testing.T) {
	c := newCommitter(&memWriter{}, time.Minute)
	require.NoError(t, c.close(context.Background()))
	require.NoError(t, c.close(context.Background()))
	_, err := c.append(context.Background(), -1, []Entry{{Producer: "p"}})
	require.ErrorIs(t, err, ErrClosed)
}

// prepWriter is a memWriter that must prepare before each batch (as the SQL
// journal takes a connection): prepare waits until released or until its
// context ends.
type prepWriter struct {
	memWriter
	entered chan struct{} // receives when prepare starts waiting
	release chan struct{}
}

func (w *prepWriter) prepare(ctx context.Context) error {
	w.entered <- struct{}{}
	select {
	case <-w.release:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}

// TestCommitterGivesUpPreparing: nothing is sent while a batch waits for
// its writer to prepare, so an append whose context ends meanwhile gets
// its context's error and is left out of the batch, and when every append
// of the batch has ended, the committer stops waiting and writes nothing.
func TestCommitterGivesUpPreparing(t *testing.T) {
	req := func(ctx context.Context, producer string) *appendReq {
		return &appendReq{ctx: ctx, entries: []Entry{{Producer: producer}}, expect: -1, res: make(chan appendRes, 1)}
	}
	entered := func(w *prepWriter) {
		t.Helper()
		select {
		case <-w.entered:
		case <-time.After(10 * time.Second):
			t.Fatal("the committer did not prepare the writer")
		}
	}

	w := &prepWriter{entered: make(chan struct{}, 1), release: make(chan struct{})}
	c := &committer{w: w, batchTimeout: time.Minute}
	ctx1, cancel1 := context.WithCancel(context.Background())
	ctx2, cancel2 := context.WithCancel(context.Background())
	r1, r2 := req(ctx1, "one"), req(ctx2, "two")
	done := make(chan struct{})
	go func() { defer close(done); c.write([]*appendReq{r1, r2}, 2) }()
	entered(w)
	cancel1()
	cancel2()
	select { // release is never closed: prepare must give up
	case <-done:
	case <-time.After(10 * time.Second):
		t.Fatal("the committer still waits for the writer after every append ended")
	}
	require.ErrorIs(t, (<-r1.res).err, context.Canceled)
	require.ErrorIs(t, (<-r2.res).err, context.Canceled)
	require.Empty(t, w.batches, "nothing was sent")
	require.Zero(t, c.statsSnapshot().FailedBatches, "a batch nobody waits for is not a failure")

	ctx3, cancel3 := context.WithCancel(context.Background())
	defer cancel3()
	r3, r4 := req(context.Background(), "three"), req(ctx3, "four")
	done = make(chan struct{})
	go func() { defer close(done); c.write([]*appendReq{r3, r4}, 2) }()
	entered(w)
	cancel3()
	close(w.release)
	<-done
	require.ErrorIs(t, (<-r4.res).err, context.Canceled)
	res := <-r3.res
	require.NoError(t, res.err)
	require.Equal(t, []int64{1}, res.revs)
	require.Equal(t, [][]Entry{{{Producer: "three"}}}, w.batches, "only the append still waiting was sent")
}
