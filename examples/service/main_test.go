package main

import (
	"bufio"
	"context"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/tandem-go/tandem/internal/dbtest"
)

// replica is one process of the service.
type replica struct {
	id, url string
	cmd     *exec.Cmd
}

// TestThreeReplicas builds the service, runs it as three processes on one
// shared folder, then on PostgreSQL and on MariaDB, and checks
// read-your-writes across them, the scheduled job, the metrics, and that a
// replica killed with SIGKILL serves again when restarted with its node id.
func TestThreeReplicas(t *testing.T) {
	if testing.Short() {
		t.Skip("builds and runs processes")
	}
	bin := filepath.Join(t.TempDir(), "service")
	build := exec.Command("go", "build", "-o", bin, ".")
	build.Stderr = os.Stderr
	require.NoError(t, build.Run())

	fast := []string{"-member-ttl", "2s", "-job-every", "1s", "-sync-delay", "30s"}
	t.Run("dir", func(t *testing.T) {
		threeReplicas(t, bin, append([]string{"-dir", t.TempDir()}, fast...))
	})
	for _, b := range dbtest.Backends[:2] { // the service speaks PostgreSQL and MySQL
		t.Run(b.Name, func(t *testing.T) {
			db := dbtest.Open(t, b)
			t.Cleanup(func() {
				_, err := db.DB.ExecContext(context.Background(), "DROP TABLE IF EXISTS "+db.Prefix+"example_kv")
				require.NoError(t, err)
			})
			dsn := db.DSN
			if b.Name == "mysql" {
				dsn = "mysql://" + dsn
			}
			threeReplicas(t, bin, append([]string{"-dsn", dsn, "-prefix", db.Prefix}, fast...))
		})
	}
}

func threeReplicas(t *testing.T, bin string, args []string) {
	startReplica := func(id string) *replica {
		t.Helper()
		cmd := exec.Command(bin, append([]string{"-node", id, "-addr", "127.0.0.1:0"}, args...)...)
		cmd.Stderr = &prefixWriter{t: t, prefix: id}
		out, err := cmd.StdoutPipe()
		require.NoError(t, err)
		require.NoError(t, cmd.Start())
		t.Cleanup(func() {
			_ = cmd.Process.Signal(syscall.SIGTERM)
			done := make(chan struct{})
			go func() { cmd.Wait(); close(done) }()
			select {
			case <-done:
			case <-time.After(20 * time.Second):
				_ = cmd.Process.Kill()
				<-done
			}
		})
		lines := make(chan string, 1)
		go func() {
			sc := bufio.NewScanner(out)
			for sc.Scan() {
				select {
				case lines <- sc.Text():
				default:
				}
			}
		}()
		var url string
		select {
		case line := <-lines:
			_, url, _ = strings.Cut(line, "listening on ")
		case <-time.After(60 * time.Second):
			t.Fatalf("%s did not start", id)
		}
		require.NotEmpty(t, url)
		r := &replica{id: id, url: url, cmd: cmd}
		require.Eventually(t, func() bool {
			code, _, _ := r.do(t, http.MethodGet, "/healthz", "", "")
			return code == http.StatusOK
		}, 30*time.Second, 50*time.Millisecond, "%s never ready", id)
		return r
	}
	a, b, c := startReplica("a"), startReplica("b"), startReplica("c")

	// b and c cache the old value (absent).
	for _, r := range []*replica{b, c} {
		code, _, _ := r.do(t, http.MethodGet, "/kv/user42", "", "")
		require.Equal(t, http.StatusNotFound, code)
	}
	code, _, tok := a.do(t, http.MethodPut, "/kv/user42", "Ada", "")
	require.Equal(t, http.StatusNoContent, code)
	require.Regexp(t, `^.+:\d+$`, tok)
	for _, r := range []*replica{b, c} {
		code, body, echoed := r.do(t, http.MethodGet, "/kv/user42", "", tok)
		require.Equal(t, http.StatusOK, code, r.id)
		require.Equal(t, "Ada", body, "read-your-writes on %s", r.id)
		require.Equal(t, tok, echoed)
	}

	// A token of another journal is ignored, a malformed one refused.
	code, body, _ := b.do(t, http.MethodGet, "/kv/user42", "", "some-other-journal:999999")
	require.Equal(t, http.StatusOK, code)
	require.Equal(t, "Ada", body)
	code, _, _ = b.do(t, http.MethodGet, "/kv/user42", "", "garbage")
	require.Equal(t, http.StatusBadRequest, code)

	// The scheduled job runs (on one of them) and its write reaches all.
	require.Eventually(t, func() bool {
		code, body, _ := c.do(t, http.MethodGet, "/kv/_report", "", "")
		return code == http.StatusOK && strings.Contains(body, "keys, counted by")
	}, 30*time.Second, 100*time.Millisecond)

	// Metrics.
	code, body, _ = b.do(t, http.MethodGet, "/metrics", "", "")
	require.Equal(t, http.StatusOK, code)
	require.Contains(t, body, `tandem_node_member{node="b"} 1`)
	require.Contains(t, body, `tandem_cache_entries{cache="kv",node="b"}`)
	require.Contains(t, body, `tandem_http_foreign_tokens_total{node="b"} 1`)

	// c dies without a goodbye; a writes meanwhile; c comes back under its
	// id (once its lease expired) and serves the new value.
	require.NoError(t, c.cmd.Process.Signal(syscall.SIGKILL))
	_ = c.cmd.Wait()
	code, _, tok = a.do(t, http.MethodPut, "/kv/user42", "Ada Lovelace", "")
	require.Equal(t, http.StatusNoContent, code)
	c = startReplica("c")
	code, body, _ = c.do(t, http.MethodGet, "/kv/user42", "", tok)
	require.Equal(t, http.StatusOK, code)
	require.Equal(t, "Ada Lovelace", body)
	code, body, _ = b.do(t, http.MethodGet, "/kv/user42", "", tok)
	require.Equal(t, http.StatusOK, code)
	require.Equal(t, "Ada Lovelace", body)
}

// do sends a request with token (if any) and returns the status, the body
// and the response's token.
func (r *replica) do(t *testing.T, method, path, body, token string) (int, string, string) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, method, r.url+path, strings.NewReader(body))
	require.NoError(t, err)
	if token != "" {
		req.Header.Set("Tandem-Revision", token)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return 0, err.Error(), ""
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(b), resp.Header.Get("Tandem-Revision")
}

// prefixWriter sends a process's log lines to the test log.
type prefixWriter struct {
	t      *testing.T
	prefix string
}

func (w *prefixWriter) Write(p []byte) (int, error) {
	for _, line := range strings.Split(strings.TrimRight(string(p), "\n"), "\n") {
		w.t.Logf("%s: %s", w.prefix, line)
	}
	return len(p), nil
}
