package cluster

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"time"

	"github.com/tandem-go/tandem/internal/backoff"
	"github.com/tandem-go/tandem/journal"
	"github.com/tandem-go/tandem/revision"
)

// syncLoop owns a node's position. One goroutine runs syncs; callers ask
// for one (request, waitFor) or wake it (wake). pos and epoch are only
// written by whoever runs a sync: Start before the goroutine exists, then
// the goroutine, then Stop after it ended.
type syncLoop struct {
	n        *Node
	handlers map[string]Handler
	resync   []func(ctx context.Context, why ResyncReason) error

	pos   int64
	epoch string
	// saved and savedAt: the position last stored, and when. applied
	// foreign records since then make the next save due at once.
	saved   int64
	savedAt time.Time
	foreign bool

	mu       sync.Mutex
	st       Stats
	advanced chan struct{} // closed and replaced whenever pos advances
	failing  bool

	wakeCh chan struct{}
	reqMu  sync.Mutex
	reqs   []chan error
	watch  <-chan struct{}

	ctx    context.Context // cancelled by stop
	cancel context.CancelFunc
	done   chan struct{}
	// failed, once set, ends the loop for good: requests get it, and the
	// final sync of stop is skipped (the node must not touch its position).
	failed error
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
	l := &syncLoop{n: n, handlers: n.handlers, resync: n.resync,
		advanced: make(chan struct{}), wakeCh: make(chan struct{}, 1), done: make(chan struct{})}
	n.mu.Unlock()
	l.ctx, l.cancel = context.WithCancel(context.Background())
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
	switch {
	case errors.Is(err, revision.ErrNotFound):
		if n.cfg.StartAt == StartAtBeginning {
			tail, err := j.Tail(ctx)
			if err != nil {
				return nil, err
			}
			l.pos = tail - 1
		} else if l.pos, err = j.Head(ctx); err != nil {
			return nil, err
		}
		if err := l.save(ctx); err != nil {
			return nil, err
		}
	case err != nil:
		return nil, err
	case p.Epoch != epoch:
		l.pos = p.Revision
		if err := l.doResync(ctx, ResyncEpoch); err != nil {
			return nil, err
		}
	default:
		l.pos = p.Revision
	}
	l.st.Revision = l.pos
	if journal.Watchable(j) {
		w, err := j.(journal.Watcher).Watch(l.ctx)
		if err != nil {
			n.cfg.Logger.Warn("tandem: no push wake-ups; polling only", "node", n.cfg.NodeID, "err", err)
		} else {
			l.watch = w
		}
	}
	return l, nil
}

func (l *syncLoop) save(ctx context.Context) error {
	if err := l.n.cfg.Revisions.Save(ctx, l.n.cfg.NodeID, l.pos, l.epoch); err != nil {
		return err
	}
	l.saved, l.savedAt, l.foreign = l.pos, time.Now(), false
	return nil
}

// saveEvery bounds how long an unsaved position may wait during a long
// catch-up, or when only the node's own records moved it.
const saveEvery = time.Second

// maybeSave stores the position when it is due: at the end of a sync that
// applied other nodes' records (so that Barrier sees it), and otherwise at
// most every saveEvery. A position is never stored ahead of what the
// handlers applied; storing it less often only means more records applied
// again after a crash, which at-least-once delivery allows.
func (l *syncLoop) maybeSave(ctx context.Context, endOfSync bool) error {
	if l.pos == l.saved {
		return nil
	}
	if !(endOfSync && l.foreign) && time.Since(l.savedAt) < saveEvery {
		return nil
	}
	if err := l.save(ctx); err != nil {
		return fmt.Errorf("save position: %w", err)
	}
	return nil
}

// advance publishes pos to Stats and waiters, waking them if it moved.
func (l *syncLoop) advance() {
	l.mu.Lock()
	if l.st.Revision == l.pos {
		l.mu.Unlock()
		return
	}
	l.st.Revision = l.pos
	close(l.advanced)
	l.advanced = make(chan struct{})
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
	st.Head = max(st.Head, st.Revision) // the head is never below what was applied
	st.Lag = st.Head - st.Revision
	return st
}

