// Package lock provides cluster-wide leases with fencing tokens, leader
// election, and jobs that run on exactly one node.
//
// # Leases
//
// A lease is a named, time-limited right held by one owner at a time: a
// node id plus a random instance id per Client, so two processes on one
// host are distinct owners. Client.TryAcquire takes a free lease,
// Client.Acquire waits for one; asking for a lease the same client holds
// is ErrUnavailable with a message that says so. A held Lease renews
// itself (every TTL/3 by default) and its Context ends as soon as it is
// lost, released, or can no longer be confirmed. Names starting with
// "member." (a cluster node's membership) or "schedule." (RunEvery's
// record of a job's runs) are tandem's own: Client's methods refuse them.
//
// # Why a holder never overstays
//
// Leases expire by the store's judgement: a SQL store compares expires_at
// with the database's clock; the file store has observers watch the
// holder's heartbeat stand still for a TTL on their own monotonic clock. No
// decision ever compares the clocks of two machines, so clocks that are
// minutes apart change nothing (the conformance suite skews them by -7 and
// +11 minutes).
//
// The holder relies on its lease only until the moment it sent its last
// successful acquire or renew, plus 95% of the TTL, measured on its own
// monotonic clock (Lease.Deadline). The store set the expiry when it
// executed that request, after it was sent, so the holder steps down before
// the store can hand the lease to anyone else. This holds while the
// machines' clocks run at (about) the same rate; the 5% margin covers rate
// differences and late timers.
//
// Stepping down is a timer's job, armed at the deadline and moved on by
// each successful renewal: the lease's Context ends at the deadline
// whatever a renewal in flight is doing. A renewal that hangs — a
// black-holed network that accepts packets and never answers, a stalled
// database, a file server that does not respond — cannot keep the
// context alive (the conformance suite proves it with a renewal deaf to
// its own context, and with a proxy that black-holes the holder's
// connections). Nor does it cost the lease while the store answers other
// requests: the keep-alive gives each attempt a time limit (half the time
// left to the deadline) and then tries again. Stores must honour the
// context of their calls for this.
//
// # Fencing
//
// Stepping down in time is not enough when a process pauses (a long GC, a
// stopped VM) between checking its lease and acting. Every acquisition of a
// name therefore gets a token larger than all before it, and work that must
// never run twice is fenced: Lease.Fenced (or SQL.FenceTx, for statements
// in the same transaction) runs only if the store itself confirms the token
// is still current, and keeps anyone from taking the lease over until the
// work is done. A paused ex-holder that wakes up is rejected with
// ErrFenced.
//
// Keep each fenced step short on a SQL store. Its fence is a transaction
// that holds the lease row's lock (SELECT … FOR UPDATE or the dialect's
// equivalent) until it ends, and the holder's own renewal is an UPDATE of
// that row: it waits for the fence like everyone else. So fenced work that
// outlasts the time left to the lease's deadline — 95% of the TTL right
// after a renewal, little more than half of it just before the next —
// costs the lease: its Context ends at the deadline, and the lease is free
// to others once the transaction ends. Safety holds all the same (nobody
// takes the lease over while the row is locked, and what the fence ran
// commits only with the check), but the holder has lost its lease. Fence
// per step, not around a whole job, and size the steps so that one takes
// well under a renewal interval (RenewEvery, TTL/3 by default): package
// janitor fences each batch of deletes separately, and the data store's
// collector each sweep batch. Raise the TTL for steps that cannot be made
// shorter. On the file store the holder's renewals ride on its own fence,
// so long fenced work keeps the lease there.
//
// # Election and scheduled jobs
//
// Client.Campaign runs a function while this node leads; returning from it
// resigns, and the lease is released at once so that a follower takes over
// promptly. Client.RunOnce runs a job on whichever node gets the lease now.
//
// Client.RunEvery is a clustered schedule (a Quartz job without
// synchronised clocks): the nodes campaign for the job's lease, and the
// leader runs the job when a run is due. Whether one is due is stored in
// the shared store, not in the leader's memory: each run acquires the lease
// "schedule.<job>" for one interval and never renews it, so that lease
// records the last run (its acquisition) and the next (its expiry), judged
// by the store's clock like any lease. A new leader — after a crash, a
// deploy, a rolling restart — runs the job only once the interval since
// the last run, by any node, is over: an hourly job runs once an hour
// however often leadership changes. Jobs get their *Lease, to fence the
// work that must never run twice. On a shared folder, a process that has
// just started waits a full interval from its first sighting of the
// schedule lease (it cannot date another node's acquisition), so a
// restart there may delay a run by up to an interval, never repeat it.
//
// # Stores
//
// OpenSQL keeps leases in the locks table of the journal's database (any
// dialect of package dialect); OpenFile keeps them as files in a shared
// folder. Both pass the same conformance suite, including the contention
// test that proves holders never overlap while renewals suffer outages.
package lock
