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
// It pushes wake-ups to other nodes with LISTEN/NOTIFY; listening needs the
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
	"strconv"
	"strings"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/jackc/pgx/v5/stdlib"

	"github.com/tandem-go/tandem/dialect"
	"github.com/tandem-go/tandem/internal/sqldialect"
)

// Dialect is the PostgreSQL dialect.
var Dialect dialect.Dialect = pg{}

type pg struct{}

var (
	_ dialect.Dialect         = pg{}
	_ sqldialect.Notifier     = pg{}
	_ sqldialect.SessionEnder = pg{}
)

func (pg) Name() string { return "postgres" }

func (pg) Queries(t sqldialect.Tables) sqldialect.Queries {
	read := `SELECT revision, node_id, instance, producer, payload, created_at FROM ` + t.Journal +
		` WHERE revision > $1 ORDER BY revision LIMIT $2`
	return sqldialect.Queries{
		Read:          read,
		Poll:          sqldialect.PollQuery(t, read, t.Pending),
		PollRecords:   sqldialect.PollQuery(t, read, ""),
		Head:          `SELECT revision FROM ` + t.GlobalRevision + ` WHERE id = 1`,
		Meta:          `SELECT epoch, tail, schema_version FROM ` + t.Meta + ` WHERE id = 1`,
		SetTail:       `UPDATE ` + t.Meta + ` SET tail = $1 WHERE id = 1 AND tail < $1`,
		DeleteRange:   `DELETE FROM ` + t.Journal + ` WHERE revision >= $1 AND revision < $2`,
		MinRevision:   `SELECT MIN(revision) FROM ` + t.Journal + ` WHERE revision >= $1`,
		LockHead:      `SELECT revision FROM ` + t.GlobalRevision + ` WHERE id = 1 FOR UPDATE`,
		BeginLookup:   `SET TRANSACTION ISOLATION LEVEL READ COMMITTED`,
		FindBatch:     `SELECT MIN(revision), COUNT(*) FROM ` + t.Journal + ` WHERE revision > $1 AND batch_id = $2`,
		PendingAny:    `SELECT 1 FROM ` + t.Pending + ` LIMIT 1`,
		PendingCount:  `SELECT COUNT(*) FROM ` + t.Pending + ` WHERE handle = $1`,
		PendingOldest: `SELECT COUNT(*), EXTRACT(EPOCH FROM (statement_timestamp() - MIN(created_at))) * 1000 FROM ` + t.Pending,

		LoadPosition: `SELECT revision, epoch, updated_at, evicted_at FROM ` + t.LocalRevisions + ` WHERE node_id = $1`,
		SavePosition: `INSERT INTO ` + t.LocalRevisions + ` (node_id, revision, epoch, updated_at, evicted_at) VALUES ($1, $2, $3, now(), NULL)
ON CONFLICT (node_id) DO UPDATE SET revision = EXCLUDED.revision, epoch = EXCLUDED.epoch, updated_at = EXCLUDED.updated_at, evicted_at = NULL`,
		ListPositions:   `SELECT node_id, revision, epoch, updated_at, evicted_at FROM ` + t.LocalRevisions + ` ORDER BY node_id COLLATE "C"`,
		DeletePosition:  `DELETE FROM ` + t.LocalRevisions + ` WHERE node_id = $1`,
		EvictPosition:   `UPDATE ` + t.LocalRevisions + ` SET evicted_at = statement_timestamp() WHERE node_id = $1 AND revision = $2 AND evicted_at IS NULL`,
		UnevictPosition: `UPDATE ` + t.LocalRevisions + ` SET evicted_at = NULL WHERE node_id = $1 AND revision = $2 AND evicted_at IS NOT NULL`,
		CopyPosition: `INSERT INTO ` + t.LocalRevisions + ` (node_id, revision, epoch, updated_at, evicted_at)
SELECT $1, revision, epoch, now(), evicted_at FROM ` + t.LocalRevisions + ` WHERE node_id = $2`,
		// Liveness as LockQueries.List's held. The position is looked up
		// by its key (substr of the lease name), so the positions of dead
		// ids cost nothing; LIKE's prefix has no wildcard but its %. A
		// position saved in another epoch than the meta row's (before a
		// restore, say) is behind, whatever its revision.
		MembersBehind: `SELECT COUNT(*) FROM ` + t.Locks + ` l LEFT JOIN ` + t.LocalRevisions + ` r ON r.node_id = substr(l.name, 8)
WHERE l.name LIKE 'member.%' AND l.name <> 'member.' || $1 AND l.expires_at > statement_timestamp()
AND (r.node_id IS NULL OR r.evicted_at IS NOT NULL OR r.revision < $2 OR r.epoch <> (SELECT epoch FROM ` + t.Meta + ` WHERE id = 1))`,
	}
}

