package datastore

import (
	"context"
	"crypto/rand"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/tandem-go/tandem/internal/atomicfile"
	"github.com/tandem-go/tandem/lock"
)

// FileConfig configures a File. The zero value of each field means its
// default.
type FileConfig struct {
	// Dir is the shared folder; blobs live in Dir/blobs. Required.
	Dir string
	// SkipVerify makes Get's readers skip hashing the content. Defaults
	// to false: every Get verifies it.
	SkipVerify bool
}

// File is the Store in a shared folder (local disk, NFS, SMB), shared by
// every node that opens the same dir:
//
//	<dir>/blobs/ab/cd/ef/<id>    a blob, named by its id (ab, cd, ef: its first 6 digits)
//	<dir>/blobs/tmp/             uploads in progress, and the collector's scratch files
//
// A Put writes a temp file in <dir>/blobs/tmp (on the same file system as
// the blobs, so the rename cannot cross devices), hashing as it copies,
// fsyncs it, renames it into place and fsyncs the folder. A blob's last
// use is its file's modification time, which Put and Touch set with
// utimensat(UTIME_NOW): on NFS that is the server's clock, never a node's,
// and the collector learns "now" from the modification time of a file it
// creates, so it compares times of one clock only.
//
// File needs what the journal's file backend needs of NFS (close-to-open
// consistency) and an atomic rename; it takes no file locks. A collector
// checks a blob's modification time on a freshly opened file, so that an
// NFS attribute cache cannot hide another node's Touch. While it checks a
// candidate (unreferenced, unused for the grace period) the blob is moved
// aside for an instant: a Get or Stat of it then reports ErrNotFound, and
// a Touch does too (the caller puts the content again), even if the
// collector then keeps it. A stored copy is compared by length only when
// the same content is put again; Get's verification finds other damage. Putting content
// that is stored already costs a full write of the temp file, which is
// then removed. It holds no
// open files between calls and needs no Close. Safe for concurrent use.
type File struct {
	dir, blobs, tmp string
	cfg             FileConfig
}

var (
	_ Store       = (*File)(nil)
	_ collectable = (*File)(nil)
)

// OpenFile opens the data store in cfg.Dir, creating <Dir>/blobs and
// <Dir>/blobs/tmp when they do not exist. ctx bounds these folder checks:
// OpenFile fails at once when it is done.
func OpenFile(ctx context.Context, cfg FileConfig) (*File, error) {
	if cfg.Dir == "" {
		return nil, fmt.Errorf("open file datastore: %w: Dir is empty", ErrInvalidArgument)
	}
	if err := ctx.Err(); err != nil {
		return nil, fmt.Errorf("open file datastore: %w", err)
	}
	s := &File{dir: cfg.Dir, blobs: filepath.Join(cfg.Dir, "blobs"), cfg: cfg}
	s.tmp = filepath.Join(s.blobs, "tmp")
	if err := os.MkdirAll(s.tmp, 0o755); err != nil {
		return nil, fmt.Errorf("open file datastore: %w", err)
	}
	return s, nil
}

// path is where the blob id lives.
func (s *File) path(id ID) string {
	return filepath.Join(s.blobs, string(id[0:2]), string(id[2:4]), string(id[4:6]), string(id))
}

