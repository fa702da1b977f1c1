package cluster_test

import (
	"context"
	"fmt"
	"log/slog"
	"math"
	"math/rand/v2"
	"os"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/tandem-go/tandem/cluster"
	"github.com/tandem-go/tandem/internal/dbtest"
	"github.com/tandem-go/tandem/internal/sqldialect"
	"github.com/tandem-go/tandem/journal"
)

// The cluster benchmarks run on the file backend and on every SQL dialect
// whose database is configured (see internal/dbtest). Each node gets its
// own journal instance (SQL: its own pool), as a separate process would;
// nothing is shared in process, so a node learns of another's records only
// through the journal's push (fsnotify, LISTEN/NOTIFY) or its poll.
//
//	go test -run '^$' -bench Propagation -benchtime 200x ./cluster/
//	TANDEM_BENCH_RECORDS=1000000 go test -run '^$' -bench NodeCatchUp -benchtime 1x -timeout 60m ./cluster/

// pollSyncDelay is the SyncDelay of the propagation benchmark on backends
// without push (it is in the sub-benchmark's name). Push backends keep the
// default, 5 s, so that only the push can make them fast.
const pollSyncDelay = 200 * time.Millisecond

// benchBackend opens nodes on one shared storage.
type benchBackend struct {
	name string
	push bool // the journal can push wake-ups
	// setup makes a fresh storage for b and returns how to open nodes on
	// it; a node is stopped when b ends.
	setup func(b *testing.B) func(cfg cluster.Config) *cluster.Node
}

func benchBackends() []benchBackend {
	ctx := context.Background()
	bs := []benchBackend{{
		name: "file", push: true,
		setup: func(b *testing.B) func(cfg cluster.Config) *cluster.Node {
			dir := b.TempDir()
			return func(cfg cluster.Config) *cluster.Node {
				cfg.Dir = dir
				n, err := cluster.OpenDir(ctx, cfg)
				require.NoError(b, err)
				b.Cleanup(func() { n.Stop(ctx) })
				return n
			}
		},
	}}
	for _, be := range dbtest.Backends {
		_, push := be.Dialect.(sqldialect.Notifier)
		bs = append(bs, benchBackend{
			name: be.Name, push: push,
			setup: func(b *testing.B) func(cfg cluster.Config) *cluster.Node {
				db := dbtest.Open(b, be)
				return func(cfg cluster.Config) *cluster.Node {
					cfg.Prefix = db.Prefix
					n, err := cluster.OpenSQL(ctx, db.NewPool(b), be.Dialect, cfg)
					require.NoError(b, err)
					b.Cleanup(func() { n.Stop(ctx) })
					return n
				}
			},
		})
	}
	return bs
}

// benchLogger keeps the nodes' start and stop lines out of the benchmark
// output; warnings still show.
func benchLogger() *slog.Logger {
	return slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelWarn}))
}

// applied is what B's handler signals: a revision and when it ran.
type applied struct {
	rev int64
	at  time.Time
}

// BenchmarkPropagation measures how long a record takes from one node to
// another: each op, node A publishes one record (64-byte payload) and the
// op ends when node B's handler has run for it. Ops run one at a time. It
// reports the latency's p50, p99 and maximum in microseconds, and records
// per second.
//
// Push backends (file: fsnotify; PostgreSQL: LISTEN/NOTIFY) run with the
// default SyncDelay of 5 s, so a latency far below it is the push's doing.
// Polling backends run with SyncDelay = 200 ms, and each op starts after an
// untimed random pause in [0, SyncDelay), so that publishes fall at random
// points of B's poll cycle, as real ones do (back to back, every publish
// would land just after B's last poll: the worst case, every time).
func BenchmarkPropagation(b *testing.B) {
	for _, be := range benchBackends() {
		name, delay := be.name, time.Duration(0)
		if !be.push {
			delay = pollSyncDelay
			name += "/syncdelay=" + delay.String()
		}
		b.Run(name, func(b *testing.B) { benchPropagation(b, be, delay) })
	}
}

