package sqlserver

import (
	"context"
	"database/sql"
	"database/sql/driver"
	"errors"
	"fmt"
	"github.com/tandem-go/tandem/internal/fakesql"
	"io"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	mssql "github.com/microsoft/go-mssqldb"
	"github.com/stretchr/testify/require"

	"github.com/tandem-go/tandem/dialect"
	"github.com/tandem-go/tandem/journal"
)

func tablesFor(t *testing.T, prefix string) dialect.Tables {
	t.Helper()
	tb, err := dialect.NewTables("Prefix", prefix)
	require.NoError(t, err)
	return tb
}

var placeholder = regexp.MustCompile(`@p(\d+)\b`)

// params returns the distinct @pN of query, in ascending order.
func params(query string) []int {
	var out []int
	for _, m := range placeholder.FindAllStringSubmatch(query, -1) {
		n, _ := strconv.Atoi(m[1])
		if !slices.Contains(out, n) {
			out = append(out, n)
		}
	}
	slices.Sort(out)
	return out
}

func seq(n int) []int {
	out := []int{}
	for i := 1; i <= n; i++ {
		out = append(out, i)
	}
	return out
}

// abbrev shortens a long list for a failure message.
func abbrev(s []int) string {
	if len(s) > 8 {
		return fmt.Sprintf("%v … %v (%d)", s[:4], s[len(s)-4:], len(s))
	}
	return fmt.Sprint(s)
}

var tableName = regexp.MustCompile(`\b[a-z0-9_]*(journal|global_revision|meta|local_revisions|locks)\b`)

// checkStatement asserts what every statement of the dialect must hold:
// the placeholders are exactly @p1..@pN (but unused), no other placeholder
// style, no dirty-read hint, and every table name carries the prefix.
func checkStatement(t *testing.T, name, query, prefix string, nargs int, unused ...int) {
	t.Helper()
	require.NotEmpty(t, query, name)
	want := slices.DeleteFunc(seq(nargs), func(n int) bool { return slices.Contains(unused, n) })
	if got := params(query); !slices.Equal(want, got) {
		t.Fatalf("%s: placeholders are %v, want %v", name, abbrev(got), abbrev(want))
	}
	for _, bad := range []string{"?", "$1", ":1"} {
		require.NotContains(t, query, bad, "%s: foreign placeholder", name)
	}
	upper := strings.ToUpper(query)
	for _, bad := range []string{"READPAST", "NOLOCK", "READUNCOMMITTED", "READ UNCOMMITTED"} {
		require.NotContains(t, upper, bad, "%s: readers must not skip or read uncommitted rows", name)
	}
	for _, m := range tableName.FindAllStringSubmatch(query, -1) {
		require.Equal(t, prefix+m[1], m[0], "%s: table name without the prefix", name)
	}
}

func TestQueriesGolden(t *testing.T) {
	q := Dialect.Queries(tablesFor(t, "tandem_"))
	golden := map[string]string{
		"Read":        `SELECT TOP (@p2) revision, node_id, producer, payload, TODATETIMEOFFSET(created_at, 0) FROM tandem_journal WHERE revision > @p1 ORDER BY revision`,
		"Head":        `SELECT revision FROM tandem_global_revision WHERE id = 1`,
		"Meta":        `SELECT epoch, tail, schema_version FROM tandem_meta WHERE id = 1`,
		"SetTail":     `UPDATE tandem_meta SET tail = @p1 WHERE id = 1 AND tail < @p1`,
		"MinRevision": `SELECT MIN(revision) FROM tandem_journal`,
		"DeleteRange": "SET NOCOUNT OFF;\nWHILE 1 = 1\nBEGIN\n" +
			"\tDELETE TOP (2000) FROM tandem_journal WHERE revision >= @p1 AND revision < @p2;\n" +
			"\tIF @@ROWCOUNT < 2000 BREAK;\nEND;",
		"LoadPosition": `SELECT revision, epoch, TODATETIMEOFFSET(updated_at, 0) FROM tandem_local_revisions WHERE node_id = @p1`,
		"SavePosition": "SET XACT_ABORT ON;\nBEGIN TRANSACTION;\n" +
			"UPDATE tandem_local_revisions WITH (UPDLOCK, SERIALIZABLE) SET revision = @p2, epoch = @p3, updated_at = SYSUTCDATETIME() WHERE node_id = @p1;\n" +
			"IF @@ROWCOUNT = 0\n" +
			"\tINSERT INTO tandem_local_revisions (node_id, revision, epoch, updated_at) VALUES (@p1, @p2, @p3, SYSUTCDATETIME());\n" +
			"COMMIT TRANSACTION;",
		"ListPositions":  `SELECT node_id, revision, epoch, TODATETIMEOFFSET(updated_at, 0) FROM tandem_local_revisions ORDER BY node_id`,
		"DeletePosition": `DELETE FROM tandem_local_revisions WHERE node_id = @p1`,
		"CopyPosition": "SET NOCOUNT OFF;\nINSERT INTO tandem_local_revisions (node_id, revision, epoch, updated_at)\n" +
			"SELECT @p1, revision, epoch, SYSUTCDATETIME() FROM tandem_local_revisions WHERE node_id = @p2;",
	}
	for name, f := range q.Statements() {
		require.Equal(t, golden[name], f.SQL, name)
	}
}

