package journal

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"strconv"
	"sync"
)

// Segments are the files holding the file journal's records, each named by
// the revision of its first record, zero-padded to 20 digits so that names
// sort as numbers ("00000000000000000001.seg"). A segment is never renamed
// and, below the committed head, never rewritten; it is deleted whole by
// Prune once every record in it is below the tail.
//
// Invariants a writer keeps under the LOCK (and a reader relies on):
//   - the committed segments are exactly those named <= head revision;
//     they hold consecutive revisions, the next one starting where the
//     previous one ends;
//   - the only other segment that may exist is the one named head+1: a
//     rollover whose commit failed. The next writer removes it (or
//     recreates it) before committing anything;
//   - bytes past the head's offset in the head's segment are a torn tail,
//     truncated by the next writer before it writes.
const (
	segSuffix  = ".seg"
	segNameLen = 20 + len(segSuffix)
)

func segName(first int64) string {
	return fmt.Sprintf("%020d%s", first, segSuffix)
}

// parseSegName returns the first revision of the segment named name, or
// false if name is not a segment's.
func parseSegName(name string) (int64, bool) {
	if len(name) != segNameLen || name[20:] != segSuffix {
		return 0, false
	}
	for i := range 20 {
		if name[i] < '0' || name[i] > '9' {
			return 0, false
		}
	}
	first, err := strconv.ParseInt(name[:20], 10, 64)
	if err != nil || first < 1 {
		return 0, false
	}
	return first, true
}

// listSegments returns the first revisions of the segments in dir,
// ascending.
func listSegments(dir string) ([]int64, error) {
	ents, err := os.ReadDir(dir) // sorted by name, and names sort as numbers
	if err != nil {
		return nil, err
	}
	var segs []int64
	for _, e := range ents {
		if first, ok := parseSegName(e.Name()); ok {
			segs = append(segs, first)
		}
	}
	return segs, nil
}

// errSegmentGone: a segment a read needed does not exist. Read turns it
// into ErrBehindTail when a prune raced with it, and into ErrCorrupt when
// not.
var errSegmentGone = errors.New("segment missing")

// readBufSize is the read buffer of a segment reader. Records larger than
// it are read straight into their own buffer.
const readBufSize = 256 << 10

var readBufs = sync.Pool{New: func() any { return bufio.NewReaderSize(nil, readBufSize) }}

// segReader reads the records of one segment in order, up to end: the
// head's offset in the head's segment, the file's size in the others.
type segReader struct {
	dir  string
	seg  int64
	f    *os.File
	br   *bufio.Reader
	off  int64 // offset of the next record
	end  int64
	head bool // seg is the head's segment
}

// openSeg opens segment seg for reading from offset off, under head h.
func openSeg(dir string, seg, off int64, h fileHead) (*segReader, error) {
	f, err := os.Open(filepath.Join(dir, segName(seg)))
	if errors.Is(err, fs.ErrNotExist) {
		return nil, fmt.Errorf("%w: %s", errSegmentGone, segName(seg))
	}
	if err != nil {
		return nil, err
	}
	fi, err := f.Stat()
	if err != nil {
		f.Close()
		return nil, err
	}
	r := &segReader{dir: dir, seg: seg, f: f, off: off, end: fi.Size(), head: seg == h.Seg}
	if r.head {
		// Never past the head. A segment shorter than the head says is
		// damaged; the records before the damage can still be read, and
		// reading on reports it where it starts.
		r.end = min(r.end, h.Off)
	}
	if off > r.end {
		f.Close()
		return nil, r.corrupt(off, fmt.Errorf("offset past the end (%d)", r.end))
	}
	if off > 0 {
		if _, err := f.Seek(off, io.SeekStart); err != nil {
			f.Close()
			return nil, err
		}
	}
	r.br = readBufs.Get().(*bufio.Reader)
	r.br.Reset(f)
	return r, nil
}

func (r *segReader) close() {
	if r.br != nil {
		r.br.Reset(nil)
		readBufs.Put(r.br)
		r.br = nil
	}
	r.f.Close()
}

func (r *segReader) corrupt(off int64, err error) error {
	return fmt.Errorf("%w: segment %s offset %d: %w", ErrCorrupt, filepath.Join(r.dir, segName(r.seg)), off, err)
}

// atEnd reports whether every record of the segment (up to end) was read.
func (r *segReader) atEnd() bool { return r.off == r.end }

