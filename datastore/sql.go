package datastore

import (
	"bytes"
	"context"
	"crypto/sha256"
	"database/sql"
	"errors"
	"fmt"
	"io"
	"time"

	"github.com/tandem-go/tandem/dialect"
	"github.com/tandem-go/tandem/internal/sqldialect"
	"github.com/tandem-go/tandem/lock"
)

// Defaults and limits of SQLConfig.
const (
	// DefaultChunkSize is the size of a chunk row: small enough for every
	// driver and packet limit (MySQL's smallest max_allowed_packet
	// default is 4 MiB), large enough that a row's overhead is small.
	DefaultChunkSize = 1 << 20
	// MinChunkSize and MaxChunkSize bound SQLConfig.ChunkSize. On MySQL
	// and MariaDB, max_allowed_packet must exceed the chunk size plus a
	// few KiB.
	MinChunkSize = 1 << 10
	MaxChunkSize = 16 << 20
)

// SQLConfig configures a SQL store. The zero value of each field means its
// default.
type SQLConfig struct {
	// Prefix is prepended to every table name. Defaults to
	// dialect.DefaultPrefix ("tandem_"); see ident.Prefix.
	Prefix string
	// ChunkSize is the size of the chunk rows Put writes, and so the
	// memory a Put or a Get needs (plus the driver's copy). Defaults to
	// DefaultChunkSize; between MinChunkSize and MaxChunkSize. Nodes may
	// use different sizes.
	ChunkSize int
	// SkipVerify makes Get's readers skip hashing: they still check the
	// length. Defaults to false: every Get verifies.
	SkipVerify bool
}

// SQL is the Store in a SQL database (any dialect of package dialect),
// in three tables:
//
//	blobs         id, upload_id, length, created_at, touched_at (database time)
//	blob_chunks   upload_id, seq, data: the content in chunks of at most ChunkSize bytes
//	blob_uploads  upload_id, started_at, touched_at: uploads in progress
//
// A Put that fits one chunk inserts the blob and its chunk in one
// transaction. A larger one registers an upload, writes its chunks
// (each in a short transaction that also refreshes the upload's
// touched_at, and only while the upload exists), and at the end, knowing
// the id, turns the upload into the blob in one transaction: it deletes
// the upload's row and inserts the blob's. So a blob becomes visible
// atomically and complete, and every chunk row belongs to an upload or a
// blob at all times. When several nodes put the same content at once,
// the primary key lets one insert win; the others refresh the winner's
// touched_at and delete their chunks. (Putting stored content larger than
// a chunk costs a full upload, since its id is known only at the end.) Nothing is spooled to local files:
// a Put or Get holds one chunk in memory.
//
// A Get reads one chunk per query and holds no connection between reads.
// Times are database time. It holds nothing of its own: db is the
// caller's, and SQL needs no Close. Safe for concurrent use.
type SQL struct {
	db  *sql.DB
	d   dialect.Dialect
	q   sqldialect.BlobQueries
	cfg SQLConfig
}

var (
	_ Store       = (*SQL)(nil)
	_ collectable = (*SQL)(nil)
)

// OpenSQL opens the data store in db, creating or migrating the schema
// (see package dialect) when needed.
func OpenSQL(ctx context.Context, db *sql.DB, d dialect.Dialect, cfg SQLConfig) (*SQL, error) {
	if db == nil || d == nil {
		return nil, fmt.Errorf("open sql datastore: %w: db and dialect are required", ErrInvalidArgument)
	}
	if cfg.Prefix == "" {
		cfg.Prefix = dialect.DefaultPrefix
	}
	if cfg.ChunkSize == 0 {
		cfg.ChunkSize = DefaultChunkSize
	}
	if cfg.ChunkSize < MinChunkSize || cfg.ChunkSize > MaxChunkSize {
		return nil, fmt.Errorf("open sql datastore: %w: ChunkSize is %d, must be between %d and %d",
			ErrInvalidArgument, cfg.ChunkSize, MinChunkSize, MaxChunkSize)
	}
	t, err := sqldialect.NewTables("Prefix", cfg.Prefix)
	if err != nil {
		return nil, fmt.Errorf("open sql datastore: %w", err)
	}
	if err := sqldialect.Migrate(ctx, db, d, t, sqldialect.NewEpoch()); err != nil {
		return nil, fmt.Errorf("open sql datastore: %w", err)
	}
	return &SQL{db: db, d: d, q: d.BlobQueries(t), cfg: cfg}, nil
}

