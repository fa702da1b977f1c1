// Package journaltest is the conformance suite every journal backend must
// pass: the file journal and the SQL journal on every dialect run the same
// tests, including the concurrency test that would catch a lost, duplicated
// or reordered record.
package journaltest

import (
	"bytes"
	"context"
	"os"
	"strconv"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/tandem-go/tandem/ident"
	"github.com/tandem-go/tandem/journal"
)

// Opener opens another instance of the journal under test, writing as
// nodeID, the way a separate node would (its own connection pool, its own
// file handles). The Opener closes the instance when t ends.
type Opener func(t *testing.T, nodeID string) journal.Journal

// NewStore returns an Opener on a fresh, empty journal store (a new table
// prefix, a new folder) for one test.
type NewStore func(t *testing.T) Opener

// Run runs the whole suite. Each subtest gets its own store and runs in
// parallel with the others.
func Run(t *testing.T, newStore NewStore) {
	tests := []struct {
		name string
		fn   func(t *testing.T, open Opener)
	}{
		{"Empty", testEmpty},
		{"AppendRead", testAppendRead},
		{"ReadPaging", testReadPaging},
		{"Payloads", testPayloads},
		{"SharedEpoch", testSharedEpoch},
		{"AppendIf", testAppendIf},
		{"BadInput", testBadInput},
		{"Prune", testPrune},
		{"Poll", testPoll},
		{"PruneBatches", testPruneBatches},
		{"Cancelled", testCancelled},
		{"Close", testClose},
		{"Watch", testWatch},
		{"Concurrent", func(t *testing.T, open Opener) {
			Concurrent(t, open, ConcurrentConfig{Nodes: 8, Goroutines: 8, Duration: Duration()})
		}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			tc.fn(t, newStore(t))
		})
	}
}

// Duration is how long concurrency tests run: TANDEM_TEST_DURATION (a Go
// duration), else 3s, or 1s with -short.
func Duration() time.Duration {
	if d, err := time.ParseDuration(os.Getenv("TANDEM_TEST_DURATION")); err == nil && d > 0 {
		return d
	}
	if testing.Short() {
		return time.Second
	}
	return 3 * time.Second
}

func ctxT(t *testing.T) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	t.Cleanup(cancel)
	return ctx
}

func e(producer, payload string) journal.Entry {
	return journal.Entry{Producer: producer, Payload: []byte(payload)}
}

// readAll reads every record after `after` up to head.
func readAll(t *testing.T, j journal.Journal, after int64) []journal.Record {
	t.Helper()
	ctx := ctxT(t)
	head, err := j.Head(ctx)
	require.NoError(t, err)
	var out []journal.Record
	for after < head {
		recs, err := j.Read(ctx, after, 1000)
		require.NoError(t, err)
		require.NotEmpty(t, recs, "read after %d returned nothing below head %d", after, head)
		out = append(out, recs...)
		after = recs[len(recs)-1].Revision
	}
	return out
}

func testEmpty(t *testing.T, open Opener) {
	ctx := ctxT(t)
	j := open(t, "a")
	head, err := j.Head(ctx)
	require.NoError(t, err)
	require.Zero(t, head)
	tail, err := j.Tail(ctx)
	require.NoError(t, err)
	require.EqualValues(t, 1, tail)
	epoch, err := j.Epoch(ctx)
	require.NoError(t, err)
	require.Len(t, epoch, 32)
	recs, err := j.Read(ctx, 0, 10)
	require.NoError(t, err)
	require.Empty(t, recs)
}

