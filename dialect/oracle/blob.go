package oracle

import (
	goora "github.com/sijms/go-ora/v2"

	"github.com/tandem-go/tandem/internal/sqldialect"
)

// blobTables are the data store's tables. A chunk is a BLOB, bounded by
// the data store (1 MiB by default).
func blobTables(t sqldialect.Tables) []table {
	create := func(name, columns string) table {
		return table{name, `CREATE TABLE ` + name + ` (` + columns + `)`}
	}
	return []table{
		create(t.Blobs, `
	id         VARCHAR2(64) NOT NULL PRIMARY KEY,
	upload_id  VARCHAR2(32) NOT NULL,
	length     NUMBER(19) NOT NULL,
	created_at TIMESTAMP(6) NOT NULL,
	touched_at TIMESTAMP(6) NOT NULL`),
		create(t.BlobChunks, `
	upload_id VARCHAR2(32) NOT NULL,
	seq       NUMBER(10) NOT NULL,
	data      BLOB NOT NULL,
	PRIMARY KEY (upload_id, seq)`),
		create(t.BlobUploads, `
	upload_id  VARCHAR2(32) NOT NULL PRIMARY KEY,
	started_at TIMESTAMP(6) NOT NULL,
	touched_at TIMESTAMP(6) NOT NULL`),
	}
}

// recordV5 records migration 5 in the meta row.
func recordV5(t sqldialect.Tables) string {
	return `UPDATE ` + t.Meta + ` SET migration = 5 WHERE id = 1 AND NVL(migration, 1) < 5`
}

// recordV6 records migration 6 in the meta row (version 6 changes MySQL's
// procedures only).
func recordV6(t sqldialect.Tables) string {
	return `UPDATE ` + t.Meta + ` SET migration = 6 WHERE id = 1 AND NVL(migration, 1) < 6`
}

// epoch is the Unix epoch as a TIMESTAMP (UTC, like every stored time).
const epoch = `TIMESTAMP '1970-01-01 00:00:00'`

// micros renders a TIMESTAMP(6) column (UTC) as microseconds since the
// Unix epoch, from the INTERVAL DAY TO SECOND between them.
func micros(col string) string {
	d := `(` + col + ` - ` + epoch + `)`
	return `(EXTRACT(DAY FROM ` + d + `) * 86400000000 + EXTRACT(HOUR FROM ` + d + `) * 3600000000 + EXTRACT(MINUTE FROM ` + d + `) * 60000000` +
		` + ROUND(EXTRACT(SECOND FROM ` + d + `) * 1000000))`
}

// at renders a bind of microseconds since the Unix epoch as a TIMESTAMP.
// The bind occurs once, as binding by position requires.
func at(bind string) string {
	return `(` + epoch + ` + NUMTODSINTERVAL(` + bind + ` / 1000000, 'SECOND'))`
}

// chunkArg binds a chunk over maxRaw bytes as a BLOB (go-ora writes it
// into a temporary LOB first), a smaller one as RAW.
func chunkArg(b []byte) any {
	if len(b) > maxRaw {
		return goora.Blob{Data: b}
	}
	return b
}

// BlobQueries implements dialect.Dialect. Every placeholder appears once,
// in argument order. Ids are lowercase hex, which every NLS_SORT orders
// as BINARY does, so ORDER BY and the keyset comparisons agree.
func (ora) BlobQueries(t sqldialect.Tables) sqldialect.BlobQueries {
	return sqldialect.BlobQueries{
		Now:        `SELECT ` + micros(utcNow) + ` FROM dual`,
		Stat:       `SELECT length, upload_id, ` + micros(`created_at`) + `, ` + micros(`touched_at`) + ` FROM ` + t.Blobs + ` WHERE id = :1`,
		Touch:      `UPDATE ` + t.Blobs + ` SET touched_at = ` + utcNow + ` WHERE id = :1`,
		InsertBlob: `INSERT INTO ` + t.Blobs + ` (id, upload_id, length, created_at, touched_at) VALUES (:1, :2, :3, ` + utcNow + `, ` + utcNow + `)`,
		LockBlob:   `SELECT upload_id, length FROM ` + t.Blobs + ` WHERE id = :1 AND touched_at < ` + at(`:2`) + ` FOR UPDATE`,
		DeleteBlob: `DELETE FROM ` + t.Blobs + ` WHERE id = :1`,
		List: `SELECT id, length, ` + micros(`created_at`) + `, ` + micros(`touched_at`) + ` FROM ` + t.Blobs +
			` WHERE id > :1 ORDER BY id FETCH FIRST :2 ROWS ONLY`,

		InsertUpload: `INSERT INTO ` + t.BlobUploads + ` (upload_id, started_at, touched_at) VALUES (:1, ` + utcNow + `, ` + utcNow + `)`,
		LockUpload:   `SELECT 1 FROM ` + t.BlobUploads + ` WHERE upload_id = :1 FOR UPDATE`,
		TouchUpload:  `UPDATE ` + t.BlobUploads + ` SET touched_at = ` + utcNow + ` WHERE upload_id = :1`,
		DeleteUpload: `DELETE FROM ` + t.BlobUploads + ` WHERE upload_id = :1`,
		ListUploads: `SELECT upload_id, ` + micros(`touched_at`) + ` FROM ` + t.BlobUploads +
			` WHERE upload_id > :1 AND touched_at < ` + at(`:2`) + ` ORDER BY upload_id FETCH FIRST :3 ROWS ONLY`,
		DeleteStaleUpload: `DELETE FROM ` + t.BlobUploads + ` WHERE upload_id = :1 AND touched_at < ` + at(`:2`),

		InsertChunk:  `INSERT INTO ` + t.BlobChunks + ` (upload_id, seq, data) VALUES (:1, :2, :3)`,
		ReadChunk:    `SELECT data FROM ` + t.BlobChunks + ` WHERE upload_id = :1 AND seq = :2`,
		DeleteChunks: `DELETE FROM ` + t.BlobChunks + ` WHERE upload_id = :1`,
		ChunkArg:     chunkArg,
	}
}
