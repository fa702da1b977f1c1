package datastore_test

import (
	"bufio"
	"bytes"
	"context"
	"fmt"
	"io"
	"math/rand/v2"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/tandem-go/tandem/datastore"
	"github.com/tandem-go/tandem/internal/dbtest"
	"github.com/tandem-go/tandem/lock"
)

// genReader yields size pseudo-random bytes of seed, generated as they
// are read, so that a blob of any size costs no memory.
type genReader struct {
	r    *rand.ChaCha8
	left int64
}

func newGen(seed uint64, size int64) *genReader {
	var k [32]byte
	for i := range 8 {
		k[i] = byte(seed >> (8 * i))
	}
	k[31] = 0xb1
	return &genReader{r: rand.NewChaCha8(k), left: size}
}

func (g *genReader) Read(p []byte) (int, error) {
	if g.left == 0 {
		return 0, io.EOF
	}
	if int64(len(p)) > g.left {
		p = p[:g.left]
	}
	n, _ := g.r.Read(p)
	g.left -= int64(n)
	return n, nil
}

// benchStore is one backend the benchmarks run on.
type benchStore struct {
	name string
	open func(b *testing.B) (datastore.Store, lock.Store)
}

func benchStores() []benchStore {
	out := []benchStore{{"file", func(b *testing.B) (datastore.Store, lock.Store) {
		dir := b.TempDir()
		s, err := datastore.OpenFile(context.Background(), datastore.FileConfig{Dir: dir})
		require.NoError(b, err)
		ls, err := lock.OpenFile(context.Background(), lock.FileConfig{Dir: dir})
		require.NoError(b, err)
		return s, ls
	}}}
	for _, be := range dbtest.Backends {
		out = append(out, benchStore{be.Name, func(b *testing.B) (datastore.Store, lock.Store) {
			db := dbtest.Open(b, be)
			s := openSQL(b, db, datastore.SQLConfig{})
			ls, err := lock.OpenSQL(context.Background(), db.NewPool(b), db.Dialect, lock.SQLConfig{Prefix: db.Prefix})
			require.NoError(b, err)
			return s, ls
		}})
	}
	return out
}

var benchSizes = []struct {
	name string
	size int64
}{{"1MiB", 1 << 20}, {"256MiB", 256 << 20}}

// BenchmarkFileVsRaw measures the file store against a raw copy of the
// same bytes on the same disk, interleaved in one loop so that both see
// the same machine: put/ writes a file in the store's folder (io.Copy,
// fsync, close) and then puts the same bytes; get/ reads that file back
// and then gets the blob (verifying its hash). It reports both rates and
// tandem's as a percentage of the raw one.
func BenchmarkFileVsRaw(b *testing.B) {
	for _, sz := range benchSizes {
		b.Run("put/"+sz.name, func(b *testing.B) {
			dir := b.TempDir()
			s, err := datastore.OpenFile(context.Background(), datastore.FileConfig{Dir: dir})
			require.NoError(b, err)
			ctx := context.Background()
			var raw, put time.Duration
			for i := 0; b.Loop(); i++ {
				p := filepath.Join(dir, "raw")
				begin := time.Now()
				f, err := os.Create(p)
				require.NoError(b, err)
				_, err = io.Copy(f, newGen(uint64(i), sz.size))
				require.NoError(b, err)
				require.NoError(b, f.Sync())
				require.NoError(b, f.Close())
				raw += time.Since(begin)
				begin = time.Now()
				in, err := s.Put(ctx, newGen(uint64(i), sz.size))
				require.NoError(b, err)
				put += time.Since(begin)
				b.StopTimer()
				require.NoError(b, os.Remove(p))
				require.NoError(b, s.Delete(ctx, in.ID))
				b.StartTimer()
			}
			reportVsRaw(b, sz.size, raw, put)
		})
		b.Run("get/"+sz.name, func(b *testing.B) {
			dir := b.TempDir()
			s, err := datastore.OpenFile(context.Background(), datastore.FileConfig{Dir: dir})
			require.NoError(b, err)
			ctx := context.Background()
			p := filepath.Join(dir, "raw")
			f, err := os.Create(p)
			require.NoError(b, err)
			_, err = io.Copy(f, newGen(1, sz.size))
			require.NoError(b, err)
			require.NoError(b, f.Close())
			in, err := s.Put(ctx, newGen(1, sz.size))
			require.NoError(b, err)
			buf := make([]byte, 1<<20)
			var raw, get time.Duration
			for b.Loop() {
				begin := time.Now()
				f, err := os.Open(p)
				require.NoError(b, err)
				_, err = io.CopyBuffer(io.Discard, f, buf)
				require.NoError(b, err)
				f.Close()
				raw += time.Since(begin)
				begin = time.Now()
				r, err := s.Get(ctx, in.ID)
				require.NoError(b, err)
				_, err = io.CopyBuffer(io.Discard, r, buf)
				require.NoError(b, err)
				r.Close()
				get += time.Since(begin)
			}
			reportVsRaw(b, sz.size, raw, get)
		})
	}
}

