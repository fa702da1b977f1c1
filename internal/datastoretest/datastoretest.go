// Package datastoretest is the conformance suite every datastore.Store
// must pass: the file store and the SQL store on every dialect. Torture
// runs several nodes putting, touching and dropping references while two
// of them collect garbage.
package datastoretest

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/tandem-go/tandem/datastore"
	"github.com/tandem-go/tandem/ident"
	"github.com/tandem-go/tandem/lock"
)

// Harness is one store under test, on storage of its own.
type Harness struct {
	// Open opens another instance of the store on the same storage, as
	// another node would (its own pool or handles).
	Open func(t *testing.T) datastore.Store
	// Locks opens a lease store the store's collector can be fenced by
	// (for SQL: the locks table of the same database).
	Locks func(t *testing.T) lock.Store
	// Corrupt flips a byte of the stored content of id: in the file, or
	// in its first chunk row.
	Corrupt func(t *testing.T, id datastore.ID)
	// Check asserts the storage holds no leftovers: no uploads or temp
	// files, no chunk that belongs to no blob. Run when no Put is in
	// progress and a collection has removed abandoned uploads.
	Check func(t *testing.T)
	// ChunkSize is the store's chunk size (SQL), or its copy buffer
	// (File): the round trips cover its boundaries.
	ChunkSize int
}

// NewHarness returns a Harness on fresh storage for one test.
type NewHarness func(t *testing.T) Harness

// Grace is the collectors' grace period in the suite: short, so tests
// are quick, and long enough that a reference is committed well within it
// after its Put or Touch even under the race detector on a loaded
// machine.
const Grace = time.Second

// Run runs the suite; subtests run in parallel, each on its own storage.
func Run(t *testing.T, newHarness NewHarness) {
	tests := []struct {
		name string
		fn   func(t *testing.T, h Harness)
	}{
		{"RoundTrip", testRoundTrip},
		{"Dedup", testDedup},
		{"Corruption", testCorruption},
		{"ConcurrentPuts", testConcurrentPuts},
		{"BadIDs", testBadIDs},
		{"TouchDelete", testTouchDelete},
		{"FailedPut", testFailedPut},
		{"Walk", testWalk},
		{"Collect", testCollect},
		{"DryRun", testDryRun},
		{"PausedCollector", testPausedCollector},
		{"AbandonedUpload", testAbandonedUpload},
		{"Torture", func(t *testing.T, h Harness) {
			Torture(t, h, TortureConfig{Instances: 3, Workers: 2, Duration: 4 * time.Second})
		}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			tc.fn(t, newHarness(t))
		})
	}
}

func ctxT(t *testing.T) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	t.Cleanup(cancel)
	return ctx
}

// content returns size deterministic pseudo-random bytes for seed.
func content(seed uint64, size int) []byte {
	var k [32]byte
	for i := range 8 {
		k[i] = byte(seed >> (8 * i))
	}
	r := rand.NewChaCha8(k)
	b := make([]byte, size)
	_, _ = r.Read(b)
	return b
}

func idOf(b []byte) datastore.ID {
	s := sha256.Sum256(b)
	return datastore.ID(hex.EncodeToString(s[:]))
}

// put stores b and checks what Put returns.
func put(t *testing.T, s datastore.Store, b []byte) datastore.Info {
	t.Helper()
	in, err := s.Put(ctxT(t), bytes.NewReader(b))
	require.NoError(t, err)
	require.Equal(t, idOf(b), in.ID, "the id is the SHA-256 of the content")
	require.EqualValues(t, len(b), in.Length)
	require.False(t, in.LastUsed.IsZero())
	return in
}

// get reads the blob id completely and returns its bytes and the error
// that ended the read (nil at a clean EOF).
func get(t *testing.T, s datastore.Store, id datastore.ID) ([]byte, error) {
	t.Helper()
	r, err := s.Get(ctxT(t), id)
	if err != nil {
		return nil, err
	}
	defer func() { require.NoError(t, r.Close()) }()
	b, err := io.ReadAll(r)
	return b, err
}

func requireContent(t *testing.T, s datastore.Store, want []byte) {
	t.Helper()
	got, err := get(t, s, idOf(want))
	require.NoError(t, err)
	require.True(t, bytes.Equal(want, got), "content of %s: %d bytes read, %d stored", idOf(want), len(got), len(want))
}

