package journaltest

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"math/rand/v2"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/tandem-go/tandem/dialect"
	"github.com/tandem-go/tandem/journal"
)

// ConcurrentConfig sizes Concurrent.
type ConcurrentConfig struct {
	Nodes      int           // journal instances, each opened as its own node
	Goroutines int           // appenders per instance
	Readers    int           // polling readers, each on its own instance; default 3
	Duration   time.Duration // how long the appenders run
	// Faults says the journal under test fails appends on purpose: any
	// error is then a failed append (which must have written nothing),
	// not a test failure.
	Faults bool
	// Settle is how long an append whose outcome was reported unknown may
	// still commit after Append returned. The journals resolve open
	// outcomes, so it is 0 in every test: the final checks run as soon
	// as the writers stop.
	Settle time.Duration
	// Inject, when set, runs while the appenders do (a fault injector
	// such as a session killer) and must return soon after ctx ends.
	Inject func(ctx context.Context)
	// Tx, when set, begins a transaction on the journal's database, and
	// a share of the appends go through journal.SQL.AppendTx (the
	// outbox): committed and waited for, rolled back, committed after a
	// pause, or committed and never waited for (a writer that died before
	// relaying; another instance's Relay must move them).
	Tx func(j journal.Journal) (*sql.Tx, error)
}

// txAppender is the outbox of a SQL journal.
type txAppender interface {
	AppendTx(ctx context.Context, tx *sql.Tx, entries ...journal.Entry) (*journal.Pending, error)
	Relay(ctx context.Context) (int64, error)
}

// errRolledBack marks an append whose transaction the test rolled back.
var errRolledBack = errors.New("rolled back on purpose")

// ConcurrentResult counts what the appends of Concurrent came to.
type ConcurrentResult struct {
	Appends   int // append calls
	Acked     int // acknowledged
	Failed    int // failed with nothing written (including cancelled, conflicts, invalid)
	Unknown   int // failed with an error matching dialect.ErrOutcomeUnknown
	Committed int // of Unknown, found committed afterwards
	Records   int64
	// Stats adds up the journal instances' Stats (when they have it).
	Stats journal.Stats
}

// UnknownShare is the share of appends whose outcome stayed unknown.
func (r ConcurrentResult) UnknownShare() float64 {
	if r.Appends == 0 {
		return 0
	}
	return float64(r.Unknown) / float64(r.Appends)
}

// outcome of one append, by the unique payload of its first entry.
type outcome struct {
	revs    []int64 // acknowledged revisions
	unknown bool    // the error said the commit outcome is unknown
	// committed: a transaction that committed without waiting for its
	// revisions; its entries must be in the journal, consecutive.
	committed bool
	n         int // entries
}

