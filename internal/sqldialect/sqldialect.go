// Package sqldialect is the seam between tandem's SQL algorithms and the SQL
// databases it runs on: the Dialect interface and everything it speaks in
// (Tables, Queries, AppendRequest, the Outbox every dialect has, the
// optional Notifier and SessionEnder, migrations), shared by the algorithms (journal, revision,
// lock, datastore, cluster, cmd/tandem) and the dialects (dialect/postgres,
// dialect/mysql, dialect/sqlserver, dialect/oracle).
//
// It is internal so that users see only package dialect: the error
// sentinels, DefaultPrefix, SchemaVersion and dialect.Dialect, an alias of
// Dialect that users can hold and pass but not implement. The sentinels and
// constants are defined here once and re-exported there as the same
// values, so errors.Is matches either name.
//
// # Schema versions and migrations
//
// The tables evolve only through numbered migrations, written once per
// dialect (Dialect.Migrations) and run by one algorithm (Migrate) under
// the dialect's schema lock. The meta row records the last migration
// applied (meta.migration) and the compatibility version
// (meta.schema_version): the oldest schema version a release must know to
// run against the database. Every release checks the latter, so an
// additive migration (nullable columns, new tables, a new procedure beside
// the old one) keeps it, and nodes of the previous release keep running
// through a rolling upgrade; a release that knows less refuses with
// ErrSchemaTooNew.
//
// Driver errors are translated at this boundary: every error a Dialect
// returns that came from the database matches (with errors.Is) one of the
// class sentinels below when it belongs to that class, and nothing above
// the dialects inspects driver error types or strings.
package sqldialect

import (
	"context"
	"crypto/rand"
	"database/sql"
	"encoding/hex"
	"errors"
	"time"
)

// SchemaVersion is the newest schema version this release knows: it
// applies every migration up to it (see Migrate) and runs against any
// database whose compatibility version (SchemaState.Compat) is at most
// this.
//
//	1  the journal, global_revision, meta, local_revisions and locks tables
//	2  journal.instance and journal.batch_id (the writing process and its
//	   group commit, for resolving open outcomes); meta.migration
//	3  local_revisions.evicted_at (the janitor's eviction marker)
//	4  pending: records published inside an application's transaction
//	5  the data store's blobs, blob_chunks and blob_uploads tables (new
//	   tables only: Compat stays 1)
//	6  MySQL: append and relay procedures that check their statements' row
//	   counts before committing (new procedures only; other dialects
//	   record the version and change nothing)
const SchemaVersion = 6

// Error classes. A Dialect wraps the driver's error so that errors.Is(err,
// ErrX) holds for its class, and errors.As still reaches the driver error.
var (
	// ErrUniqueViolation: a unique or primary-key constraint was violated.
	ErrUniqueViolation = errors.New("unique violation")
	// ErrDeadlock: the database chose this transaction as a deadlock victim.
	ErrDeadlock = errors.New("deadlock")
	// ErrSerialization: a serialization failure; the transaction may be retried.
	ErrSerialization = errors.New("serialization failure")
	// ErrLockTimeout: a lock could not be acquired within the lock timeout.
	ErrLockTimeout = errors.New("lock timeout")
	// ErrOutcomeUnknown: an append's commit may or may not have happened
	// (the connection failed or the statement was interrupted after it was
	// sent). A Dialect reports such an error as an *OutcomeError; the
	// journal then looks the batch up and returns a definite answer, so a
	// caller of journal.Append sees it only when the database stayed
	// unreachable for the journal's resolve timeout.
	ErrOutcomeUnknown = errors.New("commit outcome unknown")
	// ErrHeadMismatch: a conditional append found another head than expected.
	ErrHeadMismatch = errors.New("journal head mismatch")
	// ErrSchemaTooNew: the database holds a schema version newer than this
	// release understands.
	ErrSchemaTooNew = errors.New("schema version newer than supported")
	// ErrTooManyConnections: the server refused a new connection because
	// a connection limit is reached (the server's, the account's or the
	// database's).
	ErrTooManyConnections = errors.New("too many connections")
	// ErrNoSuchTable: a statement named a table that does not exist.
	ErrNoSuchTable = errors.New("no such table")
	// ErrListenerYielded: Notifier.Listen gave its connection up, or did
	// not take one, because the server is short of connections. A
	// listener only makes wake-ups early, so it is the first connection
	// to give way to the statements that keep nodes members.
	ErrListenerYielded = errors.New("listener yielded its connection: the server is short of connections")
)