// Put implements Store.
func (s *File) Put(ctx context.Context, r io.Reader) (Info, error) {
	f, err := os.CreateTemp(s.tmp, "put.*.tmp")
	if err != nil {
		return Info{}, fmt.Errorf("put blob: %w", err)
	}
	tmp := f.Name()
	landed := false
	defer func() {
		if !landed {
			f.Close()
			os.Remove(tmp)
		}
	}()
	h := sha256.New()
	n, err := copyHashing(f, h, ctxReader{ctx, r})
	if err != nil {
		return Info{}, err
	}
	// The id is known: create the blob's folders (fsyncing each new
	// one's parent) while the content is fsynced.
	id := sumID(h)
	dirs := make(chan error, 1)
	go func() { dirs <- s.mkdirs(id) }()
	err = f.Sync()
	// A folder a collector removed between two Mkdirs is made again by
	// land, which checks the path right before its rename.
	if derr := <-dirs; err == nil && derr != nil && !errors.Is(derr, fs.ErrNotExist) {
		err = derr
	}
	if err != nil {
		return Info{}, fmt.Errorf("put blob: fsync: %w", err)
	}
	if err := f.Close(); err != nil {
		return Info{}, fmt.Errorf("put blob: %w", err)
	}
	in, err := s.land(id, tmp, n)
	if err != nil {
		return Info{}, fmt.Errorf("put blob %s: %w", id, err)
	}
	landed = true
	return in, nil
}

// landAttempts bounds how often land makes the blob's folders again after
// a collector removed one of them, emptied, between land's Mkdir and the
// next step (each try is a few system calls; a folder that stays missing,
// the blobs folder itself say, fails the Put after these).
const landAttempts = 100

// land makes the fsynced temp file tmp (n bytes hashing to id) the blob
// id, or, when the blob exists with that length, refreshes its last use
// and removes tmp. A stored file of another length (corrupt) is replaced.
func (s *File) land(id ID, tmp string, n int64) (Info, error) {
	target := s.path(id)
	for attempt := 0; ; attempt++ {
		if fi, err := os.Stat(target); err == nil && fi.Size() == n {
			// Stored already: refresh its last use on the file server.
			// If a collector removed it since the Stat, the touch fails
			// and this Put lands its own copy instead.
			if err := touchFile(target); err == nil {
				os.Remove(tmp)
				return s.stat(id)
			} else if !errors.Is(err, fs.ErrNotExist) {
				return Info{}, err
			}
		}
		// The blob's last use is now, not when the upload began.
		if err := touchFile(tmp); errors.Is(err, fs.ErrNotExist) {
			return Info{}, ErrUploadExpired // removed by a collector as abandoned
		} else if err != nil {
			return Info{}, err
		}
		err := s.moveIn(id, tmp)
		if errors.Is(err, fs.ErrNotExist) && attempt < landAttempts {
			continue // a collector removed an emptied folder of the path meanwhile
		}
		if err != nil {
			return Info{}, err
		}
		if err := atomicfile.SyncDir(filepath.Dir(target)); err != nil {
			return Info{}, fmt.Errorf("fsync folder: %w", err)
		}
		return s.stat(id)
	}
}

// moveIn renames src into place at id's path, making the path's folders
// first when the rename finds one missing: a Put made them already (its
// own mkdirs, whose fsyncs it waited for) and a blob a sweep moved aside
// usually still has them, so the rename comes first, and the three
// Mkdirs, each a round trip on NFS, only when it fails. An error matching
// fs.ErrNotExist can mean that a folder of the path was emptied and
// removed between the Mkdirs and the rename (by a collector, an
// operator's Delete), or that src is gone: land and restore check and try
// again.
func (s *File) moveIn(id ID, src string) error {
	err := os.Rename(src, s.path(id))
	if !errors.Is(err, fs.ErrNotExist) {
		return err
	}
	if err := s.mkdirs(id); err != nil {
		return err
	}
	return os.Rename(src, s.path(id))
}

// mkdirs creates the folders of id's path and then fsyncs, concurrently,
// the parent of each one, so that the path's entries are durable when it
// returns. That includes the folders that were there already: one that
// another Put (of this process or another node) or a failed mkdirs has
// just made may not be durable yet, and a blob acknowledged under it
// would be lost with it in a crash. (A process-wide memo of folders known
// durable would not do: a collector removes emptied folders, and one made
// again elsewhere starts out undurable.)
func (s *File) mkdirs(id ID) error {
	dir := s.blobs
	var parents []string
	for _, part := range []string{string(id[0:2]), string(id[2:4]), string(id[4:6])} {
		sub := filepath.Join(dir, part)
		if err := mkdir(sub, 0o755); err != nil && !errors.Is(err, fs.ErrExist) {
			return err
		}
		parents = append(parents, dir)
		dir = sub
	}
	errs := make(chan error, len(parents))
	for _, p := range parents {
		go func() { errs <- syncFolder(p) }()
	}
	var err error
	for range parents {
		if e := <-errs; e != nil && err == nil {
			err = fmt.Errorf("fsync folder: %w", e)
		}
	}
	return err
}

