package oracle

import (
	"context"
	"database/sql"
	"database/sql/driver"
	"errors"
	"fmt"
	"github.com/tandem-go/tandem/internal/fakesql"
	"io"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"

	goora "github.com/sijms/go-ora/v2"
	"github.com/sijms/go-ora/v2/network"
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

var (
	literal     = regexp.MustCompile(`'[^']*'`)
	placeholder = regexp.MustCompile(`:(\d+)\b`)
	tableName   = regexp.MustCompile(`\b[a-z0-9_]*(journal|global_revision|meta|local_revisions|locks)\b`)
)

// binds returns the placeholders of query in order of appearance (string
// literals such as '+00:00' are not placeholders).
func binds(query string) []int {
	var out []int
	for _, m := range placeholder.FindAllStringSubmatch(literal.ReplaceAllString(query, "''"), -1) {
		n, _ := strconv.Atoi(m[1])
		out = append(out, n)
	}
	return out
}

func isPLSQL(query string) bool {
	return strings.HasPrefix(query, "DECLARE") || strings.HasPrefix(query, "BEGIN")
}

// checkStatement asserts what every statement of the dialect must hold.
// Arguments are bound by position: in SQL each occurrence of a placeholder
// takes an argument, in PL/SQL each distinct name does. Every statement
// here uses each of :1..:N exactly once, in order, so both rules agree.
func checkStatement(t *testing.T, name, query, prefix string, nargs int) {
	t.Helper()
	require.NotEmpty(t, query, name)
	got := binds(query)
	for i, n := range got {
		if n != i+1 {
			t.Fatalf("%s: placeholder %d is :%d, want :%d (binds %v)", name, i+1, n, i+1, got)
		}
	}
	require.Len(t, got, nargs, "%s: placeholders", name)
	for _, bad := range []string{"?", "@p", "$1"} {
		require.NotContains(t, query, bad, "%s: foreign placeholder", name)
	}
	if isPLSQL(query) {
		require.True(t, strings.HasSuffix(query, "END;"), "%s: a PL/SQL block ends with END;", name)
	} else {
		require.False(t, strings.HasSuffix(strings.TrimSpace(query), ";"), "%s: Oracle rejects a SQL statement ending in ';'", name)
	}
	for _, m := range tableName.FindAllStringSubmatch(query, -1) {
		require.Equal(t, prefix+m[1], m[0], "%s: table name without the prefix", name)
	}
	require.NotContains(t, query, `"`, "%s: identifiers are unquoted (they fold to upper case)", name)
}

func TestQueriesGolden(t *testing.T) {
	q := Dialect.Queries(tablesFor(t, "tandem_"))
	golden := map[string]string{
		"Read":           `SELECT revision, node_id, producer, payload, FROM_TZ(created_at, '+00:00') FROM tandem_journal WHERE revision > :1 ORDER BY revision FETCH FIRST :2 ROWS ONLY`,
		"Head":           `SELECT revision FROM tandem_global_revision WHERE id = 1`,
		"Meta":           `SELECT epoch, tail, schema_version FROM tandem_meta WHERE id = 1`,
		"SetTail":        `UPDATE tandem_meta SET tail = GREATEST(tail, :1) WHERE id = 1`,
		"DeleteRange":    `DELETE FROM tandem_journal WHERE revision >= :1 AND revision < :2`,
		"MinRevision":    `SELECT MIN(revision) FROM tandem_journal`,
		"LoadPosition":   `SELECT revision, epoch, FROM_TZ(updated_at, '+00:00') FROM tandem_local_revisions WHERE node_id = :1`,
		"ListPositions":  `SELECT node_id, revision, epoch, FROM_TZ(updated_at, '+00:00') FROM tandem_local_revisions ORDER BY NLSSORT(node_id, 'NLS_SORT=BINARY')`,
		"DeletePosition": `DELETE FROM tandem_local_revisions WHERE node_id = :1`,
		"CopyPosition": "INSERT INTO tandem_local_revisions (node_id, revision, epoch, updated_at)\n" +
			"SELECT :1, revision, epoch, SYS_EXTRACT_UTC(SYSTIMESTAMP) FROM tandem_local_revisions WHERE node_id = :2",
		"SavePosition": `DECLARE
	v_node  VARCHAR2(64) := :1;
	v_rev   NUMBER(19) := :2;
	v_epoch VARCHAR2(64) := :3;
BEGIN
	MERGE INTO tandem_local_revisions t USING dual ON (t.node_id = v_node)
	WHEN MATCHED THEN UPDATE SET t.revision = v_rev, t.epoch = v_epoch, t.updated_at = SYS_EXTRACT_UTC(SYSTIMESTAMP)
	WHEN NOT MATCHED THEN INSERT (node_id, revision, epoch, updated_at) VALUES (v_node, v_rev, v_epoch, SYS_EXTRACT_UTC(SYSTIMESTAMP));
EXCEPTION
	WHEN DUP_VAL_ON_INDEX THEN
		UPDATE tandem_local_revisions SET revision = v_rev, epoch = v_epoch, updated_at = SYS_EXTRACT_UTC(SYSTIMESTAMP) WHERE node_id = v_node;
END;`,
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
		require.True(t, strings.HasSuffix(q.Read, "WHERE revision > :1 ORDER BY revision FETCH FIRST :2 ROWS ONLY"))
		for _, s := range []string{q.Read, q.LoadPosition, q.ListPositions} {
			require.Contains(t, s, "FROM_TZ(", "times are returned with their zone")
		}
		for _, s := range []string{q.SavePosition, q.CopyPosition} {
			require.Contains(t, s, "SYS_EXTRACT_UTC(SYSTIMESTAMP)", "database time in UTC")
			require.NotContains(t, s, "SYSDATE")
		}
	}
}

func TestSchemaShape(t *testing.T) {
	tb := tablesFor(t, "tandem_")
	tbs := tables(tb)
	require.Len(t, tbs, 5)
	require.Equal(t, []string{tb.Journal, tb.GlobalRevision, tb.Meta, tb.LocalRevisions, tb.Locks},
		[]string{tbs[0].name, tbs[1].name, tbs[2].name, tbs[3].name, tbs[4].name})
	for _, x := range tbs {
		checkStatement(t, x.name, x.ddl, "tandem_", 0)
		require.True(t, strings.HasPrefix(x.ddl, "CREATE TABLE "+x.name+" ("), x.ddl)
		require.LessOrEqual(t, len(x.name), 30, "Oracle before 12.2 allows 30-byte names")
	}
	require.Contains(t, tbs[0].ddl, "payload    BLOB,")
	require.Contains(t, tbs[0].ddl, "created_at TIMESTAMP(6) NOT NULL")
	require.Contains(t, tbs[0].ddl, "revision   NUMBER(19) NOT NULL PRIMARY KEY")
	require.Contains(t, tbs[3].ddl, "node_id    VARCHAR2(64) NOT NULL PRIMARY KEY")
	// Oracle stores '' as NULL: a column that may receive an empty string
	// must be nullable. A saved position may have an empty epoch.
	require.Contains(t, tbs[3].ddl, "\n\tepoch      VARCHAR2(64),\n")
	require.Equal(t, "CREATE TABLE tandem_locks (\n"+
		"\tname        VARCHAR2(128) NOT NULL PRIMARY KEY,\n"+
		"\towner       VARCHAR2(64),\n"+
		"\tinstance    VARCHAR2(64),\n"+
		"\ttoken       NUMBER(19) NOT NULL,\n"+
		"\theartbeat   NUMBER(19) NOT NULL,\n"+
		"\tacquired_at TIMESTAMP(6) NOT NULL,\n"+
		"\trenewed_at  TIMESTAMP(6) NOT NULL,\n"+
		"\texpires_at  TIMESTAMP(6) NOT NULL)", tbs[4].ddl)
	checkStatement(t, "seedCounter", seedCounter(tb), "tandem_", 0)
	checkStatement(t, "seedMeta", seedMeta(tb), "tandem_", 2)

	longest := tablesFor(t, strings.Repeat("p", 15))
	for _, x := range tables(longest) {
		require.LessOrEqual(t, len(x.name), 30, x.name)
	}
}

func TestAppendSQL(t *testing.T) {
	tb := tablesFor(t, "tandem_")
	for _, n := range []int{1, 3, 1000} {
		blob := make([]bool, n)
		for i := range blob {
			blob[i] = i%3 == 1
		}
		t.Run(strconv.Itoa(n), func(t *testing.T) {
			s := appendSQL(tb, blob, 7)
			nargs := appendBinds + 2*n
			checkStatement(t, "append", s, "tandem_", nargs)
			require.LessOrEqual(t, nargs, 32768, "within PL/SQL's bind limit")
			require.Contains(t, s, "SELECT revision INTO v_rev FROM tandem_global_revision WHERE id = 1 FOR UPDATE WAIT 7;")
			require.Equal(t, 1, strings.Count(s, "UPDATE tandem_global_revision SET revision = v_rev + v_n WHERE id = 1;"))
			require.Equal(t, 1, strings.Count(s, "COMMIT;"))
			require.Contains(t, s, fmt.Sprintf("\t:%d := v_first;\n", nargs), "the OUT bind is last")
			require.Contains(t, s, "WHEN OTHERS THEN\n\t\tROLLBACK;\n\t\tRAISE;")
			blobs := 0
			for _, b := range blob {
				if b {
					blobs++
				}
			}
			require.Equal(t, blobs, strings.Count(s, "\t\tput_blob("))
			require.Equal(t, n-blobs, strings.Count(s, "\t\tput_raw("))
			require.Contains(t, s, "\t\tput_raw(1, :4, :5);\n")
			require.Contains(t, s, fmt.Sprintf("(%d, :%d, :%d);\n\t\tCOMMIT;", n, nargs-2, nargs-1))
		})
	}
	require.GreaterOrEqual(t, maxEntries, journal.MaxAppendEntries, "a full group commit fits one block")
}

func TestAppendSQLGolden(t *testing.T) {
	got := appendSQL(tablesFor(t, "tandem_"), []bool{false, true}, 10)
	want := `DECLARE
	v_n     NUMBER(19) := :1;
	v_head  NUMBER(19) := :2;
	v_node  VARCHAR2(64) := :3;
	v_rev   NUMBER(19);
	v_first NUMBER(19) := -1;
	v_ts    TIMESTAMP(6);
	PROCEDURE put_raw(k PLS_INTEGER, p VARCHAR2, d RAW) IS
	BEGIN
		INSERT INTO tandem_journal (revision, node_id, producer, payload, created_at) VALUES (v_rev + k, v_node, p, d, v_ts);
	END;
	PROCEDURE put_blob(k PLS_INTEGER, p VARCHAR2, d BLOB) IS
	BEGIN
		INSERT INTO tandem_journal (revision, node_id, producer, payload, created_at) VALUES (v_rev + k, v_node, p, d, v_ts);
	END;
BEGIN
	SELECT revision INTO v_rev FROM tandem_global_revision WHERE id = 1 FOR UPDATE WAIT 10;
	IF v_head >= 0 AND v_rev <> v_head THEN
		ROLLBACK;
	ELSE
		SELECT SYS_EXTRACT_UTC(SYSTIMESTAMP) INTO v_ts FROM dual;
		UPDATE tandem_global_revision SET revision = v_rev + v_n WHERE id = 1;
		put_raw(1, :4, :5);
		put_blob(2, :6, :7);
		COMMIT;
		v_first := v_rev + 1;
	END IF;
	:8 := v_first;
EXCEPTION
	WHEN OTHERS THEN
		ROLLBACK;
		RAISE;
END;`
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
	r := request(4, 9)
	r.Entries[1].Payload = nil
	r.Entries[2].Payload = make([]byte, maxRaw)
	r.Entries[3].Payload = make([]byte, maxRaw+1)
	var first int64
	args, blob := appendArgs(r, &first)
	require.Equal(t, []bool{false, false, false, true}, blob)
	require.Len(t, args, appendBinds+8)
	require.Equal(t, []any{int64(4), int64(9), "node-a", "p0", []byte{0}, "p1", []byte{}}, args[:7])
	require.Equal(t, make([]byte, maxRaw), args[8], "up to 2,000 bytes go as RAW")
	require.Equal(t, goora.Blob{Data: make([]byte, maxRaw+1)}, args[10], "larger payloads go as BLOB")
	require.Equal(t, sql.Out{Dest: &first}, args[11], "the OUT bind is last")
}

func TestWaitSeconds(t *testing.T) {
	for d, want := range map[time.Duration]int{
		10 * time.Second:        10,
		1500 * time.Millisecond: 2,
		time.Nanosecond:         1,
		0:                       10, // zero: the default lock timeout
		time.Second:             1,
		time.Second + 1:         2,
	} {
		require.Equal(t, want, waitSeconds(d), "%v", d)
	}
}

// appendReply answers the append block by setting its OUT bind to first,
// or with err.
func appendReply(first int64, err error) func(string, []driver.NamedValue) fakesql.Reply {
	return func(q string, args []driver.NamedValue) fakesql.Reply {
		if !strings.Contains(q, "FOR UPDATE WAIT") {
			return fakesql.Reply{}
		}
		if err != nil {
			return fakesql.Reply{Err: err}
		}
		out := args[len(args)-1].Value.(sql.Out)
		*out.Dest.(*int64) = first
		return fakesql.Reply{}
	}
}

func TestAppend(t *testing.T) {
	ctx := context.Background()
	run := func(t *testing.T, r dialect.AppendRequest, prepare time.Duration, handle func(string, []driver.NamedValue) fakesql.Reply) (*fakesql.DB, int64, error) {
		f, db := fakesql.New(t, handle)
		conn, err := db.Conn(ctx)
		require.NoError(t, err)
		defer conn.Close()
		require.NoError(t, Dialect.PrepareConn(ctx, conn, prepare))
		r.LockTimeout = prepare
		first, err := Dialect.Append(ctx, conn, r)
		return f, first, err
	}

	t.Run("ok", func(t *testing.T) {
		f, first, err := run(t, request(3, -1), 2500*time.Millisecond, appendReply(41, nil))
		require.NoError(t, err)
		require.EqualValues(t, 41, first)
		require.Len(t, f.Calls(), 1, "one round trip; PrepareConn runs nothing")
		require.Contains(t, f.Calls()[0].Query, "FOR UPDATE WAIT 3;", "the prepared lock timeout, rounded up")
		require.Len(t, f.Calls()[0].Args, appendBinds+6)
		require.Equal(t, "node-a", f.Calls()[0].Args[2].Value)
	})
	t.Run("unprepared", func(t *testing.T) {
		f, _, err := run(t, request(1, -1), 0, appendReply(1, nil))
		require.NoError(t, err)
		require.Contains(t, f.Calls()[0].Query, "FOR UPDATE WAIT 10;", "the default lock wait")
	})
	t.Run("head mismatch", func(t *testing.T) {
		f, _, err := run(t, request(1, 7), time.Second, appendReply(-1, nil))
		require.ErrorIs(t, err, dialect.ErrHeadMismatch)
		require.NotErrorIs(t, err, dialect.ErrOutcomeUnknown)
		require.EqualValues(t, 7, f.Calls()[0].Args[1].Value)
	})
	t.Run("server error rolled back", func(t *testing.T) {
		for code, class := range map[int]error{30006: dialect.ErrLockTimeout, 60: dialect.ErrDeadlock, 1: dialect.ErrUniqueViolation} {
			_, _, err := run(t, request(1, -1), time.Second, appendReply(0, &network.OracleError{ErrCode: code}))
			require.ErrorIs(t, err, class, "ORA-%05d", code)
			require.NotErrorIs(t, err, dialect.ErrOutcomeUnknown, "ORA-%05d: the block rolled back", code)
		}
	})
	t.Run("outcome unknown", func(t *testing.T) {
		for _, cause := range []error{
			&network.OracleError{ErrCode: 3113}, // end-of-file on communication channel
			&network.OracleError{ErrCode: 28},   // session killed
			&network.OracleError{ErrCode: 1013}, // cancelled
			network.ErrConnReset,
			io.EOF,
			context.DeadlineExceeded,
		} {
			_, _, err := run(t, request(1, -1), time.Second, appendReply(0, cause))
			require.ErrorIs(t, err, dialect.ErrOutcomeUnknown, "%v", cause)
			require.ErrorIs(t, err, cause)
		}
	})
	t.Run("not sent", func(t *testing.T) {
		_, _, err := run(t, request(1, -1), time.Second, appendReply(0, driver.ErrBadConn))
		require.Error(t, err)
		require.NotErrorIs(t, err, dialect.ErrOutcomeUnknown)
	})
	t.Run("too many entries", func(t *testing.T) {
		f, _, err := run(t, request(maxEntries+1, -1), time.Second, nil)
		require.Error(t, err)
		require.Empty(t, f.Calls())
	})
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
					return fakesql.Reply{Err: &network.OracleError{ErrCode: 942}} // table or view does not exist
				}
				return fakesql.Reply{Rows: [][]driver.Value{{"1"}}} // go-ora returns NUMBER as text
			case strings.HasPrefix(q, "CREATE TABLE tandem_meta"):
				return fakesql.Reply{Err: &network.OracleError{ErrCode: errNameUsed}}
			case strings.HasPrefix(q, "INSERT INTO tandem_global_revision"):
				return fakesql.Reply{Err: &network.OracleError{ErrCode: errUniqueViolation}}
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
			return fakesql.Reply{Rows: [][]driver.Value{{"1"}}}
		})
		require.NoError(t, Dialect.CreateSchema(ctx, db, tb, "e1"))
		require.Equal(t, []string{versionQuery}, f.Queries(), "an existing schema is only checked")
	})
	t.Run("too new", func(t *testing.T) {
		_, db := fakesql.New(t, func(string, []driver.NamedValue) fakesql.Reply {
			return fakesql.Reply{Rows: [][]driver.Value{{strconv.Itoa(dialect.SchemaVersion + 1)}}}
		})
		require.ErrorIs(t, Dialect.CreateSchema(ctx, db, tb, "e1"), dialect.ErrSchemaTooNew)
	})
	t.Run("denied", func(t *testing.T) {
		_, db := fakesql.New(t, func(q string, _ []driver.NamedValue) fakesql.Reply {
			if q == versionQuery {
				return fakesql.Reply{Err: &network.OracleError{ErrCode: 942}}
			}
			return fakesql.Reply{Err: &network.OracleError{ErrCode: 1031}} // insufficient privileges
		})
		err := Dialect.CreateSchema(ctx, db, tb, "e1")
		require.ErrorContains(t, err, "create table TANDEM_JOURNAL")
		require.Equal(t, 1031, code(err))
	})
}

