package cluster

import (
	"context"
	"database/sql"
	"fmt"
	"strings"

	"github.com/tandem-go/tandem/dialect"
	"github.com/tandem-go/tandem/internal/sqldialect"
	"github.com/tandem-go/tandem/journal"
	"github.com/tandem-go/tandem/lock"
)

// behindFunc answers Barrier's question for one poll: how many live nodes
// other than this one have not stored a position at rev in the journal's
// epoch. A live node without a stored position, with an evicted one (it
// has not resynced yet), or with one saved in another epoch (before a
// restore; it has not resynced yet either), counts as behind.
type behindFunc func(ctx context.Context, rev int64) (int64, error)

// sqlBehind is behindFunc for a node that OpenSQL opened: one statement
// (sqldialect.Queries.MembersBehind), one row, whose cost follows the
// live membership leases rather than every position ever stored.
// On PostgreSQL with push on it runs on the journal's listening connection
// (journal.SQL.WithSession), so that a pool which keeps no idle connections
// does not open one per poll.
func sqlBehind(db *sql.DB, j *journal.SQL, d dialect.Dialect, prefix, nodeID string) (behindFunc, error) {
	if prefix == "" {
		prefix = dialect.DefaultPrefix
	}
	t, err := sqldialect.NewTables("Prefix", prefix)
	if err != nil {
		return nil, err
	}
	query := d.Queries(t).MembersBehind
	return func(ctx context.Context, rev int64) (int64, error) {
		var n int64
		count := func(q journal.Queryer) error { return q.QueryRowContext(ctx, query, nodeID, rev).Scan(&n) }
		var err error
		if j != nil {
			err = j.WithSession(ctx, count)
		} else {
			err = count(db)
		}
		if err != nil {
			return 0, fmt.Errorf("barrier: count the nodes behind: %w", d.Translate(err))
		}
		return n, nil
	}, nil
}

// storesBehind is behindFunc on any stores (OpenDir, New): it lists every
// lease and every position, as Members does, and counts as sqlBehind's
// statement does.
func (n *Node) storesBehind(ctx context.Context, rev int64) (int64, error) {
	epoch, err := n.cfg.Journal.Epoch(ctx)
	if err != nil {
		return 0, err
	}
	leases, err := n.cfg.Leases.List(ctx)
	if err != nil {
		return 0, err
	}
	positions, err := n.cfg.Revisions.List(ctx)
	if err != nil {
		return 0, err
	}
	applied := make(map[string]bool, len(positions))
	for _, p := range positions {
		applied[p.NodeID] = !p.Evicted && p.Revision >= rev && p.Epoch == epoch
	}
	var behind int64
	for _, l := range leases {
		id, ok := strings.CutPrefix(l.Name, lock.MemberPrefix)
		// This node applied rev (WaitFor); its stored position may
		// follow a little later.
		if ok && l.Held && id != n.cfg.NodeID && !applied[id] {
			behind++
		}
	}
	return behind, nil
}