// Get implements Store.
func (s *File) Get(ctx context.Context, id ID) (io.ReadCloser, error) {
	if err := id.check("get blob"); err != nil {
		return nil, err
	}
	f, err := os.Open(s.path(id))
	if errors.Is(err, fs.ErrNotExist) {
		return nil, fmt.Errorf("get blob %s: %w", id, ErrNotFound)
	}
	if err != nil {
		return nil, fmt.Errorf("get blob %s: %w", id, err)
	}
	fi, err := f.Stat()
	if err != nil {
		f.Close()
		return nil, fmt.Errorf("get blob %s: %w", id, err)
	}
	return newVerifier(id, f, fi.Size(), s.cfg.SkipVerify, f.Close), nil
}

// Stat implements Store.
func (s *File) Stat(ctx context.Context, id ID) (Info, error) {
	if err := id.check("stat blob"); err != nil {
		return Info{}, err
	}
	in, err := s.stat(id)
	if err != nil {
		return Info{}, fmt.Errorf("stat blob %s: %w", id, err)
	}
	return in, nil
}

func (s *File) stat(id ID) (Info, error) {
	fi, err := os.Stat(s.path(id))
	if errors.Is(err, fs.ErrNotExist) {
		return Info{}, ErrNotFound
	}
	if err != nil {
		return Info{}, err
	}
	return Info{ID: id, Length: fi.Size(), LastUsed: fi.ModTime()}, nil
}

// Exists implements Store.
func (s *File) Exists(ctx context.Context, id ID) (bool, error) {
	_, err := s.Stat(ctx, id)
	if errors.Is(err, ErrNotFound) {
		return false, nil
	}
	return err == nil, err
}

// Touch implements Store.
func (s *File) Touch(ctx context.Context, id ID) error {
	if err := id.check("touch blob"); err != nil {
		return err
	}
	err := touchFile(s.path(id))
	if errors.Is(err, fs.ErrNotExist) {
		return fmt.Errorf("touch blob %s: %w", id, ErrNotFound)
	}
	if err != nil {
		return fmt.Errorf("touch blob %s: %w", id, err)
	}
	return nil
}

// Delete implements Store.
func (s *File) Delete(ctx context.Context, id ID) error {
	if err := id.check("delete blob"); err != nil {
		return err
	}
	p := s.path(id)
	err := os.Remove(p)
	if errors.Is(err, fs.ErrNotExist) {
		return fmt.Errorf("delete blob %s: %w", id, ErrNotFound)
	}
	if err != nil {
		return fmt.Errorf("delete blob %s: %w", id, err)
	}
	if err := atomicfile.SyncDir(filepath.Dir(p)); err != nil {
		return fmt.Errorf("delete blob %s: fsync folder: %w", id, err)
	}
	s.removeEmpty(filepath.Dir(p))
	return nil
}

// removeEmpty removes the blob folder dir and its parents up to (not
// including) <dir>/blobs while they are empty. A Put that created one of
// them meanwhile retries its folders and its rename.
func (s *File) removeEmpty(dir string) {
	for dir != s.blobs && strings.HasPrefix(dir, s.blobs) {
		if os.Remove(dir) != nil {
			return
		}
		dir = filepath.Dir(dir)
	}
}

