package lock_test

import (
	"context"
	"fmt"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/tandem-go/tandem/internal/dbtest"
	"github.com/tandem-go/tandem/lock"
)

// BenchmarkAcquireRelease measures lease round trips (TryAcquire then
// Release, through lock.Client) per second: one goroutine on one name, and
// 8 goroutines each on its own name.
func BenchmarkAcquireRelease(b *testing.B) {
	backends := []string{"file"}
	for _, be := range dbtest.Backends {
		backends = append(backends, be.Name)
	}
	for _, name := range backends {
		for _, par := range []int{1, 8} {
			b.Run(fmt.Sprintf("%s/goroutines=%d", name, par), func(b *testing.B) {
				benchAcquireRelease(b, openBenchStore(b, name), par)
			})
		}
	}
}

func openBenchStore(b *testing.B, name string) lock.Store {
	if name == "file" {
		s, err := lock.OpenFile(context.Background(), lock.FileConfig{Dir: b.TempDir()})
		require.NoError(b, err)
		return s
	}
	for _, be := range dbtest.Backends {
		if be.Name == name {
			db := dbtest.Open(b, be)
			s, err := lock.OpenSQL(context.Background(), db.NewPool(b), be.Dialect, lock.SQLConfig{Prefix: db.Prefix})
			require.NoError(b, err)
			return s
		}
	}
	panic("unknown backend " + name)
}

func benchAcquireRelease(b *testing.B, s lock.Store, par int) {
	ctx := context.Background()
	c, err := lock.New(lock.Config{NodeID: "bench", Store: s})
	require.NoError(b, err)
	var next atomic.Int64
	var wg sync.WaitGroup
	b.ResetTimer()
	for g := range par {
		wg.Add(1)
		go func() {
			defer wg.Done()
			name := fmt.Sprintf("lease%d", g)
			for next.Add(1) <= int64(b.N) {
				l, err := c.TryAcquire(ctx, name)
				if err != nil {
					b.Error(err)
					return
				}
				if err := l.Release(ctx); err != nil {
					b.Error(err)
					return
				}
			}
		}()
	}
	wg.Wait()
	b.StopTimer()
	b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "acquire+release/s")
	b.ReportMetric(0, "ns/op")
}

// BenchmarkListFile measures one List of the file store, as Members and
// Barrier make it (Barrier every 5 to 50 ms while it waits), over 50
// leases another process holds and does not renew meanwhile: the steady
// state between two heartbeats.
func BenchmarkListFile(b *testing.B) {
	ctx := context.Background()
	dir := b.TempDir()
	holder, err := lock.OpenFile(ctx, lock.FileConfig{Dir: dir})
	require.NoError(b, err)
	for i := range 50 {
		_, ok, err := holder.TryAcquire(ctx, fmt.Sprintf("member.n%d", i), lock.Owner{NodeID: fmt.Sprintf("n%d", i), Instance: "i"}, time.Minute)
		require.NoError(b, err)
		require.True(b, ok)
	}
	observer, err := lock.OpenFile(ctx, lock.FileConfig{Dir: dir})
	require.NoError(b, err)
	for b.Loop() {
		infos, err := observer.List(ctx)
		if err != nil || len(infos) != 50 {
			b.Fatal(len(infos), err)
		}
	}
}
