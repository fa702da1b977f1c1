package lock

import (
	"context"
	"crypto/rand"
	"database/sql"
	"encoding/hex"
	"errors"
	"fmt"
	"log/slog"
	"strings"
	"sync"
	"time"

	"github.com/tandem-go/tandem/ident"
	"github.com/tandem-go/tandem/internal/backoff"
)

// Defaults and limits of Config.
const (
	// DefaultTTL is how long a lease lasts without renewal.
	DefaultTTL = 15 * time.Second
	// MinTTL and MaxTTL bound a lease's TTL.
	MinTTL = 100 * time.Millisecond
	MaxTTL = 24 * time.Hour
)

// ErrUnavailable is returned by TryAcquire when the lease is held: by
// another owner, or by this very client (a lease it has not released). The
// error's text says which.
var ErrUnavailable = errors.New("lock: lease unavailable")

// Prefixes of lease names that tandem uses itself. Client's methods refuse
// names with them (ErrInvalidArgument), so that an application lease can
// never block a node's membership or a job's schedule.
const (
	// MemberPrefix starts a node's membership lease: "member.<node id>"
	// (see Client.TryAcquireMembership).
	MemberPrefix = "member."
	// SchedulePrefix starts the lease that records a RunEvery job's last
	// run: "schedule.<job name>".
	SchedulePrefix = "schedule."
)

// MemberLease returns the name of the membership lease of node id.
func MemberLease(nodeID string) string { return MemberPrefix + nodeID }

// Config configures a Client. The zero value of each field means its
// default.
type Config struct {
	// NodeID is the id of this node (ident.NodeID). Required.
	NodeID string
	// Store keeps the leases. Required.
	Store Store
	// TTL is how long a lease lasts without renewal. Defaults to
	// DefaultTTL; between MinTTL and MaxTTL.
	TTL time.Duration
	// RenewEvery is how often the keep-alive renews a held lease (with
	// ±10% jitter). Defaults to TTL/3; must be below TTL/2.
	RenewEvery time.Duration
	// Instance is this process's instance id, the second half of the
	// owner identity: 1 to 64 bytes of [A-Za-z0-9._-]. Defaults to a
	// random id. Two clients must not share one.
	Instance string
	// Clock measures the holder's deadlines. Defaults to SystemClock.
	Clock Clock
	// Logger receives state changes (lease lost). Defaults to
	// slog.Default().
	Logger *slog.Logger
}

// Client acquires leases for one node. Its owner identity is the node id
// plus an instance id (Config.Instance, random by default), so two
// processes of one node are distinct holders. It is safe for concurrent
// use.
type Client struct {
	cfg   Config
	owner Owner

	mu   sync.Mutex
	held map[string]*Lease // guarded by mu: per name, the last lease acquired and not released
	// scheduled holds, per schedule lease (RunEvery), the greatest token
	// this client saw its acquisition of succeed; guarded by mu.
	scheduled map[string]int64
}

// New validates cfg and returns a Client.
func New(cfg Config) (*Client, error) {
	if cfg.TTL == 0 {
		cfg.TTL = DefaultTTL
	}
	if cfg.RenewEvery == 0 {
		cfg.RenewEvery = cfg.TTL / 3
	}
	if cfg.Clock == nil {
		cfg.Clock = SystemClock{}
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.Default()
	}
	if err := ident.NodeID("NodeID", cfg.NodeID); err != nil {
		return nil, fmt.Errorf("lock config: %w", err)
	}
	if cfg.Store == nil {
		return nil, fmt.Errorf("lock config: %w: Store is required", ErrInvalidArgument)
	}
	if cfg.Instance == "" {
		var b [8]byte
		_, _ = rand.Read(b[:])
		cfg.Instance = hex.EncodeToString(b[:])
	}
	if err := ident.NodeID("Instance", cfg.Instance); err != nil {
		return nil, fmt.Errorf("lock config: %w: %w", ErrInvalidArgument, err)
	}
	if err := checkTTL(cfg.TTL); err != nil {
		return nil, fmt.Errorf("lock config: TTL: %w", err)
	}
	if cfg.RenewEvery <= 0 || cfg.RenewEvery >= cfg.TTL/2 {
		return nil, fmt.Errorf("lock config: %w: RenewEvery is %v, must be in (0, TTL/2 = %v)", ErrInvalidArgument, cfg.RenewEvery, cfg.TTL/2)
	}
	return &Client{cfg: cfg, owner: Owner{NodeID: cfg.NodeID, Instance: cfg.Instance}, held: map[string]*Lease{}, scheduled: map[string]int64{}}, nil
}

