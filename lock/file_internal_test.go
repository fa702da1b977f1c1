package lock

import (
	"context"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
)

// TestFileListStatsOnlyNewWrites: List reads a lease file's mtime only
// for a write of the lease it has not dated yet, not on every call:
// Members and Barrier list every lease, Barrier every few milliseconds,
// and on NFS each stat is a round trip. Not parallel: it sets the
// package's statFile hook.
func TestFileListStatsOnlyNewWrites(t *testing.T) {
	ctx := context.Background()
	dir := t.TempDir()
	holder, err := OpenFile(ctx, FileConfig{Dir: dir})
	require.NoError(t, err)
	observer, err := OpenFile(ctx, FileConfig{Dir: dir})
	require.NoError(t, err)
	owner := Owner{NodeID: "n1", Instance: "i1"}
	tokens := map[string]int64{}
	for _, name := range []string{"a", "b", "c"} {
		token, ok, err := holder.TryAcquire(ctx, name, owner, time.Minute)
		require.NoError(t, err)
		require.True(t, ok)
		tokens[name] = token
	}
	var statted []string
	statFile = func(name string) (os.FileInfo, error) {
		statted = append(statted, filepath.Base(name))
		return os.Stat(name)
	}
	defer func() { statFile = os.Stat }()

	list := func() {
		t.Helper()
		statted = nil
		infos, err := observer.List(ctx)
		require.NoError(t, err)
		require.Len(t, infos, 3)
		for _, in := range infos {
			require.True(t, in.Held, in.Name)
		}
	}
	list()
	require.Equal(t, []string{"a", "b", "c"}, statted, "first sightings are dated")
	list()
	require.Empty(t, statted, "nothing new to date")
	ok, err := holder.Renew(ctx, "b", owner, tokens["b"], time.Minute)
	require.NoError(t, err)
	require.True(t, ok)
	list()
	require.Equal(t, []string{"b"}, statted, "the renewed lease is dated again")
}
