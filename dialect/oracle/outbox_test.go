package oracle

import (
	"context"
	"database/sql"
	"database/sql/driver"
	"errors"
	"fmt"
	"io"
	"strconv"
	"strings"
	"testing"
	"time"

	goora "github.com/sijms/go-ora/v2"
	"github.com/sijms/go-ora/v2/network"
	"github.com/stretchr/testify/require"

	"github.com/tandem-go/tandem/dialect"
	"github.com/tandem-go/tandem/internal/fakesql"
	"github.com/tandem-go/tandem/internal/sqldialect"
)

// txDB is fakesql.TxDB: transactions reach f as statements.
func txDB(t *testing.T, f *fakesql.DB) *sql.DB { return fakesql.TxDB(t, f) }

func pendingRequest(n int) sqldialect.PendingRequest {
	tb, _ := sqldialect.NewTables("Prefix", "tandem_")
	r := sqldialect.PendingRequest{Tables: tb, Handle: 4242, NodeID: "node-a", Instance: "inst-1"}
	for i := range n {
		r.Entries = append(r.Entries, sqldialect.Entry{Producer: "p" + strconv.Itoa(i), Payload: []byte{byte(i)}})
	}
	return r
}

func TestPendingTable(t *testing.T) {
	for _, prefix := range []string{"tandem_", "x", strings.Repeat("p", 15)} {
		tb := tablesFor(t, prefix)
		x := pendingTable(tb)
		checkStatement(t, x.name, x.ddl, prefix, 0)
		require.True(t, strings.HasPrefix(x.ddl, "CREATE TABLE "+tb.Pending+" ("), x.ddl)
		require.LessOrEqual(t, len(x.name), 30, "Oracle before 12.2 allows 30-byte names")
	}
}

func TestInsertPendingSQL(t *testing.T) {
	require.Equal(t, "INSERT INTO tandem_pending (handle, seq, node_id, instance, producer, payload, created_at)\n"+
		"VALUES (:1, :2, :3, :4, :5, :6, SYS_EXTRACT_UTC(SYSTIMESTAMP))", insertPendingSQL(tablesFor(t, "tandem_")))
	for _, prefix := range []string{"tandem_", "x"} {
		checkStatement(t, "insertPending", insertPendingSQL(tablesFor(t, prefix)), prefix, 6)
	}
}

func TestInsertPending(t *testing.T) {
	ctx := context.Background()
	run := func(t *testing.T, r sqldialect.PendingRequest, handle fakesql.Handler) (*fakesql.DB, error) {
		f, _ := fakesql.New(t, handle)
		db := txDB(t, f)
		tx, err := db.BeginTx(ctx, nil)
		require.NoError(t, err)
		defer tx.Rollback()
		return f, Dialect.(sqldialect.Outbox).InsertPending(ctx, tx, r)
	}

	t.Run("ok", func(t *testing.T) {
		r := pendingRequest(4)
		r.Entries[1].Payload = nil
		r.Entries[2].Payload = make([]byte, maxRaw)
		r.Entries[3].Payload = make([]byte, maxRaw+1)
		f, err := run(t, r, nil)
		require.NoError(t, err)
		calls := f.Calls()
		require.Len(t, calls, 1+4+1, "BEGIN, one INSERT per entry in the caller's transaction, and the test's ROLLBACK")
		require.Equal(t, "BEGIN TRANSACTION", calls[0].Query)
		payloads := []any{[]byte{0}, []byte{}, make([]byte, maxRaw), goora.Blob{Data: make([]byte, maxRaw+1)}}
		for i, c := range calls[1:5] {
			require.Equal(t, insertPendingSQL(r.Tables), c.Query)
			// :1 handle, :2 seq, :3 node id, :4 instance, :5 producer, :6 payload.
			want := []any{int64(4242), int64(i + 1), "node-a", "inst-1", "p" + strconv.Itoa(i), payloads[i]}
			require.Len(t, c.Args, len(want))
			for k, w := range want {
				require.Equal(t, k+1, c.Args[k].Ordinal)
				require.Equal(t, w, c.Args[k].Value, "entry %d, :%d", i, k+1)
			}
		}
		require.NotNil(t, calls[2].Args[5].Value, "a nil payload is bound as an empty RAW")
		require.Equal(t, "ROLLBACK", calls[5].Query)
	})
	t.Run("translated, and stops at the first error", func(t *testing.T) {
		f, err := run(t, pendingRequest(3), func(q string, args []driver.NamedValue) fakesql.Reply {
			if strings.HasPrefix(q, "INSERT") && args[1].Value == int64(2) {
				return fakesql.Reply{Err: oraErr(errUniqueViolation)}
			}
			return fakesql.Reply{}
		})
		require.ErrorIs(t, err, dialect.ErrUniqueViolation)
		require.NotErrorIs(t, err, dialect.ErrOutcomeUnknown, "the caller's transaction decides")
		require.Len(t, f.Calls(), 1+2+1)
	})
}

