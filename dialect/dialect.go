// Package dialect is the seam between tandem's SQL algorithms and the SQL
// databases it runs on.
//
// The journal, revision (and later lock, membership and datastore) packages
// hold each algorithm once. What differs between databases — placeholder
// style, column types, upsert, limit syntax, lock timeouts, database time,
// and the driver's error codes — lives in one subpackage per database:
//
//	dialect/postgres   PostgreSQL through github.com/jackc/pgx/v5 (stdlib)
//	dialect/mysql      MySQL and MariaDB through github.com/go-sql-driver/mysql
//	dialect/sqlserver  SQL Server through github.com/microsoft/go-mssqldb
//	dialect/oracle     Oracle through github.com/sijms/go-ora/v2
//
// Each subpackage is the only package of the module that imports its driver,
// so a PostgreSQL user never links the Oracle driver. The caller picks a
// dialect explicitly and passes its own *sql.DB; nothing registers itself in
// init.
//
// Driver errors are translated at this boundary: every error a Dialect
// returns that came from the database matches (with errors.Is) one of the
// class sentinels below when it belongs to that class, and nothing above this
// package inspects driver error types or strings.
package dialect

import (
	"context"
	"crypto/rand"
	"database/sql"
	"encoding/hex"
	"errors"
	"time"
)

// SchemaVersion is the version of the schema this release creates and
// understands. It is stored in the meta table.
const SchemaVersion = 1

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
	// ErrOutcomeUnknown: the connection failed while a commit was in flight,
	// so the change may or may not have been committed.
	ErrOutcomeUnknown = errors.New("commit outcome unknown")
	// ErrHeadMismatch: a conditional append found another head than expected.
	ErrHeadMismatch = errors.New("journal head mismatch")
	// ErrSchemaTooNew: the database holds a schema version newer than this
	// release understands.
	ErrSchemaTooNew = errors.New("schema version newer than supported")
)

// Entry is one record to append: who interprets it and its payload.
type Entry struct {
	Producer string
	Payload  []byte
}

// AppendRequest is one group-committed batch of entries, all written by one
// node.
type AppendRequest struct {
	Tables  Tables
	NodeID  string
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
	// producer, payload, created_at) with revision > after, ascending, at
	// most limit rows.
	Read string
	// Head: no args; one row (revision) of the global revision counter.
	Head string
	// Meta: no args; one row (epoch, tail, schema_version).
	Meta string
	// SetTail: args (tail int64); raises meta.tail to tail if it is lower.
	SetTail string
	// DeleteRange: args (from, to int64); deletes journal rows with
	// from <= revision < to.
	DeleteRange string
	// MinRevision: no args; one row (MIN(revision)) of the journal, NULL when empty.
	MinRevision string

	// LoadPosition: args (node_id); one row (revision, epoch, updated_at) or none.
	LoadPosition string
	// SavePosition: args (node_id, revision int64, epoch); inserts or
	// replaces the node's row, updated_at = database time.
	SavePosition string
	// ListPositions: no args; rows (node_id, revision, epoch, updated_at)
	// ordered by node_id.
	ListPositions string
	// DeletePosition: args (node_id); deletes the node's row if present.
	DeletePosition string
	// CopyPosition: args (to node_id, from node_id); inserts a row for "to"
	// with the revision and epoch of "from" (database time). Inserts nothing
	// when "from" has no row; fails with ErrUniqueViolation when "to" has one.
	CopyPosition string
}

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

	// CreateSchema creates the journal, global revision, meta, local
	// revisions and locks tables of t if they do not exist, and seeds the counter
	// row (0) and the meta row (epoch, tail 1, SchemaVersion). It is
	// idempotent and safe when many nodes run it at once; the first node's
	// epoch wins. It fails with ErrSchemaTooNew when the meta row holds a
	// newer schema version.
	CreateSchema(ctx context.Context, db *sql.DB, t Tables, epoch string) error

	// PrepareConn sets up a connection that will be used for appends:
	// session settings such as the lock timeout. lockTimeout is > 0.
	PrepareConn(ctx context.Context, conn *sql.Conn, lockTimeout time.Duration) error

	// Append allocates len(r.Entries) consecutive revisions from the
	// global revision counter and inserts the entries with them, in order,
	// as one transaction committed before it returns; it returns the first
	// revision. The counter's row lock is held only for this call (and, where
	// the dialect allows, for a single round trip). On error nothing was
	// written, unless the error matches ErrOutcomeUnknown. conn was prepared
	// with PrepareConn.
	Append(ctx context.Context, conn *sql.Conn, r AppendRequest) (first int64, err error)

	// Translate classifies a driver error (see the Err* sentinels); it
	// returns err unchanged when it belongs to no class and nil for nil.
	Translate(err error) error
}

// Notifier is implemented by dialects whose database can push a wake-up to
// other sessions (PostgreSQL's LISTEN/NOTIFY). Dialects without it poll.
type Notifier interface {
	// Notify sends a payload-free notification on channel. It must be
	// called after the change it announces has committed.
	Notify(ctx context.Context, db *sql.DB, channel string) error
	// Listen holds one connection of db, listens on channel and calls
	// wake (from its own goroutine) for every notification received. It
	// returns when ctx ends (with ctx's error) or the connection fails.
	// The caller reconnects with backoff. ready is called once listening.
	Listen(ctx context.Context, db *sql.DB, channel string, ready, wake func()) error
}

// NewEpoch returns a new random journal epoch: 32 lowercase hex digits.
func NewEpoch() string {
	var b [16]byte
	_, _ = rand.Read(b[:]) // crypto/rand.Read never fails (Go 1.24+)
	return hex.EncodeToString(b[:])
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
		"Read": {q.Read, 2}, "Head": {q.Head, 0}, "Meta": {q.Meta, 0}, "SetTail": {q.SetTail, 1},
		"DeleteRange": {q.DeleteRange, 2}, "MinRevision": {q.MinRevision, 0},
		"LoadPosition": {q.LoadPosition, 1}, "SavePosition": {q.SavePosition, 3},
		"ListPositions": {q.ListPositions, 0}, "DeletePosition": {q.DeletePosition, 1},
		"CopyPosition": {q.CopyPosition, 2},
	}
}

// Statements returns q's statements by field name (see Queries.Statements).
func (q LockQueries) Statements() map[string]Statement {
	return map[string]Statement{
		"Seed": {q.Seed, 1}, "Acquire": {q.Acquire, 4}, "Token": {q.Token, 1}, "Renew": {q.Renew, 5},
		"Release": {q.Release, 4}, "List": {q.List, 0}, "Fence": {q.Fence, 4},
	}
}
