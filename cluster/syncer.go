package cluster

import (
	"context"
	"crypto/sha256"
	"errors"
	"fmt"
	"math/rand/v2"
	"runtime/debug"
	"sync"
	"sync/atomic"
	"time"

	"github.com/tandem-go/tandem/dialect"
	"github.com/tandem-go/tandem/internal/backoff"
	"github.com/tandem-go/tandem/journal"
	"github.com/tandem-go/tandem/revision"
)

// syncLoop owns a node's position. One goroutine runs syncs; callers ask
// for one (request, waitFor) or wake it (wake). pos and epoch are only
// written by whoever runs a sync: Start's first sync, then the loop's
// goroutine, then Stop's final sync, one after the other (epoch under mu,
// as waitFor reads it).
type syncLoop struct {
	n        *Node
	handlers map[string]Handler
	resync   []func(ctx context.Context, why ResyncReason) error

	pos   int64
	epoch string
	// at identifies the record at pos as this node read it (zero: not
	// known yet), and tail is the journal's tail as the last poll saw
	// it. While the record at pos is kept (pos >= tail), each poll reads
	// it again and compares (see sync).
	at   recordID
	tail int64
	// batch is how many records the next poll reads: BatchSize, halved
	// after a poll that timed out and doubled back after each that
	// answered (Config.SyncTimeout). Only the loop's goroutine uses it.
	batch int
	// saved and savedAt: the position last stored, and when.
	saved   int64
	savedAt time.Time
	// saveAfter: when a save that a sync asked for is due (maybeSave).
	saveAfter time.Time
	// saveErr is the failure of the last save, nil once one went
	// through; saveRetry is when the next attempt is due after it, which
	// saveBo spaces (see maybeSave).
	saveErr   error
	saveRetry time.Time
	saveBo    *backoff.Backoff
	// pending: the last poll saw entries waiting in the journal's outbox.
	pending bool
	// refusedUntil: after the database refused a connection, wake-ups wait
	// until then (the run loop's goroutine only); refusedBo spaces the
	// retries.
	refusedUntil time.Time
	refusedBo    *backoff.Backoff

	mu       sync.Mutex
	st       Stats
	cur      *attempt      // the record being applied, while a handler works on it
	att      attempt       // what cur points at; written under mu
	advanced chan struct{} // closed and replaced whenever pos advances
	failing  bool
	// failSince, failCount and failLogged describe the current run of
	// failed syncs, for Stats and for logging repeated failures.
	failSince, failLogged time.Time
	failCount             int64
	// stAt is at as of st.Revision (published with it). For waitFor:
	// resyncNum numbers the resyncs as they begin (the last number
	// given), and resyncDone is the number of the last one that ended
	// successfully. A resync that fails keeps its number and is never
	// done; the next one gets a higher number (see waitFor).
	stAt       recordID
	resyncNum  int64
	resyncDone int64

	wakeCh chan struct{}
	reqMu  sync.Mutex
	reqs   []chan error
	// watch brings push wake-ups; nil without push, and once it closed.
	// The run loop's goroutine reads it without mu, and sets it to nil
	// under mu (Stats reads it under mu).
	watch <-chan struct{}

	ctx    context.Context // cancelled by stop
	cancel context.CancelFunc
	done   chan struct{} // run exited
	worker chan struct{} // the goroutine of the last bounded sync exited
	// abandoned: a bounded sync was left behind in a handler that ignores
	// its context; whatever it does when it returns, it stores nothing.
	abandoned atomic.Bool
	// The handlers' watchdog (see call): one timer, and the context the
	// calls of a sync share. callCtx, callStop and callBase are written
	// under mu by the goroutine running the sync, which alone reads them
	// without it.
	watchdog *time.Timer
	callCtx  context.Context
	callStop context.CancelCauseFunc
	callBase context.Context
	// failed, once set, ends the loop for good: requests get it, and the
	// final sync of stop is skipped (the node must not touch its position).
	failed error
}

// attempt is a record a handler is working on.
type attempt struct {
	producer string
	rev      int64
	since    time.Time // first attempt
	attempts int       // failed attempts
	running  bool
	started  time.Time // the call running now
	timedOut bool      // the running call passed HandlerTimeout (counted)
	lastErr  error
}

// fail ends the loop for good with err.
func (l *syncLoop) fail(err error) {
	l.mu.Lock()
	l.failed = err
	l.mu.Unlock()
	l.cancel()
}

func (l *syncLoop) failure() error {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.failed
}

