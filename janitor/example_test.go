package janitor_test

import (
	"context"
	"errors"
	"fmt"
	"log"
	"os"

	"github.com/tandem-go/tandem/janitor"
	"github.com/tandem-go/tandem/journal"
	"github.com/tandem-go/tandem/lock"
	"github.com/tandem-go/tandem/revision"
)

// A janitor run on a shared folder: node "a" has applied records up to 7,
// so the records below 8 go, and a reader still at 0 must resync.
func Example() {
	dir, err := os.MkdirTemp("", "janitor-example")
	if err != nil {
		log.Fatal(err)
	}
	defer os.RemoveAll(dir)
	ctx := context.Background()

	j, err := journal.OpenFile(ctx, journal.FileConfig{Dir: dir, NodeID: "a", SegmentSize: 256})
	if err != nil {
		log.Fatal(err)
	}
	defer j.Close(ctx)
	revs, err := revision.OpenFile(ctx, revision.FileConfig{Dir: dir})
	if err != nil {
		log.Fatal(err)
	}
	leases, err := lock.OpenFile(ctx, lock.FileConfig{Dir: dir})
	if err != nil {
		log.Fatal(err)
	}
	for i := range 10 {
		if _, err := j.Append(ctx, journal.Entry{Producer: "cache/users", Payload: fmt.Appendf(nil, "user %d", i)}); err != nil {
			log.Fatal(err)
		}
	}
	epoch, err := j.Epoch(ctx)
	if err != nil {
		log.Fatal(err)
	}
	if err := revs.Save(ctx, "a", 7, epoch); err != nil {
		log.Fatal(err)
	}

	jan, err := janitor.New(janitor.Config{
		NodeID: "a", Journal: j, Revisions: revs, Leases: leases,
		KeepRecords: -1, KeepFor: -1, // no retention beyond the horizon
	})
	if err != nil {
		log.Fatal(err)
	}
	rep, err := jan.RunOnce(ctx)
	if err != nil {
		log.Fatal(err)
	}
	fmt.Printf("horizon %d, pinned by %s, new tail %d\n", rep.Horizon, rep.PinnedBy, rep.NewTail)
	_, err = j.Read(ctx, 0, 10)
	fmt.Println("reading from 0:", errors.Is(err, journal.ErrBehindTail))
	recs, err := j.Read(ctx, 7, 10)
	if err != nil {
		log.Fatal(err)
	}
	fmt.Println("reading from 7:", len(recs), "records")
	// Output:
	// horizon 8, pinned by a, new tail 8
	// reading from 0: true
	// reading from 7: 3 records
}
