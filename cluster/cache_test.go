package cluster_test

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/tandem-go/tandem/cluster"
	"github.com/tandem-go/tandem/journal"
)

// usersCache makes the cache "users" of user names by id on n.
func usersCache(t *testing.T, n *cluster.Node) *cluster.Cache[int64, string] {
	t.Helper()
	c, err := cluster.NewCache[int64, string](n, "users", cluster.CacheConfig[int64]{})
	require.NoError(t, err)
	return c
}

func fill(c *cluster.Cache[int64, string], ids ...int64) {
	for _, id := range ids {
		c.Add(id, fmt.Sprint("user-", id))
	}
}

// held returns which of ids c holds (each check counts as a lookup).
func held(c *cluster.Cache[int64, string], ids ...int64) []int64 {
	got := []int64{}
	for _, id := range ids {
		if _, ok := c.Get(id); ok {
			got = append(got, id)
		}
	}
	return got
}

// fileNode opens a node (not started) on a folder of its own, for tests of
// what a cache does locally.
func fileNode(t *testing.T) *cluster.Node {
	t.Helper()
	c := cfg("a")
	c.Dir = t.TempDir()
	n, err := cluster.OpenDir(context.Background(), c)
	require.NoError(t, err)
	t.Cleanup(func() { n.Stop(context.Background()) })
	return n
}

func TestCacheInvalidate(t *testing.T) {
	t.Parallel()
	forEachBackend(t, func(t *testing.T, f fixture) {
		ctx := ctxT(t)
		ids := []int64{1, 2, 3, 4, 5}
		var nodes []*cluster.Node
		var caches []*cluster.Cache[int64, string]
		for _, id := range []string{"a", "b", "c"} {
			n := f.open(t, cfg(id))
			c := usersCache(t, n)
			start(t, n)
			fill(c, ids...)
			nodes, caches = append(nodes, n), append(caches, c)
		}
		a, b, c := caches[0], caches[1], caches[2]

		rev, err := a.Invalidate(ctx, 1, 2)
		require.NoError(t, err)
		require.Positive(t, rev)
		require.Equal(t, []int64{3, 4, 5}, held(a, ids...), "the writer evicts at once")
		for i, other := range []*cluster.Cache[int64, string]{b, c} {
			require.NoError(t, nodes[i+1].WaitFor(ctx, rev))
			require.Equal(t, []int64{3, 4, 5}, held(other, ids...), "node %s evicted exactly the keys", nodes[i+1].ID())
			require.EqualValues(t, 1, other.Stats().Invalidations)
		}
		require.Zero(t, a.Stats().Invalidations, "a node does not receive its own records")

		rev, err = b.InvalidateAll(ctx)
		require.NoError(t, err)
		require.Zero(t, b.Len())
		for i, other := range []*cluster.Cache[int64, string]{a, c} {
			require.NoError(t, nodes[2*i].WaitFor(ctx, rev))
			require.Zero(t, other.Len(), "node %s flushed", nodes[2*i].ID())
			require.EqualValues(t, 1, other.Stats().Flushes)
			require.Zero(t, other.Stats().Unreadable)
		}

		rev, err = a.Invalidate(ctx)
		require.NoError(t, err)
		require.Zero(t, rev, "no keys, no record")
	})
}

