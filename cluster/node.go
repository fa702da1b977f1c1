package cluster

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"time"

	"github.com/tandem-go/tandem/ident"
	"github.com/tandem-go/tandem/janitor"
	"github.com/tandem-go/tandem/journal"
	"github.com/tandem-go/tandem/lock"
	"github.com/tandem-go/tandem/revision"
)

// Defaults of Config, with Jackrabbit's names in brackets.
const (
	// DefaultSyncDelay is how often a node polls the journal when nothing
	// wakes it earlier [syncDelay].
	DefaultSyncDelay = 5 * time.Second
	// DefaultStopDelayFactor times SyncDelay bounds the final sync of Stop
	// [stopDelay].
	DefaultStopDelayFactor = 10
	// DefaultBatchSize is how many records one read fetches.
	DefaultBatchSize = 1000
	// DefaultMemberTTL is the TTL of a node's membership lease.
	DefaultMemberTTL = 15 * time.Second
	// DefaultJoinWaitFactor times MemberTTL bounds how long Start waits
	// for the previous holder of the node id (a crashed incarnation) to
	// expire: its lease runs out at most a MemberTTL after its last
	// heartbeat (on a shared folder, a MemberTTL after this process first
	// sees it), so twice that leaves a wide margin.
	DefaultJoinWaitFactor = 2
	// DefaultHandlerTimeout bounds one call of a Handler: its context
	// ends then, and the call counts as a failure (see Config).
	DefaultHandlerTimeout = time.Minute
	// DefaultSyncTimeout bounds each poll and position save of the sync
	// loop (see Config.SyncTimeout).
	DefaultSyncTimeout = 30 * time.Second
)

// Start positions for a node that has none stored.
type StartAt int

const (
	// StartAtHead starts at the journal's head: a new node's caches are
	// empty, so it has nothing to catch up on. The default.
	StartAtHead StartAt = iota
	// StartAtBeginning applies every record still in the journal.
	StartAtBeginning
)

// Handler applies the records of one producer to what a node holds
// privately. Apply is called in revision order, one record at a time, from
// the node's sync goroutine. Delivery is at least once: after a crash or a
// failed save, records are applied again, so Apply must be idempotent. A
// returned error is retried with backoff, never skipped; the node does not
// move past the record until Apply succeeds (or the node stops).
type Handler interface {
	Apply(ctx context.Context, rec journal.Record) error
}

// HandlerFunc adapts a function to Handler.
type HandlerFunc func(ctx context.Context, rec journal.Record) error

// Apply implements Handler.
func (f HandlerFunc) Apply(ctx context.Context, rec journal.Record) error { return f(ctx, rec) }

// ResyncReason says why a node resynchronised.
type ResyncReason string

const (
	// ResyncBehindTail: the node's position was pruned away.
	ResyncBehindTail ResyncReason = "position below the journal's tail"
	// ResyncEpoch: the stored position belongs to another journal (a
	// restored database, a recreated folder).
	ResyncEpoch ResyncReason = "journal epoch changed"
	// ResyncAheadOfHead: the position is above the journal's head in the
	// same epoch — the journal went backwards (a restore that kept the
	// epoch, a failover to a lagging replica), so what the node applied
	// up to its position is not what the journal now holds.
	ResyncAheadOfHead ResyncReason = "position above the journal's head"
	// ResyncEvicted: the janitor evicted the node while it was away for
	// longer than its EvictAfter, so the records after its position may
	// be gone: what it holds privately (a search index on disk) must be
	// rebuilt rather than caught up.
	ResyncEvicted ResyncReason = "evicted by the janitor after an absence longer than EvictAfter"
	// ResyncRewritten: the journal holds another record at the node's
	// position than the one the node applied there. It lost its latest
	// commits after the node had read them and gave their revisions to
	// new records: a database crash where commits are visible before they
	// are durable (MariaDB and MySQL's InnoDB; the journal keeps
	// PostgreSQL's synchronous_commit on for its appends), a failover to
	// a replica that had not received them. The node has applied records that no longer exist
	// and would skip the ones now at their revisions.
	ResyncRewritten ResyncReason = "the record at the node's position changed"
)

