package journal

import (
	"bufio"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"slices"

	"github.com/tandem-go/tandem/internal/atomicfile"
)

// repair brings the folder to a state a writer may append to, under the
// LOCK, from the head h it read: it rolls forward complete batches past h
// (writing a new head), then truncates the incomplete tail of the head's
// segment and removes a segment that holds nothing committed after it. It
// checks the segments against the head before it changes anything, so a
// head that does not match them (its segment gone, a segment beyond it)
// costs no segment. It returns the head to append after and that head's
// segment open for writing (nil when there is no segment yet).
//
// The head's segment is opened once, read-write, and serves the head's
// check, rolling forward and the append: on NFS every open is a round
// trip, and after a clean commit nothing else of the segment is read.
// Opening it changes nothing; a missing one is left to the checks that
// name it, as before.
func (j *File) repair(h fileHead) (fileHead, *os.File, error) {
	segs, err := listSegments(j.dir)
	if err != nil {
		return h, nil, err
	}
	var f *os.File // h's segment, read-write; nil: none or missing
	if h.Rev > 0 {
		f, err = j.openFile(j.path(segName(h.Seg)), os.O_RDWR, 0)
		if errors.Is(err, fs.ErrNotExist) {
			f = nil
		} else if err != nil {
			return h, nil, err
		}
	}
	done := false
	defer func() {
		if !done && f != nil {
			f.Close()
		}
	}()
	if err := j.verifyHead(h, segs, f); err != nil {
		return h, nil, err
	}
	nh, err := j.rollForward(h, segs, f)
	if err != nil {
		return h, nil, err
	}
	stray, err := j.checkSegments(nh, segs)
	if err != nil {
		return h, nil, err
	}
	if nh != h {
		// The records rolled forward may never have been fsynced (a
		// writer killed between its write and its fsync): make them
		// durable before a head commits them.
		if err := j.syncRolled(h, nh, segs); err != nil {
			return h, nil, fmt.Errorf("roll forward: %w", err)
		}
		if err := j.writeFile(j.path(fileHeadName), encodeHead(nh), 0o666); err != nil && !errors.Is(err, atomicfile.ErrNotDurable) {
			return h, nil, fmt.Errorf("roll forward: write head: %w", err)
		}
		j.cfg.Logger.Warn("tandem: journal rolled forward complete records past a head that was behind",
			"dir", j.dir, "head", h.Rev, "now", nh.Rev)
		if f != nil && nh.Seg != h.Seg {
			f.Close() // the head moved on to a later segment
			f = nil
		}
		h = nh
		j.verified = nh // rolling forward read the records up to it
	}
	if stray {
		name := j.path(segName(h.Rev + 1))
		if err := os.Remove(name); err != nil && !errors.Is(err, fs.ErrNotExist) {
			return h, nil, fmt.Errorf("remove uncommitted segment: %w", err)
		}
		j.cfg.Logger.Warn("tandem: journal removed a segment left by a crashed writer", "segment", name)
		if err := j.syncDir(j.dir); err != nil {
			return h, nil, fmt.Errorf("sync journal folder: %w", err)
		}
	}
	if h.Rev == 0 {
		return h, nil, nil
	}
	name := j.path(segName(h.Seg))
	if f == nil {
		// None was open (a journal that was empty, or whose head was
		// rolled forward into a later segment), or it was missing.
		f, err = j.openFile(name, os.O_RDWR, 0)
		if errors.Is(err, fs.ErrNotExist) {
			return h, nil, fmt.Errorf("%w: segment %s holding the head (revision %d) is missing", ErrCorrupt, name, h.Rev)
		}
		if err != nil {
			return h, nil, err
		}
	}
	fi, err := f.Stat()
	if err != nil {
		return h, nil, err
	}
	switch size := fi.Size(); {
	case size < h.Off:
		return h, nil, fmt.Errorf("%w: segment %s is %d bytes, but the head (revision %d) ends at offset %d",
			ErrCorrupt, name, size, h.Rev, h.Off)
	case size > h.Off:
		if err := f.Truncate(h.Off); err == nil {
			err = j.syncFile(f)
		}
		if err != nil {
			return h, nil, fmt.Errorf("truncate torn tail: %w", err)
		}
		j.cfg.Logger.Warn("tandem: journal truncated an incomplete tail left by a crashed writer",
			"segment", name, "head", h.Rev, "bytes", size-h.Off)
	}
	done = true
	return h, f, nil
}

