package cluster_test

import (
	"context"
	"errors"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/tandem-go/tandem/cluster"
	"github.com/tandem-go/tandem/internal/dbtest"
	"github.com/tandem-go/tandem/internal/locktest"
	"github.com/tandem-go/tandem/journal"
	"github.com/tandem-go/tandem/lock"
	"github.com/tandem-go/tandem/revision"
)

// TestPublishNeedsMembership: a node publishes only while it is a member:
// not before Start, not after Stop, and not from the moment it can no
// longer confirm its membership lease (its renewals hang) — when its
// caches also flush and stop serving — until it rejoins.
func TestPublishNeedsMembership(t *testing.T) {
	forEachBackend(t, func(t *testing.T, f fixture) {
		ctx := ctxT(t)
		j, revs, leases := f.stores(t, "a", "inst-a")
		stall := locktest.NewStall(leases)
		t.Cleanup(stall.End)
		c := cfg("a")
		c.Journal, c.Revisions, c.Leases, c.Instance = j, revs, stall, "inst-a"
		c.MemberTTL = time.Second
		a, err := cluster.New(c)
		require.NoError(t, err)
		t.Cleanup(func() { a.Stop(context.Background()) })
		users, err := cluster.NewCache[int64, string](a, "users", cluster.CacheConfig[int64]{})
		require.NoError(t, err)

		_, err = a.Publish(ctx, "p", nil)
		require.ErrorIs(t, err, cluster.ErrNotRunning, "not before Start")
		_, err = users.Invalidate(ctx, 1)
		require.ErrorIs(t, err, cluster.ErrNotRunning)
		start(t, a)
		_, err = a.Publish(ctx, "p", nil)
		require.NoError(t, err)
		users.Add(1, "Ada")
		_, ok := users.Get(1)
		require.True(t, ok)

		// The lease store stops answering: renewals and acquisitions hang.
		// (With renewals alone, the node may legitimately take its id
		// again once the old lease expires, and publish under the new one.)
		stall.BeginAll()
		// The lease's trust deadline is at most 95% of MemberTTL after its
		// last renewal, which was before cut: no publish that starts after
		// cut+MemberTTL may be accepted. (Timed by when each call starts, so
		// that a slow call on a loaded machine does not count against it.)
		cut := time.Now()
		var lastAccepted time.Time
		require.Eventually(t, func() bool {
			callStart := time.Now()
			_, err := a.Publish(ctx, "p", nil)
			if errors.Is(err, cluster.ErrMembershipLost) {
				return true
			}
			require.NoError(t, err)
			lastAccepted = callStart
			return false
		}, 30*time.Second, 5*time.Millisecond)
		require.Less(t, lastAccepted.Sub(cut), c.MemberTTL, "refused before anyone else could take the id")
		_, err = a.Publish(ctx, "p", nil)
		require.ErrorIs(t, err, cluster.ErrNotRunning, "ErrMembershipLost matches ErrNotRunning")
		_, ok = users.Get(1)
		require.False(t, ok, "a node that is not a member does not serve its cache")
		users.Add(2, "Grace")
		_, ok = users.Get(2)
		require.False(t, ok)
		require.Eventually(t, func() bool { return users.Len() == 0 }, 30*time.Second, 5*time.Millisecond, "its cache flushed")
		require.Positive(t, stall.Stalled.Load())

		// The store answers again: the node rejoins and publishes.
		stall.End()
		require.Eventually(t, func() bool {
			_, err := a.Publish(ctx, "p", nil)
			return err == nil
		}, 30*time.Second, 10*time.Millisecond, "the node rejoins")
		users.Add(3, "Barbara")
		_, ok = users.Get(3)
		require.True(t, ok, "and serves again")

		require.NoError(t, a.Stop(ctx))
		_, err = a.Publish(ctx, "p", nil)
		require.ErrorIs(t, err, cluster.ErrNotRunning, "not after Stop")
		require.NotErrorIs(t, err, journal.ErrClosed)
		err = a.Start(ctx)
		require.ErrorIs(t, err, cluster.ErrNotRunning)
		require.ErrorContains(t, err, "open a new one", "the error says what to do")
	})
}

// rewindable is a node's journal that can be made to look restored:
// Head lowered (a restore that kept the epoch), a new Epoch, or another
// record at a revision (a lost commit whose revision a new record took).
type rewindable struct {
	journal.Journal
	mu      sync.Mutex
	head    int64 // > 0: Head returns at most this
	epoch   string
	rewrite int64 // > 0: Read returns another record at this revision
}

