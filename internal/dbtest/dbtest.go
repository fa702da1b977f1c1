// Package dbtest gives tests real databases: one per dialect, found through
// environment variables, each test isolated by its own table prefix.
//
//	TANDEM_TEST_POSTGRES   a postgres:// URL (pgx)
//	TANDEM_TEST_MYSQL      a go-sql-driver/mysql DSN (MySQL or MariaDB)
//	TANDEM_TEST_SQLSERVER  a sqlserver:// URL (go-mssqldb)
//	TANDEM_TEST_ORACLE     an oracle:// URL (go-ora)
//	TANDEM_TEST_REQUIRE_DB=1  a missing PostgreSQL or MySQL variable fails
//	                          the test instead of skipping it
//
// Without a variable, a dialect's tests start a container when a Docker
// engine answers (see containers.go), and otherwise skip with a message
// saying how to run them. The README's test command sets all of this up.
package dbtest

import (
	"context"
	"crypto/rand"
	"database/sql"
	"encoding/hex"
	"fmt"
	"os"
	"sync"
	"testing"
	"time"

	"github.com/tandem-go/tandem/dialect"
	"github.com/tandem-go/tandem/dialect/mysql"
	"github.com/tandem-go/tandem/dialect/oracle"
	"github.com/tandem-go/tandem/dialect/postgres"
	"github.com/tandem-go/tandem/dialect/sqlserver"
	"github.com/tandem-go/tandem/internal/sqldialect"
)

// Backend describes one dialect's test database.
type Backend struct {
	Name     string // "postgres", "mysql", "sqlserver", "oracle"
	Env      string // the variable holding its DSN
	Driver   string // the database/sql driver name
	Dialect  dialect.Dialect
	Required bool // with TANDEM_TEST_REQUIRE_DB=1, missing is a failure
}

// Backends lists every dialect, in the order tests run them.
var Backends = []Backend{
	{Name: "postgres", Env: "TANDEM_TEST_POSTGRES", Driver: "pgx", Dialect: postgres.Dialect, Required: true},
	{Name: "mysql", Env: "TANDEM_TEST_MYSQL", Driver: "mysql", Dialect: mysql.Dialect, Required: true},
	{Name: "sqlserver", Env: "TANDEM_TEST_SQLSERVER", Driver: "sqlserver", Dialect: sqlserver.Dialect},
	{Name: "oracle", Env: "TANDEM_TEST_ORACLE", Driver: "oracle", Dialect: oracle.Dialect},
}

// DB is one test's database: a pool, the dialect, and a table prefix no
// other test uses.
type DB struct {
	Backend
	DSN    string
	DB     *sql.DB
	Prefix string
}

var (
	dsnMu    sync.Mutex
	dsnCache = map[string]dsnResult{}
	poolMu   sync.Mutex
	pools    = map[string]*sql.DB{}
)

type dsnResult struct {
	dsn, why string
}

// dsn finds the backend's DSN: its variable, else a container, else "" and
// why not.
func (b Backend) dsn() (string, string) {
	dsnMu.Lock()
	defer dsnMu.Unlock()
	if r, ok := dsnCache[b.Name]; ok {
		return r.dsn, r.why
	}
	r := dsnResult{dsn: os.Getenv(b.Env)}
	if r.dsn == "" {
		r.dsn, r.why = startContainer(b.Name)
	}
	dsnCache[b.Name] = r
	return r.dsn, r.why
}

// Open returns the backend's shared pool and a fresh table prefix for t, or
// skips t (fails it, when required) if the backend is unavailable. Tables
// with the prefix are dropped when t ends.
func Open(t testing.TB, b Backend) *DB {
	t.Helper()
	dsn, why := b.dsn()
	if dsn == "" {
		hint := "see README: the test command starts one"
		if !b.Required {
			hint = "a server of your own; the test command starts only PostgreSQL and MariaDB"
		}
		msg := fmt.Sprintf("%s tests need a database: set %s (%s), or run a Docker engine (%s)",
			b.Name, b.Env, hint, why)
		if b.Required && os.Getenv("TANDEM_TEST_REQUIRE_DB") == "1" {
			t.Fatalf("TANDEM_TEST_REQUIRE_DB=1: %s", msg)
		}
		t.Skip(msg)
	}
	poolMu.Lock()
	db := pools[b.Name]
	if db == nil {
		var err error
		db, err = sql.Open(b.Driver, dsn)
		if err == nil {
			db.SetMaxOpenConns(64)
			db.SetMaxIdleConns(64)
			ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
			err = db.PingContext(ctx)
			cancel()
		}
		if err != nil {
			poolMu.Unlock()
			t.Fatalf("%s: connect %s: %v", b.Name, b.Env, err)
		}
		pools[b.Name] = db
	}
	poolMu.Unlock()
	d := &DB{Backend: b, DSN: dsn, DB: db, Prefix: NewPrefix()}
	t.Cleanup(func() { d.drop(t) })
	return d
}

// NewPool opens another pool on the same database, as a separate node would
// have; it is closed when t ends.
func (d *DB) NewPool(t testing.TB) *sql.DB {
	t.Helper()
	db, err := sql.Open(d.Driver, d.DSN)
	if err != nil {
		t.Fatalf("%s: open pool: %v", d.Name, err)
	}
	db.SetMaxOpenConns(16)
	db.SetMaxIdleConns(16)
	t.Cleanup(func() { db.Close() })
	return db
}

// NewPrefix returns a table prefix no other test of this run uses:
// "t" + 10 hex digits + "_".
func NewPrefix() string {
	var b [5]byte
	_, _ = rand.Read(b[:])
	return "t" + hex.EncodeToString(b[:]) + "_"
}

func (d *DB) drop(t testing.TB) {
	if os.Getenv("TANDEM_TEST_KEEP") == "1" {
		return
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	tables, err := sqldialect.NewTables("Prefix", d.Prefix)
	if err != nil {
		t.Fatal(err)
	}
	for _, stmt := range d.Dialect.DropSchema(tables) {
		if _, err := d.DB.ExecContext(ctx, stmt); err != nil {
			t.Logf("%s: %s: %v", d.Name, stmt, err)
		}
	}
}

// Pool opens a pool on dsn (for instance a Proxy's), closed when t ends.
func (d *DB) Pool(t testing.TB, dsn string) *sql.DB {
	t.Helper()
	db, err := sql.Open(d.Driver, dsn)
	if err != nil {
		t.Fatalf("%s: open pool: %v", d.Name, err)
	}
	t.Cleanup(func() { db.Close() })
	return db
}
