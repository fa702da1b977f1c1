// Package sqlserver is tandem's SQL Server dialect, for a *sql.DB opened
// with github.com/microsoft/go-mssqldb:
//
//	db, err := sql.Open("sqlserver", "sqlserver://user:pass@host:1433?database=app")
//	j, err := journal.OpenSQL(ctx, db, sqlserver.Dialect, journal.SQLConfig{NodeID: "a"})
//
// This package imports go-mssqldb (for its error type), which registers the
// "sqlserver" driver, so no blank import is needed. It needs SQL Server 2012
// or newer, Azure SQL Database or Azure SQL Managed Instance, and a login
// that may create tables in its default schema (once; later nodes only read
// and write rows).
//
// An append is one T-SQL batch, so the global revision row's lock is held
// for exactly one round trip: SET XACT_ABORT ON, BEGIN TRANSACTION, bump the
// counter with UPDATE … SET @last = revision = revision + @n, insert all
// rows with one INSERT … SELECT FROM (VALUES …), COMMIT, and SELECT the first
// revision. The batch has two parameters per entry, so it carries at most
// 1,047 entries (SQL Server allows 2,100 parameters per request, two of which
// sp_executesql uses); the journal's group commit stays below that. The lock
// timeout is the session's SET LOCK_TIMEOUT on the journal's append
// connection.
//
// Readers must see only committed rows: the pool's sessions must run at READ
// COMMITTED (the default, with or without READ_COMMITTED_SNAPSHOT) or
// stronger. tandem never reads the journal with NOLOCK or READPAST; do not
// set READ UNCOMMITTED on the pool either, or a node could apply a record
// whose append rolled back and whose revision is then reused.
//
// Records published inside an application's transaction (the outbox) wait
// in the pending table until a relay batch moves them into the journal
// under the counter's lock. Only the pending table is read with READPAST
// (and READCOMMITTEDLOCK, which makes READPAST valid under
// READ_COMMITTED_SNAPSHOT too), so that rows of transactions still open
// are skipped, never waited for; they are moved once committed. The relay
// picks its handles before it takes the counter's lock, and the pending
// table has lock escalation disabled, so that an application's locks on it
// stay row locks, which READPAST skips.
//
// Text columns are NVARCHAR because go-mssqldb sends Go strings as nvarchar
// parameters (a VARCHAR key compared with one may lose its index seek), and
// node ids use the binary collation Latin1_General_BIN2, so that they compare
// byte by byte, as file names do. Times are DATETIME2(6) in UTC
// (SYSUTCDATETIME()); queries return them as DATETIMEOFFSET so that the
// DSN's timezone parameter cannot shift them.
//
// The schema evolves through numbered migrations (see package dialect), run
// under an exclusive application lock owned by the session (sp_getapplock,
// waited for up to a minute), each in one transaction. Their ALTER TABLEs
// wait for a schema modification lock behind the tables' readers and
// writers, and everything queues behind them meanwhile, so they run with
// SET LOCK_TIMEOUT 10 s: a long query of an older node fails the migration,
// and the next Open retries it.
//
// After an append whose outcome is open (the batch was sent and the reply
// does not prove it ended before its COMMIT), the journal discards the
// connection and waits out the lock timeout before it looks the batch up:
// the dialect does not end abandoned sessions, because KILL needs
// the ALTER ANY CONNECTION permission, which an application login rarely
// has.
//
// SQL Server has no push notification: nodes on SQL Server poll.
package sqlserver

import (
	"context"
	"database/sql"
	"database/sql/driver"
	"errors"
	"fmt"
	"math"
	"strconv"
	"time"

	mssql "github.com/microsoft/go-mssqldb"

	"github.com/tandem-go/tandem/dialect"
	"github.com/tandem-go/tandem/internal/sqldialect"
)

// Dialect is the SQL Server dialect. It is stateless and safe for
// concurrent use.
var Dialect dialect.Dialect = sqlServer{}

type sqlServer struct{}

var _ dialect.Dialect = sqlServer{}

func (sqlServer) Name() string { return "sqlserver" }

