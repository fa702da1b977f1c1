package datastore

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"runtime"
	"sync"
	"testing"

	"github.com/stretchr/testify/require"
	"github.com/tandem-go/tandem/internal/atomicfile"
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

// TestPutSyncsFoldersItFinds: a Put whose blob folders are there already
// fsyncs their parents too, as it does for folders it makes: another
// node's Put (or a failed one) may have just made them, not yet durably,
// and the blob this Put acknowledges would go with them in a crash. Not
// parallel: it sets the package's syncFolder hook.
func TestPutSyncsFoldersItFinds(t *testing.T) {
	ctx := context.Background()
	s, err := OpenFile(ctx, FileConfig{Dir: t.TempDir()})
	require.NoError(t, err)
	var mu sync.Mutex
	var synced []string
	syncFolder = func(dir string) error {
		mu.Lock()
		synced = append(synced, dir)
		mu.Unlock()
		return atomicfile.SyncDir(dir)
	}
	defer func() { syncFolder = atomicfile.SyncDir }()

	content := []byte("made by somebody else")
	sum := sha256.Sum256(content)
	id := ID(hex.EncodeToString(sum[:]))
	// Made by another node that has not fsynced them yet.
	require.NoError(t, os.MkdirAll(filepath.Dir(s.path(id)), 0o755))
	in, err := s.Put(ctx, bytes.NewReader(content))
	require.NoError(t, err)
	require.Equal(t, id, in.ID)
	want := []string{s.blobs, filepath.Join(s.blobs, string(id[0:2])), filepath.Join(s.blobs, string(id[0:2]), string(id[2:4]))}
	require.ElementsMatch(t, want, synced, "the parent of each folder of the path")
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
