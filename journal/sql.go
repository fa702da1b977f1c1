package journal

import (
	"context"
	"database/sql"
	"database/sql/driver"
	"errors"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"sync"
	"sync/atomic"
	"time"

	"github.com/tandem-go/tandem/dialect"
	"github.com/tandem-go/tandem/ident"
	"github.com/tandem-go/tandem/internal/backoff"
	"github.com/tandem-go/tandem/internal/sqldialect"
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
	// Instance identifies this process among the incarnations of NodeID:
	// it is stored with every record (Record.Instance), so that a
	// restarted or replacing process can tell what an earlier one wrote.
	// 1 to 64 bytes of [A-Za-z0-9._-]. Defaults to a random id (NewInstance).
	Instance string
	// LockTimeout bounds the wait for the global revision lock. Defaults
	// to DefaultLockTimeout.
	LockTimeout time.Duration
	// ResolveTimeout bounds how long an append whose outcome was left
	// open (the statement was interrupted or the connection lost after
	// sending) keeps trying to learn it; see SQL. Only when the database
	// stays unreachable that long does Append return an error matching
	// dialect.ErrOutcomeUnknown. Defaults to DefaultResolveTimeout.
	ResolveTimeout time.Duration
	// OpenTimeout bounds OpenSQL's first contact with the database (the
	// schema check and migrations) when its context has no deadline, so
	// that a server that never answers (a wrong port) fails Open instead
	// of hanging it. Defaults to DefaultOpenTimeout.
	OpenTimeout time.Duration
	// Logger receives state changes (listener lost or regained). Defaults
	// to slog.Default().
	Logger *slog.Logger
}

func (c *SQLConfig) withDefaults() (SQLConfig, sqldialect.Tables, error) {
	out := *c
	if out.Prefix == "" {
		out.Prefix = dialect.DefaultPrefix
	}
	if out.LockTimeout == 0 {
		out.LockTimeout = DefaultLockTimeout
	}
	if out.ResolveTimeout == 0 {
		out.ResolveTimeout = DefaultResolveTimeout
	}
	if out.OpenTimeout == 0 {
		out.OpenTimeout = DefaultOpenTimeout
	}
	if out.Instance == "" {
		out.Instance = NewInstance()
	}
	if out.Logger == nil {
		out.Logger = slog.Default()
	}
	if err := ident.NodeID("NodeID", out.NodeID); err != nil {
		return out, sqldialect.Tables{}, err
	}
	if err := ident.NodeID("Instance", out.Instance); err != nil {
		return out, sqldialect.Tables{}, err
	}
	for _, d := range []struct {
		name string
		v    time.Duration
	}{{"LockTimeout", out.LockTimeout}, {"ResolveTimeout", out.ResolveTimeout}, {"OpenTimeout", out.OpenTimeout}} {
		if d.v < 0 {
			return out, sqldialect.Tables{}, fmt.Errorf("%w: %s is %v, must be > 0", ErrInvalidArgument, d.name, d.v)
		}
	}
	t, err := sqldialect.NewTables("Prefix", out.Prefix)
	return out, t, err
}

