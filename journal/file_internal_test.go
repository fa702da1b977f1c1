package journal

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"testing"
	"testing/synctest"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/tandem-go/tandem/dialect"
	"github.com/tandem-go/tandem/ident"
	"github.com/tandem-go/tandem/internal/atomicfile"
	"github.com/tandem-go/tandem/internal/filelock"
)

func testCtx(t *testing.T) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	t.Cleanup(cancel)
	return ctx
}

// openTestFile opens a file journal on dir as node and closes it when t
// ends, after checking the journal's invariants.
func openTestFile(t *testing.T, dir, node string, segSize int64) *File {
	t.Helper()
	j, err := OpenFile(testCtx(t), FileConfig{Dir: dir, NodeID: node, SegmentSize: segSize})
	require.NoError(t, err)
	t.Cleanup(func() {
		require.NoError(t, j.Close(context.Background()))
	})
	return j
}

func entry(producer, payload string) Entry {
	return Entry{Producer: producer, Payload: []byte(payload)}
}

// readAll reads every record after after, in pages.
func readAll(t *testing.T, j Journal, after int64) []Record {
	t.Helper()
	var out []Record
	for {
		recs, err := j.Read(testCtx(t), after, 100)
		require.NoError(t, err)
		if len(recs) == 0 {
			return out
		}
		for i, r := range recs {
			require.Equal(t, after+1+int64(i), r.Revision, "records must be dense")
		}
		after = recs[len(recs)-1].Revision
		out = append(out, recs...)
	}
}

func appendN(t *testing.T, j Journal, n int, producer string) []int64 {
	t.Helper()
	var revs []int64
	for i := range n {
		r, err := j.Append(testCtx(t), entry(producer, fmt.Sprintf("payload %d", i)))
		require.NoError(t, err)
		revs = append(revs, r...)
	}
	return revs
}

func (j *File) testHead(t *testing.T) fileHead {
	t.Helper()
	h, err := j.readHead()
	require.NoError(t, err)
	return h
}

func segPath(j *File, seg int64) string { return j.path(segName(seg)) }

// appendBytes appends raw bytes to a file, as a crashed writer would have.
func appendBytes(t *testing.T, path string, b []byte) {
	t.Helper()
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_APPEND, 0)
	require.NoError(t, err)
	_, err = f.Write(b)
	require.NoError(t, err)
	require.NoError(t, f.Close())
}

func TestFileTornTail(t *testing.T) {
	t.Parallel()
	// ghost is record rev of a batch of three records, of which it is
	// the one at index i.
	ghost := func(rev int64, i int) []byte {
		return appendRecord(nil, &Record{Revision: rev, NodeID: "ghost", Instance: "g", Producer: "p", Payload: []byte("never committed"), Time: time.Now()},
			recBatch{v2: true, id: 77, remaining: uint32(2 - i)})
	}
	cases := map[string]func(rev int64) []byte{
		// (a) a writer killed in the middle of writing a record.
		"partial": func(rev int64) []byte { b := ghost(rev, 0); return b[:len(b)-5] },
		"garbage": func(int64) []byte { return []byte("\x00\x00\x01\x00 garbage of a crashed writer") },
		// (b) a whole record written past the head, then damaged.
		"flipped": func(rev int64) []byte { b := ghost(rev, 0); b[len(b)-3] ^= 0x40; return b },
		// (c) whole, valid records of a batch that was not written whole:
		// rolling them forward would commit part of an append.
		"incomplete-batch": func(rev int64) []byte { return append(ghost(rev, 0), ghost(rev+1, 1)...) },
		// (d) a whole batch whose last record is damaged.
		"damaged-batch": func(rev int64) []byte {
			last := ghost(rev+2, 2)
			last[len(last)-1] ^= 1
			return append(append(ghost(rev, 0), ghost(rev+1, 1)...), last...)
		},
		// (e) whole records of the first release's format, which carries
		// no batch boundary: its writers committed only through the head.
		"format-1": func(rev int64) []byte {
			return appendRecordV1(nil, &Record{Revision: rev, NodeID: "ghost", Producer: "p", Payload: []byte("v1"), Time: time.Now()})
		},
	}
	for name, torn := range cases {
		t.Run(name, func(t *testing.T) {
			t.Parallel()
			dir := t.TempDir()
			j := openTestFile(t, dir, "n1", 0)
			appendN(t, j, 5, "p")
			h := j.testHead(t)
			appendBytes(t, segPath(j, h.Seg), torn(h.Rev+1))

			// Readers never see past the head.
			require.Len(t, readAll(t, j, 0), 5)
			recs, err := j.Read(testCtx(t), 5, 10)
			require.NoError(t, err)
			require.Empty(t, recs)
			// Another instance (a fresh cursor cache) agrees.
			other := openTestFile(t, dir, "n2", 0)
			require.Len(t, readAll(t, other, 0), 5)

			// The next append (by another node) repairs the tail.
			revs, err := other.Append(testCtx(t), entry("p", "after repair"))
			require.NoError(t, err)
			require.Equal(t, []int64{6}, revs)
			nh := other.testHead(t)
			fi, err := os.Stat(segPath(j, nh.Seg))
			require.NoError(t, err)
			require.Equal(t, nh.Off, fi.Size(), "the torn tail is gone")

			for _, jj := range []*File{j, other} {
				all := readAll(t, jj, 0)
				require.Len(t, all, 6)
				require.Equal(t, "after repair", string(all[5].Payload))
				require.Equal(t, "n2", all[5].NodeID)
			}
		})
	}
}

// A rollover whose head was never written leaves a segment named head+1;
// the next writer must remove it even when it does not roll over.
func TestFileStraySegment(t *testing.T) {
	t.Parallel()
	j := openTestFile(t, t.TempDir(), "n1", 0)
	appendN(t, j, 3, "p")
	stray := appendRecord(nil, &Record{Revision: 4, NodeID: "ghost", Instance: "g", Producer: "p", Payload: []byte("x"), Time: time.Now()},
		recBatch{v2: true, id: 1, remaining: 1}) // its batch's second record is missing
	require.NoError(t, os.WriteFile(segPath(j, 4), stray, 0o666))
	require.Len(t, readAll(t, j, 0), 3)

	appendN(t, j, 2, "q")
	_, err := os.Stat(segPath(j, 4))
	require.ErrorIs(t, err, os.ErrNotExist)
	all := readAll(t, openTestFile(t, j.cfg.Dir, "n2", 0), 0)
	require.Len(t, all, 5)
	require.Equal(t, "q", all[3].Producer)
	require.Equal(t, "n1", all[3].NodeID)
}

