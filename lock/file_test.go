package lock_test

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/tandem-go/tandem/ident"
	"github.com/tandem-go/tandem/internal/filelock"
	"github.com/tandem-go/tandem/internal/locktest"
	"github.com/tandem-go/tandem/lock"
)

var (
	fileAlice = lock.Owner{NodeID: "alice", Instance: "a1"}
	fileBob   = lock.Owner{NodeID: "bob", Instance: "b1"}
	fileCarol = lock.Owner{NodeID: "carol", Instance: "c1"}
)

// fakeClock is a Clock that moves only when told.
type fakeClock struct {
	mu sync.Mutex
	t  time.Time
}

func newFakeClock(start time.Time) *fakeClock { return &fakeClock{t: start} }

func (c *fakeClock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.t
}

func (c *fakeClock) Advance(d time.Duration) {
	c.mu.Lock()
	c.t = c.t.Add(d)
	c.mu.Unlock()
}

// skewClock is the machine's clock set off by a fixed amount.
type skewClock time.Duration

func (s skewClock) Now() time.Time { return time.Now().Add(time.Duration(s)) }

func openFileStore(t *testing.T, dir string, cfg lock.FileConfig) *lock.File {
	t.Helper()
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	cfg.Dir = dir
	s, err := lock.OpenFile(context.Background(), cfg)
	require.NoError(t, err)
	return s
}

func fileCtx(t *testing.T) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	t.Cleanup(cancel)
	return ctx
}

func TestFileConformance(t *testing.T) {
	t.Parallel()
	locktest.Run(t, func(t *testing.T) locktest.Opener {
		dir := t.TempDir()
		return func(t *testing.T) lock.Store { return openFileStore(t, dir, lock.FileConfig{}) }
	})
}

func TestFileBasics(t *testing.T) {
	t.Parallel()
	ctx := fileCtx(t)
	dir := t.TempDir()
	start := time.Date(2031, 2, 3, 4, 5, 6, 0, time.UTC)
	ca, cb := newFakeClock(start), newFakeClock(start.Add(-3*time.Hour))
	a := openFileStore(t, dir, lock.FileConfig{Clock: ca})
	b := openFileStore(t, dir, lock.FileConfig{Clock: cb})
	const ttl = 10 * time.Second

	token, ok, err := a.TryAcquire(ctx, "job", fileAlice, ttl)
	require.NoError(t, err)
	require.True(t, ok)
	require.Equal(t, int64(1), token, "a new lease starts at token 1")

	raw, err := os.ReadFile(filepath.Join(dir, "locks", "job"))
	require.NoError(t, err)
	require.True(t, strings.HasPrefix(string(raw),
		"tandem-lease 1\nname job\nowner alice\ninstance \"a1\"\ntoken 1\nheartbeat 0\nttl-ms 10000\nnonce "), "%s", raw)
	require.Contains(t, string(raw), "\nacquired 2031-02-03T04:05:06Z\nreleased no\ncrc32c ")

	_, ok, err = b.TryAcquire(ctx, "job", fileBob, ttl)
	require.NoError(t, err)
	require.False(t, ok)
	_, ok, err = a.TryAcquire(ctx, "job", fileAlice, ttl)
	require.NoError(t, err)
	require.False(t, ok, "a holder renews, it does not re-acquire")

	ok, err = a.Renew(ctx, "job", fileAlice, token, 20*time.Second)
	require.NoError(t, err)
	require.True(t, ok)
	raw, err = os.ReadFile(filepath.Join(dir, "locks", "job"))
	require.NoError(t, err)
	require.Contains(t, string(raw), "\nheartbeat 1\nttl-ms 20000\n", "renew counts the heartbeat and stores the TTL")

	ok, err = b.Renew(ctx, "job", fileBob, token, ttl)
	require.NoError(t, err)
	require.False(t, ok, "a non-holder cannot renew")
	ok, err = a.Renew(ctx, "job", fileAlice, token+1, ttl)
	require.NoError(t, err)
	require.False(t, ok, "a wrong token cannot renew")
	ok, err = a.Renew(ctx, "nothing", fileAlice, 1, ttl)
	require.NoError(t, err)
	require.False(t, ok, "a lease never acquired cannot be renewed")
	require.NoError(t, b.Release(ctx, "job", fileBob, token), "a non-holder's release is no error")
	require.NoError(t, b.Release(ctx, "nothing", fileBob, 1))

	list, err := b.List(ctx)
	require.NoError(t, err)
	require.Len(t, list, 1)
	in := list[0]
	require.Equal(t, "job", in.Name)
	require.Equal(t, fileAlice, in.Owner)
	require.Equal(t, token, in.Token)
	require.True(t, in.Held, "the non-holder's release changed nothing")
	require.True(t, in.Acquired.Equal(start), "acquired by the acquirer's clock: %v", in.Acquired)
	// A first sighting is dated by the file's age on the file server's
	// clock (milliseconds here), on the observer's clock.
	require.WithinDuration(t, cb.Now().Add(20*time.Second), in.Expires, time.Second, "expiry estimated on the observer's clock: %v", in.Expires)
	require.False(t, in.Expires.After(cb.Now().Add(20*time.Second)))

	require.NoError(t, a.Release(ctx, "job", fileAlice, token))
	require.NoError(t, a.Release(ctx, "job", fileAlice, token), "releasing twice is no error")
	list, err = b.List(ctx)
	require.NoError(t, err)
	require.Len(t, list, 1)
	require.False(t, list[0].Held)
	require.Equal(t, token, list[0].Token, "a released lease keeps its token")

	token2, ok, err := b.TryAcquire(ctx, "job", fileBob, ttl)
	require.NoError(t, err)
	require.True(t, ok, "a released lease is taken at once")
	require.Equal(t, token+1, token2)
	ok, err = a.Renew(ctx, "job", fileAlice, token, ttl)
	require.NoError(t, err)
	require.False(t, ok, "the ex-holder cannot renew")

	ents, err := os.ReadDir(filepath.Join(dir, "locks"))
	require.NoError(t, err)
	var names []string
	for _, e := range ents {
		names = append(names, e.Name())
	}
	require.ElementsMatch(t, []string{"job", ".job.lock", ".clock"}, names, "no temp files left, no lease for a name never acquired; List's clock probe")
}