func TestQueriesShape(t *testing.T) {
	for _, prefix := range []string{"tandem_", "t0123456789ab_", "x"} {
		q := Dialect.Queries(tablesFor(t, prefix))
		for name, f := range q.Statements() {
			checkStatement(t, name, f.SQL, prefix, f.Args)
		}
		require.Contains(t, q.Read, "TOP (@p2)", "the limit is the second argument")
		require.Contains(t, q.Read, "WHERE revision > @p1 ORDER BY revision")
		for _, s := range []string{q.Read, q.LoadPosition, q.ListPositions} {
			require.Contains(t, s, "TODATETIMEOFFSET(", "times are returned with their offset")
		}
		for _, s := range []string{q.SavePosition, q.CopyPosition} {
			require.Contains(t, s, "SYSUTCDATETIME()", "database time in UTC")
			require.NotContains(t, s, "GETDATE()")
		}
	}
}

func TestSchemaShape(t *testing.T) {
	tb := tablesFor(t, "tandem_")
	tbs := tables(tb)
	require.Len(t, tbs, 5)
	for _, x := range tbs {
		checkStatement(t, x.name, x.ddl, "tandem_", 0)
		require.True(t, strings.HasPrefix(x.ddl, "IF OBJECT_ID(N'"+x.name+"', N'U') IS NULL\nCREATE TABLE "+x.name+" ("), x.ddl)
	}
	require.Equal(t, []string{tb.Journal, tb.GlobalRevision, tb.Meta, tb.LocalRevisions, tb.Locks},
		[]string{tbs[0].name, tbs[1].name, tbs[2].name, tbs[3].name, tbs[4].name})
	require.Contains(t, tbs[0].ddl, "payload    VARBINARY(MAX) NOT NULL")
	require.Contains(t, tbs[0].ddl, "created_at DATETIME2(6) NOT NULL")
	require.Contains(t, tbs[0].ddl, "revision   BIGINT NOT NULL PRIMARY KEY")
	require.Contains(t, tbs[3].ddl, "node_id    NVARCHAR(64) COLLATE Latin1_General_BIN2 NOT NULL PRIMARY KEY")
	require.Contains(t, tbs[3].ddl, "epoch      NVARCHAR(64) NOT NULL", "SQL Server keeps '' apart from NULL")
	require.Equal(t, "IF OBJECT_ID(N'tandem_locks', N'U') IS NULL\nCREATE TABLE tandem_locks (\n"+
		"\tname        NVARCHAR(128) COLLATE Latin1_General_BIN2 NOT NULL PRIMARY KEY,\n"+
		"\towner       NVARCHAR(64) COLLATE Latin1_General_BIN2 NOT NULL,\n"+
		"\tinstance    NVARCHAR(64) COLLATE Latin1_General_BIN2 NOT NULL,\n"+
		"\ttoken       BIGINT NOT NULL,\n"+
		"\theartbeat   BIGINT NOT NULL,\n"+
		"\tacquired_at DATETIME2(6) NOT NULL,\n"+
		"\trenewed_at  DATETIME2(6) NOT NULL,\n"+
		"\texpires_at  DATETIME2(6) NOT NULL)", tbs[4].ddl)
	checkStatement(t, "seedCounter", seedCounter(tb), "tandem_", 0)
	checkStatement(t, "seedMeta", seedMeta(tb), "tandem_", 2)
}