func TestFileCorruptBelowHead(t *testing.T) {
	t.Parallel()
	for _, mode := range []string{"flip-payload", "flip-length", "truncate"} {
		t.Run(mode, func(t *testing.T) {
			t.Parallel()
			dir := t.TempDir()
			j := openTestFile(t, dir, "n1", 0)
			appendN(t, j, 10, "p")
			h := j.testHead(t)
			path := segPath(j, h.Seg)
			b, err := os.ReadFile(path)
			require.NoError(t, err)
			// Find record 5's offset.
			off := 0
			for range 4 {
				_, _, n, err := decodeRecord(b[off:])
				require.NoError(t, err)
				off += n
			}
			switch mode {
			case "flip-payload":
				_, _, n, _ := decodeRecord(b[off:])
				b[off+n-1] ^= 1
			case "flip-length":
				b[off+1] ^= 0x7f
			case "truncate":
				b = b[:off+7]
			}
			require.NoError(t, os.WriteFile(path, b, 0o666))

			fresh := openTestFile(t, dir, "n2", 0)
			recs, err := fresh.Read(testCtx(t), 0, 100)
			require.ErrorIs(t, err, ErrCorrupt)
			require.Nil(t, recs)
			require.Contains(t, err.Error(), segName(h.Seg))
			if mode != "truncate" {
				require.Contains(t, err.Error(), "offset "+strconv.Itoa(off))
			}
			// Records before the damage are still readable.
			recs, err = fresh.Read(testCtx(t), 0, 4)
			require.NoError(t, err)
			require.Len(t, recs, 4)
			// Reading from the cached position hits the damage too.
			_, err = fresh.Read(testCtx(t), 4, 1)
			require.ErrorIs(t, err, ErrCorrupt)
			if mode == "truncate" {
				// A writer refuses to append to a segment shorter than
				// the head says.
				_, err = fresh.Append(testCtx(t), entry("p", "x"))
				require.ErrorIs(t, err, ErrCorrupt)
			}
		})
	}
}

func TestFileCorruptHeadAndMeta(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	j := openTestFile(t, dir, "n1", 0)
	appendN(t, j, 2, "p")
	require.NoError(t, os.WriteFile(j.path(fileHeadName), []byte("tandemH1 nonsense"), 0o666))
	_, err := j.Head(testCtx(t))
	require.ErrorIs(t, err, ErrCorrupt)
	_, err = j.Read(testCtx(t), 0, 1)
	require.ErrorIs(t, err, ErrCorrupt)
	_, err = j.Append(testCtx(t), entry("p", "x"))
	require.ErrorIs(t, err, ErrCorrupt)
	require.NoError(t, os.Remove(j.path(fileHeadName)))
	_, err = OpenFile(testCtx(t), FileConfig{Dir: dir, NodeID: "n2"})
	require.ErrorIs(t, err, ErrCorrupt)

	require.NoError(t, os.WriteFile(j.path(fileMetaName), []byte("tandemM1"), 0o666))
	_, err = j.Epoch(testCtx(t))
	require.ErrorIs(t, err, ErrCorrupt)

	// Segments without head and meta: not a new journal.
	require.NoError(t, os.Remove(j.path(fileMetaName)))
	_, err = OpenFile(testCtx(t), FileConfig{Dir: dir, NodeID: "n2"})
	require.ErrorIs(t, err, ErrCorrupt)
}

// A journal that lost its meta file gets a new epoch (every node resyncs)
// and a tail at its lowest segment.
func TestFileLostMeta(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	j := openTestFile(t, dir, "n1", 256)
	appendN(t, j, 20, "p")
	epoch, err := j.Epoch(testCtx(t))
	require.NoError(t, err)
	_, err = j.Prune(testCtx(t), 10)
	require.NoError(t, err)
	segs, err := listSegments(j.dir)
	require.NoError(t, err)
	require.NoError(t, os.Remove(j.path(fileMetaName)))

	k := openTestFile(t, dir, "n2", 256)
	newEpoch, err := k.Epoch(testCtx(t))
	require.NoError(t, err)
	require.NotEqual(t, epoch, newEpoch)
	tail, err := k.Tail(testCtx(t))
	require.NoError(t, err)
	require.Equal(t, segs[0], tail)
	require.Len(t, readAll(t, k, tail-1), int(20-tail+1))
}

func TestFileRolloverAndPrune(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	const segSize = 1024
	j := openTestFile(t, dir, "n1", segSize)
	payload := bytes.Repeat([]byte("x"), 100) // ~130-byte records: 7 per segment
	var want int64
	for i := range 60 {
		n := 1 + i%3
		var es []Entry
		for range n {
			es = append(es, Entry{Producer: "p", Payload: payload})
		}
		revs, err := j.Append(testCtx(t), es...)
		require.NoError(t, err)
		require.Equal(t, want+1, revs[0])
		want += int64(n)
	}
	segs, err := listSegments(j.dir)
	require.NoError(t, err)
	require.Greater(t, len(segs), 10)
	for i, s := range segs {
		fi, err := os.Stat(segPath(j, s))
		require.NoError(t, err)
		require.LessOrEqual(t, fi.Size(), int64(segSize), "segment %d", i)
	}
	all := readAll(t, j, 0)
	require.Len(t, all, int(want))
	// Reads starting anywhere (fresh instance, no cached positions) agree.
	other := openTestFile(t, dir, "n2", segSize)
	for _, after := range []int64{0, 1, segs[1] - 1, segs[1], segs[3] + 2, want - 1, want} {
		recs, err := other.Read(testCtx(t), after, 1000)
		require.NoError(t, err)
		require.Len(t, recs, int(want-after))
		if len(recs) > 0 {
			require.Equal(t, after+1, recs[0].Revision)
		}
	}

	// Prune inside the fourth segment: the first three go.
	below := segs[3] + 2
	n, err := j.Prune(testCtx(t), below)
	require.NoError(t, err)
	require.Equal(t, segs[3]-1, n)
	tail, err := j.Tail(testCtx(t))
	require.NoError(t, err)
	require.Equal(t, below, tail)
	left, err := listSegments(j.dir)
	require.NoError(t, err)
	require.Equal(t, segs[3:], left)

	// Below the tail: ErrBehindTail, even where records remain on disk.
	for _, after := range []int64{0, segs[3] - 1, below - 2} {
		_, err = other.Read(testCtx(t), after, 10)
		var bt *BehindTailError
		require.ErrorAs(t, err, &bt, "after %d", after)
		require.Equal(t, below, bt.Tail)
		require.ErrorIs(t, err, ErrBehindTail)
	}
	recs, err := other.Read(testCtx(t), below-1, 1000)
	require.NoError(t, err)
	require.Len(t, recs, int(want-below+1))

	// A lower prune changes nothing; pruning everything keeps the head's
	// segment; beyond head+1 is refused.
	n, err = j.Prune(testCtx(t), 2)
	require.NoError(t, err)
	require.Zero(t, n)
	tail, err = j.Tail(testCtx(t))
	require.NoError(t, err)
	require.Equal(t, below, tail)
	_, err = j.Prune(testCtx(t), want+2)
	require.ErrorIs(t, err, ErrInvalidArgument)
	_, err = j.Prune(testCtx(t), 0)
	require.ErrorIs(t, err, ErrInvalidArgument)
	_, err = j.Prune(testCtx(t), want+1)
	require.NoError(t, err)
	left, err = listSegments(j.dir)
	require.NoError(t, err)
	require.Equal(t, []int64{j.testHead(t).Seg}, left)
	recs, err = j.Read(testCtx(t), want, 10)
	require.NoError(t, err)
	require.Empty(t, recs)
	revs, err := j.Append(testCtx(t), entry("p", "after prune"))
	require.NoError(t, err)
	require.Equal(t, []int64{want + 1}, revs)
	recs, err = other.Read(testCtx(t), want, 10)
	require.NoError(t, err)
	require.Len(t, recs, 1)
}

