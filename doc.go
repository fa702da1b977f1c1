// Package tandem keeps what each replica of a clustered Go service holds
// privately — caches, search indexes, schedules — consistent with what the
// other replicas changed, through one shared database or one shared folder.
//
// It is a cluster journal in the manner of Apache Jackrabbit's, done right:
// a shared, gap-free journal of change records, each node's position in it,
// a sync loop woken by push notifications, cache-invalidation hooks, a
// janitor that prunes what every live node has read, cluster-wide leases
// with fencing tokens, and a content-addressed shared data store. Services
// import it; there is no tandem server.
//
// # How the pieces fit
//
//	package       concept
//	cluster       a running node: membership, the sync loop, handlers, caches
//	journal       the shared, totally ordered log of change records
//	revision      where each node stands in the journal
//	lock          cluster-wide leases with fencing tokens, leader election
//	janitor       prunes records every live node has consumed
//	datastore     content-addressed store for large binaries
//	dialect       which SQL database, one subpackage each (postgres, mysql,
//	              sqlserver, oracle), and the errors databases report
//	clusterhttp   read-your-writes middleware and a health check for HTTP
//	metrics       a Prometheus collector of all of the above
//	ident         shared identifiers: node ids, producers, prefixes, leases
//	cmd/tandem    the operator's command: status, nodes, journal, janitor,
//	              datastore, schema
//	examples/...  quickstart (three nodes in one process) and service (a
//	              multi-process HTTP service)
//
// All of them are implemented. Start with examples/quickstart.
//
// Every store opens the same way: ctx first, a config struct last, the
// shared folder and the table prefix as its Dir and Prefix fields (an
// empty Prefix means "tandem_"), e.g. revision.OpenFile(ctx,
// revision.FileConfig{Dir: dir}) or lock.OpenSQL(ctx, db, d,
// lock.SQLConfig{Prefix: p}). A cluster node opens all of its stores at
// once: cluster.OpenDir(ctx, cluster.Config{Dir: dir, ...}) or
// cluster.OpenSQL(ctx, db, d, cluster.Config{Prefix: p, ...}).
//
// A change flows like this:
//
//	node A: change ─► journal.Append ─(group commit)─► shared journal ─push─┐
//	                                                                        ▼
//	node B: sync loop (push, SyncDelay, or on demand)
//	        ─► journal.Read(after = B's revision) ─► handlers, in order
//	        ─► revision.Save(B, last applied)
//	janitor (one node, under a fenced lease):
//	        horizon = min revision of live nodes ─► write tail ─► delete below
//
// A minimal use of the journal on a shared folder:
//
//	j, err := journal.OpenFile(ctx, journal.FileConfig{Dir: "/shared/app", NodeID: "node-1"})
//	revs, err := j.Append(ctx, journal.Entry{Producer: "cache/users", Payload: []byte("42")})
//	recs, err := j.Read(ctx, lastSeen, 100)
//
// and on a database, with the caller's own *sql.DB:
//
//	j, err := journal.OpenSQL(ctx, db, postgres.Dialect, journal.SQLConfig{NodeID: "node-1"})
package tandem
