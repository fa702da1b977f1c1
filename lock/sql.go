package lock

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"time"

	"github.com/tandem-go/tandem/dialect"
	"github.com/tandem-go/tandem/internal/sqldialect"
)

// SQL is the Store on the locks table of a SQL database. Expiry is
// computed by the database from its own clock (expires_at = now + TTL, and
// a lease is free when expires_at <= now), so the clocks of the nodes never
// meet. It is safe for concurrent use and holds nothing of its own; db is
// the caller's.
type SQL struct {
	db *sql.DB
	d  dialect.Dialect
	q  sqldialect.LockQueries
}

var (
	_ Store    = (*SQL)(nil)
	_ Fencer   = (*SQL)(nil)
	_ TxFencer = (*SQL)(nil)
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
		return nil, fmt.Errorf("open lock store: %w: db and dialect are required", ErrInvalidArgument)
	}
	if cfg.Prefix == "" {
		cfg.Prefix = dialect.DefaultPrefix
	}
	t, err := sqldialect.NewTables("Prefix", cfg.Prefix)
	if err != nil {
		return nil, fmt.Errorf("open lock store: %w", err)
	}
	if err := sqldialect.Migrate(ctx, db, d, t, sqldialect.NewEpoch()); err != nil {
		return nil, fmt.Errorf("open lock store: create schema: %w", err)
	}
	return &SQL{db: db, d: d, q: d.LockQueries(t)}, nil
}

// TryAcquire implements Store.
func (s *SQL) TryAcquire(ctx context.Context, name string, owner Owner, ttl time.Duration) (int64, bool, error) {
	if err := checkLease(name, owner, ttl); err != nil {
		return 0, false, fmt.Errorf("acquire lease: %w", err)
	}
	for seeded := false; ; seeded = true {
		token, ok, missing, err := s.tryAcquire(ctx, name, owner, ttl)
		if err != nil || !missing || seeded {
			return token, ok, err
		}
		// First use of the name: create its row (unowned, expired),
		// then try again.
		if _, err := s.db.ExecContext(ctx, s.q.Seed, name); err != nil {
			if err = s.d.Translate(err); !errors.Is(err, dialect.ErrUniqueViolation) {
				return 0, false, fmt.Errorf("acquire lease %q: %w", name, err)
			}
		}
	}
}

// tryAcquire takes the row of name if it is expired, in one transaction
// that also reads the new token. missing reports that name has no row.
func (s *SQL) tryAcquire(ctx context.Context, name string, owner Owner, ttl time.Duration) (token int64, ok, missing bool, err error) {
	tx, err := s.db.BeginTx(ctx, nil)
	if err != nil {
		return 0, false, false, fmt.Errorf("acquire lease %q: %w", name, s.d.Translate(err))
	}
	defer tx.Rollback()
	res, err := tx.ExecContext(ctx, s.q.Acquire, owner.NodeID, owner.Instance, ttl.Milliseconds(), name)
	if err != nil {
		return 0, false, false, fmt.Errorf("acquire lease %q: %w", name, s.d.Translate(err))
	}
	n, err := res.RowsAffected()
	if err != nil {
		return 0, false, false, fmt.Errorf("acquire lease %q: %w", name, s.d.Translate(err))
	}
	err = tx.QueryRowContext(ctx, s.q.Token, name).Scan(&token)
	if errors.Is(err, sql.ErrNoRows) {
		return 0, false, true, nil
	}
	if err != nil {
		return 0, false, false, fmt.Errorf("acquire lease %q: %w", name, s.d.Translate(err))
	}
	if n != 1 {
		return 0, false, false, nil
	}
	if err := tx.Commit(); err != nil {
		return 0, false, false, fmt.Errorf("acquire lease %q: %w", name, s.d.Translate(err))
	}
	return token, true, false, nil
}