// Config configures a Node. The zero value of each field means its default.
type Config struct {
	// NodeID identifies this node; unique among live nodes. Required.
	NodeID string
	// Instance identifies this process among the incarnations of NodeID:
	// it is written into every record the node publishes
	// (journal.Record.Instance) and held in its membership lease, and a
	// record is the node's own — not delivered to it, see DeliverOwn —
	// only if it carries this instance, so a restarted or replacing
	// process applies what an earlier incarnation of its id published.
	// 1 to 64 bytes of [A-Za-z0-9._-]. OpenDir and OpenSQL default it to a
	// random id (journal.NewInstance) and open their journal with it.
	// Required with New: the Instance the journal was opened with
	// (journal.SQLConfig.Instance, journal.FileConfig.Instance).
	Instance string
	// Dir is the shared folder of OpenDir, which opens the journal,
	// positions and leases in it. Required by OpenDir; must be empty
	// with OpenSQL and New.
	Dir string
	// Prefix is the table prefix of OpenSQL, which opens the journal,
	// positions and leases in the tables it names. Defaults to
	// dialect.DefaultPrefix ("tandem_"); see ident.Prefix. Must be empty
	// with OpenDir and New.
	Prefix string
	// Journal, Revisions and Leases are the shared stores, already open:
	// required by New, which takes them as they are (the caller closes
	// them); must be nil with OpenDir and OpenSQL, which open them from
	// Dir or Prefix (and the node's Stop closes the journal they opened).
	Journal   journal.Journal
	Revisions revision.Store
	Leases    lock.Store
	// SyncDelay is the polling interval (±10% jitter). Defaults to
	// DefaultSyncDelay.
	SyncDelay time.Duration
	// DisablePush turns push wake-ups off: the node polls every SyncDelay
	// only. On PostgreSQL it then holds no listening connection — for
	// PgBouncer in transaction mode, which cannot keep a LISTEN (the
	// NOTIFY a publishing node sends after its commits is an ordinary
	// statement and goes through), or to save that connection (see
	// "Connections" in the package documentation). Push is on (false) by
	// default wherever the journal can push.
	DisablePush bool
	// StopDelay bounds the final sync of Stop. Defaults to
	// DefaultStopDelayFactor × SyncDelay.
	StopDelay time.Duration
	// BatchSize is how many records one read fetches. Defaults to
	// DefaultBatchSize.
	BatchSize int
	// SyncTimeout bounds each statement of the sync loop, a poll or a
	// position save: one without an answer by then is abandoned (its
	// connection closed; on PostgreSQL with push that is the listener,
	// which reconnects) and reported in Stats.LastSyncErr, and the sync
	// runs again at the next tick or wake-up, on another connection. A
	// connection that hangs instead of failing (a partition that drops
	// packets, a NAT or load balancer that lost the flow) then leaves the
	// node stale for about SyncTimeout + SyncDelay, not until TCP gives
	// up. After a poll that timed out, polls read half as many records
	// (down to one) and grow back to BatchSize as they answer, so that a
	// read that is merely slow still makes progress. Defaults to
	// DefaultSyncTimeout.
	SyncTimeout time.Duration
	// StartAt is where a node without a stored position starts. Defaults
	// to StartAtHead.
	StartAt StartAt
	// CopyFrom, when set, gives a node without a stored position the
	// position of the node with this id instead: for a node whose private
	// state (an index, a cache dump) was cloned from that node's.
	CopyFrom string
	// DeliverOwn delivers the records this node wrote to its own
	// handlers too. Off by default: a node has applied its own changes
	// when it made them.
	DeliverOwn bool
	// MemberTTL is the TTL of the membership lease. Defaults to
	// DefaultMemberTTL.
	MemberTTL time.Duration
	// JoinWait bounds how long Start waits for an earlier holder of the
	// node id whose heartbeat has stopped (a crashed process of this
	// node) to expire; Start's ctx bounds it too. A holder whose
	// heartbeat advances is refused at once. Defaults to
	// DefaultJoinWaitFactor × MemberTTL.
	JoinWait time.Duration
	// HandlerTimeout bounds each Apply call: its context is cancelled
	// then (context.Cause matches context.DeadlineExceeded), and the call
	// counts as a failed attempt (retried) — also when the handler ignores
	// its context and has not returned, in which case Stats.Stuck names
	// the record. Defaults to DefaultHandlerTimeout.
	HandlerTimeout time.Duration
	// DeadLetter, when set, is asked after every failed attempt to apply
	// a record (an error, a panic, a timeout) whether to give up on it.
	// Returning true skips the record: it is logged at error level with
	// its revision and producer, counted in Stats.GaveUp, and the node
	// moves past it. The application decides, for instance after a number
	// of attempts, and should keep the record somewhere (a table, a file)
	// to deal with it later. DeadLetter runs on the sync goroutine; it
	// must not block for long. Nil (the default): retry forever.
	DeadLetter func(ctx context.Context, rec journal.Record, attempts int, err error) bool
	// Janitor, when set, runs a janitor on this node (package janitor) from
	// Start to Stop: on its schedule, on whichever node that enabled it
	// gets its lease. Its NodeID, Journal, Revisions, Leases and Logger
	// default to the node's. Nil (the default) runs none [janitorEnabled
	// false].
	Janitor *janitor.Config
	// Logger receives state changes. Defaults to slog.Default().
	Logger *slog.Logger
}

