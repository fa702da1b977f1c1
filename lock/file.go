package lock

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"math"
	"os"
	"path/filepath"
	"sync"
	"time"

	"github.com/tandem-go/tandem/ident"
	"github.com/tandem-go/tandem/internal/atomicfile"
	"github.com/tandem-go/tandem/internal/filelock"
)

// DefaultFileLockTimeout bounds how long a call of the file store waits for
// a lease's lock file. Other nodes hold it for one read-modify-write
// (milliseconds) or for the whole of a Fence's fn.
const DefaultFileLockTimeout = 10 * time.Second

// ErrCorrupt: a lease file of the file store does not parse or fails its
// checksum.
var ErrCorrupt = errors.New("lock: corrupt lease file")

// fileStaleTempAge is how old a temp file must be for OpenFile to remove
// it: writes take milliseconds, so an hour-old one was left by a crash.
const fileStaleTempAge = time.Hour

// FileConfig configures a File. The zero value of each field means its
// default.
type FileConfig struct {
	// Dir is the shared folder; leases live in Dir/locks. Required.
	Dir string
	// Clock measures how long an observed lease has stood still. Only
	// differences between its readings are used, so it should carry a
	// monotonic reading (time.Now does). Defaults to SystemClock.
	Clock Clock
	// LockTimeout bounds the wait for a lease's lock file. When it
	// passes, TryAcquire returns ok=false (someone else is working on
	// the lease, perhaps in a Fence); the other calls fail. Defaults to
	// DefaultFileLockTimeout.
	LockTimeout time.Duration
	// Logger receives state changes (a lease taken over from a holder
	// that stopped renewing). Defaults to slog.Default().
	Logger *slog.Logger
}

func (c FileConfig) withDefaults() (FileConfig, error) {
	if c.Clock == nil {
		c.Clock = SystemClock{}
	}
	if c.LockTimeout == 0 {
		c.LockTimeout = DefaultFileLockTimeout
	}
	if c.Logger == nil {
		c.Logger = slog.Default()
	}
	if c.Dir == "" {
		return c, fmt.Errorf("%w: Dir is empty", ErrInvalidArgument)
	}
	if c.LockTimeout < 0 {
		return c, fmt.Errorf("%w: LockTimeout is %v, must be > 0", ErrInvalidArgument, c.LockTimeout)
	}
	return c, nil
}

