package datastore_test

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"io"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/tandem-go/tandem/datastore"
	"github.com/tandem-go/tandem/lock"
)

func TestMinRecordLength(t *testing.T) {
	require.Equal(t, 100, datastore.MinRecordLength, "Jackrabbit's minRecordLength")
	require.True(t, datastore.Inline(0))
	require.True(t, datastore.Inline(99))
	require.False(t, datastore.Inline(100))
	require.False(t, datastore.Inline(1<<30))
}

func TestCollectorConfig(t *testing.T) {
	s, err := datastore.OpenFile(context.Background(), datastore.FileConfig{Dir: t.TempDir()})
	require.NoError(t, err)
	for _, c := range []struct {
		cfg   datastore.GCConfig
		field string
	}{
		{datastore.GCConfig{GracePeriod: -time.Second}, "GracePeriod"},
		{datastore.GCConfig{BatchSize: -1}, "BatchSize"},
		{datastore.GCConfig{BatchSize: datastore.MaxBatchSize + 1}, "BatchSize"},
	} {
		_, err := datastore.NewCollector(s, c.cfg)
		require.ErrorIs(t, err, datastore.ErrInvalidArgument)
		require.ErrorContains(t, err, c.field)
	}
	_, err = datastore.NewCollector(otherStore{s}, datastore.GCConfig{})
	require.ErrorIs(t, err, datastore.ErrInvalidArgument, "a store of another package cannot be collected")
	_, err = datastore.OpenFile(context.Background(), datastore.FileConfig{})
	require.ErrorIs(t, err, datastore.ErrInvalidArgument)
	require.ErrorContains(t, err, "Dir")
	cancelled, cancel := context.WithCancel(context.Background())
	cancel()
	_, err = datastore.OpenFile(cancelled, datastore.FileConfig{Dir: t.TempDir()})
	require.ErrorIs(t, err, context.Canceled)
	require.Equal(t, 24*time.Hour, datastore.DefaultGracePeriod, "Oak's default")
}

// otherStore hides File's collector side.
type otherStore struct{ s *datastore.File }

func (o otherStore) Put(ctx context.Context, r io.Reader) (datastore.Info, error) {
	return o.s.Put(ctx, r)
}
func (o otherStore) Get(ctx context.Context, id datastore.ID) (io.ReadCloser, error) {
	return o.s.Get(ctx, id)
}
func (o otherStore) Stat(ctx context.Context, id datastore.ID) (datastore.Info, error) {
	return o.s.Stat(ctx, id)
}
func (o otherStore) Exists(ctx context.Context, id datastore.ID) (bool, error) {
	return o.s.Exists(ctx, id)
}
func (o otherStore) Touch(ctx context.Context, id datastore.ID) error  { return o.s.Touch(ctx, id) }
func (o otherStore) Delete(ctx context.Context, id datastore.ID) error { return o.s.Delete(ctx, id) }
func (o otherStore) Walk(ctx context.Context, fn func(datastore.Info) error) error {
	return o.s.Walk(ctx, fn)
}

// TestFileSkipVerify: without verification a flipped byte goes through,
// a wrong length does not.
func TestFileSkipVerify(t *testing.T) {
	ctx := context.Background()
	dir := t.TempDir()
	s, err := datastore.OpenFile(ctx, datastore.FileConfig{Dir: dir, SkipVerify: true})
	require.NoError(t, err)
	in, err := s.Put(ctx, strings.NewReader("hello, world"))
	require.NoError(t, err)
	p := filepath.Join(dir, "blobs", string(in.ID[:2]), string(in.ID[2:4]), string(in.ID[4:6]), string(in.ID))
	require.NoError(t, os.WriteFile(p, []byte("jello, world"), 0o644))
	r, err := s.Get(ctx, in.ID)
	require.NoError(t, err)
	b, err := io.ReadAll(r)
	require.NoError(t, err, "not verified")
	require.Equal(t, "jello, world", string(b))
	r.Close()
	verified, err := datastore.OpenFile(ctx, datastore.FileConfig{Dir: dir})
	require.NoError(t, err)
	r, err = verified.Get(ctx, in.ID)
	require.NoError(t, err)
	_, err = io.ReadAll(r)
	require.ErrorIs(t, err, datastore.ErrCorrupt)
	require.ErrorContains(t, err, "hash to")
	r.Close()
	// A put of the right content repairs a stored copy of another length.
	require.NoError(t, os.WriteFile(p, []byte("hello"), 0o644))
	_, err = verified.Put(ctx, strings.NewReader("hello, world"))
	require.NoError(t, err)
	r, err = verified.Get(ctx, in.ID)
	require.NoError(t, err)
	b, err = io.ReadAll(r)
	require.NoError(t, err)
	require.Equal(t, "hello, world", string(b))
	r.Close()
}

// TestFileCrashLeftovers: what crashed writers and a crashed collector
// leave in the tmp folder: an old temp file is removed, a young one kept,
// and a blob a sweep had moved aside is put back.
func TestFileCrashLeftovers(t *testing.T) {
	ctx := context.Background()
	dir := t.TempDir()
	s, err := datastore.OpenFile(ctx, datastore.FileConfig{Dir: dir})
	require.NoError(t, err)
	tmp := filepath.Join(dir, "blobs", "tmp")
	old := time.Now().Add(-time.Hour)
	require.NoError(t, os.WriteFile(filepath.Join(tmp, "put.1.tmp"), []byte("partial"), 0o644))
	require.NoError(t, os.Chtimes(filepath.Join(tmp, "put.1.tmp"), old, old))
	require.NoError(t, os.WriteFile(filepath.Join(tmp, "put.2.tmp"), []byte("in progress"), 0o644))
	sum := sha256.Sum256([]byte("moved aside"))
	id := hex.EncodeToString(sum[:])
	trash := filepath.Join(tmp, id+".0011223344556677.gc")
	require.NoError(t, os.WriteFile(trash, []byte("moved aside"), 0o644))
	require.NoError(t, os.Chtimes(trash, old, old))

	ls, err := lock.OpenFile(ctx, lock.FileConfig{Dir: dir})
	require.NoError(t, err)
	c, err := lock.New(lock.Config{NodeID: "gc", Store: ls})
	require.NoError(t, err)
	l, err := c.TryAcquire(ctx, datastore.DefaultLeaseName)
	require.NoError(t, err)
	defer l.Release(ctx)
	gc, err := datastore.NewCollector(s, datastore.GCConfig{GracePeriod: time.Minute})
	require.NoError(t, err)
	keep := datastore.ReferencesFunc(func(ctx context.Context, yield func(datastore.ID) error) error { return nil })
	run, err := gc.Collect(ctx, l, keep)
	require.NoError(t, err)
	require.EqualValues(t, 1, run.Uploads, "the old temp file")
	require.NoFileExists(t, filepath.Join(tmp, "put.1.tmp"))
	require.FileExists(t, filepath.Join(tmp, "put.2.tmp"), "a young one may be an upload at work")
	require.NoFileExists(t, trash)
	st, err := s.Stat(ctx, datastore.ID(id))
	require.NoError(t, err, "the blob a crashed sweep moved aside is back")
	require.WithinDuration(t, time.Now(), st.LastUsed, time.Minute, "and touched: the next collection decides")
}
