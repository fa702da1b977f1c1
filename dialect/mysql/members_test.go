package mysql

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
	require.Equal(t, "SELECT COUNT(*) FROM tandem_locks l LEFT JOIN tandem_local_revisions r ON r.node_id = SUBSTRING(l.name, 8)\n"+
		"WHERE l.name LIKE 'member.%' AND l.name <> CONCAT('member.', ?) AND l.expires_at > UTC_TIMESTAMP(6)\n"+
		"AND (r.node_id IS NULL OR r.evicted_at IS NOT NULL OR r.revision < ? OR r.epoch <> (SELECT epoch FROM tandem_meta WHERE id = 1))", Dialect.Queries(tb).MembersBehind)
}

// held is the liveness condition of LockQueries.List, which MembersBehind
// must share: a lease counts as live by the same database time.
var held = regexp.MustCompile(`CASE WHEN (expires_at > \S+) THEN 1 ELSE 0 END`)

func TestMembersBehindShape(t *testing.T) {
	for _, prefix := range []string{"tandem_", "t0123456789ab_", "x"} {
		tb, err := sqldialect.NewTables("Prefix", prefix)
		require.NoError(t, err)
		q := Dialect.Queries(tb).MembersBehind
		require.Equal(t, 2, strings.Count(literal.ReplaceAllString(q, "''"), "?"), "one ? per argument")
		for _, bad := range []string{"$1", ":1", "@p", "||"} {
			require.NotContains(t, q, bad, "foreign placeholder or operator (|| is OR in MySQL)")
		}
		require.True(t, strings.HasPrefix(q, "SELECT COUNT(*) FROM "+tb.Locks+" l LEFT JOIN "+tb.LocalRevisions+" r ON "), "one row, leases first")
		for _, m := range tableName.FindAllStringSubmatch(q, -1) {
			require.Equal(t, prefix+m[1], m[0], "table name without the prefix")
		}
		m := held.FindStringSubmatch(Dialect.LockQueries(tb).List)
		require.NotNil(t, m, "List's held")
		require.Contains(t, q, " l."+m[1]+"\n", "live as List's held, by database time")
		mp := sqldialect.MemberPrefix
		n := numbered(q)
		require.Contains(t, n, "r.node_id = SUBSTRING(l.name, "+strconv.Itoa(len(mp)+1)+")", "the position is looked up by its key")
		require.Contains(t, n, "l.name LIKE '"+mp+"%'", "membership leases only")
		require.Contains(t, n, "l.name <> CONCAT('"+mp+"', ?1)", "not this node's own: the node id is the first argument")
		require.True(t, strings.HasSuffix(n, "AND (r.node_id IS NULL OR r.evicted_at IS NOT NULL OR r.revision < ?2 OR r.epoch <> (SELECT epoch FROM "+tb.Meta+" WHERE id = 1))"),
			"behind: no position, an evicted one, one below the revision (the second argument), or one of another epoch than the journal's")
		upper := strings.ToUpper(q)
		for _, bad := range []string{"FOR UPDATE", "LOCK IN SHARE MODE", "GROUP BY", "NOW()"} {
			require.NotContains(t, upper, bad)
		}
	}
}
