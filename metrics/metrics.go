// Package metrics exports what tandem's long-lived objects count as
// Prometheus metrics: a node's progress and membership, its journal's
// group commits (and, on request, the SQL outbox), its janitor, invalidating
// caches, the data store's garbage collector and the read-your-writes
// middleware.
//
//	c, err := metrics.New(metrics.Config{Node: n, Caches: []metrics.Cache{users}, GC: gc})
//	reg := prometheus.NewRegistry()
//	reg.MustRegister(c)
//	mux.Handle("/metrics", promhttp.HandlerFor(reg, promhttp.HandlerOpts{}))
//
// Every metric is named tandem_<object>_<what>, with its unit as a suffix
// (_seconds, _bytes, _records) and _total on counters, and carries the
// constant label node (the node's id), so that the replicas' series stay
// apart when one Prometheus scrapes them all. A scrape reads the objects'
// Stats, which are in memory: it costs no store query, except the opt-in
// Config.Pending. Lease clients (package lock) keep no statistics, so
// there are none to export; a node's membership is tandem_node_member.
//
// This is the only package of tandem that imports the Prometheus client
// library.
package metrics

import (
	"context"
	"fmt"
	"reflect"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/tandem-go/tandem/cluster"
	"github.com/tandem-go/tandem/clusterhttp"
	"github.com/tandem-go/tandem/datastore"
	"github.com/tandem-go/tandem/journal"
)

// DefaultPendingTimeout bounds the pending-table query of a scrape
// (Config.Pending).
const DefaultPendingTimeout = 2 * time.Second

// Cache is what the collector reads of an invalidating cache: any
// *cluster.Cache[K, V].
type Cache interface {
	Name() string
	Stats() cluster.CacheStats
}

// Config says what a Collector exports. The zero value of each field means
// its default; Node is required.
type Config struct {
	// Node is exported with its journal (when the journal keeps Stats,
	// as journal.SQL and journal.File do) and its janitor (when it runs
	// one). Its id is the constant label node. Required.
	Node *cluster.Node
	// Caches are exported with the variable label cache (their names).
	// Each must be non-nil and have a name of its own.
	Caches []Cache
	// GC is the data store's garbage collector, if any.
	GC *datastore.Collector
	// HTTP is the read-your-writes middleware, if any.
	HTTP *clusterhttp.Middleware
	// Pending adds the SQL outbox's backlog (journal.SQL.PendingInfo):
	// how many committed entries wait to be relayed and for how long.
	// It costs one query per scrape, and the value is the cluster's, not
	// the node's: enable it on one replica, or scrape rarely. Ignored
	// for journals without an outbox. Off by default.
	Pending bool
	// PendingTimeout bounds that query; a scrape whose query fails or
	// times out reports the error for those two metrics only. Defaults to
	// DefaultPendingTimeout.
	PendingTimeout time.Duration
}

// Collector is a prometheus.Collector of the objects in its Config. It is
// safe for concurrent use (Prometheus scrapes may overlap).
type Collector struct {
	cfg    Config
	labels prometheus.Labels
	descs  []*prometheus.Desc // every desc, for Describe
	node   []metric[cluster.Stats]
	info   *prometheus.Desc
	jstats func() journal.Stats
	jrnl   []metric[journal.Stats]
	// resolved is the one journal metric with a variable label, outcome.
	resolved *prometheus.Desc
	outbox   interface {
		PendingInfo(ctx context.Context) (journal.PendingInfo, error)
	}
	pending, pendingAge *prometheus.Desc
	janitor             []metric[janitorStats]
	cache               []metric[cluster.CacheStats]
	gc                  []metric[datastore.GCStats]
	http                []metric[clusterhttp.Stats]
}

// metric is one series read from a stats value S.
type metric[S any] struct {
	desc  *prometheus.Desc
	typ   prometheus.ValueType
	value func(S) float64
}

var _ prometheus.Collector = (*Collector)(nil)