func (r *rewindable) Head(ctx context.Context) (int64, error) {
	h, err := r.Journal.Head(ctx)
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.head > 0 {
		h = min(h, r.head)
	}
	return h, err
}

// Read hides the records above the head it was set back to, as a journal
// that went back would not have them.
func (r *rewindable) Read(ctx context.Context, after int64, limit int) ([]journal.Record, error) {
	recs, err := r.Journal.Read(ctx, after, limit)
	r.mu.Lock()
	defer r.mu.Unlock()
	for i, rec := range recs {
		if r.head > 0 && rec.Revision > r.head {
			return recs[:i], err
		}
		if rec.Revision == r.rewrite {
			rec.Payload = []byte("rewritten")
			recs[i] = rec
		}
	}
	return recs, err
}

func (r *rewindable) Epoch(ctx context.Context) (string, error) {
	r.mu.Lock()
	e := r.epoch
	r.mu.Unlock()
	if e != "" {
		return e, nil
	}
	return r.Journal.Epoch(ctx)
}

// TestResyncAheadOfHead: a position above the journal's head in the same
// epoch resyncs instead of waiting silently for the head to pass it —
// stored (at Start) and in memory (on a poll) — and WaitFor confirms a
// revision it reached only after checking the journal's epoch.
func TestResyncAheadOfHead(t *testing.T) {
	forEachBackend(t, func(t *testing.T, f fixture) {
		ctx := ctxT(t)
		a := f.open(t, cfg("a"))
		start(t, a)
		head := publishN(t, ctx, a, 5)
		epoch, err := a.Journal().Epoch(ctx)
		require.NoError(t, err)

		// Each node records its own resyncs.
		var mu sync.Mutex
		var reasons []cluster.ResyncReason
		hookOf := func() func(context.Context, cluster.ResyncReason) error {
			mu.Lock()
			defer mu.Unlock()
			reasons = nil
			return func(_ context.Context, why cluster.ResyncReason) error {
				mu.Lock()
				reasons = append(reasons, why)
				mu.Unlock()
				return nil
			}
		}
		got := func() []cluster.ResyncReason {
			mu.Lock()
			defer mu.Unlock()
			return append([]cluster.ResyncReason(nil), reasons...)
		}

		// Stored: b's position is above the head.
		require.NoError(t, f.revisions(t).Save(ctx, "b", head+10, epoch))
		b := f.open(t, cfg("b"))
		require.NoError(t, b.OnResync(hookOf()))
		start(t, b)
		require.Equal(t, []cluster.ResyncReason{cluster.ResyncAheadOfHead}, got())
		require.Equal(t, head, b.Stats().Revision, "it continues from the head")
		require.NoError(t, b.Stop(ctx))

		// In memory: the journal goes back under a running node.
		j, revs, leases := f.stores(t, "c", "inst-c")
		rj := &rewindable{Journal: j}
		c := cfg("c")
		c.Journal, c.Revisions, c.Leases, c.Instance = rj, revs, leases, "inst-c"
		cn, err := cluster.New(c)
		require.NoError(t, err)
		t.Cleanup(func() { cn.Stop(context.Background()) })
		var cnMu sync.Mutex
		cnHook := func(context.Context, cluster.ResyncReason) error { return nil }
		require.NoError(t, cn.OnResync(func(ctx context.Context, why cluster.ResyncReason) error {
			cnMu.Lock()
			h := cnHook
			cnMu.Unlock()
			return h(ctx, why)
		}))
		rec := &recorder{}
		require.NoError(t, cn.Handle("p", rec))
		start(t, cn)
		last := publishN(t, ctx, a, 3)
		require.NoError(t, cn.WaitFor(ctx, last))
		cnMu.Lock()
		cnHook = hookOf()
		cnMu.Unlock()
		rj.mu.Lock()
		rj.head = last - 2
		rj.mu.Unlock()
		require.Eventually(t, func() bool { return len(got()) > 0 }, 30*time.Second, 10*time.Millisecond, "a poll notices")
		require.Equal(t, cluster.ResyncAheadOfHead, got()[0])
		require.NoError(t, cn.Stop(ctx)) // its fake journal keeps contradicting itself

		// WaitFor: a new epoch (a restored database) under a node that
		// reached the revision; no poll comes (SyncDelay is an hour).
		j2, revs2, leases2 := f.stores(t, "d", "inst-d")
		rj2 := &rewindable{Journal: j2}
		d := cfg("d")
		d.Journal, d.Revisions, d.Leases, d.Instance, d.SyncDelay = rj2, revs2, leases2, "inst-d", time.Hour
		dn, err := cluster.New(d)
		require.NoError(t, err)
		t.Cleanup(func() { dn.Stop(context.Background()) })
		dnHook := func(context.Context, cluster.ResyncReason) error { return nil }
		var hookMu sync.Mutex
		require.NoError(t, dn.OnResync(func(ctx context.Context, why cluster.ResyncReason) error {
			hookMu.Lock()
			h := dnHook
			hookMu.Unlock()
			return h(ctx, why)
		}))
		start(t, dn)
		require.NoError(t, dn.WaitFor(ctx, last))
		hookMu.Lock()
		dnHook = hookOf()
		hookMu.Unlock()
		rj2.mu.Lock()
		rj2.epoch = "restored-epoch-0123456789abcdef"
		rj2.mu.Unlock()
		require.NoError(t, dn.WaitFor(ctx, last))
		require.Equal(t, []cluster.ResyncReason{cluster.ResyncEpoch}, got(), "WaitFor checked the epoch before confirming")
	})
}

