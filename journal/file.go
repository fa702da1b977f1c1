package journal

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"math/rand/v2"
	"os"
	"path/filepath"
	"sync"
	"sync/atomic"
	"time"

	"github.com/fsnotify/fsnotify"

	"github.com/tandem-go/tandem/dialect"
	"github.com/tandem-go/tandem/ident"
	"github.com/tandem-go/tandem/internal/atomicfile"
	"github.com/tandem-go/tandem/internal/filelock"
	"github.com/tandem-go/tandem/internal/sqldialect"
)

// DefaultSegmentSize is the size at which the file journal starts a new
// segment: 64 MiB.
const DefaultSegmentSize = 64 << 20

// Names in the file journal's folder, <Dir>/journal.
const (
	fileHeadName = "head"
	fileMetaName = "meta"
	fileLockName = "LOCK"
)

// staleTempAge is how old a temp file must be for OpenFile to remove it:
// writes take milliseconds, so an hour-old one was left by a crash.
const staleTempAge = time.Hour

// FileConfig configures a file journal. The zero value of each field means
// its default.
type FileConfig struct {
	// Dir is the shared folder; the journal lives in Dir/journal. Required.
	Dir string
	// NodeID is the id of the node this journal instance writes as.
	// Required; see ident.NodeID for the alphabet.
	NodeID string
	// Instance identifies this process among the incarnations of NodeID,
	// as SQLConfig.Instance. Defaults to a random id (NewInstance).
	Instance string
	// SegmentSize is the size in bytes at which a new segment is started.
	// One append's records are never split, so a segment holding one large
	// append may exceed it. Defaults to DefaultSegmentSize (64 MiB).
	SegmentSize int64
	// LockTimeout bounds the wait for the journal's LOCK file. Defaults to
	// DefaultLockTimeout.
	LockTimeout time.Duration
	// Logger receives state changes (a torn tail repaired, the file watch
	// failing). Defaults to slog.Default().
	Logger *slog.Logger
}

func (c *FileConfig) withDefaults() (FileConfig, error) {
	out := *c
	if out.SegmentSize == 0 {
		out.SegmentSize = DefaultSegmentSize
	}
	if out.LockTimeout == 0 {
		out.LockTimeout = DefaultLockTimeout
	}
	if out.Logger == nil {
		out.Logger = slog.Default()
	}
	if out.Dir == "" {
		return out, fmt.Errorf("%w: Dir is empty", ErrInvalidArgument)
	}
	if out.Instance == "" {
		out.Instance = NewInstance()
	}
	if err := ident.NodeID("NodeID", out.NodeID); err != nil {
		return out, err
	}
	if err := ident.NodeID("Instance", out.Instance); err != nil {
		return out, err
	}
	if out.SegmentSize < 0 {
		return out, fmt.Errorf("%w: SegmentSize is %d, must be > 0", ErrInvalidArgument, out.SegmentSize)
	}
	if out.LockTimeout < 0 {
		return out, fmt.Errorf("%w: LockTimeout is %v, must be > 0", ErrInvalidArgument, out.LockTimeout)
	}
	return out, nil
}

