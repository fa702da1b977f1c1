// Package datastore is a content-addressed store for binaries, shared by
// every node of a cluster, with a garbage collector that is safe while
// every node keeps writing.
//
// A blob's id is the SHA-256 of its content in lowercase hex (ID). Put
// streams the content in, hashing as it copies, and makes the blob
// visible under its id only once all of it is durably stored; content that
// is stored already is stored once. Get streams it out and, by default,
// verifies the hash at the end, failing with ErrCorrupt rather than
// ending cleanly on wrong bytes. Neither needs memory that grows with the
// blob's size. Values smaller than MinRecordLength (100 bytes,
// Jackrabbit's minRecordLength) are better kept inline by the
// application (Inline).
//
// # Backends
//
// File keeps blobs in a shared folder, <dir>/blobs/ab/cd/ef/<id>; SQL keeps
// them in chunk rows of any dialect of package dialect (tables blobs,
// blob_chunks, blob_uploads; schema version 3). Both implement Store and
// pass one conformance suite. Every id that reaches a path or a statement
// is validated first (ParseID); a bad one fails with an error matching
// ident.ErrInvalid that says what is wrong.
//
// # Garbage collection
//
// A Collector marks and sweeps. It reads the store's time (database time,
// or the file server's), sets the cutoff to that time less the grace
// period (DefaultGracePeriod, 24 h, as Oak), asks the application for
// every id it refers to (References), and deletes, in batches, every blob
// that is not referred to and whose last use — its last Put or Touch — is
// before the cutoff. Each batch runs under the collector's lease (package
// lock) and is fenced: the SQL store deletes in the transaction that
// confirms the lease (lock.Lease.FencedTx), the file store while holding
// the lease's fence (lock.Lease.Fenced), so a collector that paused and
// lost its lease deletes nothing. A batch checks each blob's last use
// again as it deletes it, atomically with respect to Touch: a blob touched
// after the collection began is kept, and a Touch that comes after the
// delete reports ErrNotFound. Uploads in progress are no blobs yet and
// are never candidates; an upload that has written nothing for the grace
// period (its node died) is removed, and its Put, should it still be
// running, fails with ErrUploadExpired.
//
// Run one collection at a time, on any node, under the lease
// DefaultLeaseName: acquire it with lock.Client.TryAcquire (ErrUnavailable:
// another node is collecting), Collect, Release — or Collect inside
// lock.Client.Campaign's lead function. A dry run (GCConfig.DryRun)
// reports what it would delete and needs no lease.
//
// # What the application must do
//
// The collector is only as safe as the application's references. The
// protocol:
//
//  1. Reference what you store: Put returns the id; store the id in your
//     records (and commit) within the grace period of the Put.
//  2. Touch what you refer to again: when you create a new reference to
//     a blob you did not just put — copying a record, restoring a version,
//     reusing an id you read earlier — call Touch, and commit the new
//     reference within the grace period of the Touch. If Touch returns
//     ErrNotFound, the blob was collected: Put the content again first.
//     (Jackrabbit's collector lacks this step, which is how it deletes
//     binaries other nodes just started to use.)
//  3. Enumerate every reference: References.Each must yield every id
//     referred to by a record committed before Each was called — all
//     records, all versions, all workspaces, every node's. Ids in
//     uncommitted work need no listing if rule 1 or 2 holds for them.
//     If the enumeration fails, return the error: nothing is deleted.
//  4. Keep the grace period longer than the longest gap between a Put or
//     Touch and the commit of its reference (including retries and long
//     transactions); the default of 24 h leaves a wide margin.
//
// Why that is enough: a blob that is referred to when the collection ends
// was either referred to by a record committed before the enumeration
// began (so it is marked), or referred to by a record committed later,
// whose Put or Touch then came at most a grace period earlier — so at or
// after the cutoff, and the batch that checks its last use keeps it. The
// cutoff is taken before the enumeration, in the store's own time, so no
// node's clock is involved.
//
// # Time
//
// Last-use times come from one clock: the database's for SQL, the file
// server's for File. A File's Put and Touch set the modification time with
// utimensat(UTIME_NOW), which NFS turns into the server's time, and the
// collector learns "now" from the modification time of a file it
// creates. SMB has no such request: on Windows, and on a Linux SMB (cifs)
// mount, whose client sends its own time for UTIME_NOW, Put and Touch set
// the node's clock, so there keep the nodes' clocks synchronised well
// within the collector's grace period.
package datastore