// Owner returns the identity this client's leases are held under.
func (c *Client) Owner() Owner { return c.owner }

func checkTTL(ttl time.Duration) error {
	if ttl < MinTTL || ttl > MaxTTL {
		return fmt.Errorf("%w: TTL is %v, must be between %v and %v", ErrInvalidArgument, ttl, MinTTL, MaxTTL)
	}
	return nil
}

// checkHolder validates the name and owner every store call carries.
func checkHolder(name string, owner Owner) error {
	if err := ident.LeaseName("name", name); err != nil {
		return err
	}
	if err := ident.NodeID("owner.NodeID", owner.NodeID); err != nil {
		return err
	}
	if owner.Instance == "" || len(owner.Instance) > 64 {
		return fmt.Errorf("%w: owner.Instance must be 1 to 64 bytes", ErrInvalidArgument)
	}
	return nil
}

// checkLease validates the arguments of TryAcquire and Renew.
func checkLease(name string, owner Owner, ttl time.Duration) error {
	if err := checkHolder(name, owner); err != nil {
		return err
	}
	return checkTTL(ttl)
}

// checkName validates a lease name an application passes: a valid
// ident.LeaseName without one of tandem's own prefixes.
func checkName(name string) error {
	if err := ident.LeaseName("name", name); err != nil {
		return fmt.Errorf("%w: %w", ErrInvalidArgument, err)
	}
	for _, p := range []string{MemberPrefix, SchedulePrefix} {
		if strings.HasPrefix(name, p) {
			return fmt.Errorf("%w: name %q: the prefix %q is reserved for tandem's own leases", ErrInvalidArgument, name, p)
		}
	}
	return nil
}

// TryAcquire acquires the lease name if it is free now, starting its
// keep-alive, and returns an error matching ErrUnavailable if it is held:
// by another owner, or by this client itself (a Lease it has not
// released). Names starting with MemberPrefix or SchedulePrefix are
// reserved (ErrInvalidArgument).
func (c *Client) TryAcquire(ctx context.Context, name string) (*Lease, error) {
	if err := checkName(name); err != nil {
		return nil, fmt.Errorf("acquire lease: %w", err)
	}
	return c.tryAcquire(ctx, name)
}

// TryAcquireMembership acquires this node's membership lease,
// MemberLease(NodeID), as TryAcquire does. Package cluster holds it for a
// running node; an application has no need to.
func (c *Client) TryAcquireMembership(ctx context.Context) (*Lease, error) {
	return c.tryAcquire(ctx, MemberLease(c.cfg.NodeID))
}

func (c *Client) tryAcquire(ctx context.Context, name string) (*Lease, error) {
	c.mu.Lock()
	own := c.held[name]
	c.mu.Unlock()
	if own != nil && own.ctx.Err() == nil {
		return nil, fmt.Errorf("acquire lease %q: %w: this client holds it already (token %d); use that Lease, or release it first", name, ErrUnavailable, own.token)
	}
	sent := c.cfg.Clock.Now()
	token, ok, err := c.cfg.Store.TryAcquire(ctx, name, c.owner, c.cfg.TTL)
	if err != nil {
		return nil, err
	}
	if !ok {
		if own != nil {
			return nil, fmt.Errorf("acquire lease %q: %w: this client's earlier lease (token %d) was lost but may not have expired in the store yet", name, ErrUnavailable, own.token)
		}
		return nil, fmt.Errorf("acquire lease %q: %w: another owner holds it", name, ErrUnavailable)
	}
	l := c.hold(name, token, sent)
	c.mu.Lock()
	c.held[name] = l
	c.mu.Unlock()
	return l, nil
}

// forget drops l from the client's held leases once it was released or
// abandoned.
func (c *Client) forget(l *Lease) {
	c.mu.Lock()
	if c.held[l.name] == l {
		delete(c.held, l.name)
	}
	c.mu.Unlock()
}

// Acquire blocks until it acquires the lease name or ctx ends, trying
// again every TTL/10 or so (jittered).
func (c *Client) Acquire(ctx context.Context, name string) (*Lease, error) {
	if err := checkName(name); err != nil {
		return nil, fmt.Errorf("acquire lease: %w", err)
	}
	for {
		l, err := c.TryAcquire(ctx, name)
		if !errors.Is(err, ErrUnavailable) {
			return l, err
		}
		select {
		case <-ctx.Done():
			return nil, fmt.Errorf("acquire lease %q: %w", name, ctx.Err())
		case <-time.After(backoff.Jitter(c.cfg.TTL/10, 0.5)):
		}
	}
}

