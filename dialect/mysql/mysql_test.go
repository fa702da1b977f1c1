package mysql

import (
	"errors"
	"fmt"
	"strings"
	"testing"

	driver "github.com/go-sql-driver/mysql"
	"github.com/stretchr/testify/require"

	"github.com/tandem-go/tandem/dialect"
)

func TestTranslate(t *testing.T) {
	for num, want := range map[uint16]error{
		1062: dialect.ErrUniqueViolation,
		1213: dialect.ErrDeadlock,
		1205: dialect.ErrLockTimeout,
		3572: dialect.ErrLockTimeout,
	} {
		err := Dialect.Translate(fmt.Errorf("exec: %w", &driver.MySQLError{Number: num}))
		require.ErrorIs(t, err, want, num)
		var myErr *driver.MySQLError
		require.ErrorAs(t, err, &myErr)
	}
	other := &driver.MySQLError{Number: 1146}
	require.Same(t, error(other), Dialect.Translate(other))
	require.NoError(t, Dialect.Translate(nil))
	plain := errors.New("x")
	require.Equal(t, plain, Dialect.Translate(plain))
}

func TestInsertSQL(t *testing.T) {
	tb, err := dialect.NewTables("Prefix", "zz_")
	require.NoError(t, err)
	for _, n := range []int{1, 3, 1000} {
		s := insertSQL(tb, n)
		require.Equal(t, 4*n, strings.Count(s, "?"))
		require.Equal(t, n, strings.Count(s, "UTC_TIMESTAMP(6)"))
		require.True(t, strings.HasPrefix(s, "INSERT INTO zz_journal "))
	}
}
