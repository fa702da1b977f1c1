// Package postgres is tandem's PostgreSQL dialect, for a *sql.DB opened
// with pgx's database/sql driver:
//
//	import _ "github.com/jackc/pgx/v5/stdlib"
//	db, err := sql.Open("pgx", "postgres://user:pass@host/db")
//	j, err := journal.OpenSQL(ctx, db, postgres.Dialect, journal.SQLConfig{NodeID: "a"})
//
// It needs PostgreSQL 12 or newer and a role that may create tables in the
// search path's first schema (once; later nodes only read and write rows).
//
// An append is one autocommit statement: the global revision counter is
// bumped and all rows of the batch are inserted by a single
// UPDATE … RETURNING feeding an INSERT, so the counter's row lock is held for
// exactly one round trip. The lock timeout is the session's lock_timeout on
// the journal's append connection.
//
// It implements dialect.Notifier with LISTEN/NOTIFY; listening needs the
// pgx driver (the connection is reached through database/sql's Conn.Raw)
// and a session that stays on one server connection, so it does not work
// through PgBouncer in transaction-pooling mode: there tandem polls.
package postgres

import (
	"context"
	"database/sql"
	"database/sql/driver"
	"errors"
	"fmt"
	"time"

	"github.com/jackc/pgx/v5/pgconn"
	"github.com/jackc/pgx/v5/stdlib"

	"github.com/tandem-go/tandem/dialect"
)

// Dialect is the PostgreSQL dialect.
var Dialect dialect.Dialect = pg{}

type pg struct{}

var (
	_ dialect.Dialect  = pg{}
	_ dialect.Notifier = pg{}
)

func (pg) Name() string { return "postgres" }

func (pg) Queries(t dialect.Tables) dialect.Queries {
	return dialect.Queries{
		Read: `SELECT revision, node_id, producer, payload, created_at FROM ` + t.Journal +
			` WHERE revision > $1 ORDER BY revision LIMIT $2`,
		Head:        `SELECT revision FROM ` + t.GlobalRevision + ` WHERE id = 1`,
		Meta:        `SELECT epoch, tail, schema_version FROM ` + t.Meta + ` WHERE id = 1`,
		SetTail:     `UPDATE ` + t.Meta + ` SET tail = $1 WHERE id = 1 AND tail < $1`,
		DeleteRange: `DELETE FROM ` + t.Journal + ` WHERE revision >= $1 AND revision < $2`,
		MinRevision: `SELECT MIN(revision) FROM ` + t.Journal,

		LoadPosition: `SELECT revision, epoch, updated_at FROM ` + t.LocalRevisions + ` WHERE node_id = $1`,
		SavePosition: `INSERT INTO ` + t.LocalRevisions + ` (node_id, revision, epoch, updated_at) VALUES ($1, $2, $3, now())
ON CONFLICT (node_id) DO UPDATE SET revision = EXCLUDED.revision, epoch = EXCLUDED.epoch, updated_at = EXCLUDED.updated_at`,
		ListPositions:  `SELECT node_id, revision, epoch, updated_at FROM ` + t.LocalRevisions + ` ORDER BY node_id COLLATE "C"`,
		DeletePosition: `DELETE FROM ` + t.LocalRevisions + ` WHERE node_id = $1`,
		CopyPosition: `INSERT INTO ` + t.LocalRevisions + ` (node_id, revision, epoch, updated_at)
SELECT $1, revision, epoch, now() FROM ` + t.LocalRevisions + ` WHERE node_id = $2`,
	}
}

func schema(t dialect.Tables) []string {
	return []string{
		`CREATE TABLE IF NOT EXISTS ` + t.Journal + ` (
	revision   BIGINT PRIMARY KEY,
	node_id    VARCHAR(64) NOT NULL,
	producer   VARCHAR(128) NOT NULL,
	payload    BYTEA NOT NULL,
	created_at TIMESTAMPTZ NOT NULL DEFAULT now())`,
		`CREATE TABLE IF NOT EXISTS ` + t.GlobalRevision + ` (
	id       SMALLINT PRIMARY KEY CHECK (id = 1),
	revision BIGINT NOT NULL)`,
		`CREATE TABLE IF NOT EXISTS ` + t.Meta + ` (
	id             SMALLINT PRIMARY KEY CHECK (id = 1),
	epoch          VARCHAR(64) NOT NULL,
	tail           BIGINT NOT NULL,
	schema_version INTEGER NOT NULL)`,
		`CREATE TABLE IF NOT EXISTS ` + t.LocalRevisions + ` (
	node_id    VARCHAR(64) PRIMARY KEY,
	revision   BIGINT NOT NULL,
	epoch      VARCHAR(64) NOT NULL,
	updated_at TIMESTAMPTZ NOT NULL)`,
		`CREATE TABLE IF NOT EXISTS ` + t.Locks + ` (
	name        VARCHAR(128) PRIMARY KEY,
	owner       VARCHAR(64) NOT NULL,
	instance    VARCHAR(64) NOT NULL,
	token       BIGINT NOT NULL,
	heartbeat   BIGINT NOT NULL,
	acquired_at TIMESTAMPTZ NOT NULL,
	renewed_at  TIMESTAMPTZ NOT NULL,
	expires_at  TIMESTAMPTZ NOT NULL)`,
		`INSERT INTO ` + t.GlobalRevision + ` (id, revision) VALUES (1, 0) ON CONFLICT (id) DO NOTHING`,
	}
}