// File is the Store (and Fencer) in a shared folder: one file per lease,
// <dir>/locks/<name>, replaced atomically on every change (temp file in the
// same folder, fsync, rename, fsync of the folder; the encoding is in
// filecodec.go). It holds the lease's owner, its fencing token, a heartbeat
// counter that every Renew increments, the TTL and whether the lease was
// released. The token is kept across release and takeover, so it increases
// on every acquisition of the name, forever — unless the file is deleted:
// do not delete lease files of a running cluster.
//
// Every read-modify-write of a lease file happens under an exclusive OS
// lock (fcntl) on <dir>/locks/.<name>.lock, held for that one operation,
// or for the whole of a Fence's fn — never merely while a lease is held.
//
// # Expiry without comparing clocks
//
// Nobody can read a time in a lease file that another machine could
// compare with its own clock: the machines' clocks may be minutes apart.
// Instead each File is an observer. Per name it remembers the lease it
// last saw (owner, token, heartbeat) and the time, on its own Clock, at
// which it first saw exactly that. TryAcquire takes a held lease only when
// it has seen the same lease, unchanged, for at least the TTL recorded in
// the file, measured on its own clock from that first sighting. So the
// first TryAcquire that meets someone else's lease returns ok=false and
// starts watching; a later one, a TTL on, takes it if the holder has not
// renewed meanwhile. Every renewal restarts the watch. A released lease,
// or a name never acquired, is taken at once.
//
// Why that is safe: a holder (see Lease) steps down once the moment it
// SENT its last successful acquire or renew, plus the TTL, has passed on
// its own monotonic clock. Say an observer takes over after watching one
// lease value V stand still for a TTL:
//
//  1. V was written by an acquire or renew of the holder, sent at S, and
//     no later one succeeded: it would have changed the heartbeat, and the
//     takeover re-reads the file under the OS lock every write holds. (A
//     call that wrote V but reported an error to the holder only makes its
//     deadline earlier.)
//  2. V was written after it was sent, and the observer first saw V after
//     it was written, at F: so F comes after S.
//  3. The holder stepped down at S + TTL on its clock; the observer takes
//     over at F + TTL or later on its own. As F is after S, the takeover
//     comes after the step-down — whatever the wall clocks of the two
//     machines say.
//
// This assumes only that the two clocks run at the same rate — a TTL on
// one lasts a TTL on the other — up to the margin the holder keeps (see
// Lease: it steps down a little before its TTL). The TTL is stored rounded
// up to whole milliseconds, which only makes observers wait longer.
//
// The store itself cannot know when a lease expired: there is no common
// clock. A holder that renews late, but before anyone took over, succeeds,
// and a Fence by such a holder runs. That is harmless: its own keep-alive
// has already stepped down, and nobody else holds the lease, nor can
// take it over while the fenced fn runs.
//
// A restarted process forgets what it saw and starts watching afresh, which
// only delays a takeover. List reports a lease as not held once this
// observer has seen it stand still for its TTL; Info.Expires is this
// observer's estimate on its own clock, and Info.Acquired is the
// acquiring node's clock (both informational).
//
// While a Fence's fn runs, the holder's own Renew and Release calls (same
// owner and token, through the same File) ride on the Fence's OS lock —
// also those that were already waiting for the lock when the Fence took
// it — so the holder's keep-alive keeps renewing during long fenced work;
// everyone else waits for the lock file (TryAcquire gives up with
// ok=false after LockTimeout). A fn that never returns keeps the lease
// from everyone: bound it with its ctx.
//
// # Network file systems
//
// The folder may be on NFS when the file system provides:
//
//   - working POSIX byte-range locks (fcntl; on Linux, open file
//     description locks, which NFS carries as POSIX locks): NFSv4, or NFSv3
//     with the NLM lock manager (lockd) on client and server, not mounted
//     with "nolock" or "local_lock". Without them two nodes can take one
//     lease at once;
//   - close-to-open consistency (the NFS default; not "nocto"): a writer's
//     rename is committed before it unlocks, and a reader opens the lease
//     file afresh after locking, so it sees the latest lease. A client that
//     served a stale lease file from its cache could miss a renewal and
//     take over a live lease;
//   - atomic rename within a folder.
//
// OS locks of a process that died are released by the server (at once
// locally, after the NFSv4 lease or NLM recovery over NFS).
//
// File is safe for concurrent use, by many goroutines and many processes.
// It opens lock files per operation and holds nothing between calls: there
// is nothing to close.
type File struct {
	dir string // <dir>/locks
	cfg FileConfig

	mu     sync.Mutex
	seen   map[string]sighting // guarded by mu: per name, the lease last seen
	fences map[string]*fence   // guarded by mu: per name, the Fence running in this File
}

var (
	_ Store  = (*File)(nil)
	_ Fencer = (*File)(nil)
)

// sighting is a lease as an observer saw it, and when it first saw it.
type sighting struct {
	key   leaseKey
	first time.Time // by the observer's Clock
	// written estimates, for List only, when the lease was written: the
	// lease file's age by the file server's clock, subtracted from the
	// observer's. Never used to take a lease over.
	written   time.Time
	estimated bool
}

// OpenFile opens the lease store in cfg.Dir (the shared folder; leases
// live in Dir/locks), creating the folder when it does not exist, and
// removes temp files older than an hour that crashed writers left behind.
// ctx bounds these folder checks: OpenFile fails at once when it is done.
func OpenFile(ctx context.Context, cfg FileConfig) (*File, error) {
	cfg, err := cfg.withDefaults()
	if err != nil {
		return nil, fmt.Errorf("open lock store: %w", err)
	}
	if err := ctx.Err(); err != nil {
		return nil, fmt.Errorf("open lock store: %w", err)
	}
	abs, err := filepath.Abs(cfg.Dir)
	if err != nil {
		return nil, fmt.Errorf("open lock store: %w", err)
	}
	locks := filepath.Join(abs, "locks")
	if err := os.MkdirAll(locks, 0o777); err != nil {
		return nil, fmt.Errorf("open lock store: %w", err)
	}
	if n, err := atomicfile.RemoveStale(locks, fileStaleTempAge); err != nil {
		return nil, fmt.Errorf("open lock store: %w", err)
	} else if n > 0 {
		cfg.Logger.Info("tandem: removed stale temp files from the locks folder", "dir", locks, "count", n)
	}
	return &File{dir: locks, cfg: cfg, seen: map[string]sighting{}, fences: map[string]*fence{}}, nil
}

