package cluster_test

import (
	"context"
	"fmt"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/tandem-go/tandem/cluster"
	"github.com/tandem-go/tandem/janitor"
	"github.com/tandem-go/tandem/journal"
	"github.com/tandem-go/tandem/lock"
	"github.com/tandem-go/tandem/revision"
)

// TestEvictedNodeResyncs: a node that went away without Stop (its lease
// lapsed) pins the horizon until EvictAfter; then the janitor of a running
// node evicts it and prunes past it. When the node returns, it finds the
// eviction marker: its resync hook runs with ResyncEvicted and it goes on
// from the head, rather than passing for a brand-new node.
func TestEvictedNodeResyncs(t *testing.T) {
	forEachBackend(t, func(t *testing.T, f fixture) {
		ctx := ctxT(t)
		c := cfg("keeper")
		c.Janitor = &janitor.Config{EvictAfter: 2 * time.Second, KeepRecords: -1, KeepFor: -1, Interval: time.Hour}
		keeper := f.open(t, c)
		start(t, keeper)
		require.NotNil(t, keeper.Janitor())

		// "gone" ran, applied up to here, and died: its lease lapses.
		j, revs, leases := f.stores(t, "gone", "gone-1")
		epoch, err := j.Epoch(ctx)
		require.NoError(t, err)
		at := publishN(t, ctx, keeper, 5)
		require.NoError(t, revs.Save(ctx, "gone", at, epoch))
		lc, err := lock.New(lock.Config{NodeID: "gone", Instance: "gone-1", Store: leases, TTL: 300 * time.Millisecond})
		require.NoError(t, err)
		l, err := lc.TryAcquireMembership(ctx)
		require.NoError(t, err)
		l.Abandon()
		last := publishN(t, ctx, keeper, 5)
		// The keeper stores its own position (at most a second behind).
		require.Eventually(t, func() bool {
			p, err := revs.Load(ctx, "keeper")
			return err == nil && p.Revision >= last
		}, 20*time.Second, 50*time.Millisecond)

		rep, err := keeper.Janitor().RunOnce(ctx)
		require.NoError(t, err)
		require.Equal(t, "gone", rep.PinnedBy, "a recently departed node pins the horizon")
		require.EqualValues(t, at+1, rep.NewTail)
		require.Eventually(t, func() bool {
			rep, err = keeper.Janitor().RunOnce(ctx)
			require.NoError(t, err)
			return len(rep.Evicted) == 1
		}, 30*time.Second, 200*time.Millisecond)
		require.Greater(t, rep.NewTail, at+1, "pruned past the evicted node")

		var reasons []cluster.ResyncReason
		rec := &recorder{}
		back := f.open(t, cfg("gone"))
		require.NoError(t, back.Handle("p", rec))
		require.NoError(t, back.OnResync(func(_ context.Context, why cluster.ResyncReason) error {
			reasons = append(reasons, why)
			return nil
		}))
		start(t, back)
		require.Equal(t, []cluster.ResyncReason{cluster.ResyncEvicted}, reasons)
		require.Empty(t, rec.got(), "it goes on from the head")
		next, err := keeper.Publish(ctx, "p", []byte("after"))
		require.NoError(t, err)
		require.Greater(t, next, last)
		require.NoError(t, back.WaitFor(ctx, next))
		require.Len(t, rec.got(), 1)
		p, err := f.revisions(t).Load(ctx, "gone")
		require.NoError(t, err)
		require.False(t, p.Evicted, "its next save clears the marker")
	})
}

// racingCopy is a position store whose Copy first runs moved: the source
// node publishes and stores a position past the head that the starting
// clone may have read already.
type racingCopy struct {
	revision.Store
	moved func()
}

func (r racingCopy) Copy(ctx context.Context, from, to string) error {
	r.moved()
	return r.Store.Copy(ctx, from, to)
}

// TestCloneOfMovingSource starts a node with CopyFrom while its source
// moves on: the source appends and stores a position above the head of
// the moment the clone started. The clone goes on from that position,
// with no resync (it used to compare the copied position with a head it
// had read before copying, and resynced as "ahead of the head").
func TestCloneOfMovingSource(t *testing.T) {
	forEachBackend(t, func(t *testing.T, f fixture) {
		ctx := ctxT(t)
		src := f.open(t, cfg("src"))
		start(t, src)
		publishN(t, ctx, src, 3)
		j, revs, leases := f.stores(t, "clone", "clone-1")
		var moved int64
		c := cfg("clone")
		c.Journal, c.Leases, c.Instance, c.CopyFrom = j, leases, "clone-1", "src"
		c.Revisions = racingCopy{Store: revs, moved: func() {
			moved = publishN(t, ctx, src, 2)
			// src stores a position past the head the clone may have
			// read. Its own save, not one faked here: a faked one could
			// be overwritten by src's save of a revision before moved,
			// still on its way (src saves a little after it applied).
			require.Eventually(t, func() bool {
				p, err := revs.Load(ctx, "src")
				return err == nil && p.Revision == moved
			}, 10*time.Second, time.Millisecond)
		}}
		clone, err := cluster.New(c)
		require.NoError(t, err)
		t.Cleanup(func() { clone.Stop(context.Background()) })
		var reasons []cluster.ResyncReason
		require.NoError(t, clone.OnResync(func(_ context.Context, why cluster.ResyncReason) error {
			reasons = append(reasons, why)
			return nil
		}))
		rec := &recorder{}
		require.NoError(t, clone.Handle("p", rec))
		start(t, clone)
		require.Empty(t, reasons, "no resync")
		require.Equal(t, moved, clone.Stats().Revision, "from the copied position")
		next, err := src.Publish(ctx, "p", []byte("after"))
		require.NoError(t, err)
		require.NoError(t, clone.WaitFor(ctx, next))
		require.Len(t, rec.got(), 1, "only what came after the copied position")
	})
}

