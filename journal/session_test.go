package journal_test

import (
	"context"
	"database/sql"
	"database/sql/driver"
	"errors"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/tandem-go/tandem/internal/dbtest"
	"github.com/tandem-go/tandem/internal/sqldialect"
	"github.com/tandem-go/tandem/journal"
)

// sessionDefaults are DSN parameters that make a pool's sessions differ
// from the server's defaults in what the append connection changes or
// depends on, as an application's pool may (a DSN parameter, ALTER ROLE
// … SET, a hook on connect).
var sessionDefaults = map[string]string{
	"postgres": "&lock_timeout=7777&default_transaction_isolation=repeatable%20read&synchronous_commit=off",
	"mysql":    "&innodb_lock_wait_timeout=7",
}

// sessionSettings reads, on conn, the settings PrepareConn changes.
func sessionSettings(t *testing.T, ctx context.Context, backend string, conn *sql.Conn) string {
	var got string
	q := `SELECT current_setting('lock_timeout') || ' ' || current_setting('default_transaction_isolation') || ' ' || current_setting('synchronous_commit')`
	if backend == "mysql" {
		q = `SELECT CAST(@@SESSION.innodb_lock_wait_timeout AS CHAR)`
	}
	require.NoError(t, conn.QueryRowContext(ctx, q).Scan(&got))
	return got
}

// TestSQLPrepareConnRestoresSession: the append connection's session
// settings are what the append needs whatever the pool's defaults are
// (PostgreSQL: READ COMMITTED), and once the journal hands the connection
// back, the session has exactly the settings it had before — the
// application's own, not the server's defaults. A ResetConn on a session
// that PrepareConn never saw (PgBouncer in transaction mode hands the
// statement another server session) gives it what RESET would, and fails
// not.
func TestSQLPrepareConnRestoresSession(t *testing.T) {
	want := map[string][2]string{ // before, prepared
		"postgres": {"7777ms repeatable read off", "1500ms read committed off"},
		"mysql":    {"7", "2"},
	}
	for _, b := range dbtest.Backends[:2] { // PostgreSQL and MySQL
		t.Run(b.Name, func(t *testing.T) {
			t.Parallel()
			ctx := context.Background()
			db := dbtest.Open(t, b)
			pool := db.Pool(t, db.DSN+sessionDefaults[b.Name])
			conn, err := pool.Conn(ctx)
			require.NoError(t, err)
			defer conn.Close()
			w := want[b.Name]
			require.Equal(t, w[0], sessionSettings(t, ctx, b.Name, conn), "the DSN's settings")
			require.NoError(t, b.Dialect.PrepareConn(ctx, conn, 1500*time.Millisecond))
			require.Equal(t, w[1], sessionSettings(t, ctx, b.Name, conn))
			require.NoError(t, b.Dialect.ResetConn(ctx, conn))
			require.Equal(t, w[0], sessionSettings(t, ctx, b.Name, conn))

			other, err := pool.Conn(ctx) // a session PrepareConn never saw
			require.NoError(t, err)
			if b.Name == "postgres" {
				_, err = other.ExecContext(ctx, `SET lock_timeout = 1234`)
				require.NoError(t, err)
			}
			reset := w[0] // PostgreSQL's RESET: the session's startup value
			if b.Name == "mysql" {
				// MySQL keeps no startup value: the global default.
				require.NoError(t, other.QueryRowContext(ctx, `SELECT CAST(@@GLOBAL.innodb_lock_wait_timeout AS CHAR)`).Scan(&reset))
			}
			require.NoError(t, b.Dialect.ResetConn(ctx, other))
			require.NoError(t, b.Dialect.ResetConn(ctx, other), "twice")
			require.Equal(t, reset, sessionSettings(t, ctx, b.Name, other))
			// Not back to the pool: MySQL's session now differs from the DSN's.
			_ = other.Raw(func(any) error { return driver.ErrBadConn })
			other.Close()

			// Through the journal: the connections it used and handed
			// back have the application's settings.
			pool.SetMaxOpenConns(2)
			j, err := journal.OpenSQL(ctx, pool, b.Dialect, journal.SQLConfig{NodeID: "n", Prefix: db.Prefix, LockTimeout: 2 * time.Second})
			require.NoError(t, err)
			defer j.Close(ctx)
			j.SetConnSchedule(20*time.Millisecond, time.Minute)
			conn.Close()
			_, err = j.Append(ctx, journal.Entry{Producer: "p", Payload: []byte("x")})
			require.NoError(t, err)
			require.Eventually(t, func() bool { return pool.Stats().InUse == 0 }, 10*time.Second, 10*time.Millisecond)
			conns := make([]*sql.Conn, pool.Stats().Idle)
			for i := range conns {
				conns[i], err = pool.Conn(ctx)
				require.NoError(t, err)
				defer conns[i].Close()
			}
			for i, c := range conns {
				require.Equal(t, w[0], sessionSettings(t, ctx, b.Name, c), "idle connection %d of %d", i, len(conns))
			}
		})
	}
}

