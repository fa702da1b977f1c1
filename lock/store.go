package lock

import (
	"context"
	"database/sql"
	"errors"
	"time"
)

// Owner identifies a lease holder: the node id plus a random id of the
// process instance, so two processes of one node (or on one host) are
// distinct holders.
type Owner struct {
	NodeID   string
	Instance string
}

// Info describes a lease as the store has it.
type Info struct {
	Name  string
	Owner Owner
	// Token is the lease's fencing token: it increases on every
	// acquisition of Name, forever.
	Token int64
	// Acquired is when the current holder acquired it (store time).
	Acquired time.Time
	// Renewed is the holder's last heartbeat: when it last acquired or
	// renewed the lease (store time; for the file store, when this observer
	// first saw the current heartbeat, by its own clock).
	Renewed time.Time
	// Expires is when the lease expires unless renewed (store time; for
	// the file store, an estimate from the observer's clock).
	Expires time.Time
	// Held is false when the lease is expired or released.
	Held bool
}

// Store keeps leases where every node can see them: the locks table of a
// SQL database, or one file per lease in a shared folder. Expiry is judged
// by the store (database time) or by observers watching the holder's
// heartbeat on their own monotonic clock, never by comparing the clocks
// of two machines. All methods are safe for concurrent use.
type Store interface {
	// TryAcquire gives name to owner for ttl if it is free, released or
	// expired, and returns the new fencing token, greater than every token
	// name had before. It returns ok=false (and no error) when another
	// holder's lease is still valid — including owner's own: a holder
	// renews, it does not re-acquire.
	TryAcquire(ctx context.Context, name string, owner Owner, ttl time.Duration) (token int64, ok bool, err error)

	// Renew extends the lease (name, owner, token) to ttl from now. It
	// returns ok=false when the lease is no longer held by them: expired,
	// released, or taken over.
	Renew(ctx context.Context, name string, owner Owner, token int64, ttl time.Duration) (ok bool, err error)

	// Release ends the lease (name, owner, token) at once so that another
	// node can acquire it without waiting for expiry. Releasing a lease
	// that is no longer held is not an error.
	Release(ctx context.Context, name string, owner Owner, token int64) error

	// List returns every lease the store knows, held or not, by name.
	List(ctx context.Context) ([]Info, error)
}

// Fencer is implemented by stores that can run work conditional on a lease
// still being current, checked by the store itself (see Fenced).
type Fencer interface {
	// Fence calls fn while the lease (name, owner, token) is held and
	// the store keeps anyone from taking it over until fn returns. It
	// returns an error matching ErrFenced without calling fn when the
	// lease is no longer current. Whether the holder's own Renew goes
	// through while fn runs depends on the store: File's does, SQL's
	// waits for fn to end.
	Fence(ctx context.Context, name string, owner Owner, token int64, fn func(ctx context.Context) error) error
}

// TxFencer is implemented by stores that can run SQL statements in the
// very transaction that confirms the lease (SQL.FenceTx), so that they
// commit only together with that check: a statement of a paused ex-holder
// fails even if it reaches the database after the lease was taken over.
type TxFencer interface {
	// FenceTx runs fn in a transaction that first locks the lease's row
	// and checks (name, owner, token) is still current; it returns an
	// error matching ErrFenced without calling fn otherwise. fn's error
	// rolls the transaction back.
	FenceTx(ctx context.Context, name string, owner Owner, token int64, fn func(ctx context.Context, tx *sql.Tx) error) error
}

// Errors.
var (
	// ErrNotHeld: the lease is no longer held (lost, released, expired).
	ErrNotHeld = errors.New("lock: lease not held")
	// ErrFenced: a fenced operation was refused because its lease's token
	// is no longer current.
	ErrFenced = errors.New("lock: fencing token no longer current")
	// ErrInvalidArgument: a bad name, TTL or configuration. Name errors
	// also match ident.ErrInvalid.
	ErrInvalidArgument = errors.New("lock: invalid argument")
)
