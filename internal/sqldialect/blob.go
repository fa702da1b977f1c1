package sqldialect

// BlobQueries holds the statements of the data store's tables
// (Tables.Blobs, BlobChunks, BlobUploads), in the dialect's placeholder
// style, with arguments listed in the order they appear in the statement
// (Oracle binds by position). Package datastore runs them; its doc
// explains the protocol.
//
// Times cross the boundary as int64 microseconds since the Unix epoch,
// computed and compared by the database from its own clock (UTC), so that
// no driver's time zone handling can shift them. A blob id is 64
// lowercase hex digits, an upload id 32; both are validated before they
// are bound.
type BlobQueries struct {
	// Now: no args; one row (now µs): the database's current time.
	Now string

	// Stat: args (id); one row (length, upload_id, created µs, touched
	// µs), or none.
	Stat string
	// Touch: args (id); sets touched_at to now where the id matches. A
	// MySQL server counts only changed rows, so zero rows affected does
	// not prove the blob is missing (the caller then runs Stat).
	Touch string
	// InsertBlob: args (id, upload_id, length); created_at = touched_at =
	// now. Fails with ErrUniqueViolation when the id exists.
	InsertBlob string
	// LockBlob: args (id, cutoff µs); inside a transaction, one row
	// (upload_id, length) when the blob exists and its touched_at is
	// before cutoff, locking the row until the transaction ends (a
	// locking read of the latest committed version, waiting for a
	// concurrent Touch). No row: missing or touched since.
	LockBlob string
	// DeleteBlob: args (id); deletes the blob's row.
	DeleteBlob string
	// List: args (after id, limit); rows (id, length, created µs, touched
	// µs) with id > after, ordered by id, at most limit rows.
	List string

	// InsertUpload: args (upload_id); a new upload, touched_at = now.
	InsertUpload string
	// LockUpload: args (upload_id); inside a transaction, one row when
	// the upload exists, locking it until the transaction ends.
	LockUpload string
	// TouchUpload: args (upload_id); touched_at = now.
	TouchUpload string
	// DeleteUpload: args (upload_id); deletes the upload's row (one row
	// affected when it existed).
	DeleteUpload string
	// ListUploads: args (after upload_id, cutoff µs, limit); rows
	// (upload_id, touched µs) with upload_id > after and touched_at before
	// cutoff, ordered by upload_id, at most limit rows.
	ListUploads string
	// DeleteStaleUpload: args (upload_id, cutoff µs); deletes the upload's
	// row if its touched_at is before cutoff (one row affected: deleted).
	DeleteStaleUpload string

	// InsertChunk: args (upload_id, seq, data); data is bound through
	// ChunkArg.
	InsertChunk string
	// ReadChunk: args (upload_id, seq); one row (data), or none.
	ReadChunk string
	// DeleteChunks: args (upload_id); deletes every chunk of the upload.
	DeleteChunks string

	// ChunkArg converts a chunk's bytes into the value bound for
	// InsertChunk's data (Oracle binds large ones as BLOBs). Nil binds the
	// []byte itself.
	ChunkArg func([]byte) any
}

// Statements returns q's statements by field name (see Queries.Statements).
func (q BlobQueries) Statements() map[string]Statement {
	return map[string]Statement{
		"Now": {q.Now, 0}, "Stat": {q.Stat, 1}, "Touch": {q.Touch, 1}, "InsertBlob": {q.InsertBlob, 3},
		"LockBlob": {q.LockBlob, 2}, "DeleteBlob": {q.DeleteBlob, 1}, "List": {q.List, 2},
		"InsertUpload": {q.InsertUpload, 1}, "LockUpload": {q.LockUpload, 1}, "TouchUpload": {q.TouchUpload, 1},
		"DeleteUpload": {q.DeleteUpload, 1}, "ListUploads": {q.ListUploads, 3}, "DeleteStaleUpload": {q.DeleteStaleUpload, 2},
		"InsertChunk": {q.InsertChunk, 3}, "ReadChunk": {q.ReadChunk, 2}, "DeleteChunks": {q.DeleteChunks, 1},
	}
}
