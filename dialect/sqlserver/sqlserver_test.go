package sqlserver

import (
	"context"
	"database/sql"
	"database/sql/driver"
	"errors"
	"fmt"
	"github.com/tandem-go/tandem/internal/fakesql"
	"io"
	"reflect"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"
	"unsafe"

	mssql "github.com/microsoft/go-mssqldb"
	"github.com/stretchr/testify/require"

	"github.com/tandem-go/tandem/dialect"
	"github.com/tandem-go/tandem/internal/sqldialect"
	"github.com/tandem-go/tandem/journal"
)

func tablesFor(t *testing.T, prefix string) sqldialect.Tables {
	t.Helper()
	tb, err := sqldialect.NewTables("Prefix", prefix)
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

var tableName = regexp.MustCompile(`\b[a-z0-9_]*(journal|global_revision|meta|local_revisions|locks|pending)\b`)

// skipOpenHint is the only READPAST the dialect may use: on the pending
// table, with READCOMMITTEDLOCK (READPAST alone fails under
// READ_COMMITTED_SNAPSHOT).
const skipOpenHint = "WITH (READCOMMITTEDLOCK, READPAST)"

// checkStatement asserts what every statement of the dialect must hold:
// the placeholders are exactly @p1..@pN (but unused), no other placeholder
// style, no dirty-read hint, READPAST only as skipOpenHint on the pending
// table, and every table name carries the prefix.
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
	upper := strings.ToUpper(strings.ReplaceAll(query, prefix+"pending "+skipOpenHint, prefix+"pending"))
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
		"Read": `SELECT TOP (@p2) revision, node_id, instance, producer, payload, TODATETIMEOFFSET(created_at, 0) AS created_at FROM tandem_journal WHERE revision > @p1 ORDER BY revision`,
		"Poll": `SELECT m.epoch, m.tail, g.revision, CASE WHEN EXISTS (SELECT 1 FROM tandem_pending WITH (READCOMMITTEDLOCK, READPAST)) THEN 1 ELSE 0 END, ` +
			`r.revision, r.node_id, r.instance, r.producer, r.payload, r.created_at FROM tandem_meta m CROSS JOIN tandem_global_revision g ` +
			`LEFT JOIN (SELECT TOP (@p2) revision, node_id, instance, producer, payload, TODATETIMEOFFSET(created_at, 0) AS created_at FROM tandem_journal WHERE revision > @p1 ORDER BY revision) r ` +
			`ON 1 = 1 WHERE m.id = 1 AND g.id = 1 ORDER BY r.revision`,
		// The same without the look at the pending table.
		"PollRecords": `SELECT m.epoch, m.tail, g.revision, 0, ` +
			`r.revision, r.node_id, r.instance, r.producer, r.payload, r.created_at FROM tandem_meta m CROSS JOIN tandem_global_revision g ` +
			`LEFT JOIN (SELECT TOP (@p2) revision, node_id, instance, producer, payload, TODATETIMEOFFSET(created_at, 0) AS created_at FROM tandem_journal WHERE revision > @p1 ORDER BY revision) r ` +
			`ON 1 = 1 WHERE m.id = 1 AND g.id = 1 ORDER BY r.revision`,
		"Head":        `SELECT revision FROM tandem_global_revision WHERE id = 1`,
		"Meta":        `SELECT epoch, tail, schema_version FROM tandem_meta WHERE id = 1`,
		"SetTail":     `UPDATE tandem_meta SET tail = @p1 WHERE id = 1 AND tail < @p1`,
		"MinRevision": `SELECT MIN(revision) FROM tandem_journal WHERE revision >= @p1`,
		"DeleteRange": "SET NOCOUNT OFF;\nWHILE 1 = 1\nBEGIN\n" +
			"\tDELETE TOP (2000) FROM tandem_journal WHERE revision >= @p1 AND revision < @p2;\n" +
			"\tIF @@ROWCOUNT < 2000 BREAK;\nEND;",
		"LockHead":  `SELECT revision FROM tandem_global_revision WITH (UPDLOCK, ROWLOCK) WHERE id = 1`,
		"FindBatch": `SELECT MIN(revision), COUNT(*) FROM tandem_journal WHERE revision > @p1 AND batch_id = @p2`,
		// UPDLOCK waits and then reads the committed row at any level but
		// SNAPSHOT, which no session has unless it asks for it.
		"BeginLookup": "",
		// A commit is published after its log flush: nothing to settle.
		"Settle":       "",
		"PendingAny":   `SELECT TOP (1) 1 FROM tandem_pending WITH (READCOMMITTEDLOCK, READPAST)`,
		"PendingCount": `SELECT COUNT(*) FROM tandem_pending WHERE handle = @p1`,
		"PendingOldest": `SELECT COUNT_BIG(*), DATEDIFF(SECOND, MIN(created_at), SYSUTCDATETIME()) * 1000.0 ` +
			`FROM tandem_pending WITH (READCOMMITTEDLOCK, READPAST)`,
		"LoadPosition": `SELECT revision, epoch, TODATETIMEOFFSET(updated_at, 0), TODATETIMEOFFSET(evicted_at, 0) FROM tandem_local_revisions WHERE node_id = @p1`,
		"SavePosition": "SET XACT_ABORT ON;\nBEGIN TRANSACTION;\n" +
			"UPDATE tandem_local_revisions WITH (UPDLOCK, SERIALIZABLE) SET revision = @p2, epoch = @p3, updated_at = SYSUTCDATETIME(), evicted_at = NULL WHERE node_id = @p1;\n" +
			"IF @@ROWCOUNT = 0\n" +
			"\tINSERT INTO tandem_local_revisions (node_id, revision, epoch, updated_at, evicted_at) VALUES (@p1, @p2, @p3, SYSUTCDATETIME(), NULL);\n" +
			"COMMIT TRANSACTION;",
		"ListPositions":   `SELECT node_id, revision, epoch, TODATETIMEOFFSET(updated_at, 0), TODATETIMEOFFSET(evicted_at, 0) FROM tandem_local_revisions ORDER BY node_id`,
		"EvictPosition":   "SET NOCOUNT OFF;\nUPDATE tandem_local_revisions SET evicted_at = SYSUTCDATETIME() WHERE node_id = @p1 AND revision = @p2 AND evicted_at IS NULL;",
		"UnevictPosition": "SET NOCOUNT OFF;\nUPDATE tandem_local_revisions SET evicted_at = NULL WHERE node_id = @p1 AND revision = @p2 AND evicted_at IS NOT NULL;",
		"DeletePosition":  `DELETE FROM tandem_local_revisions WHERE node_id = @p1`,
		"CopyPosition": "SET NOCOUNT OFF;\nINSERT INTO tandem_local_revisions (node_id, revision, epoch, updated_at, evicted_at)\n" +
			"SELECT @p1, revision, epoch, SYSUTCDATETIME(), evicted_at FROM tandem_local_revisions WHERE node_id = @p2;",
		"MembersBehind": "SELECT COUNT(*) FROM tandem_locks l LEFT JOIN tandem_local_revisions r ON r.node_id = SUBSTRING(l.name, 8, 128)\n" +
			"WHERE l.name LIKE N'member.%' AND l.name <> N'member.' + @p1 AND l.expires_at > SYSUTCDATETIME()\n" +
			"AND (r.node_id IS NULL OR r.evicted_at IS NOT NULL OR r.revision < @p2 OR r.epoch <> (SELECT epoch FROM tandem_meta WHERE id = 1))",
	}
	statements := q.Statements()
	require.Len(t, statements, len(golden), "every statement has a golden text")
	for name, f := range statements {
		require.Equal(t, golden[name], f.SQL, name)
	}
}

