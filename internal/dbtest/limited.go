package dbtest

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"net/url"
	"strings"
	"testing"
	"time"
)

// Account is a database account of its own with a connection limit: a
// small max_connections for one test, which leaves the server and the
// other tests that share it alone. The server refuses its connections past
// the limit as it would refuse anyone's past max_connections (PostgreSQL
// SQLSTATE 53300, MariaDB and MySQL error 1203), so dialect.Translate
// classifies them as dialect.ErrTooManyConnections.
type Account struct {
	db    *DB
	Name  string
	Limit int
	DSN   string // d's DSN with the account's credentials
}

// LimitedAccount creates an account that may hold at most limit
// connections at once, with the rights a node needs on d's database
// (creating tables there, and on MySQL routines), and drops it when t
// ends. It skips t, saying why, when d's account may not create accounts
// (PostgreSQL: a superuser or CREATEROLE; MySQL: CREATE USER, and ALL on
// the database WITH GRANT OPTION, which scripts/dbenv.sh grants).
func (d *DB) LimitedAccount(t testing.TB, limit int) *Account {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	var b [8]byte
	_, _ = rand.Read(b[:])
	name := "tl" + hex.EncodeToString(b[:4])
	pw := hex.EncodeToString(b[4:]) + hex.EncodeToString(b[:4])
	a := &Account{db: d, Name: name, Limit: limit}
	switch d.Name {
	case "postgres":
		var super, createRole bool
		if err := d.DB.QueryRowContext(ctx, `SELECT rolsuper, rolcreaterole FROM pg_roles WHERE rolname = current_user`).Scan(&super, &createRole); err != nil {
			t.Fatalf("postgres: read the test account's rights: %v", err)
		}
		if !super && !createRole {
			t.Skip("postgres: the test account may not create roles (needs CREATEROLE or superuser), so a connection limit cannot be emulated with CONNECTION LIMIT")
		}
		// name and pw are hex: nothing to quote.
		for _, stmt := range []string{
			fmt.Sprintf(`CREATE ROLE %s LOGIN PASSWORD '%s' CONNECTION LIMIT %d`, name, pw, limit),
			`GRANT USAGE, CREATE ON SCHEMA public TO ` + name,
		} {
			if _, err := d.DB.ExecContext(ctx, stmt); err != nil {
				t.Fatalf("postgres: %s: %v", stmt, err)
			}
		}
		u, err := url.Parse(d.DSN)
		if err != nil {
			t.Fatalf("postgres: parse %s: %v", d.Env, err)
		}
		u.User = url.UserPassword(name, pw)
		a.DSN = u.String()
		t.Cleanup(func() {
			ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
			defer cancel()
			for _, stmt := range []string{
				`SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE usename = '` + name + `'`,
				`DROP OWNED BY ` + name,
				`DROP ROLE ` + name,
			} {
				if _, err := d.DB.ExecContext(ctx, stmt); err != nil {
					t.Logf("postgres: %s: %v", stmt, err)
				}
			}
		})
	case "mysql":
		at := strings.LastIndex(d.DSN, "@")
		slash := strings.Index(d.DSN[at:], ")/")
		if at < 0 || slash < 0 {
			t.Fatalf("mysql: cannot find the account and database in %s", d.Env)
		}
		dbName, _, _ := strings.Cut(d.DSN[at+slash+2:], "?")
		if _, err := d.DB.ExecContext(ctx, fmt.Sprintf(`CREATE USER '%s'@'%%' IDENTIFIED BY '%s' WITH MAX_USER_CONNECTIONS %d`, name, pw, limit)); err != nil {
			t.Skipf("mysql: the test account may not create accounts (%v): grant it CREATE USER ON *.* and ALL ON %s.* WITH GRANT OPTION, as scripts/dbenv.sh does, to emulate a connection limit with MAX_USER_CONNECTIONS", err, dbName)
		}
		t.Cleanup(func() {
			ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
			defer cancel()
			if _, err := d.DB.ExecContext(ctx, `DROP USER '`+name+`'@'%'`); err != nil {
				t.Logf("mysql: drop user %s: %v", name, err)
			}
		})
		if _, err := d.DB.ExecContext(ctx, "GRANT ALL PRIVILEGES ON `"+dbName+"`.* TO '"+name+"'@'%'"); err != nil {
			t.Skipf("mysql: the test account may not grant rights on %s (%v): grant it ALL ON %s.* WITH GRANT OPTION, as scripts/dbenv.sh does", dbName, err, dbName)
		}
		a.DSN = name + ":" + pw + d.DSN[at:]
	default:
		t.Skipf("%s: no per-account connection limit in these tests", d.Name)
	}
	return a
}

// Sessions returns how many connections the account holds now, as the
// server counts them. PostgreSQL only (MySQL shows other accounts'
// sessions only to holders of PROCESS).
func (a *Account) Sessions(ctx context.Context) (int, error) {
	if a.db.Name != "postgres" {
		return 0, fmt.Errorf("%s: Sessions is for PostgreSQL", a.db.Name)
	}
	var n int
	err := a.db.DB.QueryRowContext(ctx, `SELECT count(*) FROM pg_stat_activity WHERE usename = $1 AND backend_type = 'client backend'`, a.Name).Scan(&n)
	return n, err
}

// HogAll takes every connection the account can open, up to max, and
// keeps doing so until release is called (or t ends): a connection that
// another client of the account closes meanwhile is taken at once (it
// tries again every millisecond or so), as a crowd of other clients would.
// It returns once it holds what it could take at first, and how many that
// was.
func (a *Account) HogAll(t testing.TB, max int) (took int, release func()) {
	t.Helper()
	pool := a.db.Pool(t, a.DSN)
	pool.SetMaxIdleConns(0)
	ctx, cancel := context.WithCancel(context.Background())
	var conns []interface{ Close() error }
	grab := func() bool {
		if len(conns) >= max {
			return false
		}
		c, err := pool.Conn(ctx)
		if err != nil {
			return false
		}
		conns = append(conns, c)
		return true
	}
	for grab() {
	}
	took = len(conns)
	done := make(chan struct{})
	go func() {
		defer close(done)
		for ctx.Err() == nil {
			if !grab() {
				select {
				case <-ctx.Done():
				case <-time.After(time.Millisecond):
				}
			}
		}
		for _, c := range conns {
			c.Close()
		}
	}()
	released := false
	release = func() {
		if released {
			return
		}
		released = true
		cancel()
		<-done
	}
	t.Cleanup(release)
	return took, release
}

// Hog takes n connections of the account and holds them until the
// returned function is called (or t ends): a stand-in for other clients
// using up the limit. It fails t if the server refuses one.
func (a *Account) Hog(t testing.TB, n int) (release func()) {
	t.Helper()
	pool := a.db.Pool(t, a.DSN)
	pool.SetMaxIdleConns(0)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	var conns []interface{ Close() error }
	for range n {
		c, err := pool.Conn(ctx)
		if err != nil {
			for _, c := range conns {
				c.Close()
			}
			t.Fatalf("%s: hog a connection of %s: %v", a.db.Name, a.Name, err)
		}
		conns = append(conns, c)
	}
	done := false
	release = func() {
		if done {
			return
		}
		done = true
		for _, c := range conns {
			c.Close()
		}
	}
	t.Cleanup(release)
	return release
}