// SQL is the journal on a SQL database: the tables journal, global_revision
// and meta with the configured prefix. Revisions are allocated under the
// global revision row's lock, held only for the append's own statement(s).
//
// # Connections
//
// While appends keep coming, the journal keeps one connection of the pool
// for its group commits, prepared with the dialect's session settings (the
// lock timeout). It gives it back to the pool (settings reset) after
// ConnIdle without an append and at least every ConnMaxHold, so an idle
// journal holds no connection and the pool's SetConnMaxLifetime and
// SetConnMaxIdleTime apply to it within ConnMaxHold. With a Notifier
// dialect, Watch holds one more, which gives way when the server is short
// of connections. Used on its own, the journal needs db to allow at least
// 2 open connections (the append connection and one to read), 3 while
// Watch listens; OpenSQL refuses a pool of 1. A cluster node's needs, per
// feature, are stated once, in package cluster's "Connections"
// (cluster.SQLConns).
//
// While a group commit waits for a connection from a busy pool, nothing
// has been sent: an append whose context ends then returns its context's
// error, and the group commit stops waiting once none of its appends is
// left.
//
// # Outcomes
//
// An append's outcome is definite whenever the database is reachable. A
// connection that saw any error during an append is discarded (closed, not
// returned to the pool), so the server rolls back whatever the failed
// statement left open; no dialect relies on a server-side handler for
// that. Every group commit carries a batch id stored with its records.
// When the error does not prove that the batch ended before its commit (a
// statement interrupted by KILL QUERY, pg_cancel_backend or a statement
// timeout, a lost connection), the journal first makes sure the old
// transaction has ended — it terminates the abandoned session and waits
// until the server no longer lists it (PostgreSQL, MySQL), or waits out
// the lock timeout (SQL Server, Oracle) — and then, holding the counter's
// row lock, looks the batch up on another
// connection: Append returns the revisions it committed at, or a plain
// error with nothing written. A prune that deleted some of the batch's
// records before the lookup leaves the others as proof that it committed.
// Only when the database stays unreachable for ResolveTimeout, or a prune
// deleted every record above what the journal knew when it sent the
// batch, does Append return an error matching dialect.ErrOutcomeUnknown.
//
// It is safe for concurrent use; Close releases its connections but not
// db.
type SQL struct {
	db  *sql.DB
	d   dialect.Dialect
	t   sqldialect.Tables
	q   sqldialect.Queries
	cfg SQLConfig
	c   *committer

	// The append connection, owned by the committer goroutine (and by
	// Close once the committer has exited).
	conn    *sql.Conn
	connAt  time.Time // when conn was taken from the pool
	session string    // conn's server session, for a SessionEnder
	ender   sqldialect.SessionEnder
	// connIdle and connMaxHold are ConnIdle and ConnMaxHold (tests
	// shorten them).
	connIdle, connMaxHold time.Duration

	// known is a revision known to be committed; a batch sent later has
	// higher revisions, so an open outcome's lookup starts above it.
	known     atomic.Int64
	batchBase int64 // random; batch ids are batchBase + a sequence number
	batchSeq  int64 // owned by the committer goroutine
	outcomes  outcomeStats
	// afterSettle, set by tests only, runs after each of an outcome
	// lookup's settling changes (delta), before its commit.
	afterSettle func(ctx context.Context, delta int64) error

	relayReqs chan chan error // Waits asking for a relay (relayLoop)

	// pruned is where DeleteBatch's next look for the lowest record
	// starts (see prunedBound).
	pruned prunedBound

	notifier sqldialect.Notifier // nil when the dialect cannot push
	// listenDo runs statements on the listening connection while there is
	// one (WithSession).
	listenDo atomic.Pointer[sqldialect.ConnDoer]
	notify   chan struct{} // pending NOTIFY, at most one
	hub      *hub
	bg       context.Context
	stopBG   context.CancelFunc
	bgDone   sync.WaitGroup
	// watchMu makes Watch's check of bg and its start of the listener
	// one step with respect to Close, which cancels bg under it: the
	// listener joins bgDone before Close waits on it, or not at all.
	watchMu sync.Mutex

	closeOnce sync.Once
}

