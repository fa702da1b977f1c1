package janitor

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"strings"
	"sync"
	"time"

	"github.com/tandem-go/tandem/ident"
	"github.com/tandem-go/tandem/journal"
	"github.com/tandem-go/tandem/lock"
	"github.com/tandem-go/tandem/revision"
)

// Defaults of Config, with Jackrabbit's names in brackets.
const (
	// DefaultFirstRunHour is the hour of day of the first scheduled run
	// [janitorFirstRunHourOfDay].
	DefaultFirstRunHour = 3
	// DefaultSleep is the time between scheduled runs [janitorSleep].
	DefaultSleep = 24 * time.Hour
	// DefaultEvictAfter is how long a node's membership lease must have
	// lapsed before the janitor evicts it: three days, so that a node down
	// over a long weekend comes back without a resync.
	DefaultEvictAfter = 72 * time.Hour
	// DefaultKeepRecords and DefaultKeepFor are the retention on top of
	// the horizon: the last 10,000 records or the last hour, whichever
	// keeps more.
	DefaultKeepRecords = 10_000
	DefaultKeepFor     = time.Hour
	// DefaultBatchSize is how many records one fenced DELETE removes.
	DefaultBatchSize = 5_000
	// DefaultBatchPause is the pause between two batches, which lets
	// appends waiting behind a batch's I/O through.
	DefaultBatchPause = 10 * time.Millisecond
	// DefaultLeaseName is the lease that makes the janitor run on one node
	// at a time.
	DefaultLeaseName = "tandem.janitor"
)

// Errors.
var (
	// ErrInvalidArgument: a bad configuration; the message names the field.
	ErrInvalidArgument = errors.New("janitor: invalid argument")
	// ErrBusy: another node holds the janitor's lease (it is running).
	ErrBusy = errors.New("janitor: another node is running the janitor")
)

// Config configures a Janitor. The zero value of each field means its
// default.
type Config struct {
	// NodeID is the id of the node the janitor runs on (the owner of its
	// lease). Required.
	NodeID string
	// Journal is pruned; it must implement journal.Pruner (both of
	// tandem's backends do). Revisions holds every node's position and
	// must implement revision.Evicter. Leases holds the janitor's lease
	// and the nodes' membership leases, and must implement lock.Fencer.
	// All three are required and are not closed by the janitor.
	Journal   journal.Journal
	Revisions revision.Store
	Leases    lock.Store

	// FirstRunHour is the hour of day (1–24; 24 is midnight) of the first
	// run, in Location. Defaults to DefaultFirstRunHour (03:00).
	FirstRunHour int
	// Location is the time zone of FirstRunHour. Defaults to time.Local.
	Location *time.Location
	// Sleep is the time from one scheduled run to the next. Defaults to
	// DefaultSleep (24 h). A sleep of whole days keeps the hour across
	// daylight-saving changes.
	Sleep time.Duration
	// Interval, when set, replaces FirstRunHour and Sleep: the janitor
	// runs Interval after Start and then every Interval (River-style
	// frequent pruning).
	Interval time.Duration

	// EvictAfter is how long a node's membership lease must have lapsed
	// (or, for a position without a lease, how long since it was saved)
	// before the node is evicted. Defaults to DefaultEvictAfter (72 h).
	EvictAfter time.Duration
	// KeepRecords and KeepFor keep at least the last KeepRecords records
	// and the records of the last KeepFor (by the store's clock), whichever
	// keeps more, however far the horizon is. Default DefaultKeepRecords
	// and DefaultKeepFor; set negative to keep nothing extra.
	KeepRecords int64
	KeepFor     time.Duration
	// BatchSize bounds the records one fenced DELETE removes, and
	// BatchPause is the pause between batches. Defaults DefaultBatchSize
	// and DefaultBatchPause.
	BatchSize  int
	BatchPause time.Duration

	// LeaseName is the janitor's lease. Defaults to DefaultLeaseName.
	// LeaseTTL is its TTL. Defaults to lock.DefaultTTL.
	LeaseName string
	LeaseTTL  time.Duration

	// Clock tells the scheduler the time. Defaults to the system clock.
	Clock lock.Clock
	// Logger receives state changes: runs that pruned or evicted, errors.
	// Defaults to slog.Default().
	Logger *slog.Logger
}