// File is the journal in a folder, shared by the processes of one machine
// or, over a network file system, of many:
//
//	<Dir>/journal/<first-revision>.seg   segments of records, named by their first revision
//	<Dir>/journal/head                   last committed revision, its segment and end offset
//	<Dir>/journal/meta                   epoch and tail
//	<Dir>/journal/LOCK                   the writers' lock
//
// A writer takes the LOCK (an fcntl lock), repairs what a crashed writer
// left (see below), appends the batch's records, fsyncs the segment, and
// replaces the head file atomically (temp file, fsync, rename, fsync of
// the folder): that rename is the commit point. Readers read only up to
// the head, and verify every record's CRC-32C. The encodings are
// documented in filerecord.go.
//
// # Repair
//
// A head that reads older than the truth (a writer killed between its
// records' fsync and the head's rename, a stale NFS read, a head restored
// from a copy) must never cost an acknowledged record. So the next writer
// first rolls forward: past the head it reads complete, checksummed
// batches (every record carries its batch id and how many records of the
// batch follow) that continue the revision sequence, across segments,
// fsyncs the segments holding them (a writer killed between its write and
// its fsync leaves records no fsync made durable) and the folder when the
// dead writer created a segment, and writes a head after them. Only then
// does it truncate what is left: an incomplete batch or a torn record,
// which no append was acknowledged for. A complete record past the head
// that does not continue the sequence, a segment beyond the repaired head,
// a head whose segment is missing, a head past what its segment holds, or
// a head whose revision is not that of the record ending at its offset is
// corruption: reported (ErrCorrupt), never written after. The writer
// checks for it before it changes anything, so a head that does not match
// the folder costs no segment.
//
// An append's outcome is definite: it fails with nothing written when an
// error comes before the head's rename and the batch could be removed
// again, and succeeds once its records are fsynced and the head renamed
// (if only the folder's fsync failed, a crash can bring the old head back,
// and the next writer rolls the batch forward).
//
// # Network file systems
//
// The folder may be on NFS (or SMB) when the file system provides:
//
//   - working POSIX byte-range locks (fcntl): NFSv4, or NFSv3 with the NLM
//     lock manager (lockd) running on client and server, and not mounted
//     with "nolock" or "local_lock". Without them concurrent writers corrupt
//     the journal;
//   - close-to-open consistency (the NFS default; not "nocto"): a writer
//     fsyncs the segment (an NFS COMMIT to the server) before it renames
//     the head, and readers open the head and the segment afresh on every
//     Read, so a reader that sees a head sees the records below it;
//   - atomic rename within a folder.
//
// On SMB (CIFS) mounts, byte-range locks must be on (no "nobrl"), and a
// rename over a head file that another client holds open may fail, making
// that append fail cleanly; SMB is less tested than NFS and local disks.
//
// fsnotify only sees changes made through the local kernel, so Watch wakes
// for commits of this machine only: nodes on other NFS clients learn of new
// records by polling, which remains the source of truth.
//
// File is safe for concurrent use. Close releases its lock file and file
// watch; the folder stays.
type File struct {
	cfg  FileConfig
	dir  string // <Dir>/journal
	lock *filelock.Lock
	c    *committer
	hub  *hub
	// batchBase is random; batch ids are batchBase + batchSeq, which the
	// committer goroutine owns.
	batchBase, batchSeq int64
	// verified is the last head this instance checked against its
	// segment's records or wrote itself, and walkBuf the buffer it reads
	// record headers through (see verifyHead); the committer goroutine
	// owns both.
	verified fileHead
	walkBuf  []byte
	cursors  cursorCache
	// writeFile replaces the head and meta files: atomicfile.WriteFile,
	// or a fault injector in tests.
	writeFile func(path string, data []byte, perm fs.FileMode) error
	// syncFile and syncDir fsync a segment and the journal's folder for
	// the writer: (*os.File).Sync and atomicfile.SyncDir, or recorders in
	// tests.
	syncFile func(f *os.File) error
	syncDir  func(dir string) error
	// openFile opens the segments a writer repairs and appends to:
	// os.OpenFile, or a counter in tests.
	openFile func(name string, flag int, perm fs.FileMode) (*os.File, error)
	// beforeRecords, when a test sets it, runs in poll between the head
	// file's read and the segments'.
	beforeRecords func()

	bg     context.Context // cancelled by Close
	stopBG context.CancelFunc
	bgDone sync.WaitGroup

	watchMu sync.Mutex
	watcher *fsnotify.Watcher

	closeMu sync.Mutex // serializes Close
	closed  atomic.Bool
}

var (
	_ Journal = (*File)(nil)
	_ Watcher = (*File)(nil)
	_ Pruner  = (*File)(nil)
	_ Poller  = (*File)(nil)
)