func (l *syncLoop) count(f func(st *Stats)) {
	l.mu.Lock()
	f(&l.st)
	l.mu.Unlock()
}

// sync reads and applies records until it is caught up, saving the
// position after every batch.
func (l *syncLoop) sync(ctx context.Context) error {
	j := l.n.cfg.Journal
	for {
		recs, err := j.Read(ctx, l.pos, l.n.cfg.BatchSize)
		if errors.Is(err, journal.ErrBehindTail) {
			if err := l.doResync(ctx, ResyncBehindTail); err != nil {
				return err
			}
			continue
		}
		if err != nil {
			return err
		}
		if len(recs) == 0 {
			if err := l.maybeSave(ctx, true); err != nil {
				return err
			}
			l.count(func(st *Stats) { st.Head, st.LastSync = max(st.Head, l.pos), time.Now() })
			return nil
		}
		for _, rec := range recs {
			if err := l.apply(ctx, rec); err != nil {
				l.advance()
				if l.pos != l.saved {
					// Keep what was applied; the rest comes again.
					_ = l.save(context.WithoutCancel(ctx))
				}
				return err
			}
			l.pos = rec.Revision
		}
		l.advance() // once per batch: waiters need no finer steps
		if err := l.maybeSave(ctx, false); err != nil {
			return err
		}
	}
}

// apply delivers rec to its producer's handler, retrying a failing
// handler with backoff until it succeeds or ctx ends; it never skips it.
func (l *syncLoop) apply(ctx context.Context, rec journal.Record) error {
	if rec.NodeID == l.n.cfg.NodeID && !l.n.cfg.DeliverOwn {
		return nil
	}
	l.foreign = true
	h := l.handlers[rec.Producer]
	if h == nil {
		l.count(func(st *Stats) { st.Unhandled++ })
		return nil
	}
	bo := backoff.New(10*time.Millisecond, l.n.cfg.SyncDelay)
	for attempt := 1; ; attempt++ {
		err := h.Apply(ctx, rec)
		if err == nil {
			l.count(func(st *Stats) { st.Applied++ })
			return nil
		}
		if ctx.Err() != nil {
			return ctx.Err()
		}
		l.count(func(st *Stats) { st.HandlerFailures++ })
		if attempt == 1 || attempt%10 == 0 {
			l.n.cfg.Logger.Warn("tandem: handler failed; retrying, the node waits at this record",
				"node", l.n.cfg.NodeID, "producer", rec.Producer, "revision", rec.Revision, "attempt", attempt, "err", err)
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(bo.Next()):
		}
	}
}

// doResync runs the resync hooks (retrying a failing one), then continues
// from the journal's head in its current epoch.
func (l *syncLoop) doResync(ctx context.Context, why ResyncReason) error {
	j := l.n.cfg.Journal
	l.n.cfg.Logger.Warn("tandem: node resynchronises: dropping what it derived from the journal",
		"node", l.n.cfg.NodeID, "reason", string(why), "position", l.pos)
	bo := backoff.New(10*time.Millisecond, l.n.cfg.SyncDelay)
	for _, hook := range l.resync {
		for {
			err := hook(ctx, why)
			if err == nil {
				break
			}
			l.n.cfg.Logger.Warn("tandem: resync hook failed; retrying", "node", l.n.cfg.NodeID, "err", err)
			select {
			case <-ctx.Done():
				return ctx.Err()
			case <-time.After(bo.Next()):
			}
		}
	}
	head, err := j.Head(ctx)
	if err != nil {
		return err
	}
	epoch, err := j.Epoch(ctx)
	if err != nil {
		return err
	}
	l.pos, l.epoch = head, epoch
	if err := l.save(ctx); err != nil {
		return fmt.Errorf("save position: %w", err)
	}
	l.count(func(st *Stats) { st.Resyncs++ })
	l.advance()
	return nil
}