// OutcomeError reports an append whose commit may or may not have happened:
// the statement was sent, and what came back (an interruption, a statement
// timeout, a lost connection, an error raised after the write began) does
// not prove that it ended before its commit. It matches ErrOutcomeUnknown;
// Err is the cause.
type OutcomeError struct{ Err error }

func (e *OutcomeError) Error() string { return "commit outcome unknown: " + e.Err.Error() }

// Unwrap returns the cause.
func (e *OutcomeError) Unwrap() error { return e.Err }

// Is makes errors.Is(err, ErrOutcomeUnknown) hold.
func (e *OutcomeError) Is(target error) bool { return target == ErrOutcomeUnknown }

// Open wraps err as an *OutcomeError.
func Open(err error) error { return &OutcomeError{Err: err} }

// Entry is one record to append: who interprets it and its payload.
type Entry struct {
	Producer string
	Payload  []byte
}

// AppendRequest is one group-committed batch of entries, all written by one
// node.
type AppendRequest struct {
	Tables Tables
	NodeID string
	// Instance is the writing process's instance id (1 to 64 bytes of
	// [A-Za-z0-9._-]), stored with every record of the batch.
	Instance string
	// BatchID identifies this group commit among the journal's recent
	// ones; it is stored with every record of the batch, so that an open
	// outcome can be resolved by looking it up (Queries.FindBatch).
	BatchID int64
	Entries []Entry
	// ExpectHead, when >= 0, makes the append conditional: it happens only
	// if the journal head is ExpectHead, otherwise Append returns an error
	// matching ErrHeadMismatch and writes nothing.
	ExpectHead int64
	// LockTimeout bounds the wait for the counter's row lock (> 0). Dialects
	// with a session setting for it apply it in PrepareConn instead; those
	// without one (Oracle's FOR UPDATE WAIT) use this.
	LockTimeout time.Duration
}

