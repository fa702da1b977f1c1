package main

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"

	"github.com/tandem-go/tandem/cluster"
	"github.com/tandem-go/tandem/dialect"
	"github.com/tandem-go/tandem/dialect/mysql"
	"github.com/tandem-go/tandem/dialect/postgres"
)

// source is the application's own database: the truth the caches hold
// copies of.
type source interface {
	get(ctx context.Context, key string) (string, bool, error)
	put(ctx context.Context, key, value string) error
	count(ctx context.Context) (int, error)
	close()
}

// open opens the node and the application's data on the shared folder or
// the database o names.
func open(ctx context.Context, o options, cfg cluster.Config) (*cluster.Node, source, error) {
	if o.dsn == "" {
		data := filepath.Join(o.dir, "example-kv")
		if err := os.MkdirAll(data, 0o777); err != nil {
			return nil, nil, err
		}
		cfg.Dir = o.dir
		n, err := cluster.OpenDir(ctx, cfg)
		return n, dirSource(data), err
	}
	var (
		d               dialect.Dialect
		driver, dsn     string
		upsert, select_ string
	)
	table := o.prefix
	if table == "" {
		table = "tandem_"
	}
	table += "example_kv"
	switch {
	case strings.HasPrefix(o.dsn, "postgres://"), strings.HasPrefix(o.dsn, "postgresql://"):
		d, driver, dsn = postgres.Dialect, "pgx", o.dsn
		upsert = "INSERT INTO " + table + " (k, v) VALUES ($1, $2) ON CONFLICT (k) DO UPDATE SET v = EXCLUDED.v"
		select_ = "SELECT v FROM " + table + " WHERE k = $1"
	case strings.HasPrefix(o.dsn, "mysql://"):
		d, driver, dsn = mysql.Dialect, "mysql", strings.TrimPrefix(o.dsn, "mysql://")
		upsert = "INSERT INTO " + table + " (k, v) VALUES (?, ?) ON DUPLICATE KEY UPDATE v = VALUES(v)"
		select_ = "SELECT v FROM " + table + " WHERE k = ?"
	default:
		return nil, nil, fmt.Errorf("-dsn: want postgres://… or mysql://…")
	}
	db, err := sql.Open(driver, dsn)
	if err != nil {
		return nil, nil, err
	}
	// The node needs cluster.SQLConns(d, cfg); the handlers' loads need a
	// few more ("Connections" in package cluster).
	db.SetMaxOpenConns(cluster.SQLConns(d, cfg) + 8)
	if _, err := db.ExecContext(ctx, "CREATE TABLE IF NOT EXISTS "+table+" (k VARCHAR(100) PRIMARY KEY, v TEXT NOT NULL)"); err != nil {
		db.Close()
		return nil, nil, err
	}
	cfg.Prefix = o.prefix
	n, err := cluster.OpenSQL(ctx, db, d, cfg)
	if err != nil {
		db.Close()
		return nil, nil, err
	}
	return n, &sqlSource{db: db, table: table, upsert: upsert, select_: select_}, nil
}

// dirSource keeps one file per key in a shared folder.
type dirSource string

func (s dirSource) get(_ context.Context, key string) (string, bool, error) {
	b, err := os.ReadFile(filepath.Join(string(s), key))
	if errors.Is(err, os.ErrNotExist) {
		return "", false, nil
	}
	return string(b), err == nil, err
}

func (s dirSource) put(_ context.Context, key, value string) error {
	f, err := os.CreateTemp(string(s), ".tmp-")
	if err != nil {
		return err
	}
	defer os.Remove(f.Name())
	if _, err := f.WriteString(value); err != nil {
		f.Close()
		return err
	}
	if err := f.Sync(); err != nil {
		f.Close()
		return err
	}
	if err := f.Close(); err != nil {
		return err
	}
	return os.Rename(f.Name(), filepath.Join(string(s), key))
}

func (s dirSource) count(context.Context) (int, error) {
	es, err := os.ReadDir(string(s))
	n := 0
	for _, e := range es {
		if !strings.HasPrefix(e.Name(), ".") {
			n++
		}
	}
	return n, err
}

func (dirSource) close() {}

type sqlSource struct {
	db                     *sql.DB
	table, upsert, select_ string
}

func (s *sqlSource) get(ctx context.Context, key string) (string, bool, error) {
	var v string
	err := s.db.QueryRowContext(ctx, s.select_, key).Scan(&v)
	if errors.Is(err, sql.ErrNoRows) {
		return "", false, nil
	}
	return v, err == nil, err
}

func (s *sqlSource) put(ctx context.Context, key, value string) error {
	_, err := s.db.ExecContext(ctx, s.upsert, key, value)
	return err
}

func (s *sqlSource) count(ctx context.Context) (int, error) {
	var n int
	err := s.db.QueryRowContext(ctx, "SELECT COUNT(*) FROM "+s.table).Scan(&n)
	return n, err
}

func (s *sqlSource) close() { s.db.Close() }
