package oracle

import (
	"context"
	"database/sql/driver"
	"fmt"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/tandem-go/tandem/dialect"
	"github.com/tandem-go/tandem/internal/fakesql"
	"github.com/tandem-go/tandem/internal/sqldialect"
)

// server is a fake Oracle that knows just enough of the schema to answer
// Migrate: which tables and columns exist and what the meta row holds. Its
// DDL answers as Oracle's does when the object exists already (ORA-00955,
// ORA-01430), so that two nodes migrating at once can be played against
// one server; fail injects errors by statement prefix.
type server struct {
	mu                      sync.Mutex
	tables, metaRow, seeded bool
	pending                 bool            // the pending table (migration 4)
	blobs                   map[string]bool // the data store's tables (migration 5)
	cols                    map[string]bool // "journal.instance", …
	migration               int64           // 0: NULL
	compat                  int64
	fail                    map[string]error
}

const (
	readSchemaSQL   = `SELECT schema_version, migration FROM tandem_meta WHERE id = 1`
	readSchemaV1SQL = `SELECT schema_version FROM tandem_meta WHERE id = 1`
)

func newServer(s *server) *server {
	if s.compat == 0 {
		s.compat = 1
	}
	if s.cols == nil {
		s.cols = map[string]bool{}
	}
	if s.blobs == nil {
		s.blobs = map[string]bool{}
	}
	if s.tables {
		s.metaRow, s.seeded = true, true
	}
	return s
}

// firstRelease is a database made by the first release: schema version 1.
func firstRelease() *server { return newServer(&server{tables: true}) }

// v2 is a database at schema version 2.
func v2() *server {
	return newServer(&server{tables: true, migration: 2,
		cols: map[string]bool{"journal.instance": true, "journal.batch_id": true, "meta.migration": true}})
}

// v3 is a database at schema version 3.
func v3() *server {
	s := v2()
	s.migration, s.cols["local_revisions.evicted_at"] = 3, true
	return s
}

// v4 is a database at schema version 4.
func v4() *server {
	s := v3()
	s.migration, s.pending = 4, true
	return s
}

// v5 is a database at schema version 5.
func v5() *server {
	s := v4()
	s.migration = 5
	for _, name := range []string{"blobs", "blob_chunks", "blob_uploads"} {
		s.blobs[name] = true
	}
	return s
}

// current is a database at schema version 6 (migration 6 only records
// itself on Oracle).
func current() *server {
	s := v5()
	s.migration = 6
	return s
}

func (s *server) handle(q string, _ []driver.NamedValue) fakesql.Reply {
	s.mu.Lock()
	defer s.mu.Unlock()
	for prefix, err := range s.fail {
		if strings.HasPrefix(q, prefix) {
			return fakesql.Reply{Err: err}
		}
	}
	exists := func(c int) fakesql.Reply { return fakesql.Reply{Err: oraErr(c)} }
	switch {
	case q == readSchemaSQL:
		switch {
		case !s.tables:
			return exists(942)
		case !s.cols["meta.migration"]:
			return exists(904) // invalid identifier
		}
		var m driver.Value
		if s.migration > 0 {
			m = s.migration
		}
		return fakesql.Reply{Rows: [][]driver.Value{{s.compat, m}}}
	case q == readSchemaV1SQL:
		if !s.tables {
			return exists(942)
		}
		return fakesql.Reply{Rows: [][]driver.Value{{s.compat}}}
	case strings.HasPrefix(q, "CREATE TABLE tandem_pending "):
		if s.pending {
			return exists(errNameUsed)
		}
		s.pending = true
	case strings.HasPrefix(q, "CREATE TABLE tandem_blob"):
		name := strings.TrimPrefix(strings.Fields(q)[2], "tandem_") // blobs, blob_chunks, blob_uploads
		if s.blobs[name] {
			return exists(errNameUsed)
		}
		s.blobs[name] = true
	case strings.HasPrefix(q, "CREATE TABLE "):
		if s.tables {
			return exists(errNameUsed)
		}
		if strings.HasPrefix(q, "CREATE TABLE tandem_locks") {
			s.tables = true
		}
	case strings.HasPrefix(q, "INSERT INTO tandem_global_revision"):
		if s.seeded {
			return exists(errUniqueViolation)
		}
		s.seeded = true
	case strings.HasPrefix(q, "INSERT INTO tandem_meta"):
		if s.metaRow {
			return exists(errUniqueViolation)
		}
		s.metaRow = true
	case strings.HasPrefix(q, "ALTER TABLE "):
		f := strings.Fields(q) // ALTER TABLE tandem_x ADD (col type)
		col := strings.TrimPrefix(f[2], "tandem_") + "." + strings.TrimPrefix(f[4], "(")
		if s.cols[col] {
			return exists(errColumnExists)
		}
		s.cols[col] = true
	case strings.HasPrefix(q, "UPDATE tandem_meta SET migration = "):
		v, _ := strconv.ParseInt(strings.Fields(q)[5], 10, 64)
		s.migration = max(s.migration, v)
	}
	return fakesql.Reply{}
}