func (c Config) withDefaults() (Config, error) {
	if c.FirstRunHour == 0 {
		c.FirstRunHour = DefaultFirstRunHour
	}
	if c.Location == nil {
		c.Location = time.Local
	}
	if c.Sleep == 0 {
		c.Sleep = DefaultSleep
	}
	if c.EvictAfter == 0 {
		c.EvictAfter = DefaultEvictAfter
	}
	if c.KeepRecords == 0 {
		c.KeepRecords = DefaultKeepRecords
	}
	if c.KeepFor == 0 {
		c.KeepFor = DefaultKeepFor
	}
	if c.BatchSize == 0 {
		c.BatchSize = DefaultBatchSize
	}
	if c.BatchPause == 0 {
		c.BatchPause = DefaultBatchPause
	}
	if c.LeaseName == "" {
		c.LeaseName = DefaultLeaseName
	}
	if c.LeaseTTL == 0 {
		c.LeaseTTL = lock.DefaultTTL
	}
	if c.Clock == nil {
		c.Clock = lock.SystemClock{}
	}
	if c.Logger == nil {
		c.Logger = slog.Default()
	}
	bad := func(field, why string, v any) (Config, error) {
		return c, fmt.Errorf("%w: %s is %v, %s", ErrInvalidArgument, field, v, why)
	}
	if err := ident.NodeID("NodeID", c.NodeID); err != nil {
		return c, fmt.Errorf("%w: %w", ErrInvalidArgument, err)
	}
	if err := ident.LeaseName("LeaseName", c.LeaseName); err != nil {
		return c, fmt.Errorf("%w: %w", ErrInvalidArgument, err)
	}
	if c.Journal == nil || c.Revisions == nil || c.Leases == nil {
		return c, fmt.Errorf("%w: Journal, Revisions and Leases are required", ErrInvalidArgument)
	}
	if _, ok := c.Journal.(journal.Pruner); !ok {
		return c, fmt.Errorf("%w: Journal (%T) does not implement journal.Pruner", ErrInvalidArgument, c.Journal)
	}
	if _, ok := c.Revisions.(revision.Evicter); !ok {
		return c, fmt.Errorf("%w: Revisions (%T) does not implement revision.Evicter", ErrInvalidArgument, c.Revisions)
	}
	if _, ok := c.Leases.(lock.Fencer); !ok {
		return c, fmt.Errorf("%w: Leases (%T) does not implement lock.Fencer", ErrInvalidArgument, c.Leases)
	}
	switch {
	case c.FirstRunHour < 1 || c.FirstRunHour > 24:
		return bad("FirstRunHour", "must be 1 to 24 (24 is midnight)", c.FirstRunHour)
	case c.Sleep < 0:
		return bad("Sleep", "must be > 0", c.Sleep)
	case c.Interval < 0:
		return bad("Interval", "must be >= 0", c.Interval)
	case c.EvictAfter < 0:
		return bad("EvictAfter", "must be > 0", c.EvictAfter)
	case c.BatchSize < 0:
		return bad("BatchSize", "must be > 0", c.BatchSize)
	case c.BatchPause < 0:
		return bad("BatchPause", "must be >= 0", c.BatchPause)
	}
	return c, nil
}

// Janitor prunes a journal below what every live and recently departed
// node has read, and evicts nodes gone for longer than EvictAfter. It runs
// on a schedule (Start) or on demand (RunOnce), on one node at a time:
// whichever holds its lease; every deletion is fenced by that lease. It is
// safe for concurrent use.
type Janitor struct {
	cfg    Config
	prune  journal.Pruner
	evict  revision.Evicter
	client *lock.Client
	sched  schedule

	// beforeBatch, when set (tests), runs before each fenced step: it
	// can pause the janitor as a stopped process would be paused.
	beforeBatch func()

	mu      sync.Mutex
	stats   Stats
	started bool
	cancel  context.CancelFunc
	done    chan struct{}
}

// New validates cfg and returns a janitor, not yet started.
func New(cfg Config) (*Janitor, error) {
	cfg, err := cfg.withDefaults()
	if err != nil {
		return nil, fmt.Errorf("janitor config: %w", err)
	}
	client, err := lock.New(lock.Config{NodeID: cfg.NodeID, Store: cfg.Leases, TTL: cfg.LeaseTTL, Logger: cfg.Logger})
	if err != nil {
		return nil, fmt.Errorf("janitor config: %w", err)
	}
	return &Janitor{
		cfg:    cfg,
		prune:  cfg.Journal.(journal.Pruner),
		evict:  cfg.Revisions.(revision.Evicter),
		client: client,
		sched:  schedule{interval: cfg.Interval, hour: cfg.FirstRunHour % 24, sleep: cfg.Sleep, loc: cfg.Location},
	}, nil
}

