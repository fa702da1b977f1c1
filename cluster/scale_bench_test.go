package cluster_test

import (
	"context"
	"database/sql"
	"fmt"
	"math/rand/v2"
	"os"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/tandem-go/tandem/cluster"
	"github.com/tandem-go/tandem/internal/dbtest"
	"github.com/tandem-go/tandem/journal"
)

// BenchmarkScale is the scale benchmark of issue 13: N nodes on one
// storage, each with its own pool (its own *sql.DB, as separate processes
// would have; on the file backend its own journal, positions and leases
// opened on the shared folder), all with the default SyncDelay. It is not
// a timed test: each sub-benchmark runs its scenario once, whatever b.N,
// and reports what it measured. Run it with -benchtime 1x and a long
// -timeout:
//
//	go test -run '^$' -bench 'BenchmarkScale' -benchtime 1x -timeout 60m ./cluster/
//	go test -run '^$' -bench 'BenchmarkScale/postgres/nodes=10$' -benchtime 1x ./cluster/
//
// Sub-benchmarks are <backend>/nodes=<N>: postgres and mysql with
// N = 10, 50, 100, 200, file with N = 10, 50, 100. Variables:
//
//	TANDEM_SCALE_SYNCDELAY  the nodes' SyncDelay (default 5s) for quick runs
//	TANDEM_SCALE_NODES      the node counts, e.g. "10,20" (default as above)
//	TANDEM_SCALE_POOL       "configured": each node's pool set up by
//	                        cluster.ConfigurePool (no idle connections);
//	                        default: database/sql's defaults
//	TANDEM_SCALE_PUSH       "off": Config.DisablePush on every SQL node
//	TANDEM_SCALE_ROUNDS     rounds of the propagation and Barrier
//	                        measurements (default 100 and 30 on push
//	                        backends, 8 and 5 on MariaDB, which polls)
//
// The scenario, and the metrics:
//
//  1. Open and start the N nodes (node 0 first, which creates the schema,
//     then the others 8 at a time). A node that cannot open or start —
//     for instance because the server ran out of connections — fails the
//     sub-benchmark with the node's number, the error and the server's
//     connection count and limit: it does not hang and it is not hidden.
//     The same holds for the later steps; a failed sub-benchmark reports
//     no metrics, so it logs those it measured before the failure.
//     heap-KiB/node is the growth of runtime.MemStats.HeapInuse (after
//     runtime.GC) from before opening to after starting, over N, and
//     goroutines/node the growth of runtime.NumGoroutine: the benchmark
//     process holds every node, so this is what one node costs a process,
//     its pool and driver included.
//  2. Wait 2 × journal.ConnIdle (the append connection goes back to the
//     pool after ConnIdle), then count the server's connections for the
//     test user: PostgreSQL's pg_stat_activity, MariaDB's
//     information_schema.PROCESSLIST. conns/node-idle is that count minus
//     the count before opening (the harness's own), over N.
//  3. Idle for 3 × SyncDelay. idle-stmts/node/s is what the nodes' pools
//     sent the server in that window, over N and the window: counted on
//     the wire by the pools' connections (see scale_wire_test.go: one count
//     per query, prepare or execute round trip, pings and BEGIN/COMMIT
//     included). The statements themselves are logged, per node per
//     minute. idle-dials/node/min is how many connections the pools opened
//     in that window, per node per minute. idle-srv/node/s (MariaDB only)
//     is the server's own counter over the same window, as a cross-check:
//     Questions, which counts statements but not pings and prepares.
//     PostgreSQL has no such counter (see serverMonitor.statements).
//  4. Every node publishes once, all at once; as soon as every Publish has
//     returned, conns/node-published counts the connections again.
//  5. Propagation: a node (a different one each round) publishes one
//     record, and the round ends when every other node's handler has
//     seen it. prop-p50-ms and prop-p99-ms are from just before Publish
//     to the last handler. On MariaDB (no push) each round starts after a
//     random pause in [0, SyncDelay), so that publishes fall at random
//     points of the nodes' poll cycles.
//  6. Barrier: a node publishes and calls Barrier(rev) on itself;
//     barrier-p50-ms and barrier-p99-ms are from just before Publish until
//     Barrier returns (so they include the propagation). With 30 rounds
//     (5 on MariaDB) the p99 is the maximum.
func BenchmarkScale(b *testing.B) {
	syncDelay := cluster.DefaultSyncDelay
	if v := os.Getenv("TANDEM_SCALE_SYNCDELAY"); v != "" {
		d, err := time.ParseDuration(v)
		if err != nil || d <= 0 {
			b.Fatalf("TANDEM_SCALE_SYNCDELAY=%q: want a positive duration such as 1s", v)
		}
		syncDelay = d
	}
	sizes := func(def ...int) []int {
		v := os.Getenv("TANDEM_SCALE_NODES")
		if v == "" {
			return def
		}
		var ns []int
		for f := range strings.SplitSeq(v, ",") {
			n, err := strconv.Atoi(strings.TrimSpace(f))
			if err != nil || n < 2 {
				b.Fatalf("TANDEM_SCALE_NODES=%q: want node counts of at least 2, such as 10,50", v)
			}
			ns = append(ns, n)
		}
		return ns
	}
	backends := []scaleBackend{{name: "file", push: true, sizes: sizes(10, 50, 100)}}
	for _, be := range dbtest.Backends {
		if be.Name == "postgres" || be.Name == "mysql" {
			backends = append(backends, scaleBackend{name: be.Name, db: be, sql: true,
				push: be.Name == "postgres", sizes: sizes(10, 50, 100, 200)})
		}
	}
	for _, be := range backends {
		for _, n := range be.sizes {
			b.Run(fmt.Sprintf("%s/nodes=%d", be.name, n), func(b *testing.B) {
				benchScale(b, be, n, syncDelay)
			})
		}
	}
}