// TestWaitForChecksPosition: WaitFor confirms a revision the node has
// reached with one poll that checks its position, and syncs — resyncing —
// when the position no longer holds, though in the same epoch: the record
// at the position was rewritten, or the journal went back below it. It
// returns once that resync ended. A position that holds, also once its
// record was pruned, is confirmed without a sync. No tick comes meanwhile
// (SyncDelay is an hour) and the wrapped journal does not push.
func TestWaitForChecksPosition(t *testing.T) {
	forEachBackend(t, func(t *testing.T, f fixture) {
		ctx := ctxT(t)
		a := f.open(t, cfg("a"))
		start(t, a)
		j, revs, leases := f.stores(t, "d", "inst-d")
		rj := &rewindable{Journal: j}
		c := cfg("d")
		c.Journal, c.Revisions, c.Leases, c.Instance, c.SyncDelay = rj, revs, leases, "inst-d", time.Hour
		d, err := cluster.New(c)
		require.NoError(t, err)
		t.Cleanup(func() { d.Stop(context.Background()) })
		var mu sync.Mutex
		var reasons []cluster.ResyncReason
		require.NoError(t, d.OnResync(func(_ context.Context, why cluster.ResyncReason) error {
			mu.Lock()
			reasons = append(reasons, why)
			mu.Unlock()
			return nil
		}))
		got := func() []cluster.ResyncReason {
			mu.Lock()
			defer mu.Unlock()
			return append([]cluster.ResyncReason(nil), reasons...)
		}
		start(t, d)
		last := publishN(t, ctx, a, 5)
		require.NoError(t, d.WaitFor(ctx, last))

		// The position holds: no sync.
		synced := d.Stats().LastSync
		require.NoError(t, d.WaitFor(ctx, last-1))
		require.Equal(t, synced, d.Stats().LastSync, "confirmed by the poll alone")

		// Another record at the position.
		rj.mu.Lock()
		rj.rewrite = last
		rj.mu.Unlock()
		require.NoError(t, d.WaitFor(ctx, last))
		require.Equal(t, []cluster.ResyncReason{cluster.ResyncRewritten}, got(), "WaitFor confirmed a position whose record changed")
		require.Equal(t, last, d.Stats().Revision)

		// The journal went back below the position.
		rj.mu.Lock()
		rj.rewrite, rj.head = 0, last-3
		rj.mu.Unlock()
		require.NoError(t, d.WaitFor(ctx, last-1), "it returns once the resync ended")
		require.Equal(t, []cluster.ResyncReason{cluster.ResyncRewritten, cluster.ResyncAheadOfHead}, got(),
			"WaitFor confirmed a position above the journal's head")
		require.Equal(t, last-3, d.Stats().Revision)

		// Back to the journal as it is: d catches up; then the records up
		// to its position are pruned, which leaves it valid.
		rj.mu.Lock()
		rj.head = 0
		rj.mu.Unlock()
		require.NoError(t, d.WaitFor(ctx, last))
		_, err = a.Journal().Prune(ctx, last+1)
		require.NoError(t, err)
		synced = d.Stats().LastSync
		require.NoError(t, d.WaitFor(ctx, last))
		require.Equal(t, synced, d.Stats().LastSync, "confirmed by the poll alone")
		require.Len(t, got(), 2)
	})
}

