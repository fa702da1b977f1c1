// Package mysql is tandem's MySQL and MariaDB dialect, for a *sql.DB opened
// with github.com/go-sql-driver/mysql:
//
//	db, err := sql.Open("mysql", "user:pass@tcp(host:3306)/db?parseTime=true")
//	j, err := journal.OpenSQL(ctx, db, mysql.Dialect, journal.SQLConfig{NodeID: "a"})
//
// It needs MySQL 8.0.4 or MariaDB 10.6 or newer (for JSON_TABLE) with
// InnoDB tables (a non-transactional engine cannot keep the journal
// gap-free), and a user that may create tables and routines (CREATE,
// CREATE ROUTINE; once) and execute them (EXECUTE). parseTime is optional.
//
// An append is one round trip holding the counter's row lock: a CALL of
// the stored procedure <prefix>append_v1 that locks the counter row, bumps
// it, inserts the batch (passed as one JSON document and unpacked with
// JSON_TABLE) and commits. Without the procedure, a client could not send
// the bump, the insert and the COMMIT in one round trip unless the caller's
// DSN enabled multiStatements, which tandem does not require. The lock
// timeout is the session's innodb_lock_wait_timeout on the journal's append
// connection, in whole seconds (rounded up). A batch travels base64-encoded,
// so max_allowed_packet must exceed 4/3 of journal.MaxAppendSize plus a
// little: the defaults (16 MiB on MariaDB, 64 MiB on MySQL 8) do.
//
// MySQL has no push notification: nodes on MySQL poll.
package mysql

import (
	"context"
	"database/sql"
	sqldriver "database/sql/driver"
	"encoding/base64"
	"errors"
	"fmt"
	"strings"
	"time"

	driver "github.com/go-sql-driver/mysql"

	"github.com/tandem-go/tandem/dialect"
)

// Dialect is the MySQL and MariaDB dialect.
var Dialect dialect.Dialect = my{}

type my struct{}

var _ dialect.Dialect = my{}

func (my) Name() string { return "mysql" }

func (my) Queries(t dialect.Tables) dialect.Queries {
	return dialect.Queries{
		Read: `SELECT revision, node_id, producer, payload, created_at FROM ` + t.Journal +
			` WHERE revision > ? ORDER BY revision LIMIT ?`,
		Head:        `SELECT revision FROM ` + t.GlobalRevision + ` WHERE id = 1`,
		Meta:        `SELECT epoch, tail, schema_version FROM ` + t.Meta + ` WHERE id = 1`,
		SetTail:     `UPDATE ` + t.Meta + ` SET tail = GREATEST(tail, ?) WHERE id = 1`,
		DeleteRange: `DELETE FROM ` + t.Journal + ` WHERE revision >= ? AND revision < ?`,
		MinRevision: `SELECT MIN(revision) FROM ` + t.Journal,

		LoadPosition: `SELECT revision, epoch, updated_at FROM ` + t.LocalRevisions + ` WHERE node_id = ?`,
		SavePosition: `INSERT INTO ` + t.LocalRevisions + ` (node_id, revision, epoch, updated_at) VALUES (?, ?, ?, UTC_TIMESTAMP(6))
ON DUPLICATE KEY UPDATE revision = VALUES(revision), epoch = VALUES(epoch), updated_at = VALUES(updated_at)`,
		ListPositions:  `SELECT node_id, revision, epoch, updated_at FROM ` + t.LocalRevisions + ` ORDER BY node_id`,
		DeletePosition: `DELETE FROM ` + t.LocalRevisions + ` WHERE node_id = ?`,
		CopyPosition: `INSERT INTO ` + t.LocalRevisions + ` (node_id, revision, epoch, updated_at)
SELECT ?, revision, epoch, UTC_TIMESTAMP(6) FROM ` + t.LocalRevisions + ` WHERE node_id = ?`,
	}
}

// Node ids are ASCII compared byte by byte, as file names are.
const idType = `VARCHAR(64) CHARACTER SET ascii COLLATE ascii_bin`

