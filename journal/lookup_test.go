package journal_test

import (
	"context"
	"database/sql"
	"errors"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/tandem-go/tandem/dialect"
	"github.com/tandem-go/tandem/internal/dbtest"
	"github.com/tandem-go/tandem/internal/sqldialect"
	"github.com/tandem-go/tandem/journal"
)

// lostAck is the real dialect whose appends, once armed, commit and then
// report an open outcome (as when the connection drops after the server
// committed, before the answer arrived), running between the two what
// the test arms it with: what other nodes may do before the journal's
// lookup starts.
type lostAck struct {
	dialect.Dialect
	caps
	mu      *sync.Mutex
	between *func(ctx context.Context) error
}

func newLostAck(d dialect.Dialect) lostAck {
	return lostAck{Dialect: d, caps: caps{d}, mu: new(sync.Mutex), between: new(func(context.Context) error)}
}

// arm makes the next append commit, run fn, and report an open outcome.
func (l lostAck) arm(fn func(ctx context.Context) error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	*l.between = fn
}

func (l lostAck) Append(ctx context.Context, conn *sql.Conn, r sqldialect.AppendRequest) (int64, error) {
	l.mu.Lock()
	fn := *l.between
	*l.between = nil
	l.mu.Unlock()
	first, err := l.Dialect.Append(ctx, conn, r)
	if err != nil || fn == nil {
		return first, err
	}
	if err := fn(ctx); err != nil {
		return 0, err
	}
	return 0, sqldialect.Open(errors.New("connection lost after the commit (simulated)"))
}

// TestSQLResolveAfterPrune: a group commit's answer is lost after its
// commit, and before the journal looks the batch up, the janitor prunes
// the journal past it (every node, this one's sync loop included, read
// it already). The lookup must not report the append as failed with
// nothing written: when some of the batch's records are left it reports
// the batch committed; when none is left, the outcome can no longer be
// learned and it says so (ErrOutcomeUnknown), never "nothing written".
func TestSQLResolveAfterPrune(t *testing.T) {
	for _, b := range dbtest.Backends {
		t.Run(b.Name, func(t *testing.T) {
			t.Parallel()
			ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
			defer cancel()
			db := dbtest.Open(t, b)
			d := newLostAck(b.Dialect)
			j := openSQLConfig(t, db, d, journal.SQLConfig{NodeID: "a"})
			janitor := openSQL(t, db, b.Dialect, "janitor")
			_, err := j.Append(ctx, e("1"), e("2"), e("3"))
			require.NoError(t, err)

			// Some of the batch is pruned: it committed.
			d.arm(func(ctx context.Context) error {
				_, err := janitor.Prune(ctx, 5)
				return err
			})
			revs, err := j.Append(ctx, e("4"), e("5"))
			require.NoError(t, err, "the batch's record 5 is still there: it committed")
			require.Equal(t, []int64{4, 5}, revs)

			// All of it is pruned: unknown, not "nothing written".
			d.arm(func(ctx context.Context) error {
				_, err := janitor.Prune(ctx, 7)
				return err
			})
			_, err = j.Append(ctx, e("6"))
			require.ErrorIs(t, err, dialect.ErrOutcomeUnknown, "the batch committed at 6 and was pruned: its outcome cannot be learned")

			revs, err = j.Append(ctx, e("7"))
			require.NoError(t, err)
			require.Equal(t, []int64{7}, revs, "no hole")
		})
	}
}

// TestSQLResolveAfterRestore: the database is restored from a backup
// (the counter and the journal go back below what a running journal has
// seen) and the answer to the journal's next group commit is lost after
// its commit. The lookup must find the batch below what the journal knew
// before the restore, not report it failed with nothing written.
func TestSQLResolveAfterRestore(t *testing.T) {
	for _, b := range dbtest.Backends {
		t.Run(b.Name, func(t *testing.T) {
			t.Parallel()
			ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
			defer cancel()
			db := dbtest.Open(t, b)
			d := newLostAck(b.Dialect)
			j := openSQLConfig(t, db, d, journal.SQLConfig{NodeID: "a"})
			_, err := j.Append(ctx, e("1"), e("2"), e("3"), e("4"), e("5"))
			require.NoError(t, err)

			// The restore: back to revision 2.
			for _, stmt := range []string{
				`DELETE FROM ` + db.Prefix + `journal WHERE revision > 2`,
				`UPDATE ` + db.Prefix + `global_revision SET revision = 2 WHERE id = 1`,
			} {
				_, err := db.DB.ExecContext(ctx, stmt)
				require.NoError(t, err)
			}

			d.arm(func(context.Context) error { return nil })
			revs, err := j.Append(ctx, e("3 again"))
			require.NoError(t, err, "the batch committed at revision 3")
			require.Equal(t, []int64{3}, revs)
			recs, err := j.Read(ctx, 0, 10)
			require.NoError(t, err)
			require.Len(t, recs, 3)
			require.Equal(t, "3 again", string(recs[2].Payload))

			// The journal learned that it went back: the next lost answer
			// is looked up above revision 3, though another node's
			// append brought the head back to what it had seen before.
			other := openSQL(t, db, b.Dialect, "b")
			d.arm(func(ctx context.Context) error {
				_, err := other.Append(ctx, e("5 by b"))
				return err
			})
			revs, err = j.Append(ctx, e("4 again"))
			require.NoError(t, err, "the batch committed at revision 4")
			require.Equal(t, []int64{4}, revs)
		})
	}
}

// TestSQLWaitAfterPrune: an application's transaction commits entries,
// another node relays them, every node reads them and the janitor prunes
// them, all before the writer's Pending.Wait looks. Wait must not report
// them not committed (ErrNotCommitted says the transaction rolled back):
// their revisions can no longer be learned, and it says that.
func TestSQLWaitAfterPrune(t *testing.T) {
	for _, b := range dbtest.Backends[:2] { // PostgreSQL and MySQL
		t.Run(b.Name, func(t *testing.T) {
			t.Parallel()
			ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
			defer cancel()
			db := dbtest.Open(t, b)
			pool := db.NewPool(t)
			j := openSQL(t, db, b.Dialect, "w")
			other := openSQL(t, db, b.Dialect, "other")
			_, err := j.Append(ctx, e("1"))
			require.NoError(t, err)

			tx, err := pool.BeginTx(ctx, nil)
			require.NoError(t, err)
			p, err := j.AppendTx(ctx, tx, e("2"), e("3"))
			require.NoError(t, err)
			require.NoError(t, tx.Commit())
			n, err := other.Relay(ctx)
			require.NoError(t, err)
			require.EqualValues(t, 2, n)
			_, err = other.Prune(ctx, 4)
			require.NoError(t, err)

			_, err = p.Wait(ctx)
			require.NotErrorIs(t, err, journal.ErrNotCommitted, "the transaction committed")
			require.ErrorIs(t, err, journal.ErrBehindTail, "the records were pruned")

			// Once the writer has seen past the tail, a transaction that
			// rolled back is reported as such again.
			_, err = j.Append(ctx, e("4"))
			require.NoError(t, err)
			tx, err = pool.BeginTx(ctx, nil)
			require.NoError(t, err)
			p, err = j.AppendTx(ctx, tx, e("never"))
			require.NoError(t, err)
			require.NoError(t, tx.Rollback())
			_, err = p.Wait(ctx)
			require.ErrorIs(t, err, journal.ErrNotCommitted, "nothing was pruned above what the writer knew")
		})
	}
}

// e is an entry of producer p with payload s.
func e(s string) journal.Entry { return journal.Entry{Producer: "p", Payload: []byte(s)} }