// A read that had cached a position in a segment that a prune then
// deleted gets ErrBehindTail, not ErrCorrupt.
func TestFilePruneUnderCachedReader(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	j := openTestFile(t, dir, "n1", 512)
	appendN(t, j, 40, "p")
	recs, err := j.Read(testCtx(t), 0, 3)
	require.NoError(t, err)
	require.Len(t, recs, 3)
	_, err = j.Prune(testCtx(t), 30)
	require.NoError(t, err)
	_, err = j.Read(testCtx(t), 3, 3)
	require.ErrorIs(t, err, ErrBehindTail)
}

// A large append goes into a segment of its own, bigger than SegmentSize.
func TestFileLargeBatch(t *testing.T) {
	t.Parallel()
	j := openTestFile(t, t.TempDir(), "n1", 4096)
	appendN(t, j, 2, "p")
	big := Entry{Producer: "big", Payload: bytes.Repeat([]byte{0xab}, MaxPayloadSize)}
	revs, err := j.Append(testCtx(t), big, big)
	require.NoError(t, err)
	require.Equal(t, []int64{3, 4}, revs)
	appendN(t, j, 2, "p")
	segs, err := listSegments(j.dir)
	require.NoError(t, err)
	require.Equal(t, []int64{1, 3, 5}, segs)
	all := readAll(t, openTestFile(t, j.cfg.Dir, "n2", 4096), 0)
	require.Len(t, all, 6)
	require.Equal(t, big.Payload, all[3].Payload)
}

func TestFileConcurrentNodes(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	const nodes, goroutines, perG = 4, 6, 15
	var wg sync.WaitGroup
	got := make(chan int64, nodes*goroutines*perG*2)
	for n := range nodes {
		j := openTestFile(t, dir, fmt.Sprintf("node-%d", n), 2048)
		for g := range goroutines {
			wg.Go(func() {
				for i := range perG {
					es := []Entry{entry("p", fmt.Sprintf("%d/%d/%d", n, g, i))}
					if i%4 == 0 {
						es = append(es, entry("p", fmt.Sprintf("%d/%d/%d+", n, g, i)))
					}
					revs, err := j.Append(testCtx(t), es...)
					if !assertNoError(t, err) {
						return
					}
					for k, r := range revs {
						if k > 0 && r != revs[k-1]+1 {
							t.Errorf("one append's revisions not consecutive: %v", revs)
						}
						got <- r
					}
				}
			})
		}
	}
	wg.Wait()
	close(got)
	seen := map[int64]bool{}
	for r := range got {
		require.False(t, seen[r], "revision %d returned twice", r)
		seen[r] = true
	}
	reader := openTestFile(t, dir, "reader", 2048)
	all := readAll(t, reader, 0)
	require.Len(t, all, len(seen))
	payloads := map[string]bool{}
	for _, r := range all {
		require.True(t, seen[r.Revision])
		require.False(t, payloads[string(r.Payload)], "payload %q twice", r.Payload)
		payloads[string(r.Payload)] = true
	}
	head, err := reader.Head(testCtx(t))
	require.NoError(t, err)
	require.Equal(t, int64(len(all)), head)
}

func assertNoError(t *testing.T, err error) bool {
	if err != nil {
		t.Error(err)
		return false
	}
	return true
}

func TestFileAppendIf(t *testing.T) {
	t.Parallel()
	j := openTestFile(t, t.TempDir(), "n1", 0)
	revs, err := j.AppendIf(testCtx(t), 0, entry("p", "a"))
	require.NoError(t, err)
	require.Equal(t, []int64{1}, revs)
	_, err = j.AppendIf(testCtx(t), 0, entry("p", "b"))
	require.ErrorIs(t, err, ErrConflict)
	revs, err = j.AppendIf(testCtx(t), 1, entry("p", "c"), entry("p", "d"))
	require.NoError(t, err)
	require.Equal(t, []int64{2, 3}, revs)
	require.Len(t, readAll(t, j, 0), 3)
}

func TestFileLockTimeout(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	j, err := OpenFile(testCtx(t), FileConfig{Dir: dir, NodeID: "n1", LockTimeout: 50 * time.Millisecond})
	require.NoError(t, err)
	defer j.Close(context.Background())
	l, err := filelock.Open(filepath.Join(dir, "journal", fileLockName))
	require.NoError(t, err)
	defer l.Close()
	ok, err := l.TryLock()
	require.NoError(t, err)
	require.True(t, ok)
	_, err = j.Append(testCtx(t), entry("p", "x"))
	require.ErrorIs(t, err, dialect.ErrLockTimeout)
	_, err = j.Prune(testCtx(t), 1)
	require.ErrorIs(t, err, dialect.ErrLockTimeout)
	require.NoError(t, l.Unlock())
	revs, err := j.Append(testCtx(t), entry("p", "x"))
	require.NoError(t, err)
	require.Equal(t, []int64{1}, revs)
}

func TestFileConfig(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	for _, tc := range []struct {
		cfg   FileConfig
		field string
	}{
		{FileConfig{NodeID: "n1"}, "Dir"},
		{FileConfig{Dir: dir}, "NodeID"},
		{FileConfig{Dir: dir, NodeID: "../x"}, "NodeID"},
		{FileConfig{Dir: dir, NodeID: "n1", SegmentSize: -1}, "SegmentSize"},
		{FileConfig{Dir: dir, NodeID: "n1", LockTimeout: -time.Second}, "LockTimeout"},
	} {
		_, err := OpenFile(testCtx(t), tc.cfg)
		require.Error(t, err)
		require.Contains(t, err.Error(), tc.field)
		if tc.field == "NodeID" {
			require.ErrorIs(t, err, ident.ErrInvalid)
		} else {
			require.ErrorIs(t, err, ErrInvalidArgument)
		}
	}
	j := openTestFile(t, dir, "n1", 0)
	require.Equal(t, int64(DefaultSegmentSize), j.cfg.SegmentSize)
	require.Equal(t, DefaultLockTimeout, j.cfg.LockTimeout)
}

func TestFileOpenConcurrently(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	var wg sync.WaitGroup
	epochs := make([]string, 8)
	for i := range epochs {
		wg.Go(func() {
			j, err := OpenFile(testCtx(t), FileConfig{Dir: dir, NodeID: "n" + strconv.Itoa(i)})
			if !assertNoError(t, err) {
				return
			}
			defer j.Close(context.Background())
			epochs[i], err = j.Epoch(testCtx(t))
			assertNoError(t, err)
		})
	}
	wg.Wait()
	require.Len(t, epochs[0], 32)
	for _, e := range epochs {
		require.Equal(t, epochs[0], e)
	}
}

