package journal_test

import (
	"context"
	"database/sql"
	"encoding/base64"
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/tandem-go/tandem/dialect"
	"github.com/tandem-go/tandem/internal/dbtest"
	"github.com/tandem-go/tandem/internal/sqldialect"
	"github.com/tandem-go/tandem/journal"
)

// v1Release is what the first release ran against a database, kept as
// fixtures: its DDL (dialect/*/testdata/schema_v1.sql) and its append
// statement.
type v1Release struct {
	db *dbtest.DB
}

// create runs the first release's DDL.
func (r v1Release) create(t *testing.T) {
	stmts, err := sqldialect.ReadFixture("../dialect/"+r.db.Name+"/testdata/schema_v1.sql", r.db.Prefix)
	require.NoError(t, err)
	for _, stmt := range stmts {
		_, err := r.db.DB.ExecContext(context.Background(), stmt)
		require.NoError(t, err)
	}
}

// check is the first release's schema check: it refused a database whose
// meta.schema_version was above 1, and on MySQL needed its procedure.
func (r v1Release) check(ctx context.Context) error {
	var v int
	if err := r.db.DB.QueryRowContext(ctx, `SELECT schema_version FROM `+r.db.Prefix+`meta WHERE id = 1`).Scan(&v); err != nil {
		return err
	}
	if v > 1 {
		return fmt.Errorf("the first release refuses schema version %d", v)
	}
	if r.db.Name == "mysql" {
		var n int
		if err := r.db.DB.QueryRowContext(ctx, `SELECT COUNT(*) FROM information_schema.routines
WHERE routine_schema = DATABASE() AND routine_name = ?`, r.db.Prefix+"append_v1").Scan(&n); err != nil || n != 1 {
			return fmt.Errorf("append_v1 is gone (%d, %v)", n, err)
		}
	}
	return nil
}

// append appends one record the way the first release did.
func (r v1Release) append(ctx context.Context, node, payload string) (int64, error) {
	var first int64
	var err error
	p := r.db.Prefix
	switch r.db.Name {
	case "postgres":
		err = r.db.DB.QueryRowContext(ctx, `WITH c AS (
	UPDATE `+p+`global_revision SET revision = revision + $1 WHERE id = 1 RETURNING revision
), ins AS (
	INSERT INTO `+p+`journal (revision, node_id, producer, payload, created_at)
	SELECT c.revision - $1 + e.ord, $2, e.producer, e.payload, now()
	FROM c, unnest($3::text[], $4::bytea[]) WITH ORDINALITY AS e(producer, payload, ord)
)
SELECT revision - $1 + 1 FROM c`, 1, node, []string{"old"}, [][]byte{[]byte(payload)}).Scan(&first)
	case "mysql":
		entries := `[["old","` + base64.StdEncoding.EncodeToString([]byte(payload)) + `"]]`
		err = r.db.DB.QueryRowContext(ctx, `CALL `+p+`append_v1(?, ?, ?, ?)`, 1, node, -1, entries).Scan(&first)
	}
	return first, err
}

// oldNode runs a node of an older release until stop is closed: step(i)
// writes one record and returns its payload. The channel gets nil after
// stop, or the first error; the payloads of the steps that succeeded are
// in the slice once it has.
func oldNode(stop <-chan struct{}, step func(i int) (string, error)) (<-chan error, *[]string) {
	done := make(chan error, 1)
	acked := &[]string{}
	go func() {
		for i := 0; ; i++ {
			select {
			case <-stop:
				done <- nil
				return
			default:
			}
			payload, err := step(i)
			if err != nil {
				done <- err
				return
			}
			*acked = append(*acked, payload)
		}
	}()
	return done, acked
}