func v1Statements(tb sqldialect.Tables) []string {
	var out []string
	for _, x := range tables(tb) {
		out = append(out, x.ddl)
	}
	return append(out, seedCounter(tb), seedMeta(tb))
}

// addStatements are the statements addColumns sends, in order.
func addStatements(alters []string, record string) []string {
	out := []string{"ALTER SESSION SET DDL_LOCK_TIMEOUT = 10"}
	out = append(out, alters...)
	return append(out, record, "ALTER SESSION SET DDL_LOCK_TIMEOUT = 0")
}

// v4Statements are the statements of migration 4, in order.
func v4Statements(tb sqldialect.Tables) []string {
	return []string{pendingTable(tb).ddl, recordMigration(tb, 4)}
}

// v5Statements are the statements of migration 5, in order.
func v5Statements(tb sqldialect.Tables) []string {
	var out []string
	for _, x := range blobTables(tb) {
		out = append(out, x.ddl)
	}
	return append(out, recordMigration(tb, 5))
}

// v6Statements are the statements of migration 6: its record alone.
func v6Statements(tb sqldialect.Tables) []string {
	return []string{recordV6(tb)}
}

// upgrade are the statements of migrations 2 to 6, in order.
func upgrade(tb sqldialect.Tables) []string { return upgradeFrom(tb, 1) }

