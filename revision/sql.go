package revision

import (
	"context"
	"database/sql"
	"errors"
	"fmt"

	"github.com/tandem-go/tandem/dialect"
	"github.com/tandem-go/tandem/ident"
	"github.com/tandem-go/tandem/internal/sqldialect"
)

// SQL is the Store on the local_revisions table. It is safe for concurrent
// use and holds no resources of its own; db is the caller's.
type SQL struct {
	db *sql.DB
	d  dialect.Dialect
	q  sqldialect.Queries
}

var (
	_ Store   = (*SQL)(nil)
	_ Evicter = (*SQL)(nil)
)

// SQLConfig configures a SQL store. The zero value of each field means its
// default.
type SQLConfig struct {
	// Prefix is prepended to every table name. Defaults to
	// dialect.DefaultPrefix ("tandem_"); see ident.Prefix.
	Prefix string
}

// OpenSQL opens the store in db, in the tables with cfg.Prefix, creating
// the schema when it does not exist.
func OpenSQL(ctx context.Context, db *sql.DB, d dialect.Dialect, cfg SQLConfig) (*SQL, error) {
	if db == nil || d == nil {
		return nil, fmt.Errorf("open revision store: %w: db and dialect are required", ErrInvalidArgument)
	}
	if cfg.Prefix == "" {
		cfg.Prefix = dialect.DefaultPrefix
	}
	t, err := sqldialect.NewTables("Prefix", cfg.Prefix)
	if err != nil {
		return nil, fmt.Errorf("open revision store: %w", err)
	}
	if err := sqldialect.Migrate(ctx, db, d, t, sqldialect.NewEpoch()); err != nil {
		return nil, fmt.Errorf("open revision store: create schema: %w", err)
	}
	return &SQL{db: db, d: d, q: d.Queries(t)}, nil
}

// Load implements Store.
func (s *SQL) Load(ctx context.Context, nodeID string) (Position, error) {
	if err := ident.NodeID("nodeID", nodeID); err != nil {
		return Position{}, fmt.Errorf("load revision: %w", err)
	}
	p := Position{NodeID: nodeID}
	var ts, evicted sqldialect.Time
	var epoch sql.NullString
	err := s.db.QueryRowContext(ctx, s.q.LoadPosition, nodeID).Scan(&p.Revision, &epoch, &ts, &evicted)
	if errors.Is(err, sql.ErrNoRows) {
		return Position{}, fmt.Errorf("load revision of %q: %w", nodeID, ErrNotFound)
	}
	if err != nil {
		return Position{}, fmt.Errorf("load revision of %q: %w", nodeID, s.d.Translate(err))
	}
	p.Epoch, p.Updated, p.Evicted = epoch.String, ts.T, !evicted.T.IsZero()
	return p, nil
}

// Save implements Store.
func (s *SQL) Save(ctx context.Context, nodeID string, rev int64, epoch string) error {
	return s.save(ctx, s.db, nodeID, rev, epoch)
}

// Execer is a *sql.DB, a *sql.Conn or a *sql.Tx of the store's database.
type Execer interface {
	ExecContext(ctx context.Context, query string, args ...any) (sql.Result, error)
}

// SaveOn is Save through db, a connection (or pool) of the store's
// database that the caller chose: a cluster node saves its position on its
// journal's listening connection (journal.SQL.WithSession) rather than
// take another one from the server.
func (s *SQL) SaveOn(ctx context.Context, db Execer, nodeID string, rev int64, epoch string) error {
	if db == nil {
		return fmt.Errorf("save revision: %w: db is nil", ErrInvalidArgument)
	}
	return s.save(ctx, db, nodeID, rev, epoch)
}

func (s *SQL) save(ctx context.Context, db Execer, nodeID string, rev int64, epoch string) error {
	if err := checkSave(nodeID, rev, epoch); err != nil {
		return fmt.Errorf("save revision: %w", err)
	}
	if _, err := db.ExecContext(ctx, s.q.SavePosition, nodeID, rev, epoch); err != nil {
		return fmt.Errorf("save revision of %q: %w", nodeID, s.d.Translate(err))
	}
	return nil
}

