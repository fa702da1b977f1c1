package mysql

import (
	"context"
	"database/sql"
	"strings"
	"time"

	"github.com/tandem-go/tandem/internal/sqldialect"
)

var _ sqldialect.Outbox = my{}

// pendingDDL is the pending table: records published inside an
// application's transaction, waiting to be moved into the journal.
func pendingDDL(t sqldialect.Tables) string {
	return `CREATE TABLE IF NOT EXISTS ` + t.Pending + ` (
	handle     BIGINT NOT NULL,
	seq        INT NOT NULL,
	node_id    ` + idType + ` NOT NULL,
	instance   VARCHAR(64) CHARACTER SET ascii COLLATE ascii_bin NOT NULL,
	producer   VARCHAR(128) CHARACTER SET ascii COLLATE ascii_bin NOT NULL,
	payload    LONGBLOB NOT NULL,
	created_at DATETIME(6) NOT NULL,
	PRIMARY KEY (handle, seq)) ENGINE=InnoDB`
}

// relayProcV1 is migration 4's relay procedure, which releases of schema
// version 4 and 5 call. It trusts every statement to have done its work or
// raised an error, and MariaDB breaks that: a multi-table DELETE
// interrupted by KILL QUERY at the wrong moment deletes nothing and
// reports success, the procedure goes on and commits, and the entries it
// copied stay pending too, to be relayed a second time (relayProc checks).
func relayProcV1(t sqldialect.Tables) (name, body string) {
	name = t.Prefix + "relay_v1"
	return name, `CREATE PROCEDURE ` + name + `(IN p_limit INT)
MODIFIES SQL DATA
BEGIN
	DECLARE v_rev BIGINT;
	DECLARE v_n BIGINT;
	DECLARE EXIT HANDLER FOR SQLEXCEPTION BEGIN ROLLBACK; RESIGNAL; END;
	SET TRANSACTION ISOLATION LEVEL READ COMMITTED;
	START TRANSACTION;
	SELECT revision INTO v_rev FROM ` + t.GlobalRevision + ` WHERE id = 1 FOR UPDATE;
	INSERT INTO ` + t.Journal + ` (revision, node_id, instance, batch_id, producer, payload, created_at)
	SELECT v_rev + ROW_NUMBER() OVER (ORDER BY p.handle, p.seq), p.node_id, p.instance, p.handle, p.producer, p.payload, UTC_TIMESTAMP(6)
	FROM ` + t.Pending + ` p JOIN (SELECT DISTINCT handle FROM ` + t.Pending + ` ORDER BY handle LIMIT p_limit) h ON p.handle = h.handle;
	SET v_n = ROW_COUNT();
	IF v_n > 0 THEN
		DELETE p FROM ` + t.Pending + ` p JOIN ` + t.Journal + ` j ON p.handle = j.batch_id WHERE j.revision > v_rev;
		UPDATE ` + t.GlobalRevision + ` SET revision = v_rev + v_n WHERE id = 1;
	END IF;
	COMMIT;
	SELECT v_n;
END`
}

// relayProc is the relay procedure (schema version 6): it locks the counter
// row, then, at READ COMMITTED, copies the committed pending rows of at
// most p_limit handles into the journal with a consistent (non-locking)
// read — so rows of transactions still open are neither seen nor waited
// for — deletes exactly the handles it moved, bumps the counter, commits
// and returns how many records it moved.
//
// It commits only when every statement did all of its work: as many
// pending rows deleted as records inserted, the counter row updated.
// Anything else (a statement that MariaDB cut short without an error, see
// relayProcV1) rolls back and raises SQLSTATE 45000.
func relayProc(t sqldialect.Tables) (name, body string) {
	name = t.Prefix + "relay_v2"
	return name, `CREATE PROCEDURE ` + name + `(IN p_limit INT)
MODIFIES SQL DATA
BEGIN
	DECLARE v_rev BIGINT;
	DECLARE v_n BIGINT;
	DECLARE v_deleted BIGINT;
	DECLARE v_updated BIGINT;
	DECLARE EXIT HANDLER FOR SQLEXCEPTION BEGIN ROLLBACK; RESIGNAL; END;
	SET TRANSACTION ISOLATION LEVEL READ COMMITTED;
	START TRANSACTION;
	SELECT revision INTO v_rev FROM ` + t.GlobalRevision + ` WHERE id = 1 FOR UPDATE;
	IF v_rev IS NULL THEN
		ROLLBACK;
		SIGNAL SQLSTATE '45000' SET MESSAGE_TEXT = 'tandem relay: the counter row was not read; rolled back';
	END IF;
	INSERT INTO ` + t.Journal + ` (revision, node_id, instance, batch_id, producer, payload, created_at)
	SELECT v_rev + ROW_NUMBER() OVER (ORDER BY p.handle, p.seq), p.node_id, p.instance, p.handle, p.producer, p.payload, UTC_TIMESTAMP(6)
	FROM ` + t.Pending + ` p JOIN (SELECT DISTINCT handle FROM ` + t.Pending + ` ORDER BY handle LIMIT p_limit) h ON p.handle = h.handle;
	SET v_n = ROW_COUNT();
	IF v_n > 0 THEN
		DELETE p FROM ` + t.Pending + ` p JOIN ` + t.Journal + ` j ON p.handle = j.batch_id WHERE j.revision > v_rev;
		SET v_deleted = ROW_COUNT();
		UPDATE ` + t.GlobalRevision + ` SET revision = v_rev + v_n WHERE id = 1;
		SET v_updated = ROW_COUNT();
		IF v_deleted <> v_n OR v_updated <> 1 THEN
			ROLLBACK;
			SIGNAL SQLSTATE '45000' SET MESSAGE_TEXT = 'tandem relay: a statement did not do all of its work (interrupted?); rolled back';
		END IF;
	ELSEIF v_n < 0 THEN
		ROLLBACK;
		SIGNAL SQLSTATE '45000' SET MESSAGE_TEXT = 'tandem relay: the copy did not complete (interrupted?); rolled back';
	END IF;
	COMMIT;
	SELECT v_n;
END`
}

// InsertPending implements sqldialect.Outbox: one multi-row INSERT in the
// caller's transaction (at most journal.MaxAppendEntries rows, 6
// placeholders each, well below MySQL's 65,535).
func (d my) InsertPending(ctx context.Context, tx *sql.Tx, r sqldialect.PendingRequest) error {
	var b strings.Builder
	b.WriteString(`INSERT INTO ` + r.Tables.Pending + ` (handle, seq, node_id, instance, producer, payload, created_at) VALUES `)
	args := make([]any, 0, 6*len(r.Entries))
	for i, e := range r.Entries {
		if i > 0 {
			b.WriteString(", ")
		}
		b.WriteString(`(?, ?, ?, ?, ?, ?, UTC_TIMESTAMP(6))`)
		p := e.Payload
		if p == nil {
			p = []byte{}
		}
		args = append(args, r.Handle, int64(i+1), r.NodeID, r.Instance, e.Producer, p)
	}
	_, err := tx.ExecContext(ctx, b.String(), args...)
	return d.Translate(err)
}

// Relay implements sqldialect.Outbox: one CALL of the relay procedure.
func (d my) Relay(ctx context.Context, conn *sql.Conn, t sqldialect.Tables, maxHandles int, _ time.Duration) (int64, error) {
	name, _ := relayProc(t)
	var n int64
	if err := conn.QueryRowContext(ctx, `CALL `+name+`(?)`, int64(maxHandles)).Scan(&n); err != nil {
		return 0, d.appendError(err)
	}
	return n, nil
}
