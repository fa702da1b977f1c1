package sqlserver

import (
	"context"
	"database/sql"
	"database/sql/driver"
	"fmt"
	"slices"
	"strconv"
	"strings"
	"testing"

	mssql "github.com/microsoft/go-mssqldb"
	"github.com/stretchr/testify/require"

	"github.com/tandem-go/tandem/dialect"
	"github.com/tandem-go/tandem/internal/fakesql"
	"github.com/tandem-go/tandem/internal/sqldialect"
)

// txDB is fakesql.TxDB: transactions reach f as statements.
func txDB(t *testing.T, f *fakesql.DB) *sql.DB { return fakesql.TxDB(t, f) }

// server is a fake SQL Server that knows just enough of the schema to
// answer Migrate: whether the tables exist, the last migration committed
// (1 when meta has no migration column), the status sp_getapplock returns,
// and errors to inject by statement prefix.
type server struct {
	tables             bool
	migration, pending int64
	compat             int64
	lockStatus         int64
	fail               map[string]error
}

const (
	readSchemaSQL   = `SELECT schema_version, migration FROM tandem_meta WHERE id = 1`
	readSchemaV1SQL = `SELECT schema_version FROM tandem_meta WHERE id = 1`
)

func (s *server) handle(q string, _ []driver.NamedValue) fakesql.Reply {
	for prefix, err := range s.fail {
		if strings.HasPrefix(q, prefix) {
			return fakesql.Reply{Err: err}
		}
	}
	noMeta := mssql.Error{Number: 208, Message: "Invalid object name 'tandem_meta'."}
	switch {
	case q == readSchemaSQL:
		switch {
		case !s.tables:
			return fakesql.Reply{Err: noMeta}
		case s.migration < 2:
			return fakesql.Reply{Err: mssql.Error{Number: 207, Message: "Invalid column name 'migration'."}}
		}
		return fakesql.Reply{Rows: [][]driver.Value{{s.compat, s.migration}}}
	case q == readSchemaV1SQL:
		if !s.tables {
			return fakesql.Reply{Err: noMeta}
		}
		return fakesql.Reply{Rows: [][]driver.Value{{s.compat}}}
	case q == lockSchemaSQL:
		return fakesql.Reply{Rows: [][]driver.Value{{s.lockStatus}}}
	case strings.HasPrefix(q, "IF OBJECT_ID(N'tandem_locks'"):
		s.tables, s.migration = true, 1
	case strings.HasPrefix(q, "UPDATE tandem_meta SET migration = "):
		s.pending, _ = strconv.ParseInt(strings.Fields(q)[5], 10, 64)
	case q == "COMMIT":
		s.migration = max(s.migration, s.pending)
		s.pending = 0
	case q == "ROLLBACK":
		s.pending = 0
	}
	return fakesql.Reply{}
}

func newServer(t *testing.T, s *server) (*fakesql.DB, *sql.DB) {
	if s.compat == 0 {
		s.compat = 1
	}
	if s.tables && s.migration == 0 {
		s.migration = 1
	}
	f, _ := fakesql.New(t, s.handle)
	return f, txDB(t, f)
}

// v1Statements are the statements of migration 1, in order.
func v1Statements(tb sqldialect.Tables) []string {
	var out []string
	for _, x := range tables(tb) {
		out = append(out, x.ddl)
	}
	return append(out, seedCounter(tb), seedMeta(tb))
}

// inTxStatements are the statements inTx sends for batches, in order.
func inTxStatements(batches []string) []string {
	out := []string{"SET LOCK_TIMEOUT 10000", "BEGIN TRANSACTION"}
	out = append(out, batches...)
	return append(out, "COMMIT", "SET LOCK_TIMEOUT -1")
}

// migrationBatches are the batches of migrations 2 to 6, by version.
func migrationBatches(tb sqldialect.Tables) map[int][]string {
	return map[int][]string{2: schemaV2(tb), 3: schemaV3(tb), 4: schemaV4(tb), 5: schemaV5(tb), 6: schemaV6(tb)}
}

// upgradeFrom are the statements of the migrations after version from, up
// to 6, in order, each in its transaction.
func upgradeFrom(tb sqldialect.Tables, from int) []string {
	var out []string
	batches := migrationBatches(tb)
	for v := from + 1; v <= 6; v++ {
		out = append(out, inTxStatements(batches[v])...)
	}
	return out
}

