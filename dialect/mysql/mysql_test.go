package mysql

import (
	"context"
	sqldriver "database/sql/driver"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"testing"

	driver "github.com/go-sql-driver/mysql"
	"github.com/stretchr/testify/require"

	"github.com/tandem-go/tandem/dialect"
	"github.com/tandem-go/tandem/internal/fakesql"
	"github.com/tandem-go/tandem/internal/sqldialect"
)

func TestTranslate(t *testing.T) {
	for num, want := range map[uint16]error{
		1062: dialect.ErrUniqueViolation,
		1213: dialect.ErrDeadlock,
		1205: dialect.ErrLockTimeout,
		3572: dialect.ErrLockTimeout,
		1146: dialect.ErrNoSuchTable,
	} {
		err := Dialect.Translate(fmt.Errorf("exec: %w", &driver.MySQLError{Number: num}))
		require.ErrorIs(t, err, want, num)
		var myErr *driver.MySQLError
		require.ErrorAs(t, err, &myErr)
	}
	other := &driver.MySQLError{Number: 1054} // unknown column
	require.Same(t, error(other), Dialect.Translate(other))
	require.NoError(t, Dialect.Translate(nil))
	plain := errors.New("x")
	require.Equal(t, plain, Dialect.Translate(plain))
}

func TestEntriesJSON(t *testing.T) {
	entries := []sqldialect.Entry{
		{Producer: `cache/users`, Payload: []byte("hello")},
		{Producer: `we"ird\\p`, Payload: nil},
		{Producer: "bin", Payload: []byte{0, 1, 2, 255}},
	}
	var got [][2]string
	require.NoError(t, json.Unmarshal([]byte(entriesJSON(entries)), &got))
	require.Len(t, got, 3)
	for i, e := range entries {
		require.Equal(t, e.Producer, got[i][0])
		p, err := base64.StdEncoding.DecodeString(got[i][1])
		require.NoError(t, err)
		require.Equal(t, string(e.Payload), string(p))
	}
}

func TestProcedureSQL(t *testing.T) {
	tb, err := sqldialect.NewTables("Prefix", "zz_")
	require.NoError(t, err)
	for _, proc := range []func(sqldialect.Tables) (string, string){procV1, procV2, procV3} {
		name, s := proc(tb)
		require.True(t, strings.HasPrefix(s, "CREATE PROCEDURE "+name+"("))
		require.Contains(t, s, "FROM zz_global_revision WHERE id = 1 FOR UPDATE")
		require.Contains(t, s, "INSERT INTO zz_journal ")
		require.Contains(t, s, "ROLLBACK; RESIGNAL;", "an error rolls back and keeps its number")
		require.Equal(t, 1, strings.Count(s, "COMMIT;"))
	}
	name, s := procV2(tb)
	require.Equal(t, "zz_append_v2", name)
	require.Contains(t, s, "(revision, node_id, instance, batch_id, producer, payload, created_at)")
	require.Contains(t, s, "p_node, p_instance, p_batch, e.producer")

	// Version 6: the append and relay commit only after their statements
	// did all of their work.
	name, s = procV3(tb)
	require.Equal(t, "zz_append_v3", name)
	require.Contains(t, s, "p_node, p_instance, p_batch, e.producer")
	checkGuarded(t, s, "IF v_updated <> 1 OR v_inserted <> p_n THEN")
	name, s = relayProc(tb)
	require.Equal(t, "zz_relay_v2", name)
	checkGuarded(t, s, "IF v_deleted <> v_n OR v_updated <> 1 THEN")
	name, _ = relayProcV1(tb)
	require.Equal(t, "zz_relay_v1", name, "the relay of versions 4 and 5 keeps its name for the nodes that call it")
}

// checkGuarded checks that procedure body s reads each statement's row
// count right after it, and that the check (cond) rolls back and signals
// before the one COMMIT.
func checkGuarded(t *testing.T, s, cond string) {
	t.Helper()
	for _, stmt := range []string{"UPDATE zz_global_revision", "INSERT INTO zz_journal", "DELETE p FROM zz_pending"} {
		i := strings.Index(s, stmt)
		if i < 0 {
			continue
		}
		rest := s[i:]
		end := strings.Index(rest, ";\n")
		require.Positive(t, end, stmt)
		require.True(t, strings.HasPrefix(strings.TrimSpace(rest[end+1:]), "SET v_"), "%s: its ROW_COUNT() is read next", stmt)
		require.Contains(t, strings.TrimSpace(rest[end+1:])[:40], "= ROW_COUNT();")
	}
	c := strings.Index(s, cond)
	require.Positive(t, c, cond)
	require.True(t, strings.HasPrefix(strings.TrimSpace(s[c+len(cond):]), "ROLLBACK;\n\t\t\tSIGNAL SQLSTATE '45000'"), "a failed check rolls back, then signals")
	require.Less(t, c, strings.Index(s, "COMMIT;"), "checked before the commit")
	require.Equal(t, 1, strings.Count(s, "COMMIT;"))
}