func TestFileWatch(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	watcher := openTestFile(t, dir, "n1", 0)
	writer := openTestFile(t, dir, "n2", 0)
	ctx, cancel := context.WithCancel(testCtx(t))
	ch, err := watcher.Watch(ctx)
	require.NoError(t, err)
	ch2, err := watcher.Watch(ctx) // one fsnotify watch serves both
	require.NoError(t, err)
	appendN(t, writer, 1, "p") // another instance: only fsnotify sees it
	for _, c := range []<-chan struct{}{ch, ch2} {
		select {
		case <-c:
		case <-time.After(10 * time.Second):
			t.Fatal("no wake-up for a commit by another instance")
		}
	}
	cancel()
	for range ch {
	}

	ch, err = watcher.Watch(testCtx(t))
	require.NoError(t, err)
	require.NoError(t, watcher.Close(context.Background()))
	for range ch {
	} // closed by Close
	_, err = watcher.Watch(testCtx(t))
	require.ErrorIs(t, err, ErrClosed)
}

func TestFileClose(t *testing.T) {
	t.Parallel()
	j, err := OpenFile(testCtx(t), FileConfig{Dir: t.TempDir(), NodeID: "n1"})
	require.NoError(t, err)
	appendN(t, j, 1, "p")
	require.NoError(t, j.Close(testCtx(t)))
	require.NoError(t, j.Close(testCtx(t)))
	_, err = j.Append(testCtx(t), entry("p", "x"))
	require.ErrorIs(t, err, ErrClosed)
	_, err = j.Read(testCtx(t), 0, 1)
	require.ErrorIs(t, err, ErrClosed)
	_, err = j.Head(testCtx(t))
	require.ErrorIs(t, err, ErrClosed)
}

// Close waits for every holder of the journal's LOCK before it releases
// it: a RaiseTail (Prune) writing the tail keeps the LOCK, and Close does
// not return, until it is done; RaiseTail and DeleteBatch after Close fail
// with ErrClosed. synctest makes "Close is waiting" observable without a
// clock: Wait returns once every goroutine of the bubble is blocked.
func TestFileCloseWaitsForRaiseTail(t *testing.T) {
	t.Parallel()
	synctest.Test(t, func(t *testing.T) {
		dir := t.TempDir()
		j, err := OpenFile(testCtx(t), FileConfig{Dir: dir, NodeID: "n1"})
		require.NoError(t, err)
		appendN(t, j, 3, "p")
		inside, proceed := make(chan struct{}), make(chan struct{})
		release := sync.OnceFunc(func() { close(proceed) })
		defer release()
		j.writeFile = func(path string, b []byte, perm os.FileMode) error {
			if filepath.Base(path) == fileMetaName {
				close(inside)
				<-proceed
			}
			return atomicfile.WriteFile(path, b, perm)
		}
		raised := make(chan error, 1)
		go func() {
			_, err := j.RaiseTail(context.Background(), 2)
			raised <- err
		}()
		<-inside
		closed := make(chan error, 1)
		go func() { closed <- j.Close(context.Background()) }()
		synctest.Wait() // Close got as far as it can while RaiseTail writes
		select {
		case err := <-closed:
			t.Fatalf("Close returned (%v) while RaiseTail held the LOCK", err)
		default:
		}
		other, err := filelock.Open(filepath.Join(dir, "journal", fileLockName))
		require.NoError(t, err)
		defer other.Close()
		ok, err := other.TryLock()
		require.NoError(t, err)
		require.False(t, ok, "the LOCK was released while RaiseTail was writing the tail under it")

		release()
		require.NoError(t, <-raised)
		require.NoError(t, <-closed)
		ok, err = other.TryLock()
		require.NoError(t, err)
		require.True(t, ok, "Close released the LOCK")
		require.NoError(t, other.Unlock())
		m, err := j.readMeta()
		require.NoError(t, err)
		require.Equal(t, int64(2), m.Tail)

		_, err = j.RaiseTail(context.Background(), 3)
		require.ErrorIs(t, err, ErrClosed)
		_, err = j.DeleteBatch(context.Background(), 1)
		require.ErrorIs(t, err, ErrClosed)
	})
}

// The cursor cache makes sequential reads seek instead of scan; a cached
// position that lies (the folder was replaced) falls back to a scan.
func TestFileCursorCache(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	j := openTestFile(t, dir, "n1", 0)
	appendN(t, j, 20, "p")
	recs, err := j.Read(testCtx(t), 0, 10)
	require.NoError(t, err)
	require.Len(t, recs, 10)
	pos, ok := j.cursors.get(10)
	require.True(t, ok)
	require.Equal(t, int64(1), pos.seg)
	end := pos
	pos, ok = j.cursors.get(20)
	require.True(t, ok, "the last commit's end is cached")
	pos, ok = j.cursors.get(19)
	require.True(t, ok, "and where its last record starts")
	require.Less(t, pos.off, j.verified.Off)

	// A read one record before where another ended (a sync's poll, which
	// looks at the record at its position again) seeks too, to where
	// that record starts.
	pos, ok = j.cursors.get(9)
	require.True(t, ok, "where the last record read starts")
	require.Less(t, pos.off, end.off)
	recs, err = j.Read(testCtx(t), 9, 3)
	require.NoError(t, err)
	require.Equal(t, []int64{10, 11, 12}, revisions(recs))
	_, ok = j.cursors.get(11)
	require.True(t, ok, "it took over the slot of the read it continued")
	pos, ok = j.cursors.get(12)
	require.True(t, ok)
	require.Greater(t, pos.off, end.off)

	// Lie: point the reader after 12 (where a record ends, and where one
	// starts) at record 1, and at the middle of a record.
	for _, off := range []int64{0, end.off/2 + 3} {
		for _, lie := range []cursorEnt{
			{rev: 12, pos: segPos{seg: 1, off: off}},
			{rev: 13, pos: segPos{seg: 1, off: end.off}, last: segPos{seg: 1, off: off}},
		} {
			j.cursors.moved(lie.rev, lie.rev, lie.pos, lie.last)
			recs, err = j.Read(testCtx(t), 12, 5)
			require.NoError(t, err)
			require.Equal(t, []int64{13, 14, 15, 16, 17}, revisions(recs))
		}
	}
}

// A cursor hint that turns out wrong while the reader's context ends
// reports the context's error: without the scan that would tell a wrong
// hint from damage, what the hint led to (a record cut in the middle) is
// not reported as corruption.
func TestFileLyingCursorCancelled(t *testing.T) {
	t.Parallel()
	j := openTestFile(t, t.TempDir(), "n1", 0)
	appendN(t, j, 20, "p")
	j.cursors.moved(12, 12, segPos{seg: 1, off: 7}, segPos{}) // inside record 1
	ctx, cancel := context.WithCancel(testCtx(t))
	cancel()
	_, err := j.Read(ctx, 12, 5)
	require.ErrorIs(t, err, context.Canceled)
	require.NotErrorIs(t, err, ErrCorrupt)
	recs, err := j.Read(testCtx(t), 12, 5)
	require.NoError(t, err, "the hint is still a hint")
	require.Equal(t, []int64{13, 14, 15, 16, 17}, revisions(recs))
}

