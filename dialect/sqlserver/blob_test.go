package sqlserver

import (
	"regexp"
	"strings"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/tandem-go/tandem/dialect"
)

var blobTable = regexp.MustCompile(`\b[a-z0-9_]*(blobs|blob_chunks|blob_uploads)\b`)

func TestBlobQueriesShape(t *testing.T) {
	for _, prefix := range []string{"tandem_", "t0123456789ab_", "x"} {
		q := Dialect.BlobQueries(tablesFor(t, prefix))
		for name, s := range q.Statements() {
			checkStatement(t, name, s.SQL, prefix, s.Args)
			for _, m := range blobTable.FindAllStringSubmatch(s.SQL, -1) {
				require.Equal(t, prefix+m[1], m[0], "%s: table name without the prefix", name)
			}
			require.NotContains(t, s.SQL, "GETDATE()", name)
		}
		require.Nil(t, q.ChunkArg, "go-mssqldb sends a []byte as varbinary(max)")
		// Statements whose rows affected decide something count them.
		for _, s := range []string{q.Touch, q.DeleteUpload, q.DeleteStaleUpload, q.DeleteBlob, q.DeleteChunks, q.TouchUpload, q.InsertBlob, q.InsertChunk} {
			require.True(t, strings.HasPrefix(s, "SET NOCOUNT OFF;\n"), s)
		}
		for _, s := range []string{q.LockBlob, q.LockUpload} {
			require.Contains(t, s, " WITH (UPDLOCK, ROWLOCK) WHERE ", "a locking read held until the transaction ends")
		}
	}
}

func TestBlobQueriesGolden(t *testing.T) {
	q := Dialect.BlobQueries(tablesFor(t, "tandem_"))
	micros := func(c string) string {
		return "(CAST(DATEDIFF(DAY, '19700101', " + c + ") AS BIGINT) * 86400000000 + CAST(DATEDIFF(SECOND, CAST(CAST(" + c +
			" AS DATE) AS DATETIME2(6)), " + c + ") AS BIGINT) * 1000000 + DATEPART(MICROSECOND, " + c + "))"
	}
	at2 := "DATEADD(MICROSECOND, CAST(@p2 % 1000000 AS INT), DATEADD(SECOND, CAST((@p2 / 1000000) % 86400 AS INT), " +
		"DATEADD(DAY, CAST(@p2 / 86400000000 AS INT), CAST('19700101' AS DATETIME2(6)))))"
	require.Equal(t, "SELECT "+micros("n.t")+" FROM (SELECT SYSUTCDATETIME() AS t) AS n", q.Now)
	require.Equal(t, "SELECT upload_id, length FROM tandem_blobs WITH (UPDLOCK, ROWLOCK) WHERE id = @p1 AND touched_at < "+at2, q.LockBlob)
	require.Equal(t, "SELECT TOP (@p2) id, length, "+micros("created_at")+", "+micros("touched_at")+
		" FROM tandem_blobs WHERE id > @p1 ORDER BY id", q.List)
	require.Equal(t, "SELECT TOP (@p3) upload_id, "+micros("touched_at")+" FROM tandem_blob_uploads WHERE upload_id > @p1 AND touched_at < "+
		at2+" ORDER BY upload_id", q.ListUploads)
	require.Equal(t, "SET NOCOUNT OFF;\nDELETE FROM tandem_blob_uploads WHERE upload_id = @p1 AND touched_at < "+at2+";", q.DeleteStaleUpload)
	require.Equal(t, "SET NOCOUNT OFF;\nINSERT INTO tandem_blobs (id, upload_id, length, created_at, touched_at) VALUES (@p1, @p2, @p3, SYSUTCDATETIME(), SYSUTCDATETIME());", q.InsertBlob)
	require.Equal(t, "SET NOCOUNT OFF;\nINSERT INTO tandem_blob_chunks (upload_id, seq, data) VALUES (@p1, @p2, @p3);", q.InsertChunk)
	require.Equal(t, "SELECT data FROM tandem_blob_chunks WHERE upload_id = @p1 AND seq = @p2", q.ReadChunk)
}

func TestSchemaV5(t *testing.T) {
	tb := tablesFor(t, "tandem_")
	s := schemaV5(tb)
	require.Len(t, s, 4)
	for i, name := range []string{tb.Blobs, tb.BlobChunks, tb.BlobUploads} {
		checkStatement(t, name, s[i], "tandem_", 0)
		require.True(t, strings.HasPrefix(s[i], "IF OBJECT_ID(N'"+name+"', N'U') IS NULL\nCREATE TABLE "+name+" ("), s[i])
	}
	require.Contains(t, s[0], "id         NVARCHAR(64) COLLATE Latin1_General_BIN2 NOT NULL PRIMARY KEY")
	require.Contains(t, s[1], "data      VARBINARY(MAX) NOT NULL")
	require.Contains(t, s[1], "PRIMARY KEY (upload_id, seq)")
	require.Equal(t, "UPDATE tandem_meta SET migration = 5 WHERE id = 1 AND COALESCE(migration, 1) < 5", s[3], "recorded last, in a batch of its own")
	ms := Dialect.Migrations(tb)
	require.Equal(t, 5, ms[4].Version)
	require.Equal(t, 1, ms[4].Compat)
	require.Len(t, Dialect.Migrations(tb), dialect.SchemaVersion)
}

// TestSchemaV6: migration 6 changes MySQL's procedures only; here it is the
// record alone.
func TestSchemaV6(t *testing.T) {
	tb := tablesFor(t, "tandem_")
	require.Equal(t, []string{"UPDATE tandem_meta SET migration = 6 WHERE id = 1 AND COALESCE(migration, 1) < 6"}, schemaV6(tb),
		"the record only")
	require.Equal(t, recordMigration(tb, 6), schemaV6(tb)[0])
	ms := Dialect.Migrations(tb)
	require.Equal(t, 6, ms[5].Version)
	require.Equal(t, 1, ms[5].Compat)
}
