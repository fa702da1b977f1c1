package janitor_test

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"os"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/tandem-go/tandem/internal/dbtest"
	"github.com/tandem-go/tandem/janitor"
	"github.com/tandem-go/tandem/journal"
	"github.com/tandem-go/tandem/lock"
	"github.com/tandem-go/tandem/revision"
)

func TestMain(m *testing.M) { dbtest.VerifyNoLeaks(m) }

// store is one backend's shared state, opened the way each node opens it.
type store struct {
	name    string
	journal func(t *testing.T, node string) journal.Journal
	revs    func(t *testing.T) revision.Store
	leases  func(t *testing.T) lock.Store
}

// stores returns the folder, PostgreSQL and MySQL stores, each fresh.
func stores(t *testing.T) []func(t *testing.T) store {
	out := []func(t *testing.T) store{func(t *testing.T) store {
		dir := t.TempDir()
		return store{
			name: "file",
			journal: func(t *testing.T, node string) journal.Journal {
				j, err := journal.OpenFile(context.Background(), journal.FileConfig{Dir: dir, NodeID: node, SegmentSize: 512})
				require.NoError(t, err)
				t.Cleanup(func() { j.Close(context.Background()) })
				return j
			},
			revs: func(t *testing.T) revision.Store {
				r, err := revision.OpenFile(context.Background(), revision.FileConfig{Dir: dir})
				require.NoError(t, err)
				return r
			},
			leases: func(t *testing.T) lock.Store {
				l, err := lock.OpenFile(context.Background(), lock.FileConfig{Dir: dir})
				require.NoError(t, err)
				return l
			},
		}
	}}
	for _, b := range dbtest.Backends {
		out = append(out, func(t *testing.T) store {
			db := dbtest.Open(t, b)
			ctx := context.Background()
			return store{
				name: b.Name,
				journal: func(t *testing.T, node string) journal.Journal {
					j, err := journal.OpenSQL(ctx, db.NewPool(t), b.Dialect, journal.SQLConfig{NodeID: node, Prefix: db.Prefix})
					require.NoError(t, err)
					t.Cleanup(func() { j.Close(context.Background()) })
					return j
				},
				revs: func(t *testing.T) revision.Store {
					r, err := revision.OpenSQL(ctx, db.NewPool(t), b.Dialect, revision.SQLConfig{Prefix: db.Prefix})
					require.NoError(t, err)
					return r
				},
				leases: func(t *testing.T) lock.Store {
					l, err := lock.OpenSQL(ctx, db.NewPool(t), b.Dialect, lock.SQLConfig{Prefix: db.Prefix})
					require.NoError(t, err)
					return l
				},
			}
		})
	}
	return out
}

// eachStore runs fn on every backend in parallel subtests.
func eachStore(t *testing.T, fn func(t *testing.T, s store)) {
	names := []string{"file", "postgres", "mysql", "sqlserver", "oracle"}
	for i, open := range stores(t) {
		t.Run(names[i], func(t *testing.T) {
			t.Parallel()
			fn(t, open(t))
		})
	}
}

func newJanitor(t *testing.T, s store, node string, cfg janitor.Config) *janitor.Janitor {
	t.Helper()
	cfg.NodeID = node
	if cfg.Journal == nil {
		cfg.Journal = s.journal(t, node)
	}
	if cfg.Revisions == nil {
		cfg.Revisions = s.revs(t)
	}
	if cfg.Leases == nil {
		cfg.Leases = s.leases(t)
	}
	if cfg.KeepRecords == 0 {
		cfg.KeepRecords = -1
	}
	if cfg.KeepFor == 0 {
		cfg.KeepFor = -1
	}
	j, err := janitor.New(cfg)
	require.NoError(t, err)
	return j
}

func ctxT(t *testing.T) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	t.Cleanup(cancel)
	return ctx
}

func appendN(t *testing.T, j journal.Journal, n int, tag string) {
	for i := range n {
		_, err := j.Append(ctxT(t), journal.Entry{Producer: "p", Payload: fmt.Appendf(nil, "%s-%d", tag, i)})
		require.NoError(t, err)
	}
}