func reportVsRaw(b *testing.B, size int64, raw, tandem time.Duration) {
	mb := float64(size) * float64(b.N) / 1e6
	b.ReportMetric(mb/raw.Seconds(), "raw-MB/s")
	b.ReportMetric(mb/tandem.Seconds(), "tandem-MB/s")
	b.ReportMetric(100*raw.Seconds()/tandem.Seconds(), "%-of-raw")
}

// BenchmarkPut stores new content (a new seed per iteration: no dedup)
// and deletes it again outside the timer.
func BenchmarkPut(b *testing.B) {
	for _, bs := range benchStores() {
		for _, sz := range benchSizes {
			b.Run(bs.name+"/"+sz.name, func(b *testing.B) {
				s, _ := bs.open(b)
				ctx := context.Background()
				b.SetBytes(sz.size)
				for i := 0; b.Loop(); i++ {
					in, err := s.Put(ctx, newGen(uint64(i), sz.size))
					require.NoError(b, err)
					b.StopTimer()
					require.NoError(b, s.Delete(ctx, in.ID))
					b.StartTimer()
				}
			})
		}
	}
}

// BenchmarkGet reads a stored blob to the end, verifying its hash
// (file-skipverify: the file store configured not to).
func BenchmarkGet(b *testing.B) {
	skip := benchStore{"file-skipverify", func(b *testing.B) (datastore.Store, lock.Store) {
		s, err := datastore.OpenFile(context.Background(), datastore.FileConfig{Dir: b.TempDir(), SkipVerify: true})
		require.NoError(b, err)
		return s, nil
	}}
	for _, bs := range append(benchStores(), skip) {
		for _, sz := range benchSizes {
			b.Run(bs.name+"/"+sz.name, func(b *testing.B) {
				s, _ := bs.open(b)
				ctx := context.Background()
				in, err := s.Put(ctx, newGen(7, sz.size))
				require.NoError(b, err)
				buf := make([]byte, 1<<20)
				b.SetBytes(sz.size)
				for b.Loop() {
					r, err := s.Get(ctx, in.ID)
					require.NoError(b, err)
					_, err = io.CopyBuffer(io.Discard, r, buf)
					require.NoError(b, err)
					r.Close()
				}
			})
		}
	}
}

// BenchmarkSweep: blobs/s a collection deletes. Each iteration stores
// sweepBlobs small unreferenced blobs (outside the timer), lets the grace
// period pass, and collects them all.
func BenchmarkSweep(b *testing.B) {
	const sweepBlobs = 2000
	for _, bs := range benchStores() {
		b.Run(bs.name, func(b *testing.B) {
			s, ls := bs.open(b)
			ctx := context.Background()
			c, err := lock.New(lock.Config{NodeID: "bench", Store: ls, TTL: time.Minute})
			require.NoError(b, err)
			l, err := c.TryAcquire(ctx, datastore.DefaultLeaseName)
			require.NoError(b, err)
			defer l.Release(ctx)
			gc, err := datastore.NewCollector(s, datastore.GCConfig{GracePeriod: time.Millisecond, Logger: quietLogger()})
			require.NoError(b, err)
			none := datastore.ReferencesFunc(func(context.Context, func(datastore.ID) error) error { return nil })
			var deleted int64
			var took time.Duration
			for i := 0; b.Loop(); i++ {
				b.StopTimer()
				for j := range sweepBlobs {
					_, err := s.Put(ctx, strings.NewReader(fmt.Sprintf("blob %d of round %d, long enough to be stored: %0100d", j, i, j)))
					require.NoError(b, err)
				}
				time.Sleep(10 * time.Millisecond)
				b.StartTimer()
				begin := time.Now()
				run, err := gc.Collect(ctx, l, none)
				took += time.Since(begin)
				require.NoError(b, err)
				require.EqualValues(b, sweepBlobs, run.Deleted)
				deleted += run.Deleted
			}
			b.ReportMetric(float64(deleted)/took.Seconds(), "blobs/s")
		})
	}
}

// rssBlob is the size of the blob whose put and get BenchmarkPeakRSS
// measures.
const rssBlob = 1 << 30