// Walk implements Store: it reads the folders in name order, which is id
// order. Files whose name is not a well-formed id in the right folder are
// skipped.
func (s *File) Walk(ctx context.Context, fn func(Info) error) error {
	var walk func(dir string, depth int, prefix string) error
	walk = func(dir string, depth int, prefix string) error {
		if err := ctx.Err(); err != nil {
			return err
		}
		ents, err := os.ReadDir(dir)
		if errors.Is(err, fs.ErrNotExist) && depth > 0 {
			return nil // removed by a collector meanwhile
		}
		if err != nil {
			return fmt.Errorf("walk blobs: %w", err)
		}
		for _, e := range ents {
			name := e.Name()
			if depth < 3 {
				if e.IsDir() && len(name) == 2 && ID(prefix+name+strings.Repeat("0", 62-len(prefix))).Valid() {
					if err := walk(filepath.Join(dir, name), depth+1, prefix+name); err != nil {
						return err
					}
				}
				continue
			}
			id := ID(name)
			if !e.Type().IsRegular() || !strings.HasPrefix(name, prefix) || !id.Valid() {
				continue
			}
			fi, err := e.Info()
			if errors.Is(err, fs.ErrNotExist) {
				continue
			}
			if err != nil {
				return fmt.Errorf("walk blobs: %w", err)
			}
			if err := fn(Info{ID: id, Length: fi.Size(), LastUsed: fi.ModTime()}); err != nil {
				return err
			}
		}
		return nil
	}
	return walk(s.blobs, 0, "")
}

// The collector's side (collectable).

// trashSuffix ends the name of a blob a sweep moved aside to check it:
// <id>.<random>.gc in the tmp folder.
const trashSuffix = ".gc"

// storeNow learns the file server's time: the modification time of a file
// it creates.
func (s *File) storeNow(ctx context.Context) (time.Time, error) {
	f, err := os.CreateTemp(s.tmp, "now.*.tmp")
	if err != nil {
		return time.Time{}, fmt.Errorf("read file server time: %w", err)
	}
	name := f.Name()
	defer os.Remove(name)
	_, err = f.Write([]byte{0})
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		return time.Time{}, fmt.Errorf("read file server time: %w", err)
	}
	fi, err := os.Stat(name)
	if err != nil {
		return time.Time{}, fmt.Errorf("read file server time: %w", err)
	}
	return fi.ModTime(), nil
}

// sweep deletes the blobs of batch whose last use is still before cutoff,
// under lease.Fenced. Each is first renamed aside (atomically: a Touch or
// Put that comes later finds it missing and stores the content again),
// then its modification time, which a Touch that reported success has set
// (touchFile checks that the name was still in place after it set the
// time), is checked on the renamed file: touched since cutoff, it is
// renamed back (and touched, since its content may be needed); otherwise
// removed.
func (s *File) sweep(ctx context.Context, lease *lock.Lease, batch []Info, cutoff time.Time) ([]Info, error) {
	var deleted []Info
	err := lease.Fenced(ctx, func(ctx context.Context) error {
		dirs := map[string]bool{}
		for _, in := range batch {
			if err := ctx.Err(); err != nil {
				return err
			}
			p := s.path(in.ID)
			trash := filepath.Join(s.tmp, string(in.ID)+"."+randomHex(8)+trashSuffix)
			err := os.Rename(p, trash)
			if errors.Is(err, fs.ErrNotExist) {
				continue // deleted meanwhile
			}
			if err != nil {
				return err
			}
			fi, err := statFresh(trash)
			if err != nil || !fi.ModTime().Before(cutoff) {
				if rerr := s.restore(in.ID, trash); rerr != nil {
					return errors.Join(err, rerr)
				}
				if err != nil {
					return err
				}
				continue
			}
			if err := os.Remove(trash); err != nil {
				return err
			}
			deleted = append(deleted, Info{ID: in.ID, Length: fi.Size(), LastUsed: fi.ModTime()})
			dirs[filepath.Dir(p)] = true
		}
		for dir := range dirs {
			if err := atomicfile.SyncDir(dir); err != nil && !errors.Is(err, fs.ErrNotExist) {
				return fmt.Errorf("fsync folder: %w", err)
			}
			s.removeEmpty(dir)
		}
		return nil
	})
	return deleted, err
}