func walk(t *testing.T, s datastore.Store) []datastore.Info {
	t.Helper()
	var out []datastore.Info
	require.NoError(t, s.Walk(ctxT(t), func(in datastore.Info) error {
		out = append(out, in)
		return nil
	}))
	return out
}

func ids(ins []datastore.Info) []datastore.ID {
	out := make([]datastore.ID, len(ins))
	for i, in := range ins {
		out[i] = in.ID
	}
	return out
}

func testRoundTrip(t *testing.T, h Harness) {
	a, b := h.Open(t), h.Open(t)
	c := h.ChunkSize
	sizes := []int{0, 1, datastore.MinRecordLength - 1, datastore.MinRecordLength, c - 1, c, c + 1, 2 * c, 3*c + 7}
	for i, size := range sizes {
		data := content(uint64(i+1), size)
		in := put(t, a, data)
		requireContent(t, a, data)
		requireContent(t, b, data) // another node reads it
		st, err := b.Stat(ctxT(t), in.ID)
		require.NoError(t, err)
		require.Equal(t, in.ID, st.ID)
		require.EqualValues(t, size, st.Length, "size %d", size)
		ok, err := b.Exists(ctxT(t), in.ID)
		require.NoError(t, err)
		require.True(t, ok)
	}
	require.Len(t, walk(t, b), len(sizes))
	h.Check(t)
}

func testDedup(t *testing.T, h Harness) {
	a, b := h.Open(t), h.Open(t)
	for i, size := range []int{10, 2*h.ChunkSize + 3} {
		data := content(uint64(100+i), size)
		first := put(t, a, data)
		time.Sleep(5 * time.Millisecond)
		again := put(t, b, data)
		require.Equal(t, first.ID, again.ID)
		require.True(t, again.LastUsed.After(first.LastUsed), "putting stored content refreshes its last use: %v, then %v", first.LastUsed, again.LastUsed)
		requireContent(t, a, data)
	}
	require.Len(t, walk(t, a), 2, "each content stored once")
	h.Check(t)
}

func testCorruption(t *testing.T, h Harness) {
	s := h.Open(t)
	for i, size := range []int{1, 3 * h.ChunkSize} {
		data := content(uint64(200+i), size)
		in := put(t, s, data)
		h.Corrupt(t, in.ID)
		got, err := get(t, s, in.ID)
		require.ErrorIs(t, err, datastore.ErrCorrupt, "size %d: a flipped byte is detected", size)
		require.NotErrorIs(t, err, io.EOF)
		require.Len(t, got, size, "the reader fails at the end, after the (wrong) bytes")
	}
}

func testConcurrentPuts(t *testing.T, h Harness) {
	const instances, each = 3, 3
	var stores []datastore.Store
	for range instances {
		stores = append(stores, h.Open(t))
	}
	small, large := content(300, 50), content(301, 2*h.ChunkSize+1)
	var wg sync.WaitGroup
	errs := make(chan error, instances*each*2)
	for _, s := range stores {
		for range each {
			for _, data := range [][]byte{small, large} {
				wg.Add(1)
				go func() {
					defer wg.Done()
					in, err := s.Put(context.Background(), bytes.NewReader(data))
					if err == nil && in.ID != idOf(data) {
						err = fmt.Errorf("put returned %s, want %s", in.ID, idOf(data))
					}
					errs <- err
				}()
			}
		}
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		require.NoError(t, err)
	}
	require.ElementsMatch(t, []datastore.ID{idOf(small), idOf(large)}, ids(walk(t, stores[0])), "one blob per content")
	requireContent(t, stores[1], small)
	requireContent(t, stores[2], large)
	h.Check(t)
}

func testBadIDs(t *testing.T, h Harness) {
	s := h.Open(t)
	ctx := ctxT(t)
	good := idOf([]byte("x"))
	for bad, reason := range map[datastore.ID]string{
		"../../../../etc/passwd":    "is 22 bytes long, want 64",
		"../" + good[3:]:            "byte 0 ('.') is not a hex digit",
		good[:20] + "/" + good[21:]: "byte 20 ('/') is not a hex digit",
		good[:63]:                   "is 63 bytes long",
		good + "0":                  "is 65 bytes long",
		"":                          "is 0 bytes long",
		datastore.ID("ABCDEF" + string(good[6:])):                    "byte 0 ('A') is upper case",
		datastore.ID(string(good[:10]) + "\x00" + string(good[11:])): "byte 10 ('\\x00') is not a hex digit",
	} {
		check := func(op string, err error) {
			t.Helper()
			require.ErrorIs(t, err, ident.ErrInvalid, "%s(%q)", op, bad)
			require.ErrorContains(t, err, reason, "%s(%q): the error names what is wrong", op, bad)
			require.NotErrorIs(t, err, datastore.ErrNotFound)
		}
		_, err := s.Get(ctx, bad)
		check("Get", err)
		_, err = s.Stat(ctx, bad)
		check("Stat", err)
		_, err = s.Exists(ctx, bad)
		check("Exists", err)
		check("Touch", s.Touch(ctx, bad))
		check("Delete", s.Delete(ctx, bad))
		_, err = datastore.ParseID(string(bad))
		check("ParseID", err)
	}
	id, err := datastore.ParseID(string(good))
	require.NoError(t, err)
	require.Equal(t, good, id)
}