func TestCacheManyKeys(t *testing.T) {
	t.Parallel()
	forEachBackend(t, func(t *testing.T, f fixture) {
		ctx := ctxT(t)
		var nodes []*cluster.Node
		var caches []*cluster.Cache[string, int]
		for _, id := range []string{"a", "b"} {
			n := f.open(t, cfg(id))
			c, err := cluster.NewCache[string, int](n, "pages", cluster.CacheConfig[string]{Size: 10_000})
			require.NoError(t, err)
			start(t, n)
			nodes, caches = append(nodes, n), append(caches, c)
		}
		a, b := caches[0], caches[1]
		keys := make([]string, 6000)
		for i := range keys {
			keys[i] = fmt.Sprintf("/wiki/%06d/%s", i, strings.Repeat("x", 30))
			b.Add(keys[i], i)
		}
		b.Add("kept", -1)
		head, err := nodes[0].Journal().Head(ctx)
		require.NoError(t, err)
		rev, err := a.Invalidate(ctx, keys...)
		require.NoError(t, err)
		require.Greater(t, rev-head, int64(1), "%d keys of ~45 bytes need several records", len(keys))
		require.NoError(t, nodes[1].WaitFor(ctx, rev))
		require.Equal(t, 1, b.Len(), "every key evicted, the other kept")
		require.EqualValues(t, rev-head, b.Stats().Invalidations)

		_, err = a.Invalidate(ctx, "ok", strings.Repeat("k", cluster.MaxCacheKeyLen+1))
		require.ErrorIs(t, err, cluster.ErrInvalidArgument)
		require.ErrorContains(t, err, "keys[1]")
		require.ErrorContains(t, err, "MaxCacheKeyLen")
		_, err = a.Invalidate(ctx, "\xff\xfe")
		require.ErrorIs(t, err, cluster.ErrInvalidArgument)
		require.ErrorContains(t, err, "UTF-8")
		head2, err := nodes[0].Journal().Head(ctx)
		require.NoError(t, err)
		require.Equal(t, rev, head2, "rejected keys publish nothing")
	})
}

func TestCacheResync(t *testing.T) {
	t.Parallel()
	forEachBackend(t, func(t *testing.T, f fixture) {
		ctx := ctxT(t)
		a := f.open(t, cfg("a"))
		start(t, a)

		// A running node that falls behind the tail: b's sync goroutine is
		// held in a handler while a's records are published and pruned.
		b := f.open(t, cfg("b"))
		users := usersCache(t, b)
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
		fill(users, 1, 2, 3)
		_, err := a.Publish(ctx, "gate", nil)
		require.NoError(t, err)
		<-entered
		head, err := a.Publish(ctx, "filler", nil)
		require.NoError(t, err)
		_, err = a.Journal().Prune(ctx, head+1)
		require.NoError(t, err)
		close(release)
		require.NoError(t, b.WaitFor(ctx, head))
		require.Zero(t, users.Len(), "the resync flushed the running node's cache")
		require.EqualValues(t, 1, users.Stats().Flushes)
		require.EqualValues(t, 1, b.Stats().Resyncs)
		require.NoError(t, b.Stop(ctx))

		// A node restarted after its position was pruned.
		for range 3 {
			head, err = a.Publish(ctx, "filler", nil)
			require.NoError(t, err)
		}
		_, err = a.Journal().Prune(ctx, head+1)
		require.NoError(t, err)
		b2 := f.open(t, cfg("b"))
		users2 := usersCache(t, b2)
		fill(users2, 1, 2, 3)
		start(t, b2)
		require.Zero(t, users2.Len(), "a resync at Start flushes too")
		require.EqualValues(t, 1, users2.Stats().Flushes)
	})
}

