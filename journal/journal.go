package journal

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/tandem-go/tandem/ident"
)

// Limits on what one Append may carry. They keep every group-committed
// transaction well below MySQL's default max_allowed_packet (16 MiB on
// MariaDB, 64 MiB on MySQL 8) and bound the memory a batch holds.
const (
	// MaxPayloadSize is the largest payload of one entry: 4 MiB.
	MaxPayloadSize = 4 << 20
	// MaxAppendSize is the largest sum of payload sizes of one Append: 8 MiB.
	MaxAppendSize = 8 << 20
	// MaxAppendEntries is the largest number of entries of one Append.
	MaxAppendEntries = 1000
)

// DefaultLockTimeout bounds how long an append waits for the cluster-wide
// revision lock (the global revision row, or the journal's LOCK file) before
// it fails with an error matching ErrLockTimeout.
const DefaultLockTimeout = 10 * time.Second

// Record is one committed change record.
type Record struct {
	// Revision is the record's place in the journal: dense and strictly
	// increasing from 1.
	Revision int64
	// NodeID is the id of the node that wrote the record.
	NodeID string
	// Instance is the id of the process that wrote it (see
	// SQLConfig.Instance): two incarnations of one node id have different
	// instances. Empty for records written by releases before it was
	// stored (SQL schema version 1, file records of format 1).
	Instance string
	// Producer names who interprets the payload, e.g. "cache/users".
	Producer string
	// Payload is the producer's opaque data.
	Payload []byte
	// Time is when the record was committed, by the database clock (or the
	// file backend writer's clock), in UTC. It is informational: nothing in
	// tandem orders or expires records by it.
	Time time.Time
}

// Entry is one record to append.
type Entry struct {
	Producer string
	Payload  []byte
}

// Errors returned by journals. Database error classes (lock timeout,
// deadlock, …) are reported with the sentinels of package dialect.
var (
	// ErrConflict: a conditional append found the head moved on.
	ErrConflict = errors.New("journal: head moved (conflict)")
	// ErrClosed: the journal was closed.
	ErrClosed = errors.New("journal: closed")
	// ErrBehindTail: the requested position lies below the journal's tail;
	// the records after it were pruned. See *BehindTailError.
	ErrBehindTail = errors.New("journal: position below tail")
	// ErrTooLarge: a payload or an append exceeds the limits above.
	ErrTooLarge = errors.New("journal: too large")
	// ErrInvalidArgument: an argument is malformed (negative revision,
	// empty producer, no entries, …). Identifier errors also match
	// ident.ErrInvalid.
	ErrInvalidArgument = errors.New("journal: invalid argument")
	// ErrCorrupt: the file journal holds a record that fails its checksum
	// below the committed head.
	ErrCorrupt = errors.New("journal: corrupt")
)

// BehindTailError reports a read from a position whose successors were
// pruned. A node that gets it must resync (flush what it derived from the
// journal) and continue from the head; it must never silently jump ahead.
type BehindTailError struct {
	After int64 // the position asked for
	Tail  int64 // the lowest revision still kept
}

func (e *BehindTailError) Error() string {
	return fmt.Sprintf("journal: position %d is below the tail %d: records %d..%d were pruned",
		e.After, e.Tail, e.After+1, e.Tail-1)
}

// Is makes errors.Is(err, ErrBehindTail) hold.
func (e *BehindTailError) Is(target error) bool { return target == ErrBehindTail }

// Journal is the shared, totally ordered log of change records. All methods
// are safe for concurrent use.
type Journal interface {
	// Append writes entries as consecutive records, atomically, and
	// returns their revisions after they are durably committed. Concurrent
	// appends on one journal are group-committed. On error none of the
	// entries were written, unless the error matches
	// dialect.ErrOutcomeUnknown: the outcome could not be learnt (the
	// database stayed unreachable after the batch was sent). A context
	// that ends before the batch is sent aborts the append; once sent,
	// Append waits for its outcome.
	Append(ctx context.Context, entries ...Entry) ([]int64, error)

	// AppendIf is Append, but only if the journal head is still head;
	// otherwise it writes nothing and returns an error matching ErrConflict.
	AppendIf(ctx context.Context, head int64, entries ...Entry) ([]int64, error)

	// Read returns up to limit committed records with revision > after,
	// in order and dense: the first has revision after+1. It returns an
	// empty slice when there is none yet, and an error matching
	// ErrBehindTail when after+1 is below the tail.
	Read(ctx context.Context, after int64, limit int) ([]Record, error)

	// Head returns the revision of the last committed record (0 when
	// none was ever written). Pruning does not lower it.
	Head(ctx context.Context) (int64, error)

	// Tail returns the lowest revision still kept (1 before any pruning).
	// A position p can be read on from when p+1 >= Tail.
	Tail(ctx context.Context) (int64, error)

	// Epoch returns the journal's epoch: a random id made when the
	// journal was created. A stored position with another epoch belongs to
	// another journal (a restored database, a recreated folder).
	Epoch(ctx context.Context) (string, error)

	// Prune makes below the new tail (if it is higher than the current
	// one) and then deletes the records with lower revisions; it writes
	// the tail before deleting anything. below may not exceed Head()+1.
	// It returns how many records were deleted (the file backend deletes
	// whole segments and may keep some records below the tail on disk;
	// they are never returned by Read).
	Prune(ctx context.Context, below int64) (int64, error)

	// Close stops the journal's background work, waiting for appends in
	// flight. Later calls return ErrClosed. It is idempotent.
	Close(ctx context.Context) error
}

