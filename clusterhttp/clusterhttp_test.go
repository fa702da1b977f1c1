package clusterhttp_test

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"net/http/httptest"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/tandem-go/tandem/cluster"
	"github.com/tandem-go/tandem/clusterhttp"
	"github.com/tandem-go/tandem/journal"
	"github.com/tandem-go/tandem/lock"
	"github.com/tandem-go/tandem/revision"
)

// open starts a node on the shared folder dir; block, when set, makes its
// handler of producer "p" fail while it returns true.
func open(t *testing.T, dir, id string, block func() bool) *cluster.Node {
	t.Helper()
	ctx := context.Background()
	n, err := cluster.OpenDir(ctx, cluster.Config{Dir: dir, NodeID: id, SyncDelay: time.Minute, MemberTTL: 2 * time.Second})
	require.NoError(t, err)
	require.NoError(t, n.Handle("p", cluster.HandlerFunc(func(ctx context.Context, rec journal.Record) error {
		if block != nil && block() {
			return errors.New("blocked")
		}
		return nil
	})))
	require.NoError(t, n.Start(ctx))
	t.Cleanup(func() { n.Stop(context.Background()) })
	return n
}

func middleware(t *testing.T, n *cluster.Node, cfg clusterhttp.Config) *clusterhttp.Middleware {
	t.Helper()
	m, err := clusterhttp.New(n, cfg)
	require.NoError(t, err)
	return m
}

// serve runs h behind m for a request carrying token (none when empty).
func serve(m *clusterhttp.Middleware, h http.HandlerFunc, token string) *httptest.ResponseRecorder {
	r := httptest.NewRequest(http.MethodGet, "/", nil)
	if token != "" {
		r.Header.Set(clusterhttp.DefaultHeader, token)
	}
	w := httptest.NewRecorder()
	m.Wrap(h).ServeHTTP(w, r)
	return w
}

func TestToken(t *testing.T) {
	t.Parallel()
	tok := clusterhttp.FormatToken("0f3a", 42)
	require.Equal(t, "0f3a:42", tok)
	epoch, rev, err := clusterhttp.ParseToken(tok)
	require.NoError(t, err)
	require.Equal(t, "0f3a", epoch)
	require.Equal(t, int64(42), rev)
	epoch, rev, err = clusterhttp.ParseToken("a:b:7")
	require.NoError(t, err)
	require.Equal(t, "a:b", epoch)
	require.Equal(t, int64(7), rev)
	for _, bad := range []string{"", "42", ":42", "e:", "e:0", "e:-1", "e:+1", "e:1x", "e 1:2", "e:99999999999999999999"} {
		_, _, err := clusterhttp.ParseToken(bad)
		require.Error(t, err, "%q", bad)
	}
}

// TestReadYourWrites: a token from a write on one node makes another node
// apply that revision before its handler runs.
func TestReadYourWrites(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	a, b := open(t, dir, "a", nil), open(t, dir, "b", nil)
	ma, mb := middleware(t, a, clusterhttp.Config{}), middleware(t, b, clusterhttp.Config{})

	var rev int64
	w := serve(ma, func(w http.ResponseWriter, r *http.Request) {
		var err error
		rev, err = a.Publish(r.Context(), "p", []byte("x"))
		require.NoError(t, err)
		require.True(t, clusterhttp.Published(r.Context(), rev))
		w.WriteHeader(http.StatusNoContent)
	}, "")
	require.Equal(t, http.StatusNoContent, w.Code)
	tok := w.Result().Header.Get(clusterhttp.DefaultHeader)
	require.Equal(t, clusterhttp.FormatToken(a.Stats().Epoch, rev), tok)

	// b polls once a minute; the token makes it sync before the handler.
	w = serve(mb, func(w http.ResponseWriter, r *http.Request) {
		require.GreaterOrEqual(t, b.Stats().Revision, rev)
		fmt.Fprint(w, "ok")
	}, tok)
	require.Equal(t, http.StatusOK, w.Code)
	require.Equal(t, tok, w.Result().Header.Get(clusterhttp.DefaultHeader), "the request's token is echoed")
	require.Equal(t, int64(1), mb.Stats().Tokens)
	require.LessOrEqual(t, mb.Stats().Waited, int64(1))

	// Without a middleware Published does nothing.
	require.False(t, clusterhttp.Published(context.Background(), 1))
}

