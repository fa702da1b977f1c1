package lock_test

import (
	"context"
	"database/sql"
	"errors"
	"sync/atomic"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/tandem-go/tandem/ident"
	"github.com/tandem-go/tandem/lock"
)

func TestConfigErrors(t *testing.T) {
	s, err := lock.OpenFile(context.Background(), lock.FileConfig{Dir: t.TempDir()})
	require.NoError(t, err)
	for _, c := range []struct {
		cfg   lock.Config
		field string
	}{
		{lock.Config{Store: s}, "NodeID"},
		{lock.Config{NodeID: "../x", Store: s}, "NodeID"},
		{lock.Config{NodeID: "a"}, "Store"},
		{lock.Config{NodeID: "a", Store: s, TTL: -time.Second}, "TTL"},
		{lock.Config{NodeID: "a", Store: s, TTL: time.Millisecond}, "TTL"},
		{lock.Config{NodeID: "a", Store: s, TTL: 25 * time.Hour}, "TTL"},
		{lock.Config{NodeID: "a", Store: s, TTL: time.Second, RenewEvery: time.Second}, "RenewEvery"},
		{lock.Config{NodeID: "a", Store: s, RenewEvery: -1}, "RenewEvery"},
		{lock.Config{NodeID: "a", Store: s, Instance: "a/b"}, "Instance"},
	} {
		_, err := lock.New(c.cfg)
		require.ErrorContains(t, err, c.field, "%+v", c.cfg)
	}
}

func TestLeaseLifecycle(t *testing.T) {
	ctx := context.Background()
	s, err := lock.OpenFile(ctx, lock.FileConfig{Dir: t.TempDir()})
	require.NoError(t, err)
	c, err := lock.New(lock.Config{NodeID: "a", Store: s, TTL: time.Second})
	require.NoError(t, err)
	_, err = c.TryAcquire(ctx, "")
	require.ErrorIs(t, err, ident.ErrInvalid)
	l, err := c.TryAcquire(ctx, "job")
	require.NoError(t, err)
	require.True(t, l.Held())
	require.Equal(t, "job", l.Name())
	require.NoError(t, l.Renew(ctx))
	_, err = c.TryAcquire(ctx, "job")
	require.ErrorIs(t, err, lock.ErrUnavailable, "a held lease is unavailable, even to its own client")
	require.ErrorContains(t, err, "this client holds it already", "and the error says whose it is")
	require.NoError(t, l.Release(ctx))
	require.NoError(t, l.Release(ctx), "Release is idempotent")
	require.False(t, l.Held())
	require.ErrorIs(t, context.Cause(l.Context()), lock.ErrNotHeld)
	require.ErrorIs(t, l.Renew(ctx), lock.ErrNotHeld, "renewing a released lease is an error")
	require.ErrorIs(t, l.Fenced(ctx, func(context.Context) error { return nil }), lock.ErrFenced)
	_, err = c.RunOnce(ctx, "x", nil)
	require.ErrorIs(t, err, lock.ErrInvalidArgument, "a nil job is an error, not a panic")
	require.ErrorIs(t, c.RunEvery(ctx, "x", 0, func(context.Context, *lock.Lease) error { return nil }), lock.ErrInvalidArgument)
	require.ErrorIs(t, c.RunEvery(ctx, "x", time.Second, nil), lock.ErrInvalidArgument)
	require.ErrorIs(t, c.Campaign(ctx, "x", nil), lock.ErrInvalidArgument)
	require.ErrorIs(t, l.Fenced(ctx, nil), lock.ErrInvalidArgument)
	l2, err := c.TryAcquire(ctx, "tx")
	require.NoError(t, err)
	defer l2.Release(ctx)
	require.ErrorIs(t, l2.FencedTx(ctx, func(context.Context, *sql.Tx) error { return nil }), lock.ErrInvalidArgument,
		"the file store has no transaction to run statements in")
}

// hangFirstRenew is a store whose first Renew hangs until its context ends
// (a request sent on a pooled connection that died silently: no error
// until TCP gives up, minutes later), while every later one reaches the
// store. renewed receives each later renewal that succeeded.
type hangFirstRenew struct {
	lock.Store
	calls   atomic.Int32
	renewed chan struct{}
}

func (h *hangFirstRenew) Renew(ctx context.Context, name string, owner lock.Owner, token int64, ttl time.Duration) (bool, error) {
	if h.calls.Add(1) == 1 {
		<-ctx.Done()
		return false, ctx.Err()
	}
	ok, err := h.Store.Renew(ctx, name, owner, token, ttl)
	if ok && err == nil {
		select {
		case h.renewed <- struct{}{}:
		default:
		}
	}
	return ok, err
}