func TestAppendErrorOutcome(t *testing.T) {
	d := my{}
	for _, n := range []uint16{1205, 1213, 1062, 1146, 1305} {
		err := d.appendError(&driver.MySQLError{Number: n})
		require.NotErrorIs(t, err, dialect.ErrOutcomeUnknown, "error %d ends the procedure before its COMMIT", n)
	}
	for _, n := range []uint16{1317, 1969, 3024, 1927, 1180, 2013} {
		err := d.appendError(&driver.MySQLError{Number: n})
		require.ErrorIs(t, err, dialect.ErrOutcomeUnknown, "error %d may come after the COMMIT", n)
	}
	require.ErrorIs(t, d.appendError(driver.ErrInvalidConn), dialect.ErrOutcomeUnknown)
	require.NotErrorIs(t, d.appendError(sqldriver.ErrBadConn), dialect.ErrOutcomeUnknown, "nothing was sent")
}

var (
	literal   = regexp.MustCompile(`'[^']*'`)
	tableName = regexp.MustCompile(`\b[a-z0-9_]*(journal|global_revision|meta|local_revisions|locks)\b`)
)

// numbered returns query with its i-th ? (outside string literals) written
// as ?i, so that a test can see which argument goes where.
func numbered(query string) string {
	var b strings.Builder
	n, inLit := 0, false
	for _, c := range query {
		switch {
		case c == '\'':
			inLit = !inLit
		case c == '?' && !inLit:
			n++
			b.WriteString("?" + strconv.Itoa(n))
			continue
		}
		b.WriteRune(c)
	}
	return b.String()
}

// TestEvictPositionQueries: EvictPosition sets the marker and
// UnevictPosition clears it, each only on a row that still holds the
// revision given and is not already in the state it sets; args (node id,
// revision), and the rows affected decide.
func TestEvictPositionQueries(t *testing.T) {
	for _, prefix := range []string{"tandem_", "x"} {
		tb, err := sqldialect.NewTables("Prefix", prefix)
		require.NoError(t, err)
		q := Dialect.Queries(tb)
		require.Equal(t, "UPDATE "+tb.LocalRevisions+" SET evicted_at = UTC_TIMESTAMP(6) WHERE node_id = ? AND revision = ? AND evicted_at IS NULL", q.EvictPosition)
		require.Equal(t, "UPDATE "+tb.LocalRevisions+" SET evicted_at = NULL WHERE node_id = ? AND revision = ? AND evicted_at IS NOT NULL", q.UnevictPosition)
		for _, name := range []string{"EvictPosition", "UnevictPosition"} {
			f := q.Statements()[name]
			require.Equal(t, f.Args, strings.Count(f.SQL, "?"), name)
		}
	}
}

func TestLockQueries(t *testing.T) {
	const now = "UTC_TIMESTAMP(6)"
	ttl := func(p string) string { return "TIMESTAMPADD(MICROSECOND, " + p + " * 1000, " + now + ")" }
	for _, prefix := range []string{"tandem_", "t0123456789ab_", "x"} {
		tb, err := sqldialect.NewTables("Prefix", prefix)
		require.NoError(t, err)
		q := Dialect.LockQueries(tb)
		for name, f := range q.Statements() {
			require.NotEmpty(t, f.SQL, name)
			require.Equal(t, f.Args, strings.Count(literal.ReplaceAllString(f.SQL, "''"), "?"), "%s: one ? per argument", name)
			for _, bad := range []string{"$1", ":1", "@p"} {
				require.NotContains(t, f.SQL, bad, "%s: foreign placeholder", name)
			}
			require.Regexp(t, `(FROM|INTO|UPDATE) `+tb.Locks+`\b`, f.SQL, "%s: runs on the prefix's locks table", name)
			for _, m := range tableName.FindAllStringSubmatch(f.SQL, -1) {
				require.Equal(t, prefix+m[1], m[0], "%s: table name without the prefix", name)
			}
			upper := strings.ToUpper(f.SQL)
			for _, bad := range []string{"SKIP LOCKED", "NOWAIT", "NOLOCK", "READPAST", "NOW()", "CURRENT_TIMESTAMP"} {
				require.NotContains(t, upper, bad, name)
			}
		}
		// Which argument goes where, as the field comments list them.
		for name, frags := range map[string][]string{
			"Seed": {"INSERT IGNORE INTO " + tb.Locks + " (name, owner, instance, token, heartbeat, acquired_at, renewed_at, expires_at)\nVALUES (?1, '', '', 0, 0, " + now + ", " + now + ", " + now + ")"},
			"Acquire": {"UPDATE " + tb.Locks + " SET owner = ?1, instance = ?2, token = token + 1, heartbeat = 0,",
				"acquired_at = " + now + ", renewed_at = " + now + ", expires_at = " + ttl("?3"), "WHERE name = ?4 AND expires_at <= " + now},
			"Token": {"SELECT token FROM " + tb.Locks + " WHERE name = ?1"},
			"Renew": {"UPDATE " + tb.Locks + " SET expires_at = " + ttl("?1") + ", renewed_at = " + now + ", heartbeat = heartbeat + 1",
				"WHERE name = ?2 AND owner = ?3 AND instance = ?4 AND token = ?5 AND expires_at > " + now},
			"Release": {"UPDATE " + tb.Locks + " SET expires_at = " + now,
				"WHERE name = ?1 AND owner = ?2 AND instance = ?3 AND token = ?4 AND expires_at > " + now},
			"List": {"SELECT name, owner, instance, token, acquired_at, renewed_at, expires_at, CASE WHEN expires_at > " + now + " THEN 1 ELSE 0 END",
				"FROM " + tb.Locks + " ORDER BY name"},
			"Fence": {"SELECT token FROM " + tb.Locks + "\n",
				"WHERE name = ?1 AND owner = ?2 AND instance = ?3 AND token = ?4 AND expires_at > " + now},
		} {
			for _, frag := range frags {
				require.Contains(t, numbered(q.Statements()[name].SQL), frag, name)
			}
		}
		// Fence locks the row until the transaction ends (a locking read
		// of the latest version, waiting for a concurrent update).
		require.True(t, strings.HasSuffix(q.Fence, " FOR UPDATE"), q.Fence)
		require.NotContains(t, q.Token+q.List, "FOR ", "plain readers lock nothing")
	}
}

