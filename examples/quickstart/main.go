// Command quickstart shows tandem's cluster journal at work with no
// database: three nodes in one process share a temporary folder, each with
// its own cache of a user table. A change made through one node reaches
// the others' caches through invalidation, and a user's write is visible on
// whichever node serves the next request.
//
//	go run ./examples/quickstart
package main

import (
	"context"
	"fmt"
	"log/slog"
	"os"
	"sync"
	"time"

	"github.com/tandem-go/tandem/cluster"
)

// users is the application's real database, shared by every node. tandem
// keeps the nodes' private caches of it consistent.
type users struct {
	mu   sync.Mutex
	rows map[string]string
}

func (u *users) load(_ context.Context, id string) (string, error) {
	u.mu.Lock()
	defer u.mu.Unlock()
	return u.rows[id], nil
}

func (u *users) set(id, name string) {
	u.mu.Lock()
	u.rows[id] = name
	u.mu.Unlock()
}

type node struct {
	*cluster.Node
	cache *cluster.Cache[string, string]
}

func main() {
	if err := run(); err != nil {
		fmt.Fprintln(os.Stderr, "quickstart:", err)
		os.Exit(1)
	}
}

func run() error {
	ctx := context.Background()
	dir, err := os.MkdirTemp("", "tandem-quickstart-")
	if err != nil {
		return err
	}
	defer os.RemoveAll(dir)
	quiet := slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelWarn}))
	db := &users{rows: map[string]string{"42": "Ada", "7": "Grace"}}

	fmt.Printf("shared folder: %s\n", dir)
	var nodes []node
	for i := 1; i <= 3; i++ {
		n, err := cluster.OpenDir(ctx, cluster.Config{Dir: dir, NodeID: fmt.Sprintf("node-%d", i), Logger: quiet})
		if err != nil {
			return err
		}
		cache, err := cluster.NewCache[string, string](n, "users", cluster.CacheConfig[string]{})
		if err != nil {
			return err
		}
		if err := n.Start(ctx); err != nil {
			return err
		}
		defer n.Stop(ctx)
		nodes = append(nodes, node{n, cache})
	}
	show := func(what string) error {
		fmt.Printf("%-34s", what)
		for _, n := range nodes {
			name, err := n.cache.GetOrLoad(ctx, "42", db.load)
			if err != nil {
				return err
			}
			fmt.Printf("  %s: %-16q", n.ID(), name)
		}
		fmt.Println()
		return nil
	}

	// 1. Every node caches user 42.
	if err := show("user 42, cached on every node:"); err != nil {
		return err
	}

	// 2. node-1 renames the user and invalidates its cache entry; the
	// others hear of it through the journal (pushed by fsnotify).
	db.set("42", "Ada Lovelace")
	start := time.Now()
	if _, err := nodes[0].cache.Invalidate(ctx, "42"); err != nil {
		return err
	}
	for _, n := range nodes[1:] {
		for {
			if _, cached := n.cache.Get("42"); !cached {
				break
			}
			if time.Since(start) > 10*time.Second {
				return fmt.Errorf("%s never heard of the change", n.ID())
			}
			time.Sleep(50 * time.Microsecond)
		}
		fmt.Printf("%s evicted user 42 %v after node-1 invalidated it\n", n.ID(), time.Since(start).Round(10*time.Microsecond))
	}
	if err := show("user 42, after the rename:"); err != nil {
		return err
	}

	// 3. Read-your-writes without sticky sessions: a user renames
	// themselves through node-3; their next request lands on node-2 with
	// the revision node-3 returned (a response header in a real service).
	db.set("7", "Grace Hopper")
	rev, err := nodes[2].cache.Invalidate(ctx, "7")
	if err != nil {
		return err
	}
	if err := nodes[1].WaitFor(ctx, rev); err != nil {
		return err
	}
	name, err := nodes[1].cache.GetOrLoad(ctx, "7", db.load)
	if err != nil {
		return err
	}
	fmt.Printf("user 7 renamed on node-3 (revision %d); next request on node-2 sees %q\n", rev, name)

	for _, n := range nodes {
		st := n.Stats()
		fmt.Printf("%s: at revision %d, %d records applied\n", n.ID(), st.Revision, st.Applied)
	}
	return nil
}