// Start starts the schedule: the janitor runs at each scheduled time on
// whichever enabled node gets its lease. It returns at once; Stop ends it.
func (j *Janitor) Start(ctx context.Context) error {
	j.mu.Lock()
	defer j.mu.Unlock()
	if j.started {
		return fmt.Errorf("start janitor: %w: already started", ErrInvalidArgument)
	}
	j.started = true
	lctx, cancel := context.WithCancel(context.WithoutCancel(ctx))
	j.cancel, j.done = cancel, make(chan struct{})
	j.stats.NextRun = j.sched.first(j.cfg.Clock.Now())
	go j.loop(lctx, j.stats.NextRun)
	return nil
}

// Stop ends the schedule, cancelling a run in progress (its batches are
// each complete or not done), and waits for it within ctx. It is
// idempotent.
func (j *Janitor) Stop(ctx context.Context) error {
	j.mu.Lock()
	cancel, done := j.cancel, j.done
	j.mu.Unlock()
	if cancel == nil {
		return nil
	}
	cancel()
	select {
	case <-done:
		return nil
	case <-ctx.Done():
		return fmt.Errorf("stop janitor: %w", ctx.Err())
	}
}

func (j *Janitor) loop(ctx context.Context, next time.Time) {
	defer close(j.done)
	for {
		timer := time.NewTimer(next.Sub(j.cfg.Clock.Now()))
		select {
		case <-ctx.Done():
			timer.Stop()
			return
		case <-timer.C:
		}
		slot := next
		if _, err := j.runOnce(ctx); err != nil && !errors.Is(err, ErrBusy) && ctx.Err() == nil {
			j.cfg.Logger.Warn("tandem: janitor run failed; it runs again at the next scheduled time",
				"node", j.cfg.NodeID, "err", err)
		}
		next = j.sched.after(slot, j.cfg.Clock.Now())
		j.mu.Lock()
		j.stats.NextRun = next
		j.mu.Unlock()
	}
}

// RunOnce runs the janitor now, on this node, if no other node is running
// it (else it returns an error matching ErrBusy): it computes the horizon,
// evicts nodes gone for longer than EvictAfter, raises the journal's tail
// and deletes below it in fenced batches. For operators and tests; Start
// calls it on the schedule.
func (j *Janitor) RunOnce(ctx context.Context) (Report, error) {
	return j.runOnce(ctx)
}

func (j *Janitor) runOnce(ctx context.Context) (Report, error) {
	lease, err := j.client.TryAcquire(ctx, j.cfg.LeaseName)
	if errors.Is(err, lock.ErrUnavailable) {
		return Report{}, fmt.Errorf("run janitor: %w", ErrBusy)
	}
	if err != nil {
		return Report{}, fmt.Errorf("run janitor: %w", err)
	}
	defer func() {
		rctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 5*time.Second)
		defer cancel()
		_ = lease.Release(rctx)
	}()
	start := time.Now()
	rep, err := j.run(ctx, lease, false)
	rep.Duration = time.Since(start)
	if ctx.Err() == nil || err == nil {
		j.record(start, rep, err) // not a run that Stop cut short
	}
	if err != nil {
		return rep, fmt.Errorf("run janitor: %w", err)
	}
	return rep, nil
}

// Plan computes what RunOnce would do now — the horizon, who pins it, the
// nodes it would evict and the new tail — without changing anything and
// without the janitor's lease (a dry run).
func (j *Janitor) Plan(ctx context.Context) (Report, error) {
	rep, err := j.run(ctx, nil, true)
	if err != nil {
		return rep, fmt.Errorf("plan janitor: %w", err)
	}
	return rep, nil
}

