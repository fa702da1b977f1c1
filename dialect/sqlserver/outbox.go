package sqlserver

import (
	"context"
	"database/sql"
	"fmt"
	"strconv"
	"strings"
	"time"

	"github.com/tandem-go/tandem/internal/sqldialect"
)

var _ sqldialect.Outbox = sqlServer{}

// skipOpen is the table hint of the pending table's readers that must
// neither wait for nor see the rows of transactions still open: READPAST
// skips rows other transactions hold row locks on. READPAST alone is
// rejected when the database has READ_COMMITTED_SNAPSHOT on and the
// session runs at READ COMMITTED (the Table Hints reference: "include the
// READCOMMITTEDLOCK table hint"), and at SERIALIZABLE or SNAPSHOT (error
// 650); READCOMMITTEDLOCK makes the read a locking read committed one
// whatever the database option and the session's level, so READPAST is
// valid everywhere. Never used on the journal: a skipped journal row would
// be a lost record; a skipped pending row stays pending.
const skipOpen = `WITH (READCOMMITTEDLOCK, READPAST)`

// Error numbers the relay batch raises itself (THROW, before its COMMIT).
const (
	errRelayNoCounter = 51000 // the counter row is missing
	errRelayMismatch  = 51001 // it would delete other rows than it copied
	errRelayCounter   = 51002 // its counter UPDATE changed no row
)

// schemaV4 is migration 4's batches: the pending table (records published
// inside an application's transaction), created unless it exists, lock
// escalation off for it, and the migration recorded. Without escalation a
// transaction's locks on the pending table stay row locks, which the
// relay's READPAST skips; an escalated table lock (a large application
// transaction, memory pressure) would make the relay wait for the
// application instead.
func schemaV4(t sqldialect.Tables) []string {
	return []string{
		`IF OBJECT_ID(N'` + t.Pending + `', N'U') IS NULL
CREATE TABLE ` + t.Pending + ` (
	handle     BIGINT NOT NULL,
	seq        INT NOT NULL,
	node_id    ` + idType + ` NOT NULL,
	instance   ` + idType + ` NOT NULL,
	producer   NVARCHAR(128) NOT NULL,
	payload    VARBINARY(MAX) NOT NULL,
	created_at DATETIME2(6) NOT NULL,
	PRIMARY KEY (handle, seq))`,
		`ALTER TABLE ` + t.Pending + ` SET (LOCK_ESCALATION = DISABLE)`,
		recordMigration(t, 4),
	}
}

// pendingParams are the parameters of insertPendingSQL besides two per
// entry: @p1 handle, @p2 node id, @p3 instance.
const pendingParams = 3

// maxPendingEntries keeps insertPendingSQL within the parameter limit
// (1,047 entries; journal.MaxAppendEntries is 1,000).
const maxPendingEntries = (maxParams - pendingParams) / 2

// insertPendingSQL inserts n entries: @p1 handle, @p2 node id, @p3
// instance, then the producer and payload of each entry, with seq 1..n.
// The rows come from a derived table, which has no row limit (INSERT …
// VALUES has 1,000).
func insertPendingSQL(t sqldialect.Tables, n int) string {
	var b strings.Builder
	b.Grow(200 + n*24)
	b.WriteString(`INSERT INTO ` + t.Pending + ` (handle, seq, node_id, instance, producer, payload, created_at)
SELECT @p1, v.k, @p2, @p3, v.producer, v.payload, SYSUTCDATETIME() FROM (VALUES `)
	p := pendingParams
	for i := range n {
		if i > 0 {
			b.WriteString(`, `)
		}
		b.WriteString(`(` + strconv.Itoa(i+1) + `, @p` + strconv.Itoa(p+1) + `, @p` + strconv.Itoa(p+2) + `)`)
		p += 2
	}
	b.WriteString(`) AS v (k, producer, payload)`)
	return b.String()
}

// pendingArgs are the arguments of insertPendingSQL, in order.
func pendingArgs(r sqldialect.PendingRequest) []any {
	args := make([]any, 0, pendingParams+2*len(r.Entries))
	args = append(args, r.Handle, r.NodeID, r.Instance)
	for _, e := range r.Entries {
		p := e.Payload
		if p == nil {
			p = []byte{} // go-mssqldb sends a nil []byte as NULL
		}
		args = append(args, e.Producer, p)
	}
	return args
}