// Error numbers of SQL Server (sys.messages).
const (
	errUniqueConstraint = 2627  // violation of PRIMARY KEY or UNIQUE constraint
	errUniqueIndex      = 2601  // duplicate key row in a unique index
	errDeadlock         = 1205  // chosen as deadlock victim
	errLockTimeout      = 1222  // lock request time-out period exceeded
	errSnapshotConflict = 3960  // snapshot isolation update conflict
	errObjectExists     = 2714  // there is already an object named … in the database
	errUserConnections  = 17809 // could not connect: the maximum number of user connections is reached
	errInvalidObject    = 208   // invalid object name (no such table)
)

// idType is the type of node id columns: compared byte by byte.
const idType = `NVARCHAR(64) COLLATE Latin1_General_BIN2`

// deleteChunk bounds the rows one DELETE of DeleteRange removes, below SQL
// Server's lock escalation threshold (5,000 locks per statement), so pruning
// never takes a table lock that would stall appends and readers.
const deleteChunk = 2000

func (sqlServer) Queries(t sqldialect.Tables) sqldialect.Queries {
	read := `SELECT TOP (@p2) revision, node_id, instance, producer, payload, TODATETIMEOFFSET(created_at, 0) AS created_at FROM ` + t.Journal +
		` WHERE revision > @p1 ORDER BY revision`
	return sqldialect.Queries{
		Read:        read,
		Poll:        sqldialect.PollQuery(t, read, t.Pending+` `+skipOpen),
		PollRecords: sqldialect.PollQuery(t, read, ""),
		Head:        `SELECT revision FROM ` + t.GlobalRevision + ` WHERE id = 1`,
		Meta:        `SELECT epoch, tail, schema_version FROM ` + t.Meta + ` WHERE id = 1`,
		SetTail:     `UPDATE ` + t.Meta + ` SET tail = @p1 WHERE id = 1 AND tail < @p1`,
		// Autocommitted chunks, each below the lock escalation threshold;
		// the rows affected of all of them add up.
		DeleteRange: fmt.Sprintf(`SET NOCOUNT OFF;
WHILE 1 = 1
BEGIN
	DELETE TOP (%d) FROM %s WHERE revision >= @p1 AND revision < @p2;
	IF @@ROWCOUNT < %d BREAK;
END;`, deleteChunk, t.Journal, deleteChunk),
		MinRevision: `SELECT MIN(revision) FROM ` + t.Journal + ` WHERE revision >= @p1`,
		// UPDLOCK holds the row until the transaction ends; an append's
		// UPDATE of the counter excludes it.
		LockHead:  `SELECT revision FROM ` + t.GlobalRevision + ` WITH (UPDLOCK, ROWLOCK) WHERE id = 1`,
		FindBatch: `SELECT MIN(revision), COUNT(*) FROM ` + t.Journal + ` WHERE revision > @p1 AND batch_id = @p2`,
		// PendingAny and PendingOldest skip the rows of transactions
		// still open rather than wait for them (skipOpen). They also skip
		// rows a relay is moving, which is harmless here: that relay
		// moves them.
		PendingAny: `SELECT TOP (1) 1 FROM ` + t.Pending + ` ` + skipOpen,
		// No READPAST: a relay in flight holds the handle's rows locked,
		// and skipping them would report committed rows as gone (the
		// journal's FindBatch does not see that relay's rows before its
		// COMMIT, so Pending.Wait would report ErrNotCommitted). With
		// READ_COMMITTED_SNAPSHOT the count reads the last committed rows
		// and waits for nothing; at locking read committed it waits for a
		// relay in flight (one round trip), or for the handle's own
		// transaction while that is still open. A seek on the key prefix
		// touches no other handle's rows.
		PendingCount: `SELECT COUNT(*) FROM ` + t.Pending + ` WHERE handle = @p1`,
		// Whole seconds: DATEDIFF returns an INT (MILLISECOND would
		// overflow after 24.8 days; SECOND lasts 68 years).
		PendingOldest: `SELECT COUNT_BIG(*), DATEDIFF(SECOND, MIN(created_at), SYSUTCDATETIME()) * 1000.0 FROM ` + t.Pending + ` ` + skipOpen,

		LoadPosition: `SELECT revision, epoch, TODATETIMEOFFSET(updated_at, 0), TODATETIMEOFFSET(evicted_at, 0) FROM ` + t.LocalRevisions + ` WHERE node_id = @p1`,
		// UPDLOCK, SERIALIZABLE holds the key range until COMMIT, so two
		// first saves of one node cannot both take the INSERT branch.
		SavePosition: `SET XACT_ABORT ON;
BEGIN TRANSACTION;
UPDATE ` + t.LocalRevisions + ` WITH (UPDLOCK, SERIALIZABLE) SET revision = @p2, epoch = @p3, updated_at = SYSUTCDATETIME(), evicted_at = NULL WHERE node_id = @p1;
IF @@ROWCOUNT = 0
	INSERT INTO ` + t.LocalRevisions + ` (node_id, revision, epoch, updated_at, evicted_at) VALUES (@p1, @p2, @p3, SYSUTCDATETIME(), NULL);
COMMIT TRANSACTION;`,
		ListPositions: `SELECT node_id, revision, epoch, TODATETIMEOFFSET(updated_at, 0), TODATETIMEOFFSET(evicted_at, 0) FROM ` + t.LocalRevisions + ` ORDER BY node_id`,
		// NOCOUNT OFF: the caller needs the rows affected even if a server
		// default turned counting off.
		EvictPosition: `SET NOCOUNT OFF;
UPDATE ` + t.LocalRevisions + ` SET evicted_at = SYSUTCDATETIME() WHERE node_id = @p1 AND revision = @p2 AND evicted_at IS NULL;`,
		// NOCOUNT OFF, as EvictPosition.
		UnevictPosition: `SET NOCOUNT OFF;
UPDATE ` + t.LocalRevisions + ` SET evicted_at = NULL WHERE node_id = @p1 AND revision = @p2 AND evicted_at IS NOT NULL;`,
		DeletePosition: `DELETE FROM ` + t.LocalRevisions + ` WHERE node_id = @p1`,
		// NOCOUNT OFF: the caller needs the rows affected even if a server
		// default turned counting off.
		CopyPosition: `SET NOCOUNT OFF;
INSERT INTO ` + t.LocalRevisions + ` (node_id, revision, epoch, updated_at, evicted_at)
SELECT @p1, revision, epoch, SYSUTCDATETIME(), evicted_at FROM ` + t.LocalRevisions + ` WHERE node_id = @p2;`,
		// Liveness as LockQueries.List's held. The position is looked up
		// by its key (SUBSTRING of the lease name keeps its binary
		// collation, node_id's), so the positions of dead ids cost
		// nothing. No READPAST or NOLOCK: a lease being renewed is
		// waited for, not skipped. A position saved in another epoch
		// than the meta row's (before a restore, say) is behind,
		// whatever its revision.
		MembersBehind: `SELECT COUNT(*) FROM ` + t.Locks + ` l LEFT JOIN ` + t.LocalRevisions + ` r ON r.node_id = SUBSTRING(l.name, 8, 128)
WHERE l.name LIKE N'member.%' AND l.name <> N'member.' + @p1 AND l.expires_at > SYSUTCDATETIME()
AND (r.node_id IS NULL OR r.evicted_at IS NOT NULL OR r.revision < @p2 OR r.epoch <> (SELECT epoch FROM ` + t.Meta + ` WHERE id = 1))`,
	}
}

