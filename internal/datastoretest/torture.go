package datastoretest

import (
	"bytes"
	"context"
	"errors"
	"io"
	"log/slog"
	"math/rand/v2"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/tandem-go/tandem/datastore"
	"github.com/tandem-go/tandem/lock"
)

// TortureConfig shapes a Torture run.
type TortureConfig struct {
	Instances int           // nodes, each with its own store instance; the first two also collect
	Workers   int           // goroutines per node changing references
	Duration  time.Duration // how long they work
}

// app is the application's view: which blobs it refers to (a multiset,
// as rows of a table would), committed at once, and how to make each
// blob's content again.
type app struct {
	mu     sync.Mutex
	refs   map[datastore.ID]int
	source map[datastore.ID][2]int // seed, size
	known  []datastore.ID          // every id ever stored, referenced or not
}

// pickKnown returns an id that was stored once, referenced or not: one
// the application remembers (an old version, an undo buffer).
func (a *app) pickKnown(r *rand.Rand) (datastore.ID, bool) {
	a.mu.Lock()
	defer a.mu.Unlock()
	if len(a.known) == 0 {
		return "", false
	}
	return a.known[r.IntN(len(a.known))], true
}

func (a *app) add(id datastore.ID) {
	a.mu.Lock()
	a.refs[id]++
	a.mu.Unlock()
}

// pick returns a referenced id, or false.
func (a *app) pick(r *rand.Rand) (datastore.ID, bool) {
	a.mu.Lock()
	defer a.mu.Unlock()
	if len(a.refs) == 0 {
		return "", false
	}
	n := r.IntN(len(a.refs))
	for id := range a.refs {
		if n == 0 {
			return id, true
		}
		n--
	}
	return "", false
}

func (a *app) drop(id datastore.ID) {
	a.mu.Lock()
	defer a.mu.Unlock()
	if a.refs[id] <= 1 {
		delete(a.refs, id)
	} else {
		a.refs[id]--
	}
}

func (a *app) each(ctx context.Context, yield func(datastore.ID) error) error {
	a.mu.Lock()
	list := make([]datastore.ID, 0, len(a.refs))
	for id := range a.refs {
		list = append(list, id)
	}
	a.mu.Unlock()
	for _, id := range list {
		if err := yield(id); err != nil {
			return err
		}
	}
	return nil
}