// upgradeFrom are the statements of the migrations after version from, up
// to 6, in order.
func upgradeFrom(tb sqldialect.Tables, from int) []string {
	steps := map[int][]string{
		2: addStatements(schemaV2(tb), recordMigration(tb, 2)),
		3: addStatements(schemaV3(tb), recordMigration(tb, 3)),
		4: v4Statements(tb), 5: v5Statements(tb), 6: v6Statements(tb),
	}
	var out []string
	for v := from + 1; v <= 6; v++ {
		out = append(out, steps[v]...)
	}
	return out
}

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
		"ALTER TABLE tandem_journal ADD (instance VARCHAR2(64))",
		"ALTER TABLE tandem_journal ADD (batch_id NUMBER(19))",
		"ALTER TABLE tandem_meta ADD (migration NUMBER(10))",
	}, schemaV2(tb), "nullable: nodes of schema version 1 insert rows without them")
	require.Equal(t, "UPDATE tandem_meta SET migration = 2 WHERE id = 1 AND NVL(migration, 1) < 2", recordMigration(tb, 2))
	require.Equal(t, []string{"ALTER TABLE tandem_local_revisions ADD (evicted_at TIMESTAMP(6))"}, schemaV3(tb))
	require.Equal(t, "UPDATE tandem_meta SET migration = 3 WHERE id = 1 AND NVL(migration, 1) < 3", recordMigration(tb, 3))
	require.Equal(t, []string{"CREATE TABLE tandem_pending (\n" +
		"\thandle     NUMBER(19) NOT NULL,\n" +
		"\tseq        NUMBER(10) NOT NULL,\n" +
		"\tnode_id    VARCHAR2(64) NOT NULL,\n" +
		"\tinstance   VARCHAR2(64) NOT NULL,\n" +
		"\tproducer   VARCHAR2(128) NOT NULL,\n" +
		"\tpayload    BLOB,\n" +
		"\tcreated_at TIMESTAMP(6) NOT NULL,\n" +
		"\tPRIMARY KEY (handle, seq))",
		"UPDATE tandem_meta SET migration = 4 WHERE id = 1 AND NVL(migration, 1) < 4",
	}, v4Statements(tb), "payload is nullable: Oracle stores an empty RAW as NULL")
	require.Equal(t, "tandem_pending", pendingTable(tb).name)
	require.Equal(t, []string{"UPDATE tandem_meta SET migration = 6 WHERE id = 1 AND NVL(migration, 1) < 6"}, v6Statements(tb),
		"migration 6 changes MySQL's procedures only: here it records itself")
	for _, prefix := range []string{"tandem_", "t0123456789ab_", "x"} {
		tb := tablesFor(t, prefix)
		for _, s := range append(append(append(append(schemaV2(tb), schemaV3(tb)...), v4Statements(tb)...), v5Statements(tb)...), recordMigration(tb, 2), recordMigration(tb, 3), recordV6(tb)) {
			checkStatement(t, "migration", s, prefix, 0)
		}
	}
	require.Equal(t, "ALTER SESSION SET DDL_LOCK_TIMEOUT = 10", ddlWaitSQL(ddlLockTimeout))
}

