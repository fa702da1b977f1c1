package datastore_test

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"io"
	"strings"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/tandem-go/tandem/datastore"
	"github.com/tandem-go/tandem/dialect"
	"github.com/tandem-go/tandem/internal/datastoretest"
	"github.com/tandem-go/tandem/internal/dbtest"
	"github.com/tandem-go/tandem/internal/sqldialect"
	"github.com/tandem-go/tandem/lock"
)

// testChunkSize keeps the suite's multi-chunk blobs small.
const testChunkSize = 4096

// placeholder is the n-th placeholder of the dialect, for the tests' own
// statements.
func placeholder(d dialect.Dialect, n int) string {
	p := map[string]string{"postgres": "$", "mysql": "?", "sqlserver": "@p", "oracle": ":"}[d.Name()]
	if p == "?" {
		return p
	}
	return p + string(rune('0'+n))
}

func openSQL(t testing.TB, db *dbtest.DB, cfg datastore.SQLConfig) *datastore.SQL {
	t.Helper()
	cfg.Prefix = db.Prefix
	s, err := datastore.OpenSQL(context.Background(), db.NewPool(t), db.Dialect, cfg)
	require.NoError(t, err)
	return s
}

func sqlHarness(b dbtest.Backend) datastoretest.NewHarness {
	return func(t *testing.T) datastoretest.Harness {
		db := dbtest.Open(t, b)
		tb, err := sqldialect.NewTables("Prefix", db.Prefix)
		require.NoError(t, err)
		ctx := context.Background()
		return datastoretest.Harness{
			Open: func(t *testing.T) datastore.Store {
				return openSQL(t, db, datastore.SQLConfig{ChunkSize: testChunkSize})
			},
			Locks: func(t *testing.T) lock.Store {
				s, err := lock.OpenSQL(ctx, db.NewPool(t), db.Dialect, lock.SQLConfig{Prefix: db.Prefix})
				require.NoError(t, err)
				return s
			},
			Corrupt: func(t *testing.T, id datastore.ID) {
				var upload string
				// id is a validated blob id: safe to splice in a test.
				require.NoError(t, db.DB.QueryRowContext(ctx, "SELECT upload_id FROM "+tb.Blobs+" WHERE id = '"+string(id)+"'").Scan(&upload))
				var data []byte
				require.NoError(t, db.DB.QueryRowContext(ctx, "SELECT data FROM "+tb.BlobChunks+" WHERE upload_id = '"+upload+"' AND seq = 0").Scan(&data))
				data[len(data)/2] ^= 0x80
				_, err := db.DB.ExecContext(ctx, "UPDATE "+tb.BlobChunks+" SET data = "+placeholder(db.Dialect, 1)+" WHERE upload_id = '"+upload+"' AND seq = 0", data)
				require.NoError(t, err)
			},
			Check:     func(t *testing.T) { checkLeftovers(t, db) },
			ChunkSize: testChunkSize,
		}
	}
}

// checkLeftovers demands that db's data store has no upload in progress
// and no chunk that belongs to no blob and no upload.
func checkLeftovers(t *testing.T, db *dbtest.DB) {
	ctx := context.Background()
	tb, err := sqldialect.NewTables("Prefix", db.Prefix)
	require.NoError(t, err)
	var uploads, orphans int
	require.NoError(t, db.DB.QueryRowContext(ctx, "SELECT COUNT(*) FROM "+tb.BlobUploads).Scan(&uploads))
	require.Zero(t, uploads, "uploads left over")
	require.NoError(t, db.DB.QueryRowContext(ctx, "SELECT COUNT(*) FROM "+tb.BlobChunks+" c WHERE NOT EXISTS (SELECT 1 FROM "+
		tb.Blobs+" b WHERE b.upload_id = c.upload_id) AND NOT EXISTS (SELECT 1 FROM "+tb.BlobUploads+" u WHERE u.upload_id = c.upload_id)").Scan(&orphans))
	require.Zero(t, orphans, "chunks that belong to no blob and no upload")
}

func TestSQLConformance(t *testing.T) {
	for _, b := range dbtest.Backends {
		t.Run(b.Name, func(t *testing.T) {
			t.Parallel()
			datastoretest.Run(t, sqlHarness(b))
		})
	}
}

func TestOpenSQLConfig(t *testing.T) {
	ctx := context.Background()
	_, err := datastore.OpenSQL(ctx, nil, nil, datastore.SQLConfig{})
	require.ErrorIs(t, err, datastore.ErrInvalidArgument)
	db := dbtest.Open(t, dbtest.Backends[0])
	for _, c := range []struct {
		cfg   datastore.SQLConfig
		field string
	}{
		{datastore.SQLConfig{ChunkSize: 100}, "ChunkSize"},
		{datastore.SQLConfig{ChunkSize: datastore.MaxChunkSize + 1}, "ChunkSize"},
		{datastore.SQLConfig{Prefix: "Bad-"}, "Prefix"},
	} {
		_, err := datastore.OpenSQL(ctx, db.DB, db.Dialect, c.cfg)
		require.ErrorContains(t, err, c.field)
	}
	require.True(t, strings.HasPrefix(db.Prefix, "t"))
}

