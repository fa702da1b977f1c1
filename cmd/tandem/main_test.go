package main

import (
	"bytes"
	"context"
	"encoding/json"
	"io"
	"log/slog"
	"net/url"
	"strings"
	"sync"
	"testing"
	"time"

	mysqldriver "github.com/go-sql-driver/mysql"
	"github.com/stretchr/testify/require"

	"github.com/tandem-go/tandem/cluster"
	"github.com/tandem-go/tandem/internal/dbtest"
)

func TestMain(m *testing.M) { dbtest.VerifyNoLeaks(m) }

// target is one store the command's tests run against: a folder, or a
// database with a fresh prefix.
type target struct {
	name   string
	global []string          // the global flags that name the store
	env    map[string]string // its environment (the password)
	dir    string            // the folder, or
	db     *dbtest.DB
}

// eachTarget runs fn against a folder, PostgreSQL and MariaDB (MySQL).
func eachTarget(t *testing.T, fn func(t *testing.T, tg *target)) {
	t.Run("folder", func(t *testing.T) {
		t.Parallel()
		dir := t.TempDir()
		fn(t, &target{name: "folder", global: []string{"--dir", dir}, dir: dir})
	})
	for _, b := range dbtest.Backends {
		if b.Name != "postgres" && b.Name != "mysql" {
			continue
		}
		t.Run(b.Name, func(t *testing.T) {
			t.Parallel()
			d := dbtest.Open(t, b)
			fn(t, dbTarget(t, d, d.DSN))
		})
	}
}

// eachDatabase runs fn against PostgreSQL and MariaDB (MySQL).
func eachDatabase(t *testing.T, fn func(t *testing.T, tg *target)) {
	eachTarget(t, func(t *testing.T, tg *target) {
		if tg.db == nil {
			t.Skip("a database only")
		}
		fn(t, tg)
	})
}

// dbTarget is the target of d's database and prefix, reached through
// dsn (d's DSN, or a dbtest proxy's).
func dbTarget(t *testing.T, d *dbtest.DB, dsn string) *target {
	t.Helper()
	tg := &target{name: d.Name, db: d, env: map[string]string{}}
	switch d.Name {
	case "postgres":
		// The password comes from the variable --password-env names.
		u, err := url.Parse(dsn)
		require.NoError(t, err)
		if pw, ok := u.User.Password(); ok {
			tg.env["PGPW"] = pw
			u.User = url.User(u.User.Username())
		}
		tg.global = []string{"--dsn", u.String(), "--password-env", "PGPW", "--prefix", d.Prefix}
	case "mysql":
		// dbtest's DSN is go-sql-driver's; the command takes a
		// mysql:// URL, the password from TANDEM_PASSWORD.
		cfg, err := mysqldriver.ParseDSN(dsn)
		require.NoError(t, err)
		tg.env["TANDEM_PASSWORD"] = cfg.Passwd
		u := url.URL{Scheme: "mysql", User: url.User(cfg.User), Host: cfg.Addr, Path: "/" + cfg.DBName}
		tg.global = []string{"--dsn", u.String(), "--prefix", d.Prefix}
	default:
		t.Fatalf("no command-line target for %s", d.Name)
	}
	return tg
}

// result is what one run of the command left.
type result struct {
	code           int
	stdout, stderr string
}

// run runs the command with the target's global flags after args.
func (tg *target) run(t *testing.T, args ...string) result {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	return tg.runCtx(ctx, t, args...)
}

func (tg *target) runCtx(ctx context.Context, t *testing.T, args ...string) result {
	var out, errOut syncBuffer
	code := run(ctx, append(append([]string{}, args...), tg.global...), &out, &errOut, tg.getenv)
	r := result{code: code, stdout: out.String(), stderr: errOut.String()}
	t.Logf("tandem %s → %d\n%s%s", strings.Join(args, " "), code, r.stdout, r.stderr)
	return r
}

func (tg *target) getenv(k string) string { return tg.env[k] }

// must runs the command and requires exit code 0.
func (tg *target) must(t *testing.T, args ...string) string {
	t.Helper()
	r := tg.run(t, args...)
	require.Equal(t, 0, r.code, "tandem %v: %s", args, r.stderr)
	require.Empty(t, r.stderr)
	return r.stdout
}

// fails runs the command and requires exit code code and one line on stderr.
func (tg *target) fails(t *testing.T, code int, args ...string) result {
	t.Helper()
	r := tg.run(t, args...)
	require.Equal(t, code, r.code, "tandem %v: %s", args, r.stderr)
	require.True(t, strings.HasPrefix(r.stderr, "tandem: "), "stderr: %q", r.stderr)
	require.Equal(t, 1, strings.Count(r.stderr, "\n"), "stderr: %q", r.stderr)
	return r
}

// node opens (not starts) node id on the target's store.
func (tg *target) node(t *testing.T, id string) *cluster.Node {
	t.Helper()
	ctx := context.Background()
	cfg := cluster.Config{NodeID: id, SyncDelay: 100 * time.Millisecond, MemberTTL: 3 * time.Second,
		Logger: slog.New(slog.NewTextHandler(io.Discard, nil))}
	var n *cluster.Node
	var err error
	if tg.db != nil {
		cfg.Prefix = tg.db.Prefix
		n, err = cluster.OpenSQL(ctx, tg.db.DB, tg.db.Dialect, cfg)
	} else {
		cfg.Dir = tg.dir
		n, err = cluster.OpenDir(ctx, cfg)
	}
	require.NoError(t, err)
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		_ = n.Stop(ctx)
	})
	return n
}

// started opens and starts node id.
func (tg *target) started(t *testing.T, id string) *cluster.Node {
	t.Helper()
	n := tg.node(t, id)
	require.NoError(t, n.Start(context.Background()))
	return n
}

// departed starts node id, lets it publish count records, and stops it:
// it leaves a position and no live lease.
func (tg *target) departed(t *testing.T, id string, count int) int64 {
	t.Helper()
	ctx := context.Background()
	n := tg.started(t, id)
	var rev int64
	for i := range count {
		var err error
		rev, err = n.Publish(ctx, "app/test", []byte("change "+string(rune('a'+i%26))))
		require.NoError(t, err)
	}
	require.NoError(t, n.Stop(ctx))
	return rev
}

// statusJSON runs status --json and parses it.
func (tg *target) statusJSON(t *testing.T) statusReport {
	t.Helper()
	var r statusReport
	require.NoError(t, json.Unmarshal([]byte(tg.must(t, "status", "--json")), &r))
	return r
}

func (r statusReport) node(id string) *nodeJSON {
	for i := range r.Nodes {
		if r.Nodes[i].ID == id {
			return &r.Nodes[i]
		}
	}
	return nil
}

// syncBuffer is a bytes.Buffer safe for a writer and a reader at once.
type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}
