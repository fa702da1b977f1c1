package journal_test

import (
	"context"
	"database/sql"
	"fmt"
	"math/rand/v2"
	"sort"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/tandem-go/tandem/dialect"
	"github.com/tandem-go/tandem/internal/dbtest"
	"github.com/tandem-go/tandem/internal/journaltest"
	"github.com/tandem-go/tandem/internal/sqldialect"
	"github.com/tandem-go/tandem/journal"
)

// sessions records the server sessions of the journals' append
// connections, so that a fault injector aims at those and at nothing else
// on the shared test server.
type sessions struct {
	mu     sync.Mutex
	ids    map[string]bool
	latest string
}

func (s *sessions) add(id string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.ids == nil {
		s.ids = map[string]bool{}
	}
	s.ids[id] = true
	s.latest = id
}

// last returns the session recorded last ("" before the first).
func (s *sessions) last() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.latest
}

func (s *sessions) list() []string {
	s.mu.Lock()
	defer s.mu.Unlock()
	out := make([]string, 0, len(s.ids))
	for id := range s.ids {
		out = append(out, id)
	}
	return out
}

// hostile is the real dialect with the append connection's set-up
// overridden: it records the session and may set a statement time limit
// on it (and take it off again before the connection goes back to the
// pool).
type hostile struct {
	dialect.Dialect
	caps
	sessions *sessions
	// setLimit and resetLimit, when set, put a statement time limit on the
	// append session and take it off.
	setLimit, resetLimit string
}

var _ sqldialect.SessionEnder = hostile{}

func (h hostile) PrepareConn(ctx context.Context, conn *sql.Conn, lockTimeout time.Duration) error {
	if err := h.Dialect.PrepareConn(ctx, conn, lockTimeout); err != nil {
		return err
	}
	var id string
	q := `SELECT CAST(CONNECTION_ID() AS CHAR)`
	if h.Name() == "postgres" {
		q = `SELECT pg_backend_pid()::text`
	}
	if err := conn.QueryRowContext(ctx, q).Scan(&id); err != nil {
		return err
	}
	h.sessions.add(id)
	if h.setLimit != "" {
		if _, err := conn.ExecContext(ctx, h.setLimit); err != nil {
			return err
		}
	}
	return nil
}

func (h hostile) ResetConn(ctx context.Context, conn *sql.Conn) error {
	if h.resetLimit != "" {
		if _, err := conn.ExecContext(ctx, h.resetLimit); err != nil {
			return err
		}
	}
	return h.Dialect.ResetConn(ctx, conn)
}

// tally counts what the injector hit, by the statement it interrupted.
type tally struct {
	mu sync.Mutex
	by map[string]int
}

func (c *tally) hit(what string) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.by == nil {
		c.by = map[string]int{}
	}
	c.by[what]++
}

