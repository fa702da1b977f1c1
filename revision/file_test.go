package revision_test

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/tandem-go/tandem/internal/revisiontest"
	"github.com/tandem-go/tandem/revision"
)

const testEpoch = "0123456789abcdef0123456789abcdef"

func TestFileConformance(t *testing.T) {
	t.Parallel()
	revisiontest.Run(t, func(t *testing.T) func(t *testing.T) revision.Store {
		dir := t.TempDir()
		return func(t *testing.T) revision.Store { return openFile(t, dir) }
	})
}

func openFile(t *testing.T, dir string) *revision.File {
	t.Helper()
	s, err := revision.OpenFile(context.Background(), revision.FileConfig{Dir: dir})
	require.NoError(t, err)
	return s
}

func TestOpenFileConfig(t *testing.T) {
	t.Parallel()
	_, err := revision.OpenFile(context.Background(), revision.FileConfig{})
	require.ErrorIs(t, err, revision.ErrInvalidArgument)
	require.ErrorContains(t, err, "Dir")
	cancelled, cancel := context.WithCancel(context.Background())
	cancel()
	_, err = revision.OpenFile(cancelled, revision.FileConfig{Dir: t.TempDir()})
	require.ErrorIs(t, err, context.Canceled)
}

func TestFileBasics(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	dir := t.TempDir()
	s := openFile(t, dir)

	_, err := s.Load(ctx, "a")
	require.ErrorIs(t, err, revision.ErrNotFound)
	require.NoError(t, s.Save(ctx, "a", 10, testEpoch))
	require.NoError(t, s.Save(ctx, "a.b", 11, testEpoch))
	require.NoError(t, s.Save(ctx, "a-b", 12, ""))
	p, err := s.Load(ctx, "a")
	require.NoError(t, err)
	require.Equal(t, int64(10), p.Revision)
	require.Equal(t, time.UTC, p.Updated.Location())

	b, err := os.ReadFile(filepath.Join(dir, "nodes", "a.rev"))
	require.NoError(t, err)
	require.True(t, strings.HasPrefix(string(b), "tandem-revision 1\nnode a\nrevision 10\nepoch "+testEpoch+"\n"), "%s", b)

	list, err := s.List(ctx)
	require.NoError(t, err)
	var ids []string
	for _, p := range list {
		ids = append(ids, p.NodeID)
	}
	require.Equal(t, []string{"a", "a-b", "a.b"}, ids, "by node id, not by file name")

	require.NoError(t, s.Copy(ctx, "a", "c"))
	require.ErrorIs(t, s.Copy(ctx, "a", "c"), revision.ErrExists)
	require.ErrorIs(t, s.Copy(ctx, "zz", "d"), revision.ErrNotFound)
	p, err = s.Load(ctx, "c")
	require.NoError(t, err)
	require.Equal(t, int64(10), p.Revision)
	require.Equal(t, "c", p.NodeID)

	require.NoError(t, s.Delete(ctx, "a"))
	require.NoError(t, s.Delete(ctx, "a"))
	_, err = s.Load(ctx, "a")
	require.ErrorIs(t, err, revision.ErrNotFound)
	require.NoError(t, s.Copy(ctx, "c", "a"), "a deleted position can be copied to again")

	ents, err := os.ReadDir(filepath.Join(dir, "nodes"))
	require.NoError(t, err)
	for _, e := range ents {
		require.True(t, strings.HasSuffix(e.Name(), ".rev"), "no temp file left: %s", e.Name())
	}
}

