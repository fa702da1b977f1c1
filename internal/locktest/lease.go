package locktest

import (
	"context"
	"errors"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/tandem-go/tandem/ident"
	"github.com/tandem-go/tandem/lock"
)

// testOwnLease: a client asking again for a lease it holds is told so,
// not that another owner holds it; reserved and invalid names are errors
// at once, from every method that takes a name.
func testOwnLease(t *testing.T, open Opener) {
	ctx := ctxT(t)
	cs := newClients(t, open, 2, 5*time.Second)
	a, b := cs[0], cs[1]
	l, err := a.TryAcquire(ctx, "job")
	require.NoError(t, err)
	_, err = a.TryAcquire(ctx, "job")
	require.ErrorIs(t, err, lock.ErrUnavailable)
	require.ErrorContains(t, err, "this client holds it")
	_, err = b.TryAcquire(ctx, "job")
	require.ErrorIs(t, err, lock.ErrUnavailable)
	require.ErrorContains(t, err, "another owner")
	did, err := a.RunOnce(ctx, "job", func(context.Context, *lock.Lease) error {
		t.Error("ran a job whose lease this client holds")
		return nil
	})
	require.NoError(t, err)
	require.False(t, did)
	require.NoError(t, l.Release(ctx))
	l, err = a.TryAcquire(ctx, "job")
	require.NoError(t, err, "released, the lease is this client's to take again")
	require.NoError(t, l.Release(ctx))

	// tandem's own leases are out of an application's reach.
	job := func(context.Context, *lock.Lease) error { return nil }
	for _, name := range []string{lock.MemberLease("n0"), lock.SchedulePrefix + "x"} {
		_, err = a.TryAcquire(ctx, name)
		require.ErrorIs(t, err, lock.ErrInvalidArgument, name)
		require.ErrorContains(t, err, "reserved")
		_, err = a.Acquire(ctx, name)
		require.ErrorIs(t, err, lock.ErrInvalidArgument, name)
		_, err = a.RunOnce(ctx, name, job)
		require.ErrorIs(t, err, lock.ErrInvalidArgument, name)
	}
	m, err := a.TryAcquireMembership(ctx)
	require.NoError(t, err)
	require.Equal(t, "member.n0", m.Name())
	require.NoError(t, m.Release(ctx))

	// Bad names come back at once, not logged forever.
	quick, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	for _, name := range []string{"", "a b", "member.n0"} {
		err := a.RunEvery(quick, name, time.Second, job)
		require.ErrorIs(t, err, lock.ErrInvalidArgument, "RunEvery(%q)", name)
		err = a.Campaign(quick, name, func(context.Context, *lock.Lease) {})
		require.ErrorIs(t, err, lock.ErrInvalidArgument, "Campaign(%q)", name)
	}
	// A job name too long for its schedule lease.
	err = a.RunEvery(quick, strings.Repeat("n", ident.MaxNameLen-len(lock.SchedulePrefix)+1), time.Second, job)
	require.ErrorIs(t, err, lock.ErrInvalidArgument)
	require.ErrorContains(t, err, "too long")
	require.ErrorIs(t, a.RunEvery(quick, "x", lock.MinTTL/2, job), lock.ErrInvalidArgument)
	require.ErrorContains(t, a.RunEvery(quick, "x", lock.MaxTTL+1, job), "interval")
	require.ErrorIs(t, a.RunEvery(quick, "x", time.Second, nil), lock.ErrInvalidArgument)
}

// Stall wraps a store whose renewals hang once Begin is called, ignoring
// their context, until End: a stalled database or a black-holed network
// on the holder's side. Stalled counts the renewals caught.
type Stall struct {
	lock.Store
	mu       sync.Mutex
	stalled  bool
	acquires bool // BeginAll: acquisitions hang too
	release  chan struct{}
	Stalled  atomic.Int32
}

// NewStall wraps s.
func NewStall(s lock.Store) *Stall { return &Stall{Store: s, release: make(chan struct{})} }

// Begin makes every later Renew hang.
func (s *Stall) Begin() {
	s.mu.Lock()
	s.stalled = true
	s.mu.Unlock()
}

