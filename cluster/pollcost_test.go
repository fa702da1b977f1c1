package cluster_test

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/tandem-go/tandem/cluster"
	"github.com/tandem-go/tandem/dialect"
	"github.com/tandem-go/tandem/internal/locktest"
	"github.com/tandem-go/tandem/journal"
	"github.com/tandem-go/tandem/revision"
)

// countingJournal counts the journal calls a node makes. Poll goes to
// journal.Poll, so a SQL journal answers it in one statement and a folder
// through its own Epoch, Read and Head (not counted here).
type countingJournal struct {
	journal.Journal
	polls, others atomic.Int64
}

func (c *countingJournal) Poll(ctx context.Context, after int64, limit int) (journal.PollResult, error) {
	c.polls.Add(1)
	return journal.Poll(ctx, c.Journal, after, limit)
}

func (c *countingJournal) Read(ctx context.Context, after int64, limit int) ([]journal.Record, error) {
	c.others.Add(1)
	return c.Journal.Read(ctx, after, limit)
}

func (c *countingJournal) Head(ctx context.Context) (int64, error) {
	c.others.Add(1)
	return c.Journal.Head(ctx)
}

func (c *countingJournal) Tail(ctx context.Context) (int64, error) {
	c.others.Add(1)
	return c.Journal.Tail(ctx)
}

func (c *countingJournal) Epoch(ctx context.Context) (string, error) {
	c.others.Add(1)
	return c.Journal.Epoch(ctx)
}

func (c *countingJournal) CanWatch() bool { return journal.Watchable(c.Journal) }

func (c *countingJournal) Watch(ctx context.Context) (<-chan struct{}, error) {
	return c.Journal.(journal.Watcher).Watch(ctx)
}

type countingRevisions struct {
	revision.Store
	saves atomic.Int64
}

func (c *countingRevisions) Save(ctx context.Context, node string, rev int64, epoch string) error {
	c.saves.Add(1)
	return c.Store.Save(ctx, node, rev, epoch)
}

// TestPollCost pins what a node asks of the journal: an idle node one poll
// per SyncDelay and nothing else (no separate epoch, head or tail reads,
// no position saves), and a node woken by another's publish one poll per
// wake-up and at most one save.
func TestPollCost(t *testing.T) {
	forEachBackend(t, func(t *testing.T, f fixture) {
		ctx := ctxT(t)
		j, revs, leases := f.stores(t, "b", "inst-b")
		cj, cr := &countingJournal{Journal: j}, &countingRevisions{Store: revs}
		const delay = 200 * time.Millisecond
		c := cfg("b")
		c.Journal, c.Revisions, c.Leases, c.Instance = cj, cr, leases, "inst-b"
		c.SyncDelay = delay
		b, err := cluster.New(c)
		require.NoError(t, err)
		t.Cleanup(func() { b.Stop(context.Background()) })
		start(t, b)

		// Idle.
		cj.polls.Store(0)
		cj.others.Store(0)
		cr.saves.Store(0)
		began := time.Now()
		time.Sleep(6 * delay)
		polls, others, saves := cj.polls.Load(), cj.others.Load(), cr.saves.Load()
		elapsed := time.Since(began)
		t.Logf("idle for %v: %d polls", elapsed.Round(time.Millisecond), polls)
		require.GreaterOrEqual(t, polls, int64(1), "an idle node polls")
		// Ticks are jittered by ±10%: at most one per 0.9 SyncDelay, and
		// one more for the tick due at the start of the window.
		require.LessOrEqual(t, polls, int64(float64(elapsed)/(0.9*float64(delay)))+1, "at most one poll per SyncDelay")
		require.Zero(t, others, "epoch, head and tail ride on the poll")
		require.Zero(t, saves, "an idle node stores nothing")

		if f.backend == "file" {
			return // fsnotify may wake a node more than once per commit
		}
		// Woken by publishes (push on PostgreSQL, Sync elsewhere), with no
		// poll ticks in the way.
		require.NoError(t, b.Stop(ctx))
		c.SyncDelay = time.Minute
		b, err = cluster.New(c)
		require.NoError(t, err)
		t.Cleanup(func() { b.Stop(context.Background()) })
		start(t, b)
		a := f.open(t, cfg("a"))
		start(t, a)
		push := f.backend == "postgres"
		if push {
			require.Eventually(t, func() bool { return b.Stats().Push }, 10*time.Second, 5*time.Millisecond, "listening")
		}
		cj.polls.Store(0)
		cj.others.Store(0)
		cr.saves.Store(0)
		const publishes = 10
		for range publishes {
			rev, err := a.Publish(ctx, "p", []byte("x"))
			require.NoError(t, err)
			if push {
				require.Eventually(t, func() bool { return b.Stats().Revision >= rev }, 10*time.Second, time.Millisecond)
			} else {
				require.NoError(t, b.Sync(ctx))
				require.GreaterOrEqual(t, b.Stats().Revision, rev)
			}
			time.Sleep(60 * time.Millisecond) // past saveGap: every publish may be saved
		}
		polls, others, saves = cj.polls.Load(), cj.others.Load(), cr.saves.Load()
		t.Logf("push %v: %d publishes, %d polls, %d saves", push, publishes, polls, saves)
		require.GreaterOrEqual(t, polls, int64(publishes))
		require.LessOrEqual(t, polls, int64(publishes)+1, "one poll per wake-up: no second read to find nothing")
		require.Zero(t, others)
		require.LessOrEqual(t, saves, int64(publishes))

		// A burst: saves are coalesced (at most one per 50 ms saveGap),
		// and the last position is stored all the same, when due.
		cr.saves.Store(0)
		began = time.Now()
		var last int64
		for range 40 {
			last, err = a.Publish(ctx, "p", []byte("y"))
			require.NoError(t, err)
			if !push {
				require.NoError(t, b.Sync(ctx))
			}
		}
		require.Eventually(t, func() bool {
			p, err := revs.Load(ctx, "b")
			return err == nil && p.Revision == last
		}, 10*time.Second, 5*time.Millisecond, "the coalesced save comes")
		saves, elapsed = cr.saves.Load(), time.Since(began)
		t.Logf("burst of 40 publishes in %v: %d saves", elapsed.Round(time.Millisecond), saves)
		require.LessOrEqual(t, saves, int64(elapsed/(50*time.Millisecond))+1)
	})
}

