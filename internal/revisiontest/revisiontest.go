// Package revisiontest is the conformance suite every revision.Store must
// pass: the file store and the SQL store on every dialect.
package revisiontest

import (
	"context"
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/tandem-go/tandem/ident"
	"github.com/tandem-go/tandem/revision"
)

// NewStore returns a store on fresh, empty storage for one test. Calling
// the returned Opener again opens another instance on the same storage (as
// another node would).
type NewStore func(t *testing.T) func(t *testing.T) revision.Store

const epoch = "0123456789abcdef0123456789abcdef"

// Run runs the suite; subtests run in parallel, each on its own storage.
func Run(t *testing.T, newStore NewStore) {
	tests := []struct {
		name string
		fn   func(t *testing.T, open func(t *testing.T) revision.Store)
	}{
		{"LoadMissing", testLoadMissing},
		{"SaveLoad", testSaveLoad},
		{"ListDelete", testListDelete},
		{"Copy", testCopy},
		{"Evict", testEvict},
		{"Unevict", testUnevict},
		{"CopyRace", testCopyRace},
		{"BadInput", testBadInput},
		{"ConcurrentNodes", testConcurrentNodes},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			tc.fn(t, newStore(t))
		})
	}
}

func ctxT(t *testing.T) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	t.Cleanup(cancel)
	return ctx
}

func testLoadMissing(t *testing.T, open func(t *testing.T) revision.Store) {
	_, err := open(t).Load(ctxT(t), "nobody")
	require.ErrorIs(t, err, revision.ErrNotFound)
}

func testSaveLoad(t *testing.T, open func(t *testing.T) revision.Store) {
	ctx := ctxT(t)
	s, other := open(t), open(t)
	before := time.Now()
	require.NoError(t, s.Save(ctx, "a", 42, epoch))
	p, err := other.Load(ctx, "a")
	require.NoError(t, err)
	require.Equal(t, "a", p.NodeID)
	require.EqualValues(t, 42, p.Revision)
	require.Equal(t, epoch, p.Epoch)
	require.WithinDuration(t, before, p.Updated, 5*time.Minute)
	require.NoError(t, s.Save(ctx, "a", 7, "other-epoch"), "a position may go down (resync onto a new epoch)")
	p, err = other.Load(ctx, "a")
	require.NoError(t, err)
	require.EqualValues(t, 7, p.Revision)
	require.Equal(t, "other-epoch", p.Epoch)
	require.NoError(t, s.Save(ctx, "zero", 0, ""), "revision 0 and an empty epoch are valid")
	p, err = s.Load(ctx, "zero")
	require.NoError(t, err)
	require.Zero(t, p.Revision)
	require.Empty(t, p.Epoch)
}

func testListDelete(t *testing.T, open func(t *testing.T) revision.Store) {
	ctx := ctxT(t)
	s := open(t)
	list, err := s.List(ctx)
	require.NoError(t, err)
	require.Empty(t, list)
	for i, n := range []string{"c", "a", "B", "b"} {
		require.NoError(t, s.Save(ctx, n, int64(i), epoch))
	}
	list, err = s.List(ctx)
	require.NoError(t, err)
	var ids []string
	for _, p := range list {
		ids = append(ids, p.NodeID)
	}
	require.Equal(t, []string{"B", "a", "b", "c"}, ids, "ordered by node id, byte-wise; ids are case-sensitive")
	require.EqualValues(t, 2, list[0].Revision)
	require.NoError(t, s.Delete(ctx, "a"))
	require.NoError(t, s.Delete(ctx, "a"), "deleting a missing position is not an error")
	_, err = s.Load(ctx, "a")
	require.ErrorIs(t, err, revision.ErrNotFound)
	list, err = s.List(ctx)
	require.NoError(t, err)
	require.Len(t, list, 3)
}

