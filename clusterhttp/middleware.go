package clusterhttp

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"math"
	"net/http"
	"strconv"
	"sync/atomic"
	"time"

	"github.com/tandem-go/tandem/cluster"
)

// Defaults of Config.
const (
	// DefaultHeader carries the token in requests and responses.
	DefaultHeader = "Tandem-Revision"
	// DefaultWaitTimeout bounds how long a request waits for this node to
	// apply its token's revision.
	DefaultWaitTimeout = 2 * time.Second
	// DefaultRetryAfter is the Retry-After of a 503 after a wait ran out.
	DefaultRetryAfter = time.Second
)

// epochRecheck is how long the journal's answer that it is still at the
// node's epoch stands for tokens of other epochs.
const epochRecheck = time.Second

// Config configures a Middleware. The zero value of each field means its
// default.
type Config struct {
	// Header is the request and response header of the token. Defaults
	// to DefaultHeader.
	Header string
	// WaitTimeout bounds the wait for a request's revision; the request's
	// own context bounds it too. Defaults to DefaultWaitTimeout.
	WaitTimeout time.Duration
	// RetryAfter is sent, rounded up to whole seconds, in the Retry-After
	// header of a 503 after a wait ran out. Defaults to DefaultRetryAfter.
	RetryAfter time.Duration
	// Logger receives state changes only (the first of a series of
	// timeouts, and the recovery). Defaults to slog.Default().
	Logger *slog.Logger
}

// Middleware carries revision tokens between a client and the replicas that
// serve it (see the package documentation). Create it with New; it is safe
// for concurrent use.
type Middleware struct {
	n   *cluster.Node
	cfg Config

	// confirmed is the last time the journal, asked about a token of
	// another epoch, answered with the node's own epoch; it stands for
	// recheck (epochRecheck) while the node's epoch is unchanged.
	confirmed atomic.Pointer[confirmation]
	recheck   time.Duration

	tokens, waited, timedOut, foreign, malformed atomic.Int64
	failing                                      atomic.Bool
}

// confirmation is the journal's answer that it is at epoch, got at at.
type confirmation struct {
	epoch string
	at    time.Time
}

// Stats are a Middleware's counters since it was made.
type Stats struct {
	// Tokens counts requests with a valid token of this journal.
	Tokens int64
	// Waited counts requests whose revision this node had not applied
	// yet: they waited (successfully or not) for it. Most count in
	// Tokens; one whose token turned out, during the wait, to be of the
	// journal before a restore counts in Foreign.
	Waited int64
	// TimedOut counts requests answered 503 because the wait ran out or
	// failed.
	TimedOut int64
	// Foreign counts tokens of another journal epoch, ignored.
	Foreign int64
	// Malformed counts tokens that did not parse, answered 400.
	Malformed int64
}

// New returns the middleware of node n, which the application starts and
// stops.
func New(n *cluster.Node, cfg Config) (*Middleware, error) {
	if n == nil {
		return nil, fmt.Errorf("clusterhttp config: %w: node is nil", cluster.ErrInvalidArgument)
	}
	if cfg.Header == "" {
		cfg.Header = DefaultHeader
	}
	if cfg.WaitTimeout == 0 {
		cfg.WaitTimeout = DefaultWaitTimeout
	}
	if cfg.RetryAfter == 0 {
		cfg.RetryAfter = DefaultRetryAfter
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.Default()
	}
	switch {
	case cfg.WaitTimeout < 0:
		return nil, fmt.Errorf("clusterhttp config: %w: WaitTimeout must be > 0", cluster.ErrInvalidArgument)
	case cfg.RetryAfter < 0:
		return nil, fmt.Errorf("clusterhttp config: %w: RetryAfter must be > 0", cluster.ErrInvalidArgument)
	}
	cfg.Header = http.CanonicalHeaderKey(cfg.Header)
	return &Middleware{n: n, cfg: cfg, recheck: epochRecheck}, nil
}

// Stats returns the middleware's counters.
func (m *Middleware) Stats() Stats {
	return Stats{Tokens: m.tokens.Load(), Waited: m.waited.Load(), TimedOut: m.timedOut.Load(),
		Foreign: m.foreign.Load(), Malformed: m.malformed.Load()}
}

// Wrap returns next behind the middleware: a request carrying a token runs
// next only once this node applied its revision, and the response carries
// the token of what next published (Published) or of the request.
func (m *Middleware) Wrap(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		p := &published{}
		if h := r.Header.Get(m.cfg.Header); h != "" {
			rev, ok := m.wait(w, r, h)
			if !ok {
				return
			}
			p.max(rev)
		}
		rw := &responseWriter{ResponseWriter: w, m: m, p: p}
		next.ServeHTTP(rw, r.WithContext(context.WithValue(r.Context(), publishedKey{}, p)))
		// A handler that wrote nothing gets an implicit 200 once it
		// returns: its header is still open.
		rw.setToken()
	})
}

