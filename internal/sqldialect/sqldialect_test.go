package sqldialect_test

import (
	"errors"
	"reflect"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/tandem-go/tandem/ident"
	"github.com/tandem-go/tandem/internal/sqldialect"
	"github.com/tandem-go/tandem/lock"
)

func TestNewTables(t *testing.T) {
	tb, err := sqldialect.NewTables("Prefix", "app_")
	require.NoError(t, err)
	require.Equal(t, "app_journal", tb.Journal)
	require.Equal(t, "app_global_revision", tb.GlobalRevision)
	require.Equal(t, "app_meta", tb.Meta)
	require.Equal(t, "app_local_revisions", tb.LocalRevisions)
	require.Equal(t, "app_journal", tb.Channel())
	require.Len(t, tb.All(), reflect.TypeOf(tb).NumField()-1, "All lists every table (every field but Prefix)")
	require.Contains(t, tb.All(), "app_locks")
	require.Equal(t, []string{"app_pending", "app_blobs", "app_blob_chunks", "app_blob_uploads"}, tb.All()[5:])

	for _, bad := range []string{"", "App_", "1app", "app-", "app;drop", `a"b`, "abcdefghijklmnop"} {
		_, err := sqldialect.NewTables("Prefix", bad)
		require.ErrorIs(t, err, ident.ErrInvalid, "prefix %q", bad)
		require.ErrorContains(t, err, "Prefix")
	}
}

func TestNewEpoch(t *testing.T) {
	a, b := sqldialect.NewEpoch(), sqldialect.NewEpoch()
	require.Len(t, a, 32)
	require.NotEqual(t, a, b)
	require.Regexp(t, `^[0-9a-f]{32}$`, a)
}

func TestTimeScan(t *testing.T) {
	want := time.Date(2026, 11, 23, 5, 4, 3, 123456000, time.UTC)
	for _, src := range []any{
		want,
		want.In(time.FixedZone("x", 3600)),
		[]byte("2026-11-23 05:04:03.123456"),
		"2026-11-23T05:04:03.123456Z",
		"2026-11-23 06:04:03.123456+01:00",
	} {
		var tm sqldialect.Time
		require.NoError(t, tm.Scan(src), "%v", src)
		require.True(t, want.Equal(tm.T), "%v: got %v", src, tm.T)
		require.Equal(t, time.UTC, tm.T.Location())
	}
	var tm sqldialect.Time
	require.Error(t, tm.Scan(42))
	require.Error(t, tm.Scan("yesterday"))
	require.NoError(t, tm.Scan(nil))
	require.True(t, tm.T.IsZero())
}

func TestErrorClassesAreDistinct(t *testing.T) {
	all := []error{sqldialect.ErrUniqueViolation, sqldialect.ErrDeadlock, sqldialect.ErrSerialization,
		sqldialect.ErrLockTimeout, sqldialect.ErrOutcomeUnknown, sqldialect.ErrHeadMismatch, sqldialect.ErrSchemaTooNew}
	for i, a := range all {
		for j, b := range all {
			require.Equal(t, i == j, errors.Is(a, b))
		}
	}
}

// TestStatementsCoverEveryField keeps the argument tables complete: a new
// statement field must be listed with its argument count.
func TestStatementsCoverEveryField(t *testing.T) {
	for _, v := range []any{sqldialect.Queries{}, sqldialect.LockQueries{}, sqldialect.BlobQueries{}} {
		rv := reflect.ValueOf(v)
		var names []string
		for i := range rv.NumField() {
			if f := rv.Type().Field(i); f.Type.Kind() == reflect.String { // not BlobQueries.ChunkArg
				names = append(names, f.Name)
			}
		}
		var got map[string]sqldialect.Statement
		switch q := v.(type) {
		case sqldialect.Queries:
			got = q.Statements()
		case sqldialect.LockQueries:
			got = q.Statements()
		case sqldialect.BlobQueries:
			got = q.Statements()
		}
		require.Len(t, got, len(names), "%T", v)
		for _, n := range names {
			require.Contains(t, got, n, "%T.%s has no argument count", v, n)
		}
	}
}

// TestMemberPrefix: the dialects' MembersBehind find membership leases by
// sqldialect.MemberPrefix, which must be the prefix package lock names
// them with.
func TestMemberPrefix(t *testing.T) {
	require.Equal(t, lock.MemberPrefix, sqldialect.MemberPrefix)
	require.Equal(t, lock.MemberLease("a"), sqldialect.MemberPrefix+"a")
	require.NotContains(t, sqldialect.MemberPrefix, "%", "no LIKE wildcard")
	require.NotContains(t, sqldialect.MemberPrefix, "_", "no LIKE wildcard")
	require.NotContains(t, sqldialect.MemberPrefix, "[", "no SQL Server LIKE class")
	require.NotContains(t, sqldialect.MemberPrefix, "'", "a plain literal")
}

// TestMembersBehindArgs: MembersBehind is listed with its arguments
// (node id, revision).
func TestMembersBehindArgs(t *testing.T) {
	require.Equal(t, sqldialect.Statement{SQL: "x", Args: 2}, sqldialect.Queries{MembersBehind: "x"}.Statements()["MembersBehind"])
}