// TestCacheResyncKeepsLaterInvalidations: a resync continues from the
// head it read before its hooks flushed the caches, so an invalidation
// committed while the hooks run is applied afterwards. Here a second hook,
// right after the cache's flush, has a request miss and start a load that
// reads the old value, and has another node change the value and
// invalidate the key meanwhile; the load returns after the resync ended.
// Once b applied the invalidation's revision (WaitFor), it must not
// serve the old value: had the resync read the head after the hooks, it
// would have passed over the invalidation and kept the load's value.
func TestCacheResyncKeepsLaterInvalidations(t *testing.T) {
	t.Parallel()
	forEachBackend(t, func(t *testing.T, f fixture) {
		ctx := ctxT(t)
		a := f.open(t, cfg("a"))
		aUsers := usersCache(t, a)
		start(t, a)

		b := f.open(t, cfg("b"))
		users := usersCache(t, b) // its flush is the first resync hook
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
		var invRev atomic.Int64
		finish, loaded := make(chan struct{}), make(chan struct{})
		var once sync.Once
		require.NoError(t, b.OnResync(func(ctx context.Context, _ cluster.ResyncReason) error {
			var err error
			once.Do(func() {
				// The cache was just flushed: a request on b misses and
				// starts a load, which reads the old value.
				loading := make(chan struct{})
				go func() {
					defer close(loaded)
					_, _ = users.GetOrLoad(context.Background(), 1, func(context.Context, int64) (string, error) {
						close(loading)
						<-finish
						return "old", nil
					})
				}()
				<-loading
				// Meanwhile a changes the value and invalidates key 1.
				var rev int64
				rev, err = aUsers.Invalidate(ctx, 1)
				invRev.Store(rev)
			})
			return err
		}))
		start(t, b)

		// b falls behind the tail while its sync goroutine is held in a
		// handler: it resyncs when released.
		_, err := a.Publish(ctx, "gate", nil)
		require.NoError(t, err)
		<-entered
		head, err := a.Publish(ctx, "filler", nil)
		require.NoError(t, err)
		_, err = a.Journal().Prune(ctx, head+1)
		require.NoError(t, err)
		close(release)
		require.NoError(t, b.WaitFor(ctx, head))
		require.EqualValues(t, 1, b.Stats().Resyncs)
		close(finish)
		<-loaded

		rev := invRev.Load()
		require.Greater(t, rev, head, "the invalidation was committed during the resync")
		require.NoError(t, b.WaitFor(ctx, rev))
		v, ok := users.Get(1)
		require.False(t, ok, "b applied revision %d, the invalidation of key 1, yet serves %q loaded before it", rev, v)
	})
}

func TestCacheUnreadable(t *testing.T) {
	t.Parallel()
	forEachBackend(t, func(t *testing.T, f fixture) {
		ctx := ctxT(t)
		a := f.open(t, cfg("a"))
		start(t, a)
		b := f.open(t, cfg("b"))
		users := usersCache(t, b)
		start(t, b)
		send := func(payload string) {
			t.Helper()
			rev, err := a.Publish(ctx, users.Producer(), []byte(payload))
			require.NoError(t, err)
			require.NoError(t, b.WaitFor(ctx, rev))
		}
		ids := []int64{1, 2, 3}

		// Readable: unknown fields are ignored, an empty record is a no-op.
		fill(users, ids...)
		send(`{"v":1,"keys":["1"],"added_later":{"x":1}}`)
		send(`{"v":1}`)
		require.Equal(t, []int64{2, 3}, held(users, ids...))
		require.Zero(t, users.Stats().Unreadable)

		for i, payload := range []string{
			`{"v":2,"keys":["1"]}`,     // a newer release's format
			`{"v":99,"anything":true}`, // ditto
			`not json`,
			``,
			`{"keys":["1"]}`,        // no version
			`{"v":1,"keys":[1]}`,    // keys are strings
			`{"v":1,"all":"yes"}`,   // all is a bool
			`{"v":1,"keys":["x1"]}`, // not an int64
			`{"v":1,"keys":["99999999999999999999"]}`, // out of range
		} {
			fill(users, ids...)
			send(payload)
			require.Empty(t, held(users, ids...), "%s flushes the cache", payload)
			st := users.Stats()
			require.EqualValues(t, i+1, st.Unreadable, "%s is counted", payload)
			require.EqualValues(t, i+1, st.Flushes)
		}
		require.EqualValues(t, 0, b.Stats().HandlerFailures, "an unreadable record never blocks the node")
	})
}