// tr translates a driver error.
func (s *SQL) tr(err error) error { return s.d.Translate(err) }

// chunk is the value bound for a chunk's data.
func (s *SQL) chunk(b []byte) any {
	if s.q.ChunkArg != nil {
		return s.q.ChunkArg(b)
	}
	return b
}

// inTx runs fn in a transaction and commits it.
func (s *SQL) inTx(ctx context.Context, fn func(tx *sql.Tx) error) error {
	tx, err := s.db.BeginTx(ctx, nil)
	if err != nil {
		return s.tr(err)
	}
	defer tx.Rollback()
	if err := fn(tx); err != nil {
		return err
	}
	return s.tr(tx.Commit())
}

// retryable reports whether a transaction that failed with err may simply
// run again.
func retryable(err error) bool {
	return errors.Is(err, dialect.ErrUniqueViolation) || errors.Is(err, dialect.ErrDeadlock) || errors.Is(err, dialect.ErrSerialization)
}

// maxLandAttempts bounds how often a Put retries landing when concurrent
// puts and deletes of the same content keep getting in its way.
const maxLandAttempts = 10

// Put implements Store.
func (s *SQL) Put(ctx context.Context, r io.Reader) (Info, error) {
	buf := make([]byte, s.cfg.ChunkSize)
	r = ctxReader{ctx, r}
	n, err := io.ReadFull(r, buf)
	switch err {
	case io.EOF, io.ErrUnexpectedEOF:
		return s.putSmall(ctx, buf[:n])
	case nil:
	default:
		return Info{}, readErr(err)
	}
	return s.putChunked(ctx, buf, r)
}

// putSmall stores content that fits one chunk: the blob and its chunk in
// one transaction.
func (s *SQL) putSmall(ctx context.Context, data []byte) (Info, error) {
	h := sha256.New()
	h.Write(data)
	id := sumID(h)
	for attempt := 1; ; attempt++ {
		if in, err := s.touchStat(ctx, id); err == nil {
			return in, nil // stored already
		} else if !errors.Is(err, ErrNotFound) {
			return Info{}, fmt.Errorf("put blob %s: %w", id, err)
		}
		upload := randomHex(16)
		err := s.inTx(ctx, func(tx *sql.Tx) error {
			if err := s.execOne(ctx, tx, "insert the blob's row", s.q.InsertBlob, string(id), upload, int64(len(data))); err != nil {
				return err
			}
			if len(data) > 0 {
				return s.execOne(ctx, tx, "insert the chunk", s.q.InsertChunk, upload, 0, s.chunk(data))
			}
			return nil
		})
		if err == nil {
			return s.stat(ctx, id)
		}
		if !retryable(err) || attempt == maxLandAttempts {
			return Info{}, fmt.Errorf("put blob %s: %w", id, err)
		}
		// Another node stored it meanwhile: touch theirs.
	}
}