// OpenFile opens the journal in cfg.Dir/journal, creating it (with a new
// epoch) when it does not exist; many processes may do so at once.
func OpenFile(ctx context.Context, cfg FileConfig) (*File, error) {
	cfg, err := cfg.withDefaults()
	if err != nil {
		return nil, fmt.Errorf("open journal: %w", err)
	}
	abs, err := filepath.Abs(cfg.Dir)
	if err != nil {
		return nil, fmt.Errorf("open journal: %w", err)
	}
	dir := filepath.Join(abs, "journal")
	if err := os.MkdirAll(dir, 0o777); err != nil {
		return nil, fmt.Errorf("open journal: %w", err)
	}
	lock, err := filelock.Open(filepath.Join(dir, fileLockName))
	if err != nil {
		return nil, fmt.Errorf("open journal: %w", err)
	}
	j := &File{
		cfg: cfg, dir: dir, lock: lock, hub: newHub(), batchBase: rand.Int64(),
		writeFile: atomicfile.WriteFile, syncFile: (*os.File).Sync, syncDir: atomicfile.SyncDir,
		openFile: os.OpenFile,
	}
	if err := j.create(ctx); err != nil {
		lock.Close()
		return nil, fmt.Errorf("open journal: %w", err)
	}
	if n, err := atomicfile.RemoveStale(dir, staleTempAge); err == nil && n > 0 {
		cfg.Logger.Info("tandem: removed stale temp files from the journal folder", "dir", dir, "count", n)
	}
	j.bg, j.stopBG = context.WithCancel(context.Background())
	j.c = newCommitter(j, cfg.LockTimeout+30*time.Second)
	return j, nil
}

// create makes the head and meta files when the journal is new. The head
// is written first: a meta file means a complete journal.
func (j *File) create(ctx context.Context) error {
	if _, err := j.readMeta(); !errors.Is(err, fs.ErrNotExist) {
		if err == nil {
			_, err = j.readHead()
		}
		return err
	}
	if err := j.acquire(ctx); err != nil {
		return err
	}
	defer j.release()
	if _, err := j.readMeta(); !errors.Is(err, fs.ErrNotExist) {
		return err // another process created it meanwhile (or it is damaged)
	}
	segs, err := listSegments(j.dir)
	if err != nil {
		return err
	}
	h, err := j.readHead()
	if errors.Is(err, fs.ErrNotExist) {
		if len(segs) > 0 {
			// The head is written before any segment: segments
			// without a head mean a journal that lost its head file.
			// Refuse to start over on top of them.
			return fmt.Errorf("%w: %s has segments but no head file; restore it, or move the segments away to start a new journal", ErrCorrupt, j.dir)
		}
		if err := j.writeFile(j.path(fileHeadName), encodeHead(fileHead{}), 0o666); err != nil {
			return fmt.Errorf("create head: %w", err)
		}
	} else if err != nil {
		return err
	}
	// A head without meta: meta was lost. Records below the lowest
	// segment are gone, so the tail starts there (a new epoch tells every
	// node to resync anyway).
	tail := h.Rev + 1
	if len(segs) > 0 && segs[0] <= h.Rev {
		tail = segs[0]
	}
	if err := j.writeFile(j.path(fileMetaName), encodeMeta(fileMeta{Epoch: sqldialect.NewEpoch(), Tail: tail}), 0o666); err != nil {
		return fmt.Errorf("create meta: %w", err)
	}
	return nil
}

func (j *File) path(name string) string { return filepath.Join(j.dir, name) }

// readHead reads the head file afresh (on NFS, opening it revalidates the
// cache: close-to-open consistency). A missing head file matches
// fs.ErrNotExist and ErrCorrupt.
func (j *File) readHead() (fileHead, error) {
	b, err := os.ReadFile(j.path(fileHeadName))
	if errors.Is(err, fs.ErrNotExist) {
		return fileHead{}, fmt.Errorf("%w: head file %s is missing: %w", ErrCorrupt, j.path(fileHeadName), err)
	}
	if err != nil {
		return fileHead{}, err
	}
	h, err := decodeHead(b)
	if err != nil {
		return fileHead{}, fmt.Errorf("%w: %s: %w", ErrCorrupt, j.path(fileHeadName), err)
	}
	return h, nil
}

// readMeta reads the meta file. A missing one matches fs.ErrNotExist.
func (j *File) readMeta() (fileMeta, error) {
	b, err := os.ReadFile(j.path(fileMetaName))
	if err != nil {
		return fileMeta{}, err
	}
	m, err := decodeMeta(b)
	if err != nil {
		return fileMeta{}, fmt.Errorf("%w: %s: %w", ErrCorrupt, j.path(fileMetaName), err)
	}
	return m, nil
}

