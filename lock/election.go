package lock

import (
	"context"
	"errors"
	"fmt"
	"runtime/debug"
	"time"

	"github.com/tandem-go/tandem/ident"
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
	if err := checkName(name); err != nil {
		return fmt.Errorf("campaign: %w", err)
	}
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
// and releases it afterwards. It reports whether fn ran; when the lease is
// held (by another node, or by this client already), it returns false and
// no error. fn gets the lease, for fencing (Lease.Fenced), and a context
// that ends if the lease is lost while it runs.
func (c *Client) RunOnce(ctx context.Context, name string, fn func(ctx context.Context, l *Lease) error) (bool, error) {
	if err := checkName(name); err != nil {
		return false, fmt.Errorf("run: %w", err)
	}
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
	ferr := fn(fctx, l)
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
// a clustered Quartz job, until ctx ends. The nodes campaign for the lease
// name (see Campaign); the leader runs fn whenever a run is due.
//
// The schedule lives in the store, not in the leader's memory: each run
// starts by acquiring the lease SchedulePrefix+name with interval as its
// TTL, and never renews it. That lease records the last run (its
// acquisition) and the next (its expiry), judged by the store like every
// lease — database time, or a heartbeat that stood still for the TTL on a
// shared folder — so no clocks are compared. A run is due when that lease
// is free. So a new leader (after a crash, a rolling restart, a
// resignation) runs fn only if the last run, by whichever node, started an
// interval ago or more: an hourly job runs once an hour however often
// leadership changes. Runs start at most once per interval and do not
// overlap; a leader notices that a run is due within interval/20 or
// RenewEvery, whichever is shorter.
//
// fn gets the leadership lease, for fencing work that must never run twice
// (Lease.Fenced), and a context that ends when the leadership is lost or
// ctx ends. A run that fn ends with an error is logged and counts as the
// period's run, except when its context had ended: a run cut short by lost
// leadership (or by ctx) that fails gives its period back (the schedule
// lease is released, when the store can be reached), so the next leader
// runs it again. A run that returns nil counts, whatever its context. A
// panic in fn is recovered and logged as an error. An acquisition of the
// schedule lease that failed but may have taken it all the same (its
// answer was lost) is looked up, and a period it took without a run is
// given back, so it costs no run.
//
// On a shared folder, a node that has just started (a restart, a new
// leader's first look) waits a full interval from its first sighting of
// the schedule lease, since it cannot tell how long ago another node
// acquired it: a restart there can delay the next run by up to an
// interval, never repeat one.
//
// interval must be between MinTTL and MaxTTL. Bad arguments — name
// (ident.LeaseName, at most ident.MaxNameLen-len(SchedulePrefix) bytes,
// without a reserved prefix), interval, a nil fn — are returned at once.
// Otherwise RunEvery returns ctx's error.
func (c *Client) RunEvery(ctx context.Context, name string, interval time.Duration, fn func(ctx context.Context, l *Lease) error) error {
	if err := checkName(name); err != nil {
		return fmt.Errorf("run every: %w", err)
	}
	marker := SchedulePrefix + name
	if err := ident.LeaseName("name", marker); err != nil {
		return fmt.Errorf("run every: %w: name %q is too long for its schedule lease %q", ErrInvalidArgument, name, marker)
	}
	if err := checkTTL(interval); err != nil {
		return fmt.Errorf("run every %q: interval: %w", name, err)
	}
	if fn == nil {
		return fmt.Errorf("run every %q: %w: fn is nil", name, ErrInvalidArgument)
	}
	poll := max(min(interval/20, c.cfg.RenewEvery), MinTTL/10)
	return c.Campaign(ctx, name, func(lctx context.Context, l *Lease) {
		bo := backoff.New(poll, c.cfg.TTL/2)
		failing := false
		unsure := false // an acquisition failed, and may have taken the schedule lease all the same
		for lctx.Err() == nil {
			token, due, err := c.cfg.Store.TryAcquire(lctx, marker, c.owner, interval)
			if err != nil {
				unsure = true
			}
			if !due && unsure && lctx.Err() == nil {
				unsure = c.giveBackLostRun(lctx, name, marker)
			}
			switch {
			case err != nil:
				if lctx.Err() != nil {
					return
				}
				if !failing {
					c.cfg.Logger.Warn("tandem: schedule lease unreachable; retrying", "job", name, "node", c.owner.NodeID, "err", err)
				}
				failing = true
				sleep(lctx, bo.Next())
				continue
			case !due:
				failing = false
				bo.Reset()
				sleep(lctx, backoff.Jitter(poll, 0.1))
				continue
			}
			failing, unsure = false, false
			bo.Reset()
			c.sawSchedule(marker, token)
			err = c.runJob(lctx, l, fn)
			if err != nil && lctx.Err() != nil {
				// Cut short by lost leadership (or shutdown), as fn
				// says by failing: give the period back so that the
				// next leader runs it. A run that succeeded counts,
				// even if its context ended as it returned.
				rctx, cancel := context.WithTimeout(context.WithoutCancel(lctx), c.cfg.TTL)
				rerr := c.cfg.Store.Release(rctx, marker, c.owner, token)
				cancel()
				c.cfg.Logger.Info("tandem: scheduled run cut short; its period is given back", "job", name,
					"node", c.owner.NodeID, "cause", context.Cause(lctx), "release_err", rerr)
				return
			}
			if err != nil {
				c.cfg.Logger.Warn("tandem: scheduled run failed", "job", name, "node", c.owner.NodeID, "err", err)
			}
		}
	})
}

// giveBackLostRun looks up the schedule lease marker of job after an
// acquisition of it failed, and reports whether it is still unsure that
// the failed acquisition did not take the lease.
//
// An acquisition whose answer was lost (a connection dropped as the
// commit went through) may have taken the lease all the same. Then the
// store holds it for this client under a token the client never saw: its
// period counts as run, though fn never ran, and the leader would wait for
// it to expire, skipping a whole period. So when the lookup finds the
// lease held by this client (node and instance) under a token greater
// than every token the client saw acquired, it releases the lease with
// that token, giving the period back; the next attempt takes the lease
// anew and runs fn. That keeps at most one run per period, cluster-wide:
// the lost acquisition's period had no run, and only this client could
// have run one under it. Running fn under the found lease instead would be
// as safe, but the run would start late into a period that began at the
// lost acquisition, and the next run could follow it by less than an
// interval; a period released and taken anew starts with its run. A lease
// under a token the client saw acquired is never given back: its period
// ran, or was given back already.
//
// The failed acquisition may still be on its way to the store, so the
// lookup settles the question only when it finds the lease held by
// someone else's or a known acquisition (which a late one cannot take
// over), or when it gives the lease back; the next successful
// acquisition settles it too.
func (c *Client) giveBackLostRun(ctx context.Context, job, marker string) (unsure bool) {
	infos, err := c.cfg.Store.List(ctx)
	if err != nil {
		return true
	}
	for _, in := range infos {
		if in.Name != marker || !in.Held {
			continue
		}
		c.mu.Lock()
		seen := c.scheduled[marker]
		c.mu.Unlock()
		if in.Owner != c.owner || in.Token <= seen {
			return false
		}
		if err := c.cfg.Store.Release(ctx, marker, c.owner, in.Token); err != nil {
			return true
		}
		c.sawSchedule(marker, in.Token)
		c.cfg.Logger.Info("tandem: schedule lease taken by an acquisition whose answer was lost; its period is given back",
			"job", job, "node", c.owner.NodeID, "token", in.Token)
		return false
	}
	return true
}

// sawSchedule records that this client knows of the acquisition of the
// schedule lease marker under token.
func (c *Client) sawSchedule(marker string, token int64) {
	c.mu.Lock()
	c.scheduled[marker] = max(c.scheduled[marker], token)
	c.mu.Unlock()
}

// runJob calls fn, turning a panic into an error.
func (c *Client) runJob(ctx context.Context, l *Lease, fn func(ctx context.Context, l *Lease) error) (err error) {
	defer func() {
		if p := recover(); p != nil {
			c.cfg.Logger.Error("tandem: scheduled job panicked", "job", l.name, "node", c.owner.NodeID,
				"panic", p, "stack", string(debug.Stack()))
			err = fmt.Errorf("job %q panicked: %v", l.name, p)
		}
	}()
	return fn(ctx, l)
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
