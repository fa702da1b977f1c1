package cluster_test

import (
	"context"
	"fmt"
	"os"
	"sync"

	"github.com/tandem-go/tandem/cluster"
)

// Two replicas cache user names read from a shared database. One renames a
// user and invalidates the key; the other drops its copy and reads the new
// name on its next lookup.
func ExampleNewCache() {
	ctx := context.Background()
	dir, _ := os.MkdirTemp("", "tandem-example-")
	defer os.RemoveAll(dir)

	// The shared source of truth (a database table in real life).
	var mu sync.Mutex
	names := map[int64]string{42: "Ada"}
	loadUser := func(ctx context.Context, id int64) (string, error) {
		mu.Lock()
		defer mu.Unlock()
		return names[id], nil
	}

	replica := func(id string) (*cluster.Node, *cluster.Cache[int64, string]) {
		n, err := cluster.OpenDir(ctx, cluster.Config{Dir: dir, NodeID: id})
		if err != nil {
			panic(err)
		}
		users, err := cluster.NewCache[int64, string](n, "users", cluster.CacheConfig[int64]{Size: 1000})
		if err != nil {
			panic(err)
		}
		if err := n.Start(ctx); err != nil {
			panic(err)
		}
		return n, users
	}
	a, usersA := replica("web-1")
	defer a.Stop(ctx)
	b, usersB := replica("web-2")
	defer b.Stop(ctx)

	name, _ := usersB.GetOrLoad(ctx, 42, loadUser)
	fmt.Println("web-2 reads:", name)

	// web-1 renames the user: change the source, then invalidate.
	mu.Lock()
	names[42] = "Ada Lovelace"
	mu.Unlock()
	rev, err := usersA.Invalidate(ctx, 42)
	if err != nil {
		panic(err)
	}

	// The next request, carrying rev, lands on web-2.
	if err := b.WaitFor(ctx, rev); err != nil {
		panic(err)
	}
	_, cached := usersB.Get(42)
	fmt.Println("web-2 still caches 42:", cached)
	name, _ = usersB.GetOrLoad(ctx, 42, loadUser)
	fmt.Println("web-2 reads:", name)
	// Output:
	// web-2 reads: Ada
	// web-2 still caches 42: false
	// web-2 reads: Ada Lovelace
}