// BenchmarkPeakRSS runs a child process (this test binary, running
// TestRSSChild) per backend that puts and then gets a 1 GiB blob, and
// reports the child's peak resident set size (VmHWM) during each: the
// memory a Put or Get needs beyond the runtime, whatever the blob's size.
func BenchmarkPeakRSS(b *testing.B) {
	for _, bs := range benchStores() {
		b.Run(bs.name, func(b *testing.B) {
			for b.Loop() {
				cmd := exec.Command(os.Args[0], "-test.run=^TestRSSChild$", "-test.v")
				cmd.Env = append(os.Environ(), "TANDEM_RSS_CHILD="+bs.name)
				out, err := cmd.CombinedOutput()
				require.NoError(b, err, "%s", out)
				if bytes.Contains(out, []byte("--- SKIP: TestRSSChild")) {
					b.Skipf("%s", out)
				}
				got := map[string]float64{}
				sc := bufio.NewScanner(bytes.NewReader(out))
				for sc.Scan() {
					if f := strings.Fields(sc.Text()); len(f) == 3 && f[0] == "RSS" {
						got[f[1]], _ = strconv.ParseFloat(f[2], 64)
					}
				}
				require.Contains(b, got, "put", "%s", out)
				require.Contains(b, got, "get", "%s", out)
				b.ReportMetric(got["put"], "put-peak-MiB")
				b.ReportMetric(got["get"], "get-peak-MiB")
			}
		})
	}
}

// TestRSSChild is BenchmarkPeakRSS's child; it does nothing unless
// TANDEM_RSS_CHILD names a backend.
func TestRSSChild(t *testing.T) {
	name := os.Getenv("TANDEM_RSS_CHILD")
	if name == "" {
		t.Skip("BenchmarkPeakRSS's child process")
	}
	var open func(b *testing.B) (datastore.Store, lock.Store)
	for _, bs := range benchStores() {
		if bs.name == name {
			open = bs.open
		}
	}
	require.NotNil(t, open, name)
	// benchStores' openers take a *testing.B; run one as a benchmark of
	// a single iteration.
	var failed error
	ran, ran2 := false, false
	testing.Benchmark(func(b *testing.B) {
		if ran {
			return // one measurement, whatever b.N
		}
		ran = true
		ctx := context.Background()
		s, _ := open(b) // skips b when the backend is unavailable
		ran2 = true
		in, err := s.Put(ctx, newGen(42, rssBlob))
		if err != nil {
			failed = err
			return
		}
		fmt.Printf("RSS put %.1f\n", peakMiB(t))
		// Reset the peak (Linux: clear_refs 5) and read the blob back.
		if err := os.WriteFile("/proc/self/clear_refs", []byte("5"), 0); err != nil {
			failed = err
			return
		}
		r, err := s.Get(ctx, in.ID)
		if err == nil {
			_, err = io.CopyBuffer(io.Discard, r, make([]byte, 1<<20))
			r.Close()
		}
		if err != nil {
			failed = err
			return
		}
		fmt.Printf("RSS get %.1f\n", peakMiB(t))
		failed = s.Delete(ctx, in.ID)
	})
	require.NoError(t, failed)
	if !ran2 {
		t.Skip("backend unavailable: " + name)
	}
}

// peakMiB reads the process's peak resident set size (VmHWM).
func peakMiB(t *testing.T) float64 {
	b, err := os.ReadFile("/proc/self/status")
	require.NoError(t, err)
	for _, line := range strings.Split(string(b), "\n") {
		if f := strings.Fields(line); len(f) == 3 && f[0] == "VmHWM:" {
			kb, err := strconv.ParseFloat(f[1], 64)
			require.NoError(t, err)
			return kb / 1024
		}
	}
	t.Fatal("no VmHWM in /proc/self/status")
	return 0
}

// BenchmarkPutSmall stores new 1 KiB blobs into a file store, one after
// another, without deleting them: the steady state of a store whose
// blobs are small, where what costs is the file-system work around the
// content (temp file, fsync, folders, rename). Run it with TMPDIR on a
// tmpfs to see that work without the fsyncs.
func BenchmarkPutSmall(b *testing.B) {
	s, err := datastore.OpenFile(context.Background(), datastore.FileConfig{Dir: b.TempDir()})
	require.NoError(b, err)
	ctx := context.Background()
	b.SetBytes(1 << 10)
	for i := 0; b.Loop(); i++ {
		if _, err := s.Put(ctx, newGen(uint64(i), 1<<10)); err != nil {
			b.Fatal(err)
		}
	}
}
