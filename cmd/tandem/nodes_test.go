package main

import (
	"testing"

	"github.com/stretchr/testify/require"
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
		require.Contains(t, out, "old-1")
		require.Nil(t, tg.statusJSON(t).node("old-1"), "a removed departed node is forgotten")
		tg.fails(t, exitNotFound, "nodes", "remove", "old-1")

		r = tg.run(t, "nodes", "remove", "--force", "web-1")
		require.Equal(t, 0, r.code, r.stderr)
		require.Contains(t, r.stderr, "warning")
		require.NotNil(t, tg.statusJSON(t).node("web-1")) // still live
		_ = rev
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
