package metrics_test

import (
	"context"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
	"github.com/stretchr/testify/require"

	"github.com/tandem-go/tandem/cluster"
	"github.com/tandem-go/tandem/clusterhttp"
	"github.com/tandem-go/tandem/datastore"
	"github.com/tandem-go/tandem/internal/dbtest"
	"github.com/tandem-go/tandem/janitor"
	"github.com/tandem-go/tandem/metrics"
)

func start(t *testing.T, n *cluster.Node) {
	t.Helper()
	require.NoError(t, n.Start(context.Background()))
	t.Cleanup(func() { n.Stop(context.Background()) })
}

// TestCollector exports a node with its journal, janitor, a cache, the data
// store's collector and the middleware, and checks the output with the
// client library's own helpers.
func TestCollector(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	dir := t.TempDir()
	n, err := cluster.OpenDir(ctx, cluster.Config{Dir: dir, NodeID: "web-1", Janitor: &janitor.Config{Interval: time.Hour}})
	require.NoError(t, err)
	users, err := cluster.NewCache[string, string](n, "users", cluster.CacheConfig[string]{})
	require.NoError(t, err)
	start(t, n)

	store, err := datastore.OpenFile(ctx, datastore.FileConfig{Dir: dir})
	require.NoError(t, err)
	gc, err := datastore.NewCollector(store, datastore.GCConfig{DryRun: true})
	require.NoError(t, err)
	_, err = gc.Collect(ctx, nil, datastore.ReferencesFunc(func(context.Context, func(datastore.ID) error) error { return nil }))
	require.NoError(t, err)

	mw, err := clusterhttp.New(n, clusterhttp.Config{})
	require.NoError(t, err)
	w := httptest.NewRecorder()
	r := httptest.NewRequest(http.MethodGet, "/", nil)
	r.Header.Set(clusterhttp.DefaultHeader, "bad")
	mw.Wrap(http.NotFoundHandler()).ServeHTTP(w, r)

	_, err = users.Invalidate(ctx, "a", "b")
	require.NoError(t, err)
	users.Add("a", "Ada")
	users.Get("a")
	users.Get("zz")
	require.NoError(t, n.Sync(ctx))

	c, err := metrics.New(metrics.Config{Node: n, Caches: []metrics.Cache{users}, GC: gc, HTTP: mw})
	require.NoError(t, err)
	reg := prometheus.NewPedanticRegistry()
	require.NoError(t, reg.Register(c))

	problems, err := testutil.GatherAndLint(reg)
	require.NoError(t, err)
	require.Empty(t, problems)

	require.NoError(t, testutil.CollectAndCompare(c, strings.NewReader(`
# HELP tandem_node_running Whether the node is started and not stopped or replaced (1) or not (0).
# TYPE tandem_node_running gauge
tandem_node_running{node="web-1"} 1
# HELP tandem_node_member Whether the node holds its membership lease now (1): it publishes, and its caches serve, only then.
# TYPE tandem_node_member gauge
tandem_node_member{node="web-1"} 1
# HELP tandem_node_revision The last journal revision the node applied.
# TYPE tandem_node_revision gauge
tandem_node_revision{node="web-1"} 1
# HELP tandem_journal_appends_total Append calls this node's journal committed.
# TYPE tandem_journal_appends_total counter
tandem_journal_appends_total{node="web-1"} 1
# HELP tandem_journal_resolved_batches_total Group commits whose outcome was open and was looked up, by what was found: committed (reported as success) or not_written (reported as an error).
# TYPE tandem_journal_resolved_batches_total counter
tandem_journal_resolved_batches_total{node="web-1",outcome="committed"} 0
tandem_journal_resolved_batches_total{node="web-1",outcome="not_written"} 0
# HELP tandem_cache_entries Entries the cache holds.
# TYPE tandem_cache_entries gauge
tandem_cache_entries{cache="users",node="web-1"} 1
# HELP tandem_cache_hits_total Lookups that found the key.
# TYPE tandem_cache_hits_total counter
tandem_cache_hits_total{cache="users",node="web-1"} 1
# HELP tandem_cache_misses_total Lookups that did not find the key.
# TYPE tandem_cache_misses_total counter
tandem_cache_misses_total{cache="users",node="web-1"} 1
# HELP tandem_janitor_runs_total Janitor runs on this node.
# TYPE tandem_janitor_runs_total counter
tandem_janitor_runs_total{node="web-1"} 0
# HELP tandem_datastore_gc_runs_total Data store garbage collections on this node that completed.
# TYPE tandem_datastore_gc_runs_total counter
tandem_datastore_gc_runs_total{node="web-1"} 1
# HELP tandem_http_malformed_tokens_total Revision tokens that did not parse, answered 400.
# TYPE tandem_http_malformed_tokens_total counter
tandem_http_malformed_tokens_total{node="web-1"} 1
`), "tandem_node_running", "tandem_node_member", "tandem_node_revision", "tandem_journal_appends_total",
		"tandem_journal_resolved_batches_total", "tandem_cache_entries", "tandem_cache_hits_total",
		"tandem_cache_misses_total", "tandem_janitor_runs_total", "tandem_datastore_gc_runs_total",
		"tandem_http_malformed_tokens_total"))

	// Every metric is there, once per series; pending is opt-in.
	require.Equal(t, 1, testutil.CollectAndCount(c, "tandem_node_info"))
	require.Equal(t, 0, testutil.CollectAndCount(c, "tandem_journal_pending_entries"))
	require.Equal(t, 1, testutil.CollectAndCount(c, "tandem_janitor_next_run_timestamp_seconds"))
	require.Greater(t, testutil.ToFloat64(gauge(t, reg, "tandem_janitor_next_run_timestamp_seconds")), float64(time.Now().Unix()))

	// A stopped node says so.
	require.NoError(t, n.Stop(ctx))
	require.NoError(t, testutil.CollectAndCompare(c, strings.NewReader(`
# HELP tandem_node_running Whether the node is started and not stopped or replaced (1) or not (0).
# TYPE tandem_node_running gauge
tandem_node_running{node="web-1"} 0
`), "tandem_node_running"))
}