// Concurrent is the test that would catch a lost record. Nodes × Goroutines
// appenders write for Duration through separate instances: plain appends
// of 1–3 entries, appends whose context is cancelled at a random moment,
// conditional appends (often stale), and invalid appends. Readers on other
// instances poll meanwhile. Afterwards it checks that every reader saw
// exactly the committed records, dense from 1, in order, with no duplicate;
// that every acknowledged append is there at the revisions Append returned
// and every failed one is absent (an error matching dialect.ErrOutcomeUnknown
// may go either way); and that every instance agrees on the head.
func Concurrent(t *testing.T, open Opener, cfg ConcurrentConfig) ConcurrentResult {
	if cfg.Readers == 0 {
		cfg.Readers = 3
	}
	ctx := ctxT(t)
	js := make([]journal.Journal, cfg.Nodes)
	for i := range js {
		js[i] = open(t, fmt.Sprintf("n%d", i))
	}
	readers := make([]journal.Journal, cfg.Readers)
	for i := range readers {
		readers[i] = open(t, fmt.Sprintf("reader%d", i))
	}

	var mu sync.Mutex
	results := map[string]outcome{}
	var failed []string
	var acked, cancelled, conflicts, unknown int

	stop := make(chan struct{})
	var writers sync.WaitGroup
	for n, j := range js {
		for g := range cfg.Goroutines {
			writers.Add(1)
			go func() {
				defer writers.Done()
				rng := rand.New(rand.NewPCG(uint64(n), uint64(g)))
				for seq := 0; ; seq++ {
					select {
					case <-stop:
						return
					default:
					}
					id := fmt.Sprintf("n%d/g%d/%d", n, g, seq)
					entries := []journal.Entry{{Producer: "test", Payload: []byte(id)}}
					for k := range rng.IntN(3) {
						entries = append(entries, journal.Entry{Producer: "test", Payload: fmt.Appendf(nil, "%s+%d", id, k+1)})
					}
					actx, cancel := context.WithCancel(ctx)
					var revs []int64
					var err error
					switch p := rng.IntN(100); {
					case p < 5: // invalid: must fail and write nothing
						entries = append(entries, journal.Entry{Producer: "", Payload: []byte("bad")})
						_, err = j.Append(actx, entries...)
						if !errors.Is(err, journal.ErrInvalidArgument) {
							t.Errorf("invalid append: got %v", err)
						}
					case p < 20: // cancelled at a random moment
						delay := time.Duration(rng.IntN(2000)) * time.Microsecond
						go func() {
							time.Sleep(delay)
							cancel()
						}()
						revs, err = j.Append(actx, entries...)
					case p < 30: // conditional, on a head that may be stale
						var head int64
						head, err = j.Head(actx)
						if err == nil {
							revs, err = j.AppendIf(actx, head, entries...)
						}
					case cfg.Tx != nil && p < 55: // in a transaction (the outbox)
						var pend *journal.Pending
						var tx *sql.Tx
						if tx, err = cfg.Tx(j); err != nil {
							break
						}
						if pend, err = j.(txAppender).AppendTx(actx, tx, entries...); err != nil {
							tx.Rollback()
							break
						}
						switch mode := rng.IntN(4); mode {
						case 0: // rolled back: must leave nothing
							tx.Rollback()
							err = errRolledBack
						case 1, 2: // committed, maybe after a pause, then waited for
							if mode == 2 {
								time.Sleep(time.Duration(rng.IntN(3000)) * time.Microsecond)
							}
							if err = tx.Commit(); err == nil {
								revs, err = pend.Wait(ctx)
							}
						default: // committed; the writer "dies" before relaying
							if err = tx.Commit(); err == nil {
								mu.Lock()
								results[id] = outcome{committed: true, n: len(entries)}
								mu.Unlock()
								cancel()
								continue
							}
						}
					default:
						revs, err = j.Append(actx, entries...)
					}
					cancel()
					mu.Lock()
					switch {
					case err == nil:
						if len(revs) != len(entries) {
							t.Errorf("append of %d entries returned %d revisions", len(entries), len(revs))
						}
						results[id] = outcome{revs: revs}
						acked++
					case errors.Is(err, dialect.ErrOutcomeUnknown):
						results[id] = outcome{unknown: true}
						unknown++
					default:
						switch {
						case errors.Is(err, errRolledBack):
						case errors.Is(err, context.Canceled):
							cancelled++
						case errors.Is(err, journal.ErrConflict):
							conflicts++
						case errors.Is(err, journal.ErrInvalidArgument), cfg.Faults:
						default:
							t.Errorf("unexpected append error: %v", err)
						}
						failed = append(failed, id)
					}
					mu.Unlock()
				}
			}()
		}
	}

	// Readers poll while the writers run, and check density as they go.
	seen := make([][]journal.Record, len(readers))
	readerErr := make(chan error, len(readers))
	var readersDone sync.WaitGroup
	writersDone := make(chan struct{})
	for i, r := range readers {
		readersDone.Add(1)
		go func() {
			defer readersDone.Done()
			var pos int64
			final := int64(-1)
			for {
				recs, err := r.Read(ctx, pos, 1+rand.IntN(200))
				if err != nil {
					readerErr <- err
					return
				}
				for _, rec := range recs {
					if rec.Revision != pos+1 {
						readerErr <- fmt.Errorf("reader %d: got revision %d after %d", i, rec.Revision, pos)
						return
					}
					pos = rec.Revision
				}
				seen[i] = append(seen[i], recs...)
				if final < 0 {
					select {
					case <-writersDone:
						if final, err = r.Head(ctx); err != nil {
							readerErr <- err
							return
						}
					default:
					}
				}
				if final >= 0 && pos >= final {
					return
				}
				if len(recs) == 0 {
					time.Sleep(time.Duration(rand.IntN(3)) * time.Millisecond)
				}
			}
		}()
	}

	injectDone := make(chan struct{})
	if cfg.Inject != nil {
		ictx, cancel := context.WithCancel(ctx)
		go func() {
			defer close(injectDone)
			cfg.Inject(ictx)
		}()
		time.Sleep(cfg.Duration)
		cancel()
		<-injectDone
	} else {
		time.Sleep(cfg.Duration)
	}
	close(stop)
	writers.Wait()
	time.Sleep(cfg.Settle)
	if cfg.Tx != nil {
		// Another node's poll relays what the "dead" writers left.
		if _, err := js[0].(txAppender).Relay(ctx); err != nil {
			t.Errorf("relay: %v", err)
		}
	}
	close(writersDone)
	readersDone.Wait()
	close(readerErr)
	for err := range readerErr {
		require.NoError(t, err)
	}

	head, err := js[0].Head(ctx)
	require.NoError(t, err)
	for _, j := range append(js, readers...) {
		h, err := j.Head(ctx)
		require.NoError(t, err)
		require.Equal(t, head, h, "every instance sees one head")
	}
	all := readAll(t, js[len(js)-1], 0)
	require.Len(t, all, int(head), "a fresh read finds every revision up to the head")

	// The committed log, by first-entry payload.
	at := map[string]int64{}
	for i, r := range all {
		require.EqualValues(t, i+1, r.Revision)
		id := string(r.Payload)
		if first, dup := at[id]; dup {
			// Say enough to tell a batch written twice from a relay that
			// moved the same pending entries twice.
			a := all[first-1]
			t.Fatalf("payload %q appears twice: revision %d (node %s, instance %s, at %s) and %d (node %s, instance %s, at %s); outcome recorded: %+v",
				id, a.Revision, a.NodeID, a.Instance, a.Time.Format(time.RFC3339Nano),
				r.Revision, r.NodeID, r.Instance, r.Time.Format(time.RFC3339Nano), results[strings.SplitN(id, "+", 2)[0]])
		}
		at[id] = r.Revision
	}
	for i, s := range seen {
		require.Len(t, s, len(all), "reader %d saw every record", i)
		for k := range s {
			require.Equal(t, all[k].Revision, s[k].Revision)
			require.Equal(t, all[k].Payload, s[k].Payload, "reader %d disagrees at revision %d", i, s[k].Revision)
			require.Equal(t, all[k].NodeID, s[k].NodeID)
		}
	}
	committed := 0
	for id, o := range results {
		rev, ok := at[id]
		if o.committed {
			require.True(t, ok, "committed transaction %q was never relayed", id)
			for k := 1; k < o.n; k++ {
				require.Equal(t, fmt.Sprintf("%s+%d", id, k), string(all[rev-1+int64(k)].Payload), "a transaction's entries are consecutive")
			}
			continue
		}
		if o.unknown {
			if ok {
				committed++
			}
			continue
		}
		require.True(t, ok, "acknowledged append %q is missing", id)
		require.Equal(t, o.revs[0], rev, "append %q is at another revision than acknowledged", id)
		for k, r := range o.revs {
			require.EqualValues(t, rev+int64(k), r, "an append's revisions are consecutive")
			if k > 0 {
				require.Equal(t, fmt.Sprintf("%s+%d", id, k), string(all[r-1].Payload))
			}
		}
		committed++
	}
	for _, id := range failed {
		_, ok := at[id]
		require.False(t, ok, "failed append %q was committed", id)
	}
	// Every record belongs to an append that was acknowledged or whose
	// outcome was unknown: no phantom records.
	for _, r := range all {
		id, _, _ := strings.Cut(string(r.Payload), "+")
		o, ok := results[id]
		require.True(t, ok, "record %d (%q) belongs to no acknowledged append", r.Revision, r.Payload)
		if !o.unknown && !o.committed {
			require.GreaterOrEqual(t, r.Revision, o.revs[0])
			require.LessOrEqual(t, r.Revision, o.revs[len(o.revs)-1])
		}
	}
	res := ConcurrentResult{Appends: len(results) + len(failed), Acked: acked, Failed: len(failed), Unknown: unknown,
		Committed: committed - acked, Records: head}
	for _, j := range js {
		if s, ok := j.(interface{ Stats() journal.Stats }); ok {
			st := s.Stats()
			res.Stats.Appends += st.Appends
			res.Stats.Batches += st.Batches
			res.Stats.FailedBatches += st.FailedBatches
			res.Stats.ConnsDiscarded += st.ConnsDiscarded
			res.Stats.ResolvedCommitted += st.ResolvedCommitted
			res.Stats.ResolvedNotWritten += st.ResolvedNotWritten
			res.Stats.OutcomeUnknown += st.OutcomeUnknown
			res.Stats.Relayed += st.Relayed
		}
	}
	t.Logf("%d nodes × %d goroutines, %v: %d records, %d appends acknowledged, %d cancelled, %d conflicts, %d outcome unknown (%d of them committed, %.2f%% of %d appends); %d failed batches, %d connections discarded, open outcomes resolved: %d committed, %d not written",
		cfg.Nodes, cfg.Goroutines, cfg.Duration, head, acked, cancelled, conflicts, unknown, committed-acked,
		100*res.UnknownShare(), res.Appends, res.Stats.FailedBatches, res.Stats.ConnsDiscarded, res.Stats.ResolvedCommitted, res.Stats.ResolvedNotWritten)
	return res
}
