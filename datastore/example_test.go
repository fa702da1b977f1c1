package datastore_test

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"strings"
	"time"

	"github.com/tandem-go/tandem/datastore"
	"github.com/tandem-go/tandem/lock"
)

// Two nodes share a folder: one stores a binary, the other reads it; the
// application refers to one blob, and the collector deletes the other.
func Example() {
	ctx := context.Background()
	dir, _ := os.MkdirTemp("", "tandem-datastore-")
	defer os.RemoveAll(dir)
	nodeA, _ := datastore.OpenFile(ctx, datastore.FileConfig{Dir: dir})
	nodeB, _ := datastore.OpenFile(ctx, datastore.FileConfig{Dir: dir})

	report, err := nodeA.Put(ctx, strings.NewReader("quarterly report, a binary of any size"))
	if err != nil {
		panic(err)
	}
	draft, _ := nodeA.Put(ctx, strings.NewReader("an abandoned draft"))
	fmt.Println("stored", report.ID, report.Length, "bytes")

	r, _ := nodeB.Get(ctx, report.ID) // verifies the SHA-256 at the end
	b, err := io.ReadAll(r)
	r.Close()
	fmt.Printf("node B reads %q, err %v\n", b, err)

	// The application's records refer to the report only.
	refs := datastore.ReferencesFunc(func(ctx context.Context, yield func(datastore.ID) error) error {
		return yield(report.ID)
	})
	locks, _ := lock.OpenFile(ctx, lock.FileConfig{Dir: dir})
	client, _ := lock.New(lock.Config{NodeID: "node-b", Store: locks})
	lease, err := client.TryAcquire(ctx, datastore.DefaultLeaseName)
	if err != nil {
		panic(err) // lock.ErrUnavailable: another node is collecting
	}
	defer lease.Release(ctx)
	gc, _ := datastore.NewCollector(nodeB, datastore.GCConfig{
		GracePeriod: 10 * time.Millisecond, // 24 h by default
		Logger:      slog.New(slog.NewTextHandler(io.Discard, nil)),
	})
	time.Sleep(20 * time.Millisecond)
	run, err := gc.Collect(ctx, lease, refs)
	fmt.Println("collected: scanned", run.Scanned, "deleted", run.Deleted, "freed", run.BytesFreed, "bytes, err", err)

	_, err = nodeA.Stat(ctx, draft.ID)
	fmt.Println("draft gone:", errors.Is(err, datastore.ErrNotFound))
	fmt.Println("touching the draft again:", errors.Is(nodeA.Touch(ctx, draft.ID), datastore.ErrNotFound))
	// Output:
	// stored 31c6e0a6bbc6d121a12bf68c1bca179da82a7fd5d9dca4ef8a2ec99967dc2c19 38 bytes
	// node B reads "quarterly report, a binary of any size", err <nil>
	// collected: scanned 2 deleted 1 freed 18 bytes, err <nil>
	// draft gone: true
	// touching the draft again: true
}
