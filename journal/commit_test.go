package journal

import (
	"context"
	"errors"
	"sync"
	"sync/atomic"
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

func newPrepWriter() *prepWriter {
	return &prepWriter{entered: make(chan struct{}, 1), release: make(chan struct{})}
}

func (w *prepWriter) prepared() bool { return false }

func (w *prepWriter) prepare(ctx context.Context) error {
	w.entered <- struct{}{}
	select {
	case <-w.release:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}

// readyWriter is a memWriter that is always prepared: the committer must
// not call its prepare.
type readyWriter struct {
	memWriter
	prepares atomic.Int64
}

func (w *readyWriter) prepared() bool { return true }

func (w *readyWriter) prepare(context.Context) error {
	w.prepares.Add(1)
	return nil
}

// TestCommitterSkipsPrepareWhenPrepared: a writer that holds what it needs
// (the SQL journal its connection) costs a batch no prepare, nor the
// per-append callbacks around it.
func TestCommitterSkipsPrepareWhenPrepared(t *testing.T) {
	w := &readyWriter{}
	c := newCommitter(w, time.Minute)
	defer c.close(context.Background())
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	for i := range 3 {
		revs, err := c.append(ctx, -1, []Entry{{Producer: "p"}})
		require.NoError(t, err)
		require.Equal(t, []int64{int64(i + 1)}, revs)
	}
	require.Zero(t, w.prepares.Load())
}

// waitPreparing waits until the committer prepares w.
func waitPreparing(t *testing.T, w *prepWriter) {
	t.Helper()
	select {
	case <-w.entered:
	case <-time.After(10 * time.Second):
		t.Fatal("the committer did not prepare the writer")
	}
}

// pendingReq returns an append request as submit hands it to the
// committer.
func pendingReq(ctx context.Context, producer string) *appendReq {
	return &appendReq{ctx: ctx, entries: []Entry{{Producer: producer}}, expect: -1, res: make(chan appendRes, 1)}
}

// answer waits for r's answer; why says what it waits for.
func answer(t *testing.T, r *appendReq, why string) appendRes {
	t.Helper()
	select {
	case res := <-r.res:
		return res
	case <-time.After(10 * time.Second):
		t.Fatal(why)
		return appendRes{}
	}
}

// requireAnsweredOnce fails if r got a second answer.
func requireAnsweredOnce(t *testing.T, r *appendReq) {
	t.Helper()
	select {
	case res := <-r.res:
		t.Fatalf("an append was answered twice (again with %v)", res.err)
	default:
	}
}

// TestCommitterGivesUpPreparing: nothing is sent while a batch waits for
// its writer to prepare, so an append whose context ends meanwhile gets
// its context's error at once and is left out of the batch, and when every
// append of the batch has ended, the committer stops waiting and writes
// nothing.
func TestCommitterGivesUpPreparing(t *testing.T) {
	w := newPrepWriter()
	c := newCommitter(w, time.Minute)
	defer c.close(context.Background())
	ctx1, cancel1 := context.WithCancel(context.Background())
	ctx2, cancel2 := context.WithCancel(context.Background())
	r1, r2 := pendingReq(ctx1, "one"), pendingReq(ctx2, "two")
	done := make(chan struct{})
	go func() { defer close(done); c.write([]*appendReq{r1, r2}, 2) }()
	waitPreparing(t, w)
	cancel1()
	require.ErrorIs(t, answer(t, r1, "an append whose context ended waits for its batch's writer to prepare").err, context.Canceled)
	select {
	case <-done:
		t.Fatal("the committer gave up preparing while an append of its batch still waits")
	default:
	}
	cancel2()
	select { // release is never closed: prepare must give up
	case <-done:
	case <-time.After(10 * time.Second):
		t.Fatal("the committer still waits for the writer after every append ended")
	}
	require.ErrorIs(t, (<-r2.res).err, context.Canceled)
	requireAnsweredOnce(t, r1)
	requireAnsweredOnce(t, r2)
	require.Empty(t, w.batches, "nothing was sent")
	require.Zero(t, c.statsSnapshot().FailedBatches, "a batch nobody waits for is not a failure")

	ctx3, cancel3 := context.WithCancel(context.Background())
	defer cancel3()
	r3, r4 := pendingReq(context.Background(), "three"), pendingReq(ctx3, "four")
	done = make(chan struct{})
	go func() { defer close(done); c.write([]*appendReq{r3, r4}, 2) }()
	waitPreparing(t, w)
	cancel3()
	require.ErrorIs(t, answer(t, r4, "an append whose context ended waits for its batch's writer to prepare").err, context.Canceled)
	close(w.release)
	<-done
	requireAnsweredOnce(t, r4)
	res := <-r3.res
	require.NoError(t, res.err)
	require.Equal(t, []int64{1}, res.revs)
	require.Equal(t, [][]Entry{{{Producer: "three"}}}, w.batches, "only the append still waiting was sent")
}

// TestCommitterAnswersEndedAppendWhilePreparing: an append whose context
// ends while its batch waits for the writer to prepare (the SQL journal
// waiting for a connection from a busy pool) is answered at once, also
// when another append of the batch has no deadline and keeps the batch
// waiting; the batch then sends only that other append.
func TestCommitterAnswersEndedAppendWhilePreparing(t *testing.T) {
	w := newPrepWriter()
	c := newCommitter(w, time.Minute)
	defer c.close(context.Background())
	ctx1, cancel1 := context.WithCancel(context.Background())
	defer cancel1()
	ctx3, cancel3 := context.WithCancel(context.Background())
	defer cancel3()
	r1, r2, r3 := pendingReq(ctx1, "one"), pendingReq(context.Background(), "two"), pendingReq(ctx3, "three")
	done := make(chan struct{})
	go func() { defer close(done); c.write([]*appendReq{r1, r2, r3}, 3) }()
	waitPreparing(t, w)

	cancel1()
	require.ErrorIs(t, answer(t, r1, "an append whose context ended waits until its batch's writer has prepared").err, context.Canceled)
	cancel3()
	require.ErrorIs(t, answer(t, r3, "an append whose context ended waits until its batch's writer has prepared").err, context.Canceled)
	select {
	case <-done:
		t.Fatal("the committer gave up preparing while an append of its batch still waits")
	default:
	}

	close(w.release)
	res := answer(t, r2, "the append still waiting was not answered once the writer had prepared")
	require.NoError(t, res.err)
	require.Equal(t, []int64{1}, res.revs)
	<-done
	requireAnsweredOnce(t, r1)
	requireAnsweredOnce(t, r2)
	requireAnsweredOnce(t, r3)
	require.Equal(t, [][]Entry{{{Producer: "two"}}}, w.batches, "only the append still waiting was sent")
	st := c.statsSnapshot()
	require.EqualValues(t, 1, st.Appends)
	require.Zero(t, st.FailedBatches)
}

// TestCommitterCloseStopsPreparing: closing the committer while a batch
// waits for its writer to prepare sends nothing, so its appends get
// ErrClosed and close does not wait for the writer.
func TestCommitterCloseStopsPreparing(t *testing.T) {
	w := newPrepWriter()
	defer close(w.release) // only to let a failed run finish
	c := newCommitter(w, time.Minute)
	errc := make(chan error, 1)
	go func() {
		_, err := c.append(context.Background(), -1, []Entry{{Producer: "p"}})
		errc <- err
	}()
	waitPreparing(t, w)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	require.NoError(t, c.close(ctx), "close waits for a writer that is still preparing")
	require.ErrorIs(t, <-errc, ErrClosed)
	require.Empty(t, w.batches, "nothing was sent")
	require.Zero(t, c.statsSnapshot().FailedBatches, "a batch given up on close is not a failure")
}