// Queries holds the statements the algorithms above run as they are, in the
// dialect's own placeholder style. The comment of each field states its
// arguments, in order, and what it returns.
type Queries struct {
	// Read: args (after int64, limit int64); rows (revision, node_id,
	// instance, producer, payload, created_at) with revision > after,
	// ascending, at most limit rows. instance is NULL (or empty) for
	// records written by a release before schema version 2.
	Read string
	// Poll: args (after int64, limit int64); a node's poll in one
	// statement (PollQuery composes it): rows (epoch, tail, head,
	// pending 1/0, revision, node_id, instance, producer, payload,
	// created_at), one per record Read would return, in revision order,
	// each carrying the meta row's epoch and tail, the counter's revision
	// and whether the pending table has a committed row; one row with
	// NULL record columns when no record follows after.
	Poll string
	// PollRecords: Poll without its look at the pending table (PollQuery
	// with no pending table): the pending column is always 0. Polls whose
	// caller does not use the flag (push wake-ups, waits) run it, so that
	// a pending table full of rows deleted but not yet removable (a long
	// transaction holding back vacuum or purge, after heavy AppendTx use),
	// which that look must walk through, costs only the polls that need it.
	PollRecords string
	// Head: no args; one row (revision) of the global revision counter.
	Head string
	// Meta: no args; one row (epoch, tail, schema_version).
	Meta string
	// SetTail: args (tail int64); raises meta.tail to tail if it is lower.
	SetTail string
	// DeleteRange: args (from, to int64); deletes journal rows with
	// from <= revision < to.
	DeleteRange string
	// MinRevision: args (from int64); one row (MIN(revision)) of the
	// journal rows with revision >= from, NULL when there is none. The
	// caller passes a revision below which it knows no row is left (0
	// when it knows none), so that the primary key is entered at from:
	// the rows deleted below it stay in the index until vacuum or purge
	// removes them, which a long transaction holds back, and a MIN that
	// started at the lowest key would walk through all of them.
	MinRevision string
	// LockHead: no args; run inside a transaction, one row (revision) of
	// the global revision counter, locking the row until the transaction
	// ends. An append that held the lock has ended (committed or rolled
	// back) once LockHead returns.
	LockHead string
	// BeginLookup: no args; when set, the first statement of the
	// transaction that runs LockHead to look a batch up: PostgreSQL's
	// SET TRANSACTION ISOLATION LEVEL READ COMMITTED, since at REPEATABLE
	// READ or SERIALIZABLE (a default the application's pool may set)
	// LockHead fails with a serialization error when it waited for an
	// append that then committed. Empty where LockHead works at whatever
	// level the session has. (A statement, not sql.TxOptions: go-ora
	// refuses any isolation but the default.)
	BeginLookup string
	// FindBatch: args (after int64, batch_id int64); one row
	// (MIN(revision), COUNT(*)) of the journal rows with revision > after
	// and that batch id (MIN is NULL when there is none).
	FindBatch string
	// Settle: args (delta int64); run in the transaction that holds
	// LockHead's lock, it adds delta to the global revision counter. Set
	// by dialects whose commits can become visible before they are
	// durable (MySQL's InnoDB, Oracle): once the lookup finds a batch, it
	// runs Settle with +1 and then -1, each changing one row, and commits.
	// Its commit writes the log and waits for the flush, which covers the
	// batch's earlier commit, so a batch is reported committed only once
	// it is durable. Empty where a visible commit is a durable one
	// (PostgreSQL publishes a commit after its WAL flush; SQL Server,
	// without delayed durability, releases its locks after its log flush).
	Settle string
	// PendingAny: no args; one row (1) when the pending table has any
	// committed row, none otherwise.
	PendingAny string
	// PendingCount: args (handle int64); one row (COUNT(*)) of that
	// handle's committed pending rows.
	PendingCount string
	// PendingOldest: no args; one row (COUNT(*), the age in milliseconds
	// of the oldest committed pending row by database time, NULL when
	// there is none).
	PendingOldest string

	// LoadPosition: args (node_id); one row (revision, epoch, updated_at,
	// evicted_at) or none. evicted_at is NULL unless the janitor evicted
	// the node.
	LoadPosition string
	// SavePosition: args (node_id, revision int64, epoch); inserts or
	// replaces the node's row, updated_at = database time, evicted_at =
	// NULL.
	SavePosition string
	// ListPositions: no args; rows (node_id, revision, epoch, updated_at,
	// evicted_at) ordered by node_id.
	ListPositions string
	// EvictPosition: args (node_id, revision int64); sets evicted_at =
	// database time where the node's row still holds that revision and is
	// not evicted. One row affected means evicted.
	EvictPosition string
	// UnevictPosition: args (node_id, revision int64); sets evicted_at =
	// NULL where the node's row still holds that revision and is evicted,
	// and changes nothing else (revision, epoch and updated_at stay). One
	// row affected means the marker was cleared; a row the node saved
	// since (which cleared the marker, whatever its revision) is left
	// alone. One statement, so no Save of the node's can land between
	// its check and its write.
	UnevictPosition string
	// DeletePosition: args (node_id); deletes the node's row if present.
	DeletePosition string
	// CopyPosition: args (to node_id, from node_id); inserts a row for "to"
	// with the revision, epoch and evicted_at of "from" (updated_at =
	// database time). Inserts nothing when "from" has no row; fails with
	// ErrUniqueViolation when "to" has one.
	CopyPosition string

	// MembersBehind: args (node_id, rev int64); one row (COUNT(*)): how
	// many other nodes are live and have not stored a position at rev.
	// It counts the rows of the locks table (Tables.Locks) named
	// MemberPrefix + id, for every id but node_id, that are live by
	// database time (expires_at > now: LockQueries.List's held), whose id
	// has no row in local_revisions, or an evicted one (evicted_at not
	// NULL: the node has not resynced yet, so its revision means
	// nothing), or one saved in another epoch than the meta row's (a
	// restored or recreated journal: the node has not resynced either), or
	// one with revision < rev. Positions without a live
	// lease (departed and dead nodes) are never read: the database
	// filters the membership rows of the locks table and looks up one
	// position by its key per live lease.
	MembersBehind string
}