// statFailsOnRow is the real dialect whose Stat fails whenever the blob's
// row exists (a division by zero, evaluated per row): it stands for any
// error between a Put's landing commit and its reply (the deadline
// passing, the connection reset, the pool's wait timing out).
type statFailsOnRow struct{ dialect.Dialect }

func (d statFailsOnRow) BlobQueries(t sqldialect.Tables) sqldialect.BlobQueries {
	q := d.Dialect.BlobQueries(t)
	stat := strings.Replace(q.Stat, "SELECT length,", "SELECT length / 0,", 1)
	if stat == q.Stat {
		panic("no \"SELECT length,\" in " + q.Stat)
	}
	q.Stat = stat
	return q
}

// TestSQLPutKeepsWhatItLanded: a Put of content that takes an upload,
// whose landing committed but which failed afterwards, returns the error
// and keeps the blob it stored whole (its cleanup once dropped the
// chunks, leaving a row that every later Put of the content deduplicated
// against and a Get that failed with "chunk 0 is missing").
func TestSQLPutKeepsWhatItLanded(t *testing.T) {
	for _, b := range dbtest.Backends[:2] { // PostgreSQL and MySQL
		t.Run(b.Name, func(t *testing.T) {
			t.Parallel()
			ctx := context.Background()
			db := dbtest.Open(t, b)
			failing, err := datastore.OpenSQL(ctx, db.NewPool(t), statFailsOnRow{db.Dialect}, datastore.SQLConfig{Prefix: db.Prefix, ChunkSize: testChunkSize})
			require.NoError(t, err)
			content := bytes.Repeat([]byte("landed, then the reply failed;"), testChunkSize) // several chunks
			_, err = failing.Put(ctx, bytes.NewReader(content))
			require.Error(t, err, "the stat after the landing fails")

			s := openSQL(t, db, datastore.SQLConfig{ChunkSize: testChunkSize})
			sum := sha256.Sum256(content)
			id := datastore.ID(hex.EncodeToString(sum[:]))
			readAll := func() []byte {
				r, err := s.Get(ctx, id)
				require.NoError(t, err)
				defer r.Close()
				got, err := io.ReadAll(r)
				require.NoError(t, err, "the landed blob must be whole")
				return got
			}
			require.Equal(t, content, readAll())
			// A caller's retry deduplicates against it.
			in, err := s.Put(ctx, bytes.NewReader(content))
			require.NoError(t, err)
			require.Equal(t, id, in.ID)
			require.Equal(t, content, readAll())
			checkLeftovers(t, db)
		})
	}
}

// insertsNothing is the real dialect whose statement that inserts one row
// (the blob's row, or a chunk) reports success and adds nothing, as a
// MariaDB statement ended by KILL QUERY at the wrong moment can.
type insertsNothing struct {
	dialect.Dialect
	chunk bool // the chunk's insert instead of the blob's
}

func (d insertsNothing) BlobQueries(t sqldialect.Tables) sqldialect.BlobQueries {
	q := d.Dialect.BlobQueries(t)
	stmt := &q.InsertBlob
	if d.chunk {
		stmt = &q.InsertChunk
	}
	// INSERT INTO x (cols) VALUES (args) -> INSERT INTO x (cols) SELECT args FROM (SELECT 1 AS one) z WHERE 1 = 0
	head, values, ok := strings.Cut(*stmt, " VALUES (")
	if !ok {
		panic("no VALUES in " + *stmt)
	}
	*stmt = head + " SELECT " + strings.TrimSuffix(values, ")") + " FROM (SELECT 1 AS one) z WHERE 1 = 0"
	return q
}

// TestSQLPutChecksItsInserts: a Put whose blob row or chunk was silently
// not inserted fails with an error that says so, and leaves neither a
// blob nor chunks that belong to nothing, for content that fits one chunk
// and for content that takes an upload.
func TestSQLPutChecksItsInserts(t *testing.T) {
	for _, b := range dbtest.Backends[:2] { // PostgreSQL and MySQL
		t.Run(b.Name, func(t *testing.T) {
			t.Parallel()
			ctx := context.Background()
			db := dbtest.Open(t, b)
			for _, chunk := range []bool{false, true} {
				for _, size := range []int{10, 3*testChunkSize + 5} {
					s, err := datastore.OpenSQL(ctx, db.NewPool(t), insertsNothing{Dialect: db.Dialect, chunk: chunk}, datastore.SQLConfig{Prefix: db.Prefix, ChunkSize: testChunkSize})
					require.NoError(t, err)
					content := []byte(strings.Repeat(fmt.Sprintf("chunk=%v size=%d;", chunk, size), size)[:size])
					_, err = s.Put(ctx, bytes.NewReader(content))
					require.ErrorContains(t, err, "the statement added 0 rows, not 1; rolled back", "chunk=%v size=%d", chunk, size)
					sum := sha256.Sum256(content)
					_, err = s.Stat(ctx, datastore.ID(hex.EncodeToString(sum[:])))
					require.ErrorIs(t, err, datastore.ErrNotFound, "chunk=%v size=%d", chunk, size)
					// The same content through the real statements.
					in, err := openSQL(t, db, datastore.SQLConfig{ChunkSize: testChunkSize}).Put(ctx, bytes.NewReader(content))
					require.NoError(t, err)
					require.Equal(t, int64(size), in.Length)
				}
			}
			checkLeftovers(t, db)
		})
	}
}
