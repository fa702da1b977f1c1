package main

import (
	"context"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
)

// holdMeta makes reading the target's meta table wait: another session
// locks it until the test ends. Every command reads it first.
func (tg *target) holdMeta(t *testing.T) {
	t.Helper()
	ctx := context.Background()
	conn, err := tg.db.DB.Conn(ctx)
	require.NoError(t, err)
	switch tg.name {
	case "postgres":
		_, err = conn.ExecContext(ctx, `BEGIN`)
		require.NoError(t, err)
		_, err = conn.ExecContext(ctx, `LOCK TABLE `+tg.db.Prefix+`meta IN ACCESS EXCLUSIVE MODE`)
		t.Cleanup(func() { _, _ = conn.ExecContext(ctx, `ROLLBACK`); conn.Close() })
	case "mysql":
		_, err = conn.ExecContext(ctx, `LOCK TABLES `+tg.db.Prefix+`meta WRITE`)
		t.Cleanup(func() { _, _ = conn.ExecContext(ctx, `UNLOCK TABLES`); conn.Close() })
	}
	require.NoError(t, err)
}

// TestTimeoutStalledStore checks that a command gives up after --timeout
// when the database stalls after the connection is made (here: a query
// waits for a lock another session holds), and says that the timeout was
// reached, instead of hanging.
func TestTimeoutStalledStore(t *testing.T) {
	t.Parallel()
	eachDatabase(t, func(t *testing.T, tg *target) {
		tg.must(t, "schema", "migrate")
		tg.holdMeta(t)
		for _, args := range [][]string{
			{"status", "--timeout", "500ms"},
			{"--timeout=500ms", "journal", "show"},
			{"nodes", "remove", "web-1", "--timeout", "500ms"},
		} {
			ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
			r := tg.runCtx(ctx, t, args...)
			require.NoError(t, ctx.Err(), "tandem %v did not give up after its --timeout", args)
			cancel()
			require.Equal(t, exitFailed, r.code, r.stderr)
			require.Contains(t, r.stderr, "--timeout 500ms reached", args)
			require.Equal(t, 1, strings.Count(r.stderr, "\n"), r.stderr)
		}
	})
}

// TestTimeoutEachStep checks that status --watch and journal tail -f apply
// --timeout to each refresh or poll, not to the whole run: they keep
// running for longer than it while the database answers, and give up,
// saying why, once it stops answering (a black-holing proxy).
func TestTimeoutEachStep(t *testing.T) {
	t.Parallel()
	eachDatabase(t, func(t *testing.T, tg *target) {
		tg.must(t, "schema", "migrate")
		for _, args := range [][]string{
			{"status", "--json", "--watch=100ms"},
			{"journal", "tail", "-f", "--interval", "100ms"},
		} {
			proxy, dsn := tg.db.NewProxy(t)
			ptg := dbTarget(t, tg.db, dsn)
			ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
			var out syncBuffer
			done, ended := make(chan int, 1), make(chan struct{})
			go func() {
				defer close(ended)
				done <- run(ctx, append(append([]string{}, args...), append([]string{"--timeout", "1s"}, ptg.global...)...), &out, &out, ptg.getenv)
			}()
			t.Cleanup(func() { cancel(); <-ended })
			// Longer than --timeout: each step has its own.
			time.Sleep(2500 * time.Millisecond)
			select {
			case code := <-done:
				t.Fatalf("tandem %v ended (%d) while the database answered: %s", args, code, out.String())
			default:
			}
			proxy.BlackHole()
			select {
			case code := <-done:
				require.Equal(t, exitFailed, code, out.String())
			case <-ctx.Done():
				t.Fatalf("tandem %v did not give up after its --timeout: %s", args, out.String())
			}
			require.Contains(t, out.String(), "--timeout 1s reached", args)
			proxy.Restore()
		}
	})
}