func member(t *testing.T, s lock.Store, node string, ttl time.Duration) *lock.Lease {
	c, err := lock.New(lock.Config{NodeID: node, Store: s, TTL: ttl})
	require.NoError(t, err)
	// lock.MemberPrefix leases are tandem's own: only
	// TryAcquireMembership takes them, and only for the client's node.
	l, err := c.TryAcquireMembership(ctxT(t))
	require.NoError(t, err)
	return l
}

// killed makes node a member that saved rev and was killed: its
// membership lease, of ttl, lapses on its own.
func killed(t *testing.T, leases lock.Store, revs revision.Store, node string, rev int64, epoch string, ttl time.Duration) {
	t.Helper()
	l := member(t, leases, node, ttl)
	require.NoError(t, revs.Save(ctxT(t), node, rev, epoch))
	l.Abandon()
}

// running makes node a live member at rev for the rest of the test.
func running(t *testing.T, leases lock.Store, revs revision.Store, node string, rev int64, epoch string) {
	t.Helper()
	l := member(t, leases, node, 10*time.Second)
	t.Cleanup(func() { l.Release(context.Background()) })
	require.NoError(t, revs.Save(ctxT(t), node, rev, epoch))
}

func duration() time.Duration {
	if d, err := time.ParseDuration(os.Getenv("TANDEM_TEST_DURATION")); err == nil && d > 0 {
		return d
	}
	if testing.Short() {
		return time.Second
	}
	return 3 * time.Second
}