func TestRelaySQLGolden(t *testing.T) {
	want := `DECLARE
	v_rev NUMBER(19);
	v_n   NUMBER(19) := 0;
BEGIN
	SELECT revision INTO v_rev FROM tandem_global_revision WHERE id = 1 FOR UPDATE WAIT 7;
	INSERT INTO tandem_journal (revision, node_id, instance, batch_id, producer, payload, created_at)
	SELECT v_rev + ROW_NUMBER() OVER (ORDER BY p.handle, p.seq), p.node_id, p.instance, p.handle, p.producer, p.payload, SYS_EXTRACT_UTC(SYSTIMESTAMP)
	FROM tandem_pending p
	WHERE p.handle IN (SELECT handle FROM (SELECT DISTINCT handle FROM tandem_pending ORDER BY handle) WHERE ROWNUM <= :1);
	v_n := SQL%ROWCOUNT;
	IF v_n > 0 THEN
		DELETE FROM tandem_pending WHERE handle IN (SELECT batch_id FROM tandem_journal WHERE revision > v_rev);
		IF SQL%ROWCOUNT <> v_n THEN
			RAISE_APPLICATION_ERROR(-20002, 'tandem: the relay would delete other rows than it copied');
		END IF;
		UPDATE tandem_global_revision SET revision = v_rev + v_n WHERE id = 1;
		IF SQL%ROWCOUNT <> 1 THEN
			RAISE_APPLICATION_ERROR(-20003, 'tandem: the relay did not update the counter row');
		END IF;
	END IF;
	COMMIT;
	:2 := v_n;
EXCEPTION
	WHEN NO_DATA_FOUND THEN
		ROLLBACK;
		RAISE_APPLICATION_ERROR(-20001, 'tandem: tandem_global_revision has no counter row (id = 1)');
	WHEN OTHERS THEN
		ROLLBACK;
		RAISE;
END;`
	require.Equal(t, want, relaySQL(tablesFor(t, "tandem_"), 7))
}

func TestRelaySQL(t *testing.T) {
	for _, prefix := range []string{"tandem_", "t0123456789ab_", "x"} {
		tb := tablesFor(t, prefix)
		s := relaySQL(tb, 3)
		// :1 the most handles, then the OUT bind :2, each once.
		checkStatement(t, "relay", s, prefix, 2)
		require.Contains(t, s, "FOR UPDATE WAIT 3;")
		// Plain queries: statement-level read consistency, no lock on the
		// pending rows it reads, no SKIP LOCKED.
		require.NotContains(t, s, "SKIP LOCKED")
		require.Equal(t, 1, strings.Count(s, "FOR UPDATE"), "only the counter is locked")
		// Only the OUT bind's assignment follows the COMMIT.
		after := s[strings.Index(s, "COMMIT;"):strings.Index(s, "EXCEPTION")]
		require.Equal(t, "COMMIT;\n\t:2 := v_n;\n", after)
	}
}

// relayReply answers the relay block by setting its OUT bind to moved, or
// with err. A nil moved leaves the OUT bind alone: what go-ora leaves when
// the bind comes back NULL (it writes the NULL, which an sql.NullInt64
// keeps apart from 0).
func relayReply(moved *int64, err error) fakesql.Handler {
	return func(q string, args []driver.NamedValue) fakesql.Reply {
		if !strings.HasPrefix(q, "DECLARE") {
			return fakesql.Reply{Err: fmt.Errorf("unexpected statement %q", q)}
		}
		if err != nil {
			return fakesql.Reply{Err: err}
		}
		if moved != nil {
			out := args[len(args)-1].Value.(sql.Out)
			*out.Dest.(*sql.NullInt64) = sql.NullInt64{Int64: *moved, Valid: true}
		}
		return fakesql.Reply{}
	}
}

