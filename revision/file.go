package revision

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"hash/crc32"
	"io/fs"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/tandem-go/tandem/ident"
	"github.com/tandem-go/tandem/internal/atomicfile"
)

// ErrCorrupt: a position file of the file store does not parse or fails
// its checksum.
var ErrCorrupt = errors.New("revision: corrupt position file")

// staleTempAge is how old a temp file must be for OpenFile to remove it.
const staleTempAge = time.Hour

const revSuffix = ".rev"

// File is the Store in a shared folder: one file per node,
// <dir>/nodes/<node>.rev, replaced atomically on every Save (temp file in
// the same folder, fsync, rename, fsync of the folder). A position file is
// a few lines of text:
//
//	tandem-revision 1
//	node <node id>
//	revision <decimal>
//	epoch <epoch, possibly empty>
//	updated <RFC 3339 time, UTC, the saving node's clock>
//	crc32c <8 hex digits: CRC-32C of the lines above, newlines included>
//
// An evicted position (see Evicter) has the epoch "evicted-" + its epoch:
// a node of a release that knows no eviction reads it as a position of
// another journal and resyncs, which is what eviction asks of it.
//
// Copy creates the target with link(2), which fails when it exists, so of
// two concurrent Copies to one node exactly one succeeds. Over NFS this
// relies on the server's atomic link and rename (NFSv3 and v4 have both);
// on a file system without hard links Copy falls back to an exclusive
// create, during which a concurrent Load may see a half-written file and
// fail with ErrCorrupt.
//
// Every method fails at once, and writes nothing, when its ctx is done.
// File I/O cannot be interrupted, so ctx is checked before a method starts
// and again before a write that follows a read (Evict, Unevict, Copy): a
// context that ends during a read or write stops what would come after it.
//
// File is safe for concurrent use, by many goroutines and many processes.
// It holds no resources: there is nothing to close.
type File struct {
	dir string // <dir>/nodes

	// beforeCheck, when set (tests), runs in Unevict after the new file
	// is written, before the check that the old one is still in place.
	beforeCheck func()
}

var (
	_ Store   = (*File)(nil)
	_ Evicter = (*File)(nil)
)

// FileConfig configures a File. The zero value of each field means its
// default.
type FileConfig struct {
	// Dir is the shared folder; positions live in Dir/nodes. Required.
	Dir string
}

// OpenFile opens the store in cfg.Dir (the shared folder; positions live
// in Dir/nodes), creating the folder when it does not exist, and removes
// temp files older than an hour that crashed writers left behind. ctx
// bounds these folder checks: OpenFile fails at once when it is done.
func OpenFile(ctx context.Context, cfg FileConfig) (*File, error) {
	if cfg.Dir == "" {
		return nil, fmt.Errorf("open revision store: %w: Dir is empty", ErrInvalidArgument)
	}
	if err := ctx.Err(); err != nil {
		return nil, fmt.Errorf("open revision store: %w", err)
	}
	nodes := filepath.Join(cfg.Dir, "nodes")
	if err := os.MkdirAll(nodes, 0o777); err != nil {
		return nil, fmt.Errorf("open revision store: %w", err)
	}
	if _, err := atomicfile.RemoveStale(nodes, staleTempAge); err != nil {
		return nil, fmt.Errorf("open revision store: %w", err)
	}
	return &File{dir: nodes}, nil
}

func (s *File) path(nodeID string) string { return filepath.Join(s.dir, nodeID+revSuffix) }

// Load implements Store.
func (s *File) Load(ctx context.Context, nodeID string) (Position, error) {
	if err := ident.NodeID("nodeID", nodeID); err != nil {
		return Position{}, fmt.Errorf("load revision: %w", err)
	}
	if err := ctx.Err(); err != nil {
		return Position{}, fmt.Errorf("load revision of %q: %w", nodeID, err)
	}
	p, err := s.load(nodeID)
	if err != nil {
		return Position{}, fmt.Errorf("load revision of %q: %w", nodeID, err)
	}
	return p, nil
}

func (s *File) load(nodeID string) (Position, error) {
	b, err := s.read(nodeID)
	if err != nil {
		return Position{}, err
	}
	return s.decode(nodeID, b)
}