// TestPruneWhileNodesRun runs 8 nodes that append, read and save their
// positions while two janitors prune every 150 ms, and clones that are
// made from live nodes' positions during pruning. No node ever finds its
// position below the tail or misses a record, every clone can read on
// from its position, and the journal below the horizon is gone.
func TestPruneWhileNodesRun(t *testing.T) {
	eachStore(t, func(t *testing.T, s store) {
		ctx := ctxT(t)
		epochJ := s.journal(t, "probe")
		epoch, err := epochJ.Epoch(ctx)
		require.NoError(t, err)
		js := []*janitor.Janitor{
			newJanitor(t, s, "jan-a", janitor.Config{Interval: 150 * time.Millisecond, BatchSize: 20}),
			newJanitor(t, s, "jan-b", janitor.Config{Interval: 150 * time.Millisecond, BatchSize: 20}),
		}
		for _, j := range js {
			require.NoError(t, j.Start(ctx))
			defer j.Stop(context.Background())
		}

		const nodes = 8
		stop := make(chan struct{})
		var wg sync.WaitGroup
		errs := make(chan error, nodes+1)
		seen := make([][]int64, nodes)
		var appending sync.WaitGroup // every node appends until stop
		appending.Add(nodes)
		for n := range nodes {
			wg.Go(func() {
				id := fmt.Sprintf("node%d", n)
				jn := s.journal(t, id)
				revs := s.revs(t)
				lease := member(t, s.leases(t), id, 2*time.Second)
				defer lease.Release(context.Background())
				var pos int64
				if err := revs.Save(ctx, id, pos, epoch); err != nil {
					appending.Done()
					errs <- err
					return
				}
				for i := 0; ; i++ {
					select {
					case <-stop:
						// Catch up to the end, once nobody appends.
						appending.Done()
						appending.Wait()
						head, err := jn.Head(ctx)
						if err != nil {
							errs <- err
							return
						}
						for pos < head {
							recs, err := jn.Read(ctx, pos, 100)
							if err != nil {
								errs <- fmt.Errorf("%s final read after %d: %w", id, pos, err)
								return
							}
							for _, r := range recs {
								seen[n] = append(seen[n], r.Revision)
								pos = r.Revision
							}
						}
						return
					default:
					}
					if _, err := jn.Append(ctx, journal.Entry{Producer: "p", Payload: fmt.Appendf(nil, "%s-%d", id, i)}); err != nil {
						errs <- err
						return
					}
					recs, err := jn.Read(ctx, pos, 1+rand.IntN(50))
					if err != nil {
						errs <- fmt.Errorf("%s read after %d: %w", id, pos, err)
						return
					}
					for _, r := range recs {
						if r.Revision != pos+1 {
							errs <- fmt.Errorf("%s: revision %d after %d", id, r.Revision, pos)
							return
						}
						seen[n] = append(seen[n], r.Revision)
						pos = r.Revision
					}
					if i%3 == 0 {
						if err := revs.Save(ctx, id, pos, epoch); err != nil {
							errs <- err
							return
						}
					}
				}
			})
		}
		// Clones taken from live nodes while the janitors prune.
		var clones atomic.Int64
		wg.Go(func() {
			revs := s.revs(t)
			reader := s.journal(t, "clone-reader")
			for k := 0; ; k++ {
				select {
				case <-stop:
					return
				case <-time.After(100 * time.Millisecond):
				}
				id := fmt.Sprintf("clone%d", k)
				if err := revs.Copy(ctx, fmt.Sprintf("node%d", rand.IntN(nodes)), id); errors.Is(err, revision.ErrNotFound) {
					continue // that node has not saved yet
				} else if err != nil {
					errs <- err
					return
				}
				time.Sleep(350 * time.Millisecond) // two janitor runs
				p, err := revs.Load(ctx, id)
				if err != nil {
					errs <- err
					return
				}
				if _, err := reader.Read(ctx, p.Revision, 10); err != nil {
					errs <- fmt.Errorf("clone %s at %d: %w", id, p.Revision, err)
					return
				}
				clones.Add(1)
				if err := revs.Delete(ctx, id); err != nil {
					errs <- err
					return
				}
			}
		})
		// Run for the test's duration, then on until the janitors have
		// pruned and a clone has read on: an I/O stall on a shared machine
		// can hold every node up for seconds, and the assertions below
		// are about what happened, not how fast.
		time.Sleep(duration())
		for deadline := time.Now().Add(time.Minute); time.Now().Before(deadline); time.Sleep(100 * time.Millisecond) {
			tail, err := epochJ.Tail(ctx)
			require.NoError(t, err)
			if tail > 1 && clones.Load() > 0 {
				break
			}
		}
		close(stop)
		wg.Wait()
		close(errs)
		for err := range errs {
			require.NoError(t, err)
		}
		for _, j := range js {
			require.NoError(t, j.Stop(ctx))
		}

		head, err := epochJ.Head(ctx)
		require.NoError(t, err)
		for n, revs := range seen {
			require.Len(t, revs, int(head), "node %d saw every record", n)
			for i, r := range revs {
				require.EqualValues(t, i+1, r, "node %d: dense and in order", n)
			}
		}
		var deleted int64
		runs := 0
		for _, j := range js {
			st := j.Stats()
			deleted += st.Deleted
			runs += st.Runs
			require.NoError(t, st.LastError)
		}
		tail, err := epochJ.Tail(ctx)
		require.NoError(t, err)
		t.Logf("%s: %d records, %d janitor runs, %d deleted, tail %d, %d clones read on", s.name, head, runs, deleted, tail, clones.Load())
		require.Greater(t, tail, int64(1), "pruned")
		require.Positive(t, deleted)
		require.Positive(t, clones.Load())
		_, err = epochJ.Read(ctx, 0, 1)
		require.ErrorIs(t, err, journal.ErrBehindTail, "the journal below the horizon is gone")
	})
}

// TestEvictAfter: a node that stops without Stop (its lease lapses) pins
// the horizon until EvictAfter has passed, by the store's clock; then the
// janitor evicts it (a marker, not a deletion) and prunes past it.
func TestEvictAfter(t *testing.T) {
	eachStore(t, func(t *testing.T, s store) {
		ctx := ctxT(t)
		jn := s.journal(t, "live")
		epoch, err := jn.Epoch(ctx)
		require.NoError(t, err)
		revs := s.revs(t)
		leases := s.leases(t)
		appendN(t, jn, 10, "a")
		killed(t, leases, revs, "dead", 4, epoch, 300*time.Millisecond) // its lease lapses on its own
		running(t, leases, revs, "live", 10, epoch)

		const evictAfter = 2 * time.Second
		jan := newJanitor(t, s, "jan", janitor.Config{EvictAfter: evictAfter, Leases: leases, Revisions: revs, Journal: jn})
		rep, err := jan.RunOnce(ctx)
		require.NoError(t, err)
		require.Equal(t, "dead", rep.PinnedBy, "a departed node pins the horizon: %+v", rep)
		require.EqualValues(t, 5, rep.NewTail)
		require.Empty(t, rep.Evicted)

		require.Eventually(t, func() bool {
			rep, err = jan.RunOnce(ctx)
			require.NoError(t, err)
			return len(rep.Evicted) == 1
		}, 20*time.Second, 100*time.Millisecond)
		require.Equal(t, "dead", rep.Evicted[0].NodeID)
		require.GreaterOrEqual(t, rep.Evicted[0].Gone, evictAfter)
		require.Equal(t, "live", rep.PinnedBy)
		require.EqualValues(t, 11, rep.NewTail)
		p, err := revs.Load(ctx, "dead")
		require.NoError(t, err, "evicted, not deleted")
		require.True(t, p.Evicted)
		require.EqualValues(t, 4, p.Revision)
		st := jan.Stats()
		require.Equal(t, 1, st.Evicted)
	})
}