// Errors.
var (
	// ErrDuplicateNode: another live node holds this node id.
	ErrDuplicateNode = errors.New("cluster: node id already live")
	// ErrNotRunning: the node is not started, or stopped, or does not hold
	// its membership (see ErrMembershipLost).
	ErrNotRunning = errors.New("cluster: node not running")
	// ErrMembershipLost: the node could not renew its membership lease in
	// time (the store did not answer), so it cannot be sure it still owns
	// its id; it refuses to publish until it rejoins. Errors matching it
	// also match ErrNotRunning.
	ErrMembershipLost = errors.New("cluster: membership lost")
	// ErrInvalidArgument: bad configuration or arguments.
	ErrInvalidArgument = errors.New("cluster: invalid argument")
)

// Node is one running member of a cluster: it holds a membership lease for
// its id, applies the records other nodes append to the journal through
// its handlers, in order, and records how far it got. Create it with New,
// register handlers, then Start; Stop ends it. A Start that failed can be
// called again. Methods are safe for concurrent use.
type Node struct {
	cfg     Config
	members *lock.Client
	jan     *janitor.Janitor // nil unless Config.Janitor
	// closeJournal: the node opened its journal (OpenDir, OpenSQL) and
	// closes it on Stop.
	closeJournal bool
	// behind answers Barrier's poll with one query on a node that
	// OpenSQL opened; nil: storesBehind.
	behind behindFunc

	mu       sync.Mutex
	handlers map[string]Handler
	resync   []func(ctx context.Context, why ResyncReason) error
	onLost   []func() // run when the node stops being a member (caches flush)
	state    nodeState
	lease    *lock.Lease
	loop     *syncLoop
	// starting is the loop of a Start in progress, or of the last one
	// that failed (for Stats).
	starting *syncLoop
	// orphan is the loop of a failed Start whose first sync was left
	// behind in a handler that ignored its context.
	orphan *syncLoop
	// cancelStart ends the context of the last Start, and startDone is
	// closed when that Start returned (nil before the first): a Stop
	// during a Start ends it and waits for it.
	cancelStart context.CancelFunc
	startDone   chan struct{}
	// started, when set (tests only), is called by Start once it
	// published the node as running, just before it returns.
	started func()

	// stopMember ends keepMembership's context (Stop); memberDone is
	// closed when it exited.
	stopMember context.CancelFunc
	memberDone chan struct{}
}

type nodeState int

const (
	stateNew nodeState = iota // not started, or a Start failed
	stateStarting
	stateRunning
	stateStopped
)

// New validates cfg and returns a Node that is not started yet, on the
// already-open stores cfg.Journal, cfg.Revisions and cfg.Leases, which
// stay the caller's (Stop closes none of them). Dir and Prefix must be
// empty: New opens nothing.
func New(cfg Config) (*Node, error) {
	if cfg.Dir != "" || cfg.Prefix != "" {
		field := "Dir"
		if cfg.Dir == "" {
			field = "Prefix"
		}
		return nil, fmt.Errorf("cluster config: %w: %s is set; New takes already-open stores (Journal, Revisions, Leases): use OpenDir or OpenSQL to open them from Dir or Prefix", ErrInvalidArgument, field)
	}
	return newNode(cfg)
}

