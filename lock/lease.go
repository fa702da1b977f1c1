package lock

import (
	"context"
	"crypto/rand"
	"database/sql"
	"encoding/hex"
	"errors"
	"fmt"
	"log/slog"
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

// ErrUnavailable is returned by TryAcquire when another holder's lease is
// still valid.
var ErrUnavailable = errors.New("lock: lease held by another owner")

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
	// Clock measures the holder's deadlines. Defaults to SystemClock.
	Clock Clock
	// Logger receives state changes (lease lost). Defaults to
	// slog.Default().
	Logger *slog.Logger
}

// Client acquires leases for one node. Its owner identity is the node id
// plus a random instance id made by New, so two processes of one node are
// distinct holders. It is safe for concurrent use.
type Client struct {
	cfg   Config
	owner Owner
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
	if err := checkTTL(cfg.TTL); err != nil {
		return nil, fmt.Errorf("lock config: TTL: %w", err)
	}
	if cfg.RenewEvery <= 0 || cfg.RenewEvery >= cfg.TTL/2 {
		return nil, fmt.Errorf("lock config: %w: RenewEvery is %v, must be in (0, TTL/2 = %v)", ErrInvalidArgument, cfg.RenewEvery, cfg.TTL/2)
	}
	var b [8]byte
	_, _ = rand.Read(b[:])
	return &Client{cfg: cfg, owner: Owner{NodeID: cfg.NodeID, Instance: hex.EncodeToString(b[:])}}, nil
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

// TryAcquire acquires the lease name if it is free now, starting its
// keep-alive, and returns an error matching ErrUnavailable if another
// owner holds it.
func (c *Client) TryAcquire(ctx context.Context, name string) (*Lease, error) {
	if err := ident.LeaseName("name", name); err != nil {
		return nil, fmt.Errorf("acquire lease: %w", err)
	}
	sent := c.cfg.Clock.Now()
	token, ok, err := c.cfg.Store.TryAcquire(ctx, name, c.owner, c.cfg.TTL)
	if err != nil {
		return nil, err
	}
	if !ok {
		return nil, fmt.Errorf("acquire lease %q: %w", name, ErrUnavailable)
	}
	return c.hold(name, token, sent), nil
}

// Acquire blocks until it acquires the lease name or ctx ends, trying
// again every TTL/10 or so (jittered).
func (c *Client) Acquire(ctx context.Context, name string) (*Lease, error) {
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
// released, or can no longer be confirmed: the keep-alive ends it at the
// moment the lease could expire in the store, measured from the sending of
// the last successful acquire or renew on this node's monotonic clock,
// which is never later than the store's own expiry. Work done under the
// lease must stop when the context ends. Safe for concurrent use.
type Lease struct {
	c     *Client
	name  string
	token int64

	ctx    context.Context
	cancel context.CancelCauseFunc
	done   chan struct{} // keep-alive exited

	mu       sync.Mutex
	deadline time.Time // by c.cfg.Clock
	released bool
}

// holdFor is how long after sending an acquire or renew the holder may
// rely on it: the TTL less 5%, a margin for timer lateness and for the
// rates of two clocks differing. The store's own expiry is TTL after it
// executed the request, which is later still.
func (c *Client) holdFor() time.Duration { return c.cfg.TTL - c.cfg.TTL/20 }

func (c *Client) hold(name string, token int64, sent time.Time) *Lease {
	l := &Lease{c: c, name: name, token: token, done: make(chan struct{}), deadline: sent.Add(c.holdFor())}
	l.ctx, l.cancel = context.WithCancelCause(context.Background())
	go l.keepAlive()
	return l
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
	return nil
}

// lose ends the lease for cause.
func (l *Lease) lose(cause error) {
	if l.ctx.Err() == nil {
		l.c.cfg.Logger.Warn("tandem: lease lost", "lease", l.name, "token", l.token, "node", l.c.owner.NodeID, "err", cause)
	}
	l.cancel(cause)
}

func (l *Lease) keepAlive() {
	defer close(l.done)
	bo := backoff.New(l.c.cfg.RenewEvery/10, l.c.cfg.RenewEvery)
	wait := backoff.Jitter(l.c.cfg.RenewEvery, 0.1)
	for {
		l.mu.Lock()
		left := l.deadline.Sub(l.c.cfg.Clock.Now())
		l.mu.Unlock()
		if left <= 0 {
			l.lose(fmt.Errorf("lease %q: %w: not confirmed within its TTL", l.name, ErrNotHeld))
			return
		}
		timer := time.NewTimer(min(wait, left))
		select {
		case <-l.ctx.Done():
			timer.Stop()
			return
		case <-timer.C:
		}
		if wait > left { // the deadline came first
			continue
		}
		ctx, cancel := context.WithTimeout(l.ctx, left)
		err := l.Renew(ctx)
		cancel()
		switch {
		case err == nil:
			bo.Reset()
			wait = backoff.Jitter(l.c.cfg.RenewEvery, 0.1)
		case errors.Is(err, ErrNotHeld):
			l.lose(err)
			return
		default: // the store did not answer: try again soon, until the deadline
			wait = bo.Next()
		}
	}
}

// Release ends the lease: its context ends at once, then the store is told
// so that others can acquire it without waiting for expiry. It is
// idempotent.
func (l *Lease) Release(ctx context.Context) error {
	l.mu.Lock()
	already := l.released
	l.released = true
	l.mu.Unlock()
	l.cancel(fmt.Errorf("lease %q: %w: released", l.name, ErrNotHeld))
	<-l.done
	if already {
		return nil
	}
	if err := l.c.cfg.Store.Release(ctx, l.name, l.c.owner, l.token); err != nil {
		return err
	}
	return nil
}

// Abandon stops using the lease without telling the store: its context
// ends and the keep-alive stops, and the store frees the lease when it
// expires. For shutting down when the store cannot be reached; otherwise
// Release lets others in sooner.
func (l *Lease) Abandon() {
	l.mu.Lock()
	l.released = true
	l.mu.Unlock()
	l.cancel(fmt.Errorf("lease %q: %w: abandoned", l.name, ErrNotHeld))
	<-l.done
}

// Fenced runs fn only if the store confirms this lease is still current,
// and keeps anyone from taking it over while fn runs (see Fencer). It
// fails with ErrFenced otherwise, and with ErrInvalidArgument when the
// store cannot fence.
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