func TestAppendSQL(t *testing.T) {
	tb := tablesFor(t, "tandem_")
	for _, n := range []int{1, 3, 1000} {
		for _, cond := range []bool{false, true} {
			t.Run(fmt.Sprintf("%d/cond=%v", n, cond), func(t *testing.T) {
				s := appendSQL(tb, n, cond)
				nargs := appendParams + 2*n
				if cond {
					checkStatement(t, "append", s, "tandem_", nargs)
				} else {
					checkStatement(t, "append", s, "tandem_", nargs, 3) // @p3 is sent but unused
				}
				require.LessOrEqual(t, nargs, maxParams, "within SQL Server's parameter limit")
				require.Equal(t, cond, strings.Contains(s, "AND revision = @p3"))
				require.Equal(t, 1, strings.Count(s, "UPDATE tandem_global_revision SET @last = revision = revision + @p1 WHERE id = 1"))
				// One INSERT, its rows from a derived table (no 1,000-row limit).
				require.Equal(t, 1, strings.Count(s, "INSERT INTO"))
				require.Contains(t, s, "INSERT INTO tandem_journal (revision, node_id, producer, payload, created_at)\n\t\tSELECT @last - @p1 + v.k, @p2, v.producer, v.payload, SYSUTCDATETIME()\n\t\tFROM (VALUES (1, @p4, @p5)")
				require.Contains(t, s, fmt.Sprintf("(%d, @p%d, @p%d)) AS v (k, producer, payload);", n, nargs-1, nargs))
				for _, must := range []string{"SET XACT_ABORT ON;", "BEGIN TRANSACTION;", "COMMIT TRANSACTION;", "BEGIN CATCH", "THROW;", "SELECT @last - @p1 + 1;"} {
					require.Contains(t, s, must)
				}
				require.True(t, strings.HasSuffix(s, "SELECT @last - @p1 + 1;"), "the result is the batch's last statement")
			})
		}
	}
	require.GreaterOrEqual(t, maxEntries, journal.MaxAppendEntries, "a full group commit fits one batch")
	require.LessOrEqual(t, appendParams+2*maxEntries, maxParams)
}

func TestAppendSQLGolden(t *testing.T) {
	got := appendSQL(tablesFor(t, "tandem_"), 2, true)
	want := `SET NOCOUNT ON;
SET XACT_ABORT ON;
DECLARE @last BIGINT;
BEGIN TRY
	BEGIN TRANSACTION;
	UPDATE tandem_global_revision SET @last = revision = revision + @p1 WHERE id = 1 AND revision = @p3;
	IF @@ROWCOUNT = 1
	BEGIN
		INSERT INTO tandem_journal (revision, node_id, producer, payload, created_at)
		SELECT @last - @p1 + v.k, @p2, v.producer, v.payload, SYSUTCDATETIME()
		FROM (VALUES (1, @p4, @p5), (2, @p6, @p7)) AS v (k, producer, payload);
		COMMIT TRANSACTION;
	END
	ELSE
		ROLLBACK TRANSACTION;
END TRY
BEGIN CATCH
	IF @@TRANCOUNT > 0 ROLLBACK TRANSACTION;
	THROW;
END CATCH;
SELECT @last - @p1 + 1;`
	require.Equal(t, want, got)
}

func request(n int, expect int64) dialect.AppendRequest {
	tb, _ := dialect.NewTables("Prefix", "tandem_")
	r := dialect.AppendRequest{Tables: tb, NodeID: "node-a", ExpectHead: expect}
	for i := range n {
		r.Entries = append(r.Entries, dialect.Entry{Producer: "p" + strconv.Itoa(i), Payload: []byte{byte(i)}})
	}
	return r
}

func TestAppendArgs(t *testing.T) {
	r := request(3, -1)
	r.Entries[1].Payload = nil
	args := appendArgs(r)
	require.Len(t, args, appendParams+6)
	require.Equal(t, []any{int64(3), "node-a", int64(-1)}, args[:3])
	require.Equal(t, "p0", args[3])
	require.Equal(t, []byte{0}, args[4])
	require.NotNil(t, args[6], "a nil payload is sent as an empty one, not NULL")
	require.Equal(t, []byte{}, args[6])
	require.Equal(t, "p2", args[7])
}

