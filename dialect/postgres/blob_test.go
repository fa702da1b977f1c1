package postgres

import (
	"regexp"
	"slices"
	"strings"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/tandem-go/tandem/dialect"
	"github.com/tandem-go/tandem/internal/sqldialect"
)

var blobTable = regexp.MustCompile(`\b[a-z0-9_]*(blobs|blob_chunks|blob_uploads)\b`)

func TestBlobQueries(t *testing.T) {
	for _, prefix := range []string{"tandem_", "zz_"} {
		tb, err := sqldialect.NewTables("Prefix", prefix)
		require.NoError(t, err)
		q := Dialect.BlobQueries(tb)
		for name, s := range q.Statements() {
			require.NotEmpty(t, s.SQL, name)
			require.Equal(t, seq(s.Args), firstUse(s.SQL), "%s: $1..$%d in order", name, s.Args)
			require.NotContains(t, s.SQL, "?", name)
			for _, m := range blobTable.FindAllStringSubmatch(s.SQL, -1) {
				require.Equal(t, prefix+m[1], m[0], "%s: table name without the prefix", name)
			}
		}
		require.Nil(t, q.ChunkArg, "pgx binds []byte as bytea")
		for _, name := range []string{"LockBlob", "LockUpload"} {
			require.True(t, strings.HasSuffix(q.Statements()[name].SQL, " FOR UPDATE"), name)
		}
		require.Contains(t, q.LockBlob, "touched_at < (timestamptz 'epoch' + $2::bigint * interval '1 microsecond')")
	}
}

func TestSchemaV5(t *testing.T) {
	tb, err := sqldialect.NewTables("Prefix", "zz_")
	require.NoError(t, err)
	ddl := schemaV5(tb)
	for _, name := range []string{tb.Blobs, tb.BlobChunks, tb.BlobUploads} {
		require.True(t, slices.ContainsFunc(ddl, func(s string) bool { return strings.HasPrefix(s, "CREATE TABLE IF NOT EXISTS "+name+" (") }), name)
	}
	require.Contains(t, strings.Join(ddl, "\n"), "PRIMARY KEY (upload_id, seq)")
	ms := Dialect.Migrations(tb)
	require.Len(t, ms, dialect.SchemaVersion)
	require.Equal(t, 5, ms[4].Version)
	require.Equal(t, 1, ms[4].Compat, "additive")
}
