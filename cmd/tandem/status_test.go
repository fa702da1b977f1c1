package main

import (
	"context"
	"encoding/json"
	"io"
	"log/slog"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/tandem-go/tandem/journal"
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

func TestStatusSchedules(t *testing.T) {
	t.Parallel()
	eachTarget(t, func(t *testing.T, tg *target) {
		tg.must(t, "schema", "migrate")
		client, err := lock.New(lock.Config{NodeID: "web-1", Store: tg.leaseStore(t), TTL: time.Second,
			Logger: slog.New(slog.NewTextHandler(io.Discard, nil))})
		require.NoError(t, err)
		ctx, cancel := context.WithCancel(context.Background())
		ran := make(chan struct{}, 1)
		done := make(chan struct{})
		go func() {
			defer close(done)
			_ = client.RunEvery(ctx, "report", time.Hour, func(context.Context, *lock.Lease) error {
				select {
				case ran <- struct{}{}:
				default:
				}
				return nil
			})
		}()
		defer func() { cancel(); <-done }()
		select {
		case <-ran:
		case <-time.After(30 * time.Second):
			t.Fatal("the scheduled job did not run")
		}
		r := tg.statusJSON(t)
		require.Len(t, r.Schedules, 1)
		s := r.Schedules[0]
		require.Equal(t, "report", s.Name)
		require.Equal(t, lock.SchedulePrefix+"report", s.Lease)
		require.Equal(t, "web-1", s.Node)
		require.NotNil(t, s.LastRun)
		require.NotNil(t, s.NextRun)
		require.InDelta(t, time.Hour.Seconds(), s.NextRun.Sub(*s.LastRun).Seconds(), 60)
		require.Regexp(t, `report\s+last run .* on web-1; next run `, tg.must(t, "status"))
	})
}

func TestStatusPending(t *testing.T) {
	t.Parallel()
	eachTarget(t, func(t *testing.T, tg *target) {
		if tg.db == nil {
			t.Skip("a folder has no outbox")
		}
		ctx := context.Background()
		j, err := journal.OpenSQL(ctx, tg.db.DB, tg.db.Dialect, journal.SQLConfig{NodeID: "writer", Prefix: tg.db.Prefix})
		require.NoError(t, err)
		defer j.Close(ctx)
		tx, err := tg.db.DB.BeginTx(ctx, nil)
		require.NoError(t, err)
		_, err = j.AppendTx(ctx, tx, journal.Entry{Producer: "app/x", Payload: []byte("a")}, journal.Entry{Producer: "app/x", Payload: []byte("b")})
		require.NoError(t, err)
		require.NoError(t, tx.Commit())
		// The writer "died" before relaying: nobody polls.
		time.Sleep(20 * time.Millisecond)
		r := tg.statusJSON(t)
		require.NotNil(t, r.Pending)
		require.Equal(t, int64(2), r.Pending.Entries)
		require.Positive(t, r.Pending.OldestAgeSeconds)
		require.Contains(t, tg.must(t, "status"), "2 entries, the oldest waiting")
	})
}