// TestCacheStaleLoad: a load that read the source before a change must not
// store its value once the change's invalidation has been applied.
func TestCacheStaleLoad(t *testing.T) {
	t.Parallel()
	forEachBackend(t, func(t *testing.T, f fixture) {
		ctx := ctxT(t)
		a := f.open(t, cfg("a"))
		usersA := usersCache(t, a)
		start(t, a)
		b := f.open(t, cfg("b"))
		users := usersCache(t, b)
		start(t, b)

		started, release := make(chan struct{}), make(chan struct{})
		type result struct {
			v   string
			err error
		}
		first := make(chan result, 1)
		go func() {
			v, err := users.GetOrLoad(ctx, 7, func(ctx context.Context, id int64) (string, error) {
				close(started)
				<-release
				return "old name", nil // read before the change
			})
			first <- result{v, err}
		}()
		<-started

		// a changes user 7 and invalidates it; b applies that while its
		// load is still in flight.
		rev, err := usersA.Invalidate(ctx, 7)
		require.NoError(t, err)
		require.NoError(t, b.WaitFor(ctx, rev))

		// A call after the invalidation does not join the old load (which
		// would block it until release).
		tctx, cancel := context.WithTimeout(ctx, 10*time.Second)
		defer cancel()
		v, err := users.GetOrLoad(tctx, 7, func(ctx context.Context, id int64) (string, error) {
			return "new name", nil
		})
		require.NoError(t, err)
		require.Equal(t, "new name", v)

		close(release)
		r := <-first
		require.NoError(t, r.err)
		require.Equal(t, "old name", r.v, "the overlapping call gets what it loaded")
		v, ok := users.Get(7)
		require.True(t, ok)
		require.Equal(t, "new name", v, "the stale load did not overwrite the cache")
		st := users.Stats()
		require.EqualValues(t, 1, st.StaleLoads)
		require.EqualValues(t, 2, st.Loads)

		// The same race against this node's own Invalidate.
		started, release = make(chan struct{}), make(chan struct{})
		go func() {
			v, err := users.GetOrLoad(ctx, 8, func(ctx context.Context, id int64) (string, error) {
				close(started)
				<-release
				return "old", nil
			})
			first <- result{v, err}
		}()
		<-started
		_, err = users.Invalidate(ctx, 8)
		require.NoError(t, err)
		close(release)
		require.Equal(t, result{"old", nil}, <-first)
		_, ok = users.Get(8)
		require.False(t, ok, "the stale value was not stored")
		require.EqualValues(t, 2, users.Stats().StaleLoads)
	})
}

