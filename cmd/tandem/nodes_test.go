package main

import (
	"context"
	"encoding/json"
	"sync/atomic"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/tandem-go/tandem/cluster"
	"github.com/tandem-go/tandem/journal"
)

func TestNodesRemove(t *testing.T) {
	t.Parallel()
	eachTarget(t, func(t *testing.T, tg *target) {
		rev := tg.departed(t, "old-1", 2)
		live := tg.started(t, "web-1")
		require.NoError(t, live.Sync(t.Context()))
		require.True(t, tg.statusJSON(t).node("web-1").HasPosition)

		r := tg.fails(t, exitRefused, "nodes", "remove", "web-1")
		require.Contains(t, r.stderr, "live")
		tg.fails(t, exitNotFound, "nodes", "remove", "nobody")
		tg.fails(t, exitUsage, "nodes", "remove", "../etc")
		tg.fails(t, exitUsage, "nodes", "remove")

		out := tg.must(t, "nodes", "remove", "old-1")
		require.Contains(t, out, "evicted node old-1")
		old := tg.statusJSON(t).node("old-1")
		require.NotNil(t, old, "a removed node keeps its position, marked evicted")
		require.True(t, old.Evicted)
		require.Equal(t, rev, old.Position)
		require.Contains(t, tg.must(t, "nodes", "remove", "old-1"), "evicted already")

		// The janitor no longer counts old-1: the live web-1 pins the horizon.
		var plan janitorJSON
		require.NoError(t, json.Unmarshal([]byte(tg.must(t, "janitor", "run", "--dry-run", "--keep-records", "0", "--keep-for", "0", "--json")), &plan))
		require.Equal(t, "web-1", plan.PinnedBy)

		// --purge forgets the id for good.
		var purged struct {
			Removed, Action string
			Position        int64
		}
		require.NoError(t, json.Unmarshal([]byte(tg.must(t, "nodes", "remove", "--purge", "old-1", "--json")), &purged))
		require.Equal(t, "old-1", purged.Removed)
		require.Equal(t, "purged", purged.Action)
		require.Equal(t, rev, purged.Position)
		require.Nil(t, tg.statusJSON(t).node("old-1"), "a purged node is forgotten")
		tg.fails(t, exitNotFound, "nodes", "remove", "old-1")

		tg.fails(t, exitRefused, "nodes", "remove", "--purge", "web-1")
		r = tg.run(t, "nodes", "remove", "--force", "web-1")
		require.Equal(t, 0, r.code, r.stderr)
		require.Contains(t, r.stderr, "warning")
		require.NotNil(t, tg.statusJSON(t).node("web-1")) // still live
	})
}

// TestNodesRemoveReturningNodeResyncs checks that a node removed with
// "nodes remove" that comes back resyncs instead of passing for a
// brand-new node that starts at the head and silently misses the records
// published while it was away (DESIGN, contract 5); with --purge it is
// forgotten and does start at the head.
func TestNodesRemoveReturningNodeResyncs(t *testing.T) {
	t.Parallel()
	eachTarget(t, func(t *testing.T, tg *target) {
		ctx := context.Background()
		tg.departed(t, "old-1", 2)
		tg.departed(t, "old-2", 2)
		w := tg.started(t, "web-1")
		for range 3 {
			_, err := w.Publish(ctx, "app/test", []byte("while old-1 was away"))
			require.NoError(t, err)
		}
		require.NoError(t, w.Sync(ctx))
		tg.must(t, "nodes", "remove", "old-1")
		tg.must(t, "nodes", "remove", "--purge", "old-2")

		back := func(id string) (applied, resyncs int64) {
			n := tg.node(t, id)
			var count, hooks atomic.Int64
			require.NoError(t, n.Handle("app/test", cluster.HandlerFunc(func(context.Context, journal.Record) error {
				count.Add(1)
				return nil
			})))
			require.NoError(t, n.OnResync(func(context.Context, cluster.ResyncReason) error { hooks.Add(1); return nil }))
			require.NoError(t, n.Start(ctx))
			require.NoError(t, n.Sync(ctx))
			require.Equal(t, hooks.Load(), n.Stats().Resyncs)
			return count.Load(), hooks.Load()
		}
		applied, resyncs := back("old-1")
		require.Zero(t, applied)
		require.Equal(t, int64(1), resyncs, "old-1 came back after its eviction without a resync: it skipped records silently")
		applied, resyncs = back("old-2")
		require.Zero(t, applied)
		require.Zero(t, resyncs, "--purge: old-2 passes for a new node")
	})
}

func TestNodesClone(t *testing.T) {
	t.Parallel()
	eachTarget(t, func(t *testing.T, tg *target) {
		rev := tg.departed(t, "web-1", 4)
		tg.departed(t, "web-2", 1)

		out := tg.must(t, "nodes", "clone", "web-1", "web-3")
		require.Contains(t, out, "web-3")
		st := tg.statusJSON(t)
		require.Equal(t, rev, st.node("web-3").Position)
		require.False(t, st.node("web-3").Live)

		tg.fails(t, exitRefused, "nodes", "clone", "web-1", "web-2")
		tg.fails(t, exitNotFound, "nodes", "clone", "nobody", "web-4")
		tg.fails(t, exitUsage, "nodes", "clone", "web-1")
		tg.fails(t, exitUsage, "nodes", "clone", "web-1", "bad/id")

		// The clone starts where web-1 stood and applies what came after,
		// without a resync.
		n := tg.started(t, "web-3")
		require.Equal(t, rev+1, n.Stats().Revision)
		require.Zero(t, n.Stats().Resyncs)
	})
}
