// Package journal is tandem's shared, totally ordered log of change records.
//
// Every node of a cluster appends a record for each change it makes to the
// shared state (a row it updated, a cache entry it invalidated), and reads
// the records the other nodes appended since it last looked. A record has a
// revision, the id of the node that wrote it, a producer naming who
// interprets it, an opaque payload and a time.
//
// # Contracts
//
// Revisions are int64, dense and strictly increasing from 1. A reader that
// has read revision N can never later find a committed record below N that
// it did not read: revisions are allocated under one cluster-wide lock (the
// global_revision row in SQL, the journal's LOCK file on a shared folder),
// held only for the append itself, and a failed append rolls its allocation
// back. Read returns only the dense run of records after the reader's
// position, so a commit that is not yet visible stalls a reader for a moment
// instead of being skipped; no time-outs are involved.
//
// Append returns after the records are durably committed (after fsync on a
// shared folder). A failed append leaves no record and no hole.
//
// # Outcomes
//
// An append's outcome is definite whenever the store is reachable: Append
// never reports a committed append as failed, nor a failed one as
// committed. Every group commit carries a batch id stored with its
// records, and records carry the writing process's instance
// (Record.Instance) as well as its node id. On SQL, a connection that saw
// any error during an append is discarded, never reused, so the server
// rolls back whatever the failed statement left open. When the error does
// not prove that the batch ended before its commit (KILL QUERY,
// pg_cancel_backend, a statement timeout, a lost connection), the journal
// makes sure the abandoned transaction has ended and looks the batch up:
// Append then returns the revisions the batch committed at, or a plain
// error with nothing written. A batch found committed is reported only
// once it is durable: on MySQL and Oracle, where a commit can be seen
// before its log is flushed, the lookup commits a change of its own (the
// counter, changed and changed back under its lock), whose log flush
// covers the batch. An error matching dialect.ErrOutcomeUnknown
// remains only when the database stays unreachable for
// SQLConfig.ResolveTimeout, when a prune deleted every record of the
// batch before the lookup could see them (the tail passed the batch
// meanwhile), or when the file journal can neither remove nor commit a
// batch it wrote. On a shared folder, the next writer rolls
// forward every complete batch past a head that reads older than the
// truth, so an acknowledged record is never truncated; see File.
//
// # Publishing inside the application's transaction
//
// SQL.AppendTx writes entries through the caller's *sql.Tx into a pending
// table (an outbox): they become records if and only if that transaction
// commits, so a service's change and its cache invalidation are atomic. No
// global lock is taken inside the caller's transaction: after the commit, a
// relay (a group commit under the counter's lock, moving the committed
// pending entries of every node at once) gives them consecutive revisions.
// Pending.Wait returns the revisions, for read-your-writes tokens: it
// looks the entries up, and triggers a relay only if they still wait
// (another node's relay may have moved them). Every cluster node also
// relays on its poll ticks, so
// the entries of a writer that died after its commit arrive within
// SyncDelay. Concurrent Waits share relays. The file backend has no
// transactions and no outbox. SQL.PendingInfo reports what waits.
//
// Relayed entries are deleted from the pending table, and a database keeps
// deleted rows until no open transaction can still see them (PostgreSQL's
// vacuum, InnoDB's purge). A relay and a look at the outbox (Poll, not
// PollRecords) walk through those rows: with a long transaction open
// while AppendTx is busy, each costs more (100,000 such rows: 16–19 ms on
// PostgreSQL, 7–9 ms on MariaDB here). Nodes look only on their ticks;
// keep transactions short where many entries are published.
//
// # Schema
//
// The SQL tables are versioned (dialect.SchemaVersion) and evolve only by
// numbered, per-dialect migrations (see package dialect), which OpenSQL applies
// under a schema lock, safely when many nodes start at once. Additive
// migrations keep the database's compatibility version, so nodes of the
// previous release keep running during a rolling upgrade; a release that
// cannot run against a newer schema refuses with dialect.ErrSchemaTooNew.
//
// # Group commit
//
// Concurrent appends on one Journal are group-committed: the appends that
// arrive while a batch is being written form the next batch, written with
// one lock acquisition and one commit. Throughput grows with concurrency
// instead of collapsing under lock contention. Every commit of the cluster
// takes the one counter lock that keeps the order gap-free, so a node
// with only one or two appends in flight commits one or two records at a
// time and appends at about 0.4–1× the rate of plain autocommit inserts;
// with several in flight per node, batches grow and it overtakes them
// (BENCHMARKS.md). AppendIf gives applications optimistic concurrency: it
// appends only if the head is still the revision the caller last saw.
//
// Each journal has an epoch, a random id made when it is created, and a
// tail, the lowest revision still kept. Prune (used by the janitor) writes
// the new tail before it deletes anything. A reader whose position lies
// below the tail gets a *BehindTailError and must resync; a position stored
// with another epoch belongs to another journal (a restored database, a
// recreated folder).
//
// # Backends
//
// SQL (OpenSQL) stores the journal in tables of a PostgreSQL, MySQL,
// MariaDB, SQL Server or Oracle database, chosen with a dialect from
// package dialect; the caller passes its own *sql.DB. File (OpenFile) stores
// it in a shared folder as segment files. Both pass one conformance suite.
//
// Push wake-ups (Watcher) come from PostgreSQL's LISTEN/NOTIFY and from
// fsnotify on the file journal's head; they only wake readers early.
// Polling stays the source of truth.
//
// # Limits
//
// One entry's payload is at most MaxPayloadSize (4 MiB), one Append carries
// at most MaxAppendEntries (1,000) entries and MaxAppendSize (8 MiB) of
// payload. Producers are 1–128 printable ASCII bytes without spaces.
package journal