// schemaV1 is the DDL of schema version 1, as the first release ran it.
func schemaV1(t sqldialect.Tables) []string {
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

// schemaV2 adds the writer's instance and the batch id to the journal
// (nullable: nodes of schema version 1 keep inserting rows without them)
// and the migration column to meta. Adding a nullable column without a
// default only changes the catalog, but it waits for (and then briefly
// blocks) the queries on the table: migrationLockTimeout bounds that.
func schemaV2(t sqldialect.Tables) []string {
	return []string{
		`ALTER TABLE ` + t.Journal + ` ADD COLUMN IF NOT EXISTS instance VARCHAR(64)`,
		`ALTER TABLE ` + t.Journal + ` ADD COLUMN IF NOT EXISTS batch_id BIGINT`,
		`ALTER TABLE ` + t.Meta + ` ADD COLUMN IF NOT EXISTS migration INTEGER`,
	}
}

// migrationLockTimeout bounds each migration's wait for the locks its DDL
// needs, so that a long query of an old node fails the migration (the next
// Open retries it) instead of queueing every other query behind it.
const migrationLockTimeout = "10s"

// Migrations implements dialect.Dialect. Each migration runs in one
// transaction (PostgreSQL's DDL is transactional), which also records it.
func (d pg) Migrations(t sqldialect.Tables) []sqldialect.Migration {
	return []sqldialect.Migration{
		{Version: 1, Compat: 1, Apply: func(ctx context.Context, conn *sql.Conn, epoch string) error {
			return inTx(ctx, conn, schemaV1(t),
				`INSERT INTO `+t.Meta+` (id, epoch, tail, schema_version) VALUES (1, $1, 1, 1) ON CONFLICT (id) DO NOTHING`, epoch)
		}},
		{Version: 2, Compat: 1, Apply: func(ctx context.Context, conn *sql.Conn, _ string) error {
			return inTx(ctx, conn, schemaV2(t),
				`UPDATE `+t.Meta+` SET migration = 2 WHERE id = 1 AND COALESCE(migration, 1) < 2`)
		}},
		{Version: 3, Compat: 1, Apply: func(ctx context.Context, conn *sql.Conn, _ string) error {
			return inTx(ctx, conn, []string{`ALTER TABLE ` + t.LocalRevisions + ` ADD COLUMN IF NOT EXISTS evicted_at TIMESTAMPTZ`},
				`UPDATE `+t.Meta+` SET migration = 3 WHERE id = 1 AND COALESCE(migration, 1) < 3`)
		}},
		{Version: 4, Compat: 1, Apply: func(ctx context.Context, conn *sql.Conn, _ string) error {
			return inTx(ctx, conn, schemaV4(t),
				`UPDATE `+t.Meta+` SET migration = 4 WHERE id = 1 AND COALESCE(migration, 1) < 4`)
		}},
		{Version: 5, Compat: 1, Apply: func(ctx context.Context, conn *sql.Conn, _ string) error {
			return inTx(ctx, conn, schemaV5(t),
				`UPDATE `+t.Meta+` SET migration = 5 WHERE id = 1 AND COALESCE(migration, 1) < 5`)
		}},
		// Version 6 changes MySQL's procedures only: an interrupted
		// PostgreSQL statement always fails its transaction.
		{Version: 6, Compat: 1, Apply: func(ctx context.Context, conn *sql.Conn, _ string) error {
			return inTx(ctx, conn, nil,
				`UPDATE `+t.Meta+` SET migration = 6 WHERE id = 1 AND COALESCE(migration, 1) < 6`)
		}},
	}
}

// inTx runs stmts and then record (with args) in one transaction.
func inTx(ctx context.Context, conn *sql.Conn, stmts []string, record string, args ...any) error {
	tx, err := conn.BeginTx(ctx, nil)
	if err != nil {
		return err
	}
	defer tx.Rollback()
	if _, err := tx.ExecContext(ctx, `SET LOCAL lock_timeout = '`+migrationLockTimeout+`'`); err != nil {
		return err
	}
	for _, stmt := range stmts {
		if _, err := tx.ExecContext(ctx, stmt); err != nil {
			return fmt.Errorf("%s: %w", firstLine(stmt), err)
		}
	}
	if _, err := tx.ExecContext(ctx, record, args...); err != nil {
		return err
	}
	return tx.Commit()
}

// LockSchema implements dialect.Dialect with a session-level advisory lock
// keyed by the prefix (a bare CREATE TABLE IF NOT EXISTS can still fail
// on PostgreSQL when two sessions race on the catalog).
func (d pg) LockSchema(ctx context.Context, conn *sql.Conn, t sqldialect.Tables) (func(), error) {
	key := "tandem schema " + t.Prefix
	if _, err := conn.ExecContext(ctx, `SELECT pg_advisory_lock(hashtext($1))`, key); err != nil {
		return nil, err
	}
	return func() {
		ctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 5*time.Second)
		defer cancel()
		if _, err := conn.ExecContext(ctx, `SELECT pg_advisory_unlock(hashtext($1))`, key); err != nil {
			// Ending the session releases the lock.
			_ = conn.Raw(func(any) error { return driver.ErrBadConn })
		}
	}, nil
}