// run is one janitor pass; with dryRun it only plans. lease is nil when
// dry.
//
// Every change is fenced: the store runs it only while it confirms the
// lease's token is current, and keeps anyone from taking the lease over
// meanwhile. The fence is taken per step (per batch), never across steps,
// since it also holds off the lease's own renewal. Between steps the run
// stops as soon as the lease's context says it is lost; a janitor paused
// past that check (a stopped process) is rejected by the store.
func (j *Janitor) run(ctx context.Context, lease *lock.Lease, dryRun bool) (Report, error) {
	var held context.Context
	if lease != nil {
		held = lease.Context() // ends when the lease is lost
	}
	p, epoch, err := j.plan(ctx)
	if err != nil || dryRun {
		return p, err
	}
	fenced := func(fn func(ctx context.Context) error) error {
		if err := held.Err(); err != nil {
			return fmt.Errorf("%w: %w", lock.ErrNotHeld, context.Cause(held))
		}
		if j.beforeBatch != nil {
			j.beforeBatch()
		}
		return lease.Fenced(ctx, fn)
	}
	// From here on p.Evicted lists the evictions that happened: Evict
	// declines a node that saved a new position since the plan.
	planned := p.Evicted
	p.Evicted = nil
	for _, e := range planned {
		var ok bool
		err := fenced(func(ctx context.Context) error {
			var err error
			ok, err = j.evict.Evict(ctx, e.NodeID, e.Revision)
			return err
		})
		if err != nil {
			return p, fmt.Errorf("evict %q: %w", e.NodeID, err)
		}
		if ok {
			p.Evicted = append(p.Evicted, e)
		}
	}
	if p.NewTail > p.Tail || len(p.Evicted) > 0 {
		if err := j.replan(ctx, &p, epoch, fenced); err != nil {
			return p, err
		}
	}
	for _, e := range p.Evicted {
		j.cfg.Logger.Warn("tandem: janitor evicted a node gone for longer than EvictAfter; if it returns, it resyncs",
			"node", e.NodeID, "position", e.Revision, "gone", e.Gone.Round(time.Second), "evict_after", j.cfg.EvictAfter)
	}
	if p.NewTail > p.Tail {
		err := fenced(func(ctx context.Context) error {
			_, err := j.prune.RaiseTail(ctx, p.NewTail)
			return err
		})
		if err != nil {
			return p, fmt.Errorf("raise tail to %d: %w", p.NewTail, err)
		}
	}
	for {
		var n int64
		err := fenced(func(ctx context.Context) error {
			var err error
			n, err = j.prune.DeleteBatch(ctx, j.cfg.BatchSize)
			return err
		})
		if err != nil {
			return p, fmt.Errorf("delete below tail %d after %d records: %w", p.NewTail, p.Deleted, err)
		}
		if n == 0 {
			break
		}
		p.Deleted += n
		p.Batches++
		select {
		case <-ctx.Done():
			return p, ctx.Err()
		case <-held.Done(): // the next fenced step reports it
		case <-time.After(j.cfg.BatchPause):
		}
	}
	if p.Deleted > 0 || len(p.Evicted) > 0 {
		j.cfg.Logger.Info("tandem: janitor pruned the journal", "node", j.cfg.NodeID, "tail", p.NewTail,
			"deleted", p.Deleted, "evicted", len(p.Evicted), "pinned_by", p.PinnedBy)
	}
	return p, nil
}

