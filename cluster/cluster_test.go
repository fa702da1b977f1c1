package cluster_test

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/tandem-go/tandem/cluster"
	"github.com/tandem-go/tandem/internal/dbtest"
	"github.com/tandem-go/tandem/journal"
	"github.com/tandem-go/tandem/lock"
	"github.com/tandem-go/tandem/revision"
)

// fixture opens nodes (and position stores) on one shared storage.
type fixture struct {
	open      func(t *testing.T, cfg cluster.Config) *cluster.Node
	revisions func(t *testing.T) revision.Store
	// backend is "file" or a dbtest.Backend's name; where is the shared
	// folder or the table prefix (for a child process to open the same).
	backend, where string
	// stores opens the shared stores themselves, for New: a journal
	// written as node and instance, positions and leases.
	stores func(t *testing.T, node, instance string) (journal.Journal, revision.Store, lock.Store)
	// pool opens a pool on the shared database (nil on the folder).
	pool func(t *testing.T) *sql.DB
}

// forEachBackend runs test on the file backend and every SQL dialect.
func forEachBackend(t *testing.T, test func(t *testing.T, f fixture)) {
	t.Run("file", func(t *testing.T) {
		t.Parallel()
		dir := t.TempDir()
		test(t, fixture{
			open: func(t *testing.T, cfg cluster.Config) *cluster.Node {
				cfg.Dir = dir
				n, err := cluster.OpenDir(context.Background(), cfg)
				require.NoError(t, err)
				t.Cleanup(func() { n.Stop(context.Background()) })
				return n
			},
			revisions: func(t *testing.T) revision.Store {
				s, err := revision.OpenFile(context.Background(), revision.FileConfig{Dir: dir})
				require.NoError(t, err)
				return s
			},
			backend: "file", where: dir,
			stores: func(t *testing.T, node, instance string) (journal.Journal, revision.Store, lock.Store) {
				j, err := journal.OpenFile(context.Background(), journal.FileConfig{Dir: dir, NodeID: node, Instance: instance})
				require.NoError(t, err)
				t.Cleanup(func() { j.Close(context.Background()) })
				revs, err := revision.OpenFile(context.Background(), revision.FileConfig{Dir: dir})
				require.NoError(t, err)
				leases, err := lock.OpenFile(context.Background(), lock.FileConfig{Dir: dir})
				require.NoError(t, err)
				return j, revs, leases
			},
		})
	})
	for _, b := range dbtest.Backends {
		t.Run(b.Name, func(t *testing.T) {
			t.Parallel()
			db := dbtest.Open(t, b)
			test(t, fixture{
				open: func(t *testing.T, cfg cluster.Config) *cluster.Node {
					cfg.Prefix = db.Prefix
					n, err := cluster.OpenSQL(context.Background(), db.NewPool(t), b.Dialect, cfg)
					require.NoError(t, err)
					t.Cleanup(func() { n.Stop(context.Background()) })
					return n
				},
				revisions: func(t *testing.T) revision.Store {
					s, err := revision.OpenSQL(context.Background(), db.NewPool(t), b.Dialect, revision.SQLConfig{Prefix: db.Prefix})
					require.NoError(t, err)
					return s
				},
				backend: b.Name, where: db.Prefix,
				pool: func(t *testing.T) *sql.DB { return db.NewPool(t) },
				stores: func(t *testing.T, node, instance string) (journal.Journal, revision.Store, lock.Store) {
					ctx := context.Background()
					pool := db.NewPool(t)
					j, err := journal.OpenSQL(ctx, pool, b.Dialect, journal.SQLConfig{NodeID: node, Instance: instance, Prefix: db.Prefix})
					require.NoError(t, err)
					t.Cleanup(func() { j.Close(context.Background()) })
					revs, err := revision.OpenSQL(ctx, pool, b.Dialect, revision.SQLConfig{Prefix: db.Prefix})
					require.NoError(t, err)
					leases, err := lock.OpenSQL(ctx, pool, b.Dialect, lock.SQLConfig{Prefix: db.Prefix})
					require.NoError(t, err)
					return j, revs, leases
				},
			})
		})
	}
}

func cfg(id string) cluster.Config {
	return cluster.Config{NodeID: id, SyncDelay: 100 * time.Millisecond, MemberTTL: 2 * time.Second}
}

// recorder is a handler that records what it applied.
type recorder struct {
	mu   sync.Mutex
	recs []journal.Record
	fail func(rec journal.Record) error
}