// header reads the next record's header, which must carry revision want.
func (r *segReader) header(hdr []byte, want int64) (recHeader, error) {
	if r.end-r.off < recHeaderSize {
		return recHeader{}, r.corrupt(r.off, fmt.Errorf("%d bytes left, a record header is %d", r.end-r.off, recHeaderSize))
	}
	if _, err := io.ReadFull(r.br, hdr); err != nil {
		return recHeader{}, r.ioErr(err)
	}
	h, err := decodeRecHeader(hdr)
	if err != nil {
		return h, r.corrupt(r.off, err)
	}
	if h.revision != want {
		return h, r.corrupt(r.off, fmt.Errorf("record has revision %d, want %d", h.revision, want))
	}
	if int64(h.bodyLen) > r.end-r.off-recHeaderSize {
		return h, r.corrupt(r.off, fmt.Errorf("record %d of %d bytes runs past the end (%d)", want, recHeaderSize+h.bodyLen, r.end))
	}
	return h, nil
}

// ioErr reports a read error; a short read below end means the segment
// shrank under us, which only corruption (or a manual edit) does.
func (r *segReader) ioErr(err error) error {
	if errors.Is(err, io.EOF) || errors.Is(err, io.ErrUnexpectedEOF) {
		return r.corrupt(r.off, fmt.Errorf("segment ends before %d: %w", r.end, err))
	}
	return fmt.Errorf("read %s: %w", filepath.Join(r.dir, segName(r.seg)), err)
}

// next reads and verifies the next record, which must carry revision want.
func (r *segReader) next(want int64) (Record, error) {
	var hdr [recHeaderSize]byte
	h, err := r.header(hdr[:], want)
	if err != nil {
		return Record{}, err
	}
	body := make([]byte, h.bodyLen)
	if _, err := io.ReadFull(r.br, body); err != nil {
		return Record{}, r.ioErr(err)
	}
	rec, _, err := decodeRecBody(hdr[:], h, body)
	if err != nil {
		return Record{}, r.corrupt(r.off, err)
	}
	r.off += int64(recHeaderSize + h.bodyLen)
	return rec, nil
}

// skip steps over the next record, which must carry revision want, reading
// only its header.
func (r *segReader) skip(want int64) error {
	var hdr [recHeaderSize]byte
	h, err := r.header(hdr[:], want)
	if err != nil {
		return err
	}
	if _, err := r.br.Discard(h.bodyLen); err != nil {
		return r.ioErr(err)
	}
	r.off += int64(recHeaderSize + h.bodyLen)
	return nil
}

// readRecords reads the records after+1 … after+n (all at or below the
// head h), starting at the segment position start, or, when start is
// nil, at the segment that holds after+1. It returns them, the position
// after the last one and the position where the last one starts.
func readRecords(ctx context.Context, dir string, h fileHead, after int64, n int, start *segPos) ([]Record, segPos, segPos, error) {
	var r *segReader
	var err error
	if start != nil {
		r, err = openSeg(dir, start.seg, start.off, h)
	} else {
		r, err = locate(dir, h, after)
	}
	if err != nil {
		return nil, segPos{}, segPos{}, err
	}
	defer func() { r.close() }()
	recs := make([]Record, 0, min(n, 1024))
	var last segPos
	for len(recs) < n {
		want := after + int64(len(recs)) + 1
		if len(recs)%256 == 255 {
			if err := ctx.Err(); err != nil {
				return nil, segPos{}, segPos{}, err
			}
		}
		if r.atEnd() {
			if r.head {
				return nil, segPos{}, segPos{}, r.corrupt(r.off, fmt.Errorf("the head's segment ends before revision %d (head %d)", want, h.Rev))
			}
			// The next segment starts with the next revision.
			nr, err := openSeg(dir, want, 0, h)
			if err != nil {
				return nil, segPos{}, segPos{}, err
			}
			r.close()
			r = nr
			continue
		}
		last = segPos{seg: r.seg, off: r.off}
		rec, err := r.next(want)
		if err != nil {
			return nil, segPos{}, segPos{}, err
		}
		recs = append(recs, rec)
	}
	return recs, segPos{seg: r.seg, off: r.off}, last, nil
}