// refusingJournal refuses every poll while refusing is set, as a database
// out of connections does.
type refusingJournal struct {
	countingJournal
	refusing atomic.Bool
}

func (r *refusingJournal) Poll(ctx context.Context, after int64, limit int) (journal.PollResult, error) {
	if r.refusing.Load() {
		r.polls.Add(1)
		return journal.PollResult{}, fmt.Errorf("poll journal: %w: too many connections", dialect.ErrTooManyConnections)
	}
	return r.countingJournal.Poll(ctx, after, limit)
}

// TestRefusedPollsBackOff: while the database refuses connections, a node
// does not poll on every push wake-up: it retries with a doubling,
// jittered backoff, and catches up once connections are back.
func TestRefusedPollsBackOff(t *testing.T) {
	forEachBackend(t, func(t *testing.T, f fixture) {
		ctx := ctxT(t)
		j, revs, leases := f.stores(t, "b", "inst-b")
		rj := &refusingJournal{countingJournal: countingJournal{Journal: j}}
		c := cfg("b")
		c.Journal, c.Revisions, c.Leases, c.Instance = rj, revs, leases, "inst-b"
		c.SyncDelay = 400 * time.Millisecond
		b, err := cluster.New(c)
		require.NoError(t, err)
		t.Cleanup(func() { b.Stop(context.Background()) })
		var seen recorder
		require.NoError(t, b.Handle("p", &seen))
		start(t, b)
		a := f.open(t, cfg("a"))
		start(t, a)

		rj.refusing.Store(true)
		rj.polls.Store(0)
		began := time.Now()
		var last int64
		for range 60 {
			last, err = a.Publish(ctx, "p", []byte("x"))
			require.NoError(t, err)
			cluster.Wake(b) // as a push wake-up would, on every backend
			time.Sleep(10 * time.Millisecond)
		}
		polls, elapsed := rj.polls.Load(), time.Since(began)
		t.Logf("refused for %v: %d polls for 60 wake-ups", elapsed.Round(time.Millisecond), polls)
		// Retries start at SyncDelay/20 and double up to SyncDelay:
		// 20, 40, 80, 160, 320, then every 400 ms (±20%).
		require.LessOrEqual(t, polls, int64(5+elapsed/(300*time.Millisecond)), "polls back off")
		require.Less(t, b.Stats().Revision, last)
		rj.refusing.Store(false)
		require.Eventually(t, func() bool { return b.Stats().Revision >= last }, 10*time.Second, 5*time.Millisecond, "catches up")
		require.Len(t, seen.got(), 60)
		require.True(t, b.Stats().Member)
	})
}

// failingSaves is a position store whose saves fail while failing is set,
// as during a database outage; it counts every Save call.
type failingSaves struct {
	revision.Store
	failing atomic.Bool
	calls   atomic.Int64
}

func (f *failingSaves) Save(ctx context.Context, node string, rev int64, epoch string) error {
	f.calls.Add(1)
	if f.failing.Load() {
		return errors.New("injected: the store is down")
	}
	return f.Store.Save(ctx, node, rev, epoch)
}

