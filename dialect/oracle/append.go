package oracle

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"strconv"
	"strings"

	goora "github.com/sijms/go-ora/v2"

	"github.com/tandem-go/tandem/dialect"
	"github.com/tandem-go/tandem/internal/sqldialect"
)

const (
	// maxRaw is the largest payload bound as RAW. Larger ones are bound
	// as BLOBs (temporary LOBs): go-ora binds a []byte over 4,000 bytes
	// (32,767 with extended types) as LONG RAW, which PL/SQL holds only up
	// to 32,760 bytes; 2,000 is the RAW limit every context accepts.
	maxRaw = 2000
	// appendBinds are the binds besides two per entry: the number of
	// entries, the expected head, the node id, the instance, the batch id
	// and the OUT bind.
	appendBinds = 6
	// maxEntries keeps the block below PL/SQL's 32,768 binds per unit.
	maxEntries = (32768 - appendBinds) / 2
)

// appendSQL is the PL/SQL block that appends the entries; blob[i] tells
// whether entry i's payload is bound as a BLOB (else as RAW). wait is the
// lock wait in seconds. Binds, by position (every placeholder occurs once,
// in this order):
//
//	:1 the number of entries, :2 the expected head (-1: unconditional),
//	:3 the node id, :4 the instance, :5 the batch id, then the producer
//	and payload of each entry, and last the OUT bind: the first revision,
//	or -1 when a conditional append found another head (it then wrote
//	nothing).
//
// Any error rolls back (releasing the counter's lock) and is re-raised with
// its own ORA- code, except NO_DATA_FOUND (no counter row), which is raised
// as ORA-20001: go-ora reports ORA-01403 as success without assigning the
// OUT bind. Append also treats an OUT bind left unassigned as an error.
func appendSQL(t sqldialect.Tables, blob []bool, wait int) string {
	insert := `INSERT INTO ` + t.Journal + ` (revision, node_id, instance, batch_id, producer, payload, created_at) VALUES (v_rev + k, v_node, v_inst, v_batch, p, d, v_ts);`
	var b strings.Builder
	b.Grow(1200 + len(blob)*28)
	b.WriteString(`DECLARE
	v_n     NUMBER(19) := :1;
	v_head  NUMBER(19) := :2;
	v_node  VARCHAR2(64) := :3;
	v_inst  VARCHAR2(64) := :4;
	v_batch NUMBER(19) := :5;
	v_rev   NUMBER(19);
	v_first NUMBER(19) := -1;
	v_ts    TIMESTAMP(6);
	PROCEDURE put_raw(k PLS_INTEGER, p VARCHAR2, d RAW) IS
	BEGIN
		` + insert + `
	END;
	PROCEDURE put_blob(k PLS_INTEGER, p VARCHAR2, d BLOB) IS
	BEGIN
		` + insert + `
	END;
BEGIN
	SELECT revision INTO v_rev FROM ` + t.GlobalRevision + ` WHERE id = 1 FOR UPDATE WAIT ` + strconv.Itoa(wait) + `;
	IF v_head >= 0 AND v_rev <> v_head THEN
		ROLLBACK;
	ELSE
		SELECT ` + utcNow + ` INTO v_ts FROM dual;
		UPDATE ` + t.GlobalRevision + ` SET revision = v_rev + v_n WHERE id = 1;
`)
	bind := 5
	for i, isBlob := range blob {
		if isBlob {
			b.WriteString("\t\tput_blob(")
		} else {
			b.WriteString("\t\tput_raw(")
		}
		b.WriteString(strconv.Itoa(i + 1))
		b.WriteString(`, :`)
		b.WriteString(strconv.Itoa(bind + 1))
		b.WriteString(`, :`)
		b.WriteString(strconv.Itoa(bind + 2))
		b.WriteString(");\n")
		bind += 2
	}
	b.WriteString(`		COMMIT;
		v_first := v_rev + 1;
	END IF;
	:`)
	b.WriteString(strconv.Itoa(bind + 1))
	b.WriteString(` := v_first;
EXCEPTION
	WHEN NO_DATA_FOUND THEN
		ROLLBACK;
		RAISE_APPLICATION_ERROR(-20001, 'tandem: ` + t.GlobalRevision + ` has no counter row (id = 1)');
	WHEN OTHERS THEN
		ROLLBACK;
		RAISE;
END;`)
	return b.String()
}