// upgrade are the statements of migrations 2 to 6, in order.
func upgrade(tb sqldialect.Tables) []string { return upgradeFrom(tb, 1) }

func TestMigrations(t *testing.T) {
	tb := tablesFor(t, "tandem_")
	ms := Dialect.Migrations(tb)
	require.Len(t, ms, dialect.SchemaVersion)
	for i, m := range ms {
		require.Equal(t, i+1, m.Version, "versions 1 to SchemaVersion, in order")
		require.Equal(t, 1, m.Compat, "additive: releases of schema version 1 keep running")
		require.NotNil(t, m.Apply)
	}
}

func TestMigrationsGolden(t *testing.T) {
	tb := tablesFor(t, "tandem_")
	require.Equal(t, []string{
		"IF COL_LENGTH(N'tandem_journal', N'instance') IS NULL ALTER TABLE tandem_journal ADD instance NVARCHAR(64) COLLATE Latin1_General_BIN2 NULL",
		"IF COL_LENGTH(N'tandem_journal', N'batch_id') IS NULL ALTER TABLE tandem_journal ADD batch_id BIGINT NULL",
		"IF COL_LENGTH(N'tandem_meta', N'migration') IS NULL ALTER TABLE tandem_meta ADD migration INT NULL",
		"UPDATE tandem_meta SET migration = 2 WHERE id = 1 AND COALESCE(migration, 1) < 2",
	}, schemaV2(tb))
	require.Equal(t, []string{
		"IF COL_LENGTH(N'tandem_local_revisions', N'evicted_at') IS NULL ALTER TABLE tandem_local_revisions ADD evicted_at DATETIME2(6) NULL",
		"UPDATE tandem_meta SET migration = 3 WHERE id = 1 AND COALESCE(migration, 1) < 3",
	}, schemaV3(tb))
	require.Equal(t, []string{
		"IF OBJECT_ID(N'tandem_pending', N'U') IS NULL\nCREATE TABLE tandem_pending (\n" +
			"\thandle     BIGINT NOT NULL,\n" +
			"\tseq        INT NOT NULL,\n" +
			"\tnode_id    NVARCHAR(64) COLLATE Latin1_General_BIN2 NOT NULL,\n" +
			"\tinstance   NVARCHAR(64) COLLATE Latin1_General_BIN2 NOT NULL,\n" +
			"\tproducer   NVARCHAR(128) NOT NULL,\n" +
			"\tpayload    VARBINARY(MAX) NOT NULL,\n" +
			"\tcreated_at DATETIME2(6) NOT NULL,\n" +
			"\tPRIMARY KEY (handle, seq))",
		"ALTER TABLE tandem_pending SET (LOCK_ESCALATION = DISABLE)",
		"UPDATE tandem_meta SET migration = 4 WHERE id = 1 AND COALESCE(migration, 1) < 4",
	}, schemaV4(tb), "a new table, its locks kept at row level, then recorded")
	for _, prefix := range []string{"tandem_", "t0123456789ab_", "x"} {
		tb := tablesFor(t, prefix)
		for v, batches := range migrationBatches(tb) {
			for i, s := range batches {
				checkStatement(t, "schema", s, prefix, 0)
				// Each batch names only what exists when it is compiled.
				require.LessOrEqual(t, strings.Count(s, "ALTER TABLE"), 1, "batch %d", i)
			}
			require.Equal(t, recordMigration(tb, v), batches[len(batches)-1], "a migration records itself last")
		}
	}
}

