package cluster

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/tandem-go/tandem/internal/backoff"
	"github.com/tandem-go/tandem/lock"
)

// keepMembership watches the membership lease. If it is lost (the store
// could not be reached for a TTL), the node tries to take it back; if in
// the meantime another process started with this node id — legitimately,
// since the lease had expired — this node stops syncing rather than share
// its id and position: Sync and WaitFor then fail with ErrDuplicateNode.
func (n *Node) keepMembership(lease *lock.Lease, loop *syncLoop) {
	defer close(n.memberDone)
	name := memberLease(n.cfg.NodeID)
	for {
		select {
		case <-n.stopping:
			return
		case <-lease.Lost():
		}
		n.cfg.Logger.Warn("tandem: membership lease lost; rejoining", "node", n.cfg.NodeID,
			"cause", context.Cause(lease.Context()))
		bo := backoff.New(n.cfg.MemberTTL/20, n.cfg.MemberTTL/4)
		for {
			l, err := n.members.TryAcquire(loop.ctx, name)
			if err == nil {
				n.mu.Lock()
				n.lease = l
				n.mu.Unlock()
				lease = l
				n.cfg.Logger.Info("tandem: membership regained", "node", n.cfg.NodeID, "token", l.Token())
				break
			}
			if errors.Is(err, lock.ErrUnavailable) && n.takenOver(loop.ctx, name) {
				err := fmt.Errorf("%w: another process took over the id %q while this node was cut off; this node stopped syncing", ErrDuplicateNode, n.cfg.NodeID)
				n.cfg.Logger.Error("tandem: node replaced", "node", n.cfg.NodeID, "err", err)
				loop.fail(err)
				return
			}
			select {
			case <-n.stopping:
				return
			case <-time.After(bo.Next()):
			}
		}
	}
}

// takenOver reports whether the membership lease is held by another
// instance (rather than still by this one's expired-looking old lease).
func (n *Node) takenOver(ctx context.Context, name string) bool {
	leases, err := n.cfg.Leases.List(ctx)
	if err != nil {
		return false
	}
	for _, l := range leases {
		if l.Name == name {
			return l.Held && l.Owner != n.members.Owner()
		}
	}
	return false
}
