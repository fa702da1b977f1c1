// Package oracle is tandem's Oracle dialect, for a *sql.DB opened with
// github.com/sijms/go-ora/v2:
//
//	db, err := sql.Open("oracle", "oracle://user:pass@host:1521/service")
//	j, err := journal.OpenSQL(ctx, db, oracle.Dialect, journal.SQLConfig{NodeID: "a"})
//
// This package imports go-ora (for its error and LOB types), which registers
// the "oracle" driver, so no blank import is needed. It needs Oracle
// Database 12c Release 1 or newer (for FETCH FIRST … ROWS ONLY) and a user
// with the CREATE TABLE privilege and a quota on its default tablespace
// (once; later nodes only read and write rows). Table names are not
// quoted, so Oracle stores them in upper case (TANDEM_JOURNAL, …).
//
// An append is one anonymous PL/SQL block, so the global revision row's
// lock is held for exactly one round trip: SELECT … FOR UPDATE WAIT n on the
// counter row, the conditional check, UPDATE, one INSERT per entry, COMMIT,
// and the first revision returned through an OUT bind. Payloads larger than
// 2,000 bytes are bound as BLOBs, which go-ora writes into temporary LOBs
// first — extra round trips, but before the block runs, so not under the
// lock. Oracle stores an empty payload as NULL (it has no empty RAW); the
// journal reads it back as empty.
//
// Records published inside an application's transaction (the outbox) wait
// in the pending table until a relay block moves them into the journal
// under the counter's lock, with one INSERT … SELECT: Oracle's
// statement-level read consistency shows it the committed rows only, and
// it never waits for transactions still open. The relay's count comes
// back through an sql.NullInt64 OUT bind, so that a call go-ora reports
// as a success without the block's assignment is not taken for "moved
// nothing".
//
// Oracle has no session setting that bounds row lock waits: the wait is the
// WAIT clause of the locking SELECT, in whole seconds (the journal's lock
// timeout, journal.SQLConfig.LockTimeout, rounded up).
//
// Times are TIMESTAMP(6) in UTC (SYS_EXTRACT_UTC(SYSTIMESTAMP)); queries
// return them as TIMESTAMP WITH TIME ZONE, because go-ora reads a plain
// TIMESTAMP in the database's time zone.
//
// The schema evolves through numbered migrations (see package dialect).
// Oracle's DDL commits by itself and tandem takes no schema lock on Oracle
// (DBMS_LOCK needs an EXECUTE grant most users lack), so every step
// tolerates another node doing it at the same time. Their ALTER TABLEs run
// with the session's DDL_LOCK_TIMEOUT at 10 s (and then back at 0, the
// default): with 0 they would fail with ORA-00054 whenever another node's
// append had the table open.
//
// After an append whose outcome is open (the block was sent and the reply
// does not prove it ended before its COMMIT), the journal discards the
// connection and waits out the lock timeout before it looks the batch up:
// the dialect does not end abandoned sessions, because ALTER
// SYSTEM KILL SESSION needs the ALTER SYSTEM privilege.
//
// Oracle has no push notification that tandem uses: nodes on Oracle poll.
package oracle

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"time"

	"github.com/sijms/go-ora/v2/network"

	"github.com/tandem-go/tandem/dialect"
	"github.com/tandem-go/tandem/internal/sqldialect"
)

// Dialect is the Oracle dialect. It is stateless and safe for concurrent
// use.
var Dialect dialect.Dialect = ora{}

type ora struct{}

var _ dialect.Dialect = ora{}

func (ora) Name() string { return "oracle" }

// Oracle error codes (ORA-nnnnn).
const (
	errUniqueViolation = 1     // ORA-00001: unique constraint violated
	errResourceBusy    = 54    // ORA-00054: resource busy and acquire with NOWAIT specified or timeout expired
	errDeadlock        = 60    // ORA-00060: deadlock detected while waiting for resource
	errNameUsed        = 955   // ORA-00955: name is already used by an existing object
	errNoSuchTable     = 942   // ORA-00942: table or view does not exist
	errColumnExists    = 1430  // ORA-01430: column being added already exists in table
	errCancelled       = 1013  // ORA-01013: user requested cancel of current operation
	errDistLockTimeout = 2049  // ORA-02049: timeout: distributed transaction waiting for lock
	errSerialization   = 8177  // ORA-08177: can't serialize access for this transaction
	errWaitTimeout     = 30006 // ORA-30006: resource busy; acquire with WAIT timeout expired
	errMaxSessions     = 18    // ORA-00018: maximum number of sessions exceeded
	errMaxProcesses    = 20    // ORA-00020: maximum number of processes exceeded
	errNoHandler       = 12516 // ORA-12516: listener could not find available handler with matching protocol stack
	errHandlerBlocked  = 12519 // ORA-12519: TNS: no appropriate service handler found
)

