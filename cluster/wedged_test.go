package cluster_test

import (
	"context"
	"fmt"
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