var (
	_ Journal = (*SQL)(nil)
	_ Poller  = (*SQL)(nil)
	_ Watcher = (*SQL)(nil)
	_ Pruner  = (*SQL)(nil)

	_ preparer = (*SQL)(nil)
	_ idler    = (*SQL)(nil)
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
		return nil, fmt.Errorf("open journal: %w: the pool allows 1 connection; the journal keeps one for its group commits and needs at least one more to read (2, or 3 while Watch listens on a Notifier dialect; a cluster node needs cluster.SQLConns)", ErrInvalidArgument)
	}
	if _, ok := ctx.Deadline(); !ok {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, cfg.OpenTimeout)
		defer cancel()
	}
	if err := sqldialect.Migrate(ctx, db, d, t, sqldialect.NewEpoch()); err != nil {
		return nil, fmt.Errorf("open journal: %w", openError(ctx, err))
	}
	j := &SQL{db: db, d: d, t: t, q: d.Queries(t), cfg: cfg, batchBase: rand.Int64(), connIdle: ConnIdle, connMaxHold: ConnMaxHold}
	j.ender, _ = d.(sqldialect.SessionEnder)
	head, err := j.Head(ctx)
	if err != nil {
		return nil, fmt.Errorf("open journal: %w", openError(ctx, err))
	}
	j.known.Store(head)
	j.bg, j.stopBG = context.WithCancel(context.Background())
	j.hub = newHub()
	if n, ok := d.(sqldialect.Notifier); ok {
		j.notifier = n
		j.notify = make(chan struct{}, 1)
		j.bgDone.Add(1)
		go j.notifyLoop()
	}
	j.c = newCommitter(j, cfg.LockTimeout+30*time.Second)
	// Started here, not on the first Wait: a WaitGroup must not gain a
	// goroutine while Close waits on it.
	j.relayReqs = make(chan chan error)
	j.bgDone.Add(1)
	go j.relayLoop()
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

// Defaults of SQLConfig and the append connection's schedule.
const (
	// DefaultResolveTimeout bounds the search for an open outcome.
	DefaultResolveTimeout = 30 * time.Second
	// DefaultOpenTimeout bounds OpenSQL when its context has no deadline.
	DefaultOpenTimeout = 30 * time.Second
	// ConnIdle is how long the append connection stays held without an
	// append before it goes back to the pool.
	ConnIdle = time.Second
	// ConnMaxHold is how long the append connection is held at most,
	// however busy the journal is, before it goes back to the pool and a
	// connection is taken afresh: the pool's lifetime settings apply
	// within it.
	ConnMaxHold = 30 * time.Second
)

// openError names the bound that ended a first contact that never got an
// answer.
func openError(ctx context.Context, err error) error {
	if errors.Is(ctx.Err(), context.DeadlineExceeded) {
		return fmt.Errorf("no answer from the database before the open deadline (OpenTimeout, or the context's): %w", err)
	}
	return err
}

// raise sets v to rev if rev is higher.
func raise(v *atomic.Int64, rev int64) {
	for {
		cur := v.Load()
		if rev <= cur || v.CompareAndSwap(cur, rev) {
			return
		}
	}
}

// prepare implements preparer: it gives the append connection back when
// it was held for ConnMaxHold and takes one from the pool (and prepares
// it) when it holds none. It runs on the committer goroutine. The
// committer calls it before each batch with a context that ends when every
// append of the batch has ended, so callers with short deadlines do not
// wait for a saturated pool (nor keep the node's other appends waiting).
func (j *SQL) prepare(ctx context.Context) error {
	if j.prepared() {
		return nil
	}
	if j.conn != nil {
		j.releaseConn()
	}
	return j.takeConn(ctx)
}

// prepared implements preparer: the append connection is held and not
// yet due to be handed back (ConnMaxHold).
func (j *SQL) prepared() bool {
	return j.conn != nil && time.Since(j.connAt) <= j.connMaxHold
}