// Torture runs cfg.Instances nodes whose workers follow the protocol of
// package datastore — put new content (some of it stored already) and
// refer to it, copy references after touching their blob (putting the
// content again when the touch finds it gone), drop references — while
// the first two nodes collect garbage again and again under one lease,
// with a short grace period. Afterwards every referenced blob must be
// readable and intact, and once the grace period has passed, a last
// collection must leave exactly the referenced blobs.
func Torture(t *testing.T, h Harness, cfg TortureConfig) {
	ctx := ctxT(t)
	a := &app{refs: map[datastore.ID]int{}, source: map[datastore.ID][2]int{}}
	var stores []datastore.Store
	for range cfg.Instances {
		stores = append(stores, h.Open(t))
	}
	sizes := []int{0, 5, datastore.MinRecordLength, h.ChunkSize + 1, 2*h.ChunkSize + 3}
	var puts, dedups, touches, reputs, drops, runs, deleted, skipped, fenced atomic.Int64

	putContent := func(s datastore.Store, seed, size int) (datastore.ID, error) {
		data := content(uint64(seed), size)
		in, err := s.Put(ctx, bytes.NewReader(data))
		if err != nil {
			return "", err
		}
		a.mu.Lock()
		if _, ok := a.source[in.ID]; !ok {
			a.known = append(a.known, in.ID)
		}
		a.source[in.ID] = [2]int{seed, size}
		a.mu.Unlock()
		puts.Add(1)
		return in.ID, nil
	}

	stop := make(chan struct{})
	var wg sync.WaitGroup
	errs := make(chan error, cfg.Instances*cfg.Workers+2)
	for n, s := range stores {
		for w := range cfg.Workers {
			wg.Add(1)
			go func() {
				defer wg.Done()
				r := rand.New(rand.NewPCG(uint64(n), uint64(w)))
				for {
					select {
					case <-stop:
						return
					default:
					}
					var err error
					switch op := r.IntN(11); {
					case op < 3: // new content, or content stored already (a small pool)
						seed := 1000 + r.IntN(40)
						if op == 0 {
							seed = 1_000_000 + n*100_000 + w*10_000 + r.IntN(10_000)
						} else {
							dedups.Add(1)
						}
						var id datastore.ID
						if id, err = putContent(s, seed, sizes[seed%len(sizes)]); err == nil {
							a.add(id)
						}
					case op < 8: // copy a reference, or revive a remembered id: touch, then refer
						id, ok := a.pick(r)
						if op == 7 {
							id, ok = a.pickKnown(r)
						}
						if !ok {
							continue
						}
						err = s.Touch(ctx, id)
						if errors.Is(err, datastore.ErrNotFound) {
							// Collected since its last reference went:
							// store the content again.
							a.mu.Lock()
							src := a.source[id]
							a.mu.Unlock()
							reputs.Add(1)
							_, err = putContent(s, src[0], src[1])
						} else {
							touches.Add(1)
						}
						if err == nil {
							a.add(id)
						}
					default: // drop a reference
						if id, ok := a.pick(r); ok {
							a.drop(id)
							drops.Add(1)
						}
					}
					if err != nil {
						errs <- err
						return
					}
				}
			}()
		}
	}
	for n := range 2 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			ls := h.Locks(t)
			lc, err := lock.New(lock.Config{NodeID: "collector" + string(rune('a'+n)), Store: ls, TTL: 2 * time.Second})
			if err != nil {
				errs <- err
				return
			}
			quiet := slog.New(slog.NewTextHandler(io.Discard, nil))
			c, err := datastore.NewCollector(stores[n], datastore.GCConfig{GracePeriod: Grace, BatchSize: 5, Logger: quiet})
			if err != nil {
				errs <- err
				return
			}
			for {
				select {
				case <-stop:
					return
				case <-time.After(time.Duration(20+n*7) * time.Millisecond):
				}
				l, err := lc.TryAcquire(ctx, datastore.DefaultLeaseName)
				if errors.Is(err, lock.ErrUnavailable) {
					continue
				}
				if err != nil {
					errs <- err
					return
				}
				run, err := c.Collect(ctx, l, datastore.ReferencesFunc(a.each))
				l.Release(ctx)
				if errors.Is(err, lock.ErrFenced) || errors.Is(err, lock.ErrNotHeld) {
					fenced.Add(1)
					continue
				}
				if err != nil {
					errs <- err
					return
				}
				runs.Add(1)
				deleted.Add(run.Deleted)
				skipped.Add(run.Skipped)
			}
		}()
	}
	time.Sleep(cfg.Duration)
	close(stop)
	wg.Wait()
	close(errs)
	for err := range errs {
		require.NoError(t, err)
	}
	t.Logf("puts %d (of stored content %d, again after collection %d), touches %d, drops %d; collections %d (fenced off %d), blobs deleted %d, skipped as touched during the sweep %d",
		puts.Load(), dedups.Load(), reputs.Load(), touches.Load(), drops.Load(), runs.Load(), fenced.Load(), deleted.Load(), skipped.Load())
	require.Positive(t, runs.Load(), "collections ran")
	require.Positive(t, deleted.Load(), "collections deleted garbage")
	require.Positive(t, touches.Load(), "references were copied")
	// Reviving a collected blob (Touch: ErrNotFound, then Put) happens in
	// most runs but depends on timing; TouchDelete covers it always.

	// No referenced blob is missing or damaged.
	a.mu.Lock()
	defer a.mu.Unlock()
	for id := range a.refs {
		src := a.source[id]
		r, err := stores[2%len(stores)].Get(ctx, id)
		require.NoError(t, err, "referenced blob %s (seed %d, %d bytes) is missing", id, src[0], src[1])
		got, err := io.ReadAll(r)
		r.Close()
		require.NoError(t, err, "referenced blob %s", id)
		require.Equal(t, content(uint64(src[0]), src[1]), got)
	}
	// Unreferenced blobs are gone once their grace period has passed.
	time.Sleep(Grace + 50*time.Millisecond)
	c := collector(t, stores[0], datastore.GCConfig{})
	_, err := c.Collect(ctx, lease(t, h.Locks(t), "final"), datastore.ReferencesFunc(func(ctx context.Context, yield func(datastore.ID) error) error {
		for id := range a.refs {
			if err := yield(id); err != nil {
				return err
			}
		}
		return nil
	}))
	require.NoError(t, err)
	var left []datastore.ID
	for _, in := range walk(t, stores[1]) {
		if a.refs[in.ID] == 0 {
			left = append(left, in.ID)
		}
	}
	require.Empty(t, left, "unreferenced blobs older than the grace period")
	require.Len(t, walk(t, stores[1]), len(a.refs), "every referenced blob, once")
	h.Check(t)
}