// New returns a Collector of what cfg names; register it with a
// prometheus.Registerer.
func New(cfg Config) (*Collector, error) {
	if cfg.Node == nil {
		return nil, fmt.Errorf("metrics config: %w: Node is required", cluster.ErrInvalidArgument)
	}
	if cfg.PendingTimeout == 0 {
		cfg.PendingTimeout = DefaultPendingTimeout
	}
	if cfg.PendingTimeout < 0 {
		return nil, fmt.Errorf("metrics config: %w: PendingTimeout must be > 0", cluster.ErrInvalidArgument)
	}
	// A nil cache would panic in Collect, at scrape time, which kills the
	// process (Prometheus does not recover); two caches of one name would
	// make clashing series, which fail every scrape. Both are caught here.
	names := make(map[string]int, len(cfg.Caches))
	for i, c := range cfg.Caches {
		if isNil(c) {
			return nil, fmt.Errorf("metrics config: %w: Caches[%d] is nil (%T)", cluster.ErrInvalidArgument, i, c)
		}
		name := c.Name()
		if j, dup := names[name]; dup {
			return nil, fmt.Errorf("metrics config: %w: Caches[%d] and Caches[%d] are both named %q", cluster.ErrInvalidArgument, j, i, name)
		}
		names[name] = i
	}
	c := &Collector{cfg: cfg, labels: prometheus.Labels{"node": cfg.Node.ID()}}
	c.node = nodeMetrics(c)
	c.info = c.desc("tandem_node_info", "The node's process instance (node_instance, not to be confused with the scrape target's instance) and the journal epoch its position belongs to; always 1.", "node_instance", "epoch")
	if s, ok := cfg.Node.Journal().(interface{ Stats() journal.Stats }); ok {
		c.jstats = s.Stats
		c.jrnl = journalMetrics(c)
	}
	if o, ok := cfg.Node.Journal().(interface {
		PendingInfo(ctx context.Context) (journal.PendingInfo, error)
	}); ok && cfg.Pending {
		c.outbox = o
		c.pending = c.desc("tandem_journal_pending_entries", "Entries of committed transactions waiting in the outbox (pending table) to be relayed into the journal, cluster-wide.")
		c.pendingAge = c.desc("tandem_journal_pending_oldest_age_seconds", "How long the oldest entry waiting in the outbox has waited, by the database's clock; 0 when none waits.")
	}
	if cfg.Node.Janitor() != nil {
		c.janitor = janitorMetrics(c)
	}
	if len(cfg.Caches) > 0 {
		c.cache = cacheMetrics(c)
	}
	if cfg.GC != nil {
		c.gc = gcMetrics(c)
	}
	if cfg.HTTP != nil {
		c.http = httpMetrics(c)
	}
	return c, nil
}

// isNil reports whether c is nil or holds a nil pointer (a typed nil, such
// as a *cluster.Cache variable not yet assigned).
func isNil(c Cache) bool {
	if c == nil {
		return true
	}
	v := reflect.ValueOf(c)
	return v.Kind() == reflect.Pointer && v.IsNil()
}

// desc makes a Desc with the node label and remembers it for Describe.
func (c *Collector) desc(name, help string, variable ...string) *prometheus.Desc {
	d := prometheus.NewDesc(name, help, variable, c.labels)
	c.descs = append(c.descs, d)
	return d
}

func def[S any](c *Collector, name, help string, typ prometheus.ValueType, value func(S) float64, variable ...string) metric[S] {
	return metric[S]{desc: c.desc(name, help, variable...), typ: typ, value: value}
}

// Describe implements prometheus.Collector.
func (c *Collector) Describe(ch chan<- *prometheus.Desc) {
	for _, d := range c.descs {
		ch <- d
	}
}

// Collect implements prometheus.Collector.
func (c *Collector) Collect(ch chan<- prometheus.Metric) {
	st := c.cfg.Node.Stats()
	emit(ch, c.node, st)
	ch <- prometheus.MustNewConstMetric(c.info, prometheus.GaugeValue, 1, c.cfg.Node.Instance(), st.Epoch)
	if c.jstats != nil {
		js := c.jstats()
		for _, m := range c.jrnl {
			if m.desc == c.resolved {
				ch <- prometheus.MustNewConstMetric(m.desc, m.typ, float64(js.ResolvedCommitted), "committed")
				ch <- prometheus.MustNewConstMetric(m.desc, m.typ, float64(js.ResolvedNotWritten), "not_written")
				continue
			}
			ch <- prometheus.MustNewConstMetric(m.desc, m.typ, m.value(js))
		}
	}
	if c.outbox != nil {
		c.collectPending(ch)
	}
	if c.janitor != nil {
		emit(ch, c.janitor, janitorStats(c.cfg.Node.Janitor().Stats()))
	}
	for _, cache := range c.cfg.Caches {
		emit(ch, c.cache, cache.Stats(), cache.Name())
	}
	if c.gc != nil {
		emit(ch, c.gc, c.cfg.GC.Stats())
	}
	if c.http != nil {
		emit(ch, c.http, c.cfg.HTTP.Stats())
	}
}

func (c *Collector) collectPending(ch chan<- prometheus.Metric) {
	ctx, cancel := context.WithTimeout(context.Background(), c.cfg.PendingTimeout)
	defer cancel()
	info, err := c.outbox.PendingInfo(ctx)
	if err != nil {
		err = fmt.Errorf("tandem metrics: %w", err)
		ch <- prometheus.NewInvalidMetric(c.pending, err)
		ch <- prometheus.NewInvalidMetric(c.pendingAge, err)
		return
	}
	ch <- prometheus.MustNewConstMetric(c.pending, prometheus.GaugeValue, float64(info.Entries))
	ch <- prometheus.MustNewConstMetric(c.pendingAge, prometheus.GaugeValue, info.OldestAge.Seconds())
}

func emit[S any](ch chan<- prometheus.Metric, ms []metric[S], s S, labels ...string) {
	for _, m := range ms {
		ch <- prometheus.MustNewConstMetric(m.desc, m.typ, m.value(s), labels...)
	}
}

// seconds is t as a Unix timestamp in seconds, 0 for the zero time.
func seconds(t time.Time) float64 {
	if t.IsZero() {
		return 0
	}
	return float64(t.UnixNano()) / 1e9
}

func boolean(b bool) float64 {
	if b {
		return 1
	}
	return 0
}
