package postgres

import (
	"context"
	"errors"
	"fmt"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"testing"

	"github.com/jackc/pgx/v5/pgconn"
	"github.com/stretchr/testify/require"

	"github.com/tandem-go/tandem/dialect"
	"github.com/tandem-go/tandem/internal/sqldialect"
)

func TestTranslate(t *testing.T) {
	for code, want := range map[string]error{
		"23505": dialect.ErrUniqueViolation,
		"40P01": dialect.ErrDeadlock,
		"40001": dialect.ErrSerialization,
		"55P03": dialect.ErrLockTimeout,
		"42P01": dialect.ErrNoSuchTable,
	} {
		src := fmt.Errorf("exec: %w", &pgconn.PgError{Code: code})
		err := Dialect.Translate(src)
		require.ErrorIs(t, err, want, code)
		var pgErr *pgconn.PgError
		require.ErrorAs(t, err, &pgErr, "the driver error stays reachable")
	}
	other := &pgconn.PgError{Code: "42703"} // undefined_column
	require.Same(t, error(other), Dialect.Translate(other))
	require.NoError(t, Dialect.Translate(nil))
	plain := errors.New("x")
	require.Equal(t, plain, Dialect.Translate(plain))
}

func TestAppendErrorOutcome(t *testing.T) {
	d := pg{}
	for _, code := range []string{"55P03", "40P01", "40001", "23505", "42P01", "22001"} {
		err := d.appendError(&pgconn.PgError{Code: code})
		require.NotErrorIs(t, err, dialect.ErrOutcomeUnknown, "%s ends the statement before its commit", code)
	}
	require.ErrorIs(t, d.appendError(&pgconn.PgError{Code: "55P03"}), dialect.ErrLockTimeout, "and is still translated")
	for _, code := range []string{"57014", "57P01", "57P02", "08006", "XX000", "53100", "25P02"} {
		err := d.appendError(&pgconn.PgError{Code: code})
		require.ErrorIs(t, err, dialect.ErrOutcomeUnknown, "%s may come after the commit", code)
		var oe *sqldialect.OutcomeError
		require.ErrorAs(t, err, &oe)
		var pgErr *pgconn.PgError
		require.ErrorAs(t, oe.Err, &pgErr, "the cause stays reachable")
	}
	require.ErrorIs(t, d.appendError(context.DeadlineExceeded), dialect.ErrOutcomeUnknown,
		"an interrupted statement may have committed")
}

func TestQueriesCarryPrefix(t *testing.T) {
	tb, err := sqldialect.NewTables("Prefix", "zz_")
	require.NoError(t, err)
	q := Dialect.Queries(tb)
	for name, s := range map[string]string{"Read": q.Read, "Head": q.Head, "Meta": q.Meta, "SetTail": q.SetTail,
		"DeleteRange": q.DeleteRange, "MinRevision": q.MinRevision, "LockHead": q.LockHead, "FindBatch": q.FindBatch, "LoadPosition": q.LoadPosition,
		"SavePosition": q.SavePosition, "ListPositions": q.ListPositions, "DeletePosition": q.DeletePosition,
		"CopyPosition": q.CopyPosition, "EvictPosition": q.EvictPosition, "UnevictPosition": q.UnevictPosition} {
		require.Contains(t, s, " zz_", name)
		require.NotContains(t, s, "?", "%s uses PostgreSQL placeholders", name)
	}
	a := appendSQL(tb, true)
	require.Contains(t, a, "UPDATE zz_global_revision")
	require.Contains(t, a, "AND revision = $7")
	require.Contains(t, a, "$2, $3, $4, e.producer", "node id, instance and batch id go with every row")
	require.False(t, strings.Contains(appendSQL(tb, false), "$7"), "an unconditional append has no expected head")
	// The statements that commit records make their own commit durable,
	// in a subquery of their FROM (a volatile call there is always
	// evaluated), with a setting of the transaction only.
	require.Contains(t, durableSQL, ", true)")
	require.Contains(t, durableJoin, ", true) WHERE current_setting('synchronous_commit') = 'off'")
	for name, s := range map[string]string{"append": appendSQL(tb, false), "conditional append": a, "relay": relaySQL(tb)} {
		require.True(t, strings.HasSuffix(s, durableJoin), name)
	}
}

var (
	pgParam   = regexp.MustCompile(`\$(\d+)\b`)
	tableName = regexp.MustCompile(`\b[a-z0-9_]*(journal|global_revision|meta|local_revisions|locks)\b`)
)

// firstUse returns the distinct $N of query in the order they first appear.
func firstUse(query string) []int {
	out := []int{}
	for _, m := range pgParam.FindAllStringSubmatch(query, -1) {
		n, _ := strconv.Atoi(m[1])
		if !slices.Contains(out, n) {
			out = append(out, n)
		}
	}
	return out
}

func seq(n int) []int {
	out := []int{}
	for i := 1; i <= n; i++ {
		out = append(out, i)
	}
	return out
}

// TestEvictPositionQueries: EvictPosition sets the marker and
// UnevictPosition clears it, each only on a row that still holds the
// revision given and is not already in the state it sets; args (node id,
// revision), and the rows affected decide.
func TestEvictPositionQueries(t *testing.T) {
	for _, prefix := range []string{"tandem_", "x"} {
		tb, err := sqldialect.NewTables("Prefix", prefix)
		require.NoError(t, err)
		q := Dialect.Queries(tb)
		require.Equal(t, "UPDATE "+tb.LocalRevisions+" SET evicted_at = statement_timestamp() WHERE node_id = $1 AND revision = $2 AND evicted_at IS NULL", q.EvictPosition)
		require.Equal(t, "UPDATE "+tb.LocalRevisions+" SET evicted_at = NULL WHERE node_id = $1 AND revision = $2 AND evicted_at IS NOT NULL", q.UnevictPosition)
		for _, name := range []string{"EvictPosition", "UnevictPosition"} {
			f := q.Statements()[name]
			require.Equal(t, seq(f.Args), firstUse(f.SQL), name)
		}
	}
}

