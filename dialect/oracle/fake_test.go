package oracle

import (
	"context"
	"database/sql"
	"database/sql/driver"
	"errors"
	"io"
	"sync"
	"testing"
)

// call is one statement the fake driver received.
type call struct {
	query string
	args  []driver.NamedValue
}

// reply is what the fake driver answers to a statement: rows (for queries)
// or an error.
type reply struct {
	rows [][]driver.Value
	err  error
}

// fakeDB is a *sql.DB whose single connection records every statement and
// answers with handle. It stands in for a server in these unit tests.
type fakeDB struct {
	mu     sync.Mutex
	calls  []call
	handle func(query string, args []driver.NamedValue) reply
}

func newFakeDB(t *testing.T, handle func(query string, args []driver.NamedValue) reply) (*fakeDB, *sql.DB) {
	t.Helper()
	f := &fakeDB{handle: handle}
	db := sql.OpenDB(f)
	db.SetMaxOpenConns(1)
	t.Cleanup(func() { db.Close() })
	return f, db
}

func (f *fakeDB) record(query string, args []driver.NamedValue) reply {
	f.mu.Lock()
	f.calls = append(f.calls, call{query, args})
	f.mu.Unlock()
	if f.handle == nil {
		return reply{}
	}
	return f.handle(query, args)
}

func (f *fakeDB) queries() []string {
	f.mu.Lock()
	defer f.mu.Unlock()
	out := make([]string, len(f.calls))
	for i, c := range f.calls {
		out[i] = c.query
	}
	return out
}

func (f *fakeDB) Connect(context.Context) (driver.Conn, error) { return &fakeConn{f}, nil }
func (f *fakeDB) Driver() driver.Driver                        { return fakeDriver{} }

type fakeDriver struct{}

func (fakeDriver) Open(string) (driver.Conn, error) {
	return nil, errors.New("fake: use the connector")
}

type fakeConn struct{ f *fakeDB }

func (c *fakeConn) Prepare(string) (driver.Stmt, error) { return nil, errors.New("fake: no prepare") }
func (c *fakeConn) Close() error                        { return nil }
func (c *fakeConn) Begin() (driver.Tx, error)           { return nil, errors.New("fake: no transactions") }

// CheckNamedValue passes every argument through unchanged (sql.Out and
// go-ora's Blob included), as go-ora does.
func (c *fakeConn) CheckNamedValue(*driver.NamedValue) error { return nil }

func (c *fakeConn) ExecContext(_ context.Context, query string, args []driver.NamedValue) (driver.Result, error) {
	r := c.f.record(query, args)
	if r.err != nil {
		return nil, r.err
	}
	return driver.RowsAffected(1), nil
}

func (c *fakeConn) QueryContext(_ context.Context, query string, args []driver.NamedValue) (driver.Rows, error) {
	r := c.f.record(query, args)
	if r.err != nil {
		return nil, r.err
	}
	return &fakeRows{rows: r.rows}, nil
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