// TestFileObservedExpiry: a held lease is taken over only by an observer
// that has watched it stand still for its TTL on its own clock; every
// renewal restarts the watch, and the clocks' absolute values do not
// matter.
func TestFileObservedExpiry(t *testing.T) {
	t.Parallel()
	ctx := fileCtx(t)
	dir := t.TempDir()
	const ttl = 10 * time.Second
	// Clocks years apart: only their differences count.
	ca := newFakeClock(time.Date(2030, 1, 1, 0, 0, 0, 0, time.UTC))
	cb := newFakeClock(time.Date(1999, 12, 31, 23, 59, 0, 0, time.UTC))
	cc := newFakeClock(time.Date(2050, 6, 1, 0, 0, 0, 0, time.UTC))
	a := openFileStore(t, dir, lock.FileConfig{Clock: ca})
	b := openFileStore(t, dir, lock.FileConfig{Clock: cb})
	c := openFileStore(t, dir, lock.FileConfig{Clock: cc})

	tryB := func() (int64, bool) {
		t.Helper()
		token, ok, err := b.TryAcquire(ctx, "job", fileBob, ttl)
		require.NoError(t, err)
		return token, ok
	}

	token, ok, err := a.TryAcquire(ctx, "job", fileAlice, ttl)
	require.NoError(t, err)
	require.True(t, ok)
	ca.Advance(time.Hour) // the holder's clock is irrelevant to observers

	_, ok = tryB()
	require.False(t, ok, "the first sighting only starts the watch")
	cb.Advance(ttl - time.Millisecond)
	_, ok = tryB()
	require.False(t, ok, "not yet a TTL since the first sighting")

	ok, err = a.Renew(ctx, "job", fileAlice, token, ttl)
	require.NoError(t, err)
	require.True(t, ok)
	cb.Advance(time.Millisecond)
	_, ok = tryB()
	require.False(t, ok, "a renewal restarts the watch")
	cb.Advance(ttl - time.Millisecond)
	_, ok = tryB()
	require.False(t, ok)

	// c has never looked: however far its clock has moved, it must watch.
	cc.Advance(24 * time.Hour)
	_, ok, err = c.TryAcquire(ctx, "job", fileCarol, ttl)
	require.NoError(t, err)
	require.False(t, ok)

	// List is a sighting too, and shows the lease held until it stood
	// still for its TTL.
	list, err := b.List(ctx)
	require.NoError(t, err)
	require.True(t, list[0].Held)
	require.True(t, list[0].Expires.Equal(cb.Now().Add(time.Millisecond)), "%v", list[0].Expires)

	cb.Advance(time.Millisecond)
	list, err = b.List(ctx)
	require.NoError(t, err)
	require.False(t, list[0].Held, "b has seen it stand still for its TTL")

	token2, ok := tryB()
	require.True(t, ok, "unchanged for a TTL on b's clock: b takes over")
	require.Equal(t, token+1, token2)

	ok, err = a.Renew(ctx, "job", fileAlice, token, ttl)
	require.NoError(t, err)
	require.False(t, ok, "the ex-holder cannot renew after a takeover")
	require.NoError(t, a.Release(ctx, "job", fileAlice, token))
	cc.Advance(ttl)
	_, ok, err = c.TryAcquire(ctx, "job", fileCarol, ttl)
	require.NoError(t, err)
	require.False(t, ok, "c watched alice's lease; bob's is new to it")
	cc.Advance(ttl)
	token3, ok, err := c.TryAcquire(ctx, "job", fileCarol, ttl)
	require.NoError(t, err)
	require.True(t, ok)
	require.Equal(t, token2+1, token3)
}

