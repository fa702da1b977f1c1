package journal

import (
	"context"
	"errors"
	"fmt"
)

// PollResult is what a node needs to know on each poll: the records after
// its position and the journal's state, read together.
type PollResult struct {
	// Records are the records after the position asked for, dense and in
	// order, as Read returns them.
	Records []Record
	// Epoch is the journal's epoch: a position means something only in
	// the epoch it was read in.
	Epoch string
	// Head is the journal's head. A SQL journal reads it in the same
	// snapshot as Records where the database gives statements one
	// (PostgreSQL, MySQL, Oracle); elsewhere it may be higher than the
	// last record returned.
	Head int64
	// Tail is the lowest revision still kept. A position p with no record
	// after it and p+1 < Tail was pruned away (see ErrBehindTail).
	Tail int64
	// Pending reports that committed entries of application transactions
	// wait in the journal's outbox (SQL.AppendTx) for a relay.
	Pending bool
}

// BehindTail reports whether a reader at after, which got res, has lost
// records to pruning: nothing follows it and the tail is above after+1.
func (res PollResult) BehindTail(after int64) bool {
	return len(res.Records) == 0 && after+1 < res.Tail
}

// Poller is implemented by journals that answer a poll with fewer round
// trips than the four of Epoch, Read, Tail and Head: SQL in one statement,
// File with two small-file reads before the segment's. Poll reports the records after after (at most limit) with the
// epoch, head, tail and outbox state; unlike Read it returns no
// ErrBehindTail, which the caller tells from the result (BehindTail).
type Poller interface {
	Poll(ctx context.Context, after int64, limit int) (PollResult, error)
}

// RecordPoller is implemented by journals whose Poll also looks at an
// outbox (SQL) and that can poll without that look: PollRecords returns
// what Poll does, with Pending always false.
type RecordPoller interface {
	PollRecords(ctx context.Context, after int64, limit int) (PollResult, error)
}

// PollRecords polls j like Poll for a caller that does not use
// PollResult.Pending: without the look at the outbox where j can skip it
// (RecordPoller), so Pending may be false while entries wait.
func PollRecords(ctx context.Context, j Journal, after int64, limit int) (PollResult, error) {
	if p, ok := j.(RecordPoller); ok {
		return p.PollRecords(ctx, after, limit)
	}
	return Poll(ctx, j, after, limit)
}

// Poll polls j: in one round trip if j is a Poller, otherwise with its
// Epoch, Read, Head and (when nothing follows after) Tail.
func Poll(ctx context.Context, j Journal, after int64, limit int) (PollResult, error) {
	if p, ok := j.(Poller); ok {
		return p.Poll(ctx, after, limit)
	}
	if err := checkRead(after, limit); err != nil {
		return PollResult{}, fmt.Errorf("poll journal: %w", err)
	}
	var res PollResult
	var err error
	if res.Epoch, err = j.Epoch(ctx); err != nil {
		return PollResult{}, err
	}
	res.Records, err = j.Read(ctx, after, limit)
	var bt *BehindTailError
	switch {
	case errors.As(err, &bt):
		res.Records, res.Tail = nil, bt.Tail
	case err != nil:
		return PollResult{}, err
	}
	if res.Head, err = j.Head(ctx); err != nil {
		return PollResult{}, err
	}
	if n := len(res.Records); n > 0 {
		res.Head = max(res.Head, res.Records[n-1].Revision)
	}
	return res, nil
}
