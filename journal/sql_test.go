package journal_test

import (
	"context"
	"database/sql"
	"math/rand/v2"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/tandem-go/tandem/dialect"
	"github.com/tandem-go/tandem/internal/dbtest"
	"github.com/tandem-go/tandem/internal/journaltest"
	"github.com/tandem-go/tandem/internal/sqldialect"
	"github.com/tandem-go/tandem/journal"
)

// openSQL opens a SQL journal on its own pool, closed when t ends.
func openSQL(t *testing.T, db *dbtest.DB, d dialect.Dialect, node string) *journal.SQL {
	return openSQLConfig(t, db, d, journal.SQLConfig{NodeID: node})
}

func openSQLConfig(t *testing.T, db *dbtest.DB, d dialect.Dialect, cfg journal.SQLConfig) *journal.SQL {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	cfg.Prefix = db.Prefix
	j, err := journal.OpenSQL(ctx, db.NewPool(t), d, cfg)
	require.NoError(t, err)
	t.Cleanup(func() { require.NoError(t, j.Close(context.Background())) })
	return j
}

func TestSQLConformance(t *testing.T) {
	for _, b := range dbtest.Backends {
		t.Run(b.Name, func(t *testing.T) {
			t.Parallel()
			journaltest.Run(t, func(t *testing.T) journaltest.Opener {
				db := dbtest.Open(t, b)
				return func(t *testing.T, node string) journal.Journal { return openSQL(t, db, b.Dialect, node) }
			})
		})
	}
}

// faulty fails some appends mid-flight: their context ends after a random
// few hundred microseconds, while the statement or the commit may be on the
// wire. The outcome is either a clean failure or dialect.ErrOutcomeUnknown;
// the journal must stay dense either way.
type faulty struct {
	dialect.Dialect
	caps
}

func (f faulty) Append(ctx context.Context, conn *sql.Conn, r sqldialect.AppendRequest) (int64, error) {
	if rand.IntN(10) == 0 {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, time.Duration(rand.IntN(3000))*time.Microsecond)
		defer cancel()
	}
	return f.Dialect.Append(ctx, conn, r)
}

func TestSQLConcurrentFaults(t *testing.T) {
	for _, b := range dbtest.Backends {
		t.Run(b.Name, func(t *testing.T) {
			t.Parallel()
			db := dbtest.Open(t, b)
			// A cancelled statement may still commit on the server after
			// the client gave up on it: the journal ends the session and
			// looks the batch up, so no outcome stays open and nothing
			// commits after Append returned (no settling time).
			res := journaltest.Concurrent(t, func(t *testing.T, node string) journal.Journal {
				return openSQLConfig(t, db, faulty{b.Dialect, caps{b.Dialect}}, journal.SQLConfig{NodeID: node, LockTimeout: time.Second})
			}, journaltest.ConcurrentConfig{Nodes: 8, Goroutines: 8, Duration: journaltest.Duration(), Faults: true})
			require.Zero(t, res.Unknown, "open outcomes are resolved")
		})
	}
}

func TestSQLBadConfig(t *testing.T) {
	ctx := context.Background()
	b := dbtest.Backends[0]
	db := dbtest.Open(t, b)
	for _, c := range []struct {
		cfg   journal.SQLConfig
		field string
	}{
		{journal.SQLConfig{NodeID: ""}, "NodeID"},
		{journal.SQLConfig{NodeID: "a/b"}, "NodeID"},
		{journal.SQLConfig{NodeID: "a", Prefix: "Bad"}, "Prefix"},
		{journal.SQLConfig{NodeID: "a", Prefix: "x; drop table y"}, "Prefix"},
		{journal.SQLConfig{NodeID: "a", Prefix: "a_prefix_that_is_too_long_"}, "Prefix"},
		{journal.SQLConfig{NodeID: "a", LockTimeout: -time.Second}, "LockTimeout"},
	} {
		_, err := journal.OpenSQL(ctx, db.DB, b.Dialect, c.cfg)
		require.ErrorContains(t, err, c.field, "%+v", c.cfg)
	}
	_, err := journal.OpenSQL(ctx, nil, b.Dialect, journal.SQLConfig{NodeID: "a"})
	require.ErrorIs(t, err, journal.ErrInvalidArgument)
	one := db.NewPool(t)
	one.SetMaxOpenConns(1)
	_, err = journal.OpenSQL(ctx, one, b.Dialect, journal.SQLConfig{NodeID: "a", Prefix: db.Prefix})
	require.ErrorIs(t, err, journal.ErrInvalidArgument, "a one-connection pool would hang every read")
	require.ErrorContains(t, err, "1 connection")
}

