package sqlserver

import "github.com/tandem-go/tandem/internal/sqldialect"

// Blob and upload ids are NVARCHAR, as go-mssqldb sends strings (a VARCHAR
// key compared with an nvarchar parameter may lose its index seek), with
// the binary collation: lowercase hex compared byte by byte.
const (
	blobIDType   = `NVARCHAR(64) COLLATE Latin1_General_BIN2`
	uploadIDType = `NVARCHAR(32) COLLATE Latin1_General_BIN2`
)

// blobTables are the data store's tables, each created unless it exists.
// A chunk is a VARBINARY(MAX), bounded by the data store (1 MiB by
// default); go-mssqldb sends a []byte over 8,000 bytes as varbinary(max).
func blobTables(t sqldialect.Tables) []table {
	create := func(name, columns string) table {
		return table{name, `IF OBJECT_ID(N'` + name + `', N'U') IS NULL
CREATE TABLE ` + name + ` (` + columns + `)`}
	}
	return []table{
		create(t.Blobs, `
	id         `+blobIDType+` NOT NULL PRIMARY KEY,
	upload_id  `+uploadIDType+` NOT NULL,
	length     BIGINT NOT NULL,
	created_at DATETIME2(6) NOT NULL,
	touched_at DATETIME2(6) NOT NULL`),
		create(t.BlobChunks, `
	upload_id `+uploadIDType+` NOT NULL,
	seq       INT NOT NULL,
	data      VARBINARY(MAX) NOT NULL,
	PRIMARY KEY (upload_id, seq)`),
		create(t.BlobUploads, `
	upload_id  `+uploadIDType+` NOT NULL PRIMARY KEY,
	started_at DATETIME2(6) NOT NULL,
	touched_at DATETIME2(6) NOT NULL`),
	}
}

// schemaV5 is migration 5's batches, in order: the tables, then the
// record, each a batch of its own.
func schemaV5(t sqldialect.Tables) []string {
	var out []string
	for _, tb := range blobTables(t) {
		out = append(out, tb.ddl)
	}
	return append(out, `UPDATE `+t.Meta+` SET migration = 5 WHERE id = 1 AND COALESCE(migration, 1) < 5`)
}

// blobNow is the database time in UTC.
const blobNow = `SYSUTCDATETIME()`

// micros renders a DATETIME2(6) column (UTC) as BIGINT microseconds since
// the Unix epoch: whole days, seconds since midnight and microseconds
// apart, since DATEDIFF returns an INT (and DATEDIFF_BIG needs SQL Server
// 2016).
func micros(col string) string {
	return `(CAST(DATEDIFF(DAY, '19700101', ` + col + `) AS BIGINT) * 86400000000` +
		` + CAST(DATEDIFF(SECOND, CAST(CAST(` + col + ` AS DATE) AS DATETIME2(6)), ` + col + `) AS BIGINT) * 1000000` +
		` + DATEPART(MICROSECOND, ` + col + `))`
}

// at renders a BIGINT parameter of microseconds since the Unix epoch as a
// DATETIME2(6): DATEADD takes an INT, so days, seconds and microseconds
// are added apart.
func at(p string) string {
	return `DATEADD(MICROSECOND, CAST(` + p + ` % 1000000 AS INT), DATEADD(SECOND, CAST((` + p + ` / 1000000) % 86400 AS INT), ` +
		`DATEADD(DAY, CAST(` + p + ` / 86400000000 AS INT), CAST('19700101' AS DATETIME2(6)))))`
}

// BlobQueries implements dialect.Dialect. NOCOUNT OFF keeps the rows
// affected that the data store relies on, even if a server default turned
// counting off. The locking reads take update locks (UPDLOCK), held until
// the transaction ends, which read the latest committed row and exclude
// a concurrent UPDATE; readers never skip locked rows.
func (sqlServer) BlobQueries(t sqldialect.Tables) sqldialect.BlobQueries {
	return sqldialect.BlobQueries{
		Now:  `SELECT ` + micros(`n.t`) + ` FROM (SELECT ` + blobNow + ` AS t) AS n`,
		Stat: `SELECT length, upload_id, ` + micros(`created_at`) + `, ` + micros(`touched_at`) + ` FROM ` + t.Blobs + ` WHERE id = @p1`,
		Touch: `SET NOCOUNT OFF;
UPDATE ` + t.Blobs + ` SET touched_at = ` + blobNow + ` WHERE id = @p1;`,
		InsertBlob: `SET NOCOUNT OFF;
INSERT INTO ` + t.Blobs + ` (id, upload_id, length, created_at, touched_at) VALUES (@p1, @p2, @p3, ` + blobNow + `, ` + blobNow + `);`,
		LockBlob: `SELECT upload_id, length FROM ` + t.Blobs + ` WITH (UPDLOCK, ROWLOCK) WHERE id = @p1 AND touched_at < ` + at(`@p2`),
		DeleteBlob: `SET NOCOUNT OFF;
DELETE FROM ` + t.Blobs + ` WHERE id = @p1;`,
		List: `SELECT TOP (@p2) id, length, ` + micros(`created_at`) + `, ` + micros(`touched_at`) + ` FROM ` + t.Blobs +
			` WHERE id > @p1 ORDER BY id`,

		InsertUpload: `INSERT INTO ` + t.BlobUploads + ` (upload_id, started_at, touched_at) VALUES (@p1, ` + blobNow + `, ` + blobNow + `)`,
		LockUpload:   `SELECT 1 FROM ` + t.BlobUploads + ` WITH (UPDLOCK, ROWLOCK) WHERE upload_id = @p1`,
		TouchUpload: `SET NOCOUNT OFF;
UPDATE ` + t.BlobUploads + ` SET touched_at = ` + blobNow + ` WHERE upload_id = @p1;`,
		DeleteUpload: `SET NOCOUNT OFF;
DELETE FROM ` + t.BlobUploads + ` WHERE upload_id = @p1;`,
		ListUploads: `SELECT TOP (@p3) upload_id, ` + micros(`touched_at`) + ` FROM ` + t.BlobUploads +
			` WHERE upload_id > @p1 AND touched_at < ` + at(`@p2`) + ` ORDER BY upload_id`,
		DeleteStaleUpload: `SET NOCOUNT OFF;
DELETE FROM ` + t.BlobUploads + ` WHERE upload_id = @p1 AND touched_at < ` + at(`@p2`) + `;`,

		InsertChunk: `SET NOCOUNT OFF;
INSERT INTO ` + t.BlobChunks + ` (upload_id, seq, data) VALUES (@p1, @p2, @p3);`,
		ReadChunk: `SELECT data FROM ` + t.BlobChunks + ` WHERE upload_id = @p1 AND seq = @p2`,
		DeleteChunks: `SET NOCOUNT OFF;
DELETE FROM ` + t.BlobChunks + ` WHERE upload_id = @p1;`,
	}
}