// newNode is New without the check that OpenDir and OpenSQL pass Dir or
// Prefix.
func newNode(cfg Config) (*Node, error) {
	if cfg.SyncDelay == 0 {
		cfg.SyncDelay = DefaultSyncDelay
	}
	if cfg.StopDelay == 0 {
		cfg.StopDelay = DefaultStopDelayFactor * cfg.SyncDelay
	}
	if cfg.BatchSize == 0 {
		cfg.BatchSize = DefaultBatchSize
	}
	if cfg.MemberTTL == 0 {
		cfg.MemberTTL = DefaultMemberTTL
	}
	if cfg.JoinWait == 0 {
		cfg.JoinWait = DefaultJoinWaitFactor * cfg.MemberTTL
	}
	if cfg.HandlerTimeout == 0 {
		cfg.HandlerTimeout = DefaultHandlerTimeout
	}
	if cfg.SyncTimeout == 0 {
		cfg.SyncTimeout = DefaultSyncTimeout
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.Default()
	}
	if err := ident.NodeID("NodeID", cfg.NodeID); err != nil {
		return nil, fmt.Errorf("cluster config: %w", err)
	}
	if cfg.Instance == "" {
		return nil, fmt.Errorf("cluster config: %w: Instance is required with New: set it to the Instance the journal was opened with (journal.SQLConfig.Instance or FileConfig.Instance; journal.NewInstance makes one)", ErrInvalidArgument)
	}
	if err := ident.NodeID("Instance", cfg.Instance); err != nil {
		return nil, fmt.Errorf("cluster config: %w: %w", ErrInvalidArgument, err)
	}
	if cfg.CopyFrom != "" {
		if err := ident.NodeID("CopyFrom", cfg.CopyFrom); err != nil {
			return nil, fmt.Errorf("cluster config: %w", err)
		}
	}
	for _, c := range []struct {
		bad   bool
		field string
	}{
		{cfg.Journal == nil, "Journal is required"},
		{cfg.Revisions == nil, "Revisions is required"},
		{cfg.Leases == nil, "Leases is required"},
		{cfg.SyncDelay < 0, "SyncDelay must be > 0"},
		{cfg.StopDelay < 0, "StopDelay must be > 0"},
		{cfg.BatchSize < 0, "BatchSize must be > 0"},
		{cfg.JoinWait < 0, "JoinWait must be > 0"},
		{cfg.HandlerTimeout < 0, "HandlerTimeout must be > 0"},
		{cfg.SyncTimeout < 0, "SyncTimeout must be > 0"},
		{cfg.StartAt != StartAtHead && cfg.StartAt != StartAtBeginning, "StartAt must be StartAtHead or StartAtBeginning"},
		{cfg.CopyFrom == cfg.NodeID, "CopyFrom must name another node"},
	} {
		if c.bad {
			return nil, fmt.Errorf("cluster config: %w: %s", ErrInvalidArgument, c.field)
		}
	}
	members, err := lock.New(lock.Config{NodeID: cfg.NodeID, Instance: cfg.Instance, Store: cfg.Leases, TTL: cfg.MemberTTL, Logger: cfg.Logger})
	if err != nil {
		return nil, fmt.Errorf("cluster config: MemberTTL: %w", err)
	}
	n := &Node{cfg: cfg, members: members, handlers: map[string]Handler{}}
	if cfg.Janitor != nil {
		jc := *cfg.Janitor
		if jc.NodeID == "" {
			jc.NodeID = cfg.NodeID
		}
		if jc.Journal == nil {
			jc.Journal = cfg.Journal
		}
		if jc.Revisions == nil {
			jc.Revisions = cfg.Revisions
		}
		if jc.Leases == nil {
			jc.Leases = cfg.Leases
		}
		if jc.Logger == nil {
			jc.Logger = cfg.Logger
		}
		if n.jan, err = janitor.New(jc); err != nil {
			return nil, fmt.Errorf("cluster config: Janitor: %w", err)
		}
	}
	return n, nil
}

// Janitor returns the node's janitor (Config.Janitor), or nil when it runs
// none: for RunOnce, Plan and Stats.
func (n *Node) Janitor() *janitor.Janitor { return n.jan }

// ID returns the node's id.
func (n *Node) ID() string { return n.cfg.NodeID }

// Instance returns this process's instance id (Config.Instance): written
// into its records and the owner of the node's membership lease
// (Member.Instance). Two processes that used one node id, one after the
// other, have different instances.
func (n *Node) Instance() string { return n.cfg.Instance }

// Journal returns the node's journal (for the janitor, or for appending
// several entries atomically).
func (n *Node) Journal() journal.Journal { return n.cfg.Journal }

// Leases returns the node's lease store (Config.Leases, or the one OpenDir
// or OpenSQL opened), for the application's own leases and jobs without a
// second store:
//
//	jobs, err := lock.New(lock.Config{NodeID: n.ID(), Store: n.Leases()})
//	go jobs.RunEvery(ctx, "report", time.Hour, report)
//
// Give that client its own instance (the default, a random one): the
// node's membership lease is held under Node.Instance. The store needs no
// closing; it lives as long as the node's journal and positions do.
func (n *Node) Leases() lock.Store { return n.cfg.Leases }

// Handle registers h for the records of producer. Register handlers
// before Start: records of a producer without a handler are passed over
// (and counted in Stats.Unhandled).
func (n *Node) Handle(producer string, h Handler) error {
	if err := ident.Producer("producer", producer); err != nil {
		return fmt.Errorf("handle: %w", err)
	}
	if h == nil {
		return fmt.Errorf("handle %q: %w: handler is nil", producer, ErrInvalidArgument)
	}
	n.mu.Lock()
	defer n.mu.Unlock()
	if n.state != stateNew {
		return fmt.Errorf("handle %q: %w: register handlers before Start", producer, ErrInvalidArgument)
	}
	if _, dup := n.handlers[producer]; dup {
		return fmt.Errorf("handle %q: %w: a handler is registered already", producer, ErrInvalidArgument)
	}
	n.handlers[producer] = h
	return nil
}

// OnResync registers a hook that runs when the node resynchronises (its
// position was pruned away, or the journal's epoch changed): it must drop
// whatever the node derived from the journal, since records were missed.
// Hooks run in registration order; one that fails (returns an error or
// panics: the panic is recovered and logged with its stack) is retried
// with backoff, and the node waits until it succeeds (Start, until its
// ctx ends).
func (n *Node) OnResync(hook func(ctx context.Context, why ResyncReason) error) error {
	if hook == nil {
		return fmt.Errorf("on resync: %w: hook is nil", ErrInvalidArgument)
	}
	n.mu.Lock()
	defer n.mu.Unlock()
	if n.state != stateNew {
		return fmt.Errorf("on resync: %w: register hooks before Start", ErrInvalidArgument)
	}
	n.resync = append(n.resync, hook)
	return nil
}

