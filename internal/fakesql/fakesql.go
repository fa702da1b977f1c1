// Package fakesql is a database/sql driver that records the statements it
// receives and answers them from a handler: it lets the unit tests of a
// dialect check the exact statements and round trips of its code paths
// without a server. It is for tests only.
package fakesql

import (
	"context"
	"database/sql"
	"database/sql/driver"
	"errors"
	"io"
	"sync"
	"testing"
)

// Call is one statement the fake driver received.
type Call struct {
	Query string
	Args  []driver.NamedValue
}

// Reply is what the fake driver answers to a statement: rows (for queries)
// or an error.
type Reply struct {
	Rows [][]driver.Value
	Err  error
}

// Handler answers one statement.
type Handler func(query string, args []driver.NamedValue) Reply

// DB is the fake server behind a *sql.DB whose single connection records
// every statement and answers with the handler.
type DB struct {
	mu     sync.Mutex
	calls  []Call
	handle Handler
}

// New returns the fake and a *sql.DB on it, closed when t ends. A nil
// handle answers every statement with no rows and no error.
func New(t testing.TB, handle Handler) (*DB, *sql.DB) {
	t.Helper()
	f := &DB{handle: handle}
	db := sql.OpenDB(f)
	db.SetMaxOpenConns(1)
	t.Cleanup(func() { db.Close() })
	return f, db
}

func (f *DB) record(query string, args []driver.NamedValue) Reply {
	f.mu.Lock()
	f.calls = append(f.calls, Call{query, args})
	f.mu.Unlock()
	if f.handle == nil {
		return Reply{}
	}
	return f.handle(query, args)
}

// Calls returns the statements received so far.
func (f *DB) Calls() []Call {
	f.mu.Lock()
	defer f.mu.Unlock()
	return append([]Call(nil), f.calls...)
}

// Queries returns the text of the statements received so far.
func (f *DB) Queries() []string {
	f.mu.Lock()
	defer f.mu.Unlock()
	out := make([]string, len(f.calls))
	for i, c := range f.calls {
		out[i] = c.Query
	}
	return out
}

// Connect implements driver.Connector.
func (f *DB) Connect(context.Context) (driver.Conn, error) { return &fakeConn{f}, nil }

// Driver implements driver.Connector.
func (f *DB) Driver() driver.Driver { return fakeDriver{} }

type fakeDriver struct{}

func (fakeDriver) Open(string) (driver.Conn, error) {
	return nil, errors.New("fake: use the connector")
}

type fakeConn struct{ f *DB }

func (c *fakeConn) Prepare(string) (driver.Stmt, error) { return nil, errors.New("fake: no prepare") }
func (c *fakeConn) Close() error                        { return nil }
func (c *fakeConn) Begin() (driver.Tx, error)           { return nil, errors.New("fake: no transactions") }

// CheckNamedValue passes every argument through unchanged (sql.Out and
// driver-specific types included), as the real drivers do.
func (c *fakeConn) CheckNamedValue(*driver.NamedValue) error { return nil }

func (c *fakeConn) ExecContext(_ context.Context, query string, args []driver.NamedValue) (driver.Result, error) {
	r := c.f.record(query, args)
	if r.Err != nil {
		return nil, r.Err
	}
	return driver.RowsAffected(1), nil
}

func (c *fakeConn) QueryContext(_ context.Context, query string, args []driver.NamedValue) (driver.Rows, error) {
	r := c.f.record(query, args)
	if r.Err != nil {
		return nil, r.Err
	}
	return &fakeRows{rows: r.Rows}, nil
}

type fakeRows struct{ rows [][]driver.Value }

func (r *fakeRows) Columns() []string {
	if len(r.rows) == 0 {
		return []string{"c"}
	}
	return make([]string, len(r.rows[0]))
}

func (r *fakeRows) Close() error { return nil }

func (r *fakeRows) Next(dest []driver.Value) error {
	if len(r.rows) == 0 {
		return io.EOF
	}
	copy(dest, r.rows[0])
	r.rows = r.rows[1:]
	return nil
}
