package dialect_test

import (
	"errors"
	"fmt"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/tandem-go/tandem/dialect"
	"github.com/tandem-go/tandem/dialect/mysql"
	"github.com/tandem-go/tandem/dialect/oracle"
	"github.com/tandem-go/tandem/dialect/postgres"
	"github.com/tandem-go/tandem/dialect/sqlserver"
	"github.com/tandem-go/tandem/internal/sqldialect"
)

// TestSameValues checks that the public names are the values the dialects
// wrap, so that errors.Is matches either.
func TestSameValues(t *testing.T) {
	pairs := []struct{ public, internal error }{
		{dialect.ErrUniqueViolation, sqldialect.ErrUniqueViolation},
		{dialect.ErrDeadlock, sqldialect.ErrDeadlock},
		{dialect.ErrSerialization, sqldialect.ErrSerialization},
		{dialect.ErrLockTimeout, sqldialect.ErrLockTimeout},
		{dialect.ErrOutcomeUnknown, sqldialect.ErrOutcomeUnknown},
		{dialect.ErrHeadMismatch, sqldialect.ErrHeadMismatch},
		{dialect.ErrSchemaTooNew, sqldialect.ErrSchemaTooNew},
	}
	for _, p := range pairs {
		require.Same(t, p.internal, p.public)
		require.ErrorIs(t, fmt.Errorf("op: %w", p.internal), p.public)
	}
	require.ErrorIs(t, sqldialect.Open(errors.New("connection reset")), dialect.ErrOutcomeUnknown)
	require.Equal(t, sqldialect.SchemaVersion, dialect.SchemaVersion)
	require.Equal(t, "tandem_", dialect.DefaultPrefix)
}

func TestDialects(t *testing.T) {
	names := map[string]dialect.Dialect{
		"postgres": postgres.Dialect, "mysql": mysql.Dialect,
		"sqlserver": sqlserver.Dialect, "oracle": oracle.Dialect,
	}
	for name, d := range names {
		require.Equal(t, name, d.Name())
	}
}
