package journal

import (
	"errors"
	"fmt"
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
func (j *File) repair(h fileHead) (fileHead, *os.File, error) {
	nh, err := j.rollForward(h)
	if err != nil {
		return h, nil, err
	}
	segs, err := listSegments(j.dir)
	if err != nil {
		return h, nil, err
	}
	stray, err := j.checkSegments(nh, segs)
	if err != nil {
		return h, nil, err
	}
	if nh != h {
		if err := j.writeFile(j.path(fileHeadName), encodeHead(nh), 0o666); err != nil && !errors.Is(err, atomicfile.ErrNotDurable) {
			return h, nil, fmt.Errorf("roll forward: write head: %w", err)
		}
		j.cfg.Logger.Warn("tandem: journal rolled forward complete records past a head that was behind",
			"dir", j.dir, "head", h.Rev, "now", nh.Rev)
		h = nh
	}
	if stray {
		name := j.path(segName(h.Rev + 1))
		if err := os.Remove(name); err != nil && !errors.Is(err, fs.ErrNotExist) {
			return h, nil, fmt.Errorf("remove uncommitted segment: %w", err)
		}
		j.cfg.Logger.Warn("tandem: journal removed a segment left by a crashed writer", "segment", name)
		if err := atomicfile.SyncDir(j.dir); err != nil {
			return h, nil, fmt.Errorf("sync journal folder: %w", err)
		}
	}
	if h.Rev == 0 {
		return h, nil, nil
	}
	name := j.path(segName(h.Seg))
	f, err := os.OpenFile(name, os.O_RDWR, 0)
	if errors.Is(err, fs.ErrNotExist) {
		return h, nil, fmt.Errorf("%w: segment %s holding the head (revision %d) is missing", ErrCorrupt, name, h.Rev)
	}
	if err != nil {
		return h, nil, err
	}
	fi, err := f.Stat()
	if err != nil {
		f.Close()
		return h, nil, err
	}
	switch size := fi.Size(); {
	case size < h.Off:
		f.Close()
		return h, nil, fmt.Errorf("%w: segment %s is %d bytes, but the head (revision %d) ends at offset %d",
			ErrCorrupt, name, size, h.Rev, h.Off)
	case size > h.Off:
		if err := f.Truncate(h.Off); err == nil {
			err = f.Sync()
		}
		if err != nil {
			f.Close()
			return h, nil, fmt.Errorf("truncate torn tail: %w", err)
		}
		j.cfg.Logger.Warn("tandem: journal truncated an incomplete tail left by a crashed writer",
			"segment", name, "head", h.Rev, "bytes", size-h.Off)
	}
	return h, f, nil
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
// named for the next revision whenever one ends at a batch boundary. It
// returns h when there are none. A complete, checksummed record right
// after the last batch whose revision does not continue the sequence is
// corruption.
func (j *File) rollForward(h fileHead) (fileHead, error) {
	cur := h
	seg, off := h.Seg, h.Off
	if h.Rev == 0 {
		seg, off = 1, 0
	}
	for {
		b, err := os.ReadFile(j.path(segName(seg)))
		if errors.Is(err, fs.ErrNotExist) {
			return cur, nil // the head's own segment is checked by repair
		}
		if err != nil {
			return h, err
		}
		if int64(len(b)) < off {
			return cur, nil // a segment shorter than the head: repair reports it
		}
		p := b[off:]
		for len(p) > 0 {
			size, count, err := completeBatch(p, cur.Rev+1)
			if err != nil {
				return h, fmt.Errorf("%w: segment %s offset %d: %w", ErrCorrupt, j.path(segName(seg)), int64(len(b)-len(p)), err)
			}
			if count == 0 {
				return cur, nil // an incomplete tail: repair truncates it
			}
			p = p[size:]
			cur = fileHead{Rev: cur.Rev + count, Seg: seg, Off: int64(len(b) - len(p))}
		}
		// The segment ends at a batch boundary; a rollover may have
		// continued the sequence in the next one.
		next := cur.Rev + 1
		if next == seg {
			return cur, nil // this segment held no complete batch
		}
		seg, off = next, 0
	}
}

// completeBatch decodes the records at the start of p as one batch whose
// first revision is want. It returns the batch's size and record count, or
// a count of 0 when p does not start with a complete format-2 batch (a torn
// or partial write, or a format-1 record, which carries no batch
// boundary). It fails when p starts with a complete, checksummed record of
// another revision: the journal does not continue where its head says.
func completeBatch(p []byte, want int64) (size int, count int64, err error) {
	var id int64
	var remaining uint32
	for {
		r, b, n, derr := decodeRecord(p[size:])
		if derr != nil {
			return 0, 0, nil
		}
		if r.Revision != want+count {
			if count == 0 {
				return 0, 0, fmt.Errorf("record has revision %d, the head says %d comes next", r.Revision, want)
			}
			return 0, 0, nil
		}
		switch {
		case !b.v2:
			return 0, 0, nil
		case count == 0:
			id, remaining = b.id, b.remaining
		case b.id != id || b.remaining != remaining-1:
			return 0, 0, nil
		default:
			remaining = b.remaining
		}
		size += n
		count++
		if remaining == 0 {
			return size, count, nil
		}
	}
}
