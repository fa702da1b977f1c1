package sqldialect_test

import (
	"regexp"
	"strings"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/tandem-go/tandem/dialect"
	"github.com/tandem-go/tandem/dialect/mysql"
	"github.com/tandem-go/tandem/dialect/oracle"
	"github.com/tandem-go/tandem/dialect/postgres"
	"github.com/tandem-go/tandem/dialect/sqlserver"
	"github.com/tandem-go/tandem/internal/sqldialect"
)

var dropTable = regexp.MustCompile(`drop table (?:if exists )?([a-z0-9_]+)`)

// TestDropSchema: every dialect drops every table of Tables.All (and
// MySQL every procedure of its migrations), each object once.
func TestDropSchema(t *testing.T) {
	tb, err := sqldialect.NewTables("Prefix", "zz_")
	require.NoError(t, err)
	for _, d := range []dialect.Dialect{postgres.Dialect, mysql.Dialect, sqlserver.Dialect, oracle.Dialect} {
		stmts := d.DropSchema(tb)
		dropped := map[string]int{}
		for _, s := range stmts {
			if m := dropTable.FindStringSubmatch(strings.ToLower(s)); m != nil {
				dropped[m[1]]++
			}
		}
		for _, table := range tb.All() {
			require.Equal(t, 1, dropped[table], "%s drops %s once: %q", d.Name(), table, stmts)
		}
		if d.Name() == "mysql" {
			procs := []string{"zz_append_v1", "zz_append_v2", "zz_append_v3", "zz_relay_v1", "zz_relay_v2"}
			for i, proc := range procs {
				require.Equal(t, "DROP PROCEDURE IF EXISTS "+proc, stmts[i], "procedures before the tables they name")
			}
			require.True(t, strings.HasPrefix(stmts[len(procs)], "DROP TABLE"), "then the tables: %q", stmts)
		}
		require.Len(t, stmts, len(tb.All())+map[bool]int{true: 5}[d.Name() == "mysql"], d.Name())
	}
}