// plan computes the horizon and what a run would do, and returns the
// journal's epoch with it.
func (j *Janitor) plan(ctx context.Context) (Report, string, error) {
	var p Report
	var err error
	if p.Head, err = j.cfg.Journal.Head(ctx); err != nil {
		return p, "", err
	}
	if p.Tail, err = j.cfg.Journal.Tail(ctx); err != nil {
		return p, "", err
	}
	epoch, err := j.cfg.Journal.Epoch(ctx)
	if err != nil {
		return p, "", err
	}
	v, err := j.look(ctx)
	if err != nil {
		return p, "", err
	}
	now := v.now
	h := newPins(p.Head)
	for _, pos := range v.positions {
		if pos.Epoch != epoch || pos.Evicted {
			continue // it resyncs anyway: another journal's position, or evicted
		}
		h.placed[pos.NodeID] = true
		m, hasLease := v.members[pos.NodeID]
		switch {
		case hasLease && m.Held:
			h.pin(pos.NodeID, pos.Revision, "live")
		case hasLease && now.Sub(m.Expires) < j.cfg.EvictAfter:
			h.pin(pos.NodeID, pos.Revision, "departed less than EvictAfter ago")
		case !hasLease && now.Sub(pos.Updated) < j.cfg.EvictAfter:
			h.pin(pos.NodeID, pos.Revision, "no membership lease; position saved less than EvictAfter ago")
		default:
			gone := now.Sub(pos.Updated)
			if hasLease {
				gone = now.Sub(m.Expires)
			}
			p.Evicted = append(p.Evicted, Eviction{NodeID: pos.NodeID, Revision: pos.Revision, Gone: gone})
		}
	}
	h.pinUnplaced(v.members, p.Tail)
	p.Horizon, p.PinnedBy, p.PinnedWhy = h.horizon, h.by, h.why
	p.NewTail = p.Horizon
	if j.cfg.KeepRecords > 0 {
		p.NewTail = min(p.NewTail, p.Head-j.cfg.KeepRecords+1)
	}
	if j.cfg.KeepFor > 0 && p.NewTail > p.Tail {
		since, err := j.firstSince(ctx, p.Tail, min(p.NewTail, p.Head+1), now.Add(-j.cfg.KeepFor))
		if err != nil {
			return p, "", err
		}
		p.NewTail = min(p.NewTail, since)
	}
	p.NewTail = max(p.NewTail, p.Tail)
	if p.PinnedBy != "" {
		p.PinnedLag = p.Head - (p.Horizon - 1)
	}
	return p, epoch, nil
}

// view is what a plan reads of the lease and revision stores.
type view struct {
	members   map[string]lock.Info // membership leases by node id
	positions []revision.Position
	now       time.Time // the store's "now"
}

// look lists the leases, then the positions.
func (j *Janitor) look(ctx context.Context) (view, error) {
	leases, err := j.cfg.Leases.List(ctx)
	if err != nil {
		return view{}, err
	}
	positions, err := j.cfg.Revisions.List(ctx)
	if err != nil {
		return view{}, err
	}
	v := view{members: map[string]lock.Info{}, positions: positions}
	// The store's "now": the latest heartbeat of a lease that is held
	// (a run holds the janitor's own lease, acquired moments ago). A
	// lower bound, so a node is never evicted early. A held lease's
	// Renewed is store time: the database's clock, or, on a shared
	// folder, this observer's own clock when it first saw the current
	// heartbeat. Other leases do not count: a released file lease is
	// dated by the wall clock of the machine that released it, and one
	// machine whose clock runs ahead would make every departed node look
	// gone for that much longer.
	for _, l := range leases {
		if l.Held && l.Renewed.After(v.now) {
			v.now = l.Renewed
		}
		if id, ok := strings.CutPrefix(l.Name, lock.MemberPrefix); ok {
			v.members[id] = l
		}
	}
	if v.now.IsZero() {
		v.now = j.cfg.Clock.Now() // a dry run with no lease held at all
	}
	return v, nil
}

