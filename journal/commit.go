package journal

import (
	"context"
	"errors"
	"fmt"
	"runtime"
	"sync/atomic"
	"time"
)

// batchWriter is what a backend gives the group committer: one durable,
// atomic write of the entries of one or more appends.
type batchWriter interface {
	// writeBatch commits entries as consecutive records in one
	// transaction and returns the first revision. expectHead >= 0 makes it
	// conditional (only then is the batch a single append). On error
	// nothing was written unless the error says the outcome is unknown.
	writeBatch(ctx context.Context, entries []Entry, expectHead int64) (int64, error)
}

// preparer is implemented by batch writers that acquire a resource before
// they send a batch (the SQL journal takes its append connection from the
// pool). Nothing is sent while prepare runs, so an append whose context
// ends meanwhile is answered at once, and the committer gives up on
// prepare once every append of the batch has ended or when it is closed;
// then it sends only the appends still waiting.
type preparer interface {
	// prepared reports that the writer is ready for the next writeBatch
	// as it is (it holds its connection): the committer then skips
	// prepare and what it sets up around it.
	prepared() bool
	// prepare readies the writer for the next writeBatch; on error
	// nothing was sent.
	prepare(ctx context.Context) error
}

// idler is implemented by batch writers that hold a resource between
// batches (the SQL journal's append connection). The committer calls idle,
// on its own goroutine, when no append came for the duration holding
// returns while it reports true.
type idler interface {
	holding() (bool, time.Duration)
	idle()
}

type appendReq struct {
	ctx     context.Context
	entries []Entry
	expect  int64 // -1: unconditional
	size    int
	res     chan appendRes // buffered, 1
	// state is reqPending until the append is dropped or sent; whoever
	// moves it out of reqPending sends its one answer on res.
	state atomic.Int32
}

// The states of an appendReq.
const (
	// reqPending: nothing has been sent for the append, and its answer
	// is still due.
	reqPending int32 = iota
	// reqDropped: its context ended before its batch was sent; it was
	// answered with its context's error and is left out of the batch.
	reqDropped
	// reqSent: it is in the batch being sent and gets the batch's
	// outcome from the committer.
	reqSent
)

// drop answers r with its context's error, unless r was dropped or sent
// already, and reports whether it did. It is safe for concurrent use.
func (r *appendReq) drop() bool {
	if !r.state.CompareAndSwap(reqPending, reqDropped) {
		return false
	}
	r.res <- appendRes{err: r.ctx.Err()}
	return true
}

type appendRes struct {
	revs []int64
	err  error
}

// committer coalesces the appends that are waiting while a batch is being
// written into the next batch: one lock acquisition and one commit for all
// of them. Appends waiting for the committer are not yet committed to
// anything, so a context that ends while waiting aborts cleanly, also while
// the batch it joined waits for what it needs before it is sent (a
// connection); once its batch is sent, an append waits for the batch's
// outcome.
type committer struct {
	w            batchWriter
	batchTimeout time.Duration

	stats commitStats
	// inflight counts the callers inside append: in a batch being
	// written, or waiting for the next.
	inflight atomic.Int64

	reqs chan *appendReq
	jobs chan func() // run on the committer goroutine, between batches
	// closing ends when close is called (it stops a batch's prepare);
	// quit is its Done channel.
	closing context.Context
	quit    <-chan struct{}
	shut    context.CancelFunc
	done    chan struct{}
}

// commitStats counts what the committer did; read with load.
type commitStats struct {
	appends, records, batches, failed atomic.Int64
}

// Stats describes the work of one journal instance since it was opened.
type Stats struct {
	// Appends is the number of Append and AppendIf calls committed.
	Appends int64
	// Records is the number of records they committed.
	Records int64
	// Batches is the number of group commits (transactions) they took;
	// Records/Batches is the average group size.
	Batches int64
	// FailedBatches is the number of group commits that failed.
	FailedBatches int64

	// The SQL journal's connection hygiene and open outcomes (zero for
	// the file journal).

	// ConnsDiscarded counts append connections closed for good after an
	// error, instead of going back to the pool.
	ConnsDiscarded int64
	// ResolvedCommitted and ResolvedNotWritten count group commits whose
	// outcome was open and which the journal looked up: found committed
	// (reported as success), or found absent (reported as a plain error).
	ResolvedCommitted, ResolvedNotWritten int64
	// OutcomeUnknown counts group commits whose outcome stayed unknown
	// (the database unreachable for the resolve timeout).
	OutcomeUnknown int64
	// Relayed counts the records this instance moved from the pending
	// table into the journal (AppendTx's entries, of any node).
	Relayed int64
}

