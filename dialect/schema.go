package dialect

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

// StoredSchemaVersion reads the schema version from the meta table of t.
// The error is the driver's, untranslated.
func StoredSchemaVersion(ctx context.Context, db Querier, t Tables) (int, error) {
	var v int
	err := db.QueryRowContext(ctx, `SELECT schema_version FROM `+t.Meta+` WHERE id = 1`).Scan(&v)
	return v, err
}

// CheckSchemaVersion fails with ErrSchemaTooNew when a database holds a
// schema version newer than this release's SchemaVersion.
func CheckSchemaVersion(v int) error {
	if v > SchemaVersion {
		return fmt.Errorf("%w: the database has version %d, this release knows %d", ErrSchemaTooNew, v, SchemaVersion)
	}
	return nil
}