func (r *recorder) Apply(ctx context.Context, rec journal.Record) error {
	if r.fail != nil {
		if err := r.fail(rec); err != nil {
			return err
		}
	}
	r.mu.Lock()
	r.recs = append(r.recs, rec)
	r.mu.Unlock()
	return nil
}

func (r *recorder) got() []journal.Record {
	r.mu.Lock()
	defer r.mu.Unlock()
	return append([]journal.Record(nil), r.recs...)
}

// publishN publishes records "0".."count-1" for producer "p" on n and
// returns the last revision.
func publishN(t *testing.T, ctx context.Context, n *cluster.Node, count int) int64 {
	t.Helper()
	var last int64
	for i := range count {
		rev, err := n.Publish(ctx, "p", fmt.Appendf(nil, "%d", i))
		require.NoError(t, err)
		last = rev
	}
	return last
}

func start(t *testing.T, n *cluster.Node) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	require.NoError(t, n.Start(ctx))
}

func ctxT(t *testing.T) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	t.Cleanup(cancel)
	return ctx
}

func TestPropagation(t *testing.T) {
	forEachBackend(t, func(t *testing.T, f fixture) {
		ctx := ctxT(t)
		nodes := map[string]*cluster.Node{}
		recs := map[string]*recorder{}
		for _, id := range []string{"a", "b", "c"} {
			n := f.open(t, cfg(id))
			recs[id] = &recorder{}
			require.NoError(t, n.Handle("p1", recs[id]))
			require.NoError(t, n.Handle("p2", recs[id]))
			start(t, n)
			nodes[id] = n
		}
		var last int64
		var want []string
		for i := range 30 {
			p := fmt.Sprintf("p%d", 1+i%2)
			rev, err := nodes["a"].Publish(ctx, p, fmt.Appendf(nil, "%d", i))
			require.NoError(t, err)
			require.Greater(t, rev, last)
			last = rev
			want = append(want, fmt.Sprintf("%s:%d", p, i))
		}
		for _, id := range []string{"b", "c"} {
			require.NoError(t, nodes[id].WaitFor(ctx, last), "read-your-writes on %s", id)
			var got []string
			var prev int64
			for _, r := range recs[id].got() {
				require.Greater(t, r.Revision, prev, "%s applies in revision order", id)
				prev = r.Revision
				require.Equal(t, "a", r.NodeID)
				got = append(got, fmt.Sprintf("%s:%s", r.Producer, r.Payload))
			}
			require.Equal(t, want, got, "%s got every record, in order", id)
			st := nodes[id].Stats()
			require.Equal(t, last, st.Revision)
			require.EqualValues(t, 30, st.Applied)
			require.Equal(t, last, st.Head, "%s's head is at least what it applied", id)
			require.Zero(t, st.Lag)
			require.False(t, st.LastSync.IsZero())
		}
		require.Empty(t, recs["a"].got(), "a node's own records are not delivered to it")
		require.NoError(t, nodes["a"].WaitFor(ctx, last))
	})
}

func TestDuplicateID(t *testing.T) {
	forEachBackend(t, func(t *testing.T, f fixture) {
		ctx := ctxT(t)
		first := f.open(t, cfg("same"))
		start(t, first)
		second := f.open(t, cfg("same"))
		err := second.Start(ctx)
		require.ErrorIs(t, err, cluster.ErrDuplicateNode)
		require.ErrorContains(t, err, `"same"`, "the error names the id")
		require.NoError(t, first.Stop(ctx))
		third := f.open(t, cfg("same"))
		require.NoError(t, third.Start(ctx), "the id is free once its node stopped")
	})
}

func TestHandlerRetried(t *testing.T) {
	forEachBackend(t, func(t *testing.T, f fixture) {
		ctx := ctxT(t)
		a := f.open(t, cfg("a"))
		start(t, a)
		failures := 0
		rec := &recorder{fail: func(r journal.Record) error {
			if string(r.Payload) == "5" && failures < 3 {
				failures++
				return errors.New("transient")
			}
			return nil
		}}
		b := f.open(t, cfg("b"))
		require.NoError(t, b.Handle("p", rec))
		start(t, b)
		last := publishN(t, ctx, a, 10)
		require.NoError(t, b.WaitFor(ctx, last))
		got := rec.got()
		require.Len(t, got, 10, "the failing record was retried, not skipped")
		for i, r := range got {
			require.Equal(t, fmt.Sprint(i), string(r.Payload))
		}
		require.EqualValues(t, 3, b.Stats().HandlerFailures)
	})
}

