package main

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"slices"
	"strings"

	"github.com/tandem-go/tandem/datastore"
	"github.com/tandem-go/tandem/dialect"
	"github.com/tandem-go/tandem/internal/sqldialect"
	"github.com/tandem-go/tandem/journal"
	"github.com/tandem-go/tandem/lock"
	"github.com/tandem-go/tandem/revision"
)

// presentParts lists which of tandem's subfolders exist in dir.
func presentParts(dir string) ([]string, error) {
	var out []string
	for _, p := range folderParts {
		_, err := os.Stat(filepath.Join(dir, p))
		switch {
		case err == nil:
			out = append(out, p)
		case !errors.Is(err, fs.ErrNotExist):
			return nil, err
		}
	}
	return out, nil
}

func runSchemaVersion(ctx context.Context, e *env, args []string) error {
	s, err := e.connectNoArgs(ctx, e.flags("schema version", ""), args)
	if err != nil {
		return err
	}
	defer s.close()
	if s.db == nil {
		parts, err := presentParts(s.dir)
		if err != nil {
			return err
		}
		if len(parts) == 0 {
			return withCode(exitNotFound, "no tandem folders in %s", s.dir)
		}
		if e.g.json {
			return writeJSON(e.stdout, map[string]any{"store": "folder", "dir": s.dir, "present": parts})
		}
		fmt.Fprintf(e.stdout, "folder %s: %s (a folder has no schema version; its files carry their formats)\n", s.dir, strings.Join(parts, ", "))
		return nil
	}
	st, err := s.readSchema(ctx)
	if err != nil {
		return err
	}
	if e.g.json {
		return writeJSON(e.stdout, map[string]any{"store": s.d.Name(), "prefix": s.prefix, "version": st.Version,
			"compat": st.Compat, "release": dialect.SchemaVersion, "can_run": st.Check() == nil})
	}
	note := "up to date"
	switch {
	case st.Check() != nil:
		note = "too new for this release"
	case st.Version < dialect.SchemaVersion:
		note = "run tandem schema migrate"
	case st.Version > dialect.SchemaVersion:
		note = "migrated by a newer release, compatible"
	}
	fmt.Fprintf(e.stdout, "%s prefix %s: schema version %d (compatible down to %d); this release: %d; %s\n",
		s.d.Name(), s.prefix, st.Version, st.Compat, dialect.SchemaVersion, note)
	return nil
}

func runSchemaMigrate(ctx context.Context, e *env, args []string) error {
	s, err := e.connectNoArgs(ctx, e.flags("schema migrate", ""), args)
	if err != nil {
		return err
	}
	defer s.close()
	if s.db == nil {
		if _, err := os.Stat(s.dir); err != nil {
			return withCode(exitNotFound, "folder %s: %v", s.dir, err)
		}
		j, err := journal.OpenFile(ctx, journal.FileConfig{Dir: s.dir, NodeID: cliNode})
		if err != nil {
			return err
		}
		s.j = j
		if _, err := revision.OpenFile(ctx, revision.FileConfig{Dir: s.dir}); err != nil {
			return err
		}
		if _, err := lock.OpenFile(ctx, lock.FileConfig{Dir: s.dir}); err != nil {
			return err
		}
		if _, err := datastore.OpenFile(ctx, datastore.FileConfig{Dir: s.dir}); err != nil {
			return err
		}
		if e.g.json {
			return writeJSON(e.stdout, map[string]any{"store": "folder", "dir": s.dir, "present": folderParts})
		}
		fmt.Fprintf(e.stdout, "folder %s: %s in place\n", s.dir, strings.Join(folderParts, ", "))
		return nil
	}
	before, err := s.readSchema(ctx)
	switch {
	case noSchema(err):
		before = sqldialect.SchemaState{} // created below
	case err != nil:
		return err
	}
	if err := sqldialect.Migrate(ctx, s.db, s.d, s.tables, sqldialect.NewEpoch()); err != nil {
		return err
	}
	after, err := sqldialect.ReadSchema(ctx, s.db, s.tables)
	if err != nil {
		return err
	}
	if e.g.json {
		return writeJSON(e.stdout, map[string]any{"from": before.Version, "to": after.Version})
	}
	switch {
	case before.Version == 0:
		fmt.Fprintf(e.stdout, "created schema version %d with prefix %s\n", after.Version, s.prefix)
	case before.Version == after.Version:
		fmt.Fprintf(e.stdout, "schema version %d: up to date\n", after.Version)
	default:
		fmt.Fprintf(e.stdout, "migrated from schema version %d to %d\n", before.Version, after.Version)
	}
	return nil
}