func TestAppend(t *testing.T) {
	ctx := context.Background()
	run := func(t *testing.T, r dialect.AppendRequest, rep fakesql.Reply) (*fakesql.DB, int64, error) {
		f, db := fakesql.New(t, func(q string, _ []driver.NamedValue) fakesql.Reply {
			if strings.HasPrefix(q, "SET NOCOUNT ON;") {
				return rep
			}
			return fakesql.Reply{}
		})
		conn, err := db.Conn(ctx)
		require.NoError(t, err)
		defer conn.Close()
		first, err := Dialect.Append(ctx, conn, r)
		return f, first, err
	}

	t.Run("ok", func(t *testing.T) {
		f, first, err := run(t, request(3, -1), fakesql.Reply{Rows: [][]driver.Value{{int64(41)}}})
		require.NoError(t, err)
		require.EqualValues(t, 41, first)
		require.Len(t, f.Calls(), 1, "one round trip")
		require.Equal(t, appendSQL(request(3, -1).Tables, 3, false), f.Calls()[0].Query)
		require.Len(t, f.Calls()[0].Args, appendParams+6)
		require.Equal(t, "node-a", f.Calls()[0].Args[1].Value)
	})
	t.Run("head mismatch", func(t *testing.T) {
		f, _, err := run(t, request(1, 7), fakesql.Reply{Rows: [][]driver.Value{{nil}}})
		require.ErrorIs(t, err, dialect.ErrHeadMismatch)
		require.NotErrorIs(t, err, dialect.ErrOutcomeUnknown)
		require.Contains(t, f.Calls()[0].Query, "AND revision = @p3")
		require.EqualValues(t, 7, f.Calls()[0].Args[2].Value)
	})
	t.Run("missing counter row", func(t *testing.T) {
		_, _, err := run(t, request(1, -1), fakesql.Reply{Rows: [][]driver.Value{{nil}}})
		require.Error(t, err)
		require.NotErrorIs(t, err, dialect.ErrHeadMismatch)
	})
	t.Run("server error rolls back", func(t *testing.T) {
		f, _, err := run(t, request(1, -1), fakesql.Reply{Err: mssql.Error{Number: 1222, Message: "Lock request time out period exceeded."}})
		require.ErrorIs(t, err, dialect.ErrLockTimeout)
		require.NotErrorIs(t, err, dialect.ErrOutcomeUnknown, "a server error means the batch rolled back")
		require.Equal(t, []string{f.Calls()[0].Query, "IF @@TRANCOUNT > 0 ROLLBACK TRANSACTION"}, f.Queries(),
			"a transaction a compile error left open is rolled back")
	})
	t.Run("connection lost", func(t *testing.T) {
		for _, cause := range []error{io.ErrUnexpectedEOF, context.DeadlineExceeded} {
			_, _, err := run(t, request(1, -1), fakesql.Reply{Err: cause})
			require.ErrorIs(t, err, dialect.ErrOutcomeUnknown, "%v", cause)
			require.ErrorIs(t, err, cause)
		}
		// A fatal server error severs the connection: even a commit at the
		// end of the batch cannot be ruled out.
		_, _, err := run(t, request(1, -1), fakesql.Reply{Err: mssql.ServerError{}})
		require.ErrorIs(t, err, dialect.ErrOutcomeUnknown)
		var fatal mssql.ServerError
		require.ErrorAs(t, err, &fatal)
	})
	t.Run("not sent", func(t *testing.T) {
		_, _, err := run(t, request(1, -1), fakesql.Reply{Err: driver.ErrBadConn})
		require.Error(t, err)
		require.NotErrorIs(t, err, dialect.ErrOutcomeUnknown)
	})
	t.Run("too many entries", func(t *testing.T) {
		f, _, err := run(t, request(maxEntries+1, -1), fakesql.Reply{})
		require.Error(t, err)
		require.Empty(t, f.Calls())
	})
}