type scaleBackend struct {
	name  string
	sql   bool
	db    dbtest.Backend
	push  bool
	sizes []int
}

func benchScale(b *testing.B, be scaleBackend, n int, syncDelay time.Duration) {
	ctx := context.Background()
	// A failed benchmark reports no metrics: fail logs those measured so
	// far, then the error.
	var measured []string
	report := func(v float64, unit string) {
		b.ReportMetric(v, unit)
		measured = append(measured, fmt.Sprintf("%.4g %s", v, unit))
	}
	fail := func(format string, args ...any) {
		b.Helper()
		if len(measured) > 0 {
			b.Logf("measured before the failure: %s", strings.Join(measured, ", "))
		}
		b.Fatalf("%s nodes=%d: %s", be.name, n, fmt.Sprintf(format, args...))
	}
	propRounds, barrierRounds := 100, 30
	if !be.push {
		propRounds, barrierRounds = 8, 5
	}
	if v, _ := strconv.Atoi(os.Getenv("TANDEM_SCALE_ROUNDS")); v > 0 {
		propRounds, barrierRounds = v, v
	}

	// The storage, and how a node is opened on it.
	var (
		open  func(cluster.Config) (*cluster.Node, error)
		ws    *wireStats
		mon   *serverMonitor
		mu    sync.Mutex
		pools []*sql.DB
	)
	if be.sql {
		db := dbtest.Open(b, be.db)
		ws = newWireStats(db.Prefix)
		mon = newServerMonitor(b, db)
		open = func(cfg cluster.Config) (*cluster.Node, error) {
			pool, err := openCountedPool(db.Driver, db.DSN, ws)
			if err != nil {
				return nil, err
			}
			mu.Lock()
			pools = append(pools, pool)
			mu.Unlock()
			cfg.Prefix = db.Prefix
			if os.Getenv("TANDEM_SCALE_PUSH") == "off" {
				cfg.DisablePush = true
			}
			if os.Getenv("TANDEM_SCALE_POOL") == "configured" {
				cluster.ConfigurePool(pool, db.Dialect, cfg)
			}
			return cluster.OpenSQL(ctx, pool, db.Dialect, cfg)
		}
	} else {
		dir := b.TempDir()
		open = func(cfg cluster.Config) (*cluster.Node, error) {
			cfg.Dir = dir
			return cluster.OpenDir(ctx, cfg)
		}
	}

	baseConns := 0
	if mon != nil {
		baseConns = mon.mustConns(b)
	}
	heapBefore, goBefore := heapInuse(), runtime.NumGoroutine()

	// 1. Open and start.
	nodes := make([]*cluster.Node, n)
	lastSeen := make([]atomic.Int64, n)
	arr := newArrivals(n - 1)
	b.Cleanup(func() {
		stopAll(nodes)
		for _, p := range pools {
			p.Close()
		}
	})
	openOne := func(i int) error {
		node, err := open(cluster.Config{NodeID: fmt.Sprintf("n%03d", i), SyncDelay: syncDelay, Logger: benchLogger()})
		if err != nil {
			return fmt.Errorf("open node %d: %w", i, err)
		}
		nodes[i] = node
		if err := node.Handle("scale", cluster.HandlerFunc(func(_ context.Context, rec journal.Record) error {
			if rec.Revision > lastSeen[i].Load() { // a record applied again counts once
				lastSeen[i].Store(rec.Revision)
				arr.arrive(rec.Revision)
			}
			return nil
		})); err != nil {
			return err
		}
		sctx, cancel := context.WithTimeout(ctx, 2*time.Minute)
		defer cancel()
		if err := node.Start(sctx); err != nil {
			return fmt.Errorf("start node %d: %w", i, err)
		}
		return nil
	}
	began := time.Now()
	err := openOne(0)
	if err == nil {
		err = forEach(n-1, 8, func(i int) error { return openOne(i + 1) })
	}
	if err != nil {
		fail("%v%s", err, mon.describe())
	}
	b.Logf("%d nodes opened and started in %v", n, time.Since(began).Round(time.Millisecond))
	heapAfter, goAfter := heapInuse(), runtime.NumGoroutine()
	report(float64(heapAfter-heapBefore)/1024/float64(n), "heap-KiB/node")
	report(float64(goAfter-goBefore)/float64(n), "goroutines/node")

	// 2. Connections when idle.
	time.Sleep(2 * journal.ConnIdle)
	if mon != nil {
		c := mon.mustConns(b)
		report(float64(c-baseConns)/float64(n), "conns/node-idle")
		b.Logf("idle: %d server connections for %d nodes (%d the harness's); the pools hold %d open, %d in use",
			c-baseConns, n, baseConns, poolOpen(pools, false), poolOpen(pools, true))
	}

	// 3. Statements when idle.
	if ws != nil {
		window := max(3*syncDelay, 3*time.Second)
		before, srvBefore := ws.snapshot(), mon.mustStatements(b)
		totalBefore, dialsBefore, start := ws.total.Load(), ws.dials.Load(), time.Now()
		time.Sleep(window)
		total, dials, took := ws.total.Load()-totalBefore, ws.dials.Load()-dialsBefore, time.Since(start)
		perNode := func(x int64) float64 { return float64(x) / float64(n) / took.Seconds() }
		report(perNode(total), "idle-stmts/node/s")
		report(perNode(dials)*60, "idle-dials/node/min")
		srv := "not read"
		if srvBefore >= 0 {
			d := mon.mustStatements(b) - srvBefore - 1 // less the monitor's own SHOW
			report(perNode(d), "idle-srv/node/s")
			srv = strconv.FormatInt(d, 10)
		}
		var sb strings.Builder
		for _, lc := range diffLabels(before, ws.snapshot()) {
			fmt.Fprintf(&sb, "\n  %7.2f  %s", float64(lc.n)/float64(n)/took.Minutes(), lc.label)
		}
		b.Logf("idle %v: %d statements and %d new connections from %d nodes (server's Questions: %s); statements per node per minute:%s",
			took.Round(time.Millisecond), total, dials, n, srv, sb.String())
	}

	// 4. Every node publishes once, at once.
	revs := make([]int64, n)
	began = time.Now()
	err = forEach(n, n, func(i int) error {
		var err error
		revs[i], err = nodes[i].Publish(ctx, "scale", []byte("burst"))
		if err != nil {
			return fmt.Errorf("node %d: publish: %w", i, err)
		}
		return nil
	})
	burst := time.Since(began)
	if mon != nil {
		c := mon.mustConns(b)
		report(float64(c-baseConns)/float64(n), "conns/node-published")
		b.Logf("after %d publishes (%v): %d server connections for %d nodes", n, burst.Round(time.Millisecond), c-baseConns, n)
	}
	if err != nil {
		fail("every node publishes once: %v%s", err, mon.describe())
	}
	timeout := 3*syncDelay + 10*time.Second
	for _, rev := range revs {
		if _, ok := arr.wait(rev, timeout); !ok {
			fail("revision %d reached %d of %d nodes within %v", rev, arr.count(rev), n-1, timeout)
		}
	}

	pause := func() {
		if !be.push {
			time.Sleep(rand.N(syncDelay))
		}
	}
	// 5. Propagation to every node.
	lat := make([]time.Duration, 0, propRounds)
	for r := range propRounds {
		pause()
		pub := nodes[r%n]
		start := time.Now()
		rev, err := pub.Publish(ctx, "scale", []byte("propagate"))
		if err != nil {
			fail("publish: %v%s", err, mon.describe())
		}
		at, ok := arr.wait(rev, timeout)
		if !ok {
			fail("revision %d reached %d of %d nodes within %v", rev, arr.count(rev), n-1, timeout)
		}
		lat = append(lat, at.Sub(start))
	}
	slices.Sort(lat)
	report(ms(percentile(lat, 0.50)), "prop-p50-ms")
	report(ms(percentile(lat, 0.99)), "prop-p99-ms")

	// 6. Barrier.
	lat = lat[:0]
	for r := range barrierRounds {
		pause()
		pub := nodes[(7*r+1)%n]
		start := time.Now()
		rev, err := pub.Publish(ctx, "scale", []byte("barrier"))
		if err != nil {
			fail("publish: %v%s", err, mon.describe())
		}
		bctx, cancel := context.WithTimeout(ctx, timeout)
		err = pub.Barrier(bctx, rev)
		cancel()
		if err != nil {
			fail("Barrier(%d): %v%s", rev, err, mon.describe())
		}
		lat = append(lat, time.Since(start))
	}
	slices.Sort(lat)
	report(ms(percentile(lat, 0.50)), "barrier-p50-ms")
	report(ms(percentile(lat, 0.99)), "barrier-p99-ms")
	b.ReportMetric(0, "ns/op")
}

