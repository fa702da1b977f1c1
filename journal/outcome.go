package journal

import (
	"context"
	"crypto/rand"
	"database/sql"
	"encoding/hex"
	"errors"
	"fmt"
	"sync/atomic"
	"time"

	"github.com/tandem-go/tandem/internal/backoff"
	"github.com/tandem-go/tandem/internal/sqldialect"
)

// NewInstance returns a new random instance id: 16 lowercase hex digits.
// A journal whose config leaves Instance empty uses one.
func NewInstance() string {
	var b [8]byte
	_, _ = rand.Read(b[:]) // crypto/rand.Read never fails (Go 1.24+)
	return hex.EncodeToString(b[:])
}

// outcomeStats counts what happened to appends whose outcome was open.
type outcomeStats struct {
	discarded, committed, notWritten, unknown atomic.Int64
	relayed                                   atomic.Int64
}

func (o *outcomeStats) fill(s *Stats) {
	s.ConnsDiscarded = o.discarded.Load()
	s.ResolvedCommitted = o.committed.Load()
	s.ResolvedNotWritten = o.notWritten.Load()
	s.OutcomeUnknown = o.unknown.Load()
	s.Relayed = o.relayed.Load()
}

// lockWaitMargin is added to the lock timeout, rounded up to whole seconds
// (Oracle's WAIT clause is in seconds), when the journal must wait out a
// statement of an abandoned session that may still be waiting for the
// counter's lock (dialects without sqldialect.SessionEnder).
const lockWaitMargin = time.Second

// lockWaitBound is how long after the journal gave up on a statement that
// statement may still acquire the counter's lock.
func lockWaitBound(lockTimeout time.Duration) time.Duration {
	return (lockTimeout+time.Second-1)/time.Second*time.Second + lockWaitMargin
}

// resolve learns the outcome of a batch whose append returned the open
// outcome cause: the batch had n records, its revisions are above after,
// it was given up at gaveUp on the session session (now discarded). It returns
// the batch's first revision if it committed, or an error: cause's own
// error when nothing was written (no longer matching ErrOutcomeUnknown),
// cause when the database stayed unreachable for ResolveTimeout.
func (j *SQL) resolve(cause *sqldialect.OutcomeError, batch int64, n int, after int64, session string, gaveUp time.Time) (int64, error) {
	ctx, cancel := context.WithTimeout(context.Background(), j.cfg.ResolveTimeout)
	defer cancel()
	bo := backoff.New(20*time.Millisecond, time.Second)
	for {
		first, found, err := j.lookupBatch(ctx, batch, n, after, session, gaveUp)
		switch {
		case err == nil && found:
			j.outcomes.committed.Add(1)
			return first, nil
		case err == nil:
			j.outcomes.notWritten.Add(1)
			return 0, fmt.Errorf("%w (the journal looked batch %d up: nothing was written)", cause.Err, batch)
		case errors.Is(err, ErrCorrupt):
			return 0, err
		}
		var pruned *prunedError
		if errors.As(err, &pruned) {
			j.outcomes.unknown.Add(1)
			j.cfg.Logger.Warn("tandem: journal could not learn whether an append committed",
				"node", j.cfg.NodeID, "batch", batch, "err", err)
			return 0, fmt.Errorf("%w; %v", cause, err)
		}
		if ctx.Err() != nil {
			j.outcomes.unknown.Add(1)
			j.cfg.Logger.Warn("tandem: journal could not learn whether an append committed",
				"node", j.cfg.NodeID, "batch", batch, "err", err)
			return 0, fmt.Errorf("%w; looking batch %d up failed for %v (ResolveTimeout): %v", cause, batch, j.cfg.ResolveTimeout, err)
		}
		select {
		case <-ctx.Done():
		case <-time.After(bo.Next()):
		}
	}
}

