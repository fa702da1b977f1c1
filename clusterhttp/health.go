package clusterhttp

import (
	"encoding/json"
	"fmt"
	"net/http"
	"time"

	"github.com/tandem-go/tandem/cluster"
)

// DefaultStuckFor is how long a node may wait at a record its handler
// cannot apply before Health reports it not ready.
const DefaultStuckFor = 30 * time.Second

// HealthConfig configures Health. The zero value of each field means its
// default.
type HealthConfig struct {
	// MaxLag, when positive, makes a node that lags more records than
	// this behind the journal's head not ready. 0 (the default) checks no
	// lag: a node catching up still serves, and read-your-writes waits
	// cover what a client wrote itself.
	MaxLag int64
	// StuckFor is how long a handler may fail on one record (or run past
	// its timeout) before the node is not ready: its caches miss every
	// change after that record. Defaults to DefaultStuckFor.
	StuckFor time.Duration
}

// HealthReport is the JSON body of Health's answers.
type HealthReport struct {
	// Ready is true when the node may serve (status 200); Problems says
	// why not otherwise (status 503).
	Ready    bool     `json:"ready"`
	Problems []string `json:"problems,omitempty"`

	Node     string `json:"node"`
	Instance string `json:"instance"`
	Running  bool   `json:"running"`
	Member   bool   `json:"member"`
	Epoch    string `json:"epoch,omitempty"`
	Revision int64  `json:"revision"`
	Head     int64  `json:"head"`
	Lag      int64  `json:"lag"`
	// LastSync is when the node last finished a sync (its clock); zero
	// before the first.
	LastSync        time.Time    `json:"last_sync,omitzero"`
	SyncErrors      int64        `json:"sync_errors"`
	HandlerFailures int64        `json:"handler_failures"`
	Stuck           *StuckReport `json:"stuck,omitempty"`
}

// StuckReport is cluster.Stuck in JSON.
type StuckReport struct {
	Producer string    `json:"producer"`
	Revision int64     `json:"revision"`
	Since    time.Time `json:"since"`
	Attempts int       `json:"attempts"`
	Running  bool      `json:"running"`
	Error    string    `json:"error,omitempty"`
}

// Health returns a readiness handler for node n: it answers every request
// with a HealthReport in JSON, status 200 when the node is ready — running,
// holding its membership, not stuck at a record for StuckFor, and lagging
// at most MaxLag when set — and 503 otherwise. It reads only the node's
// in-memory Stats: probing it often costs no store query.
func Health(n *cluster.Node, cfg HealthConfig) (http.Handler, error) {
	if n == nil {
		return nil, fmt.Errorf("clusterhttp health config: %w: node is nil", cluster.ErrInvalidArgument)
	}
	if cfg.StuckFor == 0 {
		cfg.StuckFor = DefaultStuckFor
	}
	if cfg.StuckFor < 0 || cfg.MaxLag < 0 {
		return nil, fmt.Errorf("clusterhttp health config: %w: StuckFor and MaxLag must be >= 0", cluster.ErrInvalidArgument)
	}
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		rep := Check(n, cfg, time.Now())
		w.Header().Set("Content-Type", "application/json")
		w.Header().Set("Cache-Control", "no-store")
		if !rep.Ready {
			w.WriteHeader(http.StatusServiceUnavailable)
		}
		enc := json.NewEncoder(w)
		enc.SetIndent("", "  ")
		_ = enc.Encode(rep)
	}), nil
}

// Check builds the report Health answers with, as of now.
func Check(n *cluster.Node, cfg HealthConfig, now time.Time) HealthReport {
	if cfg.StuckFor <= 0 {
		cfg.StuckFor = DefaultStuckFor
	}
	st := n.Stats()
	rep := HealthReport{Node: n.ID(), Instance: n.Instance(), Running: st.Running, Member: st.Member,
		Epoch: st.Epoch, Revision: st.Revision, Head: st.Head, Lag: st.Lag, LastSync: st.LastSync,
		SyncErrors: st.SyncErrors, HandlerFailures: st.HandlerFailures}
	switch {
	case !st.Running:
		rep.Problems = append(rep.Problems, "node not running")
	case !st.Member:
		rep.Problems = append(rep.Problems, "membership not confirmed: the lease store did not answer in time")
	}
	if s := st.Stuck; s != nil {
		rep.Stuck = &StuckReport{Producer: s.Producer, Revision: s.Revision, Since: s.Since,
			Attempts: s.Attempts, Running: s.Running}
		if s.LastErr != nil {
			rep.Stuck.Error = s.LastErr.Error()
		}
		if d := now.Sub(s.Since); d >= cfg.StuckFor {
			rep.Problems = append(rep.Problems, fmt.Sprintf("handler of %q stuck at revision %d for %s",
				s.Producer, s.Revision, d.Round(time.Second)))
		}
	}
	if cfg.MaxLag > 0 && st.Lag > cfg.MaxLag {
		rep.Problems = append(rep.Problems, fmt.Sprintf("lag %d exceeds %d", st.Lag, cfg.MaxLag))
	}
	rep.Ready = len(rep.Problems) == 0
	return rep
}
