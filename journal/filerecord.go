package journal

import (
	"encoding/binary"
	"errors"
	"fmt"
	"hash/crc32"
	"time"

	"github.com/tandem-go/tandem/ident"
)

// The file journal's encodings: records in segments, the head file and the
// meta file. All integers are big-endian; every checksum is CRC-32C
// (Castagnoli).
//
// A record:
//
//	offset  size  field
//	0       4     body length n (uint32): the bytes after the 16-byte header
//	4       8     revision (int64, >= 1)
//	12      4     CRC-32C of bytes 0..11 and of the body
//	16      1     node id length (1..ident.MaxNodeIDLen), plus 0x80 in format 2
//	17      …     node id
//	              format 2 only:
//	…       1       instance length (1..ident.MaxNodeIDLen)
//	…       …       instance
//	…       8       batch id (int64): the group commit that wrote the record
//	…       4       how many records of the same batch follow this one (uint32)
//	…       1     producer length (1..ident.MaxProducerLen)
//	…       …     producer
//	…       8     time: the writer's clock, Unix nanoseconds (int64)
//	…       …     payload: the rest of the body (0..MaxPayloadSize bytes)
//
// The payload's length is implied by the body length, so every record has
// exactly one encoding. This release writes format 2; it reads both. The
// batch fields let the next writer roll forward a batch whose records are
// complete past a head that reads older than the truth, and only whole
// batches (see File.repair).
const (
	recHeaderSize = 16
	// minRecBody is the body of a format-1 record with 1-byte node id and
	// producer and an empty payload.
	minRecBody = 1 + 1 + 1 + 1 + 8
	// batchFields is the size of format 2's fields besides the instance.
	batchFields = 1 + 8 + 4
	// maxRecBody bounds the body length a decoder accepts (and allocates).
	maxRecBody = 1 + ident.MaxNodeIDLen + batchFields + ident.MaxNodeIDLen + 1 + ident.MaxProducerLen + 8 + MaxPayloadSize
	// format2 marks a format-2 record in the node id length byte.
	format2 = 0x80
)

// recBatch is what a format-2 record says of the group commit that wrote
// it.
type recBatch struct {
	v2        bool   // the record is of format 2
	id        int64  // batch id
	remaining uint32 // records of the batch that follow this one
}

var castagnoli = crc32.MakeTable(crc32.Castagnoli)

// errMalformed is wrapped by every decoding error; the reader turns it into
// ErrCorrupt with the segment and offset.
var errMalformed = errors.New("malformed")

// recordSize returns the encoded size of a format-2 record.
func recordSize(nodeID, instance, producer string, payload []byte) int {
	return recHeaderSize + 1 + len(nodeID) + 1 + len(instance) + 8 + 4 + 1 + len(producer) + 8 + len(payload)
}

// appendRecord appends the format-2 encoding of r, written by batch b, to
// dst. r must be valid: a revision >= 1, a node id and instance of 1 to 64
// bytes and a producer of 1 to 255 bytes (callers have validated them
// against the ident limits) and a payload within the limits.
func appendRecord(dst []byte, r *Record, b recBatch) []byte {
	start := len(dst)
	n := recordSize(r.NodeID, r.Instance, r.Producer, r.Payload) - recHeaderSize
	dst = binary.BigEndian.AppendUint32(dst, uint32(n))
	dst = binary.BigEndian.AppendUint64(dst, uint64(r.Revision))
	dst = append(dst, 0, 0, 0, 0) // CRC, set below
	dst = append(dst, byte(len(r.NodeID))|format2)
	dst = append(dst, r.NodeID...)
	dst = append(dst, byte(len(r.Instance)))
	dst = append(dst, r.Instance...)
	dst = binary.BigEndian.AppendUint64(dst, uint64(b.id))
	dst = binary.BigEndian.AppendUint32(dst, b.remaining)
	dst = append(dst, byte(len(r.Producer)))
	dst = append(dst, r.Producer...)
	dst = binary.BigEndian.AppendUint64(dst, uint64(r.Time.UnixNano()))
	dst = append(dst, r.Payload...)
	rec := dst[start:]
	binary.BigEndian.PutUint32(rec[12:16], recordCRC(rec[:12], rec[recHeaderSize:]))
	return dst
}

