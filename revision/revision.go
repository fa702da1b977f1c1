// Package revision records where each node stands in the journal: the
// revision up to which it has applied records, and the epoch of the journal
// that revision belongs to.
//
// The SQL store keeps one row per node in the local_revisions table (primary
// key node_id, updated_at in database time); the file store keeps one
// atomically replaced file per node in the shared folder. Both keep every
// node's position where every node can see it, so a janitor can compute the
// horizon and an operator can list who is behind.
//
// Adding a node by cloning an existing one (Jackrabbit's "copy the revision
// row") is one call: Copy.
package revision

import (
	"context"
	"errors"
	"time"
)

// Position is where one node stands.
type Position struct {
	NodeID string
	// Revision is the last journal revision the node has applied.
	Revision int64
	// Epoch is the epoch of the journal Revision belongs to.
	Epoch string
	// Updated is when the position was last saved, by the database clock
	// (file store: the saving node's clock). Informational only.
	Updated time.Time
	// Evicted is set when the janitor evicted the node (it was gone for
	// longer than its EvictAfter): the records after Revision may have
	// been pruned, so a node that finds its position evicted must resync
	// instead of continuing from it. Save clears it.
	Evicted bool
}

// Errors returned by stores.
var (
	// ErrNotFound: the node has no stored position.
	ErrNotFound = errors.New("revision: no stored position")
	// ErrExists: Copy's target node already has a position.
	ErrExists = errors.New("revision: position already exists")
	// ErrInvalidArgument: a negative revision or a malformed epoch. Node id
	// errors match ident.ErrInvalid.
	ErrInvalidArgument = errors.New("revision: invalid argument")
)

// Store keeps every node's position. All methods are safe for concurrent
// use by many goroutines and many nodes; each node saves only its own
// position.
type Store interface {
	// Load returns the node's position, or an error matching ErrNotFound.
	Load(ctx context.Context, nodeID string) (Position, error)
	// Save stores the node's position, replacing the previous one
	// (positions may go down: a resync onto a new epoch). It is durable
	// when it returns.
	Save(ctx context.Context, nodeID string, rev int64, epoch string) error
	// List returns every stored position, ordered by node id.
	List(ctx context.Context) ([]Position, error)
	// Delete removes the node's position; deleting a missing one is not
	// an error.
	Delete(ctx context.Context, nodeID string) error
	// Copy gives node "to" the position of node "from": the way to add a
	// node whose private state was cloned from another's. It fails with
	// ErrNotFound when "from" has none and with ErrExists when "to" has one.
	Copy(ctx context.Context, from, to string) error
}

// Evicter is implemented by stores that can mark a position evicted and
// take the mark back (both of tandem's do); the janitor uses it.
type Evicter interface {
	// Evict marks node's position evicted if it still holds revision rev
	// and is not evicted already, and reports whether it did. A node that
	// saved a new position since the janitor read it is left alone.
	Evict(ctx context.Context, nodeID string, rev int64) (bool, error)
	// Unevict clears the eviction marker of node's position if it still
	// holds revision rev and is marked, and reports whether it did; the
	// revision, epoch and Updated stay as they are. A missing position,
	// an unmarked one (Save clears the marker) and one at another
	// revision are left alone: the janitor takes an eviction back with
	// it, and must not set back a position the node saved since. The SQL
	// store checks and writes in one statement; the file store leaves a
	// short window (see File.Unevict).
	Unevict(ctx context.Context, nodeID string, rev int64) (bool, error)
}

// maxEpochLen bounds an epoch (journals make 32 hex digits).
const maxEpochLen = 64

func checkEpoch(epoch string) error {
	if len(epoch) > maxEpochLen {
		return errors.New("epoch longer than 64 bytes")
	}
	for i := 0; i < len(epoch); i++ {
		if c := epoch[i]; !(c >= '0' && c <= '9' || c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c == '-') {
			return errors.New("epoch has a byte outside [0-9A-Za-z-]")
		}
	}
	return nil
}
