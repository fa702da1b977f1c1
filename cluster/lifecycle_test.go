package cluster_test

import (
	"context"
	"errors"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/tandem-go/tandem/cluster"
	"github.com/tandem-go/tandem/internal/locktest"
	"github.com/tandem-go/tandem/journal"
)

// TestCutOffNodeStoresNoPosition: a node loses its membership lease (the
// lease store stops answering, its journal and positions still
// reachable), and another process takes its id, as it may once the lease
// expired. The old process goes on reading the journal, but it must not
// store a position under the id it no longer holds: that position is the
// new holder's. Stored ahead of what the new holder applied, it would let
// a Barrier pass while the new holder has not applied the revision, and a
// restart of the new holder skip records.
func TestCutOffNodeStoresNoPosition(t *testing.T) {
	forEachBackend(t, func(t *testing.T, f fixture) {
		ctx := ctxT(t)
		old, stall, _ := cutOffNode(t, f, nil, 2*time.Second)
		other := f.open(t, cfg("other"))
		start(t, other)
		start(t, old)

		stall.begin()
		require.Eventually(t, func() bool {
			_, err := old.Publish(ctx, "p", nil)
			return errors.Is(err, cluster.ErrMembershipLost)
		}, 30*time.Second, 5*time.Millisecond, "the old process loses its membership")

		release := make(chan struct{})
		t.Cleanup(func() { close(release) })
		succ := f.open(t, cfg("web"))
		stuck := blocking(release)
		require.NoError(t, succ.Handle("p", cluster.HandlerFunc(func(ctx context.Context, rec journal.Record) error {
			if string(rec.Payload) != "x" {
				return nil // what the old process published: it applies those
			}
			return stuck.Apply(ctx, rec)
		})))
		takeOver(t, ctx, succ)

		rev, err := other.Publish(ctx, "p", []byte("x"))
		require.NoError(t, err)
		// The old process reads it (it has no handler for it) ...
		require.Eventually(t, func() bool { return old.Stats().Revision >= rev }, 30*time.Second, 5*time.Millisecond)
		// ... and stops, with a final save. The successor is stuck before rev.
		_ = old.Stop(ctx)
		require.Less(t, succ.Stats().Revision, rev)

		p, err := f.revisions(t).Load(ctx, "web")
		require.NoError(t, err)
		require.Less(t, p.Revision, rev, "the position of web is the successor's, which has not applied %d", rev)
		bctx, cancel := context.WithTimeout(ctx, 300*time.Millisecond)
		defer cancel()
		require.ErrorIs(t, other.Barrier(bctx, rev), context.DeadlineExceeded, "the successor holds the barrier")
	})
}

// cutOffNode opens (not starts) node "web", instance "inst-old", with a
// MemberTTL of a second, whose lease store stall can cut off (its journal,
// through wrap when set, and positions stay reachable); it returns the
// node, the stall and the journal unwrapped.
func cutOffNode(t *testing.T, f fixture, wrap func(journal.Journal) journal.Journal, stopDelay time.Duration) (*cluster.Node, *cutOff, journal.Journal) {
	t.Helper()
	j, revs, leases := f.stores(t, "web", "inst-old")
	stall := &cutOff{Stall: locktest.NewStall(leases), done: make(chan struct{})}
	t.Cleanup(stall.end)
	c := cfg("web")
	c.Journal, c.Revisions, c.Leases, c.Instance = j, revs, stall, "inst-old"
	if wrap != nil {
		c.Journal = wrap(j)
	}
	c.MemberTTL = time.Second
	c.StopDelay = stopDelay
	n, err := cluster.New(c)
	require.NoError(t, err)
	t.Cleanup(func() { n.Stop(context.Background()) })
	return n, stall, j
}

// takeOver starts succ, which takes over the node id of a node cut off
// from its lease store, once that node's lease expired: until then its
// Start fails with ErrDuplicateNode.
func takeOver(t *testing.T, ctx context.Context, succ *cluster.Node) {
	t.Helper()
	require.Eventually(t, func() bool {
		sctx, cancel := context.WithTimeout(ctx, 10*time.Second)
		defer cancel()
		err := succ.Start(sctx)
		if err != nil {
			require.ErrorIs(t, err, cluster.ErrDuplicateNode)
		}
		return err == nil
	}, 30*time.Second, 10*time.Millisecond, "the successor takes the id once the old lease expired")
}

// gatedAppends is a journal whose appends wait, honouring their context,
// while the gate is shut, as an append waits in the group commit's queue
// behind a batch stuck at the counter's lock: one whose context ends
// before its batch is sent is dropped and writes nothing.
type gatedAppends struct {
	journal.Journal
	mu   sync.Mutex
	gate chan struct{} // nil: open
	in   chan struct{}
}

func (g *gatedAppends) Append(ctx context.Context, entries ...journal.Entry) ([]int64, error) {
	g.mu.Lock()
	gate := g.gate
	g.mu.Unlock()
	if gate != nil {
		g.in <- struct{}{}
		select {
		case <-gate:
		case <-ctx.Done():
			return nil, ctx.Err()
		}
	}
	return g.Journal.Append(ctx, entries...)
}

// TestNoPublishAfterMembershipLost: a publish that waits for its turn
// while the node loses its membership lease — its lease store stops
// answering, and another process takes the id over — must not be written
// when its turn comes: the node does not hold its id any more.
func TestNoPublishAfterMembershipLost(t *testing.T) {
	forEachBackend(t, func(t *testing.T, f fixture) {
		ctx := ctxT(t)
		var gated *gatedAppends
		old, stall, j := cutOffNode(t, f, func(j journal.Journal) journal.Journal {
			gated = &gatedAppends{Journal: j, in: make(chan struct{}, 1)}
			return gated
		}, 300*time.Millisecond)
		start(t, old)

		gate := make(chan struct{})
		gated.mu.Lock()
		gated.gate = gate
		gated.mu.Unlock()
		published := make(chan error, 1)
		go func() {
			_, err := old.Publish(ctx, "p", []byte("late"))
			published <- err
		}()
		<-gated.in // the publish waits for its turn
		stall.begin()
		succ := f.open(t, cfg("web"))
		takeOver(t, ctx, succ)
		close(gate)

		err := <-published
		require.ErrorIs(t, err, cluster.ErrMembershipLost, "the publish of a node that lost its id fails")
		head, err := j.Head(ctx)
		require.NoError(t, err)
		recs, err := j.Read(ctx, 0, int(head)+1)
		require.NoError(t, err)
		for _, r := range recs {
			require.NotEqual(t, "late", string(r.Payload), "revision %d was written after the node lost its id", r.Revision)
		}
	})
}
