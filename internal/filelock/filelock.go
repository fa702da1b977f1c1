// Package filelock takes exclusive locks on files that work between
// processes, between machines sharing a folder over NFS (POSIX fcntl locks,
// which NFSv4 implements in the protocol and NFSv3 through NLM), and
// between several lock holders in one process.
//
// On Linux it uses open file description locks (F_OFD_SETLK): they belong
// to the open file, not the process, so two Locks on one file in one process
// exclude each other, and closing some other descriptor of the file does not
// drop them. Other Unix systems use classic fcntl locks (F_SETLK), which
// belong to the process, so a process-wide table adds the exclusion
// between Locks of one process. Windows uses LockFileEx.
//
// Locks are not reentrant and not fair: TryLock never waits, Acquire polls.
package filelock

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"os"
	"sync"
	"time"
)

// ErrTimeout: Acquire gave up after its timeout.
var ErrTimeout = errors.New("file lock not acquired within the timeout")

// Lock is an exclusive lock on one file. It holds the file open from Open
// to Close. A Lock is safe for concurrent use, but only one goroutine may
// hold it at a time (TryLock on a held Lock returns false).
type Lock struct {
	path string
	f    *os.File
	mu   sync.Mutex // guards held and serializes the system calls
	held bool
	proc *procLock // non-nil where locks belong to the process
	key  fileKey   // proc's key in the process-wide table
}

// procLock excludes the Locks of one process on one file where the system
// lock cannot (it belongs to the process, not to the open file). The
// Locks share one open file, because closing any descriptor of a file
// drops the process's locks on it.
type procLock struct {
	mu   sync.Mutex
	f    *os.File
	refs int // Locks sharing it; guarded by the process-wide table
}

// fileKey identifies a file: device and inode.
type fileKey struct{ dev, ino uint64 }

// Open opens (creating it when missing) the lock file at path. It does not
// lock it.
func Open(path string) (*Lock, error) {
	f, err := os.OpenFile(path, os.O_RDWR|os.O_CREATE, 0o666)
	if err != nil {
		return nil, err
	}
	l := &Lock{path: path, f: f}
	if err := l.init(); err != nil {
		f.Close()
		return nil, err
	}
	return l, nil
}

// TryLock takes the lock if it is free and reports whether it did.
//
// A lock on a file that was since deleted or replaced (a folder removed
// and recreated under a running process) would exclude nobody, so after
// locking TryLock checks that the path still names the locked file, and
// reopens it when not.
func (l *Lock) TryLock() (bool, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.f == nil {
		return false, os.ErrClosed
	}
	if l.held {
		return false, nil
	}
	for range 3 {
		if l.proc != nil && !l.proc.mu.TryLock() {
			return false, nil
		}
		ok, err := tryLock(l.f)
		if ok && err == nil {
			var same bool
			if same, err = l.current(); err == nil && same {
				l.held = true
				return true, nil
			}
			_ = unlock(l.f)
		}
		if l.proc != nil {
			l.proc.mu.Unlock()
		}
		if err != nil {
			return false, fmt.Errorf("lock %s: %w", l.path, err)
		}
		if !ok {
			return false, nil
		}
		if err := l.reopen(); err != nil {
			return false, fmt.Errorf("lock %s: reopen: %w", l.path, err)
		}
	}
	return false, nil
}

// current reports whether the path still names the open file.
func (l *Lock) current() (bool, error) {
	fi, err := l.f.Stat()
	if err != nil {
		return false, err
	}
	pi, err := os.Stat(l.path)
	if errors.Is(err, os.ErrNotExist) {
		return false, nil
	}
	if err != nil {
		return false, err
	}
	return os.SameFile(fi, pi), nil
}

// reopen replaces the open file by the one the path names now.
func (l *Lock) reopen() error {
	f, err := os.OpenFile(l.path, os.O_RDWR|os.O_CREATE, 0o666)
	if err != nil {
		return err
	}
	_ = l.release()
	l.f, l.proc = f, nil
	if err := l.init(); err != nil {
		f.Close()
		l.f = nil // unusable: later calls fail with os.ErrClosed
		return err
	}
	return nil
}

// Acquire takes the lock, polling with short randomized sleeps until it is
// free, ctx ends (ctx's error) or timeout passes (an error matching
// ErrTimeout).
func (l *Lock) Acquire(ctx context.Context, timeout time.Duration) error {
	_, err := l.AcquireUnless(ctx, timeout, nil)
	return err
}

// AcquireUnless is Acquire that also gives up, without the lock and
// without an error, once stop (when not nil), called after each attempt
// that found the lock taken, reports true; stopped says it did.
func (l *Lock) AcquireUnless(ctx context.Context, timeout time.Duration, stop func() bool) (stopped bool, err error) {
	deadline := time.Now().Add(timeout)
	sleep := 200 * time.Microsecond
	for {
		ok, err := l.TryLock()
		if err != nil || ok {
			return false, err
		}
		if stop != nil && stop() {
			return true, nil
		}
		if err := ctx.Err(); err != nil {
			return false, err
		}
		left := time.Until(deadline)
		if left <= 0 {
			return false, fmt.Errorf("lock %s: %w (%v)", l.path, ErrTimeout, timeout)
		}
		d := min(sleep/2+rand.N(sleep), left)
		t := time.NewTimer(d)
		select {
		case <-t.C:
		case <-ctx.Done():
			t.Stop()
			return false, ctx.Err()
		}
		sleep = min(sleep*2, 20*time.Millisecond)
	}
}

// Unlock releases the lock. Unlocking a Lock that is not held is an error.
func (l *Lock) Unlock() error {
	l.mu.Lock()
	defer l.mu.Unlock()
	if !l.held {
		return fmt.Errorf("unlock %s: not held", l.path)
	}
	l.held = false
	err := unlock(l.f)
	if l.proc != nil {
		l.proc.mu.Unlock()
	}
	if err != nil {
		return fmt.Errorf("unlock %s: %w", l.path, err)
	}
	return nil
}

// Close releases the lock if held and closes the file. It is idempotent.
func (l *Lock) Close() error {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.f == nil {
		return nil
	}
	if l.held {
		l.held = false
		_ = unlock(l.f)
		if l.proc != nil {
			l.proc.mu.Unlock()
		}
	}
	err := l.release()
	l.f = nil
	return err
}
