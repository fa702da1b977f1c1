package main

import (
	"context"
	"encoding/json"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/tandem-go/tandem/lock"
)

func TestStatus(t *testing.T) {
	t.Parallel()
	eachTarget(t, func(t *testing.T, tg *target) {
		tg.fails(t, exitNotFound, "status") // no schema, no folder yet
		gone := tg.departed(t, "web-2", 3)
		tg.started(t, "web-1")

		out := tg.must(t, "status")
		require.Contains(t, out, "journal")
		require.Regexp(t, `web-1\s+yes\s+no`, out)
		require.Regexp(t, `web-2\s+no\s+no\s+3\s+0`, out)
		require.Contains(t, out, lock.MemberLease("web-1"))
		require.Contains(t, out, "never ran") // the janitor

		r := tg.statusJSON(t)
		require.Equal(t, tg.name, r.Store)
		require.NotEmpty(t, r.Journal.Epoch)
		require.Equal(t, gone, r.Journal.Head)
		require.Equal(t, int64(1), r.Journal.Tail)
		require.Len(t, r.Nodes, 2)
		w1, w2 := r.node("web-1"), r.node("web-2")
		require.True(t, w1.Live)
		require.NotNil(t, w1.LastHeartbeat)
		require.False(t, w2.Live)
		require.True(t, w2.HasPosition)
		require.Equal(t, gone, w2.Position)
		require.Zero(t, w2.Lag)
		require.False(t, w2.Evicted)
		var member *leaseJSON
		for i := range r.Leases {
			if r.Leases[i].Name == lock.MemberLease("web-1") {
				member = &r.Leases[i]
			}
		}
		require.NotNil(t, member)
		require.True(t, member.Held)
		require.Equal(t, "web-1", member.Node)
		require.Positive(t, member.Token)
		require.NotNil(t, member.Expires)
		require.False(t, r.Janitor.Known)
		if tg.db != nil {
			require.NotNil(t, r.Pending)
			require.Zero(t, r.Pending.Entries)
			require.NotNil(t, r.Schema)
		} else {
			require.Nil(t, r.Pending)
		}
	})
}

func TestStatusWatch(t *testing.T) {
	t.Parallel()
	eachTarget(t, func(t *testing.T, tg *target) {
		tg.must(t, "schema", "migrate")
		ctx, cancel := context.WithCancel(context.Background())
		defer cancel()
		done := make(chan result, 1)
		var out syncBuffer
		go func() {
			code := run(ctx, append([]string{"status", "--json", "--watch=50ms"}, tg.global...), &out, &out, tg.getenv)
			done <- result{code: code}
		}()
		require.Eventually(t, func() bool { return strings.Count(out.String(), "\n") >= 3 }, 30*time.Second, 10*time.Millisecond)
		cancel()
		r := <-done
		require.Equal(t, 0, r.code, out.String())
		lines := strings.Split(strings.TrimSpace(out.String()), "\n")
		for _, l := range lines[:3] {
			var s statusReport
			require.NoError(t, json.Unmarshal([]byte(l), &s), l)
			require.NotEmpty(t, s.Journal.Epoch)
		}
	})
}
