package journal

import (
	"bytes"
	"encoding/binary"
	"fmt"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
)

// appendRecordV1 is the format-1 encoder of the first release, kept as a
// fixture: this release must read what it wrote.
func appendRecordV1(dst []byte, r *Record) []byte {
	start := len(dst)
	n := 1 + len(r.NodeID) + 1 + len(r.Producer) + 8 + len(r.Payload)
	dst = binary.BigEndian.AppendUint32(dst, uint32(n))
	dst = binary.BigEndian.AppendUint64(dst, uint64(r.Revision))
	dst = append(dst, 0, 0, 0, 0)
	dst = append(dst, byte(len(r.NodeID)))
	dst = append(dst, r.NodeID...)
	dst = append(dst, byte(len(r.Producer)))
	dst = append(dst, r.Producer...)
	dst = binary.BigEndian.AppendUint64(dst, uint64(r.Time.UnixNano()))
	dst = append(dst, r.Payload...)
	rec := dst[start:]
	binary.BigEndian.PutUint32(rec[12:16], recordCRC(rec[:12], rec[recHeaderSize:]))
	return dst
}

// encodeAs encodes r in the format b says.
func encodeAs(r *Record, b recBatch) []byte {
	if b.v2 {
		return appendRecord(nil, r, b)
	}
	return appendRecordV1(nil, r)
}

func TestRecordRoundTrip(t *testing.T) {
	t.Parallel()
	long := string(bytes.Repeat([]byte("i"), 64))
	for _, c := range []struct {
		r Record
		b recBatch
	}{
		{Record{Revision: 1, NodeID: "n", Instance: "i", Producer: "p", Payload: []byte{}, Time: time.Unix(0, 0).UTC()},
			recBatch{v2: true}},
		{Record{Revision: 1 << 62, NodeID: "node-1.a_b", Instance: "0123456789abcdef", Producer: "cache/users", Payload: []byte("hello"), Time: time.Now().UTC()},
			recBatch{v2: true, id: 1<<63 - 1, remaining: 999}},
		{Record{Revision: 7, NodeID: string(bytes.Repeat([]byte("n"), 64)), Instance: long, Producer: string(bytes.Repeat([]byte("p"), 128)),
			Payload: bytes.Repeat([]byte{0}, MaxPayloadSize), Time: time.Unix(-5, 3).UTC()}, recBatch{v2: true, id: 5, remaining: 1}},
		// Format 1, as the first release wrote it: no instance, no batch.
		{Record{Revision: 3, NodeID: "old", Producer: "p", Payload: []byte("v1"), Time: time.Unix(1, 2).UTC()}, recBatch{}},
	} {
		r := c.r
		b := encodeAs(&r, c.b)
		if c.b.v2 {
			require.Len(t, b, recordSize(r.NodeID, r.Instance, r.Producer, r.Payload))
		}
		got, gb, n, err := decodeRecord(b)
		require.NoError(t, err)
		require.Equal(t, len(b), n)
		require.Equal(t, r, got)
		require.Equal(t, c.b, gb)
		for _, cut := range []int{0, 1, recHeaderSize - 1, recHeaderSize, len(b) - 1} {
			_, _, _, err := decodeRecord(b[:cut])
			require.ErrorIs(t, err, errMalformed, "cut at %d", cut)
		}
		for i := range min(len(b), 200) {
			if len(b) > 1<<16 {
				break // the checksum is the same code for large records; keep it fast
			}
			c := bytes.Clone(b)
			c[i] ^= 0x10
			_, _, _, err := decodeRecord(c)
			require.ErrorIs(t, err, errMalformed, "flip at %d", i)
		}
	}
}

func TestHeadMetaRoundTrip(t *testing.T) {
	t.Parallel()
	for _, h := range []fileHead{{}, {Rev: 10, Seg: 4, Off: 1234}} {
		got, err := decodeHead(encodeHead(h))
		require.NoError(t, err)
		require.Equal(t, h, got)
	}
	for _, bad := range []fileHead{{Rev: 3}, {Rev: 3, Seg: 4, Off: 100}, {Rev: 3, Seg: 1, Off: 1}} {
		_, err := decodeHead(encodeHead(bad))
		require.ErrorIs(t, err, errMalformed)
	}
	m := fileMeta{Epoch: "0123456789abcdef0123456789abcdef", Tail: 42}
	b := encodeMeta(m)
	got, err := decodeMeta(b)
	require.NoError(t, err)
	require.Equal(t, m, got)
	for i := range b {
		c := bytes.Clone(b)
		c[i] ^= 1
		_, err := decodeMeta(c)
		require.ErrorIs(t, err, errMalformed)
	}
}

// FuzzDecodeRecord feeds arbitrary bytes to the record decoder: it must
// never panic, and whatever it accepts must re-encode to the same bytes
// (every record has exactly one encoding).
func FuzzDecodeRecord(f *testing.F) {
	for i, r := range []Record{
		{Revision: 1, NodeID: "n", Instance: "a", Producer: "p", Payload: []byte{}, Time: time.Unix(0, 0)},
		{Revision: 99, NodeID: "node-1", Instance: "0123456789abcdef", Producer: "cache/users", Payload: []byte("some payload"), Time: time.Unix(1700000000, 12345)},
		{Revision: 1 << 40, NodeID: "x.y_z", Producer: "~!", Payload: bytes.Repeat([]byte{0xff}, 300), Time: time.Unix(-1, 0)},
	} {
		b := encodeAs(&r, recBatch{v2: r.Instance != "", id: int64(i) << 40, remaining: uint32(i)})
		f.Add(b)
		f.Add(b[:len(b)-1])
		f.Add(b[:recHeaderSize])
		f.Add(b[:5])
		f.Add(append(bytes.Clone(b), b...))
	}
	f.Add([]byte{})
	f.Fuzz(func(t *testing.T, b []byte) {
		check := func(b []byte) {
			r, rb, n, err := decodeRecord(b)
			if err != nil {
				require.ErrorIs(t, err, errMalformed)
				return
			}
			require.LessOrEqual(t, n, len(b))
			require.Equal(t, b[:n], encodeAs(&r, rb))
		}
		check(b)
		// Random bytes almost never carry a valid checksum; fix it up so
		// that the body decoding gets explored too.
		if len(b) >= recHeaderSize {
			c := bytes.Clone(b)
			body := c[recHeaderSize:]
			if n := int(binary.BigEndian.Uint32(c[:4])); n <= len(body) {
				body = body[:n]
			}
			binary.BigEndian.PutUint32(c[12:16], recordCRC(c[:12], body))
			check(c)
		}
	})
}

// decodeRecord decodes the record at the start of b and returns it, its
// batch fields and its encoded size (the tests' way in; the journal reads
// records through segReader). Its payload aliases b.
func decodeRecord(b []byte) (Record, recBatch, int, error) {
	if len(b) < recHeaderSize {
		return Record{}, recBatch{}, 0, fmt.Errorf("%w: %d bytes, a record header is %d", errMalformed, len(b), recHeaderSize)
	}
	h, err := decodeRecHeader(b)
	if err != nil {
		return Record{}, recBatch{}, 0, err
	}
	if len(b)-recHeaderSize < h.bodyLen {
		return Record{}, recBatch{}, 0, fmt.Errorf("%w: record %d truncated: %d of %d body bytes", errMalformed, h.revision, len(b)-recHeaderSize, h.bodyLen)
	}
	n := recHeaderSize + h.bodyLen
	r, rb, err := decodeRecBody(b[:recHeaderSize], h, b[recHeaderSize:n])
	return r, rb, n, err
}
