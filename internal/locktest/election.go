package locktest

import (
	"context"
	"fmt"
	"sort"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/tandem-go/tandem/lock"
)

func newClients(t *testing.T, open Opener, n int, ttl time.Duration) []*lock.Client {
	cs := make([]*lock.Client, n)
	for i := range cs {
		c, err := lock.New(lock.Config{NodeID: fmt.Sprintf("n%d", i), Store: open(t), TTL: ttl})
		require.NoError(t, err)
		cs[i] = c
	}
	return cs
}

// testCampaign: three nodes campaign; leaders never overlap (each records
// moments it acts as leader, checked as in Contention), a leader that
// resigns is followed promptly, and Campaign returns when its context ends.
// The TTL is long (campaignTTL) and terms are short, so a follower that
// leads within the TTL of a resignation can only have got the lease
// because it was released, not because it expired.
func testCampaign(t *testing.T, open Opener) {
	const campaignTTL, term = 5 * time.Second, 150 * time.Millisecond
	ctx, cancel := context.WithCancel(ctxT(t))
	var mu sync.Mutex
	var acts []action
	var handovers []time.Duration
	var resigned time.Time
	var wg sync.WaitGroup
	for i, c := range newClients(t, open, 3, campaignTTL) {
		wg.Add(1)
		go func() {
			defer wg.Done()
			err := c.Campaign(ctx, "leader", func(lctx context.Context, l *lock.Lease) {
				mu.Lock()
				if !resigned.IsZero() {
					handovers = append(handovers, time.Since(resigned))
					resigned = time.Time{}
				}
				mu.Unlock()
				// Lead for a while, acting often, then resign.
				until := time.Now().Add(term)
				for time.Now().Before(until) && lctx.Err() == nil {
					now := time.Now()
					if !l.Held() {
						return
					}
					mu.Lock()
					acts = append(acts, action{at: now, token: l.Token(), who: fmt.Sprint(i)})
					mu.Unlock()
					time.Sleep(term / 20)
				}
				mu.Lock()
				resigned = time.Now()
				mu.Unlock()
			})
			if err != context.Canceled {
				t.Errorf("campaign returned %v, want context.Canceled", err)
			}
		}()
	}
	// A resigned node pauses about a TTL before it campaigns again, so
	// with three nodes two handovers come quickly.
	time.Sleep(3 * time.Second)
	cancel()
	wg.Wait()
	sort.Slice(acts, func(i, j int) bool { return acts[i].at.Before(acts[j].at) })
	checkTurns(t, "leader", acts)
	require.GreaterOrEqual(t, len(handovers), 2, "leadership changed hands after resignations")
	for _, h := range handovers {
		require.Less(t, h, campaignTTL/2, "a follower takes over after a resignation, not after expiry")
	}
}

// checkTurns proves that the holders' actions never interleave and that
// tokens only grow; it returns the number of holders in turn.
func checkTurns(t *testing.T, name string, as []action) int {
	t.Helper()
	turns := 0
	for k, a := range as {
		if k == 0 || a.token != as[k-1].token {
			turns++
			if k > 0 {
				require.Greater(t, a.token, as[k-1].token, "%s: %s acted with token %d after token %d", name, a.who, a.token, as[k-1].token)
			}
		}
	}
	return turns
}

// testRunOnce: of two nodes running the same job at once, exactly one
// runs it.
func testRunOnce(t *testing.T, open Opener) {
	ctx := ctxT(t)
	var ran atomic.Int32
	var wg sync.WaitGroup
	start := make(chan struct{})
	results := make(chan bool, 2)
	for _, c := range newClients(t, open, 2, TTL) {
		wg.Add(1)
		go func() {
			defer wg.Done()
			<-start
			did, err := c.RunOnce(ctx, "nightly", func(context.Context) error {
				ran.Add(1)
				time.Sleep(TTL / 2)
				return nil
			})
			if err != nil {
				t.Errorf("run once: %v", err)
			}
			results <- did
		}()
	}
	close(start)
	wg.Wait()
	close(results)
	n := 0
	for did := range results {
		if did {
			n++
		}
	}
	require.Equal(t, 1, n, "exactly one node ran the job")
	require.EqualValues(t, 1, ran.Load())
}

// testRunEvery: three nodes schedule one job; its runs never overlap and
// come about once per interval.
func testRunEvery(t *testing.T, open Opener) {
	ctx, cancel := context.WithCancel(ctxT(t))
	const interval = TTL / 3
	var mu sync.Mutex
	var runs [][2]time.Time
	var wg sync.WaitGroup
	for _, c := range newClients(t, open, 3, TTL) {
		wg.Add(1)
		go func() {
			defer wg.Done()
			_ = c.RunEvery(ctx, "report", interval, func(context.Context) error {
				s := time.Now()
				time.Sleep(interval / 5)
				mu.Lock()
				runs = append(runs, [2]time.Time{s, time.Now()})
				mu.Unlock()
				return nil
			})
		}()
	}
	const d = 10 * interval
	time.Sleep(d)
	cancel()
	wg.Wait()
	for k := 1; k < len(runs); k++ {
		require.False(t, runs[k][0].Before(runs[k-1][1]), "runs %d and %d overlap", k-1, k)
	}
	require.GreaterOrEqual(t, len(runs), 5, "about one run per interval")
	require.LessOrEqual(t, len(runs), int(d/interval)+2, "no more than one run per interval")
}