// openAtOnce opens n journals of the current release on db at the same
// time, each on its own pool (nodes new0, new1, ...); they migrate the
// schema together. They are closed when t ends.
func openAtOnce(t *testing.T, ctx context.Context, db *dbtest.DB, d dialect.Dialect, n int) []*journal.SQL {
	t.Helper()
	js := make([]*journal.SQL, n)
	errs := make([]error, n)
	var wg sync.WaitGroup
	for i := range n {
		wg.Go(func() {
			js[i], errs[i] = journal.OpenSQL(ctx, db.NewPool(t), d, journal.SQLConfig{NodeID: fmt.Sprintf("new%d", i), Prefix: db.Prefix})
		})
	}
	wg.Wait()
	for i := range n {
		require.NoError(t, errs[i], "node %d", i)
		t.Cleanup(func() { js[i].Close(context.Background()) })
	}
	return js
}

// TestSQLMigrateFromV1 upgrades a database made by the first release
// (schema version 1) while a node of that release keeps appending, with
// many new nodes opening it at once; the old node keeps running against
// the migrated schema, and the new nodes read its records.
func TestSQLMigrateFromV1(t *testing.T) {
	for _, b := range dbtest.Backends[:2] { // PostgreSQL and MySQL
		t.Run(b.Name, func(t *testing.T) {
			t.Parallel()
			ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
			defer cancel()
			db := dbtest.Open(t, b)
			old := v1Release{db}
			old.create(t)
			s, err := sqldialect.ReadSchema(ctx, db.DB, mustTables(t, db.Prefix))
			require.NoError(t, err)
			require.Equal(t, sqldialect.SchemaState{Version: 1, Compat: 1}, s)
			for i := range 3 {
				_, err := old.append(ctx, "old", fmt.Sprintf("before-%d", i))
				require.NoError(t, err)
			}

			// The old node appends throughout the upgrade.
			stop := make(chan struct{})
			oldDone, oldAcked := oldNode(stop, func(i int) (string, error) {
				payload := fmt.Sprintf("during-%d", i)
				if err := old.check(ctx); err != nil {
					return payload, err
				}
				if _, err := old.append(ctx, "old", payload); err != nil {
					return payload, fmt.Errorf("old release append: %w", err)
				}
				return payload, nil
			})

			js := openAtOnce(t, ctx, db, b.Dialect, 8)
			s, err = sqldialect.ReadSchema(ctx, db.DB, mustTables(t, db.Prefix))
			require.NoError(t, err)
			require.Equal(t, sqldialect.SchemaState{Version: dialect.SchemaVersion, Compat: 1}, s, "additive: the first release can still run")
			epoch, err := js[0].Epoch(ctx)
			require.NoError(t, err)
			require.Equal(t, "0123456789abcdef0123456789abcdef", epoch, "the journal's epoch survives the upgrade")

			var newAcked []int64
			for i, j := range js {
				revs, err := j.Append(ctx, journal.Entry{Producer: "new", Payload: []byte(fmt.Sprintf("new-%d", i))})
				require.NoError(t, err)
				newAcked = append(newAcked, revs[0])
			}
			time.Sleep(50 * time.Millisecond) // a few more old appends after the new ones
			close(stop)
			require.NoError(t, <-oldDone)
			require.NoError(t, old.check(ctx), "the first release still accepts the schema")
			require.NotEmpty(t, *oldAcked)
			t.Logf("the first release appended %d records during the upgrade", len(*oldAcked))

			recs, err := js[0].Read(ctx, 0, 100000)
			require.NoError(t, err)
			head, err := js[0].Head(ctx)
			require.NoError(t, err)
			require.Len(t, recs, int(head), "dense")
			seen := map[string]journal.Record{}
			for _, r := range recs {
				seen[string(r.Payload)] = r
				if r.NodeID == "old" {
					require.Empty(t, r.Instance, "the first release stores no instance")
				} else {
					require.NotEmpty(t, r.Instance)
				}
			}
			for _, p := range append([]string{"before-0", "before-1", "before-2"}, *oldAcked...) {
				require.Contains(t, seen, p)
			}
			for i, rev := range newAcked {
				require.Equal(t, rev, seen[fmt.Sprintf("new-%d", i)].Revision)
			}
		})
	}
}

