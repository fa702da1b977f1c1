package oracle

import (
	"context"
	"database/sql/driver"
	"regexp"
	"strings"
	"testing"

	goora "github.com/sijms/go-ora/v2"
	"github.com/stretchr/testify/require"

	"github.com/tandem-go/tandem/dialect"
	"github.com/tandem-go/tandem/internal/fakesql"
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
			require.NotContains(t, s.SQL, "SYSDATE", "%s: UTC database time only", name)
		}
		for _, s := range []string{q.LockBlob, q.LockUpload} {
			require.True(t, strings.HasSuffix(s, " FOR UPDATE"), s)
		}
	}
}

func TestBlobQueriesGolden(t *testing.T) {
	q := Dialect.BlobQueries(tablesFor(t, "tandem_"))
	d := "(touched_at - TIMESTAMP '1970-01-01 00:00:00')"
	micros := "(EXTRACT(DAY FROM " + d + ") * 86400000000 + EXTRACT(HOUR FROM " + d + ") * 3600000000 + EXTRACT(MINUTE FROM " + d +
		") * 60000000 + ROUND(EXTRACT(SECOND FROM " + d + ") * 1000000))"
	require.Equal(t, "SELECT upload_id, "+micros+" FROM tandem_blob_uploads WHERE upload_id > :1 AND touched_at < "+
		"(TIMESTAMP '1970-01-01 00:00:00' + NUMTODSINTERVAL(:2 / 1000000, 'SECOND')) ORDER BY upload_id FETCH FIRST :3 ROWS ONLY", q.ListUploads)
	require.Equal(t, "SELECT upload_id, length FROM tandem_blobs WHERE id = :1 AND touched_at < "+
		"(TIMESTAMP '1970-01-01 00:00:00' + NUMTODSINTERVAL(:2 / 1000000, 'SECOND')) FOR UPDATE", q.LockBlob)
	require.Equal(t, "UPDATE tandem_blobs SET touched_at = SYS_EXTRACT_UTC(SYSTIMESTAMP) WHERE id = :1", q.Touch)
	require.True(t, strings.HasSuffix(q.Now, " FROM dual"))
}

func TestChunkArg(t *testing.T) {
	q := Dialect.BlobQueries(tablesFor(t, "tandem_"))
	small := make([]byte, maxRaw)
	require.Equal(t, small, q.ChunkArg(small), "RAW up to maxRaw bytes")
	big := make([]byte, maxRaw+1)
	require.Equal(t, goora.Blob{Data: big}, q.ChunkArg(big), "a BLOB above")
}

func TestMigration5(t *testing.T) {
	ctx := context.Background()
	tb := tablesFor(t, "tandem_")
	// A node that created the tables and failed before recording
	// migration 5 leaves the rest to the next: ORA-00955 is success.
	f, db := fakesql.New(t, func(q string, _ []driver.NamedValue) fakesql.Reply {
		if strings.HasPrefix(q, "CREATE TABLE tandem_blobs ") {
			return fakesql.Reply{Err: oraErr(errNameUsed)}
		}
		return fakesql.Reply{}
	})
	conn, err := db.Conn(ctx)
	require.NoError(t, err)
	defer conn.Close()
	m := Dialect.Migrations(tb)[4]
	require.Equal(t, 5, m.Version)
	require.Equal(t, 1, m.Compat)
	require.NoError(t, m.Apply(ctx, conn, ""))
	var want []string
	for _, x := range blobTables(tb) {
		checkStatement(t, x.name, x.ddl, "tandem_", 0)
		want = append(want, x.ddl)
	}
	want = append(want, recordV5(tb))
	require.Equal(t, recordMigration(tb, 5), recordV5(tb))
	require.Equal(t, want, f.Queries())
	require.Contains(t, want[1], "data      BLOB NOT NULL")

	_, db = fakesql.New(t, func(q string, _ []driver.NamedValue) fakesql.Reply {
		if strings.HasPrefix(q, "CREATE TABLE tandem_blob_chunks ") {
			return fakesql.Reply{Err: oraErr(1031)} // insufficient privileges
		}
		return fakesql.Reply{}
	})
	conn2, err := db.Conn(ctx)
	require.NoError(t, err)
	defer conn2.Close()
	err = m.Apply(ctx, conn2, "")
	require.ErrorContains(t, err, "create table TANDEM_BLOB_CHUNKS")
	require.Len(t, Dialect.Migrations(tb), dialect.SchemaVersion)
}

// TestMigration6: migration 6 changes MySQL's procedures only; on Oracle it
// records itself and runs nothing else.
func TestMigration6(t *testing.T) {
	ctx := context.Background()
	tb := tablesFor(t, "tandem_")
	f, db := fakesql.New(t, nil)
	conn, err := db.Conn(ctx)
	require.NoError(t, err)
	defer conn.Close()
	m := Dialect.Migrations(tb)[5]
	require.Equal(t, 6, m.Version)
	require.Equal(t, 1, m.Compat)
	require.NoError(t, m.Apply(ctx, conn, ""))
	require.Equal(t, "UPDATE tandem_meta SET migration = 6 WHERE id = 1 AND NVL(migration, 1) < 6", recordV6(tb))
	require.Equal(t, recordMigration(tb, 6), recordV6(tb))
	require.Equal(t, []string{recordV6(tb)}, f.Queries())
}
