// Package janitor prunes the shared journal below what every node still
// needs, and forgets nodes that are gone, without the caveats of
// Jackrabbit's janitor.
//
// # What a run does
//
// A run happens on one node at a time: whichever holds the janitor's lease
// (every node may enable the janitor; the others find it busy). It
//
//  1. computes the horizon: the lowest position among live nodes (their
//     membership lease is current) and recently departed ones (lapsed less
//     than EvictAfter ago, by the store's clock), plus one. A live node
//     that has not stored a position yet pins everything;
//  2. evicts the nodes gone for longer than EvictAfter: their position is
//     replaced by an eviction marker (revision.Evicter), not deleted, and
//     the eviction is logged;
//  3. applies retention on top of the horizon: the last KeepRecords
//     records and the records of the last KeepFor stay, whichever keeps
//     more;
//  4. looks at the leases and positions again, since a node may have come
//     back since step 1, and lowers the new tail to every node that holds
//     its membership lease (at its stored position, even one just marked
//     evicted) and every position that is not marked evicted. A node that
//     holds its lease again has this run's eviction taken back (Unevict,
//     which leaves alone a position the node saved meanwhile), and only
//     the evictions that stand are reported;
//  5. writes the new tail (journal.Pruner.RaiseTail) before anything is
//     deleted, so a reader below it gets journal.ErrBehindTail and
//     resyncs instead of skipping;
//  6. deletes below the tail in bounded batches (BatchSize records, whole
//     segments on a shared folder), each its own short statement, pausing
//     BatchPause between them.
//
// Every change (an eviction or taking one back, the tail, a batch) is
// fenced: the store runs it only while it confirms the janitor's lease
// token is current, and holds off any takeover meanwhile. The fence is taken per batch, never across
// batches, because it also holds off the lease's renewal. A janitor paused
// past its lease (a stopped VM, a long GC) is rejected by the store when
// it wakes (lock.ErrFenced).
//
// # Jackrabbit's parameters and caveats
//
//	Jackrabbit                   tandem
//	janitorEnabled (false)       create a Janitor and Start it (cluster: Config.Janitor)
//	janitorFirstRunHourOfDay (3) Config.FirstRunHour (DefaultFirstRunHour), in Config.Location
//	janitorSleep (86400 s)       Config.Sleep (DefaultSleep), or Config.Interval for frequent runs
//	—                            Config.EvictAfter, KeepRecords, KeepFor, BatchSize, BatchPause
//
// Jackrabbit's janitor deletes below MIN(LOCAL_REVISIONS) and documents
// three caveats; each is removed here:
//
//   - "Enabling it loses the easy way to add a node" (copy a revision row
//     before the janitor runs): cloning stays safe. revision.Store.Copy
//     (and cluster's CopyFrom) copies the source's position atomically in
//     one statement, and the source's position was pinning the horizon,
//     so the clone's position is never below the tail; a clone's position
//     pins the horizon like a departed node's until EvictAfter after it
//     was saved.
//   - "Every node must have written its revision before the first run, or
//     it silently misses updates": a live node without a stored position
//     pins everything, and a node whose position is below the tail gets
//     journal.ErrBehindTail and resyncs; nothing is ever skipped silently.
//   - "A permanently removed node's row must be deleted by hand, or
//     nothing is ever pruned": nodes gone for longer than EvictAfter are
//     evicted. An evicted node that returns finds the marker and resyncs
//     (cluster.ResyncEvicted); it is never taken for a brand-new node that
//     silently starts at the head, which would leave its persisted private
//     state (a search index on disk) stale.
//
// A schedule that fell behind (the process was paused over several
// scheduled times) runs once and then continues at the next scheduled
// time; it does not run back to back as Jackrabbit's does.
//
// # Clocks
//
// Liveness and eviction are judged by the lease store: database time on
// SQL, the janitor's own monotonic observation of heartbeats on a shared
// folder; "now" is the latest heartbeat of a lease that is held (a run
// holds the janitor's own), a lower bound, so a node is never evicted
// early. Released leases do not count: a shared folder dates a release by
// the releasing machine's clock. A dry run (Plan) while no lease at all is
// held takes "now" from Config.Clock. KeepFor compares record times
// (database time on SQL; on a shared folder, the writers' clocks) with
// that "now".
// The schedule uses the local clock of the node the janitor runs on.
package janitor