// read returns the content of the node's position file, or ErrNotFound.
func (s *File) read(nodeID string) ([]byte, error) {
	b, err := os.ReadFile(s.path(nodeID))
	if errors.Is(err, fs.ErrNotExist) {
		return nil, ErrNotFound
	}
	return b, err
}

// decode parses b, the content of the node's position file.
func (s *File) decode(nodeID string, b []byte) (Position, error) {
	p, err := decodePosition(b)
	if err != nil {
		return Position{}, fmt.Errorf("%w: %s: %v", ErrCorrupt, s.path(nodeID), err)
	}
	if p.NodeID != nodeID {
		return Position{}, fmt.Errorf("%w: %s holds the position of node %q", ErrCorrupt, s.path(nodeID), p.NodeID)
	}
	return p, nil
}

// Save implements Store.
func (s *File) Save(ctx context.Context, nodeID string, rev int64, epoch string) error {
	if err := checkSave(nodeID, rev, epoch); err != nil {
		return fmt.Errorf("save revision: %w", err)
	}
	if err := ctx.Err(); err != nil {
		return fmt.Errorf("save revision of %q: %w", nodeID, err)
	}
	b := encodePosition(Position{NodeID: nodeID, Revision: rev, Epoch: epoch, Updated: time.Now()})
	if err := atomicfile.WriteFile(s.path(nodeID), b, 0o666); err != nil {
		return fmt.Errorf("save revision of %q: %w", nodeID, err)
	}
	return nil
}

// List implements Store. Files that are not positions (temp files, other
// names) are ignored; a position deleted while List runs is left out.
func (s *File) List(ctx context.Context) ([]Position, error) {
	if err := ctx.Err(); err != nil {
		return nil, fmt.Errorf("list revisions: %w", err)
	}
	ents, err := os.ReadDir(s.dir)
	if err != nil {
		return nil, fmt.Errorf("list revisions: %w", err)
	}
	var out []Position
	for _, e := range ents {
		node, ok := strings.CutSuffix(e.Name(), revSuffix)
		if !ok || !e.Type().IsRegular() || ident.NodeID("", node) != nil {
			continue
		}
		if err := ctx.Err(); err != nil {
			return nil, fmt.Errorf("list revisions: %w", err)
		}
		p, err := s.load(node)
		if errors.Is(err, ErrNotFound) {
			continue
		}
		if err != nil {
			return nil, fmt.Errorf("list revisions: %w", err)
		}
		out = append(out, p)
	}
	// File names sort differently from node ids ("a-b.rev" < "a.rev").
	slices.SortFunc(out, func(a, b Position) int { return strings.Compare(a.NodeID, b.NodeID) })
	return out, nil
}

// Delete implements Store.
func (s *File) Delete(ctx context.Context, nodeID string) error {
	if err := ident.NodeID("nodeID", nodeID); err != nil {
		return fmt.Errorf("delete revision: %w", err)
	}
	if err := ctx.Err(); err != nil {
		return fmt.Errorf("delete revision of %q: %w", nodeID, err)
	}
	err := os.Remove(s.path(nodeID))
	if errors.Is(err, fs.ErrNotExist) {
		return nil
	}
	if err == nil {
		err = atomicfile.SyncDir(s.dir)
	}
	if err != nil {
		return fmt.Errorf("delete revision of %q: %w", nodeID, err)
	}
	return nil
}

// Evict implements Evicter. It replaces the position file with an evicted
// one if it still holds rev, unmarked, through replaceIf: a Save that
// lands before its check is kept (and Evict reports false).
func (s *File) Evict(ctx context.Context, nodeID string, rev int64) (bool, error) {
	return s.mark(ctx, "evict", nodeID, rev, true)
}

// Unevict implements Evicter. It replaces the position file with one
// without the marker if it still holds rev and is marked, through
// replaceIf: the node, live again, must not have a newer position of its
// set back to rev, since it saves again only once its position moves.
func (s *File) Unevict(ctx context.Context, nodeID string, rev int64) (bool, error) {
	return s.mark(ctx, "unevict", nodeID, rev, false)
}

