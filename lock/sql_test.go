package lock_test

import (
	"context"
	"database/sql"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/tandem-go/tandem/internal/dbtest"
	"github.com/tandem-go/tandem/internal/locktest"
	"github.com/tandem-go/tandem/internal/sqldialect"
	"github.com/tandem-go/tandem/lock"
)

func openSQL(t *testing.T, db *dbtest.DB) *lock.SQL {
	t.Helper()
	s, err := lock.OpenSQL(context.Background(), db.NewPool(t), db.Dialect, lock.SQLConfig{Prefix: db.Prefix})
	require.NoError(t, err)
	return s
}

func TestSQLConformance(t *testing.T) {
	for _, b := range dbtest.Backends {
		t.Run(b.Name, func(t *testing.T) {
			t.Parallel()
			locktest.Run(t, func(t *testing.T) locktest.Opener {
				db := dbtest.Open(t, b)
				return func(t *testing.T) lock.Store { return openSQL(t, db) }
			})
		})
	}
}

// TestSQLPausedHolderStatement: a holder pauses past its lease, another
// node takes over, and the paused node's fenced DELETE is rejected by the
// database; the new holder's goes through.
func TestSQLPausedHolderStatement(t *testing.T) {
	for _, b := range dbtest.Backends {
		t.Run(b.Name, func(t *testing.T) {
			t.Parallel()
			ctx := context.Background()
			db := dbtest.Open(t, b)
			a, other := openSQL(t, db), openSQL(t, db)
			work := db.Prefix + "work"
			_, err := db.DB.ExecContext(ctx, "CREATE TABLE "+work+" (id INT NOT NULL PRIMARY KEY)")
			require.NoError(t, err)
			t.Cleanup(func() { db.DB.ExecContext(context.Background(), "DROP TABLE "+work) })
			_, err = db.DB.ExecContext(ctx, "INSERT INTO "+work+" (id) VALUES (1)")
			require.NoError(t, err)

			alice := lock.Owner{NodeID: "alice", Instance: "a"}
			bob := lock.Owner{NodeID: "bob", Instance: "b"}
			token, ok, err := a.TryAcquire(ctx, "sweep", alice, 200*time.Millisecond)
			require.NoError(t, err)
			require.True(t, ok)
			// alice pauses; bob takes over after expiry.
			var token2 int64
			for !ok || token2 == 0 {
				time.Sleep(50 * time.Millisecond)
				token2, ok, err = other.TryAcquire(ctx, "sweep", bob, time.Minute)
				require.NoError(t, err)
			}
			del := func(ctx context.Context, tx *sql.Tx) error {
				_, err := tx.ExecContext(ctx, "DELETE FROM "+work)
				return err
			}
			err = a.FenceTx(ctx, "sweep", alice, token, del)
			require.ErrorIs(t, err, lock.ErrFenced)
			var n int
			require.NoError(t, db.DB.QueryRowContext(ctx, "SELECT COUNT(*) FROM "+work).Scan(&n))
			require.Equal(t, 1, n, "the stale holder's statement did not run")
			require.NoError(t, other.FenceTx(ctx, "sweep", bob, token2, del))
			require.NoError(t, db.DB.QueryRowContext(ctx, "SELECT COUNT(*) FROM "+work).Scan(&n))
			require.Zero(t, n, "the current holder's statement ran")
		})
	}
}

// TestLeaseFencedTx: a lease's statements run in the transaction that
// confirms it, and are rejected once it is released.
func TestLeaseFencedTx(t *testing.T) {
	for _, b := range dbtest.Backends {
		t.Run(b.Name, func(t *testing.T) {
			t.Parallel()
			ctx := context.Background()
			db := dbtest.Open(t, b)
			c, err := lock.New(lock.Config{NodeID: "a", Store: openSQL(t, db)})
			require.NoError(t, err)
			l, err := c.TryAcquire(ctx, "sweep")
			require.NoError(t, err)
			var token int64
			require.NoError(t, l.FencedTx(ctx, func(ctx context.Context, tx *sql.Tx) error {
				q := db.Dialect.LockQueries(mustTables(t, db.Prefix)).Token
				return tx.QueryRowContext(ctx, q, "sweep").Scan(&token)
			}))
			require.Equal(t, l.Token(), token, "fn ran in a transaction on the lease's database")
			require.ErrorIs(t, l.FencedTx(ctx, nil), lock.ErrInvalidArgument)
			require.NoError(t, l.Release(ctx))
			ran := false
			err = l.FencedTx(ctx, func(context.Context, *sql.Tx) error { ran = true; return nil })
			require.ErrorIs(t, err, lock.ErrFenced)
			require.False(t, ran)
		})
	}
}

func mustTables(t *testing.T, prefix string) sqldialect.Tables {
	tb, err := sqldialect.NewTables("Prefix", prefix)
	require.NoError(t, err)
	return tb
}

// TestSQLFencedStepsKeepLease: on a SQL store a fenced transaction holds
// the lease row's lock, which holds off the holder's own renewal too, so
// long work is fenced per step (see the package doc, Fencing). Steps that
// each take well under RenewEvery, run back to back for twice the TTL,
// keep the lease: the renewal waiting for one step's row lock goes
// through before the next step takes it.
func TestSQLFencedStepsKeepLease(t *testing.T) {
	for _, b := range dbtest.Backends {
		t.Run(b.Name, func(t *testing.T) {
			t.Parallel()
			ctx := context.Background()
			db := dbtest.Open(t, b)
			const ttl = 3 * time.Second // RenewEvery: 1s
			c, err := lock.New(lock.Config{NodeID: "a", Store: openSQL(t, db), TTL: ttl})
			require.NoError(t, err)
			l, err := c.TryAcquire(ctx, "sweep")
			require.NoError(t, err)
			defer l.Release(ctx)
			first := l.Deadline()
			for start, step := time.Now(), 0; time.Since(start) < 2*ttl; step++ {
				err := l.FencedTx(l.Context(), func(ctx context.Context, tx *sql.Tx) error {
					time.Sleep(ttl / 10)
					return nil
				})
				require.NoError(t, err, "step %d: %v", step, context.Cause(l.Context()))
			}
			require.True(t, l.Held(), "lost during fenced steps: %v", context.Cause(l.Context()))
			require.True(t, l.Deadline().After(first.Add(ttl)), "renewed between the steps")
		})
	}
}
