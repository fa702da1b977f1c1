// Command tandem is the operator's view of a tandem cluster: it reads and
// repairs the journal, the nodes' positions, the leases and the data store
// that the replicas of an application share, in a SQL database or a shared
// folder. Install it with
//
//	go install github.com/tandem-go/tandem/cmd/tandem@latest
//
// # Connecting
//
//	tandem --dsn URL [--prefix P] COMMAND ...     a database
//	tandem --dir PATH COMMAND ...                 a shared folder
//
// The URL's scheme picks the dialect:
//
//	postgres://user@host:5432/db?sslmode=disable   (or postgresql://) PostgreSQL, through pgx
//	mysql://user@host:3306/db?tls=true             MySQL or MariaDB, through go-sql-driver/mysql
//	user@tcp(host:3306)/db?parseTime=true          the same, in go-sql-driver's own DSN form
//	sqlserver://user@host:1433?database=db         SQL Server, through go-mssqldb
//	oracle://user@host:1521/service                Oracle, through go-ora
//
// Leave the password out of the URL (it would show in the process list and
// the shell's history): the command takes it from the environment variable
// TANDEM_PASSWORD, or from the one --password-env names. --dsn defaults to
// $TANDEM_DSN and --dir to $TANDEM_DIR. --prefix is the table prefix
// (default "tandem_"). The global flags may come before the command or
// after it.
//
// --timeout D bounds a command (default 1m; 1h for janitor run and
// datastore stat, verify and gc, which work in bulk; 0: no limit): a
// database or folder that stops answering ends the command with exit
// code 1 and an error that says the timeout was reached, instead of a
// hang. status --watch and journal tail -f run until interrupted; the
// timeout bounds each refresh or poll.
//
// Every command except "schema migrate" expects an existing tandem schema
// (or folder) at the current version and never creates or migrates tables
// on its own: a schema of an older release is reported, not upgraded.
// (Reading the leases of a folder writes the small clock probe
// locks/.clock, as every node's reads do.)
//
// # Commands
//
//	status [--json] [--watch[=INTERVAL]]
//	    The journal's epoch, head and tail; every node (position, lag, last
//	    heartbeat, live, evicted); the leases (holder, token, expiry); the
//	    janitor's, the scheduled jobs' and the data store collector's last
//	    (and, where the store knows it, next) run; the oldest pending
//	    outbox entry on SQL. --watch refreshes every INTERVAL (2s) until
//	    interrupted; with --json it prints one JSON document per line.
//	nodes remove [--force] [--purge] ID
//	    Evict a node: mark its stored position evicted, as the janitor does
//	    with a node gone for longer than its EvictAfter, so that it no
//	    longer holds the janitor's horizon back (Jackrabbit: delete its
//	    LOCAL_REVISIONS row). A node that returns with that id finds the
//	    marker and resyncs (its resync hook runs; by default its caches
//	    flush): it never passes for a brand-new node that starts at the
//	    head and silently misses what came while it was away. Evicting an
//	    evicted node changes nothing. A live node is refused unless --force
//	    (it saves its position again on its next sync, clearing the
//	    marker). --purge deletes the position instead, forgetting the id
//	    for good: a node that returns with that id starts at the head
//	    without a resync, so use it only for ids that never come back.
//	nodes clone FROM TO
//	    Give node TO the position of node FROM, atomically: Jackrabbit's
//	    "add a cluster node" for a replica whose private state (a search
//	    index) was copied from FROM's.
//	journal show [--from REV] [--limit N] [--full] [--json]
//	    Print records from REV (default: the tail), at most N (100).
//	journal tail [-f] [-n N] [--interval D] [--full] [--json]
//	    Print the last N records (10); with -f, keep printing new ones until
//	    interrupted. Payloads of invalidating caches (producer "cache/…")
//	    are decoded ("evict 42, 7", "evict all"); other payloads are shown
//	    as a quoted string when they are UTF-8 text, in hex otherwise, cut
//	    after 200 bytes (at a character boundary) unless --full. With
//	    --json, both print one JSON object per record and line (JSON
//	    Lines), with the payload decoded and in hex.
//	janitor run [--dry-run] [--keep-records N] [--keep-for D] [--evict-after D] [--batch-size N]
//	    Run the janitor once now, on this machine, under its lease (or, with
//	    --dry-run, only say what it would do).
//	datastore stat
//	    Count the blobs and their bytes.
//	datastore verify
//	    Read every blob, verifying its hash; list the corrupt ones.
//	datastore gc (--refs FILE | --dry-run) [--grace D] [--batch-size N] [-v] [--allow-empty-refs] [--allow-short-grace]
//	    Collect the blobs no id in FILE (one per line; "-" for stdin)
//	    refers to and that were not used for the grace period (24h). Without
//	    --refs only a dry run is allowed, which then counts every blob
//	    older than the grace period as garbage. A FILE that lists no id is
//	    refused unless --allow-empty-refs: in "app list-refs | tandem
//	    datastore gc --refs -" it is what a failing producer leaves, and
//	    it would make every blob older than the grace period garbage. A
//	    --grace below one minute is refused unless --allow-short-grace:
//	    the grace period is what protects a blob between its write and
//	    the commit of the reference to it, and an upload in progress.
//	    Dry runs take any list and any grace period. -v lists every blob
//	    deleted (or that would be); with --json, as the "garbage" array.
//	schema version
//	    The database's schema version and compatibility version, and this
//	    release's; on a folder, which of tandem's subfolders exist.
//	schema migrate
//	    Create the schema (a folder's subfolders), or migrate it to this
//	    release's version.
//	schema drop --yes [--force]
//	    Delete every tandem table of the prefix (and the MySQL procedures),
//	    or tandem's subfolders of a folder (journal, nodes, locks, blobs).
//	    Without --yes it refuses; with live nodes it refuses unless --force.
//	    A folder without a tandem journal (journal/meta) is not tandem's:
//	    nothing in it is deleted (exit 4).
//
// # Exit codes
//
// Scripts can rely on these:
//
//	0  success
//	1  the operation failed (the store could not be reached, a query
//	   failed, the schema could not be read, --timeout was reached,
//	   verify found corrupt blobs)
//	2  usage error: unknown command or flag, bad argument, no --dsn or --dir
//	3  refused: a live node without --force, drop without --yes, a clone
//	   onto a node that has a position, gc with an empty reference list
//	   or a grace period below a minute
//	4  not found: no such node, no tandem schema (its meta table does
//	   not exist) or folder
//	5  busy: another process holds the lease (janitor run, datastore gc)
//
// Errors go to standard error as one line, "tandem: COMMAND: what is
// wrong"; results go to standard output.
package main
