package journal

import (
	"bytes"
	"context"
	"testing"
)

// BenchmarkFileRead measures sequential catch-up: reading 200,000 records
// of 512-byte payloads in pages of 1,000 from a fresh instance.
func BenchmarkFileRead(b *testing.B) {
	const total, page = 200_000, 1000
	dir := b.TempDir()
	ctx := context.Background()
	w, err := OpenFile(ctx, FileConfig{Dir: dir, NodeID: "writer"})
	if err != nil {
		b.Fatal(err)
	}
	defer w.Close(ctx)
	batch := make([]Entry, page)
	for i := range batch {
		batch[i] = Entry{Producer: "cache/users", Payload: bytes.Repeat([]byte{byte(i)}, 512)}
	}
	for range total / page {
		if _, err := w.Append(ctx, batch...); err != nil {
			b.Fatal(err)
		}
	}
	b.ResetTimer()
	for range b.N {
		r, err := OpenFile(ctx, FileConfig{Dir: dir, NodeID: "reader"})
		if err != nil {
			b.Fatal(err)
		}
		n := 0
		for after := int64(0); ; {
			recs, err := r.Read(ctx, after, page)
			if err != nil {
				b.Fatal(err)
			}
			if len(recs) == 0 {
				break
			}
			n += len(recs)
			after = recs[len(recs)-1].Revision
		}
		if n != total {
			b.Fatalf("read %d records, want %d", n, total)
		}
		r.Close(ctx)
	}
	b.ReportMetric(float64(total*b.N)/b.Elapsed().Seconds(), "records/s")
}
