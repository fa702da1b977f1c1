package datastore_test

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"math/rand/v2"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/tandem-go/tandem/datastore"
	"github.com/tandem-go/tandem/internal/datastoretest"
	"github.com/tandem-go/tandem/lock"
)

func fileHarness(t *testing.T) datastoretest.Harness {
	dir := t.TempDir()
	return datastoretest.Harness{
		Open: func(t *testing.T) datastore.Store {
			s, err := datastore.OpenFile(context.Background(), datastore.FileConfig{Dir: dir})
			require.NoError(t, err)
			return s
		},
		Locks: func(t *testing.T) lock.Store {
			s, err := lock.OpenFile(context.Background(), lock.FileConfig{Dir: dir})
			require.NoError(t, err)
			return s
		},
		Corrupt: func(t *testing.T, id datastore.ID) {
			p := filepath.Join(dir, "blobs", string(id[:2]), string(id[2:4]), string(id[4:6]), string(id))
			f, err := os.OpenFile(p, os.O_RDWR, 0)
			require.NoError(t, err)
			defer f.Close()
			var b [1]byte
			_, err = f.ReadAt(b[:], 0)
			require.NoError(t, err)
			b[0] ^= 0x01
			_, err = f.WriteAt(b[:], 0)
			require.NoError(t, err)
		},
		Check: func(t *testing.T) {
			ents, err := os.ReadDir(filepath.Join(dir, "blobs", "tmp"))
			require.NoError(t, err)
			for _, e := range ents {
				require.False(t, strings.HasSuffix(e.Name(), ".tmp") || strings.HasSuffix(e.Name(), ".gc"), "left over: %s", e.Name())
			}
		},
		ChunkSize: 1 << 20, // the copy buffer
	}
}

func TestFileConformance(t *testing.T) {
	datastoretest.Run(t, fileHarness)
}

// TestFilePutRacesFolderRemoval puts blobs while a collector-like remover
// removes their folders, at random moments, whenever they are empty (what
// a collector does after deleting the last blob of a folder). A Put whose
// folder vanished between two of its Mkdirs, or before its rename, makes
// the folders again instead of failing. (The torture test once failed a
// Put with "mkdir …: no such file or directory".)
func TestFilePutRacesFolderRemoval(t *testing.T) {
	dir := t.TempDir()
	s, err := datastore.OpenFile(context.Background(), datastore.FileConfig{Dir: dir})
	require.NoError(t, err)
	ctx := context.Background()
	for i := range 500 {
		content := fmt.Appendf(nil, "blob %d", i)
		sum := sha256.Sum256(content)
		id := hex.EncodeToString(sum[:])
		top := filepath.Join(dir, "blobs", id[0:2])
		mid := filepath.Join(top, id[2:4])
		removed := make(chan struct{})
		go func() {
			defer close(removed)
			for range 3 { // three sweeps, each at a random moment of the Put
				time.Sleep(time.Duration(rand.IntN(150)) * time.Microsecond)
				_ = os.Remove(filepath.Join(mid, id[4:6]))
				_ = os.Remove(mid)
				_ = os.Remove(top)
			}
		}()
		in, err := s.Put(ctx, bytes.NewReader(content))
		<-removed
		require.NoError(t, err, "put %d", i)
		require.Equal(t, id, string(in.ID))
	}
}
