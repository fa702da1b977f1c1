// Package mysql is tandem's MySQL and MariaDB dialect, for a *sql.DB opened
// with github.com/go-sql-driver/mysql:
//
//	db, err := sql.Open("mysql", "user:pass@tcp(host:3306)/db?parseTime=true")
//	j, err := journal.OpenSQL(ctx, db, mysql.Dialect, journal.SQLConfig{NodeID: "a"})
//
// It needs MySQL 8.0 or MariaDB 10.5 or newer with InnoDB tables (a
// non-transactional engine cannot keep the journal gap-free), and a user
// that may create tables (once). parseTime is optional.
//
// A dialect gap: without multi-statement support (which tandem does not
// require of the caller's DSN), an append is a transaction of two
// statements — bump the counter (taking its row lock), insert the batch —
// and a COMMIT, so the counter's lock is held over two round trips instead
// of PostgreSQL's one. Group commit amortises them over every append that
// waited meanwhile. The lock timeout is the session's
// innodb_lock_wait_timeout on the journal's append connection, in whole
// seconds (rounded up).
//
// MySQL has no push notification: nodes on MySQL poll.
package mysql

import (
	"context"
	"database/sql"
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
		`INSERT IGNORE INTO ` + t.GlobalRevision + ` (id, revision) VALUES (1, 0)`,
	}
}

// CreateSchema runs the DDL under a named lock (GET_LOCK) keyed by the
// prefix, so nodes starting at once create it exactly once.
func (d my) CreateSchema(ctx context.Context, db *sql.DB, t dialect.Tables, epoch string) error {
	if v, err := d.version(ctx, db, t); err == nil {
		return checkVersion(v)
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
	v, err := d.version(ctx, db, t)
	if err != nil {
		return err
	}
	return checkVersion(v)
}

func (d my) version(ctx context.Context, db *sql.DB, t dialect.Tables) (int, error) {
	var v int
	err := db.QueryRowContext(ctx, `SELECT schema_version FROM `+t.Meta+` WHERE id = 1`).Scan(&v)
	return v, d.Translate(err)
}

func checkVersion(v int) error {
	if v > dialect.SchemaVersion {
		return fmt.Errorf("%w: the database has version %d, this release knows %d", dialect.ErrSchemaTooNew, v, dialect.SchemaVersion)
	}
	return nil
}

func (d my) PrepareConn(ctx context.Context, conn *sql.Conn, lockTimeout time.Duration) error {
	secs := int64((lockTimeout + time.Second - 1) / time.Second)
	_, err := conn.ExecContext(ctx, fmt.Sprintf(`SET SESSION innodb_lock_wait_timeout = %d`, max(secs, 1)))
	return d.Translate(err)
}

// insertSQL is the multi-row INSERT for n entries; the revisions are
// computed by the caller from the counter it just bumped.
func insertSQL(t dialect.Tables, n int) string {
	var b strings.Builder
	b.Grow(96 + n*38)
	b.WriteString(`INSERT INTO `)
	b.WriteString(t.Journal)
	b.WriteString(` (revision, node_id, producer, payload, created_at) VALUES `)
	for i := range n {
		if i > 0 {
			b.WriteByte(',')
		}
		b.WriteString(`(?, ?, ?, ?, UTC_TIMESTAMP(6))`)
	}
	return b.String()
}

func (d my) Append(ctx context.Context, conn *sql.Conn, r dialect.AppendRequest) (int64, error) {
	n := int64(len(r.Entries))
	tx, err := conn.BeginTx(ctx, nil)
	if err != nil {
		return 0, d.Translate(err)
	}
	defer tx.Rollback()
	// LAST_INSERT_ID(expr) hands the new counter value back in the OK
	// packet, saving a SELECT while the lock is held.
	bump := `UPDATE ` + r.Tables.GlobalRevision + ` SET revision = LAST_INSERT_ID(revision + ?) WHERE id = 1`
	args := []any{n}
	if r.ExpectHead >= 0 {
		bump += ` AND revision = ?`
		args = append(args, r.ExpectHead)
	}
	res, err := tx.ExecContext(ctx, bump, args...)
	if err != nil {
		return 0, d.Translate(err)
	}
	if rows, err := res.RowsAffected(); err != nil || rows != 1 {
		if err == nil && r.ExpectHead >= 0 {
			return 0, fmt.Errorf("%w: expected head %d", dialect.ErrHeadMismatch, r.ExpectHead)
		}
		return 0, fmt.Errorf("mysql: bump global revision: %d rows (%v)", rows, err)
	}
	last, err := res.LastInsertId()
	if err != nil {
		return 0, err
	}
	first := last - n + 1
	vals := make([]any, 0, 4*n)
	for i, e := range r.Entries {
		p := e.Payload
		if p == nil {
			p = []byte{}
		}
		vals = append(vals, first+int64(i), r.NodeID, e.Producer, p)
	}
	if _, err := tx.ExecContext(ctx, insertSQL(r.Tables, len(r.Entries)), vals...); err != nil {
		return 0, d.Translate(err)
	}
	if err := tx.Commit(); err != nil {
		var myErr *driver.MySQLError
		if errors.As(err, &myErr) {
			return 0, d.Translate(err)
		}
		return 0, fmt.Errorf("%w: %w", dialect.ErrOutcomeUnknown, err)
	}
	return first, nil
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
