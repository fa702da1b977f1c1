package sqlserver

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

	mssql "github.com/microsoft/go-mssqldb"
	"github.com/stretchr/testify/require"

	"github.com/tandem-go/tandem/dialect"
	"github.com/tandem-go/tandem/internal/fakesql"
	"github.com/tandem-go/tandem/internal/sqldialect"
	"github.com/tandem-go/tandem/journal"
)

func pendingRequest(n int) sqldialect.PendingRequest {
	tb, _ := sqldialect.NewTables("Prefix", "tandem_")
	r := sqldialect.PendingRequest{Tables: tb, Handle: 4242, NodeID: "node-a", Instance: "inst-1"}
	for i := range n {
		r.Entries = append(r.Entries, sqldialect.Entry{Producer: "p" + strconv.Itoa(i), Payload: []byte{byte(i)}})
	}
	return r
}

func TestInsertPendingSQLGolden(t *testing.T) {
	require.Equal(t, "INSERT INTO tandem_pending (handle, seq, node_id, instance, producer, payload, created_at)\n"+
		"SELECT @p1, v.k, @p2, @p3, v.producer, v.payload, SYSUTCDATETIME() FROM (VALUES (1, @p4, @p5), (2, @p6, @p7)) AS v (k, producer, payload)",
		insertPendingSQL(tablesFor(t, "tandem_"), 2))
}

func TestInsertPendingSQL(t *testing.T) {
	for _, prefix := range []string{"tandem_", "x"} {
		tb := tablesFor(t, prefix)
		for _, n := range []int{1, 3, journal.MaxAppendEntries, maxPendingEntries} {
			s := insertPendingSQL(tb, n)
			nargs := pendingParams + 2*n
			checkStatement(t, "insertPending", s, prefix, nargs)
			require.LessOrEqual(t, nargs, maxParams, "within SQL Server's parameter limit")
			require.Equal(t, seq(nargs), firstUse(s), "@p1 … @p%d in the order of pendingArgs", nargs)
			require.Contains(t, s, fmt.Sprintf("(%d, @p%d, @p%d)) AS v (k, producer, payload)", n, nargs-1, nargs), "seq runs 1..n")
			require.Equal(t, 1, strings.Count(s, "INSERT INTO"), "one statement, rows from a derived table")
		}
	}
	require.GreaterOrEqual(t, maxPendingEntries, journal.MaxAppendEntries, "a full append fits one statement")
	require.LessOrEqual(t, pendingParams+2*maxPendingEntries, maxParams)
	require.Greater(t, pendingParams+2*(maxPendingEntries+1), maxParams, "maxPendingEntries is the most that fits")
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
		r := pendingRequest(3)
		r.Entries[1].Payload = nil
		f, err := run(t, r, nil)
		require.NoError(t, err)
		calls := f.Calls()
		require.Len(t, calls, 3, "one statement in the caller's transaction (which the test rolls back)")
		require.Equal(t, "ROLLBACK", calls[2].Query)
		require.Equal(t, "BEGIN TRANSACTION", calls[0].Query)
		c := calls[1]
		require.Equal(t, insertPendingSQL(r.Tables, 3), c.Query)
		want := []any{int64(4242), "node-a", "inst-1", "p0", []byte{0}, "p1", []byte{}, "p2", []byte{2}}
		require.Len(t, c.Args, len(want))
		for i, w := range want {
			require.Equal(t, i+1, c.Args[i].Ordinal)
			require.Equal(t, w, c.Args[i].Value, "@p%d", i+1)
		}
		require.NotNil(t, c.Args[6].Value, "a nil payload is sent as an empty one: the column is NOT NULL")
	})
	t.Run("a full append", func(t *testing.T) {
		f, err := run(t, pendingRequest(journal.MaxAppendEntries), nil)
		require.NoError(t, err)
		c := f.Calls()[1]
		require.Len(t, c.Args, pendingParams+2*journal.MaxAppendEntries)
		require.LessOrEqual(t, len(c.Args), maxParams)
		last := len(c.Args) - 1
		require.Equal(t, "p999", c.Args[last-1].Value)
		require.Equal(t, []byte{byte(999 % 256)}, c.Args[last].Value)
		require.Equal(t, params(c.Query), seq(len(c.Args)), "every argument has its placeholder")
	})
	t.Run("translated", func(t *testing.T) {
		_, err := run(t, pendingRequest(1), func(q string, _ []driver.NamedValue) fakesql.Reply {
			if strings.HasPrefix(q, "INSERT") {
				return fakesql.Reply{Err: mssql.Error{Number: 2627, Message: "Violation of PRIMARY KEY constraint"}}
			}
			return fakesql.Reply{}
		})
		require.ErrorIs(t, err, dialect.ErrUniqueViolation)
		require.NotErrorIs(t, err, dialect.ErrOutcomeUnknown, "the caller's transaction decides")
	})
	t.Run("bad size", func(t *testing.T) {
		for _, n := range []int{0, maxPendingEntries + 1} {
			f, err := run(t, pendingRequest(n), nil)
			require.ErrorContains(t, err, "a pending batch has 1 to 1047 entries")
			require.Equal(t, []string{"BEGIN TRANSACTION", "ROLLBACK"}, f.Queries(), "nothing sent")
		}
	})
}

