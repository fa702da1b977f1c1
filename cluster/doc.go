// Package cluster runs a tandem node: a member of a cluster of replicas
// that keeps what it holds privately (caches, indexes, schedules) in step
// with what the other replicas change.
//
// # Lifecycle
//
//	n, err := cluster.OpenSQL(ctx, db, postgres.Dialect, "", cluster.Config{NodeID: "web-1"})
//	// or cluster.OpenDir(ctx, "/shared/app", cfg) for a shared folder
//	n.Handle("search-index", indexer)      // before Start
//	err = n.Start(ctx)                      // join, load the position, first sync
//	rev, err := n.Publish(ctx, "search-index", payload)
//	...
//	err = n.Stop(ctx)                       // final sync, save, leave
//
// Start takes the node id's membership lease (a second live node with the
// same id is refused with ErrDuplicateNode), loads the node's stored
// position — or starts at the journal's head (a new node has nothing to
// catch up on) or at its beginning (Config.StartAt) — and syncs once before
// it returns. A node whose private state was cloned from another node's
// starts from that node's position with Config.CopyFrom: Jackrabbit's "add
// a cluster node by cloning" in one field.
//
// # The sync loop
//
// A node reads the journal after its position whenever it is woken: by a
// push from the journal (PostgreSQL's LISTEN/NOTIFY, fsnotify on a shared
// folder), every SyncDelay (5 s by default, jittered) — polling is the
// source of truth; push only makes it early — or on request (Sync,
// WaitFor). Concurrent requests share one sync.
//
// Records are applied in revision order, one at a time, by the handler
// registered for their producer. The node's position is saved only after
// the handlers succeeded for every record up to it, so delivery is at
// least once: after a crash, records since the last save are applied again.
// Handlers must therefore be idempotent (evicting a key twice is fine;
// incrementing a counter twice is not). A failing handler is retried with
// backoff and logged, and the node waits at that record: it never skips
// one. Records a node wrote itself are not delivered to it unless
// Config.DeliverOwn is set.
//
// # Resync
//
// If a node's position was pruned from the journal (it was stopped longer
// than the janitor keeps records) or belongs to another journal epoch (a
// restored database, a recreated folder), the records it missed are gone.
// The node then runs its resync hooks (OnResync; an invalidating cache
// flushes itself) and continues from the head. It never jumps ahead
// silently.
//
// # Read-your-writes without sticky sessions
//
// Publish returns the revision of the record. WaitFor(rev) on any node
// returns once that node has applied it; Barrier(rev) once every live node
// has. Behind a load balancer without session affinity:
//
//	// on the write path
//	rev, _ := n.Publish(ctx, "cache/users", key)
//	w.Header().Set("Tandem-Revision", strconv.FormatInt(rev, 10))
//
//	// on every request, whichever replica serves it
//	if h := r.Header.Get("Tandem-Revision"); h != "" {
//		rev, _ := strconv.ParseInt(h, 10, 64)
//		ctx, cancel := context.WithTimeout(r.Context(), time.Second)
//		defer cancel()
//		_ = n.WaitFor(ctx, rev) // usually returns at once
//	}
//
// The client echoes the header (a cookie works too), and sees its own
// writes on every replica: the answer to a clustered product's
// "sticky sessions required".
//
// # Membership
//
// Members lists every node with a membership lease or a stored position:
// live or not, its position and how far it lags. Liveness is the lease,
// judged by database time or, on a shared folder, by observers watching the
// holder's heartbeat on their own clock; see package lock.
//
// A node cut off from the store for longer than its MemberTTL loses its
// lease, and another process may then start with the same id. The node
// tries to rejoin when it can reach the store again; if it finds its id
// taken, it stops syncing and its Sync and WaitFor fail with
// ErrDuplicateNode, rather than two processes sharing one id and position.
package cluster