// verifyHead checks that the record ending at h.Off in segment h.Seg
// carries revision h.Rev: a head with a valid checksum but another
// revision (a head file from another journal, a hand edit) would have the
// writer acknowledge revisions that readers never deliver. It is
// ErrCorrupt, and nothing is written.
//
// It reads only record headers, and only when the head changed since this
// instance last verified or wrote it, from the nearest position it knows
// in that segment (its last verified head, or where a read of this
// instance ended): after another writer's commits, it reads their
// headers; a whole segment's, at most once per segment. A head whose
// segment is missing or shorter than it says is left to the checks after
// rolling forward, which name it.
//
// f is h's segment, open (nil: missing).
func (j *File) verifyHead(h fileHead, segs []int64, f *os.File) error {
	if h == j.verified || h.Rev == 0 {
		return nil
	}
	if _, ok := slices.BinarySearch(segs, h.Seg); !ok || f == nil {
		return nil
	}
	name := j.path(segName(h.Seg))
	fi, err := f.Stat()
	if err != nil {
		return err
	}
	if fi.Size() < h.Off {
		return nil
	}
	if j.walkBuf == nil {
		j.walkBuf = make([]byte, walkBufSize)
	}
	// Start at the nearest known record boundary at or before the head;
	// a position that turns out wrong (only a hint) falls back to the
	// segment's start.
	from := cursorEnt{rev: h.Seg - 1, pos: segPos{seg: h.Seg}}
	if v := j.verified; v.Seg == h.Seg && v.Off <= h.Off && v.Rev <= h.Rev {
		from = cursorEnt{rev: v.Rev, pos: segPos{seg: v.Seg, off: v.Off}}
	}
	if c, ok := j.cursors.nearest(h); ok && c.pos.off > from.pos.off {
		from = c
	}
	err = walkRecords(f, from.pos.off, from.rev, h, j.walkBuf)
	if errors.Is(err, errMalformed) && from.pos.off > 0 {
		err = walkRecords(f, 0, h.Seg-1, h, j.walkBuf)
	}
	if errors.Is(err, errMalformed) {
		return fmt.Errorf("%w: the head (revision %d) does not match segment %s: %w; refusing to write",
			ErrCorrupt, h.Rev, name, err)
	}
	if err != nil {
		return fmt.Errorf("verify head: %w", err)
	}
	j.verified = h
	return nil
}

// walkBufSize is the buffer verifyHead reads record headers through.
const walkBufSize = 32 << 10

// walkRecords checks, reading only record headers through buf, that the
// records of segment f from offset off on, the first carrying revision
// rev+1, continue the sequence and that the last of them ends exactly at
// h.Off with revision h.Rev. A mismatch is an error matching errMalformed.
func walkRecords(f *os.File, off, rev int64, h fileHead, buf []byte) error {
	bufOff, n := int64(0), 0 // buf[:n] holds the segment's bytes from bufOff
	for off < h.Off {
		if h.Off-off < recHeaderSize {
			return fmt.Errorf("%w: %d bytes before the head's offset %d, a record header is %d", errMalformed, h.Off-off, h.Off, recHeaderSize)
		}
		if off < bufOff || off+recHeaderSize > bufOff+int64(n) {
			m, err := f.ReadAt(buf[:min(int64(len(buf)), h.Off-off)], off)
			if m < recHeaderSize {
				if err == nil || errors.Is(err, io.EOF) {
					err = fmt.Errorf("%w: segment ends at %d, before the head's offset %d", errMalformed, off+int64(m), h.Off)
				}
				return err
			}
			bufOff, n = off, m
		}
		rh, err := decodeRecHeader(buf[off-bufOff : n])
		if err != nil {
			return fmt.Errorf("offset %d: %w", off, err)
		}
		if rh.revision != rev+1 {
			return fmt.Errorf("%w: offset %d: record has revision %d, want %d", errMalformed, off, rh.revision, rev+1)
		}
		rev++
		off += recHeaderSize + int64(rh.bodyLen)
	}
	if off != h.Off {
		return fmt.Errorf("%w: record %d runs past the head's offset %d", errMalformed, rev, h.Off)
	}
	if rev != h.Rev {
		return fmt.Errorf("%w: the record ending at the head's offset %d has revision %d", errMalformed, h.Off, rev)
	}
	return nil
}

