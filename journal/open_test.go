package journal_test

import (
	"context"
	"database/sql"
	"net"
	"regexp"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/tandem-go/tandem/internal/dbtest"
	"github.com/tandem-go/tandem/journal"
)

// silentServer accepts connections and never answers, like a server on
// the wrong port of another protocol that waits for the client to speak
// first. It returns its address.
func silentServer(t *testing.T) string {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	var mu sync.Mutex
	var conns []net.Conn
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			mu.Lock()
			conns = append(conns, c)
			mu.Unlock()
		}
	}()
	t.Cleanup(func() {
		ln.Close()
		mu.Lock()
		defer mu.Unlock()
		for _, c := range conns {
			c.Close()
		}
	})
	return ln.Addr().String()
}

var hostPort = regexp.MustCompile(`127\.0\.0\.1:\d+|localhost:\d+`)

// TestSQLOpenSilentServer opens a journal against a server that never
// answers, with a context that has no deadline: OpenSQL must give up after
// OpenTimeout and say so, not hang.
func TestSQLOpenSilentServer(t *testing.T) {
	for _, b := range dbtest.Backends[:2] { // PostgreSQL and MySQL
		t.Run(b.Name, func(t *testing.T) {
			t.Parallel()
			db := dbtest.Open(t, b)
			dsn := hostPort.ReplaceAllString(db.DSN, silentServer(t))
			require.NotEqual(t, db.DSN, dsn, "the DSN names 127.0.0.1:port")
			pool, err := sql.Open(b.Driver, dsn)
			require.NoError(t, err)
			defer pool.Close()
			start := time.Now()
			_, err = journal.OpenSQL(context.Background(), pool, b.Dialect, journal.SQLConfig{NodeID: "n", Prefix: db.Prefix, OpenTimeout: time.Second})
			require.Error(t, err)
			require.ErrorContains(t, err, "OpenTimeout")
			require.ErrorIs(t, err, context.DeadlineExceeded)
			require.Less(t, time.Since(start), 20*time.Second, "bounded by OpenTimeout (generously: the machine may be loaded)")
		})
	}
}

// TestSQLConnHygiene: the append connection goes back to the pool when
// the journal is idle, with its session settings reset, and at least every
// ConnMaxHold when busy, so the pool's SetConnMaxLifetime applies to it.
func TestSQLConnHygiene(t *testing.T) {
	for _, b := range dbtest.Backends[:2] { // PostgreSQL and MySQL
		t.Run(b.Name, func(t *testing.T) {
			t.Parallel()
			ctx := context.Background()
			db := dbtest.Open(t, b)
			pool := db.NewPool(t)
			j, err := journal.OpenSQL(ctx, pool, b.Dialect, journal.SQLConfig{NodeID: "n", Prefix: db.Prefix, LockTimeout: 3 * time.Second})
			require.NoError(t, err)
			defer j.Close(ctx)
			j.SetConnSchedule(50*time.Millisecond, 200*time.Millisecond)

			_, err = j.Append(ctx, journal.Entry{Producer: "p", Payload: []byte("x")})
			require.NoError(t, err)
			require.GreaterOrEqual(t, pool.Stats().InUse, 1, "held while appending (PostgreSQL may be sending its NOTIFY on another)")
			require.Eventually(t, func() bool { return pool.Stats().InUse == 0 }, 10*time.Second, 10*time.Millisecond,
				"given back when idle")

			// Every idle connection has the pool's defaults again.
			setting := `SHOW lock_timeout`
			want := "0"
			if b.Name == "mysql" {
				setting = `SELECT @@SESSION.innodb_lock_wait_timeout = @@GLOBAL.innodb_lock_wait_timeout`
				want = "1"
			}
			conns := make([]*sql.Conn, pool.Stats().Idle)
			for i := range conns {
				conns[i], err = pool.Conn(ctx)
				require.NoError(t, err)
				var got string
				require.NoError(t, conns[i].QueryRowContext(ctx, setting).Scan(&got))
				require.Equal(t, want, got, "connection %d of %d", i, len(conns))
			}
			for _, c := range conns {
				c.Close()
			}

			// Busy, it still cycles the connection, and the pool closes
			// the ones past their lifetime.
			pool.SetConnMaxLifetime(100 * time.Millisecond)
			deadline := time.Now().Add(time.Second)
			for time.Now().Before(deadline) {
				_, err = j.Append(ctx, journal.Entry{Producer: "p", Payload: []byte("y")})
				require.NoError(t, err)
			}
			require.Positive(t, pool.Stats().MaxLifetimeClosed, "the held connection met the pool's lifetime")
		})
	}
}
