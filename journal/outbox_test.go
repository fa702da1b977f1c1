package journal_test

import (
	"context"
	"database/sql"
	"fmt"
	"math/rand/v2"
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
			// A poll says so; a poll without the look at the outbox
			// returns the same otherwise.
			polled, err := journal.Poll(ctx, other, 0, 10)
			require.NoError(t, err)
			require.True(t, polled.Pending)
			records, err := journal.PollRecords(ctx, other, 0, 10)
			require.NoError(t, err)
			require.False(t, records.Pending)
			records.Pending = true
			require.Equal(t, polled, records)
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

// TestSQLWaitAfterClose: once the journal is closed no relay runs on it,
// so Pending.Wait for entries still pending returns an error matching
// ErrClosed at once instead of looking for them until its context ends;
// entries already relayed are still found.
func TestSQLWaitAfterClose(t *testing.T) {
	for _, b := range dbtest.Backends[:2] { // PostgreSQL and MySQL
		t.Run(b.Name, func(t *testing.T) {
			t.Parallel()
			ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
			defer cancel()
			db := dbtest.Open(t, b)
			pool := db.NewPool(t)
			j, err := journal.OpenSQL(ctx, pool, b.Dialect, journal.SQLConfig{NodeID: "w", Prefix: db.Prefix})
			require.NoError(t, err)
			publish := func(payload string) *journal.Pending {
				tx, err := pool.BeginTx(ctx, nil)
				require.NoError(t, err)
				p, err := j.AppendTx(ctx, tx, journal.Entry{Producer: "p", Payload: []byte(payload)})
				require.NoError(t, err)
				require.NoError(t, tx.Commit())
				return p
			}
			relayed := publish("relayed")
			revs, err := relayed.Wait(ctx)
			require.NoError(t, err)
			require.Equal(t, []int64{1}, revs)
			pending := publish("pending")
			require.NoError(t, j.Close(ctx))

			// Bounded, so that a Wait that keeps looking fails the test.
			wctx, wcancel := context.WithTimeout(ctx, 10*time.Second)
			defer wcancel()
			_, err = pending.Wait(wctx)
			require.ErrorIs(t, err, journal.ErrClosed)
			again, err := relayed.Wait(ctx)
			require.NoError(t, err)
			require.Equal(t, revs, again)
		})
	}
}

// TestSQLWaitReportsRelayFailure holds the counter row in another
// transaction, so that every relay fails with a lock timeout: Pending.Wait
// keeps trying until its context ends and then reports the last relay's
// error along with the context's.
func TestSQLWaitReportsRelayFailure(t *testing.T) {
	for _, b := range dbtest.Backends[:2] { // PostgreSQL and MySQL
		t.Run(b.Name, func(t *testing.T) {
			t.Parallel()
			ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
			defer cancel()
			db := dbtest.Open(t, b)
			pool := db.NewPool(t)
			j, err := journal.OpenSQL(ctx, pool, b.Dialect, journal.SQLConfig{NodeID: "w", Prefix: db.Prefix, LockTimeout: time.Second})
			require.NoError(t, err)
			defer j.Close(ctx)
			tx, err := pool.BeginTx(ctx, nil)
			require.NoError(t, err)
			p, err := j.AppendTx(ctx, tx, journal.Entry{Producer: "p", Payload: []byte("x")})
			require.NoError(t, err)
			require.NoError(t, tx.Commit())

			hold, err := db.DB.BeginTx(ctx, nil)
			require.NoError(t, err)
			defer hold.Rollback()
			_, err = hold.ExecContext(ctx, "UPDATE "+db.Prefix+"global_revision SET revision = revision WHERE id = 1")
			require.NoError(t, err)

			wctx, wcancel := context.WithCancel(ctx)
			defer wcancel()
			done := make(chan error, 1)
			go func() {
				_, err := p.Wait(wctx)
				done <- err
			}()
			// Each failed relay discards the append connection. A second
			// relay starts only after Wait got the first one's error.
			require.Eventually(t, func() bool { return j.Stats().ConnsDiscarded >= 2 }, 30*time.Second, 10*time.Millisecond,
				"relays fail while the counter row is held")
			wcancel()
			err = <-done
			t.Logf("Wait: %v", err)
			require.ErrorIs(t, err, context.Canceled)
			require.ErrorIs(t, err, dialect.ErrLockTimeout, "the last relay's error is reported")

			require.NoError(t, hold.Rollback())
			revs, err := p.Wait(ctx)
			require.NoError(t, err)
			require.Equal(t, []int64{1}, revs)
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

// TestSQLRelayKilled interrupts relays at random moments, hundreds of
// times (KILL QUERY on MariaDB; pg_cancel_backend or pg_terminate_backend
// on PostgreSQL), and checks after each that it moved whole transactions
// or nothing: no handle both pending and in the journal. At the end, one
// relay that nobody interrupts leaves every committed transaction in the
// journal exactly once, dense. MariaDB lets a multi-table DELETE killed at
// the wrong moment report success having deleted nothing; the relay
// procedure of schema versions 4 and 5 (relay_v1) then committed, and its
// entries were relayed a second time.
func TestSQLRelayKilled(t *testing.T) {
	for _, b := range dbtest.Backends[:2] { // PostgreSQL and MySQL
		t.Run(b.Name, func(t *testing.T) {
			t.Parallel()
			ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
			defer cancel()
			db := dbtest.Open(t, b)
			pool := db.NewPool(t) // closed with the test, and with it whatever pgx left on its connections
			s := &sessions{}
			j := openSQLConfig(t, db, hostile{Dialect: b.Dialect, caps: caps{b.Dialect}, sessions: s},
				journal.SQLConfig{NodeID: "r", LockTimeout: 2 * time.Second})
			kill := killFunc(db)
			both := `SELECT COUNT(*) FROM ` + db.Prefix + `pending p JOIN ` + db.Prefix + `journal j ON j.batch_id = p.handle`
			staged := map[int64]int{}
			var relays, killed, failed int
			for deadline := time.Now().Add(journaltest.Duration() + 2*time.Second); relays < 1500 && time.Now().Before(deadline); relays++ {
				for range 1 + rand.IntN(4) {
					tx, err := pool.BeginTx(ctx, nil)
					require.NoError(t, err)
					entries := make([]journal.Entry, 1+rand.IntN(3))
					for k := range entries {
						entries[k] = journal.Entry{Producer: "p", Payload: fmt.Appendf(nil, "%d/%d", relays, k)}
					}
					p, err := j.AppendTx(ctx, tx, entries...)
					require.NoError(t, err)
					require.NoError(t, tx.Commit())
					staged[p.Handle()] = len(entries)
				}
				hit := make(chan bool, 1)
				go func() {
					time.Sleep(rand.N(1500 * time.Microsecond))
					id := s.last()
					hit <- id != "" && kill(ctx, id) == nil
				}()
				_, err := j.Relay(ctx)
				if <-hit {
					killed++
				}
				if err != nil {
					failed++
				}
				var n int64
				require.NoError(t, pool.QueryRowContext(ctx, both).Scan(&n))
				require.Zero(t, n, "relay %d (error: %v) left entries both pending and in the journal", relays, err)
			}
			t.Logf("%d relays, %d interrupted, %d failed", relays, killed, failed)
			require.Positive(t, failed, "the injector interrupted no relay")

			_, err := j.Relay(ctx)
			require.NoError(t, err)
			head, err := j.Head(ctx)
			require.NoError(t, err)
			var count, top int64
			require.NoError(t, pool.QueryRowContext(ctx, `SELECT COUNT(*), COALESCE(MAX(revision), 0) FROM `+db.Prefix+`journal`).Scan(&count, &top))
			require.Equal(t, head, top)
			require.Equal(t, head, count, "dense")
			rows, err := pool.QueryContext(ctx, `SELECT batch_id, COUNT(*), MAX(revision) - MIN(revision) + 1 FROM `+db.Prefix+`journal GROUP BY batch_id`)
			require.NoError(t, err)
			defer rows.Close()
			moved := 0
			for rows.Next() {
				var batch, n, span int64
				require.NoError(t, rows.Scan(&batch, &n, &span))
				require.EqualValues(t, staged[batch], n, "handle %d: records", batch)
				require.Equal(t, n, span, "handle %d: consecutive", batch)
				moved++
			}
			require.NoError(t, rows.Err())
			require.Equal(t, len(staged), moved, "every committed transaction relayed")
		})
	}
}

// TestSQLRelayChecksItsWork has a relay's delete find more pending rows
// than its copy took (a writer reusing a handle while the relay waits for
// a row lock): the relay must not commit a state in which the copy and
// the delete disagree. On MySQL the procedure rolls back and fails (its
// row-count check, the guard against statements cut short); PostgreSQL's
// one-statement relay moves exactly the rows it deletes. Either way no
// pending row is lost and none is relayed twice.
func TestSQLRelayChecksItsWork(t *testing.T) {
	for _, b := range dbtest.Backends[:2] { // PostgreSQL and MySQL
		t.Run(b.Name, func(t *testing.T) {
			t.Parallel()
			ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
			defer cancel()
			db := dbtest.Open(t, b)
			pool := db.NewPool(t)
			j := openSQLConfig(t, db, b.Dialect, journal.SQLConfig{NodeID: "r", LockTimeout: 10 * time.Second})
			q := func(s string) string { return rebind(b.Name, s) }
			now := "UTC_TIMESTAMP(6)"
			if b.Name == "postgres" {
				now = "now()"
			}
			insert := q(`INSERT INTO ` + db.Prefix + `pending (handle, seq, node_id, instance, producer, payload, created_at) VALUES (?, ?, 'w', 'i', 'p', ?, ` + now + `)`)
			const handle = 77
			for seq := 1; seq <= 2; seq++ {
				_, err := pool.ExecContext(ctx, insert, handle, seq, []byte(fmt.Sprint(seq)))
				require.NoError(t, err)
			}
			// A reader holds a row of the handle: the relay's delete waits.
			locker, err := pool.BeginTx(ctx, nil)
			require.NoError(t, err)
			defer locker.Rollback()
			share := "LOCK IN SHARE MODE"
			if b.Name == "postgres" {
				share = "FOR SHARE"
			}
			var one int
			require.NoError(t, locker.QueryRowContext(ctx, q(`SELECT 1 FROM `+db.Prefix+`pending WHERE handle = ? AND seq = 1 `+share), handle).Scan(&one))
			relayed := make(chan error, 1)
			go func() {
				_, err := j.Relay(ctx)
				relayed <- err
			}()
			// Once the relay waits, a third row of the handle commits.
			waiting := `SELECT COUNT(*) FROM information_schema.processlist WHERE info LIKE 'DELETE p FROM ` + db.Prefix + `pending%'`
			if b.Name == "postgres" {
				waiting = `SELECT COUNT(*) FROM pg_stat_activity WHERE wait_event_type = 'Lock' AND datname = current_database()`
			}
			require.Eventually(t, func() bool {
				var n int
				return pool.QueryRowContext(ctx, waiting).Scan(&n) == nil && n > 0
			}, 20*time.Second, time.Millisecond, "the relay never waited for the locked row")
			_, err = pool.ExecContext(ctx, insert, handle, 3, []byte("3"))
			require.NoError(t, err)
			require.NoError(t, locker.Rollback())
			err = <-relayed
			if b.Name == "mysql" {
				require.ErrorContains(t, err, "did not do all of its work", "the procedure saw its delete disagree with its copy")
			} else {
				require.NoError(t, err)
			}
			// Relays that nobody disturbs move what is left.
			_, err = j.Relay(ctx)
			require.NoError(t, err)
			rows, err := pool.QueryContext(ctx, q(`SELECT payload FROM `+db.Prefix+`journal WHERE batch_id = ? ORDER BY revision`), handle)
			require.NoError(t, err)
			defer rows.Close()
			var got []string
			for rows.Next() {
				var p []byte
				require.NoError(t, rows.Scan(&p))
				got = append(got, string(p))
			}
			require.NoError(t, rows.Err())
			require.ElementsMatch(t, []string{"1", "2", "3"}, got, "every pending row relayed once")
			var left int
			require.NoError(t, pool.QueryRowContext(ctx, `SELECT COUNT(*) FROM `+db.Prefix+`pending`).Scan(&left))
			require.Zero(t, left)
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