func (n *Node) newSyncLoop(ctx context.Context) (*syncLoop, error) {
	n.mu.Lock()
	l := &syncLoop{n: n, handlers: n.handlers, resync: n.resync, batch: n.cfg.BatchSize,
		advanced: make(chan struct{}), wakeCh: make(chan struct{}, 1), done: make(chan struct{}),
		refusedBo: backoff.New(max(n.cfg.SyncDelay/20, 10*time.Millisecond), n.cfg.SyncDelay),
		saveBo:    backoff.New(saveGap, saveEvery)}
	n.mu.Unlock()
	j := n.cfg.Journal
	epoch, err := j.Epoch(ctx)
	if err != nil {
		return nil, err
	}
	l.epoch = epoch
	p, err := n.cfg.Revisions.Load(ctx, n.cfg.NodeID)
	if errors.Is(err, revision.ErrNotFound) && n.cfg.CopyFrom != "" {
		if err := n.cfg.Revisions.Copy(ctx, n.cfg.CopyFrom, n.cfg.NodeID); err != nil {
			return nil, fmt.Errorf("copy the position of %q: %w", n.cfg.CopyFrom, err)
		}
		p, err = n.cfg.Revisions.Load(ctx, n.cfg.NodeID)
	}
	// The head is read after the position: a copied position is another
	// live node's, which may have moved past a head read before the copy
	// (and would then look "ahead of the head"). A stored position is
	// never above a head read after it, unless the journal went back.
	head, herr := j.Head(ctx)
	if herr != nil {
		return nil, herr
	}
	l.st.Head = head
	switch {
	case errors.Is(err, revision.ErrNotFound):
		if n.cfg.StartAt == StartAtBeginning {
			tail, err := j.Tail(ctx)
			if err != nil {
				return nil, err
			}
			l.pos = tail - 1
		} else {
			l.pos = head
		}
		if err := l.save(ctx); err != nil {
			return nil, err
		}
	case err != nil:
		return nil, err
	case p.Evicted:
		l.pos = p.Revision
		if err := l.doResync(ctx, ResyncEvicted); err != nil {
			return nil, err
		}
	case p.Epoch != epoch:
		l.pos = p.Revision
		if err := l.doResync(ctx, ResyncEpoch); err != nil {
			return nil, err
		}
	case p.Revision > head:
		l.pos = p.Revision
		if err := l.doResync(ctx, ResyncAheadOfHead); err != nil {
			return nil, err
		}
	default:
		l.pos = p.Revision
	}
	l.st.Revision = l.pos
	l.ctx, l.cancel = context.WithCancel(context.Background())
	if journal.Watchable(j) && !n.cfg.DisablePush {
		w, err := j.(journal.Watcher).Watch(l.ctx)
		if err != nil {
			n.cfg.Logger.Warn("tandem: no push wake-ups; polling only", "node", n.cfg.NodeID, "err", err)
		} else {
			l.watch = w
		}
	}
	return l, nil
}

var errAbandoned = errors.New("cluster: sync abandoned")

// save stores the position. The stored position is the node id's, and
// another process may hold the id once this one's membership lease is
// lost (it expired while the store did not answer): so a save needs the
// lease held, and one in flight is abandoned at the lease's trust
// deadline. Meanwhile the loop goes on applying records; the position is
// stored once the node rejoins (or never, if it was replaced).
func (l *syncLoop) save(ctx context.Context) error {
	if l.abandoned.Load() {
		return errAbandoned
	}
	sctx, cancel := context.WithTimeout(ctx, l.n.cfg.SyncTimeout)
	defer cancel()
	lost := func() error {
		return fmt.Errorf("save position %d (stored once the node rejoins): %w", l.pos, l.n.errLost())
	}
	var err error
	lease := l.n.membership() // nil only for loops tests make without a Start
	if lease != nil && !lease.Held() {
		err = lost()
	} else {
		if lease != nil {
			defer context.AfterFunc(lease.Context(), cancel)()
		}
		err = l.n.cfg.Revisions.Save(sctx, l.n.cfg.NodeID, l.pos, l.epoch)
	}
	switch {
	case err == nil, sctx.Err() == nil, ctx.Err() != nil:
	case lease != nil && lease.Context().Err() != nil:
		err = fmt.Errorf("%w: %w", lost(), err)
	default:
		err = fmt.Errorf("save position %d: %w (%v): %w", l.pos, errSyncTimeout, l.n.cfg.SyncTimeout, err)
	}
	if err != nil {
		l.saveErr, l.saveRetry = err, time.Now().Add(l.saveBo.Next())
		return err
	}
	l.saved, l.savedAt, l.saveAfter = l.pos, time.Now(), time.Time{}
	l.saveErr, l.saveRetry = nil, time.Time{}
	l.saveBo.Reset()
	return nil
}

// saveEvery bounds how long an unsaved position may wait during a long
// catch-up.
const saveEvery = time.Second

// saveGap is the least time between two saves of the position that end
// syncs: a node woken by every commit of a busy cluster stores its
// position at most this often, the last one at most saveGap late (the run
// loop saves it when due).
const saveGap = 50 * time.Millisecond

// maybeSave stores the position when it is due: after a sync that moved
// it (so that Barrier sees it) — not at once, but between saveGap/2 and
// saveGap later, at random, and at least saveGap after the last save (the
// run loop saves it then): the nodes a commit woke all at once do not all
// write at once, and a burst of commits costs one save — and during a
// long catch-up at most every saveEvery. This holds for a position that
// only the node's own records moved too: a Barrier on another node waits
// for the writer's stored position as for anyone's. A position is never
// stored ahead of what the handlers applied; storing it less often only
// means more records applied again after a crash, which at-least-once
// delivery allows.
//
// After a failed save, the next attempt waits (saveRetry): saveGap after
// the first failure, doubling up to saveEvery (±20%), until a save goes
// through. A store that keeps failing — a database outage — gets one save
// a second from the node, the rate of a long catch-up, instead of one
// after the other as fast as they fail; a position is stored within about
// a second once it answers again, as saveEvery promises anyway. Syncs in
// between apply records without trying to save (a long catch-up goes on),
// and return no error they did not meet; the run loop reports them as
// failing with the save's failure all the same (see run), so Stats and
// the logs show the node failing until a save goes through.
func (l *syncLoop) maybeSave(ctx context.Context, endOfSync bool) error {
	if l.pos == l.saved {
		return nil
	}
	if endOfSync && l.saveAfter.IsZero() {
		l.saveAfter = time.Now().Add(saveGap/2 + rand.N(saveGap/2))
	}
	if due, _ := l.saveDue(); due > 0 {
		return nil
	}
	if err := l.save(ctx); err != nil {
		return fmt.Errorf("save position: %w", err)
	}
	return nil
}