// MemberPrefix starts the name of a node's membership lease in the locks
// table ("member.<node id>"); it is lock.MemberPrefix, spelled here for
// the dialects' MembersBehind.
const MemberPrefix = "member."

// LockQueries holds the statements of the locks table (Tables.Locks). Every
// time is database time; TTLs are in milliseconds. Arguments are listed in
// the order they appear in the statement (Oracle binds by position).
type LockQueries struct {
	// Seed: args (name); inserts an unowned, expired row (token 0) for
	// name if there is none. May fail with ErrUniqueViolation when a
	// concurrent Seed won; callers ignore that.
	Seed string
	// Acquire: args (owner node, owner instance, ttl ms, name); takes the
	// row if it is expired: owner, instance, token = token + 1, heartbeat =
	// 0, acquired_at = renewed_at = now, expires_at = now + ttl. One row affected means
	// acquired.
	Acquire string
	// Token: args (name); one row (token).
	Token string
	// Renew: args (ttl ms, name, node, instance, token); expires_at = now +
	// ttl, renewed_at = now, heartbeat = heartbeat + 1, where the row is still that holder's
	// and not expired. One row affected means renewed.
	Renew string
	// Release: args (name, node, instance, token); expires_at = now where
	// the row is still that holder's and not expired.
	Release string
	// List: no args; rows (name, node, instance, token, acquired_at,
	// renewed_at, expires_at, held 1/0) ordered by name.
	List string
	// Fence: args (name, node, instance, token); one row (token) when the
	// holder's lease is current, locking the row against updates until the
	// transaction that ran it ends. No row: not current.
	Fence string
}

// Dialect is one database's SQL knowledge. Implementations are stateless and
// safe for concurrent use; they are provided by the subpackages of dialect.
type Dialect interface {
	// Name is the dialect's short name: "postgres", "mysql", "sqlserver",
	// "oracle".
	Name() string

	// Queries returns the simple statements for the tables t.
	Queries(t Tables) Queries

	// LockQueries returns the statements of the locks table of t.
	LockQueries(t Tables) LockQueries

	// BlobQueries returns the statements of the data store's tables of t.
	BlobQueries(t Tables) BlobQueries

	// Migrations returns the dialect's schema migrations for the tables
	// t, versions 1 to SchemaVersion in order. Migrate runs them.
	Migrations(t Tables) []Migration

	// LockSchema takes the dialect's schema lock for t (an advisory or
	// named lock) on conn, waiting for it within ctx, and returns the
	// function that releases it. Dialects without such a lock return a
	// no-op and make every migration safe to run concurrently.
	LockSchema(ctx context.Context, conn *sql.Conn, t Tables) (unlock func(), err error)

	// PrepareConn sets up a connection that will be used for appends:
	// session settings such as the lock timeout. lockTimeout is > 0.
	PrepareConn(ctx context.Context, conn *sql.Conn, lockTimeout time.Duration) error

	// ResetConn undoes PrepareConn's session settings before the
	// connection goes back to the pool, where other code may use it.
	ResetConn(ctx context.Context, conn *sql.Conn) error

	// DropSchema returns the statements that drop every table and stored
	// routine of t (all of Tables.All and the dialect's procedures), each
	// a no-op when its object is gone, in an order that is safe to run
	// one by one. For operators (tandem schema drop) and tests.
	DropSchema(t Tables) []string

	// Append allocates len(r.Entries) consecutive revisions from the
	// global revision counter and inserts the entries with them, in order,
	// as one transaction committed before it returns; it returns the first
	// revision. The counter's row lock is held only for this call (and, where
	// the dialect allows, for a single round trip). Every record carries
	// r.Instance and r.BatchID. conn was prepared with PrepareConn.
	//
	// An error proves that nothing was written only when the statement
	// provably ended before its commit (it was never sent, the counter's
	// lock wait timed out, a deadlock or constraint error). Every other
	// error after sending (interrupted, statement timeout, connection lost,
	// an error raised after the write began) is an *OutcomeError. The
	// caller discards conn after any error, so no dialect relies on a
	// server-side handler to roll back what a killed statement left open.
	Append(ctx context.Context, conn *sql.Conn, r AppendRequest) (first int64, err error)

	// Translate classifies a driver error (see the Err* sentinels); it
	// returns err unchanged when it belongs to no class and nil for nil.
	Translate(err error) error

	// Outbox: publishing inside an application's transaction.
	Outbox
}