// replan looks at the stores again after the evictions, before the tail
// is raised, and lowers p's new tail to what it finds: the plan was made
// from a look taken before, and a node may have come back meanwhile. It
// pins
//
//   - every node that holds its membership lease, at its stored revision
//     even if that position is marked evicted: a live node is never pruned
//     past (one that is resyncing saves a new position soon, so pinning
//     it for one run costs little), and one without a position of this
//     journal, at the tail;
//   - every position of this journal that is not marked evicted, whatever
//     its lease: only an eviction that happened lets the tail pass a
//     position (Evict declines a node that saved since the plan).
//
// A node this run evicted that holds its lease again is not evicted in the
// end, and leaves p.Evicted. If its position still carries this run's
// marker, the marker is taken back with a fenced Unevict, which clears it
// only where the position still holds the very revision marked and is
// still marked. Leaving it would be safe — the node runs on from the
// position it loaded when it started, which the tail does not pass, and
// its next Save clears the marker — but until then barriers count the node
// as behind, status shows it evicted, and a restart before that Save would
// find the marker and resync for nothing, dropping what the node derived
// (a search index, say). The take-back races the node's own Save, which
// the fence does not hold off (it holds off other janitors): a Save since
// this look cleared the marker, so Unevict leaves the node's newer
// position alone. Setting it back to the marked revision would not be
// harmless: the node stores its position only when it moves, so until a
// new record came, a barrier on a revision in between would wait, and on
// a quiet cluster that is unbounded. The SQL store checks and writes in
// one statement; on a shared folder a window of one read and one rename
// remains (revision.File.Unevict).
func (j *Janitor) replan(ctx context.Context, p *Report, epoch string, fenced func(func(ctx context.Context) error) error) error {
	v, err := j.look(ctx)
	if err != nil {
		return fmt.Errorf("look again before raising the tail: %w", err)
	}
	h := newPins(p.Head)
	marked := map[string]revision.Position{} // live nodes' evicted positions
	for _, pos := range v.positions {
		if pos.Epoch != epoch {
			continue
		}
		m, hasLease := v.members[pos.NodeID]
		switch live := hasLease && m.Held; {
		case live && pos.Evicted:
			h.placed[pos.NodeID] = true
			marked[pos.NodeID] = pos
			h.pin(pos.NodeID, pos.Revision, "live, with a position marked evicted")
		case live:
			h.placed[pos.NodeID] = true
			h.pin(pos.NodeID, pos.Revision, "live")
		case !pos.Evicted:
			h.pin(pos.NodeID, pos.Revision, "position not evicted (saved during the run)")
		}
	}
	h.pinUnplaced(v.members, p.Tail)

	evicted := p.Evicted[:0:0]
	for _, e := range p.Evicted {
		if m, ok := v.members[e.NodeID]; !ok || !m.Held {
			evicted = append(evicted, e) // still gone: the eviction stands
			continue
		}
		if pos, ok := marked[e.NodeID]; ok && pos.Revision == e.Revision {
			var undone bool // false: saved (or deleted) since the look
			err := fenced(func(ctx context.Context) error {
				var err error
				undone, err = j.evict.Unevict(ctx, e.NodeID, e.Revision)
				return err
			})
			if err != nil {
				p.Evicted = evicted
				return fmt.Errorf("take back the eviction of %q, which returned during the run: %w", e.NodeID, err)
			}
			if undone {
				j.cfg.Logger.Info("tandem: janitor took back an eviction: the node returned during the run",
					"node", e.NodeID, "position", e.Revision)
			}
		}
	}
	p.Evicted = evicted

	if h.horizon < p.Horizon {
		p.Horizon, p.PinnedBy, p.PinnedWhy = h.horizon, h.by, h.why
		p.PinnedLag = p.Head - (p.Horizon - 1)
	}
	p.NewTail = max(min(p.NewTail, h.horizon), p.Tail)
	return nil
}

// pins computes a horizon, for plan and for replan's second look: the
// lowest revision + 1 that a node pins, which node and why (the first
// to pin it), and the nodes whose stored position the caller considered.
type pins struct {
	horizon int64
	by, why string
	placed  map[string]bool
}

// newPins starts a horizon above head, which nothing pins yet.
func newPins(head int64) *pins {
	return &pins{horizon: head + 1, placed: map[string]bool{}}
}

// pin lowers the horizon to rev + 1, on behalf of node.
func (h *pins) pin(node string, rev int64, why string) {
	if rev+1 < h.horizon || h.by == "" && rev+1 == h.horizon {
		h.horizon, h.by, h.why = rev+1, node, why
	}
}

// pinUnplaced pins, at tail - 1, every live member whose position was not
// placed: where it stands is unknown, so nothing may be pruned
// (Jackrabbit's second caveat).
func (h *pins) pinUnplaced(members map[string]lock.Info, tail int64) {
	for id, m := range members {
		if m.Held && !h.placed[id] {
			h.pin(id, tail-1, "live without a stored position")
		}
	}
}

// firstSince returns the lowest revision in [lo, hi) whose record was
// committed at or after cutoff, or hi when none is: a binary search, since
// records are committed in revision order under one lock (their times are
// the store's clock at commit, so they do not go down, clock steps aside).
func (j *Janitor) firstSince(ctx context.Context, lo, hi int64, cutoff time.Time) (int64, error) {
	lo = max(lo, 1)
	for lo < hi {
		mid := lo + (hi-lo)/2
		recs, err := j.cfg.Journal.Read(ctx, mid-1, 1)
		if err != nil {
			return 0, fmt.Errorf("find the records of the last %v: %w", j.cfg.KeepFor, err)
		}
		if len(recs) == 0 || !recs[0].Time.Before(cutoff) {
			hi = mid
		} else {
			lo = mid + 1
		}
	}
	return hi, nil
}
