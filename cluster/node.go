package cluster

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"time"

	"github.com/tandem-go/tandem/ident"
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
)

// Config configures a Node. The zero value of each field means its default.
type Config struct {
	// NodeID identifies this node; unique among live nodes. Required.
	NodeID string
	// Journal, Revisions and Leases are the shared stores. Required.
	Journal   journal.Journal
	Revisions revision.Store
	Leases    lock.Store
	// SyncDelay is the polling interval (±10% jitter). Defaults to
	// DefaultSyncDelay.
	SyncDelay time.Duration
	// StopDelay bounds the final sync of Stop. Defaults to
	// DefaultStopDelayFactor × SyncDelay.
	StopDelay time.Duration
	// BatchSize is how many records one read fetches. Defaults to
	// DefaultBatchSize.
	BatchSize int
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
	// Logger receives state changes. Defaults to slog.Default().
	Logger *slog.Logger
}

// Errors.
var (
	// ErrDuplicateNode: another live node holds this node id.
	ErrDuplicateNode = errors.New("cluster: node id already live")
	// ErrNotRunning: the node is not started, or stopped.
	ErrNotRunning = errors.New("cluster: node not running")
	// ErrInvalidArgument: bad configuration or arguments.
	ErrInvalidArgument = errors.New("cluster: invalid argument")
)

// Node is one running member of a cluster: it holds a membership lease for
// its id, applies the records other nodes append to the journal through
// its handlers, in order, and records how far it got. Create it with New,
// register handlers, then Start; Stop ends it. Methods are safe for
// concurrent use.
type Node struct {
	cfg     Config
	members *lock.Client
	// closeJournal: the node opened its journal (OpenDir, OpenSQL) and
	// closes it on Stop.
	closeJournal bool

	mu       sync.Mutex
	handlers map[string]Handler
	resync   []func(ctx context.Context, why ResyncReason) error
	state    int // 0 new, 1 running, 2 stopped
	lease    *lock.Lease
	loop     *syncLoop

	stopping   chan struct{} // closed by Stop
	memberDone chan struct{} // keepMembership exited
}

// New validates cfg and returns a Node that is not started yet.
func New(cfg Config) (*Node, error) {
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
	if cfg.Logger == nil {
		cfg.Logger = slog.Default()
	}
	if err := ident.NodeID("NodeID", cfg.NodeID); err != nil {
		return nil, fmt.Errorf("cluster config: %w", err)
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
		{cfg.StartAt != StartAtHead && cfg.StartAt != StartAtBeginning, "StartAt must be StartAtHead or StartAtBeginning"},
		{cfg.CopyFrom == cfg.NodeID, "CopyFrom must name another node"},
	} {
		if c.bad {
			return nil, fmt.Errorf("cluster config: %w: %s", ErrInvalidArgument, c.field)
		}
	}
	members, err := lock.New(lock.Config{NodeID: cfg.NodeID, Store: cfg.Leases, TTL: cfg.MemberTTL, Logger: cfg.Logger})
	if err != nil {
		return nil, fmt.Errorf("cluster config: MemberTTL: %w", err)
	}
	return &Node{cfg: cfg, members: members, handlers: map[string]Handler{}}, nil
}

// ID returns the node's id.
func (n *Node) ID() string { return n.cfg.NodeID }