// Temp files (a writer at work, or one that crashed) and stray files are
// never positions; OpenFile removes temp files older than an hour.
func TestFileTempFiles(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	dir := t.TempDir()
	s := openFile(t, dir)
	require.NoError(t, s.Save(ctx, "a", 1, testEpoch))
	nodes := filepath.Join(dir, "nodes")
	good, err := os.ReadFile(filepath.Join(nodes, "a.rev"))
	require.NoError(t, err)
	fresh := filepath.Join(nodes, ".b.rev.0011223344556677.tmp")
	stale := filepath.Join(nodes, ".c.rev.8899aabbccddeeff.tmp")
	for _, p := range []string{fresh, stale} {
		require.NoError(t, os.WriteFile(p, good, 0o666))
	}
	old := time.Now().Add(-2 * time.Hour)
	require.NoError(t, os.Chtimes(stale, old, old))
	require.NoError(t, os.WriteFile(filepath.Join(nodes, "README"), []byte("hi"), 0o666))
	require.NoError(t, os.Mkdir(filepath.Join(nodes, "dir.rev"), 0o777))

	list, err := s.List(ctx)
	require.NoError(t, err)
	require.Len(t, list, 1)
	require.Equal(t, "a", list[0].NodeID)

	openFile(t, dir)
	_, err = os.Stat(stale)
	require.ErrorIs(t, err, os.ErrNotExist, "stale temp file removed")
	_, err = os.Stat(fresh)
	require.NoError(t, err, "young temp file kept: its writer may be at work")
}

func TestFileCorrupt(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	dir := t.TempDir()
	s := openFile(t, dir)
	require.NoError(t, s.Save(ctx, "a", 123, testEpoch))
	path := filepath.Join(dir, "nodes", "a.rev")
	good, err := os.ReadFile(path)
	require.NoError(t, err)
	for name, bad := range map[string]string{
		"empty":     "",
		"truncated": string(good[:len(good)-4]),
		"edited":    strings.Replace(string(good), "revision 123", "revision 124", 1),
		"renamed":   "", // a's file moved to b.rev
	} {
		target := path
		if name == "renamed" {
			bad, target = string(good), filepath.Join(dir, "nodes", "b.rev")
		}
		require.NoError(t, os.WriteFile(target, []byte(bad), 0o666))
		node := strings.TrimSuffix(filepath.Base(target), ".rev")
		_, err := s.Load(ctx, node)
		require.ErrorIs(t, err, revision.ErrCorrupt, name)
		_, err = s.List(ctx)
		require.ErrorIs(t, err, revision.ErrCorrupt, name)
		require.NoError(t, os.Remove(target))
	}
}

func TestFileCopyRace(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	dir := t.TempDir()
	require.NoError(t, openFile(t, dir).Save(ctx, "src", 5, testEpoch))
	for round := range 20 {
		target := "dst" + string(rune('a'+round))
		var wg sync.WaitGroup
		var mu sync.Mutex
		ok, exists := 0, 0
		for range 8 {
			s := openFile(t, dir)
			wg.Go(func() {
				err := s.Copy(ctx, "src", target)
				mu.Lock()
				defer mu.Unlock()
				switch {
				case err == nil:
					ok++
				case errors.Is(err, revision.ErrExists):
					exists++
				default:
					t.Error(err)
				}
			})
		}
		wg.Wait()
		require.Equal(t, 1, ok)
		require.Equal(t, 7, exists)
	}
}

// endsAfter is a context whose Err is nil for its first n calls and
// context.Canceled from then on: a context that ends while a method runs,
// between its first check and the next.
type endsAfter struct {
	context.Context
	mu sync.Mutex
	n  int
}

func (c *endsAfter) Err() error {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.n > 0 {
		c.n--
		return nil
	}
	return context.Canceled
}

