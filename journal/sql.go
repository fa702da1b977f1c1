package journal

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"time"

	"github.com/tandem-go/tandem/dialect"
	"github.com/tandem-go/tandem/ident"
	"github.com/tandem-go/tandem/internal/backoff"
)

// SQLConfig configures a SQL journal. The zero value of each field means its
// default.
type SQLConfig struct {
	// NodeID is the id of the node this journal instance writes as.
	// Required; see ident.NodeID for the alphabet.
	NodeID string
	// Prefix is prepended to every table name. Defaults to
	// dialect.DefaultPrefix ("tandem_"); see ident.Prefix.
	Prefix string
	// LockTimeout bounds the wait for the global revision lock. Defaults
	// to DefaultLockTimeout.
	LockTimeout time.Duration
	// Logger receives state changes (listener lost or regained). Defaults
	// to slog.Default().
	Logger *slog.Logger
}

func (c *SQLConfig) withDefaults() (SQLConfig, dialect.Tables, error) {
	out := *c
	if out.Prefix == "" {
		out.Prefix = dialect.DefaultPrefix
	}
	if out.LockTimeout == 0 {
		out.LockTimeout = DefaultLockTimeout
	}
	if out.Logger == nil {
		out.Logger = slog.Default()
	}
	if err := ident.NodeID("NodeID", out.NodeID); err != nil {
		return out, dialect.Tables{}, err
	}
	if out.LockTimeout < 0 {
		return out, dialect.Tables{}, fmt.Errorf("%w: LockTimeout is %v, must be > 0", ErrInvalidArgument, out.LockTimeout)
	}
	t, err := dialect.NewTables("Prefix", out.Prefix)
	return out, t, err
}

// SQL is the journal on a SQL database: the tables journal, global_revision
// and meta with the configured prefix. Revisions are allocated under the
// global revision row's lock, held only for the append's own statement(s).
// Each SQL journal holds one connection of the pool for its group commits
// (and, with a Notifier dialect, one more while watched), so db must allow
// at least 2 open connections (3 to Watch). It is safe for concurrent use;
// Close releases its connections but not db.
type SQL struct {
	db  *sql.DB
	d   dialect.Dialect
	t   dialect.Tables
	q   dialect.Queries
	cfg SQLConfig
	c   *committer

	conn *sql.Conn // owned by the committer goroutine

	notifier dialect.Notifier // nil when the dialect cannot push
	notify   chan struct{}    // pending NOTIFY, at most one
	hub      *hub
	bg       context.Context
	stopBG   context.CancelFunc
	bgDone   sync.WaitGroup

	closeOnce sync.Once
}

var (
	_ Journal = (*SQL)(nil)
	_ Watcher = (*SQL)(nil)
)

// OpenSQL opens the journal stored in db, creating its tables when they do
// not exist (safe when many nodes start at once).
func OpenSQL(ctx context.Context, db *sql.DB, d dialect.Dialect, cfg SQLConfig) (*SQL, error) {
	if db == nil || d == nil {
		return nil, fmt.Errorf("open journal: %w: db and dialect are required", ErrInvalidArgument)
	}
	cfg, t, err := cfg.withDefaults()
	if err != nil {
		return nil, fmt.Errorf("open journal: %w", err)
	}
	if n := db.Stats().MaxOpenConnections; n == 1 {
		return nil, fmt.Errorf("open journal: %w: the pool allows 1 connection; the journal keeps one for its group commits and needs at least one more to read (2, or 3 with Watch on PostgreSQL)", ErrInvalidArgument)
	}
	if err := d.CreateSchema(ctx, db, t, dialect.NewEpoch()); err != nil {
		return nil, fmt.Errorf("open journal: create schema: %w", err)
	}
	j := &SQL{db: db, d: d, t: t, q: d.Queries(t), cfg: cfg}
	j.bg, j.stopBG = context.WithCancel(context.Background())
	j.hub = newHub()
	if n, ok := d.(dialect.Notifier); ok {
		j.notifier = n
		j.notify = make(chan struct{}, 1)
		j.bgDone.Add(1)
		go j.notifyLoop()
	}
	j.c = newCommitter(j, cfg.LockTimeout+30*time.Second)
	return j, nil
}

// Append implements Journal.
func (j *SQL) Append(ctx context.Context, entries ...Entry) ([]int64, error) {
	return j.c.append(ctx, -1, entries)
}

// AppendIf implements Journal.
func (j *SQL) AppendIf(ctx context.Context, head int64, entries ...Entry) ([]int64, error) {
	if head < 0 {
		return nil, fmt.Errorf("append journal: %w: head is %d, must be >= 0", ErrInvalidArgument, head)
	}
	return j.c.append(ctx, head, entries)
}