// onMembershipLost registers f to run whenever the node stops being a
// member (its lease could not be confirmed, it was replaced, it stopped).
func (n *Node) onMembershipLost(f func()) {
	n.mu.Lock()
	n.onLost = append(n.onLost, f)
	n.mu.Unlock()
}

func (n *Node) membershipLost() {
	n.mu.Lock()
	hooks := n.onLost
	n.mu.Unlock()
	for _, f := range hooks {
		f()
	}
}

// Start joins the cluster and starts syncing. It takes the node id's
// membership lease, loads the stored position (or starts at the head or
// the beginning, per Config.StartAt), resynchronises when the position was
// pruned away, belongs to another journal epoch or lies above the head,
// and runs a first sync before it returns.
//
// If another process holds the id, Start watches its heartbeat: if it
// advances, that process is alive and Start fails at once with
// ErrDuplicateNode; if it stands still (a crashed process of this node),
// Start logs whom it waits for and waits until the lease expires, bounded
// by Config.JoinWait and ctx. So a restarted process comes back as soon as
// its dead predecessor's lease runs out, at most a MemberTTL after that
// one's last heartbeat.
//
// If the first sync cannot get past a record because its handler keeps
// failing, Start returns when ctx ends, with an error (a *HandlerError)
// naming the producer and revision. A Start that failed leaves the node
// as it was before: Start can be called again (with a longer ctx, once the
// cause is fixed, or with Config.DeadLetter set), or Stop releases what
// OpenDir or OpenSQL opened.
func (n *Node) Start(ctx context.Context) error {
	n.mu.Lock()
	switch n.state {
	case stateStarting:
		n.mu.Unlock()
		return fmt.Errorf("start node %q: %w: another Start is in progress", n.cfg.NodeID, ErrInvalidArgument)
	case stateRunning:
		n.mu.Unlock()
		return fmt.Errorf("start node %q: %w: already started", n.cfg.NodeID, ErrInvalidArgument)
	case stateStopped:
		n.mu.Unlock()
		return fmt.Errorf("start node %q: %w: stopped; a stopped node cannot start again: open a new one with the same NodeID", n.cfg.NodeID, ErrNotRunning)
	}
	if o := n.orphan; o != nil {
		select {
		case <-o.worker:
			n.orphan = nil
		default:
			n.mu.Unlock()
			return fmt.Errorf("start node %q: a handler call of the previous attempt has not returned: %w", n.cfg.NodeID, o.stuckError())
		}
	}
	n.state = stateStarting
	ctx, cancel := context.WithCancel(ctx)
	done := make(chan struct{})
	n.cancelStart, n.startDone = cancel, done
	n.mu.Unlock()
	var lease *lock.Lease
	var loop *syncLoop
	running, janStarted := false, false
	// Whatever ends this Start short of running the node — an error, a
	// Stop meanwhile, a panic on this goroutine (resync hooks' and
	// handlers' are recovered; this is the last guard) — undoes it before
	// a Stop waiting for it goes on.
	defer func() {
		cancel()
		if !running {
			n.undoStart(ctx, lease, loop, janStarted)
		}
		close(done)
	}()
	fail := func(err error) error {
		n.mu.Lock()
		stopped := n.state == stateStopped
		n.mu.Unlock()
		if stopped {
			return fmt.Errorf("start node %q: %w: stopped while starting: %w", n.cfg.NodeID, ErrNotRunning, err)
		}
		return fmt.Errorf("start node %q: %w", n.cfg.NodeID, refused(err))
	}

	var err error
	lease, err = n.join(ctx)
	if err != nil {
		return fail(err)
	}
	n.mu.Lock()
	n.lease = lease
	n.mu.Unlock()
	loop, err = n.newSyncLoop(ctx)
	if err != nil {
		return fail(err)
	}
	n.mu.Lock()
	n.starting = loop
	n.mu.Unlock()
	if err := loop.bounded(ctx, loop.firstSync); err != nil {
		return fail(err)
	}
	// The janitor starts before the node is published as running: a Stop
	// from then on finds the node starting, and waits for this Start,
	// which stops the janitor (undoStart), or running, and stops it
	// itself. Started after, it could start after a Stop, for good.
	if n.jan != nil {
		if err := n.jan.Start(ctx); err != nil {
			n.cfg.Logger.Error("tandem: janitor did not start", "node", n.cfg.NodeID, "err", err)
		} else {
			janStarted = true
		}
	}
	n.mu.Lock()
	if n.state != stateStarting { // Stop was called meanwhile
		n.mu.Unlock()
		return fmt.Errorf("start node %q: %w: stopped while starting", n.cfg.NodeID, ErrNotRunning)
	}
	n.loop, n.starting = loop, nil
	mctx, stopMember := context.WithCancel(context.Background())
	n.stopMember, n.memberDone = stopMember, make(chan struct{})
	n.state = stateRunning
	running = true
	n.mu.Unlock()
	loop.start()
	go n.keepMembership(mctx, lease, loop)
	if n.started != nil {
		n.started()
	}
	n.cfg.Logger.Info("tandem: node started", "node", n.cfg.NodeID, "instance", n.members.Owner().Instance, "revision", loop.applied())
	return nil
}

