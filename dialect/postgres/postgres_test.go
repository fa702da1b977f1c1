package postgres

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"testing"

	"github.com/jackc/pgx/v5/pgconn"
	"github.com/stretchr/testify/require"

	"github.com/tandem-go/tandem/dialect"
)

func TestTranslate(t *testing.T) {
	for code, want := range map[string]error{
		"23505": dialect.ErrUniqueViolation,
		"40P01": dialect.ErrDeadlock,
		"40001": dialect.ErrSerialization,
		"55P03": dialect.ErrLockTimeout,
	} {
		src := fmt.Errorf("exec: %w", &pgconn.PgError{Code: code})
		err := Dialect.Translate(src)
		require.ErrorIs(t, err, want, code)
		var pgErr *pgconn.PgError
		require.ErrorAs(t, err, &pgErr, "the driver error stays reachable")
	}
	other := &pgconn.PgError{Code: "42P01"}
	require.Same(t, error(other), Dialect.Translate(other))
	require.NoError(t, Dialect.Translate(nil))
	plain := errors.New("x")
	require.Equal(t, plain, Dialect.Translate(plain))
}

func TestAppendErrorOutcome(t *testing.T) {
	d := pg{}
	require.NotErrorIs(t, d.appendError(&pgconn.PgError{Code: "55P03"}), dialect.ErrOutcomeUnknown,
		"a server error means the statement failed")
	require.ErrorIs(t, d.appendError(context.DeadlineExceeded), dialect.ErrOutcomeUnknown,
		"an interrupted statement may have committed")
}

func TestQueriesCarryPrefix(t *testing.T) {
	tb, err := dialect.NewTables("Prefix", "zz_")
	require.NoError(t, err)
	q := Dialect.Queries(tb)
	for name, s := range map[string]string{"Read": q.Read, "Head": q.Head, "Meta": q.Meta, "SetTail": q.SetTail,
		"DeleteRange": q.DeleteRange, "MinRevision": q.MinRevision, "LoadPosition": q.LoadPosition,
		"SavePosition": q.SavePosition, "ListPositions": q.ListPositions, "DeletePosition": q.DeletePosition,
		"CopyPosition": q.CopyPosition} {
		require.Contains(t, s, " zz_", name)
		require.NotContains(t, s, "?", "%s uses PostgreSQL placeholders", name)
	}
	a := appendSQL(tb, true)
	require.Contains(t, a, "UPDATE zz_global_revision")
	require.Contains(t, a, "AND revision = $5")
	require.False(t, strings.Contains(appendSQL(tb, false), "$5"))
}
