package journal

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"math/rand/v2"
	"time"

	"github.com/tandem-go/tandem/internal/backoff"
	"github.com/tandem-go/tandem/internal/sqldialect"
)

// relayHandles bounds the application transactions one relay moves into
// the journal (each at most MaxAppendEntries entries and MaxAppendSize
// bytes); a relay moves every entry of each transaction it takes.
const relayHandles = 32

// ErrNotCommitted is returned by Pending.Wait when the entries are neither
// pending nor in the journal: their transaction rolled back, or had not
// committed yet when Wait looked (call Wait after Commit).
var ErrNotCommitted = errors.New("journal: the transaction's entries were not committed")

// Pending is the handle on entries published inside an application's
// transaction (SQL.AppendTx). It is safe for concurrent use.
type Pending struct {
	j      *SQL
	handle int64
	n      int
	after  int64
}

// Handle identifies the entries; every record they become carries it as
// its batch id.
func (p *Pending) Handle() int64 { return p.handle }

// AppendTx writes entries through the caller's transaction tx (an outbox):
// they become records — consecutive, in order, with this journal's node id
// and instance — if and only if tx commits. Nothing global is locked
// inside tx: the entries wait in the pending table, and a group commit
// under the counter's lock moves them into the journal after the commit.
// After tx.Commit, the returned handle's Wait relays them at once and
// returns their revisions (for read-your-writes tokens); if this process
// dies first, any node's Relay (a cluster node calls it on a poll tick
// whose poll saw the outbox non-empty) moves them. tx must be a
// transaction of the journal's database; the limits of Append apply.
func (j *SQL) AppendTx(ctx context.Context, tx *sql.Tx, entries ...Entry) (*Pending, error) {
	if tx == nil {
		return nil, fmt.Errorf("append journal in transaction: %w: tx is nil", ErrInvalidArgument)
	}
	if err := checkEntries(entries); err != nil {
		return nil, fmt.Errorf("append journal in transaction: %w", err)
	}
	p := &Pending{j: j, handle: rand.Int64N(1<<63-1) + 1, n: len(entries), after: j.known.Load()}
	des := make([]sqldialect.Entry, len(entries))
	for i, e := range entries {
		des[i] = sqldialect.Entry(e)
	}
	err := j.d.InsertPending(ctx, tx, sqldialect.PendingRequest{
		Tables: j.t, Handle: p.handle, NodeID: j.cfg.NodeID, Instance: j.cfg.Instance, Entries: des,
	})
	if err != nil {
		return nil, fmt.Errorf("append journal in transaction: %w", err)
	}
	return p, nil
}

