package journal_test

import (
	"context"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/tandem-go/tandem/internal/journaltest"
	"github.com/tandem-go/tandem/journal"
)

// TestFileConformance runs the journal conformance suite on the file
// backend, with small segments so that rollover happens throughout.
func TestFileConformance(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		name    string
		segment int64
	}{{"default", 0}, {"small-segments", 4096}} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			journaltest.Run(t, func(t *testing.T) journaltest.Opener {
				dir := t.TempDir()
				return func(t *testing.T, nodeID string) journal.Journal {
					j, err := journal.OpenFile(context.Background(), journal.FileConfig{
						Dir: dir, NodeID: nodeID, SegmentSize: tc.segment,
					})
					require.NoError(t, err)
					t.Cleanup(func() { require.NoError(t, j.Close(context.Background())) })
					return j
				}
			})
		})
	}
}