func TestRelaySQLGolden(t *testing.T) {
	want := `SET NOCOUNT ON;
SET XACT_ABORT ON;
DECLARE @rev BIGINT;
DECLARE @n BIGINT = 0;
DECLARE @h TABLE (handle BIGINT PRIMARY KEY);
BEGIN TRY
	INSERT INTO @h (handle) SELECT DISTINCT TOP (@p1) handle FROM tandem_pending WITH (READCOMMITTEDLOCK, READPAST) ORDER BY handle;
	BEGIN TRANSACTION;
	SELECT @rev = revision FROM tandem_global_revision WITH (UPDLOCK, HOLDLOCK, ROWLOCK) WHERE id = 1;
	IF @rev IS NULL THROW 51000, N'tandem: tandem_global_revision has no counter row (id = 1)', 1;
	INSERT INTO tandem_journal (revision, node_id, instance, batch_id, producer, payload, created_at)
	SELECT @rev + ROW_NUMBER() OVER (ORDER BY p.handle, p.seq), p.node_id, p.instance, p.handle, p.producer, p.payload, SYSUTCDATETIME()
	FROM @h h JOIN tandem_pending p WITH (FORCESEEK) ON p.handle = h.handle;
	SET @n = @@ROWCOUNT;
	IF @n > 0
	BEGIN
		DELETE p FROM tandem_pending p WITH (FORCESEEK) JOIN @h h ON p.handle = h.handle;
		IF @@ROWCOUNT <> @n THROW 51001, N'tandem: the relay would delete other rows than it copied', 1;
		UPDATE tandem_global_revision SET revision = @rev + @n WHERE id = 1;
		IF @@ROWCOUNT <> 1 THROW 51002, N'tandem: the relay did not update the counter row', 1;
	END
	COMMIT TRANSACTION;
END TRY
BEGIN CATCH
	IF @@TRANCOUNT > 0 ROLLBACK TRANSACTION;
	THROW;
END CATCH;
SELECT @n;`
	require.Equal(t, want, relaySQL(tablesFor(t, "tandem_")))
}

func TestRelaySQL(t *testing.T) {
	for _, prefix := range []string{"tandem_", "t0123456789ab_", "x"} {
		tb := tablesFor(t, prefix)
		s := relaySQL(tb)
		checkStatement(t, "relay", s, prefix, 1)
		// The handles are picked, skipping rows of open transactions,
		// before the counter is locked: nothing under the counter's lock
		// reads the pending table but by seeking the picked handles.
		pick := strings.Index(s, "SELECT DISTINCT TOP (@p1) handle FROM "+tb.Pending+" "+skipOpenHint+" ORDER BY handle;")
		begin := strings.Index(s, "BEGIN TRANSACTION;")
		lock := strings.Index(s, "WITH (UPDLOCK, HOLDLOCK, ROWLOCK) WHERE id = 1;")
		require.True(t, pick > 0 && pick < begin && begin < lock, "pick, then begin, then lock the counter")
		require.Equal(t, 1, strings.Count(s, "READPAST"), "only the pick skips rows")
		under := s[lock:strings.Index(s, "COMMIT TRANSACTION;")]
		require.Equal(t, 2, strings.Count(under, tb.Pending+" p WITH (FORCESEEK)"), "the copy and the delete seek by handle")
		require.Equal(t, 2, strings.Count(under, tb.Pending), "and touch the pending table nowhere else")
		// The records: consecutive revisions in (handle, seq) order, batch
		// id = handle, the entry's node id and instance.
		require.Contains(t, under, "SELECT @rev + ROW_NUMBER() OVER (ORDER BY p.handle, p.seq), p.node_id, p.instance, p.handle, p.producer, p.payload, SYSUTCDATETIME()")
		require.Contains(t, under, "UPDATE "+tb.GlobalRevision+" SET revision = @rev + @n WHERE id = 1;")
		require.Contains(t, under, "IF @@ROWCOUNT <> @n THROW 51001,", "the delete removes exactly what was copied")
		require.Contains(t, under, "SET revision = @rev + @n WHERE id = 1;\n\t\tIF @@ROWCOUNT <> 1 THROW 51002,", "the counter update changed its row")
		// Nothing after the COMMIT can fail and seem to prove that nothing
		// was written.
		require.True(t, strings.HasSuffix(s, "END CATCH;\nSELECT @n;"))
		require.NotContains(t, s[strings.Index(s, "COMMIT TRANSACTION;"):], "INSERT")
	}
}

