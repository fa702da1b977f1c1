package datastore

import (
	"bytes"
	"context"
	"io"
	"os"
	"path/filepath"
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