// BeginAll makes every later Renew and TryAcquire hang: the holder can
// neither keep its lease nor take it again, as when the store cannot be
// reached at all.
func (s *Stall) BeginAll() {
	s.mu.Lock()
	s.stalled, s.acquires = true, true
	s.mu.Unlock()
}

// TryAcquire implements lock.Store; it hangs after BeginAll.
func (s *Stall) TryAcquire(ctx context.Context, name string, owner lock.Owner, ttl time.Duration) (int64, bool, error) {
	s.mu.Lock()
	stalled, release := s.stalled && s.acquires, s.release
	s.mu.Unlock()
	if stalled {
		<-release
		return 0, false, errStalled
	}
	return s.Store.TryAcquire(ctx, name, owner, ttl)
}

// End lets the hung renewals go on (they then fail) and ends the stall.
func (s *Stall) End() {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.stalled {
		s.stalled, s.acquires = false, false
		close(s.release)
	}
}

var errStalled = errors.New("locktest: injected: the store never answered")

// Renew implements lock.Store.
func (s *Stall) Renew(ctx context.Context, name string, owner lock.Owner, token int64, ttl time.Duration) (bool, error) {
	s.mu.Lock()
	stalled, release := s.stalled, s.release
	s.mu.Unlock()
	if stalled {
		s.Stalled.Add(1)
		<-release // deaf to ctx, like a call stuck in the kernel
		return false, errStalled
	}
	return s.Store.Renew(ctx, name, owner, token, ttl)
}

// testStalledRenew: the holder's renewals hang and ignore their context.
// The lease's context must still end at the holder's trust deadline, by a
// timer, before another node can acquire the lease.
func testStalledRenew(t *testing.T, open Opener) {
	stall := NewStall(open(t))
	t.Cleanup(stall.End)
	HolderStopsBelieving(t, stall, open(t), stall.Begin, func() int { return int(stall.Stalled.Load()) })
}

// HolderStopsBelieving has a client on holderStore take a lease, then
// calls cut (after which the holder's store must not answer its
// renewals), while a client on otherStore waits for the lease. It checks
// that the holder's lease context ends at its trust deadline (Deadline,
// within a scheduling slack far below RenewEvery), independent of the
// renewal hung in flight, and before the other client acquires. hung
// reports how many renewals are hung; at least one must be, or the test
// proves nothing.
func HolderStopsBelieving(t *testing.T, holderStore, otherStore lock.Store, cut func(), hung func() int) {
	ctx := ctxT(t)
	const ttl = 3 * time.Second // RenewEvery: 1 s
	holder, err := lock.New(lock.Config{NodeID: "holder", Store: holderStore, TTL: ttl})
	require.NoError(t, err)
	other, err := lock.New(lock.Config{NodeID: "other", Store: otherStore, TTL: ttl})
	require.NoError(t, err)
	l, err := holder.TryAcquire(ctx, "job")
	require.NoError(t, err)
	lost := make(chan time.Time, 1)
	context.AfterFunc(l.Context(), func() { lost <- time.Now() })
	cut()
	ol, err := other.Acquire(ctx, "job")
	require.NoError(t, err, "the lease is acquirable by a node that reaches the store")
	acquired := time.Now()
	var lostAt time.Time
	select {
	case lostAt = <-lost:
	default:
		t.Fatalf("the other node acquired the lease at %v while the holder still believed it held it", acquired)
	}
	require.ErrorIs(t, context.Cause(l.Context()), lock.ErrNotHeld)
	require.Positive(t, hung(), "a renewal was in flight and hung when the lease ended")
	late := lostAt.Sub(l.Deadline())
	require.Less(t, late, 300*time.Millisecond, "the lease ended %v after its trust deadline; a timer must end it there", late)
	require.True(t, lostAt.Before(acquired))
	require.Greater(t, ol.Token(), l.Token())
	t.Logf("lease ended %v after its trust deadline, %v before the other node acquired it", late, acquired.Sub(lostAt))
	require.NoError(t, ol.Release(ctx))
}