func ms(d time.Duration) float64 { return float64(d) / float64(time.Millisecond) }

func heapInuse() int64 {
	runtime.GC()
	var m runtime.MemStats
	runtime.ReadMemStats(&m)
	return int64(m.HeapInuse)
}

// poolOpen sums the pools' open (or in-use) connections.
func poolOpen(pools []*sql.DB, inUse bool) int {
	t := 0
	for _, p := range pools {
		s := p.Stats()
		if inUse {
			t += s.InUse
		} else {
			t += s.OpenConnections
		}
	}
	return t
}

// forEach runs f(0) … f(n-1), at most par at a time, and returns the first
// error; after one, it starts no more.
func forEach(n, par int, f func(int) error) error {
	var (
		wg    sync.WaitGroup
		mu    sync.Mutex
		first error
		sem   = make(chan struct{}, par)
	)
	for i := range n {
		mu.Lock()
		failed := first != nil
		mu.Unlock()
		if failed {
			break
		}
		sem <- struct{}{}
		wg.Go(func() {
			defer func() { <-sem }()
			if err := f(i); err != nil {
				mu.Lock()
				if first == nil {
					first = err
				}
				mu.Unlock()
			}
		})
	}
	wg.Wait()
	return first
}

// stopAll stops the nodes that were opened, 16 at a time.
func stopAll(nodes []*cluster.Node) {
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	_ = forEach(len(nodes), 16, func(i int) error {
		if nodes[i] != nil {
			_ = nodes[i].Stop(ctx)
		}
		return nil
	})
}