// CreateSchema runs the DDL in one transaction under an advisory lock keyed
// by the prefix, so nodes starting at once create it exactly once (a bare
// CREATE TABLE IF NOT EXISTS can still fail on PostgreSQL when two sessions
// race on the catalog).
func (d pg) CreateSchema(ctx context.Context, db *sql.DB, t dialect.Tables, epoch string) error {
	if v, err := dialect.StoredSchemaVersion(ctx, db, t); err == nil {
		return dialect.CheckSchemaVersion(v)
	}
	tx, err := db.BeginTx(ctx, nil)
	if err != nil {
		return d.Translate(err)
	}
	defer tx.Rollback()
	if _, err := tx.ExecContext(ctx, `SELECT pg_advisory_xact_lock(hashtext($1))`, "tandem schema "+t.Prefix); err != nil {
		return d.Translate(err)
	}
	for _, stmt := range schema(t) {
		if _, err := tx.ExecContext(ctx, stmt); err != nil {
			return fmt.Errorf("%s: %w", firstLine(stmt), d.Translate(err))
		}
	}
	if _, err := tx.ExecContext(ctx, `INSERT INTO `+t.Meta+` (id, epoch, tail, schema_version) VALUES (1, $1, 1, $2) ON CONFLICT (id) DO NOTHING`,
		epoch, dialect.SchemaVersion); err != nil {
		return d.Translate(err)
	}
	if err := tx.Commit(); err != nil {
		return d.Translate(err)
	}
	v, err := dialect.StoredSchemaVersion(ctx, db, t)
	if err != nil {
		return fmt.Errorf("read schema version: %w", d.Translate(err))
	}
	return dialect.CheckSchemaVersion(v)
}

func firstLine(s string) string {
	for i := range len(s) {
		if s[i] == '\n' || s[i] == '(' {
			return s[:i]
		}
	}
	return s
}

func (d pg) PrepareConn(ctx context.Context, conn *sql.Conn, lockTimeout time.Duration) error {
	ms := max(lockTimeout.Milliseconds(), 1)
	_, err := conn.ExecContext(ctx, fmt.Sprintf(`SET lock_timeout = %d`, ms))
	return d.Translate(err)
}

// appendSQL bumps the counter and inserts the batch in one statement. Data-
// modifying CTEs run to completion whether or not the outer query reads
// them; the outer query returns the first revision, or no row when a
// conditional append's WHERE did not match.
func appendSQL(t dialect.Tables, conditional bool) string {
	cond := ``
	if conditional {
		cond = ` AND revision = $5`
	}
	return `WITH c AS (
	UPDATE ` + t.GlobalRevision + ` SET revision = revision + $1 WHERE id = 1` + cond + ` RETURNING revision
), ins AS (
	INSERT INTO ` + t.Journal + ` (revision, node_id, producer, payload, created_at)
	SELECT c.revision - $1 + e.ord, $2, e.producer, e.payload, now()
	FROM c, unnest($3::text[], $4::bytea[]) WITH ORDINALITY AS e(producer, payload, ord)
)
SELECT revision - $1 + 1 FROM c`
}

func (d pg) Append(ctx context.Context, conn *sql.Conn, r dialect.AppendRequest) (int64, error) {
	n := int64(len(r.Entries))
	producers := make([]string, n)
	payloads := make([][]byte, n)
	for i, e := range r.Entries {
		producers[i] = e.Producer
		payloads[i] = e.Payload
		if payloads[i] == nil {
			payloads[i] = []byte{}
		}
	}
	args := []any{n, r.NodeID, producers, payloads}
	if r.ExpectHead >= 0 {
		args = append(args, r.ExpectHead)
	}
	var first int64
	err := conn.QueryRowContext(ctx, appendSQL(r.Tables, r.ExpectHead >= 0), args...).Scan(&first)
	if errors.Is(err, sql.ErrNoRows) {
		return 0, fmt.Errorf("%w: expected head %d", dialect.ErrHeadMismatch, r.ExpectHead)
	}
	if err != nil {
		return 0, d.appendError(err)
	}
	return first, nil
}

