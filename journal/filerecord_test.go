package journal

import (
	"bytes"
	"encoding/binary"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
)

func TestRecordRoundTrip(t *testing.T) {
	t.Parallel()
	for _, r := range []Record{
		{Revision: 1, NodeID: "n", Producer: "p", Payload: []byte{}, Time: time.Unix(0, 0).UTC()},
		{Revision: 1 << 62, NodeID: "node-1.a_b", Producer: "cache/users", Payload: []byte("hello"), Time: time.Now().UTC()},
		{Revision: 7, NodeID: string(bytes.Repeat([]byte("n"), 64)), Producer: string(bytes.Repeat([]byte("p"), 128)),
			Payload: bytes.Repeat([]byte{0}, MaxPayloadSize), Time: time.Unix(-5, 3).UTC()},
	} {
		b := appendRecord(nil, &r)
		require.Len(t, b, recordSize(r.NodeID, r.Producer, r.Payload))
		got, n, err := decodeRecord(b)
		require.NoError(t, err)
		require.Equal(t, len(b), n)
		require.Equal(t, r, got)
		for _, cut := range []int{0, 1, recHeaderSize - 1, recHeaderSize, len(b) - 1} {
			_, _, err := decodeRecord(b[:cut])
			require.ErrorIs(t, err, errMalformed, "cut at %d", cut)
		}
		for i := range min(len(b), 200) {
			if len(b) > 1<<16 {
				break // the checksum is the same code for large records; keep it fast
			}
			c := bytes.Clone(b)
			c[i] ^= 0x10
			_, _, err := decodeRecord(c)
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
	for _, r := range []Record{
		{Revision: 1, NodeID: "n", Producer: "p", Payload: []byte{}, Time: time.Unix(0, 0)},
		{Revision: 99, NodeID: "node-1", Producer: "cache/users", Payload: []byte("some payload"), Time: time.Unix(1700000000, 12345)},
		{Revision: 1 << 40, NodeID: "x.y_z", Producer: "~!", Payload: bytes.Repeat([]byte{0xff}, 300), Time: time.Unix(-1, 0)},
	} {
		b := appendRecord(nil, &r)
		f.Add(b)
		f.Add(b[:len(b)-1])
		f.Add(b[:recHeaderSize])
		f.Add(b[:5])
		f.Add(append(bytes.Clone(b), b...))
	}
	f.Add([]byte{})
	f.Fuzz(func(t *testing.T, b []byte) {
		check := func(b []byte) {
			r, n, err := decodeRecord(b)
			if err != nil {
				require.ErrorIs(t, err, errMalformed)
				return
			}
			require.LessOrEqual(t, n, len(b))
			require.Equal(t, b[:n], appendRecord(nil, &r))
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
