package main

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"io/fs"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"time"

	mysqldriver "github.com/go-sql-driver/mysql"
	"github.com/jackc/pgx/v5"
	_ "github.com/jackc/pgx/v5/stdlib"  // driver "pgx"
	_ "github.com/microsoft/go-mssqldb" // driver "sqlserver"
	_ "github.com/sijms/go-ora/v2"      // driver "oracle"

	"github.com/tandem-go/tandem/datastore"
	"github.com/tandem-go/tandem/dialect"
	"github.com/tandem-go/tandem/dialect/mysql"
	"github.com/tandem-go/tandem/dialect/oracle"
	"github.com/tandem-go/tandem/dialect/postgres"
	"github.com/tandem-go/tandem/dialect/sqlserver"
	"github.com/tandem-go/tandem/internal/sqldialect"
	"github.com/tandem-go/tandem/journal"
	"github.com/tandem-go/tandem/lock"
	"github.com/tandem-go/tandem/revision"
)

// cliNode is the node id the command acts as: the writer of its journal
// handle (it appends nothing) and the owner of the leases it takes.
const cliNode = "tandem-cli"

// store is a connection to a cluster's shared store: a database or a
// folder.
type store struct {
	dir    string // a folder, or
	db     *sql.DB
	d      dialect.Dialect
	prefix string
	tables sqldialect.Tables

	j    journal.Journal
	revs revision.Store
	ls   lock.Store
}

func (s *store) kind() string {
	if s.db == nil {
		return "folder"
	}
	return s.d.Name()
}

// connect opens the store the global flags name, without touching it.
func (e *env) connect(ctx context.Context) (*store, error) {
	g := *e.g
	if g.dsn == "" && g.dir == "" { // a flag beats the environment
		g.dsn, g.dir = e.getenv("TANDEM_DSN"), e.getenv("TANDEM_DIR")
	}
	switch {
	case g.dsn != "" && g.dir != "":
		return nil, usageError("give --dsn or --dir, not both")
	case g.dsn == "" && g.dir == "":
		return nil, usageError("no store: give --dsn URL or --dir PATH (or set TANDEM_DSN or TANDEM_DIR)")
	case g.dir != "":
		return &store{dir: g.dir}, nil
	}
	tables, err := sqldialect.NewTables("--prefix", g.prefix)
	if err != nil {
		return nil, usageError("%v", err)
	}
	password, havePassword := "", false
	if g.passwordEnv != "" {
		password = e.getenv(g.passwordEnv)
		if password == "" {
			return nil, usageError("--password-env %s: the variable is empty or not set", g.passwordEnv)
		}
		havePassword = true
	} else if p := e.getenv("TANDEM_PASSWORD"); p != "" {
		password, havePassword = p, true
	}
	driver, dsn, d, err := parseDSN(g.dsn, password, havePassword)
	if err != nil {
		return nil, usageError("--dsn: %v", err)
	}
	if driver == "pgx" { // pgx parses only when it connects
		if _, err := pgx.ParseConfig(dsn); err != nil {
			return nil, usageError("--dsn: %v", err) // pgx masks the password
		}
	}
	db, err := sql.Open(driver, dsn)
	if err != nil {
		// The driver could not parse its connection string.
		return nil, usageError("--dsn: %s: %v", d.Name(), err)
	}
	db.SetMaxOpenConns(8)
	pctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	if err := db.PingContext(pctx); err != nil {
		db.Close()
		return nil, fmt.Errorf("connect to %s: %w", d.Name(), err)
	}
	return &store{db: db, d: d, prefix: g.prefix, tables: tables}, nil
}

