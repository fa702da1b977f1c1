package cluster

import (
	"context"
	"database/sql"
	"database/sql/driver"
	"testing"
	"time"

	mssql "github.com/microsoft/go-mssqldb"
	"github.com/stretchr/testify/require"

	"github.com/tandem-go/tandem/dialect"
	"github.com/tandem-go/tandem/dialect/mysql"
	"github.com/tandem-go/tandem/dialect/oracle"
	"github.com/tandem-go/tandem/dialect/postgres"
	"github.com/tandem-go/tandem/dialect/sqlserver"
	"github.com/tandem-go/tandem/internal/fakesql"
	"github.com/tandem-go/tandem/internal/sqldialect"
	"github.com/tandem-go/tandem/journal"
)

// TestSQLBehindStatement runs the barrier's poll against the recording
// driver, for every dialect (SQL Server and Oracle have no server here):
// one statement, the dialect's MembersBehind for the node's prefix, with
// the node id and the revision in that order, and its count as the answer.
func TestSQLBehindStatement(t *testing.T) {
	ctx := context.Background()
	for _, d := range []dialect.Dialect{postgres.Dialect, mysql.Dialect, sqlserver.Dialect, oracle.Dialect} {
		t.Run(d.Name(), func(t *testing.T) {
			for _, c := range []struct{ prefix, tables string }{{"app_", "app_"}, {"", dialect.DefaultPrefix}} {
				f, db := fakesql.New(t, func(string, []driver.NamedValue) fakesql.Reply {
					return fakesql.Reply{Rows: [][]driver.Value{{int64(3)}}}
				})
				behind, err := sqlBehind(db, nil, d, c.prefix, "web-1")
				require.NoError(t, err)
				n, err := behind(ctx, 42)
				require.NoError(t, err)
				require.Equal(t, int64(3), n)
				tb, err := sqldialect.NewTables("Prefix", c.tables)
				require.NoError(t, err)
				calls := f.Calls()
				require.Len(t, calls, 1, "one statement per poll")
				require.Equal(t, d.Queries(tb).MembersBehind, calls[0].Query)
				require.Len(t, calls[0].Args, 2)
				require.Equal(t, []any{"web-1", int64(42)}, []any{calls[0].Args[0].Value, calls[0].Args[1].Value})
				require.Equal(t, []int{1, 2}, []int{calls[0].Args[0].Ordinal, calls[0].Args[1].Ordinal})
			}
		})
	}

	t.Run("errors", func(t *testing.T) {
		_, db := fakesql.New(t, func(string, []driver.NamedValue) fakesql.Reply {
			return fakesql.Reply{Err: mssql.Error{Number: 1222, Message: "Lock request time out period exceeded."}}
		})
		behind, err := sqlBehind(db, nil, sqlserver.Dialect, "", "web-1")
		require.NoError(t, err)
		_, err = behind(ctx, 1)
		require.ErrorIs(t, err, dialect.ErrLockTimeout, "the dialect translates the driver's error")
		require.ErrorContains(t, err, "barrier")

		_, db = fakesql.New(t, nil) // no row: not an answer
		behind, err = sqlBehind(db, nil, oracle.Dialect, "", "web-1")
		require.NoError(t, err)
		_, err = behind(ctx, 1)
		require.ErrorIs(t, err, sql.ErrNoRows)

		_, err = sqlBehind(db, nil, oracle.Dialect, "Bad-", "web-1")
		require.Error(t, err, "an invalid prefix")
	})
}

// TestOwnRecordsSaveSoon: a sync whose position only the node's own
// records moved schedules its save saveGap/2 to saveGap later, as after
// other nodes' records, and not saveEvery (1 s) after the last save:
// another node's Barrier on the writer's revision waits for that save.
// The sync runs on the test's goroutine (no run loop), so the schedule is
// read as the sync left it.
func TestOwnRecordsSaveSoon(t *testing.T) {
	ctx := context.Background()
	n, err := OpenDir(ctx, Config{NodeID: "a", Dir: t.TempDir(), SyncDelay: time.Hour, DisablePush: true})
	require.NoError(t, err)
	t.Cleanup(func() { require.NoError(t, n.Stop(ctx)) }) // closes the journal
	l, err := n.newSyncLoop(ctx)                          // a new node: saves its position now
	require.NoError(t, err)
	t.Cleanup(l.cancel)
	revs, err := n.Journal().Append(ctx, journal.Entry{Producer: "p"}, journal.Entry{Producer: "p"})
	require.NoError(t, err)
	require.NoError(t, l.sync(ctx, false))
	require.Equal(t, revs[1], l.pos, "the node's own records moved its position")
	due, waiting := l.saveDue()
	require.True(t, waiting, "not saved at once: saves are spaced by saveGap")
	require.LessOrEqual(t, due, saveGap, "the save comes at most saveGap (%v) after the sync, not after saveEvery (%v)", saveGap, saveEvery)
}