// TestNodeReturnsDuringRun: a node gone for longer than EvictAfter comes
// back while a janitor run is in progress, after the run planned its
// eviction from a first look at the stores. The tail never passes where a
// live node stands, and only evictions that stand are reported.
//
//   - saved: before the eviction step it holds its membership lease again
//     and has saved position 5: Evict declines, and the run prunes no
//     further than 5.
//   - unsaved: before the eviction step it holds its lease again but has
//     not saved: the run marks it evicted, finds it live on its second
//     look, takes the eviction back (its position is 2 again, unmarked,
//     so a restart does not resync it for nothing) and prunes no further
//     than 2.
//   - late: it comes back only after the second look: the eviction
//     stands and is reported, the run prunes past it, and the node finds
//     the marker and resyncs.
func TestNodeReturnsDuringRun(t *testing.T) {
	for _, when := range []string{"saved", "unsaved", "late"} {
		t.Run(when, func(t *testing.T) {
			eachStore(t, func(t *testing.T, s store) {
				ctx := ctxT(t)
				jn := s.journal(t, "live")
				epoch, err := jn.Epoch(ctx)
				require.NoError(t, err)
				revs := s.revs(t)
				leases := s.leases(t)
				appendN(t, jn, 10, "a")
				killed(t, leases, revs, "away", 2, epoch, 200*time.Millisecond)
				running(t, leases, revs, "live", 10, epoch)

				jan := newJanitor(t, s, "jan", janitor.Config{EvictAfter: 300 * time.Millisecond, Leases: leases, Revisions: revs, Journal: jn})
				require.Eventually(t, func() bool {
					p, err := jan.Plan(ctx)
					require.NoError(t, err)
					return len(p.Evicted) == 1
				}, 20*time.Second, 50*time.Millisecond)

				// Step 1 evicts; in the late case step 2 raises the tail.
				returnAt := 1
				if when == "late" {
					returnAt = 2
				}
				var back *lock.Lease
				steps := 0
				jan.SetBeforeBatch(func() {
					if steps++; steps != returnAt {
						return
					}
					back = member(t, leases, "away", 10*time.Second)
					if when == "saved" {
						require.NoError(t, revs.Save(ctx, "away", 5, epoch))
					}
				})
				rep, err := jan.RunOnce(ctx)
				require.NoError(t, err)
				require.NotNil(t, back)
				defer back.Release(context.Background())
				st := jan.Stats()
				p, err := revs.Load(ctx, "away")
				require.NoError(t, err)

				if when == "late" {
					require.Len(t, rep.Evicted, 1, "%+v", rep)
					require.Equal(t, "away", rep.Evicted[0].NodeID)
					require.Equal(t, 1, st.Evicted)
					require.True(t, p.Evicted, "it finds the marker and resyncs")
					require.EqualValues(t, 11, rep.NewTail)
					return
				}
				require.Empty(t, rep.Evicted, "the node is live: %+v", rep)
				require.Zero(t, st.Evicted)
				require.Empty(t, st.Last.Evicted)
				require.Equal(t, "away", rep.PinnedBy, "%+v", rep)
				require.False(t, p.Evicted, "a node holding its membership lease is not left evicted")
				require.Equal(t, epoch, p.Epoch)
				want := int64(2)
				if when == "saved" {
					want = 5
				}
				require.Equal(t, want, p.Revision)
				require.Equal(t, want+1, rep.NewTail, "%+v", rep)
				recs, err := jn.Read(ctx, p.Revision, 10)
				require.NoError(t, err, "the live node reads on from its position")
				require.Len(t, recs, int(10-want))
			})
		})
	}
}