func testAppendRead(t *testing.T, open Opener) {
	ctx := ctxT(t)
	a, b := open(t, "node-a"), open(t, "node-b")
	before := time.Now()
	revs, err := a.Append(ctx, e("cache/users", "one"))
	require.NoError(t, err)
	require.Equal(t, []int64{1}, revs)
	revs, err = b.Append(ctx, e("cache/users", "two"), e("search", "three"), e("cache/users", "four"))
	require.NoError(t, err)
	require.Equal(t, []int64{2, 3, 4}, revs)
	for _, j := range []journal.Journal{a, b} {
		head, err := j.Head(ctx)
		require.NoError(t, err)
		require.EqualValues(t, 4, head)
		recs, err := j.Read(ctx, 0, 10)
		require.NoError(t, err)
		require.Len(t, recs, 4)
		want := []struct{ node, producer, payload string }{
			{"node-a", "cache/users", "one"}, {"node-b", "cache/users", "two"},
			{"node-b", "search", "three"}, {"node-b", "cache/users", "four"},
		}
		for i, r := range recs {
			require.EqualValues(t, i+1, r.Revision)
			require.Equal(t, want[i].node, r.NodeID)
			require.Equal(t, want[i].producer, r.Producer)
			require.Equal(t, want[i].payload, string(r.Payload))
			require.WithinDuration(t, before, r.Time, 5*time.Minute, "record time is database or writer time")
			require.Equal(t, time.UTC, r.Time.Location())
		}
	}
}

func testReadPaging(t *testing.T, open Opener) {
	ctx := ctxT(t)
	j := open(t, "a")
	entries := make([]journal.Entry, 25)
	for i := range entries {
		entries[i] = e("p", strconv.Itoa(i+1))
	}
	_, err := j.Append(ctx, entries...)
	require.NoError(t, err)
	for after := int64(0); after <= 25; after += 10 {
		recs, err := j.Read(ctx, after, 10)
		require.NoError(t, err)
		require.Len(t, recs, int(min(10, 25-after)))
		for i, r := range recs {
			require.Equal(t, after+1+int64(i), r.Revision)
			require.Equal(t, strconv.Itoa(int(r.Revision)), string(r.Payload))
		}
	}
	recs, err := j.Read(ctx, 100, 10)
	require.NoError(t, err)
	require.Empty(t, recs, "reading past the head finds nothing")
}

func testPayloads(t *testing.T, open Opener) {
	ctx := ctxT(t)
	j := open(t, "a")
	all := make([]byte, 256)
	for i := range all {
		all[i] = byte(i)
	}
	big := bytes.Repeat([]byte("0123456789abcdef"), journal.MaxPayloadSize/16)
	_, err := j.Append(ctx, journal.Entry{Producer: "bin", Payload: all},
		journal.Entry{Producer: "nil", Payload: nil},
		journal.Entry{Producer: "empty", Payload: []byte{}})
	require.NoError(t, err)
	_, err = j.Append(ctx, journal.Entry{Producer: "big", Payload: big})
	require.NoError(t, err, "a payload of MaxPayloadSize is accepted")
	recs := readAll(t, j, 0)
	require.Len(t, recs, 4)
	require.Equal(t, all, recs[0].Payload)
	require.NotNil(t, recs[1].Payload)
	require.Empty(t, recs[1].Payload)
	require.Empty(t, recs[2].Payload)
	require.True(t, bytes.Equal(big, recs[3].Payload), "the big payload round-trips")
}

func testSharedEpoch(t *testing.T, open Opener) {
	ctx := ctxT(t)
	a, b := open(t, "a"), open(t, "b")
	ea, err := a.Epoch(ctx)
	require.NoError(t, err)
	eb, err := b.Epoch(ctx)
	require.NoError(t, err)
	require.Equal(t, ea, eb, "every instance of one journal sees one epoch")
	c := open(t, "c")
	ec, err := c.Epoch(ctx)
	require.NoError(t, err)
	require.Equal(t, ea, ec, "reopening keeps the epoch")
}

func testAppendIf(t *testing.T, open Opener) {
	ctx := ctxT(t)
	a, b := open(t, "a"), open(t, "b")
	revs, err := a.AppendIf(ctx, 0, e("p", "first"))
	require.NoError(t, err)
	require.Equal(t, []int64{1}, revs)
	_, err = b.AppendIf(ctx, 0, e("p", "stale"))
	require.ErrorIs(t, err, journal.ErrConflict)
	revs, err = b.AppendIf(ctx, 1, e("p", "second"), e("p", "third"))
	require.NoError(t, err)
	require.Equal(t, []int64{2, 3}, revs)
	_, err = a.AppendIf(ctx, 5, e("p", "future"))
	require.ErrorIs(t, err, journal.ErrConflict)
	recs := readAll(t, a, 0)
	require.Len(t, recs, 3, "a conflicting append writes nothing")
	require.Equal(t, "third", string(recs[2].Payload))
}