// arrivals counts, per revision, the nodes whose handler saw it, and notes
// when the last of want did.
type arrivals struct {
	want int
	mu   sync.Mutex
	revs map[int64]*arrival
}

type arrival struct {
	n    int
	last time.Time
	done chan struct{}
}

func newArrivals(want int) *arrivals {
	return &arrivals{want: want, revs: map[int64]*arrival{}}
}

func (a *arrivals) get(rev int64) *arrival {
	r := a.revs[rev]
	if r == nil {
		r = &arrival{done: make(chan struct{})}
		a.revs[rev] = r
	}
	return r
}

func (a *arrivals) arrive(rev int64) {
	at := time.Now()
	a.mu.Lock()
	defer a.mu.Unlock()
	r := a.get(rev)
	r.n++
	r.last = at
	if r.n == a.want {
		close(r.done)
	}
}

func (a *arrivals) count(rev int64) int {
	a.mu.Lock()
	defer a.mu.Unlock()
	return a.get(rev).n
}

// wait returns when the last node saw rev, or false after timeout.
func (a *arrivals) wait(rev int64, timeout time.Duration) (time.Time, bool) {
	a.mu.Lock()
	r := a.get(rev)
	a.mu.Unlock()
	t := time.NewTimer(timeout)
	defer t.Stop()
	select {
	case <-r.done:
		a.mu.Lock()
		defer a.mu.Unlock()
		return r.last, true
	case <-t.C:
		return time.Time{}, false
	}
}

