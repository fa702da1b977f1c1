package journal_test

import (
	"context"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/tandem-go/tandem/internal/dbtest"
	"github.com/tandem-go/tandem/internal/journaltest"
	"github.com/tandem-go/tandem/journal"
)

// TestSQLWithSession: statements run on the listening connection between
// its waits, notifications that arrive meanwhile are not lost, polls go
// there (one server session for both), and before Watch, or while a
// listener that lost its session reconnects — a statement cut short by its
// caller's context, or one that ends the session — they run on the pool.
func TestSQLWithSession(t *testing.T) {
	b := dbtest.Backends[0] // PostgreSQL: the dialect that pushes
	db := dbtest.Open(t, b)
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	w := openSQL(t, db, b.Dialect, "watcher")
	writer := openSQL(t, db, b.Dialect, "writer")
	// session returns the backend a statement ran on and how many
	// channels it listens on.
	session := func() (pid int64, channels int) {
		require.NoError(t, w.WithSession(ctx, func(q journal.Queryer) error {
			return q.QueryRowContext(ctx, `SELECT pg_backend_pid(), (SELECT count(*) FROM pg_listening_channels())`).Scan(&pid, &channels)
		}))
		return pid, channels
	}
	listening := func() int64 {
		var pid int64
		require.Eventually(t, func() bool {
			p, channels := session()
			pid = p
			return w.Listening() && channels == 1
		}, 10*time.Second, 5*time.Millisecond, "statements run on the listening session")
		return pid
	}
	require.False(t, w.Listening())
	_, channels := session()
	require.Zero(t, channels, "before Watch: on the pool")
	ch, err := w.Watch(ctx)
	require.NoError(t, err)
	listener := listening()
	journaltest.Drain(ch)

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
	require.Equal(t, listener, listening(), "still the same session")

	for _, c := range []struct {
		name string
		kill func() error
	}{
		{"a statement cut short by its context", func() error {
			short, cancel := context.WithTimeout(ctx, 50*time.Millisecond)
			defer cancel()
			return w.WithSession(short, func(q journal.Queryer) error {
				_, err := q.ExecContext(short, `SELECT pg_sleep(5)`)
				return err
			})
		}},
		{"a statement that ends the session", func() error {
			return w.WithSession(ctx, func(q journal.Queryer) error {
				_, err := q.ExecContext(ctx, `SELECT pg_terminate_backend(pg_backend_pid())`)
				return err
			})
		}},
	} {
		require.Error(t, c.kill(), c.name)
		res, err := w.Poll(ctx, 0, 1000)
		require.NoError(t, err, "%s: the next poll runs (on the pool while the listener reconnects)", c.name)
		require.EqualValues(t, res.Head, len(res.Records))
		again := listening()
		require.NotEqual(t, listener, again, "%s: a new listening session", c.name)
		listener = again
		journaltest.Drain(ch)
		_, err = writer.Append(ctx, journal.Entry{Producer: "p", Payload: []byte("y")})
		require.NoError(t, err)
		select {
		case <-ch:
		case <-time.After(10 * time.Second):
			t.Fatalf("%s: no wake-up after the listener reconnected", c.name)
		}
	}
}