// writeBatch implements batchWriter; it runs on the committer goroutine,
// after prepare.
func (j *SQL) writeBatch(ctx context.Context, entries []Entry, expect int64) (int64, error) {
	if j.conn == nil { // not prepared: nothing has been sent yet
		if err := j.takeConn(ctx); err != nil {
			return 0, err
		}
	}
	des := make([]sqldialect.Entry, len(entries))
	for i, e := range entries {
		des[i] = sqldialect.Entry(e)
	}
	j.batchSeq++
	batch := (j.batchBase + j.batchSeq) & (1<<63 - 1)
	after := j.known.Load()
	first, err := j.d.Append(ctx, j.conn, sqldialect.AppendRequest{
		Tables: j.t, NodeID: j.cfg.NodeID, Instance: j.cfg.Instance, BatchID: batch,
		Entries: des, ExpectHead: expect, LockTimeout: j.cfg.LockTimeout,
	})
	// The abandoned statement's lock wait started at the latest now (a
	// large request may still have been on its way when it was sent).
	gaveUp := time.Now()
	if errors.Is(err, dialect.ErrHeadMismatch) {
		// The statement completed and wrote nothing; the connection is
		// as good as before.
		return 0, fmt.Errorf("%w: %w", ErrConflict, err)
	}
	if err != nil {
		session := j.session
		j.discardConn()
		var open *sqldialect.OutcomeError
		if !errors.As(err, &open) {
			return 0, err // proven: nothing was written
		}
		if first, err = j.resolve(open, batch, len(entries), after, session, gaveUp); err != nil {
			return 0, err
		}
	}
	last := first + int64(len(entries)) - 1
	if first <= after {
		// The journal went back below what this instance had seen (a
		// restored database): forget that, so that the next open
		// outcome is looked up from below this batch. A lower known
		// revision only makes a lookup look further.
		j.known.Store(last)
	}
	raise(&j.known, last)
	j.hub.wake() // watchers on this instance learn at once
	if j.notify != nil {
		select {
		case j.notify <- struct{}{}:
		default: // one is pending already: it will cover this commit
		}
	}
	return first, nil
}

// takeConn takes the append connection from the pool and prepares it.
func (j *SQL) takeConn(ctx context.Context) error {
	conn, err := j.db.Conn(ctx)
	if err != nil {
		return j.d.Translate(err)
	}
	j.conn, j.connAt, j.session = conn, time.Now(), ""
	if err := j.d.PrepareConn(ctx, conn, j.cfg.LockTimeout); err != nil {
		j.discardConn()
		return err
	}
	if j.ender != nil {
		if j.session, err = j.ender.SessionID(ctx, conn); err != nil {
			j.discardConn()
			return fmt.Errorf("read session id: %w", err)
		}
	}
	return nil
}