// table is one CREATE TABLE, guarded so that it does nothing when the table
// exists.
type table struct {
	name string
	ddl  string
}

func tables(t sqldialect.Tables) []table {
	create := func(name, columns string) table {
		return table{name, `IF OBJECT_ID(N'` + name + `', N'U') IS NULL
CREATE TABLE ` + name + ` (` + columns + `)`}
	}
	return []table{
		create(t.Journal, `
	revision   BIGINT NOT NULL PRIMARY KEY,
	node_id    `+idType+` NOT NULL,
	producer   NVARCHAR(128) NOT NULL,
	payload    VARBINARY(MAX) NOT NULL,
	created_at DATETIME2(6) NOT NULL`),
		create(t.GlobalRevision, `
	id       TINYINT NOT NULL PRIMARY KEY CHECK (id = 1),
	revision BIGINT NOT NULL`),
		create(t.Meta, `
	id             TINYINT NOT NULL PRIMARY KEY CHECK (id = 1),
	epoch          NVARCHAR(64) NOT NULL,
	tail           BIGINT NOT NULL,
	schema_version INT NOT NULL`),
		create(t.LocalRevisions, `
	node_id    `+idType+` NOT NULL PRIMARY KEY,
	revision   BIGINT NOT NULL,
	epoch      NVARCHAR(64) NOT NULL,
	updated_at DATETIME2(6) NOT NULL`),
		create(t.Locks, `
	name        NVARCHAR(128) COLLATE Latin1_General_BIN2 NOT NULL PRIMARY KEY,
	owner       `+idType+` NOT NULL,
	instance    NVARCHAR(64) COLLATE Latin1_General_BIN2 NOT NULL,
	token       BIGINT NOT NULL,
	heartbeat   BIGINT NOT NULL,
	acquired_at DATETIME2(6) NOT NULL,
	renewed_at  DATETIME2(6) NOT NULL,
	expires_at  DATETIME2(6) NOT NULL`),
	}
}