func TestSchemaCreatesLocks(t *testing.T) {
	tb, err := sqldialect.NewTables("Prefix", "zz_")
	require.NoError(t, err)
	locksDDL := `CREATE TABLE IF NOT EXISTS zz_locks (
	name        VARCHAR(128) CHARACTER SET ascii COLLATE ascii_bin NOT NULL PRIMARY KEY,
	owner       VARCHAR(64) CHARACTER SET ascii COLLATE ascii_bin NOT NULL,
	instance    VARCHAR(64) CHARACTER SET ascii COLLATE ascii_bin NOT NULL,
	token       BIGINT NOT NULL,
	heartbeat   BIGINT NOT NULL,
	acquired_at DATETIME(6) NOT NULL,
	renewed_at  DATETIME(6) NOT NULL,
	expires_at  DATETIME(6) NOT NULL) ENGINE=InnoDB`
	require.Contains(t, schemaV1(tb), locksDDL)
	for _, s := range schemaV1(tb) {
		for _, m := range tableName.FindAllStringSubmatch(s, -1) {
			require.Equal(t, "zz_"+m[1], m[0], "table name without the prefix")
		}
	}

	// Migrate runs it under the schema lock, on the locked connection.
	migrated := false
	f, db := fakesql.New(t, func(q string, _ []sqldriver.NamedValue) fakesql.Reply {
		switch {
		case strings.HasPrefix(q, "UPDATE zz_meta SET migration = 2"):
			migrated = true
		case strings.HasPrefix(q, "SELECT schema_version"):
			if !migrated {
				return fakesql.Reply{Err: &driver.MySQLError{Number: 1146, Message: "Table 'zz_meta' doesn't exist"}}
			}
			return fakesql.Reply{Rows: [][]sqldriver.Value{{int64(1), int64(dialect.SchemaVersion)}}}
		case strings.HasPrefix(q, "SELECT GET_LOCK("):
			return fakesql.Reply{Rows: [][]sqldriver.Value{{int64(1)}}}
		case strings.Contains(q, "information_schema."):
			return fakesql.Reply{Rows: [][]sqldriver.Value{{int64(0)}}}
		}
		return fakesql.Reply{}
	})
	require.NoError(t, sqldialect.Migrate(context.Background(), db, Dialect, tb, "e1"))
	qs := f.Queries()
	lock := slices.IndexFunc(qs, func(q string) bool { return strings.HasPrefix(q, "SELECT GET_LOCK(") })
	created := slices.Index(qs, locksDDL)
	release := slices.IndexFunc(qs, func(q string) bool { return strings.HasPrefix(q, "SELECT RELEASE_LOCK(") })
	v2 := slices.IndexFunc(qs, func(q string) bool { return strings.HasPrefix(q, "CREATE PROCEDURE zz_append_v2(") })
	recorded := slices.IndexFunc(qs, func(q string) bool { return strings.HasPrefix(q, "UPDATE zz_meta SET migration = 2") })
	require.True(t, lock >= 0 && lock < created && created < v2 && v2 < recorded && recorded < release, "%q", qs)
}

// TestMigrationOneIsTheFirstRelease: migration 1 runs exactly the DDL the
// first release ran (testdata/schema_v1.sql), so that a database it made
// and one made by this release are the same.
func TestMigrationOneIsTheFirstRelease(t *testing.T) {
	tb, err := sqldialect.NewTables("Prefix", "zz_")
	require.NoError(t, err)
	fixture, err := sqldialect.ReadFixture("testdata/schema_v1.sql", "zz_")
	require.NoError(t, err)
	for i, s := range schemaV1(tb) {
		require.Equal(t, strings.TrimSpace(fixture[i]), s, "statement %d", i)
	}
}