func TestMigrate(t *testing.T) {
	ctx := context.Background()
	tb := tablesFor(t, "tandem_")
	migrate := func(t *testing.T, s *server, epoch string) (*fakesql.DB, error) {
		f, db := fakesql.New(t, s.handle)
		return f, sqldialect.Migrate(ctx, db, Dialect, tb, epoch)
	}

	t.Run("new database", func(t *testing.T) {
		s := newServer(&server{})
		f, err := migrate(t, s, "e1")
		require.NoError(t, err)
		want := []string{readSchemaSQL, readSchemaV1SQL, readSchemaSQL, readSchemaV1SQL} // no schema lock on Oracle
		want = append(want, v1Statements(tb)...)
		want = append(want, upgrade(tb)...)
		want = append(want, readSchemaSQL)
		require.Equal(t, want, f.Queries(), "every migration, each recorded")
		seed := slices.Index(f.Queries(), seedMeta(tb))
		require.Equal(t, []driver.NamedValue{{Ordinal: 1, Value: "e1"}}, f.Calls()[seed].Args, "the epoch, and only it")
		require.EqualValues(t, dialect.SchemaVersion, s.migration)
		require.Len(t, s.blobs, 3)
	})
	t.Run("first release's database", func(t *testing.T) {
		s := firstRelease()
		f, err := migrate(t, s, "e1")
		require.NoError(t, err)
		want := []string{readSchemaSQL, readSchemaV1SQL, readSchemaSQL, readSchemaV1SQL}
		want = append(want, upgrade(tb)...)
		want = append(want, readSchemaSQL)
		require.Equal(t, want, f.Queries(), "upgraded in place: migrations 2 to 6")
		require.EqualValues(t, 6, s.migration)
		require.True(t, s.pending)
		require.Len(t, s.blobs, 3)
	})
	t.Run("version 2", func(t *testing.T) {
		s := v2()
		f, err := migrate(t, s, "e1")
		require.NoError(t, err)
		want := append([]string{readSchemaSQL, readSchemaSQL}, upgradeFrom(tb, 2)...)
		require.Equal(t, append(want, readSchemaSQL), f.Queries(), "only migrations 3, 4, 5 and 6")
		require.EqualValues(t, 6, s.migration)
	})
	t.Run("version 3", func(t *testing.T) {
		s := v3()
		f, err := migrate(t, s, "e1")
		require.NoError(t, err)
		want := append([]string{readSchemaSQL, readSchemaSQL}, upgradeFrom(tb, 3)...)
		require.Equal(t, append(want, readSchemaSQL), f.Queries(), "only migrations 4, 5 and 6")
		require.EqualValues(t, 6, s.migration)
		require.True(t, s.pending)
	})
	t.Run("version 4", func(t *testing.T) {
		s := v4()
		f, err := migrate(t, s, "e1")
		require.NoError(t, err)
		want := append([]string{readSchemaSQL, readSchemaSQL}, upgradeFrom(tb, 4)...)
		require.Equal(t, append(want, readSchemaSQL), f.Queries(), "only migrations 5 and 6")
		require.EqualValues(t, 6, s.migration)
		require.Len(t, s.blobs, 3)
	})
	t.Run("version 5", func(t *testing.T) {
		s := v5()
		f, err := migrate(t, s, "e1")
		require.NoError(t, err)
		want := append([]string{readSchemaSQL, readSchemaSQL}, upgradeFrom(tb, 5)...)
		require.Equal(t, append(want, readSchemaSQL), f.Queries(), "only migration 6")
		require.EqualValues(t, 6, s.migration)
	})
	t.Run("pending table made, not recorded", func(t *testing.T) {
		// A node created the pending table and failed before recording
		// migration 4: ORA-00955 is success, and the next one records it.
		s := v3()
		s.pending = true
		_, err := migrate(t, s, "e1")
		require.NoError(t, err)
		require.EqualValues(t, 6, s.migration)
	})
	t.Run("blob tables made, not recorded", func(t *testing.T) {
		// Likewise for migration 5's tables.
		s := v4()
		s.blobs["blobs"], s.blobs["blob_chunks"] = true, true
		f, err := migrate(t, s, "e1")
		require.NoError(t, err)
		want := append([]string{readSchemaSQL, readSchemaSQL}, upgradeFrom(tb, 4)...)
		require.Equal(t, append(want, readSchemaSQL), f.Queries())
		require.EqualValues(t, 6, s.migration)
		require.Len(t, s.blobs, 3)
	})
	t.Run("no CREATE TABLE privilege", func(t *testing.T) {
		s := v3()
		s.fail = map[string]error{"CREATE TABLE tandem_pending": oraErr(1031)}
		_, err := migrate(t, s, "e1")
		require.ErrorContains(t, err, "create table TANDEM_PENDING")
		require.Equal(t, 1031, code(err))
		require.EqualValues(t, 3, s.migration, "not recorded")
	})
	t.Run("current", func(t *testing.T) {
		f, err := migrate(t, current(), "e1")
		require.NoError(t, err)
		require.Equal(t, []string{readSchemaSQL}, f.Queries(), "only checked")
	})
	t.Run("too new", func(t *testing.T) {
		s := current()
		s.compat = dialect.SchemaVersion + 1
		f, err := migrate(t, s, "e1")
		require.ErrorIs(t, err, dialect.ErrSchemaTooNew)
		require.Equal(t, []string{readSchemaSQL}, f.Queries())
	})
	t.Run("a newer release migrated additively", func(t *testing.T) {
		s := current()
		s.migration = dialect.SchemaVersion + 1 // compat stays 1
		f, err := migrate(t, s, "e1")
		require.NoError(t, err)
		require.Equal(t, []string{readSchemaSQL}, f.Queries())
	})
	t.Run("half done", func(t *testing.T) {
		// Oracle's DDL commits by itself: a node that failed after adding
		// a column leaves the rest to the next one.
		s := firstRelease()
		s.cols["journal.instance"] = true
		_, err := migrate(t, s, "e1")
		require.NoError(t, err)
		require.EqualValues(t, 6, s.migration)
		require.Len(t, s.cols, 4)
	})
	t.Run("two nodes at once", func(t *testing.T) {
		// No schema lock on Oracle: both nodes find the schema missing
		// and run every step; the second one's ORA-00955, ORA-01430 and
		// unique violations are success, and the first epoch stays.
		s := newServer(&server{})
		fa, dba := fakesql.New(t, s.handle)
		fb, dbb := fakesql.New(t, s.handle)
		ca, err := dba.Conn(ctx)
		require.NoError(t, err)
		cb, err := dbb.Conn(ctx)
		require.NoError(t, err)
		for _, m := range Dialect.Migrations(tb) {
			require.NoError(t, m.Apply(ctx, ca, "ea"))
			require.NoError(t, m.Apply(ctx, cb, "eb"))
		}
		require.NoError(t, ca.Close())
		require.NoError(t, cb.Close())
		require.Equal(t, fa.Queries(), fb.Queries(), "both ran every statement")
		require.Equal(t, "ea", fa.Calls()[slices.Index(fa.Queries(), seedMeta(tb))].Args[0].Value)
		require.EqualValues(t, dialect.SchemaVersion, s.migration)
		// And a node that finds it done applies nothing.
		n := len(fa.Calls())
		require.NoError(t, sqldialect.Migrate(ctx, dba, Dialect, tb, "ec"))
		require.Equal(t, []string{readSchemaSQL}, fa.Queries()[n:])
	})
	t.Run("busy table", func(t *testing.T) {
		// An old node's transaction held the journal for longer than
		// DDL_LOCK_TIMEOUT: the migration fails (the next Open retries
		// it) and the session's DDL_LOCK_TIMEOUT is reset.
		s := firstRelease()
		s.fail = map[string]error{"ALTER TABLE tandem_journal ADD (batch_id": oraErr(errResourceBusy)}
		f, err := migrate(t, s, "e1")
		require.ErrorIs(t, err, dialect.ErrLockTimeout)
		require.ErrorContains(t, err, "migrate schema to version 2")
		qs := f.Queries()
		require.Equal(t, []string{"ALTER SESSION SET DDL_LOCK_TIMEOUT = 10", schemaV2(tb)[0], schemaV2(tb)[1], "ALTER SESSION SET DDL_LOCK_TIMEOUT = 0"},
			qs[4:], "not recorded; the session reset")
		require.Zero(t, s.migration)
	})
	t.Run("denied", func(t *testing.T) {
		s := newServer(&server{fail: map[string]error{"CREATE TABLE": oraErr(1031)}}) // insufficient privileges
		_, err := migrate(t, s, "e1")
		require.ErrorContains(t, err, "create table TANDEM_JOURNAL")
		require.Equal(t, 1031, code(err))
	})
	t.Run("no ALTER SESSION", func(t *testing.T) {
		s := firstRelease()
		s.fail = map[string]error{"ALTER SESSION": oraErr(1031)}
		f, err := migrate(t, s, "e1")
		require.Equal(t, 1031, code(err))
		require.NotContains(t, f.Queries(), schemaV2(tb)[0])
	})
}

func TestLockSchema(t *testing.T) {
	ctx := context.Background()
	f, db := fakesql.New(t, nil)
	conn, err := db.Conn(ctx)
	require.NoError(t, err)
	defer conn.Close()
	unlock, err := Dialect.LockSchema(ctx, conn, tablesFor(t, "tandem_"))
	require.NoError(t, err)
	unlock()
	require.Empty(t, f.Queries(), "no schema lock on Oracle: every migration step tolerates a concurrent one")
	require.NoError(t, conn.PingContext(ctx))
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
				q = strings.Replace(q, ":1", fmt.Sprintf("'%s'", epoch), 1)
			}
			got = append(got, q)
		}
		require.Equal(t, fixtureV1(t, prefix), got)
	}
}