// Notifier is implemented by dialects whose database can push a wake-up to
// other sessions (PostgreSQL's LISTEN/NOTIFY). Dialects without it poll.
type Notifier interface {
	// Notify sends a payload-free notification on channel, through db (a
	// pool, or a connection such as the listening one). It must be called
	// after the change it announces has committed.
	Notify(ctx context.Context, db Execer, channel string) error
	// Listen holds one connection of db, listens on channel and calls
	// wake (from its own goroutine) for every notification received. It
	// returns when ctx ends (with ctx's error) or the connection fails.
	// The caller reconnects with backoff. ready is called once listening,
	// with a ConnDoer that runs statements on the listening connection
	// until Listen returns. A dialect that can see how many more
	// connections its server accepts returns an error matching
	// ErrListenerYielded instead of holding the last few of them.
	Listen(ctx context.Context, db *sql.DB, channel string, ready func(ConnDoer), wake func()) error
}

// Execer is a *sql.DB, a *sql.Conn or a *sql.Tx.
type Execer interface {
	ExecContext(ctx context.Context, query string, args ...any) (sql.Result, error)
}

// ConnDoer runs fn on a listening connection (Notifier.Listen), between
// two waits for notifications; notifications that arrive meanwhile are
// kept for the next wait. Calls are served one at a time. It returns
// ErrNotListening, without calling fn, once the connection is gone (the
// caller then uses its pool); fn's error otherwise. fn must not keep
// conn, nor leave a transaction open on it.
type ConnDoer func(ctx context.Context, fn func(conn *sql.Conn) error) error

// ErrNotListening is returned by a ConnDoer whose listening connection is
// gone.
var ErrNotListening = errors.New("the listening connection is gone")

// PendingRequest is the entries one application transaction publishes
// (Outbox.InsertPending).
type PendingRequest struct {
	Tables   Tables
	Handle   int64 // identifies the transaction's entries; positive
	NodeID   string
	Instance string
	Entries  []Entry
}

// Outbox is the part of Dialect that holds records published inside an
// application's transaction (the pending table) and moves them into the
// journal under the counter's lock. Every dialect has one (no gap to
// declare), so it is embedded in Dialect.
type Outbox interface {
	// InsertPending writes r's entries to the pending table through the
	// caller's transaction, with seq 1, 2, … in order. Nothing global is
	// locked: the rows become visible, and movable, when tx commits.
	InsertPending(ctx context.Context, tx *sql.Tx, r PendingRequest) error
	// Relay moves the committed pending entries of at most maxHandles
	// handles (all entries of each) into the journal, in one transaction
	// holding the counter's row lock for one round trip: consecutive
	// revisions in (handle, seq) order, each record with the node id and
	// instance of its entry and batch_id = its handle, and the moved rows
	// deleted. Rows of transactions still open are left alone, and never
	// waited for. lockTimeout is as AppendRequest's. It returns how many
	// records it moved. Its errors are classified as Append's (a relay whose outcome is open moved
	// everything or nothing; the rows are then in one table or the other).
	Relay(ctx context.Context, conn *sql.Conn, t Tables, maxHandles int, lockTimeout time.Duration) (moved int64, err error)
}