func TestRelay(t *testing.T) {
	ctx := context.Background()
	tb := tablesFor(t, "tandem_")
	run := func(t *testing.T, rep fakesql.Reply) (*fakesql.DB, int64, error) {
		f, db := fakesql.New(t, func(q string, _ []driver.NamedValue) fakesql.Reply {
			if q == relaySQL(tb) {
				return rep
			}
			return fakesql.Reply{Err: fmt.Errorf("unexpected statement %q", q)}
		})
		conn, err := db.Conn(ctx)
		require.NoError(t, err)
		defer conn.Close()
		n, err := Dialect.(sqldialect.Outbox).Relay(ctx, conn, tb, 32, 5*time.Second)
		return f, n, err
	}

	t.Run("ok", func(t *testing.T) {
		for _, moved := range []int64{0, 1, 32000} {
			f, n, err := run(t, fakesql.Reply{Rows: [][]driver.Value{{moved}}})
			require.NoError(t, err)
			require.Equal(t, moved, n)
			calls := f.Calls()
			require.Len(t, calls, 1, "one round trip; the lock timeout is the session's")
			require.Equal(t, []driver.NamedValue{{Ordinal: 1, Value: int64(32)}}, calls[0].Args, "@p1: the most handles")
		}
	})
	t.Run("nothing written", func(t *testing.T) {
		for _, tc := range []struct {
			err   mssql.Error
			class error
		}{
			{mssql.Error{Number: 1222, Message: "Lock request time out period exceeded."}, dialect.ErrLockTimeout},
			{mssql.Error{Number: 1205, Message: "deadlock victim"}, dialect.ErrDeadlock},
			{mssql.Error{Number: 2627, Message: "Violation of PRIMARY KEY constraint"}, dialect.ErrUniqueViolation},
			{mssql.Error{Number: 51000, Message: "tandem: tandem_global_revision has no counter row (id = 1)"}, nil},
			{mssql.Error{Number: 51001, Message: "tandem: the relay would delete other rows than it copied"}, nil},
			{mssql.Error{Number: 51002, Message: "tandem: the relay did not update the counter row"}, nil},
			{mssql.Error{Number: 208, Message: "Invalid object name 'tandem_pending'."}, nil},
		} {
			_, n, err := run(t, fakesql.Reply{Err: tc.err})
			require.Error(t, err)
			require.Zero(t, n)
			require.NotErrorIs(t, err, dialect.ErrOutcomeUnknown, "%d is raised before the COMMIT", tc.err.Number)
			if tc.class != nil {
				require.ErrorIs(t, err, tc.class, "%d is translated", tc.err.Number)
			}
			var msErr mssql.Error
			require.ErrorAs(t, err, &msErr)
			require.Equal(t, tc.err.Number, msErr.Number)
		}
	})
	t.Run("open outcome", func(t *testing.T) {
		for _, cause := range []error{
			io.ErrUnexpectedEOF,
			context.Canceled,
			sessionKilled,
			mssql.Error{Number: 9002}, // the log is full: may come at COMMIT
			fatalError(mssql.Error{Number: 51001, All: []mssql.Error{{Number: 51001}, {Number: 596}}}),
		} {
			_, _, err := run(t, fakesql.Reply{Err: cause})
			require.ErrorIs(t, err, dialect.ErrOutcomeUnknown, "%v", cause)
			var oe *sqldialect.OutcomeError
			require.ErrorAs(t, err, &oe)
			requireReachable(t, oe.Err, cause)
		}
		// No result: something ended the batch without an error.
		_, _, err := run(t, fakesql.Reply{})
		require.ErrorIs(t, err, dialect.ErrOutcomeUnknown)
		require.ErrorIs(t, err, sql.ErrNoRows)
	})
	t.Run("not sent", func(t *testing.T) {
		_, _, err := run(t, fakesql.Reply{Err: driver.ErrBadConn})
		require.ErrorIs(t, err, driver.ErrBadConn)
		require.NotErrorIs(t, err, dialect.ErrOutcomeUnknown)

		f, db := fakesql.New(t, nil)
		conn, err := db.Conn(ctx)
		require.NoError(t, err)
		require.NoError(t, conn.Close())
		_, err = Dialect.(sqldialect.Outbox).Relay(ctx, conn, tb, 32, time.Second)
		require.ErrorIs(t, err, sql.ErrConnDone)
		require.NotErrorIs(t, err, dialect.ErrOutcomeUnknown)
		require.Empty(t, f.Calls())
	})
	t.Run("error chain", func(t *testing.T) {
		// The class may sit earlier in the response's errors.
		_, _, err := run(t, fakesql.Reply{Err: mssql.Error{Number: 3998, All: []mssql.Error{{Number: 1222}, {Number: 3998}}}})
		require.ErrorIs(t, err, dialect.ErrLockTimeout)
		require.False(t, errors.Is(err, dialect.ErrOutcomeUnknown))
	})
}