// acquire takes the LOCK within the lock timeout.
func (j *File) acquire(ctx context.Context) error {
	err := j.lock.Acquire(ctx, j.cfg.LockTimeout)
	if errors.Is(err, filelock.ErrTimeout) {
		return fmt.Errorf("%w: journal LOCK not acquired within %v: %w", dialect.ErrLockTimeout, j.cfg.LockTimeout, err)
	}
	return err
}

func (j *File) release() {
	if err := j.lock.Unlock(); err != nil {
		j.cfg.Logger.Error("tandem: journal LOCK release failed", "dir", j.dir, "err", err)
	}
}

func (j *File) checkOpen() error {
	if j.closed.Load() {
		return ErrClosed
	}
	return nil
}

// Append implements Journal.
func (j *File) Append(ctx context.Context, entries ...Entry) ([]int64, error) {
	return j.c.append(ctx, -1, entries)
}

// AppendIf implements Journal.
func (j *File) AppendIf(ctx context.Context, head int64, entries ...Entry) ([]int64, error) {
	if head < 0 {
		return nil, fmt.Errorf("append journal: %w: head is %d, must be >= 0", ErrInvalidArgument, head)
	}
	return j.c.append(ctx, head, entries)
}

// writeBatch implements batchWriter; it runs on the committer goroutine.
func (j *File) writeBatch(ctx context.Context, entries []Entry, expect int64) (int64, error) {
	if err := j.acquire(ctx); err != nil {
		return 0, err
	}
	defer j.release()
	h, err := j.readHead()
	if err != nil {
		return 0, err
	}
	h, f, err := j.repair(h)
	if err != nil {
		return 0, err
	}
	defer func() {
		if f != nil {
			f.Close()
		}
	}()
	if expect >= 0 && expect != h.Rev {
		return 0, fmt.Errorf("%w: head is %d, expected %d", ErrConflict, h.Rev, expect)
	}

	size := 0
	for _, e := range entries {
		size += recordSize(j.cfg.NodeID, j.cfg.Instance, e.Producer, e.Payload)
	}
	buf := make([]byte, 0, size)
	now := time.Now()
	j.batchSeq++
	batch := (j.batchBase + j.batchSeq) & (1<<63 - 1)
	lastAt := 0 // where the batch's last record starts in buf
	for i, e := range entries {
		lastAt = len(buf)
		buf = appendRecord(buf, &Record{
			Revision: h.Rev + 1 + int64(i), NodeID: j.cfg.NodeID, Instance: j.cfg.Instance,
			Producer: e.Producer, Payload: e.Payload, Time: now,
		}, recBatch{v2: true, id: batch, remaining: uint32(len(entries) - 1 - i)})
	}

	seg, off := h.Seg, h.Off
	rollover := f == nil || off+int64(len(buf)) > j.cfg.SegmentSize
	if rollover {
		if f != nil {
			f.Close()
		}
		seg, off = h.Rev+1, 0
		f, err = j.openFile(j.path(segName(seg)), os.O_RDWR|os.O_CREATE|os.O_TRUNC, 0o666)
		if err != nil {
			f = nil
			return 0, fmt.Errorf("create segment: %w", err)
		}
	}
	// undo removes what this batch wrote, so that no later writer rolls
	// it forward: nothing was committed.
	undo := func() error {
		var err error
		if rollover {
			if err = os.Remove(f.Name()); err == nil {
				err = j.syncDir(j.dir)
			}
		} else if err = f.Truncate(off); err == nil {
			err = j.syncFile(f)
		}
		return err
	}
	fail := func(cause error) error {
		if err := undo(); err != nil {
			// The records may still be there, complete: the next
			// writer would roll them forward. The append is not
			// known to have failed.
			j.cfg.Logger.Warn("tandem: journal could not remove an uncommitted batch",
				"segment", f.Name(), "err", err)
			return sqldialect.Open(fmt.Errorf("%w; removing the batch again failed: %w", cause, err))
		}
		return cause
	}
	if _, err := f.WriteAt(buf, off); err != nil {
		return 0, fail(fmt.Errorf("write segment: %w", err))
	}
	if err := j.syncFile(f); err != nil {
		return 0, fail(fmt.Errorf("sync segment: %w", err))
	}
	if rollover {
		if err := j.syncDir(j.dir); err != nil {
			return 0, fail(fmt.Errorf("sync journal folder: %w", err))
		}
	}
	nh := fileHead{Rev: h.Rev + int64(len(entries)), Seg: seg, Off: off + int64(len(buf))}
	if err := j.writeFile(j.path(fileHeadName), encodeHead(nh), 0o666); err != nil && !errors.Is(err, atomicfile.ErrNotDurable) {
		return 0, fail(fmt.Errorf("write head: %w", err))
	}
	// Committed. With ErrNotDurable the head was renamed but the folder's
	// fsync failed: a crash may bring the old head back, and the next
	// writer rolls these fsynced records forward.
	j.verified = nh
	j.cursors.committed(nh, segPos{seg: seg, off: off + int64(lastAt)})
	j.hub.wake()
	return h.Rev + 1, nil
}