func testBadInput(t *testing.T, open Opener) {
	ctx := ctxT(t)
	j := open(t, "a")
	tooMany := make([]journal.Entry, journal.MaxAppendEntries+1)
	for i := range tooMany {
		tooMany[i] = e("p", "x")
	}
	half := make([]byte, journal.MaxAppendSize/2+1)
	cases := []struct {
		name    string
		entries []journal.Entry
		want    error
	}{
		{"no entries", nil, journal.ErrInvalidArgument},
		{"empty producer", []journal.Entry{e("", "x")}, ident.ErrInvalid},
		{"producer with space", []journal.Entry{e("a b", "x")}, ident.ErrInvalid},
		{"producer too long", []journal.Entry{e(string(bytes.Repeat([]byte("p"), ident.MaxProducerLen+1)), "x")}, journal.ErrInvalidArgument},
		{"payload too large", []journal.Entry{{Producer: "p", Payload: make([]byte, journal.MaxPayloadSize+1)}}, journal.ErrTooLarge},
		{"too many entries", tooMany, journal.ErrTooLarge},
		{"append too large", []journal.Entry{{Producer: "p", Payload: half}, {Producer: "p", Payload: half}}, journal.ErrTooLarge},
		{"one bad among good", []journal.Entry{e("p", "ok"), e("", "bad")}, journal.ErrInvalidArgument},
	}
	for _, c := range cases {
		_, err := j.Append(ctx, c.entries...)
		require.ErrorIs(t, err, c.want, c.name)
		require.NotEmpty(t, err.Error())
	}
	_, err := j.Append(ctx, e("", "x"))
	require.ErrorContains(t, err, "entries[0].Producer", "the error names the field")
	_, err = j.Append(ctx, journal.Entry{Producer: "p", Payload: make([]byte, journal.MaxPayloadSize+1)})
	require.ErrorContains(t, err, strconv.Itoa(journal.MaxPayloadSize), "the error states the limit")
	_, err = j.AppendIf(ctx, -1, e("p", "x"))
	require.ErrorIs(t, err, journal.ErrInvalidArgument)
	_, err = j.Read(ctx, -1, 10)
	require.ErrorIs(t, err, journal.ErrInvalidArgument)
	_, err = j.Read(ctx, 0, 0)
	require.ErrorIs(t, err, journal.ErrInvalidArgument)
	_, err = j.Prune(ctx, 0)
	require.ErrorIs(t, err, journal.ErrInvalidArgument)
	_, err = j.Prune(ctx, 2)
	require.ErrorIs(t, err, journal.ErrInvalidArgument, "pruning beyond head+1 is refused")
	head, err := j.Head(ctx)
	require.NoError(t, err)
	require.Zero(t, head, "no bad input wrote anything")
}

