// Package locktest is the conformance suite every lock.Store must pass:
// the file store and the SQL store on every dialect.
package locktest

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"sort"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/tandem-go/tandem/ident"
	"github.com/tandem-go/tandem/lock"
)

// Opener opens another instance of the store under test on the same
// storage, as another node would (its own pool, its own handles). It closes
// it when t ends.
type Opener func(t *testing.T) lock.Store

// NewStore returns an Opener on fresh storage for one test.
type NewStore func(t *testing.T) Opener

// TTL is the lease TTL the suite uses: short, so expiry tests are quick.
const TTL = 300 * time.Millisecond

// Run runs the suite; subtests run in parallel, each on its own storage.
func Run(t *testing.T, newStore NewStore) {
	tests := []struct {
		name string
		fn   func(t *testing.T, open Opener)
	}{
		{"AcquireRenewRelease", testAcquireRenewRelease},
		{"TokensIncrease", testTokensIncrease},
		{"Expiry", testExpiry},
		{"List", testList},
		{"Fence", testFence},
		{"PausedHolder", testPausedHolder},
		{"BadInput", testBadInput},
		{"Campaign", testCampaign},
		{"RunOnce", testRunOnce},
		{"RunEvery", testRunEvery},
		{"ScheduleRollingRestart", testScheduleRollingRestart},
		{"OwnLease", testOwnLease},
		{"StalledRenew", testStalledRenew},
		{"Contention", func(t *testing.T, open Opener) {
			Contention(t, open, ContentionConfig{Instances: 4, Goroutines: 4, Names: 2, Duration: 3 * time.Second})
		}},
		{"ClockSkew", func(t *testing.T, open Opener) {
			Contention(t, open, ContentionConfig{Instances: 3, Goroutines: 3, Names: 2, Duration: 2 * time.Second,
				Skew: []time.Duration{-7 * time.Minute, 0, 11 * time.Minute}})
		}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			tc.fn(t, newStore(t))
		})
	}
}

func ctxT(t *testing.T) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	t.Cleanup(cancel)
	return ctx
}

var (
	alice = lock.Owner{NodeID: "alice", Instance: "a1"}
	bob   = lock.Owner{NodeID: "bob", Instance: "b1"}
)

// LongTTL is the TTL of leases a test must keep while it works with them:
// long enough that scheduling delays on a loaded machine never let one
// expire under the test.
const LongTTL = time.Minute

// acquireEventually retries TryAcquire until it succeeds (a file store
// must first watch the previous holder's heartbeat stand still for a TTL),
// asking for a lease of ttl.
func acquireEventually(t *testing.T, s lock.Store, name string, o lock.Owner, ttl time.Duration) int64 {
	t.Helper()
	ctx := ctxT(t)
	deadline := time.Now().Add(20 * time.Second)
	for {
		token, ok, err := s.TryAcquire(ctx, name, o, ttl)
		require.NoError(t, err)
		if ok {
			return token
		}
		require.True(t, time.Now().Before(deadline), "%v never acquired %q", o, name)
		time.Sleep(TTL / 10)
	}
}

func testAcquireRenewRelease(t *testing.T, open Opener) {
	ctx := ctxT(t)
	a, b := open(t), open(t)
	token, ok, err := a.TryAcquire(ctx, "job", alice, TTL)
	require.NoError(t, err)
	require.True(t, ok)
	require.Positive(t, token)
	_, ok, err = b.TryAcquire(ctx, "job", bob, TTL)
	require.NoError(t, err)
	require.False(t, ok, "a held lease is not acquirable by another owner")
	_, ok, err = a.TryAcquire(ctx, "job", alice, TTL)
	require.NoError(t, err)
	require.False(t, ok, "a holder renews, it does not re-acquire")
	ok, err = a.Renew(ctx, "job", alice, token, TTL)
	require.NoError(t, err)
	require.True(t, ok)
	ok, err = b.Renew(ctx, "job", bob, token, TTL)
	require.NoError(t, err)
	require.False(t, ok, "renewing a lease not held is refused")
	ok, err = a.Renew(ctx, "job", alice, token+1, TTL)
	require.NoError(t, err)
	require.False(t, ok, "renewing with a wrong token is refused")
	require.NoError(t, b.Release(ctx, "job", bob, token), "releasing a lease not held is not an error")
	_, ok, err = b.TryAcquire(ctx, "job", bob, TTL)
	require.NoError(t, err)
	require.False(t, ok, "a non-holder's release changed nothing")
	require.NoError(t, a.Release(ctx, "job", alice, token))
	token2, ok, err := b.TryAcquire(ctx, "job", bob, TTL)
	require.NoError(t, err)
	require.True(t, ok, "a released lease is acquirable at once")
	require.Greater(t, token2, token)
	ok, err = a.Renew(ctx, "job", alice, token, TTL)
	require.NoError(t, err)
	require.False(t, ok, "the ex-holder cannot renew")
}

