package main

import (
	"context"
	"database/sql"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/tandem-go/tandem/dialect"
	"github.com/tandem-go/tandem/internal/sqldialect"
)

// leftovers lists the tables (and MySQL procedures) of the target's
// prefix that exist.
func (tg *target) leftovers(t *testing.T) []string {
	t.Helper()
	ctx := context.Background()
	tables, err := sqldialect.NewTables("prefix", tg.db.Prefix)
	require.NoError(t, err)
	var left []string
	for _, name := range tables.All() {
		var n int
		switch tg.name {
		case "postgres":
			require.NoError(t, tg.db.DB.QueryRowContext(ctx, `SELECT count(*) FROM pg_tables WHERE schemaname = current_schema() AND tablename = $1`, name).Scan(&n))
		case "mysql":
			require.NoError(t, tg.db.DB.QueryRowContext(ctx, `SELECT COUNT(*) FROM information_schema.tables WHERE table_schema = DATABASE() AND table_name = ?`, name).Scan(&n))
		}
		if n > 0 {
			left = append(left, name)
		}
	}
	if tg.name == "mysql" {
		for _, p := range []string{"append_v1", "append_v2", "append_v3", "relay_v1", "relay_v2"} {
			var n int
			require.NoError(t, tg.db.DB.QueryRowContext(ctx, `SELECT COUNT(*) FROM information_schema.routines WHERE routine_schema = DATABASE() AND routine_name = ?`, tg.db.Prefix+p).Scan(&n))
			if n > 0 {
				left = append(left, tg.db.Prefix+p)
			}
		}
	}
	return left
}

func TestSchema(t *testing.T) {
	t.Parallel()
	eachTarget(t, func(t *testing.T, tg *target) {
		ctx := context.Background()
		tg.fails(t, exitNotFound, "schema", "version")
		tg.fails(t, exitNotFound, "schema", "drop", "--yes")

		if tg.db != nil {
			require.Contains(t, tg.must(t, "schema", "migrate"), "created schema version")
		} else {
			require.Contains(t, tg.must(t, "schema", "migrate"), "in place")
		}
		var migrated map[string]any
		require.NoError(t, json.Unmarshal([]byte(tg.must(t, "schema", "migrate", "--json")), &migrated))
		out := tg.must(t, "schema", "version")
		if tg.db != nil {
			require.Contains(t, tg.must(t, "schema", "migrate"), "up to date")
			require.Contains(t, out, "up to date")
			var v struct {
				Version, Release int
				CanRun           bool `json:"can_run"`
			}
			require.NoError(t, json.Unmarshal([]byte(tg.must(t, "schema", "version", "--json")), &v))
			require.Equal(t, dialect.SchemaVersion, v.Version)
			require.Equal(t, dialect.SchemaVersion, v.Release)
			require.True(t, v.CanRun)
			require.NotEmpty(t, tg.leftovers(t))
		} else {
			require.Contains(t, out, "journal, nodes, locks, blobs")
		}

		r := tg.fails(t, exitRefused, "schema", "drop")
		require.Contains(t, r.stderr, "--yes")
		n := tg.started(t, "web-1")
		r = tg.fails(t, exitRefused, "schema", "drop", "--yes")
		require.Contains(t, r.stderr, "web-1")
		require.NoError(t, n.Stop(ctx))

		var dropped struct{ Deleted []string }
		require.NoError(t, json.Unmarshal([]byte(tg.must(t, "schema", "drop", "--yes", "--json")), &dropped))
		require.NotEmpty(t, dropped.Deleted)
		if tg.db == nil {
			require.ElementsMatch(t, folderParts, dropped.Deleted)
		}
		tg.fails(t, exitNotFound, "schema", "version")
		tg.fails(t, exitNotFound, "status")
		if tg.db != nil {
			require.Empty(t, tg.leftovers(t))
		} else {
			for _, p := range folderParts {
				_, err := os.Stat(filepath.Join(tg.dir, p))
				require.ErrorIs(t, err, os.ErrNotExist, p)
			}
		}
	})
}