func testPrune(t *testing.T, open Opener) {
	ctx := ctxT(t)
	j, other := open(t, "a"), open(t, "b")
	entries := make([]journal.Entry, 30)
	for i := range entries {
		entries[i] = e("p", strconv.Itoa(i+1))
	}
	_, err := j.Append(ctx, entries...)
	require.NoError(t, err)
	n, err := j.Prune(ctx, 11)
	require.NoError(t, err)
	require.LessOrEqual(t, n, int64(10))
	for _, r := range []journal.Journal{j, other} {
		tail, err := r.Tail(ctx)
		require.NoError(t, err)
		require.EqualValues(t, 11, tail)
		_, err = r.Read(ctx, 9, 100)
		require.ErrorIs(t, err, journal.ErrBehindTail)
		var bt *journal.BehindTailError
		require.ErrorAs(t, err, &bt)
		require.EqualValues(t, 11, bt.Tail)
		require.EqualValues(t, 9, bt.After)
		recs, err := r.Read(ctx, 10, 100)
		require.NoError(t, err, "position tail-1 reads on")
		require.Len(t, recs, 20)
		require.EqualValues(t, 11, recs[0].Revision)
	}
	_, err = j.Prune(ctx, 5)
	require.NoError(t, err)
	tail, err := j.Tail(ctx)
	require.NoError(t, err)
	require.EqualValues(t, 11, tail, "the tail never goes down")
	_, err = j.Prune(ctx, 31)
	require.NoError(t, err)
	_, err = j.Read(ctx, 29, 10)
	require.ErrorIs(t, err, journal.ErrBehindTail)
	recs, err := j.Read(ctx, 30, 10)
	require.NoError(t, err)
	require.Empty(t, recs)
	head, err := j.Head(ctx)
	require.NoError(t, err)
	require.EqualValues(t, 30, head, "pruning keeps the head")
	revs, err := j.Append(ctx, e("p", "after prune"))
	require.NoError(t, err)
	require.Equal(t, []int64{31}, revs, "revisions continue after pruning everything")
}

// testPoll checks journal.Poll (one round trip on a Poller) against what
// Epoch, Read, Head and Tail say, and journal.PollRecords against Poll.
func testPoll(t *testing.T, open Opener) {
	ctx := ctxT(t)
	j, other := open(t, "a"), open(t, "b")
	epoch, err := j.Epoch(ctx)
	require.NoError(t, err)
	poll := func(ctx context.Context, j journal.Journal, after int64, limit int) (journal.PollResult, error) {
		res, err := journal.Poll(ctx, j, after, limit)
		records, rerr := journal.PollRecords(ctx, j, after, limit)
		require.Equal(t, err, rerr, "PollRecords fails as Poll does")
		require.Equal(t, res, records, "PollRecords returns what Poll does (nothing pending here)")
		return res, err
	}

	res, err := poll(ctx, other, 0, 10)
	require.NoError(t, err)
	require.Empty(t, res.Records)
	require.Equal(t, epoch, res.Epoch)
	require.Zero(t, res.Head)
	require.False(t, res.Pending)
	require.False(t, res.BehindTail(0))

	entries := make([]journal.Entry, 25)
	for i := range entries {
		entries[i] = e("p", strconv.Itoa(i+1))
	}
	_, err = j.Append(ctx, entries...)
	require.NoError(t, err)
	res, err = poll(ctx, other, 3, 10)
	require.NoError(t, err)
	require.Len(t, res.Records, 10)
	want, err := other.Read(ctx, 3, 10)
	require.NoError(t, err)
	require.Equal(t, want, res.Records, "the same records as Read")
	require.EqualValues(t, 25, res.Head)
	require.Equal(t, epoch, res.Epoch)
	require.Equal(t, "a", res.Records[0].NodeID)
	require.NotEmpty(t, res.Records[0].Instance)
	res, err = poll(ctx, other, 20, 10)
	require.NoError(t, err)
	require.Len(t, res.Records, 5, "a short batch: caught up")
	require.EqualValues(t, 25, res.Head)
	res, err = poll(ctx, other, 25, 10)
	require.NoError(t, err)
	require.Empty(t, res.Records)
	require.EqualValues(t, 25, res.Head)

	_, err = j.Prune(ctx, 21)
	require.NoError(t, err)
	res, err = poll(ctx, other, 9, 10)
	require.NoError(t, err, "Poll reports a position below the tail, it does not fail")
	require.True(t, res.BehindTail(9))
	require.Empty(t, res.Records)
	require.EqualValues(t, 21, res.Tail)
	res, err = poll(ctx, other, 20, 10)
	require.NoError(t, err)
	require.False(t, res.BehindTail(20), "tail-1 reads on")
	require.Len(t, res.Records, 5)
	if _, ok := other.(journal.Poller); ok {
		require.EqualValues(t, 21, res.Tail, "a Poller reports the tail with the records too")
	}
	require.EqualValues(t, 21, res.Records[0].Revision)

	_, err = poll(ctx, other, -1, 10)
	require.ErrorIs(t, err, journal.ErrInvalidArgument)
	_, err = poll(ctx, other, 0, 0)
	require.ErrorIs(t, err, journal.ErrInvalidArgument)
}