// saveDue returns how long until a position applied but not stored is due
// (see maybeSave), and false when none waits. After a failed save it is
// due no earlier than saveRetry.
func (l *syncLoop) saveDue() (time.Duration, bool) {
	if l.pos == l.saved {
		return 0, false
	}
	at := l.savedAt.Add(saveEvery)
	if !l.saveAfter.IsZero() {
		at = maxTime(l.saveAfter, l.savedAt.Add(saveGap))
	}
	return max(time.Until(maxTime(at, l.saveRetry)), 0), true
}

func maxTime(a, b time.Time) time.Time {
	if a.After(b) {
		return a
	}
	return b
}

// advance publishes pos to Stats and waiters, waking them if it moved, and
// raises Head to head if that is higher.
func (l *syncLoop) advance(head int64) {
	l.mu.Lock()
	l.st.Head = max(l.st.Head, head)
	l.stAt = l.at
	if l.st.Revision == l.pos {
		l.mu.Unlock()
		return
	}
	l.st.Revision = l.pos
	close(l.advanced)
	l.advanced = make(chan struct{})
	l.mu.Unlock()
}

// raiseHead raises Stats' head to head if that is higher.
func (l *syncLoop) raiseHead(head int64) {
	l.mu.Lock()
	l.st.Head = max(l.st.Head, head)
	l.mu.Unlock()
}

func (l *syncLoop) applied() int64 {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.st.Revision
}

func (l *syncLoop) stats() Stats {
	l.mu.Lock()
	defer l.mu.Unlock()
	st := l.st
	st.Epoch = l.epoch
	st.Push = l.watch != nil
	if lj, ok := l.n.cfg.Journal.(interface{ Listening() bool }); ok && st.Push {
		st.Push = lj.Listening()
	}
	st.Head = max(st.Head, st.Revision) // the head is never below what was applied
	st.Lag = st.Head - st.Revision
	if a := l.cur; a != nil && (a.attempts > 0 || a.timedOut) {
		st.Stuck = &Stuck{Producer: a.producer, Revision: a.rev, Since: a.since, Attempts: a.attempts,
			Running: a.running, LastErr: a.lastErr}
	}
	return st
}

func (l *syncLoop) count(f func(st *Stats)) {
	l.mu.Lock()
	f(&l.st)
	l.mu.Unlock()
}

// sync reads and applies records until it is caught up, saving the
// position as maybeSave says. Each read is one poll (journal.Poll: one
// statement on SQL) that also brings the epoch, the tail and the head, so
// a recreated journal, a pruned position and a journal gone backwards are
// noticed on every sync at no extra cost. A batch shorter than BatchSize
// (or reaching the head) ends the sync: no second read to find nothing.
// With outbox (the ticks), its first poll also learns whether entries wait
// in the outbox (l.pending); the others skip that look, whose cost grows
// with the deleted rows the database cannot remove yet.
func (l *syncLoop) sync(ctx context.Context, outbox bool) error {
	defer l.releaseCallContext()
	j := l.n.cfg.Journal
	for {
		want := l.batch
		// The poll starts one record early while the record at the
		// position is kept: the one this node applied there must still
		// be there (ResyncRewritten).
		from, again := l.pos, 0
		if l.pos > 0 && l.pos >= l.tail {
			from, again = l.pos-1, 1
		}
		pctx, cancel := context.WithTimeout(ctx, l.n.cfg.SyncTimeout)
		poll := journal.PollRecords
		if outbox {
			poll = journal.Poll
		}
		res, err := poll(pctx, j, from, want+again)
		timedOut := pctx.Err() != nil && ctx.Err() == nil
		cancel()
		if err != nil {
			if timedOut {
				l.batch = max(1, want/2)
				return fmt.Errorf("poll after revision %d: %w (%v); the next poll runs on another connection and reads at most %d records: %w",
					l.pos, errSyncTimeout, l.n.cfg.SyncTimeout, l.batch, err)
			}
			return err
		}
		l.batch = min(l.n.cfg.BatchSize, 2*want)
		l.tail = res.Tail
		if outbox {
			l.pending, outbox = res.Pending, false
		}
		var why ResyncReason
		gone := false // the record at the position is not there
		if again == 1 {
			switch {
			case len(res.Records) > 0: // dense from from+1: the first is at pos
				if l.at.zero() {
					l.at = idOf(res.Records[0]) // first look since Start or a resync
				} else if l.at != idOf(res.Records[0]) && res.Epoch == l.epoch {
					why = ResyncRewritten
				}
				res.Records = res.Records[1:] // what follows the position
			case res.Tail > l.pos && res.Epoch == l.epoch:
				continue // pruned since the last poll: nothing left to compare
			default:
				gone = true
			}
		}
		switch {
		case why != "":
		case res.Epoch != l.epoch:
			why = ResyncEpoch
		case res.BehindTail(l.pos):
			why = ResyncBehindTail
		case l.pos > res.Head:
			why = ResyncAheadOfHead
		case gone:
			// The tail did not pass it and the head did not go below it.
			why = ResyncRewritten
		}
		if why != "" {
			if err := l.doResync(ctx, why); err != nil {
				return err
			}
			continue
		}
		recs := res.Records
		for i, rec := range recs {
			// A sync that ctx ended (Stop; it may have left this sync
			// behind in a handler that ignores its context) hands no
			// record more to the handlers.
			err := ctx.Err()
			if err == nil {
				err = l.apply(ctx, rec)
			}
			if err != nil {
				if i > 0 {
					l.at = idOf(recs[i-1])
				}
				l.advance(res.Head)
				if l.pos != l.saved {
					// Keep what was applied; the rest comes again.
					_ = l.save(context.WithoutCancel(ctx))
				}
				return err
			}
			l.pos = rec.Revision
		}
		if n := len(recs); n > 0 {
			l.at = idOf(recs[n-1]) // the record at the position, hashed once a batch
		}
		l.advance(res.Head) // once per batch: waiters need no finer steps
		if len(recs) < want || l.pos >= res.Head {
			if err := l.maybeSave(ctx, true); err != nil {
				return err
			}
			l.count(func(st *Stats) { st.LastSync = time.Now() })
			return nil
		}
		if err := l.maybeSave(ctx, false); err != nil {
			return err
		}
	}
}