func (s *File) leasePath(name string) string { return filepath.Join(s.dir, name) }

// lockPath names the lease's lock file. Names cannot start with '.', so
// it is never a lease file, and it does not end like a temp file.
func (s *File) lockPath(name string) string { return filepath.Join(s.dir, "."+name+".lock") }

// TryAcquire implements Store. It also returns ok=false when the lease's
// lock file stays busy for LockTimeout: someone is working on the lease.
func (s *File) TryAcquire(ctx context.Context, name string, owner Owner, ttl time.Duration) (int64, bool, error) {
	if err := checkLease(name, owner, ttl); err != nil {
		return 0, false, fmt.Errorf("acquire lease: %w", err)
	}
	unlock, err := s.lockName(ctx, name)
	if errors.Is(err, filelock.ErrTimeout) {
		return 0, false, nil // someone works on the lease: it is not free
	}
	if err != nil {
		return 0, false, fmt.Errorf("acquire lease %q: %w", name, err)
	}
	defer unlock()
	old, exists, err := s.read(name)
	if err != nil {
		return 0, false, fmt.Errorf("acquire lease %q: %w", name, err)
	}
	token := int64(1)
	if exists {
		if !old.released() {
			if stood, _ := s.observe(name, old); stood < old.TTL {
				return 0, false, nil
			}
		}
		if old.Token == math.MaxInt64 {
			return 0, false, fmt.Errorf("acquire lease %q: token exhausted", name)
		}
		token = old.Token + 1
	}
	l := &leaseFile{
		Name:     name,
		Owner:    owner,
		Token:    token,
		TTL:      ttl,
		Nonce:    newNonce(),
		Acquired: s.cfg.Clock.Now(),
	}
	if err := s.write(l); err != nil {
		return 0, false, fmt.Errorf("acquire lease %q: %w", name, err)
	}
	s.forget(name)
	if exists && !old.released() {
		s.cfg.Logger.Info("tandem: lease taken over from a holder that stopped renewing",
			"lease", name, "from", old.Owner.NodeID, "from_token", old.Token, "to", owner.NodeID, "token", token)
	}
	return token, true, nil
}

// Renew implements Store. It increments the lease's heartbeat and stores
// ttl, which observers then wait for. It succeeds as long as the file
// still names (owner, token), however late (see File).
func (s *File) Renew(ctx context.Context, name string, owner Owner, token int64, ttl time.Duration) (bool, error) {
	if err := checkLease(name, owner, ttl); err != nil {
		return false, fmt.Errorf("renew lease: %w", err)
	}
	ok := false
	err := s.update(ctx, name, owner, token, func(l *leaseFile) error {
		if !l.heldBy(owner, token) {
			return nil
		}
		if l.Heartbeat == math.MaxInt64 {
			return errors.New("heartbeat exhausted")
		}
		l.Heartbeat++
		l.TTL = ttl
		if err := s.write(l); err != nil {
			return err
		}
		ok = true
		return nil
	})
	if err != nil {
		return false, fmt.Errorf("renew lease %q: %w", name, err)
	}
	return ok, nil
}

// Release implements Store. The file keeps the owner and token, marked
// released, so that the next token is still greater.
func (s *File) Release(ctx context.Context, name string, owner Owner, token int64) error {
	if err := checkHolder(name, owner); err != nil {
		return fmt.Errorf("release lease: %w", err)
	}
	err := s.update(ctx, name, owner, token, func(l *leaseFile) error {
		if !l.heldBy(owner, token) {
			return nil
		}
		l.Released, l.ReleasedAt = true, s.cfg.Clock.Now()
		return s.write(l)
	})
	if err != nil {
		return fmt.Errorf("release lease %q: %w", name, err)
	}
	return nil
}