// TestSQLSchemaTooNew: a database whose compatibility version is newer
// than this release knows is refused with a clear error; one migrated
// further by a newer release, but additively, is accepted.
func TestSQLSchemaTooNew(t *testing.T) {
	for _, b := range dbtest.Backends[:2] { // PostgreSQL and MySQL
		t.Run(b.Name, func(t *testing.T) {
			t.Parallel()
			ctx := context.Background()
			db := dbtest.Open(t, b)
			j := openSQL(t, db, b.Dialect, "a")
			_, err := j.Append(ctx, journal.Entry{Producer: "p", Payload: []byte("x")})
			require.NoError(t, err)
			meta := db.Prefix + "meta"

			_, err = db.DB.ExecContext(ctx, `UPDATE `+meta+` SET schema_version = 1, migration = 9`)
			require.NoError(t, err)
			j2, err := journal.OpenSQL(ctx, db.NewPool(t), b.Dialect, journal.SQLConfig{NodeID: "b", Prefix: db.Prefix})
			require.NoError(t, err, "a newer additive schema is fine")
			require.NoError(t, j2.Close(ctx))

			_, err = db.DB.ExecContext(ctx, `UPDATE `+meta+` SET schema_version = 7, migration = 9`)
			require.NoError(t, err)
			_, err = journal.OpenSQL(ctx, db.NewPool(t), b.Dialect, journal.SQLConfig{NodeID: "c", Prefix: db.Prefix})
			require.ErrorIs(t, err, dialect.ErrSchemaTooNew)
			require.ErrorContains(t, err, fmt.Sprintf("needs a release that knows version 7 or newer; this release knows %d", dialect.SchemaVersion))
		})
	}
}

func mustTables(t *testing.T, prefix string) sqldialect.Tables {
	tb, err := sqldialect.NewTables("Prefix", prefix)
	require.NoError(t, err)
	return tb
}

// v5Release is a node of a release that knows schema version 5: on MySQL
// it calls append_v2 and relay_v1, which version 6 keeps beside their
// successors; PostgreSQL's statements did not change.
type v5Release struct {
	db    *dbtest.DB
	pool  *sql.DB
	d     dialect.Dialect
	t     sqldialect.Tables
	batch int64
}

// create brings a new database to schema version 5 with the migrations
// that release ran.
func (r *v5Release) create(t *testing.T) {
	ctx := context.Background()
	conn, err := r.pool.Conn(ctx)
	require.NoError(t, err)
	defer conn.Close()
	for _, m := range r.d.Migrations(r.t)[:5] {
		require.NoError(t, m.Apply(ctx, conn, "5555555555555555aaaaaaaaaaaaaaaa"), "migration %d", m.Version)
	}
}

// append appends one record as that release did.
func (r *v5Release) append(ctx context.Context, payload string) error {
	r.batch++
	if r.db.Name == "mysql" {
		entries := `[["old","` + base64.StdEncoding.EncodeToString([]byte(payload)) + `"]]`
		var first int64
		return r.pool.QueryRowContext(ctx, `CALL `+r.t.Prefix+`append_v2(?, ?, ?, ?, ?, ?)`, 1, "old5", "i5", r.batch, -1, entries).Scan(&first)
	}
	conn, err := r.pool.Conn(ctx)
	if err != nil {
		return err
	}
	defer conn.Close()
	_, err = r.d.Append(ctx, conn, sqldialect.AppendRequest{Tables: r.t, NodeID: "old5", Instance: "i5", BatchID: r.batch,
		Entries: []sqldialect.Entry{{Producer: "old", Payload: []byte(payload)}}, ExpectHead: -1, LockTimeout: 5 * time.Second})
	return err
}

// publish writes payload in a committed transaction and relays the
// pending table as that release did.
func (r *v5Release) publish(ctx context.Context, handle int64, payload string) error {
	tx, err := r.pool.BeginTx(ctx, nil)
	if err != nil {
		return err
	}
	defer tx.Rollback()
	if err := r.d.InsertPending(ctx, tx, sqldialect.PendingRequest{Tables: r.t, Handle: handle, NodeID: "old5", Instance: "i5",
		Entries: []sqldialect.Entry{{Producer: "old", Payload: []byte(payload)}}}); err != nil {
		return err
	}
	if err := tx.Commit(); err != nil {
		return err
	}
	conn, err := r.pool.Conn(ctx)
	if err != nil {
		return err
	}
	defer conn.Close()
	if r.db.Name == "mysql" {
		var n int64
		return conn.QueryRowContext(ctx, `CALL `+r.t.Prefix+`relay_v1(?)`, 32).Scan(&n)
	}
	_, err = r.d.Relay(ctx, conn, r.t, 32, 5*time.Second)
	return err
}

