package cluster_test

import (
	"context"
	"errors"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/tandem-go/tandem/cluster"
	"github.com/tandem-go/tandem/internal/dbtest"
)

// TestReplacedAfterOutage cuts a node off from the database until its
// membership lease expires; another process starts with the same id
// meanwhile (legitimately). When the first node can reach the database
// again, it must not go on sharing the id: it stops syncing and reports
// ErrDuplicateNode.
func TestReplacedAfterOutage(t *testing.T) {
	for _, b := range dbtest.Backends {
		t.Run(b.Name, func(t *testing.T) {
			t.Parallel()
			ctx := ctxT(t)
			db := dbtest.Open(t, b)
			proxy, dsn := db.NewProxy(t)
			c := cfg("web-1")
			c.MemberTTL = time.Second
			c.Prefix = db.Prefix
			first, err := cluster.OpenSQL(ctx, db.Pool(t, dsn), b.Dialect, c)
			require.NoError(t, err)
			t.Cleanup(func() { first.Stop(context.Background()) })
			start(t, first)

			proxy.Cut()
			// The replacement starts once the first node's lease expired.
			var second *cluster.Node
			require.Eventually(t, func() bool {
				n, err := cluster.OpenSQL(ctx, db.NewPool(t), b.Dialect, c)
				require.NoError(t, err)
				if err := n.Start(ctx); err != nil {
					require.ErrorIs(t, err, cluster.ErrDuplicateNode)
					return false
				}
				second = n
				return true
			}, 30*time.Second, 100*time.Millisecond)
			t.Cleanup(func() { second.Stop(context.Background()) })

			proxy.Restore()
			require.Eventually(t, func() bool {
				return errors.Is(first.Sync(ctx), cluster.ErrDuplicateNode)
			}, 30*time.Second, 50*time.Millisecond, "the cut-off node notices it was replaced")
			require.NoError(t, second.Sync(ctx), "the replacement runs on")
			rev, err := second.Publish(ctx, "p", nil)
			require.NoError(t, err)
			require.NoError(t, second.WaitFor(ctx, rev))
		})
	}
}