// putChunked stores content larger than one chunk, whose first chunk is
// in buf, through an upload.
func (s *SQL) putChunked(ctx context.Context, buf []byte, r io.Reader) (in Info, err error) {
	upload := randomHex(16)
	if _, err := s.db.ExecContext(ctx, s.q.InsertUpload, upload); err != nil {
		return Info{}, fmt.Errorf("put blob: begin upload: %w", s.tr(err))
	}
	landed := false
	defer func() {
		if !landed {
			// Best effort; what remains is removed by a collector once
			// the grace period has passed.
			ctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 30*time.Second)
			defer cancel()
			_ = s.dropUpload(ctx, upload)
		}
	}()
	h := sha256.New()
	var length int64
	chunk, last := buf, false
	for seq := 0; ; seq++ {
		h.Write(chunk)
		length += int64(len(chunk))
		if err := s.writeChunk(ctx, upload, seq, chunk); err != nil {
			return Info{}, fmt.Errorf("put blob: %w", err)
		}
		if last {
			break
		}
		n, rerr := io.ReadFull(r, buf)
		if rerr == io.EOF {
			break
		}
		if rerr == io.ErrUnexpectedEOF {
			last = true
		} else if rerr != nil {
			return Info{}, readErr(rerr)
		}
		chunk = buf[:n]
	}
	id := sumID(h)
	in, dedup, err := s.land(ctx, id, upload, length)
	if err != nil {
		return Info{}, fmt.Errorf("put blob %s: %w", id, err)
	}
	landed = !dedup // a deduplicated upload's chunks are dropped by the defer
	return in, nil
}

// writeChunk inserts chunk seq of upload, in a transaction that first
// locks the upload's row (so that a collector cannot remove the upload
// while its chunk is being added) and refreshes its touched_at.
func (s *SQL) writeChunk(ctx context.Context, upload string, seq int, data []byte) error {
	return s.inTx(ctx, func(tx *sql.Tx) error {
		var one int
		err := tx.QueryRowContext(ctx, s.q.LockUpload, upload).Scan(&one)
		if errors.Is(err, sql.ErrNoRows) {
			return ErrUploadExpired
		}
		if err != nil {
			return fmt.Errorf("write chunk %d: %w", seq, s.tr(err))
		}
		if _, err := tx.ExecContext(ctx, s.q.TouchUpload, upload); err != nil {
			return fmt.Errorf("write chunk %d: %w", seq, s.tr(err))
		}
		if err := s.execOne(ctx, tx, "insert the chunk", s.q.InsertChunk, upload, seq, s.chunk(data)); err != nil {
			return fmt.Errorf("write chunk %d: %w", seq, err)
		}
		return nil
	})
}

// land turns the complete upload into the blob id, or, when id is stored
// already, refreshes its last use (dedup: the caller drops the upload).
func (s *SQL) land(ctx context.Context, id ID, upload string, length int64) (in Info, dedup bool, err error) {
	for attempt := 1; ; attempt++ {
		if in, err := s.touchStat(ctx, id); err == nil {
			return in, true, nil
		} else if !errors.Is(err, ErrNotFound) {
			return Info{}, false, err
		}
		err := s.inTx(ctx, func(tx *sql.Tx) error {
			res, err := tx.ExecContext(ctx, s.q.DeleteUpload, upload)
			if err != nil {
				return s.tr(err)
			}
			if n, err := res.RowsAffected(); err != nil {
				return s.tr(err)
			} else if n != 1 {
				return ErrUploadExpired
			}
			return s.execOne(ctx, tx, "insert the blob's row", s.q.InsertBlob, string(id), upload, length)
		})
		if err == nil {
			in, err := s.stat(ctx, id)
			return in, false, err
		}
		if !retryable(err) || attempt == maxLandAttempts {
			return Info{}, false, err
		}
	}
}

// execOne runs, in tx, an insert that must add exactly one row (what
// names it in the error). Any other count fails it and, with it, the
// transaction: MariaDB can end a statement that KILL QUERY interrupts
// without an error and without its work, and a blob row or chunk that is
// silently missing would leave chunks that belong to nothing, or a blob
// with a hole.
func (s *SQL) execOne(ctx context.Context, tx *sql.Tx, what, query string, args ...any) error {
	res, err := tx.ExecContext(ctx, query, args...)
	if err != nil {
		return s.tr(err)
	}
	n, err := res.RowsAffected()
	if err != nil {
		return s.tr(err)
	}
	if n != 1 {
		return fmt.Errorf("%s: the statement added %d rows, not 1; rolled back", what, n)
	}
	return nil
}

