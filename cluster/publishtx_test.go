package cluster_test

import (
	"context"
	"fmt"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/tandem-go/tandem/cluster"
	"github.com/tandem-go/tandem/journal"
)

// TestPublishTx: a row and its invalidation in one application
// transaction, read-your-writes with the handle's revision on another
// node, nothing from a rolled-back transaction, and the entries of a
// writer that stopped after its commit, before relaying, relayed by
// another node's poll within about SyncDelay.
func TestPublishTx(t *testing.T) {
	forEachBackend(t, func(t *testing.T, f fixture) {
		ctx := ctxT(t)
		a := f.open(t, cfg("a"))
		start(t, a)
		if f.pool == nil {
			_, err := a.PublishTx(ctx, nil, journal.Entry{Producer: "p"})
			require.ErrorIs(t, err, cluster.ErrInvalidArgument, "the folder has no transactions")
			return
		}
		b := f.open(t, cfg("b"))
		var seen recorder
		require.NoError(t, b.Handle("cache/users", &seen))
		start(t, b)
		pool := f.pool(t)
		users := f.where + "users"
		_, err := pool.ExecContext(ctx, `CREATE TABLE `+users+` (id INT PRIMARY KEY, name VARCHAR(20))`)
		require.NoError(t, err)
		t.Cleanup(func() { pool.ExecContext(context.Background(), `DROP TABLE `+users) })
		q := func(s string) string {
			if f.backend == "postgres" {
				return strings.NewReplacer("?1", "$1", "?2", "$2").Replace(s)
			}
			return strings.NewReplacer("?1", "?", "?2", "?").Replace(s)
		}
		_, err = pool.ExecContext(ctx, q(`INSERT INTO `+users+` (id, name) VALUES (?1, ?2)`), 1, "Ada")
		require.NoError(t, err)

		// Commit: the update and its invalidation together; the token
		// works on the other node.
		tx, err := pool.BeginTx(ctx, nil)
		require.NoError(t, err)
		_, err = tx.ExecContext(ctx, q(`UPDATE `+users+` SET name = ?1 WHERE id = ?2`), "Grace", 1)
		require.NoError(t, err)
		p, err := a.PublishTx(ctx, tx, journal.Entry{Producer: "cache/users", Payload: []byte("1")})
		require.NoError(t, err)
		require.NoError(t, tx.Commit())
		revs, err := p.Wait(ctx)
		require.NoError(t, err)
		require.Len(t, revs, 1)
		require.NoError(t, b.WaitFor(ctx, revs[0]))
		got := seen.got()
		require.Len(t, got, 1)
		require.Equal(t, revs[0], got[0].Revision)
		require.Equal(t, "a", got[0].NodeID, "records keep their writer's node id")
		var name string
		require.NoError(t, pool.QueryRowContext(ctx, q(`SELECT name FROM `+users+` WHERE id = ?1`), 1).Scan(&name))
		require.Equal(t, "Grace", name)

		// Rollback: nothing.
		tx, err = pool.BeginTx(ctx, nil)
		require.NoError(t, err)
		p, err = a.PublishTx(ctx, tx, journal.Entry{Producer: "cache/users", Payload: []byte("rolled back")})
		require.NoError(t, err)
		require.NoError(t, tx.Rollback())
		_, err = p.Wait(ctx)
		require.ErrorIs(t, err, journal.ErrNotCommitted)

		// The writer stops after its commit without relaying: b's poll
		// tick sees the entry waiting and relays it.
		tx, err = pool.BeginTx(ctx, nil)
		require.NoError(t, err)
		_, err = a.PublishTx(ctx, tx, journal.Entry{Producer: "cache/users", Payload: []byte("orphan")})
		require.NoError(t, err)
		require.NoError(t, tx.Commit())
		require.NoError(t, a.Stop(ctx))
		began := time.Now()
		require.Eventually(t, func() bool { return len(seen.got()) == 2 }, 10*time.Second, 5*time.Millisecond)
		t.Logf("orphaned entry relayed and applied after %v (SyncDelay %v)", time.Since(began).Round(time.Millisecond), cfg("b").SyncDelay)
		got = seen.got()
		require.Equal(t, "orphan", string(got[1].Payload))
		require.Equal(t, "a", got[1].NodeID)
		require.Equal(t, got[0].Revision+1, got[1].Revision, "dense: the rolled-back entry left no hole")
	})
}

// countingPolls is a node's SQL journal that counts its polls: with the
// look at the outbox (Poll) and without it (PollRecords).
type countingPolls struct {
	*journal.SQL
	polls, records atomic.Int64
}

func (c *countingPolls) Poll(ctx context.Context, after int64, limit int) (journal.PollResult, error) {
	c.polls.Add(1)
	return c.SQL.Poll(ctx, after, limit)
}

func (c *countingPolls) PollRecords(ctx context.Context, after int64, limit int) (journal.PollResult, error) {
	c.records.Add(1)
	return c.SQL.PollRecords(ctx, after, limit)
}

// TestOnlyTicksLookAtTheOutbox: Start, push wake-ups and WaitFor poll
// without the look at the pending table, which a pending table full of
// deleted rows that the database cannot remove yet makes slow; the polls
// on ticks look, and relay what a writer left there.
func TestOnlyTicksLookAtTheOutbox(t *testing.T) {
	forEachBackend(t, func(t *testing.T, f fixture) {
		if f.pool == nil {
			t.Skip("the folder has no outbox")
		}
		ctx := ctxT(t)
		wc := cfg("w")
		wc.SyncDelay = time.Hour // it publishes; the relaying is b's
		w := f.open(t, wc)
		start(t, w)
		node := func(id string, syncDelay time.Duration) (*cluster.Node, *countingPolls) {
			j, revs, leases := f.stores(t, id, id+"-1")
			cj := &countingPolls{SQL: j.(*journal.SQL)}
			c := cfg(id)
			c.Journal, c.Revisions, c.Leases, c.Instance = cj, revs, leases, id+"-1"
			c.SyncDelay = syncDelay
			n, err := cluster.New(c)
			require.NoError(t, err)
			t.Cleanup(func() { n.Stop(context.Background()) })
			start(t, n)
			return n, cj
		}

		// No tick comes due during this part.
		a, aj := node("a", time.Hour)
		for i := range 20 {
			rev, err := w.Publish(ctx, "p", fmt.Appendf(nil, "%d", i))
			require.NoError(t, err)
			require.NoError(t, a.WaitFor(ctx, rev))
		}
		require.Positive(t, aj.records.Load())
		require.Zero(t, aj.polls.Load(), "no poll but the ticks' looks at the outbox")

		// A writer that committed entries and never relayed them: a
		// node's tick finds them and relays them.
		orphan, _, _ := f.stores(t, "gone", "gone-1")
		pool := f.pool(t)
		tx, err := pool.BeginTx(ctx, nil)
		require.NoError(t, err)
		p, err := orphan.(*journal.SQL).AppendTx(ctx, tx, journal.Entry{Producer: "p", Payload: []byte("orphan")})
		require.NoError(t, err)
		require.NoError(t, tx.Commit())
		b, bj := node("b", 100*time.Millisecond)
		require.Eventually(t, func() bool {
			st := b.Stats()
			return st.Head > 20 && st.Revision == st.Head
		}, 10*time.Second, 10*time.Millisecond, "the tick relays the entry and the node applies it")
		require.Positive(t, bj.polls.Load(), "ticks look at the outbox")
		revs, err := p.Wait(ctx)
		require.NoError(t, err)
		require.NoError(t, a.WaitFor(ctx, revs[0]))
		require.Zero(t, aj.polls.Load())
	})
}
