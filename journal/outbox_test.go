package journal_test

import (
	"context"
	"database/sql"
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/tandem-go/tandem/dialect"
	"github.com/tandem-go/tandem/internal/dbtest"
	"github.com/tandem-go/tandem/internal/journaltest"
	"github.com/tandem-go/tandem/journal"
)

// TestSQLAppendTx publishes inside application transactions: entries
// become records if and only if the transaction commits, consecutive and
// with the writer's node id and instance; a rolled-back transaction leaves
// nothing; entries of a writer that died after its commit are relayed by
// another node.
func TestSQLAppendTx(t *testing.T) {
	for _, b := range dbtest.Backends[:2] { // PostgreSQL and MySQL
		t.Run(b.Name, func(t *testing.T) {
			t.Parallel()
			ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
			defer cancel()
			db := dbtest.Open(t, b)
			pool := db.NewPool(t)
			j, err := journal.OpenSQL(ctx, pool, b.Dialect, journal.SQLConfig{NodeID: "w", Prefix: db.Prefix})
			require.NoError(t, err)
			defer j.Close(ctx)
			other := openSQL(t, db, b.Dialect, "other")
			app := db.Prefix + "app"
			_, err = pool.ExecContext(ctx, `CREATE TABLE `+app+` (id INT PRIMARY KEY, v VARCHAR(20))`)
			require.NoError(t, err)
			defer db.DB.ExecContext(context.Background(), `DROP TABLE `+app)
			q := func(s string) string { return rebind(b.Name, s) }

			// Commit: the row and its invalidation together.
			_, err = j.Append(ctx, journal.Entry{Producer: "p", Payload: []byte("before")})
			require.NoError(t, err)
			tx, err := pool.BeginTx(ctx, nil)
			require.NoError(t, err)
			_, err = tx.ExecContext(ctx, q(`INSERT INTO `+app+` (id, v) VALUES (?, ?)`), 1, "one")
			require.NoError(t, err)
			p, err := j.AppendTx(ctx, tx, journal.Entry{Producer: "cache/app", Payload: []byte("1")}, journal.Entry{Producer: "cache/app", Payload: []byte("1b")})
			require.NoError(t, err)
			_, err = p.Wait(ctx)
			require.ErrorIs(t, err, journal.ErrNotCommitted, "not visible before the commit")
			head, err := j.Head(ctx)
			require.NoError(t, err)
			require.EqualValues(t, 1, head, "nothing global is taken inside the transaction")
			require.NoError(t, tx.Commit())
			revs, err := p.Wait(ctx)
			require.NoError(t, err)
			require.Equal(t, []int64{2, 3}, revs)
			recs, err := other.Read(ctx, 1, 10)
			require.NoError(t, err)
			require.Len(t, recs, 2)
			require.Equal(t, "1", string(recs[0].Payload))
			require.Equal(t, "1b", string(recs[1].Payload))
			require.Equal(t, "w", recs[0].NodeID)
			require.NotEmpty(t, recs[0].Instance)
			revs2, err := p.Wait(ctx)
			require.NoError(t, err)
			require.Equal(t, revs, revs2, "Wait is repeatable")

			// Rollback: nothing.
			tx, err = pool.BeginTx(ctx, nil)
			require.NoError(t, err)
			p, err = j.AppendTx(ctx, tx, journal.Entry{Producer: "cache/app", Payload: []byte("rolled back")})
			require.NoError(t, err)
			require.NoError(t, tx.Rollback())
			_, err = p.Wait(ctx)
			require.ErrorIs(t, err, journal.ErrNotCommitted)

			// The writer dies after its commit, before relaying: another
			// node's Relay moves the entries.
			tx, err = pool.BeginTx(ctx, nil)
			require.NoError(t, err)
			_, err = j.AppendTx(ctx, tx, journal.Entry{Producer: "cache/app", Payload: []byte("orphan")})
			require.NoError(t, err)
			require.NoError(t, tx.Commit())
			info, err := other.PendingInfo(ctx)
			require.NoError(t, err)
			require.EqualValues(t, 1, info.Entries)
			n, err := other.Relay(ctx)
			require.NoError(t, err)
			require.EqualValues(t, 1, n)
			recs, err = other.Read(ctx, 3, 10)
			require.NoError(t, err)
			require.Len(t, recs, 1)
			require.Equal(t, "orphan", string(recs[0].Payload))
			require.Equal(t, "w", recs[0].NodeID, "records keep their writer's node id")
			n, err = other.Relay(ctx)
			require.NoError(t, err)
			require.Zero(t, n, "exactly once")
			info, err = other.PendingInfo(ctx)
			require.NoError(t, err)
			require.Zero(t, info.Entries)
			require.EqualValues(t, 1, other.Stats().Relayed)

			// More orphaned transactions than one relay takes: one Relay
			// call moves them all, in as many relays as it needs.
			const orphans = 75
			for i := range orphans {
				tx, err = pool.BeginTx(ctx, nil)
				require.NoError(t, err)
				_, err = j.AppendTx(ctx, tx, journal.Entry{Producer: "cache/app", Payload: []byte(fmt.Sprint(i))})
				require.NoError(t, err)
				require.NoError(t, tx.Commit())
			}
			n, err = other.Relay(ctx)
			require.NoError(t, err)
			require.EqualValues(t, orphans, n)
			info, err = other.PendingInfo(ctx)
			require.NoError(t, err)
			require.Zero(t, info.Entries)
			head, err = other.Head(ctx)
			require.NoError(t, err)
			recs, err = other.Read(ctx, 4, orphans+10)
			require.NoError(t, err)
			require.Len(t, recs, orphans)
			require.EqualValues(t, 4+orphans, head)

			_, err = j.AppendTx(ctx, nil, journal.Entry{Producer: "p"})
			require.ErrorIs(t, err, journal.ErrInvalidArgument)
		})
	}
}

