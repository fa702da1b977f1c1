package main

import (
	"bytes"
	"context"
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/tandem-go/tandem/datastore"
)

func (tg *target) blobStore(t *testing.T) datastore.Store {
	t.Helper()
	if tg.db != nil {
		s, err := datastore.OpenSQL(context.Background(), tg.db.DB, tg.db.Dialect, datastore.SQLConfig{Prefix: tg.db.Prefix})
		require.NoError(t, err)
		return s
	}
	s, err := datastore.OpenFile(context.Background(), datastore.FileConfig{Dir: tg.dir})
	require.NoError(t, err)
	return s
}

// corrupt changes a stored blob's bytes, keeping its length.
func (tg *target) corrupt(t *testing.T, id datastore.ID, length int) {
	t.Helper()
	bad := bytes.Repeat([]byte{'!'}, length)
	if tg.db == nil {
		s := string(id)
		p := filepath.Join(tg.dir, "blobs", s[0:2], s[2:4], s[4:6], s)
		require.NoError(t, os.Chmod(p, 0o644))
		require.NoError(t, os.WriteFile(p, bad, 0o644))
		return
	}
	q := `UPDATE ` + tg.db.Prefix + `blob_chunks SET data = ? WHERE upload_id = (SELECT upload_id FROM ` + tg.db.Prefix + `blobs WHERE id = ?)`
	if tg.name == "postgres" {
		q = strings.Replace(strings.Replace(q, "?", "$1", 1), "?", "$2", 1)
	}
	res, err := tg.db.DB.ExecContext(context.Background(), q, bad, string(id))
	require.NoError(t, err)
	n, err := res.RowsAffected()
	require.NoError(t, err)
	require.Equal(t, int64(1), n)
}

func TestDatastore(t *testing.T) {
	t.Parallel()
	eachTarget(t, func(t *testing.T, tg *target) {
		ctx := context.Background()
		tg.must(t, "schema", "migrate")
		ds := tg.blobStore(t)
		var ids []datastore.ID
		for _, c := range []byte("abc") {
			in, err := ds.Put(ctx, bytes.NewReader(bytes.Repeat([]byte{c}, 300)))
			require.NoError(t, err)
			ids = append(ids, in.ID)
		}

		var stat struct{ Blobs, Bytes int64 }
		require.NoError(t, json.Unmarshal([]byte(tg.must(t, "datastore", "stat", "--json")), &stat))
		require.Equal(t, int64(3), stat.Blobs)
		require.Equal(t, int64(900), stat.Bytes)
		require.Contains(t, tg.must(t, "datastore", "stat"), "3 blobs, 900 bytes")
		require.Contains(t, tg.must(t, "datastore", "verify"), "3 blobs checked (900 bytes), 0 corrupt")

		tg.corrupt(t, ids[2], 300)
		r := tg.fails(t, exitFailed, "datastore", "verify")
		require.Contains(t, r.stdout, "corrupt "+string(ids[2]))
		require.Contains(t, r.stderr, "1 of 3 blobs are corrupt")
		r = tg.fails(t, exitFailed, "datastore", "verify", "--json")
		var ver struct {
			Checked int64
			Corrupt []struct{ ID string }
		}
		require.NoError(t, json.Unmarshal([]byte(r.stdout), &ver))
		require.Equal(t, int64(3), ver.Checked)
		require.Len(t, ver.Corrupt, 1)
		require.Equal(t, string(ids[2]), ver.Corrupt[0].ID)

		// gc needs the references, unless it is a dry run.
		r = tg.fails(t, exitRefused, "datastore", "gc")
		require.Contains(t, r.stderr, "--refs")
		time.Sleep(50 * time.Millisecond) // past a 1ms grace period
		var gc struct {
			DryRun  bool  `json:"dry_run"`
			Deleted int64 `json:"deleted"`
			Marked  int64 `json:"marked"`
		}
		require.NoError(t, json.Unmarshal([]byte(tg.must(t, "datastore", "gc", "--dry-run", "--grace", "1ms", "--json")), &gc))
		require.True(t, gc.DryRun)
		require.Equal(t, int64(3), gc.Deleted)
		var listed struct{ Garbage []struct{ ID string } }
		require.NoError(t, json.Unmarshal([]byte(tg.must(t, "datastore", "gc", "--dry-run", "--grace", "1ms", "--json", "-v")), &listed))
		require.Len(t, listed.Garbage, 3, "-v with --json lists the garbage")
		require.Contains(t, tg.must(t, "datastore", "gc", "--dry-run", "--grace", "1ms", "-v"), "garbage "+string(ids[0]))
		require.Contains(t, tg.must(t, "datastore", "gc", "--dry-run"), "would delete 0 blobs") // the default grace: a day

		refs := filepath.Join(t.TempDir(), "refs")
		require.NoError(t, os.WriteFile(refs, []byte("# referenced\n"+string(ids[0])+"\n\n"+string(ids[1])+"\n"), 0o644))
		r = tg.fails(t, exitRefused, "datastore", "gc", "--refs", refs, "--grace", "1ms")
		require.Contains(t, r.stderr, "--allow-short-grace")
		require.Contains(t, tg.must(t, "datastore", "stat"), "3 blobs")
		require.NoError(t, json.Unmarshal([]byte(tg.must(t, "datastore", "gc", "--refs", refs, "--grace", "1ms", "--allow-short-grace", "--json")), &gc))
		require.False(t, gc.DryRun)
		require.Equal(t, int64(2), gc.Marked)
		require.Equal(t, int64(1), gc.Deleted)
		require.Contains(t, tg.must(t, "datastore", "stat"), "2 blobs, 600 bytes")
		require.Contains(t, tg.must(t, "datastore", "verify"), "0 corrupt")
		_, err := ds.Stat(ctx, ids[2])
		require.ErrorIs(t, err, datastore.ErrNotFound)
		st := tg.statusJSON(t)
		require.True(t, st.GC.Known)
		require.NotNil(t, st.GC.LastRun)

		tg.fails(t, exitNotFound, "datastore", "gc", "--refs", filepath.Join(t.TempDir(), "missing"))
		badRefs := filepath.Join(t.TempDir(), "bad")
		require.NoError(t, os.WriteFile(badRefs, []byte("../../etc/passwd\n"), 0o644))
		r = tg.fails(t, exitUsage, "datastore", "gc", "--refs", badRefs)
		require.Contains(t, r.stderr, "line 1")
	})
}