// TestSQLLockTimeout holds the global revision row in another transaction:
// an append must give up after the lock timeout with an error matching
// dialect.ErrLockTimeout, write nothing, and work again once the row is free.
func TestSQLLockTimeout(t *testing.T) {
	for _, b := range dbtest.Backends {
		t.Run(b.Name, func(t *testing.T) {
			t.Parallel()
			ctx := context.Background()
			db := dbtest.Open(t, b)
			j, err := journal.OpenSQL(ctx, db.NewPool(t), b.Dialect, journal.SQLConfig{NodeID: "a", Prefix: db.Prefix, LockTimeout: time.Second})
			require.NoError(t, err)
			defer j.Close(ctx)
			_, err = j.Append(ctx, journal.Entry{Producer: "p", Payload: []byte("1")})
			require.NoError(t, err)

			tx, err := db.DB.BeginTx(ctx, nil)
			require.NoError(t, err)
			_, err = tx.ExecContext(ctx, "UPDATE "+db.Prefix+"global_revision SET revision = revision WHERE id = 1")
			require.NoError(t, err)
			_, err = j.Append(ctx, journal.Entry{Producer: "p", Payload: []byte("2")})
			require.ErrorIs(t, err, dialect.ErrLockTimeout)
			require.NoError(t, tx.Rollback())

			revs, err := j.Append(ctx, journal.Entry{Producer: "p", Payload: []byte("3")})
			require.NoError(t, err)
			require.Equal(t, []int64{2}, revs, "the timed-out append left no hole")
		})
	}
}

// TestSQLAppendGivesUpWaitingForConn saturates the application's pool, so
// that the committer waits for a connection: nothing is sent meanwhile,
// so an append whose context ends then must return its context's error at
// once and write nothing, while an append without a deadline keeps
// waiting and commits once a connection is free.
func TestSQLAppendGivesUpWaitingForConn(t *testing.T) {
	for _, b := range dbtest.Backends {
		t.Run(b.Name, func(t *testing.T) {
			t.Parallel()
			ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
			defer cancel()
			db := dbtest.Open(t, b)
			pool := db.NewPool(t)
			pool.SetMaxOpenConns(2)
			j, err := journal.OpenSQL(ctx, pool, b.Dialect, journal.SQLConfig{NodeID: "a", Prefix: db.Prefix, LockTimeout: time.Second})
			require.NoError(t, err)
			defer j.Close(ctx)

			// The application holds every connection of the pool.
			held := make([]*sql.Conn, 2)
			for i := range held {
				held[i], err = pool.Conn(ctx)
				require.NoError(t, err)
				defer held[i].Close()
			}
			type result struct {
				revs []int64
				err  error
			}
			start := func(ctx context.Context) <-chan result {
				waits := pool.Stats().WaitCount
				done := make(chan result, 1)
				go func() {
					revs, err := j.Append(ctx, journal.Entry{Producer: "p", Payload: []byte("x")})
					done <- result{revs, err}
				}()
				require.Eventually(t, func() bool { return pool.Stats().WaitCount > waits }, 10*time.Second, time.Millisecond,
					"the committer waits for a connection")
				return done
			}

			actx, acancel := context.WithCancel(ctx)
			aborted := start(actx)
			acancel()
			select {
			case r := <-aborted:
				require.ErrorIs(t, r.err, context.Canceled)
				require.Nil(t, r.revs)
			case <-time.After(10 * time.Second):
				t.Fatal("Append still waits for a connection after its context ended")
			}

			waiting := start(ctx)
			require.NoError(t, held[0].Close())
			r := <-waiting
			require.NoError(t, r.err)
			require.Equal(t, []int64{1}, r.revs, "the aborted append wrote nothing")
		})
	}
}

// TestSQLSchemaRace opens many journals on one new prefix at once.
func TestSQLSchemaRace(t *testing.T) {
	for _, b := range dbtest.Backends {
		t.Run(b.Name, func(t *testing.T) {
			t.Parallel()
			db := dbtest.Open(t, b)
			const n = 8
			errs := make(chan error, n)
			epochs := make(chan string, n)
			for i := range n {
				go func() {
					ctx := context.Background()
					j, err := journal.OpenSQL(ctx, db.NewPool(t), b.Dialect, journal.SQLConfig{NodeID: "n" + string(rune('a'+i)), Prefix: db.Prefix})
					if err != nil {
						errs <- err
						return
					}
					defer j.Close(ctx)
					e, err := j.Epoch(ctx)
					epochs <- e
					errs <- err
				}()
			}
			first := ""
			for range n {
				require.NoError(t, <-errs)
			}
			close(epochs)
			for e := range epochs {
				if first == "" {
					first = e
				}
				require.Equal(t, first, e, "one epoch wins")
			}
		})
	}
}