// syncRolled fsyncs the segments that hold the records rolling forward
// took from h to nh (segs are those in the folder), and the folder when
// the dead writer may have created one of them.
func (j *File) syncRolled(h, nh fileHead, segs []int64) error {
	from := max(h.Seg, 1)
	for _, seg := range segs {
		if seg < from || seg > nh.Seg {
			continue
		}
		f, err := j.openFile(j.path(segName(seg)), os.O_RDWR, 0)
		if err != nil {
			return err
		}
		err = j.syncFile(f)
		if cerr := f.Close(); err == nil {
			err = cerr
		}
		if err != nil {
			return fmt.Errorf("sync segment: %w", err)
		}
	}
	if nh.Seg != h.Seg {
		if err := j.syncDir(j.dir); err != nil {
			return fmt.Errorf("sync journal folder: %w", err)
		}
	}
	return nil
}

// checkSegments checks the segments in the folder (segs, ascending)
// against the head h that rolling forward reached, and reports whether the
// last one is a stray: named h.Rev+1, holding no complete batch (else
// rolling forward would have taken it), left by a writer whose rollover
// did not commit. A missing segment for the head, or any segment named
// above h.Rev+1, is ErrCorrupt: the folder does not hold what the head
// says (a head restored from an older copy, segments from elsewhere), and
// deleting or writing anything could cost committed records.
func (j *File) checkSegments(h fileHead, segs []int64) (stray bool, err error) {
	if h.Rev > 0 && !slices.Contains(segs, h.Seg) {
		return false, fmt.Errorf("%w: segment %s holding the head (revision %d) is missing (the folder holds %s); refusing to write",
			ErrCorrupt, j.path(segName(h.Seg)), h.Rev, j.segList(segs))
	}
	if i, _ := slices.BinarySearch(segs, h.Rev+2); i < len(segs) {
		return false, fmt.Errorf("%w: %s beyond the head (revision %d) does not continue it; refusing to write",
			ErrCorrupt, j.segList(segs[i:]), h.Rev)
	}
	return len(segs) > 0 && segs[len(segs)-1] == h.Rev+1, nil
}

// segList names the segments segs (ascending) for an error message: the
// first one's path, and the last one's name when there are more.
func (j *File) segList(segs []int64) string {
	switch len(segs) {
	case 0:
		return "no segments"
	case 1:
		return "segment " + j.path(segName(segs[0]))
	}
	return fmt.Sprintf("%d segments, %s … %s", len(segs), j.path(segName(segs[0])), segName(segs[len(segs)-1]))
}

// rollForward returns the head after the complete batches that continue
// the journal past h: in h's segment after h.Off, and then in the segment
// named for the next revision whenever one ends at a batch boundary. segs
// are the segments in the folder (ascending). It returns h when there are
// none. A complete, checksummed record right after the last batch whose
// revision does not continue the sequence is corruption.
//
// It reads only what lies past the head: nothing at all when the head's
// segment ends at the head, as it does after every clean commit. hf is
// h's segment, open (nil: not open), which it reads instead of opening
// that segment again.
func (j *File) rollForward(h fileHead, segs []int64, hf *os.File) (fileHead, error) {
	cur := h
	seg, off := h.Seg, h.Off
	if h.Rev == 0 {
		seg, off = 1, 0
	}
	for {
		if _, ok := slices.BinarySearch(segs, seg); !ok {
			return cur, nil // the head's own segment is checked by repair
		}
		var open *os.File
		if seg == h.Seg && h.Rev > 0 {
			open = hf
		}
		next, atEnd, err := j.rollSegment(cur, seg, off, open)
		if err != nil {
			return h, err
		}
		if !atEnd {
			return next, nil // an incomplete tail: repair truncates it
		}
		if next.Rev+1 == seg {
			return next, nil // this segment held no complete batch
		}
		// The segment ends at a batch boundary; a rollover may have
		// continued the sequence in the next one.
		cur = next
		seg, off = cur.Rev+1, 0
	}
}

