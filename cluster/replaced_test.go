package cluster_test

import (
	"context"
	"errors"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/tandem-go/tandem/cluster"
	"github.com/tandem-go/tandem/internal/locktest"
	"github.com/tandem-go/tandem/lock"
	"github.com/tandem-go/tandem/revision"
)

// stalledSaves is a position store whose Save hangs, deaf to its context,
// while stalled: a node cut off from the store.
type stalledSaves struct {
	revision.Store
	mu      sync.Mutex
	stalled bool
	release chan struct{}
}

func (s *stalledSaves) Save(ctx context.Context, node string, rev int64, epoch string) error {
	s.mu.Lock()
	stalled, release := s.stalled, s.release
	s.mu.Unlock()
	if stalled {
		<-release
		return errors.New("injected: the store never answered")
	}
	return s.Store.Save(ctx, node, rev, epoch)
}

func (s *stalledSaves) begin() {
	s.mu.Lock()
	s.stalled = true
	s.mu.Unlock()
}

func (s *stalledSaves) end() {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.stalled {
		s.stalled = false
		close(s.release)
	}
}

// cutOff is a lease store that stops answering altogether while its
// renewals stall (see locktest.Stall): acquisitions and listings hang too,
// deaf to their context, as for a process cut off from the store.
type cutOff struct {
	*locktest.Stall
	mu   sync.Mutex
	cut  bool
	done chan struct{}
}

func (c *cutOff) hang() bool {
	c.mu.Lock()
	cut, done := c.cut, c.done
	c.mu.Unlock()
	if cut {
		<-done
	}
	return cut
}

func (c *cutOff) TryAcquire(ctx context.Context, name string, o lock.Owner, ttl time.Duration) (int64, bool, error) {
	if c.hang() {
		return 0, false, errors.New("injected: cut off")
	}
	return c.Stall.TryAcquire(ctx, name, o, ttl)
}

func (c *cutOff) List(ctx context.Context) ([]lock.Info, error) {
	if c.hang() {
		return nil, errors.New("injected: cut off")
	}
	return c.Stall.List(ctx)
}

func (c *cutOff) begin() {
	c.mu.Lock()
	c.cut = true
	c.mu.Unlock()
	c.Stall.Begin()
}

func (c *cutOff) end() {
	c.mu.Lock()
	if c.cut {
		c.cut = false
		close(c.done)
	}
	c.mu.Unlock()
	c.Stall.End()
}

// TestReplacedNode: a node is cut off from its lease and position stores
// (its journal still reachable) right after publishing. It refuses to
// publish from the moment it cannot confirm its membership; a new process
// takes its id once the lease expired, starts from the position the old
// one last saved, and applies every record the old one committed — they
// are another process's, though written under the same node id. When the
// old process reaches the store again, it finds itself replaced.
func TestReplacedNode(t *testing.T) {
	forEachBackend(t, func(t *testing.T, f fixture) {
		ctx := ctxT(t)
		j, revs, leases := f.stores(t, "web", "inst-web")
		saves := &stalledSaves{Store: revs, release: make(chan struct{})}
		t.Cleanup(saves.end)
		stall := &cutOff{Stall: locktest.NewStall(leases), done: make(chan struct{})}
		t.Cleanup(stall.end)
		c := cfg("web")
		c.Journal, c.Revisions, c.Leases, c.Instance = j, saves, stall, "inst-web"
		c.MemberTTL = time.Second
		c.StopDelay = 300 * time.Millisecond
		old, err := cluster.New(c)
		require.NoError(t, err)
		t.Cleanup(func() { old.Stop(context.Background()) })
		start(t, old)

		saves.begin()
		stall.begin()
		var committed []int64
		for range 5 {
			rev, err := old.Publish(ctx, "p", []byte("from the old process"))
			if err != nil {
				require.ErrorIs(t, err, cluster.ErrMembershipLost)
				break
			}
			committed = append(committed, rev)
		}
		require.NotEmpty(t, committed, "the old process committed records before its lease deadline")
		require.Eventually(t, func() bool {
			_, err := old.Publish(ctx, "p", nil)
			return errors.Is(err, cluster.ErrMembershipLost)
		}, 30*time.Second, 5*time.Millisecond, "then it refuses to publish")

		rec := &recorder{}
		succ := f.open(t, cfg("web"))
		require.NoError(t, succ.Handle("p", rec))
		start(t, succ)
		require.NotEqual(t, old.Instance(), succ.Instance())
		require.NoError(t, succ.WaitFor(ctx, committed[len(committed)-1]))
		applied := map[int64]bool{}
		for _, r := range rec.got() {
			applied[r.Revision] = true
		}
		for _, rev := range committed {
			require.True(t, applied[rev], "the successor applied revision %d, committed by the process it replaced", rev)
		}

		stall.end()
		saves.end()
		require.Eventually(t, func() bool {
			_, err := old.Publish(ctx, "p", nil)
			return errors.Is(err, cluster.ErrDuplicateNode)
		}, 30*time.Second, 10*time.Millisecond, "the old process finds itself replaced")
		rev, err := succ.Publish(ctx, "p", nil)
		require.NoError(t, err, "the successor runs on")
		require.NoError(t, succ.WaitFor(ctx, rev))
	})
}
