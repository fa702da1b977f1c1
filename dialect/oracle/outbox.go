package oracle

import (
	"context"
	"database/sql"
	"strconv"
	"time"

	goora "github.com/sijms/go-ora/v2"

	"github.com/tandem-go/tandem/internal/sqldialect"
)

var _ sqldialect.Outbox = ora{}

// pendingTable is the pending table (records published inside an
// application's transaction), created by migration 4.
func pendingTable(t sqldialect.Tables) table {
	return table{t.Pending, `CREATE TABLE ` + t.Pending + ` (
	handle     NUMBER(19) NOT NULL,
	seq        NUMBER(10) NOT NULL,
	node_id    VARCHAR2(64) NOT NULL,
	instance   VARCHAR2(64) NOT NULL,
	producer   VARCHAR2(128) NOT NULL,
	payload    BLOB,
	created_at TIMESTAMP(6) NOT NULL,
	PRIMARY KEY (handle, seq))`}
}

// insertPendingSQL: :1 handle, :2 seq, :3 node id, :4 instance, :5
// producer, :6 payload.
func insertPendingSQL(t sqldialect.Tables) string {
	return `INSERT INTO ` + t.Pending + ` (handle, seq, node_id, instance, producer, payload, created_at)
VALUES (:1, :2, :3, :4, :5, :6, ` + utcNow + `)`
}

// InsertPending implements sqldialect.Outbox: one INSERT per entry in the
// caller's transaction (payloads over 2,000 bytes bound as BLOBs, as in
// Append).
func (d ora) InsertPending(ctx context.Context, tx *sql.Tx, r sqldialect.PendingRequest) error {
	q := insertPendingSQL(r.Tables)
	for i, e := range r.Entries {
		var payload any = e.Payload
		if len(e.Payload) > maxRaw {
			payload = goora.Blob{Data: e.Payload}
		} else if e.Payload == nil {
			payload = []byte{}
		}
		if _, err := tx.ExecContext(ctx, q, r.Handle, int64(i+1), r.NodeID, r.Instance, e.Producer, payload); err != nil {
			return d.Translate(err)
		}
	}
	return nil
}

// relaySQL is the PL/SQL block that moves the committed pending rows of at
// most :1 handles into the journal. Binds, by position (each placeholder
// occurs once; in PL/SQL a bind in an embedded SQL statement is one of the
// block's binds, in the order of first appearance): :1 the number of
// handles, :2 the OUT bind, the number of records moved.
//
// It locks the counter row (FOR UPDATE WAIT, like an append), copies the
// rows of the first :1 handles with one INSERT … SELECT (statement-level
// read consistency: the query sees the rows committed when it began, all
// of a handle's rows or none, and never waits for open transactions),
// deletes exactly the handles it moved (the journal rows it inserted name
// them; a handle's rows commit together and only a relay deletes them, so
// it deletes as many rows as it copied, else it raises ORA-20002 and rolls
// back rather than lose a row), bumps the counter (ORA-20003 unless that
// changed the row), commits, and returns the count in :2. A missing
// counter row raises ORA-20001 (go-ora would report NO_DATA_FOUND as
// success).
func relaySQL(t sqldialect.Tables, wait int) string {
	return `DECLARE
	v_rev NUMBER(19);
	v_n   NUMBER(19) := 0;
BEGIN
	SELECT revision INTO v_rev FROM ` + t.GlobalRevision + ` WHERE id = 1 FOR UPDATE WAIT ` + strconv.Itoa(wait) + `;
	INSERT INTO ` + t.Journal + ` (revision, node_id, instance, batch_id, producer, payload, created_at)
	SELECT v_rev + ROW_NUMBER() OVER (ORDER BY p.handle, p.seq), p.node_id, p.instance, p.handle, p.producer, p.payload, ` + utcNow + `
	FROM ` + t.Pending + ` p
	WHERE p.handle IN (SELECT handle FROM (SELECT DISTINCT handle FROM ` + t.Pending + ` ORDER BY handle) WHERE ROWNUM <= :1);
	v_n := SQL%ROWCOUNT;
	IF v_n > 0 THEN
		DELETE FROM ` + t.Pending + ` WHERE handle IN (SELECT batch_id FROM ` + t.Journal + ` WHERE revision > v_rev);
		IF SQL%ROWCOUNT <> v_n THEN
			RAISE_APPLICATION_ERROR(-20002, 'tandem: the relay would delete other rows than it copied');
		END IF;
		UPDATE ` + t.GlobalRevision + ` SET revision = v_rev + v_n WHERE id = 1;
		IF SQL%ROWCOUNT <> 1 THEN
			RAISE_APPLICATION_ERROR(-20003, 'tandem: the relay did not update the counter row');
		END IF;
	END IF;
	COMMIT;
	:2 := v_n;
EXCEPTION
	WHEN NO_DATA_FOUND THEN
		ROLLBACK;
		RAISE_APPLICATION_ERROR(-20001, 'tandem: ` + t.GlobalRevision + ` has no counter row (id = 1)');
	WHEN OTHERS THEN
		ROLLBACK;
		RAISE;
END;`
}

// Relay implements sqldialect.Outbox: one PL/SQL block, one round trip.
//
// The OUT bind is an sql.NullInt64: go-ora writes every OUT bind back after
// a call it reports as a success (Stmt._exec: setFieldValue with the
// decoded value, setNull for a NULL or absent one, which zeroes an int64),
// so an int64 could not tell "moved nothing" from a block that never
// reached its assignment (an error the driver dropped, possibly after the
// COMMIT). A NULL count is such a call: an open outcome.
func (d ora) Relay(ctx context.Context, conn *sql.Conn, t sqldialect.Tables, maxHandles int, lockTimeout time.Duration) (int64, error) {
	var n sql.NullInt64
	if _, err := conn.ExecContext(ctx, relaySQL(t, waitSeconds(lockTimeout)), int64(maxHandles), sql.Out{Dest: &n}); err != nil {
		return 0, d.appendError(err)
	}
	if !n.Valid || n.Int64 < 0 {
		return 0, sqldialect.Open(errRelayUnassigned)
	}
	return n.Int64, nil
}