// utcNow is the database time in UTC, as a TIMESTAMP.
const utcNow = `SYS_EXTRACT_UTC(SYSTIMESTAMP)`

// asUTC turns a UTC TIMESTAMP column into a TIMESTAMP WITH TIME ZONE, which
// go-ora returns as the right instant whatever the database's time zone.
func asUTC(col string) string { return `FROM_TZ(` + col + `, '+00:00')` }

func (ora) Queries(t sqldialect.Tables) sqldialect.Queries {
	read := `SELECT revision, node_id, instance, producer, payload, ` + asUTC(`created_at`) + ` AS created_at FROM ` + t.Journal +
		` WHERE revision > :1 ORDER BY revision FETCH FIRST :2 ROWS ONLY`
	return sqldialect.Queries{
		Read:        read,
		Poll:        sqldialect.PollQuery(t, read, t.Pending),
		PollRecords: sqldialect.PollQuery(t, read, ""),
		Head:        `SELECT revision FROM ` + t.GlobalRevision + ` WHERE id = 1`,
		Meta:        `SELECT epoch, tail, schema_version FROM ` + t.Meta + ` WHERE id = 1`,
		// Bound by position, a placeholder in SQL takes one argument per
		// occurrence: the tail appears once.
		SetTail:     `UPDATE ` + t.Meta + ` SET tail = GREATEST(tail, :1) WHERE id = 1`,
		DeleteRange: `DELETE FROM ` + t.Journal + ` WHERE revision >= :1 AND revision < :2`,
		MinRevision: `SELECT MIN(revision) FROM ` + t.Journal + ` WHERE revision >= :1`,
		LockHead:    `SELECT revision FROM ` + t.GlobalRevision + ` WHERE id = 1 FOR UPDATE`,
		FindBatch:   `SELECT MIN(revision), COUNT(*) FROM ` + t.Journal + ` WHERE revision > :1 AND batch_id = :2`,
		// A commit is visible once the transaction table says so, before
		// the log writer has written its redo.
		Settle:       `UPDATE ` + t.GlobalRevision + ` SET revision = revision + :1 WHERE id = 1`,
		PendingAny:   `SELECT 1 FROM ` + t.Pending + ` WHERE ROWNUM = 1`,
		PendingCount: `SELECT COUNT(*) FROM ` + t.Pending + ` WHERE handle = :1`,
		// Readers see the rows committed when the query began and never
		// wait for open transactions (statement-level read consistency).
		// DATE arithmetic is in days, a fraction that is rounded to whole
		// seconds, which are enough for an age.
		PendingOldest: `SELECT COUNT(*), ROUND((CAST(` + utcNow + ` AS DATE) - CAST(MIN(created_at) AS DATE)) * 86400) * 1000 FROM ` + t.Pending,

		// FROM_TZ of a NULL evicted_at is NULL.
		LoadPosition: `SELECT revision, epoch, ` + asUTC(`updated_at`) + `, ` + asUTC(`evicted_at`) + ` FROM ` + t.LocalRevisions + ` WHERE node_id = :1`,
		// MERGE alone is not safe against a concurrent first save of the
		// same node (both take the INSERT branch); the loser updates.
		SavePosition: `DECLARE
	v_node  VARCHAR2(64) := :1;
	v_rev   NUMBER(19) := :2;
	v_epoch VARCHAR2(64) := :3;
BEGIN
	MERGE INTO ` + t.LocalRevisions + ` t USING dual ON (t.node_id = v_node)
	WHEN MATCHED THEN UPDATE SET t.revision = v_rev, t.epoch = v_epoch, t.updated_at = ` + utcNow + `, t.evicted_at = NULL
	WHEN NOT MATCHED THEN INSERT (node_id, revision, epoch, updated_at, evicted_at) VALUES (v_node, v_rev, v_epoch, ` + utcNow + `, NULL);
EXCEPTION
	WHEN DUP_VAL_ON_INDEX THEN
		UPDATE ` + t.LocalRevisions + ` SET revision = v_rev, epoch = v_epoch, updated_at = ` + utcNow + `, evicted_at = NULL WHERE node_id = v_node;
END;`,
		ListPositions: `SELECT node_id, revision, epoch, ` + asUTC(`updated_at`) + `, ` + asUTC(`evicted_at`) + ` FROM ` + t.LocalRevisions +
			` ORDER BY NLSSORT(node_id, 'NLS_SORT=BINARY')`,
		EvictPosition:   `UPDATE ` + t.LocalRevisions + ` SET evicted_at = ` + utcNow + ` WHERE node_id = :1 AND revision = :2 AND evicted_at IS NULL`,
		UnevictPosition: `UPDATE ` + t.LocalRevisions + ` SET evicted_at = NULL WHERE node_id = :1 AND revision = :2 AND evicted_at IS NOT NULL`,
		DeletePosition:  `DELETE FROM ` + t.LocalRevisions + ` WHERE node_id = :1`,
		CopyPosition: `INSERT INTO ` + t.LocalRevisions + ` (node_id, revision, epoch, updated_at, evicted_at)
SELECT :1, revision, epoch, ` + utcNow + `, evicted_at FROM ` + t.LocalRevisions + ` WHERE node_id = :2`,
		// Liveness as LockQueries.List's held. The position is looked up
		// by its key (SUBSTR of the lease name), so the positions of dead
		// ids cost nothing. Each bind appears once, in order. A position
		// saved in another epoch than the meta row's (before a restore,
		// say), or with none (an empty epoch, stored as NULL), is behind,
		// whatever its revision.
		MembersBehind: `SELECT COUNT(*) FROM ` + t.Locks + ` l LEFT JOIN ` + t.LocalRevisions + ` r ON r.node_id = SUBSTR(l.name, 8)
WHERE l.name LIKE 'member.%' AND l.name <> 'member.' || :1 AND l.expires_at > ` + utcNow + `
AND (r.node_id IS NULL OR r.evicted_at IS NOT NULL OR r.revision < :2 OR r.epoch IS NULL OR r.epoch <> (SELECT epoch FROM ` + t.Meta + ` WHERE id = 1))`,
	}
}

