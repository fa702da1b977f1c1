package cluster_test

import (
	"context"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/tandem-go/tandem/cluster"
	"github.com/tandem-go/tandem/internal/dbtest"
	"github.com/tandem-go/tandem/internal/sqldialect"
	"github.com/tandem-go/tandem/journal"
	"github.com/tandem-go/tandem/lock"
	"github.com/tandem-go/tandem/revision"
)

// pollBehind runs one barrier poll of n at rev and checks it against the
// fallback, which lists every lease and position: on a SQL node the
// aggregate statement must agree with it. While nodes are still applying,
// the count moves between two polls; in these tests it only falls, so
// equal polls on both sides of the listing pin what the listing must say.
// aggregate says which poll n uses.
func pollBehind(t *testing.T, ctx context.Context, n *cluster.Node, rev int64) (behind int64, aggregate bool) {
	t.Helper()
	for range 100 {
		before, agg, err := cluster.BarrierPoll(ctx, n, rev)
		require.NoError(t, err)
		listed, err := cluster.StoresBehind(ctx, n, rev)
		require.NoError(t, err)
		after, _, err := cluster.BarrierPoll(ctx, n, rev)
		require.NoError(t, err)
		if before == after {
			require.Equal(t, before, listed, "the aggregate count agrees with the stores' lists")
			return after, agg
		}
	}
	t.Fatal("the barrier's count kept moving")
	return 0, false
}