// testPruneBatches prunes through journal.Pruner, a bounded batch at a
// time, while another instance reads.
func testPruneBatches(t *testing.T, open Opener) {
	ctx := ctxT(t)
	j, other := open(t, "a"), open(t, "b")
	p, ok := j.(journal.Pruner)
	require.True(t, ok, "every backend implements journal.Pruner")
	for i := range 50 { // one record per append: the file backend gets several segments
		_, err := j.Append(ctx, e("p", strconv.Itoa(i+1)))
		require.NoError(t, err)
	}
	n, err := p.DeleteBatch(ctx, 10)
	require.NoError(t, err)
	require.Zero(t, n, "nothing is below the tail yet")
	_, err = p.RaiseTail(ctx, 52)
	require.ErrorIs(t, err, journal.ErrInvalidArgument, "above head+1")
	tail, err := p.RaiseTail(ctx, 41)
	require.NoError(t, err)
	require.EqualValues(t, 41, tail)
	tail, err = p.RaiseTail(ctx, 7)
	require.NoError(t, err)
	require.EqualValues(t, 41, tail, "the tail never goes down")

	var deleted int64
	for range 100 {
		n, err := p.DeleteBatch(ctx, 7)
		require.NoError(t, err)
		require.LessOrEqual(t, n, int64(40))
		if n == 0 {
			break
		}
		deleted += n
		recs, err := other.Read(ctx, 40, 100)
		require.NoError(t, err, "records from the tail on stay readable between batches")
		require.Len(t, recs, 10)
		require.EqualValues(t, 41, recs[0].Revision)
	}
	require.LessOrEqual(t, deleted, int64(40))
	_, err = other.Read(ctx, 0, 10)
	require.ErrorIs(t, err, journal.ErrBehindTail)
	_, err = p.DeleteBatch(ctx, 0)
	require.ErrorIs(t, err, journal.ErrInvalidArgument)
}

func testCancelled(t *testing.T, open Opener) {
	j := open(t, "a")
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	_, err := j.Append(ctx, e("p", "x"))
	require.ErrorIs(t, err, context.Canceled)
	head, err := j.Head(ctxT(t))
	require.NoError(t, err)
	require.Zero(t, head)
}

func testClose(t *testing.T, open Opener) {
	ctx := ctxT(t)
	j := open(t, "a")
	_, err := j.Append(ctx, e("p", "x"))
	require.NoError(t, err)
	require.NoError(t, j.Close(ctx))
	require.NoError(t, j.Close(ctx), "Close is idempotent")
	_, err = j.Append(ctx, e("p", "y"))
	require.ErrorIs(t, err, journal.ErrClosed)
}

func testWatch(t *testing.T, open Opener) {
	ctx := ctxT(t)
	a, b := open(t, "a"), open(t, "b")
	if !journal.Watchable(a) {
		if w, ok := a.(journal.Watcher); ok {
			_, err := w.Watch(ctx)
			require.Error(t, err, "a journal that cannot push says so")
		}
		t.Skip("backend polls; no push wake-up")
	}
	wctx, cancel := context.WithCancel(ctx)
	ch, err := a.(journal.Watcher).Watch(wctx)
	require.NoError(t, err)
	// A listener may announce itself with one wake-up when it starts
	// listening; let that pass so only the append's can satisfy the test.
	select {
	case <-ch:
	case <-time.After(2 * time.Second):
	}
	Drain(ch)
	_, err = b.Append(ctx, e("p", "wake"))
	require.NoError(t, err)
	select {
	case <-ch:
	case <-time.After(30 * time.Second):
		t.Fatal("no wake-up within 30s of an append on another instance")
	}
	cancel()
	for range ch { // closed when its context ends
	}
}

// Drain takes every wake-up already waiting on ch.
func Drain(ch <-chan struct{}) {
	for {
		select {
		case <-ch:
		default:
			return
		}
	}
}