// table is one CREATE TABLE.
type table struct {
	name string
	ddl  string
}

func tables(t sqldialect.Tables) []table {
	create := func(name, columns string) table {
		return table{name, `CREATE TABLE ` + name + ` (` + columns + `)`}
	}
	return []table{
		create(t.Journal, `
	revision   NUMBER(19) NOT NULL PRIMARY KEY,
	node_id    VARCHAR2(64) NOT NULL,
	producer   VARCHAR2(128) NOT NULL,
	payload    BLOB,
	created_at TIMESTAMP(6) NOT NULL`),
		create(t.GlobalRevision, `
	id       NUMBER(1) NOT NULL PRIMARY KEY CHECK (id = 1),
	revision NUMBER(19) NOT NULL`),
		create(t.Meta, `
	id             NUMBER(1) NOT NULL PRIMARY KEY CHECK (id = 1),
	epoch          VARCHAR2(64) NOT NULL,
	tail           NUMBER(19) NOT NULL,
	schema_version NUMBER(10) NOT NULL`),
		// epoch is nullable: a revision store may save an empty epoch,
		// which Oracle stores as NULL (revision.SQL reads it back as "").
		create(t.LocalRevisions, `
	node_id    VARCHAR2(64) NOT NULL PRIMARY KEY,
	revision   NUMBER(19) NOT NULL,
	epoch      VARCHAR2(64),
	updated_at TIMESTAMP(6) NOT NULL`),
		// owner and instance are NULL while unowned: Oracle stores '' as NULL.
		create(t.Locks, `
	name        VARCHAR2(128) NOT NULL PRIMARY KEY,
	owner       VARCHAR2(64),
	instance    VARCHAR2(64),
	token       NUMBER(19) NOT NULL,
	heartbeat   NUMBER(19) NOT NULL,
	acquired_at TIMESTAMP(6) NOT NULL,
	renewed_at  TIMESTAMP(6) NOT NULL,
	expires_at  TIMESTAMP(6) NOT NULL`),
	}
}