// seedCounter and seedMeta insert the single rows unless present. Two nodes
// may still race past NOT EXISTS; the loser's unique violation is success.
func seedCounter(t sqldialect.Tables) string {
	return `INSERT INTO ` + t.GlobalRevision + ` (id, revision) SELECT 1, 0
WHERE NOT EXISTS (SELECT 1 FROM ` + t.GlobalRevision + ` WITH (UPDLOCK, HOLDLOCK) WHERE id = 1)`
}

// seedMeta: args (epoch). The meta row of schema version 1.
func seedMeta(t sqldialect.Tables) string {
	return `INSERT INTO ` + t.Meta + ` (id, epoch, tail, schema_version) SELECT 1, @p1, 1, 1
WHERE NOT EXISTS (SELECT 1 FROM ` + t.Meta + ` WITH (UPDLOCK, HOLDLOCK) WHERE id = 1)`
}

// Migrations implements dialect.Dialect. Migration 1 is the first
// release's schema; the later ones add nullable columns, each in one
// transaction (SQL Server's DDL is transactional) that also records it.
// Migrate runs them under LockSchema's application lock.
func (d sqlServer) Migrations(t sqldialect.Tables) []sqldialect.Migration {
	return []sqldialect.Migration{
		{Version: 1, Compat: 1, Apply: func(ctx context.Context, conn *sql.Conn, epoch string) error {
			return d.createV1(ctx, conn, t, epoch)
		}},
		{Version: 2, Compat: 1, Apply: func(ctx context.Context, conn *sql.Conn, _ string) error {
			return inTx(ctx, conn, schemaV2(t))
		}},
		{Version: 3, Compat: 1, Apply: func(ctx context.Context, conn *sql.Conn, _ string) error {
			return inTx(ctx, conn, schemaV3(t))
		}},
		{Version: 4, Compat: 1, Apply: func(ctx context.Context, conn *sql.Conn, _ string) error {
			return inTx(ctx, conn, schemaV4(t))
		}},
		{Version: 5, Compat: 1, Apply: func(ctx context.Context, conn *sql.Conn, _ string) error {
			return inTx(ctx, conn, schemaV5(t))
		}},
		{Version: 6, Compat: 1, Apply: func(ctx context.Context, conn *sql.Conn, _ string) error {
			return inTx(ctx, conn, schemaV6(t))
		}},
	}
}

// migrationLockTimeout bounds each lock wait of a migration. An ALTER TABLE
// waits for a schema modification lock behind every reader and appender of
// the table, and every later one queues behind it meanwhile: a long query
// of an old node fails the migration (the next Open retries it) instead of
// stalling the cluster.
const migrationLockTimeout = 10 * time.Second

// inTx runs batches in one transaction with the session's LOCK_TIMEOUT set
// to migrationLockTimeout, and then sets it back to the default. SET
// LOCK_TIMEOUT is not transactional, so it is set and reset outside the
// transaction, the reset also when a batch failed. (go-mssqldb resets the
// session when the pool hands the connection out again, too.)
func inTx(ctx context.Context, conn *sql.Conn, batches []string) error {
	if _, err := conn.ExecContext(ctx, lockTimeoutSQL(migrationLockTimeout)); err != nil {
		return err
	}
	defer func() {
		ctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 5*time.Second)
		defer cancel()
		_, _ = conn.ExecContext(ctx, noLockTimeoutSQL)
	}()
	tx, err := conn.BeginTx(ctx, nil)
	if err != nil {
		return err
	}
	defer tx.Rollback()
	for _, b := range batches {
		if _, err := tx.ExecContext(ctx, b); err != nil {
			return err
		}
	}
	return tx.Commit()
}

