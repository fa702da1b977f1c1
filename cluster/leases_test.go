package cluster_test

import (
	"context"
	"errors"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/tandem-go/tandem/lock"
)

// TestLeases: the application's leases and jobs run on the node's own lease
// store, seen by the other nodes, beside (not in place of) the membership.
func TestLeases(t *testing.T) {
	forEachBackend(t, func(t *testing.T, f fixture) {
		ctx := ctxT(t)
		a, b := f.open(t, cfg("a")), f.open(t, cfg("b"))
		require.NotNil(t, a.Leases())
		start(t, a)
		start(t, b)

		ca, err := lock.New(lock.Config{NodeID: a.ID(), Store: a.Leases(), TTL: 2 * time.Second})
		require.NoError(t, err)
		cb, err := lock.New(lock.Config{NodeID: b.ID(), Store: b.Leases(), TTL: 2 * time.Second})
		require.NoError(t, err)
		l, err := ca.TryAcquire(ctx, "app-job")
		require.NoError(t, err)
		_, err = cb.TryAcquire(ctx, "app-job")
		require.True(t, errors.Is(err, lock.ErrUnavailable), "b must see a's lease: %v", err)
		require.NoError(t, l.Release(ctx))
		lb, err := cb.TryAcquire(ctx, "app-job")
		require.NoError(t, err)
		require.NoError(t, lb.Release(ctx))

		// The membership lease is still a's own.
		st := a.Stats()
		require.True(t, st.Running)
		require.True(t, st.Member)
		ms, err := b.Members(ctx)
		require.NoError(t, err)
		require.Len(t, ms, 2)
		require.True(t, ms[0].Live)
		require.Equal(t, a.Instance(), ms[0].Instance)
	})
}

// TestStatsState: Stats says whether the node runs and holds its
// membership, and which journal epoch its position belongs to.
func TestStatsState(t *testing.T) {
	forEachBackend(t, func(t *testing.T, f fixture) {
		ctx := ctxT(t)
		n := f.open(t, cfg("s"))
		st := n.Stats()
		require.False(t, st.Running)
		require.False(t, st.Member)
		require.Empty(t, st.Epoch)

		start(t, n)
		st = n.Stats()
		require.True(t, st.Running)
		require.True(t, st.Member)
		epoch, err := n.Journal().Epoch(ctx)
		require.NoError(t, err)
		require.Equal(t, epoch, st.Epoch)

		require.NoError(t, n.Stop(context.Background()))
		st = n.Stats()
		require.False(t, st.Running)
		require.False(t, st.Member)
		require.Equal(t, epoch, st.Epoch)
	})
}
