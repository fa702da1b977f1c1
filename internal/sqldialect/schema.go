package sqldialect

import (
	"context"
	"database/sql"
	"fmt"
)

// Querier is what *sql.DB, *sql.Conn and *sql.Tx have in common for
// single-row queries.
type Querier interface {
	QueryRowContext(ctx context.Context, query string, args ...any) *sql.Row
}

// Migration is one numbered step of a dialect's schema. Version 1 creates
// the tables of schema version 1 exactly as the first release did; each
// later one changes them in a way that the releases allowed by Compat can
// live with during a rolling upgrade (additive: new nullable columns, new
// tables, new procedures beside the old ones).
type Migration struct {
	// Version is the schema version the migration brings the database to.
	Version int
	// Compat is the oldest schema version a release must know to run
	// against a database at Version. An additive migration keeps the
	// Compat of the one before it, so older releases keep running.
	Compat int
	// Apply brings a database at Version-1 to Version and records Version
	// (and Compat) in the meta row; migration 1 creates the meta row with
	// epoch. It runs on conn while LockSchema's lock is held, in one
	// transaction where the database has transactional DDL. It must be
	// idempotent: where DDL commits by itself (MySQL, Oracle), a node that
	// failed half way leaves the rest to the next one.
	Apply func(ctx context.Context, conn *sql.Conn, epoch string) error
}

// SchemaState is what a database's meta row says about its schema.
type SchemaState struct {
	// Version is the last migration applied; 0 when there is no schema.
	Version int
	// Compat is the oldest schema version a release must know to run
	// against the database. It is stored in meta.schema_version, the
	// column every release since the first checks.
	Compat int
}

// ReadSchema reads the schema state from the meta table of t. A database
// of schema version 1 has no meta.migration column; its state is version
// 1. The error is the driver's, untranslated: no meta table (no schema
// yet) is an error too.
func ReadSchema(ctx context.Context, q Querier, t Tables) (SchemaState, error) {
	var compat int
	var version sql.NullInt64
	err := q.QueryRowContext(ctx, `SELECT schema_version, migration FROM `+t.Meta+` WHERE id = 1`).Scan(&compat, &version)
	if err != nil {
		// Schema version 1 has no migration column.
		if err1 := q.QueryRowContext(ctx, `SELECT schema_version FROM `+t.Meta+` WHERE id = 1`).Scan(&compat); err1 != nil {
			return SchemaState{}, err
		}
		return SchemaState{Version: 1, Compat: compat}, nil
	}
	if !version.Valid || version.Int64 < 1 {
		version.Int64 = 1
	}
	return SchemaState{Version: int(version.Int64), Compat: compat}, nil
}

// Check fails with ErrSchemaTooNew when this release cannot run against a
// database in state s: one whose compatibility version is newer than
// SchemaVersion. A database migrated further by a newer release, but
// additively, passes.
func (s SchemaState) Check() error {
	if s.Compat > SchemaVersion {
		return fmt.Errorf("%w: the database's schema is at version %d and needs a release that knows version %d or newer; this release knows %d",
			ErrSchemaTooNew, s.Version, s.Compat, SchemaVersion)
	}
	return nil
}

// Migrate brings the tandem schema of t in db up to SchemaVersion, creating
// it when there is none (with epoch as the new journal's epoch; when the
// schema exists, its epoch stays). Nodes may run it at once: the dialect's
// schema lock makes one of them apply each migration, and the others find
// it done. It fails with ErrSchemaTooNew when the database needs a newer
// release.
func Migrate(ctx context.Context, db *sql.DB, d Dialect, t Tables, epoch string) error {
	if s, err := ReadSchema(ctx, db, t); err == nil && s.Version >= SchemaVersion {
		return s.Check()
	}
	conn, err := db.Conn(ctx)
	if err != nil {
		return fmt.Errorf("migrate schema: %w", d.Translate(err))
	}
	defer conn.Close()
	unlock, err := d.LockSchema(ctx, conn, t)
	if err != nil {
		return fmt.Errorf("migrate schema: lock: %w", d.Translate(err))
	}
	defer unlock()
	s, err := ReadSchema(ctx, conn, t)
	if err != nil {
		s = SchemaState{} // no schema yet (or the read failed, and so will migration 1)
	}
	if err := s.Check(); err != nil {
		return err
	}
	ms := d.Migrations(t)
	for _, m := range ms {
		if m.Version <= s.Version {
			continue
		}
		if err := m.Apply(ctx, conn, epoch); err != nil {
			return fmt.Errorf("migrate schema to version %d: %w", m.Version, d.Translate(err))
		}
	}
	s, err = ReadSchema(ctx, conn, t)
	if err != nil {
		return fmt.Errorf("migrate schema: read version: %w", d.Translate(err))
	}
	if s.Version < SchemaVersion {
		return fmt.Errorf("migrate schema: the database is at version %d after migrating to %d", s.Version, SchemaVersion)
	}
	if last := ms[len(ms)-1]; s.Version == last.Version && s.Compat != last.Compat {
		return fmt.Errorf("migrate schema: version %d records compatibility version %d, not %d", s.Version, s.Compat, last.Compat)
	}
	return s.Check()
}