// rollSegment returns the head after the complete batches that follow cur
// in segment seg from offset off, and reports whether they reach the
// segment's end. It reads from off to the end only, a record at a time:
// its memory is bounded by the largest record, not by the segment. f is
// the segment, open (nil: it opens it, and closes it again).
func (j *File) rollSegment(cur fileHead, seg, off int64, f *os.File) (fileHead, bool, error) {
	name := j.path(segName(seg))
	if f == nil {
		var err error
		f, err = j.openFile(name, os.O_RDONLY, 0)
		if errors.Is(err, fs.ErrNotExist) {
			return cur, false, nil // deleted since the listing: repair reports it
		}
		if err != nil {
			return cur, false, err
		}
		defer f.Close()
	}
	fi, err := f.Stat()
	if err != nil {
		return cur, false, err
	}
	size := fi.Size()
	if size <= off {
		return cur, size == off, nil // shorter than the head: repair reports it
	}
	br := readBufs.Get().(*bufio.Reader)
	br.Reset(io.NewSectionReader(f, off, size-off))
	defer func() {
		br.Reset(nil)
		readBufs.Put(br)
	}()
	var body []byte
	for off < size {
		n, count, err := nextBatch(br, size-off, cur.Rev+1, &body)
		if errors.Is(err, errForeignRecord) {
			return cur, false, fmt.Errorf("%w: segment %s offset %d: %w", ErrCorrupt, name, off, err)
		}
		if err != nil {
			return cur, false, fmt.Errorf("roll forward: read %s: %w", name, err)
		}
		if count == 0 {
			return cur, false, nil
		}
		off += n
		cur = fileHead{Rev: cur.Rev + count, Seg: seg, Off: off}
	}
	return cur, true, nil
}

// errForeignRecord: a complete, checksummed record past the head whose
// revision does not continue the journal.
var errForeignRecord = errors.New("record does not continue the journal")

// nextBatch reads the records from r (left bytes to the segment's end) as
// one batch whose first revision is want. It returns the batch's size and
// record count, or a count of 0 when r does not start with a complete
// format-2 batch (a torn or partial write, or a format-1 record, which
// carries no batch boundary). It fails when r starts with a complete,
// checksummed record of another revision: the journal does not continue
// where its head says. body is a buffer it may grow and reuse; a record's
// body is bounded by maxRecBody and by left.
func nextBatch(r io.Reader, left, want int64, body *[]byte) (size, count int64, err error) {
	var hdr [recHeaderSize]byte
	var id int64
	var remaining uint32
	for {
		if left-size < recHeaderSize {
			return 0, 0, nil
		}
		if _, err := io.ReadFull(r, hdr[:]); err != nil {
			return 0, 0, err
		}
		h, herr := decodeRecHeader(hdr[:])
		if herr != nil || int64(h.bodyLen) > left-size-recHeaderSize {
			return 0, 0, nil
		}
		if cap(*body) < h.bodyLen {
			*body = make([]byte, h.bodyLen)
		}
		b := (*body)[:h.bodyLen]
		if _, err := io.ReadFull(r, b); err != nil {
			return 0, 0, err
		}
		rec, rb, derr := decodeRecBody(hdr[:], h, b)
		if derr != nil {
			return 0, 0, nil
		}
		if rec.Revision != want+count {
			if count == 0 {
				return 0, 0, fmt.Errorf("%w: record has revision %d, the head says %d comes next", errForeignRecord, rec.Revision, want)
			}
			return 0, 0, nil
		}
		switch {
		case !rb.v2:
			return 0, 0, nil
		case count == 0:
			id, remaining = rb.id, rb.remaining
		case rb.id != id || rb.remaining != remaining-1:
			return 0, 0, nil
		default:
			remaining = rb.remaining
		}
		size += int64(recHeaderSize + h.bodyLen)
		count++
		if remaining == 0 {
			return size, count, nil
		}
	}
}