// dropUpload deletes an upload's row and, if that row was still there,
// its chunks. A landed upload has no row left: its chunks are the blob's
// now, and they stay. That is what keeps a Put whose landing committed
// but whose caller saw an error (the stat after it failed, the COMMIT's
// reply was lost) from deleting the content of the blob it stored; a
// landing still running on the server holds the row, so the DELETE waits
// for its outcome. An upload a collector reaped has no row either, nor
// chunks.
func (s *SQL) dropUpload(ctx context.Context, upload string) error {
	return s.inTx(ctx, func(tx *sql.Tx) error {
		res, err := tx.ExecContext(ctx, s.q.DeleteUpload, upload)
		if err != nil {
			return s.tr(err)
		}
		if n, err := res.RowsAffected(); err != nil {
			return s.tr(err)
		} else if n != 1 {
			return nil // landed, or reaped
		}
		_, err = tx.ExecContext(ctx, s.q.DeleteChunks, upload)
		return s.tr(err)
	})
}

// touchStat touches id and returns its Info, or ErrNotFound.
func (s *SQL) touchStat(ctx context.Context, id ID) (Info, error) {
	if err := s.touch(ctx, id); err != nil {
		return Info{}, err
	}
	return s.stat(ctx, id)
}

// touch sets id's touched_at to now, or returns ErrNotFound. MySQL counts
// only changed rows, so no row affected is confirmed with a Stat: a row
// touched within the same microsecond was not changed but is there (and,
// touched now, no collector deletes it).
func (s *SQL) touch(ctx context.Context, id ID) error {
	res, err := s.db.ExecContext(ctx, s.q.Touch, string(id))
	if err != nil {
		return s.tr(err)
	}
	if n, err := res.RowsAffected(); err != nil {
		return s.tr(err)
	} else if n == 1 {
		return nil
	}
	_, err = s.stat(ctx, id)
	return err
}

// stat returns id's Info and upload, or ErrNotFound.
func (s *SQL) stat(ctx context.Context, id ID) (Info, error) {
	in, _, err := s.statUpload(ctx, id)
	return in, err
}

func (s *SQL) statUpload(ctx context.Context, id ID) (Info, string, error) {
	var in Info
	var upload string
	var created, touched int64
	err := s.db.QueryRowContext(ctx, s.q.Stat, string(id)).Scan(&in.Length, &upload, &created, &touched)
	if errors.Is(err, sql.ErrNoRows) {
		return Info{}, "", ErrNotFound
	}
	if err != nil {
		return Info{}, "", s.tr(err)
	}
	in.ID, in.Created, in.LastUsed = id, time.UnixMicro(created), time.UnixMicro(touched)
	return in, upload, nil
}

// Get implements Store.
func (s *SQL) Get(ctx context.Context, id ID) (io.ReadCloser, error) {
	if err := id.check("get blob"); err != nil {
		return nil, err
	}
	in, upload, err := s.statUpload(ctx, id)
	if err != nil {
		return nil, fmt.Errorf("get blob %s: %w", id, err)
	}
	cr := &chunkReader{s: s, ctx: ctx, id: id, upload: upload, left: in.Length}
	return newVerifier(id, cr, in.Length, s.cfg.SkipVerify, func() error { cr.buf = nil; return nil }), nil
}

// chunkReader reads a blob's chunks in order, one query per chunk.
type chunkReader struct {
	s      *SQL
	ctx    context.Context
	id     ID
	upload string
	seq    int
	left   int64 // bytes of the blob not read from the database yet
	buf    *bytes.Reader
}