func TestMigrate(t *testing.T) {
	ctx := context.Background()
	tb := tablesFor(t, "tandem_")
	unlock := func(f *fakesql.DB) []any {
		for _, c := range f.Calls() {
			if c.Query == unlockSchemaSQL {
				return []any{c.Args[0].Value}
			}
		}
		return nil
	}

	t.Run("new database", func(t *testing.T) {
		s := &server{}
		f, db := newServer(t, s)
		require.NoError(t, sqldialect.Migrate(ctx, db, Dialect, tb, "e1"))
		want := []string{readSchemaSQL, readSchemaV1SQL, lockSchemaSQL, readSchemaSQL, readSchemaV1SQL}
		want = append(want, v1Statements(tb)...)
		want = append(want, upgrade(tb)...)
		want = append(want, readSchemaSQL, unlockSchemaSQL)
		require.Equal(t, want, f.Queries(), "every migration under the lock; each recorded")
		calls := f.Calls()
		seed := slices.Index(f.Queries(), seedMeta(tb))
		require.Equal(t, []driver.NamedValue{{Ordinal: 1, Value: "e1"}}, calls[seed].Args, "the epoch, and only it")
		require.Equal(t, []any{"tandem schema tandem_"}, unlock(f))
		require.EqualValues(t, dialect.SchemaVersion, s.migration)
	})
	t.Run("first release's database", func(t *testing.T) {
		f, db := newServer(t, &server{tables: true})
		require.NoError(t, sqldialect.Migrate(ctx, db, Dialect, tb, "e1"))
		want := []string{readSchemaSQL, readSchemaV1SQL, lockSchemaSQL, readSchemaSQL, readSchemaV1SQL}
		want = append(want, upgrade(tb)...)
		want = append(want, readSchemaSQL, unlockSchemaSQL)
		require.Equal(t, want, f.Queries(), "upgraded in place: migrations 2 to 6")
	})
	t.Run("another node migrated while this one waited", func(t *testing.T) {
		s := &server{tables: true, compat: 1}
		f, _ := fakesql.New(t, func(q string, args []driver.NamedValue) fakesql.Reply {
			if q == lockSchemaSQL {
				// Granted after waiting for the other node, which
				// migrated meanwhile.
				s.migration = dialect.SchemaVersion
				return fakesql.Reply{Rows: [][]driver.Value{{int64(1)}}}
			}
			return s.handle(q, args)
		})
		db := txDB(t, f)
		require.NoError(t, sqldialect.Migrate(ctx, db, Dialect, tb, "e1"))
		require.Equal(t, []string{readSchemaSQL, readSchemaV1SQL, lockSchemaSQL, readSchemaSQL, readSchemaSQL, unlockSchemaSQL}, f.Queries(),
			"nothing to apply")
	})
	t.Run("current", func(t *testing.T) {
		f, db := newServer(t, &server{tables: true, migration: dialect.SchemaVersion})
		require.NoError(t, sqldialect.Migrate(ctx, db, Dialect, tb, "e1"))
		require.Equal(t, []string{readSchemaSQL}, f.Queries(), "idempotent: only checked, no lock")
		require.NoError(t, sqldialect.Migrate(ctx, db, Dialect, tb, "e2"))
		require.Equal(t, []string{readSchemaSQL, readSchemaSQL}, f.Queries())
	})
	t.Run("too new", func(t *testing.T) {
		f, db := newServer(t, &server{tables: true, migration: dialect.SchemaVersion + 1, compat: dialect.SchemaVersion + 1})
		require.ErrorIs(t, sqldialect.Migrate(ctx, db, Dialect, tb, "e1"), dialect.ErrSchemaTooNew)
		require.Equal(t, []string{readSchemaSQL}, f.Queries())
	})
	t.Run("a newer release migrated additively", func(t *testing.T) {
		f, db := newServer(t, &server{tables: true, migration: dialect.SchemaVersion + 1})
		require.NoError(t, sqldialect.Migrate(ctx, db, Dialect, tb, "e1"))
		require.Equal(t, []string{readSchemaSQL}, f.Queries())
	})
	for from, which := range map[int]string{2: "3, 4, 5 and 6", 3: "4, 5 and 6", 4: "5 and 6", 5: "6"} {
		t.Run(fmt.Sprintf("version %d", from), func(t *testing.T) {
			s := &server{tables: true, migration: int64(from)}
			f, db := newServer(t, s)
			require.NoError(t, sqldialect.Migrate(ctx, db, Dialect, tb, "e1"))
			want := append([]string{readSchemaSQL, lockSchemaSQL, readSchemaSQL}, upgradeFrom(tb, from)...)
			require.Equal(t, append(want, readSchemaSQL, unlockSchemaSQL), f.Queries(), "only migrations %s", which)
			require.EqualValues(t, 6, s.migration)
		})
	}
	t.Run("lock not granted", func(t *testing.T) {
		f, db := newServer(t, &server{lockStatus: -1})
		err := sqldialect.Migrate(ctx, db, Dialect, tb, "e1")
		require.ErrorIs(t, err, dialect.ErrLockTimeout)
		require.Equal(t, []string{readSchemaSQL, readSchemaV1SQL, lockSchemaSQL}, f.Queries(), "nothing is created without the lock")
	})
	t.Run("migration 2 fails", func(t *testing.T) {
		// An old node's long query holds the journal: the ALTER's lock
		// wait ends after migrationLockTimeout.
		s := &server{tables: true, fail: map[string]error{
			"IF COL_LENGTH(N'tandem_journal', N'batch_id')": mssql.Error{Number: 1222, Message: "Lock request time out period exceeded."},
		}}
		f, db := newServer(t, s)
		err := sqldialect.Migrate(ctx, db, Dialect, tb, "e1")
		require.ErrorIs(t, err, dialect.ErrLockTimeout)
		require.ErrorContains(t, err, "migrate schema to version 2")
		require.Equal(t, []string{readSchemaSQL, readSchemaV1SQL, lockSchemaSQL, readSchemaSQL, readSchemaV1SQL,
			"SET LOCK_TIMEOUT 10000", "BEGIN TRANSACTION", schemaV2(tb)[0], schemaV2(tb)[1],
			"ROLLBACK", "SET LOCK_TIMEOUT -1", unlockSchemaSQL}, f.Queries(),
			"rolled back, the session's lock timeout reset, the lock released")
		require.EqualValues(t, 1, s.migration)
	})
	t.Run("races are success", func(t *testing.T) {
		// Should two nodes create tables at once (LockSchema makes that
		// rare), "object exists" and the seeds' unique violations are
		// success: the first epoch wins.
		f, db := newServer(t, &server{fail: map[string]error{
			"IF OBJECT_ID(N'tandem_meta'":        mssql.Error{Number: 2714, Message: "There is already an object named 'tandem_meta' in the database."},
			"INSERT INTO tandem_global_revision": mssql.Error{Number: 2627, Message: "Violation of PRIMARY KEY constraint"},
			"INSERT INTO tandem_meta":            mssql.Error{Number: 2601, Message: "Cannot insert duplicate key row"},
		}})
		conn, err := db.Conn(ctx)
		require.NoError(t, err)
		defer conn.Close()
		require.NoError(t, Dialect.Migrations(tb)[0].Apply(ctx, conn, "e1"))
		require.Equal(t, v1Statements(tb), f.Queries())
	})
	t.Run("denied", func(t *testing.T) {
		_, db := newServer(t, &server{fail: map[string]error{
			"IF OBJECT_ID(": mssql.Error{Number: 262, Message: "CREATE TABLE permission denied"},
		}})
		err := sqldialect.Migrate(ctx, db, Dialect, tb, "e1")
		require.ErrorContains(t, err, "create table tandem_journal")
		var msErr mssql.Error
		require.ErrorAs(t, err, &msErr)
		require.EqualValues(t, 262, msErr.Number)
	})
}