func (c *committer) statsSnapshot() Stats {
	return Stats{
		Appends:       c.stats.appends.Load(),
		Records:       c.stats.records.Load(),
		Batches:       c.stats.batches.Load(),
		FailedBatches: c.stats.failed.Load(),
	}
}

func newCommitter(w batchWriter, batchTimeout time.Duration) *committer {
	c := &committer{
		w:            w,
		batchTimeout: batchTimeout,
		reqs:         make(chan *appendReq),
		jobs:         make(chan func()),
		done:         make(chan struct{}),
	}
	c.closing, c.shut = context.WithCancel(context.Background())
	c.quit = c.closing.Done()
	go c.run()
	return c
}

// append validates entries and hands them to the committer; expect >= 0
// makes the append conditional on the head. Errors carry the operation's
// prefix.
func (c *committer) append(ctx context.Context, expect int64, entries []Entry) ([]int64, error) {
	revs, err := c.submit(ctx, expect, entries)
	if err != nil {
		return nil, fmt.Errorf("append journal: %w", err)
	}
	return revs, nil
}

func (c *committer) submit(ctx context.Context, expect int64, entries []Entry) ([]int64, error) {
	if err := checkEntries(entries); err != nil {
		return nil, err
	}
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	c.inflight.Add(1)
	defer c.inflight.Add(-1)
	r := &appendReq{ctx: ctx, entries: entries, expect: expect, res: make(chan appendRes, 1)}
	for _, e := range entries {
		r.size += len(e.Payload)
	}
	select {
	case c.reqs <- r:
	case <-ctx.Done():
		return nil, ctx.Err()
	case <-c.quit:
		return nil, ErrClosed
	}
	res := <-r.res
	return res.revs, res.err
}

// maxLinger bounds how long the committer waits for the appends it
// expects before it writes a smaller batch. A commit costs far more (a
// flush to disk, and on a contended cluster a turn at the global lock), so
// waiting a little for the callers of the last batch, which re-append as
// soon as they are answered, cuts the number of commits under load. A lone
// appender never waits.
const maxLinger = 200 * time.Microsecond

func (c *committer) run() {
	defer close(c.done)
	var carry *appendReq
	// expect is how many callers were inside append when the last batch
	// was written: those in it are re-appending now, the others were
	// waiting. Waiting for them keeps out-of-phase appenders from
	// settling into a commit each.
	expect := 1
	iw, _ := c.w.(idler)
	idleTimer := time.NewTimer(time.Hour)
	idleTimer.Stop()
	for {
		first := carry
		carry = nil
		for first == nil {
			// While the writer holds a resource, give it back after a
			// quiet spell. One timer serves every wait (no allocation per
			// batch; since Go 1.23 Reset and Stop leave no stale tick).
			var idle <-chan time.Time
			if iw != nil {
				if held, after := iw.holding(); held {
					idleTimer.Reset(after)
					idle = idleTimer.C
				}
			}
			select {
			case first = <-c.reqs:
			case <-c.quit:
				idleTimer.Stop()
				return
			case <-idle:
				iw.idle()
			case job := <-c.jobs:
				job()
			}
			idleTimer.Stop()
		}
		batch := []*appendReq{first}
		n, size := len(first.entries), first.size
		if first.expect < 0 {
			var start time.Time
		collect:
			for {
				select {
				case r := <-c.reqs:
					if r.expect >= 0 || n+len(r.entries) > MaxAppendEntries || size+r.size > MaxAppendSize {
						carry = r
						break collect
					}
					batch = append(batch, r)
					n += len(r.entries)
					size += r.size
				default:
					// Appenders answered by the last batch are waking up
					// and re-appending; give them a moment (never when
					// there were no more callers than this batch has).
					if len(batch) >= expect {
						break collect
					}
					if start.IsZero() {
						start = time.Now()
					} else if time.Since(start) > maxLinger {
						break collect
					}
					runtime.Gosched()
				}
			}
		}
		expect = max(int(c.inflight.Load()), 1)
		c.write(batch, n)
	}
}