// gauge wraps one gathered metric of reg as a Collector for ToFloat64.
func gauge(t *testing.T, reg *prometheus.Registry, name string) prometheus.Collector {
	t.Helper()
	mfs, err := reg.Gather()
	require.NoError(t, err)
	for _, mf := range mfs {
		if mf.GetName() == name {
			return prometheus.NewGaugeFunc(prometheus.GaugeOpts{Name: "x", Help: "x"}, func() float64 { return mf.GetMetric()[0].GetGauge().GetValue() })
		}
	}
	t.Fatalf("no metric %s", name)
	return nil
}

// TestPending: on SQL, the outbox's backlog is exported on request, with
// the query bounded.
func TestPending(t *testing.T) {
	for _, b := range dbtest.Backends {
		t.Run(b.Name, func(t *testing.T) {
			t.Parallel()
			ctx := context.Background()
			db := dbtest.Open(t, b)
			n, err := cluster.OpenSQL(ctx, db.NewPool(t), b.Dialect, cluster.Config{Prefix: db.Prefix, NodeID: "db-1"})
			require.NoError(t, err)
			start(t, n)
			_, err = n.Publish(ctx, "p", nil)
			require.NoError(t, err)
			c, err := metrics.New(metrics.Config{Node: n, Pending: true})
			require.NoError(t, err)
			problems, err := testutil.CollectAndLint(c)
			require.NoError(t, err)
			require.Empty(t, problems)
			require.NoError(t, testutil.CollectAndCompare(c, strings.NewReader(`
# HELP tandem_journal_pending_entries Entries of committed transactions waiting in the outbox (pending table) to be relayed into the journal, cluster-wide.
# TYPE tandem_journal_pending_entries gauge
tandem_journal_pending_entries{node="db-1"} 0
# HELP tandem_journal_appended_records_total Records those appends committed.
# TYPE tandem_journal_appended_records_total counter
tandem_journal_appended_records_total{node="db-1"} 1
`), "tandem_journal_pending_entries", "tandem_journal_appended_records_total"))
		})
	}
}

func TestConfig(t *testing.T) {
	t.Parallel()
	_, err := metrics.New(metrics.Config{})
	require.ErrorContains(t, err, "Node")
}

// TestConfigCaches: a nil cache, typed or not (a *cluster.Cache variable
// not assigned yet), and two caches of one name are configuration errors
// naming the index: the first would panic at scrape time, killing the
// process, and the second would fail every scrape with clashing series.
func TestConfigCaches(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	n, err := cluster.OpenDir(ctx, cluster.Config{Dir: t.TempDir(), NodeID: "web-1"})
	require.NoError(t, err)
	t.Cleanup(func() { n.Stop(context.Background()) }) // closes the journal it opened
	users, err := cluster.NewCache[string, string](n, "users", cluster.CacheConfig[string]{})
	require.NoError(t, err)

	var later *cluster.Cache[string, string]
	_, err = metrics.New(metrics.Config{Node: n, Caches: []metrics.Cache{users, later}})
	require.ErrorIs(t, err, cluster.ErrInvalidArgument)
	require.ErrorContains(t, err, "Caches[1] is nil")
	_, err = metrics.New(metrics.Config{Node: n, Caches: []metrics.Cache{nil}})
	require.ErrorContains(t, err, "Caches[0] is nil")

	other, err := cluster.OpenDir(ctx, cluster.Config{Dir: t.TempDir(), NodeID: "web-2"})
	require.NoError(t, err)
	t.Cleanup(func() { other.Stop(context.Background()) })
	users2, err := cluster.NewCache[string, int](other, "users", cluster.CacheConfig[string]{})
	require.NoError(t, err)
	_, err = metrics.New(metrics.Config{Node: n, Caches: []metrics.Cache{users, users2}})
	require.ErrorIs(t, err, cluster.ErrInvalidArgument)
	require.ErrorContains(t, err, `Caches[0] and Caches[1] are both named "users"`)

	orders, err := cluster.NewCache[string, int](n, "orders", cluster.CacheConfig[string]{})
	require.NoError(t, err)
	c, err := metrics.New(metrics.Config{Node: n, Caches: []metrics.Cache{users, orders}})
	require.NoError(t, err)
	require.Equal(t, 2, testutil.CollectAndCount(c, "tandem_cache_entries"))
}