func testTouchDelete(t *testing.T, h Harness) {
	a, b := h.Open(t), h.Open(t)
	ctx := ctxT(t)
	missing := idOf([]byte("never stored"))
	require.ErrorIs(t, a.Touch(ctx, missing), datastore.ErrNotFound)
	require.ErrorIs(t, a.Delete(ctx, missing), datastore.ErrNotFound)
	_, err := a.Get(ctx, missing)
	require.ErrorIs(t, err, datastore.ErrNotFound)
	_, err = a.Stat(ctx, missing)
	require.ErrorIs(t, err, datastore.ErrNotFound)
	ok, err := a.Exists(ctx, missing)
	require.NoError(t, err)
	require.False(t, ok)

	data := content(400, 2*h.ChunkSize)
	in := put(t, a, data)
	time.Sleep(5 * time.Millisecond)
	require.NoError(t, b.Touch(ctx, in.ID))
	st, err := a.Stat(ctx, in.ID)
	require.NoError(t, err)
	require.True(t, st.LastUsed.After(in.LastUsed), "Touch refreshes the last use: %v, then %v", in.LastUsed, st.LastUsed)
	require.NoError(t, b.Delete(ctx, in.ID))
	_, err = a.Get(ctx, in.ID)
	require.ErrorIs(t, err, datastore.ErrNotFound)
	require.ErrorIs(t, a.Touch(ctx, in.ID), datastore.ErrNotFound, "a deleted blob must be put again")
	require.ErrorIs(t, a.Delete(ctx, in.ID), datastore.ErrNotFound)
	require.Empty(t, walk(t, a))
	put(t, b, data) // and can be
	requireContent(t, a, data)
	h.Check(t)
}

// failingReader yields n bytes, then fails with err.
type failingReader struct {
	r   io.Reader
	err error
}

func (f *failingReader) Read(p []byte) (int, error) {
	n, err := f.r.Read(p)
	if err == io.EOF {
		return n, f.err
	}
	return n, err
}

func testFailedPut(t *testing.T, h Harness) {
	s := h.Open(t)
	boom := errors.New("boom")
	for _, size := range []int{10, 3 * h.ChunkSize} {
		_, err := s.Put(ctxT(t), &failingReader{bytes.NewReader(content(500, size)), boom})
		require.ErrorIs(t, err, boom, "the reader's error is returned")
	}
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	_, err := s.Put(ctx, bytes.NewReader(content(501, 3*h.ChunkSize)))
	require.ErrorIs(t, err, context.Canceled)
	require.Empty(t, walk(t, s), "a failed put stores nothing")
	h.Check(t)
}

func testWalk(t *testing.T, h Harness) {
	s := h.Open(t)
	var want []datastore.ID
	for i := range 30 {
		want = append(want, put(t, s, content(uint64(600+i), i)).ID)
	}
	got := ids(walk(t, s))
	require.ElementsMatch(t, want, got)
	for i := 1; i < len(got); i++ {
		require.Less(t, got[i-1], got[i], "ascending id order")
	}
	stop := errors.New("stop")
	n := 0
	err := s.Walk(ctxT(t), func(datastore.Info) error {
		n++
		if n == 3 {
			return stop
		}
		return nil
	})
	require.ErrorIs(t, err, stop)
	require.Equal(t, 3, n)
}

// lease acquires the lease name on ls for a new client of node.
func lease(t *testing.T, ls lock.Store, node string) *lock.Lease {
	t.Helper()
	c, err := lock.New(lock.Config{NodeID: node, Store: ls, TTL: 5 * time.Second})
	require.NoError(t, err)
	l, err := c.Acquire(ctxT(t), datastore.DefaultLeaseName)
	require.NoError(t, err)
	t.Cleanup(func() { l.Release(context.Background()) })
	return l
}