// appendError classifies an error of the single append statement: a server
// error means the statement (and so its implicit transaction) failed; an
// error before anything was sent means nothing happened; anything else
// (connection lost, context ended mid-statement) leaves the commit unknown.
func (d pg) appendError(err error) error {
	var pgErr *pgconn.PgError
	if errors.As(err, &pgErr) || pgconn.SafeToRetry(err) {
		return d.Translate(err)
	}
	return fmt.Errorf("%w: %w", dialect.ErrOutcomeUnknown, err)
}

// Translate maps SQLSTATEs to the dialect's error classes.
func (pg) Translate(err error) error {
	var pgErr *pgconn.PgError
	if err == nil || !errors.As(err, &pgErr) {
		return err
	}
	switch pgErr.Code {
	case "23505":
		return fmt.Errorf("%w: %w", dialect.ErrUniqueViolation, err)
	case "40P01":
		return fmt.Errorf("%w: %w", dialect.ErrDeadlock, err)
	case "40001":
		return fmt.Errorf("%w: %w", dialect.ErrSerialization, err)
	case "55P03":
		return fmt.Errorf("%w: %w", dialect.ErrLockTimeout, err)
	}
	return err
}

// Notify implements dialect.Notifier.
func (d pg) Notify(ctx context.Context, db *sql.DB, channel string) error {
	_, err := db.ExecContext(ctx, `SELECT pg_notify($1, '')`, channel)
	return d.Translate(err)
}

// errNotPgx is returned by Listen when db's driver is not pgx.
var errNotPgx = errors.New("postgres: LISTEN needs a *sql.DB opened with the pgx driver (github.com/jackc/pgx/v5/stdlib)")

// Listen implements dialect.Notifier. The listening connection is taken out
// of db's pool for as long as Listen runs and is discarded afterwards, so no
// other user of the pool inherits its LISTEN.
func (d pg) Listen(ctx context.Context, db *sql.DB, channel string, ready, wake func()) error {
	conn, err := db.Conn(ctx)
	if err != nil {
		return d.Translate(err)
	}
	defer conn.Close()
	var listenErr error
	_ = conn.Raw(func(dc any) error {
		sc, ok := dc.(*stdlib.Conn)
		if !ok {
			listenErr = errNotPgx
			return nil
		}
		pc := sc.Conn()
		// channel is a validated table prefix plus "journal": [a-z0-9_].
		if _, err := pc.Exec(ctx, `LISTEN "`+channel+`"`); err != nil {
			listenErr = d.Translate(err)
			return driver.ErrBadConn
		}
		ready()
		for {
			if _, err := pc.WaitForNotification(ctx); err != nil {
				listenErr = err
				return driver.ErrBadConn // discard: it still listens
			}
			wake()
		}
	})
	if listenErr == nil {
		listenErr = ctx.Err()
	}
	return listenErr
}

// LockQueries implements dialect.Dialect. statement_timestamp() rather than
// now(): a lease's times must not be those of an older transaction start.
func (pg) LockQueries(t dialect.Tables) dialect.LockQueries {
	const now = `statement_timestamp()`
	return dialect.LockQueries{
		Seed: `INSERT INTO ` + t.Locks + ` (name, owner, instance, token, heartbeat, acquired_at, renewed_at, expires_at)
VALUES ($1, '', '', 0, 0, ` + now + `, ` + now + `, ` + now + `) ON CONFLICT (name) DO NOTHING`,
		Acquire: `UPDATE ` + t.Locks + ` SET owner = $1, instance = $2, token = token + 1, heartbeat = 0,
acquired_at = ` + now + `, renewed_at = ` + now + `, expires_at = ` + now + ` + $3 * interval '1 millisecond'
WHERE name = $4 AND expires_at <= ` + now,
		Token: `SELECT token FROM ` + t.Locks + ` WHERE name = $1`,
		Renew: `UPDATE ` + t.Locks + ` SET expires_at = ` + now + ` + $1 * interval '1 millisecond', renewed_at = ` + now + `, heartbeat = heartbeat + 1
WHERE name = $2 AND owner = $3 AND instance = $4 AND token = $5 AND expires_at > ` + now,
		Release: `UPDATE ` + t.Locks + ` SET expires_at = ` + now + `
WHERE name = $1 AND owner = $2 AND instance = $3 AND token = $4 AND expires_at > ` + now,
		List: `SELECT name, owner, instance, token, acquired_at, renewed_at, expires_at, CASE WHEN expires_at > ` + now + ` THEN 1 ELSE 0 END
FROM ` + t.Locks + ` ORDER BY name COLLATE "C"`,
		Fence: `SELECT token FROM ` + t.Locks + `
WHERE name = $1 AND owner = $2 AND instance = $3 AND token = $4 AND expires_at > ` + now + ` FOR UPDATE`,
	}
}