// undoStart undoes a Start that did not get the node running: it ends the
// sync loop (a first sync stuck in a handler that ignores its context is
// left behind, as the orphan), stops the janitor if the Start started it
// (only a Stop meanwhile ends a Start after that), and releases the
// membership lease. The node is then as it was before the Start — or, if
// Stop was called meanwhile, stopped, with the journal that OpenDir or
// OpenSQL opened closed.
func (n *Node) undoStart(ctx context.Context, lease *lock.Lease, loop *syncLoop, janitor bool) {
	if loop != nil {
		loop.cancel()
		if !loop.workerEnded() {
			n.mu.Lock()
			n.orphan = loop
			n.mu.Unlock()
		}
	}
	rctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), n.cfg.MemberTTL)
	defer cancel()
	if janitor {
		_ = n.jan.Stop(rctx)
	}
	if lease != nil {
		_ = lease.Release(rctx)
	}
	n.mu.Lock()
	stopped := n.state == stateStopped
	if !stopped {
		n.state = stateNew
	}
	n.mu.Unlock()
	if stopped && n.closeJournal {
		_ = n.cfg.Journal.Close(rctx)
	}
}

// Stop leaves the cluster: it stops the sync loop after a final sync
// bounded by StopDelay (and by ctx), saves the position and releases the
// membership lease. It is idempotent. Stop returns within ctx (and
// StopDelay) even when a handler ignores its context: it then leaves that
// call behind and says which handler was stuck (a *HandlerError).
//
// A Stop during a Start ends that Start (which returns an error matching
// ErrNotRunning) and waits, within ctx and StopDelay, until it has
// released what it took and closed what OpenDir or OpenSQL opened.
func (n *Node) Stop(ctx context.Context) error {
	n.mu.Lock()
	if n.state != stateRunning {
		was := n.state
		n.state = stateStopped
		cancelStart, startDone := n.cancelStart, n.startDone
		n.mu.Unlock()
		switch {
		case was == stateNew && n.closeJournal:
			return n.cfg.Journal.Close(ctx)
		case was != stateStarting:
			return nil
		}
		// End the Start in progress, which cleans up, and wait for it.
		cancelStart()
		select {
		case <-startDone:
		case <-ctx.Done():
			return fmt.Errorf("stop node %q: the Start in progress has not returned (it cleans up when it does): %w", n.cfg.NodeID, ctx.Err())
		case <-time.After(n.cfg.StopDelay):
			return fmt.Errorf("stop node %q: the Start in progress has not returned within StopDelay (%v); it cleans up when it does", n.cfg.NodeID, n.cfg.StopDelay)
		}
		n.mu.Lock()
		o := n.orphan
		n.mu.Unlock()
		if o != nil && !o.workerEnded() {
			return fmt.Errorf("stop node %q: %w", n.cfg.NodeID, o.stuckError())
		}
		return nil
	}
	n.state = stateStopped
	loop := n.loop
	n.stopMember()
	n.mu.Unlock()
	if n.jan != nil {
		_ = n.jan.Stop(ctx) // cancels a run in progress; each batch is whole or not done
	}
	n.membershipLost()
	// keepMembership ends with its context, unless a store call ignores
	// it: then it is left behind, as a stuck handler is.
	select {
	case <-n.memberDone:
	case <-ctx.Done():
	case <-time.After(n.cfg.StopDelay):
	}
	n.mu.Lock()
	lease := n.lease
	n.mu.Unlock()
	err := loop.stop(ctx, n.cfg.StopDelay)
	// Cleanup that must happen even when ctx has ended, briefly.
	rctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), min(n.cfg.MemberTTL, stopCleanup))
	defer cancel()
	if rerr := lease.Release(rctx); err == nil {
		err = rerr
	}
	if n.closeJournal {
		if cerr := n.cfg.Journal.Close(rctx); err == nil {
			err = cerr
		}
	}
	n.cfg.Logger.Info("tandem: node stopped", "node", n.cfg.NodeID, "revision", loop.applied())
	if err != nil {
		return fmt.Errorf("stop node %q: %w", n.cfg.NodeID, err)
	}
	return nil
}