func TestCacheGetOrLoad(t *testing.T) {
	t.Parallel()
	ctx := ctxT(t)
	users := usersCache(t, fileNode(t))

	// Concurrent misses share one load.
	release := make(chan struct{})
	var calls sync.WaitGroup
	load := func(ctx context.Context, id int64) (string, error) {
		<-release
		return fmt.Sprint("user-", id), nil
	}
	results := make(chan string, 10)
	for range 10 {
		calls.Go(func() {
			v, err := users.GetOrLoad(ctx, 1, load)
			if err != nil {
				v = err.Error()
			}
			results <- v
		})
	}
	// Every call has missed, so all but the first wait for its load.
	require.Eventually(t, func() bool { return users.Stats().Misses == 10 }, time.Minute, time.Millisecond)
	close(release)
	calls.Wait()
	close(results)
	for v := range results {
		require.Equal(t, "user-1", v)
	}
	st := users.Stats()
	require.EqualValues(t, 1, st.Loads)
	require.EqualValues(t, 1, st.Len)
	require.EqualValues(t, 10, st.Hits+st.Misses)

	// Errors are returned as is and not cached.
	errDown := errors.New("database down")
	_, err := users.GetOrLoad(ctx, 2, func(context.Context, int64) (string, error) { return "", errDown })
	require.ErrorIs(t, err, errDown)
	v, err := users.GetOrLoad(ctx, 2, load)
	require.NoError(t, err)
	require.Equal(t, "user-2", v)

	// A load abandoned by its caller is taken over by the calls that
	// joined it.
	lctx, cancel := context.WithCancel(ctx)
	started := make(chan struct{})
	leader := make(chan error, 1)
	go func() {
		_, err := users.GetOrLoad(lctx, 3, func(ctx context.Context, _ int64) (string, error) {
			close(started)
			<-ctx.Done()
			return "", ctx.Err()
		})
		leader <- err
	}()
	<-started
	joiner := make(chan string, 1)
	misses := users.Stats().Misses
	go func() {
		v, _ := users.GetOrLoad(ctx, 3, load)
		joiner <- v
	}()
	require.Eventually(t, func() bool { return users.Stats().Misses == misses+1 }, time.Minute, time.Millisecond, "the joiner waits for the load")
	cancel()
	require.ErrorIs(t, <-leader, context.Canceled)
	require.Equal(t, "user-3", <-joiner)

	// A panicking load panics its caller and leaves nothing behind.
	require.Panics(t, func() {
		_, _ = users.GetOrLoad(ctx, 4, func(context.Context, int64) (string, error) { panic("boom") })
	})
	v, err = users.GetOrLoad(ctx, 4, load)
	require.NoError(t, err)
	require.Equal(t, "user-4", v)

	// Add wins over a load in flight.
	started, release = make(chan struct{}), make(chan struct{})
	done := make(chan string, 1)
	go func() {
		v, _ := users.GetOrLoad(ctx, 5, func(context.Context, int64) (string, error) {
			close(started)
			<-release
			return "loaded", nil
		})
		done <- v
	}()
	<-started
	users.Add(5, "added")
	close(release)
	require.Equal(t, "loaded", <-done)
	v, _ = users.Get(5)
	require.Equal(t, "added", v)

	_, err = users.GetOrLoad(ctx, 6, nil)
	require.ErrorIs(t, err, cluster.ErrInvalidArgument)

	// Size bounds the cache; the least recently used goes first.
	small, err := cluster.NewCache[string, int](fileNode(t), "small", cluster.CacheConfig[string]{Size: 2})
	require.NoError(t, err)
	small.Add("a", 1)
	small.Add("b", 2)
	small.Get("a")
	small.Add("c", 3)
	_, ok := small.Get("b")
	require.False(t, ok)
	require.EqualValues(t, 1, small.Stats().Evictions)
	small.Purge()
	require.Zero(t, small.Len())
}

// Key types with a string or integer underlying type need no codec.
func TestCacheDefaultKeys(t *testing.T) {
	t.Parallel()
	type userID uint32
	type slug string
	dir := t.TempDir()
	ctx := ctxT(t)
	open := func(id string) *cluster.Node {
		c := cfg(id)
		c.Dir = dir
		n, err := cluster.OpenDir(ctx, c)
		require.NoError(t, err)
		t.Cleanup(func() { n.Stop(context.Background()) })
		return n
	}
	a, b := open("a"), open("b")
	idsA, err := cluster.NewCache[userID, int](a, "ids", cluster.CacheConfig[userID]{})
	require.NoError(t, err)
	idsB, err := cluster.NewCache[userID, int](b, "ids", cluster.CacheConfig[userID]{})
	require.NoError(t, err)
	slugsA, err := cluster.NewCache[slug, int](a, "slugs", cluster.CacheConfig[slug]{})
	require.NoError(t, err)
	slugsB, err := cluster.NewCache[slug, int](b, "slugs", cluster.CacheConfig[slug]{})
	require.NoError(t, err)
	start(t, a)
	start(t, b)
	idsB.Add(4294967295, 1)
	idsB.Add(7, 2)
	slugsB.Add("\"quoted\" <&> ü \\ \n\t\x01", 1)
	slugsB.Add("kept", 2)
	_, err = idsA.Invalidate(ctx, 4294967295)
	require.NoError(t, err)
	rev, err := slugsA.Invalidate(ctx, "\"quoted\" <&> ü \\ \n\t\x01")
	require.NoError(t, err)
	require.NoError(t, b.WaitFor(ctx, rev))
	require.Equal(t, 1, idsB.Len())
	_, ok := idsB.Get(7)
	require.True(t, ok)
	require.Equal(t, 1, slugsB.Len())
	_, ok = slugsB.Get("kept")
	require.True(t, ok)
	require.Zero(t, idsB.Stats().Unreadable+slugsB.Stats().Unreadable)
}