// resyncReadsFail is a rewindable journal whose next reads of the epoch
// and of the head fail, as many as the test sets. Its polls go to the
// rewindable (journal.Poll over Epoch, Read and Head there), so only
// Start and a resync read the epoch and the head through it.
type resyncReadsFail struct {
	*rewindable
	epochFails, headFails atomic.Int32
}

func (r *resyncReadsFail) Epoch(ctx context.Context) (string, error) {
	if r.epochFails.Add(-1) >= 0 {
		return "", errors.New("injected: reading the epoch failed")
	}
	return r.rewindable.Epoch(ctx)
}

func (r *resyncReadsFail) Head(ctx context.Context) (int64, error) {
	if r.headFails.Add(-1) >= 0 {
		return 0, errors.New("injected: reading the head failed")
	}
	return r.rewindable.Head(ctx)
}

func (r *resyncReadsFail) Poll(ctx context.Context, after int64, limit int) (journal.PollResult, error) {
	return journal.Poll(ctx, r.rewindable, after, limit)
}

func (r *resyncReadsFail) PollRecords(ctx context.Context, after int64, limit int) (journal.PollResult, error) {
	return journal.PollRecords(ctx, r.rewindable, after, limit)
}

// TestWaitForAfterFailedResync: resyncs that failed — one reading the
// epoch, one reading the head, before either could go on — do not change
// what WaitFor waits for afterwards: it still returns once a resync that
// began after the call ended, here for a revision the journal lost (it
// went back below it). WaitFor used to count a resync as begun before
// those reads and as ended only when it succeeded, so each failed one
// made every later WaitFor wait for one more resync, and this one hung
// until its context ended. No tick comes meanwhile (SyncDelay is an
// hour) and the wrapped journal does not push.
func TestWaitForAfterFailedResync(t *testing.T) {
	forEachBackend(t, func(t *testing.T, f fixture) {
		ctx := ctxT(t)
		a := f.open(t, cfg("a"))
		start(t, a)
		j, revs, leases := f.stores(t, "d", "inst-d")
		rj := &resyncReadsFail{rewindable: &rewindable{Journal: j}}
		c := cfg("d")
		c.Journal, c.Revisions, c.Leases, c.Instance, c.SyncDelay = rj, revs, leases, "inst-d", time.Hour
		d, err := cluster.New(c)
		require.NoError(t, err)
		t.Cleanup(func() { d.Stop(context.Background()) })
		start(t, d)
		last := publishN(t, ctx, a, 6)
		require.NoError(t, d.WaitFor(ctx, last))

		// The journal goes back below d's position: the resync fails
		// twice, then succeeds.
		rj.mu.Lock()
		rj.head = last - 1
		rj.mu.Unlock()
		rj.epochFails.Store(1)
		require.ErrorContains(t, d.Sync(ctx), "injected: reading the epoch")
		rj.headFails.Store(1)
		require.ErrorContains(t, d.Sync(ctx), "injected: reading the head")
		require.NoError(t, d.Sync(ctx))
		require.Equal(t, last-1, d.Stats().Revision)
		require.Equal(t, int64(1), d.Stats().Resyncs, "failed resyncs do not count as ended")

		// It goes back again, below a revision d reached: WaitFor for it
		// returns once the resync it brings about ended.
		rj.mu.Lock()
		rj.head = last - 3
		rj.mu.Unlock()
		wctx, cancel := context.WithTimeout(ctx, 10*time.Second)
		defer cancel()
		require.NoError(t, d.WaitFor(wctx, last-2), "a resync that began after the call ended")
		require.Equal(t, last-3, d.Stats().Revision)
		require.Equal(t, int64(2), d.Stats().Resyncs)
	})
}

// TestOpenSQLPoolSize: a pool too small for a node is refused with an
// error that says how many connections it needs.
func TestOpenSQLPoolSize(t *testing.T) {
	for _, b := range dbtest.Backends {
		t.Run(b.Name, func(t *testing.T) {
			t.Parallel()
			db := dbtest.Open(t, b)
			pool := db.NewPool(t)
			c := cfg("a")
			need := cluster.SQLConns(b.Dialect, c)
			c.Prefix = db.Prefix
			pool.SetMaxOpenConns(need - 1)
			_, err := cluster.OpenSQL(context.Background(), pool, b.Dialect, c)
			require.ErrorIs(t, err, cluster.ErrInvalidArgument)
			require.ErrorContains(t, err, "SetMaxOpenConns")
			require.ErrorContains(t, err, "needs at least")
			pool.SetMaxOpenConns(need)
			n, err := cluster.OpenSQL(context.Background(), pool, b.Dialect, c)
			require.NoError(t, err)
			start(t, n)
			rev, err := n.Publish(context.Background(), "p", nil)
			require.NoError(t, err)
			require.NoError(t, n.WaitFor(context.Background(), rev))
			require.NoError(t, n.Stop(context.Background()))
		})
	}
	require.Equal(t, 3, cluster.MinSQLConns)
}