func firstLine(s string) string {
	for i := range len(s) {
		if s[i] == '\n' || s[i] == '(' {
			return s[:i]
		}
	}
	return s
}

// PrepareConn implements sqldialect.Dialect. Besides the lock timeout, it
// sets READ COMMITTED, whatever the application's pool made its sessions'
// default (a DSN parameter, ALTER ROLE or DATABASE … SET, a hook on
// connect): the counter's UPDATE waits for another node's append and then
// updates the row that append committed, where at REPEATABLE READ or
// SERIALIZABLE it fails with a serialization error, and with it the group
// commit. (Durability is the statements' own business: see durableSQL.)
//
// It saves the session's values first, in the statement that sets them
// (the subquery runs before the outer target list), so that ResetConn puts
// back exactly what the application had. Through PgBouncer in
// transaction mode no session setting sticks to a client: the settings
// then land on whichever server session ran the statement, as the lock
// timeout always did.
func (d pg) PrepareConn(ctx context.Context, conn *sql.Conn, lockTimeout time.Duration) error {
	ms := max(lockTimeout.Milliseconds(), 1)
	_, err := conn.ExecContext(ctx, prepareConnSQL, strconv.FormatInt(ms, 10))
	return d.Translate(err)
}

// prepareConnSQL saves the two settings in session variables of tandem's
// own (the "tandem." prefix is a custom placeholder, which any role may
// set) and then sets them: $1 the lock timeout in milliseconds.
const prepareConnSQL = `SELECT set_config('lock_timeout', $1, false),
	set_config('default_transaction_isolation', 'read committed', false)
FROM (SELECT set_config('tandem.saved_lock_timeout', current_setting('lock_timeout'), false),
	set_config('tandem.saved_isolation', current_setting('default_transaction_isolation'), false)) saved`