func TestTranslate(t *testing.T) {
	d := Dialect
	require.NoError(t, d.Translate(nil))
	plain := errors.New("plain")
	require.Equal(t, plain, d.Translate(plain))
	other := &network.OracleError{ErrCode: 942}
	require.Equal(t, error(other), d.Translate(other), "an unclassified Oracle error is unchanged")

	for _, tc := range []struct {
		code  int
		class error
	}{
		{1, dialect.ErrUniqueViolation},
		{60, dialect.ErrDeadlock},
		{8177, dialect.ErrSerialization},
		{30006, dialect.ErrLockTimeout},
		{54, dialect.ErrLockTimeout},
		{2049, dialect.ErrLockTimeout},
	} {
		src := fmt.Errorf("wrapped: %w", &network.OracleError{ErrCode: tc.code, ErrMsg: "ORA-" + strconv.Itoa(tc.code)})
		err := d.Translate(src)
		require.ErrorIs(t, err, tc.class, "ORA-%05d", tc.code)
		var oraErr *network.OracleError
		require.ErrorAs(t, err, &oraErr, "the driver error stays reachable")
		require.Equal(t, tc.code, oraErr.ErrCode)
	}
}

func TestLockQueriesGolden(t *testing.T) {
	q := Dialect.LockQueries(tablesFor(t, "tandem_"))
	golden := map[string]string{
		"Seed": "INSERT INTO tandem_locks (name, owner, instance, token, heartbeat, acquired_at, renewed_at, expires_at)\n" +
			"SELECT n, NULL, NULL, 0, 0, SYS_EXTRACT_UTC(SYSTIMESTAMP), SYS_EXTRACT_UTC(SYSTIMESTAMP), SYS_EXTRACT_UTC(SYSTIMESTAMP) FROM (SELECT :1 AS n FROM dual) s\n" +
			"WHERE NOT EXISTS (SELECT 1 FROM tandem_locks l WHERE l.name = s.n)",
		"Acquire": "UPDATE tandem_locks SET owner = :1, instance = :2, token = token + 1, heartbeat = 0,\n" +
			"acquired_at = SYS_EXTRACT_UTC(SYSTIMESTAMP), renewed_at = SYS_EXTRACT_UTC(SYSTIMESTAMP), expires_at = SYS_EXTRACT_UTC(SYSTIMESTAMP) + NUMTODSINTERVAL(:3 / 1000, 'SECOND')\n" +
			"WHERE name = :4 AND expires_at <= SYS_EXTRACT_UTC(SYSTIMESTAMP)",
		"Token": "SELECT token FROM tandem_locks WHERE name = :1",
		"Renew": "UPDATE tandem_locks SET expires_at = SYS_EXTRACT_UTC(SYSTIMESTAMP) + NUMTODSINTERVAL(:1 / 1000, 'SECOND'), renewed_at = SYS_EXTRACT_UTC(SYSTIMESTAMP), heartbeat = heartbeat + 1\n" +
			"WHERE name = :2 AND DECODE(owner, :3, 1, 0) = 1 AND DECODE(instance, :4, 1, 0) = 1 AND token = :5 AND expires_at > SYS_EXTRACT_UTC(SYSTIMESTAMP)",
		"Release": "UPDATE tandem_locks SET expires_at = SYS_EXTRACT_UTC(SYSTIMESTAMP)\n" +
			"WHERE name = :1 AND DECODE(owner, :2, 1, 0) = 1 AND DECODE(instance, :3, 1, 0) = 1 AND token = :4 AND expires_at > SYS_EXTRACT_UTC(SYSTIMESTAMP)",
		"List": "SELECT name, owner, instance, token, FROM_TZ(acquired_at, '+00:00'), FROM_TZ(renewed_at, '+00:00'), FROM_TZ(expires_at, '+00:00'),\n" +
			"CASE WHEN expires_at > SYS_EXTRACT_UTC(SYSTIMESTAMP) THEN 1 ELSE 0 END FROM tandem_locks ORDER BY NLSSORT(name, 'NLS_SORT=BINARY')",
		"Fence": "SELECT token FROM tandem_locks\n" +
			"WHERE name = :1 AND DECODE(owner, :2, 1, 0) = 1 AND DECODE(instance, :3, 1, 0) = 1 AND token = :4 AND expires_at > SYS_EXTRACT_UTC(SYSTIMESTAMP) FOR UPDATE",
	}
	for name, f := range q.Statements() {
		require.Equal(t, golden[name], f.SQL, name)
	}
}