// serverMonitor asks the database about the nodes' connections and
// statements, on one connection of the harness's pool held throughout (so
// that it still gets answers when the nodes have used up the server's
// connections).
type serverMonitor struct {
	name string
	conn *sql.Conn
}

func newServerMonitor(b *testing.B, db *dbtest.DB) *serverMonitor {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	conn, err := db.DB.Conn(ctx)
	if err != nil {
		b.Fatalf("%s: monitor connection: %v", db.Name, err)
	}
	b.Cleanup(func() { conn.Close() })
	return &serverMonitor{name: db.Name, conn: conn}
}

func (m *serverMonitor) query(q string) (int64, error) {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	var v int64
	err := m.conn.QueryRowContext(ctx, q).Scan(&v)
	return v, err
}

// conns counts the server's connections of the test user.
func (m *serverMonitor) conns() (int, error) {
	q := `SELECT count(*) FROM pg_stat_activity WHERE usename = current_user`
	if m.name == "mysql" {
		q = `SELECT COUNT(*) FROM information_schema.PROCESSLIST WHERE USER = SUBSTRING_INDEX(CURRENT_USER(), '@', 1)`
	}
	v, err := m.query(q)
	return int(v), err
}

func (m *serverMonitor) mustConns(b *testing.B) int {
	c, err := m.conns()
	if err != nil {
		b.Fatalf("%s: count connections: %v", m.name, err)
	}
	return c
}

// statements reads MariaDB's statement counter, Questions, or returns -1
// on PostgreSQL. PostgreSQL has no usable one without pg_stat_statements:
// pg_stat_database's xact_commit, tried first, showed 100 single-statement
// round trips on one connection as 4 transactions 11 s later (backends
// flush it lazily), and counts each new connection's start as about 12.
func (m *serverMonitor) statements() (int64, error) {
	if m.name != "mysql" {
		return -1, nil
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	var name string
	var v int64
	err := m.conn.QueryRowContext(ctx, `SHOW GLOBAL STATUS LIKE 'Questions'`).Scan(&name, &v)
	return v, err
}

func (m *serverMonitor) mustStatements(b *testing.B) int64 {
	v, err := m.statements()
	if err != nil {
		b.Fatalf("%s: read the statement counter: %v", m.name, err)
	}
	return v
}

// describe says how many connections the server has and allows, for a
// failure message; "" for the file backend.
func (m *serverMonitor) describe() string {
	if m == nil {
		return ""
	}
	c, err := m.conns()
	if err != nil {
		return fmt.Sprintf(" (server connections: %v)", err)
	}
	q := `SELECT setting::bigint FROM pg_settings WHERE name = 'max_connections'`
	if m.name == "mysql" {
		q = `SELECT @@max_connections`
	}
	limit, err := m.query(q)
	if err != nil {
		return fmt.Sprintf(" (server connections of the test user: %d; max_connections: %v)", c, err)
	}
	return fmt.Sprintf(" (server connections of the test user: %d of max_connections %d)", c, limit)
}
