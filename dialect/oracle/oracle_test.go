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
	"github.com/tandem-go/tandem/internal/sqldialect"
	"github.com/tandem-go/tandem/journal"
)

func tablesFor(t *testing.T, prefix string) sqldialect.Tables {
	t.Helper()
	tb, err := sqldialect.NewTables("Prefix", prefix)
	require.NoError(t, err)
	return tb
}

var (
	literal     = regexp.MustCompile(`'[^']*'`)
	placeholder = regexp.MustCompile(`:(\d+)\b`)
	tableName   = regexp.MustCompile(`\b[a-z0-9_]*(journal|global_revision|meta|local_revisions|locks|pending)\b`)
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
		"Read": `SELECT revision, node_id, instance, producer, payload, FROM_TZ(created_at, '+00:00') AS created_at FROM tandem_journal WHERE revision > :1 ORDER BY revision FETCH FIRST :2 ROWS ONLY`,
		"Poll": `SELECT m.epoch, m.tail, g.revision, CASE WHEN EXISTS (SELECT 1 FROM tandem_pending) THEN 1 ELSE 0 END, ` +
			`r.revision, r.node_id, r.instance, r.producer, r.payload, r.created_at FROM tandem_meta m CROSS JOIN tandem_global_revision g ` +
			`LEFT JOIN (SELECT revision, node_id, instance, producer, payload, FROM_TZ(created_at, '+00:00') AS created_at FROM tandem_journal WHERE revision > :1 ORDER BY revision FETCH FIRST :2 ROWS ONLY) r ` +
			`ON 1 = 1 WHERE m.id = 1 AND g.id = 1 ORDER BY r.revision`,
		// The same without the look at the pending table.
		"PollRecords": `SELECT m.epoch, m.tail, g.revision, 0, ` +
			`r.revision, r.node_id, r.instance, r.producer, r.payload, r.created_at FROM tandem_meta m CROSS JOIN tandem_global_revision g ` +
			`LEFT JOIN (SELECT revision, node_id, instance, producer, payload, FROM_TZ(created_at, '+00:00') AS created_at FROM tandem_journal WHERE revision > :1 ORDER BY revision FETCH FIRST :2 ROWS ONLY) r ` +
			`ON 1 = 1 WHERE m.id = 1 AND g.id = 1 ORDER BY r.revision`,
		"Head":        `SELECT revision FROM tandem_global_revision WHERE id = 1`,
		"Meta":        `SELECT epoch, tail, schema_version FROM tandem_meta WHERE id = 1`,
		"SetTail":     `UPDATE tandem_meta SET tail = GREATEST(tail, :1) WHERE id = 1`,
		"DeleteRange": `DELETE FROM tandem_journal WHERE revision >= :1 AND revision < :2`,
		"MinRevision": `SELECT MIN(revision) FROM tandem_journal WHERE revision >= :1`,
		"LockHead":    `SELECT revision FROM tandem_global_revision WHERE id = 1 FOR UPDATE`,
		// LockHead works at READ COMMITTED, the only level go-ora begins.
		"BeginLookup":     "",
		"FindBatch":       `SELECT MIN(revision), COUNT(*) FROM tandem_journal WHERE revision > :1 AND batch_id = :2`,
		"Settle":          `UPDATE tandem_global_revision SET revision = revision + :1 WHERE id = 1`,
		"PendingAny":      `SELECT 1 FROM tandem_pending WHERE ROWNUM = 1`,
		"PendingCount":    `SELECT COUNT(*) FROM tandem_pending WHERE handle = :1`,
		"PendingOldest":   `SELECT COUNT(*), ROUND((CAST(SYS_EXTRACT_UTC(SYSTIMESTAMP) AS DATE) - CAST(MIN(created_at) AS DATE)) * 86400) * 1000 FROM tandem_pending`,
		"LoadPosition":    `SELECT revision, epoch, FROM_TZ(updated_at, '+00:00'), FROM_TZ(evicted_at, '+00:00') FROM tandem_local_revisions WHERE node_id = :1`,
		"ListPositions":   `SELECT node_id, revision, epoch, FROM_TZ(updated_at, '+00:00'), FROM_TZ(evicted_at, '+00:00') FROM tandem_local_revisions ORDER BY NLSSORT(node_id, 'NLS_SORT=BINARY')`,
		"EvictPosition":   `UPDATE tandem_local_revisions SET evicted_at = SYS_EXTRACT_UTC(SYSTIMESTAMP) WHERE node_id = :1 AND revision = :2 AND evicted_at IS NULL`,
		"UnevictPosition": `UPDATE tandem_local_revisions SET evicted_at = NULL WHERE node_id = :1 AND revision = :2 AND evicted_at IS NOT NULL`,
		"DeletePosition":  `DELETE FROM tandem_local_revisions WHERE node_id = :1`,
		"CopyPosition": "INSERT INTO tandem_local_revisions (node_id, revision, epoch, updated_at, evicted_at)\n" +
			"SELECT :1, revision, epoch, SYS_EXTRACT_UTC(SYSTIMESTAMP), evicted_at FROM tandem_local_revisions WHERE node_id = :2",
		"MembersBehind": "SELECT COUNT(*) FROM tandem_locks l LEFT JOIN tandem_local_revisions r ON r.node_id = SUBSTR(l.name, 8)\n" +
			"WHERE l.name LIKE 'member.%' AND l.name <> 'member.' || :1 AND l.expires_at > SYS_EXTRACT_UTC(SYSTIMESTAMP)\n" +
			"AND (r.node_id IS NULL OR r.evicted_at IS NOT NULL OR r.revision < :2 OR r.epoch IS NULL OR r.epoch <> (SELECT epoch FROM tandem_meta WHERE id = 1))",
		"SavePosition": `DECLARE
	v_node  VARCHAR2(64) := :1;
	v_rev   NUMBER(19) := :2;
	v_epoch VARCHAR2(64) := :3;
BEGIN
	MERGE INTO tandem_local_revisions t USING dual ON (t.node_id = v_node)
	WHEN MATCHED THEN UPDATE SET t.revision = v_rev, t.epoch = v_epoch, t.updated_at = SYS_EXTRACT_UTC(SYSTIMESTAMP), t.evicted_at = NULL
	WHEN NOT MATCHED THEN INSERT (node_id, revision, epoch, updated_at, evicted_at) VALUES (v_node, v_rev, v_epoch, SYS_EXTRACT_UTC(SYSTIMESTAMP), NULL);
EXCEPTION
	WHEN DUP_VAL_ON_INDEX THEN
		UPDATE tandem_local_revisions SET revision = v_rev, epoch = v_epoch, updated_at = SYS_EXTRACT_UTC(SYSTIMESTAMP), evicted_at = NULL WHERE node_id = v_node;
END;`,
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
			if name == "BeginLookup" {
				require.Empty(t, f.SQL)
				continue
			}
			checkStatement(t, name, f.SQL, prefix, f.Args)
		}
		require.True(t, strings.HasSuffix(q.Read, "WHERE revision > :1 ORDER BY revision FETCH FIRST :2 ROWS ONLY"))
		require.True(t, strings.HasPrefix(q.Read, "SELECT revision, node_id, instance, producer, payload, "), "instance is the third column")
		// FindBatch: args (after, batch id), one row (MIN, COUNT).
		require.Equal(t, "SELECT MIN(revision), COUNT(*) FROM "+tb.Journal+" WHERE revision > :1 AND batch_id = :2", q.FindBatch)
		// LockHead waits for the counter row's lock and holds it until the
		// transaction ends; it never skips the row.
		require.Equal(t, "SELECT revision FROM "+tb.GlobalRevision+" WHERE id = 1 FOR UPDATE", q.LockHead)
		for _, s := range []string{q.Read, q.LoadPosition, q.ListPositions} {
			require.Contains(t, s, "FROM_TZ(", "times are returned with their zone")
		}
		for _, s := range []string{q.LoadPosition, q.ListPositions} {
			require.Contains(t, s, ", FROM_TZ(updated_at, '+00:00'), FROM_TZ(evicted_at, '+00:00') FROM ", "evicted_at follows updated_at")
		}
		// Saving a position clears the eviction marker (on each path);
		// copying keeps it.
		require.Equal(t, 2, strings.Count(q.SavePosition, "evicted_at = NULL"))
		require.Contains(t, q.SavePosition, "VALUES (v_node, v_rev, v_epoch, SYS_EXTRACT_UTC(SYSTIMESTAMP), NULL)")
		require.Contains(t, q.CopyPosition, "SELECT :1, revision, epoch, SYS_EXTRACT_UTC(SYSTIMESTAMP), evicted_at FROM "+tb.LocalRevisions+" WHERE node_id = :2")
		require.Equal(t, "UPDATE "+tb.LocalRevisions+" SET evicted_at = SYS_EXTRACT_UTC(SYSTIMESTAMP) WHERE node_id = :1 AND revision = :2 AND evicted_at IS NULL", q.EvictPosition)
		// UnevictPosition clears only a marker still set at that revision.
		require.Equal(t, "UPDATE "+tb.LocalRevisions+" SET evicted_at = NULL WHERE node_id = :1 AND revision = :2 AND evicted_at IS NOT NULL", q.UnevictPosition)
		for _, s := range []string{q.SavePosition, q.CopyPosition, q.EvictPosition} {
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
	checkStatement(t, "seedMeta", seedMeta(tb), "tandem_", 1)
	// The meta row of the first release: schema version 1, the epoch the
	// only bind.
	require.Equal(t, "INSERT INTO tandem_meta (id, epoch, tail, schema_version) SELECT 1, :1, 1, 1 FROM dual\n"+
		"WHERE NOT EXISTS (SELECT 1 FROM tandem_meta WHERE id = 1)", seedMeta(tb))

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
			require.Contains(t, s, "\tv_node  VARCHAR2(64) := :3;\n\tv_inst  VARCHAR2(64) := :4;\n\tv_batch NUMBER(19) := :5;\n")
			require.Equal(t, 2, strings.Count(s, "(revision, node_id, instance, batch_id, producer, payload, created_at) VALUES (v_rev + k, v_node, v_inst, v_batch, p, d, v_ts);"),
				"node id, instance and batch id go with every row, RAW or BLOB")
			require.Contains(t, s, "SELECT revision INTO v_rev FROM tandem_global_revision WHERE id = 1 FOR UPDATE WAIT 7;")
			require.Equal(t, 1, strings.Count(s, "UPDATE tandem_global_revision SET revision = v_rev + v_n WHERE id = 1;"))
			require.Equal(t, 1, strings.Count(s, "COMMIT;"))
			require.Contains(t, s, fmt.Sprintf("\t:%d := v_first;\n", nargs), "the OUT bind is last")
			// NO_DATA_FOUND (no counter row) becomes ORA-20001, which go-ora
			// reports; OTHERS re-raises with the original code.
			require.Contains(t, s, "EXCEPTION\n\tWHEN NO_DATA_FOUND THEN\n\t\tROLLBACK;\n\t\tRAISE_APPLICATION_ERROR(-20001, 'tandem: tandem_global_revision has no counter row (id = 1)');\n"+
				"\tWHEN OTHERS THEN\n\t\tROLLBACK;\n\t\tRAISE;\nEND;")
			blobs := 0
			for _, b := range blob {
				if b {
					blobs++
				}
			}
			require.Equal(t, blobs, strings.Count(s, "\t\tput_blob("))
			require.Equal(t, n-blobs, strings.Count(s, "\t\tput_raw("))
			require.Contains(t, s, "\t\tput_raw(1, :6, :7);\n")
			require.Contains(t, s, fmt.Sprintf("(%d, :%d, :%d);\n\t\tCOMMIT;", n, nargs-2, nargs-1))
			// Only the OUT bind's assignment follows the COMMIT: nothing
			// there can fail and seem to prove nothing was written.
			after := s[strings.Index(s, "COMMIT;"):strings.Index(s, "EXCEPTION")]
			require.Equal(t, fmt.Sprintf("COMMIT;\n\t\tv_first := v_rev + 1;\n\tEND IF;\n\t:%d := v_first;\n", nargs), after)
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
	v_inst  VARCHAR2(64) := :4;
	v_batch NUMBER(19) := :5;
	v_rev   NUMBER(19);
	v_first NUMBER(19) := -1;
	v_ts    TIMESTAMP(6);
	PROCEDURE put_raw(k PLS_INTEGER, p VARCHAR2, d RAW) IS
	BEGIN
		INSERT INTO tandem_journal (revision, node_id, instance, batch_id, producer, payload, created_at) VALUES (v_rev + k, v_node, v_inst, v_batch, p, d, v_ts);
	END;
	PROCEDURE put_blob(k PLS_INTEGER, p VARCHAR2, d BLOB) IS
	BEGIN
		INSERT INTO tandem_journal (revision, node_id, instance, batch_id, producer, payload, created_at) VALUES (v_rev + k, v_node, v_inst, v_batch, p, d, v_ts);
	END;
BEGIN
	SELECT revision INTO v_rev FROM tandem_global_revision WHERE id = 1 FOR UPDATE WAIT 10;
	IF v_head >= 0 AND v_rev <> v_head THEN
		ROLLBACK;
	ELSE
		SELECT SYS_EXTRACT_UTC(SYSTIMESTAMP) INTO v_ts FROM dual;
		UPDATE tandem_global_revision SET revision = v_rev + v_n WHERE id = 1;
		put_raw(1, :6, :7);
		put_blob(2, :8, :9);
		COMMIT;
		v_first := v_rev + 1;
	END IF;
	:10 := v_first;
EXCEPTION
	WHEN NO_DATA_FOUND THEN
		ROLLBACK;
		RAISE_APPLICATION_ERROR(-20001, 'tandem: tandem_global_revision has no counter row (id = 1)');
	WHEN OTHERS THEN
		ROLLBACK;
		RAISE;
END;`
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
	r := request(4, 9)
	r.Entries[1].Payload = nil
	r.Entries[2].Payload = make([]byte, maxRaw)
	r.Entries[3].Payload = make([]byte, maxRaw+1)
	first := unassigned
	args, blob := appendArgs(r, &first)
	require.Equal(t, []bool{false, false, false, true}, blob)
	require.Len(t, args, appendBinds+8)
	// :1 n, :2 expected head, :3 node id, :4 instance, :5 batch id, then
	// the entries.
	require.Equal(t, []any{int64(4), int64(9), "node-a", "inst-1", int64(77), "p0", []byte{0}, "p1", []byte{}}, args[:9])
	require.Equal(t, make([]byte, maxRaw), args[10], "up to 2,000 bytes go as RAW")
	require.Equal(t, goora.Blob{Data: make([]byte, maxRaw+1)}, args[12], "larger payloads go as BLOB")
	require.Equal(t, sql.Out{Dest: &first}, args[13], "the OUT bind is last")
	require.Equal(t, unassigned, first)
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
// or with err. first == unassigned leaves the OUT bind alone, as go-ora
// does when it reports success without reading the OUT binds.
func appendReply(first int64, err error) func(string, []driver.NamedValue) fakesql.Reply {
	return func(q string, args []driver.NamedValue) fakesql.Reply {
		if !strings.Contains(q, "FOR UPDATE WAIT") {
			return fakesql.Reply{}
		}
		if err != nil {
			return fakesql.Reply{Err: err}
		}
		if first != unassigned {
			out := args[len(args)-1].Value.(sql.Out)
			*out.Dest.(*int64) = first
		}
		return fakesql.Reply{}
	}
}

func oraErr(code int) error {
	return &network.OracleError{ErrCode: code, ErrMsg: fmt.Sprintf("ORA-%05d: m", code)}
}

func TestAppend(t *testing.T) {
	ctx := context.Background()
	run := func(t *testing.T, r sqldialect.AppendRequest, prepare time.Duration, handle func(string, []driver.NamedValue) fakesql.Reply) (*fakesql.DB, int64, error) {
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
		c := f.Calls()[0]
		require.Contains(t, c.Query, "FOR UPDATE WAIT 3;", "the prepared lock timeout, rounded up")
		require.Len(t, c.Args, appendBinds+6)
		for i, want := range []any{int64(3), int64(-1), "node-a", "inst-1", int64(77), "p0", []byte{0}} {
			require.Equal(t, want, c.Args[i].Value, ":%d", i+1)
			require.Equal(t, i+1, c.Args[i].Ordinal)
		}
		_, isOut := c.Args[len(c.Args)-1].Value.(sql.Out)
		require.True(t, isOut, "the OUT bind is last")
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
	t.Run("no revision", func(t *testing.T) {
		// The block ends by assigning the OUT bind or by raising. Success
		// without a revision is an error the driver dropped (as go-ora
		// drops ORA-01403, or a reply read after a cancel's break without
		// its OUT binds), which may have come after the COMMIT.
		for _, tc := range []struct {
			first  int64
			expect int64
		}{
			{unassigned, -1}, {unassigned, 7}, // left alone
			{0, -1}, {0, 7}, // NULL
			{-1, -1}, // a head mismatch of an unconditional append
		} {
			_, first, err := run(t, request(1, tc.expect), time.Second, appendReply(tc.first, nil))
			require.ErrorIs(t, err, dialect.ErrOutcomeUnknown, "OUT %d, expect %d", tc.first, tc.expect)
			require.NotErrorIs(t, err, dialect.ErrHeadMismatch)
			var oe *sqldialect.OutcomeError
			require.ErrorAs(t, err, &oe)
			require.ErrorContains(t, err, "without a revision")
			require.Zero(t, first)
		}
	})
	t.Run("nothing written", func(t *testing.T) {
		// Errors the block raises before its COMMIT; its handler rolled
		// back.
		for n, class := range map[int]error{
			30006: dialect.ErrLockTimeout, // FOR UPDATE WAIT ran out
			54:    dialect.ErrLockTimeout,
			2049:  dialect.ErrLockTimeout,
			60:    dialect.ErrDeadlock,
			1:     dialect.ErrUniqueViolation,
			942:   nil, // table or view does not exist
			904:   nil, // invalid identifier
			1031:  nil, // insufficient privileges
			6550:  nil, // PL/SQL compilation error
			20001: nil, // the block's own: no counter row
		} {
			f, _, err := run(t, request(1, -1), time.Second, appendReply(0, oraErr(n)))
			require.Error(t, err)
			require.NotErrorIs(t, err, dialect.ErrOutcomeUnknown, "ORA-%05d: the block rolled back", n)
			if class != nil {
				require.ErrorIs(t, err, class, "ORA-%05d", n)
			}
			require.Equal(t, n, code(err), "the driver error stays reachable")
			require.Len(t, f.Calls(), 1, "no rollback is sent: the caller discards the connection")
		}
	})
	t.Run("open outcome", func(t *testing.T) {
		for _, cause := range []error{
			oraErr(3113),         // end-of-file on communication channel
			oraErr(3135),         // connection lost contact
			oraErr(28),           // session killed
			oraErr(errCancelled), // may arrive after the COMMIT
			oraErr(600),          // internal error
			oraErr(1400),         // cannot insert NULL: not expected, so not trusted
			network.ErrConnReset,
			io.EOF,
			context.DeadlineExceeded,
			// go-ora returns driver.ErrBadConn also while reading the
			// reply, when the server closed the connection.
			driver.ErrBadConn,
			fmt.Errorf("wrapped: %w", driver.ErrBadConn),
		} {
			_, _, err := run(t, request(1, -1), time.Second, appendReply(0, cause))
			require.ErrorIs(t, err, dialect.ErrOutcomeUnknown, "%v", cause)
			var oe *sqldialect.OutcomeError
			require.ErrorAs(t, err, &oe, "%v", cause)
			require.ErrorIs(t, oe.Err, cause, "the cause stays reachable")
		}
	})
	t.Run("not sent", func(t *testing.T) {
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
		f, _, err := run(t, request(maxEntries+1, -1), time.Second, nil)
		require.Error(t, err)
		require.NotErrorIs(t, err, dialect.ErrOutcomeUnknown)
		require.Empty(t, f.Calls())
	})
}

// TestDriverReportsErrors pins the go-ora behaviour the append block is
// built on: a call whose summary carries ORA-01403 counts as a success
// (so the block must not end in NO_DATA_FOUND), one carrying the block's
// ORA-20001 is an error with that code, as is one re-raised by WHEN OTHERS.
func TestDriverReportsErrors(t *testing.T) {
	for ret, isErr := range map[int]bool{0: false, 1403: false, 20001: true, 30006: true, 1013: true} {
		s := &network.Session{Summary: &network.SummaryObject{RetCode: ret, ErrorMessage: []byte(fmt.Sprintf("ORA-%05d: m", ret))}}
		require.Equal(t, isErr, s.HasError(), "ORA-%05d", ret)
		if isErr {
			err := s.GetError()
			require.Equal(t, ret, err.ErrCode)
			require.Equal(t, ret, code(fmt.Errorf("exec: %w", err)))
		}
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
	require.Empty(t, f.Calls(), "PrepareConn sets nothing, so ResetConn resets nothing")
}

func TestTranslate(t *testing.T) {
	d := Dialect
	require.NoError(t, d.Translate(nil))
	plain := errors.New("plain")
	require.Equal(t, plain, d.Translate(plain))
	other := &network.OracleError{ErrCode: 904} // invalid identifier
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
		{942, dialect.ErrNoSuchTable},
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