func testTokensIncrease(t *testing.T, open Opener) {
	ctx := ctxT(t)
	stores := []lock.Store{open(t), open(t)}
	owners := []lock.Owner{alice, bob}
	var last int64
	for i := range 10 {
		s, o := stores[i%2], owners[i%2]
		token, ok, err := s.TryAcquire(ctx, "seq", o, TTL)
		require.NoError(t, err)
		require.True(t, ok)
		require.Greater(t, token, last, "tokens increase on every acquisition, forever")
		last = token
		require.NoError(t, s.Release(ctx, "seq", o, token))
	}
	other, ok, err := stores[0].TryAcquire(ctx, "other", alice, TTL)
	require.NoError(t, err)
	require.True(t, ok)
	require.Positive(t, other, "each name has its own tokens")
}

func testExpiry(t *testing.T, open Opener) {
	ctx := ctxT(t)
	a, b := open(t), open(t)
	// Measured from before the acquisition is sent: the store starts the
	// TTL when it executes the request, which is later. Timing from
	// TryAcquire's return would let a slow return (a loaded machine)
	// shorten what is measured.
	sent := time.Now()
	token, ok, err := a.TryAcquire(ctx, "exp", alice, TTL)
	require.NoError(t, err)
	require.True(t, ok)
	token2 := acquireEventually(t, b, "exp", bob, TTL)
	require.GreaterOrEqual(t, time.Since(sent), TTL, "an unrenewed lease is taken over only after its TTL")
	require.Greater(t, token2, token)
	ok, err = a.Renew(ctx, "exp", alice, token, TTL)
	require.NoError(t, err)
	require.False(t, ok, "the expired holder cannot renew after a takeover")
}

func testList(t *testing.T, open Opener) {
	ctx := ctxT(t)
	s := open(t)
	token, ok, err := s.TryAcquire(ctx, "b-lease", alice, time.Minute)
	require.NoError(t, err)
	require.True(t, ok)
	t2, ok, err := s.TryAcquire(ctx, "a-lease", bob, time.Minute)
	require.NoError(t, err)
	require.True(t, ok)
	require.NoError(t, s.Release(ctx, "a-lease", bob, t2))
	list, err := s.List(ctx)
	require.NoError(t, err)
	require.Len(t, list, 2)
	require.Equal(t, "a-lease", list[0].Name, "ordered by name")
	require.False(t, list[0].Held, "a released lease is listed as not held")
	require.Equal(t, "b-lease", list[1].Name)
	require.True(t, list[1].Held)
	require.Equal(t, alice, list[1].Owner)
	require.Equal(t, token, list[1].Token)
	require.True(t, list[1].Expires.After(list[1].Acquired))
	require.False(t, list[1].Renewed.Before(list[1].Acquired), "the last heartbeat is not before the acquisition")

	// A renewal is a heartbeat: Renewed moves on.
	before := list[1].Renewed
	time.Sleep(20 * time.Millisecond)
	ok, err = s.Renew(ctx, "b-lease", alice, token, time.Minute)
	require.NoError(t, err)
	require.True(t, ok)
	list, err = s.List(ctx)
	require.NoError(t, err)
	require.True(t, list[1].Renewed.After(before), "Renewed moves on with a renewal: %v, then %v", before, list[1].Renewed)
}