// own reports whether rec was written by this process, and so is not
// delivered to its handlers. It compares instances, not node ids: what an
// earlier incarnation of this node id published (a crashed process, one
// this process replaced) is applied like any other node's record. Records
// without an instance (written by a release before it was stored) are
// never own.
func (l *syncLoop) own(rec journal.Record) bool {
	return rec.Instance != "" && rec.Instance == l.n.cfg.Instance
}

// apply delivers rec to its producer's handler, retrying a failing handler
// with backoff until it succeeds, Config.DeadLetter gives up on the record,
// or ctx ends; it never skips a record silently.
func (l *syncLoop) apply(ctx context.Context, rec journal.Record) error {
	if !l.n.cfg.DeliverOwn && l.own(rec) {
		return nil
	}
	h := l.handlers[rec.Producer]
	if h == nil {
		l.count(func(st *Stats) { st.Unhandled++ })
		return nil
	}
	// One attempt record per loop, reused: cur points at it while a
	// handler works on a record, and stays set when the sync ends at the
	// record, for Stats.
	a := &l.att
	l.mu.Lock()
	*a = attempt{producer: rec.Producer, rev: rec.Revision}
	l.cur = a
	l.mu.Unlock()
	passed := func() {
		l.mu.Lock()
		l.cur = nil
		l.mu.Unlock()
	}
	var bo *backoff.Backoff
	var lastHead time.Time
	for {
		err := l.call(ctx, h, rec, a)
		if err == nil {
			return nil // call counted it and cleared cur
		}
		if bo == nil {
			bo = backoff.New(10*time.Millisecond, l.n.cfg.SyncDelay)
			lastHead = time.Now()
		}
		herr := l.handlerError(a)
		if ctx.Err() != nil {
			return fmt.Errorf("%w (gave up: %w)", herr, ctx.Err())
		}
		if a.attempts == 1 || a.attempts%10 == 0 {
			var p *PanicError
			if errors.As(err, &p) {
				l.n.cfg.Logger.Error("tandem: handler panicked; retrying, the node waits at this record",
					"node", l.n.cfg.NodeID, "producer", rec.Producer, "revision", rec.Revision, "attempt", a.attempts,
					"panic", p.Value, "stack", string(p.Stack))
			} else {
				l.n.cfg.Logger.Warn("tandem: handler failed; retrying, the node waits at this record",
					"node", l.n.cfg.NodeID, "producer", rec.Producer, "revision", rec.Revision, "attempt", a.attempts, "err", err)
			}
		}
		if l.giveUp(ctx, rec, a.attempts, err) {
			passed()
			l.count(func(st *Stats) { st.GaveUp++ })
			l.n.cfg.Logger.Error("tandem: gave up on a record: DeadLetter said so; the node moves past it",
				"node", l.n.cfg.NodeID, "producer", rec.Producer, "revision", rec.Revision, "from", rec.NodeID,
				"attempts", a.attempts, "err", err)
			return nil
		}
		// While stuck, keep Stats' head current.
		if time.Since(lastHead) >= l.n.cfg.SyncDelay {
			lastHead = time.Now()
			if head, err := l.n.cfg.Journal.Head(ctx); err == nil {
				l.raiseHead(head)
			}
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("%w (gave up: %w)", herr, ctx.Err())
		case <-time.After(bo.Next()):
		}
	}
}

// call runs one attempt of h on rec, bounded by HandlerTimeout, turning a
// panic into a *PanicError. On success it counts the record as applied and
// clears cur. The timeout is kept by one watchdog timer per loop, re-armed
// for each call, rather than a context with a deadline per record: a
// record's dispatch then costs no allocation. A call still running at the
// timeout is counted as a failure then, even if it never returns.
func (l *syncLoop) call(ctx context.Context, h Handler, rec journal.Record, a *attempt) (err error) {
	cctx := l.callContext(ctx)
	now := time.Now()
	l.mu.Lock()
	a.running, a.started, a.timedOut = true, now, false
	if a.since.IsZero() {
		a.since = now
	}
	l.mu.Unlock()
	if l.watchdog == nil {
		l.watchdog = time.AfterFunc(l.n.cfg.HandlerTimeout, l.timeout)
	} else {
		l.watchdog.Reset(l.n.cfg.HandlerTimeout)
	}
	defer func() {
		l.watchdog.Stop()
		if p := recover(); p != nil {
			err = &PanicError{Value: p, Stack: debug.Stack()}
		}
		l.mu.Lock()
		a.running = false
		switch {
		case err == nil:
			l.cur = nil
			l.st.Applied++
		case !a.timedOut:
			a.attempts++
			l.st.HandlerFailures++
			a.lastErr = err
		default:
			a.lastErr = err
		}
		l.mu.Unlock()
	}()
	return h.Apply(cctx, rec)
}