// racingSaves is the janitor's position store. Its first Load or Unevict
// runs save, the node's own Save, at the last moment a take-back of an
// eviction leaves it: after a Load (what a take-back that reads and then
// saves has read) and just before an Unevict.
type racingSaves struct {
	revision.Store
	once *sync.Once
	save func()
}

func (r racingSaves) Load(ctx context.Context, nodeID string) (revision.Position, error) {
	p, err := r.Store.Load(ctx, nodeID)
	r.once.Do(r.save)
	return p, err
}

func (r racingSaves) Evict(ctx context.Context, nodeID string, rev int64) (bool, error) {
	return r.Store.(revision.Evicter).Evict(ctx, nodeID, rev)
}

func (r racingSaves) Unevict(ctx context.Context, nodeID string, rev int64) (bool, error) {
	r.once.Do(r.save)
	return r.Store.(revision.Evicter).Unevict(ctx, nodeID, rev)
}

// TestTakeBackKeepsNodeSave: a node gone for longer than EvictAfter comes
// back during a run, after the run planned its eviction (before the
// eviction step, so the run marks it), and saves position 8 while the run
// takes the eviction back. The node's position stands at 8: the take-back
// is fenced against other janitors, not against the node, and setting the
// position back to the 2 it marked would stay, since the node stores its
// position again only once it moves: a barrier on 3 to 8 would wait for
// the next record.
func TestTakeBackKeepsNodeSave(t *testing.T) {
	eachStore(t, func(t *testing.T, s store) {
		ctx := ctxT(t)
		jn := s.journal(t, "live")
		epoch, err := jn.Epoch(ctx)
		require.NoError(t, err)
		revs, nodeRevs := s.revs(t), s.revs(t)
		leases := s.leases(t)
		appendN(t, jn, 10, "a")
		killed(t, leases, revs, "away", 2, epoch, 200*time.Millisecond)
		running(t, leases, revs, "live", 10, epoch)

		saved := false
		racing := racingSaves{Store: revs, once: &sync.Once{}, save: func() {
			require.NoError(t, nodeRevs.Save(ctx, "away", 8, epoch))
			saved = true
		}}
		jan := newJanitor(t, s, "jan", janitor.Config{EvictAfter: 300 * time.Millisecond, Leases: leases, Revisions: racing, Journal: jn})
		require.Eventually(t, func() bool {
			p, err := jan.Plan(ctx)
			require.NoError(t, err)
			return len(p.Evicted) == 1
		}, 20*time.Second, 50*time.Millisecond)

		var back *lock.Lease
		steps := 0
		jan.SetBeforeBatch(func() {
			if steps++; steps == 1 { // before the eviction step
				back = member(t, leases, "away", 10*time.Second)
			}
		})
		rep, err := jan.RunOnce(ctx)
		require.NoError(t, err)
		require.NotNil(t, back)
		defer back.Release(context.Background())
		require.True(t, saved, "the run took the eviction back")
		require.Empty(t, rep.Evicted, "the node is live: %+v", rep)
		p, err := nodeRevs.Load(ctx, "away")
		require.NoError(t, err)
		require.False(t, p.Evicted)
		require.EqualValues(t, 8, p.Revision, "the node's save stands, not the position the run marked")
		require.Equal(t, epoch, p.Epoch)
		require.EqualValues(t, 3, rep.NewTail, "pinned where the second look found the node: %+v", rep)
	})
}

// skewClock is a machine's wall clock that runs d ahead.
type skewClock struct{ d time.Duration }

func (c skewClock) Now() time.Time { return time.Now().Add(c.d) }