// resetConnSQL puts back what prepareConnSQL saved and empties the saved
// values. A session that has none (PgBouncer gave the statement another
// server session than PrepareConn's) gets what RESET would give it.
const resetConnSQL = `SELECT set_config('lock_timeout', COALESCE(NULLIF(current_setting('tandem.saved_lock_timeout', true), ''),
		(SELECT reset_val FROM pg_settings WHERE name = 'lock_timeout')), false),
	set_config('default_transaction_isolation', COALESCE(NULLIF(current_setting('tandem.saved_isolation', true), ''),
		(SELECT reset_val FROM pg_settings WHERE name = 'default_transaction_isolation')), false),
	set_config('tandem.saved_lock_timeout', '', false),
	set_config('tandem.saved_isolation', '', false)`

// durableSQL, selected in a subquery of a statement that commits records
// (the append, the relay), makes that statement's commit wait for its WAL
// flush when the session has synchronous_commit off (an application's
// pool may): a record is acknowledged only once durable (contract 3), and
// one that is not can be lost after other nodes read it. The setting is
// the transaction's own (set_config's third argument), read when the
// statement commits, and changes nothing for the session; any value that
// waits at least for the local flush is kept.
const durableSQL = `set_config('synchronous_commit', CASE WHEN current_setting('synchronous_commit') = 'off' THEN 'on' ELSE current_setting('synchronous_commit') END, true)`

// durableJoin joins durableSQL to a statement's one row in the form that
// costs nothing more than a look at the setting when it is not off (the
// usual case): the subquery calls set_config only then, and the LEFT JOIN
// keeps the row either way.
const durableJoin = ` LEFT JOIN (SELECT set_config('synchronous_commit', 'on', true) WHERE current_setting('synchronous_commit') = 'off') durable ON true`

// DropSchema implements sqldialect.Dialect.
func (pg) DropSchema(t sqldialect.Tables) []string {
	all := t.All()
	out := make([]string, 0, len(all))
	for i := len(all) - 1; i >= 0; i-- {
		out = append(out, `DROP TABLE IF EXISTS `+all[i])
	}
	return out
}

// ResetConn implements dialect.Dialect: the session's settings as
// PrepareConn found them.
func (d pg) ResetConn(ctx context.Context, conn *sql.Conn) error {
	_, err := conn.ExecContext(ctx, resetConnSQL)
	return d.Translate(err)
}

// appendSQL bumps the counter and inserts the batch in one statement. Data-
// modifying CTEs run to completion whether or not the outer query reads
// them; the outer query returns the first revision, or no row when a
// conditional append's WHERE did not match.
//
// Arguments: $1 the number of entries, $2 the node id, $3 the instance, $4
// the batch id, $5 the producers, $6 the payloads, and $7 the expected
// head when conditional.
func appendSQL(t sqldialect.Tables, conditional bool) string {
	cond := ``
	if conditional {
		cond = ` AND revision = $7`
	}
	return `WITH c AS (
	UPDATE ` + t.GlobalRevision + ` SET revision = revision + $1 WHERE id = 1` + cond + ` RETURNING revision
), ins AS (
	INSERT INTO ` + t.Journal + ` (revision, node_id, instance, batch_id, producer, payload, created_at)
	SELECT c.revision - $1 + e.ord, $2, $3, $4, e.producer, e.payload, now()
	FROM c, unnest($5::text[], $6::bytea[]) WITH ORDINALITY AS e(producer, payload, ord)
)
SELECT revision - $1 + 1 FROM c` + durableJoin
}

