package lock_test

import (
	"context"
	"errors"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/tandem-go/tandem/lock"
)

// lostScheduleAck is a store whose first acquisition of a schedule lease
// is carried out, but whose answer is lost: the caller gets an error (a
// connection dropped as the commit went through).
type lostScheduleAck struct {
	lock.Store
	n atomic.Int32
}

func (s *lostScheduleAck) TryAcquire(ctx context.Context, name string, o lock.Owner, ttl time.Duration) (int64, bool, error) {
	token, ok, err := s.Store.TryAcquire(ctx, name, o, ttl)
	if strings.HasPrefix(name, lock.SchedulePrefix) && s.n.Add(1) == 1 {
		return 0, false, errors.New("injected: connection lost after commit")
	}
	return token, ok, err
}

// TestRunEveryAmbiguousAcquisition: when the acquisition of a job's
// schedule lease took the lease but its answer was lost, the leader finds
// the lease held under its own name and a token it never saw, gives that
// period back and runs the job at once, instead of skipping a whole
// interval.
func TestRunEveryAmbiguousAcquisition(t *testing.T) {
	t.Parallel()
	s := &lostScheduleAck{Store: openFileStore(t, t.TempDir(), lock.FileConfig{})}
	c, err := lock.New(lock.Config{NodeID: "a", Store: s, TTL: 300 * time.Millisecond})
	require.NoError(t, err)
	// A run is due at once; without a look at the lease, the next would
	// come a 20s interval later.
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	var runs atomic.Int64
	err = c.RunEvery(ctx, "job", 20*time.Second, func(context.Context, *lock.Lease) error {
		runs.Add(1)
		cancel()
		return nil
	})
	require.ErrorIs(t, err, context.Canceled, "the job ran before the time limit")
	require.Equal(t, int64(1), runs.Load())
	require.GreaterOrEqual(t, s.n.Load(), int32(2), "the lost acquisition's period was given back and taken anew")
}

// failScheduleSecond is a store whose second to fourth acquisitions of a
// schedule lease fail without reaching the store.
type failScheduleSecond struct {
	lock.Store
	n atomic.Int32
}

func (s *failScheduleSecond) TryAcquire(ctx context.Context, name string, o lock.Owner, ttl time.Duration) (int64, bool, error) {
	if strings.HasPrefix(name, lock.SchedulePrefix) {
		if n := s.n.Add(1); n >= 2 && n <= 4 {
			return 0, false, errors.New("injected: connection refused")
		}
	}
	return s.Store.TryAcquire(ctx, name, o, ttl)
}

// TestRunEveryFailedAcquisitionKeepsPeriod: after acquisitions of the
// schedule lease fail, the leader looks the lease up, finds it held under
// its own name for the run it made, and leaves it: a lease whose
// acquisition it saw is never given back, so the period does not run
// twice.
func TestRunEveryFailedAcquisitionKeepsPeriod(t *testing.T) {
	t.Parallel()
	s := &failScheduleSecond{Store: openFileStore(t, t.TempDir(), lock.FileConfig{})}
	c, err := lock.New(lock.Config{NodeID: "a", Store: s, TTL: 300 * time.Millisecond})
	require.NoError(t, err)
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	var runs atomic.Int32
	err = c.RunEvery(ctx, "job", 20*time.Second, func(context.Context, *lock.Lease) error {
		runs.Add(1)
		return nil
	})
	require.ErrorIs(t, err, context.DeadlineExceeded)
	require.Equal(t, int32(1), runs.Load(), "one run in the period")
	require.Greater(t, s.n.Load(), int32(5), "acquisitions failed, then found the lease held")
}