// TestRestartMidBatch stops a node while its handler is stuck in the
// middle of a batch; the restarted node applies the rest: at least once,
// nothing lost.
func TestRestartMidBatch(t *testing.T) {
	forEachBackend(t, func(t *testing.T, f fixture) {
		ctx := ctxT(t)
		a := f.open(t, cfg("a"))
		start(t, a)
		first := &recorder{fail: func(r journal.Record) error {
			if string(r.Payload) == "5" {
				return errors.New("stuck") // retried until the node stops
			}
			return nil
		}}
		c := cfg("b")
		c.StopDelay = 200 * time.Millisecond
		b1 := f.open(t, c)
		require.NoError(t, b1.Handle("p", first))
		start(t, b1)
		last := publishN(t, ctx, a, 10)
		require.Eventually(t, func() bool { return len(first.got()) == 5 }, 30*time.Second, 10*time.Millisecond)
		require.Error(t, b1.Stop(ctx), "the final sync could not finish in StopDelay")

		second := &recorder{}
		b2 := f.open(t, cfg("b"))
		require.NoError(t, b2.Handle("p", second))
		start(t, b2)
		require.NoError(t, b2.WaitFor(ctx, last))
		seen := map[string]bool{}
		for _, r := range append(first.got(), second.got()...) {
			seen[string(r.Payload)] = true
		}
		require.Len(t, seen, 10, "every record was applied by one incarnation or the other")
		require.Equal(t, "5", string(second.got()[0].Payload), "the restarted node resumes at the record it had not applied")
	})
}

func TestResync(t *testing.T) {
	forEachBackend(t, func(t *testing.T, f fixture) {
		ctx := ctxT(t)
		a := f.open(t, cfg("a"))
		start(t, a)
		b := f.open(t, cfg("b"))
		start(t, b)
		require.NoError(t, b.Stop(ctx))
		last := publishN(t, ctx, a, 5)
		_, err := a.Journal().Prune(ctx, last+1)
		require.NoError(t, err)

		var reasons []cluster.ResyncReason
		hook := func(_ context.Context, why cluster.ResyncReason) error {
			reasons = append(reasons, why)
			return nil
		}
		rec := &recorder{}
		b2 := f.open(t, cfg("b"))
		require.NoError(t, b2.Handle("p", rec))
		require.NoError(t, b2.OnResync(hook))
		start(t, b2)
		require.Equal(t, []cluster.ResyncReason{cluster.ResyncBehindTail}, reasons, "a pruned position resyncs, never jumps silently")
		require.Equal(t, last, b2.Stats().Revision, "and continues from the head")
		require.Empty(t, rec.got())
		require.NoError(t, b2.Stop(ctx))

		// A position from another journal (a restored database).
		require.NoError(t, f.revisions(t).Save(ctx, "b", last, "0123456789abcdef0123456789abcdef"))
		reasons = nil
		b3 := f.open(t, cfg("b"))
		require.NoError(t, b3.OnResync(hook))
		start(t, b3)
		require.Equal(t, []cluster.ResyncReason{cluster.ResyncEpoch}, reasons)
	})
}

func TestStopFinalSync(t *testing.T) {
	forEachBackend(t, func(t *testing.T, f fixture) {
		ctx := ctxT(t)
		a := f.open(t, cfg("a"))
		start(t, a)
		c := cfg("b")
		c.SyncDelay = time.Hour // only the final sync can pick the record up
		rec := &recorder{}
		b := f.open(t, c)
		require.NoError(t, b.Handle("p", rec))
		start(t, b)
		rev, err := a.Publish(ctx, "p", []byte("last words"))
		require.NoError(t, err)
		require.NoError(t, b.Stop(ctx))
		p, err := f.revisions(t).Load(ctx, "b")
		require.NoError(t, err)
		if len(rec.got()) == 1 {
			require.GreaterOrEqual(t, p.Revision, rev, "the final sync saved the position")
		} else {
			// On backends with push the loop may not have run; the final
			// sync must have then.
			t.Fatalf("the final sync did not apply the record: got %d records", len(rec.got()))
		}
		require.ErrorIs(t, b.Sync(ctx), cluster.ErrNotRunning)
	})
}