// seedCounter and seedMeta insert the single rows unless present. Two nodes
// may still race past NOT EXISTS; the loser's unique violation is success.
func seedCounter(t sqldialect.Tables) string {
	return `INSERT INTO ` + t.GlobalRevision + ` (id, revision) SELECT 1, 0 FROM dual
WHERE NOT EXISTS (SELECT 1 FROM ` + t.GlobalRevision + ` WHERE id = 1)`
}

// seedMeta: args (epoch). The meta row of schema version 1.
func seedMeta(t sqldialect.Tables) string {
	return `INSERT INTO ` + t.Meta + ` (id, epoch, tail, schema_version) SELECT 1, :1, 1, 1 FROM dual
WHERE NOT EXISTS (SELECT 1 FROM ` + t.Meta + ` WHERE id = 1)`
}

// Migrations implements dialect.Dialect. Oracle's DDL commits by itself and
// tandem takes no schema lock on Oracle (DBMS_LOCK needs a grant most
// users lack), so every step tolerates a concurrent node doing it too:
// ORA-00955 (name already used) for a table, ORA-01430 (column being added
// already exists) for a column, a unique violation for a seed row. A
// migration records itself last.
func (d ora) Migrations(t sqldialect.Tables) []sqldialect.Migration {
	return []sqldialect.Migration{
		{Version: 1, Compat: 1, Apply: func(ctx context.Context, conn *sql.Conn, epoch string) error {
			for _, tb := range tables(t) {
				if _, err := conn.ExecContext(ctx, tb.ddl); err != nil && code(err) != errNameUsed {
					return fmt.Errorf("create table %s: %w", strings.ToUpper(tb.name), err)
				}
			}
			if _, err := conn.ExecContext(ctx, seedCounter(t)); err != nil && code(err) != errUniqueViolation {
				return fmt.Errorf("seed %s: %w", strings.ToUpper(t.GlobalRevision), err)
			}
			if _, err := conn.ExecContext(ctx, seedMeta(t), epoch); err != nil && code(err) != errUniqueViolation {
				return fmt.Errorf("seed %s: %w", strings.ToUpper(t.Meta), err)
			}
			return nil
		}},
		{Version: 2, Compat: 1, Apply: func(ctx context.Context, conn *sql.Conn, _ string) error {
			return addColumns(ctx, conn, schemaV2(t), recordMigration(t, 2))
		}},
		{Version: 3, Compat: 1, Apply: func(ctx context.Context, conn *sql.Conn, _ string) error {
			return addColumns(ctx, conn, schemaV3(t), recordMigration(t, 3))
		}},
		{Version: 4, Compat: 1, Apply: func(ctx context.Context, conn *sql.Conn, _ string) error {
			tb := pendingTable(t)
			if _, err := conn.ExecContext(ctx, tb.ddl); err != nil && code(err) != errNameUsed {
				return fmt.Errorf("create table %s: %w", strings.ToUpper(tb.name), err)
			}
			_, err := conn.ExecContext(ctx, recordMigration(t, 4))
			return err
		}},
		{Version: 5, Compat: 1, Apply: func(ctx context.Context, conn *sql.Conn, _ string) error {
			for _, tb := range blobTables(t) {
				if _, err := conn.ExecContext(ctx, tb.ddl); err != nil && code(err) != errNameUsed {
					return fmt.Errorf("create table %s: %w", strings.ToUpper(tb.name), err)
				}
			}
			_, err := conn.ExecContext(ctx, recordV5(t))
			return err
		}},
		// Version 6 changes MySQL's procedures only: an interrupted
		// PL/SQL block raises ORA-01013 and never reaches its COMMIT.
		{Version: 6, Compat: 1, Apply: func(ctx context.Context, conn *sql.Conn, _ string) error {
			_, err := conn.ExecContext(ctx, recordV6(t))
			return err
		}},
	}
}

