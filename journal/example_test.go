package journal_test

import (
	"context"
	"errors"
	"fmt"
	"os"

	"github.com/tandem-go/tandem/journal"
)

// Two nodes share a folder: one appends, the other reads what it has not
// seen yet.
func Example() {
	ctx := context.Background()
	dir, _ := os.MkdirTemp("", "tandem-example-")
	defer os.RemoveAll(dir)

	a, err := journal.OpenFile(ctx, journal.FileConfig{Dir: dir, NodeID: "node-a"})
	if err != nil {
		panic(err)
	}
	defer a.Close(ctx)
	b, err := journal.OpenFile(ctx, journal.FileConfig{Dir: dir, NodeID: "node-b"})
	if err != nil {
		panic(err)
	}
	defer b.Close(ctx)

	revs, _ := a.Append(ctx,
		journal.Entry{Producer: "cache/users", Payload: []byte("user:42")},
		journal.Entry{Producer: "cache/users", Payload: []byte("user:7")})
	fmt.Println("appended", revs)

	var seen int64 // node b's position
	recs, _ := b.Read(ctx, seen, 100)
	for _, r := range recs {
		fmt.Printf("%d %s %s %s\n", r.Revision, r.NodeID, r.Producer, r.Payload)
		seen = r.Revision
	}
	// Output:
	// appended [1 2]
	// 1 node-a cache/users user:42
	// 2 node-a cache/users user:7
}

// AppendIf gives optimistic concurrency: the append happens only if nobody
// appended since the caller looked at the head.
func ExampleFile_AppendIf() {
	ctx := context.Background()
	dir, _ := os.MkdirTemp("", "tandem-example-")
	defer os.RemoveAll(dir)
	j, _ := journal.OpenFile(ctx, journal.FileConfig{Dir: dir, NodeID: "node-a"})
	defer j.Close(ctx)

	head, _ := j.Head(ctx)
	_, err := j.AppendIf(ctx, head, journal.Entry{Producer: "orders", Payload: []byte("v1")})
	fmt.Println("first:", err)
	_, err = j.AppendIf(ctx, head, journal.Entry{Producer: "orders", Payload: []byte("v1 again")})
	fmt.Println("stale head is a conflict:", errors.Is(err, journal.ErrConflict))
	// Output:
	// first: <nil>
	// stale head is a conflict: true
}

// A reader whose position was pruned away must resync instead of jumping
// ahead silently.
func ExampleBehindTailError() {
	ctx := context.Background()
	dir, _ := os.MkdirTemp("", "tandem-example-")
	defer os.RemoveAll(dir)
	j, _ := journal.OpenFile(ctx, journal.FileConfig{Dir: dir, NodeID: "node-a"})
	defer j.Close(ctx)

	for range 3 {
		_, _ = j.Append(ctx, journal.Entry{Producer: "p", Payload: nil})
	}
	_, _ = j.Prune(ctx, 3) // records 1 and 2 are gone; the tail is 3

	_, err := j.Read(ctx, 0, 10)
	var bt *journal.BehindTailError
	if errors.As(err, &bt) {
		fmt.Println("resync: tail is", bt.Tail)
	}
	recs, _ := j.Read(ctx, 2, 10)
	fmt.Println("position 2 reads on from", recs[0].Revision)
	// Output:
	// resync: tail is 3
	// position 2 reads on from 3
}
