package sqlserver

import (
	"context"
	"database/sql"
	"database/sql/driver"
	"errors"
	"fmt"
	"strconv"
	"strings"

	mssql "github.com/microsoft/go-mssqldb"

	"github.com/tandem-go/tandem/dialect"
	"github.com/tandem-go/tandem/internal/sqldialect"
)

// Parameter limits. SQL Server accepts 2,100 parameters per request and
// sp_executesql, through which go-mssqldb sends every statement with
// arguments, takes two of them for the statement and its declarations.
const (
	maxParams    = 2100 - 2
	appendParams = 5 // @p1 n, @p2 node id, @p3 expected head, @p4 instance, @p5 batch id
	maxEntries   = (maxParams - appendParams) / 2
)

// appendSQL is the batch that appends n entries. Its parameters:
//
//	@p1 the number of entries (bigint)
//	@p2 the node id
//	@p3 the expected head (bigint; used only when conditional)
//	@p4 the instance
//	@p5 the batch id (bigint)
//	@p6, @p7 … the producer and payload of each entry, in order
//
// It returns one row: the first revision, or NULL when a conditional
// append found another head (it then wrote nothing). The rows come from a
// derived table, which has no row limit (INSERT … VALUES has 1,000). The
// CATCH block rolls back and re-raises the original error (THROW keeps its
// number); XACT_ABORT rolls back on anything the CATCH block cannot see,
// such as the client cancelling the batch.
func appendSQL(t sqldialect.Tables, n int, conditional bool) string {
	var b strings.Builder
	b.Grow(640 + n*24)
	b.WriteString(`SET NOCOUNT ON;
SET XACT_ABORT ON;
DECLARE @last BIGINT;
BEGIN TRY
	BEGIN TRANSACTION;
	UPDATE `)
	b.WriteString(t.GlobalRevision)
	b.WriteString(` SET @last = revision = revision + @p1 WHERE id = 1`)
	if conditional {
		b.WriteString(` AND revision = @p3`)
	}
	b.WriteString(`;
	IF @@ROWCOUNT = 1
	BEGIN
		INSERT INTO `)
	b.WriteString(t.Journal)
	b.WriteString(` (revision, node_id, instance, batch_id, producer, payload, created_at)
		SELECT @last - @p1 + v.k, @p2, @p4, @p5, v.producer, v.payload, SYSUTCDATETIME()
		FROM (VALUES `)
	p := appendParams
	for i := range n {
		if i > 0 {
			b.WriteString(`, `)
		}
		b.WriteString(`(`)
		b.WriteString(strconv.Itoa(i + 1))
		b.WriteString(`, @p`)
		b.WriteString(strconv.Itoa(p + 1))
		b.WriteString(`, @p`)
		b.WriteString(strconv.Itoa(p + 2))
		b.WriteString(`)`)
		p += 2
	}
	b.WriteString(`) AS v (k, producer, payload);
		COMMIT TRANSACTION;
	END
	ELSE
		ROLLBACK TRANSACTION;
END TRY
BEGIN CATCH
	IF @@TRANCOUNT > 0 ROLLBACK TRANSACTION;
	THROW;
END CATCH;
SELECT @last - @p1 + 1;`)
	return b.String()
}

// appendArgs are the arguments of appendSQL, in order.
func appendArgs(r sqldialect.AppendRequest) []any {
	args := make([]any, 0, appendParams+2*len(r.Entries))
	args = append(args, int64(len(r.Entries)), r.NodeID, r.ExpectHead, r.Instance, r.BatchID)
	for _, e := range r.Entries {
		p := e.Payload
		if p == nil {
			p = []byte{} // go-mssqldb sends a nil []byte as NULL
		}
		args = append(args, e.Producer, p)
	}
	return args
}

// Append runs appendSQL: one round trip holding the counter's lock.
func (d sqlServer) Append(ctx context.Context, conn *sql.Conn, r sqldialect.AppendRequest) (int64, error) {
	n := len(r.Entries)
	if n == 0 || n > maxEntries {
		return 0, fmt.Errorf("sqlserver: an append batch has 1 to %d entries, not %d", maxEntries, n)
	}
	var first sql.NullInt64
	err := conn.QueryRowContext(ctx, appendSQL(r.Tables, n, r.ExpectHead >= 0), appendArgs(r)...).Scan(&first)
	if err != nil {
		return 0, d.appendError(err)
	}
	if !first.Valid {
		if r.ExpectHead >= 0 {
			return 0, fmt.Errorf("%w: expected head %d", dialect.ErrHeadMismatch, r.ExpectHead)
		}
		return 0, fmt.Errorf("sqlserver: %s has no counter row (id = 1)", r.Tables.GlobalRevision)
	}
	return first.Int64, nil
}

// appendError classifies an error of the append batch. It proves that
// nothing was written when nothing was sent (driver.ErrBadConn, which
// go-mssqldb's RetryableError matches) or when the server raised an error
// that ends the batch before its COMMIT (see provesNothingWritten; THROW
// in the CATCH block re-raises the original number). Anything else — an
// attention (the client's context ending, a query timeout), a fatal
// server error that severs the connection (mssql.ServerError, e.g. the
// session KILLed), a lost connection, an error at COMMIT — may have come
// after the commit: an open outcome. The journal discards the connection
// after any error, which rolls back what the batch left open.
func (d sqlServer) appendError(err error) error {
	var fatal mssql.ServerError
	var msErr mssql.Error
	switch {
	case errors.As(err, &fatal):
	case errors.As(err, &msErr) && msErr.Number != 0 && provesNothingWritten(err):
		return d.Translate(err)
	case errors.Is(err, driver.ErrBadConn), errors.Is(err, sql.ErrConnDone):
		return err
	}
	return sqldialect.Open(d.Translate(err))
}

// provesNothingWritten reports whether err, raised by the append or relay
// batch, proves that the batch ended before its COMMIT: a lock timeout on
// the counter, a deadlock, a duplicate key, a missing object or column, a
// permission or syntax error, or one the relay batch raises itself.
func provesNothingWritten(err error) bool {
	return hasNumber(err, errLockTimeout, errDeadlock, errUniqueConstraint, errUniqueIndex,
		208, 207, 229, 102, // invalid object, invalid column, permission denied, syntax
		errRelayNoCounter, errRelayMismatch, errRelayCounter)
}
