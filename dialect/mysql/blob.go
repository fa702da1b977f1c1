package mysql

import "github.com/tandem-go/tandem/internal/sqldialect"

// blobIDType and uploadIDType are the types of blob and upload ids:
// lowercase hex, compared byte by byte.
const (
	blobIDType   = `CHAR(64) CHARACTER SET ascii COLLATE ascii_bin`
	uploadIDType = `CHAR(32) CHARACTER SET ascii COLLATE ascii_bin`
)

// schemaV5 creates the data store's tables. A chunk is a LONGBLOB, stored
// off the index page; its size is bounded by the data store (1 MiB by
// default), below the smallest max_allowed_packet default (4 MiB).
func schemaV5(t sqldialect.Tables) []string {
	return []string{
		`CREATE TABLE IF NOT EXISTS ` + t.Blobs + ` (
	id         ` + blobIDType + ` NOT NULL PRIMARY KEY,
	upload_id  ` + uploadIDType + ` NOT NULL,
	length     BIGINT NOT NULL,
	created_at DATETIME(6) NOT NULL,
	touched_at DATETIME(6) NOT NULL) ENGINE=InnoDB`,
		`CREATE TABLE IF NOT EXISTS ` + t.BlobChunks + ` (
	upload_id ` + uploadIDType + ` NOT NULL,
	seq       INT NOT NULL,
	data      LONGBLOB NOT NULL,
	PRIMARY KEY (upload_id, seq)) ENGINE=InnoDB`,
		`CREATE TABLE IF NOT EXISTS ` + t.BlobUploads + ` (
	upload_id  ` + uploadIDType + ` NOT NULL PRIMARY KEY,
	started_at DATETIME(6) NOT NULL,
	touched_at DATETIME(6) NOT NULL) ENGINE=InnoDB`,
	}
}

// blobNow is the database time in UTC.
const blobNow = `UTC_TIMESTAMP(6)`

// epoch is the Unix epoch as a DATETIME in UTC.
const epoch = `TIMESTAMP'1970-01-01 00:00:00'`

// micros renders a DATETIME(6) column (UTC) as microseconds since the Unix
// epoch; at renders such a bind as a DATETIME(6). Neither depends on the
// session's time zone or the DSN's loc.
func micros(col string) string { return `TIMESTAMPDIFF(MICROSECOND, ` + epoch + `, ` + col + `)` }
func at(bind string) string    { return `TIMESTAMPADD(MICROSECOND, ` + bind + `, ` + epoch + `)` }

// BlobQueries implements dialect.Dialect.
func (my) BlobQueries(t sqldialect.Tables) sqldialect.BlobQueries {
	return sqldialect.BlobQueries{
		Now:        `SELECT ` + micros(blobNow),
		Stat:       `SELECT length, upload_id, ` + micros(`created_at`) + `, ` + micros(`touched_at`) + ` FROM ` + t.Blobs + ` WHERE id = ?`,
		Touch:      `UPDATE ` + t.Blobs + ` SET touched_at = ` + blobNow + ` WHERE id = ?`,
		InsertBlob: `INSERT INTO ` + t.Blobs + ` (id, upload_id, length, created_at, touched_at) VALUES (?, ?, ?, ` + blobNow + `, ` + blobNow + `)`,
		LockBlob:   `SELECT upload_id, length FROM ` + t.Blobs + ` WHERE id = ? AND touched_at < ` + at(`?`) + ` FOR UPDATE`,
		DeleteBlob: `DELETE FROM ` + t.Blobs + ` WHERE id = ?`,
		List: `SELECT id, length, ` + micros(`created_at`) + `, ` + micros(`touched_at`) + ` FROM ` + t.Blobs +
			` WHERE id > ? ORDER BY id LIMIT ?`,

		InsertUpload: `INSERT INTO ` + t.BlobUploads + ` (upload_id, started_at, touched_at) VALUES (?, ` + blobNow + `, ` + blobNow + `)`,
		LockUpload:   `SELECT 1 FROM ` + t.BlobUploads + ` WHERE upload_id = ? FOR UPDATE`,
		TouchUpload:  `UPDATE ` + t.BlobUploads + ` SET touched_at = ` + blobNow + ` WHERE upload_id = ?`,
		DeleteUpload: `DELETE FROM ` + t.BlobUploads + ` WHERE upload_id = ?`,
		ListUploads: `SELECT upload_id, ` + micros(`touched_at`) + ` FROM ` + t.BlobUploads +
			` WHERE upload_id > ? AND touched_at < ` + at(`?`) + ` ORDER BY upload_id LIMIT ?`,
		DeleteStaleUpload: `DELETE FROM ` + t.BlobUploads + ` WHERE upload_id = ? AND touched_at < ` + at(`?`),

		InsertChunk:  `INSERT INTO ` + t.BlobChunks + ` (upload_id, seq, data) VALUES (?, ?, ?)`,
		ReadChunk:    `SELECT data FROM ` + t.BlobChunks + ` WHERE upload_id = ? AND seq = ?`,
		DeleteChunks: `DELETE FROM ` + t.BlobChunks + ` WHERE upload_id = ?`,
	}
}