// parseDSN turns the --dsn URL into a driver name and the driver's DSN,
// with password set in it when havePassword.
func parseDSN(raw, password string, havePassword bool) (driver, dsn string, d dialect.Dialect, err error) {
	scheme, _, ok := strings.Cut(raw, "://")
	if !ok {
		// go-sql-driver/mysql's own form: user:pass@tcp(host:port)/db?params
		cfg, err := mysqldriver.ParseDSN(raw)
		if err != nil {
			return "", "", nil, fmt.Errorf("not a URL (postgres://, mysql://, sqlserver://, oracle://) nor a MySQL DSN: %v", err)
		}
		if havePassword {
			cfg.Passwd = password
		}
		cfg.ParseTime = true
		return "mysql", cfg.FormatDSN(), mysql.Dialect, nil
	}
	u, err := url.Parse(raw)
	if err != nil {
		return "", "", nil, errors.New("not a valid URL") // url's error would print the password
	}
	if havePassword {
		user := ""
		if u.User != nil {
			user = u.User.Username()
		}
		u.User = url.UserPassword(user, password)
	}
	switch strings.ToLower(scheme) {
	case "postgres", "postgresql":
		return "pgx", u.String(), postgres.Dialect, nil
	case "sqlserver":
		return "sqlserver", u.String(), sqlserver.Dialect, nil
	case "oracle":
		return "oracle", u.String(), oracle.Dialect, nil
	case "mysql":
		host := u.Host
		if u.Port() == "" {
			host += ":3306"
		}
		base := "tcp(" + host + ")/" + strings.TrimPrefix(u.Path, "/")
		if u.RawQuery != "" {
			base += "?" + u.RawQuery
		}
		cfg, err := mysqldriver.ParseDSN(base)
		if err != nil {
			return "", "", nil, fmt.Errorf("mysql URL: %v", err)
		}
		if u.User != nil {
			cfg.User = u.User.Username()
			cfg.Passwd, _ = u.User.Password()
		}
		cfg.ParseTime = true
		return "mysql", cfg.FormatDSN(), mysql.Dialect, nil
	}
	return "", "", nil, fmt.Errorf("unknown scheme %q: use postgres://, postgresql://, mysql://, sqlserver:// or oracle://", scheme)
}

// close releases what open opened.
func (s *store) close() {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if s.j != nil {
		_ = s.j.Close(ctx)
	}
	if s.db != nil {
		_ = s.db.Close()
	}
}

// folderParts are tandem's subfolders of a shared folder.
var folderParts = []string{"journal", "nodes", "locks", "blobs"}

// check makes sure there is a tandem schema (or folder) at this release's
// version, so that opening the stores creates and migrates nothing.
func (s *store) check(ctx context.Context) error {
	if s.db == nil {
		if _, err := os.Stat(filepath.Join(s.dir, "journal", "meta")); err != nil {
			if errors.Is(err, fs.ErrNotExist) {
				return withCode(exitNotFound, "no tandem journal in folder %s (run tandem schema migrate to create one)", s.dir)
			}
			return err
		}
		return nil
	}
	st, err := s.readSchema(ctx)
	if err != nil {
		return err
	}
	if err := st.Check(); err != nil {
		return err
	}
	if st.Version < dialect.SchemaVersion {
		return fmt.Errorf("the schema is at version %d, this release needs %d: run tandem schema migrate (nodes of older releases keep running)", st.Version, dialect.SchemaVersion)
	}
	return nil
}

// open checks the schema and opens the journal, positions and leases.
func (s *store) open(ctx context.Context) error {
	if err := s.check(ctx); err != nil {
		return err
	}
	var err error
	if s.db == nil {
		if s.j, err = journal.OpenFile(ctx, journal.FileConfig{Dir: s.dir, NodeID: cliNode}); err != nil {
			return err
		}
		if s.revs, err = revision.OpenFile(ctx, revision.FileConfig{Dir: s.dir}); err != nil {
			return err
		}
		s.ls, err = lock.OpenFile(ctx, lock.FileConfig{Dir: s.dir})
		return err
	}
	if s.j, err = journal.OpenSQL(ctx, s.db, s.d, journal.SQLConfig{NodeID: cliNode, Prefix: s.prefix}); err != nil {
		return err
	}
	if s.revs, err = revision.OpenSQL(ctx, s.db, s.d, revision.SQLConfig{Prefix: s.prefix}); err != nil {
		return err
	}
	s.ls, err = lock.OpenSQL(ctx, s.db, s.d, lock.SQLConfig{Prefix: s.prefix})
	return err
}

// blobs opens the data store.
func (s *store) blobs(ctx context.Context) (datastore.Store, error) {
	if err := s.check(ctx); err != nil {
		return nil, err
	}
	if s.db == nil {
		if _, err := os.Stat(filepath.Join(s.dir, "blobs")); err != nil {
			return nil, withCode(exitNotFound, "no data store in folder %s", s.dir)
		}
		return datastore.OpenFile(ctx, datastore.FileConfig{Dir: s.dir})
	}
	return datastore.OpenSQL(ctx, s.db, s.d, datastore.SQLConfig{Prefix: s.prefix})
}

// leases opens only the lease store.
func (s *store) leases(ctx context.Context) (lock.Store, error) {
	if s.db == nil {
		return lock.OpenFile(ctx, lock.FileConfig{Dir: s.dir})
	}
	return lock.OpenSQL(ctx, s.db, s.d, lock.SQLConfig{Prefix: s.prefix})
}

// openStore connects and opens the journal, positions and leases.
func (e *env) openStore(ctx context.Context) (*store, error) {
	s, err := e.connect(ctx)
	if err != nil {
		return nil, err
	}
	if err := s.open(ctx); err != nil {
		s.close()
		return nil, err
	}
	return s, nil
}
