package datastore

import (
	"context"
	"fmt"
	"log/slog"
	"sync"
	"time"

	"github.com/tandem-go/tandem/lock"
)

// Defaults and limits of GCConfig.
const (
	// DefaultGracePeriod is how long after its last Put or Touch a blob
	// is safe from collection, referenced or not: Oak's default, 24 h.
	// It must exceed the longest time between a Put or Touch and the
	// commit of the reference that the application makes for it.
	DefaultGracePeriod = 24 * time.Hour
	// DefaultBatchSize is how many blobs one fenced batch deletes.
	DefaultBatchSize = 100
	// MaxBatchSize bounds BatchSize: a batch holds the lease's fence (a
	// row lock, or the file store's lock file) while it runs, which
	// delays the holder's own renewals.
	MaxBatchSize = 10000
	// DefaultLeaseName is the lease name applications are suggested to
	// collect under (lock.Client.TryAcquire), so that one collector runs
	// at a time in the cluster.
	DefaultLeaseName = "datastore-gc"
)

// References enumerates the blob ids the application refers to: the mark
// phase of a collection. See the package doc for what it must include.
// Collect calls Each once per collection, from its own goroutine.
type References interface {
	// Each calls yield for every blob id the application refers to, and
	// returns yield's first error. It must see every reference committed
	// before it was called; references added while it runs need not be
	// seen (their blobs were put or touched, which protects them). An
	// error ends the collection with nothing deleted.
	Each(ctx context.Context, yield func(ID) error) error
}

// ReferencesFunc adapts a function to References.
type ReferencesFunc func(ctx context.Context, yield func(ID) error) error

// Each implements References.
func (f ReferencesFunc) Each(ctx context.Context, yield func(ID) error) error { return f(ctx, yield) }

// GCConfig configures a Collector. The zero value of each field means its
// default.
type GCConfig struct {
	// GracePeriod: a blob whose last Put or Touch is more recent than
	// this (in the store's time) is kept even if unreferenced. Defaults
	// to DefaultGracePeriod.
	GracePeriod time.Duration
	// BatchSize is how many blobs one fenced batch deletes. Defaults to
	// DefaultBatchSize; at most MaxBatchSize.
	BatchSize int
	// DryRun makes Collect delete nothing and report what it would
	// delete (GCRun, Report). A dry run needs no lease.
	DryRun bool
	// Report, when set, is called for every blob deleted, or that would
	// be in a dry run, from Collect's goroutine.
	Report func(Info)
	// Logger receives a line per collection. Defaults to slog.Default().
	Logger *slog.Logger
}

// GCRun is the outcome of one collection.
type GCRun struct {
	DryRun bool
	// Started is the store's time when the collection began; Cutoff is
	// Started less the grace period: blobs last used before it, and
	// unreferenced, were deleted.
	Started, Cutoff time.Time
	// Duration is how long the collection took (this node's clock).
	Duration time.Duration
	// Marked is the number of distinct ids the application referenced.
	Marked int64
	// Scanned is the number of stored blobs examined; each was kept
	// (Referenced, Recent, Skipped) or Deleted.
	Scanned int64
	// Referenced is the blobs kept because the application refers to
	// them; Recent those kept because they were used within the grace
	// period; Skipped those that looked deletable but were touched (or
	// deleted by someone else) before their batch ran.
	Referenced, Recent, Skipped int64
	// Deleted is the blobs deleted (or, in a dry run, that would be) and
	// BytesFreed their length.
	Deleted, BytesFreed int64
	// Uploads is the abandoned uploads removed: SQL uploads or temp
	// files that wrote nothing for the grace period.
	Uploads int64
}

// Kept is the number of blobs scanned and kept.
func (r GCRun) Kept() int64 { return r.Referenced + r.Recent + r.Skipped }

