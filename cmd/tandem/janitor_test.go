package main

import (
	"context"
	"encoding/json"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/tandem-go/tandem/janitor"
	"github.com/tandem-go/tandem/lock"
)

// leaseStore opens the target's lease store, as another process would.
func (tg *target) leaseStore(t *testing.T) lock.Store {
	t.Helper()
	if tg.db != nil {
		s, err := lock.OpenSQL(context.Background(), tg.db.DB, tg.db.Dialect, lock.SQLConfig{Prefix: tg.db.Prefix})
		require.NoError(t, err)
		return s
	}
	s, err := lock.OpenFile(context.Background(), lock.FileConfig{Dir: tg.dir})
	require.NoError(t, err)
	return s
}

type janitorJSON struct {
	DryRun   bool   `json:"dry_run"`
	Head     int64  `json:"head"`
	Tail     int64  `json:"tail"`
	NewTail  int64  `json:"new_tail"`
	Horizon  int64  `json:"horizon"`
	PinnedBy string `json:"pinned_by"`
	Evicted  []struct {
		Node string `json:"node"`
	} `json:"evicted"`
	Deleted int64 `json:"deleted"`
}

func TestJanitorRun(t *testing.T) {
	t.Parallel()
	eachTarget(t, func(t *testing.T, tg *target) {
		ctx := context.Background()
		old := tg.departed(t, "old-1", 3)
		n := tg.started(t, "web-1")
		for range 5 {
			_, err := n.Publish(ctx, "app/test", []byte("x"))
			require.NoError(t, err)
		}
		require.NoError(t, n.Sync(ctx))

		var plan janitorJSON
		out := tg.must(t, "janitor", "run", "--dry-run", "--keep-records", "0", "--keep-for", "0", "--json")
		require.NoError(t, json.Unmarshal([]byte(out), &plan))
		require.True(t, plan.DryRun)
		require.Equal(t, old+1, plan.Horizon)
		require.Equal(t, "old-1", plan.PinnedBy)
		require.Equal(t, old+1, plan.NewTail)
		require.Equal(t, int64(1), tg.statusJSON(t).Journal.Tail, "a dry run changes nothing")
		require.Contains(t, tg.must(t, "janitor", "run", "--dry-run", "--keep-records", "0", "--keep-for", "0"), "dry run")

		// Another process runs the janitor: busy.
		client, err := lock.New(lock.Config{NodeID: "other", Store: tg.leaseStore(t)})
		require.NoError(t, err)
		l, err := client.TryAcquire(ctx, janitor.DefaultLeaseName)
		require.NoError(t, err)
		tg.fails(t, exitBusy, "janitor", "run")
		require.NoError(t, l.Release(ctx))

		var rep janitorJSON
		out = tg.must(t, "janitor", "run", "--keep-records", "0", "--keep-for", "0", "--json")
		require.NoError(t, json.Unmarshal([]byte(out), &rep))
		require.False(t, rep.DryRun)
		require.Equal(t, old+1, rep.NewTail)
		st := tg.statusJSON(t)
		require.Equal(t, old+1, st.Journal.Tail)
		require.True(t, st.Janitor.Known)
		require.NotNil(t, st.Janitor.LastRun)
		require.Equal(t, cliNode, st.Janitor.Node)
		require.False(t, st.Janitor.Running)

		// Retention keeps records by default.
		out = tg.must(t, "janitor", "run", "--json")
		require.NoError(t, json.Unmarshal([]byte(out), &rep))
		require.Equal(t, old+1, rep.NewTail)

		if tg.db != nil {
			// old-1's lease lapsed longer ago than a millisecond, by the
			// database's clock: evicted, and no longer pinning the horizon.
			out = tg.must(t, "janitor", "run", "--keep-records", "0", "--keep-for", "0", "--evict-after", "1ms", "--json")
			require.NoError(t, json.Unmarshal([]byte(out), &rep))
			require.Len(t, rep.Evicted, 1)
			require.Equal(t, "old-1", rep.Evicted[0].Node)
			require.True(t, tg.statusJSON(t).node("old-1").Evicted)
			require.Contains(t, tg.must(t, "status"), "old-1")
		}
		tg.fails(t, exitUsage, "janitor", "run", "--evict-after", "0")
		tg.fails(t, exitUsage, "janitor", "run", "--bogus")
	})
}

// TestJanitorDryRunMatchesRun: with no live node, "janitor run --dry-run"
// plans the evictions that the real run right after makes (it dated "now"
// by the last heartbeat the store recorded, and planned none).
func TestJanitorDryRunMatchesRun(t *testing.T) {
	t.Parallel()
	eachTarget(t, func(t *testing.T, tg *target) {
		if tg.db == nil {
			t.Skip("database time")
		}
		tg.departed(t, "old-1", 3)
		time.Sleep(2 * time.Second) // old-1 gone longer than --evict-after
		args := []string{"janitor", "run", "--keep-records", "0", "--keep-for", "0", "--evict-after", "1s", "--json"}
		var plan, rep janitorJSON
		require.NoError(t, json.Unmarshal([]byte(tg.must(t, append(args, "--dry-run")...)), &plan))
		require.NoError(t, json.Unmarshal([]byte(tg.must(t, args...)), &rep))
		require.Equal(t, len(rep.Evicted), len(plan.Evicted), "the dry run said it would evict %v, the run evicted %v", plan.Evicted, rep.Evicted)
	})
}