// Journal returns the node's journal (for the janitor, or for appending
// several entries atomically).
func (n *Node) Journal() journal.Journal { return n.cfg.Journal }

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
	if n.state != 0 {
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
// Hooks run in registration order; one that fails is retried with backoff.
func (n *Node) OnResync(hook func(ctx context.Context, why ResyncReason) error) error {
	if hook == nil {
		return fmt.Errorf("on resync: %w: hook is nil", ErrInvalidArgument)
	}
	n.mu.Lock()
	defer n.mu.Unlock()
	if n.state != 0 {
		return fmt.Errorf("on resync: %w: register hooks before Start", ErrInvalidArgument)
	}
	n.resync = append(n.resync, hook)
	return nil
}

// memberLease is the lease name that makes a node id live.
func memberLease(id string) string { return "member." + id }

// Start joins the cluster and starts syncing. It takes the node id's
// membership lease (failing with ErrDuplicateNode when another live node
// holds it), loads the stored position (or starts at the head or the
// beginning, per Config.StartAt), resynchronises when the position was
// pruned away or belongs to another journal epoch, and runs a first sync
// before it returns.
func (n *Node) Start(ctx context.Context) error {
	n.mu.Lock()
	if n.state != 0 {
		n.mu.Unlock()
		return fmt.Errorf("start node %q: %w: already started", n.cfg.NodeID, ErrInvalidArgument)
	}
	n.state = 1
	n.mu.Unlock()
	fail := func(err error) error {
		n.mu.Lock()
		n.state = 2
		n.mu.Unlock()
		if n.closeJournal {
			_ = n.cfg.Journal.Close(context.WithoutCancel(ctx))
		}
		return fmt.Errorf("start node %q: %w", n.cfg.NodeID, err)
	}

	lease, err := n.members.TryAcquire(ctx, memberLease(n.cfg.NodeID))
	if errors.Is(err, lock.ErrUnavailable) {
		return fail(fmt.Errorf("%w: another live node holds the id %q; give each replica its own NodeID", ErrDuplicateNode, n.cfg.NodeID))
	}
	if err != nil {
		return fail(fmt.Errorf("join: %w", err))
	}
	loop, err := n.newSyncLoop(ctx)
	if err == nil {
		err = loop.sync(ctx)
	}
	if err == nil {
		err = loop.refreshHead(ctx)
	}
	if err != nil {
		_ = lease.Release(context.WithoutCancel(ctx))
		return fail(err)
	}
	n.mu.Lock()
	n.lease, n.loop = lease, loop
	n.stopping, n.memberDone = make(chan struct{}), make(chan struct{})
	n.mu.Unlock()
	loop.start()
	go n.keepMembership(lease, loop)
	n.cfg.Logger.Info("tandem: node started", "node", n.cfg.NodeID, "revision", loop.applied())
	return nil
}

// Stop leaves the cluster: it stops the sync loop after a final sync
// bounded by StopDelay (and by ctx), saves the position and releases the
// membership lease. It is idempotent.
func (n *Node) Stop(ctx context.Context) error {
	n.mu.Lock()
	if n.state != 1 {
		never := n.state == 0
		n.state = 2
		n.mu.Unlock()
		if never && n.closeJournal {
			return n.cfg.Journal.Close(ctx)
		}
		return nil
	}
	n.state = 2
	loop := n.loop
	close(n.stopping)
	n.mu.Unlock()
	<-n.memberDone
	n.mu.Lock()
	lease := n.lease
	n.mu.Unlock()
	err := loop.stop(ctx, n.cfg.StopDelay)
	rctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), n.cfg.MemberTTL)
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

func (n *Node) running() (*syncLoop, error) {
	n.mu.Lock()
	defer n.mu.Unlock()
	if n.state != 1 {
		return nil, fmt.Errorf("node %q: %w", n.cfg.NodeID, ErrNotRunning)
	}
	return n.loop, nil
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
func (n *Node) PublishEntries(ctx context.Context, entries ...journal.Entry) ([]int64, error) {
	revs, err := n.cfg.Journal.Append(ctx, entries...)
	if err != nil {
		return nil, err
	}
	if l, err := n.running(); err == nil {
		l.wake()
	}
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
// request WaitFor it first.
func (n *Node) WaitFor(ctx context.Context, rev int64) error {
	l, err := n.running()
	if err != nil {
		return err
	}
	return l.waitFor(ctx, rev)
}

// Stats describes a node's progress.
type Stats struct {
	Revision        int64     // last revision applied
	Head            int64     // journal head as of the last poll (or later sync)
	Lag             int64     // Head - Revision
	LastSync        time.Time // when the last sync finished (this node's clock)
	Applied         int64     // records applied by handlers
	Unhandled       int64     // records of producers without a handler
	HandlerFailures int64     // failed Apply calls (each retried)
	Resyncs         int64
	SyncErrors      int64 // syncs that failed (journal or store errors)
}

// Stats returns the node's counters.
func (n *Node) Stats() Stats {
	n.mu.Lock()
	l := n.loop
	n.mu.Unlock()
	if l == nil {
		return Stats{}
	}
	return l.stats()
}