// A prune that deletes the segments a poll is about to read, after the
// poll read the meta file (its tail from before the prune): the poll
// reports the position below the new tail (Read: ErrBehindTail), not a
// damaged journal.
func TestFilePollRacingPrune(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	j := openTestFile(t, dir, "n1", 256) // a segment every few records
	appendN(t, j, 40, "p")
	pruner := openTestFile(t, dir, "n2", 256)
	pruneBeforeRecords := func(below int64) {
		j.cursors = cursorCache{} // no hint: the read lists the segments
		j.beforeRecords = func() {
			j.beforeRecords = nil
			_, err := pruner.Prune(testCtx(t), below)
			require.NoError(t, err)
		}
	}

	pruneBeforeRecords(25)
	res, err := j.Poll(testCtx(t), 2, 5)
	require.NoError(t, err)
	require.True(t, res.BehindTail(2), "tail %d, %d records", res.Tail, len(res.Records))
	require.EqualValues(t, 25, res.Tail)

	pruneBeforeRecords(35)
	_, err = j.Read(testCtx(t), 25, 5)
	require.ErrorIs(t, err, ErrBehindTail)
	require.NotErrorIs(t, err, ErrCorrupt)
}

func revisions(recs []Record) []int64 {
	revs := make([]int64, len(recs))
	for i, r := range recs {
		revs[i] = r.Revision
	}
	return revs
}

// An invalid entry or a cancelled context writes nothing.
func TestFileBadAppend(t *testing.T) {
	t.Parallel()
	j := openTestFile(t, t.TempDir(), "n1", 0)
	_, err := j.Append(testCtx(t), Entry{Producer: "has space"})
	require.ErrorIs(t, err, ErrInvalidArgument)
	_, err = j.Append(testCtx(t), Entry{Producer: "p", Payload: make([]byte, MaxPayloadSize+1)})
	require.ErrorIs(t, err, ErrTooLarge)
	ctx, cancel := context.WithCancel(testCtx(t))
	cancel()
	_, err = j.Append(ctx, entry("p", "x"))
	require.True(t, errors.Is(err, context.Canceled))
	head, err := j.Head(testCtx(t))
	require.NoError(t, err)
	require.Zero(t, head)
}

// TestFileProcesses appends from three processes (this test binary run as
// helpers) at once, kills one of them with SIGKILL in the middle of its
// appends, and checks that the journal is dense, holds every acknowledged
// record at its acknowledged revision, and takes the next append at the
// next revision.
func TestFileProcesses(t *testing.T) {
	if dir := os.Getenv("TANDEM_FILE_HELPER_DIR"); dir != "" {
		fileHelper(t, dir, os.Getenv("TANDEM_FILE_HELPER_NODE"))
		return
	}
	if testing.Short() {
		t.Skip("spawns processes")
	}
	t.Parallel()
	dir := t.TempDir()
	type proc struct {
		cmd  *exec.Cmd
		out  *bufio.Scanner
		acks map[string]int64
	}
	var procs []*proc
	for i := range 3 {
		cmd := exec.Command(os.Args[0], "-test.run=^TestFileProcesses$")
		cmd.Env = append(os.Environ(), "TANDEM_FILE_HELPER_DIR="+dir, "TANDEM_FILE_HELPER_NODE=proc"+strconv.Itoa(i))
		cmd.Stderr = os.Stderr
		stdout, err := cmd.StdoutPipe()
		require.NoError(t, err)
		require.NoError(t, cmd.Start())
		procs = append(procs, &proc{cmd: cmd, out: bufio.NewScanner(stdout), acks: map[string]int64{}})
	}
	var wg sync.WaitGroup
	for i, p := range procs {
		wg.Go(func() {
			for p.out.Scan() {
				rev, payload, _ := strings.Cut(p.out.Text(), " ")
				r, err := strconv.ParseInt(rev, 10, 64)
				if err != nil {
					continue // test framework output
				}
				p.acks[payload] = r
				if i == 0 && len(p.acks) == 100 {
					p.cmd.Process.Kill() // mid-append, most likely
				}
			}
		})
	}
	wg.Wait()
	for i, p := range procs {
		err := p.cmd.Wait()
		if i != 0 {
			require.NoError(t, err)
		}
	}

	j := openTestFile(t, dir, "checker", 0)
	all := readAll(t, j, 0)
	at := map[string]int64{}
	for _, r := range all {
		_, dup := at[string(r.Payload)]
		require.False(t, dup, "payload %q twice", r.Payload)
		at[string(r.Payload)] = r.Revision
	}
	for i, p := range procs {
		require.NotEmpty(t, p.acks)
		for payload, rev := range p.acks {
			require.Equal(t, rev, at[payload], "process %d's acknowledged %q", i, payload)
		}
	}
	// The killed process may have left complete records past the head
	// (fsynced, head not yet renamed): the next writer rolls them forward
	// before its own append, so that append lands after them.
	revs, err := j.Append(testCtx(t), entry("p", "after the crash"))
	require.NoError(t, err)
	after := readAll(t, openTestFile(t, dir, "checker2", 0), 0)
	require.Equal(t, []int64{int64(len(after))}, revs, "the append after the crash takes the next revision")
	require.Equal(t, all, after[:len(all)], "records below the old head unchanged")
	for _, r := range after[len(all) : len(after)-1] {
		require.Equal(t, "proc0", r.NodeID, "only the killed process's records are rolled forward")
		_, dup := at[string(r.Payload)]
		require.False(t, dup, "payload %q twice", r.Payload)
	}
}

// fileHelper appends from 4 goroutines (as node) and prints each
// acknowledged revision and payload.
func fileHelper(t *testing.T, dir, node string) {
	j, err := OpenFile(context.Background(), FileConfig{Dir: dir, NodeID: node, SegmentSize: 8 << 10})
	require.NoError(t, err)
	var mu sync.Mutex
	var wg sync.WaitGroup
	for g := range 4 {
		wg.Go(func() {
			for i := range 100 {
				payload := fmt.Sprintf("%s/%d/%d", node, g, i)
				revs, err := j.Append(context.Background(), Entry{Producer: "p", Payload: []byte(payload)})
				if err != nil {
					t.Error(err)
					return
				}
				mu.Lock()
				fmt.Printf("%d %s\n", revs[0], payload)
				mu.Unlock()
			}
		})
	}
	wg.Wait()
	require.NoError(t, j.Close(context.Background()))
}