func schema(t dialect.Tables) []string {
	return []string{
		`CREATE TABLE IF NOT EXISTS ` + t.Journal + ` (
	revision   BIGINT NOT NULL PRIMARY KEY,
	node_id    ` + idType + ` NOT NULL,
	producer   VARCHAR(128) CHARACTER SET ascii COLLATE ascii_bin NOT NULL,
	payload    LONGBLOB NOT NULL,
	created_at DATETIME(6) NOT NULL) ENGINE=InnoDB`,
		`CREATE TABLE IF NOT EXISTS ` + t.GlobalRevision + ` (
	id       TINYINT NOT NULL PRIMARY KEY,
	revision BIGINT NOT NULL) ENGINE=InnoDB`,
		`CREATE TABLE IF NOT EXISTS ` + t.Meta + ` (
	id             TINYINT NOT NULL PRIMARY KEY,
	epoch          VARCHAR(64) CHARACTER SET ascii NOT NULL,
	tail           BIGINT NOT NULL,
	schema_version INT NOT NULL) ENGINE=InnoDB`,
		`CREATE TABLE IF NOT EXISTS ` + t.LocalRevisions + ` (
	node_id    ` + idType + ` NOT NULL PRIMARY KEY,
	revision   BIGINT NOT NULL,
	epoch      VARCHAR(64) CHARACTER SET ascii NOT NULL,
	updated_at DATETIME(6) NOT NULL) ENGINE=InnoDB`,
		`CREATE TABLE IF NOT EXISTS ` + t.Locks + ` (
	name        VARCHAR(128) CHARACTER SET ascii COLLATE ascii_bin NOT NULL PRIMARY KEY,
	owner       ` + idType + ` NOT NULL,
	instance    VARCHAR(64) CHARACTER SET ascii COLLATE ascii_bin NOT NULL,
	token       BIGINT NOT NULL,
	heartbeat   BIGINT NOT NULL,
	acquired_at DATETIME(6) NOT NULL,
	renewed_at  DATETIME(6) NOT NULL,
	expires_at  DATETIME(6) NOT NULL) ENGINE=InnoDB`,
		`INSERT IGNORE INTO ` + t.GlobalRevision + ` (id, revision) VALUES (1, 0)`,
	}
}

// procName is the append procedure of the tables t. Its version suffix
// changes whenever its body or signature does, so nodes of two releases can
// run side by side during a rolling upgrade.
func procName(t dialect.Tables) string { return t.Prefix + "append_v1" }

// procedureSQL locks the counter row, checks the expected head (p_expect <
// 0: unconditional), bumps the counter, inserts the entries of p_entries (a
// JSON array of [producer, base64 payload] pairs) with consecutive
// revisions, commits and returns the first revision, or -1 on a head
// mismatch. Any error rolls back and is re-signalled unchanged.
func procedureSQL(t dialect.Tables) string {
	return `CREATE PROCEDURE ` + procName(t) + `(IN p_n BIGINT, IN p_node VARCHAR(64), IN p_expect BIGINT, IN p_entries LONGTEXT)
MODIFIES SQL DATA
BEGIN
	DECLARE v_rev BIGINT;
	DECLARE EXIT HANDLER FOR SQLEXCEPTION BEGIN ROLLBACK; RESIGNAL; END;
	START TRANSACTION;
	SELECT revision INTO v_rev FROM ` + t.GlobalRevision + ` WHERE id = 1 FOR UPDATE;
	IF p_expect >= 0 AND v_rev <> p_expect THEN
		ROLLBACK;
		SELECT -1;
	ELSE
		UPDATE ` + t.GlobalRevision + ` SET revision = v_rev + p_n WHERE id = 1;
		INSERT INTO ` + t.Journal + ` (revision, node_id, producer, payload, created_at)
		SELECT v_rev + e.ord, p_node, e.producer, FROM_BASE64(e.payload), UTC_TIMESTAMP(6)
		FROM JSON_TABLE(p_entries, '$[*]' COLUMNS (
			ord      FOR ORDINALITY,
			producer VARCHAR(128) CHARACTER SET ascii PATH '$[0]',
			payload  LONGTEXT PATH '$[1]')) AS e;
		COMMIT;
		SELECT v_rev + 1;
	END IF;
END`
}