func (c *tally) String() string {
	c.mu.Lock()
	defer c.mu.Unlock()
	keys := make([]string, 0, len(c.by))
	for k := range c.by {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	var b strings.Builder
	for _, k := range keys {
		fmt.Fprintf(&b, "%q: %d; ", k, c.by[k])
	}
	return b.String()
}

func (c *tally) total() int {
	c.mu.Lock()
	defer c.mu.Unlock()
	n := 0
	for _, v := range c.by {
		n += v
	}
	return n
}

// statementKind names the statement of the append a session was running.
func statementKind(info string) string {
	s := strings.ToUpper(strings.TrimSpace(info))
	for _, k := range []string{"CALL", "SELECT REVISION INTO", "UPDATE", "INSERT", "COMMIT", "SELECT V_REV", "WITH C AS", "SET", "SELECT", "ROLLBACK"} {
		if strings.HasPrefix(s, k) {
			return k
		}
	}
	if len(s) > 20 {
		s = s[:20]
	}
	return s
}

// killer returns an injector that, every few hundred microseconds, finds
// the recorded append sessions that are running a statement and
// interrupts one of them with kill(id), counting which statement it hit.
func killer(t *testing.T, db *dbtest.DB, s *sessions, hits *tally, kill func(ctx context.Context, id string) error) func(ctx context.Context) {
	return func(ctx context.Context) {
		active := `SELECT CAST(id AS CHAR), COALESCE(info, '') FROM information_schema.processlist WHERE info IS NOT NULL AND id IN (%s)`
		if db.Name == "postgres" {
			active = `SELECT pid::text, query FROM pg_stat_activity WHERE state = 'active' AND pid IN (%s)`
		}
		for ctx.Err() == nil {
			time.Sleep(time.Duration(200+rand.IntN(800)) * time.Microsecond)
			ids := s.list()
			if len(ids) == 0 {
				continue
			}
			rows, err := db.DB.QueryContext(ctx, fmt.Sprintf(active, strings.Join(ids, ","))) // ids are numbers we read
			if err != nil {
				continue
			}
			type victim struct{ id, info string }
			var vs []victim
			for rows.Next() {
				var v victim
				if rows.Scan(&v.id, &v.info) == nil {
					vs = append(vs, v)
				}
			}
			rows.Close()
			if len(vs) == 0 {
				continue
			}
			v := vs[rand.IntN(len(vs))]
			if err := kill(ctx, v.id); err == nil {
				hits.hit(statementKind(v.info))
			}
		}
	}
}

// killFunc interrupts a session's statement: KILL QUERY on MySQL;
// pg_cancel_backend or pg_terminate_backend (at random) on PostgreSQL.
func killFunc(db *dbtest.DB) func(ctx context.Context, id string) error {
	if db.Name == "postgres" {
		return func(ctx context.Context, id string) error {
			fn := "pg_cancel_backend"
			if rand.IntN(2) == 0 {
				fn = "pg_terminate_backend"
			}
			_, err := db.DB.ExecContext(ctx, "SELECT "+fn+"($1::int)", id)
			return err
		}
	}
	return func(ctx context.Context, id string) error {
		_, err := db.DB.ExecContext(ctx, "KILL QUERY "+id)
		return err
	}
}

// checkOutcomes runs the concurrency test with an injector and demands
// that every open outcome was resolved while the database was reachable.
func checkOutcomes(t *testing.T, open journaltest.Opener, inject func(ctx context.Context), hits *tally) {
	require.Positive(t, runOutcomes(t, open, inject, hits), "the injector left some outcomes open")
}

// runOutcomes runs the concurrency test with an injector, checks it, and
// returns how many open outcomes the journals resolved.
func runOutcomes(t *testing.T, open journaltest.Opener, inject func(ctx context.Context), hits *tally) int64 {
	res := journaltest.Concurrent(t, open, journaltest.ConcurrentConfig{
		Nodes: 4, Goroutines: 8, Readers: 2, Duration: journaltest.Duration(), Faults: true, Inject: inject,
	})
	t.Logf("interrupted: %d (%s)", hits.total(), hits)
	require.Zero(t, res.Unknown, "every open outcome is resolved while the database is reachable (%.2f%% unknown)", 100*res.UnknownShare())
	require.Positive(t, res.Acked)
	return res.Stats.ResolvedCommitted + res.Stats.ResolvedNotWritten
}

func openHostile(t *testing.T, db *dbtest.DB, h hostile) journaltest.Opener {
	return func(t *testing.T, node string) journal.Journal {
		return openSQLConfig(t, db, h, journal.SQLConfig{NodeID: node, LockTimeout: 2 * time.Second})
	}
}

// TestSQLKillQuery interrupts the statements of appends while they run:
// KILL QUERY on MariaDB (whose procedure handlers do not run for a killed
// statement), pg_cancel_backend and pg_terminate_backend on PostgreSQL.
// Nothing acknowledged may be missing, nothing reported failed present,
// the journal dense, and no outcome left unknown.
func TestSQLKillQuery(t *testing.T) {
	for _, b := range dbtest.Backends[:2] { // PostgreSQL and MySQL
		t.Run(b.Name, func(t *testing.T) {
			t.Parallel()
			// A KILL lands only if it reaches the session before its
			// statement ends, and on a loaded machine (the whole suite at
			// once) whole runs have seen none land: such a run proves
			// nothing and is made again, on fresh tables, up to 3 times.
			for attempt := 1; ; attempt++ {
				db := dbtest.Open(t, b)
				s := &sessions{}
				hits := &tally{}
				opened := runOutcomes(t, openHostile(t, db, hostile{Dialect: b.Dialect, caps: caps{b.Dialect}, sessions: s}), killer(t, db, s, hits, killFunc(db)), hits)
				require.Positive(t, hits.total())
				if opened > 0 {
					break
				}
				require.Less(t, attempt, 3, "in %d runs the injector left no outcome open", attempt)
				t.Logf("run %d: no KILL landed mid-append; again", attempt)
			}
		})
	}
}

// TestSQLStatementTimeout puts a statement time limit on the append
// sessions, small enough to interrupt many appends at any point:
// max_statement_time on MariaDB, statement_timeout on PostgreSQL.
func TestSQLStatementTimeout(t *testing.T) {
	for _, b := range dbtest.Backends[:2] { // PostgreSQL and MySQL
		t.Run(b.Name, func(t *testing.T) {
			t.Parallel()
			db := dbtest.Open(t, b)
			h := hostile{Dialect: b.Dialect, caps: caps{b.Dialect}, sessions: &sessions{},
				setLimit: "SET SESSION max_statement_time = 0.002", resetLimit: "SET SESSION max_statement_time = DEFAULT"}
			if b.Name == "postgres" {
				h.setLimit, h.resetLimit = "SET statement_timeout = 2", "RESET statement_timeout"
			}
			checkOutcomes(t, openHostile(t, db, h), nil, &tally{})
		})
	}
}

// caps forwards the optional sqldialect.SessionEnder of a wrapped
// dialect, which the wrappers' embedding of dialect.Dialect would
// otherwise hide.
type caps struct{ d dialect.Dialect }

func (e caps) SessionID(ctx context.Context, conn *sql.Conn) (string, error) {
	return e.d.(sqldialect.SessionEnder).SessionID(ctx, conn)
}

func (e caps) EndSession(ctx context.Context, db *sql.DB, id string) error {
	return e.d.(sqldialect.SessionEnder).EndSession(ctx, db, id)
}

// TestSQLAppendThroughHungNetwork: the network black-holes an append's
// connection (it hangs rather than refuses) and heals a moment later. The
// append must then come back with a definite answer — committed at its
// revision, or failed with nothing written — never a hole, never
// ErrOutcomeUnknown while the database is reachable again.
func TestSQLAppendThroughHungNetwork(t *testing.T) {
	for _, b := range dbtest.Backends[:2] { // PostgreSQL and MySQL
		t.Run(b.Name, func(t *testing.T) {
			t.Parallel()
			ctx := context.Background()
			db := dbtest.Open(t, b)
			proxy, dsn := db.NewProxy(t)
			j, err := journal.OpenSQL(ctx, db.Pool(t, dsn), b.Dialect, journal.SQLConfig{NodeID: "hung", Prefix: db.Prefix, LockTimeout: time.Second})
			require.NoError(t, err)
			defer j.Close(ctx)
			_, err = j.Append(ctx, journal.Entry{Producer: "p", Payload: []byte("before")})
			require.NoError(t, err) // the journal now holds a live append connection

			proxy.BlackHole()
			type result struct {
				revs []int64
				err  error
			}
			done := make(chan result, 1)
			go func() {
				revs, err := j.Append(ctx, journal.Entry{Producer: "p", Payload: []byte("through the hole")})
				done <- result{revs, err}
			}()
			select {
			case r := <-done:
				t.Fatalf("the append returned while the network hung: %v %v", r.revs, r.err)
			case <-time.After(1500 * time.Millisecond):
			}
			healed := time.Now()
			proxy.Restore()
			var r result
			select {
			case r = <-done:
			case <-time.After(60 * time.Second):
				t.Fatal("the append did not return after the network healed")
			}
			t.Logf("returned %v after the network healed: %v %v", time.Since(healed).Round(time.Millisecond), r.revs, r.err)
			require.NotErrorIs(t, r.err, dialect.ErrOutcomeUnknown, "the database is reachable again: the outcome is looked up")

			other := openSQL(t, db, b.Dialect, "checker")
			recs, err := other.Read(ctx, 0, 10)
			require.NoError(t, err)
			if r.err == nil {
				require.Equal(t, []int64{2}, r.revs)
				require.Len(t, recs, 2)
				require.Equal(t, "through the hole", string(recs[1].Payload))
			} else {
				require.Len(t, recs, 1, "failed: nothing written")
			}
			revs, err := j.Append(ctx, journal.Entry{Producer: "p", Payload: []byte("after")})
			require.NoError(t, err)
			require.Equal(t, []int64{int64(len(recs)) + 1}, revs, "no hole")
		})
	}
}

// TestSQLResolveSettles: when the lookup of an open outcome finds the
// batch on a dialect whose commits become visible before they are durable
// (MySQL, Oracle), it commits a real change of its own before it reports
// the batch committed, so that its log flush covers the batch; the counter
// ends as it was, also when that transaction fails half way. On PostgreSQL
// and SQL Server a visible commit is durable and the lookup writes nothing.
func TestSQLResolveSettles(t *testing.T) {
	for _, b := range dbtest.Backends {
		t.Run(b.Name, func(t *testing.T) {
			t.Parallel()
			ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
			defer cancel()
			db := dbtest.Open(t, b)
			pool := db.NewPool(t)
			j := openSQLConfig(t, db, b.Dialect, journal.SQLConfig{NodeID: "s"})
			settles := b.Name == "mysql" || b.Name == "oracle"
			counter := `SELECT revision FROM ` + db.Prefix + `global_revision WHERE id = 1`
			head := func() int64 {
				var rev int64
				require.NoError(t, pool.QueryRowContext(ctx, counter).Scan(&rev))
				return rev
			}
			_, err := j.Append(ctx, journal.Entry{Producer: "p", Payload: []byte("before")})
			require.NoError(t, err)
			revs, err := j.Append(ctx, journal.Entry{Producer: "p", Payload: []byte("a")}, journal.Entry{Producer: "p", Payload: []byte("b")})
			require.NoError(t, err)
			arg := map[string]string{"postgres": "$1", "mysql": "?", "sqlserver": "@p1", "oracle": ":1"}[b.Name]
			var batch int64
			require.NoError(t, pool.QueryRowContext(ctx, `SELECT batch_id FROM `+db.Prefix+`journal WHERE revision = `+arg, revs[0]).Scan(&batch))
			before := head()

			// The settling steps, and on MySQL what another session reading
			// uncommitted rows sees of the counter after each: a change
			// that is really there (InnoDB writes no log for an update
			// that changes nothing, and a transaction without log waits
			// for no flush). Oracle has no uncommitted reads.
			var deltas, seen []int64
			j.SetAfterSettle(func(ctx context.Context, delta int64) error {
				deltas = append(deltas, delta)
				if b.Name != "mysql" {
					return nil
				}
				tx, err := pool.BeginTx(ctx, &sql.TxOptions{Isolation: sql.LevelReadUncommitted, ReadOnly: true})
				if err != nil {
					return err
				}
				defer tx.Rollback()
				var rev int64
				err = tx.QueryRowContext(ctx, counter).Scan(&rev)
				seen = append(seen, rev)
				return err
			})
			first, found, err := j.LookupBatch(ctx, batch, 2, revs[0]-1)
			require.NoError(t, err)
			require.True(t, found)
			require.Equal(t, revs[0], first)
			if settles {
				require.Equal(t, []int64{1, -1}, deltas, "the lookup changes the counter and changes it back before its commit")
			} else {
				require.Empty(t, deltas, "the lookup writes nothing")
			}
			if b.Name == "mysql" {
				require.Equal(t, []int64{before + 1, before}, seen, "each change is really made")
			}
			require.Equal(t, before, head(), "the counter is as it was")

			// A batch that is not there: nothing to settle.
			deltas = nil
			_, found, err = j.LookupBatch(ctx, batch+1<<40, 1, revs[0]-1)
			require.NoError(t, err)
			require.False(t, found)
			require.Empty(t, deltas)

			if settles {
				// The settling transaction fails after its first change:
				// the lookup fails (the resolver retries it) and the
				// change is rolled back.
				j.SetAfterSettle(func(_ context.Context, delta int64) error {
					if delta > 0 {
						return fmt.Errorf("refused")
					}
					return nil
				})
				_, _, err = j.LookupBatch(ctx, batch, 2, revs[0]-1)
				require.ErrorContains(t, err, "refused")
				require.Equal(t, before, head())
			}
			j.SetAfterSettle(nil)
			next, err := j.Append(ctx, journal.Entry{Producer: "p", Payload: []byte("after")})
			require.NoError(t, err)
			require.Equal(t, []int64{before + 1}, next, "the next record follows the head: no revision was used or lost")
		})
	}
}