// SessionEnder is implemented by dialects that can make sure a database
// session has ended: the journal uses it after an open outcome, before it
// looks the batch up, so that a statement still running (or still waiting
// for the counter's lock) in the abandoned session cannot commit after the
// lookup. Dialects without it make the journal wait out the lock timeout
// instead.
type SessionEnder interface {
	// SessionID returns an id of conn's server session that EndSession
	// accepts, unique for the server's lifetime.
	SessionID(ctx context.Context, conn *sql.Conn) (string, error)
	// EndSession terminates the session id if it still exists (the
	// database user may always end its own sessions) and returns once the
	// server no longer lists it, its transaction rolled back. A session
	// already gone is success.
	EndSession(ctx context.Context, db *sql.DB, id string) error
}

// NewEpoch returns a new random journal epoch: 32 lowercase hex digits.
func NewEpoch() string {
	var b [16]byte
	_, _ = rand.Read(b[:]) // crypto/rand.Read never fails (Go 1.24+)
	return hex.EncodeToString(b[:])
}

// PollQuery composes Queries.Poll from a dialect's read of the records
// (read: its Read statement with the columns named as in the journal
// table) and what follows FROM in its look at the pending table (the
// table, with any hint it needs); with pending empty, it composes
// Queries.PollRecords.
func PollQuery(t Tables, read, pending string) string {
	look := `0`
	if pending != "" {
		look = `CASE WHEN EXISTS (SELECT 1 FROM ` + pending + `) THEN 1 ELSE 0 END`
	}
	return `SELECT m.epoch, m.tail, g.revision, ` + look + `, ` +
		`r.revision, r.node_id, r.instance, r.producer, r.payload, r.created_at FROM ` + t.Meta + ` m CROSS JOIN ` + t.GlobalRevision +
		` g LEFT JOIN (` + read + `) r ON 1 = 1 WHERE m.id = 1 AND g.id = 1 ORDER BY r.revision`
}

// Statement is one statement of Queries or LockQueries with the number of
// arguments its field comment gives it.
type Statement struct {
	SQL  string
	Args int
}

// Statements returns q's statements by field name, so that one check can
// cover them all (every dialect's tests do).
func (q Queries) Statements() map[string]Statement {
	return map[string]Statement{
		"Read": {q.Read, 2}, "Poll": {q.Poll, 2}, "PollRecords": {q.PollRecords, 2}, "Head": {q.Head, 0}, "Meta": {q.Meta, 0}, "SetTail": {q.SetTail, 1},
		"DeleteRange": {q.DeleteRange, 2}, "MinRevision": {q.MinRevision, 1},
		"LockHead": {q.LockHead, 0}, "BeginLookup": {q.BeginLookup, 0}, "FindBatch": {q.FindBatch, 2}, "Settle": {q.Settle, 1},
		"PendingAny": {q.PendingAny, 0}, "PendingCount": {q.PendingCount, 1}, "PendingOldest": {q.PendingOldest, 0},
		"LoadPosition": {q.LoadPosition, 1}, "SavePosition": {q.SavePosition, 3},
		"ListPositions": {q.ListPositions, 0}, "DeletePosition": {q.DeletePosition, 1}, "EvictPosition": {q.EvictPosition, 2},
		"UnevictPosition": {q.UnevictPosition, 2}, "CopyPosition": {q.CopyPosition, 2},
		"MembersBehind": {q.MembersBehind, 2},
	}
}

// Statements returns q's statements by field name (see Queries.Statements).
func (q LockQueries) Statements() map[string]Statement {
	return map[string]Statement{
		"Seed": {q.Seed, 1}, "Acquire": {q.Acquire, 4}, "Token": {q.Token, 1}, "Renew": {q.Renew, 5},
		"Release": {q.Release, 4}, "List": {q.List, 0}, "Fence": {q.Fence, 4},
	}
}