// TestPublishedMax: several publishes send the highest; a body written
// without WriteHeader carries it; a publish after the header is not sent.
func TestPublishedMax(t *testing.T) {
	t.Parallel()
	a := open(t, t.TempDir(), "a", nil)
	m := middleware(t, a, clusterhttp.Config{})
	epoch := a.Stats().Epoch

	w := serve(m, func(w http.ResponseWriter, r *http.Request) {
		var wg sync.WaitGroup
		for _, rev := range []int64{5, 9, 7} {
			wg.Add(1)
			go func() {
				defer wg.Done()
				clusterhttp.Published(r.Context(), rev)
			}()
		}
		wg.Wait()
		fmt.Fprint(w, "body")
		clusterhttp.Published(r.Context(), 11) // too late for the header
	}, "")
	require.Equal(t, http.StatusOK, w.Code)
	require.Equal(t, clusterhttp.FormatToken(epoch, 9), w.Result().Header.Get(clusterhttp.DefaultHeader))

	// A handler that writes nothing still sends the token.
	w = serve(m, func(w http.ResponseWriter, r *http.Request) { clusterhttp.Published(r.Context(), 3) }, "")
	require.Equal(t, http.StatusOK, w.Code)
	require.Equal(t, clusterhttp.FormatToken(epoch, 3), w.Result().Header.Get(clusterhttp.DefaultHeader))

	// Nothing published, no token in: no token out.
	w = serve(m, func(w http.ResponseWriter, r *http.Request) { w.WriteHeader(http.StatusOK) }, "")
	require.Empty(t, w.Result().Header.Get(clusterhttp.DefaultHeader))

	// A handler publishing below the request's token keeps the token's.
	rev, err := a.Publish(context.Background(), "p", nil)
	require.NoError(t, err)
	w = serve(m, func(w http.ResponseWriter, r *http.Request) {
		clusterhttp.Published(r.Context(), rev-1)
		w.WriteHeader(http.StatusCreated)
	}, clusterhttp.FormatToken(epoch, rev))
	require.Equal(t, http.StatusCreated, w.Code)
	require.Equal(t, clusterhttp.FormatToken(epoch, rev), w.Result().Header.Get(clusterhttp.DefaultHeader))
}

// TestForeignAndMalformed: a token of another journal is ignored at once;
// one that does not parse is 400 and the handler does not run.
func TestForeignAndMalformed(t *testing.T) {
	t.Parallel()
	a := open(t, t.TempDir(), "a", nil)
	m := middleware(t, a, clusterhttp.Config{WaitTimeout: time.Hour})
	ran := 0
	h := func(w http.ResponseWriter, r *http.Request) { ran++ }

	begin := time.Now()
	w := serve(m, h, clusterhttp.FormatToken("another-journal", 1_000_000))
	require.Equal(t, http.StatusOK, w.Code)
	require.Less(t, time.Since(begin), 10*time.Second, "a foreign token is not waited on")
	require.Empty(t, w.Result().Header.Get(clusterhttp.DefaultHeader))
	require.Equal(t, 1, ran)

	w = serve(m, h, "not a token")
	require.Equal(t, http.StatusBadRequest, w.Code)
	require.Equal(t, 1, ran)
	require.Equal(t, clusterhttp.Stats{Foreign: 1, Malformed: 1}, m.Stats())
}

// restorable is a journal whose epoch can be switched, as a restore of
// the database under a running node would switch it, and which counts the
// calls of Epoch.
type restorable struct {
	journal.Journal
	mu     sync.Mutex
	epoch  string // when set, the epoch after the "restore"
	epochs int
}

func (j *restorable) Epoch(ctx context.Context) (string, error) {
	j.mu.Lock()
	j.epochs++
	epoch := j.epoch
	j.mu.Unlock()
	if epoch != "" {
		return epoch, nil
	}
	return j.Journal.Epoch(ctx)
}

func (j *restorable) restore(epoch string) {
	j.mu.Lock()
	j.epoch = epoch
	j.mu.Unlock()
}

func (j *restorable) epochCalls() int {
	j.mu.Lock()
	defer j.mu.Unlock()
	return j.epochs
}