// TestDisablePush: a node with push off is woken only by its polls, and
// says so in Stats; a node with push on (where the journal can push) says
// that too.
func TestDisablePush(t *testing.T) {
	forEachBackend(t, func(t *testing.T, f fixture) {
		ctx := ctxT(t)
		c := cfg("quiet")
		c.DisablePush = true
		c.SyncDelay = 300 * time.Millisecond
		quiet := f.open(t, c)
		start(t, quiet)
		require.False(t, quiet.Stats().Push)
		loud := f.open(t, cfg("loud"))
		start(t, loud)
		if f.backend == "file" || f.backend == "postgres" {
			require.Eventually(t, func() bool { return loud.Stats().Push }, 10*time.Second, 5*time.Millisecond, "PostgreSQL and the folder push")
		} else {
			require.False(t, loud.Stats().Push, "the others poll")
		}
		rev, err := loud.Publish(ctx, "p", []byte("x"))
		require.NoError(t, err)
		require.NoError(t, quiet.WaitFor(ctx, rev), "polling alone gets there")
		require.NoError(t, quiet.Stats().LastSyncErr)
	})
}

// closingWatch is a node's journal whose push wake-ups are the test's:
// Watch returns ch, which the test closes (as a journal that closed or a
// watch that ended does). Once armed, the next Epoch — the first statement
// of the sync that the closing wakes — closes held, then waits until the
// goroutine reading the node's Stats has read them once more (it offers a
// value on read after each read).
type closingWatch struct {
	journal.Journal
	ch    chan struct{}
	armed atomic.Bool
	held  chan struct{}
	read  chan struct{}
}

func (c *closingWatch) CanWatch() bool { return true }

func (c *closingWatch) Watch(context.Context) (<-chan struct{}, error) { return c.ch, nil }

func (c *closingWatch) Epoch(ctx context.Context) (string, error) {
	if c.armed.CompareAndSwap(true, false) {
		close(c.held)
		select {
		case <-c.read:
		case <-ctx.Done():
		}
	}
	return c.Journal.Epoch(ctx)
}

// TestWatchClosesWhileStatsRead: when the push channel closes, the sync
// loop drops it while Stats, on another goroutine, reads it to report
// Push; run with -race. The goroutine reading Stats never synchronises
// with the test after its first read, so its later reads are ordered with
// the loop's only through the loop's lock; the loop is held (in Epoch)
// right after it dropped the channel until one such read happened.
func TestWatchClosesWhileStatsRead(t *testing.T) {
	ctx := ctxT(t)
	dir := t.TempDir()
	j, err := journal.OpenFile(ctx, journal.FileConfig{Dir: dir, NodeID: "b", Instance: "inst-b"})
	require.NoError(t, err)
	t.Cleanup(func() { j.Close(context.Background()) })
	revs, err := revision.OpenFile(ctx, revision.FileConfig{Dir: dir})
	require.NoError(t, err)
	leases, err := lock.OpenFile(ctx, lock.FileConfig{Dir: dir})
	require.NoError(t, err)
	w := &closingWatch{Journal: j, ch: make(chan struct{}), held: make(chan struct{}), read: make(chan struct{})}
	c := cfg("b")
	c.Journal, c.Revisions, c.Leases, c.Instance, c.SyncDelay = w, revs, leases, "inst-b", time.Hour
	b, err := cluster.New(c)
	require.NoError(t, err)
	t.Cleanup(func() { b.Stop(context.Background()) })
	start(t, b)
	require.True(t, b.Stats().Push)

	ready, stop, done := make(chan struct{}), make(chan struct{}), make(chan struct{})
	go func() {
		defer close(done)
		_ = b.Stats()
		close(ready)
		for {
			_ = b.Stats()
			select {
			case <-stop:
				return
			case w.read <- struct{}{}:
			default:
			}
		}
	}()
	<-ready
	w.armed.Store(true)
	close(w.ch)
	<-w.held // the closing woke a sync (nothing else wakes b)
	require.NoError(t, b.Sync(ctx), "the sync the closing woke has ended")
	close(stop)
	<-done
	require.False(t, b.Stats().Push, "no push once the watch closed")
}