// Lease is a held lease. Its Context ends as soon as the lease is lost,
// released, or can no longer be confirmed: a timer ends it at the holder's
// trust deadline (see Deadline) unless a renewal moved the deadline on,
// whatever a renewal in flight is doing — a call that hangs on a
// black-holed network changes nothing. The deadline is measured from the
// sending of the last successful acquire or renew on this node's monotonic
// clock, which is never later than the store's own expiry. Work done under
// the lease must stop when the context ends. Safe for concurrent use.
type Lease struct {
	c     *Client
	name  string
	token int64

	ctx    context.Context
	cancel context.CancelCauseFunc
	done   chan struct{} // keep-alive exited

	mu       sync.Mutex
	deadline time.Time   // by c.cfg.Clock
	timer    *time.Timer // ends the lease at deadline; guarded by mu
	released bool        // Release or Abandon was called: ended here; guarded by mu
	told     bool        // a Store.Release succeeded: ended in the store too; guarded by mu
}

// holdFor is how long after sending an acquire or renew the holder may
// rely on it: the TTL less 5%, a margin for timer lateness and for the
// rates of two clocks differing. The store's own expiry is TTL after it
// executed the request, which is later still.
func (c *Client) holdFor() time.Duration { return c.cfg.TTL - c.cfg.TTL/20 }

func (c *Client) hold(name string, token int64, sent time.Time) *Lease {
	l := &Lease{c: c, name: name, token: token, done: make(chan struct{}), deadline: sent.Add(c.holdFor())}
	l.ctx, l.cancel = context.WithCancelCause(context.Background())
	l.mu.Lock()
	l.timer = time.AfterFunc(l.deadline.Sub(c.cfg.Clock.Now()), l.expire)
	l.mu.Unlock()
	go l.keepAlive()
	return l
}

// expire runs on the deadline timer: it ends the lease unless a renewal
// moved the deadline on meanwhile, in which case it waits for the new one.
func (l *Lease) expire() {
	l.mu.Lock()
	left := l.deadline.Sub(l.c.cfg.Clock.Now())
	if left > 0 {
		l.timer.Reset(left)
		l.mu.Unlock()
		return
	}
	l.mu.Unlock()
	l.lose(fmt.Errorf("lease %q: %w: not confirmed within its TTL", l.name, ErrNotHeld))
}

// Deadline returns the holder's trust deadline, by the client's Clock: the
// moment the last successful acquire or renew was sent, plus 95% of the
// TTL. The lease's context ends then at the latest.
func (l *Lease) Deadline() time.Time {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.deadline
}

// Name returns the lease's name.
func (l *Lease) Name() string { return l.name }

// Token returns the lease's fencing token: greater than the token of
// every earlier acquisition of the same name.
func (l *Lease) Token() int64 { return l.token }

// Context ends when the lease is lost or released; context.Cause tells
// which.
func (l *Lease) Context() context.Context { return l.ctx }

// Lost is closed when the lease is lost or released.
func (l *Lease) Lost() <-chan struct{} { return l.ctx.Done() }

// Held reports whether the lease is held now: not released, not lost, and
// its deadline not passed.
func (l *Lease) Held() bool {
	l.mu.Lock()
	defer l.mu.Unlock()
	return !l.released && l.ctx.Err() == nil && l.c.cfg.Clock.Now().Before(l.deadline)
}

// Renew renews the lease now (the keep-alive does so on its own). It
// returns an error matching ErrNotHeld when the lease is no longer held.
func (l *Lease) Renew(ctx context.Context) error {
	if !l.Held() {
		return fmt.Errorf("renew lease %q: %w", l.name, ErrNotHeld)
	}
	sent := l.c.cfg.Clock.Now()
	ok, err := l.c.cfg.Store.Renew(ctx, l.name, l.c.owner, l.token, l.c.cfg.TTL)
	if err != nil {
		return err
	}
	if !ok {
		l.lose(fmt.Errorf("renew lease %q: %w: taken over or expired", l.name, ErrNotHeld))
		return context.Cause(l.ctx)
	}
	l.mu.Lock()
	if d := sent.Add(l.c.holdFor()); d.After(l.deadline) {
		l.deadline = d
	}
	l.mu.Unlock()
	if l.ctx.Err() != nil { // the deadline passed while the call was in flight
		return context.Cause(l.ctx)
	}
	return nil
}