// TestFileTokens: tokens strictly increase on every acquisition, by
// whichever instance, across release, takeover and reopening the store.
func TestFileTokens(t *testing.T) {
	t.Parallel()
	ctx := fileCtx(t)
	dir := t.TempDir()
	const ttl = time.Second
	owners := []lock.Owner{fileAlice, fileBob, fileCarol}
	var last int64
	for i := range 12 {
		clock := newFakeClock(time.Date(2030, 1, 1, 0, 0, 0, 0, time.UTC))
		s := openFileStore(t, dir, lock.FileConfig{Clock: clock}) // a new instance each round
		o := owners[i%len(owners)]
		token, ok, err := s.TryAcquire(ctx, "seq", o, ttl)
		require.NoError(t, err)
		if !ok { // the previous holder walked away: watch it expire
			clock.Advance(ttl)
			token, ok, err = s.TryAcquire(ctx, "seq", o, ttl)
			require.NoError(t, err)
			require.True(t, ok)
		}
		require.Greater(t, token, last)
		last = token
		if i%2 == 0 {
			require.NoError(t, s.Release(ctx, "seq", o, token))
		}
	}
	require.Equal(t, int64(12), last)
}

func TestFileBadInput(t *testing.T) {
	t.Parallel()
	ctx := fileCtx(t)
	dir := t.TempDir()
	s := openFileStore(t, dir, lock.FileConfig{})
	fn := func(context.Context) error { t.Error("fenced fn ran on bad input"); return nil }
	for _, name := range []string{"", "../x", ".hidden", "a/b", strings.Repeat("n", ident.MaxNameLen+1)} {
		_, _, err := s.TryAcquire(ctx, name, fileAlice, time.Second)
		require.ErrorIs(t, err, ident.ErrInvalid, "name %q", name)
		_, err = s.Renew(ctx, name, fileAlice, 1, time.Second)
		require.ErrorIs(t, err, ident.ErrInvalid, "name %q", name)
		require.ErrorIs(t, s.Release(ctx, name, fileAlice, 1), ident.ErrInvalid, "name %q", name)
		require.ErrorIs(t, s.Fence(ctx, name, fileAlice, 1, fn), ident.ErrInvalid, "name %q", name)
	}
	_, _, err := s.TryAcquire(ctx, "x", lock.Owner{NodeID: "../n", Instance: "i"}, time.Second)
	require.ErrorIs(t, err, ident.ErrInvalid)
	_, _, err = s.TryAcquire(ctx, "x", lock.Owner{NodeID: "n"}, time.Second)
	require.ErrorIs(t, err, lock.ErrInvalidArgument)
	_, _, err = s.TryAcquire(ctx, "x", fileAlice, 0)
	require.ErrorIs(t, err, lock.ErrInvalidArgument)
	ents, err := os.ReadDir(filepath.Join(dir, "locks"))
	require.NoError(t, err)
	require.Empty(t, ents, "bad input created nothing")

	// Any instance id the other stores accept is stored safely.
	odd := lock.Owner{NodeID: "n", Instance: "x\ny \"z\"\x00"}
	token, ok, err := s.TryAcquire(ctx, "odd", odd, time.Second)
	require.NoError(t, err)
	require.True(t, ok)
	list, err := s.List(ctx)
	require.NoError(t, err)
	require.Equal(t, odd, list[0].Owner)
	ok, err = s.Renew(ctx, "odd", odd, token, time.Second)
	require.NoError(t, err)
	require.True(t, ok)

	_, err = lock.OpenFile(ctx, lock.FileConfig{})
	require.ErrorIs(t, err, lock.ErrInvalidArgument)
	require.ErrorContains(t, err, "Dir")
	cancelled, cancel := context.WithCancel(ctx)
	cancel()
	_, err = lock.OpenFile(cancelled, lock.FileConfig{Dir: dir})
	require.ErrorIs(t, err, context.Canceled)
	_, err = lock.OpenFile(ctx, lock.FileConfig{Dir: dir, LockTimeout: -time.Second})
	require.ErrorIs(t, err, lock.ErrInvalidArgument)
	require.ErrorContains(t, err, "LockTimeout")
}