// TestSchemaDropForeignFolder checks that "schema drop --yes" deletes
// nothing in a folder that holds no tandem journal, even when it has
// subfolders named like tandem's (--dir /var/log has systemd's journal).
func TestSchemaDropForeignFolder(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	theirs := filepath.Join(dir, "journal", "machine-id", "system.journal")
	require.NoError(t, os.MkdirAll(filepath.Dir(theirs), 0o755))
	require.NoError(t, os.WriteFile(theirs, []byte("not tandem's"), 0o644))
	require.NoError(t, os.MkdirAll(filepath.Join(dir, "blobs"), 0o755))
	tg := &target{name: "folder", global: []string{"--dir", dir}, dir: dir}

	r := tg.fails(t, exitNotFound, "schema", "drop", "--yes", "--force")
	require.Contains(t, r.stderr, "not a tandem folder")
	_, err := os.Stat(theirs)
	require.NoError(t, err, "schema drop deleted a folder that is not tandem's")
	_, err = os.Stat(filepath.Join(dir, "blobs"))
	require.NoError(t, err)
}

// TestNoSuchTable checks that each dialect's Translate, which readSchema
// relies on, classifies the database's own "no such table" error as
// dialect.ErrNoSuchTable, and nothing else.
func TestNoSuchTable(t *testing.T) {
	t.Parallel()
	eachDatabase(t, func(t *testing.T, tg *target) {
		ctx := context.Background()
		noTable := func(err error) bool { return errors.Is(tg.db.Dialect.Translate(err), dialect.ErrNoSuchTable) }
		_, err := tg.db.DB.ExecContext(ctx, `SELECT 1 FROM `+tg.db.Prefix+`nothing`)
		require.Error(t, err)
		require.True(t, noTable(err), "%T %v", err, err)
		require.True(t, noTable(fmt.Errorf("read: %w", err)), "wrapped")
		_, err = tg.db.DB.ExecContext(ctx, `SELEC 1`)
		require.Error(t, err)
		require.False(t, noTable(err), "%T %v", err, err)
		require.False(t, noTable(nil))
		require.False(t, noTable(sql.ErrConnDone))
	})
}

// TestSchemaReadFailure checks that a schema that cannot be read for
// another reason than a missing table (here a meta table of another
// shape; in real life no rights, a lost connection) is reported as the
// error it is, with exit code 1, not as "no tandem schema" with exit
// code 4, and that schema migrate and drop leave it alone.
func TestSchemaReadFailure(t *testing.T) {
	t.Parallel()
	eachDatabase(t, func(t *testing.T, tg *target) {
		ctx := context.Background()
		meta := tg.db.Prefix + "meta"
		_, err := tg.db.DB.ExecContext(ctx, `CREATE TABLE `+meta+` (id INT, schema_version VARCHAR(10), migration INT)`)
		require.NoError(t, err)
		_, err = tg.db.DB.ExecContext(ctx, `INSERT INTO `+meta+` VALUES (1, 'abc', 1)`)
		require.NoError(t, err)
		for _, args := range [][]string{
			{"status"}, {"schema", "version"}, {"schema", "migrate"}, {"schema", "drop", "--yes"}, {"journal", "show"},
		} {
			r := tg.fails(t, exitFailed, args...)
			require.Contains(t, r.stderr, "read schema version from "+meta, args)
			require.NotContains(t, r.stderr, "no tandem schema", args)
		}
		require.Equal(t, []string{meta}, tg.leftovers(t))
	})
}

// TestSchemaMigrateCompletesHalfCreated: a first migration cut short
// after creating the meta table but before writing its row (MySQL's and
// Oracle's DDL commit by themselves) leaves an empty meta table. Status
// reports an incomplete schema (exit 4, not a failure), and schema migrate
// completes it.
func TestSchemaMigrateCompletesHalfCreated(t *testing.T) {
	t.Parallel()
	eachDatabase(t, func(t *testing.T, tg *target) {
		tg.must(t, "schema", "migrate")
		_, err := tg.db.DB.ExecContext(context.Background(), `DELETE FROM `+tg.db.Prefix+`meta`)
		require.NoError(t, err)
		r := tg.fails(t, exitNotFound, "status")
		require.Contains(t, r.stderr, "is incomplete")
		tg.must(t, "schema", "migrate")
		tg.must(t, "schema", "version")
	})
}