// List implements Store. Reading a lease counts as a sighting. Info.Held,
// Renewed and Expires are this observer's estimates: a lease it has seen
// stand still for its TTL is not held; one it sees for the first time is
// dated by the lease file's age on the file server's clock (its mtime
// against that of a probe file List writes, <dir>/locks/.clock), so that a
// process that has just started does not list a dead holder as live with
// a heartbeat of "now". The estimate only informs List (Members,
// Barrier): TryAcquire never takes a lease over on it.
func (s *File) List(ctx context.Context) ([]Info, error) {
	ents, err := os.ReadDir(s.dir)
	if err != nil {
		return nil, fmt.Errorf("list leases: %w", err)
	}
	var out []Info
	var serverNow time.Time // read once, when a sighting needs it
	probed := false
	for _, e := range ents {
		name := e.Name()
		if !e.Type().IsRegular() || ident.LeaseName("", name) != nil {
			continue // lock files, temp files, strangers
		}
		l, exists, err := s.read(name)
		if err != nil {
			return nil, fmt.Errorf("list leases: %w", err)
		}
		if !exists {
			continue
		}
		in := Info{Name: name, Owner: l.Owner, Token: l.Token, Acquired: l.Acquired}
		if l.released() {
			in.Expires, in.Renewed = l.ReleasedAt, l.ReleasedAt
		} else {
			s.observe(name, l)
			written, now := s.estimate(name, l, func() (time.Duration, bool) {
				// Asked once per write of the lease, not per List: the
				// file's mtime is read only then, after its content (a
				// later write's mtime only dates the lease later).
				mtime := s.mtime(name)
				if !probed {
					probed = true
					serverNow, _ = s.serverNow()
				}
				if serverNow.IsZero() || mtime.IsZero() {
					return 0, false
				}
				return max(serverNow.Sub(mtime), 0), true
			})
			in.Renewed = written
			in.Expires = written.Add(l.TTL)
			in.Held = now.Sub(written) < l.TTL
		}
		out = append(out, in) // ReadDir sorts by file name, which is the name
	}
	return out, nil
}

// estimate returns when this observer estimates the current write of
// lease name was made, and now, both by its Clock: the first sighting,
// or earlier if the file server's clock dates the file earlier (age,
// asked once per write).
func (s *File) estimate(name string, l *leaseFile, age func() (time.Duration, bool)) (written, now time.Time) {
	now = s.cfg.Clock.Now()
	s.mu.Lock()
	sg, ok := s.seen[name]
	s.mu.Unlock()
	if !ok || sg.key != l.key() {
		return now, now
	}
	if !sg.estimated {
		sg.written, sg.estimated = sg.first, true
		if a, ok := age(); ok {
			// Backdate only by a margin well above the file system's
			// timestamp granularity and the probe's own delay.
			now := s.cfg.Clock.Now()
			if w := now.Add(-a); sg.first.Sub(w) >= min(time.Second, l.TTL/4) {
				sg.written = w
			}
		}
		s.mu.Lock()
		if cur, ok := s.seen[name]; ok && cur.key == sg.key {
			s.seen[name] = sg
		}
		s.mu.Unlock()
	}
	return sg.written, now
}

// serverNow writes the probe file and returns its mtime: the file
// server's clock now.
func (s *File) serverNow() (time.Time, error) {
	p := filepath.Join(s.dir, ".clock")
	if err := os.WriteFile(p, []byte("tandem: the lease store's clock probe\n"), 0o666); err != nil {
		return time.Time{}, err
	}
	fi, err := os.Stat(p)
	if err != nil {
		return time.Time{}, err
	}
	return fi.ModTime(), nil
}

// mtime returns the modification time of name's lease file (zero if
// it cannot be read).
func (s *File) mtime(name string) time.Time {
	fi, err := statFile(s.leasePath(name))
	if err != nil {
		return time.Time{}
	}
	return fi.ModTime()
}

