package journal_test

import (
	"context"
	"database/sql"
	"fmt"
	"strings"
	"sync"
	"sync/atomic"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/tandem-go/tandem/internal/dbtest"
	"github.com/tandem-go/tandem/journal"
)

// The append benchmarks compare, in one run and on one server, for 1, 8
// and 32 concurrent appenders spread over 1 and 4 instances (each its own
// pool, as nodes would have), with 512-byte payloads:
//
//	tandem      journal.SQL: group commit under the global revision counter
//	jackrabbit  Jackrabbit's DatabaseJournal pattern: per record, one
//	            transaction that bumps the counter row, reads it back and
//	            inserts one row
//	plain       autocommit single-row inserts into a table with an
//	            auto-increment key and no lock at all (no order guarantee)
//	tandem-tx   journal.SQL.AppendTx in an application transaction that
//	            commits, then Pending.Wait for the revisions (the outbox)
//
// Run with scripts/bench.sh (see BENCHMARKS.md).
func BenchmarkAppend(b *testing.B) {
	for _, be := range dbtest.Backends {
		for _, mode := range []string{"tandem", "jackrabbit", "plain", "tandem-tx"} {
			for _, inst := range []int{1, 4} {
				for _, apps := range []int{1, 8, 32} {
					if apps < inst || mode == "tandem-tx" && (inst != 4 || apps != 8) {
						continue
					}
					b.Run(fmt.Sprintf("%s/%s/instances=%d/appenders=%d", be.Name, mode, inst, apps), func(b *testing.B) {
						benchAppend(b, be, mode, inst, apps)
					})
				}
			}
		}
	}
}

type appender func(ctx context.Context, payload []byte) error

func benchAppend(b *testing.B, be dbtest.Backend, mode string, instances, appenders int) {
	ctx := context.Background()
	db := dbtest.Open(b, be)
	// Create the schema once, outside the timing.
	j0, err := journal.OpenSQL(ctx, db.DB, be.Dialect, journal.SQLConfig{NodeID: "setup", Prefix: db.Prefix})
	require.NoError(b, err)
	require.NoError(b, j0.Close(ctx))
	if mode == "plain" {
		_, err := db.DB.ExecContext(ctx, plainDDL(be.Name, db.Prefix))
		require.NoError(b, err)
	}
	apps := make([]appender, instances)
	var js []*journal.SQL
	for i := range apps {
		pool := db.NewPool(b)
		pool.SetMaxOpenConns(appenders/instances + 2)
		node := fmt.Sprintf("n%d", i)
		switch mode {
		case "tandem":
			j, err := journal.OpenSQL(ctx, pool, be.Dialect, journal.SQLConfig{NodeID: node, Prefix: db.Prefix})
			require.NoError(b, err)
			b.Cleanup(func() { j.Close(ctx) })
			js = append(js, j)
			apps[i] = func(ctx context.Context, p []byte) error {
				_, err := j.Append(ctx, journal.Entry{Producer: "bench", Payload: p})
				return err
			}
		case "tandem-tx":
			j, err := journal.OpenSQL(ctx, pool, be.Dialect, journal.SQLConfig{NodeID: node, Prefix: db.Prefix})
			require.NoError(b, err)
			b.Cleanup(func() { j.Close(ctx) })
			js = append(js, j)
			apps[i] = func(ctx context.Context, p []byte) error {
				tx, err := pool.BeginTx(ctx, nil)
				if err != nil {
					return err
				}
				defer tx.Rollback()
				pend, err := j.AppendTx(ctx, tx, journal.Entry{Producer: "bench", Payload: p})
				if err != nil {
					return err
				}
				if err := tx.Commit(); err != nil {
					return err
				}
				_, err = pend.Wait(ctx)
				return err
			}
		case "jackrabbit":
			apps[i] = jackrabbit(pool, be, db.Prefix, node)
		case "plain":
			q := rebind(be.Name, `INSERT INTO `+db.Prefix+`plain (node_id, producer, payload, created_at) VALUES (?, ?, ?, `+nowSQL(be.Name)+`)`)
			apps[i] = func(ctx context.Context, p []byte) error {
				_, err := pool.ExecContext(ctx, q, node, "bench", p)
				return err
			}
		}
	}
	payload := []byte(strings.Repeat("x", 512))
	var next atomic.Int64
	var wg sync.WaitGroup
	errs := make(chan error, appenders)
	b.ResetTimer()
	for a := range appenders {
		wg.Add(1)
		go func() {
			defer wg.Done()
			app := apps[a%instances]
			for next.Add(1) <= int64(b.N) {
				if err := app(ctx, payload); err != nil {
					errs <- err
					return
				}
			}
		}()
	}
	wg.Wait()
	b.StopTimer()
	close(errs)
	for err := range errs {
		require.NoError(b, err)
	}
	b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "records/s")
	b.ReportMetric(0, "ns/op")
	if mode == "tandem" {
		var recs, batches int64
		for _, j := range js {
			st := j.Stats()
			recs += st.Records
			batches += st.Batches
		}
		b.ReportMetric(float64(recs)/float64(max(batches, 1)), "records/commit")
	}
}

