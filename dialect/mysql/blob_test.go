package mysql

import (
	"regexp"
	"strconv"
	"strings"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/tandem-go/tandem/dialect"
	"github.com/tandem-go/tandem/internal/sqldialect"
)

var blobTable = regexp.MustCompile(`\b[a-z0-9_]*(blobs|blob_chunks|blob_uploads)\b`)

func TestBlobQueries(t *testing.T) {
	tb, err := sqldialect.NewTables("Prefix", "zz_")
	require.NoError(t, err)
	q := Dialect.BlobQueries(tb)
	for name, s := range q.Statements() {
		require.NotEmpty(t, s.SQL, name)
		require.Equal(t, s.Args, strings.Count(numbered(s.SQL), "?"), "%s: placeholders", name)
		if s.Args > 0 {
			require.Contains(t, numbered(s.SQL), "?"+strconv.Itoa(s.Args), name)
		}
		for _, bad := range []string{"$1", "@p1", ":1"} {
			require.NotContains(t, s.SQL, bad, name)
		}
		for _, m := range blobTable.FindAllStringSubmatch(s.SQL, -1) {
			require.Equal(t, "zz_"+m[1], m[0], "%s: table name without the prefix", name)
		}
	}
	require.Nil(t, q.ChunkArg)
	// Times never depend on the session's time zone or the DSN's loc.
	require.Contains(t, numbered(q.LockBlob), "WHERE id = ?1 AND touched_at < TIMESTAMPADD(MICROSECOND, ?2, TIMESTAMP'1970-01-01 00:00:00') FOR UPDATE")
	require.Contains(t, numbered(q.ListUploads), "WHERE upload_id > ?1 AND touched_at < TIMESTAMPADD(MICROSECOND, ?2, TIMESTAMP'1970-01-01 00:00:00') ORDER BY upload_id LIMIT ?3")
	require.NotContains(t, q.Now+q.Touch+q.InsertBlob, "NOW()")
}

func TestSchemaV5(t *testing.T) {
	tb, err := sqldialect.NewTables("Prefix", "zz_")
	require.NoError(t, err)
	ddl := schemaV5(tb)
	require.Len(t, ddl, 3)
	for i, name := range []string{tb.Blobs, tb.BlobChunks, tb.BlobUploads} {
		require.True(t, strings.HasPrefix(ddl[i], "CREATE TABLE IF NOT EXISTS "+name+" ("), name)
		require.True(t, strings.HasSuffix(ddl[i], "ENGINE=InnoDB"), name)
	}
	require.Contains(t, ddl[0], "id         CHAR(64) CHARACTER SET ascii COLLATE ascii_bin NOT NULL PRIMARY KEY")
	require.Contains(t, ddl[1], "data      LONGBLOB NOT NULL")
	ms := Dialect.Migrations(tb)
	require.Len(t, ms, dialect.SchemaVersion)
	require.Equal(t, 5, ms[4].Version)
	require.Equal(t, 1, ms[4].Compat, "additive")
}