func checkSave(nodeID string, rev int64, epoch string) error {
	if err := ident.NodeID("nodeID", nodeID); err != nil {
		return err
	}
	if rev < 0 {
		return fmt.Errorf("%w: revision is %d, must be >= 0", ErrInvalidArgument, rev)
	}
	if err := checkEpoch(epoch); err != nil {
		return fmt.Errorf("%w: %v", ErrInvalidArgument, err)
	}
	return nil
}

// List implements Store.
func (s *SQL) List(ctx context.Context) ([]Position, error) {
	rows, err := s.db.QueryContext(ctx, s.q.ListPositions)
	if err != nil {
		return nil, fmt.Errorf("list revisions: %w", s.d.Translate(err))
	}
	defer rows.Close()
	var out []Position
	for rows.Next() {
		var p Position
		var ts, evicted sqldialect.Time
		var epoch sql.NullString
		if err := rows.Scan(&p.NodeID, &p.Revision, &epoch, &ts, &evicted); err != nil {
			return nil, fmt.Errorf("list revisions: %w", s.d.Translate(err))
		}
		p.Epoch, p.Updated, p.Evicted = epoch.String, ts.T, !evicted.T.IsZero()
		out = append(out, p)
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("list revisions: %w", s.d.Translate(err))
	}
	return out, nil
}

// Delete implements Store.
func (s *SQL) Delete(ctx context.Context, nodeID string) error {
	if err := ident.NodeID("nodeID", nodeID); err != nil {
		return fmt.Errorf("delete revision: %w", err)
	}
	if _, err := s.db.ExecContext(ctx, s.q.DeletePosition, nodeID); err != nil {
		return fmt.Errorf("delete revision of %q: %w", nodeID, s.d.Translate(err))
	}
	return nil
}

// Evict implements Evicter: one conditional UPDATE.
func (s *SQL) Evict(ctx context.Context, nodeID string, rev int64) (bool, error) {
	return s.markOne(ctx, "evict", s.q.EvictPosition, nodeID, rev)
}

// Unevict implements Evicter: one conditional UPDATE, so a Save of the
// node's is either before it (and it changes nothing) or after it.
func (s *SQL) Unevict(ctx context.Context, nodeID string, rev int64) (bool, error) {
	return s.markOne(ctx, "unevict", s.q.UnevictPosition, nodeID, rev)
}

// markOne runs query, a conditional UPDATE of nodeID's row at rev
// (EvictPosition, UnevictPosition), and reports whether it changed the
// row; verb names it in errors.
func (s *SQL) markOne(ctx context.Context, verb, query, nodeID string, rev int64) (bool, error) {
	if err := ident.NodeID("nodeID", nodeID); err != nil {
		return false, fmt.Errorf("%s revision: %w", verb, err)
	}
	res, err := s.db.ExecContext(ctx, query, nodeID, rev)
	if err != nil {
		return false, fmt.Errorf("%s revision of %q: %w", verb, nodeID, s.d.Translate(err))
	}
	n, err := res.RowsAffected()
	if err != nil {
		return false, fmt.Errorf("%s revision of %q: %w", verb, nodeID, s.d.Translate(err))
	}
	return n == 1, nil
}

// Copy implements Store. It is one INSERT … SELECT, so it is atomic.
func (s *SQL) Copy(ctx context.Context, from, to string) error {
	if err := ident.NodeID("from", from); err != nil {
		return fmt.Errorf("copy revision: %w", err)
	}
	if err := ident.NodeID("to", to); err != nil {
		return fmt.Errorf("copy revision: %w", err)
	}
	res, err := s.db.ExecContext(ctx, s.q.CopyPosition, to, from)
	if err != nil {
		err = s.d.Translate(err)
		if errors.Is(err, dialect.ErrUniqueViolation) {
			return fmt.Errorf("copy revision %q to %q: %w", from, to, ErrExists)
		}
		return fmt.Errorf("copy revision %q to %q: %w", from, to, err)
	}
	if n, err := res.RowsAffected(); err == nil && n == 0 {
		return fmt.Errorf("copy revision %q to %q: %q: %w", from, to, from, ErrNotFound)
	}
	return nil
}