// Read implements Journal. It reads the head afresh and never past it,
// verifies each record's checksum (a bad record is an error matching
// ErrCorrupt, naming the segment and offset), and continues where an
// earlier Read of this instance ended without scanning.
func (j *File) Read(ctx context.Context, after int64, limit int) ([]Record, error) {
	res, err := j.poll(ctx, after, limit)
	if err == nil && res.BehindTail(after) {
		err = &BehindTailError{After: after, Tail: res.Tail}
	}
	if err != nil {
		return nil, fmt.Errorf("read journal: %w", err)
	}
	return res.Records, nil
}

// Poll implements Poller: the meta file (epoch and tail), the head file
// and the records after after, two small reads before the segments' where
// Poll's fallback makes four (Epoch, then Read's meta and head, then
// Head). Tail is always filled in.
func (j *File) Poll(ctx context.Context, after int64, limit int) (PollResult, error) {
	res, err := j.poll(ctx, after, limit)
	if err != nil {
		return PollResult{}, fmt.Errorf("poll journal: %w", err)
	}
	return res, nil
}

// poll serves Read and Poll. The meta file is read first: a tail read
// before the head is never above it, and a prune that deletes a segment
// after that read is told from damage by reading the meta file again.
func (j *File) poll(ctx context.Context, after int64, limit int) (PollResult, error) {
	if err := checkRead(after, limit); err != nil {
		return PollResult{}, err
	}
	if err := j.checkOpen(); err != nil {
		return PollResult{}, err
	}
	m, err := j.readMeta()
	if err != nil {
		return PollResult{}, err
	}
	h, err := j.readHead()
	if err != nil {
		return PollResult{}, err
	}
	res := PollResult{Epoch: m.Epoch, Tail: m.Tail, Head: h.Rev}
	if after+1 < m.Tail {
		return res, nil // BehindTail
	}
	if j.beforeRecords != nil {
		j.beforeRecords()
	}
	res.Records, err = j.readUpTo(ctx, h, after, limit)
	var bt *BehindTailError
	switch {
	case errors.As(err, &bt): // pruned since the meta file was read
		res.Records, res.Tail = nil, bt.Tail
	case err != nil:
		return PollResult{}, err
	}
	return res, nil
}

// readUpTo reads at most limit records after after, up to the head h.
func (j *File) readUpTo(ctx context.Context, h fileHead, after int64, limit int) ([]Record, error) {
	if after >= h.Rev {
		return []Record{}, nil
	}
	n := int(min(int64(limit), h.Rev-after))
	var recs []Record
	var end, last segPos
	var err error
	if pos, ok := j.cursors.get(after); ok && pos.seg <= h.Seg {
		recs, end, last, err = readRecords(ctx, j.dir, h, after, n, &pos)
		switch {
		case err == nil:
		case ctx.Err() != nil:
			// No scan to tell a wrong hint from damage: the error
			// is the context's, not what the hint led to.
			return nil, ctx.Err()
		default:
			// The position is only a hint; scan instead.
			j.cursors.forget(after)
			recs, end, last, err = readRecords(ctx, j.dir, h, after, n, nil)
		}
	} else {
		recs, end, last, err = readRecords(ctx, j.dir, h, after, n, nil)
	}
	if errors.Is(err, errSegmentGone) {
		// A prune deletes segments after raising the tail; without a
		// prune, a missing segment is a damaged journal.
		if m, merr := j.readMeta(); merr == nil && after+1 < m.Tail {
			return nil, &BehindTailError{After: after, Tail: m.Tail}
		}
		return nil, fmt.Errorf("%w: %w", ErrCorrupt, err)
	}
	if err != nil {
		return nil, err
	}
	j.cursors.moved(after, recs[len(recs)-1].Revision, end, last)
	return recs, nil
}