// Renew implements Store.
func (s *SQL) Renew(ctx context.Context, name string, owner Owner, token int64, ttl time.Duration) (bool, error) {
	if err := checkLease(name, owner, ttl); err != nil {
		return false, fmt.Errorf("renew lease: %w", err)
	}
	res, err := s.db.ExecContext(ctx, s.q.Renew, ttl.Milliseconds(), name, owner.NodeID, owner.Instance, token)
	if err != nil {
		return false, fmt.Errorf("renew lease %q: %w", name, s.d.Translate(err))
	}
	n, err := res.RowsAffected()
	return n == 1, err
}

// Release implements Store.
func (s *SQL) Release(ctx context.Context, name string, owner Owner, token int64) error {
	if err := checkHolder(name, owner); err != nil {
		return fmt.Errorf("release lease: %w", err)
	}
	if _, err := s.db.ExecContext(ctx, s.q.Release, name, owner.NodeID, owner.Instance, token); err != nil {
		return fmt.Errorf("release lease %q: %w", name, s.d.Translate(err))
	}
	return nil
}

// List implements Store.
func (s *SQL) List(ctx context.Context) ([]Info, error) {
	rows, err := s.db.QueryContext(ctx, s.q.List)
	if err != nil {
		return nil, fmt.Errorf("list leases: %w", s.d.Translate(err))
	}
	defer rows.Close()
	var out []Info
	for rows.Next() {
		var in Info
		var node, instance sql.NullString
		var acquired, renewed, expires sqldialect.Time
		var held int
		if err := rows.Scan(&in.Name, &node, &instance, &in.Token, &acquired, &renewed, &expires, &held); err != nil {
			return nil, fmt.Errorf("list leases: %w", s.d.Translate(err))
		}
		in.Owner = Owner{NodeID: node.String, Instance: instance.String}
		in.Acquired, in.Renewed, in.Expires, in.Held = acquired.T, renewed.T, expires.T, held == 1
		out = append(out, in)
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("list leases: %w", s.d.Translate(err))
	}
	return out, nil
}

// Fence implements Fencer with FenceTx, for work outside the database.
func (s *SQL) Fence(ctx context.Context, name string, owner Owner, token int64, fn func(ctx context.Context) error) error {
	return s.FenceTx(ctx, name, owner, token, func(ctx context.Context, _ *sql.Tx) error { return fn(ctx) })
}

// FenceTx runs fn in a transaction that first locks the lease's row, and
// only if the lease (name, owner, token) is still current by the
// database's clock; otherwise it returns an error matching ErrFenced
// without calling fn. Statements fn runs on tx commit only together with
// that check, and nobody can take the lease over until tx ends: the
// database itself rejects a stale holder. fn's error rolls tx back.
//
// The row lock holds off the holder's own renewals as well, until tx ends:
// a transaction that outlasts the holder's deadline costs it the lease
// (see the package doc, Fencing). Keep each one short.
func (s *SQL) FenceTx(ctx context.Context, name string, owner Owner, token int64, fn func(ctx context.Context, tx *sql.Tx) error) error {
	if err := checkHolder(name, owner); err != nil {
		return fmt.Errorf("fenced: %w", err)
	}
	tx, err := s.db.BeginTx(ctx, nil)
	if err != nil {
		return fmt.Errorf("fenced %q: %w", name, s.d.Translate(err))
	}
	defer tx.Rollback()
	var current int64
	err = tx.QueryRowContext(ctx, s.q.Fence, name, owner.NodeID, owner.Instance, token).Scan(&current)
	if errors.Is(err, sql.ErrNoRows) {
		return fmt.Errorf("fenced %q token %d: %w", name, token, ErrFenced)
	}
	if err != nil {
		return fmt.Errorf("fenced %q: %w", name, s.d.Translate(err))
	}
	if err := fn(ctx, tx); err != nil {
		return err
	}
	if err := tx.Commit(); err != nil {
		return fmt.Errorf("fenced %q: commit: %w", name, s.d.Translate(err))
	}
	return nil
}
