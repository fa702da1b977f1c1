package filelock

import (
	"bufio"
	"context"
	"os"
	"os/exec"
	"path/filepath"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
)

func open(t *testing.T, path string) *Lock {
	t.Helper()
	l, err := Open(path)
	require.NoError(t, err)
	t.Cleanup(func() { require.NoError(t, l.Close()) })
	return l
}

func TestExclusionInProcess(t *testing.T) {
	t.Parallel()
	path := filepath.Join(t.TempDir(), "LOCK")
	a, b := open(t, path), open(t, path)
	ok, err := a.TryLock()
	require.NoError(t, err)
	require.True(t, ok)
	ok, err = a.TryLock()
	require.NoError(t, err)
	require.False(t, ok, "not reentrant")
	ok, err = b.TryLock()
	require.NoError(t, err)
	require.False(t, ok, "two Locks of one process exclude each other")

	err = b.Acquire(context.Background(), 30*time.Millisecond)
	require.ErrorIs(t, err, ErrTimeout)
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	require.ErrorIs(t, b.Acquire(ctx, time.Second), context.Canceled)

	require.NoError(t, a.Unlock())
	require.Error(t, a.Unlock(), "unlocking a free lock is an error")
	require.NoError(t, b.Acquire(context.Background(), time.Second))
	require.NoError(t, b.Unlock())
}

// TestAcquireUnless: while the lock is taken, AcquireUnless asks stop
// after each attempt and gives up, without the lock and without an error,
// once stop says so; with the lock free it takes it without asking.
func TestAcquireUnless(t *testing.T) {
	t.Parallel()
	path := filepath.Join(t.TempDir(), "LOCK")
	a, b := open(t, path), open(t, path)
	require.NoError(t, a.Acquire(context.Background(), time.Second))
	asked := 0
	stopped, err := b.AcquireUnless(context.Background(), 10*time.Second, func() bool { asked++; return asked == 3 })
	require.NoError(t, err)
	require.True(t, stopped)
	require.Equal(t, 3, asked)
	ok, err := b.TryLock()
	require.NoError(t, err)
	require.False(t, ok, "still a's")

	_, err = b.AcquireUnless(context.Background(), 30*time.Millisecond, func() bool { return false })
	require.ErrorIs(t, err, ErrTimeout)

	require.NoError(t, a.Unlock())
	stopped, err = b.AcquireUnless(context.Background(), time.Second, func() bool { t.Error("asked with the lock free"); return true })
	require.NoError(t, err)
	require.False(t, stopped)
	require.NoError(t, b.Unlock())
}

func TestMutualExclusion(t *testing.T) {
	t.Parallel()
	path := filepath.Join(t.TempDir(), "LOCK")
	var inside, max atomic.Int32
	var wg sync.WaitGroup
	for range 6 {
		l := open(t, path)
		wg.Go(func() {
			for range 30 {
				if err := l.Acquire(context.Background(), 10*time.Second); err != nil {
					t.Error(err)
					return
				}
				n := inside.Add(1)
				if n > max.Load() {
					max.Store(n)
				}
				time.Sleep(50 * time.Microsecond)
				inside.Add(-1)
				if err := l.Unlock(); err != nil {
					t.Error(err)
					return
				}
			}
		})
	}
	wg.Wait()
	require.Equal(t, int32(1), max.Load())
}

// A Lock whose file was deleted and recreated locks the new file.
func TestRecreatedFile(t *testing.T) {
	t.Parallel()
	path := filepath.Join(t.TempDir(), "LOCK")
	old := open(t, path)
	require.NoError(t, os.Remove(path))
	fresh := open(t, path) // creates a new file at path
	ok, err := old.TryLock()
	require.NoError(t, err)
	require.True(t, ok)
	ok, err = fresh.TryLock()
	require.NoError(t, err)
	require.False(t, ok, "the old Lock moved to the new file")
	require.NoError(t, old.Unlock())
}

func TestClose(t *testing.T) {
	t.Parallel()
	path := filepath.Join(t.TempDir(), "LOCK")
	a, err := Open(path)
	require.NoError(t, err)
	ok, err := a.TryLock()
	require.NoError(t, err)
	require.True(t, ok)
	require.NoError(t, a.Close(), "closing releases")
	require.NoError(t, a.Close(), "idempotent")
	_, err = a.TryLock()
	require.ErrorIs(t, err, os.ErrClosed)
	b := open(t, path)
	ok, err = b.TryLock()
	require.NoError(t, err)
	require.True(t, ok)
	require.NoError(t, b.Unlock())
}

// The lock excludes another process: a helper process (this test binary)
// holds it until its stdin closes.
func TestExclusionAcrossProcesses(t *testing.T) {
	if path := os.Getenv("FILELOCK_TEST_HOLD"); path != "" {
		l, err := Open(path)
		require.NoError(t, err)
		require.NoError(t, l.Acquire(context.Background(), 10*time.Second))
		os.Stdout.WriteString("locked\n")
		bufio.NewReader(os.Stdin).ReadString('\n')
		return
	}
	t.Parallel()
	path := filepath.Join(t.TempDir(), "LOCK")
	cmd := exec.Command(os.Args[0], "-test.run=^TestExclusionAcrossProcesses$")
	cmd.Env = append(os.Environ(), "FILELOCK_TEST_HOLD="+path)
	stdin, err := cmd.StdinPipe()
	require.NoError(t, err)
	stdout, err := cmd.StdoutPipe()
	require.NoError(t, err)
	require.NoError(t, cmd.Start())
	line, err := bufio.NewReader(stdout).ReadString('\n')
	require.NoError(t, err)
	require.Equal(t, "locked\n", line)

	l := open(t, path)
	ok, err := l.TryLock()
	require.NoError(t, err)
	require.False(t, ok, "held by the other process")
	stdin.Close() // the helper exits, releasing the lock
	require.NoError(t, l.Acquire(context.Background(), 10*time.Second))
	require.NoError(t, l.Unlock())
	require.NoError(t, cmd.Wait())
}
