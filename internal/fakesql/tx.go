package fakesql

import (
	"context"
	"database/sql"
	"database/sql/driver"
	"testing"
)

// TxDB returns a *sql.DB on f with one connection that also runs
// transactions (the plain fake has none): beginning one sends "BEGIN
// TRANSACTION" to f, and Commit and Rollback send "COMMIT" and "ROLLBACK",
// in order with the other statements, so a test sees where a transaction
// begins and ends. It is closed when t ends.
func TxDB(t testing.TB, f *DB) *sql.DB {
	t.Helper()
	db := sql.OpenDB(txConnector{f})
	db.SetMaxOpenConns(1)
	t.Cleanup(func() { db.Close() })
	return db
}

type txConnector struct{ f *DB }

func (c txConnector) Connect(context.Context) (driver.Conn, error) {
	return &txConn{fakeConn{c.f}}, nil
}

func (c txConnector) Driver() driver.Driver { return c.f.Driver() }

type txConn struct{ fakeConn }

func (c *txConn) Begin() (driver.Tx, error) {
	return c.BeginTx(context.Background(), driver.TxOptions{})
}

func (c *txConn) BeginTx(ctx context.Context, _ driver.TxOptions) (driver.Tx, error) {
	if _, err := c.ExecContext(ctx, "BEGIN TRANSACTION", nil); err != nil {
		return nil, err
	}
	return txEnd{c}, nil
}

type txEnd struct{ c *txConn }

func (t txEnd) Commit() error {
	_, err := t.c.ExecContext(context.Background(), "COMMIT", nil)
	return err
}

func (t txEnd) Rollback() error {
	_, err := t.c.ExecContext(context.Background(), "ROLLBACK", nil)
	return err
}