// write commits one batch and answers every append in it. An append
// whose context ends before the batch is sent is answered at once with its
// context's error and left out (also while the writer prepares); when the
// committer is closed while the writer prepares, nothing is sent and every
// append left gets ErrClosed; once sent, every append in the batch gets
// the batch's outcome.
func (c *committer) write(batch []*appendReq, n int) {
	live := dropEnded(batch)
	if len(live) == 0 {
		return
	}
	ctx, cancel := context.WithTimeout(context.Background(), c.batchTimeout)
	defer cancel()
	var err error
	if p, ok := c.w.(preparer); ok && !p.prepared() {
		err = c.prepare(ctx, p, live)
	}
	// From here on the appends left are the committer's to answer.
	if live = claim(live); len(live) == 0 {
		return
	}
	if err != nil {
		if !errors.Is(err, ErrClosed) {
			c.stats.failed.Add(1)
		}
		for _, r := range live {
			r.res <- appendRes{err: err}
		}
		return
	}
	entries := make([]Entry, 0, n)
	for _, r := range live {
		entries = append(entries, r.entries...)
	}
	first, err := c.w.writeBatch(ctx, entries, live[0].expect)
	if err != nil {
		c.stats.failed.Add(1)
	} else {
		c.stats.batches.Add(1)
		c.stats.appends.Add(int64(len(live)))
		c.stats.records.Add(int64(len(entries)))
	}
	next := first
	for _, r := range live {
		if err != nil {
			r.res <- appendRes{err: err}
			continue
		}
		revs := make([]int64, len(r.entries))
		for i := range revs {
			revs[i] = next
			next++
		}
		r.res <- appendRes{revs: revs}
	}
}

// prepare runs p.prepare for the pending appends reqs. Meanwhile an append
// whose context ends is dropped (answered) at once, on the goroutine
// context.AfterFunc starts. prepare's context ends with parent, once every
// append of reqs is dropped, or when the committer is closed; in the last
// case a failed p.prepare is reported as ErrClosed. prepare stops its
// callbacks before it returns; one already running can still drop only an
// append that claim has not moved to reqSent.
func (c *committer) prepare(parent context.Context, p preparer, reqs []*appendReq) error {
	ctx, cancel := context.WithCancelCause(parent)
	defer cancel(nil)
	var left atomic.Int64
	left.Store(int64(len(reqs)))
	stops := make([]func() bool, 0, len(reqs)+1)
	defer func() {
		for _, stop := range stops {
			stop()
		}
	}()
	for _, r := range reqs {
		stops = append(stops, context.AfterFunc(r.ctx, func() {
			if r.drop() && left.Add(-1) == 0 {
				cancel(context.Canceled)
			}
		}))
	}
	stops = append(stops, context.AfterFunc(c.closing, func() { cancel(ErrClosed) }))
	err := p.prepare(ctx)
	if err != nil && errors.Is(context.Cause(ctx), ErrClosed) {
		return ErrClosed // nothing was sent
	}
	return err
}

// dropEnded drops the appends of batch whose context has ended (see
// appendReq.drop) and returns the others, in order, in batch's backing
// array.
func dropEnded(batch []*appendReq) []*appendReq {
	live := batch[:0]
	for _, r := range batch {
		if r.ctx.Err() != nil {
			r.drop()
			continue
		}
		live = append(live, r)
	}
	return live
}

// claim moves the pending appends of batch whose context has not ended to
// reqSent and returns them, in order, in batch's backing array; it drops
// those whose context has ended and skips those dropped already.
func claim(batch []*appendReq) []*appendReq {
	live := batch[:0]
	for _, r := range batch {
		if r.ctx.Err() == nil && r.state.CompareAndSwap(reqPending, reqSent) {
			live = append(live, r)
			continue
		}
		r.drop()
	}
	return live
}

// do runs fn on the committer goroutine, between two batches, and waits
// for it. fn may use what the committer owns (the append connection).
func (c *committer) do(ctx context.Context, fn func()) error {
	done := make(chan struct{})
	select {
	case c.jobs <- func() { defer close(done); fn() }:
	case <-ctx.Done():
		return ctx.Err()
	case <-c.quit:
		return ErrClosed
	}
	<-done
	return nil
}

// close stops accepting appends and waits until the batch in flight is done
// (or ctx ends). A batch whose writer is still preparing is not sent: its
// appends get ErrClosed.
func (c *committer) close(ctx context.Context) error {
	c.shut()
	select {
	case <-c.done:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}