// TestLeaseRetriesHungRenewal: the keep-alive gives up on a renewal attempt
// that hangs in time to try again before the lease's deadline, so one hung
// call costs a retry, not the lease, while the store answers.
func TestLeaseRetriesHungRenewal(t *testing.T) {
	t.Parallel()
	ctx := fileCtx(t)
	s := &hangFirstRenew{Store: openFileStore(t, t.TempDir(), lock.FileConfig{}), renewed: make(chan struct{}, 1)}
	// TTL 6s: the first renewal is due at about 2s and hangs; the retry
	// comes at about 4s, and has until 5.7s.
	c, err := lock.New(lock.Config{NodeID: "alice", Store: s, TTL: 6 * time.Second})
	require.NoError(t, err)
	l, err := c.TryAcquire(ctx, "job")
	require.NoError(t, err)
	defer l.Release(ctx)
	select {
	case <-s.renewed:
	case <-l.Lost():
		t.Fatalf("one hung renewal cost the lease (%d renew calls): %v", s.calls.Load(), context.Cause(l.Context()))
	}
	require.True(t, l.Held())
	require.GreaterOrEqual(t, s.calls.Load(), int32(2), "the hung renewal was retried")
}

// failFirstRelease is a store whose first Release fails (a dropped
// connection) without reaching the store.
type failFirstRelease struct {
	lock.Store
	calls atomic.Int32
}

func (f *failFirstRelease) Release(ctx context.Context, name string, owner lock.Owner, token int64) error {
	if f.calls.Add(1) == 1 {
		return errors.New("injected: connection reset")
	}
	return f.Store.Release(ctx, name, owner, token)
}

// TestLeaseReleaseRetryTellsStore: a Release whose store call failed ends
// the lease locally and reports the error; calling Release again tells the
// store, so that another node can take the lease at once, and only after
// that does Release return nil without asking the store.
func TestLeaseReleaseRetryTellsStore(t *testing.T) {
	t.Parallel()
	ctx := fileCtx(t)
	dir := t.TempDir()
	s := &failFirstRelease{Store: openFileStore(t, dir, lock.FileConfig{})}
	a, err := lock.New(lock.Config{NodeID: "alice", Store: s, TTL: 10 * time.Second})
	require.NoError(t, err)
	b, err := lock.New(lock.Config{NodeID: "bob", Store: openFileStore(t, dir, lock.FileConfig{}), TTL: 10 * time.Second})
	require.NoError(t, err)
	l, err := a.TryAcquire(ctx, "job")
	require.NoError(t, err)

	require.ErrorContains(t, l.Release(ctx), "injected", "the store call failed, and Release says so")
	require.False(t, l.Held(), "the lease ended here all the same")
	_, err = b.TryAcquire(ctx, "job")
	require.ErrorIs(t, err, lock.ErrUnavailable, "the store was not told")

	require.NoError(t, l.Release(ctx), "the retry tells the store")
	require.Equal(t, int32(2), s.calls.Load())
	lb, err := b.TryAcquire(ctx, "job")
	require.NoError(t, err, "released in the store: another node takes the lease at once")
	require.NoError(t, lb.Release(ctx))
	require.NoError(t, l.Release(ctx))
	require.Equal(t, int32(2), s.calls.Load(), "once the store was told, Release does not ask it again")
	done, cancel := context.WithCancel(ctx)
	cancel()
	for range 20 {
		require.NoError(t, l.Release(done), "told already: nil at once, even with a context that ended")
	}
}

// slowAcquire is a store whose acquisitions succeed, but whose answer
// takes 70% of the TTL to arrive (a statement that waited for a row lock,
// a slow network). renewed receives each renewal that succeeded.
type slowAcquire struct {
	lock.Store
	renewed chan struct{}
}

func (s *slowAcquire) TryAcquire(ctx context.Context, name string, o lock.Owner, ttl time.Duration) (int64, bool, error) {
	token, ok, err := s.Store.TryAcquire(ctx, name, o, ttl)
	time.Sleep(ttl * 7 / 10)
	return token, ok, err
}

func (s *slowAcquire) Renew(ctx context.Context, name string, owner lock.Owner, token int64, ttl time.Duration) (bool, error) {
	ok, err := s.Store.Renew(ctx, name, owner, token, ttl)
	if ok && err == nil {
		select {
		case s.renewed <- struct{}{}:
		default:
		}
	}
	return ok, err
}

// TestLeaseSlowAcquisitionRenewsInTime: the lease's deadline runs from
// when the acquisition was sent, so an acquisition slow to answer leaves
// less than RenewEvery before it. The keep-alive's first renewal comes
// within what is left, and keeps the lease.
func TestLeaseSlowAcquisitionRenewsInTime(t *testing.T) {
	t.Parallel()
	ctx := fileCtx(t)
	s := &slowAcquire{Store: openFileStore(t, t.TempDir(), lock.FileConfig{}), renewed: make(chan struct{}, 1)}
	// TTL 4s: the answer comes at 2.8s, 1s before the deadline; a first
	// renewal RenewEvery (1.33s) later would come too late.
	c, err := lock.New(lock.Config{NodeID: "alice", Store: s, TTL: 4 * time.Second})
	require.NoError(t, err)
	l, err := c.TryAcquire(ctx, "job")
	require.NoError(t, err)
	defer l.Release(ctx)
	require.True(t, l.Held(), "held when returned, %v left", time.Until(l.Deadline()))
	select {
	case <-s.renewed:
	case <-l.Lost():
		t.Fatalf("lost before the keep-alive renewed it: %v", context.Cause(l.Context()))
	}
	require.True(t, l.Held())
}