func refsOf(list ...datastore.ID) datastore.References {
	return datastore.ReferencesFunc(func(ctx context.Context, yield func(datastore.ID) error) error {
		for _, id := range list {
			if err := yield(id); err != nil {
				return err
			}
		}
		return nil
	})
}

func collector(t *testing.T, s datastore.Store, cfg datastore.GCConfig) *datastore.Collector {
	t.Helper()
	if cfg.GracePeriod == 0 {
		cfg.GracePeriod = Grace
	}
	c, err := datastore.NewCollector(s, cfg)
	require.NoError(t, err)
	return c
}

func testCollect(t *testing.T, h Harness) {
	s, other := h.Open(t), h.Open(t)
	ctx := ctxT(t)
	ref := put(t, s, content(700, 2*h.ChunkSize+5))
	garbage := put(t, s, content(701, 3*h.ChunkSize))
	small := put(t, s, content(702, 7))
	touched := put(t, s, content(703, 8))
	time.Sleep(Grace + 100*time.Millisecond)
	require.NoError(t, other.Touch(ctx, touched.ID), "a new reference to an old blob is recorded")
	fresh := put(t, other, content(704, 9))

	var reported []datastore.ID
	c := collector(t, s, datastore.GCConfig{BatchSize: 1, Report: func(in datastore.Info) { reported = append(reported, in.ID) }})
	_, err := c.Collect(ctx, nil, refsOf(ref.ID))
	require.ErrorIs(t, err, datastore.ErrInvalidArgument, "a lease is required")
	l := lease(t, h.Locks(t), "gc")
	run, err := c.Collect(ctx, l, refsOf(ref.ID))
	require.NoError(t, err)
	require.NoError(t, l.Release(ctx))
	require.ElementsMatch(t, []datastore.ID{garbage.ID, small.ID}, reported)
	require.ElementsMatch(t, []datastore.ID{ref.ID, touched.ID, fresh.ID}, ids(walk(t, other)))
	require.EqualValues(t, 5, run.Scanned)
	require.EqualValues(t, 1, run.Marked)
	require.EqualValues(t, 1, run.Referenced)
	require.EqualValues(t, 2, run.Recent)
	require.EqualValues(t, 2, run.Deleted)
	require.EqualValues(t, 3, run.Kept())
	require.Equal(t, garbage.Length+small.Length, run.BytesFreed)
	require.False(t, run.DryRun)
	require.Equal(t, Grace, run.Started.Sub(run.Cutoff))
	st := c.Stats()
	require.EqualValues(t, 1, st.Runs)
	require.EqualValues(t, 1, st.Failures, "the call without a lease")
	require.Equal(t, run, st.Last)
	requireContent(t, other, content(700, 2*h.ChunkSize+5))

	// A reference the application cannot enumerate stops the run.
	boom := errors.New("refs unavailable")
	_, err = c.Collect(ctx, lease(t, h.Locks(t), "gc2"), datastore.ReferencesFunc(func(context.Context, func(datastore.ID) error) error { return boom }))
	require.ErrorIs(t, err, boom)
	_, err = c.Collect(ctx, nil, refsOf("not-an-id"))
	require.ErrorIs(t, err, datastore.ErrInvalidArgument)
	h.Check(t)
}

func testDryRun(t *testing.T, h Harness) {
	s := h.Open(t)
	ctx := ctxT(t)
	keep := put(t, s, content(800, 3))
	garbage := put(t, s, content(801, 2*h.ChunkSize))
	time.Sleep(Grace + 100*time.Millisecond)
	var reported []datastore.ID
	c := collector(t, s, datastore.GCConfig{DryRun: true, Report: func(in datastore.Info) { reported = append(reported, in.ID) }})
	run, err := c.Collect(ctx, nil, refsOf(keep.ID))
	require.NoError(t, err)
	require.True(t, run.DryRun)
	require.Equal(t, []datastore.ID{garbage.ID}, reported, "what would be deleted")
	require.EqualValues(t, 1, run.Deleted)
	require.Equal(t, garbage.Length, run.BytesFreed)
	require.Len(t, walk(t, s), 2, "nothing deleted")
}

// lyingStore is a lock store whose renewals never reach the store but
// report success: the holder's process believes it holds the lease (as a
// paused process does that wakes up after its lease expired) while the
// store has let it expire.
type lyingStore struct{ lock.Store }