// schemaV2 is migration 2's batches, in order: the journal's writer
// instance and batch id, and meta's migration. Nullable: nodes of schema
// version 1 keep inserting rows without them.
func schemaV2(t sqldialect.Tables) []string {
	return []string{
		addColumn(t.Journal, "instance", idType+` NULL`),
		addColumn(t.Journal, "batch_id", `BIGINT NULL`),
		addColumn(t.Meta, "migration", `INT NULL`),
		recordMigration(t, 2),
	}
}

// schemaV3 is migration 3's batches: the janitor's eviction marker.
func schemaV3(t sqldialect.Tables) []string {
	return []string{
		addColumn(t.LocalRevisions, "evicted_at", `DATETIME2(6) NULL`),
		recordMigration(t, 3),
	}
}

// addColumn is a batch that adds column to table unless COL_LENGTH finds
// it there, so a migration is idempotent. Each ALTER is a batch of its
// own: a batch is compiled as a whole, so one that adds a column cannot
// also name it (error 207).
func addColumn(table, column, ddl string) string {
	return `IF COL_LENGTH(N'` + table + `', N'` + column + `') IS NULL ALTER TABLE ` + table + ` ADD ` + column + ` ` + ddl
}

// schemaV6 is migration 6's batches: the record only. Version 6 changes
// MySQL's procedures; a SQL Server batch interrupted by an attention or
// an error under XACT_ABORT never goes on to its COMMIT.
func schemaV6(t sqldialect.Tables) []string {
	return []string{recordMigration(t, 6)}
}

// recordMigration is the batch that records migration version in the meta
// row (last, after the batches that added meta.migration).
func recordMigration(t sqldialect.Tables, version int) string {
	v := strconv.Itoa(version)
	return `UPDATE ` + t.Meta + ` SET migration = ` + v + ` WHERE id = 1 AND COALESCE(migration, 1) < ` + v
}

// createV1 creates each table of schema version 1 unless it exists. Nodes
// starting at once are serialised by LockSchema; should one run without
// it, "object exists" (2714) and the seed rows' unique violations count as
// success, so the first epoch wins.
func (d sqlServer) createV1(ctx context.Context, conn *sql.Conn, t sqldialect.Tables, epoch string) error {
	for _, tb := range tables(t) {
		if _, err := conn.ExecContext(ctx, tb.ddl); err != nil && !hasNumber(err, errObjectExists) {
			return fmt.Errorf("create table %s: %w", tb.name, d.Translate(err))
		}
	}
	if _, err := conn.ExecContext(ctx, seedCounter(t)); err != nil {
		if err = d.Translate(err); !errors.Is(err, dialect.ErrUniqueViolation) {
			return fmt.Errorf("seed %s: %w", t.GlobalRevision, err)
		}
	}
	if _, err := conn.ExecContext(ctx, seedMeta(t), epoch); err != nil {
		if err = d.Translate(err); !errors.Is(err, dialect.ErrUniqueViolation) {
			return fmt.Errorf("seed %s: %w", t.Meta, err)
		}
	}
	return nil
}

// LockSchema implements dialect.Dialect with an exclusive application lock
// (sp_getapplock) owned by conn's session, named for the prefix, waited for
// up to schemaLockWait. sp_getapplock returns 0 or 1 when it granted the
// lock and a negative status when it did not (-1 timed out, -2 cancelled,
// -3 deadlock victim, -999 a parameter or other error), which LockSchema
// reports as an error matching dialect.ErrLockTimeout.
func (d sqlServer) LockSchema(ctx context.Context, conn *sql.Conn, t sqldialect.Tables) (func(), error) {
	key := schemaLockName(t)
	var status int
	if err := conn.QueryRowContext(ctx, lockSchemaSQL, key).Scan(&status); err != nil {
		// The lock may have been granted as the call failed (a cancel
		// racing the grant): a session lock outlives the call, so the
		// session must end, which releases it.
		discard(conn)
		return nil, err
	}
	if status < 0 {
		return nil, fmt.Errorf("%w: sp_getapplock %q returned %d (%s)", dialect.ErrLockTimeout, key, status, applockStatus(status))
	}
	return func() {
		ctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 5*time.Second)
		defer cancel()
		if _, err := conn.ExecContext(ctx, unlockSchemaSQL, key); err != nil {
			discard(conn) // ending the session releases the lock
		}
	}, nil
}

