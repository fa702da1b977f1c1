package cluster_test

import (
	"bufio"
	"context"
	"database/sql"
	"fmt"
	"io"
	"os"
	"os/exec"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/tandem-go/tandem/cluster"
	"github.com/tandem-go/tandem/internal/dbtest"
)

// childEnv carries what a child node process opens: backend|where|node.
const childEnv = "TANDEM_CLUSTER_CHILD"

// restartTTL is the MemberTTL of the restart tests: a restarted node must
// be back within it (plus a margin) of its predecessor's death.
const restartTTL = 3 * time.Second

func restartCfg(id string) cluster.Config {
	c := cfg(id)
	c.MemberTTL = restartTTL
	return c
}

// openBy opens a node on the storage a fixture names, through OpenDir or
// OpenSQL, as a separate process does.
// Its pool is closed when t ends (t nil: never).
func openBy(ctx context.Context, t *testing.T, backend, where string, c cluster.Config) (*cluster.Node, error) {
	if backend == "file" {
		c.Dir = where
		return cluster.OpenDir(ctx, c)
	}
	for _, b := range dbtest.Backends {
		if b.Name == backend {
			db, err := sql.Open(b.Driver, os.Getenv(b.Env))
			if err != nil {
				return nil, err
			}
			if t != nil {
				t.Cleanup(func() { db.Close() })
			}
			c.Prefix = where
			return cluster.OpenSQL(ctx, db, b.Dialect, c)
		}
	}
	return nil, fmt.Errorf("no backend %q", backend)
}

// runChild is the child process: it starts the node, prints "started
// <revision>" and then runs (heartbeating) until it is killed.
func runChild(spec string) {
	parts := strings.SplitN(spec, "|", 3)
	ctx := context.Background()
	n, err := openBy(ctx, nil, parts[0], parts[1], restartCfg(parts[2]))
	if err == nil {
		err = n.Start(ctx)
	}
	if err != nil {
		fmt.Println("error", err)
		os.Exit(1)
	}
	rev, err := n.Publish(ctx, "p", []byte("from the child"))
	if err != nil {
		fmt.Println("error", err)
		os.Exit(1)
	}
	fmt.Println("started", rev)
	select {}
}

// startChild starts a node process with id on f's storage and waits until
// it runs; it returns the process and the revision it published.
func startChild(t *testing.T, f fixture, id string) (*exec.Cmd, int64) {
	t.Helper()
	cmd := exec.Command(os.Args[0], "-test.run=^TestRestartAfterKill$")
	cmd.Env = append(os.Environ(), childEnv+"="+f.backend+"|"+f.where+"|"+id)
	cmd.Stderr = io.Discard // the child's logs
	out, err := cmd.StdoutPipe()
	require.NoError(t, err)
	require.NoError(t, cmd.Start())
	t.Cleanup(func() {
		_ = cmd.Process.Kill()
		_ = cmd.Wait()
	})
	lines := make(chan string, 1)
	go func() {
		sc := bufio.NewScanner(out)
		for sc.Scan() {
			if strings.HasPrefix(sc.Text(), "started ") || strings.HasPrefix(sc.Text(), "error ") {
				lines <- sc.Text()
				break
			}
		}
		_, _ = io.Copy(io.Discard, out)
	}()
	select {
	case line := <-lines:
		var rev int64
		_, err := fmt.Sscanf(line, "started %d", &rev)
		require.NoError(t, err, "child: %s", line)
		return cmd, rev
	case <-time.After(time.Minute):
		t.Fatal("the child node did not start")
	}
	return nil, 0
}

// TestRestartAfterKill runs a node in a child process. While it lives, a
// second process with its id is refused promptly — before a dead holder's
// lease could even have expired — with an error that says the holder's
// heartbeat advances. Then the child is killed with SIGKILL (no Stop, its
// lease still in the store) and a new process with the same id, opened
// through OpenDir or OpenSQL, starts within MemberTTL plus a margin and
// applies what came after its predecessor's position — the predecessor's
// own record included: it is another process's, though under the same id.
func TestRestartAfterKill(t *testing.T) {
	if spec := os.Getenv(childEnv); spec != "" {
		runChild(spec)
		return
	}
	if testing.Short() {
		t.Skip("spawns processes")
	}
	forEachBackend(t, func(t *testing.T, f fixture) {
		ctx := ctxT(t)
		writer := f.open(t, restartCfg("writer"))
		start(t, writer)
		child, childRev := startChild(t, f, "web-1")

		dup, err := openBy(ctx, t, f.backend, f.where, restartCfg("web-1"))
		require.NoError(t, err)
		t.Cleanup(func() { dup.Stop(context.Background()) })
		began := time.Now()
		err = dup.Start(ctx)
		refused := time.Since(began)
		require.ErrorIs(t, err, cluster.ErrDuplicateNode)
		require.ErrorContains(t, err, "heartbeat advanced")
		require.ErrorContains(t, err, `"web-1"`)
		require.Less(t, refused, restartTTL, "a live duplicate is refused before a dead one's lease could expire")
		t.Logf("live duplicate refused after %v", refused)

		require.NoError(t, child.Process.Kill()) // SIGKILL: no Stop, the lease stays
		_ = child.Wait()
		killed := time.Now()
		rev := publishN(t, ctx, writer, 3)

		stored, err := f.revisions(t).Load(ctx, "web-1")
		require.NoError(t, err)
		rec := &recorder{}
		again, err := openBy(ctx, t, f.backend, f.where, restartCfg("web-1"))
		require.NoError(t, err)
		t.Cleanup(func() { again.Stop(context.Background()) })
		require.NoError(t, again.Handle("p", rec))
		require.NoError(t, again.Start(ctx), "the same id starts again once the dead process's lease expired")
		took := time.Since(killed)
		require.Less(t, took, restartTTL+2*time.Second, "restart within MemberTTL + margin")
		t.Logf("restarted %v after the kill (MemberTTL %v)", took, restartTTL)
		require.NoError(t, again.WaitFor(ctx, rev))
		applied := map[int64]bool{}
		for _, r := range rec.got() {
			applied[r.Revision] = true
		}
		for r := stored.Revision + 1; r <= rev; r++ {
			require.True(t, applied[r], "revision %d, after the dead node's position %d, is applied", r, stored.Revision)
		}
		if stored.Revision < childRev {
			require.True(t, applied[childRev], "the dead incarnation's own record is applied by its successor")
		}
		ms, err := again.Members(ctx)
		require.NoError(t, err)
		for _, m := range ms {
			if m.NodeID == "web-1" {
				require.True(t, m.Live)
				require.Equal(t, again.Instance(), m.Instance, "the new process holds the id")
			}
		}
	})
}
