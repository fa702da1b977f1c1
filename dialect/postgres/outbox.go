package postgres

import (
	"context"
	"database/sql"
	"time"

	"github.com/tandem-go/tandem/internal/sqldialect"
)

var _ sqldialect.Outbox = pg{}

// schemaV4 is the pending table: records published inside an application's
// transaction, waiting to be moved into the journal.
func schemaV4(t sqldialect.Tables) []string {
	return []string{`CREATE TABLE IF NOT EXISTS ` + t.Pending + ` (
	handle     BIGINT NOT NULL,
	seq        INTEGER NOT NULL,
	node_id    VARCHAR(64) NOT NULL,
	instance   VARCHAR(64) NOT NULL,
	producer   VARCHAR(128) NOT NULL,
	payload    BYTEA NOT NULL,
	created_at TIMESTAMPTZ NOT NULL DEFAULT now(),
	PRIMARY KEY (handle, seq))`}
}

// insertPendingSQL: $1 handle, $2 node id, $3 instance, $4 producers, $5
// payloads.
func insertPendingSQL(t sqldialect.Tables) string {
	return `INSERT INTO ` + t.Pending + ` (handle, seq, node_id, instance, producer, payload, created_at)
SELECT $1, e.ord, $2, $3, e.producer, e.payload, now()
FROM unnest($4::text[], $5::bytea[]) WITH ORDINALITY AS e(producer, payload, ord)`
}

// InsertPending implements sqldialect.Outbox: one INSERT in the caller's
// transaction.
func (d pg) InsertPending(ctx context.Context, tx *sql.Tx, r sqldialect.PendingRequest) error {
	producers := make([]string, len(r.Entries))
	payloads := make([][]byte, len(r.Entries))
	for i, e := range r.Entries {
		producers[i], payloads[i] = e.Producer, e.Payload
		if payloads[i] == nil {
			payloads[i] = []byte{}
		}
	}
	_, err := tx.ExecContext(ctx, insertPendingSQL(r.Tables), r.Handle, r.NodeID, r.Instance, producers, payloads)
	return d.Translate(err)
}

// relaySQL moves the committed rows of at most $1 handles into the journal
// in one statement. A transaction-level advisory lock, taken before
// anything else, keeps relays of several nodes from locking pending rows
// in different orders (they would deadlock); appends take only the
// counter's row lock, which the relay takes last, once it knows how many
// records it moves. The DELETE sees the rows committed when the statement
// started: rows of transactions still open are invisible, never waited
// for; rows another relay moved meanwhile are skipped once it commits.
func relaySQL(t sqldialect.Tables) string {
	return `WITH lk AS (
	SELECT pg_advisory_xact_lock(hashtext('tandem relay ` + t.Prefix + `')) AS ok
), h AS (
	SELECT DISTINCT handle FROM ` + t.Pending + `, lk WHERE lk.ok IS NOT NULL ORDER BY handle LIMIT $1
), moved AS (
	DELETE FROM ` + t.Pending + ` p USING h WHERE p.handle = h.handle
	RETURNING p.handle, p.seq, p.node_id, p.instance, p.producer, p.payload
), n AS (
	SELECT count(*) AS n FROM moved
), c AS (
	UPDATE ` + t.GlobalRevision + ` SET revision = revision + n.n FROM n WHERE id = 1 AND n.n > 0 RETURNING revision, n.n
), ins AS (
	INSERT INTO ` + t.Journal + ` (revision, node_id, instance, batch_id, producer, payload, created_at)
	SELECT c.revision - c.n + row_number() OVER (ORDER BY m.handle, m.seq), m.node_id, m.instance, m.handle, m.producer, m.payload, now()
	FROM moved m, c
)
SELECT n FROM n` + durableJoin
}

// Relay implements sqldialect.Outbox.
func (d pg) Relay(ctx context.Context, conn *sql.Conn, t sqldialect.Tables, maxHandles int, _ time.Duration) (int64, error) {
	var n int64
	if err := conn.QueryRowContext(ctx, relaySQL(t), int64(maxHandles)).Scan(&n); err != nil {
		return 0, d.appendError(err)
	}
	return n, nil
}