// schemaLockName is the application lock resource of t's schema, sent as
// a parameter. Resource names compare binary, up to 255 characters.
func schemaLockName(t sqldialect.Tables) string { return "tandem schema " + t.Prefix }

// schemaLockWait is how long LockSchema waits for another node's
// migration (sp_getapplock's @LockTimeout, in milliseconds).
const schemaLockWait = 60 * time.Second

// lockSchemaSQL and unlockSchemaSQL: args (resource name).
var (
	lockSchemaSQL = `SET NOCOUNT ON;
DECLARE @r INT;
EXEC @r = sp_getapplock @Resource = @p1, @LockMode = 'Exclusive', @LockOwner = 'Session', @LockTimeout = ` +
		strconv.FormatInt(schemaLockWait.Milliseconds(), 10) + `;
SELECT @r;`
	unlockSchemaSQL = `EXEC sp_releaseapplock @Resource = @p1, @LockOwner = 'Session'`
)

// applockStatus describes a negative status of sp_getapplock.
func applockStatus(status int) string {
	switch status {
	case -1:
		return "timed out"
	case -2:
		return "cancelled"
	case -3:
		return "chosen as deadlock victim"
	}
	return "parameter or other call error"
}

// discard closes conn's session for good: database/sql drops a connection
// whose use reported driver.ErrBadConn instead of returning it to the
// pool, and the server then rolls back or releases what the session held.
func discard(conn *sql.Conn) {
	_ = conn.Raw(func(any) error { return driver.ErrBadConn })
}

// PrepareConn sets the session's LOCK_TIMEOUT, in milliseconds rounded up.
// go-mssqldb sends a statement without arguments as a plain SQL batch, so
// the setting stays for the session (until the connection is reset when it
// goes back to the pool).
func (d sqlServer) PrepareConn(ctx context.Context, conn *sql.Conn, lockTimeout time.Duration) error {
	_, err := conn.ExecContext(ctx, lockTimeoutSQL(lockTimeout))
	return d.Translate(err)
}

// ResetConn implements dialect.Dialect: no lock timeout, the default. Like
// PrepareConn's, the statement has no arguments, so it is a plain batch
// whose setting stays for the session.
// DropSchema implements sqldialect.Dialect. OBJECT_ID rather than DROP
// TABLE IF EXISTS, which needs SQL Server 2016.
func (sqlServer) DropSchema(t sqldialect.Tables) []string {
	all := t.All()
	out := make([]string, 0, len(all))
	for i := len(all) - 1; i >= 0; i-- {
		out = append(out, `IF OBJECT_ID(N'`+all[i]+`', N'U') IS NOT NULL DROP TABLE `+all[i])
	}
	return out
}

func (d sqlServer) ResetConn(ctx context.Context, conn *sql.Conn) error {
	_, err := conn.ExecContext(ctx, noLockTimeoutSQL)
	return d.Translate(err)
}

// noLockTimeoutSQL sets the session's default: wait for locks forever.
const noLockTimeoutSQL = `SET LOCK_TIMEOUT -1`

func lockTimeoutSQL(lockTimeout time.Duration) string {
	ms := (lockTimeout + time.Millisecond - 1) / time.Millisecond
	ms = min(max(ms, 1), math.MaxInt32)
	return fmt.Sprintf(`SET LOCK_TIMEOUT %d`, ms)
}

// Translate maps SQL Server error numbers to the dialect's error classes.
// It looks at every error of the response (mssql.Error.All), since the
// driver reports the last one.
func (sqlServer) Translate(err error) error {
	var msErr mssql.Error
	if err == nil || !errors.As(err, &msErr) {
		return err
	}
	switch {
	case hasNumber(err, errUniqueConstraint, errUniqueIndex):
		return fmt.Errorf("%w: %w", dialect.ErrUniqueViolation, err)
	case hasNumber(err, errDeadlock):
		return fmt.Errorf("%w: %w", dialect.ErrDeadlock, err)
	case hasNumber(err, errSnapshotConflict):
		return fmt.Errorf("%w: %w", dialect.ErrSerialization, err)
	case hasNumber(err, errLockTimeout):
		return fmt.Errorf("%w: %w", dialect.ErrLockTimeout, err)
	case hasNumber(err, errUserConnections):
		return fmt.Errorf("%w: %w", dialect.ErrTooManyConnections, err)
	case hasNumber(err, errInvalidObject):
		return fmt.Errorf("%w: %w", dialect.ErrNoSuchTable, err)
	}
	return err
}