// Wait returns the revisions of the handle's entries, relaying them first
// if they are still pending. Call it after the transaction committed: if
// the entries are neither pending nor in the journal, it returns an error
// matching ErrNotCommitted (the transaction rolled back), or, when the
// journal was pruned above what this journal knew when AppendTx ran (the
// entries may have been relayed and pruned before Wait looked), one
// matching ErrBehindTail: their revisions can no longer be learned.
// Called while the transaction is still open, it reports ErrNotCommitted
// too, or, on a SQL Server database without READ_COMMITTED_SNAPSHOT,
// waits for that transaction to end. Once the journal is closed, Wait returns an error
// matching ErrClosed unless it finds the entries already in the journal.
// While relays fail, Wait keeps trying until ctx ends; its error then
// wraps the last relay's error too.
//
// The entries themselves are durable once the transaction committed. The
// revisions are durable when Wait's own relay moved them; when another
// node's relay did, on MySQL and Oracle (whose commits can be seen before
// their log is flushed) a database crash within that flush can undo the
// move: the entries are then relayed again, at other revisions, and the
// revisions Wait returned belong to other records.
func (p *Pending) Wait(ctx context.Context) ([]int64, error) {
	// A relay moves the committed entries of every node, so another
	// node's relay may have moved these already: look before relaying.
	if revs, err := p.find(ctx); !errors.Is(err, ErrNotCommitted) {
		return revs, err
	}
	bo := backoff.New(time.Millisecond, 100*time.Millisecond)
	// relayErr is the last relay's error: when ctx ends before the
	// entries are found, it says why they were not moved.
	var relayErr error
	ended := func(err error) error {
		if err != nil && ctx.Err() != nil && relayErr != nil {
			return fmt.Errorf("%w (the last relay failed: %w)", err, relayErr)
		}
		return err
	}
	for {
		// Relay what is pending (this handle's entries among them, once
		// committed); concurrent Waits share the relays.
		err := p.j.relayAfterNow(ctx)
		switch {
		case errors.Is(err, ErrClosed):
			// No relay will run again on this journal.
			return nil, fmt.Errorf("wait for pending entries: %w", err)
		case err != nil && ctx.Err() != nil:
			if !errors.Is(err, ctx.Err()) {
				relayErr = err
			}
			return nil, ended(fmt.Errorf("wait for pending entries: %w", ctx.Err()))
		}
		relayErr = err
		revs, err := p.find(ctx)
		if err == nil || !errors.Is(err, ErrNotCommitted) {
			return revs, ended(err)
		}
		// Not in the journal: still pending (a relay failed, or moved
		// other handles first), or never committed.
		var pending int64
		if err := p.j.db.QueryRowContext(ctx, p.j.q.PendingCount, p.handle).Scan(&pending); err != nil {
			return nil, ended(fmt.Errorf("wait for pending entries: %w", p.j.d.Translate(err)))
		}
		if pending == 0 {
			// Another node may have moved them meanwhile: rows go from
			// pending to the journal in one transaction, never back.
			revs, err := p.find(ctx)
			if errors.Is(err, ErrNotCommitted) {
				err = p.pruned(ctx, err)
			}
			return revs, ended(err)
		}
		select {
		case <-ctx.Done():
			return nil, ended(fmt.Errorf("wait for pending entries: %w", ctx.Err()))
		case <-time.After(bo.Next()):
		}
	}
}

// find looks the handle's records up in the journal.
func (p *Pending) find(ctx context.Context) ([]int64, error) {
	var lowest sql.NullInt64
	var count int64
	if err := p.j.db.QueryRowContext(ctx, p.j.q.FindBatch, p.after, p.handle).Scan(&lowest, &count); err != nil {
		return nil, fmt.Errorf("wait for pending entries: %w", p.j.d.Translate(err))
	}
	switch {
	case count == 0:
		return nil, fmt.Errorf("wait for pending entries (handle %d): %w", p.handle, ErrNotCommitted)
	case count != int64(p.n):
		return nil, fmt.Errorf("wait for pending entries: %w: handle %d has %d of its %d records", ErrCorrupt, p.handle, count, p.n)
	}
	revs := make([]int64, p.n)
	for i := range revs {
		revs[i] = lowest.Int64 + int64(i)
	}
	raise(&p.j.known, revs[len(revs)-1])
	return revs, nil
}

// pruned returns notFound unless the journal was pruned above the
// revision the journal knew when the entries were published: they may
// then have been relayed and pruned since, and a *BehindTailError says
// that their revisions can no longer be learned. Prune raises the tail
// before it deletes, so a tail read after the look tells.
func (p *Pending) pruned(ctx context.Context, notFound error) error {
	tail, err := p.j.Tail(ctx)
	if err != nil {
		return fmt.Errorf("wait for pending entries: %w", err)
	}
	if tail > p.after+1 {
		return fmt.Errorf("wait for pending entries (handle %d): neither pending nor in the journal, which was pruned since they were published: they may have been relayed and pruned: %w",
			p.handle, &BehindTailError{After: p.after, Tail: tail})
	}
	return notFound
}

