package postgres

import (
	"regexp"
	"strconv"
	"strings"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/tandem-go/tandem/internal/sqldialect"
)

func TestMembersBehindGolden(t *testing.T) {
	tb, err := sqldialect.NewTables("Prefix", "tandem_")
	require.NoError(t, err)
	require.Equal(t, "SELECT COUNT(*) FROM tandem_locks l LEFT JOIN tandem_local_revisions r ON r.node_id = substr(l.name, 8)\n"+
		"WHERE l.name LIKE 'member.%' AND l.name <> 'member.' || $1 AND l.expires_at > statement_timestamp()\n"+
		"AND (r.node_id IS NULL OR r.evicted_at IS NOT NULL OR r.revision < $2 OR r.epoch <> (SELECT epoch FROM tandem_meta WHERE id = 1))", Dialect.Queries(tb).MembersBehind)
}

// held is the liveness condition of LockQueries.List, which MembersBehind
// must share: a lease counts as live by the same database time.
var held = regexp.MustCompile(`CASE WHEN (expires_at > \S+) THEN 1 ELSE 0 END`)

func TestMembersBehindShape(t *testing.T) {
	for _, prefix := range []string{"tandem_", "t0123456789ab_", "x"} {
		tb, err := sqldialect.NewTables("Prefix", prefix)
		require.NoError(t, err)
		q := Dialect.Queries(tb).MembersBehind
		require.Equal(t, seq(2), firstUse(q), "$1 (node id), then $2 (revision)")
		require.Equal(t, 1, strings.Count(q, "$1"))
		require.Equal(t, 1, strings.Count(q, "$2"))
		require.True(t, strings.HasPrefix(q, "SELECT COUNT(*) FROM "+tb.Locks+" l LEFT JOIN "+tb.LocalRevisions+" r ON "), "one row, leases first")
		for _, m := range tableName.FindAllStringSubmatch(q, -1) {
			require.Equal(t, prefix+m[1], m[0], "table name without the prefix")
		}
		m := held.FindStringSubmatch(Dialect.LockQueries(tb).List)
		require.NotNil(t, m, "List's held")
		require.Contains(t, q, " l."+m[1]+"\n", "live as List's held, by database time")
		mp := sqldialect.MemberPrefix
		require.Contains(t, q, "r.node_id = substr(l.name, "+strconv.Itoa(len(mp)+1)+")", "the position is looked up by its key")
		require.Contains(t, q, "l.name LIKE '"+mp+"%'", "membership leases only")
		require.Contains(t, q, "l.name <> '"+mp+"' || $1", "not this node's own")
		require.True(t, strings.HasSuffix(q, "AND (r.node_id IS NULL OR r.evicted_at IS NOT NULL OR r.revision < $2 OR r.epoch <> (SELECT epoch FROM "+tb.Meta+" WHERE id = 1))"),
			"behind: no position, an evicted one, one below the revision, or one of another epoch than the journal's")
		upper := strings.ToUpper(q)
		for _, bad := range []string{"FOR UPDATE", "FOR SHARE", "GROUP BY", "NOW()"} {
			require.NotContains(t, upper, bad)
		}
	}
}