// wait waits for the revision of token h and returns it, or 0 for a token
// of another epoch. It answers the request itself, and returns false, when
// the token is malformed or the wait fails.
func (m *Middleware) wait(w http.ResponseWriter, r *http.Request, h string) (int64, bool) {
	epoch, rev, err := ParseToken(h)
	if err != nil {
		m.malformed.Add(1)
		http.Error(w, fmt.Sprintf("%s: %v", m.cfg.Header, err), http.StatusBadRequest)
		return 0, false
	}
	st := m.n.Stats()
	if epoch == st.Epoch && st.Running && st.Revision >= rev {
		// Applied already: no wait, and no query (the token's epoch is
		// the one the node's position belongs to).
		m.tokens.Add(1)
		return rev, true
	}
	if epoch != st.Epoch {
		foreign, err := m.foreignEpoch(r.Context(), epoch, st.Epoch)
		if err != nil {
			m.unavailable(w, err)
			return 0, false
		}
		if foreign {
			m.foreign.Add(1)
			return 0, true
		}
		// The journal is at the token's epoch, which the node has not
		// seen yet: WaitFor resyncs to it first.
	}
	m.waited.Add(1)
	ctx, cancel := context.WithTimeout(r.Context(), m.cfg.WaitTimeout)
	defer cancel()
	err = m.n.WaitFor(ctx, rev)
	if now := m.n.Stats(); now.Running && now.Epoch != st.Epoch && now.Epoch != epoch {
		// The node found another journal while it waited: a restore it
		// had not noticed, and a token of the journal before it. Its
		// revision means nothing now — the wait may even have "reached"
		// it in the new journal — and must not come back relabelled with
		// the new epoch: the token is ignored, as any foreign one.
		m.foreign.Add(1)
		return 0, true
	}
	m.tokens.Add(1)
	if err != nil {
		m.unavailable(w, err)
		return 0, false
	}
	if m.failing.CompareAndSwap(true, false) {
		m.cfg.Logger.Info("tandem: read-your-writes waits succeed again", "node", m.n.ID())
	}
	return rev, true
}

// foreignEpoch reports whether epoch, a token's, is not the journal's.
// The node (at nodeEpoch) may not have noticed a new journal yet, so the
// journal is asked — unless it confirmed nodeEpoch within the last
// recheck: then a token of an older journal (a client's from before a
// restore) or a made-up one costs no query, however many requests carry
// it. The node notices a new journal on its next sync, which changes
// nodeEpoch and ends the confirmation.
func (m *Middleware) foreignEpoch(ctx context.Context, epoch, nodeEpoch string) (bool, error) {
	if c := m.confirmed.Load(); c != nil && c.epoch == nodeEpoch && time.Since(c.at) < m.recheck {
		return true, nil // epoch != nodeEpoch, the journal's
	}
	at := time.Now() // before the query: the answer is at least this fresh
	current, err := m.n.Journal().Epoch(ctx)
	if err != nil {
		return false, err
	}
	if current == nodeEpoch {
		m.confirmed.Store(&confirmation{epoch: current, at: at})
	}
	return epoch != current, nil
}

func (m *Middleware) unavailable(w http.ResponseWriter, err error) {
	m.timedOut.Add(1)
	if m.failing.CompareAndSwap(false, true) {
		m.cfg.Logger.Warn("tandem: read-your-writes wait failed; answering 503", "node", m.n.ID(), "err", err)
	}
	secs := int64(math.Ceil(m.cfg.RetryAfter.Seconds()))
	w.Header().Set("Retry-After", strconv.FormatInt(secs, 10))
	msg := "this replica has not caught up with the request's revision; retry"
	if errors.Is(err, cluster.ErrNotRunning) || errors.Is(err, cluster.ErrDuplicateNode) {
		msg = "this replica is not serving; retry"
	}
	http.Error(w, msg, http.StatusServiceUnavailable)
}

// publishedKey is the context key of a request's *published.
type publishedKey struct{}

// published holds the highest revision a request published (or carried).
type published struct{ rev atomic.Int64 }

func (p *published) max(rev int64) {
	for {
		old := p.rev.Load()
		if rev <= old || p.rev.CompareAndSwap(old, rev) {
			return
		}
	}
}

// Published records that the handler serving the request of ctx published
// revision rev (of this node's journal), for the response's token. Call it
// before writing the response's header or body: the token is a header, and
// a revision published after they were written is not sent. Several calls
// keep the highest revision; calls from other goroutines of the handler are
// safe. It reports whether ctx belongs to a request under a Middleware
// (otherwise it does nothing).
func Published(ctx context.Context, rev int64) bool {
	p, ok := ctx.Value(publishedKey{}).(*published)
	if ok {
		p.max(rev)
	}
	return ok
}

var _ http.Flusher = (*responseWriter)(nil)

// responseWriter writes the token into the header when the handler writes
// the header (or the first byte of the body).
type responseWriter struct {
	http.ResponseWriter
	m       *Middleware
	p       *published
	written bool
}

func (w *responseWriter) setToken() {
	if w.written {
		return
	}
	w.written = true
	if rev := w.p.rev.Load(); rev > 0 {
		if epoch := w.m.n.Stats().Epoch; epoch != "" {
			w.Header().Set(w.m.cfg.Header, FormatToken(epoch, rev))
		}
	}
}

func (w *responseWriter) WriteHeader(code int) {
	if code >= 200 || code == http.StatusSwitchingProtocols {
		w.setToken()
	}
	w.ResponseWriter.WriteHeader(code)
}

func (w *responseWriter) Write(b []byte) (int, error) {
	w.setToken()
	return w.ResponseWriter.Write(b)
}

// Flush implements http.Flusher, when the underlying writer does.
func (w *responseWriter) Flush() {
	w.setToken()
	_ = http.NewResponseController(w.ResponseWriter).Flush()
}

// Unwrap returns the underlying writer, for http.ResponseController.
func (w *responseWriter) Unwrap() http.ResponseWriter { return w.ResponseWriter }