// TestReleasedLeaseClockSkew: on a shared folder, a machine whose wall
// clock runs 2 h ahead releases an unrelated lease, which dates the
// release by that clock. A node that stopped gracefully a moment ago is
// not gone for EvictAfter (1 h): the janitor's "now" comes from held
// leases (or its own clock), never from a released lease's date, both in
// a dry run on a quiet folder and with a live node holding its lease.
func TestReleasedLeaseClockSkew(t *testing.T) {
	t.Parallel()
	ctx := ctxT(t)
	dir := t.TempDir()
	jn, err := journal.OpenFile(ctx, journal.FileConfig{Dir: dir, NodeID: "live"})
	require.NoError(t, err)
	defer jn.Close(context.Background())
	epoch, err := jn.Epoch(ctx)
	require.NoError(t, err)
	revs, err := revision.OpenFile(ctx, revision.FileConfig{Dir: dir})
	require.NoError(t, err)
	leases, err := lock.OpenFile(ctx, lock.FileConfig{Dir: dir})
	require.NoError(t, err)
	appendN(t, jn, 10, "a")

	dep := member(t, leases, "dep", 10*time.Second)
	require.NoError(t, revs.Save(ctx, "dep", 2, epoch))
	require.NoError(t, dep.Release(ctx)) // a graceful stop, just now

	ahead, err := lock.OpenFile(ctx, lock.FileConfig{Dir: dir, Clock: skewClock{2 * time.Hour}})
	require.NoError(t, err)
	c, err := lock.New(lock.Config{NodeID: "other", Store: ahead})
	require.NoError(t, err)
	l, err := c.TryAcquire(ctx, "job")
	require.NoError(t, err)
	require.NoError(t, l.Release(ctx))

	jan := newJanitor(t, store{}, "jan", janitor.Config{EvictAfter: time.Hour, Leases: leases, Revisions: revs, Journal: jn})
	plan, err := jan.Plan(ctx)
	require.NoError(t, err)
	require.Empty(t, plan.Evicted, "no lease held: a node that stopped a moment ago is not gone for EvictAfter: %+v", plan)
	require.Equal(t, "dep", plan.PinnedBy)

	live := member(t, leases, "live", 10*time.Second)
	defer live.Release(context.Background())
	require.NoError(t, revs.Save(ctx, "live", 10, epoch))
	plan, err = jan.Plan(ctx)
	require.NoError(t, err)
	require.Empty(t, plan.Evicted, "a live node's lease: %+v", plan)
	require.Equal(t, "dep", plan.PinnedBy)
	rep, err := jan.RunOnce(ctx)
	require.NoError(t, err)
	require.Empty(t, rep.Evicted, "under the janitor's own lease: %+v", rep)
	require.EqualValues(t, 3, rep.NewTail)
}

// TestLiveWithoutPosition: a live node that has not stored a position yet
// (it is starting) keeps everything: Jackrabbit's second caveat, removed.
func TestLiveWithoutPosition(t *testing.T) {
	eachStore(t, func(t *testing.T, s store) {
		ctx := ctxT(t)
		jn := s.journal(t, "a")
		appendN(t, jn, 20, "x")
		leases := s.leases(t)
		l := member(t, leases, "starting", 10*time.Second)
		defer l.Release(context.Background())
		jan := newJanitor(t, s, "jan", janitor.Config{Journal: jn, Leases: leases})
		plan, err := jan.Plan(ctx)
		require.NoError(t, err)
		require.Equal(t, "starting", plan.PinnedBy)
		require.Contains(t, plan.PinnedWhy, "without a stored position")
		rep, err := jan.RunOnce(ctx)
		require.NoError(t, err)
		require.Zero(t, rep.Deleted)
		require.EqualValues(t, 1, rep.NewTail)

		// With nobody left, retention decides alone.
		require.NoError(t, l.Release(ctx))
		jan = newJanitor(t, s, "jan2", janitor.Config{Journal: jn, Leases: leases, KeepRecords: 5})
		rep, err = jan.RunOnce(ctx)
		require.NoError(t, err)
		require.EqualValues(t, 16, rep.NewTail, "the last 5 of 20 are kept")
		jan = newJanitor(t, s, "jan3", janitor.Config{Journal: jn, Leases: leases, KeepFor: time.Hour})
		rep, err = jan.RunOnce(ctx)
		require.NoError(t, err)
		require.EqualValues(t, 16, rep.NewTail, "everything is younger than an hour: nothing more goes")
	})
}

// countingPruner wraps a journal and counts DeleteBatch calls in flight
// across every janitor that shares it.
type countingPruner struct {
	journal.Journal
	inFlight, most *atomic.Int64
}

func (c countingPruner) RaiseTail(ctx context.Context, below int64) (int64, error) {
	return c.Journal.(journal.Pruner).RaiseTail(ctx, below)
}