func testFence(t *testing.T, open Opener) {
	ctx := ctxT(t)
	a, b := open(t), open(t)
	fa, ok := a.(lock.Fencer)
	if !ok {
		t.Skip("store cannot fence")
	}
	// A long TTL: the lease must not expire while the test fences, however
	// loaded the machine.
	token, ok, err := a.TryAcquire(ctx, "gc", alice, LongTTL)
	require.NoError(t, err)
	require.True(t, ok)
	ran := false
	require.NoError(t, fa.Fence(ctx, "gc", alice, token, func(context.Context) error { ran = true; return nil }))
	require.True(t, ran, "the current holder's fenced work runs")
	boom := errors.New("boom")
	require.ErrorIs(t, fa.Fence(ctx, "gc", alice, token, func(context.Context) error { return boom }), boom)
	err = fa.Fence(ctx, "gc", bob, token, func(context.Context) error { t.Error("ran for a non-holder"); return nil })
	require.ErrorIs(t, err, lock.ErrFenced)
	require.NoError(t, a.Release(ctx, "gc", alice, token))
	err = fa.Fence(ctx, "gc", alice, token, func(context.Context) error { t.Error("ran after release"); return nil })
	require.ErrorIs(t, err, lock.ErrFenced)
	_ = b
}

// testPausedHolder: the holder stops renewing (a GC pause, a stopped VM)
// past its TTL, another node takes over, and the ex-holder's fenced work is
// rejected by the store.
func testPausedHolder(t *testing.T, open Opener) {
	ctx := ctxT(t)
	a, b := open(t), open(t)
	fa, ok := a.(lock.Fencer)
	if !ok {
		t.Skip("store cannot fence")
	}
	token, ok, err := a.TryAcquire(ctx, "sweep", alice, TTL)
	require.NoError(t, err)
	require.True(t, ok)
	// alice is paused here; bob takes over once the lease expired, and
	// keeps it for long enough to fence however loaded the machine.
	token2 := acquireEventually(t, b, "sweep", bob, LongTTL)
	require.Greater(t, token2, token)
	err = fa.Fence(ctx, "sweep", alice, token, func(context.Context) error {
		t.Error("a paused ex-holder's fenced work ran")
		return nil
	})
	require.ErrorIs(t, err, lock.ErrFenced, "the store rejects the stale token")
	fb := b.(lock.Fencer)
	require.NoError(t, fb.Fence(ctx, "sweep", bob, token2, func(context.Context) error { return nil }))
}

func testBadInput(t *testing.T, open Opener) {
	ctx := ctxT(t)
	s := open(t)
	for _, name := range []string{"", "../etc/passwd", "a b", strings.Repeat("n", ident.MaxNameLen+1)} {
		_, _, err := s.TryAcquire(ctx, name, alice, TTL)
		require.ErrorIs(t, err, ident.ErrInvalid, "name %q", name)
		_, err = s.Renew(ctx, name, alice, 1, TTL)
		require.ErrorIs(t, err, ident.ErrInvalid)
	}
	for _, ttl := range []time.Duration{0, -time.Second, time.Millisecond, lock.MaxTTL + 1} {
		_, _, err := s.TryAcquire(ctx, "x", alice, ttl)
		require.ErrorIs(t, err, lock.ErrInvalidArgument, "ttl %v", ttl)
		require.ErrorContains(t, err, "TTL")
	}
	_, _, err := s.TryAcquire(ctx, "x", lock.Owner{NodeID: "a/b", Instance: "i"}, TTL)
	require.ErrorIs(t, err, ident.ErrInvalid)
	_, _, err = s.TryAcquire(ctx, "x", lock.Owner{NodeID: "a"}, TTL)
	require.ErrorIs(t, err, lock.ErrInvalidArgument)
	list, err := s.List(ctx)
	require.NoError(t, err)
	for _, in := range list {
		require.False(t, in.Held, "bad input acquired nothing")
	}
}

// ContentionConfig sizes Contention.
type ContentionConfig struct {
	Instances, Goroutines, Names int
	Duration                     time.Duration
	// Skew offsets each instance's clock (cycled), to show that the
	// clocks' absolute values do not matter.
	Skew []time.Duration
}

