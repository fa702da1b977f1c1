package cluster

import "context"

// BarrierPoll runs one poll of n's Barrier at rev: the count of live nodes
// behind, and whether it came from the single aggregate statement (a node
// that OpenSQL opened) rather than from listing the stores.
func BarrierPoll(ctx context.Context, n *Node, rev int64) (behind int64, aggregate bool, err error) {
	if n.behind != nil {
		behind, err = n.behind(ctx, rev)
		return behind, true, err
	}
	behind, err = n.storesBehind(ctx, rev)
	return behind, false, err
}

// StoresBehind is the fallback poll, on any node, for comparing the two.
func StoresBehind(ctx context.Context, n *Node, rev int64) (int64, error) {
	return n.storesBehind(ctx, rev)
}

// Wake wakes n's sync loop as a push notification does.
func Wake(n *Node) {
	n.mu.Lock()
	l := n.loop
	n.mu.Unlock()
	if l != nil {
		l.wake()
	}
}

// OnStarted makes n's Start call f once it published the node as running,
// just before it returns. Set it before Start.
func OnStarted(n *Node, f func()) { n.started = f }

// LoopDone returns a channel that is closed when the sync loop of n's
// last successful Start exited.
func LoopDone(n *Node) <-chan struct{} {
	n.mu.Lock()
	defer n.mu.Unlock()
	return n.loop.done
}