func recordCRC(head12, body []byte) uint32 {
	return crc32.Update(crc32.Checksum(head12, castagnoli), castagnoli, body)
}

// recHeader is a decoded record header.
type recHeader struct {
	bodyLen  int
	revision int64
	crc      uint32
}

// decodeRecHeader decodes and bounds-checks a record header (len(b) >=
// recHeaderSize). It does not check the CRC, which covers the body too.
func decodeRecHeader(b []byte) (recHeader, error) {
	h := recHeader{
		bodyLen:  int(binary.BigEndian.Uint32(b[0:4])),
		revision: int64(binary.BigEndian.Uint64(b[4:12])),
		crc:      binary.BigEndian.Uint32(b[12:16]),
	}
	if h.bodyLen < minRecBody || h.bodyLen > maxRecBody {
		return h, fmt.Errorf("%w: record body length %d outside [%d, %d]", errMalformed, h.bodyLen, minRecBody, maxRecBody)
	}
	if h.revision < 1 {
		return h, fmt.Errorf("%w: record revision %d", errMalformed, h.revision)
	}
	return h, nil
}

// decodeRecBody checks the CRC of a record whose header is hdr (the 16
// header bytes, decoded as h) and decodes its body. The returned record's
// payload aliases body.
func decodeRecBody(hdr []byte, h recHeader, body []byte) (Record, recBatch, error) {
	var b recBatch
	if len(body) != h.bodyLen {
		return Record{}, b, fmt.Errorf("%w: record body is %d bytes, header says %d", errMalformed, len(body), h.bodyLen)
	}
	if got := recordCRC(hdr[:12], body); got != h.crc {
		return Record{}, b, fmt.Errorf("%w: record %d checksum %08x, want %08x", errMalformed, h.revision, got, h.crc)
	}
	r := Record{Revision: h.revision}
	p := body
	nl := int(p[0])
	b.v2 = nl&format2 != 0
	nl &^= format2
	if nl < 1 || nl > ident.MaxNodeIDLen || len(p) < 1+nl+1 {
		return Record{}, b, fmt.Errorf("%w: record %d node id length %d", errMalformed, h.revision, nl)
	}
	r.NodeID = string(p[1 : 1+nl])
	p = p[1+nl:]
	if b.v2 {
		il := int(p[0])
		if il < 1 || il > ident.MaxNodeIDLen || len(p) < 1+il+8+4+1 {
			return Record{}, b, fmt.Errorf("%w: record %d instance length %d", errMalformed, h.revision, il)
		}
		r.Instance = string(p[1 : 1+il])
		p = p[1+il:]
		b.id = int64(binary.BigEndian.Uint64(p[:8]))
		b.remaining = binary.BigEndian.Uint32(p[8:12])
		p = p[12:]
		if err := ident.NodeID("instance", r.Instance); err != nil {
			return Record{}, b, fmt.Errorf("%w: record %d: %v", errMalformed, h.revision, err)
		}
	}
	pl := int(p[0])
	if pl < 1 || pl > ident.MaxProducerLen || len(p) < 1+pl+8 {
		return Record{}, b, fmt.Errorf("%w: record %d producer length %d", errMalformed, h.revision, pl)
	}
	r.Producer = string(p[1 : 1+pl])
	p = p[1+pl:]
	r.Time = time.Unix(0, int64(binary.BigEndian.Uint64(p[:8]))).UTC()
	r.Payload = p[8:len(p):len(p)]
	if len(r.Payload) > MaxPayloadSize {
		return Record{}, b, fmt.Errorf("%w: record %d payload of %d bytes", errMalformed, h.revision, len(r.Payload))
	}
	if err := ident.NodeID("node id", r.NodeID); err != nil {
		return Record{}, b, fmt.Errorf("%w: record %d: %v", errMalformed, h.revision, err)
	}
	if err := ident.Producer("producer", r.Producer); err != nil {
		return Record{}, b, fmt.Errorf("%w: record %d: %v", errMalformed, h.revision, err)
	}
	return r, b, nil
}