// testEvict marks positions evicted as the janitor does: only a position
// that still holds the revision the janitor saw, once; Save clears the
// marker; Copy carries it, so a clone of an evicted node resyncs too.
func testEvict(t *testing.T, open func(t *testing.T) revision.Store) {
	ctx := ctxT(t)
	s, other := open(t), open(t)
	ev, ok := s.(revision.Evicter)
	require.True(t, ok, "every store implements revision.Evicter")
	require.NoError(t, s.Save(ctx, "a", 10, epoch))
	require.NoError(t, s.Save(ctx, "b", 20, epoch))

	done, err := ev.Evict(ctx, "a", 9)
	require.NoError(t, err)
	require.False(t, done, "the node saved another position since")
	done, err = ev.Evict(ctx, "missing", 1)
	require.NoError(t, err)
	require.False(t, done)
	done, err = ev.Evict(ctx, "a", 10)
	require.NoError(t, err)
	require.True(t, done)
	done, err = ev.Evict(ctx, "a", 10)
	require.NoError(t, err)
	require.False(t, done, "evicted already")

	p, err := other.Load(ctx, "a")
	require.NoError(t, err)
	require.True(t, p.Evicted)
	require.EqualValues(t, 10, p.Revision)
	require.Equal(t, epoch, p.Epoch)
	list, err := other.List(ctx)
	require.NoError(t, err)
	require.Len(t, list, 2)
	require.True(t, list[0].Evicted)
	require.False(t, list[1].Evicted)

	require.NoError(t, other.Copy(ctx, "a", "clone"))
	p, err = s.Load(ctx, "clone")
	require.NoError(t, err)
	require.True(t, p.Evicted, "a clone of an evicted node is evicted too")

	require.NoError(t, other.Save(ctx, "a", 3, epoch), "the node returned and resynced")
	p, err = s.Load(ctx, "a")
	require.NoError(t, err)
	require.False(t, p.Evicted, "Save clears the marker")
	require.EqualValues(t, 3, p.Revision)

	_, err = ev.Evict(ctx, "../x", 1)
	require.Error(t, err)
}

// testUnevict takes evictions back as the janitor does when an evicted
// node returns: only a position still marked at the revision given loses
// its marker, and keeps its revision and epoch; a position the node saved
// since, or one not marked, is left alone.
func testUnevict(t *testing.T, open func(t *testing.T) revision.Store) {
	ctx := ctxT(t)
	s, other := open(t), open(t)
	ev := s.(revision.Evicter)
	unevict := func(node string, rev int64) bool {
		t.Helper()
		done, err := ev.Unevict(ctx, node, rev)
		require.NoError(t, err)
		return done
	}
	load := func(node string) revision.Position {
		t.Helper()
		p, err := other.Load(ctx, node)
		require.NoError(t, err)
		return p
	}
	require.NoError(t, s.Save(ctx, "a", 10, epoch))
	require.False(t, unevict("a", 10), "not marked")
	require.False(t, unevict("missing", 10))
	_, err := other.Load(ctx, "missing")
	require.ErrorIs(t, err, revision.ErrNotFound, "Unevict creates nothing")

	done, err := ev.Evict(ctx, "a", 10)
	require.NoError(t, err)
	require.True(t, done)
	require.False(t, unevict("a", 9), "marked at another revision")
	require.True(t, load("a").Evicted)
	require.True(t, unevict("a", 10))
	p := load("a")
	require.False(t, p.Evicted)
	require.EqualValues(t, 10, p.Revision)
	require.Equal(t, epoch, p.Epoch)
	require.False(t, unevict("a", 10), "taken back already")
	done, err = ev.Evict(ctx, "a", 10)
	require.NoError(t, err)
	require.True(t, done, "a position taken back can be evicted again")

	// The node returns and saves before the eviction is taken back.
	require.NoError(t, other.Save(ctx, "a", 15, epoch))
	require.False(t, unevict("a", 10), "the node moved on")
	p = load("a")
	require.False(t, p.Evicted)
	require.EqualValues(t, 15, p.Revision, "the node's save stands")
	// It saves the very revision that was marked: the marker is gone
	// all the same, and nothing is taken back.
	done, err = ev.Evict(ctx, "a", 15)
	require.NoError(t, err)
	require.True(t, done)
	require.NoError(t, other.Save(ctx, "a", 15, "other-epoch"))
	require.False(t, unevict("a", 15), "not marked")
	p = load("a")
	require.False(t, p.Evicted)
	require.Equal(t, "other-epoch", p.Epoch)

	// Another node's marker is its own.
	require.NoError(t, s.Save(ctx, "b", 10, epoch))
	done, err = ev.Evict(ctx, "b", 10)
	require.NoError(t, err)
	require.True(t, done)
	require.False(t, unevict("c", 10))
	require.True(t, load("b").Evicted)

	_, err = ev.Unevict(ctx, "../x", 1)
	require.ErrorIs(t, err, ident.ErrInvalid)
}

