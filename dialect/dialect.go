// Package dialect names the SQL databases tandem runs on and the errors
// they report.
//
// # Choosing a dialect
//
// Pick the subpackage for your database, open a *sql.DB with its driver,
// and pass both to an OpenSQL function (journal, revision, lock, datastore,
// cluster):
//
//	dialect/postgres   PostgreSQL through github.com/jackc/pgx/v5 (stdlib)
//	dialect/mysql      MySQL and MariaDB through github.com/go-sql-driver/mysql
//	dialect/sqlserver  SQL Server through github.com/microsoft/go-mssqldb
//	dialect/oracle     Oracle through github.com/sijms/go-ora/v2
//
// For example:
//
//	db, err := sql.Open("pgx", "postgres://user:pass@host/db")
//	node, err := cluster.OpenSQL(ctx, db, postgres.Dialect, cluster.Config{NodeID: "a"})
//
// Each subpackage exports one value, Dialect, and is the only package of
// the module that imports its driver, so a PostgreSQL user never links the
// Oracle driver. Nothing registers itself in init: the caller picks the
// dialect and owns (and closes) the *sql.DB. Each subpackage's doc states
// the database versions and privileges it needs.
//
// # Errors
//
// Errors that came from the database are translated at the dialect
// boundary: when one belongs to a class below, errors.Is(err, ErrX) holds
// for it (and errors.As still reaches the driver's error). ErrDeadlock,
// ErrSerialization and ErrLockTimeout are transient: retrying the call may
// succeed. ErrOutcomeUnknown is the one to handle with care: an append (or
// publish) whose commit may or may not have happened. The journal resolves
// such outcomes itself by looking the batch up, so a caller sees it only
// when the database stayed unreachable for the journal's resolve timeout;
// the records may then be in the journal or not, and the caller must not
// assume either. ErrSchemaTooNew means the database was migrated by a newer
// release; see below.
//
// # Schema versions and migrations (for operators)
//
// tandem's tables (named with a prefix, DefaultPrefix unless configured)
// are created and evolved by the OpenSQL functions, or by `tandem schema
// migrate`, through numbered migrations up to SchemaVersion. The first
// node to open a database creates the schema; concurrent nodes are safe
// (one applies each migration, the others find it done). The database's
// meta row records the last migration applied and a compatibility version:
// the oldest schema version a release must know to run against it. Most
// migrations are additive (nullable columns, new tables) and keep the
// compatibility version, so nodes of the previous release keep running
// through a rolling upgrade; a release whose SchemaVersion is below the
// database's compatibility version refuses to start with ErrSchemaTooNew.
// Migrations never run backwards: downgrading below the compatibility
// version needs the newer release. The versions so far:
//
//	1  the journal, global_revision, meta, local_revisions and locks tables
//	2  journal.instance and journal.batch_id (resolving open outcomes);
//	   meta.migration
//	3  local_revisions.evicted_at (the janitor's eviction marker)
//	4  the pending table: records published inside an application's
//	   transaction (the outbox)
//	5  the data store's blobs, blob_chunks and blob_uploads tables
//
// All five are additive: the compatibility version is still 1.
package dialect

import "github.com/tandem-go/tandem/internal/sqldialect"

// Dialect is one database's SQL knowledge, as provided by the subpackages
// (postgres.Dialect, mysql.Dialect, sqlserver.Dialect, oracle.Dialect).
// Values are stateless and safe for concurrent use. Users hold and pass a
// Dialect; they cannot implement one, because its methods speak in types
// internal to tandem. Adding a database means adding a subpackage to
// tandem.
type Dialect = sqldialect.Dialect

// SchemaVersion is the newest schema version this release knows (the
// package doc lists them): it applies every migration up to it and runs
// against any database whose compatibility version is at most this.
const SchemaVersion = sqldialect.SchemaVersion

// DefaultPrefix ("tandem_") is the table prefix used when a Config leaves
// it empty.
const DefaultPrefix = sqldialect.DefaultPrefix

// Error classes. Each is the same value as the one the dialects wrap, so
// errors.Is(err, ErrX) holds for every error of its class.
var (
	// ErrUniqueViolation: a unique or primary-key constraint was violated.
	ErrUniqueViolation = sqldialect.ErrUniqueViolation
	// ErrDeadlock: the database chose this transaction as a deadlock
	// victim; the call may be retried.
	ErrDeadlock = sqldialect.ErrDeadlock
	// ErrSerialization: a serialization failure; the call may be retried.
	ErrSerialization = sqldialect.ErrSerialization
	// ErrLockTimeout: a lock could not be acquired within the lock
	// timeout; the call may be retried.
	ErrLockTimeout = sqldialect.ErrLockTimeout
	// ErrOutcomeUnknown: an append's commit may or may not have happened,
	// and the journal could not learn which within its resolve timeout
	// (see journal.SQLConfig.ResolveTimeout).
	ErrOutcomeUnknown = sqldialect.ErrOutcomeUnknown
	// ErrHeadMismatch: a conditional append found another head than
	// expected, and wrote nothing.
	ErrHeadMismatch = sqldialect.ErrHeadMismatch
	// ErrSchemaTooNew: the database holds a schema whose compatibility
	// version is newer than SchemaVersion; run a newer release.
	ErrSchemaTooNew = sqldialect.ErrSchemaTooNew
	// ErrTooManyConnections: the server refused a new connection because
	// a connection limit is reached — the server's (PostgreSQL's and
	// MySQL's max_connections), the account's (a role's CONNECTION LIMIT,
	// MySQL's max_user_connections) or the database's. Transient for a
	// running node, which retries; see "Connections" in package cluster
	// for what each node holds.
	ErrTooManyConnections = sqldialect.ErrTooManyConnections
	// ErrNoSuchTable: a statement named a table that does not exist (no
	// tandem schema with that prefix, or one not complete).
	ErrNoSuchTable = sqldialect.ErrNoSuchTable
)