// mark sets nodeID's eviction marker to evicted if its position holds rev
// with the marker the other way; verb names it in errors.
func (s *File) mark(ctx context.Context, verb, nodeID string, rev int64, evicted bool) (bool, error) {
	if err := ident.NodeID("nodeID", nodeID); err != nil {
		return false, fmt.Errorf("%s revision: %w", verb, err)
	}
	if err := ctx.Err(); err != nil {
		return false, fmt.Errorf("%s revision of %q: %w", verb, nodeID, err)
	}
	done, err := s.replaceIf(ctx, nodeID, rev, evicted)
	if err != nil {
		return false, fmt.Errorf("%s revision of %q: %w", verb, nodeID, err)
	}
	return done, nil
}

// replaceIf writes nodeID's position with the marker set to evicted if the
// file holds rev with the marker the other way. It writes the new file
// under a temp name first and renames it into place only if the position
// file still has the content it read (a Save always changes it), so a Save
// of the node's that landed meanwhile is kept. One that lands between that
// second read and the rename is still overwritten: a window of one read
// and one rename, with no fsync in it. A shared folder offers no
// compare-and-swap that Save, a single rename, could take part in.
func (s *File) replaceIf(ctx context.Context, nodeID string, rev int64, evicted bool) (bool, error) {
	old, err := s.read(nodeID)
	if errors.Is(err, ErrNotFound) {
		return false, nil
	}
	if err != nil {
		return false, err
	}
	p, err := s.decode(nodeID, old)
	if err != nil {
		return false, err
	}
	if p.Evicted == evicted || p.Revision != rev {
		return false, nil
	}
	if err := ctx.Err(); err != nil {
		return false, err
	}
	p.Evicted = evicted
	path := s.path(nodeID)
	tmp, err := atomicfile.WriteTemp(path, encodePosition(p), 0o666)
	if err != nil {
		return false, err
	}
	if s.beforeCheck != nil {
		s.beforeCheck()
	}
	// A read, not a stat: it compares content, which a Save always
	// changes (a file's identity could be reused), and an open
	// revalidates the name on NFS (close-to-open consistency).
	now, err := s.read(nodeID)
	if err != nil || !bytes.Equal(now, old) {
		os.Remove(tmp)
		if err == nil || errors.Is(err, ErrNotFound) {
			return false, nil // saved or deleted meanwhile
		}
		return false, err
	}
	if err := os.Rename(tmp, path); err != nil {
		os.Remove(tmp)
		return false, err
	}
	if err := atomicfile.SyncDir(s.dir); err != nil {
		return false, fmt.Errorf("%w: %w", atomicfile.ErrNotDurable, err)
	}
	return true, nil
}

// evictedPrefix marks an evicted position's epoch in a position file.
const evictedPrefix = "evicted-"

// Copy implements Store. The target appears atomically, complete, and only
// if it did not exist (link(2) of a finished temp file).
func (s *File) Copy(ctx context.Context, from, to string) error {
	if err := ident.NodeID("from", from); err != nil {
		return fmt.Errorf("copy revision: %w", err)
	}
	if err := ident.NodeID("to", to); err != nil {
		return fmt.Errorf("copy revision: %w", err)
	}
	if err := s.copy(ctx, from, to); err != nil {
		return fmt.Errorf("copy revision %q to %q: %w", from, to, err)
	}
	return nil
}

func (s *File) copy(ctx context.Context, from, to string) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	p, err := s.load(from)
	if errors.Is(err, ErrNotFound) {
		return fmt.Errorf("%q: %w", from, ErrNotFound)
	}
	if err != nil {
		return err
	}
	if _, err := os.Lstat(s.path(to)); err == nil {
		return fmt.Errorf("%q: %w", to, ErrExists)
	}
	if err := ctx.Err(); err != nil {
		return err
	}
	p.NodeID, p.Updated = to, time.Now()
	b := encodePosition(p)
	target := s.path(to)
	tmp, err := atomicfile.WriteTemp(target, b, 0o666)
	if err != nil {
		return err
	}
	err = os.Link(tmp, target)
	os.Remove(tmp)
	switch {
	case err == nil:
	case errors.Is(err, fs.ErrExist):
		return fmt.Errorf("%q: %w", to, ErrExists)
	case errors.Is(err, errors.ErrUnsupported), errors.Is(err, fs.ErrPermission):
		// No hard links here (some SMB and FUSE file systems).
		if err := createExclusive(target, b); err != nil {
			if errors.Is(err, fs.ErrExist) {
				return fmt.Errorf("%q: %w", to, ErrExists)
			}
			return err
		}
	default:
		return err
	}
	return atomicfile.SyncDir(s.dir)
}

