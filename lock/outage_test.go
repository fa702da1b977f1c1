package lock_test

import (
	"context"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/tandem-go/tandem/internal/dbtest"
	"github.com/tandem-go/tandem/internal/locktest"
	"github.com/tandem-go/tandem/lock"
)

// TestSQLOutage cuts every connection of a lease holder's pool (as a server
// restart or a partition would) while it holds a lease, and refuses new
// ones. The holder must report the loss and stop believing it holds the
// lease before another node, which still reaches the database, can acquire
// it; once the database is back, the lease is acquirable again.
func TestSQLOutage(t *testing.T) {
	for _, b := range dbtest.Backends {
		t.Run(b.Name, func(t *testing.T) {
			t.Parallel()
			ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
			defer cancel()
			db := dbtest.Open(t, b)
			proxy, dsn := db.NewProxy(t)
			viaProxy, err := lock.OpenSQL(ctx, db.Pool(t, dsn), b.Dialect, lock.SQLConfig{Prefix: db.Prefix})
			require.NoError(t, err)
			const ttl = time.Second
			holder, err := lock.New(lock.Config{NodeID: "holder", Store: viaProxy, TTL: ttl})
			require.NoError(t, err)
			other, err := lock.New(lock.Config{NodeID: "other", Store: openSQL(t, db), TTL: ttl})
			require.NoError(t, err)

			l, err := holder.TryAcquire(ctx, "job")
			require.NoError(t, err)

			// Watch the holder's belief: the last moment it held the lease.
			var mu sync.Mutex
			var lastHeld time.Time
			watching := make(chan struct{})
			go func() {
				defer close(watching)
				for {
					now := time.Now()
					if !l.Held() {
						return
					}
					mu.Lock()
					lastHeld = now
					mu.Unlock()
					time.Sleep(time.Millisecond)
				}
			}()

			proxy.Cut()
			ol, err := other.Acquire(ctx, "job")
			require.NoError(t, err, "the lease is acquirable by a node that reaches the database")
			acquired := time.Now()
			<-watching
			select {
			case <-l.Lost():
			case <-time.After(10 * ttl):
				t.Fatal("the holder never reported the loss")
			}
			require.ErrorIs(t, context.Cause(l.Context()), lock.ErrNotHeld)
			mu.Lock()
			require.True(t, lastHeld.Before(acquired), "the holder believed it held the lease at %v, after the other node acquired it at %v", lastHeld, acquired)
			mu.Unlock()
			require.Greater(t, ol.Token(), l.Token())
			require.ErrorIs(t, l.Renew(ctx), lock.ErrNotHeld)

			// The database is back: the old holder's node can take the
			// lease again once it is free.
			proxy.Restore()
			require.NoError(t, ol.Release(ctx))
			l2, err := holder.Acquire(ctx, "job")
			require.NoError(t, err, "the lease is acquirable again after the outage")
			require.Greater(t, l2.Token(), ol.Token())
			require.NoError(t, l2.Release(ctx))
		})
	}
}

// slowRenews counts renewals that hang: still in flight, or that took
// longer than hangAfter. The keep-alive gives up on an attempt after half
// the time left to the deadline (at least RenewEvery/4, 250ms for the 3s
// TTL of HolderStopsBelieving), so a hung attempt lasts a quarter of a
// second or more; one that reaches the store takes milliseconds.
type slowRenews struct {
	lock.Store
	mu      sync.Mutex
	started map[int]time.Time
	n       int
	slow    int
}

const hangAfter = 200 * time.Millisecond

func (s *slowRenews) Renew(ctx context.Context, name string, owner lock.Owner, token int64, ttl time.Duration) (bool, error) {
	s.mu.Lock()
	id := s.n
	s.n++
	s.started[id] = time.Now()
	s.mu.Unlock()
	ok, err := s.Store.Renew(ctx, name, owner, token, ttl)
	s.mu.Lock()
	if time.Since(s.started[id]) > hangAfter {
		s.slow++
	}
	delete(s.started, id)
	s.mu.Unlock()
	return ok, err
}

func (s *slowRenews) hung() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	n := s.slow
	for _, at := range s.started {
		if time.Since(at) > hangAfter {
			n++
		}
	}
	return n
}

// TestSQLBlackHole black-holes a lease holder's connections: they stay
// open, but nothing the holder sends reaches the database, so its renewal
// hangs instead of failing. The holder's lease must end at its trust
// deadline, by a timer, before another node can acquire the lease.
func TestSQLBlackHole(t *testing.T) {
	for _, b := range dbtest.Backends {
		t.Run(b.Name, func(t *testing.T) {
			t.Parallel()
			db := dbtest.Open(t, b)
			proxy, dsn := db.NewProxy(t)
			viaProxy, err := lock.OpenSQL(context.Background(), db.Pool(t, dsn), b.Dialect, lock.SQLConfig{Prefix: db.Prefix})
			require.NoError(t, err)
			holder := &slowRenews{Store: viaProxy, started: map[int]time.Time{}}
			locktest.HolderStopsBelieving(t, holder, openSQL(t, db), proxy.BlackHole, holder.hung)
		})
	}
}
