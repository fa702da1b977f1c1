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
	"strconv"
	"strings"
	"time"

	driver "github.com/go-sql-driver/mysql"

	"github.com/tandem-go/tandem/dialect"
	"github.com/tandem-go/tandem/internal/sqldialect"
)

// Dialect is the MySQL and MariaDB dialect.
var Dialect dialect.Dialect = my{}

type my struct{}

var (
	_ dialect.Dialect         = my{}
	_ sqldialect.SessionEnder = my{}
)

func (my) Name() string { return "mysql" }

func (my) Queries(t sqldialect.Tables) sqldialect.Queries {
	read := `SELECT revision, node_id, instance, producer, payload, created_at FROM ` + t.Journal +
		` WHERE revision > ? ORDER BY revision LIMIT ?`
	return sqldialect.Queries{
		Read:        read,
		Poll:        sqldialect.PollQuery(t, read, t.Pending),
		PollRecords: sqldialect.PollQuery(t, read, ""),
		Head:        `SELECT revision FROM ` + t.GlobalRevision + ` WHERE id = 1`,
		Meta:        `SELECT epoch, tail, schema_version FROM ` + t.Meta + ` WHERE id = 1`,
		SetTail:     `UPDATE ` + t.Meta + ` SET tail = GREATEST(tail, ?) WHERE id = 1`,
		DeleteRange: `DELETE FROM ` + t.Journal + ` WHERE revision >= ? AND revision < ?`,
		MinRevision: `SELECT MIN(revision) FROM ` + t.Journal + ` WHERE revision >= ?`,
		LockHead:    `SELECT revision FROM ` + t.GlobalRevision + ` WHERE id = 1 FOR UPDATE`,
		FindBatch:   `SELECT MIN(revision), COUNT(*) FROM ` + t.Journal + ` WHERE revision > ? AND batch_id = ?`,
		// InnoDB makes a commit visible before its redo is flushed.
		Settle:        `UPDATE ` + t.GlobalRevision + ` SET revision = revision + ? WHERE id = 1`,
		PendingAny:    `SELECT 1 FROM ` + t.Pending + ` LIMIT 1`,
		PendingCount:  `SELECT COUNT(*) FROM ` + t.Pending + ` WHERE handle = ?`,
		PendingOldest: `SELECT COUNT(*), TIMESTAMPDIFF(MICROSECOND, MIN(created_at), UTC_TIMESTAMP(6)) / 1000 FROM ` + t.Pending,

		LoadPosition: `SELECT revision, epoch, updated_at, evicted_at FROM ` + t.LocalRevisions + ` WHERE node_id = ?`,
		SavePosition: `INSERT INTO ` + t.LocalRevisions + ` (node_id, revision, epoch, updated_at, evicted_at) VALUES (?, ?, ?, UTC_TIMESTAMP(6), NULL)
ON DUPLICATE KEY UPDATE revision = VALUES(revision), epoch = VALUES(epoch), updated_at = VALUES(updated_at), evicted_at = NULL`,
		ListPositions:  `SELECT node_id, revision, epoch, updated_at, evicted_at FROM ` + t.LocalRevisions + ` ORDER BY node_id`,
		DeletePosition: `DELETE FROM ` + t.LocalRevisions + ` WHERE node_id = ?`,
		EvictPosition:  `UPDATE ` + t.LocalRevisions + ` SET evicted_at = UTC_TIMESTAMP(6) WHERE node_id = ? AND revision = ? AND evicted_at IS NULL`,
		// MySQL counts changed rows (found rows with clientFoundRows):
		// every row this matches changes, so either count decides.
		UnevictPosition: `UPDATE ` + t.LocalRevisions + ` SET evicted_at = NULL WHERE node_id = ? AND revision = ? AND evicted_at IS NOT NULL`,
		CopyPosition: `INSERT INTO ` + t.LocalRevisions + ` (node_id, revision, epoch, updated_at, evicted_at)
SELECT ?, revision, epoch, UTC_TIMESTAMP(6), evicted_at FROM ` + t.LocalRevisions + ` WHERE node_id = ?`,
		// Liveness as LockQueries.List's held. The position is looked up
		// by its key (SUBSTRING of the lease name, ascii_bin as node_id),
		// so the positions of dead ids cost nothing. A position saved in
		// another epoch than the meta row's (before a restore, say) is
		// behind, whatever its revision.
		MembersBehind: `SELECT COUNT(*) FROM ` + t.Locks + ` l LEFT JOIN ` + t.LocalRevisions + ` r ON r.node_id = SUBSTRING(l.name, 8)
WHERE l.name LIKE 'member.%' AND l.name <> CONCAT('member.', ?) AND l.expires_at > UTC_TIMESTAMP(6)
AND (r.node_id IS NULL OR r.evicted_at IS NOT NULL OR r.revision < ? OR r.epoch <> (SELECT epoch FROM ` + t.Meta + ` WHERE id = 1))`,
	}
}