// createExclusive creates path with content b, failing if it exists.
func createExclusive(path string, b []byte) error {
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o666)
	if err != nil {
		return err
	}
	_, err = f.Write(b)
	if err == nil {
		err = f.Sync()
	}
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		os.Remove(path)
	}
	return err
}

const (
	posMagic   = "tandem-revision 1"
	posTimeFmt = time.RFC3339Nano
)

var castagnoli = crc32.MakeTable(crc32.Castagnoli)

func encodePosition(p Position) []byte {
	var sb strings.Builder
	sb.WriteString(posMagic + "\n")
	sb.WriteString("node " + p.NodeID + "\n")
	sb.WriteString("revision " + strconv.FormatInt(p.Revision, 10) + "\n")
	epoch := p.Epoch
	if p.Evicted {
		epoch = evictedPrefix + epoch
	}
	sb.WriteString("epoch " + epoch + "\n")
	sb.WriteString("updated " + p.Updated.UTC().Format(posTimeFmt) + "\n")
	body := sb.String()
	return fmt.Appendf(nil, "%scrc32c %08x\n", body, crc32.Checksum([]byte(body), castagnoli))
}

// decodePosition parses a position file strictly: the exact lines in the
// exact order, a valid node id, revision and epoch, and a matching CRC.
func decodePosition(b []byte) (Position, error) {
	if len(b) > 1024 {
		return Position{}, errors.New("longer than 1 KiB")
	}
	s := string(b)
	i := strings.LastIndex(strings.TrimSuffix(s, "\n"), "\n")
	if i < 0 || !strings.HasSuffix(s, "\n") {
		return Position{}, errors.New("truncated")
	}
	body, last := s[:i+1], strings.TrimSuffix(s[i+1:], "\n")
	sum, ok := strings.CutPrefix(last, "crc32c ")
	if !ok || len(sum) != 8 {
		return Position{}, errors.New("no crc32c line")
	}
	want, err := strconv.ParseUint(sum, 16, 32)
	if err != nil || fmt.Sprintf("%08x", want) != sum {
		return Position{}, errors.New("malformed crc32c line")
	}
	if crc32.Checksum([]byte(body), castagnoli) != uint32(want) {
		return Position{}, errors.New("checksum mismatch")
	}
	lines := strings.Split(strings.TrimSuffix(body, "\n"), "\n")
	if len(lines) != 5 || lines[0] != posMagic {
		return Position{}, errors.New("not a tandem position file (version 1)")
	}
	field := func(line, key string) (string, error) {
		v, ok := strings.CutPrefix(line, key+" ")
		if !ok {
			return "", fmt.Errorf("missing %s line", key)
		}
		return v, nil
	}
	var p Position
	if p.NodeID, err = field(lines[1], "node"); err != nil {
		return Position{}, err
	}
	if err := ident.NodeID("node", p.NodeID); err != nil {
		return Position{}, err
	}
	v, err := field(lines[2], "revision")
	if err != nil {
		return Position{}, err
	}
	if p.Revision, err = strconv.ParseInt(v, 10, 64); err != nil || p.Revision < 0 {
		return Position{}, fmt.Errorf("bad revision %q", v)
	}
	if p.Epoch, err = field(lines[3], "epoch"); err != nil {
		return Position{}, err
	}
	p.Epoch, p.Evicted = strings.CutPrefix(p.Epoch, evictedPrefix)
	if err := checkEpoch(p.Epoch); err != nil {
		return Position{}, err
	}
	if v, err = field(lines[4], "updated"); err != nil {
		return Position{}, err
	}
	if p.Updated, err = time.Parse(posTimeFmt, v); err != nil {
		return Position{}, fmt.Errorf("bad updated time %q", v)
	}
	p.Updated = p.Updated.UTC()
	return p, nil
}