// appendArgs are the binds of appendSQL, in order, ending with the OUT bind
// into first, and which payloads go as BLOBs.
func appendArgs(r sqldialect.AppendRequest, first *int64) (args []any, blob []bool) {
	args = make([]any, 0, appendBinds+2*len(r.Entries))
	blob = make([]bool, len(r.Entries))
	args = append(args, int64(len(r.Entries)), r.ExpectHead, r.NodeID, r.Instance, r.BatchID)
	for i, e := range r.Entries {
		args = append(args, e.Producer)
		if len(e.Payload) > maxRaw {
			blob[i] = true
			args = append(args, goora.Blob{Data: e.Payload})
		} else {
			p := e.Payload
			if p == nil {
				p = []byte{}
			}
			args = append(args, p)
		}
	}
	args = append(args, sql.Out{Dest: first})
	return args, blob
}

// Append runs appendSQL: one round trip holding the counter's lock.
func (d ora) Append(ctx context.Context, conn *sql.Conn, r sqldialect.AppendRequest) (int64, error) {
	n := len(r.Entries)
	if n == 0 || n > maxEntries {
		return 0, fmt.Errorf("oracle: an append batch has 1 to %d entries, not %d", maxEntries, n)
	}
	first := unassigned
	args, blob := appendArgs(r, &first)
	if _, err := conn.ExecContext(ctx, appendSQL(r.Tables, blob, waitSeconds(r.LockTimeout)), args...); err != nil {
		return 0, d.appendError(err)
	}
	switch {
	case first == -1 && r.ExpectHead >= 0:
		return 0, fmt.Errorf("%w: expected head %d", dialect.ErrHeadMismatch, r.ExpectHead)
	case first < 1:
		// The block ends by assigning the OUT bind or raising; a
		// success without it is an error the driver dropped, which may
		// have come after the COMMIT.
		return 0, sqldialect.Open(fmt.Errorf("oracle: the append block returned without a revision (OUT bind %d)", first))
	}
	return first, nil
}

// unassigned is what Append's OUT bind starts as. go-ora overwrites it
// after every call it reports as a success, with 0 when the block left the
// bind NULL (unassigned), so Append takes any first revision below 1 as
// unassigned.
const unassigned = int64(-2)

// errRelayUnassigned: the relay block returned without assigning its OUT
// bind, an error the driver dropped, possibly after the COMMIT.
var errRelayUnassigned = errors.New("oracle: the relay block returned without a count")

// appendError classifies an error of the append block. It proves that
// nothing was written only when nothing was sent (sql.ErrConnDone: the
// *sql.Conn was closed already) or when the block raised an error that
// ends it before its COMMIT: a lock timeout on the counter, a deadlock, a
// unique violation, a missing table or column, a privilege, a compile
// error, or its own ORA-20001 (see provesNothingWritten). Anything else
// may have come after the commit: an open outcome. That includes the call
// cancelled (ORA-01013), the session killed or the connection lost, an
// error at COMMIT, and driver.ErrBadConn: go-ora returns it not only
// before sending (a connection it marked bad) but also while reading the
// reply, when the server closed the connection (network.Session's
// readPacket on a data packet with flag 0x40), which may follow the
// COMMIT.
func (d ora) appendError(err error) error {
	switch {
	case errors.Is(err, sql.ErrConnDone):
		return err
	case provesNothingWritten(code(err)):
		return d.Translate(err)
	}
	return sqldialect.Open(d.Translate(err))
}

// provesNothingWritten reports whether ORA- code c, raised by the append
// block, proves that it ended before its COMMIT.
func provesNothingWritten(c int) bool {
	switch c {
	case errResourceBusy, errWaitTimeout, errDistLockTimeout, errDeadlock, errUniqueViolation,
		errNoSuchTable, // ORA-00942
		904,            // ORA-00904: invalid identifier
		1031,           // ORA-01031: insufficient privileges
		6550,           // ORA-06550: PL/SQL compilation error
		20001,          // the block's own: no counter row
		20002,          // the relay block's own: it would delete other rows than it copied
		20003:          // the relay block's own: its counter UPDATE changed no row
		return true
	}
	return false
}