// TestCloneDuringPruning starts nodes with CopyFrom while a janitor prunes
// every 100 ms and the source keeps publishing: every clone catches up from
// the source's position without a resync.
func TestCloneDuringPruning(t *testing.T) {
	forEachBackend(t, func(t *testing.T, f fixture) {
		ctx := ctxT(t)
		c := cfg("src")
		c.Janitor = &janitor.Config{Interval: 100 * time.Millisecond, KeepRecords: -1, KeepFor: -1, BatchSize: 20}
		src := f.open(t, c)
		start(t, src)
		stop := make(chan struct{})
		var wg sync.WaitGroup
		var published atomic.Int64
		wg.Go(func() {
			for i := 0; ; i++ {
				select {
				case <-stop:
					return
				default:
				}
				rev, err := src.Publish(ctx, "p", fmt.Appendf(nil, "%d", i))
				if err != nil {
					t.Error(err)
					return
				}
				published.Store(rev)
				time.Sleep(2 * time.Millisecond)
			}
		})
		for k := range 4 {
			time.Sleep(250 * time.Millisecond)
			cc := cfg(fmt.Sprintf("clone%d", k))
			cc.CopyFrom = "src"
			clone := f.open(t, cc)
			resynced := false
			require.NoError(t, clone.OnResync(func(context.Context, cluster.ResyncReason) error { resynced = true; return nil }))
			var got atomic.Int64
			require.NoError(t, clone.Handle("p", cluster.HandlerFunc(func(_ context.Context, r journal.Record) error {
				got.Add(1)
				return nil
			})))
			start(t, clone)
			require.NoError(t, clone.WaitFor(ctx, published.Load()))
			require.False(t, resynced, "clone %d needed no resync", k)
			require.NoError(t, clone.Stop(ctx))
			// A stopped clone would pin the horizon until EvictAfter;
			// the operator removes it.
			require.NoError(t, f.revisions(t).Delete(ctx, cc.NodeID))
		}
		// The janitor prunes once src has stored its position (at most a
		// second after it moved); on a loaded machine that may take a few.
		var tail int64
		require.Eventually(t, func() bool {
			var err error
			tail, err = src.Journal().Tail(ctx)
			return err == nil && tail > 1
		}, 30*time.Second, 50*time.Millisecond, "the janitor pruned while clones were made")
		close(stop)
		wg.Wait()
		st := src.Janitor().Stats()
		t.Logf("%s: %d janitor runs, %d records deleted, tail %d", f.backend, st.Runs, st.Deleted, tail)
	})
}

// stopWatch is a janitor's clock that notes whether it is read after the
// node's Stop returned: the scheduler reads it when the janitor starts
// and on every turn of its loop.
type stopWatch struct {
	stopped, readAfter atomic.Bool
}

func (c *stopWatch) Now() time.Time {
	if c.stopped.Load() {
		c.readAfter.Store(true)
	}
	return time.Now()
}

// TestStopStopsJanitor: a Stop that comes as soon as Start published the
// node as running stops the node's janitor: nothing of it runs after Stop
// returned. (Start used to start the janitor only after publishing the
// node as running: a Stop in between stopped a janitor not started yet,
// which Start then started, to run for good.)
func TestStopStopsJanitor(t *testing.T) {
	ctx := ctxT(t)
	clock := &stopWatch{}
	c := cfg("a")
	c.Dir = t.TempDir()
	c.Janitor = &janitor.Config{Interval: time.Hour, Clock: clock}
	n, err := cluster.OpenDir(ctx, c)
	require.NoError(t, err)
	t.Cleanup(func() { n.Janitor().Stop(context.Background()) }) // after a failure
	cluster.OnStarted(n, func() {
		require.NoError(t, n.Stop(ctx))
		clock.stopped.Store(true)
	})
	require.NoError(t, n.Start(ctx))
	require.False(t, n.Stats().Running)
	require.False(t, clock.readAfter.Load(), "the janitor started after Stop")
}
