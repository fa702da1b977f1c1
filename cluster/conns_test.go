package cluster_test

import (
	"context"
	"database/sql"
	"fmt"
	"log/slog"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/tandem-go/tandem/cluster"
	"github.com/tandem-go/tandem/dialect"
	"github.com/tandem-go/tandem/internal/dbtest"
)

// warnings is a slog handler that keeps the messages of warnings and
// errors.
type warnings struct {
	mu   sync.Mutex
	msgs []string
}

func (w *warnings) Enabled(_ context.Context, l slog.Level) bool { return l >= slog.LevelWarn }
func (w *warnings) Handle(_ context.Context, r slog.Record) error {
	var b strings.Builder
	b.WriteString(r.Message)
	r.Attrs(func(a slog.Attr) bool {
		fmt.Fprintf(&b, " %s=%v", a.Key, a.Value)
		return true
	})
	w.mu.Lock()
	w.msgs = append(w.msgs, b.String())
	w.mu.Unlock()
	return nil
}
func (w *warnings) WithAttrs([]slog.Attr) slog.Handler { return w }
func (w *warnings) WithGroup(string) slog.Handler      { return w }

// matching returns the kept messages that contain s.
func (w *warnings) matching(s string) []string {
	w.mu.Lock()
	defer w.mu.Unlock()
	var out []string
	for _, m := range w.msgs {
		if strings.Contains(m, s) {
			out = append(out, m)
		}
	}
	return out
}

// TestRefusedConnections runs nodes under an account limited to a few
// connections, with pools set up by ConfigurePool, and then has other
// clients take every connection the account has left, in bursts, for
// 2 × MemberTTL. Nodes that try to start meanwhile fail with an error
// naming the refusal; the nodes already running keep their membership (no
// lease lost, Stats().Member throughout) and apply every record published
// meanwhile, in order. (Bursts that leave a node no free connection for
// most of its renewal period are not survived: see "Connections".) A late
// node may win a connection a running node let go of just then; it starts
// like any other.
func TestRefusedConnections(t *testing.T) {
	for _, b := range dbtest.Backends[:2] {
		t.Run(b.Name, func(t *testing.T) {
			t.Parallel()
			ctx := ctxT(t)
			db := dbtest.Open(t, b)
			acct := db.LimitedAccount(t, 12)
			logs := &warnings{}
			t.Cleanup(func() {
				if t.Failed() {
					for _, m := range logs.matching("") {
						t.Log(m)
					}
				}
			})
			type running struct {
				n   *cluster.Node
				rec *recorder
			}
			open := func(id string) (*cluster.Node, *recorder, error) {
				pool, err := sql.Open(b.Driver, acct.DSN)
				require.NoError(t, err)
				c := cfg(id)
				c.Prefix, c.Logger = db.Prefix, slog.New(logs)
				cluster.ConfigurePool(pool, b.Dialect, c)
				n, err := cluster.OpenSQL(ctx, pool, b.Dialect, c)
				if err != nil {
					pool.Close()
					return nil, nil, err
				}
				rec := &recorder{}
				require.NoError(t, n.Handle("p", rec))
				sctx, cancel := context.WithTimeout(ctx, 30*time.Second)
				defer cancel()
				if err := n.Start(sctx); err != nil {
					_ = n.Stop(ctx)
					pool.Close()
					return nil, nil, err
				}
				t.Cleanup(func() {
					_ = n.Stop(context.Background())
					pool.Close()
				})
				return n, rec, nil
			}
			var nodes []running
			for i := range 5 {
				n, rec, err := open(fmt.Sprintf("n%d", i))
				require.NoError(t, err)
				nodes = append(nodes, running{n, rec})
			}
			ttl := cfg("x").MemberTTL
			var revs []int64
			refusals, started, bursts := 0, 0, 0
			for end := time.Now().Add(2 * ttl); time.Now().Before(end); bursts++ {
				// Publish, then take every connection the account has
				// for a while (well under the renewal period), and try
				// to start a node meanwhile.
				rev, err := nodes[0].n.Publish(ctx, "p", []byte{byte(bursts)})
				require.NoError(t, err)
				revs = append(revs, rev)
				_, release := acct.HogAll(t, acct.Limit)
				late, _, err := open(fmt.Sprintf("late%d", bursts))
				if err == nil {
					// It won a connection another client let go of
					// just then: a node like the others.
					started++
					require.NoError(t, late.Stop(ctx))
				} else {
					require.ErrorIs(t, err, dialect.ErrTooManyConnections)
					require.ErrorContains(t, err, "refused a connection")
					require.ErrorContains(t, err, "Connections")
					refusals++
				}
				time.Sleep(ttl / 10)
				release()
				for _, r := range nodes {
					require.True(t, r.n.Stats().Member, "node %s lost its membership", r.n.ID())
				}
				time.Sleep(ttl / 4)
			}
			require.NotZero(t, refusals, "no start was refused: the hog did not take the connections")
			t.Logf("%d bursts, %d refused starts, %d started, %d records", bursts, refusals, started, len(revs))
			require.Empty(t, logs.matching("lease lost"), "a running node lost a lease")
			require.Empty(t, logs.matching("membership"), "a running node lost its membership")
			last := revs[len(revs)-1]
			for _, r := range nodes[1:] {
				wctx, cancel := context.WithTimeout(ctx, 30*time.Second)
				require.NoError(t, r.n.WaitFor(wctx, last), "node %s", r.n.ID())
				cancel()
				r.rec.mu.Lock()
				var got []int64
				for _, rec := range r.rec.recs {
					got = append(got, rec.Revision)
				}
				r.rec.mu.Unlock()
				require.Equal(t, revs, got, "node %s applied every record once, in order", r.n.ID())
			}
			for _, r := range nodes {
				require.True(t, r.n.Stats().Member, "node %s lost its membership", r.n.ID())
			}
		})
	}
}

