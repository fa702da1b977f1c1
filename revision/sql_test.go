package revision_test

import (
	"context"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/tandem-go/tandem/internal/dbtest"
	"github.com/tandem-go/tandem/internal/revisiontest"
	"github.com/tandem-go/tandem/revision"
)

func TestSQLConformance(t *testing.T) {
	for _, b := range dbtest.Backends {
		t.Run(b.Name, func(t *testing.T) {
			t.Parallel()
			revisiontest.Run(t, func(t *testing.T) func(t *testing.T) revision.Store {
				db := dbtest.Open(t, b)
				return func(t *testing.T) revision.Store {
					s, err := revision.OpenSQL(context.Background(), db.NewPool(t), b.Dialect, revision.SQLConfig{Prefix: db.Prefix})
					require.NoError(t, err)
					return s
				}
			})
		})
	}
}

// TestSQLSchemaOneConnection creates the schema through a pool of a single
// connection: schema creation must never wait for a second one.
func TestSQLSchemaOneConnection(t *testing.T) {
	for _, b := range dbtest.Backends {
		t.Run(b.Name, func(t *testing.T) {
			t.Parallel()
			db := dbtest.Open(t, b)
			pool := db.NewPool(t)
			pool.SetMaxOpenConns(1)
			ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
			defer cancel()
			s, err := revision.OpenSQL(ctx, pool, b.Dialect, revision.SQLConfig{Prefix: db.Prefix})
			require.NoError(t, err)
			require.NoError(t, s.Save(ctx, "a", 1, ""))
		})
	}
}
