package oracle

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

// TestMembersBehindShape checks the statement Oracle cannot run here: the
// golden text is in TestQueriesGolden, the statement runs against the
// recording driver in package cluster (sqlBehind).
func TestMembersBehindShape(t *testing.T) {
	for _, prefix := range []string{"tandem_", "t0123456789ab_", "x"} {
		tb := tablesFor(t, prefix)
		q := Dialect.Queries(tb).MembersBehind
		// :1 then :2, each once: bound by position, in SQL every
		// occurrence takes an argument.
		checkStatement(t, "MembersBehind", q, prefix, 2)
		require.True(t, strings.HasPrefix(q, "SELECT COUNT(*) FROM "+tb.Locks+" l LEFT JOIN "+tb.LocalRevisions+" r ON "), "one row, leases first")
		require.NotContains(t, q, " AS l", "Oracle takes no AS before a table alias")
		require.NotContains(t, q, " AS r")
		m := held.FindStringSubmatch(Dialect.LockQueries(tb).List)
		require.NotNil(t, m, "List's held")
		require.Contains(t, q, " l."+m[1]+"\n", "live as List's held, by database time")
		mp := sqldialect.MemberPrefix
		require.Contains(t, q, "r.node_id = SUBSTR(l.name, "+strconv.Itoa(len(mp)+1)+")", "the position is looked up by its key")
		require.Contains(t, q, "l.name LIKE '"+mp+"%'", "membership leases only")
		require.Contains(t, q, "l.name <> '"+mp+"' || :1", "not this node's own")
		require.True(t, strings.HasSuffix(q, "AND (r.node_id IS NULL OR r.evicted_at IS NOT NULL OR r.revision < :2 OR r.epoch IS NULL OR r.epoch <> (SELECT epoch FROM "+tb.Meta+" WHERE id = 1))"),
			"behind: no position, an evicted one, one below the revision, or one of another epoch than the journal's (NULL: an empty one)")
		upper := strings.ToUpper(q)
		for _, bad := range []string{"FOR UPDATE", "GROUP BY", "SYSDATE", "CONCAT("} {
			require.NotContains(t, upper, bad)
		}
	}
}