// jackrabbit appends one record the way Jackrabbit's DatabaseJournal does.
func jackrabbit(pool *sql.DB, be dbtest.Backend, prefix, node string) appender {
	bump := `UPDATE ` + prefix + `global_revision SET revision = revision + 1 WHERE id = 1`
	get := `SELECT revision FROM ` + prefix + `global_revision WHERE id = 1`
	ins := rebind(be.Name, `INSERT INTO `+prefix+`journal (revision, node_id, producer, payload, created_at) VALUES (?, ?, ?, ?, `+nowSQL(be.Name)+`)`)
	return func(ctx context.Context, p []byte) error {
		tx, err := pool.BeginTx(ctx, nil)
		if err != nil {
			return err
		}
		defer tx.Rollback()
		if _, err := tx.ExecContext(ctx, bump); err != nil {
			return err
		}
		var rev int64
		if err := tx.QueryRowContext(ctx, get).Scan(&rev); err != nil {
			return err
		}
		if _, err := tx.ExecContext(ctx, ins, rev, node, "bench", p); err != nil {
			return err
		}
		return tx.Commit()
	}
}

func plainDDL(dialectName, prefix string) string {
	if dialectName == "postgres" {
		return `CREATE TABLE ` + prefix + `plain (id BIGSERIAL PRIMARY KEY, node_id VARCHAR(64) NOT NULL, producer VARCHAR(128) NOT NULL, payload BYTEA NOT NULL, created_at TIMESTAMPTZ NOT NULL)`
	}
	return `CREATE TABLE ` + prefix + `plain (id BIGINT AUTO_INCREMENT PRIMARY KEY, node_id VARCHAR(64) NOT NULL, producer VARCHAR(128) NOT NULL, payload LONGBLOB NOT NULL, created_at DATETIME(6) NOT NULL) ENGINE=InnoDB`
}

func nowSQL(dialectName string) string {
	if dialectName == "postgres" {
		return "now()"
	}
	return "UTC_TIMESTAMP(6)"
}

// rebind turns ? placeholders into $n for PostgreSQL.
func rebind(dialectName, q string) string {
	if dialectName != "postgres" {
		return q
	}
	var sb strings.Builder
	n := 0
	for _, c := range q {
		if c == '?' {
			n++
			fmt.Fprintf(&sb, "$%d", n)
			continue
		}
		sb.WriteRune(c)
	}
	return sb.String()
}