// lose ends the lease for cause.
func (l *Lease) lose(cause error) {
	l.mu.Lock()
	released := l.released
	l.timer.Stop()
	l.mu.Unlock()
	if l.ctx.Err() == nil && !released {
		l.c.cfg.Logger.Warn("tandem: lease lost", "lease", l.name, "token", l.token, "node", l.c.owner.NodeID, "err", cause)
	}
	l.cancel(cause)
}

// keepAlive renews the lease every RenewEvery (jittered), and sooner after
// a failed attempt, until the lease ends. It never decides the lease is
// lost by its own clock reading: the deadline timer does (expire), so a
// renewal that hangs cannot keep the lease's context alive. A renewal in
// flight runs under the lease's context and ends with it.
//
// A failed renewal (the store did not answer, or refused a connection) is
// retried with jittered, doubling backoff from RenewEvery/10, but never
// later than a quarter of the time left to the deadline: the nearer the
// deadline, the more often it tries, so a transient refusal costs a few
// retries rather than the lease. A renewal is due a third of the way into
// the TTL (by default), leaving two thirds of it for retries; when the
// last acquire or renew was slow to answer, sooner (nextRenewal).
//
// Each attempt has its own time limit (attemptTimeout), so an attempt
// that hangs — a request sent on a pooled connection that died silently,
// which fails only when TCP gives up, minutes later — is given up in time
// to try again, on another connection, rather than waited for until the
// deadline.
func (l *Lease) keepAlive() {
	defer close(l.done)
	bo := backoff.New(l.c.cfg.RenewEvery/10, l.c.cfg.RenewEvery)
	wait := l.nextRenewal()
	for {
		timer := time.NewTimer(wait)
		select {
		case <-l.ctx.Done():
			timer.Stop()
			return
		case <-timer.C:
		}
		// Giving up on an attempt is safe: if it still reaches the store
		// and renews the lease there, that only moves the store's expiry
		// later. The holder's deadline moves only on an answer, from
		// when the answered request was sent, so the holder still steps
		// down before the store could hand the lease to anyone else; at
		// worst others wait longer for a lease this holder let go.
		actx, cancel := context.WithTimeout(l.ctx, l.attemptTimeout())
		err := l.Renew(actx)
		cancel()
		switch {
		case err == nil:
			bo.Reset()
			wait = l.nextRenewal()
		case errors.Is(err, ErrNotHeld):
			l.lose(err)
			return
		default: // the store did not answer: try again soon, until the deadline
			wait = min(bo.Next(), l.urgentRetry())
		}
	}
}

// nextRenewal is the wait before the next regular renewal: RenewEvery
// (jittered), shortened in proportion to the part of the trust window
// already gone. The deadline runs from when the last successful acquire or
// renew was SENT, so an answer that was slow to come (an acquisition that
// waited for a row lock, a slow network) has used up part of the window
// before the keep-alive starts waiting: an acquisition that took 70% of
// the TTL would otherwise lose the lease before its first renewal was even
// tried. The renewal then comes as far into what is left as it would into
// a whole window, leaving retries their share; a prompt answer changes
// nothing.
func (l *Lease) nextRenewal() time.Duration {
	hold := l.c.holdFor()
	left := min(max(l.Deadline().Sub(l.c.cfg.Clock.Now()), 0), hold)
	return time.Duration(float64(backoff.Jitter(l.c.cfg.RenewEvery, 0.1)) * float64(left) / float64(hold))
}

// attemptTimeout bounds one renewal attempt of the keep-alive: half the
// time left to the deadline, which leaves the other half for a retry, but
// no less than RenewEvery/4, so that a store that answers slowly but
// surely is not cut off too early. The lease's own context ends the
// attempt at the deadline in any case.
func (l *Lease) attemptTimeout() time.Duration {
	left := l.Deadline().Sub(l.c.cfg.Clock.Now())
	return max(left/2, l.c.cfg.RenewEvery/4)
}

// urgentRetry is the longest wait before retrying a failed renewal: a
// quarter of the time left to the deadline (jittered), but no less than
// RenewEvery/20.
func (l *Lease) urgentRetry() time.Duration {
	left := l.Deadline().Sub(l.c.cfg.Clock.Now())
	return backoff.Jitter(max(left/4, l.c.cfg.RenewEvery/20), 0.2)
}