func TestLockQueriesShape(t *testing.T) {
	const now = "SYS_EXTRACT_UTC(SYSTIMESTAMP)"
	ttl := func(bind string) string { return now + " + NUMTODSINTERVAL(" + bind + " / 1000, 'SECOND')" }
	// holder matches owner and instance NULL-safely: Oracle stores '' as NULL.
	holder := func(name, node, instance, token string) string {
		return "WHERE name = " + name + " AND DECODE(owner, " + node + ", 1, 0) = 1 AND DECODE(instance, " + instance + ", 1, 0) = 1 AND token = " + token +
			" AND expires_at > " + now
	}
	for _, prefix := range []string{"tandem_", "t0123456789ab_", "x"} {
		tb := tablesFor(t, prefix)
		q := Dialect.LockQueries(tb)
		for name, f := range q.Statements() {
			// Binds :1..:N, each once, in the order of the field comment.
			checkStatement(t, name, f.SQL, prefix, f.Args)
			require.Regexp(t, `(FROM|INTO|UPDATE) `+tb.Locks+`\b`, f.SQL, "%s: runs on the prefix's locks table", name)
			require.NotContains(t, f.SQL, "SYSDATE", "%s: database time in UTC", name)
			require.NotRegexp(t, `(WHERE|AND) (owner|instance) = `, f.SQL, "%s: '' is NULL in Oracle: compare the holder with DECODE", name)
		}
		for name, frags := range map[string][]string{
			"Seed": {"INSERT INTO " + tb.Locks + " (name, owner, instance, token, heartbeat, acquired_at, renewed_at, expires_at)\nSELECT n, NULL, NULL, 0, 0, " + now + ", " + now + ", " + now,
				"FROM (SELECT :1 AS n FROM dual) s\nWHERE NOT EXISTS (SELECT 1 FROM " + tb.Locks + " l WHERE l.name = s.n)"},
			"Acquire": {"UPDATE " + tb.Locks + " SET owner = :1, instance = :2, token = token + 1, heartbeat = 0,",
				"acquired_at = " + now + ", renewed_at = " + now + ", expires_at = " + ttl(":3"), "WHERE name = :4 AND expires_at <= " + now},
			"Token":   {"SELECT token FROM " + tb.Locks + " WHERE name = :1"},
			"Renew":   {"UPDATE " + tb.Locks + " SET expires_at = " + ttl(":1") + ", renewed_at = " + now + ", heartbeat = heartbeat + 1", holder(":2", ":3", ":4", ":5")},
			"Release": {"UPDATE " + tb.Locks + " SET expires_at = " + now, holder(":1", ":2", ":3", ":4")},
			"List": {"SELECT name, owner, instance, token, FROM_TZ(acquired_at, '+00:00'), FROM_TZ(renewed_at, '+00:00'), FROM_TZ(expires_at, '+00:00'),",
				"CASE WHEN expires_at > " + now + " THEN 1 ELSE 0 END FROM " + tb.Locks + " ORDER BY NLSSORT(name, 'NLS_SORT=BINARY')"},
			"Fence": {"SELECT token FROM " + tb.Locks + "\n", holder(":1", ":2", ":3", ":4")},
		} {
			for _, frag := range frags {
				require.Contains(t, q.Statements()[name].SQL, frag, name)
			}
		}
		// Fence locks the row until the transaction ends, waiting for a
		// concurrent holder rather than skipping or failing.
		require.True(t, strings.HasSuffix(q.Fence, " FOR UPDATE"), q.Fence)
		for _, bad := range []string{"NOWAIT", "SKIP LOCKED", "WAIT "} {
			require.NotContains(t, q.Fence, bad)
		}
		require.NotContains(t, q.Token+q.List, "FOR UPDATE", "plain readers lock nothing")
	}
}
