// Package cluster runs a tandem node: a member of a cluster of replicas
// that keeps what it holds privately (caches, indexes, schedules) in step
// with what the other replicas change.
//
// # Lifecycle
//
//	n, err := cluster.OpenSQL(ctx, db, postgres.Dialect, cluster.Config{NodeID: "web-1"})
//	// or, on a shared folder:
//	// n, err := cluster.OpenDir(ctx, cluster.Config{Dir: "/shared/app", NodeID: "web-1"})
//	n.Handle("search-index", indexer)      // before Start
//	err = n.Start(ctx)                      // join, load the position, first sync
//	rev, err := n.Publish(ctx, "search-index", payload)
//	...
//	err = n.Stop(ctx)                       // final sync, save, leave
//
// OpenSQL opens the node's journal, positions and leases in db, in the
// tables named by Config.Prefix (default "tandem_"); OpenDir opens them in
// the folder Config.Dir. New takes stores the caller has already opened
// (Config.Journal, Revisions and Leases) and keeps them the caller's.
//
// Start takes the node id's membership lease, loads the node's stored
// position — or starts at the journal's head (a new node has nothing to
// catch up on) or at its beginning (Config.StartAt) — and syncs once before
// it returns. A node whose private state was cloned from another node's
// starts from that node's position with Config.CopyFrom: Jackrabbit's "add
// a cluster node by cloning" in one field. A Start that failed (its ctx
// ended, the store did not answer, a handler failed) leaves the node as
// it was: call Start again, or Stop to release what OpenDir or OpenSQL
// opened. A Stop during a Start ends that Start and waits for it. A
// stopped node does not start again; open a new one.
//
// # Restart and identity
//
// A node id names a replica (a StatefulSet pod, a host), not a process.
// Each process that runs it has its own random instance id
// (Node.Instance, Member.Instance), held in the membership lease
// "member.<id>" (see package lock; application leases cannot use that
// prefix) and written into every record it publishes
// (journal.Record.Instance). A record is a node's own, and so not
// delivered to it, only if it carries the node's instance: a restarted
// process, or one that replaced a process cut off from the store, applies
// what the earlier incarnation of its id published after the position it
// finds — which that incarnation's caches held, but this process's do not.
// Records written by a release before instances were stored carry none and
// are never own. OpenDir and OpenSQL choose the instance; with New, set
// Config.Instance to the one the journal was opened with.
//
// Restarting is a supported path. When Start finds the id's lease held,
// it watches the holder's heartbeat. If the heartbeat advances, another
// live process uses the id: Start fails at once (within about a renewal,
// MemberTTL/3) with ErrDuplicateNode, saying so. If it stands still — the
// holder is this replica's own crashed process, killed without Stop — Start
// logs once whom it waits for and waits until the lease expires, at most a
// MemberTTL after the dead process's last heartbeat (on a shared folder, a
// MemberTTL after this process first saw it), bounded by Config.JoinWait
// (2 × MemberTTL by default) and ctx. A supervisor that restarts a crashed
// replica therefore gets it back within about MemberTTL, through OpenDir,
// OpenSQL or New alike. Stop releases the lease, so a clean restart is
// immediate.
//
// A node publishes only while it is a member. Before Start and after Stop,
// Publish (and Cache.Invalidate) return ErrNotRunning. A node cut off from
// the lease store stops believing it holds its id at its trust deadline
// (the lease's context ends by a timer, whatever a renewal in flight is
// doing): from that moment Publish returns ErrMembershipLost (matching
// ErrNotRunning) and its caches flush and stop serving, since it can no
// longer hear invalidations. When the store answers again it rejoins —
// unless another process took the id meanwhile, which is legitimate once
// the lease expired: then it stops for good and Publish, Sync and WaitFor
// fail with ErrDuplicateNode, rather than two processes sharing one id and
// position.
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
// incrementing a counter twice is not). Records a node wrote itself are not
// delivered to it unless Config.DeliverOwn is set.
//
// Each poll and each position save has SyncTimeout (30 s by default) to
// answer. A connection can hang instead of failing — a partition that
// drops packets, a NAT or load balancer that lost the flow while new
// connections work — and the node would otherwise stay a member, and
// stale, until TCP gave up on it. A statement past SyncTimeout is
// abandoned with its connection (on PostgreSQL, the listener reconnects),
// the failure shows in Stats (SyncErrors, LastSyncErr), and the sync runs
// again on another connection: at once for Start and WaitFor, which go on
// while their context allows, otherwise at the next tick or wake-up.
//
// # Records a handler cannot apply
//
// A handler that fails is retried with backoff and logged, and the node
// waits at that record: it never skips one silently. A panic in a handler
// is recovered (a *PanicError, logged with its stack) and treated as a
// failure, so a poison record does not crash the process, nor crash it
// again on every restart. Each call is bounded by Config.HandlerTimeout
// (its context ends then, and the call counts as a failure even if the
// handler ignores its context and never returns).
//
// Stats.Stuck names the record the node waits at — producer, revision,
// since when, attempts, last error, and whether a call is still running —
// with Head and Lag kept current meanwhile. A Start whose first sync
// cannot get past a record returns when its ctx ends, with a
// *HandlerError naming the producer and revision; WaitFor's error names it
// too. Stop returns within its ctx and StopDelay even when a handler
// ignores its context: it leaves that call behind (it stores nothing when
// it returns) and says which handler was stuck.
//
// The default is to retry forever. Config.DeadLetter lets the application
// give up on a record instead (after so many attempts, say, having saved
// it somewhere): the node logs it at error level, counts it
// (Stats.GaveUp) and moves on.
//
// # Resync
//
// If a node's position was pruned from the journal (it was stopped longer
// than the janitor keeps records), belongs to another journal epoch (a
// restored database, a recreated folder), lies above the journal's head
// in the same epoch (a restore that kept the epoch, a failover to a
// lagging replica), or holds another record than the one the node applied
// there (ResyncRewritten: the database lost commits the node had already
// read, and new records took their revisions), what the node derived from
// the journal no longer matches it. The node then runs its resync hooks
// (OnResync; an invalidating cache flushes itself) and continues from the
// head. It never jumps ahead, nor waits at a position the journal no
// longer has, silently. Every sync checks all four in its one poll
// (journal.Poll; one statement on SQL), which brings the epoch, the tail
// and the head with the records, and starts one record early to read the
// record at the position again. WaitFor checks all four too, with one
// such poll, before it confirms a revision already reached (clusterhttp's
// middleware does not; see "Read-your-writes without sticky sessions").
//
// Lost commits are not hypothetical: MariaDB (InnoDB) shows a commit to
// other sessions before its redo log is written, and a server killed in
// that window comes back without it (seen here in 2 of 5 kill -9 trials
// with 16 writers); PostgreSQL would too with synchronous_commit off,
// which is why the journal's appends turn it on for their commits. A
// running node notices on its next poll. A stored position needs no such
// check when positions live in the journal's database (as OpenSQL sets
// up): it was saved after the records it covers, and the server's log is
// written in order, so a save that survived the crash brought those
// records with it.
//
// # What a node asks of the database
//
// An idle node sends one poll per SyncDelay (jittered by ±10%) and one
// membership renewal per MemberTTL/3: at the defaults (5 s, 15 s) 0.4
// statements a second — Jackrabbit's one journal poll per syncDelay, plus
// the renewals that make membership a lease. (Drivers add round trips of
// their own: pgx pings a pooled connection unused for over a second, and
// a fresh session prepares each statement once; BENCHMARKS.md counts
// both.) A node woken by another's commit (push) sends one poll,
// which ends the sync when it comes back short of BatchSize, and stores
// its position 25 to 50 ms later (at random, so that the nodes one commit
// woke do not all write at once) and at most every 50 ms: a burst of
// commits costs one save, not one each. A save that fails is retried
// with backoff, from 50 ms up to once a second, not as fast as it fails:
// a database outage costs one save a second per node. On PostgreSQL with
// push on, the poll and the save run on the listening connection
// (journal.SQL.WithSession): a woken node takes no other connection. Only
// the first poll of a tick also looks at the outbox (SQL.AppendTx), and
// relays what waits there; the others skip that look
// (journal.PollRecords), which walks through every deleted row the
// database cannot remove yet: after heavy AppendTx use while a long
// transaction holds back vacuum or purge, 100,000 of them cost 16–19 ms on
// PostgreSQL and 7–9 ms on MariaDB here, which every woken poll of every
// node would pay.
//
// # Read-your-writes without sticky sessions
//
// Publish returns the revision of the record. WaitFor(rev) on any node
// returns once that node has applied it, or, when the node's position no
// longer holds (the journal went back, lost commits or was restored; see
// Resync), once a resync that began after the call ended: that resync
// dropped what the node derived, so what the writer of rev changed is
// visible all the same, although the node's position (Stats.Revision) may
// now be below rev — the journal lost rev, or rev belongs to another
// epoch — and a later WaitFor(rev) waits until the journal as it is now
// reaches rev. Barrier(rev) returns once every live node has applied rev.
// Behind a load balancer without session affinity:
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
// "sticky sessions required". Package clusterhttp does this as middleware,
// with tokens that carry the journal's epoch (so a token from another
// journal is not waited on), a bounded wait and a readiness handler. Its
// fast path does not call WaitFor: a token of the node's epoch whose
// revision the node has applied (by Stats: Epoch and Revision) is let
// through with no query, on the word of the node's last sync, so it skips
// WaitFor's check that the position still holds. A journal that went back
// within its epoch, or lost commits, is noticed by the node's next sync —
// on a wake-up, on a wait for a revision the node has not applied, or on
// its next tick, about SyncDelay later at most — and until then the fast
// path confirms revisions the journal may no longer hold. Tokens of
// revisions the node has not applied go through WaitFor.
//
// # Publishing inside the application's transaction
//
// A service that updates a row and then publishes the invalidation leaves
// a window: if it dies between its commit and Publish, the other replicas
// keep the stale value, and no token was ever issued. PublishTx closes it
// (the outbox pattern, on SQL journals): the entries are written through
// the application's own *sql.Tx into the pending table, so they exist if
// and only if the transaction commits, and nothing global is locked while
// the application works. After the commit, the handle's Wait moves them
// into the journal — one group commit under the counter's lock moves the
// committed entries of every node — and returns their revisions, the
// read-your-writes token:
//
//	tx, _ := db.BeginTx(ctx, nil)
//	tx.ExecContext(ctx, `UPDATE users SET name = $1 WHERE id = $2`, name, id)
//	pending, _ := n.PublishTx(ctx, tx, journal.Entry{Producer: "cache/users", Payload: key})
//	if err := tx.Commit(); err != nil { ... } // rolled back: no record either
//	revs, _ := pending.Wait(ctx)              // the token: revs[0]
//
// If the writer dies after its commit, the next poll tick of any node that
// sees the entries relays them, within about SyncDelay. Records keep their
// writer's node id and instance. The file backend has no transactions: it
// publishes directly only. See journal.SQL.AppendTx for the cost (two
// commits per publish: the application's and the relay's).
//
// # Membership
//
// Members lists every node with a membership lease or a stored position:
// live or not, its position and how far it lags. Liveness is the lease,
// judged by database time or, on a shared folder, by observers watching the
// holder's heartbeat on their own clock; see package lock.
//
// # Connections
//
// This is the one statement of the connections a node on SQL uses; other
// documentation points here. Per feature:
//
//   - Push listener (PostgreSQL only, unless Config.DisablePush): one
//     connection, held for as long as the node runs. It only makes
//     wake-ups early, so it is the first to give way: it is not taken
//     when the server would be left with fewer than a few free connections
//     (postgres.ListenReserve, checked before each LISTEN), and it
//     reconnects with jittered backoff after a failure, later after giving
//     way. Meanwhile the node polls every SyncDelay. While it is up, the
//     node's polls, position saves and NOTIFYs run on it, between its
//     waits (journal.SQL.WithSession), so they take no other connection.
//   - Publishing: the journal's append connection, held while appends keep
//     coming and given back to the pool after journal.ConnIdle (1 s)
//     without one, at most journal.ConnMaxHold at a time.
//   - Sync loop (polls, reads, position saves) where no listener is up:
//     one connection per statement, one statement at a time.
//   - Membership renewals: one statement every MemberTTL/3. A renewal the
//     database refuses is retried with jittered backoff, more often as the
//     lease's deadline nears (see package lock), so a transient refusal
//     does not cost the membership.
//   - Janitor (Config.Janitor): two while it runs (a fencing transaction
//     and the deletes), on one node, once a day by default.
//
// What the pool must allow — db.SetMaxOpenConns, checked by OpenSQL with
// an error naming the figure — is SQLConns(d, cfg): MinSQLConns (3: the
// renewals, the sync loop and the append connection, so that a renewal
// does not wait behind a long read), plus 1 for the push listener, plus 2
// with a janitor: 4 on PostgreSQL, 3 elsewhere, by default. An application
// that shares the pool for its own queries (handlers included) adds its
// own. New cannot see the pool of the stores it is given; the same
// numbers apply.
//
// What a node holds on the server between statements is what a database
// administrator sizes max_connections by:
//
//	idle node:       push listener (1 on PostgreSQL with push on, else 0) + the pool's idle connections
//	publishing node: the above + 1 (the append connection)
//
// The pool's idle connections are the pool's: database/sql keeps up to
// SetMaxIdleConns of them (2 by default) open for good. A pool that serves
// only the node should keep none; ConfigurePool sets that up (MaxOpenConns
// SQLConns, MaxIdleConns 0), at the price of a new server session for each
// statement outside the append connection and the listener: on PostgreSQL
// with push on, a renewal every MemberTTL/3 and the first append after a
// quiet second; with push off, every poll too. Then N idle nodes hold N
// connections on PostgreSQL with push on and none with push off, plus the
// few their statements use at any moment (the listeners leave
// postgres.ListenReserve free for those). Measured with the default
// max_connections of 100 (an account limited to 97; BenchmarkCapacity in
// BENCHMARKS.md): 100 idle nodes with push on started and stayed members
// (93 listening, 7 listeners giving way), and 170 with push off. A pool
// that keeps idle connections holds up to that many more per node, and
// saves the sessions: new sessions cost the server a process and an
// authentication each, which shows in the latency of a commit's fan-out
// to many nodes (BENCHMARKS.md, "Scale").
//
// When the database refuses a connection because a limit is reached
// (dialect.ErrTooManyConnections), OpenSQL and Start fail with an error
// that says so. A running node treats a refusal as transient and puts its
// membership first: its renewals retry with jittered backoff, more often
// as the lease's deadline nears; its sync loop stops polling on push
// wake-ups and retries with a doubling, jittered backoff (up to SyncDelay)
// until a poll goes through, and while a renewal is overdue it leaves the
// connections to the renewal (only WaitFor and Sync still read); its
// listener reconnects later. Through PgBouncer in transaction mode, set
// DisablePush: it cannot keep a LISTEN.
package cluster