// TestSQLAppendUnderRepeatableRead: on a pool whose sessions default to
// REPEATABLE READ (and to synchronous_commit off), the appends of three
// nodes at once all succeed, dense and each exactly once; the counter's
// update used to fail with a serialization error whenever it waited for
// another node's append, failing the whole group commit.
func TestSQLAppendUnderRepeatableRead(t *testing.T) {
	b := dbtest.Backends[0] // PostgreSQL
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	db := dbtest.Open(t, b)
	const nodes, appenders, each = 3, 4, 30
	var wg sync.WaitGroup
	errs := make(chan error, nodes*appenders*each)
	for _, node := range []string{"a", "b", "c"} {
		j, err := journal.OpenSQL(ctx, db.Pool(t, db.DSN+sessionDefaults[b.Name]), b.Dialect, journal.SQLConfig{NodeID: node, Prefix: db.Prefix})
		require.NoError(t, err)
		defer j.Close(ctx)
		for range appenders {
			wg.Go(func() {
				for range each {
					if _, err := j.Append(ctx, journal.Entry{Producer: "p", Payload: []byte(node)}); err != nil {
						errs <- err
					}
				}
			})
		}
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		require.NoError(t, err)
	}
	recs, err := openSQL(t, db, b.Dialect, "reader").Read(ctx, 0, nodes*appenders*each+1)
	require.NoError(t, err)
	require.Len(t, recs, nodes*appenders*each)
	for i, r := range recs {
		require.Equal(t, int64(i+1), r.Revision)
	}
}

// TestSQLLookupUnderRepeatableRead: the lookup of an open outcome waits
// for the counter's lock held by an append in flight and then reads what
// is committed, on a pool whose sessions default to REPEATABLE READ; it
// failed with a serialization error once the append it waited for
// committed.
func TestSQLLookupUnderRepeatableRead(t *testing.T) {
	b := dbtest.Backends[0] // PostgreSQL
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	db := dbtest.Open(t, b)
	pool := db.Pool(t, db.DSN+sessionDefaults[b.Name])
	j, err := journal.OpenSQL(ctx, pool, b.Dialect, journal.SQLConfig{NodeID: "n", Prefix: db.Prefix})
	require.NoError(t, err)
	defer j.Close(ctx)
	revs, err := j.Append(ctx, journal.Entry{Producer: "p", Payload: []byte("one")})
	require.NoError(t, err)

	tb, err := sqldialect.NewTables("Prefix", db.Prefix)
	require.NoError(t, err)
	holder, err := db.DB.BeginTx(ctx, nil)
	require.NoError(t, err)
	defer holder.Rollback()
	_, err = holder.ExecContext(ctx, `UPDATE `+tb.GlobalRevision+` SET revision = revision + 1 WHERE id = 1`)
	require.NoError(t, err)

	type result struct {
		found bool
		err   error
	}
	done := make(chan result, 1)
	go func() {
		_, found, err := j.LookupBatch(ctx, 42, 1, revs[0])
		done <- result{found, err}
	}()
	// The lookup waits for the holder's lock: nothing comes back yet.
	waitBlocked(t, ctx, db.DB)
	_, err = holder.ExecContext(ctx, `UPDATE `+tb.GlobalRevision+` SET revision = revision - 1 WHERE id = 1`)
	require.NoError(t, err)
	require.NoError(t, holder.Commit())
	r := <-done
	require.NoError(t, r.err)
	require.False(t, r.found, "batch 42 was never appended")
}

// waitBlocked waits until a session of db's server waits for a lock.
func waitBlocked(t *testing.T, ctx context.Context, db *sql.DB) {
	t.Helper()
	for {
		var n int
		err := db.QueryRowContext(ctx, `SELECT COUNT(*) FROM pg_stat_activity WHERE wait_event_type = 'Lock' AND datname = current_database()`).Scan(&n)
		require.NoError(t, err)
		if n > 0 {
			return
		}
		select {
		case <-ctx.Done():
			require.NoError(t, errors.Join(ctx.Err(), errors.New("no session waited for a lock")))
		case <-time.After(5 * time.Millisecond):
		}
	}
}
