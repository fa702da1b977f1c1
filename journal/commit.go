package journal

import (
	"context"
	"sync"
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

type appendReq struct {
	ctx     context.Context
	entries []Entry
	expect  int64 // -1: unconditional
	size    int
	res     chan appendRes // buffered, 1
}

type appendRes struct {
	revs []int64
	err  error
}

// committer coalesces the appends that are waiting while a batch is being
// written into the next batch: one lock acquisition and one commit for all
// of them. Appends waiting for the committer are not yet committed to
// anything, so a context that ends while waiting aborts cleanly; once in a
// batch, an append waits for the batch's outcome.
type committer struct {
	w            batchWriter
	batchTimeout time.Duration

	reqs      chan *appendReq
	quit      chan struct{}
	done      chan struct{}
	closeOnce sync.Once
}

func newCommitter(w batchWriter, batchTimeout time.Duration) *committer {
	c := &committer{
		w:            w,
		batchTimeout: batchTimeout,
		reqs:         make(chan *appendReq),
		quit:         make(chan struct{}),
		done:         make(chan struct{}),
	}
	go c.run()
	return c
}

// append validates entries and hands them to the committer.
func (c *committer) append(ctx context.Context, expect int64, entries []Entry) ([]int64, error) {
	if err := checkEntries(entries); err != nil {
		return nil, err
	}
	if err := ctx.Err(); err != nil {
		return nil, err
	}
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

func (c *committer) run() {
	defer close(c.done)
	var carry *appendReq
	for {
		first := carry
		carry = nil
		if first == nil {
			select {
			case first = <-c.reqs:
			case <-c.quit:
				return
			}
		}
		batch := []*appendReq{first}
		n, size := len(first.entries), first.size
		if first.expect < 0 {
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
					break collect
				}
			}
		}
		c.write(batch, n)
	}
}

// write commits one batch and answers every append in it.
func (c *committer) write(batch []*appendReq, n int) {
	live := batch[:0]
	entries := make([]Entry, 0, n)
	for _, r := range batch {
		if err := r.ctx.Err(); err != nil {
			r.res <- appendRes{err: err}
			continue
		}
		live = append(live, r)
		entries = append(entries, r.entries...)
	}
	if len(live) == 0 {
		return
	}
	ctx, cancel := context.WithTimeout(context.Background(), c.batchTimeout)
	first, err := c.w.writeBatch(ctx, entries, live[0].expect)
	cancel()
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

// close stops accepting appends and waits until the batch in flight is done
// (or ctx ends).
func (c *committer) close(ctx context.Context) error {
	c.closeOnce.Do(func() { close(c.quit) })
	select {
	case <-c.done:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}