// TestStopDuringStart: a Stop during a Start — one whose first sync is
// held at a record its handler keeps failing — ends that Start and waits
// for it: no handler call comes after Stop returned, Start fails with
// ErrNotRunning, the journal OpenDir or OpenSQL opened is closed, and the
// stopped node does not start again.
func TestStopDuringStart(t *testing.T) {
	forEachBackend(t, func(t *testing.T, f fixture) {
		ctx := ctxT(t)
		a := f.open(t, cfg("a"))
		start(t, a)
		_, err := a.Publish(ctx, "p", nil)
		require.NoError(t, err)

		c := cfg("b")
		c.StartAt = cluster.StartAtBeginning
		b := f.open(t, c)
		var stopped atomic.Bool // Stop returned
		var late atomic.Int32   // handler calls after that
		failing := make(chan struct{}, 1)
		require.NoError(t, b.Handle("p", cluster.HandlerFunc(func(context.Context, journal.Record) error {
			if stopped.Load() {
				late.Add(1)
			}
			select {
			case failing <- struct{}{}:
			default:
			}
			return errors.New("not yet")
		})))
		// Without Stop, this Start would retry until its ctx ends.
		sctx, cancel := context.WithTimeout(ctx, 3*time.Second)
		defer cancel()
		startErr := make(chan error, 1)
		go func() { startErr <- b.Start(sctx) }()
		<-failing
		require.NoError(t, b.Stop(ctx), "Stop during a Start")
		stopped.Store(true)
		err = <-startErr
		require.ErrorIs(t, err, cluster.ErrNotRunning, "the Start ends: its node was stopped")
		require.Zero(t, late.Load(), "the Start's handler calls ended before Stop returned")
		require.False(t, b.Stats().Running)

		_, err = b.Journal().Append(ctx, journal.Entry{Producer: "q"})
		require.ErrorIs(t, err, journal.ErrClosed, "the journal OpenDir or OpenSQL opened is closed")
		require.ErrorIs(t, b.Start(ctx), cluster.ErrNotRunning, "a stopped node does not start again")
	})
}

func TestConcurrentSyncs(t *testing.T) {
	forEachBackend(t, func(t *testing.T, f fixture) {
		ctx := ctxT(t)
		a := f.open(t, cfg("a"))
		start(t, a)
		b := f.open(t, cfg("b"))
		start(t, b)
		var wg sync.WaitGroup
		errs := make(chan error, 30)
		for i := range 20 {
			wg.Add(1)
			go func() {
				defer wg.Done()
				if i%2 == 0 {
					_, err := a.Publish(ctx, "p", nil)
					errs <- err
				}
				errs <- b.Sync(ctx)
			}()
		}
		wg.Wait()
		close(errs)
		for err := range errs {
			require.NoError(t, err)
		}
		head, err := a.Journal().Head(ctx)
		require.NoError(t, err)
		require.NoError(t, b.WaitFor(ctx, head))
		require.EqualValues(t, 10, b.Stats().Unhandled, "records of producers without a handler are counted")
	})
}

func TestConfigErrors(t *testing.T) {
	for _, c := range []struct {
		cfg   cluster.Config
		field string
	}{
		{cluster.Config{}, "NodeID"},
		{cluster.Config{NodeID: "a"}, "Instance"},
		{cluster.Config{NodeID: "a", Instance: "x/y"}, "Instance"},
		{cluster.Config{NodeID: "a", Instance: "i1"}, "Journal"},
	} {
		_, err := cluster.New(c.cfg)
		require.ErrorContains(t, err, c.field)
	}
	_, err := cluster.OpenDir(context.Background(), cluster.Config{Dir: t.TempDir(), NodeID: "a", SyncDelay: -1})
	require.ErrorContains(t, err, "SyncDelay")
}

