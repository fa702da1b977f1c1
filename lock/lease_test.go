package lock_test

import (
	"context"
	"database/sql"
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