// Node ids are ASCII compared byte by byte, as file names are.
const idType = `VARCHAR(64) CHARACTER SET ascii COLLATE ascii_bin`

// schemaV1 is the DDL of schema version 1, as the first release ran it.
func schemaV1(t sqldialect.Tables) []string {
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

// procV1 is the append procedure of schema version 1. Nodes of that
// release call it; it stays while they may be running.
func procV1(t sqldialect.Tables) (name, body string) {
	name = t.Prefix + "append_v1"
	return name, `CREATE PROCEDURE ` + name + `(IN p_n BIGINT, IN p_node VARCHAR(64), IN p_expect BIGINT, IN p_entries LONGTEXT)
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

// procV2 is the append procedure of schema versions 2 to 5: it locks the counter
// row, checks the expected head (p_expect < 0: unconditional), bumps the
// counter, inserts the entries of p_entries (a JSON array of [producer,
// base64 payload] pairs) with consecutive revisions, the node id, the
// instance and the batch id, commits and returns the first revision, or -1
// on a head mismatch.
//
// Its EXIT HANDLER rolls back what a failed statement left open, but
// MariaDB skips handlers for a killed statement (KILL QUERY,
// max_statement_time): the journal never relies on it, and discards the
// connection after any error, which rolls back on the server. Releases of
// those versions call it; it stays while they may be running.
func procV2(t sqldialect.Tables) (name, body string) {
	name = t.Prefix + "append_v2"
	return name, `CREATE PROCEDURE ` + name + `(IN p_n BIGINT, IN p_node VARCHAR(64), IN p_instance VARCHAR(64), IN p_batch BIGINT, IN p_expect BIGINT, IN p_entries LONGTEXT)
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
		INSERT INTO ` + t.Journal + ` (revision, node_id, instance, batch_id, producer, payload, created_at)
		SELECT v_rev + e.ord, p_node, p_instance, p_batch, e.producer, FROM_BASE64(e.payload), UTC_TIMESTAMP(6)
		FROM JSON_TABLE(p_entries, '$[*]' COLUMNS (
			ord      FOR ORDINALITY,
			producer VARCHAR(128) CHARACTER SET ascii PATH '$[0]',
			payload  LONGTEXT PATH '$[1]')) AS e;
		COMMIT;
		SELECT v_rev + 1;
	END IF;
END`
}

// procV3 is the append procedure of this release (schema version 6):
// procV2 that commits only when its statements did all of their work —
// the counter row updated, p_n records inserted — and otherwise rolls back
// and raises SQLSTATE 45000. MariaDB has been seen to let a statement
// interrupted by KILL QUERY end without an error and without its work (a
// multi-table DELETE in the relay, see relayProcV1); a commit after such a
// statement would leave a gap under the counter.
func procV3(t sqldialect.Tables) (name, body string) {
	name = t.Prefix + "append_v3"
	return name, `CREATE PROCEDURE ` + name + `(IN p_n BIGINT, IN p_node VARCHAR(64), IN p_instance VARCHAR(64), IN p_batch BIGINT, IN p_expect BIGINT, IN p_entries LONGTEXT)
MODIFIES SQL DATA
BEGIN
	DECLARE v_rev BIGINT;
	DECLARE v_updated BIGINT;
	DECLARE v_inserted BIGINT;
	DECLARE EXIT HANDLER FOR SQLEXCEPTION BEGIN ROLLBACK; RESIGNAL; END;
	START TRANSACTION;
	SELECT revision INTO v_rev FROM ` + t.GlobalRevision + ` WHERE id = 1 FOR UPDATE;
	IF v_rev IS NULL THEN
		ROLLBACK;
		SIGNAL SQLSTATE '45000' SET MESSAGE_TEXT = 'tandem append: the counter row was not read; rolled back';
	END IF;
	IF p_expect >= 0 AND v_rev <> p_expect THEN
		ROLLBACK;
		SELECT -1;
	ELSE
		UPDATE ` + t.GlobalRevision + ` SET revision = v_rev + p_n WHERE id = 1;
		SET v_updated = ROW_COUNT();
		INSERT INTO ` + t.Journal + ` (revision, node_id, instance, batch_id, producer, payload, created_at)
		SELECT v_rev + e.ord, p_node, p_instance, p_batch, e.producer, FROM_BASE64(e.payload), UTC_TIMESTAMP(6)
		FROM JSON_TABLE(p_entries, '$[*]' COLUMNS (
			ord      FOR ORDINALITY,
			producer VARCHAR(128) CHARACTER SET ascii PATH '$[0]',
			payload  LONGTEXT PATH '$[1]')) AS e;
		SET v_inserted = ROW_COUNT();
		IF v_updated <> 1 OR v_inserted <> p_n THEN
			ROLLBACK;
			SIGNAL SQLSTATE '45000' SET MESSAGE_TEXT = 'tandem append: a statement did not do all of its work (interrupted?); rolled back';
		END IF;
		COMMIT;
		SELECT v_rev + 1;
	END IF;
END`
}

// Migrations implements dialect.Dialect. MySQL's DDL commits by itself, so
// every step checks first and a migration records itself last: a node that
// fails half way leaves the rest to the next.
func (d my) Migrations(t sqldialect.Tables) []sqldialect.Migration {
	return []sqldialect.Migration{
		{Version: 1, Compat: 1, Apply: func(ctx context.Context, conn *sql.Conn, epoch string) error {
			for _, stmt := range schemaV1(t) {
				if _, err := conn.ExecContext(ctx, stmt); err != nil {
					return fmt.Errorf("%s: %w", strings.SplitN(stmt, "(", 2)[0], err)
				}
			}
			if _, err := conn.ExecContext(ctx, `INSERT IGNORE INTO `+t.Meta+` (id, epoch, tail, schema_version) VALUES (1, ?, 1, 1)`, epoch); err != nil {
				return err
			}
			name, body := procV1(t)
			return createProcedure(ctx, conn, name, body)
		}},
		{Version: 2, Compat: 1, Apply: func(ctx context.Context, conn *sql.Conn, _ string) error {
			name, body := procV2(t)
			for _, c := range []struct{ table, column, ddl string }{
				{t.Journal, "instance", `VARCHAR(64) CHARACTER SET ascii COLLATE ascii_bin NULL`},
				{t.Journal, "batch_id", `BIGINT NULL`},
				{t.Meta, "migration", `INT NULL`},
			} {
				if err := addColumn(ctx, conn, c.table, c.column, c.ddl); err != nil {
					return err
				}
			}
			if err := createProcedure(ctx, conn, name, body); err != nil {
				return err
			}
			_, err := conn.ExecContext(ctx, `UPDATE `+t.Meta+` SET migration = 2 WHERE id = 1 AND COALESCE(migration, 1) < 2`)
			return err
		}},
		{Version: 3, Compat: 1, Apply: func(ctx context.Context, conn *sql.Conn, _ string) error {
			if err := addColumn(ctx, conn, t.LocalRevisions, "evicted_at", `DATETIME(6) NULL`); err != nil {
				return err
			}
			_, err := conn.ExecContext(ctx, `UPDATE `+t.Meta+` SET migration = 3 WHERE id = 1 AND COALESCE(migration, 1) < 3`)
			return err
		}},
		{Version: 4, Compat: 1, Apply: func(ctx context.Context, conn *sql.Conn, _ string) error {
			if _, err := conn.ExecContext(ctx, pendingDDL(t)); err != nil {
				return err
			}
			name, body := relayProcV1(t)
			if err := createProcedure(ctx, conn, name, body); err != nil {
				return err
			}
			_, err := conn.ExecContext(ctx, `UPDATE `+t.Meta+` SET migration = 4 WHERE id = 1 AND COALESCE(migration, 1) < 4`)
			return err
		}},
		{Version: 5, Compat: 1, Apply: func(ctx context.Context, conn *sql.Conn, _ string) error {
			for _, stmt := range schemaV5(t) {
				if _, err := conn.ExecContext(ctx, stmt); err != nil {
					return fmt.Errorf("%s: %w", strings.SplitN(stmt, "(", 2)[0], err)
				}
			}
			_, err := conn.ExecContext(ctx, `UPDATE `+t.Meta+` SET migration = 5 WHERE id = 1 AND COALESCE(migration, 1) < 5`)
			return err
		}},
		// Version 6: the append and relay procedures that check their
		// statements' row counts before they commit. Releases of versions
		// 1 to 5 keep calling append_v1, append_v2 and relay_v1.
		{Version: 6, Compat: 1, Apply: func(ctx context.Context, conn *sql.Conn, _ string) error {
			for _, proc := range []func(sqldialect.Tables) (string, string){procV3, relayProc} {
				name, body := proc(t)
				if err := createProcedure(ctx, conn, name, body); err != nil {
					return err
				}
			}
			_, err := conn.ExecContext(ctx, `UPDATE `+t.Meta+` SET migration = 6 WHERE id = 1 AND COALESCE(migration, 1) < 6`)
			return err
		}},
	}
}

// addColumn adds column to table unless it is there (MySQL 8 has no ADD
// COLUMN IF NOT EXISTS). A nullable column is added in place, without
// copying the table (InnoDB's instant ADD COLUMN).
func addColumn(ctx context.Context, conn *sql.Conn, table, column, ddl string) error {
	var n int
	if err := conn.QueryRowContext(ctx, `SELECT COUNT(*) FROM information_schema.columns
WHERE table_schema = DATABASE() AND table_name = ? AND column_name = ?`, table, column).Scan(&n); err != nil {
		return err
	}
	if n > 0 {
		return nil
	}
	if _, err := conn.ExecContext(ctx, `ALTER TABLE `+table+` ADD COLUMN `+column+` `+ddl); err != nil {
		return fmt.Errorf("add column %s.%s: %w", table, column, err)
	}
	return nil
}

// createProcedure creates the procedure unless it exists.
func createProcedure(ctx context.Context, conn *sql.Conn, name, body string) error {
	var n int
	if err := conn.QueryRowContext(ctx, `SELECT COUNT(*) FROM information_schema.routines
WHERE routine_schema = DATABASE() AND routine_name = ? AND routine_type = 'PROCEDURE'`, name).Scan(&n); err != nil {
		return err
	}
	if n > 0 {
		return nil
	}
	if _, err := conn.ExecContext(ctx, body); err != nil {
		return fmt.Errorf("create procedure %s (needs the CREATE ROUTINE privilege): %w", name, err)
	}
	return nil
}

// LockSchema implements dialect.Dialect with a named lock (GET_LOCK) keyed
// by the prefix, held by conn's session.
func (d my) LockSchema(ctx context.Context, conn *sql.Conn, t sqldialect.Tables) (func(), error) {
	name := "tandem schema " + t.Prefix
	var got sql.NullInt64
	if err := conn.QueryRowContext(ctx, `SELECT GET_LOCK(?, 60)`, name).Scan(&got); err != nil {
		return nil, err
	}
	if got.Int64 != 1 {
		return nil, fmt.Errorf("%w: waiting for the schema lock %q", dialect.ErrLockTimeout, name)
	}
	return func() {
		ctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 5*time.Second)
		defer cancel()
		if _, err := conn.ExecContext(ctx, `SELECT RELEASE_LOCK(?)`, name); err != nil {
			// Ending the session releases the lock.
			_ = conn.Raw(func(any) error { return sqldriver.ErrBadConn })
		}
	}, nil
}

func (d my) PrepareConn(ctx context.Context, conn *sql.Conn, lockTimeout time.Duration) error {
	secs := int64((lockTimeout + time.Second - 1) / time.Second)
	_, err := conn.ExecContext(ctx, prepareConnSQL(max(secs, 1)))
	return d.Translate(err)
}

// prepareConnSQL saves the session's lock wait timeout in a user variable
// of tandem's own and sets it to secs, in one statement: SET evaluates
// every right-hand side before it assigns anything, so the variable gets
// the value from before.
func prepareConnSQL(secs int64) string {
	return fmt.Sprintf(`SET @tandem_saved_lock_wait = @@SESSION.innodb_lock_wait_timeout, SESSION innodb_lock_wait_timeout = %d`, secs)
}

// resetConnSQL puts back the value prepareConnSQL saved (the global
// default if none was saved: a user variable never set is a NULL string,
// hence the CAST) and clears the variable.
const resetConnSQL = `SET SESSION innodb_lock_wait_timeout = COALESCE(CAST(@tandem_saved_lock_wait AS UNSIGNED), @@GLOBAL.innodb_lock_wait_timeout), @tandem_saved_lock_wait = NULL`

// DropSchema implements sqldialect.Dialect: the procedures of every
// migration (append_v1 included, which older nodes call), then the tables.
func (my) DropSchema(t sqldialect.Tables) []string {
	var out []string
	for _, proc := range []func(sqldialect.Tables) (string, string){procV1, procV2, procV3, relayProcV1, relayProc} {
		name, _ := proc(t)
		out = append(out, `DROP PROCEDURE IF EXISTS `+name)
	}
	all := t.All()
	for i := len(all) - 1; i >= 0; i-- {
		out = append(out, `DROP TABLE IF EXISTS `+all[i])
	}
	return out
}

// ResetConn implements dialect.Dialect: the session's lock wait timeout as
// PrepareConn found it (the application's pool may set its own, as a DSN
// parameter or on connect), not the global default.
func (d my) ResetConn(ctx context.Context, conn *sql.Conn) error {
	_, err := conn.ExecContext(ctx, resetConnSQL)
	return d.Translate(err)
}

// entriesJSON encodes entries as the procedure's p_entries: a JSON array of
// [producer, base64 payload] pairs.
func entriesJSON(entries []sqldialect.Entry) string {
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

func (d my) Append(ctx context.Context, conn *sql.Conn, r sqldialect.AppendRequest) (int64, error) {
	name, _ := procV3(r.Tables)
	// Preparing happens before the lock is taken; the CALL is the one
	// round trip that holds it.
	stmt, err := conn.PrepareContext(ctx, `CALL `+name+`(?, ?, ?, ?, ?, ?)`)
	if err != nil {
		return 0, d.appendError(err)
	}
	defer stmt.Close()
	var first int64
	err = stmt.QueryRowContext(ctx, int64(len(r.Entries)), r.NodeID, r.Instance, r.BatchID, r.ExpectHead, entriesJSON(r.Entries)).Scan(&first)
	switch {
	case err == nil && first < 0:
		return 0, fmt.Errorf("%w: expected head %d", dialect.ErrHeadMismatch, r.ExpectHead)
	case err == nil:
		return first, nil
	}
	return 0, d.appendError(err)
}

// appendError classifies an error of the append procedure. It proves that
// nothing was written when the driver sent nothing (driver.ErrBadConn) or
// when the server raised an error that ends the procedure before its
// COMMIT: the counter's lock wait timed out, a deadlock, a duplicate key,
// or a procedure, table or privilege that is missing (see
// provesNothingWritten). Any other error — the statement interrupted
// (KILL QUERY: 1317), max_statement_time (1969) or max_execution_time
// (3024), the connection lost or killed, the client's context ending
// mid-call, an error at COMMIT — may have come after the commit: an open
// outcome.
func (d my) appendError(err error) error {
	var myErr *driver.MySQLError
	switch {
	case errors.Is(err, sqldriver.ErrBadConn):
		return err
	case errors.As(err, &myErr) && provesNothingWritten(myErr.Number):
		return d.Translate(err)
	}
	return sqldialect.Open(d.Translate(err))
}

// provesNothingWritten reports whether MySQL error number n, raised by the
// append procedure, proves it ended before its COMMIT.
func provesNothingWritten(n uint16) bool {
	switch n {
	case 1205, 3572, // ER_LOCK_WAIT_TIMEOUT, ER_LOCK_NOWAIT
		1213,       // ER_LOCK_DEADLOCK
		1062, 1586, // ER_DUP_ENTRY, ER_DUP_ENTRY_WITH_KEY_NAME
		1146, 1305, 1318, // ER_NO_SUCH_TABLE, ER_SP_DOES_NOT_EXIST, ER_SP_WRONG_NO_OF_ARGS
		1044, 1045, 1142, 1370, // access denied (database, user, table, routine)
		1064: // ER_PARSE_ERROR
		return true
	}
	return false
}

// SessionID implements sqldialect.SessionEnder: the connection id, which the
// server never reuses while it runs.
func (d my) SessionID(ctx context.Context, conn *sql.Conn) (string, error) {
	var id uint64
	err := conn.QueryRowContext(ctx, `SELECT CONNECTION_ID()`).Scan(&id)
	return strconv.FormatUint(id, 10), d.Translate(err)
}

// EndSession implements sqldialect.SessionEnder with KILL CONNECTION, which a
// user may run on its own sessions, and waits until the process list no
// longer shows the session: a killed session rolls back before it leaves
// the list.
func (d my) EndSession(ctx context.Context, db *sql.DB, id string) error {
	n, err := strconv.ParseUint(id, 10, 64)
	if err != nil {
		return fmt.Errorf("mysql: malformed session id %q", id)
	}
	var myErr *driver.MySQLError
	if _, err := db.ExecContext(ctx, `KILL CONNECTION `+strconv.FormatUint(n, 10)); err != nil &&
		!(errors.As(err, &myErr) && myErr.Number == 1094) { // ER_NO_SUCH_THREAD: gone already
		return d.Translate(err)
	}
	for {
		var left int
		if err := db.QueryRowContext(ctx, `SELECT COUNT(*) FROM information_schema.processlist WHERE id = ?`, n).Scan(&left); err != nil {
			return d.Translate(err)
		}
		if left == 0 {
			return nil
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(5 * time.Millisecond):
		}
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
	case 1040, 1203, 1226: // ER_CON_COUNT_ERROR (max_connections), ER_TOO_MANY_USER_CONNECTIONS, ER_USER_LIMIT_REACHED (an account's MAX_USER_CONNECTIONS)
		return fmt.Errorf("%w: %w", dialect.ErrTooManyConnections, err)
	case 1146: // ER_NO_SUCH_TABLE
		return fmt.Errorf("%w: %w", dialect.ErrNoSuchTable, err)
	}
	return err
}

// LockQueries implements dialect.Dialect.
func (my) LockQueries(t sqldialect.Tables) sqldialect.LockQueries {
	const now = `UTC_TIMESTAMP(6)`
	return sqldialect.LockQueries{
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