// unreliable has outages: from time to time its renewals fail, as if the
// store did not answer, for up to two TTLs, so holders must step down by
// their own deadline when they cannot renew.
type unreliable struct {
	lock.Store
	mu        sync.Mutex
	rng       *rand.Rand
	downUntil time.Time
}

var errNoAnswer = errors.New("locktest: injected: the store did not answer")

func (u *unreliable) Renew(ctx context.Context, name string, owner lock.Owner, token int64, ttl time.Duration) (bool, error) {
	u.mu.Lock()
	now := time.Now()
	if now.After(u.downUntil) && u.rng.IntN(6) == 0 {
		u.downUntil = now.Add(time.Duration(u.rng.Int64N(int64(2 * TTL))))
	}
	down := now.Before(u.downUntil)
	u.mu.Unlock()
	if down {
		return false, errNoAnswer
	}
	return u.Store.Renew(ctx, name, owner, token, ttl)
}

type skewed time.Duration

func (s skewed) Now() time.Time { return time.Now().Add(time.Duration(s)) }

type action struct {
	at    time.Time // real time
	token int64
	who   string
}

// Contention has Instances × Goroutines clients compete for Names leases
// through lock.Client (keep-alive and all) for Duration. Each holder
// repeatedly records "I act as holder now" — taking the real time first
// and then checking Held, so every recorded moment lies inside its
// lease — holds for a random while, then releases or simply stops renewing
// (and lets it expire). Each instance's renewals suffer outages of up to
// two TTLs, so holders must step down by their own deadline when they
// cannot renew. The checker proves, per name, that the actions of
// different holders never interleave in real time and that tokens strictly
// increase from one holder to the next.
func Contention(t *testing.T, open Opener, cfg ContentionConfig) {
	ctx := ctxT(t)
	var mu sync.Mutex
	acts := map[string][]action{}
	stop := time.Now().Add(cfg.Duration)
	var wg sync.WaitGroup
	for i := range cfg.Instances {
		store := &unreliable{Store: open(t), rng: rand.New(rand.NewPCG(uint64(i), 99))}
		var clock lock.Clock = lock.SystemClock{}
		if len(cfg.Skew) > 0 {
			clock = skewed(cfg.Skew[i%len(cfg.Skew)])
		}
		for g := range cfg.Goroutines {
			c, err := lock.New(lock.Config{NodeID: fmt.Sprintf("n%d", i), Store: store, TTL: TTL, Clock: clock})
			require.NoError(t, err)
			who := fmt.Sprintf("n%d/g%d", i, g)
			wg.Add(1)
			go func() {
				defer wg.Done()
				rng := rand.New(rand.NewPCG(uint64(i), uint64(g)))
				for time.Now().Before(stop) {
					name := fmt.Sprintf("lease%d", rng.IntN(cfg.Names))
					l, err := c.TryAcquire(ctx, name)
					if errors.Is(err, lock.ErrUnavailable) {
						time.Sleep(time.Duration(rng.IntN(int(TTL / 5))))
						continue
					}
					if err != nil {
						t.Errorf("%s: acquire: %v", who, err)
						return
					}
					hold := time.Now().Add(time.Duration(rng.Int64N(int64(2 * TTL))))
					for time.Now().Before(hold) {
						now := time.Now()
						if !l.Held() {
							break
						}
						mu.Lock()
						acts[name] = append(acts[name], action{at: now, token: l.Token(), who: who})
						mu.Unlock()
						time.Sleep(time.Duration(rng.IntN(int(TTL / 10))))
					}
					if rng.IntN(4) == 0 {
						// Walk away without releasing: the lease must
						// expire before anyone else acts.
						l.Abandon()
						continue
					}
					if err := l.Release(ctx); err != nil {
						t.Errorf("%s: release: %v", who, err)
					}
				}
			}()
		}
	}
	wg.Wait()
	holders := 0
	for name, as := range acts {
		sort.Slice(as, func(i, j int) bool { return as[i].at.Before(as[j].at) })
		holders += checkTurns(t, name, as)
	}
	require.Greater(t, holders, cfg.Names, "the leases changed hands")
	t.Logf("%d instances × %d goroutines, %d names, %v: %d holders in turn", cfg.Instances, cfg.Goroutines, cfg.Names, cfg.Duration, holders)
}