func TestCacheConfigErrors(t *testing.T) {
	t.Parallel()
	n := fileNode(t)
	type pair struct{ A, B string }
	for _, c := range []struct {
		make  func() error
		field string
	}{
		{func() error {
			_, err := cluster.NewCache[string, int](n, "", cluster.CacheConfig[string]{})
			return err
		}, "name"},
		{func() error {
			_, err := cluster.NewCache[string, int](n, "my users", cluster.CacheConfig[string]{})
			return err
		}, "name"},
		{func() error {
			_, err := cluster.NewCache[string, int](n, strings.Repeat("n", 200), cluster.CacheConfig[string]{})
			return err
		}, "longer than 122 bytes"},
		{func() error {
			_, err := cluster.NewCache[string, int](n, "s", cluster.CacheConfig[string]{Size: -1})
			return err
		}, "Size"},
		{func() error { _, err := cluster.NewCache[pair, int](n, "p", cluster.CacheConfig[pair]{}); return err }, "Keys"},
		{func() error {
			_, err := cluster.NewCache[pair, int](n, "p", cluster.CacheConfig[pair]{Keys: cluster.KeyFuncs[pair](nil, nil)})
			return err
		}, "Keys"},
		{func() error {
			_, err := cluster.NewCache[string, int](nil, "s", cluster.CacheConfig[string]{})
			return err
		}, "node"},
	} {
		err := c.make()
		require.ErrorIs(t, err, cluster.ErrInvalidArgument)
		require.ErrorContains(t, err, c.field)
	}

	_, err := cluster.NewCache[string, int](n, "users", cluster.CacheConfig[string]{})
	require.NoError(t, err)
	_, err = cluster.NewCache[string, int](n, "users", cluster.CacheConfig[string]{})
	require.ErrorIs(t, err, cluster.ErrInvalidArgument, "one cache per name per node")
	require.ErrorContains(t, err, "already")

	pairs, err := cluster.NewCache[pair, int](n, "pairs", cluster.CacheConfig[pair]{Keys: cluster.KeyFuncs(
		func(p pair) string { return p.A + "/" + p.B },
		func(s string) (pair, error) {
			a, b, ok := strings.Cut(s, "/")
			if !ok {
				return pair{}, fmt.Errorf("no '/' in %q", s)
			}
			return pair{a, b}, nil
		})})
	require.NoError(t, err)
	require.Equal(t, "cache/pairs", pairs.Producer())

	start(t, n)
	_, err = cluster.NewCache[string, int](n, "late", cluster.CacheConfig[string]{})
	require.ErrorIs(t, err, cluster.ErrInvalidArgument)
	require.ErrorContains(t, err, "before Start")
}

// TestCacheRecordFormat pins the payloads other releases must read.
func TestCacheRecordFormat(t *testing.T) {
	t.Parallel()
	ctx := ctxT(t)
	n := fileNode(t)
	users := usersCache(t, n)
	start(t, n)
	head, err := n.Journal().Head(ctx)
	require.NoError(t, err)
	_, err = users.Invalidate(ctx, 42, 7)
	require.NoError(t, err)
	_, err = users.InvalidateAll(ctx)
	require.NoError(t, err)
	recs, err := n.Journal().Read(ctx, head, 10)
	require.NoError(t, err)
	require.Len(t, recs, 2)
	for _, r := range recs {
		require.Equal(t, "cache/users", r.Producer)
		require.Equal(t, "a", r.NodeID)
	}
	require.Equal(t, `{"v":1,"keys":["42","7"]}`, string(recs[0].Payload))
	require.Equal(t, `{"v":1,"all":true}`, string(recs[1].Payload))
}