// Relay moves the committed pending entries of every node into the
// journal, in group commits on this journal's append connection, and
// returns how many records it moved. It costs one cheap read when nothing
// is pending. A cluster node calls it on every poll tick whose poll
// (Poll) saw pending entries, so entries whose writer died after its
// commit reach the journal within SyncDelay.
func (j *SQL) Relay(ctx context.Context) (int64, error) {
	var one int
	err := j.db.QueryRowContext(ctx, j.q.PendingAny).Scan(&one)
	if errors.Is(err, sql.ErrNoRows) {
		return 0, nil
	}
	if err != nil {
		return 0, fmt.Errorf("relay pending entries: %w", j.d.Translate(err))
	}
	return j.relayAll(ctx)
}

// relayAll relays until a relay moves fewer than relayHandles records:
// every handle has at least one entry, so such a relay took every handle
// committed when it started.
func (j *SQL) relayAll(ctx context.Context) (int64, error) {
	var total int64
	for {
		var n int64
		var rerr error
		if err := j.c.do(ctx, func() { n, rerr = j.relayOnce(ctx) }); err != nil {
			return total, fmt.Errorf("relay pending entries: %w", err)
		}
		if rerr != nil {
			return total, fmt.Errorf("relay pending entries: %w", rerr)
		}
		total += n
		if n < relayHandles {
			return total, nil
		}
	}
}

// relayAfterNow returns once a relay that started after the call has
// ended. Concurrent callers share relays, the way concurrent appends share
// a group commit: the requests that arrive while a relay runs are served
// by the next one, together.
func (j *SQL) relayAfterNow(ctx context.Context) error {
	res := make(chan error, 1)
	select {
	case j.relayReqs <- res:
	case <-ctx.Done():
		return ctx.Err()
	case <-j.bg.Done():
		return ErrClosed
	}
	select {
	case err := <-res:
		return err
	case <-ctx.Done():
		return ctx.Err()
	}
}

func (j *SQL) relayLoop() {
	defer j.bgDone.Done()
	for {
		var batch []chan error
		select {
		case r := <-j.relayReqs:
			batch = append(batch, r)
		case <-j.bg.Done():
			return
		}
	drain:
		for {
			select {
			case r := <-j.relayReqs:
				batch = append(batch, r)
			default:
				break drain
			}
		}
		// The requests come from Waits whose entries are pending: no need
		// for Relay's first look at the table.
		ctx, cancel := context.WithTimeout(j.bg, j.cfg.LockTimeout+30*time.Second)
		_, err := j.relayAll(ctx)
		cancel()
		for _, r := range batch {
			r <- err
		}
	}
}

// relayOnce runs one relay on the append connection; it runs on the
// committer goroutine. A relay's outcome needs no lookup: its entries are
// either all still pending or all in the journal.
func (j *SQL) relayOnce(ctx context.Context) (int64, error) {
	if err := j.prepare(ctx); err != nil {
		return 0, err
	}
	n, err := j.d.Relay(ctx, j.conn, j.t, relayHandles, j.cfg.LockTimeout)
	if err != nil {
		j.discardConn()
		return 0, err
	}
	if n > 0 {
		j.outcomes.relayed.Add(n)
		j.hub.wake()
		if j.notify != nil {
			select {
			case j.notify <- struct{}{}:
			default:
			}
		}
	}
	return n, nil
}

// PendingInfo describes the pending table (SQL.PendingInfo).
type PendingInfo struct {
	// Entries is how many committed entries wait to be relayed.
	Entries int64
	// OldestAge is how long the oldest of them has waited, by the
	// database's clock; 0 when none waits.
	OldestAge time.Duration
}

// PendingInfo reports what waits in the pending table: entries of
// committed transactions not yet relayed (a writer that died after its
// commit, before its relay, until another node's poll relays them).
func (j *SQL) PendingInfo(ctx context.Context) (PendingInfo, error) {
	var info PendingInfo
	var ms sql.NullFloat64
	if err := j.db.QueryRowContext(ctx, j.q.PendingOldest).Scan(&info.Entries, &ms); err != nil {
		return info, fmt.Errorf("pending info: %w", j.d.Translate(err))
	}
	if ms.Valid && ms.Float64 > 0 {
		info.OldestAge = time.Duration(ms.Float64 * float64(time.Millisecond))
	}
	return info, nil
}