// callContext returns the context handler calls get: a child of ctx (the
// sync's), shared by the calls of one sync until the watchdog ends it.
func (l *syncLoop) callContext(ctx context.Context) context.Context {
	if l.callBase == ctx && l.callCtx.Err() == nil {
		return l.callCtx
	}
	c, stop := context.WithCancelCause(ctx)
	l.mu.Lock()
	old := l.callStop
	l.callCtx, l.callStop, l.callBase = c, stop, ctx
	l.mu.Unlock()
	if old != nil {
		old(nil)
	}
	return c
}

// releaseCallContext ends the handlers' context of a sync that is over.
func (l *syncLoop) releaseCallContext() {
	l.mu.Lock()
	stop := l.callStop
	l.callCtx, l.callStop, l.callBase = nil, nil, nil
	l.mu.Unlock()
	if stop != nil {
		stop(nil)
	}
}

// timeout is the watchdog: it runs when a call may have passed
// HandlerTimeout. It ends the call's context, counts the call as a failure
// and, while the call does not return (the sync goroutine is blocked in
// it), keeps Stats' head current.
func (l *syncLoop) timeout() {
	l.mu.Lock()
	a := l.cur
	if a == nil || !a.running || a.timedOut || time.Since(a.started) < l.n.cfg.HandlerTimeout {
		l.mu.Unlock()
		return // a stale firing: that call returned
	}
	a.timedOut = true
	a.attempts++
	a.lastErr = fmt.Errorf("no answer within HandlerTimeout (%v)", l.n.cfg.HandlerTimeout)
	l.st.HandlerFailures++
	stop, ctx := l.callStop, l.callBase
	producer, rev := a.producer, a.rev
	l.mu.Unlock()
	if stop != nil {
		stop(fmt.Errorf("handler call: %w: HandlerTimeout (%v) passed", context.DeadlineExceeded, l.n.cfg.HandlerTimeout))
	}
	l.n.cfg.Logger.Warn("tandem: handler has not returned within HandlerTimeout; the node waits at this record",
		"node", l.n.cfg.NodeID, "producer", producer, "revision", rev, "timeout", l.n.cfg.HandlerTimeout)
	if ctx == nil {
		return
	}
	for {
		if head, err := l.n.cfg.Journal.Head(ctx); err == nil {
			l.raiseHead(head)
		}
		select {
		case <-ctx.Done():
			return
		case <-time.After(l.n.cfg.SyncDelay):
		}
		l.mu.Lock()
		running := a.running
		l.mu.Unlock()
		if !running {
			return
		}
	}
}

// giveUp asks Config.DeadLetter, if set, whether to skip rec.
func (l *syncLoop) giveUp(ctx context.Context, rec journal.Record, attempts int, err error) (skip bool) {
	dl := l.n.cfg.DeadLetter
	if dl == nil {
		return false
	}
	defer func() {
		if p := recover(); p != nil {
			l.n.cfg.Logger.Error("tandem: DeadLetter panicked; retrying the record", "node", l.n.cfg.NodeID,
				"producer", rec.Producer, "revision", rec.Revision, "panic", p, "stack", string(debug.Stack()))
			skip = false
		}
	}()
	return dl(ctx, rec, attempts, err)
}

// handlerError describes a as it stands.
func (l *syncLoop) handlerError(a *attempt) *HandlerError {
	l.mu.Lock()
	defer l.mu.Unlock()
	return &HandlerError{Producer: a.producer, Revision: a.rev, Since: a.since, Attempts: a.attempts,
		Stuck: a.running, Err: a.lastErr}
}

// stuckError describes why a sync did not finish: the record a handler is
// stuck at, if any.
func (l *syncLoop) stuckError() error {
	l.mu.Lock()
	a := l.cur
	l.mu.Unlock()
	if a == nil {
		return errors.New("the sync did not finish")
	}
	return l.handlerError(a)
}

// HandlerError reports a record a node could not get past: its handler
// failed (an error, a panic, a timeout), or a call has not returned.
// Start and Stop return it (wrapped) when their context ends first.
type HandlerError struct {
	Producer string
	Revision int64
	Since    time.Time // when the first attempt started
	Attempts int       // failed attempts
	// Stuck: a call is still running — the handler ignores its context.
	Stuck bool
	Err   error // the last failure, if any
}

func (e *HandlerError) Error() string {
	msg := fmt.Sprintf("handler for producer %q failed at revision %d: %d failed attempts since %s",
		e.Producer, e.Revision, e.Attempts, e.Since.Format(time.RFC3339))
	if e.Stuck {
		msg = fmt.Sprintf("handler for producer %q stuck at revision %d since %s: a call has not returned (the handler ignores its context)",
			e.Producer, e.Revision, e.Since.Format(time.RFC3339))
	}
	if e.Err != nil {
		msg += "; last error: " + e.Err.Error()
	}
	return msg
}

// Unwrap returns the last failure.
func (e *HandlerError) Unwrap() error { return e.Err }

// PanicError is a handler's panic, recovered: the node survives it, logs
// the stack and retries the record like any failure.
type PanicError struct {
	Value any
	Stack []byte
}

func (e *PanicError) Error() string { return fmt.Sprintf("handler panicked: %v", e.Value) }