func (l *syncLoop) start() { go l.run() }

func (l *syncLoop) wake() {
	select {
	case l.wakeCh <- struct{}{}:
	default:
	}
}

// run syncs on push wake-ups, every SyncDelay (jittered), and on request.
// Requests made while a sync runs are answered by the next one, so
// concurrent requests share a sync.
func (l *syncLoop) run() {
	defer close(l.done)
	delay := l.n.cfg.SyncDelay
	for {
		timer := time.NewTimer(backoff.Jitter(delay, 0.1))
		tick := false
		select {
		case <-l.ctx.Done():
			timer.Stop()
			return
		case <-l.wakeCh:
		case _, ok := <-l.watch:
			if !ok {
				l.watch = nil
			}
		case <-timer.C:
			tick = true
		}
		timer.Stop()
		l.reqMu.Lock()
		reqs := l.reqs
		l.reqs = nil
		l.reqMu.Unlock()
		err := l.checkEpoch(tick)
		if err == nil {
			err = l.sync(l.ctx)
		}
		if err == nil && tick {
			err = l.refreshHead(l.ctx)
		}
		for _, r := range reqs {
			r <- err
		}
		l.report(err)
	}
}

// refreshHead reads the journal's head for Stats (Head, Lag). It runs on
// poll ticks only: syncs answer their callers without this extra query.
func (l *syncLoop) refreshHead(ctx context.Context) error {
	head, err := l.n.cfg.Journal.Head(ctx)
	if err != nil {
		return err
	}
	l.count(func(st *Stats) { st.Head = max(head, st.Head) })
	return nil
}

// checkEpoch, on poll ticks, notices a journal recreated under a running
// node (a restored database, a recreated folder).
func (l *syncLoop) checkEpoch(tick bool) error {
	if !tick {
		return nil
	}
	epoch, err := l.n.cfg.Journal.Epoch(l.ctx)
	if err != nil || epoch == l.epoch {
		return err
	}
	return l.doResync(l.ctx, ResyncEpoch)
}

func (l *syncLoop) report(err error) {
	if err != nil && l.ctx.Err() != nil {
		return // stopping
	}
	l.mu.Lock()
	was := l.failing
	l.failing = err != nil
	if err != nil {
		l.st.SyncErrors++
	}
	l.mu.Unlock()
	switch {
	case err != nil && !was:
		l.n.cfg.Logger.Warn("tandem: sync failing; retrying on the next wake-up", "node", l.n.cfg.NodeID, "err", err)
	case err == nil && was:
		l.n.cfg.Logger.Info("tandem: sync recovered", "node", l.n.cfg.NodeID)
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
		return ctx.Err()
	case <-l.done:
		if err := l.failure(); err != nil {
			return err
		}
		return ErrNotRunning
	}
}

// waitFor returns once pos >= rev, syncing as needed.
func (l *syncLoop) waitFor(ctx context.Context, rev int64) error {
	bo := backoff.New(time.Millisecond, 50*time.Millisecond)
	for {
		l.mu.Lock()
		reached, advanced := l.st.Revision >= rev, l.advanced
		l.mu.Unlock()
		if reached {
			return nil
		}
		if err := l.request(ctx); err != nil {
			return err
		}
		l.mu.Lock()
		reached = l.st.Revision >= rev
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
			return ctx.Err()
		}
	}
}

// stop ends the loop, then runs a final sync bounded by stopDelay.
func (l *syncLoop) stop(ctx context.Context, stopDelay time.Duration) error {
	l.cancel()
	<-l.done
	if err := l.failure(); err != nil {
		return err
	}
	fctx, cancel := context.WithTimeout(ctx, stopDelay)
	defer cancel()
	l.reqMu.Lock()
	reqs := l.reqs
	l.reqs = nil
	l.reqMu.Unlock()
	err := l.sync(fctx)
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