// GCStats is what a Collector has done since it was made.
type GCStats struct {
	// Runs is the collections that completed, Failures those that
	// failed; Deleted and BytesFreed add up both.
	Runs, Failures      int64
	Deleted, BytesFreed int64
	// Last is the last collection that completed, LastErr the error of
	// the last that failed (nil if none has).
	Last    GCRun
	LastErr error
}

// collectable is what a Collector needs of a backend, beyond Walk: the
// store's time, a fenced delete of candidates that checks their last use
// again, and the removal of abandoned uploads.
type collectable interface {
	Walk(ctx context.Context, fn func(Info) error) error
	// storeNow returns the store's current time.
	storeNow(ctx context.Context) (time.Time, error)
	// sweep deletes the blobs of batch whose last use is still before
	// cutoff, under the lease's fence, and returns those it deleted.
	sweep(ctx context.Context, lease *lock.Lease, batch []Info, cutoff time.Time) ([]Info, error)
	// reap removes uploads that wrote nothing since cutoff, under the
	// lease's fence (or only counts them, in a dry run; lease may then be
	// nil).
	reap(ctx context.Context, lease *lock.Lease, cutoff time.Time, dryRun bool) (int64, error)
}

// Collector collects the garbage of a Store: mark and sweep, safe while
// every node keeps putting and touching (see the package doc). The mark
// set is held in memory, about 60 bytes per distinct referenced id. Run one
// collection at a time in the cluster, under a lease (DefaultLeaseName):
// every delete batch is fenced by it, so a collector that lost its lease
// while paused deletes nothing. Safe for concurrent use; Collect calls
// run one at a time.
type Collector struct {
	s   collectable
	cfg GCConfig

	run sync.Mutex // one Collect at a time
	mu  sync.Mutex
	st  GCStats
}

// NewCollector validates cfg and returns a Collector of s, which must be a
// store of this package (File or SQL, possibly embedded).
func NewCollector(s Store, cfg GCConfig) (*Collector, error) {
	if cfg.GracePeriod == 0 {
		cfg.GracePeriod = DefaultGracePeriod
	}
	if cfg.BatchSize == 0 {
		cfg.BatchSize = DefaultBatchSize
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.Default()
	}
	c, ok := s.(collectable)
	if !ok {
		return nil, fmt.Errorf("datastore gc config: %w: %T is not a store of package datastore", ErrInvalidArgument, s)
	}
	if cfg.GracePeriod < 0 {
		return nil, fmt.Errorf("datastore gc config: %w: GracePeriod is %v, must be > 0", ErrInvalidArgument, cfg.GracePeriod)
	}
	if cfg.BatchSize < 0 || cfg.BatchSize > MaxBatchSize {
		return nil, fmt.Errorf("datastore gc config: %w: BatchSize is %d, must be between 1 and %d", ErrInvalidArgument, cfg.BatchSize, MaxBatchSize)
	}
	return &Collector{s: c, cfg: cfg}, nil
}

// Stats returns what the collector has done so far.
func (c *Collector) Stats() GCStats {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.st
}

// Collect runs one collection under lease, which the caller holds (and
// releases): it reads the store's time, takes the application's
// references from refs, then walks the store and deletes, in fenced
// batches, every blob that is not referenced and was last used before the
// store's time less the grace period; last, it removes abandoned uploads.
// It stops when ctx ends or the lease is lost. An error of refs ends it
// before anything is deleted. A batch the store fences off (the lease
// was taken over) fails with an error matching lock.ErrFenced.
//
// In a dry run (GCConfig.DryRun) lease may be nil and nothing is deleted.
func (c *Collector) Collect(ctx context.Context, lease *lock.Lease, refs References) (GCRun, error) {
	c.run.Lock()
	defer c.run.Unlock()
	begin := time.Now()
	run, err := c.collect(ctx, lease, refs)
	run.Duration = time.Since(begin)
	c.mu.Lock()
	c.st.Deleted += run.Deleted
	c.st.BytesFreed += run.BytesFreed
	if err != nil {
		c.st.Failures++
		c.st.LastErr = err
	} else {
		c.st.Runs++
		c.st.Last = run
	}
	c.mu.Unlock()
	attrs := []any{"dry_run", run.DryRun, "scanned", run.Scanned, "kept", run.Kept(), "referenced", run.Referenced,
		"recent", run.Recent, "skipped", run.Skipped, "deleted", run.Deleted, "bytes_freed", run.BytesFreed,
		"uploads_removed", run.Uploads, "duration", run.Duration}
	if err != nil {
		c.cfg.Logger.Warn("tandem: datastore gc failed", append(attrs, "err", err)...)
		return run, err
	}
	c.cfg.Logger.Info("tandem: datastore gc", attrs...)
	return run, nil
}

