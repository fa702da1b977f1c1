package cluster_test

import (
	"context"
	"errors"
	"log/slog"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/tandem-go/tandem/cluster"
	"github.com/tandem-go/tandem/journal"
)

// TestPanickingHandler: a handler panics on one record. The process
// survives; a node restarted into that record returns from Start within
// its context, naming the producer and revision; Stats name the record;
// a second Start on the same node works once DeadLetter gives up on it.
func TestPanickingHandler(t *testing.T) {
	forEachBackend(t, func(t *testing.T, f fixture) {
		ctx := ctxT(t)
		a := f.open(t, cfg("a"))
		start(t, a)
		var panics atomic.Int32
		poison := cluster.HandlerFunc(func(_ context.Context, r journal.Record) error {
			if string(r.Payload) == "poison" {
				panics.Add(1)
				panic("cannot digest " + string(r.Payload))
			}
			return nil
		})

		// A running node meets the record: it survives and retries.
		b := f.open(t, cfg("b"))
		require.NoError(t, b.Handle("p", poison))
		start(t, b)
		bad, err := a.Publish(ctx, "p", []byte("poison"))
		require.NoError(t, err)
		after, err := a.Publish(ctx, "p", []byte("fine"))
		require.NoError(t, err)
		require.Eventually(t, func() bool { return b.Stats().HandlerFailures >= 3 }, 30*time.Second, 10*time.Millisecond, "retried with backoff")
		st := b.Stats()
		require.NotNil(t, st.Stuck)
		require.Equal(t, "p", st.Stuck.Producer)
		require.Equal(t, bad, st.Stuck.Revision)
		require.GreaterOrEqual(t, st.HandlerFailures, int64(3))
		var pe *cluster.PanicError
		require.ErrorAs(t, st.Stuck.LastErr, &pe)
		require.Contains(t, string(pe.Stack), "poison_test.go", "the stack of the panic is kept")
		require.Equal(t, bad-1, st.Revision, "the node waits at the record, it does not skip it")
		require.Eventually(t, func() bool { return b.Stats().Head == after }, 30*time.Second, 10*time.Millisecond, "Head is current while stuck")
		require.Equal(t, after-bad+1, b.Stats().Lag)
		short, cancel := context.WithTimeout(ctx, 300*time.Millisecond)
		err = b.WaitFor(short, after)
		cancel()
		require.ErrorIs(t, err, context.DeadlineExceeded)
		require.ErrorContains(t, err, `producer "p"`, "WaitFor says what it waits behind")
		var he *cluster.HandlerError
		require.ErrorAs(t, b.Stop(ctx), &he, "the final sync could not pass the record either")
		require.Equal(t, bad, he.Revision)

		// A restart meets it again in Start's first sync.
		c := cfg("b")
		b2 := f.open(t, c)
		require.NoError(t, b2.Handle("p", poison))
		sctx, cancel := context.WithTimeout(ctx, time.Second)
		began := time.Now()
		err = b2.Start(sctx)
		cancel()
		require.Less(t, time.Since(began), 2*time.Second, "Start returns within its context")
		require.ErrorAs(t, err, &he)
		require.Equal(t, "p", he.Producer)
		require.Equal(t, bad, he.Revision)
		require.ErrorIs(t, err, context.DeadlineExceeded)
		require.ErrorContains(t, err, `producer "p" failed at revision`)
		require.Equal(t, bad, b2.Stats().Stuck.Revision, "Stats describe the failed Start")
		_, err = b2.Publish(ctx, "p", nil)
		require.ErrorIs(t, err, cluster.ErrNotRunning, "a node that failed to start does not publish")

		// Start again on the same node: fails again the same way.
		sctx, cancel = context.WithTimeout(ctx, 500*time.Millisecond)
		err = b2.Start(sctx)
		cancel()
		require.ErrorAs(t, err, &he, "a failed Start can be retried")
		require.NoError(t, b2.Stop(ctx))

		// With a dead-letter hook, the application gives up on it.
		var gaveUp atomic.Int64
		c.DeadLetter = func(_ context.Context, r journal.Record, attempts int, err error) bool {
			var pe *cluster.PanicError
			if errors.As(err, &pe) && attempts >= 2 {
				gaveUp.Store(r.Revision)
				return true
			}
			return false
		}
		rec := &recorder{}
		b3 := f.open(t, c)
		require.NoError(t, b3.Handle("p", cluster.HandlerFunc(func(ctx context.Context, r journal.Record) error {
			if err := poison.Apply(ctx, r); err != nil {
				return err
			}
			return rec.Apply(ctx, r)
		})))
		start(t, b3)
		require.Equal(t, bad, gaveUp.Load())
		require.NoError(t, b3.WaitFor(ctx, after))
		st = b3.Stats()
		require.EqualValues(t, 1, st.GaveUp)
		require.Nil(t, st.Stuck)
		require.Len(t, rec.got(), 1, "the node moved past the record the application gave up on")
		require.Equal(t, "fine", string(rec.got()[0].Payload))
	})
}