func TestQueriesShape(t *testing.T) {
	for _, prefix := range []string{"tandem_", "t0123456789ab_", "x"} {
		tb := tablesFor(t, prefix)
		q := Dialect.Queries(tb)
		for name, f := range q.Statements() {
			if name == "Settle" || name == "BeginLookup" {
				require.Empty(t, f.SQL, "a fully durable commit is published after its log flush")
				continue
			}
			checkStatement(t, name, f.SQL, prefix, f.Args)
		}
		require.Contains(t, q.Read, "TOP (@p2)", "the limit is the second argument")
		require.Contains(t, q.Read, "WHERE revision > @p1 ORDER BY revision")
		require.Contains(t, q.Read, "SELECT TOP (@p2) revision, node_id, instance, producer, payload, ", "instance is the third column")
		for _, s := range []string{q.Read, q.LoadPosition, q.ListPositions} {
			require.Contains(t, s, "TODATETIMEOFFSET(", "times are returned with their offset")
		}
		for _, s := range []string{q.LoadPosition, q.ListPositions} {
			require.Contains(t, s, ", TODATETIMEOFFSET(updated_at, 0), TODATETIMEOFFSET(evicted_at, 0) FROM ", "evicted_at follows updated_at")
		}
		// Saving a position clears the eviction marker; copying keeps it.
		require.Equal(t, 1, strings.Count(q.SavePosition, "evicted_at = NULL"))
		require.Contains(t, q.SavePosition, "VALUES (@p1, @p2, @p3, SYSUTCDATETIME(), NULL)")
		require.Contains(t, q.CopyPosition, "SELECT @p1, revision, epoch, SYSUTCDATETIME(), evicted_at FROM "+tb.LocalRevisions+" WHERE node_id = @p2;")
		// EvictPosition: args (node id, revision); the rows affected decide.
		require.Equal(t, "SET NOCOUNT OFF;\nUPDATE "+tb.LocalRevisions+" SET evicted_at = SYSUTCDATETIME() WHERE node_id = @p1 AND revision = @p2 AND evicted_at IS NULL;", q.EvictPosition)
		// UnevictPosition: the same arguments; it clears only a marker
		// still set at that revision, and the rows affected decide.
		require.Equal(t, "SET NOCOUNT OFF;\nUPDATE "+tb.LocalRevisions+" SET evicted_at = NULL WHERE node_id = @p1 AND revision = @p2 AND evicted_at IS NOT NULL;", q.UnevictPosition)
		for _, s := range []string{q.SavePosition, q.CopyPosition, q.EvictPosition} {
			require.Contains(t, s, "SYSUTCDATETIME()", "database time in UTC")
			require.NotContains(t, s, "GETDATE()")
		}
		// FindBatch: args (after, batch id), one row (MIN, COUNT).
		require.Equal(t, "SELECT MIN(revision), COUNT(*) FROM "+tb.Journal+" WHERE revision > @p1 AND batch_id = @p2", q.FindBatch)
		// LockHead holds the counter row until the transaction ends (an
		// update lock, which the append's UPDATE waits for), never skips it.
		require.Equal(t, "SELECT revision FROM "+tb.GlobalRevision+" WITH (UPDLOCK, ROWLOCK) WHERE id = 1", q.LockHead)
		// The pending table's pollers skip rows of open transactions;
		// PendingCount must not skip the rows a relay in flight holds
		// (they are still committed pending rows).
		require.Equal(t, "SELECT TOP (1) 1 FROM "+tb.Pending+" "+skipOpenHint, q.PendingAny)
		require.True(t, strings.HasSuffix(q.PendingOldest, " FROM "+tb.Pending+" "+skipOpenHint), q.PendingOldest)
		require.Equal(t, "SELECT COUNT(*) FROM "+tb.Pending+" WHERE handle = @p1", q.PendingCount)
		for _, s := range []string{q.Read, q.FindBatch, q.Head, q.MinRevision, q.PendingCount} {
			require.NotContains(t, s, "READPAST", "a skipped journal row would be a lost record")
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
	checkStatement(t, "seedMeta", seedMeta(tb), "tandem_", 1)
	// The meta row of the first release: schema version 1, the epoch the
	// only argument.
	require.Equal(t, "INSERT INTO tandem_meta (id, epoch, tail, schema_version) SELECT 1, @p1, 1, 1\n"+
		"WHERE NOT EXISTS (SELECT 1 FROM tandem_meta WITH (UPDLOCK, HOLDLOCK) WHERE id = 1)", seedMeta(tb))
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
				// One INSERT, its rows from a derived table (no 1,000-row
				// limit); node id, instance and batch id go with every row.
				require.Equal(t, 1, strings.Count(s, "INSERT INTO"))
				require.Contains(t, s, "INSERT INTO tandem_journal (revision, node_id, instance, batch_id, producer, payload, created_at)\n"+
					"\t\tSELECT @last - @p1 + v.k, @p2, @p4, @p5, v.producer, v.payload, SYSUTCDATETIME()\n\t\tFROM (VALUES (1, @p6, @p7)")
				require.Contains(t, s, fmt.Sprintf("(%d, @p%d, @p%d)) AS v (k, producer, payload);", n, nargs-1, nargs))
				for _, must := range []string{"SET XACT_ABORT ON;", "BEGIN TRANSACTION;", "COMMIT TRANSACTION;", "BEGIN CATCH", "THROW;", "SELECT @last - @p1 + 1;"} {
					require.Contains(t, s, must)
				}
				require.True(t, strings.HasSuffix(s, "SELECT @last - @p1 + 1;"), "the result is the batch's last statement")
				// Nothing after the COMMIT can fail and be reported as an
				// error that seems to prove nothing was written.
				commit := strings.Index(s, "COMMIT TRANSACTION;")
				require.NotContains(t, s[commit:], "INSERT")
				require.NotContains(t, s[commit:], "UPDATE")
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
		INSERT INTO tandem_journal (revision, node_id, instance, batch_id, producer, payload, created_at)
		SELECT @last - @p1 + v.k, @p2, @p4, @p5, v.producer, v.payload, SYSUTCDATETIME()
		FROM (VALUES (1, @p6, @p7), (2, @p8, @p9)) AS v (k, producer, payload);
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

func request(n int, expect int64) sqldialect.AppendRequest {
	tb, _ := sqldialect.NewTables("Prefix", "tandem_")
	r := sqldialect.AppendRequest{Tables: tb, NodeID: "node-a", Instance: "inst-1", BatchID: 77, ExpectHead: expect}
	for i := range n {
		r.Entries = append(r.Entries, sqldialect.Entry{Producer: "p" + strconv.Itoa(i), Payload: []byte{byte(i)}})
	}
	return r
}

func TestAppendArgs(t *testing.T) {
	r := request(3, -1)
	r.Entries[1].Payload = nil
	args := appendArgs(r)
	require.Len(t, args, appendParams+6)
	// @p1 n, @p2 node id, @p3 expected head, @p4 instance, @p5 batch id.
	require.Equal(t, []any{int64(3), "node-a", int64(-1), "inst-1", int64(77)}, args[:appendParams])
	require.Equal(t, []any{"p0", []byte{0}}, args[5:7], "@p6, @p7: the first entry")
	require.NotNil(t, args[8], "a nil payload is sent as an empty one, not NULL")
	require.Equal(t, []byte{}, args[8])
	require.Equal(t, []any{"p2", []byte{2}}, args[9:11])
}

// sessionKilled is a fatal server error as go-mssqldb reports a DONE token with
// the server-error status (the session was KILLed, a severe error severed
// it), wrapping the errors of the response.
var sessionKilled = fatalError(mssql.Error{Number: 596, Class: 21, Message: "Cannot continue the execution because the session is in the kill state."})

// fatalError returns an mssql.ServerError wrapping e. Its only field is
// unexported (go-mssqldb makes one only from a server's reply), so it is
// set through reflection.
func fatalError(e mssql.Error) mssql.ServerError {
	var s mssql.ServerError
	f := reflect.ValueOf(&s).Elem().Field(0)
	reflect.NewAt(f.Type(), unsafe.Pointer(f.UnsafeAddr())).Elem().Set(reflect.ValueOf(e))
	return s
}

// requireReachable asserts that err reaches cause. mssql.Error and
// mssql.ServerError hold a slice, so errors.Is cannot compare them: they
// are looked for with errors.As.
func requireReachable(t *testing.T, err, cause error) {
	t.Helper()
	switch c := cause.(type) {
	case mssql.Error:
		var got mssql.Error
		require.ErrorAs(t, err, &got)
		require.Equal(t, c, got)
	case mssql.ServerError:
		var got mssql.ServerError
		require.ErrorAs(t, err, &got)
		require.Equal(t, c, got)
	default:
		require.ErrorIs(t, err, cause)
	}
}

func TestAppend(t *testing.T) {
	ctx := context.Background()
	run := func(t *testing.T, r sqldialect.AppendRequest, rep fakesql.Reply) (*fakesql.DB, int64, error) {
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
		c := f.Calls()[0]
		require.Equal(t, appendSQL(request(3, -1).Tables, 3, false), c.Query)
		require.Len(t, c.Args, appendParams+6)
		for i, want := range []any{int64(3), "node-a", int64(-1), "inst-1", int64(77), "p0", []byte{0}} {
			require.Equal(t, want, c.Args[i].Value, "@p%d", i+1)
			require.Equal(t, i+1, c.Args[i].Ordinal)
		}
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
		require.ErrorContains(t, err, "no counter row")
		require.NotErrorIs(t, err, dialect.ErrHeadMismatch)
		require.NotErrorIs(t, err, dialect.ErrOutcomeUnknown, "the UPDATE matched nothing and the batch rolled back")
	})
	t.Run("nothing written", func(t *testing.T) {
		// Errors raised before the COMMIT; the CATCH block's THROW keeps
		// their number, and the journal discards the connection, which
		// rolls back whatever a batch-aborting error left open.
		for _, tc := range []struct {
			err   mssql.Error
			class error
		}{
			{mssql.Error{Number: 1222, Message: "Lock request time out period exceeded."}, dialect.ErrLockTimeout},
			{mssql.Error{Number: 1205, Message: "deadlock victim"}, dialect.ErrDeadlock},
			{mssql.Error{Number: 2627, Message: "Violation of PRIMARY KEY constraint"}, dialect.ErrUniqueViolation},
			{mssql.Error{Number: 2601, Message: "duplicate key row"}, dialect.ErrUniqueViolation},
			{mssql.Error{Number: 208, Message: "Invalid object name"}, nil},
			{mssql.Error{Number: 207, Message: "Invalid column name"}, nil},
			{mssql.Error{Number: 229, Message: "permission denied"}, nil},
			{mssql.Error{Number: 102, Message: "Incorrect syntax"}, nil},
			// The class sits earlier in the chain (the driver reports the
			// last error of the response).
			{mssql.Error{Number: 3998, All: []mssql.Error{{Number: 1222}, {Number: 3998}}}, dialect.ErrLockTimeout},
		} {
			f, _, err := run(t, request(1, -1), fakesql.Reply{Err: tc.err})
			require.Error(t, err)
			require.NotErrorIs(t, err, dialect.ErrOutcomeUnknown, "%d ends the batch before its COMMIT", tc.err.Number)
			var oe *sqldialect.OutcomeError
			require.False(t, errors.As(err, &oe))
			if tc.class != nil {
				require.ErrorIs(t, err, tc.class, "%d is still translated", tc.err.Number)
			}
			var msErr mssql.Error
			require.ErrorAs(t, err, &msErr)
			require.Len(t, f.Calls(), 1, "no rollback is sent: the caller discards the connection")
		}
	})
	t.Run("open outcome", func(t *testing.T) {
		// Anything that may have come after the COMMIT.
		for _, cause := range []error{
			io.ErrUnexpectedEOF,                // the connection was lost
			context.DeadlineExceeded,           // an attention was sent
			context.Canceled,                   // likewise
			sessionKilled,                      // a fatal error severed the connection
			mssql.Error{Number: 0},             // made up by the driver
			mssql.Error{Number: 9002},          // the log is full: may come at COMMIT
			mssql.Error{Number: 596},           // the session is in the kill state
			mssql.Error{Number: 3980},          // the batch was aborted (an abort signal from the client)
			fmt.Errorf("read: %w", io.EOF),     // wrapped
			errors.New("some network trouble"), // unknown
		} {
			_, _, err := run(t, request(1, -1), fakesql.Reply{Err: cause})
			require.ErrorIs(t, err, dialect.ErrOutcomeUnknown, "%v", cause)
			var oe *sqldialect.OutcomeError
			require.ErrorAs(t, err, &oe, "%v", cause)
			requireReachable(t, oe.Err, cause)
		}
		// No result at all: something ended the batch without an error.
		_, _, err := run(t, request(1, -1), fakesql.Reply{})
		require.ErrorIs(t, err, dialect.ErrOutcomeUnknown)
		require.ErrorIs(t, err, sql.ErrNoRows)
		// A fatal error wraps the server's errors, however they read: the
		// session was severed, perhaps after the COMMIT, and a lock
		// timeout or deadlock in the chain does not prove otherwise.
		for _, n := range []int32{1222, 1205, 2627} {
			cause := fatalError(mssql.Error{Number: n, All: []mssql.Error{{Number: n}, {Number: 596}}})
			_, _, err = run(t, request(1, -1), fakesql.Reply{Err: fmt.Errorf("x: %w", cause)})
			require.ErrorIs(t, err, dialect.ErrOutcomeUnknown, "fatal %d", n)
			var sErr mssql.ServerError
			require.ErrorAs(t, err, &sErr)
			var msErr mssql.Error
			require.ErrorAs(t, err, &msErr, "the server's errors stay reachable")
			require.Equal(t, n, msErr.Number)
		}
	})
	t.Run("not sent", func(t *testing.T) {
		// go-mssqldb returns driver.ErrBadConn (or a RetryableError that
		// matches it) only before or while sending the request.
		_, _, err := run(t, request(1, -1), fakesql.Reply{Err: driver.ErrBadConn})
		require.ErrorIs(t, err, driver.ErrBadConn)
		require.NotErrorIs(t, err, dialect.ErrOutcomeUnknown)

		// A connection closed already.
		f, db := fakesql.New(t, nil)
		conn, err := db.Conn(ctx)
		require.NoError(t, err)
		require.NoError(t, conn.Close())
		_, err = Dialect.Append(ctx, conn, request(1, -1))
		require.ErrorIs(t, err, sql.ErrConnDone)
		require.NotErrorIs(t, err, dialect.ErrOutcomeUnknown)
		require.Empty(t, f.Calls())
	})
	t.Run("too many entries", func(t *testing.T) {
		f, _, err := run(t, request(maxEntries+1, -1), fakesql.Reply{})
		require.Error(t, err)
		require.NotErrorIs(t, err, dialect.ErrOutcomeUnknown)
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

func TestResetConn(t *testing.T) {
	ctx := context.Background()
	f, db := fakesql.New(t, nil)
	conn, err := db.Conn(ctx)
	require.NoError(t, err)
	defer conn.Close()
	require.NoError(t, Dialect.PrepareConn(ctx, conn, time.Second))
	require.NoError(t, Dialect.ResetConn(ctx, conn))
	require.Equal(t, []string{"SET LOCK_TIMEOUT 1000", "SET LOCK_TIMEOUT -1"}, f.Queries(), "back to the default: wait forever")
	require.Empty(t, f.Calls()[1].Args, "no arguments: a plain batch, so the setting outlives it")

	_, db = fakesql.New(t, func(string, []driver.NamedValue) fakesql.Reply {
		return fakesql.Reply{Err: mssql.Error{Number: 1205}}
	})
	conn, err = db.Conn(ctx)
	require.NoError(t, err)
	defer conn.Close()
	require.ErrorIs(t, Dialect.ResetConn(ctx, conn), dialect.ErrDeadlock, "translated")
}

func TestTranslate(t *testing.T) {
	d := Dialect
	require.NoError(t, d.Translate(nil))
	plain := errors.New("plain")
	require.Equal(t, plain, d.Translate(plain))
	other := mssql.Error{Number: 207} // invalid column name
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
		{208, dialect.ErrNoSuchTable},
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