// doResync continues from the journal's head in its current epoch, after
// running the resync hooks (retrying a failing one). The epoch and the
// head are read before the hooks run: a record committed while they run —
// the invalidation of a value that a load started after a cache's flush
// read before the change — lies above that head and is applied as usual,
// whereas a head read after the hooks would pass over it and leave the
// load's value in the cache for good. What was committed up to the head
// is covered by the hooks (a flush detaches the loads in flight).
func (l *syncLoop) doResync(ctx context.Context, why ResyncReason) error {
	j := l.n.cfg.Journal
	l.n.cfg.Logger.Warn("tandem: node resynchronises: dropping what it derived from the journal",
		"node", l.n.cfg.NodeID, "reason", string(why), "position", l.pos)
	// Numbered before the epoch and the head are read (see waitFor).
	l.mu.Lock()
	l.resyncNum++
	num := l.resyncNum
	l.mu.Unlock()
	// The epoch first: a head read after it belongs to that epoch or to a
	// later one, which the next poll notices (a head of an older journal
	// under a newer epoch would skip the new journal's records).
	epoch, err := j.Epoch(ctx)
	if err != nil {
		return err
	}
	head, err := j.Head(ctx)
	if err != nil {
		return err
	}
	bo := backoff.New(10*time.Millisecond, l.n.cfg.SyncDelay)
	for i, hook := range l.resync {
		for attempt := 1; ; attempt++ {
			stack, err := runResyncHook(ctx, hook, why)
			if err == nil {
				break
			}
			if attempt == 1 || attempt%10 == 0 {
				if stack != nil {
					l.n.cfg.Logger.Error("tandem: resync hook panicked; retrying", "node", l.n.cfg.NodeID,
						"hook", i, "attempt", attempt, "err", err, "stack", string(stack))
				} else {
					l.n.cfg.Logger.Warn("tandem: resync hook failed; retrying", "node", l.n.cfg.NodeID,
						"hook", i, "attempt", attempt, "err", err)
				}
			}
			select {
			case <-ctx.Done():
				return ctx.Err()
			case <-time.After(bo.Next()):
			}
		}
	}
	l.pos, l.at = head, recordID{}
	l.mu.Lock()
	l.epoch = epoch
	// The position may go down: publish it as it is.
	l.st.Revision, l.st.Head, l.stAt = head, head, recordID{}
	l.st.Resyncs++
	l.resyncDone = max(l.resyncDone, num)
	close(l.advanced)
	l.advanced = make(chan struct{})
	l.mu.Unlock()
	if err := l.save(ctx); err != nil {
		return fmt.Errorf("save position: %w", err)
	}
	return nil
}

// runResyncHook runs hook, turning a panic into an error (with the stack
// of the panic): a resync hook runs on the goroutine of Start or of the
// sync loop, and a failed attempt of either is retried.
func runResyncHook(ctx context.Context, hook func(context.Context, ResyncReason) error, why ResyncReason) (stack []byte, err error) {
	defer func() {
		if p := recover(); p != nil {
			stack, err = debug.Stack(), fmt.Errorf("resync hook panicked: %v", p)
		}
	}()
	return nil, hook(ctx, why)
}

func (l *syncLoop) start() {
	go l.run()
}

func (l *syncLoop) wake() {
	select {
	case l.wakeCh <- struct{}{}:
	default:
	}
}

// run syncs on push wake-ups, every SyncDelay (jittered), and on request.
// Requests made while a sync runs are answered by the next one, so
// concurrent requests share a sync. Every sync's poll checks the epoch,
// the tail and the head; an idle node sends one poll per SyncDelay. A
// position applied but not stored yet is saved when due, without a poll.
func (l *syncLoop) run() {
	defer close(l.done)
	delay := l.n.cfg.SyncDelay
	timer := time.NewTimer(time.Hour)
	timer.Stop()
	next := time.Now().Add(backoff.Jitter(delay, 0.1))
	for {
		wait := time.Until(next)
		due, saving := l.saveDue()
		if saving && due < wait {
			wait = due
		}
		timer.Reset(max(wait, 0))
		tick, woken := false, true
		select {
		case <-l.ctx.Done():
			timer.Stop()
			return
		case <-l.wakeCh:
		case _, ok := <-l.watch:
			if !ok {
				l.mu.Lock()
				l.watch = nil
				l.mu.Unlock()
			}
		case <-timer.C:
			tick, woken = !time.Now().Before(next), false
		}
		timer.Stop()
		l.reqMu.Lock()
		reqs := l.reqs
		l.reqs = nil
		l.reqMu.Unlock()
		if !tick && !woken && len(reqs) == 0 {
			// A save came due (the last sync ended before it was).
			if err := l.maybeSave(l.ctx, true); err != nil {
				l.report(err)
			}
			continue
		}
		if len(reqs) == 0 {
			now := time.Now()
			if now.Before(l.refusedUntil) {
				// The database refused a connection: wake-ups wait
				// for the retry (next), which polls.
				continue
			}
			if l.n.renewalLate() {
				// The membership renewal is overdue (refused
				// connections, a slow database): leave the
				// connections to it, and poll once it has gone
				// through. Requests are served all the same.
				next = now.Add(min(max(delay/20, 10*time.Millisecond), 250*time.Millisecond))
				continue
			}
		}
		if tick {
			next = time.Now().Add(backoff.Jitter(delay, 0.1))
		}
		err := l.sync(l.ctx, tick)
		if tick && err == nil && l.pending {
			l.relay(l.ctx)
		}
		for _, r := range reqs {
			r <- err
		}
		if errors.Is(err, dialect.ErrTooManyConnections) {
			// Degrade to polling, backing off: retry after a jittered,
			// doubling wait (up to SyncDelay), not on every wake-up.
			l.refusedUntil = time.Now().Add(backoff.Jitter(l.refusedBo.Next(), 0.2))
			next = l.refusedUntil
		} else if err == nil {
			l.refusedBo.Reset()
		}
		if err == nil && l.saveErr != nil && l.pos != l.saved {
			// The position is not stored: the last save failed, and
			// the next waits for its backoff (maybeSave). Requests got
			// the sync's own outcome; Stats and the logs keep the node
			// failing, not recovered between two attempts.
			err = fmt.Errorf("save position: %w", l.saveErr)
		}
		l.report(err)
	}
}