func runSchemaDrop(ctx context.Context, e *env, args []string) error {
	fsf := e.flags("schema drop", "--yes [--force]")
	yes := fsf.Bool("yes", false, "really delete every tandem table (or subfolder) and what it holds")
	force := fsf.Bool("force", false, "drop even while nodes are live")
	if _, err := e.parse(fsf, args, 0, 0); err != nil {
		return err
	}
	s, err := e.connect(ctx)
	if err != nil {
		return err
	}
	defer s.close()
	var what string
	var parts []string // a folder's
	if s.db == nil {
		// Only a folder with a tandem journal is tandem's: a journal or
		// blobs subfolder alone may be anybody's (--dir /var/log).
		if err := s.check(ctx); err != nil {
			if exitCode(err) == exitNotFound {
				return withCode(exitNotFound, "no tandem journal in folder %s (no journal/meta): not a tandem folder, nothing deleted", s.dir)
			}
			return err
		}
		if parts, err = presentParts(s.dir); err != nil {
			return err
		}
		what = fmt.Sprintf("the folders %s of %s", strings.Join(parts, ", "), s.dir)
	} else {
		if _, err := s.readSchema(ctx); err != nil {
			return err
		}
		what = fmt.Sprintf("every table with prefix %s", s.prefix)
	}
	if !*yes {
		return withCode(exitRefused, "refusing to delete %s without --yes", what)
	}
	if !*force {
		if live, err := s.liveNodes(ctx); err != nil {
			return err
		} else if len(live) > 0 {
			return withCode(exitRefused, "nodes are live (%s): stop them first, or use --force", strings.Join(live, ", "))
		}
	}
	if s.db == nil {
		// The journal (folderParts' first) goes last: a drop that fails
		// half way can be run again, as the folder is still recognised
		// as tandem's.
		for _, p := range slices.Backward(folderParts) {
			if err := os.RemoveAll(filepath.Join(s.dir, p)); err != nil {
				return err
			}
		}
		if e.g.json {
			return writeJSON(e.stdout, map[string]any{"store": "folder", "dir": s.dir, "deleted": parts})
		}
		fmt.Fprintf(e.stdout, "deleted %s\n", what)
		return nil
	}
	for _, stmt := range s.d.DropSchema(s.tables) {
		if _, err := s.db.ExecContext(ctx, stmt); err != nil {
			return fmt.Errorf("drop schema: %s: %w", stmt, err)
		}
	}
	if e.g.json {
		return writeJSON(e.stdout, map[string]any{"store": s.d.Name(), "prefix": s.prefix, "deleted": s.tables.All()})
	}
	fmt.Fprintf(e.stdout, "deleted %s\n", what)
	return nil
}

// liveNodes lists the nodes that hold their membership lease.
func (s *store) liveNodes(ctx context.Context) ([]string, error) {
	if s.db != nil {
		if _, err := s.readSchema(ctx); noSchema(err) {
			return nil, nil
		} else if err != nil {
			return nil, err
		}
	} else if _, err := os.Stat(filepath.Join(s.dir, "locks")); err != nil {
		return nil, nil
	}
	ls, err := s.leases(ctx)
	if err != nil {
		return nil, err
	}
	leases, err := ls.List(ctx)
	if err != nil {
		return nil, err
	}
	var live []string
	for _, l := range leases {
		if id, ok := strings.CutPrefix(l.Name, lock.MemberPrefix); ok && l.Held {
			live = append(live, id)
		}
	}
	return live, nil
}