// Head implements Journal.
func (j *File) Head(ctx context.Context) (int64, error) {
	if err := j.checkOpen(); err != nil {
		return 0, fmt.Errorf("journal head: %w", err)
	}
	h, err := j.readHead()
	if err != nil {
		return 0, fmt.Errorf("journal head: %w", err)
	}
	return h.Rev, nil
}

// Tail implements Journal.
func (j *File) Tail(ctx context.Context) (int64, error) {
	if err := j.checkOpen(); err != nil {
		return 0, fmt.Errorf("journal tail: %w", err)
	}
	m, err := j.readMeta()
	if err != nil {
		return 0, fmt.Errorf("journal tail: %w", err)
	}
	return m.Tail, nil
}

// Epoch implements Journal.
func (j *File) Epoch(ctx context.Context) (string, error) {
	if err := j.checkOpen(); err != nil {
		return "", fmt.Errorf("journal epoch: %w", err)
	}
	m, err := j.readMeta()
	if err != nil {
		return "", fmt.Errorf("journal epoch: %w", err)
	}
	return m.Epoch, nil
}

// Prune implements Journal: RaiseTail, then DeleteBatch until nothing is
// left. It raises the tail in the meta file under the LOCK (so concurrent
// prunes never lower it), then deletes every segment whose records are all
// below the tail, never the head's segment, and returns the number of
// records in the segments it deleted.
func (j *File) Prune(ctx context.Context, below int64) (int64, error) {
	return pruneAll(ctx, j, below, 1)
}

// RaiseTail implements Pruner.
func (j *File) RaiseTail(ctx context.Context, below int64) (int64, error) {
	if err := j.checkOpen(); err != nil {
		return 0, fmt.Errorf("raise tail: %w", err)
	}
	// setTail holds the LOCK: it runs on the committer goroutine, which
	// Close waits for before it releases the LOCK.
	var err error
	if derr := j.c.do(ctx, func() { _, err = j.setTail(ctx, below) }); derr != nil {
		err = derr
	}
	if err != nil {
		return 0, fmt.Errorf("raise tail: %w", err)
	}
	m, err := j.readMeta()
	if err != nil {
		return 0, fmt.Errorf("raise tail: %w", err)
	}
	return m.Tail, nil
}

// DeleteBatch implements Pruner: it deletes the lowest segment if every
// record in it is below the tail (never the head's segment) and returns
// how many records it held. limit is not used: a segment is the unit.
func (j *File) DeleteBatch(ctx context.Context, limit int) (int64, error) {
	if err := j.checkOpen(); err != nil {
		return 0, fmt.Errorf("delete batch: %w", err)
	}
	if limit <= 0 {
		return 0, fmt.Errorf("delete batch: %w: limit is %d, must be > 0", ErrInvalidArgument, limit)
	}
	m, err := j.readMeta()
	if err != nil {
		return 0, fmt.Errorf("delete batch: %w", err)
	}
	h, err := j.readHead()
	if err != nil {
		return 0, fmt.Errorf("delete batch: %w", err)
	}
	segs, err := listSegments(j.dir)
	if err != nil {
		return 0, fmt.Errorf("delete batch: %w", err)
	}
	for i := 0; i+1 < len(segs) && segs[i+1] <= m.Tail && segs[i+1] <= h.Rev; i++ {
		// segs[i] holds segs[i] … segs[i+1]-1, all below the tail.
		err := os.Remove(j.path(segName(segs[i])))
		if errors.Is(err, fs.ErrNotExist) {
			continue // a concurrent prune got there first
		}
		if err != nil {
			return 0, fmt.Errorf("delete batch: %w", err)
		}
		if err := j.syncDir(j.dir); err != nil {
			return 0, fmt.Errorf("delete batch: sync folder: %w", err)
		}
		return segs[i+1] - segs[i], nil
	}
	return 0, nil
}