// relayer is a journal with an outbox (journal.SQL): entries published in
// application transactions wait in it until a relay moves them.
type relayer interface {
	Relay(ctx context.Context) (int64, error)
}

// relay moves, on poll ticks whose poll saw the outbox non-empty, what
// application transactions of any node committed to it and nobody relayed
// yet (the writer died after its commit): so nothing committed waits
// longer than a SyncDelay or two. A failure is logged; the next tick tries
// again.
func (l *syncLoop) relay(ctx context.Context) {
	r, ok := l.n.cfg.Journal.(relayer)
	if !ok {
		return
	}
	n, err := r.Relay(ctx)
	switch {
	case err != nil && ctx.Err() == nil:
		l.n.cfg.Logger.Warn("tandem: relaying pending entries failed; the next poll tries again", "node", l.n.cfg.NodeID, "err", err)
	case n > 0:
		l.n.cfg.Logger.Info("tandem: relayed entries another node had left pending", "node", l.n.cfg.NodeID, "records", n)
		l.wake()
	}
}

// failLogEvery is how often a node that keeps failing to sync logs it
// again (the first failure is logged at once).
const failLogEvery = 30 * time.Second

func (l *syncLoop) report(err error) {
	if err != nil && l.ctx.Err() != nil {
		return // stopping
	}
	now := time.Now()
	l.mu.Lock()
	was := l.failing
	l.failing = err != nil
	l.st.LastSyncErr = err
	logAgain := false
	var count int64
	var since time.Time
	if err != nil {
		l.st.SyncErrors++
		if !was {
			l.failSince, l.failCount, l.failLogged = now, 0, now
		}
		l.failCount++
		if was && now.Sub(l.failLogged) >= failLogEvery {
			l.failLogged, logAgain = now, true
		}
	}
	count, since = l.failCount, l.failSince
	l.mu.Unlock()
	switch {
	case err != nil && !was:
		l.n.cfg.Logger.Warn("tandem: sync failing; retrying on the next wake-up", "node", l.n.cfg.NodeID, "err", err)
	case logAgain:
		l.n.cfg.Logger.Warn("tandem: sync still failing", "node", l.n.cfg.NodeID, "failures", count,
			"since", since, "err", err)
	case err == nil && was:
		l.n.cfg.Logger.Info("tandem: sync recovered", "node", l.n.cfg.NodeID, "failures", count, "after", now.Sub(since).Round(time.Millisecond))
	}
}

// request asks for a sync and waits for its outcome.
func (l *syncLoop) request(ctx context.Context) error {
	ch := make(chan error, 1)
	l.reqMu.Lock()
	l.reqs = append(l.reqs, ch)
	l.reqMu.Unlock()
	l.wake()
	select {
	case err := <-ch:
		return err
	case <-ctx.Done():
		return l.waitError(ctx.Err())
	case <-l.done:
		if err := l.failure(); err != nil {
			return err
		}
		return ErrNotRunning
	}
}

// waitError wraps a waiter's ctx error with the record the node is stuck
// at, if any.
func (l *syncLoop) waitError(err error) error {
	l.mu.Lock()
	a := l.cur
	l.mu.Unlock()
	if a == nil {
		return err
	}
	return fmt.Errorf("%w (the node waits at a record: %w)", err, l.handlerError(a))
}

// firstSync is Start's sync. After a poll or a save that gave up on a
// connection that hung (SyncTimeout), it syncs again at once, for as long
// as ctx allows: the next statement runs on another connection, and a poll
// reads fewer records.
func (l *syncLoop) firstSync(ctx context.Context) error {
	for {
		err := l.sync(ctx, false)
		if !errors.Is(err, errSyncTimeout) || ctx.Err() != nil {
			return err
		}
		l.report(err)
	}
}

// errSyncTimeout marks a sync that gave up on a statement after
// Config.SyncTimeout; the next one runs on another connection.
var errSyncTimeout = errors.New("no answer within SyncTimeout")

