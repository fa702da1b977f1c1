package cluster

import (
	"context"
	"fmt"
	"sort"
	"strings"
	"time"

	"github.com/tandem-go/tandem/internal/backoff"
	"github.com/tandem-go/tandem/lock"
)

// Member describes a node known to the cluster: live ones hold their
// membership lease; others have left or died but still have a stored
// position.
type Member struct {
	NodeID string
	// Instance tells two processes that used one node id apart.
	Instance string
	// Live reports whether the node holds its membership lease now.
	Live bool
	// Started is when the node took its lease, LastHeartbeat when it last
	// renewed it, and LeaseExpires when the lease runs out unless renewed
	// again (store time; for a shared folder, this observer's view).
	Started, LastHeartbeat, LeaseExpires time.Time
	// Revision is the node's stored position, and Lag how far it is
	// behind the journal's head. HasPosition is false for a live node that
	// has not saved one yet.
	Revision    int64
	Lag         int64
	HasPosition bool
	// Updated is when the position was last saved.
	Updated time.Time
}

// Members lists the nodes of the cluster, live or not, ordered by id.
func (n *Node) Members(ctx context.Context) ([]Member, error) {
	leases, err := n.cfg.Leases.List(ctx)
	if err != nil {
		return nil, err
	}
	positions, err := n.cfg.Revisions.List(ctx)
	if err != nil {
		return nil, err
	}
	head, err := n.cfg.Journal.Head(ctx)
	if err != nil {
		return nil, err
	}
	byID := map[string]*Member{}
	get := func(id string) *Member {
		m := byID[id]
		if m == nil {
			m = &Member{NodeID: id}
			byID[id] = m
		}
		return m
	}
	for _, l := range leases {
		id, ok := strings.CutPrefix(l.Name, lock.MemberPrefix)
		if !ok {
			continue
		}
		m := get(id)
		m.Instance, m.Live, m.Started, m.LastHeartbeat, m.LeaseExpires = l.Owner.Instance, l.Held, l.Acquired, l.Renewed, l.Expires
	}
	for _, p := range positions {
		m := get(p.NodeID)
		m.Revision, m.HasPosition, m.Updated = p.Revision, true, p.Updated
		m.Lag = max(head-p.Revision, 0)
	}
	out := make([]Member, 0, len(byID))
	for _, m := range byID {
		out = append(out, *m)
	}
	sort.Slice(out, func(i, j int) bool { return out[i].NodeID < out[j].NodeID })
	return out, nil
}

// Barrier returns once every live node of the cluster has applied revision
// rev (by its stored position), this node included: first this node
// (WaitFor), then every other node that holds its membership lease. A live
// node that cannot apply rev (a handler failing forever) holds the barrier
// until ctx ends; the error then says how many nodes were behind and
// matches ctx's error. A live node that has stored no position yet, whose
// position the janitor evicted, or whose position belongs to another
// journal epoch than the current one (it has not resynced yet, in either
// case), counts as behind. Nodes that are not live are not waited for.
//
// A node that died without Stop (killed, cut off) still counts as live
// until its membership lease expires, by the store's clock: Barrier may
// wait up to MemberTTL after its last heartbeat before it stops holding
// the barrier. A node that stopped cleanly released its lease and is not
// waited for at all.
//
// Barrier polls, with a backoff from 5 ms up to 50 ms (SyncDelay/2 if that
// is shorter; nodes store their position 25 to 50 ms after applying a
// record). On a node that OpenSQL opened, each poll is one query that
// returns one row (on PostgreSQL with push on, over the node's listening
// connection): a count of
// the live membership leases (by database time) whose node has no position
// at rev. The database filters the membership rows of the locks table
// (one per node id that ever joined, live or not: a small table) and looks
// up one position by its key per live lease; the positions that dead node
// ids left behind are never read, and nothing but the count crosses the
// network. On other nodes (OpenDir, New) each poll lists every lease and
// every stored position.
func (n *Node) Barrier(ctx context.Context, rev int64) error {
	if err := n.WaitFor(ctx, rev); err != nil {
		return err
	}
	behind := n.behind
	if behind == nil {
		behind = n.storesBehind
	}
	bo := backoff.New(5*time.Millisecond, max(min(n.cfg.SyncDelay/2, 50*time.Millisecond), 5*time.Millisecond))
	last := int64(-1) // the count of the last poll that answered
	for {
		count, err := behind(ctx, rev)
		if err != nil {
			if ctx.Err() != nil {
				if last >= 0 {
					return fmt.Errorf("barrier at revision %d: %d live node(s) behind: %w", rev, last, ctx.Err())
				}
				return ctx.Err()
			}
			return err
		}
		if count == 0 {
			return nil
		}
		last = count
		select {
		case <-ctx.Done():
			return fmt.Errorf("barrier at revision %d: %d live node(s) behind: %w", rev, count, ctx.Err())
		case <-time.After(bo.Next()):
		}
	}
}