// BenchmarkCatchUp measures how fast a node that is far behind reads the
// journal: every op reads all records of a 1M-record journal (512-byte
// payloads) in batches of 1,000. TANDEM_BENCH_RECORDS changes the size.
func BenchmarkCatchUp(b *testing.B) {
	for _, be := range dbtest.Backends {
		b.Run(be.Name, func(b *testing.B) {
			ctx := context.Background()
			db := dbtest.Open(b, be)
			j, err := journal.OpenSQL(ctx, db.DB, be.Dialect, journal.SQLConfig{NodeID: "writer", Prefix: db.Prefix})
			require.NoError(b, err)
			defer j.Close(ctx)
			fill(b, j, benchRecords())
			benchCatchUp(b, j)
		})
	}
}

// BenchmarkCatchUpFile is BenchmarkCatchUp on the file backend.
func BenchmarkCatchUpFile(b *testing.B) {
	ctx := context.Background()
	w, err := journal.OpenFile(ctx, journal.FileConfig{Dir: b.TempDir(), NodeID: "writer"})
	require.NoError(b, err)
	defer w.Close(ctx)
	fill(b, w, benchRecords())
	benchCatchUp(b, w)
}

// BenchmarkAppendFile measures the file backend's appends: 1, 8 and 32
// appenders spread over 1 and 4 instances on one folder (fsync per group
// commit), 512-byte payloads.
func BenchmarkAppendFile(b *testing.B) {
	for _, inst := range []int{1, 4} {
		for _, apps := range []int{1, 8, 32} {
			if apps < inst {
				continue
			}
			b.Run(fmt.Sprintf("instances=%d/appenders=%d", inst, apps), func(b *testing.B) {
				ctx := context.Background()
				dir := b.TempDir()
				js := make([]*journal.File, inst)
				for i := range js {
					j, err := journal.OpenFile(ctx, journal.FileConfig{Dir: dir, NodeID: fmt.Sprintf("n%d", i)})
					require.NoError(b, err)
					b.Cleanup(func() { j.Close(ctx) })
					js[i] = j
				}
				payload := []byte(strings.Repeat("x", 512))
				var next atomic.Int64
				var wg sync.WaitGroup
				b.ResetTimer()
				for a := range apps {
					wg.Add(1)
					go func() {
						defer wg.Done()
						for next.Add(1) <= int64(b.N) {
							if _, err := js[a%inst].Append(ctx, journal.Entry{Producer: "bench", Payload: payload}); err != nil {
								b.Error(err)
								return
							}
						}
					}()
				}
				wg.Wait()
				b.StopTimer()
				var recs, batches int64
				for _, j := range js {
					recs += j.Stats().Records
					batches += j.Stats().Batches
				}
				b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "records/s")
				b.ReportMetric(float64(recs)/float64(max(batches, 1)), "records/commit")
				b.ReportMetric(0, "ns/op")
			})
		}
	}
}

func benchRecords() int64 {
	var n int64 = 1_000_000
	if v := envInt("TANDEM_BENCH_RECORDS"); v > 0 {
		n = v
	}
	return n
}

// fill appends n 512-byte records, 1,000 per append from 4 goroutines.
func fill(b *testing.B, j journal.Journal, n int64) {
	ctx := context.Background()
	entries := make([]journal.Entry, 1000)
	for i := range entries {
		entries[i] = journal.Entry{Producer: "bench", Payload: []byte(strings.Repeat("y", 512))}
	}
	var next atomic.Int64
	var wg sync.WaitGroup
	for range 4 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for next.Add(1000) <= n {
				_, err := j.Append(ctx, entries...)
				if err != nil {
					b.Error(err)
					return
				}
			}
		}()
	}
	wg.Wait()
}

func benchCatchUp(b *testing.B, j journal.Journal) {
	ctx := context.Background()
	head, err := j.Head(ctx)
	require.NoError(b, err)
	b.ResetTimer()
	for range b.N {
		var pos int64
		for pos < head {
			recs, err := j.Read(ctx, pos, 1000)
			require.NoError(b, err)
			require.NotEmpty(b, recs)
			pos = recs[len(recs)-1].Revision
		}
	}
	b.StopTimer()
	b.ReportMetric(float64(head)*float64(b.N)/b.Elapsed().Seconds(), "records/s")
}