func (lyingStore) Renew(context.Context, string, lock.Owner, int64, time.Duration) (bool, error) {
	return true, nil
}

// fencer wraps lyingStore keeping the wrapped store's fences.
type fencer struct {
	lyingStore
	lock.Fencer
}

type txFencer struct {
	fencer
	lock.TxFencer
}

func liar(ls lock.Store) lock.Store {
	f := fencer{lyingStore{ls}, ls.(lock.Fencer)}
	if tf, ok := ls.(lock.TxFencer); ok {
		return txFencer{f, tf}
	}
	return f
}

// testPausedCollector: a collector pauses (in its mark phase) past its
// lease; another node takes the lease over; the paused one's deletes are
// rejected by the store, and the garbage is left to the new holder.
func testPausedCollector(t *testing.T, h Harness) {
	s := h.Open(t)
	ctx := ctxT(t)
	garbage := put(t, s, content(900, 2*h.ChunkSize))
	time.Sleep(Grace + 100*time.Millisecond)

	// Long enough that the paused holder's keep-alive (which the liar
	// answers at once) never misses its own deadline on a loaded machine.
	const ttl = 1500 * time.Millisecond
	paused, err := lock.New(lock.Config{NodeID: "paused", Store: liar(h.Locks(t)), TTL: ttl})
	require.NoError(t, err)
	l, err := paused.TryAcquire(ctx, datastore.DefaultLeaseName)
	require.NoError(t, err)
	defer l.Release(context.Background())

	other, err := lock.New(lock.Config{NodeID: "other", Store: h.Locks(t), TTL: 5 * time.Second})
	require.NoError(t, err)
	var taken *lock.Lease
	pause := datastore.ReferencesFunc(func(ctx context.Context, yield func(datastore.ID) error) error {
		// The pause: until the other node holds the lease.
		var aerr error
		taken, aerr = other.Acquire(ctx, datastore.DefaultLeaseName)
		return aerr
	})
	c := collector(t, s, datastore.GCConfig{})
	_, err = c.Collect(ctx, l, pause)
	require.ErrorIs(t, err, lock.ErrFenced, "the store rejects the paused collector's deletes")
	require.True(t, l.Held(), "the paused process still believes it holds the lease")
	require.Greater(t, taken.Token(), l.Token())
	defer taken.Release(context.Background())
	ok, err := s.Exists(ctx, garbage.ID)
	require.NoError(t, err)
	require.True(t, ok, "nothing was deleted")

	run, err := collector(t, h.Open(t), datastore.GCConfig{}).Collect(ctx, taken, refsOf())
	require.NoError(t, err)
	require.EqualValues(t, 1, run.Deleted, "the new holder collects")
}

// stallingReader yields n bytes, then blocks until release is closed,
// then ends.
type stallingReader struct {
	r       io.Reader
	stalled chan struct{}
	release chan struct{}
	once    sync.Once
}

func (s *stallingReader) Read(p []byte) (int, error) {
	n, err := s.r.Read(p)
	if err == io.EOF {
		s.once.Do(func() { close(s.stalled) })
		<-s.release
	}
	return n, err
}

// testAbandonedUpload: an upload in progress is never collected while it
// writes; once it has written nothing for the grace period it is removed,
// and its Put fails with ErrUploadExpired instead of storing anything.
func testAbandonedUpload(t *testing.T, h Harness) {
	s := h.Open(t)
	ctx := ctxT(t)
	sr := &stallingReader{r: bytes.NewReader(content(1000, 2*h.ChunkSize+1)), stalled: make(chan struct{}), release: make(chan struct{})}
	done := make(chan error, 1)
	go func() {
		_, err := s.Put(ctx, sr)
		done <- err
	}()
	<-sr.stalled
	c := collector(t, h.Open(t), datastore.GCConfig{})
	collect := func() datastore.GCRun {
		l := lease(t, h.Locks(t), "gc")
		defer l.Release(ctx)
		run, err := c.Collect(ctx, l, refsOf())
		require.NoError(t, err)
		return run
	}
	require.Zero(t, collect().Uploads, "an upload in progress is kept")
	time.Sleep(Grace + 100*time.Millisecond)
	require.EqualValues(t, 1, collect().Uploads, "an upload that wrote nothing for the grace period is removed")
	close(sr.release)
	require.ErrorIs(t, <-done, datastore.ErrUploadExpired)
	require.Empty(t, walk(t, s))
	h.Check(t)
}
