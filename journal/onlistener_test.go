package journal_test

import (
	"context"
	"database/sql"
	"errors"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/tandem-go/tandem/internal/dbtest"
	"github.com/tandem-go/tandem/journal"
)

// TestSQLOnListener: statements run on the listening connection between
// its waits, notifications that arrive meanwhile are not lost, polls go
// there (one server session for both), and a statement that kills the
// connection makes the listener reconnect, with ErrNotListening (and the
// pool) meanwhile.
func TestSQLOnListener(t *testing.T) {
	b := dbtest.Backends[0] // PostgreSQL: the dialect that pushes
	db := dbtest.Open(t, b)
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	w := openSQL(t, db, b.Dialect, "watcher")
	writer := openSQL(t, db, b.Dialect, "writer")
	require.ErrorIs(t, w.OnListener(ctx, func(*sql.Conn) error { return nil }), journal.ErrNotListening, "before Watch")
	ch, err := w.Watch(ctx)
	require.NoError(t, err)
	pid := func() int64 {
		var p int64
		require.Eventually(t, func() bool {
			err := w.OnListener(ctx, func(c *sql.Conn) error { return c.QueryRowContext(ctx, `SELECT pg_backend_pid()`).Scan(&p) })
			return err == nil
		}, 10*time.Second, 5*time.Millisecond)
		return p
	}
	listener := pid()
	require.True(t, w.Listening())
	var channels int
	require.NoError(t, w.OnListener(ctx, func(c *sql.Conn) error {
		return c.QueryRowContext(ctx, `SELECT count(*) FROM pg_listening_channels()`).Scan(&channels)
	}))
	require.Equal(t, 1, channels, "the statements run on the listening session")
	drain(ch)

	// Statements and notifications interleave: every append is followed
	// by a wake-up, however many statements run meanwhile.
	stop := make(chan struct{})
	done := make(chan error, 1)
	go func() {
		for {
			select {
			case <-stop:
				done <- nil
				return
			default:
			}
			if _, err := w.Poll(ctx, 0, 10); err != nil {
				done <- err
				return
			}
		}
	}()
	for range 20 {
		_, err := writer.Append(ctx, journal.Entry{Producer: "p", Payload: []byte("x")})
		require.NoError(t, err)
		select {
		case <-ch:
		case <-time.After(10 * time.Second):
			t.Fatal("no wake-up for an append while statements ran on the listener")
		}
	}
	close(stop)
	require.NoError(t, <-done)
	require.Equal(t, listener, pid(), "still the same session")

	// A statement that ends the session: the listener reconnects.
	err = w.OnListener(ctx, func(c *sql.Conn) error {
		_, err := c.ExecContext(ctx, `SELECT pg_terminate_backend(pg_backend_pid())`)
		return err
	})
	require.Error(t, err)
	res, err := w.Poll(ctx, 0, 100)
	require.NoError(t, err, "a poll while the listener reconnects uses the pool")
	require.Len(t, res.Records, 20)
	again := pid()
	require.True(t, w.Listening())
	require.NotEqual(t, listener, again, "a new listening session")
	drain(ch)
	_, err = writer.Append(ctx, journal.Entry{Producer: "p", Payload: []byte("y")})
	require.NoError(t, err)
	select {
	case <-ch:
	case <-time.After(10 * time.Second):
		t.Fatal("no wake-up after the listener reconnected")
	}
	require.False(t, errors.Is(w.OnListener(ctx, func(*sql.Conn) error { return nil }), journal.ErrNotListening))
}

func drain(ch <-chan struct{}) {
	for {
		select {
		case <-ch:
		default:
			return
		}
	}
}