// TestSQLMigrateFromV5 upgrades a database of schema version 5 to the
// current one while a node of that release keeps appending and relaying
// with its own statements (MySQL: append_v2 and relay_v1), and new nodes
// append and publish in transactions beside it: every record exactly
// once, dense.
func TestSQLMigrateFromV5(t *testing.T) {
	for _, b := range dbtest.Backends[:2] { // PostgreSQL and MySQL
		t.Run(b.Name, func(t *testing.T) {
			t.Parallel()
			ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
			defer cancel()
			db := dbtest.Open(t, b)
			pool := db.NewPool(t)
			old := &v5Release{db: db, pool: pool, d: b.Dialect, t: mustTables(t, db.Prefix)}
			old.create(t)
			s, err := sqldialect.ReadSchema(ctx, pool, old.t)
			require.NoError(t, err)
			require.Equal(t, sqldialect.SchemaState{Version: 5, Compat: 1}, s)

			stop := make(chan struct{})
			oldDone, oldAcked := oldNode(stop, func(i int) (string, error) {
				payload := fmt.Sprintf("old-%d", i)
				var err error
				if i%2 == 0 {
					err = old.append(ctx, payload)
				} else {
					err = old.publish(ctx, int64(1_000_000+i), payload)
				}
				if err != nil {
					err = fmt.Errorf("version 5 release, %s: %w", payload, err)
				}
				return payload, err
			})

			const n = 4
			js := openAtOnce(t, ctx, db, b.Dialect, n)
			var wg sync.WaitGroup
			s, err = sqldialect.ReadSchema(ctx, pool, old.t)
			require.NoError(t, err)
			require.Equal(t, sqldialect.SchemaState{Version: dialect.SchemaVersion, Compat: 1}, s, "additive: version 5 releases can still run")

			const each = 10
			newPayloads := make([]string, n*each)
			newErrs := make([]error, n*each)
			for i, j := range js {
				for k := range each {
					at := i*each + k
					newPayloads[at] = fmt.Sprintf("new-%d-%d", i, k)
					wg.Go(func() {
						payload := []byte(newPayloads[at])
						if k%2 == 0 {
							_, newErrs[at] = j.Append(ctx, journal.Entry{Producer: "new", Payload: payload})
							return
						}
						tx, err := pool.BeginTx(ctx, nil)
						if err == nil {
							var p *journal.Pending
							if p, err = j.AppendTx(ctx, tx, journal.Entry{Producer: "new", Payload: payload}); err == nil {
								if err = tx.Commit(); err == nil {
									_, err = p.Wait(ctx)
								}
							}
						}
						newErrs[at] = err
					})
				}
			}
			wg.Wait()
			for at, err := range newErrs {
				require.NoError(t, err, newPayloads[at])
			}
			time.Sleep(50 * time.Millisecond) // a few more old appends after the new ones
			close(stop)
			require.NoError(t, <-oldDone)
			require.NotEmpty(t, *oldAcked)
			t.Logf("the version 5 release appended and published %d records during the upgrade", len(*oldAcked))
			_, err = js[0].Relay(ctx)
			require.NoError(t, err)

			head, err := js[0].Head(ctx)
			require.NoError(t, err)
			recs, err := js[0].Read(ctx, 0, 100000)
			require.NoError(t, err)
			require.Len(t, recs, int(head), "dense")
			seen := map[string]int{}
			for _, r := range recs {
				seen[string(r.Payload)]++
			}
			for _, p := range append(*oldAcked, newPayloads...) {
				require.Equal(t, 1, seen[p], "%s exactly once", p)
			}
			require.Len(t, seen, len(*oldAcked)+len(newPayloads), "nothing else")
		})
	}
}