func (d pg) Append(ctx context.Context, conn *sql.Conn, r sqldialect.AppendRequest) (int64, error) {
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
	args := []any{n, r.NodeID, r.Instance, r.BatchID, producers, payloads}
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

// appendError classifies an error of the single append statement. It
// proves that nothing was written when nothing was sent (pgconn.SafeToRetry)
// or when the server rejected the statement for a reason that arises
// before its commit: a lock timeout on the counter, a deadlock, a
// serialization failure, an integrity or data error, or a statement that
// could not be planned (a missing table or column, a privilege). Anything
// else — a cancel (pg_cancel_backend, statement_timeout: 57014), a
// terminated session (57P01), a lost connection, an internal error, the
// client's context ending mid-statement — may have come after the commit:
// an open outcome.
func (d pg) appendError(err error) error {
	if pgconn.SafeToRetry(err) {
		return d.Translate(err)
	}
	var pgErr *pgconn.PgError
	if errors.As(err, &pgErr) && provesNothingWritten(pgErr.Code) {
		return d.Translate(err)
	}
	return sqldialect.Open(d.Translate(err))
}

// provesNothingWritten reports whether SQLSTATE code, as the error of an
// autocommitted statement, proves that the statement ended before its
// commit.
func provesNothingWritten(code string) bool {
	switch code {
	case "55P03", "40P01", "40001": // lock timeout, deadlock, serialization failure
		return true
	}
	if len(code) != 5 {
		return false
	}
	switch code[:2] {
	case "22", "23", "42": // data exception, integrity violation, syntax or access rule
		return true
	}
	return false
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
	case "53300": // too_many_connections: max_connections, a role's or a database's CONNECTION LIMIT
		return fmt.Errorf("%w: %w", dialect.ErrTooManyConnections, err)
	case "42P01": // undefined_table
		return fmt.Errorf("%w: %w", dialect.ErrNoSuchTable, err)
	}
	return err
}

// SessionID implements sqldialect.SessionEnder: the backend's pid and start
// time, which together never name another session (pids are reused).
func (d pg) SessionID(ctx context.Context, conn *sql.Conn) (string, error) {
	var id string
	err := conn.QueryRowContext(ctx, `SELECT pid::text || ' ' || `+backendStart+`
FROM pg_stat_activity WHERE pid = pg_backend_pid()`).Scan(&id)
	return id, d.Translate(err)
}

// backendStart renders pg_stat_activity.backend_start as text that
// compares exactly.
const backendStart = `to_char(backend_start AT TIME ZONE 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS.US')`

// EndSession implements sqldialect.SessionEnder with pg_terminate_backend,
// which a role may call on its own sessions. A backend rolls back its
// transaction before it leaves pg_stat_activity.
func (d pg) EndSession(ctx context.Context, db *sql.DB, id string) error {
	pid, start, ok := strings.Cut(id, " ")
	if !ok || pid == "" || len(pid) > 10 || strings.Trim(pid, "0123456789") != "" {
		return fmt.Errorf("postgres: malformed session id %q", id)
	}
	match := ` FROM pg_stat_activity WHERE pid = $1::int AND ` + backendStart + ` = $2`
	if _, err := db.ExecContext(ctx, `SELECT pg_terminate_backend(pid)`+match, pid, start); err != nil {
		return d.Translate(err)
	}
	for {
		var n int
		if err := db.QueryRowContext(ctx, `SELECT COUNT(*)`+match, pid, start).Scan(&n); err != nil {
			return d.Translate(err)
		}
		if n == 0 {
			return nil
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(5 * time.Millisecond):
		}
	}
}

// Notify implements sqldialect.Notifier.
func (d pg) Notify(ctx context.Context, db sqldialect.Execer, channel string) error {
	_, err := db.ExecContext(ctx, `SELECT pg_notify($1, '')`, channel)
	return d.Translate(err)
}

// errNotPgx is returned by Listen when db's driver is not pgx.
var errNotPgx = errors.New("postgres: LISTEN needs a *sql.DB opened with the pgx driver (github.com/jackc/pgx/v5/stdlib)")