// statFile is os.Stat, or a counter in tests.
var statFile = os.Stat

// Fence implements Fencer. It holds the lease's OS lock while fn runs, so
// nobody can take the lease over meanwhile; the holder's own Renew and
// Release (and a nested Fence) through this File still work.
func (s *File) Fence(ctx context.Context, name string, owner Owner, token int64, fn func(ctx context.Context) error) error {
	if err := checkHolder(name, owner); err != nil {
		return fmt.Errorf("fenced: %w", err)
	}
	if !s.exists(name) {
		return fmt.Errorf("fenced %q token %d: %w", name, token, ErrFenced)
	}
	unlock, fc, err := s.lockOrRide(ctx, name, owner, token)
	if err != nil {
		return fmt.Errorf("fenced %q: %w", name, err)
	}
	if fc != nil {
		// Nested in this holder's own Fence, which holds the OS lock.
		defer fc.leave()
		fc.rmw.Lock()
		l, exists, err := s.read(name)
		fc.rmw.Unlock()
		if err != nil {
			return fmt.Errorf("fenced %q: %w", name, err)
		}
		if !exists || !l.heldBy(owner, token) {
			return fmt.Errorf("fenced %q token %d: %w", name, token, ErrFenced)
		}
		return fn(ctx)
	}
	defer unlock()
	l, exists, err := s.read(name)
	if err != nil {
		return fmt.Errorf("fenced %q: %w", name, err)
	}
	if !exists || !l.heldBy(owner, token) {
		return fmt.Errorf("fenced %q token %d: %w", name, token, ErrFenced)
	}
	fc = &fence{owner: owner, token: token}
	fc.cond = sync.NewCond(&fc.mu)
	s.mu.Lock()
	s.fences[name] = fc
	s.mu.Unlock()
	defer func() { // before unlock: no rider may outlive the OS lock
		fc.end()
		s.mu.Lock()
		if s.fences[name] == fc {
			delete(s.fences, name)
		}
		s.mu.Unlock()
	}()
	return fn(ctx)
}

// fence is a Fence running in this File, holding the lease's OS lock. The
// holder's own calls (same owner and token) ride on it instead of waiting
// for the lock the Fence holds.
type fence struct {
	owner Owner
	token int64
	rmw   sync.Mutex // serializes the riders' read-modify-writes

	mu     sync.Mutex
	cond   *sync.Cond // on mu; signalled when active drops to 0
	active int        // riders at work; guarded by mu
	done   bool       // the Fence is ending: no new riders; guarded by mu
}

// ride returns the running Fence of (name, owner, token) in this File, with
// a rider registered (call leave), or nil.
func (s *File) ride(name string, owner Owner, token int64) *fence {
	s.mu.Lock()
	fc := s.fences[name]
	s.mu.Unlock()
	if fc == nil || fc.owner != owner || fc.token != token {
		return nil
	}
	fc.mu.Lock()
	defer fc.mu.Unlock()
	if fc.done {
		return nil
	}
	fc.active++
	return fc
}

func (fc *fence) leave() {
	fc.mu.Lock()
	fc.active--
	if fc.active == 0 {
		fc.cond.Broadcast()
	}
	fc.mu.Unlock()
}

// end turns new riders away and waits for those at work.
func (fc *fence) end() {
	fc.mu.Lock()
	fc.done = true
	for fc.active > 0 {
		fc.cond.Wait()
	}
	fc.mu.Unlock()
}

// update runs op on the lease file of name under its OS lock (or riding on
// the holder's Fence), if the file exists.
func (s *File) update(ctx context.Context, name string, owner Owner, token int64, op func(l *leaseFile) error) error {
	if !s.exists(name) {
		return nil // never acquired: it cannot be (owner, token)'s
	}
	unlock, fc, err := s.lockOrRide(ctx, name, owner, token)
	if err != nil {
		return err
	}
	if fc != nil {
		defer fc.leave()
		fc.rmw.Lock()
		defer fc.rmw.Unlock()
	} else {
		defer unlock()
	}
	l, exists, err := s.read(name)
	if err != nil || !exists {
		return err
	}
	return op(l)
}

