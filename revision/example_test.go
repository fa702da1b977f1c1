package revision_test

import (
	"context"
	"fmt"
	"os"

	"github.com/tandem-go/tandem/revision"
)

// A new node whose caches were cloned from node-a's starts from node-a's
// position: one call.
func ExampleStore_copy() {
	ctx := context.Background()
	dir, _ := os.MkdirTemp("", "tandem-example-")
	defer os.RemoveAll(dir)
	var s revision.Store
	s, err := revision.OpenFile(ctx, revision.FileConfig{Dir: dir})
	if err != nil {
		panic(err)
	}

	_ = s.Save(ctx, "node-a", 1041, "4f0c8a3e9b2d41d6a5e7c3b1f0e9d8c7")
	if err := s.Copy(ctx, "node-a", "node-c"); err != nil {
		panic(err)
	}
	list, _ := s.List(ctx)
	for _, p := range list {
		fmt.Println(p.NodeID, p.Revision)
	}
	// Output:
	// node-a 1041
	// node-c 1041
}
