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
}