func (r *chunkReader) Read(p []byte) (int, error) {
	for r.buf == nil || r.buf.Len() == 0 {
		if r.left <= 0 {
			return 0, io.EOF
		}
		var data []byte
		err := r.s.db.QueryRowContext(r.ctx, r.s.q.ReadChunk, r.upload, r.seq).Scan(&data)
		if errors.Is(err, sql.ErrNoRows) {
			// Deleted while being read (and perhaps put again, as
			// another upload), or a chunk is missing.
			_, upload, serr := r.s.statUpload(r.ctx, r.id)
			if errors.Is(serr, ErrNotFound) || serr == nil && upload != r.upload {
				return 0, fmt.Errorf("read blob %s: %w: deleted while being read", r.id, ErrNotFound)
			}
			return 0, fmt.Errorf("read blob %s: %w: chunk %d is missing", r.id, ErrCorrupt, r.seq)
		}
		if err != nil {
			return 0, fmt.Errorf("read blob %s: chunk %d: %w", r.id, r.seq, r.s.tr(err))
		}
		if len(data) == 0 {
			return 0, fmt.Errorf("read blob %s: %w: chunk %d is empty", r.id, ErrCorrupt, r.seq)
		}
		r.seq++
		r.left -= int64(len(data))
		r.buf = bytes.NewReader(data)
	}
	return r.buf.Read(p)
}

// Stat implements Store.
func (s *SQL) Stat(ctx context.Context, id ID) (Info, error) {
	if err := id.check("stat blob"); err != nil {
		return Info{}, err
	}
	in, err := s.stat(ctx, id)
	if err != nil {
		return Info{}, fmt.Errorf("stat blob %s: %w", id, err)
	}
	return in, nil
}

// Exists implements Store.
func (s *SQL) Exists(ctx context.Context, id ID) (bool, error) {
	_, err := s.Stat(ctx, id)
	if errors.Is(err, ErrNotFound) {
		return false, nil
	}
	return err == nil, err
}

// Touch implements Store.
func (s *SQL) Touch(ctx context.Context, id ID) error {
	if err := id.check("touch blob"); err != nil {
		return err
	}
	if err := s.touch(ctx, id); err != nil {
		return fmt.Errorf("touch blob %s: %w", id, err)
	}
	return nil
}

// maxCutoff is a cutoff later than every touched_at (9999-12-31, within
// every dialect's range): LockBlob then matches any blob.
const maxCutoff = 253402300799000000

// Delete implements Store.
func (s *SQL) Delete(ctx context.Context, id ID) error {
	if err := id.check("delete blob"); err != nil {
		return err
	}
	err := s.inTx(ctx, func(tx *sql.Tx) error {
		ok, _, err := s.deleteBlob(ctx, tx, id, maxCutoff)
		if err == nil && !ok {
			err = ErrNotFound
		}
		return err
	})
	if err != nil {
		return fmt.Errorf("delete blob %s: %w", id, err)
	}
	return nil
}

// deleteBlob deletes id and its chunks in tx if its touched_at is before
// cutoff (µs), locking its row first so that a concurrent Touch either
// comes before (and the blob is kept) or finds it gone.
func (s *SQL) deleteBlob(ctx context.Context, tx *sql.Tx, id ID, cutoff int64) (deleted bool, length int64, err error) {
	var upload string
	err = tx.QueryRowContext(ctx, s.q.LockBlob, string(id), cutoff).Scan(&upload, &length)
	if errors.Is(err, sql.ErrNoRows) {
		return false, 0, nil
	}
	if err != nil {
		return false, 0, s.tr(err)
	}
	if _, err := tx.ExecContext(ctx, s.q.DeleteChunks, upload); err != nil {
		return false, 0, s.tr(err)
	}
	if _, err := tx.ExecContext(ctx, s.q.DeleteBlob, string(id)); err != nil {
		return false, 0, s.tr(err)
	}
	return true, length, nil
}

// walkPage is how many rows Walk reads per query.
const walkPage = 1000

// Walk implements Store, reading pages of walkPage rows in id order.
func (s *SQL) Walk(ctx context.Context, fn func(Info) error) error {
	after := ""
	for {
		page, err := s.list(ctx, after)
		if err != nil {
			return fmt.Errorf("walk blobs: %w", err)
		}
		for _, in := range page {
			if err := fn(in); err != nil {
				return err
			}
		}
		if len(page) < walkPage {
			return nil
		}
		after = string(page[len(page)-1].ID)
	}
}