// Listen implements sqldialect.Notifier. The listening connection is taken out
// of db's pool for as long as Listen runs and is discarded afterwards, so no
// other user of the pool inherits its LISTEN.
//
// The listener is the one connection a node holds for good, and it only
// makes wake-ups early; so it gives way when the server runs short of
// connections, rather than take the last ones that other nodes' lease
// renewals need. Before it listens (at every reconnect), it asks the
// server how many more connections it would accept — the least of
// max_connections (less the reserved ones), the role's and the database's
// CONNECTION LIMIT — and returns an error matching
// sqldialect.ErrListenerYielded when fewer than ListenReserve would be
// left. The caller polls meanwhile and tries again later. Once listening,
// it sends nothing: an idle node's statements are its polls and its
// renewals, nothing more.
func (d pg) Listen(ctx context.Context, db *sql.DB, channel string, ready func(sqldialect.ConnDoer), wake func()) error {
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
		if listenErr = d.checkRoom(ctx, pc); listenErr != nil {
			return driver.ErrBadConn
		}
		// channel is a validated table prefix plus "journal": [a-z0-9_].
		if _, err := pc.Exec(ctx, `LISTEN "`+channel+`"`); err != nil {
			listenErr = d.Translate(err)
			return driver.ErrBadConn
		}
		return nil
	})
	if listenErr != nil {
		return listenErr
	}
	// Statements run between waits: a request interrupts the wait (the
	// connection's read deadline, which leaves it usable), runs on conn
	// through database/sql, and the wait resumes; pgx keeps what arrived
	// meanwhile for the next wait.
	reqs := make(chan *doReq)
	gone := make(chan struct{})
	defer close(gone)
	ready(func(rctx context.Context, fn func(*sql.Conn) error) error {
		r := &doReq{ctx: rctx, fn: fn, done: make(chan error, 1)}
		select {
		case reqs <- r:
		case <-rctx.Done():
			return rctx.Err()
		case <-gone:
			return sqldialect.ErrNotListening
		}
		return <-r.done
	})
	for {
		var pending *doReq
		var waitErr error
		bad := false
		rawErr := conn.Raw(func(dc any) error {
			pc := dc.(*stdlib.Conn).Conn()
			wctx, cancel := context.WithCancel(ctx)
			caught := make(chan struct{})
			go func() {
				defer close(caught)
				select {
				case r := <-reqs:
					pending = r
					cancel()
				case <-wctx.Done():
				}
			}()
			_, err := pc.WaitForNotification(wctx)
			cancel()
			<-caught
			switch {
			case err == nil:
				wake()
			case pending != nil && ctx.Err() == nil && !pc.IsClosed():
				// Interrupted for a request.
			default:
				waitErr, bad = err, true
				return driver.ErrBadConn // discard: it still listens
			}
			return nil
		})
		if !bad && rawErr != nil {
			// The connection is gone (a statement on it saw it fail).
			waitErr, bad = rawErr, true
		}
		if bad {
			if pending != nil {
				pending.done <- sqldialect.ErrNotListening
			}
			if ctx.Err() != nil {
				return ctx.Err()
			}
			return waitErr
		}
		if pending == nil {
			continue
		}
		err := pending.fn(conn)
		pending.done <- err
		closed := false
		if rawErr := conn.Raw(func(dc any) error {
			closed = dc.(*stdlib.Conn).Conn().IsClosed()
			return nil
		}); rawErr != nil {
			closed = true
		}
		if closed {
			if ctx.Err() != nil {
				return ctx.Err()
			}
			return fmt.Errorf("the listening connection failed during a statement: %w", err)
		}
	}
}

// doReq is a statement to run on a listening connection.
type doReq struct {
	ctx  context.Context
	fn   func(*sql.Conn) error
	done chan error
}

// ListenReserve returns how many connections the listener leaves free
// under a limit of limit connections: 5% of it, at least 3.
func ListenReserve(limit int) int { return max(3, limit/20) }

// roomQuery returns, for the server, this role and this database: the
// connection limit that applies to the current user (-1: none) and the
// client connections counted against it.
const roomQuery = `SELECT
  current_setting('max_connections')::int - CASE WHEN r.rolsuper THEN 0 ELSE
    current_setting('superuser_reserved_connections')::int
    + COALESCE(NULLIF(current_setting('reserved_connections', true), '')::int, 0) END,
  (SELECT count(*) FROM pg_stat_activity WHERE backend_type = 'client backend'),
  CASE WHEN r.rolsuper THEN -1 ELSE r.rolconnlimit END,
  (SELECT count(*) FROM pg_stat_activity WHERE usesysid = r.oid AND backend_type = 'client backend'),
  CASE WHEN r.rolsuper THEN -1 ELSE d.datconnlimit END,
  (SELECT count(*) FROM pg_stat_activity WHERE datid = d.oid AND backend_type = 'client backend')
FROM pg_roles r, pg_database d WHERE r.rolname = current_user AND d.datname = current_database()`

