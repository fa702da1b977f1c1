// Command service is a small key-value HTTP service run as several
// replicas behind a load balancer without session affinity. Each replica
// caches values in memory (cluster.Cache); tandem keeps the caches
// consistent, gives every client its own writes on whichever replica serves
// it (package clusterhttp), runs a scheduled job on one replica at a time
// (lock.Client.RunEvery on the node's lease store) and exports metrics
// (package metrics).
//
// Three replicas on one machine, sharing a folder:
//
//	go build -o /tmp/service ./examples/service
//	/tmp/service -node a -addr 127.0.0.1:8081 -dir /tmp/kv &
//	/tmp/service -node b -addr 127.0.0.1:8082 -dir /tmp/kv &
//	/tmp/service -node c -addr 127.0.0.1:8083 -dir /tmp/kv &
//
//	tok=$(curl -si -X PUT -d Ada 127.0.0.1:8081/kv/user42 | sed -n 's/^Tandem-Revision: //Ip' | tr -d '\r')
//	curl -H "Tandem-Revision: $tok" 127.0.0.1:8082/kv/user42   # Ada, at once
//	curl 127.0.0.1:8083/healthz; curl 127.0.0.1:8083/metrics
//
// On PostgreSQL or MariaDB/MySQL instead of a folder (the values live in the
// table <prefix>example_kv, tandem's own tables beside it):
//
//	-dsn 'postgres://user:pass@host/db'
//	-dsn 'mysql://user:pass@tcp(host:3306)/db'   (go-sql-driver's DSN after mysql://)
//
// Endpoints: PUT /kv/{key} stores the body, GET /kv/{key} reads it (404 if
// absent), GET /healthz is the readiness check, GET /metrics the Prometheus
// metrics. The job "report" stores, every -job-every, how many keys there
// are under the key _report.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"os/signal"
	"regexp"
	"syscall"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promhttp"

	"github.com/tandem-go/tandem/cluster"
	"github.com/tandem-go/tandem/clusterhttp"
	"github.com/tandem-go/tandem/janitor"
	"github.com/tandem-go/tandem/lock"
	"github.com/tandem-go/tandem/metrics"
)

type options struct {
	node, addr, dir, dsn, prefix   string
	syncDelay, memberTTL, jobEvery time.Duration
}

func main() {
	var o options
	flag.StringVar(&o.node, "node", "", "this replica's node id, stable across restarts (required)")
	flag.StringVar(&o.addr, "addr", "127.0.0.1:8080", "listen address (port 0: any free port)")
	flag.StringVar(&o.dir, "dir", os.TempDir()+"/tandem-service", "shared folder (without -dsn)")
	flag.StringVar(&o.dsn, "dsn", "", "postgres://… or mysql://… instead of a shared folder")
	flag.StringVar(&o.prefix, "prefix", "", "table prefix with -dsn (default tandem_)")
	flag.DurationVar(&o.syncDelay, "sync-delay", cluster.DefaultSyncDelay, "polling interval")
	flag.DurationVar(&o.memberTTL, "member-ttl", cluster.DefaultMemberTTL, "membership lease TTL (how soon a crashed replica's id is free)")
	flag.DurationVar(&o.jobEvery, "job-every", time.Minute, "interval of the scheduled job")
	flag.Parse()
	log := slog.New(slog.NewTextHandler(os.Stderr, nil))
	if err := run(o, log); err != nil {
		log.Error("service failed", "err", err)
		os.Exit(1)
	}
}

var validKey = regexp.MustCompile(`^[A-Za-z0-9._-]{1,100}$`)

// entry is a cached read: absent keys are cached too.
type entry struct {
	value string
	found bool
}