// TestBlockingHandler: a handler blocks and ignores its context. Stats
// name the stuck record once HandlerTimeout passed (counted as a
// failure), with the right Head and Lag; Stop returns within its context
// and says which handler was stuck.
func TestBlockingHandler(t *testing.T) {
	forEachBackend(t, func(t *testing.T, f fixture) {
		ctx := ctxT(t)
		a := f.open(t, cfg("a"))
		start(t, a)
		unblock := make(chan struct{})
		t.Cleanup(func() { close(unblock) }) // let the left-behind call end
		c := cfg("b")
		c.HandlerTimeout = 200 * time.Millisecond
		b := f.open(t, c)
		require.NoError(t, b.Handle("p", cluster.HandlerFunc(func(_ context.Context, r journal.Record) error {
			if string(r.Payload) == "block" {
				<-unblock // deaf to its context
			}
			return nil
		})))
		start(t, b)
		stuck, err := a.Publish(ctx, "p", []byte("block"))
		require.NoError(t, err)
		last := publishN(t, ctx, a, 3)
		require.Eventually(t, func() bool { return b.Stats().Stuck != nil }, 30*time.Second, 10*time.Millisecond)
		st := b.Stats()
		require.Equal(t, "p", st.Stuck.Producer)
		require.Equal(t, stuck, st.Stuck.Revision)
		require.True(t, st.Stuck.Running, "the call is still running")
		require.False(t, st.Stuck.Since.IsZero())
		require.EqualValues(t, 1, st.HandlerFailures, "a call past HandlerTimeout counts as a failure")
		require.Equal(t, stuck-1, st.Revision)
		require.Eventually(t, func() bool { return b.Stats().Head == last }, 30*time.Second, 10*time.Millisecond, "Head is current while stuck")
		require.Equal(t, last-stuck+1, b.Stats().Lag)

		sctx, cancel := context.WithTimeout(ctx, 500*time.Millisecond)
		defer cancel()
		began := time.Now()
		err = b.Stop(sctx)
		require.Less(t, time.Since(began), time.Second, "Stop returns within its context")
		var he *cluster.HandlerError
		require.ErrorAs(t, err, &he, "Stop says which handler was stuck")
		require.True(t, he.Stuck)
		require.Equal(t, stuck, he.Revision)
		require.ErrorContains(t, err, "ignores its context")
	})
}

// TestNothingAfterAbandonedSync: once Stop gave up on a handler that
// ignores its context, the sync it left behind hands no further record to
// the handlers when that call returns: not the rest of its batch either.
func TestNothingAfterAbandonedSync(t *testing.T) {
	forEachBackend(t, func(t *testing.T, f fixture) {
		ctx := ctxT(t)
		a := f.open(t, cfg("a"))
		start(t, a)
		entered, unblock := make(chan struct{}), make(chan struct{})
		var after atomic.Int32 // calls for the record after the blocking one
		b := f.open(t, cfg("b"))
		require.NoError(t, b.Handle("p", cluster.HandlerFunc(func(_ context.Context, r journal.Record) error {
			if string(r.Payload) == "block" {
				close(entered)
				<-unblock // deaf to its context
				return nil
			}
			after.Add(1)
			return nil
		})))
		start(t, b)
		// One append: b reads both records in one batch.
		_, err := a.PublishEntries(ctx, journal.Entry{Producer: "p", Payload: []byte("block")},
			journal.Entry{Producer: "p", Payload: []byte("after")})
		require.NoError(t, err)
		<-entered
		sctx, cancel := context.WithTimeout(ctx, 300*time.Millisecond)
		defer cancel()
		var he *cluster.HandlerError
		require.ErrorAs(t, b.Stop(sctx), &he, "Stop gave up on the handler")
		require.True(t, he.Stuck)

		close(unblock)
		<-cluster.LoopDone(b) // the left-behind sync has returned
		require.Zero(t, after.Load(), "a record was handed to a handler after Stop returned")
	})
}