func TestLockSchemaSQL(t *testing.T) {
	checkStatement(t, "lockSchemaSQL", lockSchemaSQL, "", 1)
	checkStatement(t, "unlockSchemaSQL", unlockSchemaSQL, "", 1)
	require.Equal(t, `SET NOCOUNT ON;
DECLARE @r INT;
EXEC @r = sp_getapplock @Resource = @p1, @LockMode = 'Exclusive', @LockOwner = 'Session', @LockTimeout = 60000;
SELECT @r;`, lockSchemaSQL)
	require.Equal(t, `EXEC sp_releaseapplock @Resource = @p1, @LockOwner = 'Session'`, unlockSchemaSQL)
	require.Equal(t, "tandem schema x", schemaLockName(tablesFor(t, "x")))
}

func TestLockSchema(t *testing.T) {
	ctx := context.Background()
	tb := tablesFor(t, "tandem_")
	lock := func(t *testing.T, handle fakesql.Handler) (*fakesql.DB, *sql.Conn, func(), error) {
		f, db := fakesql.New(t, handle)
		conn, err := db.Conn(ctx)
		require.NoError(t, err)
		t.Cleanup(func() { conn.Close() })
		unlock, err := Dialect.LockSchema(ctx, conn, tb)
		return f, conn, unlock, err
	}
	status := func(s int64) fakesql.Handler {
		return func(q string, _ []driver.NamedValue) fakesql.Reply {
			if q == lockSchemaSQL {
				return fakesql.Reply{Rows: [][]driver.Value{{s}}}
			}
			return fakesql.Reply{}
		}
	}

	for _, granted := range []int64{0, 1} { // at once, after waiting
		f, conn, unlock, err := lock(t, status(granted))
		require.NoError(t, err, "status %d", granted)
		require.Equal(t, []string{lockSchemaSQL}, f.Queries())
		require.Equal(t, "tandem schema tandem_", f.Calls()[0].Args[0].Value, "the resource name is a parameter")
		unlock()
		require.Equal(t, []string{lockSchemaSQL, unlockSchemaSQL}, f.Queries())
		require.Equal(t, "tandem schema tandem_", f.Calls()[1].Args[0].Value)
		require.NoError(t, conn.PingContext(ctx), "the connection is kept")
	}
	for s, what := range map[int64]string{-1: "timed out", -2: "cancelled", -3: "deadlock victim", -999: "other call error"} {
		f, conn, unlock, err := lock(t, status(s))
		require.ErrorIs(t, err, dialect.ErrLockTimeout, "status %d", s)
		require.ErrorContains(t, err, what)
		require.ErrorContains(t, err, "returned "+strconv.FormatInt(s, 10))
		require.Nil(t, unlock)
		require.Equal(t, []string{lockSchemaSQL}, f.Queries(), "nothing to release")
		require.NoError(t, conn.PingContext(ctx), "the connection holds no lock and is kept")
	}

	t.Run("call failed", func(t *testing.T) {
		// The lock may have been granted as the call failed: the session
		// is ended, which releases it.
		for _, cause := range []error{context.Canceled, mssql.Error{Number: 1205}} {
			_, conn, unlock, err := lock(t, func(string, []driver.NamedValue) fakesql.Reply {
				return fakesql.Reply{Err: cause}
			})
			requireReachable(t, err, cause)
			require.Nil(t, unlock)
			require.ErrorIs(t, conn.PingContext(ctx), sql.ErrConnDone, "the connection is discarded")
		}
	})
	t.Run("release failed", func(t *testing.T) {
		f, conn, unlock, err := lock(t, func(q string, _ []driver.NamedValue) fakesql.Reply {
			switch q {
			case lockSchemaSQL:
				return fakesql.Reply{Rows: [][]driver.Value{{int64(0)}}}
			case unlockSchemaSQL:
				return fakesql.Reply{Err: mssql.Error{Number: 1223, Message: "Cannot release the application lock"}}
			}
			return fakesql.Reply{}
		})
		require.NoError(t, err)
		unlock()
		require.Equal(t, []string{lockSchemaSQL, unlockSchemaSQL}, f.Queries())
		require.ErrorIs(t, conn.PingContext(ctx), sql.ErrConnDone, "ending the session releases the lock")
	})
}