// A failure before the head is replaced leaves nothing behind: the
// segment is cut back (or the new segment removed), and the next append
// takes the same revision.
func TestFileFailedCommit(t *testing.T) {
	t.Parallel()
	for _, rollover := range []bool{false, true} {
		t.Run(fmt.Sprintf("rollover=%v", rollover), func(t *testing.T) {
			t.Parallel()
			segSize := int64(0)
			if rollover {
				segSize = 300
			}
			j := openTestFile(t, t.TempDir(), "n1", segSize)
			appendN(t, j, 2, "p")
			before := j.testHead(t)
			segsBefore, err := listSegments(j.dir)
			require.NoError(t, err)

			boom := errors.New("disk on fire")
			j.writeFile = func(string, []byte, os.FileMode) error { return boom }
			_, err = j.Append(testCtx(t), entry("p", strings.Repeat("x", 200)))
			require.ErrorIs(t, err, boom)

			require.Equal(t, before, j.testHead(t))
			segs, err := listSegments(j.dir)
			require.NoError(t, err)
			require.Equal(t, segsBefore, segs, "a new segment is removed")
			fi, err := os.Stat(segPath(j, before.Seg))
			require.NoError(t, err)
			require.Equal(t, before.Off, fi.Size(), "the segment is cut back")
			require.Len(t, readAll(t, j, 0), 2)

			j.writeFile = atomicfile.WriteFile
			revs, err := j.Append(testCtx(t), entry("p", "next"))
			require.NoError(t, err)
			require.Equal(t, []int64{3}, revs)
			all := readAll(t, j, 0)
			require.Len(t, all, 3)
			require.Equal(t, "next", string(all[2].Payload))
		})
	}
}

// When the head was renamed but the folder's fsync failed, the append has
// committed: its records are fsynced, so even if a crash brought the old
// head back, the next writer would roll them forward (which this test does
// by restoring the old head).
func TestFileHeadNotDurable(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	j := openTestFile(t, dir, "n1", 0)
	appendN(t, j, 1, "p")
	oldHead, err := os.ReadFile(j.path(fileHeadName))
	require.NoError(t, err)
	j.writeFile = func(path string, b []byte, perm os.FileMode) error {
		if err := atomicfile.WriteFile(path, b, perm); err != nil {
			return err
		}
		return fmt.Errorf("%w: injected", atomicfile.ErrNotDurable)
	}
	revs, err := j.Append(testCtx(t), entry("p", "committed"))
	require.NoError(t, err)
	require.Equal(t, []int64{2}, revs)
	j.writeFile = atomicfile.WriteFile

	// The crash: the rename is lost.
	require.NoError(t, atomicfile.WriteFile(j.path(fileHeadName), oldHead, 0o666))
	other := openTestFile(t, dir, "n2", 0)
	revs, err = other.Append(testCtx(t), entry("p", "surely"))
	require.NoError(t, err)
	require.Equal(t, []int64{3}, revs, "the acknowledged record was rolled forward, its revision not reused")
	all := readAll(t, openTestFile(t, dir, "n3", 0), 0)
	require.Len(t, all, 3)
	require.Equal(t, "committed", string(all[1].Payload))
	require.Equal(t, "surely", string(all[2].Payload))
}

// A head replaced by an older valid copy (a stale NFS read, a restore of
// the head file) loses no acknowledged record: the next writer rolls every
// complete batch forward, across segments, and appends after them.
func TestFileStaleHead(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	j := openTestFile(t, dir, "n1", 400) // a few records per segment
	var acked []Record
	ack := func(jj *File, n int, tag string) {
		for i := range n {
			e := []Entry{entry("p", fmt.Sprintf("%s-%d", tag, i))}
			if i%3 == 0 {
				e = append(e, entry("q", fmt.Sprintf("%s-%d+", tag, i))) // some batches of two
			}
			revs, err := jj.Append(testCtx(t), e...)
			require.NoError(t, err)
			for k, r := range revs {
				acked = append(acked, Record{Revision: r, Payload: e[k].Payload})
			}
		}
	}
	ack(j, 3, "before")
	stale, err := os.ReadFile(j.path(fileHeadName))
	require.NoError(t, err)
	ack(j, 12, "after")
	segs, err := listSegments(j.dir)
	require.NoError(t, err)
	require.Greater(t, len(segs), 2, "the acknowledged records span several segments")

	require.NoError(t, atomicfile.WriteFile(j.path(fileHeadName), stale, 0o666))
	other := openTestFile(t, dir, "n2", 400)
	ack(other, 2, "next")
	all := readAll(t, openTestFile(t, dir, "n3", 0), 0)
	require.Len(t, all, len(acked))
	for _, a := range acked {
		require.Equal(t, string(a.Payload), string(all[a.Revision-1].Payload), "revision %d", a.Revision)
	}
}

// An append reads only what lies past the head, never the whole head
// segment under the LOCK: with 16 MiB in the head's segment, a small
// append allocates far less than the segment, with nothing past the head
// (a clean commit before it) and with a torn tail to cut. Measured in
// bytes allocated, not time; not parallel, so that other tests' memory
// does not count.
func TestFileAppendReadsOnlyPastHead(t *testing.T) {
	j := openTestFile(t, t.TempDir(), "n1", 0) // default 64 MiB segments
	big := Entry{Producer: "big", Payload: bytes.Repeat([]byte{1}, MaxPayloadSize)}
	for range 2 {
		_, err := j.Append(testCtx(t), big, big)
		require.NoError(t, err)
	}
	h := j.testHead(t)
	require.Equal(t, int64(1), h.Seg)
	require.Greater(t, h.Off, int64(16<<20))

	const n = 10
	allocated := func(f func()) uint64 {
		var before, after runtime.MemStats
		runtime.ReadMemStats(&before)
		f()
		runtime.ReadMemStats(&after)
		return after.TotalAlloc - before.TotalAlloc
	}
	perAppend := allocated(func() { appendN(t, j, n, "p") }) / n
	t.Logf("allocated per small append: %d bytes", perAppend)
	require.Less(t, perAppend, uint64(1<<20), "a small append allocated about the head segment's size")

	h = j.testHead(t)
	torn := appendRecord(nil, &Record{Revision: h.Rev + 1, NodeID: "ghost", Instance: "g", Producer: "p", Payload: []byte("torn"), Time: time.Now()},
		recBatch{v2: true, id: 1})
	appendBytes(t, segPath(j, h.Seg), torn[:len(torn)-3])
	withTorn := allocated(func() { appendN(t, j, 1, "p") })
	t.Logf("allocated by an append cutting a torn tail: %d bytes", withTorn)
	require.Less(t, withTorn, uint64(1<<20), "an append cutting a torn tail allocated about the head segment's size")
	require.Len(t, readAll(t, j, h.Rev-1), 2)
}