func TestFileCorrupt(t *testing.T) {
	t.Parallel()
	ctx := fileCtx(t)
	dir := t.TempDir()
	s := openFileStore(t, dir, lock.FileConfig{})
	token, ok, err := s.TryAcquire(ctx, "job", fileAlice, time.Second)
	require.NoError(t, err)
	require.True(t, ok)
	path := filepath.Join(dir, "locks", "job")
	raw, err := os.ReadFile(path)
	require.NoError(t, err)

	damaged := map[string][]byte{
		"flipped":   []byte(strings.Replace(string(raw), "token 1", "token 9", 1)),
		"truncated": raw[:len(raw)-5],
		"empty":     nil,
		"renamed":   []byte(strings.Replace(string(raw), "name job", "name joe", 1)), // CRC fails too
	}
	for what, b := range damaged {
		require.NoError(t, os.WriteFile(path, b, 0o666))
		_, _, err = s.TryAcquire(ctx, "job", fileBob, time.Second)
		require.ErrorIs(t, err, lock.ErrCorrupt, what)
		_, err = s.Renew(ctx, "job", fileAlice, token, time.Second)
		require.ErrorIs(t, err, lock.ErrCorrupt, what)
		_, err = s.List(ctx)
		require.ErrorIs(t, err, lock.ErrCorrupt, what)
		err = s.Fence(ctx, "job", fileAlice, token, func(context.Context) error { t.Error("ran"); return nil })
		require.ErrorIs(t, err, lock.ErrCorrupt, what)
	}
	// A lease file with another name inside, CRC intact.
	other := filepath.Join(dir, "other")
	so := openFileStore(t, other, lock.FileConfig{})
	_, ok, err = so.TryAcquire(ctx, "joe", fileAlice, time.Second)
	require.NoError(t, err)
	require.True(t, ok)
	raw, err = os.ReadFile(filepath.Join(other, "locks", "joe"))
	require.NoError(t, err)
	require.NoError(t, os.WriteFile(path, raw, 0o666))
	_, _, err = s.TryAcquire(ctx, "job", fileBob, time.Second)
	require.ErrorIs(t, err, lock.ErrCorrupt)
	require.ErrorContains(t, err, `holds lease "joe"`)
}