// lookupBatch makes sure the transaction of the abandoned session has
// ended and then looks the batch up, holding the counter's row lock.
func (j *SQL) lookupBatch(ctx context.Context, batch int64, n int, after int64, session string, gaveUp time.Time) (first int64, found bool, err error) {
	if j.ender != nil && session != "" {
		if err := j.ender.EndSession(ctx, j.db, session); err != nil {
			return 0, false, fmt.Errorf("end the abandoned session: %w", err)
		}
	} else if wait := time.Until(gaveUp.Add(lockWaitBound(j.cfg.LockTimeout))); wait > 0 {
		// A statement still waiting for the counter's lock gives up
		// within the lock timeout; one that got it holds it until its
		// transaction ends, and LockHead below waits for that.
		select {
		case <-ctx.Done():
			return 0, false, ctx.Err()
		case <-time.After(wait):
		}
	}
	tx, err := j.db.BeginTx(ctx, nil)
	if err != nil {
		return 0, false, j.d.Translate(err)
	}
	defer tx.Rollback()
	if j.q.BeginLookup != "" {
		if _, err := tx.ExecContext(ctx, j.q.BeginLookup); err != nil {
			return 0, false, j.d.Translate(err)
		}
	}
	var head int64
	if err := tx.QueryRowContext(ctx, j.q.LockHead).Scan(&head); err != nil {
		return 0, false, j.d.Translate(err)
	}
	if after > head {
		// The counter is below a revision this instance saw committed:
		// the journal went back (a restored database), and the batch may
		// have committed at or below after. Look from the tail instead.
		// (A batch that did not commit finds after == head as a rule:
		// only here does the lookup walk the whole journal.)
		_, tail, err := j.metaOn(ctx, tx)
		if err != nil {
			return 0, false, err
		}
		after = max(min(after, tail-1), 0)
	}
	var lowest sql.NullInt64
	var count int64
	if err := tx.QueryRowContext(ctx, j.q.FindBatch, after, batch).Scan(&lowest, &count); err != nil {
		return 0, false, j.d.Translate(err)
	}
	first = lowest.Int64
	if count < int64(n) {
		// A prune may have deleted the batch's lowest records, or all of
		// them, since it committed (every node, this one's sync loop
		// included, may have read them meanwhile). Prune raises the
		// tail before it deletes, so a tail read after the look tells:
		// nothing above after was deleted unless the tail is above
		// after+1.
		_, tail, err := j.metaOn(ctx, tx)
		if err != nil {
			return 0, false, err
		}
		switch {
		case count == 0 && tail > after+1:
			return 0, false, &prunedError{batch: batch, after: after, tail: tail}
		case count > 0 && tail >= lowest.Int64:
			// A batch commits whole: the records missing below the
			// lowest one found were pruned.
			first = lowest.Int64 - (int64(n) - count)
			count = int64(n)
		}
	}
	switch {
	case count == 0:
		return 0, false, nil
	case count == int64(n) && first > after && first+int64(n)-1 <= head:
		if err := j.settle(ctx, tx); err != nil {
			return 0, false, err
		}
		return first, true, nil
	}
	return 0, false, fmt.Errorf("%w: batch %d has %d of its %d records, from revision %d (head %d)",
		ErrCorrupt, batch, count, n, lowest.Int64, head)
}

// prunedError reports a lookup that found none of its batch's records
// where a prune may have deleted them: the batch's outcome cannot be
// learned any more.
type prunedError struct {
	batch, after, tail int64
}

func (e *prunedError) Error() string {
	return fmt.Sprintf("batch %d is not in the journal, but the journal was pruned above revision %d (tail %d) since the batch was sent: it may have committed and been pruned",
		e.batch, e.after, e.tail)
}

// settle makes sure a batch the lookup found is durable before it is
// reported committed, on dialects whose commits become visible before
// their log is flushed (Queries.Settle): it changes the counter row and
// changes it back under the lock the lookup holds, and commits. That
// commit's flush covers every commit logged before it, the batch's among
// them. A statement that did not change exactly the counter row rolls the
// transaction back (by the caller's deferred Rollback) and fails the
// lookup, which the resolver retries; the counter is never left changed.
func (j *SQL) settle(ctx context.Context, tx *sql.Tx) error {
	if j.q.Settle == "" {
		return nil
	}
	for _, delta := range []int64{1, -1} {
		res, err := tx.ExecContext(ctx, j.q.Settle, delta)
		if err != nil {
			return fmt.Errorf("settle the found batch: %w", j.d.Translate(err))
		}
		if n, err := res.RowsAffected(); err != nil || n != 1 {
			return fmt.Errorf("settle the found batch: the counter update changed %d rows, not 1 (%v); rolled back", n, err)
		}
		if j.afterSettle != nil {
			if err := j.afterSettle(ctx, delta); err != nil {
				return err
			}
		}
	}
	if err := tx.Commit(); err != nil {
		return fmt.Errorf("settle the found batch: commit: %w", j.d.Translate(err))
	}
	return nil
}