// InsertPending implements sqldialect.Outbox: one INSERT in the caller's
// transaction.
func (d sqlServer) InsertPending(ctx context.Context, tx *sql.Tx, r sqldialect.PendingRequest) error {
	if n := len(r.Entries); n == 0 || n > maxPendingEntries {
		return fmt.Errorf("sqlserver: a pending batch has 1 to %d entries, not %d", maxPendingEntries, n)
	}
	_, err := tx.ExecContext(ctx, insertPendingSQL(r.Tables, len(r.Entries)), pendingArgs(r)...)
	return d.Translate(err)
}

// relaySQL moves the committed pending rows of at most @p1 handles into the
// journal in one batch:
//
//  1. Before it locks anything, it picks the handles (skipOpen: rows of
//     transactions still open are skipped, never waited for).
//  2. It locks the counter row (UPDLOCK, as an append's UPDATE would):
//     relays and appends are serialized from here to the COMMIT.
//  3. It copies the picked handles' rows into the journal, consecutive in
//     (handle, seq) order, seeking by handle (FORCESEEK: a scan would touch,
//     and under locking read committed wait for, rows of open
//     transactions). A handle whose rows another relay moved after step 1
//     has no rows left by now: that relay committed before this one got
//     the counter's lock.
//  4. It deletes the picked handles' rows, which must be exactly the rows
//     it copied (a handle's rows commit together, and only a relay deletes
//     them); if the counts differ it raises errRelayMismatch and rolls
//     back rather than lose or duplicate a row.
//  5. It bumps the counter (raising errRelayCounter unless that changed
//     the row), commits, and returns the number of records.
//
// The CATCH block rolls back and re-raises the original error; XACT_ABORT
// covers what it cannot see (the client cancelling the batch).
func relaySQL(t sqldialect.Tables) string {
	return `SET NOCOUNT ON;
SET XACT_ABORT ON;
DECLARE @rev BIGINT;
DECLARE @n BIGINT = 0;
DECLARE @h TABLE (handle BIGINT PRIMARY KEY);
BEGIN TRY
	INSERT INTO @h (handle) SELECT DISTINCT TOP (@p1) handle FROM ` + t.Pending + ` ` + skipOpen + ` ORDER BY handle;
	BEGIN TRANSACTION;
	SELECT @rev = revision FROM ` + t.GlobalRevision + ` WITH (UPDLOCK, HOLDLOCK, ROWLOCK) WHERE id = 1;
	IF @rev IS NULL THROW ` + strconv.Itoa(errRelayNoCounter) + `, N'tandem: ` + t.GlobalRevision + ` has no counter row (id = 1)', 1;
	INSERT INTO ` + t.Journal + ` (revision, node_id, instance, batch_id, producer, payload, created_at)
	SELECT @rev + ROW_NUMBER() OVER (ORDER BY p.handle, p.seq), p.node_id, p.instance, p.handle, p.producer, p.payload, SYSUTCDATETIME()
	FROM @h h JOIN ` + t.Pending + ` p WITH (FORCESEEK) ON p.handle = h.handle;
	SET @n = @@ROWCOUNT;
	IF @n > 0
	BEGIN
		DELETE p FROM ` + t.Pending + ` p WITH (FORCESEEK) JOIN @h h ON p.handle = h.handle;
		IF @@ROWCOUNT <> @n THROW ` + strconv.Itoa(errRelayMismatch) + `, N'tandem: the relay would delete other rows than it copied', 1;
		UPDATE ` + t.GlobalRevision + ` SET revision = @rev + @n WHERE id = 1;
		IF @@ROWCOUNT <> 1 THROW ` + strconv.Itoa(errRelayCounter) + `, N'tandem: the relay did not update the counter row', 1;
	END
	COMMIT TRANSACTION;
END TRY
BEGIN CATCH
	IF @@TRANCOUNT > 0 ROLLBACK TRANSACTION;
	THROW;
END CATCH;
SELECT @n;`
}

// Relay implements sqldialect.Outbox: one batch, one round trip. Its errors
// are classified as Append's (appendError): the batch's own THROWs come
// before its COMMIT and prove that it moved nothing.
func (d sqlServer) Relay(ctx context.Context, conn *sql.Conn, t sqldialect.Tables, maxHandles int, _ time.Duration) (int64, error) {
	var n int64
	if err := conn.QueryRowContext(ctx, relaySQL(t), int64(maxHandles)).Scan(&n); err != nil {
		return 0, d.appendError(err)
	}
	return n, nil
}
