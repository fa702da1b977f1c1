package datastore_test

import (
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"

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
