package cluster

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/tandem-go/tandem/internal/backoff"
	"github.com/tandem-go/tandem/lock"
)

// join takes the node's membership lease for Start. When another process
// holds it, join watches that holder's heartbeat: one that advances is a
// live duplicate, refused at once; one that stands still is a crashed
// process of this node, whose lease join waits out (bounded by JoinWait
// and ctx), logging once whom it waits for.
func (n *Node) join(ctx context.Context) (*lock.Lease, error) {
	jctx, cancel := context.WithTimeout(ctx, n.cfg.JoinWait)
	defer cancel()
	name := lock.MemberLease(n.cfg.NodeID)
	poll := max(min(n.cfg.MemberTTL/10, time.Second), 10*time.Millisecond)
	var first *lock.Info // the holder as first seen
	var seen lock.Info   // and as last seen
	for {
		l, err := n.members.TryAcquireMembership(jctx)
		if err == nil {
			if first != nil {
				n.cfg.Logger.Info("tandem: took over the node id from a holder that stopped", "node", n.cfg.NodeID,
					"previous_instance", first.Owner.Instance, "token", l.Token())
			}
			return l, nil
		}
		if !errors.Is(err, lock.ErrUnavailable) {
			if jctx.Err() != nil && ctx.Err() == nil && first != nil {
				return nil, n.stillHeld(seen)
			}
			return nil, fmt.Errorf("join: %w", err)
		}
		info, ok, err := n.memberInfo(jctx, name)
		switch {
		case err != nil:
			if jctx.Err() != nil && ctx.Err() == nil && first != nil {
				return nil, n.stillHeld(seen)
			}
			return nil, fmt.Errorf("join: %w", err)
		case !ok || !info.Held:
			// Released or expired meanwhile: try again at once.
		case first == nil:
			first, seen = &info, info
			n.cfg.Logger.Info("tandem: waiting for the previous holder of the node id to expire (a crashed process of this node?)",
				"node", n.cfg.NodeID, "instance", info.Owner.Instance, "last_heartbeat", info.Renewed,
				"expires", info.Expires, "wait_at_most", n.cfg.JoinWait)
		case info.Owner != seen.Owner || info.Token != seen.Token:
			return nil, fmt.Errorf("%w: another process (instance %s) took the node id %q while this one waited; "+
				"give each replica its own NodeID", ErrDuplicateNode, info.Owner.Instance, n.cfg.NodeID)
		case info.Renewed.After(seen.Renewed):
			return nil, fmt.Errorf("%w: another live process (instance %s) holds the node id %q: its heartbeat advanced "+
				"(%v, then %v); give each replica its own NodeID, or stop the other process first",
				ErrDuplicateNode, info.Owner.Instance, n.cfg.NodeID, seen.Renewed, info.Renewed)
		default:
			seen = info
		}
		select {
		case <-jctx.Done():
			if ctx.Err() != nil {
				return nil, fmt.Errorf("join: waiting for the previous holder of node id %q: %w", n.cfg.NodeID, ctx.Err())
			}
			return nil, n.stillHeld(seen)
		case <-time.After(backoff.Jitter(poll, 0.2)):
		}
	}
}

// stillHeld is join's error when JoinWait passed.
func (n *Node) stillHeld(info lock.Info) error {
	return fmt.Errorf("%w: node id %q is still held by instance %s (last heartbeat %v, seen standing still) after JoinWait (%v); "+
		"a crashed holder's lease expires a MemberTTL (%v) after its last heartbeat: start again, or raise JoinWait",
		ErrDuplicateNode, n.cfg.NodeID, info.Owner.Instance, info.Renewed, n.cfg.JoinWait, n.cfg.MemberTTL)
}

// memberInfo returns the lease name as the store lists it.
func (n *Node) memberInfo(ctx context.Context, name string) (lock.Info, bool, error) {
	leases, err := n.cfg.Leases.List(ctx)
	if err != nil {
		return lock.Info{}, false, err
	}
	for _, l := range leases {
		if l.Name == name {
			return l, true, nil
		}
	}
	return lock.Info{}, false, nil
}

// keepMembership watches the membership lease. The moment it is lost (the
// store could not confirm it in time), the node stops publishing (see
// member) and its caches flush; it then tries to take the lease back. If
// in the meantime another process started with this node id —
// legitimately, since the lease had expired — this node stops syncing
// rather than share its id and position: Publish, Sync and WaitFor then
// fail with ErrDuplicateNode.
func (n *Node) keepMembership(ctx context.Context, lease *lock.Lease, loop *syncLoop) {
	defer close(n.memberDone)
	for {
		select {
		case <-ctx.Done():
			return
		case <-lease.Lost():
		}
		if ctx.Err() != nil {
			return
		}
		n.membershipLost()
		n.cfg.Logger.Warn("tandem: membership lease lost; not publishing, caches flushed; rejoining", "node", n.cfg.NodeID,
			"cause", context.Cause(lease.Context()))
		bo := backoff.New(n.cfg.MemberTTL/20, n.cfg.MemberTTL/4)
		for {
			l, err := n.members.TryAcquireMembership(ctx)
			if err == nil {
				n.mu.Lock()
				if n.state != stateRunning { // Stop came first
					n.mu.Unlock()
					l.Abandon()
					return
				}
				n.lease = l
				n.mu.Unlock()
				lease = l
				n.cfg.Logger.Info("tandem: membership regained", "node", n.cfg.NodeID, "token", l.Token())
				break
			}
			if errors.Is(err, lock.ErrUnavailable) && n.takenOver(ctx) {
				err := fmt.Errorf("%w: another process took over the id %q while this node was cut off; this node stopped syncing and publishing", ErrDuplicateNode, n.cfg.NodeID)
				n.cfg.Logger.Error("tandem: node replaced", "node", n.cfg.NodeID, "err", err)
				loop.fail(err)
				return
			}
			select {
			case <-ctx.Done():
				return
			case <-time.After(bo.Next()):
			}
		}
	}
}

// takenOver reports whether the membership lease is held by another
// instance (rather than still by this one's expired-looking old lease).
func (n *Node) takenOver(ctx context.Context) bool {
	info, ok, err := n.memberInfo(ctx, lock.MemberLease(n.cfg.NodeID))
	return err == nil && ok && info.Held && info.Owner != n.members.Owner()
}

// renewalLate reports whether the membership renewal is overdue: less
// than half a MemberTTL is left before the lease's trust deadline, where a
// renewal was due a third of the way into it. The sync loop then leaves
// the database's connections to the renewal.
func (n *Node) renewalLate() bool {
	n.mu.Lock()
	lease := n.lease
	n.mu.Unlock()
	return lease != nil && lease.Held() && time.Until(lease.Deadline()) < n.cfg.MemberTTL/2
}