// hasNumber reports whether err holds an mssql.Error with one of the
// numbers, as its own number or in its chain of errors.
func hasNumber(err error, numbers ...int32) bool {
	var msErr mssql.Error
	if !errors.As(err, &msErr) {
		return false
	}
	match := func(n int32) bool {
		for _, want := range numbers {
			if n == want {
				return true
			}
		}
		return false
	}
	if match(msErr.Number) {
		return true
	}
	for _, e := range msErr.All {
		if match(e.Number) {
			return true
		}
	}
	return false
}

// LockQueries implements dialect.Dialect. NOCOUNT OFF keeps the rows
// affected that decide acquired or not (go-mssqldb adds up the counts of
// the batch's statements; SET has none), even if a server default turned
// counting off.
//
// DATEADD's number must fit an INT (error 8115 otherwise), and the TTL is a
// BIGINT of milliseconds (go-mssqldb sends int64 as bigint): INT
// milliseconds would end at 24.8 days, so the whole seconds and the rest
// are added apart, which reaches 68 years.
func (sqlServer) LockQueries(t sqldialect.Tables) sqldialect.LockQueries {
	const now = `SYSUTCDATETIME()`
	ttl := func(p string) string {
		return `DATEADD(MILLISECOND, CAST(` + p + ` % 1000 AS INT), DATEADD(SECOND, CAST(` + p + ` / 1000 AS INT), ` + now + `))`
	}
	return sqldialect.LockQueries{
		// As seedMeta: UPDLOCK, HOLDLOCK serialize concurrent seeds of a
		// name (the loser finds the row), so a unique violation is rare.
		Seed: `INSERT INTO ` + t.Locks + ` (name, owner, instance, token, heartbeat, acquired_at, renewed_at, expires_at)
SELECT @p1, N'', N'', 0, 0, ` + now + `, ` + now + `, ` + now + `
WHERE NOT EXISTS (SELECT 1 FROM ` + t.Locks + ` WITH (UPDLOCK, HOLDLOCK) WHERE name = @p1)`,
		Acquire: `SET NOCOUNT OFF;
UPDATE ` + t.Locks + ` SET owner = @p1, instance = @p2, token = token + 1, heartbeat = 0,
acquired_at = ` + now + `, renewed_at = ` + now + `, expires_at = ` + ttl("@p3") + `
WHERE name = @p4 AND expires_at <= ` + now + `;`,
		Token: `SELECT token FROM ` + t.Locks + ` WHERE name = @p1`,
		Renew: `SET NOCOUNT OFF;
UPDATE ` + t.Locks + ` SET expires_at = ` + ttl("@p1") + `, renewed_at = ` + now + `, heartbeat = heartbeat + 1
WHERE name = @p2 AND owner = @p3 AND instance = @p4 AND token = @p5 AND expires_at > ` + now + `;`,
		Release: `SET NOCOUNT OFF;
UPDATE ` + t.Locks + ` SET expires_at = ` + now + `
WHERE name = @p1 AND owner = @p2 AND instance = @p3 AND token = @p4 AND expires_at > ` + now + `;`,
		List: `SELECT name, owner, instance, token, TODATETIMEOFFSET(acquired_at, 0), TODATETIMEOFFSET(renewed_at, 0), TODATETIMEOFFSET(expires_at, 0),
CASE WHEN expires_at > ` + now + ` THEN 1 ELSE 0 END FROM ` + t.Locks + ` ORDER BY name`,
		// UPDLOCK holds an update lock on the row until the transaction
		// ends, and update locks exclude each other: Acquire, Renew and
		// Release (UPDATEs) wait for the fenced work; readers do not.
		Fence: `SELECT token FROM ` + t.Locks + ` WITH (UPDLOCK, ROWLOCK)
WHERE name = @p1 AND owner = @p2 AND instance = @p3 AND token = @p4 AND expires_at > ` + now,
	}
}