// releaseConn gives the append connection back to the pool with its
// session settings reset, or discards it if they cannot be.
func (j *SQL) releaseConn() {
	if j.conn == nil {
		return
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if err := j.d.ResetConn(ctx, j.conn); err != nil {
		j.discardConn()
		return
	}
	j.conn.Close()
	j.conn = nil
}

// discardConn closes the append connection for good instead of returning
// it to the pool: database/sql drops a connection whose use reported
// driver.ErrBadConn. The server then rolls back whatever the session had
// open.
func (j *SQL) discardConn() {
	if j.conn == nil {
		return
	}
	_ = j.conn.Raw(func(any) error { return driver.ErrBadConn })
	j.conn.Close()
	j.conn = nil
	j.outcomes.discarded.Add(1)
}

// idle implements idler: the committer calls it after ConnIdle without an
// append.
func (j *SQL) idle() { j.releaseConn() }

// holding implements idler: while it holds the append connection, the
// committer calls idle after ConnIdle without an append.
func (j *SQL) holding() (bool, time.Duration) {
	if j.conn == nil {
		return false, 0
	}
	return true, j.connIdle
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
		// On the listening connection when there is one: a node that
		// keeps no idle connections (cluster.ConfigurePool) then takes
		// none from the server for it.
		err := j.WithSession(ctx, func(q Queryer) error { return j.notifier.Notify(ctx, q, j.t.Channel()) })
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
	var sc recordScan
	dest := sc.dest()
	for rows.Next() {
		if err := rows.Scan(dest...); err != nil {
			return nil, fmt.Errorf("read journal: %w", j.d.Translate(err))
		}
		recs = append(recs, sc.record())
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("read journal: %w", j.d.Translate(err))
	}
	recs = dense(recs, after)
	if len(recs) > 0 {
		raise(&j.known, recs[len(recs)-1].Revision)
	}
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

// Poll implements Poller: one statement reads the records after after
// together with the epoch, tail, head and whether the outbox holds
// committed entries.
func (j *SQL) Poll(ctx context.Context, after int64, limit int) (PollResult, error) {
	return j.pollWith(ctx, j.q.Poll, after, limit)
}

// PollRecords implements RecordPoller: Poll without the look at the
// outbox, whose flag (Pending) it leaves false. On a pending table that
// holds many deleted rows the database cannot remove yet (a long
// transaction holds back vacuum or purge after heavy AppendTx use), that
// look walks through all of them; a poll that does not need the flag
// skips it.
func (j *SQL) PollRecords(ctx context.Context, after int64, limit int) (PollResult, error) {
	return j.pollWith(ctx, j.q.PollRecords, after, limit)
}

func (j *SQL) pollWith(ctx context.Context, stmt string, after int64, limit int) (PollResult, error) {
	var res PollResult
	if err := checkRead(after, limit); err != nil {
		return res, fmt.Errorf("poll journal: %w", err)
	}
	err := j.WithSession(ctx, func(q Queryer) error {
		var err error
		res, err = j.poll(ctx, q, stmt, after, limit)
		return err
	})
	if err != nil {
		return PollResult{}, fmt.Errorf("poll journal: %w", err)
	}
	return res, nil
}

// Queryer is where WithSession runs statements: the listening connection
// (a *sql.Conn) or the journal's pool (its *sql.DB).
type Queryer interface {
	ExecContext(ctx context.Context, query string, args ...any) (sql.Result, error)
	QueryContext(ctx context.Context, query string, args ...any) (*sql.Rows, error)
	QueryRowContext(ctx context.Context, query string, args ...any) *sql.Row
}

// WithSession runs fn on the journal's listening connection while there is
// one (the one Watch holds: PostgreSQL's LISTEN), between two waits for
// notifications, and on the journal's pool otherwise (no listener yet, one
// lost or given way, a dialect that cannot push). So a node whose push
// listener is up polls, stores its position and notifies without taking
// another connection from the server. Calls on the listener are served one
// at a time. fn must not keep q nor leave a transaction open on it; a
// statement that breaks the listening connection makes the listener
// reconnect, and the calls after it use the pool meanwhile.
func (j *SQL) WithSession(ctx context.Context, fn func(q Queryer) error) error {
	if do := j.listenDo.Load(); do != nil {
		err := (*do)(ctx, func(conn *sql.Conn) error { return fn(conn) })
		if !errors.Is(err, sqldialect.ErrNotListening) {
			return err
		}
	}
	return fn(j.db)
}

// Listening reports whether the journal holds its listening connection
// now: Watch was called and the listener is connected (not lost, nor
// given up for want of server connections).
func (j *SQL) Listening() bool { return j.listenDo.Load() != nil }

func (j *SQL) poll(ctx context.Context, q Queryer, stmt string, after int64, limit int) (PollResult, error) {
	var res PollResult
	rows, err := q.QueryContext(ctx, stmt, after, int64(limit))
	if err != nil {
		return res, j.d.Translate(err)
	}
	defer rows.Close()
	recs := make([]Record, 0, min(limit, 64))
	meta := false
	var pending int64
	var sc recordScan
	dest := append([]any{&res.Epoch, &res.Tail, &res.Head, &pending}, sc.dest()...)
	for rows.Next() {
		if err := rows.Scan(dest...); err != nil {
			return PollResult{}, j.d.Translate(err)
		}
		meta, res.Pending = true, pending != 0
		if !sc.rev.Valid {
			continue // no record follows after
		}
		recs = append(recs, sc.record())
	}
	if err := rows.Err(); err != nil {
		return PollResult{}, j.d.Translate(err)
	}
	if !meta {
		return PollResult{}, fmt.Errorf("%w: the meta or global_revision row is missing", ErrCorrupt)
	}
	res.Records = dense(recs, after)
	if n := len(res.Records); n > 0 {
		last := res.Records[n-1].Revision
		raise(&j.known, last)
		res.Head = max(res.Head, last)
	}
	return res, nil
}

// recordScan receives a record's columns as Queries.Read returns them
// (revision, node_id, instance, producer, payload, created_at), also at
// the end of a Poll row, whose outer join leaves them NULL when no record
// follows. One serves a whole result set: Scan gives each row its own
// payload slice.
type recordScan struct {
	rev                      sql.NullInt64
	node, instance, producer sql.NullString
	payload                  []byte
	ts                       sqldialect.Time
}

// dest returns the scan targets, in column order.
func (s *recordScan) dest() []any {
	return []any{&s.rev, &s.node, &s.instance, &s.producer, &s.payload, &s.ts}
}

// record returns the row scanned last. instance is empty for records
// written before schema version 2; a payload is never nil.
func (s *recordScan) record() Record {
	payload := s.payload
	if payload == nil {
		payload = []byte{}
	}
	return Record{Revision: s.rev.Int64, NodeID: s.node.String, Instance: s.instance.String,
		Producer: s.producer.String, Payload: payload, Time: s.ts.T}
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
	return j.metaOn(ctx, j.db)
}

// metaOn is meta, read through q (the pool, or a transaction).
func (j *SQL) metaOn(ctx context.Context, q Queryer) (epoch string, tail int64, err error) {
	var version int
	if err := q.QueryRowContext(ctx, j.q.Meta).Scan(&epoch, &tail, &version); err != nil {
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

// Prune implements Journal: RaiseTail, then DeleteBatch in chunks of at
// most 10,000 revisions, each its own statement, until none is left below
// the tail.
func (j *SQL) Prune(ctx context.Context, below int64) (int64, error) {
	return pruneAll(ctx, j, below, pruneChunk)
}

// RaiseTail implements Pruner.
func (j *SQL) RaiseTail(ctx context.Context, below int64) (int64, error) {
	head, err := j.Head(ctx)
	if err != nil {
		return 0, fmt.Errorf("raise tail: %w", err)
	}
	if below < 1 || below > head+1 {
		return 0, fmt.Errorf("raise tail: %w: below is %d, must be in [1, head+1 = %d]", ErrInvalidArgument, below, head+1)
	}
	if _, err := j.db.ExecContext(ctx, j.q.SetTail, below); err != nil {
		return 0, fmt.Errorf("raise tail: %w", j.d.Translate(err))
	}
	_, tail, err := j.meta(ctx)
	if err != nil {
		return 0, fmt.Errorf("raise tail: %w", err)
	}
	return tail, nil
}

// DeleteBatch implements Pruner: one DELETE of at most limit revisions,
// from the lowest one kept.
//
// The lowest one is looked up from where the previous batch of this
// journal ended (prunedBound), not from the start of the key: the rows
// earlier batches deleted stay in the primary key's index until vacuum
// (PostgreSQL) or purge (InnoDB) removes them, and while a long
// transaction holds those back, a MIN from the start of the key would
// walk every one of them on each batch, making a prune quadratic.
func (j *SQL) DeleteBatch(ctx context.Context, limit int) (int64, error) {
	if limit <= 0 {
		return 0, fmt.Errorf("delete batch: %w: limit is %d, must be > 0", ErrInvalidArgument, limit)
	}
	epoch, tail, err := j.meta(ctx)
	if err != nil {
		return 0, fmt.Errorf("delete batch: %w", err)
	}
	var lowest sql.NullInt64
	if err := j.db.QueryRowContext(ctx, j.q.MinRevision, j.pruned.from(epoch, tail)).Scan(&lowest); err != nil {
		return 0, fmt.Errorf("delete batch: %w", j.d.Translate(err))
	}
	if !lowest.Valid || lowest.Int64 >= tail {
		j.pruned.reset()
		return 0, nil
	}
	to := min(lowest.Int64+int64(limit), tail)
	res, err := j.db.ExecContext(ctx, j.q.DeleteRange, lowest.Int64, to)
	if err != nil {
		return 0, fmt.Errorf("delete batch: %w", j.d.Translate(err))
	}
	j.pruned.set(epoch, to)
	n, _ := res.RowsAffected()
	return n, nil
}

// prunedBound is a revision below which the journal holds no record, as
// its last DeleteBatch left it: the rows below the batch's lowest were
// gone already, and it deleted those up to the end of its range.
// Nothing is ever written below the tail again (an append's revisions
// are above the committed head, which RaiseTail never passes), so the
// bound stays true for as long as the journal is the same one: it is
// kept with the epoch it was found in, and dropped when the epoch
// changes, when the tail is below it (a restored database), and at the
// end of every prune (a DeleteBatch that finds nothing to delete), so
// that each prune starts with one look from the start of the key.
// Concurrent DeleteBatch calls only ever store true bounds.
type prunedBound struct {
	mu    sync.Mutex
	epoch string
	below int64
}

// from returns where to look for the lowest record: the bound when it
// was found in epoch and is not above tail, 0 otherwise.
func (b *prunedBound) from(epoch string, tail int64) int64 {
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.epoch != epoch || b.below > tail {
		return 0
	}
	return b.below
}

func (b *prunedBound) set(epoch string, below int64) {
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.epoch != epoch || below > b.below {
		b.epoch, b.below = epoch, below
	}
}

func (b *prunedBound) reset() {
	b.mu.Lock()
	defer b.mu.Unlock()
	b.epoch, b.below = "", 0
}

// CanWatch reports whether Watch can push wake-ups: true when the dialect
// can push notifications (PostgreSQL).
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
	j.watchMu.Lock()
	defer j.watchMu.Unlock()
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

// listenLoop keeps the journal's listening connection. It reconnects
// with jittered backoff after a failure (a refused connection included),
// and after the listener yielded its connection because the server was
// short of them (sqldialect.ErrListenerYielded) it waits longer, between
// listenYieldMin and listenYieldMax. Meanwhile the node polls.
func (j *SQL) listenLoop() {
	defer j.bgDone.Done()
	bo := backoff.New(100*time.Millisecond, 10*time.Second)
	yieldBo := backoff.New(listenYieldMin, listenYieldMax)
	failing := false
	for j.bg.Err() == nil {
		ready := func() {
			bo.Reset()
			yieldBo.Reset()
			if failing {
				j.cfg.Logger.Info("tandem: journal listener reconnected", "node", j.cfg.NodeID)
				failing = false
			}
			j.hub.wake() // anything could have happened while we were away
		}
		err := j.notifier.Listen(j.bg, j.db, j.t.Channel(), func(do sqldialect.ConnDoer) {
			j.listenDo.Store(&do)
			ready()
		}, j.hub.wake)
		j.listenDo.Store(nil)
		if j.bg.Err() != nil {
			return
		}
		yielded := errors.Is(err, sqldialect.ErrListenerYielded)
		if !failing {
			msg := "tandem: journal listener lost; polling only until it reconnects"
			if yielded {
				msg = "tandem: journal listener gave its connection up, the database being short of connections; polling only until it has room"
			}
			j.cfg.Logger.Warn(msg, "node", j.cfg.NodeID, "err", err)
			failing = true
		}
		wait := bo.Next()
		if yielded {
			wait = yieldBo.Next()
		}
		select {
		case <-time.After(wait):
		case <-j.bg.Done():
		}
	}
}

// The wait of a listener that yielded its connection before it tries
// again (jittered, doubling from min to max while it keeps yielding).
const (
	listenYieldMin = 5 * time.Second
	listenYieldMax = time.Minute
)

// Close implements Journal. If ctx ends while a group commit is in flight,
// Close returns ctx's error and may be called again to finish.
func (j *SQL) Close(ctx context.Context) error {
	if err := j.c.close(ctx); err != nil {
		return fmt.Errorf("close journal: %w", err)
	}
	// The committer has exited, so its connection is ours now.
	j.closeOnce.Do(func() {
		j.watchMu.Lock()
		j.stopBG()
		j.watchMu.Unlock()
		j.bgDone.Wait()
		j.releaseConn()
	})
	return nil
}

// Stats returns counters of this instance's appends and group commits. It
// is safe to call at any time.
func (j *SQL) Stats() Stats {
	s := j.c.statsSnapshot()
	j.outcomes.fill(&s)
	return s
}