// checkRoom returns an error matching sqldialect.ErrListenerYielded when
// the server would accept fewer than ListenReserve more connections.
func (d pg) checkRoom(ctx context.Context, pc *pgx.Conn) error {
	var lim [3]int64
	var used [3]int64
	err := pc.QueryRow(ctx, roomQuery).Scan(&lim[0], &used[0], &lim[1], &used[1], &lim[2], &used[2])
	if err != nil {
		return d.Translate(err)
	}
	for i, what := range []string{"the server's max_connections", "the role's CONNECTION LIMIT", "the database's CONNECTION LIMIT"} {
		if lim[i] < 0 {
			continue
		}
		free, need := int(lim[i]-used[i]), ListenReserve(int(lim[i]))
		if free < need {
			return fmt.Errorf("%w: %d of %d connections left under %s, fewer than the %d a listener leaves free",
				sqldialect.ErrListenerYielded, max(free, 0), lim[i], what, need)
		}
	}
	return nil
}

// leaseDurable ends the WHERE of an acquisition and a renewal: their
// commits wait for the WAL flush even when the session has
// synchronous_commit off (durableSQL). A lost acquisition would hand its
// token to the next holder too, and a lost renewal would end the lease in
// the store before the holder's deadline: two holders at once. The
// subquery is evaluated once, before the row is looked for, and is
// never NULL; unlike durableJoin it calls set_config every time, which
// at one statement per renewal costs nothing worth a second form.
const leaseDurable = ` AND (SELECT ` + durableSQL + `) IS NOT NULL`

// LockQueries implements dialect.Dialect. statement_timestamp() rather than
// now(): a lease's times must not be those of an older transaction start.
func (pg) LockQueries(t sqldialect.Tables) sqldialect.LockQueries {
	const now = `statement_timestamp()`
	return sqldialect.LockQueries{
		Seed: `INSERT INTO ` + t.Locks + ` (name, owner, instance, token, heartbeat, acquired_at, renewed_at, expires_at)
VALUES ($1, '', '', 0, 0, ` + now + `, ` + now + `, ` + now + `) ON CONFLICT (name) DO NOTHING`,
		Acquire: `UPDATE ` + t.Locks + ` SET owner = $1, instance = $2, token = token + 1, heartbeat = 0,
acquired_at = ` + now + `, renewed_at = ` + now + `, expires_at = ` + now + ` + $3 * interval '1 millisecond'
WHERE name = $4 AND expires_at <= ` + now + leaseDurable,
		Token: `SELECT token FROM ` + t.Locks + ` WHERE name = $1`,
		Renew: `UPDATE ` + t.Locks + ` SET expires_at = ` + now + ` + $1 * interval '1 millisecond', renewed_at = ` + now + `, heartbeat = heartbeat + 1
WHERE name = $2 AND owner = $3 AND instance = $4 AND token = $5 AND expires_at > ` + now + leaseDurable,
		Release: `UPDATE ` + t.Locks + ` SET expires_at = ` + now + `
WHERE name = $1 AND owner = $2 AND instance = $3 AND token = $4 AND expires_at > ` + now,
		List: `SELECT name, owner, instance, token, acquired_at, renewed_at, expires_at, CASE WHEN expires_at > ` + now + ` THEN 1 ELSE 0 END
FROM ` + t.Locks + ` ORDER BY name COLLATE "C"`,
		Fence: `SELECT token FROM ` + t.Locks + `
WHERE name = $1 AND owner = $2 AND instance = $3 AND token = $4 AND expires_at > ` + now + ` FOR UPDATE`,
	}
}
