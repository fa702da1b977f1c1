package mysql

import (
	"encoding/base64"
	"encoding/json"
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

func TestEntriesJSON(t *testing.T) {
	entries := []dialect.Entry{
		{Producer: `cache/users`, Payload: []byte("hello")},
		{Producer: `we"ird\\p`, Payload: nil},
		{Producer: "bin", Payload: []byte{0, 1, 2, 255}},
	}
	var got [][2]string
	require.NoError(t, json.Unmarshal([]byte(entriesJSON(entries)), &got))
	require.Len(t, got, 3)
	for i, e := range entries {
		require.Equal(t, e.Producer, got[i][0])
		p, err := base64.StdEncoding.DecodeString(got[i][1])
		require.NoError(t, err)
		require.Equal(t, string(e.Payload), string(p))
	}
}

func TestProcedureSQL(t *testing.T) {
	tb, err := dialect.NewTables("Prefix", "zz_")
	require.NoError(t, err)
	s := procedureSQL(tb)
	require.True(t, strings.HasPrefix(s, "CREATE PROCEDURE zz_append_v1("))
	require.Contains(t, s, "FROM zz_global_revision WHERE id = 1 FOR UPDATE")
	require.Contains(t, s, "INSERT INTO zz_journal ")
	require.Contains(t, s, "ROLLBACK; RESIGNAL;", "an error rolls back and keeps its number")
	require.Equal(t, 1, strings.Count(s, "COMMIT;"))
}