func TestLockQueries(t *testing.T) {
	const now = "statement_timestamp()"
	ttl := func(p string) string { return now + " + " + p + " * interval '1 millisecond'" }
	for _, prefix := range []string{"tandem_", "t0123456789ab_", "x"} {
		tb, err := sqldialect.NewTables("Prefix", prefix)
		require.NoError(t, err)
		q := Dialect.LockQueries(tb)
		for name, f := range q.Statements() {
			require.NotEmpty(t, f.SQL, name)
			require.Equal(t, seq(f.Args), firstUse(f.SQL), "%s: $1..$%d in the order of the field comment", name, f.Args)
			require.NotContains(t, f.SQL, "?", "%s uses PostgreSQL placeholders", name)
			require.Regexp(t, `(FROM|INTO|UPDATE) `+tb.Locks+`\b`, f.SQL, "%s: runs on the prefix's locks table", name)
			for _, m := range tableName.FindAllStringSubmatch(f.SQL, -1) {
				require.Equal(t, prefix+m[1], m[0], "%s: table name without the prefix", name)
			}
			upper := strings.ToUpper(f.SQL)
			for _, bad := range []string{"SKIP LOCKED", "NOWAIT", "NOLOCK", "READPAST"} {
				require.NotContains(t, upper, bad, name)
			}
			require.NotContains(t, f.SQL, "now()", "%s: a lease's times are the statement's, not the transaction's", name)
		}
		for name, frags := range map[string][]string{
			"Seed": {"INSERT INTO " + tb.Locks + " (name, owner, instance, token, heartbeat, acquired_at, renewed_at, expires_at)\nVALUES ($1, '', '', 0, 0, " + now + ", " + now + ", " + now + ")",
				"ON CONFLICT (name) DO NOTHING"},
			"Acquire": {"UPDATE " + tb.Locks + " SET owner = $1, instance = $2, token = token + 1, heartbeat = 0,",
				"acquired_at = " + now + ", renewed_at = " + now + ", expires_at = " + ttl("$3"), "WHERE name = $4 AND expires_at <= " + now + " AND (SELECT " + durableSQL + ") IS NOT NULL"},
			"Token": {"SELECT token FROM " + tb.Locks + " WHERE name = $1"},
			"Renew": {"UPDATE " + tb.Locks + " SET expires_at = " + ttl("$1") + ", renewed_at = " + now + ", heartbeat = heartbeat + 1",
				"WHERE name = $2 AND owner = $3 AND instance = $4 AND token = $5 AND expires_at > " + now + " AND (SELECT " + durableSQL + ") IS NOT NULL"},
			"Release": {"UPDATE " + tb.Locks + " SET expires_at = " + now,
				"WHERE name = $1 AND owner = $2 AND instance = $3 AND token = $4 AND expires_at > " + now},
			"List": {"SELECT name, owner, instance, token, acquired_at, renewed_at, expires_at, CASE WHEN expires_at > " + now + " THEN 1 ELSE 0 END",
				"FROM " + tb.Locks + ` ORDER BY name COLLATE "C"`},
			"Fence": {"SELECT token FROM " + tb.Locks + "\n",
				"WHERE name = $1 AND owner = $2 AND instance = $3 AND token = $4 AND expires_at > " + now},
		} {
			for _, frag := range frags {
				require.Contains(t, q.Statements()[name].SQL, frag, name)
			}
		}
		// Fence locks the row until the transaction ends (and waits for
		// a concurrent update rather than skipping the row).
		require.True(t, strings.HasSuffix(q.Fence, " FOR UPDATE"), q.Fence)
		require.NotContains(t, q.Token+q.List, "FOR ", "plain readers lock nothing")
	}
}

func TestSchemaCreatesLocks(t *testing.T) {
	tb, err := sqldialect.NewTables("Prefix", "zz_")
	require.NoError(t, err)
	var locks []string
	for _, s := range append(schemaV1(tb), schemaV2(tb)...) {
		for _, m := range tableName.FindAllStringSubmatch(s, -1) {
			require.Equal(t, "zz_"+m[1], m[0], "table name without the prefix")
		}
		if strings.HasPrefix(s, "CREATE TABLE IF NOT EXISTS zz_locks (") {
			locks = append(locks, s)
		}
	}
	require.Equal(t, []string{`CREATE TABLE IF NOT EXISTS zz_locks (
	name        VARCHAR(128) PRIMARY KEY,
	owner       VARCHAR(64) NOT NULL,
	instance    VARCHAR(64) NOT NULL,
	token       BIGINT NOT NULL,
	heartbeat   BIGINT NOT NULL,
	acquired_at TIMESTAMPTZ NOT NULL,
	renewed_at  TIMESTAMPTZ NOT NULL,
	expires_at  TIMESTAMPTZ NOT NULL)`}, locks)
}

// TestMigrationOneIsTheFirstRelease: migration 1 runs exactly the DDL the
// first release ran (testdata/schema_v1.sql), so that a database it made
// and one made by this release are the same.
func TestMigrationOneIsTheFirstRelease(t *testing.T) {
	tb, err := sqldialect.NewTables("Prefix", "zz_")
	require.NoError(t, err)
	fixture, err := sqldialect.ReadFixture("testdata/schema_v1.sql", "zz_")
	require.NoError(t, err)
	for i, s := range schemaV1(tb) {
		require.Equal(t, strings.TrimSpace(fixture[i]), s, "statement %d", i)
	}
}