// Release ends the lease: its context ends at once, then the store is told
// so that others can acquire it without waiting for expiry. It waits for a
// renewal in flight to end, or for ctx.
//
// When the store cannot be told (an error, or ctx ends first), the lease
// stays ended here and Release returns the error; calling Release again
// tells the store again, until it has succeeded once — the store's
// Release is idempotent for one owner and token. From then on Release
// returns nil at once. Release after Abandon tells the store too.
func (l *Lease) Release(ctx context.Context) error {
	l.mu.Lock()
	l.released = true
	done := l.told
	l.mu.Unlock()
	if done {
		return nil // told already: everything below happened then
	}
	l.cancel(fmt.Errorf("lease %q: %w: released", l.name, ErrNotHeld))
	l.lose(context.Cause(l.ctx))
	l.c.forget(l)
	select {
	case <-l.done:
	case <-ctx.Done():
		return fmt.Errorf("release lease %q: %w", l.name, ctx.Err())
	}
	l.mu.Lock()
	told := l.told
	l.mu.Unlock()
	if told {
		return nil
	}
	if err := l.c.cfg.Store.Release(ctx, l.name, l.c.owner, l.token); err != nil {
		return err
	}
	l.mu.Lock()
	l.told = true
	l.mu.Unlock()
	return nil
}

// Abandon stops using the lease without telling the store: its context
// ends and the keep-alive stops, and the store frees the lease when it
// expires. For shutting down when the store cannot be reached; otherwise
// Release lets others in sooner (it may still be called afterwards). It
// does not wait for a renewal in flight, which can only extend the lease
// in the store.
func (l *Lease) Abandon() {
	l.mu.Lock()
	l.released = true
	l.mu.Unlock()
	l.cancel(fmt.Errorf("lease %q: %w: abandoned", l.name, ErrNotHeld))
	l.lose(context.Cause(l.ctx))
	l.c.forget(l)
}

// Fenced runs fn only if the store confirms this lease is still current,
// and keeps anyone from taking it over while fn runs (see Fencer). It
// fails with ErrFenced otherwise, and with ErrInvalidArgument when the
// store cannot fence.
//
// On a SQL store the fence holds the lease row's lock, which holds off this
// lease's own renewals too: fn must end well within the time left to the
// lease's deadline, or the lease is lost (safely: nobody takes it over
// while fn runs). Fence each step of long work separately, each taking
// well under RenewEvery (see the package doc, Fencing). The file store
// renews during fn.
func (l *Lease) Fenced(ctx context.Context, fn func(ctx context.Context) error) error {
	if fn == nil {
		return fmt.Errorf("fenced %q: %w: fn is nil", l.name, ErrInvalidArgument)
	}
	f, ok := l.c.cfg.Store.(Fencer)
	if !ok {
		return fmt.Errorf("fenced %q: %w: the store cannot fence", l.name, ErrInvalidArgument)
	}
	return f.Fence(ctx, l.name, l.c.owner, l.token, fn)
}

// FencedTx runs fn in a transaction of the lease's SQL store that commits
// only if the store confirms, in that same transaction, that this lease is
// still current (see TxFencer): statements fn runs on tx are rejected
// with the check. It fails with ErrFenced when the lease is no longer
// current, and with ErrInvalidArgument when the store is not a TxFencer
// (the file store; use Fenced there). The statements must address the
// lease store's database.
//
// The transaction holds the lease row's lock until it ends, which holds
// off this lease's own renewals: it must end well within the time left to
// the lease's deadline, or the lease is lost (safely: nobody takes it over
// meanwhile, and fn's statements commit only with the check). Run long
// work as several fenced transactions, each taking well under RenewEvery
// (see the package doc, Fencing).
func (l *Lease) FencedTx(ctx context.Context, fn func(ctx context.Context, tx *sql.Tx) error) error {
	if fn == nil {
		return fmt.Errorf("fenced %q: %w: fn is nil", l.name, ErrInvalidArgument)
	}
	f, ok := l.c.cfg.Store.(TxFencer)
	if !ok {
		return fmt.Errorf("fenced %q: %w: the store cannot run statements in its fencing transaction", l.name, ErrInvalidArgument)
	}
	return f.FenceTx(ctx, l.name, l.c.owner, l.token, fn)
}