// TestOpenFields: Dir belongs to OpenDir, Prefix to OpenSQL, the stores to
// New; a field given to the wrong one is an error that names it.
func TestOpenFields(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	dir := t.TempDir()
	revs, err := revision.OpenFile(ctx, revision.FileConfig{Dir: dir})
	require.NoError(t, err)
	for _, c := range []struct {
		name  string
		open  func() error
		field string
	}{
		{"OpenDir without Dir", func() error { _, err := cluster.OpenDir(ctx, cluster.Config{NodeID: "a"}); return err }, "Dir"},
		{"OpenDir with Prefix", func() error {
			_, err := cluster.OpenDir(ctx, cluster.Config{NodeID: "a", Dir: dir, Prefix: "p_"})
			return err
		}, "Prefix"},
		{"OpenDir with a store", func() error {
			_, err := cluster.OpenDir(ctx, cluster.Config{NodeID: "a", Dir: dir, Revisions: revs})
			return err
		}, "Revisions"},
		{"OpenSQL with Dir", func() error {
			_, err := cluster.OpenSQL(ctx, nil, nil, cluster.Config{NodeID: "a", Dir: dir})
			return err
		}, "Dir"},
		{"New with Dir", func() error { _, err := cluster.New(cluster.Config{NodeID: "a", Instance: "i", Dir: dir}); return err }, "Dir"},
		{"New with Prefix", func() error {
			_, err := cluster.New(cluster.Config{NodeID: "a", Instance: "i", Prefix: "p_"})
			return err
		}, "Prefix"},
		{"OpenDir with a negative SyncTimeout", func() error {
			_, err := cluster.OpenDir(ctx, cluster.Config{NodeID: "a", Dir: dir, SyncTimeout: -time.Second})
			return err
		}, "SyncTimeout"},
	} {
		err := c.open()
		require.ErrorIs(t, err, cluster.ErrInvalidArgument, c.name)
		require.ErrorContains(t, err, c.field, c.name)
	}
}

func TestMembersAndBarrier(t *testing.T) {
	forEachBackend(t, func(t *testing.T, f fixture) {
		ctx := ctxT(t)
		a := f.open(t, cfg("a"))
		start(t, a)
		slow := make(chan struct{})
		b := f.open(t, cfg("b"))
		require.NoError(t, b.Handle("p", cluster.HandlerFunc(func(ctx context.Context, r journal.Record) error {
			select {
			case <-slow:
				return nil
			case <-ctx.Done():
				return ctx.Err()
			}
		})))
		start(t, b)
		gone := f.open(t, cfg("gone"))
		start(t, gone)
		require.NoError(t, gone.Stop(ctx))

		rev, err := a.Publish(ctx, "p", []byte("x"))
		require.NoError(t, err)
		// b is stuck in its handler: the barrier waits for it.
		short, cancel := context.WithTimeout(ctx, 300*time.Millisecond)
		err = a.Barrier(short, rev)
		cancel()
		require.ErrorIs(t, err, context.DeadlineExceeded, "the barrier waits for every live node")
		close(slow)
		require.NoError(t, a.Barrier(ctx, rev), "once b applied rev, every live node has")

		ms, err := a.Members(ctx)
		require.NoError(t, err)
		require.Len(t, ms, 3)
		require.Equal(t, []string{"a", "b", "gone"}, []string{ms[0].NodeID, ms[1].NodeID, ms[2].NodeID})
		require.True(t, ms[0].Live)
		require.True(t, ms[1].Live)
		require.False(t, ms[2].Live, "a stopped node is listed as not live")
		require.GreaterOrEqual(t, ms[1].Revision, rev)
		require.Zero(t, ms[1].Lag)
		require.True(t, ms[2].HasPosition)
		require.Equal(t, rev-ms[2].Revision, ms[2].Lag)
		require.NotEmpty(t, ms[0].Instance)
		require.False(t, ms[0].LastHeartbeat.IsZero(), "a live member shows its last heartbeat")
		require.False(t, ms[0].LastHeartbeat.Before(ms[0].Started))
	})
}

func TestCopyFrom(t *testing.T) {
	forEachBackend(t, func(t *testing.T, f fixture) {
		ctx := ctxT(t)
		a := f.open(t, cfg("a"))
		start(t, a)
		b := f.open(t, cfg("b"))
		start(t, b)
		require.NoError(t, b.Stop(ctx)) // b's position: before the records below
		last := publishN(t, ctx, a, 3)
		c := cfg("clone")
		c.CopyFrom = "b"
		rec := &recorder{}
		clone := f.open(t, c)
		require.NoError(t, clone.Handle("p", rec))
		start(t, clone)
		require.NoError(t, clone.WaitFor(ctx, last))
		require.Len(t, rec.got(), 3, "the clone starts where b stood, not at the head")

		c = cfg("orphan")
		c.CopyFrom = "nobody"
		orphan := f.open(t, c)
		err := orphan.Start(ctx)
		require.ErrorIs(t, err, revision.ErrNotFound)
		require.ErrorContains(t, err, `"nobody"`)
	})
}