// BenchmarkPollFile measures one poll of the file backend as a node's
// sync makes it, side by side: File.Poll (the meta and head files, then
// the segment) against Poll's fallback for journals that are no Poller
// (Epoch, Read, Head: four small-file reads before the segment's), which
// the file backend used before it had Poll. "caught-up" polls at the head
// (a sync that finds nothing); "one-record" reads the last record, as a
// caught-up node's sync does (it reads the record at its position again)
// and WaitFor's check: it seeks to where the reader's last read of that
// record began, in a 20,000-record segment (512-byte payloads) that
// another node wrote. On a shared folder every small-file read is a round
// trip (NFS revalidates on open).
func BenchmarkPollFile(b *testing.B) {
	ctx := context.Background()
	dir := b.TempDir()
	w, err := journal.OpenFile(ctx, journal.FileConfig{Dir: dir, NodeID: "writer"})
	require.NoError(b, err)
	defer w.Close(ctx)
	fill(b, w, 20000)
	j, err := journal.OpenFile(ctx, journal.FileConfig{Dir: dir, NodeID: "reader"})
	require.NoError(b, err)
	defer j.Close(ctx)
	head, err := j.Head(ctx)
	require.NoError(b, err)
	for _, impl := range []struct {
		name string
		j    journal.Journal
	}{{"poller", j}, {"fallback", struct{ journal.Journal }{j}}} {
		for _, at := range []struct {
			name  string
			after int64
		}{{"caught-up", head}, {"one-record", head - 1}} {
			b.Run(impl.name+"/"+at.name, func(b *testing.B) {
				for b.Loop() {
					res, err := journal.Poll(ctx, impl.j, at.after, 100)
					if err != nil || res.Head != head || len(res.Records) != int(head-at.after) {
						b.Fatalf("poll after %d: %d records, head %d, %v", at.after, len(res.Records), res.Head, err)
					}
				}
			})
		}
	}
}

// BenchmarkAppendFileSerial measures one append at a time on the file
// backend, the steady state of a node that publishes now and then: a
// lone writer ("one-writer"), and two instances that append in turn
// ("two-writers"), so that every append finds a head another writer
// moved and checks it against the segment. "segments=1000" has 1,000
// older segments in the folder (a journal of 64 GB at the default
// segment size, never pruned), which every append lists. Run it with
// TMPDIR on a tmpfs to see the file-system work around the fsyncs, which
// dominate on a disk.
func BenchmarkAppendFileSerial(b *testing.B) {
	ctx := context.Background()
	payload := []byte(strings.Repeat("x", 512))
	for _, segs := range []int{1, 1000} {
		for _, writers := range []int{1, 2} {
			name := map[int]string{1: "one-writer", 2: "two-writers"}[writers]
			b.Run(fmt.Sprintf("segments=%d/%s", segs, name), func(b *testing.B) {
				dir := b.TempDir()
				if segs > 1 {
					// A segment size of 1 byte rolls over on every append.
					w, err := journal.OpenFile(ctx, journal.FileConfig{Dir: dir, NodeID: "old", SegmentSize: 1})
					require.NoError(b, err)
					for range segs - 1 {
						_, err := w.Append(ctx, journal.Entry{Producer: "bench", Payload: payload})
						require.NoError(b, err)
					}
					require.NoError(b, w.Close(ctx))
				}
				js := make([]*journal.File, writers)
				for i := range js {
					j, err := journal.OpenFile(ctx, journal.FileConfig{Dir: dir, NodeID: fmt.Sprintf("n%d", i)})
					require.NoError(b, err)
					b.Cleanup(func() { j.Close(ctx) })
					js[i] = j
				}
				i := 0
				for b.Loop() {
					if _, err := js[i%writers].Append(ctx, journal.Entry{Producer: "bench", Payload: payload}); err != nil {
						b.Fatal(err)
					}
					i++
				}
			})
		}
	}
}