// CreateSchema runs the DDL under a named lock (GET_LOCK) keyed by the
// prefix, so nodes starting at once create it exactly once.
func (d my) CreateSchema(ctx context.Context, db *sql.DB, t dialect.Tables, epoch string) error {
	if v, err := dialect.StoredSchemaVersion(ctx, db, t); err == nil && d.hasProcedure(ctx, db, t) {
		return dialect.CheckSchemaVersion(v)
	}
	conn, err := db.Conn(ctx)
	if err != nil {
		return d.Translate(err)
	}
	defer conn.Close()
	lockName := "tandem schema " + t.Prefix
	var got sql.NullInt64
	if err := conn.QueryRowContext(ctx, `SELECT GET_LOCK(?, 60)`, lockName).Scan(&got); err != nil {
		return d.Translate(err)
	}
	if got.Int64 != 1 {
		return fmt.Errorf("%w: waiting for the schema lock %q", dialect.ErrLockTimeout, lockName)
	}
	defer conn.ExecContext(context.WithoutCancel(ctx), `SELECT RELEASE_LOCK(?)`, lockName)
	for _, stmt := range schema(t) {
		if _, err := conn.ExecContext(ctx, stmt); err != nil {
			return fmt.Errorf("%s: %w", strings.SplitN(stmt, "(", 2)[0], d.Translate(err))
		}
	}
	if _, err := conn.ExecContext(ctx, `INSERT IGNORE INTO `+t.Meta+` (id, epoch, tail, schema_version) VALUES (1, ?, 1, ?)`,
		epoch, dialect.SchemaVersion); err != nil {
		return d.Translate(err)
	}
	if err := d.createProcedure(ctx, conn, t); err != nil {
		return err
	}
	v, err := dialect.StoredSchemaVersion(ctx, conn, t)
	if err != nil {
		return fmt.Errorf("read schema version: %w", d.Translate(err))
	}
	return dialect.CheckSchemaVersion(v)
}

func (d my) hasProcedure(ctx context.Context, db *sql.DB, t dialect.Tables) bool {
	var n int
	err := db.QueryRowContext(ctx, `SELECT COUNT(*) FROM information_schema.routines
WHERE routine_schema = DATABASE() AND routine_name = ? AND routine_type = 'PROCEDURE'`, procName(t)).Scan(&n)
	return err == nil && n > 0
}

func (d my) createProcedure(ctx context.Context, conn *sql.Conn, t dialect.Tables) error {
	var n int
	if err := conn.QueryRowContext(ctx, `SELECT COUNT(*) FROM information_schema.routines
WHERE routine_schema = DATABASE() AND routine_name = ? AND routine_type = 'PROCEDURE'`, procName(t)).Scan(&n); err != nil {
		return d.Translate(err)
	}
	if n > 0 {
		return nil
	}
	if _, err := conn.ExecContext(ctx, procedureSQL(t)); err != nil {
		return fmt.Errorf("create procedure %s (needs the CREATE ROUTINE privilege): %w", procName(t), d.Translate(err))
	}
	return nil
}

func (d my) PrepareConn(ctx context.Context, conn *sql.Conn, lockTimeout time.Duration) error {
	secs := int64((lockTimeout + time.Second - 1) / time.Second)
	_, err := conn.ExecContext(ctx, fmt.Sprintf(`SET SESSION innodb_lock_wait_timeout = %d`, max(secs, 1)))
	return d.Translate(err)
}

// entriesJSON encodes entries as the procedure's p_entries: a JSON array of
// [producer, base64 payload] pairs.
func entriesJSON(entries []dialect.Entry) string {
	size := 2
	for _, e := range entries {
		size += len(e.Producer) + base64.StdEncoding.EncodedLen(len(e.Payload)) + 8
	}
	b := make([]byte, 0, size)
	b = append(b, '[')
	for i, e := range entries {
		if i > 0 {
			b = append(b, ',')
		}
		b = append(b, '[')
		b = appendJSONString(b, e.Producer)
		b = append(b, ',', '"')
		b = base64.StdEncoding.AppendEncode(b, e.Payload)
		b = append(b, '"', ']')
	}
	return string(append(b, ']'))
}

