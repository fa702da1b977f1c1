package cluster_test

import (
	"context"
	"database/sql"
	"fmt"
	"os"
	"strconv"

	"github.com/tandem-go/tandem/cluster"
	"github.com/tandem-go/tandem/journal"
)

// Two nodes share a folder. node-b keeps a search index up to date with
// what node-a publishes, and reads node-a's write right after it was made.
func ExampleNode() {
	ctx := context.Background()
	dir, _ := os.MkdirTemp("", "tandem-example-")
	defer os.RemoveAll(dir)

	a, err := cluster.OpenDir(ctx, cluster.Config{Dir: dir, NodeID: "node-a"})
	if err != nil {
		panic(err)
	}
	b, err := cluster.OpenDir(ctx, cluster.Config{Dir: dir, NodeID: "node-b"})
	if err != nil {
		panic(err)
	}
	index := map[string]bool{}
	_ = b.Handle("search-index", cluster.HandlerFunc(func(ctx context.Context, rec journal.Record) error {
		index[string(rec.Payload)] = true // idempotent: applying twice is harmless
		return nil
	}))
	for _, n := range []*cluster.Node{a, b} {
		if err := n.Start(ctx); err != nil {
			panic(err)
		}
		defer n.Stop(ctx)
	}

	rev, _ := a.Publish(ctx, "search-index", []byte("doc-42"))
	// The revision travels with the user (a header, a cookie); whichever
	// node serves the next request waits for it first.
	if err := b.WaitFor(ctx, rev); err != nil {
		panic(err)
	}
	fmt.Println("node-b indexed doc-42:", index["doc-42"])
	// Output:
	// node-b indexed doc-42: true
}

// The outbox on a node: update a row and publish its invalidation in the
// same transaction, then return the revision as the read-your-writes token
// (for a header, as in ExampleNode). It needs a SQL database, so it is
// compiled but not run here; TestPublishTx runs the same steps.
func ExampleNode_PublishTx() {
	ctx := context.Background()
	var db *sql.DB      // the service's pool, also given to cluster.OpenSQL
	var n *cluster.Node // cluster.OpenSQL(ctx, db, postgres.Dialect, cfg), started
	userID, name := 42, "Ada"

	tx, err := db.BeginTx(ctx, nil)
	if err != nil {
		panic(err)
	}
	defer tx.Rollback() // after Commit, a no-op
	if _, err := tx.ExecContext(ctx, `UPDATE users SET name = $1 WHERE id = $2`, name, userID); err != nil {
		panic(err)
	}
	pending, err := n.PublishTx(ctx, tx, journal.Entry{Producer: "cache/users", Payload: []byte(strconv.Itoa(userID))})
	if err != nil {
		panic(err)
	}
	if err := tx.Commit(); err != nil {
		panic(err) // rolled back: no invalidation either
	}
	revs, err := pending.Wait(ctx)
	if err != nil {
		panic(err)
	}
	fmt.Println("Tandem-Revision:", revs[0])
}
