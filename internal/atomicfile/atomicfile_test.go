package atomicfile

import (
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
)

func TestWriteFile(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	path := filepath.Join(dir, "head")
	require.NoError(t, WriteFile(path, []byte("one"), 0o666))
	require.NoError(t, WriteFile(path, []byte("two"), 0o666))
	b, err := os.ReadFile(path)
	require.NoError(t, err)
	require.Equal(t, "two", string(b))
	ents, err := os.ReadDir(dir)
	require.NoError(t, err)
	require.Len(t, ents, 1, "no temp file left")

	err = WriteFile(filepath.Join(dir, "missing", "x"), []byte("x"), 0o666)
	require.Error(t, err)
}

func TestRemoveStale(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	f, err := CreateTemp(filepath.Join(dir, "a.rev"), 0o666)
	require.NoError(t, err)
	require.NoError(t, f.Close())
	name := filepath.Base(f.Name())
	require.True(t, IsTemp(name), name)
	require.False(t, IsTemp("a.rev"))
	require.NoError(t, os.WriteFile(filepath.Join(dir, "keep.tmp"), nil, 0o666))

	n, err := RemoveStale(dir, time.Hour)
	require.NoError(t, err)
	require.Zero(t, n, "a young temp file may belong to a writer at work")
	old := time.Now().Add(-2 * time.Hour)
	require.NoError(t, os.Chtimes(f.Name(), old, old))
	require.NoError(t, os.Chtimes(filepath.Join(dir, "keep.tmp"), old, old))
	n, err = RemoveStale(dir, time.Hour)
	require.NoError(t, err)
	require.Equal(t, 1, n)
	_, err = os.Stat(filepath.Join(dir, "keep.tmp"))
	require.NoError(t, err, "only this package's temp names are removed")
}