// appendJSONString appends s as a JSON string. Producers are printable
// ASCII (ident.Producer), so only '"' and '\\' need escaping; anything
// else is escaped too, to be safe.
func appendJSONString(b []byte, s string) []byte {
	b = append(b, '"')
	for i := 0; i < len(s); i++ {
		switch c := s[i]; {
		case c == '"' || c == '\\':
			b = append(b, '\\', c)
		case c < 0x20 || c > 0x7e:
			b = fmt.Appendf(b, `\u%04x`, c)
		default:
			b = append(b, c)
		}
	}
	return append(b, '"')
}

func (d my) Append(ctx context.Context, conn *sql.Conn, r dialect.AppendRequest) (int64, error) {
	// Preparing happens before the lock is taken; the CALL is the one
	// round trip that holds it.
	stmt, err := conn.PrepareContext(ctx, `CALL `+procName(r.Tables)+`(?, ?, ?, ?)`)
	if err != nil {
		return 0, d.Translate(err)
	}
	defer stmt.Close()
	var first int64
	err = stmt.QueryRowContext(ctx, int64(len(r.Entries)), r.NodeID, r.ExpectHead, entriesJSON(r.Entries)).Scan(&first)
	var myErr *driver.MySQLError
	switch {
	case err == nil && first < 0:
		return 0, fmt.Errorf("%w: expected head %d", dialect.ErrHeadMismatch, r.ExpectHead)
	case err == nil:
		return first, nil
	case errors.As(err, &myErr), errors.Is(err, sqldriver.ErrBadConn):
		// A server error: the procedure rolled back. A bad connection:
		// the driver sent nothing.
		return 0, d.Translate(err)
	default:
		return 0, fmt.Errorf("%w: %w", dialect.ErrOutcomeUnknown, err)
	}
}

// Translate maps MySQL error numbers to the dialect's error classes.
func (my) Translate(err error) error {
	var myErr *driver.MySQLError
	if err == nil || !errors.As(err, &myErr) {
		return err
	}
	switch myErr.Number {
	case 1062, 1586: // ER_DUP_ENTRY, ER_DUP_ENTRY_WITH_KEY_NAME
		return fmt.Errorf("%w: %w", dialect.ErrUniqueViolation, err)
	case 1213: // ER_LOCK_DEADLOCK
		return fmt.Errorf("%w: %w", dialect.ErrDeadlock, err)
	case 1205, 3572: // ER_LOCK_WAIT_TIMEOUT, ER_LOCK_NOWAIT
		return fmt.Errorf("%w: %w", dialect.ErrLockTimeout, err)
	}
	return err
}

// LockQueries implements dialect.Dialect.
func (my) LockQueries(t dialect.Tables) dialect.LockQueries {
	const now = `UTC_TIMESTAMP(6)`
	return dialect.LockQueries{
		Seed: `INSERT IGNORE INTO ` + t.Locks + ` (name, owner, instance, token, heartbeat, acquired_at, renewed_at, expires_at)
VALUES (?, '', '', 0, 0, ` + now + `, ` + now + `, ` + now + `)`,
		Acquire: `UPDATE ` + t.Locks + ` SET owner = ?, instance = ?, token = token + 1, heartbeat = 0,
acquired_at = ` + now + `, renewed_at = ` + now + `, expires_at = TIMESTAMPADD(MICROSECOND, ? * 1000, ` + now + `)
WHERE name = ? AND expires_at <= ` + now,
		Token: `SELECT token FROM ` + t.Locks + ` WHERE name = ?`,
		Renew: `UPDATE ` + t.Locks + ` SET expires_at = TIMESTAMPADD(MICROSECOND, ? * 1000, ` + now + `), renewed_at = ` + now + `, heartbeat = heartbeat + 1
WHERE name = ? AND owner = ? AND instance = ? AND token = ? AND expires_at > ` + now,
		Release: `UPDATE ` + t.Locks + ` SET expires_at = ` + now + `
WHERE name = ? AND owner = ? AND instance = ? AND token = ? AND expires_at > ` + now,
		List: `SELECT name, owner, instance, token, acquired_at, renewed_at, expires_at, CASE WHEN expires_at > ` + now + ` THEN 1 ELSE 0 END
FROM ` + t.Locks + ` ORDER BY name`,
		Fence: `SELECT token FROM ` + t.Locks + `
WHERE name = ? AND owner = ? AND instance = ? AND token = ? AND expires_at > ` + now + ` FOR UPDATE`,
	}
}