// TestSQLConcurrentTx is the concurrency test with a share of the appends
// in application transactions (committed and waited for, rolled back,
// committed after a pause, committed by a writer that never relays) while
// other nodes append directly.
func TestSQLConcurrentTx(t *testing.T) {
	for _, b := range dbtest.Backends[:2] { // PostgreSQL and MySQL
		t.Run(b.Name, func(t *testing.T) {
			t.Parallel()
			open, tx := txOpener(dbtest.Open(t, b), b.Dialect)
			res := journaltest.Concurrent(t, open, journaltest.ConcurrentConfig{Nodes: 4, Goroutines: 8,
				Duration: journaltest.Duration(), Tx: tx})
			require.Zero(t, res.Unknown)
			require.Positive(t, res.Stats.Relayed)
		})
	}
}

// TestSQLKillQueryTx is TestSQLKillQuery with a share of the appends in
// application transactions: the relays, which run on the append
// connection, are killed mid-statement too. A killed relay moved
// everything or nothing; every committed transaction still reaches the
// journal exactly once.
func TestSQLKillQueryTx(t *testing.T) {
	for _, b := range dbtest.Backends[:2] { // PostgreSQL and MySQL
		t.Run(b.Name, func(t *testing.T) {
			t.Parallel()
			db := dbtest.Open(t, b)
			s, hits := &sessions{}, &tally{}
			open, tx := txOpener(db, hostile{Dialect: b.Dialect, caps: caps{b.Dialect}, sessions: s})
			res := journaltest.Concurrent(t, open, journaltest.ConcurrentConfig{Nodes: 4, Goroutines: 8, Readers: 2,
				Duration: journaltest.Duration(), Faults: true, Tx: tx,
				Inject: killer(t, db, s, hits, killFunc(db))})
			t.Logf("interrupted: %d (%s)", hits.total(), hits)
			require.Zero(t, res.Unknown)
			require.Positive(t, hits.total())
			require.Positive(t, res.Stats.Relayed)
		})
	}
}

// txOpener opens journals on their own pools and begins application
// transactions on the pool of the journal asked for.
func txOpener(db *dbtest.DB, d dialect.Dialect) (journaltest.Opener, func(journal.Journal) (*sql.Tx, error)) {
	var mu sync.Mutex
	pools := map[journal.Journal]*sql.DB{}
	open := func(t *testing.T, node string) journal.Journal {
		pool := db.NewPool(t)
		ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
		defer cancel()
		j, err := journal.OpenSQL(ctx, pool, d, journal.SQLConfig{NodeID: node, Prefix: db.Prefix, LockTimeout: 2 * time.Second})
		require.NoError(t, err)
		t.Cleanup(func() { require.NoError(t, j.Close(context.Background())) })
		mu.Lock()
		pools[j] = pool
		mu.Unlock()
		return j
	}
	tx := func(j journal.Journal) (*sql.Tx, error) {
		mu.Lock()
		pool := pools[j]
		mu.Unlock()
		if pool == nil {
			return nil, fmt.Errorf("no pool for %v", j)
		}
		return pool.BeginTx(context.Background(), nil)
	}
	return open, tx
}