// TestFileContextDone: a File method whose context is done fails with the
// context's error and writes nothing; Evict and Copy whose context ends
// after they read (before they write) write nothing either.
func TestFileContextDone(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	dir := t.TempDir()
	s := openFile(t, dir)
	require.NoError(t, s.Save(ctx, "a", 10, testEpoch))
	snapshot := func() map[string]string {
		ents, err := os.ReadDir(filepath.Join(dir, "nodes"))
		require.NoError(t, err)
		files := map[string]string{}
		for _, e := range ents {
			b, err := os.ReadFile(filepath.Join(dir, "nodes", e.Name()))
			require.NoError(t, err)
			files[e.Name()] = string(b)
		}
		return files
	}
	before := snapshot()

	done, cancel := context.WithCancel(ctx)
	cancel()
	_, err := s.Load(done, "a")
	require.ErrorIs(t, err, context.Canceled)
	_, err = s.List(done)
	require.ErrorIs(t, err, context.Canceled)
	require.ErrorIs(t, s.Save(done, "a", 11, testEpoch), context.Canceled)
	require.ErrorIs(t, s.Save(done, "b", 1, testEpoch), context.Canceled)
	require.ErrorIs(t, s.Delete(done, "a"), context.Canceled)
	require.ErrorIs(t, s.Copy(done, "a", "c"), context.Canceled)
	_, err = s.Evict(done, "a", 10)
	require.ErrorIs(t, err, context.Canceled)
	require.Equal(t, before, snapshot(), "a done context writes nothing")

	// Ends after the entry check, during the read.
	_, err = s.Evict(&endsAfter{Context: ctx, n: 1}, "a", 10)
	require.ErrorIs(t, err, context.Canceled)
	require.ErrorIs(t, s.Copy(&endsAfter{Context: ctx, n: 1}, "a", "c"), context.Canceled)
	require.Equal(t, before, snapshot(), "a context that ended during the read writes nothing")

	p, err := s.Load(ctx, "a")
	require.NoError(t, err)
	require.False(t, p.Evicted)
	require.EqualValues(t, 10, p.Revision)

	// Unevict, on a marked position.
	evicted, err := s.Evict(ctx, "a", 10)
	require.NoError(t, err)
	require.True(t, evicted)
	before = snapshot()
	_, err = s.Unevict(done, "a", 10)
	require.ErrorIs(t, err, context.Canceled)
	_, err = s.Unevict(&endsAfter{Context: ctx, n: 1}, "a", 10)
	require.ErrorIs(t, err, context.Canceled)
	require.Equal(t, before, snapshot(), "Unevict writes nothing, not even a temp file")
}

// TestFileUnevictKeepsSave: a Save of the node's that lands while Unevict
// or Evict writes its new file is not overwritten: it finds the file it
// read replaced and declines, and leaves no temp file behind.
func TestFileUnevictKeepsSave(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	dir := t.TempDir()
	s, node := openFile(t, dir), openFile(t, dir)
	for _, saved := range []int64{8, 2} { // a newer position, and the very one marked
		s.SetBeforeCheck(nil)
		require.NoError(t, s.Save(ctx, "a", 2, testEpoch))
		evicted, err := s.Evict(ctx, "a", 2)
		require.NoError(t, err)
		require.True(t, evicted)
		s.SetBeforeCheck(func() { require.NoError(t, node.Save(ctx, "a", saved, testEpoch)) })
		done, err := s.Unevict(ctx, "a", 2)
		require.NoError(t, err)
		require.False(t, done, "saved %d meanwhile", saved)
		p, err := s.Load(ctx, "a")
		require.NoError(t, err)
		require.False(t, p.Evicted)
		require.Equal(t, saved, p.Revision, "the node's save stands")
	}

	// Deleted meanwhile: nothing comes back.
	s.SetBeforeCheck(nil)
	require.NoError(t, s.Save(ctx, "b", 2, testEpoch))
	evicted, err := s.Evict(ctx, "b", 2)
	require.NoError(t, err)
	require.True(t, evicted)
	s.SetBeforeCheck(func() { require.NoError(t, node.Delete(ctx, "b")) })
	done, err := s.Unevict(ctx, "b", 2)
	require.NoError(t, err)
	require.False(t, done)
	_, err = s.Load(ctx, "b")
	require.ErrorIs(t, err, revision.ErrNotFound)

	// Evict keeps a Save that lands while it writes just the same.
	s.SetBeforeCheck(nil)
	require.NoError(t, s.Save(ctx, "a", 2, testEpoch))
	s.SetBeforeCheck(func() { require.NoError(t, node.Save(ctx, "a", 9, testEpoch)) })
	evicted, err = s.Evict(ctx, "a", 2)
	require.NoError(t, err)
	require.False(t, evicted, "saved 9 meanwhile")
	p, err := s.Load(ctx, "a")
	require.NoError(t, err)
	require.False(t, p.Evicted)
	require.Equal(t, int64(9), p.Revision, "the node's save stands")

	s.SetBeforeCheck(nil)
	ents, err := os.ReadDir(filepath.Join(dir, "nodes"))
	require.NoError(t, err)
	require.Len(t, ents, 1, "only a.rev: no temp file left")
}
