package datastore

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"runtime"
	"testing"

	"github.com/stretchr/testify/require"
)

// TestTouchLosesTheRaceToASweep: a collector's sweep renames a blob aside
// right after a Touch set its time (the window between resolving the name
// and setting the time, which on NFS lasts a round trip). The Touch must
// not report success for a blob the sweep may remove: it reports
// ErrNotFound, and a Put of the same content stores a copy of its own
// instead of deduplicating against the one moved aside. Not parallel:
// it sets the package's afterTouch hook.
func TestTouchLosesTheRaceToASweep(t *testing.T) {
	ctx := context.Background()
	s, err := OpenFile(ctx, FileConfig{Dir: t.TempDir()})
	require.NoError(t, err)
	content := []byte("moved aside by a sweep")
	in, err := s.Put(ctx, bytes.NewReader(content))
	require.NoError(t, err)
	path := s.path(in.ID)
	aside := filepath.Join(s.tmp, "aside")
	afterTouch = func(p string) {
		if p == path {
			require.NoError(t, os.Rename(path, aside)) // the sweep's rename
		}
	}
	defer func() { afterTouch = nil }()

	require.ErrorIs(t, s.Touch(ctx, in.ID), ErrNotFound)

	// Put back, then moved aside again while a Put of the same content
	// touches it to deduplicate.
	require.NoError(t, os.Rename(aside, path))
	got, err := s.Put(ctx, bytes.NewReader(content))
	require.NoError(t, err, "the Put lands its own copy")
	afterTouch = nil
	r, err := s.Get(ctx, got.ID)
	require.NoError(t, err)
	defer r.Close()
	b, err := io.ReadAll(r)
	require.NoError(t, err)
	require.Equal(t, content, b)
}

// TestPutMakesFoldersOnce: a Put makes the blob's three folders once (on
// NFS each Mkdir is a round trip, also for a folder that exists), not
// again right before its rename; a Put into folders that exist, and a
// Put whose folders a collector removed before the rename, both land.
// Not parallel: it sets the package's mkdir hook.
func TestPutMakesFoldersOnce(t *testing.T) {
	ctx := context.Background()
	s, err := OpenFile(ctx, FileConfig{Dir: t.TempDir()})
	require.NoError(t, err)
	var made []string
	mkdir = func(name string, perm os.FileMode) error {
		made = append(made, name)
		return os.Mkdir(name, perm)
	}
	defer func() { mkdir = os.Mkdir }()
	for i, content := range []string{"first", "second", "third"} {
		made = nil
		in, err := s.Put(ctx, bytes.NewReader([]byte(content)))
		require.NoError(t, err)
		require.Len(t, made, 3, "Put %d: %v", i, made)
		// A collector's Delete empties and removes the folders: the
		// next Put makes them again.
		if i == 1 {
			require.NoError(t, s.Delete(ctx, in.ID))
		}
	}

	// The folders removed between the Put's Mkdirs and its rename: the
	// rename fails, and moveIn makes them again.
	in, err := s.Put(ctx, bytes.NewReader([]byte("fourth")))
	require.NoError(t, err)
	require.NoError(t, s.Delete(ctx, in.ID))
	tmp := filepath.Join(s.tmp, "moved")
	require.NoError(t, os.WriteFile(tmp, []byte("fourth"), 0o666))
	made = nil
	require.NoError(t, s.moveIn(in.ID, tmp))
	require.Len(t, made, 3)
	got, err := s.Stat(ctx, in.ID)
	require.NoError(t, err)
	require.EqualValues(t, 6, got.Length)
}

// TestPutSmallAllocatesLittle: a small Put takes one copy buffer, reused
// from earlier Puts, rather than allocating (and zeroing) all four, 1 MiB,
// afresh every time. Not parallel: it reads the process's allocations.
func TestPutSmallAllocatesLittle(t *testing.T) {
	ctx := context.Background()
	s, err := OpenFile(ctx, FileConfig{Dir: t.TempDir()})
	require.NoError(t, err)
	put := func(i int) {
		_, err := s.Put(ctx, bytes.NewReader([]byte(fmt.Sprintf("small blob %d", i))))
		require.NoError(t, err)
	}
	put(-1)
	const n = 20
	var before, after runtime.MemStats
	runtime.ReadMemStats(&before)
	for i := range n {
		put(i)
	}
	runtime.ReadMemStats(&after)
	perPut := (after.TotalAlloc - before.TotalAlloc) / n
	t.Logf("allocated per small Put: %d bytes", perPut)
	require.Less(t, perPut, uint64(pipeBufferSize), "a small Put allocated copy buffers")
}