// Pruner is implemented by journals that can be pruned a bounded batch at a
// time, so that a janitor can fence each batch with its lease and pause
// between them (see package janitor). Both backends implement it.
type Pruner interface {
	// RaiseTail writes below as the new tail if it is higher than the
	// current one (the tail never goes down) and returns the tail now in
	// force. Nothing is deleted. below may not exceed Head()+1.
	RaiseTail(ctx context.Context, below int64) (tail int64, err error)
	// DeleteBatch deletes up to limit of the lowest records below the
	// tail and returns how many it deleted: 0 when none are left. The file
	// backend deletes whole segments, at most one per call, and may keep
	// records below the tail in the head's segment.
	DeleteBatch(ctx context.Context, limit int) (int64, error)
}

// pruneAll is Prune in terms of Pruner: it raises the tail to below and
// deletes below the tail a batch of at most limit records at a time.
func pruneAll(ctx context.Context, p Pruner, below int64, limit int) (int64, error) {
	if _, err := p.RaiseTail(ctx, below); err != nil {
		return 0, fmt.Errorf("prune journal: %w", err)
	}
	var deleted int64
	for {
		n, err := p.DeleteBatch(ctx, limit)
		deleted += n
		if err != nil {
			return deleted, fmt.Errorf("prune journal: %w", err)
		}
		if n == 0 {
			return deleted, nil
		}
	}
}

// Watcher is implemented by journals that can push a wake-up when any
// instance commits a record: PostgreSQL's LISTEN/NOTIFY, fsnotify for the
// file journal. Others are polled; see Watchable.
type Watcher interface {
	// Watch returns a channel that receives a value (coalesced: at most
	// one pending) whenever the journal may hold new records, and is closed
	// when ctx ends or the journal closes. A wake-up is a hint: the reader
	// must still read to learn what changed, and must keep polling, since
	// wake-ups can be lost when a connection drops.
	Watch(ctx context.Context) (<-chan struct{}, error)
}

// Watchable reports whether j can push wake-ups, for journals whose
// capability depends on their configuration (the SQL journal watches only
// on dialects that can push notifications: PostgreSQL).
func Watchable(j Journal) bool {
	if c, ok := j.(interface{ CanWatch() bool }); ok {
		return c.CanWatch()
	}
	_, ok := j.(Watcher)
	return ok
}

// checkEntries validates an Append's entries against the limits.
func checkEntries(entries []Entry) error {
	if len(entries) == 0 {
		return fmt.Errorf("%w: no entries", ErrInvalidArgument)
	}
	if len(entries) > MaxAppendEntries {
		return fmt.Errorf("%w: %d entries in one append, the limit is %d", ErrTooLarge, len(entries), MaxAppendEntries)
	}
	total := 0
	for i, e := range entries {
		if err := ident.Producer(fmt.Sprintf("entries[%d].Producer", i), e.Producer); err != nil {
			return fmt.Errorf("%w: %w", ErrInvalidArgument, err)
		}
		if len(e.Payload) > MaxPayloadSize {
			return fmt.Errorf("%w: entries[%d].Payload is %d bytes, the limit is %d (MaxPayloadSize)", ErrTooLarge, i, len(e.Payload), MaxPayloadSize)
		}
		total += len(e.Payload)
	}
	if total > MaxAppendSize {
		return fmt.Errorf("%w: %d payload bytes in one append, the limit is %d (MaxAppendSize)", ErrTooLarge, total, MaxAppendSize)
	}
	return nil
}

// checkRead validates Read's arguments.
func checkRead(after int64, limit int) error {
	if after < 0 {
		return fmt.Errorf("%w: after is %d, must be >= 0", ErrInvalidArgument, after)
	}
	if limit <= 0 {
		return fmt.Errorf("%w: limit is %d, must be > 0", ErrInvalidArgument, limit)
	}
	return nil
}

// dense returns the prefix of recs whose revisions are after+1, after+2, …
// Revisions are dense by construction (a failed append rolls back its
// counter increment), so a missing revision can only be one whose commit is
// not yet visible to this reader; delivering past it could skip it forever.
func dense(recs []Record, after int64) []Record {
	for i := range recs {
		if recs[i].Revision != after+1+int64(i) {
			return recs[:i]
		}
	}
	return recs
}
