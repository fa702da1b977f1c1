package janitor_test

import (
	"context"
	"fmt"
	"os"
	"slices"
	"strconv"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/tandem-go/tandem/internal/dbtest"
	"github.com/tandem-go/tandem/janitor"
	"github.com/tandem-go/tandem/journal"
	"github.com/tandem-go/tandem/lock"
	"github.com/tandem-go/tandem/revision"
)

// BenchmarkPrune prunes a journal of 1,000,000 records (TANDEM_BENCH_RECORDS
// changes it) on PostgreSQL and MariaDB while 32 appenders over 4 journal
// instances append, and reports the records deleted per second and the
// appends' latency (p50, p99) while pruning, against the same appenders
// over the same time with the janitor idle, in one run. Each op is one
// fill, idle phase and pruning phase; run it with -benchtime 1x.
func BenchmarkPrune(b *testing.B) {
	for _, be := range dbtest.Backends {
		b.Run(be.Name, func(b *testing.B) {
			for range b.N {
				benchPrune(b, be)
			}
		})
	}
}

func benchPrune(b *testing.B, be dbtest.Backend) {
	ctx := context.Background()
	db := dbtest.Open(b, be)
	open := func(node string) *journal.SQL {
		pool := db.NewPool(b)
		pool.SetMaxOpenConns(12)
		j, err := journal.OpenSQL(ctx, pool, be.Dialect, journal.SQLConfig{NodeID: node, Prefix: db.Prefix})
		require.NoError(b, err)
		b.Cleanup(func() { j.Close(context.Background()) })
		return j
	}
	w := open("filler")
	n := 1_000_000
	if v, err := strconv.Atoi(os.Getenv("TANDEM_BENCH_RECORDS")); err == nil && v > 0 {
		n = v
	}
	payload := make([]byte, 128)
	batch := make([]journal.Entry, 1000)
	for i := range batch {
		batch[i] = journal.Entry{Producer: "fill", Payload: payload}
	}
	var fillWG sync.WaitGroup
	for g := range 4 {
		fillWG.Go(func() {
			for i := g * len(batch); i < n; i += 4 * len(batch) {
				_, err := w.Append(ctx, batch[:min(len(batch), n-i)]...)
				require.NoError(b, err)
			}
		})
	}
	fillWG.Wait()

	appenders := make([]*journal.SQL, 4)
	for i := range appenders {
		appenders[i] = open(fmt.Sprintf("app%d", i))
	}
	// measure appends from 32 goroutines until stop closes.
	measure := func(stop <-chan struct{}) []time.Duration {
		var mu sync.Mutex
		var lat []time.Duration
		var wg sync.WaitGroup
		for g := range 32 {
			wg.Go(func() {
				j := appenders[g%4]
				var mine []time.Duration
				for {
					select {
					case <-stop:
						mu.Lock()
						lat = append(lat, mine...)
						mu.Unlock()
						return
					default:
					}
					start := time.Now()
					_, err := j.Append(ctx, journal.Entry{Producer: "app", Payload: payload[:64]})
					require.NoError(b, err)
					mine = append(mine, time.Since(start))
				}
			})
		}
		wg.Wait()
		slices.Sort(lat)
		return lat
	}
	pct := func(lat []time.Duration, p float64) float64 {
		if len(lat) == 0 {
			return 0
		}
		return float64(lat[int(p*float64(len(lat)-1))].Microseconds()) / 1000
	}

	revs, err := revision.OpenSQL(ctx, db.DB, be.Dialect, revision.SQLConfig{Prefix: db.Prefix})
	require.NoError(b, err)
	leases, err := lock.OpenSQL(ctx, db.DB, be.Dialect, lock.SQLConfig{Prefix: db.Prefix})
	require.NoError(b, err)
	jan, err := janitor.New(janitor.Config{NodeID: "jan", Journal: w, Revisions: revs, Leases: leases, KeepRecords: -1, KeepFor: -1})
	require.NoError(b, err)

	// Pruning first, then the idle phase for as long as pruning took.
	stop := make(chan struct{})
	var during []time.Duration
	done := make(chan struct{})
	go func() { during = measure(stop); close(done) }()
	time.Sleep(200 * time.Millisecond)
	start := time.Now()
	b.ResetTimer()
	rep, err := jan.RunOnce(ctx)
	took := time.Since(start)
	b.StopTimer()
	close(stop)
	<-done
	require.NoError(b, err)
	require.GreaterOrEqual(b, rep.Deleted, int64(n))

	stop = make(chan struct{})
	done = make(chan struct{})
	var idle []time.Duration
	go func() { idle = measure(stop); close(done) }()
	time.Sleep(took)
	close(stop)
	<-done

	b.ReportMetric(float64(rep.Deleted)/took.Seconds(), "deleted/s")
	b.ReportMetric(pct(idle, 0.5), "idle-p50-ms")
	b.ReportMetric(pct(idle, 0.99), "idle-p99-ms")
	b.ReportMetric(pct(during, 0.5), "prune-p50-ms")
	b.ReportMetric(pct(during, 0.99), "prune-p99-ms")
	b.ReportMetric(float64(len(during))/took.Seconds(), "appends/s-pruning")
	b.ReportMetric(float64(len(idle))/took.Seconds(), "appends/s-idle")
}
