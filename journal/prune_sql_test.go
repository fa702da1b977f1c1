package journal_test

import (
	"context"
	"database/sql"
	"fmt"
	"os"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/tandem-go/tandem/internal/dbtest"
	"github.com/tandem-go/tandem/journal"
)

// placeholders rewrites the ? of q as the dialect's placeholders.
func placeholders(dialectName, q string) string {
	var sb strings.Builder
	n := 0
	for _, c := range q {
		if c != '?' {
			sb.WriteRune(c)
			continue
		}
		n++
		switch dialectName {
		case "postgres":
			fmt.Fprintf(&sb, "$%d", n)
		case "sqlserver":
			fmt.Fprintf(&sb, "@p%d", n)
		case "oracle":
			fmt.Fprintf(&sb, ":%d", n)
		default:
			sb.WriteRune(c)
		}
	}
	return sb.String()
}

// appendN appends n records in batches of at most 1,000.
func appendN(tb testing.TB, j journal.Journal, n int) {
	tb.Helper()
	ctx := context.Background()
	batch := make([]journal.Entry, 1000)
	for i := range batch {
		batch[i] = journal.Entry{Producer: "p", Payload: make([]byte, 128)}
	}
	for done := 0; done < n; done += len(batch) {
		_, err := j.Append(ctx, batch[:min(len(batch), n-done)]...)
		require.NoError(tb, err)
	}
}

// TestSQLDeleteBatchAfterRestore: DeleteBatch looks for the lowest record
// from where its previous batch ended; a database restored under it (a
// new epoch, or the same epoch with a tail below that point) holds rows
// below it again, and they are found and deleted.
func TestSQLDeleteBatchAfterRestore(t *testing.T) {
	for _, b := range dbtest.Backends {
		t.Run(b.Name, func(t *testing.T) {
			t.Parallel()
			db := dbtest.Open(t, b)
			j := openSQL(t, db, b.Dialect, "a")
			ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
			defer cancel()
			appendN(t, j, 3000)
			q := func(s string) string { return placeholders(b.Name, s) }
			// restore puts back records 1 to 10, as a restored backup
			// would hold them.
			restore := func() {
				t.Helper()
				for rev := int64(1); rev <= 10; rev++ {
					_, err := db.DB.ExecContext(ctx, q(`INSERT INTO `+db.Prefix+`journal (revision, node_id, producer, payload, created_at) VALUES (?, ?, ?, ?, ?)`),
						rev, "a", "p", []byte("x"), time.Now().UTC())
					require.NoError(t, err)
				}
			}
			count := func() (n int64) {
				t.Helper()
				require.NoError(t, db.DB.QueryRowContext(ctx, `SELECT COUNT(*) FROM `+db.Prefix+`journal`).Scan(&n))
				return n
			}
			batch := func(limit int, want int64) {
				t.Helper()
				n, err := j.DeleteBatch(ctx, limit)
				require.NoError(t, err)
				require.Equal(t, want, n)
			}

			_, err := j.RaiseTail(ctx, 2501)
			require.NoError(t, err)
			batch(1000, 1000) // 1 to 1000
			batch(1000, 1000) // 1001 to 2000: the next look starts at 2001
			// Restored with another epoch: the look starts at the key's
			// start again.
			restore()
			_, err = db.DB.ExecContext(ctx, q(`UPDATE `+db.Prefix+`meta SET epoch = ? WHERE id = 1`), "restored")
			require.NoError(t, err)
			batch(1000, 10)
			batch(1000, 500) // 2001 to 2500
			batch(1000, 0)
			require.EqualValues(t, 500, count())

			// Restored with the same epoch and an older tail.
			_, err = j.RaiseTail(ctx, 2801)
			require.NoError(t, err)
			batch(100, 100) // 2501 to 2600: the next look starts at 2601
			restore()
			_, err = db.DB.ExecContext(ctx, `UPDATE `+db.Prefix+`meta SET tail = 11 WHERE id = 1`)
			require.NoError(t, err)
			batch(100, 10)
			batch(100, 0)
			require.EqualValues(t, 400, count())
			// And a prune after that runs as ever.
			_, err = j.Prune(ctx, 2901)
			require.NoError(t, err)
			require.EqualValues(t, 100, count())
			recs, err := j.Read(ctx, 2900, 10)
			require.NoError(t, err)
			require.Len(t, recs, 10)
			require.EqualValues(t, 2901, recs[0].Revision)
		})
	}
}

// BenchmarkPruneHeldBack prunes a journal of 200,000 records
// (TANDEM_BENCH_RECORDS changes it) in batches of 5,000 while another
// session holds a snapshot taken before the prune began (a long report,
// a backup), so that the deleted rows stay in the primary key's index
// until it ends: PostgreSQL's vacuum and InnoDB's purge cannot remove
// them. It reports the records deleted per second and the time of the
// first and the last batch, which stay alike when each batch's look for
// the lowest record starts where the previous batch ended. Each op is
// one fill and one prune; run it with -benchtime 1x.
func BenchmarkPruneHeldBack(b *testing.B) {
	for _, be := range dbtest.Backends {
		b.Run(be.Name, func(b *testing.B) {
			n := 200_000
			if v, err := strconv.Atoi(os.Getenv("TANDEM_BENCH_RECORDS")); err == nil && v > 0 {
				n = v
			}
			for range b.N {
				benchPruneHeldBack(b, be, n)
			}
		})
	}
}

func benchPruneHeldBack(b *testing.B, be dbtest.Backend, n int) {
	ctx := context.Background()
	b.StopTimer()
	db := dbtest.Open(b, be)
	j, err := journal.OpenSQL(ctx, db.NewPool(b), be.Dialect, journal.SQLConfig{NodeID: "a", Prefix: db.Prefix})
	require.NoError(b, err)
	defer j.Close(ctx)
	appendN(b, j, n)
	// The held snapshot: a read in a REPEATABLE READ transaction (on
	// PostgreSQL and InnoDB, the snapshot is taken by the first read).
	tx, err := db.DB.BeginTx(ctx, &sql.TxOptions{Isolation: sql.LevelRepeatableRead})
	require.NoError(b, err)
	defer tx.Rollback()
	var one int64
	require.NoError(b, tx.QueryRowContext(ctx, `SELECT COUNT(*) FROM `+db.Prefix+`meta`).Scan(&one))
	_, err = j.RaiseTail(ctx, int64(n)+1)
	require.NoError(b, err)

	b.StartTimer()
	start := time.Now()
	var deleted int64
	var first, last time.Duration
	for {
		t0 := time.Now()
		k, err := j.DeleteBatch(ctx, 5000)
		require.NoError(b, err)
		if k == 0 {
			break
		}
		if deleted == 0 {
			first = time.Since(t0)
		}
		last = time.Since(t0)
		deleted += k
	}
	took := time.Since(start)
	b.StopTimer()
	require.EqualValues(b, n, deleted)
	b.ReportMetric(float64(deleted)/took.Seconds(), "deleted/s")
	b.ReportMetric(float64(first.Microseconds())/1000, "first-batch-ms")
	b.ReportMetric(float64(last.Microseconds())/1000, "last-batch-ms")
	b.ReportMetric(0, "ns/op")
}