// setTail validates below against the head and raises the tail to it.
func (j *File) setTail(ctx context.Context, below int64) (fileHead, error) {
	if err := j.acquire(ctx); err != nil {
		return fileHead{}, err
	}
	defer j.release()
	h, err := j.readHead()
	if err != nil {
		return h, err
	}
	if below < 1 || below > h.Rev+1 {
		return h, fmt.Errorf("%w: below is %d, must be in [1, head+1 = %d]", ErrInvalidArgument, below, h.Rev+1)
	}
	m, err := j.readMeta()
	if err != nil {
		return h, err
	}
	if below > m.Tail {
		m.Tail = below
		if err := j.writeFile(j.path(fileMetaName), encodeMeta(m), 0o666); err != nil {
			return h, fmt.Errorf("set tail: %w", err)
		}
	}
	return h, nil
}

// CanWatch reports true: Watch works (though it sees only commits made
// through this machine's kernel; see File).
func (j *File) CanWatch() bool { return true }

// Watch implements Watcher. The first call starts the journal's one file
// watch on its folder (fsnotify), stopped by Close; it wakes on every
// replacement of the head file. Appends on this instance wake its watchers
// directly. Over NFS, commits by other machines are not seen: keep
// polling.
func (j *File) Watch(ctx context.Context) (<-chan struct{}, error) {
	j.watchMu.Lock()
	defer j.watchMu.Unlock()
	if j.bg.Err() != nil {
		return nil, fmt.Errorf("watch journal: %w", ErrClosed)
	}
	if j.watcher == nil {
		w, err := fsnotify.NewWatcher()
		if err != nil {
			return nil, fmt.Errorf("watch journal: %w", err)
		}
		if err := w.Add(j.dir); err != nil {
			w.Close()
			return nil, fmt.Errorf("watch journal: %w", err)
		}
		j.watcher = w
		j.bgDone.Add(1)
		go j.watchLoop(w)
	}
	return j.hub.subscribe(ctx, j.bg), nil
}

func (j *File) watchLoop(w *fsnotify.Watcher) {
	defer j.bgDone.Done()
	failing := false
	for {
		select {
		case <-j.bg.Done():
			return
		case ev, ok := <-w.Events:
			if !ok {
				return
			}
			if filepath.Base(ev.Name) == fileHeadName && !ev.Has(fsnotify.Chmod) {
				failing = false
				j.hub.wake()
			}
		case err, ok := <-w.Errors:
			if !ok {
				return
			}
			if !failing {
				j.cfg.Logger.Warn("tandem: journal file watch reported an error; polling covers what it missed",
					"dir", j.dir, "err", err)
				failing = true
			}
			j.hub.wake() // e.g. a queue overflow: events were lost
		}
	}
}

// Close implements Journal. It waits for the batch being written and for
// a RaiseTail under way (every holder of the LOCK runs on the committer
// goroutine), stops the file watch and releases the LOCK file. Calls after
// Close fail with ErrClosed.
func (j *File) Close(ctx context.Context) error {
	j.closeMu.Lock()
	defer j.closeMu.Unlock()
	if j.closed.Load() {
		return nil
	}
	j.closed.Store(true)
	err := j.c.close(ctx)
	j.stopBG()
	j.watchMu.Lock()
	if j.watcher != nil {
		j.watcher.Close()
	}
	j.watchMu.Unlock()
	j.bgDone.Wait()
	if err != nil {
		// The batch in flight still holds the LOCK: release it when done.
		go func() {
			<-j.c.done
			j.lock.Close()
		}()
		return fmt.Errorf("close journal: %w", err)
	}
	if err := j.lock.Close(); err != nil {
		return fmt.Errorf("close journal: %w", err)
	}
	return nil
}

// Stats returns counters of this instance's appends and group commits. It
// is safe to call at any time.
func (j *File) Stats() Stats { return j.c.statsSnapshot() }