// locate opens the segment holding revision after+1 and skips to it.
func locate(dir string, h fileHead, after int64) (*segReader, error) {
	segs, err := listSegments(dir)
	if err != nil {
		return nil, err
	}
	seg := int64(0)
	for _, first := range segs {
		if first > after+1 || first > h.Seg {
			break
		}
		seg = first
	}
	if seg == 0 {
		return nil, fmt.Errorf("%w: no segment holds revision %d", errSegmentGone, after+1)
	}
	r, err := openSeg(dir, seg, 0, h)
	if err != nil {
		return nil, err
	}
	for want := seg; want <= after; want++ {
		if r.atEnd() {
			// after+1 is in a later segment that the listing missed:
			// only a prune racing with us deletes segments.
			r.close()
			return nil, fmt.Errorf("%w: segment %s ends before revision %d", errSegmentGone, segName(seg), after+1)
		}
		if err := r.skip(want); err != nil {
			r.close()
			return nil, err
		}
	}
	return r, nil
}

// segPos is a position in the journal: a segment and a byte offset in it.
type segPos struct {
	seg int64
	off int64
}

// cursorCache remembers where recent reads ended (revision → position), so
// that a read continuing from there seeks straight to it instead of
// scanning its segment from the start: sequential catch-up costs O(n), not
// O(n²). It also remembers where the last record of each read started, so
// that a read one record before where another ended seeks too: a node's
// sync polls from the record before its position (to see that the record
// it applied there is still there), and without it every such poll would
// read its segment (up to SegmentSize) from the start. It remembers the
// same two positions of the last commit of this instance. A cached
// position is only a hint: the record found there must carry the expected
// revision, or the read falls back to a scan.
type cursorCache struct {
	mu   sync.Mutex
	ents [cursorSlots]cursorEnt
	next int       // ring index of the slot to reuse
	head cursorEnt // the last local commit
}

const cursorSlots = 16

// cursorEnt says that the record rev ends at pos and starts at last
// (last.seg == 0: not known).
type cursorEnt struct {
	rev  int64
	pos  segPos // pos.seg == 0: empty
	last segPos
}

// at returns where a reader after after continues in e, if e knows.
func (e cursorEnt) at(after int64) (segPos, bool) {
	switch {
	case e.pos.seg == 0:
	case e.rev == after:
		return e.pos, true
	case e.rev == after+1 && e.last.seg != 0:
		return e.last, true
	}
	return segPos{}, false
}

func (c *cursorCache) get(after int64) (segPos, bool) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if pos, ok := c.head.at(after); ok {
		return pos, true
	}
	for _, e := range c.ents {
		if pos, ok := e.at(after); ok {
			return pos, true
		}
	}
	return segPos{}, false
}

// moved records that a reader who was at from is now at rev, whose record
// starts at last and ends at pos: it takes over the slot that served it
// (from, or from+1 for a read that began one record early), so one reader
// occupies one slot.
func (c *cursorCache) moved(from, rev int64, pos, last segPos) {
	c.mu.Lock()
	defer c.mu.Unlock()
	slot := -1
	for i, e := range c.ents {
		if e.pos.seg != 0 && (e.rev == from || e.rev == from+1 || e.rev == rev) {
			slot = i
			break
		}
	}
	if slot < 0 {
		slot = c.next
		c.next = (c.next + 1) % cursorSlots
	}
	c.ents[slot] = cursorEnt{rev: rev, pos: pos, last: last}
}

// committed records where the last local commit ended (h) and where its
// last record started.
func (c *cursorCache) committed(h fileHead, last segPos) {
	c.mu.Lock()
	c.head = cursorEnt{rev: h.Rev, pos: segPos{seg: h.Seg, off: h.Off}, last: last}
	c.mu.Unlock()
}

// nearest returns the cached position in h's segment that lies closest
// before h's offset, with the revision of the record ending there (a hint:
// the caller checks what it finds there).
func (c *cursorCache) nearest(h fileHead) (cursorEnt, bool) {
	c.mu.Lock()
	defer c.mu.Unlock()
	best := c.head
	if best.pos.seg != h.Seg || best.pos.off > h.Off || best.rev > h.Rev {
		best = cursorEnt{}
	}
	for _, e := range c.ents {
		if e.pos.seg == h.Seg && e.pos.off <= h.Off && e.rev <= h.Rev && e.pos.off > best.pos.off {
			best = e
		}
	}
	return best, best.pos.seg != 0
}

// forget drops the positions that get(after) could return: one turned
// out not to hold what was expected.
func (c *cursorCache) forget(after int64) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if _, ok := c.head.at(after); ok {
		c.head = cursorEnt{}
	}
	for i, e := range c.ents {
		if _, ok := e.at(after); ok {
			c.ents[i] = cursorEnt{}
		}
	}
}