func (c *Collector) collect(ctx context.Context, lease *lock.Lease, refs References) (GCRun, error) {
	run := GCRun{DryRun: c.cfg.DryRun}
	if refs == nil {
		return run, fmt.Errorf("datastore gc: %w: refs is nil", ErrInvalidArgument)
	}
	if lease == nil && !c.cfg.DryRun {
		return run, fmt.Errorf("datastore gc: %w: a lease is required (only a dry run goes without)", ErrInvalidArgument)
	}
	if lease != nil {
		// Stop as soon as the lease is lost; the fence stops what is
		// already on its way.
		var cancel context.CancelCauseFunc
		ctx, cancel = context.WithCancelCause(ctx)
		defer cancel(nil)
		stop := context.AfterFunc(lease.Context(), func() { cancel(context.Cause(lease.Context())) })
		defer stop()
	}
	// The store's time first: everything put or touched from now on is
	// younger than the cutoff, whatever the mark below sees.
	now, err := c.s.storeNow(ctx)
	if err != nil {
		return run, fmt.Errorf("datastore gc: %w", err)
	}
	run.Started, run.Cutoff = now, now.Add(-c.cfg.GracePeriod)

	marked := map[key]struct{}{}
	err = refs.Each(ctx, func(id ID) error {
		if err := id.check("datastore gc: reference"); err != nil {
			return err
		}
		marked[id.key()] = struct{}{}
		return ctx.Err()
	})
	if err != nil {
		return run, fmt.Errorf("datastore gc: mark: %w", err)
	}
	run.Marked = int64(len(marked))

	var batch []Info
	flush := func() error {
		if len(batch) == 0 {
			return nil
		}
		defer func() { batch = batch[:0] }()
		if c.cfg.DryRun {
			for _, in := range batch {
				c.deleted(&run, in)
			}
			return nil
		}
		deleted, err := c.s.sweep(ctx, lease, batch, run.Cutoff)
		for _, in := range deleted {
			c.deleted(&run, in)
		}
		if err != nil {
			return err
		}
		run.Skipped += int64(len(batch) - len(deleted))
		return nil
	}
	err = c.s.Walk(ctx, func(in Info) error {
		run.Scanned++
		switch _, ref := marked[in.ID.key()]; {
		case ref:
			run.Referenced++
		case !in.LastUsed.Before(run.Cutoff):
			run.Recent++
		default:
			batch = append(batch, in)
			if len(batch) >= c.cfg.BatchSize {
				return flush()
			}
		}
		return nil
	})
	if err == nil {
		err = flush()
	}
	if err != nil {
		return run, fmt.Errorf("datastore gc: sweep: %w", err)
	}
	n, err := c.s.reap(ctx, lease, run.Cutoff, c.cfg.DryRun)
	run.Uploads = n
	if err != nil {
		return run, fmt.Errorf("datastore gc: remove abandoned uploads: %w", err)
	}
	return run, nil
}

func (c *Collector) deleted(run *GCRun, in Info) {
	run.Deleted++
	run.BytesFreed += in.Length
	if c.cfg.Report != nil {
		c.cfg.Report(in)
	}
}
