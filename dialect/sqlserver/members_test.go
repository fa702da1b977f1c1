package sqlserver

import (
	"regexp"
	"strconv"
	"strings"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/tandem-go/tandem/internal/sqldialect"
)

// held is the liveness condition of LockQueries.List, which MembersBehind
// must share: a lease counts as live by the same database time.
var held = regexp.MustCompile(`CASE WHEN (expires_at > \S+) THEN 1 ELSE 0 END`)

// TestMembersBehindShape checks the statement SQL Server cannot run here:
// the golden text is in TestQueriesGolden, the statement runs against the
// recording driver in package cluster (sqlBehind).
func TestMembersBehindShape(t *testing.T) {
	for _, prefix := range []string{"tandem_", "t0123456789ab_", "x"} {
		tb := tablesFor(t, prefix)
		q := Dialect.Queries(tb).MembersBehind
		checkStatement(t, "MembersBehind", q, prefix, 2)
		require.Equal(t, 1, strings.Count(q, "@p1"))
		require.Equal(t, 1, strings.Count(q, "@p2"))
		require.True(t, strings.HasPrefix(q, "SELECT COUNT(*) FROM "+tb.Locks+" l LEFT JOIN "+tb.LocalRevisions+" r ON "), "one row, leases first")
		require.False(t, strings.HasSuffix(q, ";"), "a single statement, not a batch")
		m := held.FindStringSubmatch(Dialect.LockQueries(tb).List)
		require.NotNil(t, m, "List's held")
		require.Contains(t, q, " l."+m[1]+"\n", "live as List's held, by database time")
		mp := sqldialect.MemberPrefix
		// SUBSTRING needs a length: the rest of the name (NVARCHAR(128)).
		require.Contains(t, q, "r.node_id = SUBSTRING(l.name, "+strconv.Itoa(len(mp)+1)+", 128)", "the position is looked up by its key")
		require.Contains(t, q, "l.name LIKE N'"+mp+"%'", "membership leases only")
		require.Contains(t, q, "l.name <> N'"+mp+"' + @p1", "not this node's own: + concatenates")
		require.True(t, strings.HasSuffix(q, "AND (r.node_id IS NULL OR r.evicted_at IS NOT NULL OR r.revision < @p2 OR r.epoch <> (SELECT epoch FROM "+tb.Meta+" WHERE id = 1))"),
			"behind: no position, an evicted one, one below the revision, or one of another epoch than the journal's")
		upper := strings.ToUpper(q)
		for _, bad := range []string{"UPDLOCK", "HOLDLOCK", "GROUP BY", "GETDATE()", "||", "CONCAT"} {
			require.NotContains(t, upper, bad)
		}
		require.Contains(t, q, "SYSUTCDATETIME()")
	}
}