func TestPrepareConn(t *testing.T) {
	ctx := context.Background()
	for _, tc := range []struct {
		d    time.Duration
		want string
	}{
		{10 * time.Second, "SET LOCK_TIMEOUT 10000"},
		{1500 * time.Microsecond, "SET LOCK_TIMEOUT 2"},
		{time.Nanosecond, "SET LOCK_TIMEOUT 1"},
		{1000 * time.Hour, "SET LOCK_TIMEOUT 2147483647"},
	} {
		f, db := fakesql.New(t, nil)
		conn, err := db.Conn(ctx)
		require.NoError(t, err)
		require.NoError(t, Dialect.PrepareConn(ctx, conn, tc.d))
		conn.Close()
		require.Equal(t, []string{tc.want}, f.Queries())
		require.Empty(t, f.Calls()[0].Args, "no arguments: a plain batch, so the setting outlives it")
	}
}

func TestCreateSchema(t *testing.T) {
	ctx := context.Background()
	tb := tablesFor(t, "tandem_")
	versionQuery := `SELECT schema_version FROM tandem_meta WHERE id = 1`

	t.Run("races are success", func(t *testing.T) {
		versions := 0
		f, db := fakesql.New(t, func(q string, args []driver.NamedValue) fakesql.Reply {
			switch {
			case q == versionQuery:
				versions++
				if versions == 1 {
					return fakesql.Reply{Err: mssql.Error{Number: 208, Message: "Invalid object name 'tandem_meta'."}}
				}
				return fakesql.Reply{Rows: [][]driver.Value{{int64(1)}}}
			case strings.Contains(q, "CREATE TABLE tandem_meta"):
				return fakesql.Reply{Err: mssql.Error{Number: 2714, Message: "There is already an object named 'tandem_meta' in the database."}}
			case strings.HasPrefix(q, "INSERT INTO tandem_global_revision"):
				return fakesql.Reply{Err: mssql.Error{Number: 2627, Message: "Violation of PRIMARY KEY constraint"}}
			}
			return fakesql.Reply{}
		})
		require.NoError(t, Dialect.CreateSchema(ctx, db, tb, "e1"))
		qs := f.Queries()
		// version, five tables, two seeds, version.
		require.Len(t, qs, 9)
		for i, x := range tables(tb) {
			require.Equal(t, x.ddl, qs[1+i], x.name)
		}
		require.Equal(t, seedCounter(tb), qs[6])
		require.Equal(t, seedMeta(tb), qs[7])
		require.Equal(t, "e1", f.Calls()[7].Args[0].Value)
		require.EqualValues(t, dialect.SchemaVersion, f.Calls()[7].Args[1].Value)
		require.Equal(t, versionQuery, qs[8])
	})
	t.Run("exists", func(t *testing.T) {
		f, db := fakesql.New(t, func(string, []driver.NamedValue) fakesql.Reply {
			return fakesql.Reply{Rows: [][]driver.Value{{int64(1)}}}
		})
		require.NoError(t, Dialect.CreateSchema(ctx, db, tb, "e1"))
		require.Equal(t, []string{versionQuery}, f.Queries(), "an existing schema is only checked")
	})
	t.Run("too new", func(t *testing.T) {
		_, db := fakesql.New(t, func(string, []driver.NamedValue) fakesql.Reply {
			return fakesql.Reply{Rows: [][]driver.Value{{int64(dialect.SchemaVersion + 1)}}}
		})
		require.ErrorIs(t, Dialect.CreateSchema(ctx, db, tb, "e1"), dialect.ErrSchemaTooNew)
	})
	t.Run("denied", func(t *testing.T) {
		_, db := fakesql.New(t, func(q string, _ []driver.NamedValue) fakesql.Reply {
			if q == versionQuery {
				return fakesql.Reply{Err: sql.ErrNoRows}
			}
			return fakesql.Reply{Err: mssql.Error{Number: 262, Message: "CREATE TABLE permission denied"}}
		})
		err := Dialect.CreateSchema(ctx, db, tb, "e1")
		require.ErrorContains(t, err, "create table tandem_journal")
		var msErr mssql.Error
		require.ErrorAs(t, err, &msErr)
	})
}