// fixtureV1 returns the first release's statements (testdata/schema_v1.sql)
// for the prefix, as the journal's migration tests run them.
func fixtureV1(t *testing.T, prefix string) []string {
	t.Helper()
	out, err := sqldialect.ReadFixture("testdata/schema_v1.sql", prefix)
	require.NoError(t, err)
	return out
}

// TestMigration1IsTheFirstRelease pins migration 1 to the first release's
// schema: a database it made and one migration 1 makes must be the same,
// so that later migrations start from one known state.
func TestMigration1IsTheFirstRelease(t *testing.T) {
	const epoch = "0123456789abcdef0123456789abcdef"
	for _, prefix := range []string{"tandem_", "x"} {
		tb := tablesFor(t, prefix)
		f, db := fakesql.New(t, nil)
		conn, err := db.Conn(context.Background())
		require.NoError(t, err)
		require.NoError(t, Dialect.Migrations(tb)[0].Apply(context.Background(), conn, epoch))
		require.NoError(t, conn.Close())
		var got []string
		for _, c := range f.Calls() {
			q := c.Query
			if len(c.Args) > 0 {
				require.Equal(t, []driver.NamedValue{{Ordinal: 1, Value: epoch}}, c.Args, "only the epoch is bound")
				q = strings.Replace(q, "@p1", fmt.Sprintf("N'%s'", epoch), 1)
			}
			got = append(got, q)
		}
		require.Equal(t, fixtureV1(t, prefix), got)
	}
}