// fileHead is the content of the head file: the last committed revision
// and where its record ends. Seg is the first revision of the segment
// holding it (the segment's name); Seg and Off are 0 while Rev is 0.
type fileHead struct {
	Rev int64
	Seg int64
	Off int64
}

// The head file is 36 bytes:
//
//	0   8  magic "tandemH1"
//	8   8  revision
//	16  8  segment (first revision of the segment holding the head)
//	24  8  end offset of the head's record in that segment
//	32  4  CRC-32C of bytes 0..31
const (
	headMagic = "tandemH1"
	headSize  = 36
)

func encodeHead(h fileHead) []byte {
	b := make([]byte, 0, headSize)
	b = append(b, headMagic...)
	b = binary.BigEndian.AppendUint64(b, uint64(h.Rev))
	b = binary.BigEndian.AppendUint64(b, uint64(h.Seg))
	b = binary.BigEndian.AppendUint64(b, uint64(h.Off))
	return binary.BigEndian.AppendUint32(b, crc32.Checksum(b, castagnoli))
}

func decodeHead(b []byte) (fileHead, error) {
	if len(b) != headSize || string(b[:8]) != headMagic {
		return fileHead{}, fmt.Errorf("%w: head file: bad size or magic", errMalformed)
	}
	if crc32.Checksum(b[:32], castagnoli) != binary.BigEndian.Uint32(b[32:]) {
		return fileHead{}, fmt.Errorf("%w: head file: checksum mismatch", errMalformed)
	}
	h := fileHead{
		Rev: int64(binary.BigEndian.Uint64(b[8:16])),
		Seg: int64(binary.BigEndian.Uint64(b[16:24])),
		Off: int64(binary.BigEndian.Uint64(b[24:32])),
	}
	valid := h.Rev == 0 && h.Seg == 0 && h.Off == 0 ||
		h.Rev > 0 && h.Seg >= 1 && h.Seg <= h.Rev && h.Off >= int64(recHeaderSize+minRecBody)
	if !valid {
		return fileHead{}, fmt.Errorf("%w: head file: inconsistent revision %d, segment %d, offset %d", errMalformed, h.Rev, h.Seg, h.Off)
	}
	return h, nil
}

// fileMeta is the content of the meta file.
type fileMeta struct {
	Epoch string
	Tail  int64
}

// The meta file:
//
//	0   8  magic "tandemM1"
//	8   8  tail (>= 1)
//	16  1  epoch length e (1..64)
//	17  e  epoch
//	…   4  CRC-32C of everything before it
const (
	metaMagic   = "tandemM1"
	maxEpochLen = 64
)

func encodeMeta(m fileMeta) []byte {
	b := make([]byte, 0, 8+8+1+len(m.Epoch)+4)
	b = append(b, metaMagic...)
	b = binary.BigEndian.AppendUint64(b, uint64(m.Tail))
	b = append(b, byte(len(m.Epoch)))
	b = append(b, m.Epoch...)
	return binary.BigEndian.AppendUint32(b, crc32.Checksum(b, castagnoli))
}

func decodeMeta(b []byte) (fileMeta, error) {
	if len(b) < 8+8+1+1+4 || string(b[:8]) != metaMagic {
		return fileMeta{}, fmt.Errorf("%w: meta file: bad size or magic", errMalformed)
	}
	n := len(b) - 4
	if crc32.Checksum(b[:n], castagnoli) != binary.BigEndian.Uint32(b[n:]) {
		return fileMeta{}, fmt.Errorf("%w: meta file: checksum mismatch", errMalformed)
	}
	m := fileMeta{Tail: int64(binary.BigEndian.Uint64(b[8:16]))}
	el := int(b[16])
	if el < 1 || el > maxEpochLen || 17+el != n || m.Tail < 1 {
		return fileMeta{}, fmt.Errorf("%w: meta file: bad epoch length or tail", errMalformed)
	}
	m.Epoch = string(b[17:n])
	return m, nil
}