// waitFor returns once pos >= rev, syncing as needed, or once a resync
// that began after the call ended: that resync dropped what the node
// derived from the journal and went on from a head read after the call,
// and a revision the journal then did not hold (lost when it went back,
// or of another epoch) will not be applied as such. A revision already
// reached is confirmed only after one poll (current) shows the position
// still valid; otherwise the requested sync resyncs.
//
// "Began after the call" is told by number: doResync takes the next
// number (resyncNum) under mu before it reads the epoch and the head, and
// records it as resyncDone once it ended successfully. waitFor reads
// resyncNum under mu at the call, as began; a resync numbered above began
// took its number after that read, so its head was read after the call.
// The one numbered began may be running at the call and may have read
// its head before it — below rev, which the journal may hold by now (the
// writer committed rev after that read) — so it does not count: waitFor
// needs resyncDone > began. A resync that failed keeps its number and is
// never done, and costs later waiters nothing: the next one's number is
// higher still.
func (l *syncLoop) waitFor(ctx context.Context, rev int64) error {
	bo := backoff.New(time.Millisecond, 50*time.Millisecond)
	l.mu.Lock()
	reached, began := l.st.Revision >= rev, l.resyncNum
	l.mu.Unlock()
	if reached && l.current(ctx) {
		return nil
	}
	for {
		l.mu.Lock()
		advanced := l.advanced
		l.mu.Unlock()
		if err := l.request(ctx); err != nil && !errors.Is(err, errSyncTimeout) {
			return err
		}
		// The sync checked the position (or gave up on a connection
		// that hung: the next runs on another, as long as ctx allows).
		l.mu.Lock()
		reached = l.st.Revision >= rev || l.resyncDone > began
		l.mu.Unlock()
		if reached {
			return nil
		}
		// Not visible yet (a commit in flight): wait for progress or a
		// moment, then ask again.
		select {
		case <-advanced:
		case <-time.After(bo.Next()):
		case <-ctx.Done():
			return l.waitError(ctx.Err())
		}
	}
}

// current reports whether the position the node published is still
// valid, by one poll (one statement on SQL) that starts at the record
// before it, as the sync's polls do: the journal is in the position's
// epoch, its head is not below the position, and the record at the
// position is the one the node applied there — or was pruned, with
// nothing after it. It reports false when the poll fails or cannot tell:
// the caller then syncs, and the sync resyncs if the position is invalid.
func (l *syncLoop) current(ctx context.Context) bool {
	l.mu.Lock()
	pos, at, epoch := l.st.Revision, l.stAt, l.epoch
	l.mu.Unlock()
	if pos < 1 {
		return false
	}
	pctx, cancel := context.WithTimeout(ctx, l.n.cfg.SyncTimeout)
	defer cancel()
	res, err := journal.PollRecords(pctx, l.n.cfg.Journal, pos-1, 1)
	switch {
	case err != nil || res.Epoch != epoch || res.Head < pos:
		return false
	case len(res.Records) == 0: // dense from pos: the record at pos is gone
		return res.Tail == pos+1
	}
	return at.zero() || idOf(res.Records[0]) == at
}

// bounded runs f (a sync) on its own goroutine and returns its result. If
// ctx ends and f does not return within stopGrace — a handler ignores its
// context — it leaves f behind: the loop is abandoned (it stores nothing
// more) and the error names the stuck handler.
func (l *syncLoop) bounded(ctx context.Context, f func(context.Context) error) error {
	res := make(chan error, 1)
	w := make(chan struct{})
	l.mu.Lock()
	l.worker = w
	l.mu.Unlock()
	go func() {
		defer close(w)
		res <- f(ctx)
	}()
	select {
	case err := <-res:
		return err
	case <-ctx.Done():
	}
	select {
	case err := <-res:
		return err
	case <-time.After(stopGrace):
	}
	l.abandoned.Store(true)
	return fmt.Errorf("%w (gave up: %w)", l.stuckError(), ctx.Err())
}

// workerEnded reports whether the goroutine of the last bounded sync ended.
func (l *syncLoop) workerEnded() bool {
	l.mu.Lock()
	w := l.worker
	l.mu.Unlock()
	if w == nil {
		return true
	}
	select {
	case <-w:
		return true
	default:
		return false
	}
}

// stopGrace is how long Start and Stop wait, after their context ended,
// for a sync whose handler honours its context to return.
const stopGrace = 100 * time.Millisecond

// stop ends the loop, then runs a final sync bounded by stopDelay. Both
// waits are bounded by ctx and stopDelay, whatever the handlers do.
func (l *syncLoop) stop(ctx context.Context, stopDelay time.Duration) error {
	fctx, cancel := context.WithTimeout(ctx, stopDelay)
	defer cancel()
	l.cancel()
	select {
	case <-l.done:
	case <-fctx.Done():
		select {
		case <-l.done:
		case <-time.After(stopGrace):
			l.abandoned.Store(true)
			return fmt.Errorf("%w (gave up: %w)", l.stuckError(), fctx.Err())
		}
	}
	if err := l.failure(); err != nil {
		return err
	}
	l.reqMu.Lock()
	reqs := l.reqs
	l.reqs = nil
	l.reqMu.Unlock()
	err := l.bounded(fctx, func(ctx context.Context) error { return l.sync(ctx, false) })
	for _, r := range reqs {
		r <- err
	}
	if err != nil {
		return fmt.Errorf("final sync: %w", err)
	}
	if l.pos != l.saved {
		if err := l.save(context.WithoutCancel(ctx)); err != nil {
			return fmt.Errorf("save position: %w", err)
		}
	}
	return nil
}

// recordID identifies a record read at a revision: a record written later
// at the same revision (ResyncRewritten) differs in its commit time, and
// almost surely in its writer and content too.
type recordID struct {
	nodeID, instance, producer string
	unixNano                   int64
	payload                    [sha256.Size]byte
}

func idOf(rec journal.Record) recordID {
	return recordID{nodeID: rec.NodeID, instance: rec.Instance, producer: rec.Producer,
		unixNano: rec.Time.UnixNano(), payload: sha256.Sum256(rec.Payload)}
}

func (id recordID) zero() bool { return id == recordID{} }