func TestTranslate(t *testing.T) {
	d := Dialect
	require.NoError(t, d.Translate(nil))
	plain := errors.New("plain")
	require.Equal(t, plain, d.Translate(plain))
	other := mssql.Error{Number: 208}
	require.Equal(t, error(other), d.Translate(other), "an unclassified server error is unchanged")

	for _, tc := range []struct {
		number int32
		class  error
	}{
		{2627, dialect.ErrUniqueViolation},
		{2601, dialect.ErrUniqueViolation},
		{1205, dialect.ErrDeadlock},
		{1222, dialect.ErrLockTimeout},
		{3960, dialect.ErrSerialization},
	} {
		src := fmt.Errorf("wrapped: %w", mssql.Error{Number: tc.number, Message: "m"})
		err := d.Translate(src)
		require.ErrorIs(t, err, tc.class, "%d", tc.number)
		var msErr mssql.Error
		require.ErrorAs(t, err, &msErr, "the driver error stays reachable")
		require.Equal(t, tc.number, msErr.Number)
	}

	// The driver reports the last error of a response; the class may sit
	// earlier in the chain.
	chain := mssql.Error{Number: 3998, All: []mssql.Error{{Number: 1205}, {Number: 3998}}}
	require.ErrorIs(t, d.Translate(chain), dialect.ErrDeadlock)
	// A fatal error wraps the server's error.
	require.NotErrorIs(t, d.Translate(mssql.ServerError{}), dialect.ErrDeadlock)
}

// firstUse returns the distinct @pN of query in the order they first appear.
func firstUse(query string) []int {
	out := []int{}
	for _, m := range placeholder.FindAllStringSubmatch(query, -1) {
		n, _ := strconv.Atoi(m[1])
		if !slices.Contains(out, n) {
			out = append(out, n)
		}
	}
	return out
}

func TestLockQueriesGolden(t *testing.T) {
	q := Dialect.LockQueries(tablesFor(t, "tandem_"))
	golden := map[string]string{
		"Seed": "INSERT INTO tandem_locks (name, owner, instance, token, heartbeat, acquired_at, renewed_at, expires_at)\n" +
			"SELECT @p1, N'', N'', 0, 0, SYSUTCDATETIME(), SYSUTCDATETIME(), SYSUTCDATETIME()\n" +
			"WHERE NOT EXISTS (SELECT 1 FROM tandem_locks WITH (UPDLOCK, HOLDLOCK) WHERE name = @p1)",
		"Acquire": "SET NOCOUNT OFF;\n" +
			"UPDATE tandem_locks SET owner = @p1, instance = @p2, token = token + 1, heartbeat = 0,\n" +
			"acquired_at = SYSUTCDATETIME(), renewed_at = SYSUTCDATETIME(), expires_at = DATEADD(MILLISECOND, CAST(@p3 % 1000 AS INT), DATEADD(SECOND, CAST(@p3 / 1000 AS INT), SYSUTCDATETIME()))\n" +
			"WHERE name = @p4 AND expires_at <= SYSUTCDATETIME();",
		"Token": "SELECT token FROM tandem_locks WHERE name = @p1",
		"Renew": "SET NOCOUNT OFF;\n" +
			"UPDATE tandem_locks SET expires_at = DATEADD(MILLISECOND, CAST(@p1 % 1000 AS INT), DATEADD(SECOND, CAST(@p1 / 1000 AS INT), SYSUTCDATETIME())), renewed_at = SYSUTCDATETIME(), heartbeat = heartbeat + 1\n" +
			"WHERE name = @p2 AND owner = @p3 AND instance = @p4 AND token = @p5 AND expires_at > SYSUTCDATETIME();",
		"Release": "SET NOCOUNT OFF;\n" +
			"UPDATE tandem_locks SET expires_at = SYSUTCDATETIME()\n" +
			"WHERE name = @p1 AND owner = @p2 AND instance = @p3 AND token = @p4 AND expires_at > SYSUTCDATETIME();",
		"List": "SELECT name, owner, instance, token, TODATETIMEOFFSET(acquired_at, 0), TODATETIMEOFFSET(renewed_at, 0), TODATETIMEOFFSET(expires_at, 0),\n" +
			"CASE WHEN expires_at > SYSUTCDATETIME() THEN 1 ELSE 0 END FROM tandem_locks ORDER BY name",
		"Fence": "SELECT token FROM tandem_locks WITH (UPDLOCK, ROWLOCK)\n" +
			"WHERE name = @p1 AND owner = @p2 AND instance = @p3 AND token = @p4 AND expires_at > SYSUTCDATETIME()",
	}
	for name, f := range q.Statements() {
		require.Equal(t, golden[name], f.SQL, name)
	}
}