// exists reports whether name has a lease file, or may have one. Lease
// files are never removed, so a name without one cannot be held by anyone
// whose acquisition completed: checking first spares a lock file for
// names never acquired.
func (s *File) exists(name string) bool {
	_, err := os.Lstat(s.leasePath(name))
	return !errors.Is(err, fs.ErrNotExist)
}

// lockOrRide takes the OS lock of name for a call of (owner, token), or
// rides on the running Fence of (owner, token) in this File, which holds
// that lock: it returns either unlock (release the lock) or fc (a rider
// registered on fc: call leave). It gives up as lockName does.
//
// It looks for the Fence again between attempts to take the lock, not
// only before the first: the holder's own Fence may take the lock while
// this call waits for it (after another node's brief TryAcquire, say),
// and would then hold it for as long as its fn runs. Waiting for that
// lock would hold the holder's renewal back until the fenced work ends or
// the lock timeout passes, past the lease's deadline.
func (s *File) lockOrRide(ctx context.Context, name string, owner Owner, token int64) (unlock func(), fc *fence, err error) {
	if fc := s.ride(name, owner, token); fc != nil {
		return nil, fc, nil
	}
	lk, err := filelock.Open(s.lockPath(name))
	if err != nil {
		return nil, nil, err
	}
	rode, err := lk.AcquireUnless(ctx, s.cfg.LockTimeout, func() bool {
		fc = s.ride(name, owner, token)
		return fc != nil
	})
	if err != nil || rode {
		lk.Close() // not locked: this only closes the file
		return nil, fc, err
	}
	return s.unlocker(name, lk), nil, nil
}

// lockName takes the OS lock of name within the lock timeout; unlock
// releases it.
func (s *File) lockName(ctx context.Context, name string) (unlock func(), err error) {
	lk, err := filelock.Open(s.lockPath(name))
	if err != nil {
		return nil, err
	}
	if err := lk.Acquire(ctx, s.cfg.LockTimeout); err != nil {
		lk.Close()
		return nil, err
	}
	return s.unlocker(name, lk), nil
}

// unlocker returns the function that releases the held lock lk of name.
func (s *File) unlocker(name string, lk *filelock.Lock) func() {
	return func() {
		if err := lk.Close(); err != nil {
			s.cfg.Logger.Error("tandem: lease lock file release failed", "lease", name, "err", err)
		}
	}
}

// read reads the lease file of name afresh. A missing file is exists=false.
func (s *File) read(name string) (l *leaseFile, exists bool, err error) {
	b, err := os.ReadFile(s.leasePath(name))
	if errors.Is(err, fs.ErrNotExist) {
		return nil, false, nil
	}
	if err != nil {
		return nil, false, err
	}
	l, err = decodeLease(b)
	if err != nil {
		return nil, false, fmt.Errorf("%w: %s: %v", ErrCorrupt, s.leasePath(name), err)
	}
	if l.Name != name {
		return nil, false, fmt.Errorf("%w: %s holds lease %q", ErrCorrupt, s.leasePath(name), l.Name)
	}
	return l, true, nil
}

func (s *File) write(l *leaseFile) error {
	return atomicfile.WriteFile(s.leasePath(l.Name), encodeLease(l), 0o666)
}

// observe records a sighting of the held lease l, just read, and returns
// how long this File has seen it unchanged (0 on a first sighting) and the
// time of the observation, both by its Clock.
func (s *File) observe(name string, l *leaseFile) (stood time.Duration, now time.Time) {
	now = s.cfg.Clock.Now() // after the read: never before l was written
	k := l.key()
	s.mu.Lock()
	defer s.mu.Unlock()
	sg, ok := s.seen[name]
	if !ok || sg.key != k {
		s.seen[name] = sighting{key: k, first: now}
		return 0, now
	}
	return max(now.Sub(sg.first), 0), now
}

// forget drops the sighting of name (this File just wrote a new lease).
func (s *File) forget(name string) {
	s.mu.Lock()
	delete(s.seen, name)
	s.mu.Unlock()
}