func TestFileFence(t *testing.T) {
	t.Parallel()
	ctx := fileCtx(t)
	dir := t.TempDir()
	const ttl = 10 * time.Second
	ca := newFakeClock(time.Date(2030, 1, 1, 0, 0, 0, 0, time.UTC))
	cb := newFakeClock(time.Date(2030, 1, 1, 0, 7, 0, 0, time.UTC))
	// Short lock timeouts: a call that waited for the Fence's lock would
	// give up quickly.
	a := openFileStore(t, dir, lock.FileConfig{Clock: ca, LockTimeout: 50 * time.Millisecond})
	b := openFileStore(t, dir, lock.FileConfig{Clock: cb, LockTimeout: 50 * time.Millisecond})

	token, ok, err := a.TryAcquire(ctx, "gc", fileAlice, ttl)
	require.NoError(t, err)
	require.True(t, ok)
	// b watches alice's lease stand still for a TTL: b may take over.
	_, ok, err = b.TryAcquire(ctx, "gc", fileBob, ttl)
	require.NoError(t, err)
	require.False(t, ok)
	cb.Advance(ttl)

	ran, nested := false, false
	err = a.Fence(ctx, "gc", fileAlice, token, func(ctx context.Context) error {
		ran = true
		_, ok, err := b.TryAcquire(ctx, "gc", fileBob, ttl)
		require.NoError(t, err)
		require.False(t, ok, "nobody takes the lease over while a fenced fn runs")
		ok, err = a.Renew(ctx, "gc", fileAlice, token, ttl)
		require.NoError(t, err)
		require.True(t, ok, "the holder's keep-alive renews during its own fenced work")
		require.NoError(t, a.Fence(ctx, "gc", fileAlice, token, func(context.Context) error { nested = true; return nil }))
		err = a.Fence(ctx, "gc", fileBob, token, func(context.Context) error { t.Error("ran for a non-holder"); return nil })
		require.Error(t, err, "a non-holder waits for the lock")
		return nil
	})
	require.NoError(t, err)
	require.True(t, ran, "the holder's fenced fn runs")
	require.True(t, nested, "a nested fence of the holder runs")

	_, ok, err = b.TryAcquire(ctx, "gc", fileBob, ttl)
	require.NoError(t, err)
	require.False(t, ok, "the renewal during the fence restarted b's watch")
	cb.Advance(ttl)
	token2, ok, err := b.TryAcquire(ctx, "gc", fileBob, ttl)
	require.NoError(t, err)
	require.True(t, ok)
	require.Greater(t, token2, token)

	err = a.Fence(ctx, "gc", fileAlice, token, func(context.Context) error {
		t.Error("a paused ex-holder's fenced fn ran")
		return nil
	})
	require.ErrorIs(t, err, lock.ErrFenced)
	require.NoError(t, b.Fence(ctx, "gc", fileBob, token2, func(context.Context) error { return nil }))
	require.NoError(t, b.Release(ctx, "gc", fileBob, token2))
	err = b.Fence(ctx, "gc", fileBob, token2, func(context.Context) error { t.Error("ran after release"); return nil })
	require.ErrorIs(t, err, lock.ErrFenced)
}

// TestFileFenceBlocksTakeover: a TryAcquire that would take the lease over
// waits while the holder's fenced fn runs, and succeeds only after.
func TestFileFenceBlocksTakeover(t *testing.T) {
	t.Parallel()
	ctx := fileCtx(t)
	dir := t.TempDir()
	const ttl = 10 * time.Second
	ca := newFakeClock(time.Date(2030, 1, 1, 0, 0, 0, 0, time.UTC))
	cb := newFakeClock(time.Date(2029, 1, 1, 0, 0, 0, 0, time.UTC))
	a := openFileStore(t, dir, lock.FileConfig{Clock: ca})
	b := openFileStore(t, dir, lock.FileConfig{Clock: cb, LockTimeout: 30 * time.Second})

	token, ok, err := a.TryAcquire(ctx, "sweep", fileAlice, ttl)
	require.NoError(t, err)
	require.True(t, ok)
	_, ok, err = b.TryAcquire(ctx, "sweep", fileBob, ttl)
	require.NoError(t, err)
	require.False(t, ok)
	cb.Advance(ttl)

	type result struct {
		token   int64
		ok      bool
		err     error
		fnEnded bool
	}
	var fnEnded atomic.Bool
	res := make(chan result, 1)
	err = a.Fence(ctx, "sweep", fileAlice, token, func(context.Context) error {
		go func() {
			token, ok, err := b.TryAcquire(ctx, "sweep", fileBob, ttl)
			res <- result{token, ok, err, fnEnded.Load()}
		}()
		time.Sleep(200 * time.Millisecond)
		fnEnded.Store(true)
		return nil
	})
	require.NoError(t, err)
	r := <-res
	require.NoError(t, r.err)
	require.True(t, r.ok)
	require.True(t, r.fnEnded, "the takeover waited for the fenced fn")
	require.Equal(t, token+1, r.token)
}

