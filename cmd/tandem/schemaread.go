package main

import (
	"context"
	"database/sql"
	"errors"
	"fmt"

	"github.com/tandem-go/tandem/dialect"
	"github.com/tandem-go/tandem/internal/sqldialect"
)

// readSchema reads the schema's state from the meta table. It fails with
// exit code 4 only when there is no such table, or no row in it (a first
// migration cut short, which schema migrate completes); any other failure
// (no rights, a lost connection, a table of another shape) is wrapped and
// ends the command with exit code 1, not taken for a missing schema.
func (s *store) readSchema(ctx context.Context) (sqldialect.SchemaState, error) {
	st, err := sqldialect.ReadSchema(ctx, s.db, s.tables)
	switch {
	case err == nil:
		return st, nil
	case ctx.Err() != nil:
		return st, fmt.Errorf("read schema version: %w", ctx.Err())
	case errors.Is(s.d.Translate(err), dialect.ErrNoSuchTable):
		return st, withCode(exitNotFound, "no tandem schema with prefix %q in the %s database (run tandem schema migrate to create one)", s.prefix, s.d.Name())
	case errors.Is(err, sql.ErrNoRows):
		// A first migration cut short between creating the meta table and
		// writing its row (MySQL's and Oracle's DDL commit by
		// themselves): Migrate completes it.
		return st, withCode(exitNotFound, "the tandem schema with prefix %q in the %s database is incomplete: %s has no row (run tandem schema migrate to complete it)", s.prefix, s.d.Name(), s.tables.Meta)
	}
	return st, fmt.Errorf("read schema version from %s: %w", s.tables.Meta, err)
}

// noSchema reports whether err is readSchema's "no tandem schema".
func noSchema(err error) bool {
	var e *exitError
	return errors.As(err, &e) && e.code == exitNotFound
}