func run(o options, log *slog.Logger) error {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()

	cfg := cluster.Config{NodeID: o.node, SyncDelay: o.syncDelay, MemberTTL: o.memberTTL, Logger: log,
		// Prune what every node has read, daily at 03:00, on one node.
		Janitor: &janitor.Config{}}
	n, src, err := open(ctx, o, cfg)
	if err != nil {
		return err
	}
	defer src.close()
	kv, err := cluster.NewCache[string, entry](n, "kv", cluster.CacheConfig[string]{})
	if err != nil {
		return err
	}
	if err := n.Start(ctx); err != nil {
		_ = n.Stop(context.Background())
		return err
	}
	defer func() {
		sctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		if err := n.Stop(sctx); err != nil {
			log.Error("stop", "err", err)
		}
	}()

	// put writes the source of truth first, then invalidates every
	// replica's cache, and returns the revision for the client's token.
	put := func(ctx context.Context, key, value string) (int64, error) {
		if err := src.put(ctx, key, value); err != nil {
			return 0, err
		}
		return kv.Invalidate(ctx, key)
	}
	load := func(ctx context.Context, key string) (entry, error) {
		v, ok, err := src.get(ctx, key)
		return entry{v, ok}, err
	}

	// The scheduled job: on one replica at a time, through the node's own
	// lease store.
	jobs, err := lock.New(lock.Config{NodeID: n.ID(), Store: n.Leases(), Logger: log})
	if err != nil {
		return err
	}
	jobDone := make(chan struct{})
	go func() {
		defer close(jobDone)
		_ = jobs.RunEvery(ctx, "report", o.jobEvery, func(ctx context.Context, _ *lock.Lease) error {
			count, err := src.count(ctx)
			if err != nil {
				return err
			}
			_, err = put(ctx, "_report", fmt.Sprintf("%d keys, counted by %s at %s", count, n.ID(), time.Now().UTC().Format(time.RFC3339)))
			return err
		})
	}()
	defer func() { // before the node stops: the job releases its leases
		stop()
		<-jobDone
	}()

	rw, err := clusterhttp.New(n, clusterhttp.Config{})
	if err != nil {
		return err
	}
	health, err := clusterhttp.Health(n, clusterhttp.HealthConfig{})
	if err != nil {
		return err
	}
	collector, err := metrics.New(metrics.Config{Node: n, Caches: []metrics.Cache{kv}, HTTP: rw})
	if err != nil {
		return err
	}
	reg := prometheus.NewRegistry()
	reg.MustRegister(collector)

	mux := http.NewServeMux()
	mux.HandleFunc("GET /kv/{key}", func(w http.ResponseWriter, r *http.Request) {
		key := r.PathValue("key")
		if !validKey.MatchString(key) {
			http.Error(w, "bad key", http.StatusBadRequest)
			return
		}
		e, err := kv.GetOrLoad(r.Context(), key, load)
		switch {
		case err != nil:
			http.Error(w, err.Error(), http.StatusInternalServerError)
		case !e.found:
			http.NotFound(w, r)
		default:
			io.WriteString(w, e.value)
		}
	})
	mux.HandleFunc("PUT /kv/{key}", func(w http.ResponseWriter, r *http.Request) {
		key := r.PathValue("key")
		body, err := io.ReadAll(io.LimitReader(r.Body, 1<<20))
		if err != nil || !validKey.MatchString(key) {
			http.Error(w, "bad key or body", http.StatusBadRequest)
			return
		}
		rev, err := put(r.Context(), key, string(body))
		if err != nil {
			http.Error(w, err.Error(), http.StatusServiceUnavailable)
			return
		}
		clusterhttp.Published(r.Context(), rev)
		w.WriteHeader(http.StatusNoContent)
	})
	mux.Handle("GET /healthz", health)
	mux.Handle("GET /metrics", promhttp.HandlerFor(reg, promhttp.HandlerOpts{}))

	ln, err := net.Listen("tcp", o.addr)
	if err != nil {
		return err
	}
	srv := &http.Server{Handler: rw.Wrap(mux), ReadHeaderTimeout: 10 * time.Second}
	fmt.Printf("service: node %s listening on http://%s\n", n.ID(), ln.Addr())
	errc := make(chan error, 1)
	go func() { errc <- srv.Serve(ln) }()
	select {
	case err := <-errc:
		return err
	case <-ctx.Done():
	}
	sctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := srv.Shutdown(sctx); err != nil && !errors.Is(err, http.ErrServerClosed) {
		return err
	}
	return nil
}