// A head with a valid checksum whose revision does not match the records
// before its offset (a head file from another journal, a hand edit) makes
// the writer refuse with ErrCorrupt and write nothing, instead of
// acknowledging revisions that readers never deliver: a revision behind
// or ahead of the record ending at its offset, and an offset inside a
// record (whose repair would cut a committed record). Both the instance
// that wrote the records and a fresh one check it.
func TestFileHeadRevisionMismatchIsCorrupt(t *testing.T) {
	t.Parallel()
	for name, bad := range map[string]func(h fileHead) fileHead{
		"revision-behind": func(h fileHead) fileHead { return fileHead{Rev: h.Rev - 1, Seg: h.Seg, Off: h.Off} },
		"revision-ahead":  func(h fileHead) fileHead { return fileHead{Rev: h.Rev + 2, Seg: h.Seg, Off: h.Off} },
		"inside-a-record": func(h fileHead) fileHead { return fileHead{Rev: h.Rev, Seg: h.Seg, Off: h.Off - 10} },
	} {
		t.Run(name, func(t *testing.T) {
			t.Parallel()
			dir := t.TempDir()
			j := openTestFile(t, dir, "n1", 0)
			appendN(t, j, 3, "p")
			h := j.testHead(t)
			good, err := os.ReadFile(j.path(fileHeadName))
			require.NoError(t, err)
			seg, err := os.ReadFile(segPath(j, h.Seg))
			require.NoError(t, err)
			require.NoError(t, atomicfile.WriteFile(j.path(fileHeadName), encodeHead(bad(h)), 0o666))

			for _, w := range []*File{j, openTestFile(t, dir, "n2", 0)} {
				_, err = w.Append(testCtx(t), entry("p", "never acknowledged"))
				require.ErrorIs(t, err, ErrCorrupt)
				require.ErrorContains(t, err, segName(h.Seg))
				require.Equal(t, bad(h), w.testHead(t), "the head is not replaced")
				after, err := os.ReadFile(segPath(j, h.Seg))
				require.NoError(t, err)
				require.Equal(t, seg, after, "the segment is not written")
			}

			require.NoError(t, atomicfile.WriteFile(j.path(fileHeadName), good, 0o666))
			revs, err := j.Append(testCtx(t), entry("p", "acknowledged"))
			require.NoError(t, err)
			require.Equal(t, []int64{4}, revs)
			require.Equal(t, "acknowledged", string(readAll(t, j, 3)[0].Payload))
		})
	}
}

// A head that does not match the segments makes the next writer refuse
// (ErrCorrupt, naming the files) before it deletes anything: a head
// restored from a copy whose segment was pruned since, and a stray
// rollover segment next to a segment beyond the head. Every segment stays,
// and with the right head back every committed record is readable.
func TestFileHeadNotMatchingSegmentsDeletesNothing(t *testing.T) {
	t.Parallel()
	segFiles := func(t *testing.T, j *File) map[int64][]byte {
		t.Helper()
		segs, err := listSegments(j.dir)
		require.NoError(t, err)
		out := map[int64][]byte{}
		for _, s := range segs {
			out[s], err = os.ReadFile(segPath(j, s))
			require.NoError(t, err)
		}
		return out
	}
	t.Run("stale-head-segment-pruned", func(t *testing.T) {
		t.Parallel()
		j := openTestFile(t, t.TempDir(), "n1", 300) // 4 records per segment
		appendN(t, j, 4, "p")
		require.Equal(t, int64(1), j.testHead(t).Seg)
		stale, err := os.ReadFile(j.path(fileHeadName))
		require.NoError(t, err)
		appendN(t, j, 16, "p")
		head, err := os.ReadFile(j.path(fileHeadName))
		require.NoError(t, err)
		_, err = j.Prune(testCtx(t), 5) // deletes segment 1 only
		require.NoError(t, err)
		before := segFiles(t, j)
		require.Len(t, before, 4, "segments 5, 9, 13 and 17")
		recs := readAll(t, j, 4)
		require.Len(t, recs, 16)

		// The head comes back from a copy made before the prune.
		require.NoError(t, atomicfile.WriteFile(j.path(fileHeadName), stale, 0o666))
		_, err = j.Append(testCtx(t), entry("p", "x"))
		require.ErrorIs(t, err, ErrCorrupt)
		require.Equal(t, before, segFiles(t, j), "segment 5 holds committed records above the tail")
		require.ErrorContains(t, err, segName(1))
		require.ErrorContains(t, err, segName(5))

		require.NoError(t, atomicfile.WriteFile(j.path(fileHeadName), head, 0o666))
		require.Equal(t, recs, readAll(t, j, 4))
		revs, err := j.Append(testCtx(t), entry("p", "x"))
		require.NoError(t, err)
		require.Equal(t, []int64{21}, revs)
	})
	t.Run("stray-and-segment-beyond", func(t *testing.T) {
		t.Parallel()
		j := openTestFile(t, t.TempDir(), "n1", 0)
		appendN(t, j, 3, "p")
		stray := appendRecord(nil, &Record{Revision: 4, NodeID: "ghost", Instance: "g", Producer: "p", Payload: []byte("x"), Time: time.Now()},
			recBatch{v2: true, id: 1, remaining: 1}) // incomplete: a stray on its own
		require.NoError(t, os.WriteFile(segPath(j, 4), stray, 0o666))
		require.NoError(t, os.WriteFile(segPath(j, 20), []byte("later records"), 0o666))
		before := segFiles(t, j)
		_, err := j.Append(testCtx(t), entry("p", "x"))
		require.ErrorIs(t, err, ErrCorrupt)
		require.ErrorContains(t, err, segName(20))
		require.Equal(t, before, segFiles(t, j), "segment 4 is not the last: the folder is not as a crashed writer leaves it")
	})
}

// Rolling forward commits records that the writer who wrote them may
// never have fsynced (killed between its write and its fsync), so the next
// writer fsyncs every segment holding them, and the folder when the dead
// writer created one of them, before it writes the head that commits
// them. A test cannot cut the power; it records the order of the fsyncs
// and the head's replacement instead.
func TestFileRollForwardSyncsBeforeHead(t *testing.T) {
	t.Parallel()
	// batch is a complete batch of n records from rev on, by a writer
	// that died before its fsync.
	batch := func(rev int64, n int) []byte {
		var b []byte
		for i := range n {
			b = appendRecord(b, &Record{Revision: rev + int64(i), NodeID: "ghost", Instance: "g", Producer: "p", Payload: []byte("unsynced"), Time: time.Now()},
				recBatch{v2: true, id: 9, remaining: uint32(n - 1 - i)})
		}
		return b
	}
	for _, rollover := range []bool{false, true} {
		t.Run(fmt.Sprintf("rollover=%v", rollover), func(t *testing.T) {
			t.Parallel()
			j := openTestFile(t, t.TempDir(), "n1", 0)
			appendN(t, j, 3, "p")
			h := j.testHead(t)
			appendBytes(t, segPath(j, h.Seg), batch(4, 2))
			want, next := []string{"sync " + segName(h.Seg)}, int64(6)
			if rollover {
				require.NoError(t, os.WriteFile(segPath(j, 6), batch(6, 3), 0o666))
				want, next = append(want, "sync "+segName(6), "sync folder"), 9
			}
			want = append(want, "write "+fileHeadName)

			var events []string
			j.syncFile = func(f *os.File) error {
				events = append(events, "sync "+filepath.Base(f.Name()))
				return f.Sync()
			}
			j.syncDir = func(dir string) error {
				events = append(events, "sync folder")
				return atomicfile.SyncDir(dir)
			}
			j.writeFile = func(path string, b []byte, perm os.FileMode) error {
				events = append(events, "write "+filepath.Base(path))
				return atomicfile.WriteFile(path, b, perm)
			}
			revs, err := j.Append(testCtx(t), entry("p", "after"))
			require.NoError(t, err)
			require.Equal(t, []int64{next}, revs, "rolled forward past the dead writer's batches")
			require.GreaterOrEqual(t, len(events), len(want))
			require.Equal(t, want, events[:len(want)], "the rolled-forward records are fsynced before the head that commits them")
		})
	}
}

