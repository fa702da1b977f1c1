package lock_test

import (
	"context"
	"errors"
	"fmt"
	"os"
	"time"

	"github.com/tandem-go/tandem/lock"
)

// Two nodes share a folder; one holds the "janitor" lease, the other
// cannot take it until it is released. Work that must not run twice is
// fenced by the lease's token.
func Example() {
	ctx := context.Background()
	dir, _ := os.MkdirTemp("", "tandem-example-")
	defer os.RemoveAll(dir)

	newClient := func(node string) *lock.Client {
		store, err := lock.OpenFile(ctx, lock.FileConfig{Dir: dir})
		if err != nil {
			panic(err)
		}
		c, err := lock.New(lock.Config{NodeID: node, Store: store, TTL: 5 * time.Second})
		if err != nil {
			panic(err)
		}
		return c
	}
	a, b := newClient("node-a"), newClient("node-b")

	l, _ := a.TryAcquire(ctx, "janitor")
	fmt.Println("node-a holds it with token", l.Token())

	_, err := b.TryAcquire(ctx, "janitor")
	fmt.Println("node-b:", errors.Is(err, lock.ErrUnavailable))

	err = l.Fenced(ctx, func(ctx context.Context) error {
		fmt.Println("pruning, while the store confirms token", l.Token(), "is current")
		return nil
	})
	fmt.Println("fenced:", err)

	_ = l.Release(ctx)
	l2, _ := b.TryAcquire(ctx, "janitor")
	fmt.Println("node-b holds it with token", l2.Token())
	_ = l2.Release(ctx)
	// Output:
	// node-a holds it with token 1
	// node-b: true
	// pruning, while the store confirms token 1 is current
	// fenced: <nil>
	// node-b holds it with token 2
}

// RunOnce runs a job on whichever node gets the lease now; the others skip.
func ExampleClient_RunOnce() {
	ctx := context.Background()
	dir, _ := os.MkdirTemp("", "tandem-example-")
	defer os.RemoveAll(dir)
	store, _ := lock.OpenFile(ctx, lock.FileConfig{Dir: dir})
	c, _ := lock.New(lock.Config{NodeID: "node-a", Store: store})

	ran, err := c.RunOnce(ctx, "nightly-report", func(ctx context.Context, l *lock.Lease) error {
		fmt.Println("building the report")
		return nil
	})
	fmt.Println(ran, err)
	// Output:
	// building the report
	// true <nil>
}

// RunEvery runs a job on one node of the cluster per interval; the last
// run is recorded in the store, so a new leader does not run it again
// before the interval is over.
func ExampleClient_RunEvery() {
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	dir, _ := os.MkdirTemp("", "tandem-example-")
	defer os.RemoveAll(dir)
	store, _ := lock.OpenFile(ctx, lock.FileConfig{Dir: dir})
	c, _ := lock.New(lock.Config{NodeID: "node-a", Store: store})

	err := c.RunEvery(ctx, "hourly-report", time.Hour, func(ctx context.Context, l *lock.Lease) error {
		fmt.Println("building the report as leader, token", l.Token())
		cancel() // for the example: stop after the first run
		return nil
	})
	fmt.Println(errors.Is(err, context.Canceled))
	// Output:
	// building the report as leader, token 1
	// true
}