// openRestorable starts a node on a restorable journal in dir that polls
// once a minute and takes no push wake-ups: it notices a restore only on
// a sync something asks for.
func openRestorable(t *testing.T, dir string) (*cluster.Node, *restorable) {
	t.Helper()
	ctx := context.Background()
	instance := journal.NewInstance()
	fj, err := journal.OpenFile(ctx, journal.FileConfig{Dir: dir, NodeID: "a", Instance: instance})
	require.NoError(t, err)
	t.Cleanup(func() { fj.Close(context.Background()) })
	revs, err := revision.OpenFile(ctx, revision.FileConfig{Dir: dir})
	require.NoError(t, err)
	leases, err := lock.OpenFile(ctx, lock.FileConfig{Dir: dir})
	require.NoError(t, err)
	j := &restorable{Journal: fj}
	n, err := cluster.New(cluster.Config{NodeID: "a", Instance: instance, Journal: j, Revisions: revs, Leases: leases,
		SyncDelay: time.Minute, DisablePush: true, MemberTTL: 2 * time.Second})
	require.NoError(t, err)
	require.NoError(t, n.Start(ctx))
	t.Cleanup(func() { n.Stop(context.Background()) })
	return n, j
}

// appendOther appends n records to the journal in dir as another node.
func appendOther(t *testing.T, dir string, n int) int64 {
	t.Helper()
	ctx := context.Background()
	w, err := journal.OpenFile(ctx, journal.FileConfig{Dir: dir, NodeID: "w"})
	require.NoError(t, err)
	defer w.Close(ctx)
	var last int64
	for range n {
		revs, err := w.Append(ctx, journal.Entry{Producer: "p"})
		require.NoError(t, err)
		last = revs[0]
	}
	return last
}

// TestTokenOfJournalBeforeRestore: the journal was restored (a new epoch)
// and the node has not noticed yet. A token of the journal before, with
// the node's old epoch, makes the request wait, and the wait resyncs the
// node to the new journal, where the revision "is reached" too. The token
// is then ignored as a foreign one: the response does not carry the old
// revision relabelled with the new epoch.
func TestTokenOfJournalBeforeRestore(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	n, j := openRestorable(t, dir)
	m := middleware(t, n, clusterhttp.Config{WaitTimeout: time.Hour})
	old := n.Stats().Epoch
	rev := appendOther(t, dir, 3)
	j.restore("restored")

	ran := false
	w := serve(m, func(w http.ResponseWriter, r *http.Request) { ran = true }, clusterhttp.FormatToken(old, rev))
	require.Equal(t, http.StatusOK, w.Code)
	require.True(t, ran)
	require.Equal(t, "restored", n.Stats().Epoch, "the wait resynced the node")
	require.Empty(t, w.Result().Header.Get(clusterhttp.DefaultHeader), "no token of the old revision under the new epoch")
	require.Equal(t, clusterhttp.Stats{Waited: 1, Foreign: 1}, m.Stats())

	// A token of the new journal works as usual.
	w = serve(m, func(w http.ResponseWriter, r *http.Request) {}, clusterhttp.FormatToken("restored", rev))
	require.Equal(t, http.StatusOK, w.Code)
	require.Equal(t, clusterhttp.FormatToken("restored", rev), w.Result().Header.Get(clusterhttp.DefaultHeader))
}

// TestForeignTokenQueries: tokens of another epoch are checked against the
// journal (the node may not have noticed a new one), but one answer that
// the journal is still at the node's epoch stands for the next tokens
// while the node's epoch is the same, so a client sending an old or
// made-up token again and again costs one query, not one per request.
// Once the node moves to a new journal, the next foreign token asks
// again.
func TestForeignTokenQueries(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	n, j := openRestorable(t, dir)
	m := middleware(t, n, clusterhttp.Config{WaitTimeout: time.Hour})
	clusterhttp.SetEpochRecheck(m, time.Hour)
	old := n.Stats().Epoch
	rev := appendOther(t, dir, 2)

	before := j.epochCalls()
	for i := range 20 {
		w := serve(m, func(http.ResponseWriter, *http.Request) {}, clusterhttp.FormatToken("another-journal", int64(i+1)))
		require.Equal(t, http.StatusOK, w.Code)
	}
	require.Equal(t, before+1, j.epochCalls(), "one query for 20 foreign tokens")
	require.Equal(t, clusterhttp.Stats{Foreign: 20}, m.Stats())

	// A restore the node notices: the old epoch's tokens are foreign now,
	// which the journal is asked once to confirm.
	j.restore("restored")
	require.NoError(t, n.Sync(context.Background()))
	require.Equal(t, "restored", n.Stats().Epoch)
	before = j.epochCalls()
	for range 5 {
		w := serve(m, func(http.ResponseWriter, *http.Request) {}, clusterhttp.FormatToken(old, rev))
		require.Equal(t, http.StatusOK, w.Code)
		require.Empty(t, w.Result().Header.Get(clusterhttp.DefaultHeader))
	}
	require.Equal(t, before+1, j.epochCalls())
	require.Equal(t, clusterhttp.Stats{Foreign: 25}, m.Stats())
}