// stillThere is the second half of touchFile: it opens path afresh (on
// NFS, opening revalidates the cached name: close-to-open) and fails with
// an error matching fs.ErrNotExist if the name no longer leads to a file.
// A collector's sweep renames a blob aside before it reads the blob's
// time, so a touch that set the time and then found the name in place set
// it before any such rename, and the sweep sees it and puts the blob
// back. Without the check a touch could resolve the name, lose the race
// to the rename, set the time of the file just moved aside after the
// sweep read it, and report success for a blob that the sweep removes.
func stillThere(path string) error {
	if afterTouch != nil {
		afterTouch(path)
	}
	f, err := os.Open(path)
	if err != nil {
		return err
	}
	return f.Close()
}

// mkdir makes a blob folder: os.Mkdir, or a counter in tests.
var mkdir = os.Mkdir

// syncFolder fsyncs the parent of a blob folder in mkdirs:
// atomicfile.SyncDir, or a recorder in tests.
var syncFolder = atomicfile.SyncDir

// afterTouch, when a test sets it, runs between a touch and its check.
var afterTouch func(path string)

// statFresh returns the attributes of path as the file server has them
// now: opening the file makes an NFS client revalidate its cached
// attributes (close-to-open), which a plain stat may answer from its
// attribute cache for seconds — too old to see a Touch of another node.
func statFresh(path string) (fs.FileInfo, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	return f.Stat()
}

// restore puts a blob a sweep moved aside back in place and touches it.
// Should a Put have stored the same content meanwhile, the rename replaces
// it with identical bytes.
func (s *File) restore(id ID, trash string) error {
	for attempt := 0; ; attempt++ {
		err := s.moveIn(id, trash)
		if err == nil {
			break
		}
		// A folder of the path emptied and removed meanwhile (another
		// collector, an operator's Delete): make it again, as land does.
		if _, serr := os.Stat(trash); errors.Is(err, fs.ErrNotExist) && serr == nil && attempt < landAttempts {
			continue
		}
		return err
	}
	if err := touchFile(s.path(id)); err != nil {
		return err
	}
	return atomicfile.SyncDir(filepath.Dir(s.path(id)))
}

// reap removes abandoned uploads: temp files of the tmp folder last
// written before cutoff. It also restores blobs a sweep that died (a
// crashed collector) left moved aside. In a dry run it only counts.
func (s *File) reap(ctx context.Context, lease *lock.Lease, cutoff time.Time, dryRun bool) (int64, error) {
	var n int64
	work := func(ctx context.Context) error {
		ents, err := os.ReadDir(s.tmp)
		if err != nil {
			return err
		}
		for _, e := range ents {
			if err := ctx.Err(); err != nil {
				return err
			}
			name := e.Name()
			full := filepath.Join(s.tmp, name)
			switch {
			case strings.HasSuffix(name, trashSuffix) && !dryRun:
				if id := ID(strings.SplitN(name, ".", 2)[0]); id.Valid() {
					if err := s.restore(id, full); err != nil && !errors.Is(err, fs.ErrNotExist) {
						return err
					}
				}
			case strings.HasSuffix(name, ".tmp"):
				fi, err := e.Info()
				if err != nil || !fi.ModTime().Before(cutoff) {
					continue
				}
				if !dryRun {
					if err := os.Remove(full); err != nil {
						continue // removed meanwhile
					}
				}
				n++
			}
		}
		return nil
	}
	if dryRun {
		return n, work(ctx)
	}
	return n, lease.Fenced(ctx, work)
}

// randomHex returns n random bytes in hex.
func randomHex(n int) string {
	b := make([]byte, n)
	_, _ = rand.Read(b) // crypto/rand.Read never fails
	return hex.EncodeToString(b)
}