// writeBatch implements batchWriter; it runs on the committer goroutine.
func (j *SQL) writeBatch(ctx context.Context, entries []Entry, expect int64) (int64, error) {
	if j.conn == nil {
		conn, err := j.db.Conn(ctx)
		if err != nil {
			return 0, j.d.Translate(err)
		}
		if err := j.d.PrepareConn(ctx, conn, j.cfg.LockTimeout); err != nil {
			conn.Close()
			return 0, err
		}
		j.conn = conn
	}
	des := make([]dialect.Entry, len(entries))
	for i, e := range entries {
		des[i] = dialect.Entry(e)
	}
	first, err := j.d.Append(ctx, j.conn, dialect.AppendRequest{
		Tables: j.t, NodeID: j.cfg.NodeID, Entries: des, ExpectHead: expect, LockTimeout: j.cfg.LockTimeout,
	})
	if err != nil {
		if errors.Is(err, dialect.ErrHeadMismatch) {
			return 0, fmt.Errorf("%w: %w", ErrConflict, err)
		}
		// The connection may be broken or mid-transaction; take a fresh
		// one for the next batch.
		j.conn.Close()
		j.conn = nil
		return 0, err
	}
	j.hub.wake() // watchers on this instance learn at once
	if j.notify != nil {
		select {
		case j.notify <- struct{}{}:
		default: // one is pending already: it will cover this commit
		}
	}
	return first, nil
}

// notifyLoop sends the NOTIFYs that commits asked for, one at a time, so a
// burst of commits costs one notification per round trip rather than one
// each, and never delays an append.
func (j *SQL) notifyLoop() {
	defer j.bgDone.Done()
	for {
		select {
		case <-j.bg.Done():
			return
		case <-j.notify:
		}
		ctx, cancel := context.WithTimeout(j.bg, 5*time.Second)
		err := j.notifier.Notify(ctx, j.db, j.t.Channel())
		cancel()
		if err != nil && j.bg.Err() == nil {
			j.cfg.Logger.Warn("tandem: journal notify failed; other nodes will see the change on their next poll",
				"node", j.cfg.NodeID, "err", err)
		}
	}
}

// Read implements Journal.
func (j *SQL) Read(ctx context.Context, after int64, limit int) ([]Record, error) {
	if err := checkRead(after, limit); err != nil {
		return nil, fmt.Errorf("read journal: %w", err)
	}
	rows, err := j.db.QueryContext(ctx, j.q.Read, after, int64(limit))
	if err != nil {
		return nil, fmt.Errorf("read journal: %w", j.d.Translate(err))
	}
	defer rows.Close()
	recs := make([]Record, 0, min(limit, 1024))
	for rows.Next() {
		var r Record
		var ts dialect.Time
		if err := rows.Scan(&r.Revision, &r.NodeID, &r.Producer, &r.Payload, &ts); err != nil {
			return nil, fmt.Errorf("read journal: %w", j.d.Translate(err))
		}
		r.Time = ts.T
		if r.Payload == nil {
			r.Payload = []byte{}
		}
		recs = append(recs, r)
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("read journal: %w", j.d.Translate(err))
	}
	recs = dense(recs, after)
	if len(recs) == 0 {
		// Nothing new, a commit not yet visible, or pruned away: only
		// the tail tells these apart.
		tail, err := j.Tail(ctx)
		if err != nil {
			return nil, fmt.Errorf("read journal: %w", err)
		}
		if after+1 < tail {
			return nil, fmt.Errorf("read journal: %w", &BehindTailError{After: after, Tail: tail})
		}
	}
	return recs, nil
}

// Head implements Journal.
func (j *SQL) Head(ctx context.Context) (int64, error) {
	var head int64
	if err := j.db.QueryRowContext(ctx, j.q.Head).Scan(&head); err != nil {
		return 0, fmt.Errorf("journal head: %w", j.d.Translate(err))
	}
	return head, nil
}

func (j *SQL) meta(ctx context.Context) (epoch string, tail int64, err error) {
	var version int
	if err := j.db.QueryRowContext(ctx, j.q.Meta).Scan(&epoch, &tail, &version); err != nil {
		return "", 0, j.d.Translate(err)
	}
	return epoch, tail, nil
}

// Tail implements Journal.
func (j *SQL) Tail(ctx context.Context) (int64, error) {
	_, tail, err := j.meta(ctx)
	if err != nil {
		return 0, fmt.Errorf("journal tail: %w", err)
	}
	return tail, nil
}