func benchPropagation(b *testing.B, be benchBackend, syncDelay time.Duration) {
	ctx := context.Background()
	open := be.setup(b)
	cfg := func(id string) cluster.Config {
		return cluster.Config{NodeID: id, SyncDelay: syncDelay, Logger: benchLogger()}
	}
	a := open(cfg("a"))
	nb := open(cfg("b"))
	ch := make(chan applied, 64)
	require.NoError(b, nb.Handle("bench", cluster.HandlerFunc(func(ctx context.Context, rec journal.Record) error {
		at := time.Now()
		select {
		case ch <- applied{rec.Revision, at}:
			return nil
		case <-ctx.Done():
			return ctx.Err()
		}
	})))
	sctx, cancel := context.WithTimeout(ctx, time.Minute)
	defer cancel()
	require.NoError(b, a.Start(sctx))
	require.NoError(b, nb.Start(sctx))

	effDelay := syncDelay
	if effDelay == 0 {
		effDelay = cluster.DefaultSyncDelay
	}
	// A record must arrive by the poll at the latest; allow much more
	// before calling it lost.
	timeout := 3*effDelay + 10*time.Second
	payload := []byte(strings.Repeat("p", 64))
	op := func() time.Duration {
		start := time.Now()
		rev, err := a.Publish(ctx, "bench", payload)
		if err != nil {
			b.Fatalf("publish: %v", err)
		}
		t := time.NewTimer(timeout)
		defer t.Stop()
		for {
			select {
			case got := <-ch:
				if got.rev >= rev {
					return got.at.Sub(start)
				}
			case <-t.C:
				b.Fatalf("B did not apply revision %d within %v; B: %+v", rev, timeout, nb.Stats())
			}
		}
	}
	// Warm up connections, prepared statements and file caches.
	for range 3 {
		op()
	}

	lat := make([]time.Duration, 0, b.N)
	b.ResetTimer()
	for range b.N {
		if !be.push {
			b.StopTimer()
			time.Sleep(rand.N(syncDelay))
			b.StartTimer()
		}
		lat = append(lat, op())
	}
	b.StopTimer()

	slices.Sort(lat)
	us := func(d time.Duration) float64 { return float64(d) / float64(time.Microsecond) }
	b.ReportMetric(us(percentile(lat, 0.50)), "p50-us")
	b.ReportMetric(us(percentile(lat, 0.99)), "p99-us")
	b.ReportMetric(us(lat[len(lat)-1]), "max-us")
	b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "records/s")
	b.ReportMetric(0, "ns/op")
}

// percentile returns the q-quantile (nearest rank) of sorted.
func percentile(sorted []time.Duration, q float64) time.Duration {
	i := int(math.Ceil(q*float64(len(sorted)))) - 1
	return sorted[min(max(i, 0), len(sorted)-1)]
}

// BenchmarkNodeCatchUp measures how fast a node that is far behind catches
// up: the journal holds 1,000,000 records (512-byte payloads, written by
// another node in appends of 1,000; TANDEM_BENCH_RECORDS changes the
// count), and each op starts a fresh node at the beginning, with a no-op
// handler for their producer, and times Start until WaitFor(head) returns.
// Run it with -benchtime 1x: the journal is filled once per run of the
// benchmark function, untimed.
func BenchmarkNodeCatchUp(b *testing.B) {
	for _, be := range benchBackends() {
		b.Run(be.name, func(b *testing.B) {
			ctx := context.Background()
			open := be.setup(b)
			w := open(cluster.Config{NodeID: "writer", Logger: benchLogger()})
			fillJournal(b, w.Journal(), benchRecords())
			head, err := w.Journal().Head(ctx)
			require.NoError(b, err)

			b.ResetTimer()
			for i := range b.N {
				b.StopTimer()
				n := open(cluster.Config{NodeID: fmt.Sprintf("b%d", i), StartAt: cluster.StartAtBeginning, Logger: benchLogger()})
				require.NoError(b, n.Handle("bench", cluster.HandlerFunc(func(context.Context, journal.Record) error { return nil })))
				sctx, cancel := context.WithTimeout(ctx, time.Hour)
				b.StartTimer()
				require.NoError(b, n.Start(sctx))
				require.NoError(b, n.WaitFor(sctx, head))
				b.StopTimer()
				cancel()
				require.EqualValues(b, head, n.Stats().Applied, "every record was applied")
				require.NoError(b, n.Stop(ctx))
			}
			b.ReportMetric(float64(head)*float64(b.N)/b.Elapsed().Seconds(), "records/s")
			b.ReportMetric(0, "ns/op")
		})
	}
}

func benchRecords() int64 {
	if n, _ := strconv.ParseInt(os.Getenv("TANDEM_BENCH_RECORDS"), 10, 64); n > 0 {
		return n
	}
	return 1_000_000
}

// fillJournal appends n 512-byte records, 1,000 per append (the last may
// be short), from 4 goroutines.
func fillJournal(b *testing.B, j journal.Journal, n int64) {
	ctx := context.Background()
	entries := make([]journal.Entry, journal.MaxAppendEntries)
	for i := range entries {
		entries[i] = journal.Entry{Producer: "bench", Payload: []byte(strings.Repeat("y", 512))}
	}
	var next atomic.Int64
	var wg sync.WaitGroup
	for range 4 {
		wg.Go(func() {
			for {
				end := next.Add(int64(len(entries)))
				k := min(int64(len(entries)), n-(end-int64(len(entries))))
				if k <= 0 {
					return
				}
				if _, err := j.Append(ctx, entries[:k]...); err != nil {
					b.Error(err)
					return
				}
			}
		})
	}
	wg.Wait()
	if b.Failed() {
		b.FailNow()
	}
}
