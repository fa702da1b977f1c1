package cluster_test

import (
	"context"
	"fmt"
	"strings"
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

// TestWedgedConnections: a middlebox loses the state of a node's open
// connections (its listener, its idle pool connections) and drops their
// packets without a reset, while new connections work. The node must go
// on syncing — a poll or a position save on a wedged connection gives up
// after SyncTimeout, and the next one runs on a new connection — rather
// than hang until TCP gives up, a member all the while and stale.
func TestWedgedConnections(t *testing.T) {
	for _, b := range dbtest.Backends[:2] { // PostgreSQL (push on) and MySQL
		t.Run(b.Name, func(t *testing.T) {
			t.Parallel()
			ctx := ctxT(t)
			db := dbtest.Open(t, b)
			proxy, dsn := db.NewProxy(t)
			c := cfg("wedged")
			c.Prefix = db.Prefix
			c.SyncTimeout = time.Second
			a, err := cluster.OpenSQL(ctx, db.Pool(t, dsn), b.Dialect, c)
			require.NoError(t, err)
			t.Cleanup(func() { a.Stop(context.Background()) })
			rec := &recorder{}
			require.NoError(t, a.Handle("p", rec))
			start(t, a)
			wc := cfg("writer")
			wc.Prefix = db.Prefix
			w, err := cluster.OpenSQL(ctx, db.NewPool(t), b.Dialect, wc)
			require.NoError(t, err)
			t.Cleanup(func() { w.Stop(context.Background()) })
			start(t, w)
			rev, err := w.Publish(ctx, "p", []byte("before"))
			require.NoError(t, err)
			require.NoError(t, a.WaitFor(ctx, rev))

			proxy.Wedge()
			for i := range 3 {
				rev, err = w.Publish(ctx, "p", fmt.Appendf(nil, "after-%d", i))
				require.NoError(t, err)
				wctx, cancel := context.WithTimeout(ctx, 10*time.Second)
				err = a.WaitFor(wctx, rev)
				cancel()
				require.NoError(t, err, "record %d after the wedge: stats %+v", i, a.Stats())
			}
			require.Len(t, rec.got(), 4)
			if b.Name == "postgres" {
				require.Eventually(t, func() bool { return a.Stats().Push }, 20*time.Second, 20*time.Millisecond,
					"the listener is back, on a new connection")
			}
		})
	}
}

// slowReads is a journal whose reads take 2 ms per record asked for, and
// end early when their context does.
type slowReads struct{ journal.Journal }

func (s slowReads) Read(ctx context.Context, after int64, limit int) ([]journal.Record, error) {
	select {
	case <-time.After(time.Duration(limit) * 2 * time.Millisecond):
	case <-ctx.Done():
		return nil, ctx.Err()
	}
	return s.Journal.Read(ctx, after, limit)
}

// TestSlowReadsProgress: reads of BatchSize records take longer than
// SyncTimeout. Each poll that times out halves the next one's size, so
// the node still catches up, and reports the timeouts.
func TestSlowReadsProgress(t *testing.T) {
	ctx := ctxT(t)
	dir := t.TempDir()
	wc := cfg("writer")
	wc.Dir = dir
	w, err := cluster.OpenDir(ctx, wc)
	require.NoError(t, err)
	t.Cleanup(func() { w.Stop(context.Background()) })
	start(t, w)

	j, err := journal.OpenFile(ctx, journal.FileConfig{Dir: dir, NodeID: "slow", Instance: "slow-1"})
	require.NoError(t, err)
	t.Cleanup(func() { j.Close(context.Background()) })
	revs, err := revision.OpenFile(ctx, revision.FileConfig{Dir: dir})
	require.NoError(t, err)
	leases, err := lock.OpenFile(ctx, lock.FileConfig{Dir: dir})
	require.NoError(t, err)
	c := cfg("slow")
	c.Journal, c.Revisions, c.Leases, c.Instance = slowReads{j}, revs, leases, "slow-1"
	c.StartAt = cluster.StartAtBeginning
	c.BatchSize, c.SyncTimeout = 1000, 300*time.Millisecond // a full read takes 2 s
	last := publishN(t, ctx, w, 200)
	slow, err := cluster.New(c)
	require.NoError(t, err)
	t.Cleanup(func() { slow.Stop(context.Background()) })
	rec := &recorder{}
	require.NoError(t, slow.Handle("p", rec))
	start(t, slow)
	wctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	require.NoError(t, slow.WaitFor(wctx, last))
	require.Len(t, rec.got(), 200)
	require.Positive(t, slow.Stats().SyncErrors, "the first polls timed out")
}

// TestResyncRewritten: the database loses a node's latest commits after
// the node had applied them (a crash where commits were visible before
// they were durable: seen on MariaDB, where InnoDB shows a commit before
// its redo is written) and gives their revisions to new records. The
// node's position is not above the head, so only the record at its
// position tells: it must resync rather than skip the new records.
func TestResyncRewritten(t *testing.T) {
	forEachBackend(t, func(t *testing.T, f fixture) {
		if f.pool == nil {
			t.Skip("the folder backend: no SQL to rewrite the journal with")
		}
		ctx := ctxT(t)
		w := f.open(t, cfg("writer"))
		start(t, w)
		a := f.open(t, cfg("a"))
		var mu sync.Mutex
		var reasons []cluster.ResyncReason
		require.NoError(t, a.OnResync(func(_ context.Context, why cluster.ResyncReason) error {
			mu.Lock()
			reasons = append(reasons, why)
			mu.Unlock()
			return nil
		}))
		rec := &recorder{}
		require.NoError(t, a.Handle("p", rec))
		start(t, a)
		last := publishN(t, ctx, w, 5)
		require.NoError(t, a.WaitFor(ctx, last))
		require.Len(t, rec.got(), 5)

		// The crash: revisions last-1 and last are lost, and three new
		// records take last-1, last and last+1 - in one transaction, so
		// that no poll sees the journal in between.
		now := "now()"
		if f.backend == "mysql" {
			now = "UTC_TIMESTAMP(6)"
		}
		p := f.where
		pool := f.pool(t)
		tx, err := pool.BeginTx(ctx, nil)
		require.NoError(t, err)
		_, err = tx.ExecContext(ctx, fmt.Sprintf(`DELETE FROM %sjournal WHERE revision >= %d`, p, last-1))
		require.NoError(t, err)
		payload := "$1" // the new records' payload, "new"
		if f.backend == "mysql" {
			payload = "?"
		}
		for r := last - 1; r <= last+1; r++ {
			_, err = tx.ExecContext(ctx, fmt.Sprintf(`INSERT INTO %sjournal (revision, node_id, instance, batch_id, producer, payload, created_at) VALUES (%d, 'other', 'other-1', %d, 'p', %s, %s)`,
				p, r, 9000+r, payload, now), []byte("new"))
			require.NoError(t, err)
		}
		_, err = tx.ExecContext(ctx, fmt.Sprintf(`UPDATE %sglobal_revision SET revision = %d WHERE id = 1`, p, last+1))
		require.NoError(t, err)
		require.NoError(t, tx.Commit())

		require.NoError(t, a.WaitFor(ctx, last+1))
		mu.Lock()
		require.Equal(t, []cluster.ResyncReason{cluster.ResyncRewritten}, reasons)
		mu.Unlock()
		require.Len(t, rec.got(), 5, "it resynced from the head instead of applying part of the new records")
		next, err := w.Publish(ctx, "p", []byte("after"))
		require.NoError(t, err)
		require.NoError(t, a.WaitFor(ctx, next))
		require.Len(t, rec.got(), 6, "and goes on from there")
	})
}

// hangingSaves is a position store whose Save, once hang is set, blocks
// until its context ends, as a save on a hung connection does with a
// driver that honours contexts.
type hangingSaves struct {
	revision.Store
	hang  atomic.Bool
	tried atomic.Int64
}

func (h *hangingSaves) Save(ctx context.Context, node string, rev int64, epoch string) error {
	if h.hang.Load() {
		h.tried.Add(1)
		<-ctx.Done()
		return ctx.Err()
	}
	return h.Store.Save(ctx, node, rev, epoch)
}

// TestHungSave: a position save that hangs gives up after SyncTimeout;
// the node goes on applying records meanwhile (its run loop is not held),
// reports the failed saves, and stores its position once saves answer
// again.
func TestHungSave(t *testing.T) {
	forEachBackend(t, func(t *testing.T, f fixture) {
		ctx := ctxT(t)
		w := f.open(t, cfg("writer"))
		start(t, w)
		j, revs, leases := f.stores(t, "a", "a-1")
		hs := &hangingSaves{Store: revs}
		c := cfg("a")
		c.Journal, c.Revisions, c.Leases, c.Instance = j, hs, leases, "a-1"
		c.SyncTimeout = 300 * time.Millisecond
		a, err := cluster.New(c)
		require.NoError(t, err)
		t.Cleanup(func() { a.Stop(context.Background()) })
		rec := &recorder{}
		require.NoError(t, a.Handle("p", rec))
		start(t, a)

		hs.hang.Store(true)
		for i := range 3 {
			rev, err := w.Publish(ctx, "p", fmt.Appendf(nil, "%d", i))
			require.NoError(t, err)
			wctx, cancel := context.WithTimeout(ctx, 10*time.Second)
			err = a.WaitFor(wctx, rev)
			cancel()
			require.NoError(t, err, "record %d while saves hang", i)
		}
		require.Len(t, rec.got(), 3)
		require.Eventually(t, func() bool {
			st := a.Stats()
			return hs.tried.Load() > 0 && st.SyncErrors > 0 && st.LastSyncErr != nil &&
				strings.Contains(st.LastSyncErr.Error(), "save position") &&
				strings.Contains(st.LastSyncErr.Error(), "no answer within SyncTimeout")
		}, 10*time.Second, 10*time.Millisecond, "the hung save gave up and was reported")

		hs.hang.Store(false)
		last, err := w.Publish(ctx, "p", []byte("last"))
		require.NoError(t, err)
		require.NoError(t, a.WaitFor(ctx, last))
		require.Eventually(t, func() bool {
			p, err := revs.Load(ctx, "a")
			return err == nil && p.Revision == last
		}, 10*time.Second, 10*time.Millisecond, "the position is stored once saves answer")
	})
}