// TestDatastoreGCEmptyRefs checks that gc refuses a reference list that
// names no blob, as a failing producer leaves it in "app list-refs |
// tandem datastore gc --refs -", instead of collecting every blob older
// than the grace period; --allow-empty-refs says that nothing is
// referenced indeed. It is not parallel: it replaces stdin, which every
// run reads.
func TestDatastoreGCEmptyRefs(t *testing.T) {
	dir := t.TempDir()
	tg := &target{name: "folder", global: []string{"--dir", dir}, dir: dir}
	tg.must(t, "schema", "migrate")
	ds := tg.blobStore(t)
	for _, c := range []byte("ab") {
		_, err := ds.Put(context.Background(), bytes.NewReader(bytes.Repeat([]byte{c}, 300)))
		require.NoError(t, err)
	}
	time.Sleep(20 * time.Millisecond) // past a 1ms grace period

	gc := func(refs string, args ...string) result {
		old := stdin
		stdin = strings.NewReader(refs)
		defer func() { stdin = old }()
		return tg.run(t, append([]string{"datastore", "gc", "--refs", "-", "--grace", "1ms", "--allow-short-grace"}, args...)...)
	}
	for _, refs := range []string{"", "# only a comment\n\n"} {
		r := gc(refs)
		require.Equal(t, exitRefused, r.code, "an empty reference list: %s", r.stdout)
		require.Contains(t, r.stderr, "lists no blob id")
		require.Contains(t, tg.must(t, "datastore", "stat"), "2 blobs", "nothing is deleted")
	}
	require.Contains(t, gc("", "--dry-run").stdout, "would delete 2 blobs")
	r := gc("", "--allow-empty-refs")
	require.Equal(t, 0, r.code, r.stderr)
	require.Contains(t, r.stdout, "deleted 2 blobs")
	require.Contains(t, tg.must(t, "datastore", "stat"), "0 blobs")
}
