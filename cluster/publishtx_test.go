package cluster_test

import (
	"context"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/tandem-go/tandem/cluster"
	"github.com/tandem-go/tandem/journal"
)

// TestPublishTx: a row and its invalidation in one application
// transaction, read-your-writes with the handle's revision on another
// node, nothing from a rolled-back transaction, and the entries of a
// writer that stopped after its commit, before relaying, relayed by
// another node's poll within about SyncDelay.
func TestPublishTx(t *testing.T) {
	forEachBackend(t, func(t *testing.T, f fixture) {
		ctx := ctxT(t)
		a := f.open(t, cfg("a"))
		start(t, a)
		if f.pool == nil {
			_, err := a.PublishTx(ctx, nil, journal.Entry{Producer: "p"})
			require.ErrorIs(t, err, cluster.ErrInvalidArgument, "the folder has no transactions")
			return
		}
		b := f.open(t, cfg("b"))
		var seen recorder
		require.NoError(t, b.Handle("cache/users", &seen))
		start(t, b)
		pool := f.pool(t)
		users := f.where + "users"
		_, err := pool.ExecContext(ctx, `CREATE TABLE `+users+` (id INT PRIMARY KEY, name VARCHAR(20))`)
		require.NoError(t, err)
		t.Cleanup(func() { pool.ExecContext(context.Background(), `DROP TABLE `+users) })
		q := func(s string) string {
			if f.backend == "postgres" {
				return strings.NewReplacer("?1", "$1", "?2", "$2").Replace(s)
			}
			return strings.NewReplacer("?1", "?", "?2", "?").Replace(s)
		}
		_, err = pool.ExecContext(ctx, q(`INSERT INTO `+users+` (id, name) VALUES (?1, ?2)`), 1, "Ada")
		require.NoError(t, err)

		// Commit: the update and its invalidation together; the token
		// works on the other node.
		tx, err := pool.BeginTx(ctx, nil)
		require.NoError(t, err)
		_, err = tx.ExecContext(ctx, q(`UPDATE `+users+` SET name = ?1 WHERE id = ?2`), "Grace", 1)
		require.NoError(t, err)
		p, err := a.PublishTx(ctx, tx, journal.Entry{Producer: "cache/users", Payload: []byte("1")})
		require.NoError(t, err)
		require.NoError(t, tx.Commit())
		revs, err := p.Wait(ctx)
		require.NoError(t, err)
		require.Len(t, revs, 1)
		require.NoError(t, b.WaitFor(ctx, revs[0]))
		got := seen.got()
		require.Len(t, got, 1)
		require.Equal(t, revs[0], got[0].Revision)
		require.Equal(t, "a", got[0].NodeID, "records keep their writer's node id")
		var name string
		require.NoError(t, pool.QueryRowContext(ctx, q(`SELECT name FROM `+users+` WHERE id = ?1`), 1).Scan(&name))
		require.Equal(t, "Grace", name)

		// Rollback: nothing.
		tx, err = pool.BeginTx(ctx, nil)
		require.NoError(t, err)
		p, err = a.PublishTx(ctx, tx, journal.Entry{Producer: "cache/users", Payload: []byte("rolled back")})
		require.NoError(t, err)
		require.NoError(t, tx.Rollback())
		_, err = p.Wait(ctx)
		require.ErrorIs(t, err, journal.ErrNotCommitted)

		// The writer stops after its commit without relaying: b's poll
		// tick sees the entry waiting and relays it.
		tx, err = pool.BeginTx(ctx, nil)
		require.NoError(t, err)
		_, err = a.PublishTx(ctx, tx, journal.Entry{Producer: "cache/users", Payload: []byte("orphan")})
		require.NoError(t, err)
		require.NoError(t, tx.Commit())
		require.NoError(t, a.Stop(ctx))
		began := time.Now()
		require.Eventually(t, func() bool { return len(seen.got()) == 2 }, 10*time.Second, 5*time.Millisecond)
		t.Logf("orphaned entry relayed and applied after %v (SyncDelay %v)", time.Since(began).Round(time.Millisecond), cfg("b").SyncDelay)
		got = seen.got()
		require.Equal(t, "orphan", string(got[1].Payload))
		require.Equal(t, "a", got[1].NodeID)
		require.Equal(t, got[0].Revision+1, got[1].Revision, "dense: the rolled-back entry left no hole")
	})
}
