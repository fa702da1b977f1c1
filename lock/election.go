package lock

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/tandem-go/tandem/internal/backoff"
)

// Campaign makes this node a candidate for leadership of name until ctx
// ends. Whenever it wins, it calls lead with a context that ends when the
// leadership is lost (the lease could not be confirmed in time) or ctx
// ends. When lead returns, the node resigns: the lease is released at
// once so that a follower takes over promptly, and this node campaigns
// again after a jittered pause of about a TTL (so that a node whose lead
// keeps failing does not grab leadership straight back). Followers try
// every TTL/10 or so, jittered.
//
// lead must stop its work when its context ends: by then another node may
// already be leader. Work that must never run twice should also be fenced
// (Lease.Fenced, SQL.FenceTx). Campaign returns ctx's error.
func (c *Client) Campaign(ctx context.Context, name string, lead func(ctx context.Context, l *Lease)) error {
	if lead == nil {
		return fmt.Errorf("campaign %q: %w: lead is nil", name, ErrInvalidArgument)
	}
	for {
		l, err := c.Acquire(ctx, name)
		if err != nil {
			if ctx.Err() != nil {
				return ctx.Err()
			}
			// The store did not answer: campaign on after a pause.
			c.cfg.Logger.Warn("tandem: campaign could not reach the lease store", "lease", name, "err", err)
			if !sleep(ctx, backoff.Jitter(c.cfg.TTL/2, 0.5)) {
				return ctx.Err()
			}
			continue
		}
		c.cfg.Logger.Info("tandem: leadership gained", "lease", name, "token", l.Token(), "node", c.owner.NodeID)
		lctx, cancel := context.WithCancel(l.Context())
		stop := context.AfterFunc(ctx, cancel)
		lead(lctx, l)
		stop()
		cancel()
		rctx, rcancel := context.WithTimeout(context.WithoutCancel(ctx), c.cfg.TTL)
		rerr := l.Release(rctx)
		rcancel()
		c.cfg.Logger.Info("tandem: leadership ended", "lease", name, "token", l.Token(), "node", c.owner.NodeID,
			"cause", context.Cause(l.Context()), "release_err", rerr)
		if !sleep(ctx, backoff.Jitter(c.cfg.TTL, 0.5)) {
			return ctx.Err()
		}
	}
}

// RunOnce runs fn under the lease name if this node can acquire it now,
// and releases it afterwards. It reports whether fn ran; when another node
// holds the lease, it returns false and no error. fn's context ends if the
// lease is lost while it runs.
func (c *Client) RunOnce(ctx context.Context, name string, fn func(ctx context.Context) error) (bool, error) {
	if fn == nil {
		return false, fmt.Errorf("run %q: %w: fn is nil", name, ErrInvalidArgument)
	}
	l, err := c.TryAcquire(ctx, name)
	if errors.Is(err, ErrUnavailable) {
		return false, nil
	}
	if err != nil {
		return false, err
	}
	fctx, cancel := context.WithCancel(l.Context())
	stop := context.AfterFunc(ctx, cancel)
	ferr := fn(fctx)
	stop()
	cancel()
	rctx, rcancel := context.WithTimeout(context.WithoutCancel(ctx), c.cfg.TTL)
	defer rcancel()
	if err := l.Release(rctx); err != nil && ferr == nil {
		return true, fmt.Errorf("run %q: release: %w", name, err)
	}
	return true, ferr
}

// RunEvery runs fn every interval on exactly one node of the cluster, like
// a clustered Quartz job, until ctx ends: the nodes campaign for the lease
// name, and the leader runs fn at once and then every interval (measured
// from the start of one run to the start of the next) for as long as it
// leads. If the leader dies, another node takes over after the lease
// expires and runs fn at once. fn's context ends when the leadership is
// lost. An error from fn is logged; the schedule goes on. RunEvery returns
// ctx's error.
func (c *Client) RunEvery(ctx context.Context, name string, interval time.Duration, fn func(ctx context.Context) error) error {
	if interval <= 0 {
		return fmt.Errorf("run %q: %w: interval is %v, must be > 0", name, ErrInvalidArgument, interval)
	}
	if fn == nil {
		return fmt.Errorf("run %q: %w: fn is nil", name, ErrInvalidArgument)
	}
	return c.Campaign(ctx, name, func(lctx context.Context, l *Lease) {
		for {
			start := time.Now()
			if err := fn(lctx); err != nil && lctx.Err() == nil {
				c.cfg.Logger.Warn("tandem: scheduled run failed", "lease", name, "node", c.owner.NodeID, "err", err)
			}
			if !sleep(lctx, interval-time.Since(start)) {
				return
			}
		}
	})
}

// sleep waits d or until ctx ends; it reports whether d passed.
func sleep(ctx context.Context, d time.Duration) bool {
	if d <= 0 {
		return ctx.Err() == nil
	}
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
		return true
	case <-ctx.Done():
		return false
	}
}
