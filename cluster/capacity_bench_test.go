package cluster_test

import (
	"context"
	"fmt"
	"log/slog"
	"os"
	"strconv"
	"testing"
	"time"

	"github.com/tandem-go/tandem/cluster"
	"github.com/tandem-go/tandem/internal/dbtest"
)

// BenchmarkCapacity is issue 13's capacity check: how many idle nodes start
// and stay members on a PostgreSQL server with the default max_connections
// (100, of which 97 are open to an ordinary account), emulated with an
// account whose CONNECTION LIMIT is 97 so that the shared test server is
// left alone. Each node has its own pool set up by cluster.ConfigurePool
// (no idle connections) and the default SyncDelay and MemberTTL. Nodes are
// started one at a time until one fails to open or start, or until the
// sub-benchmark's cap; then all of them stay idle for 2 × MemberTTL, and
// the benchmark reports how many started (nodes-started), how many hold a
// push listener (listening), how many are still members at the end
// (members-after), and how many membership losses were logged
// (leases-lost). Sub-benchmarks: push=on (cap 100) and push=off (cap 170).
// Not a timed test: run it with
//
//	go test -run '^$' -bench BenchmarkCapacity -benchtime 1x -timeout 30m ./cluster/
//
// TANDEM_CAPACITY_LIMIT changes the connection limit (default 97).
func BenchmarkCapacity(b *testing.B) {
	be := dbtest.Backends[0]
	limit := 97
	if v, _ := strconv.Atoi(os.Getenv("TANDEM_CAPACITY_LIMIT")); v > 0 {
		limit = v
	}
	for _, tc := range []struct {
		name string
		push bool
		cap  int
	}{{"push=on", true, 100}, {"push=off", false, 170}} {
		b.Run(tc.name, func(b *testing.B) {
			ctx := context.Background()
			db := dbtest.Open(b, be)
			acct := db.LimitedAccount(b, limit)
			logs := &warnings{}
			logger := slog.New(logs)
			var nodes []*cluster.Node
			b.Cleanup(func() { stopAll(nodes) })
			var failure error
			began := time.Now()
			for i := range tc.cap {
				pool := db.Pool(b, acct.DSN)
				c := cluster.Config{NodeID: fmt.Sprintf("n%03d", i), Prefix: db.Prefix, DisablePush: !tc.push, Logger: logger}
				cluster.ConfigurePool(pool, be.Dialect, c)
				n, err := cluster.OpenSQL(ctx, pool, be.Dialect, c)
				if err == nil {
					sctx, cancel := context.WithTimeout(ctx, time.Minute)
					err = n.Start(sctx)
					cancel()
					if err != nil {
						_ = n.Stop(ctx)
					}
				}
				if err != nil {
					failure = fmt.Errorf("node %d: %w", i, err)
					break
				}
				nodes = append(nodes, n)
			}
			b.Logf("%d nodes started in %v (limit %d connections); stopped by: %v", len(nodes), time.Since(began).Round(time.Millisecond), limit, failure)
			sessions := func() int {
				s, err := acct.Sessions(ctx)
				if err != nil {
					b.Fatal(err)
				}
				return s
			}
			b.Logf("server sessions of the account right after: %d", sessions())
			wait := 2 * cluster.DefaultMemberTTL
			minMembers := len(nodes)
			for end := time.Now().Add(wait); time.Now().Before(end); time.Sleep(500 * time.Millisecond) {
				m := 0
				for _, n := range nodes {
					if n.Stats().Member {
						m++
					}
				}
				minMembers = min(minMembers, m)
			}
			listening, members := 0, 0
			for _, n := range nodes {
				st := n.Stats()
				if st.Push {
					listening++
				}
				if st.Member {
					members++
				}
			}
			lost := len(logs.matching("membership lease lost"))
			b.Logf("after %v idle: %d members (at least %d throughout), %d with push, %d sessions, %d membership losses logged, %d warnings",
				wait, members, minMembers, listening, sessions(), lost, len(logs.matching("")))
			b.ReportMetric(float64(len(nodes)), "nodes-started")
			b.ReportMetric(float64(listening), "listening")
			b.ReportMetric(float64(members), "members-after")
			b.ReportMetric(float64(minMembers), "members-min")
			b.ReportMetric(float64(lost), "leases-lost")
		})
	}
}