// TestFileRenewWaitingRidesOwnFence: a renewal that is already waiting for
// the lease's lock file when the holder's own Fence takes it (another
// node's TryAcquire held the lock a moment before) rides on that Fence, as
// a renewal that starts during the fenced work does. It renews while the
// fenced fn runs, instead of waiting for the fn to end or for the lock
// timeout, past the lease's deadline.
func TestFileRenewWaitingRidesOwnFence(t *testing.T) {
	t.Parallel()
	ctx := fileCtx(t)
	dir := t.TempDir()
	const ttl = 10 * time.Second
	// A lock timeout longer than the test: a renewal that waited for the
	// Fence's lock would wait for its fn.
	s := openFileStore(t, dir, lock.FileConfig{LockTimeout: time.Hour})
	token, ok, err := s.TryAcquire(ctx, "gc", fileAlice, ttl)
	require.NoError(t, err)
	require.True(t, ok)
	heartbeat := func() string {
		raw, err := os.ReadFile(filepath.Join(dir, "locks", "gc"))
		require.NoError(t, err)
		_, after, _ := strings.Cut(string(raw), "\nheartbeat ")
		beat, _, _ := strings.Cut(after, "\n")
		return beat
	}

	errRenewedFirst := errors.New("the renewal took the lock before the Fence")
	for attempt := 1; ; attempt++ {
		require.LessOrEqual(t, attempt, 10, "the renewal always took the lock before the Fence: the case never arose")
		// Another node holds the lease's lock file for a moment; the
		// holder's renewal waits for it.
		other, err := filelock.Open(filepath.Join(dir, "locks", ".gc.lock"))
		require.NoError(t, err)
		require.NoError(t, other.Acquire(ctx, time.Second))
		before := heartbeat()
		renewed := make(chan error, 1)
		go func() {
			ok, err := s.Renew(ctx, "gc", fileAlice, token, ttl)
			if err == nil && !ok {
				err = errors.New("renewal refused")
			}
			renewed <- err
		}()
		time.Sleep(100 * time.Millisecond)
		// The other node lets go, and the holder's Fence takes the lock
		// at once, while the waiting renewal sleeps between attempts.
		require.NoError(t, other.Close())
		err = s.Fence(ctx, "gc", fileAlice, token, func(context.Context) error {
			if heartbeat() != before {
				return errRenewedFirst // not the case under test: again
			}
			select {
			case err := <-renewed:
				return err
			case <-time.After(10 * time.Second):
				return errors.New("the waiting renewal did not ride on the holder's Fence")
			}
		})
		if errors.Is(err, errRenewedFirst) {
			require.NoError(t, <-renewed)
			continue
		}
		require.NoError(t, err, "the renewal that waited for the lock renewed during the fenced fn")
		require.NotEqual(t, before, heartbeat())
		return
	}
}

// TestFileClockSkew: instances whose clocks are ten minutes apart contend
// for two leases with short TTLs. Each holder records the real-time
// interval in which it believed it held the lease, computed as Lease's
// keep-alive does: from the acquisition until its release, or until its
// deadline (the sending of its last successful acquire or renew plus the
// TTL) when it stops renewing or loses the lease. No two intervals of a
// name may overlap, and tokens strictly increase from one to the next.
func TestFileClockSkew(t *testing.T) {
	t.Parallel()
	ctx := fileCtx(t)
	dir := t.TempDir()
	const ttl = 200 * time.Millisecond
	skews := []time.Duration{-10 * time.Minute, 0, 10 * time.Minute, 3 * time.Minute}

	type interval struct {
		start, end time.Time // real time
		token      int64
		who        string
		released   bool
	}
	var mu sync.Mutex
	got := map[string][]interval{}
	stop := time.Now().Add(2 * time.Second)
	var wg sync.WaitGroup
	for i, skew := range skews {
		s := openFileStore(t, dir, lock.FileConfig{Clock: skewClock(skew)})
		for g := range 3 {
			owner := lock.Owner{NodeID: fmt.Sprintf("n%d", i), Instance: fmt.Sprintf("g%d", g)}
			rng := rand.New(rand.NewPCG(uint64(i), uint64(g)))
			wg.Go(func() {
				for time.Now().Before(stop) {
					name := fmt.Sprintf("lease%d", rng.IntN(2))
					sent := time.Now()
					token, ok, err := s.TryAcquire(ctx, name, owner, ttl)
					if err != nil {
						t.Errorf("%v: acquire: %v", owner, err)
						return
					}
					if !ok {
						time.Sleep(time.Duration(rng.Int64N(int64(ttl / 5))))
						continue
					}
					iv := interval{start: time.Now(), token: token, who: owner.NodeID + "/" + owner.Instance}
					iv.end, iv.released = holdFor(ctx, t, s, name, owner, token, ttl, sent, rng)
					mu.Lock()
					got[name] = append(got[name], iv)
					mu.Unlock()
				}
			})
		}
	}
	wg.Wait()

	holders, takeovers := 0, 0
	for name, ivs := range got {
		slices.SortFunc(ivs, func(a, b interval) int { return a.start.Compare(b.start) })
		for k := 1; k < len(ivs); k++ {
			prev, cur := ivs[k-1], ivs[k]
			require.False(t, cur.start.Before(prev.end),
				"%s: %s (token %d) acquired at %v, before %s (token %d) stepped down at %v",
				name, cur.who, cur.token, cur.start.Format(time.StampMicro), prev.who, prev.token, prev.end.Format(time.StampMicro))
			require.Greater(t, cur.token, prev.token, "%s: tokens increase", name)
			if !prev.released {
				takeovers++
			}
		}
		holders += len(ivs)
	}
	require.Greater(t, holders, 4, "the leases changed hands")
	t.Logf("%d instances, skews %v: %d holders in turn, %d after the previous one stopped renewing", len(skews), skews, holders, takeovers)
}

