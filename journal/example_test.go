package journal_test

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"os"
	"strconv"

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

// The outbox: a service updates a row and publishes its invalidation in the
// same transaction, so that the invalidation exists if and only if the
// update does, and returns the revision as a read-your-writes token. (It
// needs a database, so it is compiled but not run here; TestSQLAppendTx
// runs the same steps.)
func ExampleSQL_AppendTx() {
	ctx := context.Background()
	var db *sql.DB     // the service's pool, e.g. sql.Open("pgx", dsn)
	var j *journal.SQL // journal.OpenSQL(ctx, db, postgres.Dialect, journal.SQLConfig{NodeID: "node-1"})
	userID, name := 42, "Ada"

	tx, err := db.BeginTx(ctx, nil)
	if err != nil {
		panic(err)
	}
	defer tx.Rollback() // after Commit, a no-op
	if _, err := tx.ExecContext(ctx, `UPDATE users SET name = $1 WHERE id = $2`, name, userID); err != nil {
		panic(err)
	}
	// Nothing global is locked here: the entry waits in the pending table.
	pending, err := j.AppendTx(ctx, tx, journal.Entry{Producer: "cache/users", Payload: []byte(strconv.Itoa(userID))})
	if err != nil {
		panic(err)
	}
	if err := tx.Commit(); err != nil {
		panic(err) // rolled back: no invalidation either
	}
	// Committed: relay the entry into the journal now and learn its
	// revision (if this process died first, another node's poll would
	// relay it within SyncDelay).
	revs, err := pending.Wait(ctx)
	if err != nil {
		panic(err)
	}
	fmt.Println("token", revs[0])
}