// TestWaitTimeout: a node that cannot reach the revision answers 503 with
// Retry-After within WaitTimeout, without running the handler; Health
// reports the stuck handler.
func TestWaitTimeout(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	var mu sync.Mutex
	blocked := true
	a := open(t, dir, "a", nil)
	b := open(t, dir, "b", func() bool { mu.Lock(); defer mu.Unlock(); return blocked })
	t.Cleanup(func() { mu.Lock(); blocked = false; mu.Unlock() })
	m := middleware(t, b, clusterhttp.Config{WaitTimeout: 300 * time.Millisecond, RetryAfter: 1500 * time.Millisecond})

	rev, err := a.Publish(context.Background(), "p", nil)
	require.NoError(t, err)
	ran := false
	begin := time.Now()
	w := serve(m, func(w http.ResponseWriter, r *http.Request) { ran = true }, clusterhttp.FormatToken(a.Stats().Epoch, rev))
	require.Equal(t, http.StatusServiceUnavailable, w.Code)
	require.Equal(t, "2", w.Result().Header.Get("Retry-After"))
	require.False(t, ran)
	require.Less(t, time.Since(begin), 10*time.Second)
	require.Equal(t, int64(1), m.Stats().TimedOut)

	h, err := clusterhttp.Health(b, clusterhttp.HealthConfig{StuckFor: time.Millisecond})
	require.NoError(t, err)
	rep := health(t, h, http.StatusServiceUnavailable)
	require.False(t, rep.Ready)
	require.NotNil(t, rep.Stuck)
	require.Equal(t, "p", rep.Stuck.Producer)
	require.Equal(t, rev, rep.Stuck.Revision)
	require.Equal(t, "blocked", rep.Stuck.Error)

	// Once the handler succeeds, the node catches up and is ready again.
	mu.Lock()
	blocked = false
	mu.Unlock()
	require.NoError(t, b.WaitFor(context.Background(), rev))
	rep = health(t, h, http.StatusOK)
	require.True(t, rep.Ready)
	require.Nil(t, rep.Stuck)
}

func health(t *testing.T, h http.Handler, code int) clusterhttp.HealthReport {
	t.Helper()
	w := httptest.NewRecorder()
	h.ServeHTTP(w, httptest.NewRequest(http.MethodGet, "/healthz", nil))
	require.Equal(t, code, w.Code, w.Body.String())
	require.Equal(t, "application/json", w.Result().Header.Get("Content-Type"))
	var rep clusterhttp.HealthReport
	require.NoError(t, json.Unmarshal(w.Body.Bytes(), &rep))
	return rep
}

// TestHealth: a running member is ready; a stopped node, or one lagging
// beyond MaxLag, is not.
func TestHealth(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	a := open(t, dir, "a", nil)
	h, err := clusterhttp.Health(a, clusterhttp.HealthConfig{})
	require.NoError(t, err)
	rep := health(t, h, http.StatusOK)
	require.True(t, rep.Running)
	require.True(t, rep.Member)
	require.Equal(t, "a", rep.Node)
	require.Equal(t, a.Instance(), rep.Instance)
	require.Equal(t, a.Stats().Epoch, rep.Epoch)

	rep = clusterhttp.Check(a, clusterhttp.HealthConfig{MaxLag: 1}, time.Now())
	require.True(t, rep.Ready)

	require.NoError(t, a.Stop(context.Background()))
	rep = health(t, h, http.StatusServiceUnavailable)
	require.False(t, rep.Running)
	require.Contains(t, rep.Problems, "node not running")

	// A stopped node's middleware answers a token with 503.
	m := middleware(t, a, clusterhttp.Config{})
	w := serve(m, func(http.ResponseWriter, *http.Request) {}, clusterhttp.FormatToken(rep.Epoch, 1))
	require.Equal(t, http.StatusServiceUnavailable, w.Code)
	require.Equal(t, "1", w.Result().Header.Get("Retry-After"))

	_, err = clusterhttp.Health(nil, clusterhttp.HealthConfig{})
	require.Error(t, err)
	_, err = clusterhttp.New(a, clusterhttp.Config{WaitTimeout: -1})
	require.ErrorContains(t, err, "WaitTimeout")
}