// stopCleanup bounds the release of the membership lease and the closing
// of the journal in Stop, after ctx may have ended.
const stopCleanup = 5 * time.Second

func (n *Node) running() (*syncLoop, error) {
	n.mu.Lock()
	defer n.mu.Unlock()
	switch n.state {
	case stateRunning:
		return n.loop, nil
	case stateStopped:
		return nil, fmt.Errorf("node %q: %w: stopped", n.cfg.NodeID, ErrNotRunning)
	default:
		return nil, fmt.Errorf("node %q: %w: not started", n.cfg.NodeID, ErrNotRunning)
	}
}

// member returns the running loop if the node holds its membership now:
// it is running, was not replaced, and its lease is confirmed.
func (n *Node) member() (*syncLoop, *lock.Lease, error) {
	l, err := n.running()
	if err != nil {
		return nil, nil, err
	}
	if err := l.failure(); err != nil {
		return nil, nil, fmt.Errorf("node %q: %w", n.cfg.NodeID, err)
	}
	lease := n.membership()
	if !lease.Held() {
		return nil, nil, n.errLost()
	}
	return l, lease, nil
}

// membership returns the node's membership lease: the one Start took (set
// as soon as it is taken, so that the first sync's saves see it), then
// each one keepMembership takes back. Nil before the first Start.
func (n *Node) membership() *lock.Lease {
	n.mu.Lock()
	defer n.mu.Unlock()
	return n.lease
}

// errLost is the error of what the node refuses to do while its
// membership lease is not confirmed.
func (n *Node) errLost() error {
	return fmt.Errorf("node %q: %w: %w: its lease was not confirmed in time; it rejoins when the store answers",
		n.cfg.NodeID, ErrNotRunning, ErrMembershipLost)
}

// serving reports whether what the node derives from the journal may be
// used: always before Start (nothing is running yet), and afterwards only
// while the node is a member.
func (n *Node) serving() bool {
	n.mu.Lock()
	state, lease, loop := n.state, n.lease, n.loop
	n.mu.Unlock()
	switch state {
	case stateNew, stateStarting:
		return true
	case stateRunning:
		return lease.Held() && loop.failure() == nil
	}
	return false
}

// PublishTx publishes entries inside the application's transaction tx (an
// outbox, journal.SQL.AppendTx): they become records if and only if tx
// commits, atomically with the application's own changes, and nothing
// global is locked inside tx. After tx.Commit, the handle's Wait returns
// their revisions (the read-your-writes token); if this process dies
// first, any node relays them within SyncDelay. It needs a SQL journal and
// membership, like PublishEntries.
func (n *Node) PublishTx(ctx context.Context, tx *sql.Tx, entries ...journal.Entry) (*journal.Pending, error) {
	if _, _, err := n.member(); err != nil {
		return nil, fmt.Errorf("publish in transaction: %w", err)
	}
	a, ok := n.cfg.Journal.(interface {
		AppendTx(ctx context.Context, tx *sql.Tx, entries ...journal.Entry) (*journal.Pending, error)
	})
	if !ok {
		return nil, fmt.Errorf("publish in transaction: %w: the journal (%T) has no transactions; use a SQL journal", ErrInvalidArgument, n.cfg.Journal)
	}
	return a.AppendTx(ctx, tx, entries...)
}

// Publish appends a record for producer to the journal (group-committed
// with the node's concurrent publishes) and returns its revision: the
// token for read-your-writes (WaitFor, Barrier).
func (n *Node) Publish(ctx context.Context, producer string, payload []byte) (int64, error) {
	revs, err := n.PublishEntries(ctx, journal.Entry{Producer: producer, Payload: payload})
	if err != nil {
		return 0, err
	}
	return revs[0], nil
}

// PublishEntries appends several records atomically (consecutive
// revisions, one group commit) and returns their revisions.
//
// A node publishes only while it is a member: before Start, after Stop,
// once replaced (ErrDuplicateNode) and while its membership lease is not
// confirmed (ErrMembershipLost) it returns an error matching
// ErrNotRunning and writes nothing.
func (n *Node) PublishEntries(ctx context.Context, entries ...journal.Entry) ([]int64, error) {
	l, lease, err := n.member()
	if err != nil {
		return nil, fmt.Errorf("publish: %w", err)
	}
	// The append ends with the lease: one that waits for its batch (the
	// group commit's queue, a batch stuck at the counter's lock) past the
	// moment the node stops believing it holds its id is dropped, not
	// written by a node another process may have replaced meanwhile.
	actx, cancel := context.WithCancelCause(ctx)
	defer cancel(nil)
	defer context.AfterFunc(lease.Context(), func() { cancel(n.errLost()) })()
	revs, err := n.cfg.Journal.Append(actx, entries...)
	if err != nil {
		if cause := context.Cause(actx); ctx.Err() == nil && errors.Is(cause, ErrMembershipLost) {
			return nil, fmt.Errorf("publish: %w (%w)", cause, err)
		}
		return nil, err
	}
	l.wake()
	return revs, nil
}