// holdFor holds a lease for a random 0–2×TTL, renewing every TTL/3, and
// returns when (real time) it stopped acting as the holder: its release,
// or its deadline when a renewal came too late or failed, or when it
// walks away without releasing.
func holdFor(ctx context.Context, t *testing.T, s *lock.File, name string, owner lock.Owner, token int64,
	ttl time.Duration, sent time.Time, rng *rand.Rand) (end time.Time, released bool) {
	deadline := sent.Add(ttl)
	until := time.Now().Add(time.Duration(rng.Int64N(int64(2 * ttl))))
	for {
		now := time.Now()
		if !now.Before(deadline) {
			return deadline, false // stepped down: not confirmed within the TTL
		}
		if !now.Before(until) {
			break
		}
		if next := sent.Add(ttl / 3); now.Before(next) {
			time.Sleep(min(next.Sub(now), until.Sub(now)))
			continue
		}
		sent = now
		ok, err := s.Renew(ctx, name, owner, token, ttl)
		if err != nil {
			t.Errorf("%v: renew: %v", owner, err)
			return deadline, false
		}
		if !ok {
			return deadline, false // lost it (the checker shows if too early)
		}
		deadline = sent.Add(ttl)
	}
	if rng.IntN(4) == 0 {
		return deadline, false // walk away: the lease must expire first
	}
	end = time.Now()
	if !end.Before(deadline) {
		return deadline, false
	}
	if err := s.Release(ctx, name, owner, token); err != nil {
		t.Errorf("%v: release: %v", owner, err)
	}
	return end, true
}

// TestFileListFreshObserver: a process that has just opened the store
// lists a lease whose holder stopped renewing a while ago as not held,
// with its last heartbeat in the past — not as live with a heartbeat of
// "now" — and a lease renewed just now as held.
func TestFileListFreshObserver(t *testing.T) {
	t.Parallel()
	ctx := fileCtx(t)
	dir := t.TempDir()
	a := openFileStore(t, dir, lock.FileConfig{})
	const ttl = time.Second
	_, ok, err := a.TryAcquire(ctx, "dead", fileAlice, ttl)
	require.NoError(t, err)
	require.True(t, ok)
	time.Sleep(ttl + 200*time.Millisecond) // the holder died: no renewals
	live, ok, err := a.TryAcquire(ctx, "live", fileBob, ttl)
	require.NoError(t, err)
	require.True(t, ok)
	ok, err = a.Renew(ctx, "live", fileBob, live, ttl)
	require.NoError(t, err)
	require.True(t, ok)

	fresh := openFileStore(t, dir, lock.FileConfig{})
	list, err := fresh.List(ctx)
	require.NoError(t, err)
	require.Len(t, list, 2)
	dead, alive := list[0], list[1]
	require.Equal(t, "dead", dead.Name)
	require.False(t, dead.Held, "a holder silent for longer than its TTL is not listed as live")
	require.Less(t, dead.Renewed, time.Now().Add(-ttl), "its last heartbeat lies in the past: %v", dead.Renewed)
	require.True(t, alive.Held)
	require.WithinDuration(t, time.Now(), alive.Renewed, ttl/2)

	// Stable: listing again does not move a standing heartbeat.
	again, err := fresh.List(ctx)
	require.NoError(t, err)
	require.Equal(t, dead.Renewed, again[0].Renewed)
	require.False(t, again[0].Held)
}
