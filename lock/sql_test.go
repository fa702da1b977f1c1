package lock_test

import (
	"context"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/tandem-go/tandem/internal/dbtest"
	"github.com/tandem-go/tandem/internal/locktest"
	"github.com/tandem-go/tandem/lock"
)

func openSQL(t *testing.T, db *dbtest.DB) *lock.SQL {
	t.Helper()
	s, err := lock.OpenSQL(context.Background(), db.NewPool(t), db.Dialect, db.Prefix)
	require.NoError(t, err)
	return s
}

func TestSQLConformance(t *testing.T) {
	for _, b := range dbtest.Backends {
		t.Run(b.Name, func(t *testing.T) {
			t.Parallel()
			locktest.Run(t, func(t *testing.T) locktest.Opener {
				db := dbtest.Open(t, b)
				return func(t *testing.T) lock.Store { return openSQL(t, db) }
			})
		})
	}
}