// schemaV2 adds the journal's writer instance and batch id and meta's
// migration, nullable (nodes of schema version 1 insert rows without them).
func schemaV2(t sqldialect.Tables) []string {
	return []string{
		`ALTER TABLE ` + t.Journal + ` ADD (instance VARCHAR2(64))`,
		`ALTER TABLE ` + t.Journal + ` ADD (batch_id NUMBER(19))`,
		`ALTER TABLE ` + t.Meta + ` ADD (migration NUMBER(10))`,
	}
}

// schemaV3 adds the janitor's eviction marker.
func schemaV3(t sqldialect.Tables) []string {
	return []string{`ALTER TABLE ` + t.LocalRevisions + ` ADD (evicted_at TIMESTAMP(6))`}
}

// recordMigration records migration version in the meta row.
func recordMigration(t sqldialect.Tables, version int) string {
	v := strconv.Itoa(version)
	return `UPDATE ` + t.Meta + ` SET migration = ` + v + ` WHERE id = 1 AND NVL(migration, 1) < ` + v
}

// addColumns runs the ALTER TABLE … ADD statements alters, taking ORA-01430
// (the column exists: another node added it, or this migration failed half
// way before) as done, and then record. DDL commits by itself, so each
// step is separate; record comes last.
func addColumns(ctx context.Context, conn *sql.Conn, alters []string, record string) error {
	return withDDLWait(ctx, conn, func() error {
		for _, stmt := range alters {
			if _, err := conn.ExecContext(ctx, stmt); err != nil && code(err) != errColumnExists {
				return fmt.Errorf("%s: %w", stmt, err)
			}
		}
		_, err := conn.ExecContext(ctx, record)
		return err
	})
}

// ddlLockTimeout is the session's DDL_LOCK_TIMEOUT (seconds) while a
// migration runs. ALTER TABLE needs the table's exclusive DML lock; with
// the default, 0, it fails at once with ORA-00054 whenever any transaction
// has the table open, as every append of another node does for a moment,
// so a rolling upgrade under a steady stream of appends could keep failing.
// A transaction that holds the table longer still fails the migration
// after the timeout (the next Open retries it).
const ddlLockTimeout = 10

// withDDLWait runs f with the session's DDL_LOCK_TIMEOUT at ddlLockTimeout
// and then sets it back to 0, Oracle's default, also when f failed.
func withDDLWait(ctx context.Context, conn *sql.Conn, f func() error) error {
	if _, err := conn.ExecContext(ctx, ddlWaitSQL(ddlLockTimeout)); err != nil {
		return err
	}
	defer func() {
		ctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 5*time.Second)
		defer cancel()
		_, _ = conn.ExecContext(ctx, ddlWaitSQL(0))
	}()
	return f()
}

func ddlWaitSQL(seconds int) string {
	return `ALTER SESSION SET DDL_LOCK_TIMEOUT = ` + strconv.Itoa(seconds)
}

// LockSchema takes no lock on Oracle (see Migrations).
func (ora) LockSchema(ctx context.Context, conn *sql.Conn, t sqldialect.Tables) (func(), error) {
	return func() {}, nil
}

// PrepareConn does nothing: Oracle has no session-level row-lock timeout;
// each append carries FOR UPDATE WAIT with AppendRequest.LockTimeout.
func (ora) PrepareConn(ctx context.Context, conn *sql.Conn, lockTimeout time.Duration) error {
	return nil
}

// ResetConn does nothing: PrepareConn set nothing.
func (ora) ResetConn(ctx context.Context, conn *sql.Conn) error { return nil }

// DropSchema implements sqldialect.Dialect. Oracle has no DROP TABLE IF
// EXISTS before 23ai: each drop ignores ORA-00942 (no such table).
func (ora) DropSchema(t sqldialect.Tables) []string {
	all := t.All()
	out := make([]string, 0, len(all))
	for i := len(all) - 1; i >= 0; i-- {
		out = append(out, `BEGIN EXECUTE IMMEDIATE 'DROP TABLE `+strings.ToUpper(all[i])+` PURGE'; EXCEPTION WHEN OTHERS THEN IF SQLCODE != -942 THEN RAISE; END IF; END;`)
	}
	return out
}