func TestRelay(t *testing.T) {
	ctx := context.Background()
	tb := tablesFor(t, "tandem_")
	run := func(t *testing.T, lockTimeout time.Duration, handle fakesql.Handler) (*fakesql.DB, int64, error) {
		f, db := fakesql.New(t, handle)
		conn, err := db.Conn(ctx)
		require.NoError(t, err)
		defer conn.Close()
		n, err := Dialect.(sqldialect.Outbox).Relay(ctx, conn, tb, 32, lockTimeout)
		return f, n, err
	}
	ptr := func(n int64) *int64 { return &n }

	t.Run("ok", func(t *testing.T) {
		for _, moved := range []int64{0, 1, 32000} {
			f, n, err := run(t, 2500*time.Millisecond, relayReply(ptr(moved), nil))
			require.NoError(t, err)
			require.Equal(t, moved, n)
			calls := f.Calls()
			require.Len(t, calls, 1, "one round trip")
			require.Equal(t, relaySQL(tb, 3), calls[0].Query, "the lock timeout rounded up")
			require.Len(t, calls[0].Args, 2)
			require.Equal(t, driver.NamedValue{Ordinal: 1, Value: int64(32)}, calls[0].Args[0], ":1 the most handles")
			out, ok := calls[0].Args[1].Value.(sql.Out)
			require.True(t, ok, ":2 is the OUT bind")
			require.False(t, out.In)
			require.Equal(t, 2, calls[0].Args[1].Ordinal)
		}
	})
	t.Run("default lock wait", func(t *testing.T) {
		f, _, err := run(t, 0, relayReply(ptr(0), nil))
		require.NoError(t, err)
		require.Contains(t, f.Calls()[0].Query, "FOR UPDATE WAIT 10;")
	})
	t.Run("no count", func(t *testing.T) {
		// The block ends by assigning the OUT bind or by raising: a
		// success without a count (NULL, as go-ora reports an unassigned
		// bind) or with a negative one is an error the driver dropped,
		// which may have come after the COMMIT.
		for _, moved := range []*int64{nil, ptr(-1)} {
			_, n, err := run(t, time.Second, relayReply(moved, nil))
			require.ErrorIs(t, err, dialect.ErrOutcomeUnknown)
			var oe *sqldialect.OutcomeError
			require.ErrorAs(t, err, &oe)
			require.ErrorIs(t, err, errRelayUnassigned)
			require.Zero(t, n)
		}
	})
	t.Run("nothing written", func(t *testing.T) {
		for c, class := range map[int]error{
			30006: dialect.ErrLockTimeout, // FOR UPDATE WAIT ran out
			54:    dialect.ErrLockTimeout,
			60:    dialect.ErrDeadlock,
			1:     dialect.ErrUniqueViolation,
			942:   nil, // no pending table (migration 4 not applied)
			6550:  nil, // PL/SQL compilation error
			20001: nil, // the block's own: no counter row
			20002: nil, // the block's own: it would delete other rows than it copied
			20003: nil, // the block's own: its counter update changed no row
		} {
			_, n, err := run(t, time.Second, relayReply(nil, oraErr(c)))
			require.Error(t, err)
			require.Zero(t, n)
			require.NotErrorIs(t, err, dialect.ErrOutcomeUnknown, "ORA-%05d: the block rolled back", c)
			if class != nil {
				require.ErrorIs(t, err, class, "ORA-%05d", c)
			}
			require.Equal(t, c, code(err), "the driver error stays reachable")
		}
	})
	t.Run("open outcome", func(t *testing.T) {
		for _, cause := range []error{
			oraErr(errCancelled), // may arrive after the COMMIT
			oraErr(3113),         // end-of-file on communication channel
			oraErr(28),           // session killed
			network.ErrConnReset,
			io.EOF,
			driver.ErrBadConn, // go-ora returns it while reading the reply too
		} {
			_, _, err := run(t, time.Second, relayReply(nil, cause))
			require.ErrorIs(t, err, dialect.ErrOutcomeUnknown, "%v", cause)
			var oe *sqldialect.OutcomeError
			require.ErrorAs(t, err, &oe)
			require.ErrorIs(t, oe.Err, cause)
			require.False(t, errors.Is(err, errRelayUnassigned))
		}
	})
	t.Run("not sent", func(t *testing.T) {
		f, db := fakesql.New(t, nil)
		conn, err := db.Conn(ctx)
		require.NoError(t, err)
		require.NoError(t, conn.Close())
		_, err = Dialect.(sqldialect.Outbox).Relay(ctx, conn, tb, 32, time.Second)
		require.ErrorIs(t, err, sql.ErrConnDone)
		require.NotErrorIs(t, err, dialect.ErrOutcomeUnknown)
		require.Empty(t, f.Calls())
	})
}