// panickingLog is a log handler that panics at the first record whose
// message contains msg: a panic on Start's goroutine outside handlers and
// hooks, which recover theirs.
type panickingLog struct {
	msg      string
	panicked atomic.Bool
}

func (p *panickingLog) Enabled(context.Context, slog.Level) bool { return true }

func (p *panickingLog) Handle(_ context.Context, r slog.Record) error {
	if strings.Contains(r.Message, p.msg) && p.panicked.CompareAndSwap(false, true) {
		panic("log handler bug")
	}
	return nil
}

func (p *panickingLog) WithAttrs([]slog.Attr) slog.Handler { return p }
func (p *panickingLog) WithGroup(string) slog.Handler      { return p }

// TestPanickingResyncHook: a resync hook's panic is recovered and the hook
// retried, like a hook that fails: at Start, which then succeeds, and in
// a running node's sync loop, which it would otherwise crash with the
// process. A panic that does escape Start (here the logger's) leaves the
// node as it was, its id released: Start works again.
func TestPanickingResyncHook(t *testing.T) {
	forEachBackend(t, func(t *testing.T, f fixture) {
		ctx := ctxT(t)
		var calls atomic.Int32
		hook := func(context.Context, cluster.ResyncReason) error {
			if calls.Add(1)%2 == 1 {
				panic("hook bug") // every other call
			}
			return nil
		}

		// At Start: b's stored position belongs to another epoch.
		const otherEpoch = "another-epoch-0123456789abcdef"
		require.NoError(t, f.revisions(t).Save(ctx, "b", 0, otherEpoch))
		b := f.open(t, cfg("b"))
		require.NoError(t, b.OnResync(hook))
		entered, release := make(chan struct{}), make(chan struct{})
		require.NoError(t, b.Handle("gate", cluster.HandlerFunc(func(ctx context.Context, _ journal.Record) error {
			close(entered)
			select {
			case <-release:
				return nil
			case <-ctx.Done():
				return ctx.Err()
			}
		})))
		start(t, b)
		require.EqualValues(t, 2, calls.Load(), "the hook ran again after its panic")
		require.EqualValues(t, 1, b.Stats().Resyncs)

		// In the sync loop: b falls behind the tail while its sync
		// goroutine is held in a handler.
		a := f.open(t, cfg("a"))
		start(t, a)
		_, err := a.Publish(ctx, "gate", nil)
		require.NoError(t, err)
		<-entered
		head, err := a.Publish(ctx, "filler", nil)
		require.NoError(t, err)
		_, err = a.Journal().Prune(ctx, head+1)
		require.NoError(t, err)
		close(release)
		require.NoError(t, b.WaitFor(ctx, head))
		require.EqualValues(t, 4, calls.Load())
		require.EqualValues(t, 2, b.Stats().Resyncs)

		// A panic that escapes Start.
		require.NoError(t, f.revisions(t).Save(ctx, "c", 0, otherEpoch))
		cc := cfg("c")
		cc.Logger = slog.New(&panickingLog{msg: "resynchronises"})
		c := f.open(t, cc)
		panicked := func() (p any) {
			defer func() { p = recover() }()
			_ = c.Start(ctx)
			return nil
		}()
		require.NotNil(t, panicked)
		require.False(t, c.Stats().Running)
		start(t, c) // neither "another Start is in progress" nor the id held
		require.EqualValues(t, 1, c.Stats().Resyncs)
	})
}