// Translate maps ORA- codes to the dialect's error classes.
func (ora) Translate(err error) error {
	if err == nil {
		return nil
	}
	switch code(err) {
	case errUniqueViolation:
		return fmt.Errorf("%w: %w", dialect.ErrUniqueViolation, err)
	case errDeadlock:
		return fmt.Errorf("%w: %w", dialect.ErrDeadlock, err)
	case errSerialization:
		return fmt.Errorf("%w: %w", dialect.ErrSerialization, err)
	case errWaitTimeout, errResourceBusy, errDistLockTimeout:
		return fmt.Errorf("%w: %w", dialect.ErrLockTimeout, err)
	case errMaxSessions, errMaxProcesses, errNoHandler, errHandlerBlocked:
		return fmt.Errorf("%w: %w", dialect.ErrTooManyConnections, err)
	case errNoSuchTable:
		return fmt.Errorf("%w: %w", dialect.ErrNoSuchTable, err)
	}
	return err
}

// code is the ORA- code of err, or 0 when err is no Oracle error.
func code(err error) int {
	var oraErr *network.OracleError
	if errors.As(err, &oraErr) {
		return oraErr.ErrCode
	}
	return 0
}

// LockQueries implements dialect.Dialect. Every placeholder appears once, in
// argument order, as binding by position requires.
//
// Oracle stores an empty string as NULL: an unowned row has a NULL owner
// and instance (List returns them as NULL), and so would a holder with an
// empty instance (package lock rejects one, the LockQueries contract does
// not). The holder checks compare with DECODE, which takes two NULLs as
// equal, so they match whatever Acquire stored, as "=" does in the other
// dialects.
func (ora) LockQueries(t sqldialect.Tables) sqldialect.LockQueries {
	ttl := func(bind string) string { return utcNow + ` + NUMTODSINTERVAL(` + bind + ` / 1000, 'SECOND')` }
	holder := func(name, node, instance, token string) string {
		return `name = ` + name + ` AND DECODE(owner, ` + node + `, 1, 0) = 1 AND DECODE(instance, ` + instance + `, 1, 0) = 1 AND token = ` + token +
			` AND expires_at > ` + utcNow
	}
	return sqldialect.LockQueries{
		// The name is bound once, in the derived table, and compared from
		// there. Two concurrent seeds may both pass NOT EXISTS; the loser
		// fails with ORA-00001 (ErrUniqueViolation).
		Seed: `INSERT INTO ` + t.Locks + ` (name, owner, instance, token, heartbeat, acquired_at, renewed_at, expires_at)
SELECT n, NULL, NULL, 0, 0, ` + utcNow + `, ` + utcNow + `, ` + utcNow + ` FROM (SELECT :1 AS n FROM dual) s
WHERE NOT EXISTS (SELECT 1 FROM ` + t.Locks + ` l WHERE l.name = s.n)`,
		Acquire: `UPDATE ` + t.Locks + ` SET owner = :1, instance = :2, token = token + 1, heartbeat = 0,
acquired_at = ` + utcNow + `, renewed_at = ` + utcNow + `, expires_at = ` + ttl(":3") + `
WHERE name = :4 AND expires_at <= ` + utcNow,
		Token: `SELECT token FROM ` + t.Locks + ` WHERE name = :1`,
		Renew: `UPDATE ` + t.Locks + ` SET expires_at = ` + ttl(":1") + `, renewed_at = ` + utcNow + `, heartbeat = heartbeat + 1
WHERE ` + holder(":2", ":3", ":4", ":5"),
		Release: `UPDATE ` + t.Locks + ` SET expires_at = ` + utcNow + `
WHERE ` + holder(":1", ":2", ":3", ":4"),
		List: `SELECT name, owner, instance, token, ` + asUTC(`acquired_at`) + `, ` + asUTC(`renewed_at`) + `, ` + asUTC(`expires_at`) + `,
CASE WHEN expires_at > ` + utcNow + ` THEN 1 ELSE 0 END FROM ` + t.Locks + ` ORDER BY NLSSORT(name, 'NLS_SORT=BINARY')`,
		// FOR UPDATE locks the row until the transaction ends: Acquire,
		// Renew and Release (UPDATEs) wait for the fenced work.
		Fence: `SELECT token FROM ` + t.Locks + `
WHERE ` + holder(":1", ":2", ":3", ":4") + ` FOR UPDATE`,
	}
}