// A complete record past the head that does not continue the revision
// sequence, or a head past what its segment holds, is corruption: the
// writer refuses instead of writing after it.
func TestFileHeadMismatchIsCorrupt(t *testing.T) {
	t.Parallel()
	t.Run("foreign-record", func(t *testing.T) {
		t.Parallel()
		j := openTestFile(t, t.TempDir(), "n1", 0)
		appendN(t, j, 3, "p")
		h := j.testHead(t)
		appendBytes(t, segPath(j, h.Seg), appendRecord(nil, &Record{Revision: 9, NodeID: "x", Instance: "y", Producer: "p", Time: time.Now()},
			recBatch{v2: true, id: 1}))
		_, err := j.Append(testCtx(t), entry("p", "x"))
		require.ErrorIs(t, err, ErrCorrupt)
		require.ErrorContains(t, err, "revision 9")
		require.Len(t, readAll(t, j, 0), 3)
	})
	t.Run("head-past-segment", func(t *testing.T) {
		t.Parallel()
		j := openTestFile(t, t.TempDir(), "n1", 0)
		appendN(t, j, 3, "p")
		h := j.testHead(t)
		require.NoError(t, atomicfile.WriteFile(j.path(fileHeadName), encodeHead(fileHead{Rev: 9, Seg: h.Seg, Off: h.Off + 500}), 0o666))
		_, err := j.Append(testCtx(t), entry("p", "x"))
		require.ErrorIs(t, err, ErrCorrupt)
		_, err = j.Read(testCtx(t), 0, 100)
		require.ErrorIs(t, err, ErrCorrupt)
	})
	t.Run("segment-beyond-head", func(t *testing.T) {
		t.Parallel()
		j := openTestFile(t, t.TempDir(), "n1", 0)
		appendN(t, j, 3, "p")
		require.NoError(t, os.WriteFile(segPath(j, 20), []byte("later records"), 0o666))
		_, err := j.Append(testCtx(t), entry("p", "x"))
		require.ErrorIs(t, err, ErrCorrupt)
		require.ErrorContains(t, err, segName(20))
	})
}

// TestFileKilledBeforeHead kills a writer process (SIGKILL) after its
// batch's records were fsynced and before its head was written: the next
// writer rolls the batch forward whole, so nothing that the killed process
// might have acknowledged is lost, and appends after it.
func TestFileKilledBeforeHead(t *testing.T) {
	if dir := os.Getenv("TANDEM_FILE_KILL_DIR"); dir != "" {
		j, err := OpenFile(context.Background(), FileConfig{Dir: dir, NodeID: "victim"})
		require.NoError(t, err)
		j.writeFile = func(path string, b []byte, perm os.FileMode) error {
			if filepath.Base(path) == fileHeadName {
				fmt.Println("READY")
				select {} // killed here
			}
			return atomicfile.WriteFile(path, b, perm)
		}
		_, _ = j.Append(context.Background(), entry("p", "batch-a"), entry("p", "batch-b"), entry("p", "batch-c"))
		return
	}
	if testing.Short() {
		t.Skip("spawns a process")
	}
	t.Parallel()
	dir := t.TempDir()
	j := openTestFile(t, dir, "n1", 0)
	appendN(t, j, 2, "p")

	cmd := exec.Command(os.Args[0], "-test.run=^TestFileKilledBeforeHead$")
	cmd.Env = append(os.Environ(), "TANDEM_FILE_KILL_DIR="+dir)
	cmd.Stderr = os.Stderr
	stdout, err := cmd.StdoutPipe()
	require.NoError(t, err)
	require.NoError(t, cmd.Start())
	sc := bufio.NewScanner(stdout)
	for sc.Scan() && sc.Text() != "READY" {
	}
	require.NoError(t, cmd.Process.Kill())
	_ = cmd.Wait()

	require.Len(t, readAll(t, j, 0), 2, "not committed yet: readers stop at the head")
	revs, err := j.Append(testCtx(t), entry("p", "after"))
	require.NoError(t, err)
	require.Equal(t, []int64{6}, revs)
	all := readAll(t, openTestFile(t, dir, "n2", 0), 0)
	require.Len(t, all, 6)
	for i, want := range []string{"batch-a", "batch-b", "batch-c"} {
		require.Equal(t, want, string(all[2+i].Payload))
		require.Equal(t, "victim", all[2+i].NodeID)
		require.NotEmpty(t, all[2+i].Instance)
	}
	require.NotEqual(t, all[0].Instance, all[2].Instance, "records carry the writing process's instance")
}

// An append opens the head's segment once (read-write), not once to check
// and roll forward and again to write: on NFS every open is a round trip.
// Also when another writer moved the head since (the head's check reads
// the records it added), and when the batch rolls over to a new segment.
func TestFileAppendOpensHeadSegmentOnce(t *testing.T) {
	dir := t.TempDir()
	a := openTestFile(t, dir, "a", 512)
	b := openTestFile(t, dir, "b", 512)
	appendN(t, a, 1, "p")
	count := func(j *File) *[]string {
		var opened []string
		j.openFile = func(name string, flag int, perm os.FileMode) (*os.File, error) {
			opened = append(opened, filepath.Base(name))
			return os.OpenFile(name, flag, perm)
		}
		return &opened
	}
	openedA, openedB := count(a), count(b)
	// appendOne appends with j and checks what it opened: the head's
	// segment, and the new one when the batch rolled over.
	appendOne := func(j *File, opened *[]string, what string, i int) {
		*opened = nil
		h := j.testHead(t)
		appendN(t, j, 1, "p")
		want := []string{segName(h.Seg)}
		if nh := j.testHead(t); nh.Seg != h.Seg {
			want = append(want, segName(nh.Seg))
		}
		require.Equal(t, want, *opened, "append %d %s", i, what)
	}
	for i := range 20 {
		appendOne(a, openedA, "alternating with another writer", i)
		appendOne(b, openedB, "alternating with another writer", i)
	}
	for i := range 5 {
		appendOne(a, openedA, "by the writer of the head", i)
	}
	require.Greater(t, a.testHead(t).Seg, int64(1), "the appends rolled over")
	require.Len(t, readAll(t, a, 0), 46)
}