// waitBehind waits (within a deadline) until n's barrier poll at rev
// counts want nodes behind.
func waitBehind(t *testing.T, ctx context.Context, n *cluster.Node, rev, want int64) {
	t.Helper()
	deadline := time.Now().Add(20 * time.Second)
	for {
		got, _ := pollBehind(t, ctx, n, rev)
		if got == want {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("barrier poll at %d: %d nodes behind, want %d", rev, got, want)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// blocking is a handler that blocks until release is closed (or its
// context ends).
func blocking(release <-chan struct{}) cluster.Handler {
	return cluster.HandlerFunc(func(ctx context.Context, _ journal.Record) error {
		select {
		case <-release:
			return nil
		case <-ctx.Done():
			return ctx.Err()
		}
	})
}

// TestBarrierLiveNodes: the barrier returns once every live node applied
// rev, and a live node stuck in its handler holds it (from any other node)
// until ctx ends; a node that stopped cleanly is not waited for. SQL nodes
// answer each poll with the aggregate statement, folder nodes by listing.
func TestBarrierLiveNodes(t *testing.T) {
	forEachBackend(t, func(t *testing.T, f fixture) {
		ctx := ctxT(t)
		a := f.open(t, cfg("a"))
		start(t, a)
		release := make(chan struct{})
		stuck := f.open(t, cfg("stuck"))
		require.NoError(t, stuck.Handle("p", blocking(release)))
		start(t, stuck)
		c := f.open(t, cfg("c"))
		start(t, c)
		gone := f.open(t, cfg("gone"))
		start(t, gone)
		require.NoError(t, gone.Stop(ctx)) // its position stays behind; its lease is released

		rev, err := a.Publish(ctx, "p", []byte("x"))
		require.NoError(t, err)
		_, aggregate := pollBehind(t, ctx, a, rev)
		require.Equal(t, f.backend != "file", aggregate, "OpenSQL nodes use the aggregate statement, OpenDir ones list")
		waitBehind(t, ctx, a, rev, 1) // c applies rev; stuck cannot
		waitBehind(t, ctx, c, rev, 1) // from c: only stuck (c excludes itself, a applied its own)

		for _, n := range []*cluster.Node{a, c} {
			short, cancel := context.WithTimeout(ctx, 300*time.Millisecond)
			err = n.Barrier(short, rev)
			cancel()
			require.ErrorIs(t, err, context.DeadlineExceeded, "%s: a stuck live node holds the barrier", n.ID())
			require.ErrorContains(t, err, "1 live node(s) behind")
		}

		close(release)
		require.NoError(t, a.Barrier(ctx, rev), "once stuck applied rev, every live node has")
		require.NoError(t, c.Barrier(ctx, rev))
		require.NoError(t, stuck.Barrier(ctx, rev))
		for _, n := range []*cluster.Node{a, stuck, c} {
			behind, _ := pollBehind(t, ctx, n, rev)
			require.Zero(t, behind, n.ID())
		}
	})
}

// TestBarrierDeadNode: a node that died without Stop (its membership
// lease taken and never renewed, as a killed process leaves it, without a
// position) holds the barrier while its lease lasts, and stops holding it
// once the lease expires: within about MemberTTL, not forever.
func TestBarrierDeadNode(t *testing.T) {
	forEachBackend(t, func(t *testing.T, f fixture) {
		ctx := ctxT(t)
		a := f.open(t, cfg("a"))
		start(t, a)
		const ttl = 1500 * time.Millisecond
		taken := time.Now()
		_, ok, err := a.Leases().TryAcquire(ctx, lock.MemberLease("dead"), lock.Owner{NodeID: "dead", Instance: "killed"}, ttl)
		require.NoError(t, err)
		require.True(t, ok)

		rev, err := a.Publish(ctx, "p", []byte("x"))
		require.NoError(t, err)
		behind, _ := pollBehind(t, ctx, a, rev)
		require.EqualValues(t, 1, behind, "a live member without a position is behind")
		short, cancel := context.WithTimeout(ctx, 300*time.Millisecond)
		err = a.Barrier(short, rev)
		cancel()
		require.ErrorIs(t, err, context.DeadlineExceeded, "the dead node counts while its lease lasts")

		wait, cancel := context.WithTimeout(ctx, ttl+5*time.Second)
		defer cancel()
		require.NoError(t, a.Barrier(wait, rev), "the barrier returns once the dead node's lease expired")
		took := time.Since(taken)
		t.Logf("barrier returned %v after the dead node's lease was taken (TTL %v)", took, ttl)
		require.Less(t, took, ttl+3*time.Second, "within about MemberTTL")
		behind, _ = pollBehind(t, ctx, a, rev)
		require.Zero(t, behind)
	})
}

// TestBarrierEvictedPosition: a live node whose position the janitor
// evicted has not resynced yet, so it counts as behind even though its
// stored revision is not below rev; once it saves a position again (as
// its resync does) it no longer does.
func TestBarrierEvictedPosition(t *testing.T) {
	forEachBackend(t, func(t *testing.T, f fixture) {
		ctx := ctxT(t)
		a := f.open(t, cfg("a"))
		start(t, a)
		rev, err := a.Publish(ctx, "p", []byte("x"))
		require.NoError(t, err)
		epoch, err := a.Journal().Epoch(ctx)
		require.NoError(t, err)

		revs := f.revisions(t)
		require.NoError(t, revs.Save(ctx, "back", rev+5, epoch))
		evicted, err := revs.(revision.Evicter).Evict(ctx, "back", rev+5)
		require.NoError(t, err)
		require.True(t, evicted)
		_, ok, err := a.Leases().TryAcquire(ctx, lock.MemberLease("back"), lock.Owner{NodeID: "back", Instance: "i"}, time.Minute)
		require.NoError(t, err)
		require.True(t, ok)

		behind, _ := pollBehind(t, ctx, a, rev)
		require.EqualValues(t, 1, behind, "an evicted position is behind, whatever its revision")
		require.NoError(t, revs.Save(ctx, "back", rev, epoch))
		behind, _ = pollBehind(t, ctx, a, rev)
		require.Zero(t, behind, "a saved position at rev has applied it")
		require.NoError(t, revs.Save(ctx, "back", rev-1, epoch))
		behind, _ = pollBehind(t, ctx, a, rev)
		require.EqualValues(t, 1, behind, "a position below rev is behind")
		require.NoError(t, a.Barrier(ctx, rev-1), "but it has applied rev-1")
	})
}

// TestBarrierOtherEpochPosition: a live node whose stored position was
// saved in another journal epoch (before a restore; it has not resynced
// yet) counts as behind whatever its revision, in the aggregate statement
// and the listing alike; once it saves a position in the journal's epoch
// (as its resync does) it no longer does.
func TestBarrierOtherEpochPosition(t *testing.T) {
	forEachBackend(t, func(t *testing.T, f fixture) {
		ctx := ctxT(t)
		a := f.open(t, cfg("a"))
		start(t, a)
		rev, err := a.Publish(ctx, "p", []byte("x"))
		require.NoError(t, err)
		epoch, err := a.Journal().Epoch(ctx)
		require.NoError(t, err)

		revs := f.revisions(t)
		require.NoError(t, revs.Save(ctx, "back", rev+5, "another-epoch-0123456789abcdef"))
		_, ok, err := a.Leases().TryAcquire(ctx, lock.MemberLease("back"), lock.Owner{NodeID: "back", Instance: "i"}, time.Minute)
		require.NoError(t, err)
		require.True(t, ok)

		behind, _ := pollBehind(t, ctx, a, rev)
		require.EqualValues(t, 1, behind, "a position of another epoch is behind, whatever its revision")
		require.NoError(t, revs.Save(ctx, "back", rev, epoch))
		behind, _ = pollBehind(t, ctx, a, rev)
		require.Zero(t, behind, "a position at rev in the journal's epoch has applied it")
		require.NoError(t, a.Barrier(ctx, rev))
	})
}

// TestBarrierStalePositions: thousands of positions and expired
// membership leases of dead node ids (inserted directly) do not hold the
// barrier, and its poll is still one statement that returns one row.
func TestBarrierStalePositions(t *testing.T) {
	const dead = 3000
	for _, b := range dbtest.Backends {
		t.Run(b.Name, func(t *testing.T) {
			t.Parallel()
			db := dbtest.Open(t, b)
			ctx := ctxT(t)
			open := func(id string) *cluster.Node {
				c := cfg(id)
				c.Prefix = db.Prefix
				n, err := cluster.OpenSQL(ctx, db.NewPool(t), b.Dialect, c)
				require.NoError(t, err)
				t.Cleanup(func() { n.Stop(context.Background()) })
				start(t, n)
				return n
			}
			a, other := open("a"), open("b")
			tb, err := sqldialect.NewTables("Prefix", db.Prefix)
			require.NoError(t, err)
			// Positions at revision 0, every third evicted; every
			// other id also has a membership lease, long expired.
			for lo := 0; lo < dead; lo += 500 {
				var pos, leases []string
				for i := lo; i < lo+500; i++ {
					id := fmt.Sprintf("dead-%05d", i)
					evicted := "NULL"
					if i%3 == 0 {
						evicted = "CURRENT_TIMESTAMP"
					}
					pos = append(pos, fmt.Sprintf("('%s', 0, 'old', CURRENT_TIMESTAMP, %s)", id, evicted))
					if i%2 == 0 {
						const past = "TIMESTAMP '2020-01-01 00:00:00'"
						leases = append(leases, fmt.Sprintf("('member.%s', '%s', 'gone', 1, 7, %s, %s, %s)", id, id, past, past, past))
					}
				}
				_, err := db.DB.ExecContext(ctx, `INSERT INTO `+tb.LocalRevisions+` (node_id, revision, epoch, updated_at, evicted_at) VALUES `+strings.Join(pos, ", "))
				require.NoError(t, err)
				_, err = db.DB.ExecContext(ctx, `INSERT INTO `+tb.Locks+` (name, owner, instance, token, heartbeat, acquired_at, renewed_at, expires_at) VALUES `+strings.Join(leases, ", "))
				require.NoError(t, err)
			}
			ms, err := a.Members(ctx)
			require.NoError(t, err)
			require.Len(t, ms, dead+2, "the stale rows are there")

			rev, err := a.Publish(ctx, "p", []byte("x"))
			require.NoError(t, err)
			began := time.Now()
			require.NoError(t, a.Barrier(ctx, rev))
			t.Logf("barrier over %d stale ids took %v", dead, time.Since(began))
			prompt, cancel := context.WithTimeout(ctx, 5*time.Second)
			defer cancel()
			require.NoError(t, other.Barrier(prompt, rev), "stale ids do not hold the barrier")
			behind, aggregate := pollBehind(t, ctx, a, rev)
			require.True(t, aggregate)
			require.Zero(t, behind)

			// The statement itself: one row, whatever the table holds.
			for _, c := range []struct {
				node string
				rev  int64
				want int64
			}{{"a", rev, 0}, {"a", rev + 1, 1}, {"nobody", rev + 1, 2}} {
				rows, err := db.DB.QueryContext(ctx, b.Dialect.Queries(tb).MembersBehind, c.node, c.rev)
				require.NoError(t, err)
				var got []int64
				for rows.Next() {
					var n int64
					require.NoError(t, rows.Scan(&n))
					got = append(got, n)
				}
				require.NoError(t, rows.Err())
				rows.Close()
				require.Equal(t, []int64{c.want}, got, "node %s at %d: one row, counting the live nodes only", c.node, c.rev)
			}
		})
	}
}