func (s *SQL) list(ctx context.Context, after string) ([]Info, error) {
	rows, err := s.db.QueryContext(ctx, s.q.List, after, walkPage)
	if err != nil {
		return nil, s.tr(err)
	}
	defer rows.Close()
	var page []Info
	for rows.Next() {
		var in Info
		var id string
		var created, touched int64
		if err := rows.Scan(&id, &in.Length, &created, &touched); err != nil {
			return nil, s.tr(err)
		}
		in.ID, in.Created, in.LastUsed = ID(id), time.UnixMicro(created), time.UnixMicro(touched)
		page = append(page, in)
	}
	return page, s.tr(rows.Err())
}

// The collector's side (collectable).

// storeNow implements collectable: the database's time.
func (s *SQL) storeNow(ctx context.Context) (time.Time, error) {
	var us int64
	if err := s.db.QueryRowContext(ctx, s.q.Now).Scan(&us); err != nil {
		return time.Time{}, fmt.Errorf("read database time: %w", s.tr(err))
	}
	return time.UnixMicro(us), nil
}

// sweep implements collectable: one transaction of the lease's SQL store
// (lock.Lease.FencedTx) that confirms the lease and deletes the batch, so
// the deletes commit only together with that confirmation. The lease must
// come from a lock.SQL on the same database.
func (s *SQL) sweep(ctx context.Context, lease *lock.Lease, batch []Info, cutoff time.Time) ([]Info, error) {
	var deleted []Info
	err := lease.FencedTx(ctx, func(ctx context.Context, tx *sql.Tx) error {
		deleted = deleted[:0]
		for _, in := range batch {
			ok, length, err := s.deleteBlob(ctx, tx, in.ID, cutoff.UnixMicro())
			if err != nil {
				return err
			}
			if ok {
				in.Length = length
				deleted = append(deleted, in)
			}
		}
		return nil
	})
	if err != nil {
		return nil, err
	}
	return deleted, nil
}

// reap implements collectable: uploads whose touched_at is before cutoff
// are removed with their chunks, a page at a time, each page in one
// fenced transaction.
func (s *SQL) reap(ctx context.Context, lease *lock.Lease, cutoff time.Time, dryRun bool) (int64, error) {
	var total int64
	after := ""
	for {
		uploads, err := s.staleUploads(ctx, after, cutoff)
		if err != nil || len(uploads) == 0 {
			return total, err
		}
		after = uploads[len(uploads)-1]
		if dryRun {
			total += int64(len(uploads))
			continue
		}
		var n int64
		err = lease.FencedTx(ctx, func(ctx context.Context, tx *sql.Tx) error {
			n = 0
			for _, u := range uploads {
				res, err := tx.ExecContext(ctx, s.q.DeleteStaleUpload, u, cutoff.UnixMicro())
				if err != nil {
					return s.tr(err)
				}
				if k, err := res.RowsAffected(); err != nil {
					return s.tr(err)
				} else if k != 1 {
					continue // written to since the list, or landed
				}
				if _, err := tx.ExecContext(ctx, s.q.DeleteChunks, u); err != nil {
					return s.tr(err)
				}
				n++
			}
			return nil
		})
		if err != nil {
			return total, err
		}
		total += n
	}
}

// reapPage is how many stale uploads one fenced transaction removes.
const reapPage = 100

func (s *SQL) staleUploads(ctx context.Context, after string, cutoff time.Time) ([]string, error) {
	rows, err := s.db.QueryContext(ctx, s.q.ListUploads, after, cutoff.UnixMicro(), reapPage)
	if err != nil {
		return nil, s.tr(err)
	}
	defer rows.Close()
	var out []string
	for rows.Next() {
		var u string
		var touched int64
		if err := rows.Scan(&u, &touched); err != nil {
			return nil, s.tr(err)
		}
		out = append(out, u)
	}
	return out, s.tr(rows.Err())
}