// TestIdleNodeHolds: a node whose pool ConfigurePool set up holds, when
// idle, its push listener (PostgreSQL with push on) and nothing else; with
// push off, nothing.
func TestIdleNodeHolds(t *testing.T) {
	b := dbtest.Backends[0]
	db := dbtest.Open(t, b)
	for _, push := range []bool{true, false} {
		t.Run(fmt.Sprintf("push=%v", push), func(t *testing.T) {
			ctx := ctxT(t)
			acct := db.LimitedAccount(t, 20)
			pool := db.Pool(t, acct.DSN)
			c := cluster.Config{NodeID: "idle", Prefix: db.Prefix, SyncDelay: 500 * time.Millisecond, DisablePush: !push}
			cluster.ConfigurePool(pool, b.Dialect, c)
			n, err := cluster.OpenSQL(ctx, pool, b.Dialect, c)
			require.NoError(t, err)
			start(t, n)
			t.Cleanup(func() { n.Stop(context.Background()) })
			want := 0
			if push {
				want = 1
			}
			if push {
				require.Eventually(t, func() bool { return n.Stats().Push }, 10*time.Second, 5*time.Millisecond, "listening")
			} else {
				require.False(t, n.Stats().Push)
			}
			// Publish once, so that the append connection was taken,
			// then wait until it is given back (ConnIdle).
			_, err = n.Publish(ctx, "p", nil)
			require.NoError(t, err)
			deadline := time.Now().Add(20 * time.Second)
			for {
				s, err := acct.Sessions(ctx)
				require.NoError(t, err)
				if s == want {
					break
				}
				require.True(t, time.Now().Before(deadline), "the idle node holds %d connections, want %d", s, want)
				time.Sleep(50 * time.Millisecond)
			}
			// Sample for several SyncDelays: apart from a poll or a
			// renewal in progress, the count stays at want.
			over, samples := 0, 0
			for end := time.Now().Add(4 * c.SyncDelay); time.Now().Before(end); samples++ {
				s, err := acct.Sessions(ctx)
				require.NoError(t, err)
				require.LessOrEqual(t, s, want+2, "an idle node uses at most a statement's connection at a time besides what it holds")
				if s > want {
					over++
				}
				time.Sleep(20 * time.Millisecond)
			}
			require.LessOrEqual(t, over*5, samples, "the idle node held more than %d connections in %d of %d samples", want, over, samples)
			require.Zero(t, pool.Stats().Idle, "the pool keeps no idle connection")
		})
	}
}