// TestFailingSavesBackOff: while the position store fails every save, a
// node retries its save with backoff, not again as soon as one failed
// (tens of thousands of saves in half a second): the failure stays in
// Stats and is logged once; and once the store answers again, the
// position is stored and the node recovers.
func TestFailingSavesBackOff(t *testing.T) {
	forEachBackend(t, func(t *testing.T, f fixture) {
		ctx := ctxT(t)
		j, revs, leases := f.stores(t, "b", "inst-b")
		fs := &failingSaves{Store: revs}
		logs := &warnings{}
		c := cfg("b")
		c.Journal, c.Revisions, c.Leases, c.Instance = j, fs, leases, "inst-b"
		c.Logger = slog.New(logs)
		b, err := cluster.New(c)
		require.NoError(t, err)
		t.Cleanup(func() { b.Stop(context.Background()) })
		start(t, b)
		a := f.open(t, cfg("a"))
		start(t, a)

		// The store goes down; b applies a record, and its save of the
		// new position, 25-50 ms later, fails.
		fs.failing.Store(true)
		rev, err := a.Publish(ctx, "p", []byte("x"))
		require.NoError(t, err)
		require.NoError(t, b.WaitFor(ctx, rev))
		require.Eventually(t, func() bool { return fs.calls.Load() > 0 }, 10*time.Second, time.Millisecond, "b tries to save")
		time.Sleep(100 * time.Millisecond)
		fs.calls.Store(0)
		time.Sleep(500 * time.Millisecond)
		calls := fs.calls.Load()
		t.Logf("%d saves in 500 ms while the store failed them", calls)
		// Retries start at 50 ms and double up to 1 s (±20%): two or
		// three in this window.
		require.Positive(t, calls, "b keeps trying")
		require.Less(t, calls, int64(50), "saves back off")
		st := b.Stats()
		require.ErrorContains(t, st.LastSyncErr, "injected", "the failure shows in Stats")
		require.Positive(t, st.SyncErrors)
		require.Equal(t, rev, st.Revision, "the record was applied all the same")

		// The store answers again: the position is stored, and the next
		// sync reports the node recovered.
		fs.failing.Store(false)
		require.Eventually(t, func() bool {
			p, err := revs.Load(ctx, "b")
			return err == nil && p.Revision == rev
		}, 10*time.Second, 5*time.Millisecond, "the position is stored")
		require.Eventually(t, func() bool { return b.Stats().LastSyncErr == nil }, 10*time.Second, 5*time.Millisecond, "b recovers")
		require.Len(t, logs.matching("tandem: sync failing"), 1, "the failure is logged once, as a state change")
		require.Empty(t, logs.matching("still failing"))
	})
}

// pollLog records when each poll was sent.
type pollLog struct {
	journal.Journal
	mu    sync.Mutex
	times []time.Time
}

func (p *pollLog) Poll(ctx context.Context, after int64, limit int) (journal.PollResult, error) {
	p.mu.Lock()
	p.times = append(p.times, time.Now())
	p.mu.Unlock()
	return journal.Poll(ctx, p.Journal, after, limit)
}

func (p *pollLog) between(from, to time.Time) int {
	p.mu.Lock()
	defer p.mu.Unlock()
	n := 0
	for _, t := range p.times {
		if !t.Before(from) && t.Before(to) {
			n++
		}
	}
	return n
}

// TestLateRenewalComesFirst: while the membership renewal is overdue
// (less than half a MemberTTL left before the lease's deadline), the sync
// loop stops polling and leaves the database's connections to the renewal;
// requests (Sync) are still served.
func TestLateRenewalComesFirst(t *testing.T) {
	forEachBackend(t, func(t *testing.T, f fixture) {
		ctx := ctxT(t)
		j, revs, leases := f.stores(t, "b", "inst-b")
		stall := locktest.NewStall(leases)
		t.Cleanup(stall.End)
		pl := &pollLog{Journal: j}
		c := cfg("b")
		c.Journal, c.Revisions, c.Leases, c.Instance = pl, revs, stall, "inst-b"
		c.SyncDelay, c.MemberTTL = 50*time.Millisecond, 2*time.Second
		c.DisablePush = true
		b, err := cluster.New(c)
		require.NoError(t, err)
		t.Cleanup(func() { b.Stop(context.Background()) })
		start(t, b)

		stall.Begin() // renewals hang from now on
		cut := time.Now()
		var lost time.Time
		served := false
		require.Eventually(t, func() bool {
			if !served && time.Since(cut) > 1500*time.Millisecond {
				// Overdue by now: a request is still served.
				served = true
				require.NoError(t, b.Sync(ctx))
			}
			if !b.Stats().Member {
				lost = time.Now()
				return true
			}
			return false
		}, 10*time.Second, 2*time.Millisecond)
		// The deadline is 95% of MemberTTL after the last renewal that
		// went through (at most RenewEvery before cut); the renewal is
		// overdue from half a MemberTTL before it. Leave 150 ms either side.
		window := pl.between(lost.Add(-c.MemberTTL/2+150*time.Millisecond), lost.Add(-150*time.Millisecond))
		before := pl.between(cut, cut.Add(300*time.Millisecond))
		t.Logf("polls: %d in the 300 ms after the stall began, %d while the renewal was overdue (lost %v after the stall)", before, window, lost.Sub(cut).Round(time.Millisecond))
		require.Positive(t, before, "polls every SyncDelay while the lease is fine")
		// At most the one Sync served on request.
		require.LessOrEqual(t, window, 1, "no polls while the renewal is overdue")
	})
}
