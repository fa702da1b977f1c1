package postgres

import "github.com/tandem-go/tandem/internal/sqldialect"

// schemaV5 creates the data store's tables. Chunks are stored without
// compression (STORAGE EXTERNAL): binaries are often compressed already,
// and compressing them again costs more time than it saves.
func schemaV5(t sqldialect.Tables) []string {
	return []string{
		`CREATE TABLE IF NOT EXISTS ` + t.Blobs + ` (
	id         VARCHAR(64) COLLATE "C" PRIMARY KEY,
	upload_id  VARCHAR(32) COLLATE "C" NOT NULL,
	length     BIGINT NOT NULL,
	created_at TIMESTAMPTZ NOT NULL,
	touched_at TIMESTAMPTZ NOT NULL)`,
		`CREATE TABLE IF NOT EXISTS ` + t.BlobChunks + ` (
	upload_id VARCHAR(32) COLLATE "C" NOT NULL,
	seq       INTEGER NOT NULL,
	data      BYTEA NOT NULL,
	PRIMARY KEY (upload_id, seq))`,
		`ALTER TABLE ` + t.BlobChunks + ` ALTER COLUMN data SET STORAGE EXTERNAL`,
		`CREATE TABLE IF NOT EXISTS ` + t.BlobUploads + ` (
	upload_id  VARCHAR(32) COLLATE "C" PRIMARY KEY,
	started_at TIMESTAMPTZ NOT NULL,
	touched_at TIMESTAMPTZ NOT NULL)`,
	}
}

// blobNow is the database time of a data store statement.
const blobNow = `statement_timestamp()`

// micros renders a TIMESTAMPTZ column as microseconds since the Unix epoch.
func micros(col string) string { return `(extract(epoch FROM ` + col + `) * 1000000)::bigint` }

// at renders a bind of microseconds since the Unix epoch as a TIMESTAMPTZ.
func at(bind string) string {
	return `(timestamptz 'epoch' + ` + bind + `::bigint * interval '1 microsecond')`
}

// BlobQueries implements dialect.Dialect.
func (pg) BlobQueries(t sqldialect.Tables) sqldialect.BlobQueries {
	return sqldialect.BlobQueries{
		Now:        `SELECT ` + micros(blobNow),
		Stat:       `SELECT length, upload_id, ` + micros(`created_at`) + `, ` + micros(`touched_at`) + ` FROM ` + t.Blobs + ` WHERE id = $1`,
		Touch:      `UPDATE ` + t.Blobs + ` SET touched_at = ` + blobNow + ` WHERE id = $1`,
		InsertBlob: `INSERT INTO ` + t.Blobs + ` (id, upload_id, length, created_at, touched_at) VALUES ($1, $2, $3, ` + blobNow + `, ` + blobNow + `)`,
		LockBlob:   `SELECT upload_id, length FROM ` + t.Blobs + ` WHERE id = $1 AND touched_at < ` + at(`$2`) + ` FOR UPDATE`,
		DeleteBlob: `DELETE FROM ` + t.Blobs + ` WHERE id = $1`,
		List: `SELECT id, length, ` + micros(`created_at`) + `, ` + micros(`touched_at`) + ` FROM ` + t.Blobs +
			` WHERE id > $1 ORDER BY id LIMIT $2`,

		InsertUpload: `INSERT INTO ` + t.BlobUploads + ` (upload_id, started_at, touched_at) VALUES ($1, ` + blobNow + `, ` + blobNow + `)`,
		LockUpload:   `SELECT 1 FROM ` + t.BlobUploads + ` WHERE upload_id = $1 FOR UPDATE`,
		TouchUpload:  `UPDATE ` + t.BlobUploads + ` SET touched_at = ` + blobNow + ` WHERE upload_id = $1`,
		DeleteUpload: `DELETE FROM ` + t.BlobUploads + ` WHERE upload_id = $1`,
		ListUploads: `SELECT upload_id, ` + micros(`touched_at`) + ` FROM ` + t.BlobUploads +
			` WHERE upload_id > $1 AND touched_at < ` + at(`$2`) + ` ORDER BY upload_id LIMIT $3`,
		DeleteStaleUpload: `DELETE FROM ` + t.BlobUploads + ` WHERE upload_id = $1 AND touched_at < ` + at(`$2`),

		InsertChunk:  `INSERT INTO ` + t.BlobChunks + ` (upload_id, seq, data) VALUES ($1, $2, $3)`,
		ReadChunk:    `SELECT data FROM ` + t.BlobChunks + ` WHERE upload_id = $1 AND seq = $2`,
		DeleteChunks: `DELETE FROM ` + t.BlobChunks + ` WHERE upload_id = $1`,
	}
}