func TestLockQueriesShape(t *testing.T) {
	const now = "SYSUTCDATETIME()"
	ttl := func(p string) string {
		return "DATEADD(MILLISECOND, CAST(" + p + " % 1000 AS INT), DATEADD(SECOND, CAST(" + p + " / 1000 AS INT), " + now + "))"
	}
	for _, prefix := range []string{"tandem_", "t0123456789ab_", "x"} {
		tb := tablesFor(t, prefix)
		q := Dialect.LockQueries(tb)
		for name, f := range q.Statements() {
			checkStatement(t, name, f.SQL, prefix, f.Args)
			require.Equal(t, seq(f.Args), firstUse(f.SQL), "%s: arguments in the order of the field comment", name)
			require.Regexp(t, `(FROM|INTO|UPDATE) `+tb.Locks+`\b`, f.SQL, "%s: runs on the prefix's locks table", name)
			require.NotContains(t, f.SQL, "GETDATE(", "%s: database time in UTC", name)
			require.NotRegexp(t, `CAST\(@p\d+ AS INT\)`, f.SQL, "%s: a TTL of INT milliseconds ends at 24.8 days", name)
		}
		// Where each argument goes, as the field comments list them.
		for name, frags := range map[string][]string{
			"Seed": {"INSERT INTO " + tb.Locks + " (name, owner, instance, token, heartbeat, acquired_at, renewed_at, expires_at)\nSELECT @p1, N'', N'', 0, 0, " + now + ", " + now + ", " + now,
				"WHERE NOT EXISTS (SELECT 1 FROM " + tb.Locks + " WITH (UPDLOCK, HOLDLOCK) WHERE name = @p1)"},
			"Acquire": {"UPDATE " + tb.Locks + " SET owner = @p1, instance = @p2, token = token + 1, heartbeat = 0,",
				"acquired_at = " + now + ", renewed_at = " + now + ", expires_at = " + ttl("@p3"), "WHERE name = @p4 AND expires_at <= " + now},
			"Token": {"SELECT token FROM " + tb.Locks + " WHERE name = @p1"},
			"Renew": {"UPDATE " + tb.Locks + " SET expires_at = " + ttl("@p1") + ", renewed_at = " + now + ", heartbeat = heartbeat + 1",
				"WHERE name = @p2 AND owner = @p3 AND instance = @p4 AND token = @p5 AND expires_at > " + now},
			"Release": {"UPDATE " + tb.Locks + " SET expires_at = " + now,
				"WHERE name = @p1 AND owner = @p2 AND instance = @p3 AND token = @p4 AND expires_at > " + now},
			"List": {"SELECT name, owner, instance, token, TODATETIMEOFFSET(acquired_at, 0), TODATETIMEOFFSET(renewed_at, 0), TODATETIMEOFFSET(expires_at, 0),",
				"CASE WHEN expires_at > " + now + " THEN 1 ELSE 0 END FROM " + tb.Locks + " ORDER BY name"},
			"Fence": {"SELECT token FROM " + tb.Locks + " WITH (UPDLOCK, ROWLOCK)\n",
				"WHERE name = @p1 AND owner = @p2 AND instance = @p3 AND token = @p4 AND expires_at > " + now},
		} {
			for _, frag := range frags {
				require.Contains(t, q.Statements()[name].SQL, frag, name)
			}
		}
		// The caller reads the rows affected of these batches.
		for _, s := range []string{q.Acquire, q.Renew, q.Release} {
			require.True(t, strings.HasPrefix(s, "SET NOCOUNT OFF;\nUPDATE "+tb.Locks+" SET "), s)
			require.Equal(t, 1, strings.Count(s, "UPDATE "), "one statement counts rows")
		}
		// Fence keeps the row locked against the UPDATEs until the
		// transaction ends: an update lock, held (UPDLOCK holds it to the
		// end of the transaction), never skipped or waived.
		require.Equal(t, 1, strings.Count(q.Fence, "UPDLOCK"))
		require.NotContains(t, q.Fence, "NOWAIT")
		for _, s := range []string{q.Token, q.List} {
			require.NotContains(t, s, "WITH (", "plain readers take no hints")
		}
	}
}