// Sync reads and applies everything committed so far, now. Concurrent
// calls share one sync.
func (n *Node) Sync(ctx context.Context) error {
	l, err := n.running()
	if err != nil {
		return err
	}
	return l.request(ctx)
}

// WaitFor returns once this node has applied revision rev (syncing at once
// if it has not): after it, what the writer of rev changed is visible
// through this node's handlers and caches. This is read-your-writes
// without sticky sessions: hand the revision Publish returned to the
// client (a response header), and have whichever replica serves its next
// request WaitFor it first. A sync that gave up on a connection that hung
// (Config.SyncTimeout) is tried again while ctx allows; other sync errors
// are returned.
//
// A revision the node has reached already costs one poll (one statement
// on SQL), which checks that the node's position still holds: the journal
// is in the same epoch, has not gone back below the position, and holds
// at the position the record the node applied there. If it does not (or
// the sync WaitFor asks for finds so, for a revision not reached yet),
// the node resyncs first (see "Resync" in the package documentation), and
// WaitFor returns once a resync that began after the call ended: it
// dropped what the node derived, so what the writer of rev changed is
// visible, although rev, which the journal lost or which belongs to
// another epoch, is not applied as such. The node's position
// (Stats.Revision) may then be below rev, and a later WaitFor(rev) waits
// until the journal as it is now reaches rev. Package clusterhttp's middleware
// lets a token whose revision the node has applied through without this
// poll (see "Read-your-writes without sticky sessions" in the package
// documentation).
func (n *Node) WaitFor(ctx context.Context, rev int64) error {
	l, err := n.running()
	if err != nil {
		return err
	}
	return l.waitFor(ctx, rev)
}

// Stats describes a node's progress.
type Stats struct {
	Revision int64     // last revision applied
	Head     int64     // journal head as last seen (a poll, a read, a stuck handler's retries)
	Lag      int64     // Head - Revision
	LastSync time.Time // when the last sync finished (this node's clock)
	Applied  int64     // records applied by handlers
	// Unhandled counts records of producers without a handler.
	Unhandled int64
	// HandlerFailures counts failed Apply calls: errors, panics, and
	// calls that ran past HandlerTimeout (each retried).
	HandlerFailures int64
	// GaveUp counts records skipped because Config.DeadLetter said so.
	GaveUp  int64
	Resyncs int64
	// SyncErrors counts syncs that failed (journal or store errors).
	SyncErrors int64
	// Stuck names the record the node waits at when a handler has failed
	// on it, or a call on it has run past HandlerTimeout; nil otherwise.
	Stuck *Stuck
	// Running reports whether the node is started: Start returned nil,
	// Stop was not called, and no other process took its id over
	// (ErrDuplicateNode).
	Running bool
	// Member reports whether the node holds its membership now: it is
	// running and its lease is confirmed. Publish works, and caches
	// serve, only while it does (see ErrMembershipLost).
	Member bool
	// Epoch is the journal epoch the node's position belongs to (empty
	// before the first Start): a revision means something only together
	// with it.
	Epoch string
	// Push reports whether the node is woken by push notifications
	// (PostgreSQL's LISTEN/NOTIFY, fsnotify on a folder) besides polling
	// every SyncDelay; false when the journal cannot push, when
	// Config.DisablePush is set, when setting up the watch failed, and
	// while a PostgreSQL listener is down (lost, reconnecting, or given up
	// for want of server connections: see "Connections").
	Push bool
	// LastSyncErr is the error of the last sync, nil when it succeeded.
	// SyncErrors counts them; a failing node logs the first failure at
	// once and then every 30 s while it keeps failing. A position save
	// that failed is retried with backoff (from 50 ms up to 1 s), and
	// until one goes through, every sync counts as failed with its error,
	// though it applied what it read.
	LastSyncErr error
}

// Stuck describes a record the node cannot get past (yet).
type Stuck struct {
	Producer string
	Revision int64
	// Since is when the first attempt started (this node's clock).
	Since time.Time
	// Attempts counts the failed attempts.
	Attempts int
	// Running reports a call in progress, and LastErr the last failure.
	Running bool
	LastErr error
}

// Stats returns the node's counters. During and after a failed Start,
// they describe that attempt (Stuck names the record it failed on).
func (n *Node) Stats() Stats {
	n.mu.Lock()
	l, state, lease := n.loop, n.state, n.lease
	if n.starting != nil {
		l = n.starting
	}
	n.mu.Unlock()
	if l == nil {
		return Stats{}
	}
	st := l.stats()
	st.Running = state == stateRunning && l.failure() == nil
	st.Member = st.Running && lease.Held()
	return st
}