func testCopy(t *testing.T, open func(t *testing.T) revision.Store) {
	ctx := ctxT(t)
	s := open(t)
	require.NoError(t, s.Save(ctx, "a", 99, epoch))
	require.NoError(t, s.Copy(ctx, "a", "clone"))
	p, err := s.Load(ctx, "clone")
	require.NoError(t, err)
	require.EqualValues(t, 99, p.Revision)
	require.Equal(t, epoch, p.Epoch)
	require.ErrorIs(t, s.Copy(ctx, "a", "clone"), revision.ErrExists)
	require.ErrorIs(t, s.Copy(ctx, "missing", "x"), revision.ErrNotFound)
	_, err = s.Load(ctx, "x")
	require.ErrorIs(t, err, revision.ErrNotFound, "a failed copy creates nothing")
	p, err = s.Load(ctx, "a")
	require.NoError(t, err)
	require.EqualValues(t, 99, p.Revision, "the source is unchanged")
}

func testCopyRace(t *testing.T, open func(t *testing.T) revision.Store) {
	ctx := ctxT(t)
	s := open(t)
	require.NoError(t, s.Save(ctx, "src", 5, epoch))
	const n = 8
	errs := make(chan error, n)
	var wg sync.WaitGroup
	for range n {
		wg.Add(1)
		go func() {
			defer wg.Done()
			errs <- open(t).Copy(ctx, "src", "dst")
		}()
	}
	wg.Wait()
	close(errs)
	ok := 0
	for err := range errs {
		if err == nil {
			ok++
			continue
		}
		require.ErrorIs(t, err, revision.ErrExists)
	}
	require.Equal(t, 1, ok, "exactly one concurrent copy to one target succeeds")
}

func testBadInput(t *testing.T, open func(t *testing.T) revision.Store) {
	ctx := ctxT(t)
	s := open(t)
	for _, id := range []string{"", "../etc", "a/b", "with space", "-x", string(make([]byte, ident.MaxNodeIDLen+1))} {
		require.ErrorIs(t, s.Save(ctx, id, 1, epoch), ident.ErrInvalid, "node id %q", id)
		_, err := s.Load(ctx, id)
		require.ErrorIs(t, err, ident.ErrInvalid)
		require.ErrorIs(t, s.Delete(ctx, id), ident.ErrInvalid)
		require.ErrorIs(t, s.Copy(ctx, "a", id), ident.ErrInvalid)
	}
	require.ErrorIs(t, s.Save(ctx, "a", -1, epoch), revision.ErrInvalidArgument)
	require.ErrorIs(t, s.Save(ctx, "a", 1, "bad epoch"), revision.ErrInvalidArgument)
	err := s.Save(ctx, "", 1, epoch)
	require.ErrorContains(t, err, "nodeID", "the error names the argument")
	list, err := s.List(ctx)
	require.NoError(t, err)
	require.Empty(t, list, "bad input stored nothing")
}

func testConcurrentNodes(t *testing.T, open func(t *testing.T) revision.Store) {
	ctx := ctxT(t)
	const nodes, saves = 8, 50
	var wg sync.WaitGroup
	for n := range nodes {
		s := open(t)
		wg.Add(1)
		go func() {
			defer wg.Done()
			for r := 1; r <= saves; r++ {
				if err := s.Save(ctx, fmt.Sprintf("n%d", n), int64(r), epoch); err != nil {
					t.Errorf("save: %v", err)
					return
				}
			}
		}()
	}
	wg.Wait()
	list, err := open(t).List(ctx)
	require.NoError(t, err)
	require.Len(t, list, nodes)
	for _, p := range list {
		require.EqualValues(t, saves, p.Revision, "node %s's last save wins", p.NodeID)
	}
}