// Epoch implements Journal.
func (j *SQL) Epoch(ctx context.Context) (string, error) {
	epoch, _, err := j.meta(ctx)
	if err != nil {
		return "", fmt.Errorf("journal epoch: %w", err)
	}
	return epoch, nil
}

// pruneChunk bounds each DELETE of Prune, so that pruning a large backlog
// never runs one huge statement.
const pruneChunk = 10_000

// Prune implements Journal. It deletes in chunks of at most 10,000
// revisions, each its own statement.
func (j *SQL) Prune(ctx context.Context, below int64) (int64, error) {
	head, err := j.Head(ctx)
	if err != nil {
		return 0, fmt.Errorf("prune journal: %w", err)
	}
	if below < 1 || below > head+1 {
		return 0, fmt.Errorf("prune journal: %w: below is %d, must be in [1, head+1 = %d]", ErrInvalidArgument, below, head+1)
	}
	if _, err := j.db.ExecContext(ctx, j.q.SetTail, below); err != nil {
		return 0, fmt.Errorf("prune journal: set tail: %w", j.d.Translate(err))
	}
	var lowest sql.NullInt64
	if err := j.db.QueryRowContext(ctx, j.q.MinRevision).Scan(&lowest); err != nil {
		return 0, fmt.Errorf("prune journal: %w", j.d.Translate(err))
	}
	var deleted int64
	for from := lowest.Int64; lowest.Valid && from < below; from += pruneChunk {
		res, err := j.db.ExecContext(ctx, j.q.DeleteRange, from, min(from+pruneChunk, below))
		if err != nil {
			return deleted, fmt.Errorf("prune journal: delete: %w", j.d.Translate(err))
		}
		n, _ := res.RowsAffected()
		deleted += n
	}
	return deleted, nil
}

// CanWatch reports whether Watch can push wake-ups: true when the dialect
// implements dialect.Notifier (PostgreSQL).
func (j *SQL) CanWatch() bool { return j.notifier != nil }

// ErrWatchUnsupported is returned by Watch on a journal that cannot push.
var ErrWatchUnsupported = errors.New("journal: this backend cannot push wake-ups; poll instead")

// Watch implements Watcher. The first call starts the journal's single
// listening connection, which reconnects with backoff until Close. Appends
// on this instance wake its watchers directly.
func (j *SQL) Watch(ctx context.Context) (<-chan struct{}, error) {
	if j.notifier == nil {
		return nil, fmt.Errorf("watch journal (%s): %w", j.d.Name(), ErrWatchUnsupported)
	}
	if j.bg.Err() != nil {
		return nil, fmt.Errorf("watch journal: %w", ErrClosed)
	}
	if n := j.db.Stats().MaxOpenConnections; n > 0 && n < 3 {
		return nil, fmt.Errorf("watch journal: %w: the pool allows %d connections; watching holds one more besides the append connection, so it needs at least 3", ErrInvalidArgument, n)
	}
	j.hub.startOnce.Do(func() {
		j.bgDone.Add(1)
		go j.listenLoop()
	})
	return j.hub.subscribe(ctx, j.bg), nil
}

func (j *SQL) listenLoop() {
	defer j.bgDone.Done()
	bo := backoff.New(100*time.Millisecond, 10*time.Second)
	failing := false
	for j.bg.Err() == nil {
		ready := func() {
			bo.Reset()
			if failing {
				j.cfg.Logger.Info("tandem: journal listener reconnected", "node", j.cfg.NodeID)
				failing = false
			}
			j.hub.wake() // anything could have happened while we were away
		}
		err := j.notifier.Listen(j.bg, j.db, j.t.Channel(), ready, j.hub.wake)
		if j.bg.Err() != nil {
			return
		}
		if !failing {
			j.cfg.Logger.Warn("tandem: journal listener lost; polling only until it reconnects",
				"node", j.cfg.NodeID, "err", err)
			failing = true
		}
		select {
		case <-time.After(bo.Next()):
		case <-j.bg.Done():
		}
	}
}

// Close implements Journal. If ctx ends while a group commit is in flight,
// Close returns ctx's error and may be called again to finish.
func (j *SQL) Close(ctx context.Context) error {
	if err := j.c.close(ctx); err != nil {
		return fmt.Errorf("close journal: %w", err)
	}
	// The committer has exited, so its connection is ours now.
	j.closeOnce.Do(func() {
		j.stopBG()
		j.bgDone.Wait()
		if j.conn != nil {
			j.conn.Close()
			j.conn = nil
		}
	})
	return nil
}

// Stats returns counters of this instance's appends and group commits. It
// is safe to call at any time.
func (j *SQL) Stats() Stats { return j.c.statsSnapshot() }