func (c countingPruner) DeleteBatch(ctx context.Context, limit int) (int64, error) {
	n := c.inFlight.Add(1)
	defer c.inFlight.Add(-1)
	for {
		m := c.most.Load()
		if n <= m || c.most.CompareAndSwap(m, n) {
			break
		}
	}
	time.Sleep(time.Millisecond) // widen the window
	return c.Journal.(journal.Pruner).DeleteBatch(ctx, limit)
}

// TestOneAtATime runs two janitors back to back on two nodes: they never
// prune at the same time.
func TestOneAtATime(t *testing.T) {
	eachStore(t, func(t *testing.T, s store) {
		ctx := ctxT(t)
		var inFlight, most atomic.Int64
		var busy atomic.Int64
		writer := s.journal(t, "w")
		var wg sync.WaitGroup
		stop := make(chan struct{})
		var jans []*janitor.Janitor
		for _, id := range []string{"a", "b"} {
			jan := newJanitor(t, s, id, janitor.Config{Journal: countingPruner{s.journal(t, id), &inFlight, &most}, BatchSize: 3, BatchPause: time.Millisecond})
			jans = append(jans, jan)
			wg.Go(func() {
				for {
					select {
					case <-stop:
						return
					default:
					}
					_, err := jan.RunOnce(ctx)
					if errors.Is(err, janitor.ErrBusy) {
						busy.Add(1)
						continue
					}
					if err != nil {
						t.Error(err)
						return
					}
				}
			})
		}
		for i := 0; i < 200; i++ {
			appendN(t, writer, 1, "w")
		}
		close(stop)
		wg.Wait()
		require.EqualValues(t, 1, most.Load(), "never two janitors deleting at once")
		require.Positive(t, jans[0].Stats().Deleted+jans[1].Stats().Deleted)
		t.Logf("%s: %d runs found the other janitor running; deleted %d and %d", s.name, busy.Load(),
			jans[0].Stats().Deleted, jans[1].Stats().Deleted)
	})
}

// stallingStore stops the janitor's lease renewals on demand, as a paused
// process would stop them.
type stallingStore struct {
	lock.Store
	stall *atomic.Bool
}

func (s stallingStore) Renew(ctx context.Context, name string, owner lock.Owner, token int64, ttl time.Duration) (bool, error) {
	if s.stall.Load() {
		<-ctx.Done()
		return false, ctx.Err()
	}
	return s.Store.Renew(ctx, name, owner, token, ttl)
}

func (s stallingStore) Fence(ctx context.Context, name string, owner lock.Owner, token int64, fn func(ctx context.Context) error) error {
	return s.Store.(lock.Fencer).Fence(ctx, name, owner, token, fn)
}

// TestPausedJanitorFenced pauses a janitor between two batches for longer
// than its lease (renewals stop too, as in a stopped process); another
// janitor takes over; when the first wakes up, the store rejects its next
// delete.
func TestPausedJanitorFenced(t *testing.T) {
	eachStore(t, func(t *testing.T, s store) {
		ctx := ctxT(t)
		jn := s.journal(t, "w")
		appendN(t, jn, 100, "x") // the file journal deletes whole segments of a few records
		var stall atomic.Bool
		const ttl = 500 * time.Millisecond
		a := newJanitor(t, s, "a", janitor.Config{Leases: stallingStore{s.leases(t), &stall}, LeaseTTL: ttl, BatchSize: 5})
		b := newJanitor(t, s, "b", janitor.Config{LeaseTTL: ttl, BatchSize: 5})
		steps := 0
		var bRep janitor.Report
		var bErr error
		a.SetBeforeBatch(func() {
			steps++
			if steps != 3 {
				return
			}
			stall.Store(true)
			deadline := time.Now().Add(30 * time.Second)
			for time.Now().Before(deadline) {
				bRep, bErr = b.RunOnce(ctx)
				if !errors.Is(bErr, janitor.ErrBusy) {
					return
				}
				time.Sleep(50 * time.Millisecond)
			}
		})
		_, err := a.RunOnce(ctx)
		require.NoError(t, bErr, "the other janitor ran once the lease expired")
		require.ErrorIs(t, err, lock.ErrFenced, "the paused janitor's delete was refused by the store")
		require.Positive(t, bRep.Deleted)
	})
}
