package main

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"sort"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/tandem-go/tandem/datastore"
	"github.com/tandem-go/tandem/dialect"
	"github.com/tandem-go/tandem/internal/sqldialect"
	"github.com/tandem-go/tandem/janitor"
	"github.com/tandem-go/tandem/journal"
	"github.com/tandem-go/tandem/lock"
)

// statusReport is what status prints; its JSON form is for scripts.
type statusReport struct {
	Store   string      `json:"store"` // "folder", "postgres", "mysql", …
	Dir     string      `json:"dir,omitempty"`
	Prefix  string      `json:"prefix,omitempty"`
	Schema  *schemaJSON `json:"schema,omitempty"`
	Journal struct {
		Epoch string `json:"epoch"`
		Head  int64  `json:"head"`
		Tail  int64  `json:"tail"`
	} `json:"journal"`
	Pending   *pendingJSON `json:"pending,omitempty"` // SQL only
	Nodes     []nodeJSON   `json:"nodes"`
	Leases    []leaseJSON  `json:"leases"`
	Janitor   jobJSON      `json:"janitor"`
	GC        jobJSON      `json:"datastore_gc"`
	Schedules []jobJSON    `json:"schedules"`
}

type schemaJSON struct {
	Version int `json:"version"`
	Compat  int `json:"compat"`
	Release int `json:"release"`
}

type pendingJSON struct {
	Entries          int64   `json:"entries"`
	OldestAgeSeconds float64 `json:"oldest_age_seconds"`
}

type nodeJSON struct {
	ID            string     `json:"id"`
	Live          bool       `json:"live"`
	Evicted       bool       `json:"evicted"`
	HasPosition   bool       `json:"has_position"`
	Position      int64      `json:"position"`
	Lag           int64      `json:"lag"`
	Epoch         string     `json:"epoch,omitempty"`
	OtherEpoch    bool       `json:"other_epoch,omitempty"` // position of another journal epoch
	Updated       *time.Time `json:"updated,omitempty"`
	Instance      string     `json:"instance,omitempty"`
	LastHeartbeat *time.Time `json:"last_heartbeat,omitempty"`
	LeaseExpires  *time.Time `json:"lease_expires,omitempty"`
}

type leaseJSON struct {
	Name     string     `json:"name"`
	Node     string     `json:"node,omitempty"`
	Instance string     `json:"instance,omitempty"`
	Token    int64      `json:"token"`
	Held     bool       `json:"held"`
	Acquired *time.Time `json:"acquired,omitempty"`
	Renewed  *time.Time `json:"renewed,omitempty"`
	Expires  *time.Time `json:"expires,omitempty"`
}

// jobJSON is what the store knows of a job's runs from its lease: a run
// takes the lease, so its acquisition is the last run's start. Next is
// known only for schedule.* leases, which expire when the next run is due.
type jobJSON struct {
	Name    string     `json:"name"`
	Lease   string     `json:"lease"`
	Known   bool       `json:"known"` // the lease exists: the job ran at least once
	Running bool       `json:"running"`
	Node    string     `json:"node,omitempty"`
	LastRun *time.Time `json:"last_run,omitempty"`
	NextRun *time.Time `json:"next_run,omitempty"`
	Note    string     `json:"note,omitempty"`
}

func timePtr(t time.Time) *time.Time {
	if t.IsZero() {
		return nil
	}
	t = t.UTC()
	return &t
}

func runStatus(ctx context.Context, e *env, args []string) error {
	fs := e.flags("status", "[--json] [--watch[=INTERVAL]]")
	var watch watchFlag
	fs.Var(&watch, "watch", "refresh every INTERVAL (default 2s) until interrupted")
	pos, err := e.parse(fs, args, 0, 1)
	if err != nil {
		return err
	}
	if len(pos) == 1 { // "--watch 5s"
		d, err := time.ParseDuration(pos[0])
		if !watch.set || err != nil || d <= 0 {
			return usageError("unexpected argument %q", pos[0])
		}
		watch.every = d
	}
	// --timeout bounds the whole command, or with --watch each step.
	step := e.stepper(watch.set)
	var s *store
	if err := step(ctx, func(ctx context.Context) (err error) { s, err = e.openStore(ctx); return err }); err != nil {
		return err
	}
	defer s.close()
	for {
		var r *statusReport
		err := step(ctx, func(ctx context.Context) (err error) { r, err = s.status(ctx); return err })
		if err != nil {
			if watch.set && ctx.Err() != nil {
				return nil
			}
			return err
		}
		if e.g.json {
			enc := json.NewEncoder(e.stdout)
			if !watch.set {
				enc.SetIndent("", "  ")
			}
			if err := enc.Encode(r); err != nil {
				return err
			}
		} else {
			if watch.set {
				fmt.Fprintf(e.stdout, "--- %s\n", time.Now().UTC().Format(time.RFC3339))
			}
			r.print(e.stdout)
		}
		if !watch.set {
			return nil
		}
		select {
		case <-ctx.Done():
			return nil
		case <-time.After(watch.every):
		}
	}
}

// watchFlag is --watch or --watch=INTERVAL.
type watchFlag struct {
	set   bool
	every time.Duration
}

func (w *watchFlag) IsBoolFlag() bool { return true }
func (w *watchFlag) String() string {
	if w == nil || !w.set {
		return ""
	}
	return w.every.String()
}
func (w *watchFlag) Set(v string) error {
	w.set, w.every = true, 2*time.Second
	switch v {
	case "true", "":
		return nil
	case "false":
		w.set = false
		return nil
	}
	d, err := time.ParseDuration(v)
	if err != nil || d <= 0 {
		return fmt.Errorf("want a positive duration such as 5s, got %q", v)
	}
	w.every = d
	return nil
}

func (s *store) status(ctx context.Context) (*statusReport, error) {
	r := &statusReport{Store: s.kind(), Dir: s.dir, Nodes: []nodeJSON{}, Leases: []leaseJSON{}, Schedules: []jobJSON{}}
	var err error
	if s.db != nil {
		r.Prefix = s.prefix
		st, err := sqldialect.ReadSchema(ctx, s.db, s.tables)
		if err != nil {
			return nil, fmt.Errorf("read schema version: %w", err)
		}
		r.Schema = &schemaJSON{Version: st.Version, Compat: st.Compat, Release: dialect.SchemaVersion}
	}
	if r.Journal.Epoch, err = s.j.Epoch(ctx); err != nil {
		return nil, err
	}
	if r.Journal.Head, err = s.j.Head(ctx); err != nil {
		return nil, err
	}
	if r.Journal.Tail, err = s.j.Tail(ctx); err != nil {
		return nil, err
	}
	if sj, ok := s.j.(*journal.SQL); ok {
		pi, err := sj.PendingInfo(ctx)
		if err != nil {
			return nil, err
		}
		r.Pending = &pendingJSON{Entries: pi.Entries, OldestAgeSeconds: pi.OldestAge.Seconds()}
	}
	positions, err := s.revs.List(ctx)
	if err != nil {
		return nil, err
	}
	leases, err := s.ls.List(ctx)
	if err != nil {
		return nil, err
	}
	nodes := map[string]*nodeJSON{}
	for _, p := range positions {
		n := &nodeJSON{ID: p.NodeID, HasPosition: true, Position: p.Revision, Evicted: p.Evicted,
			Epoch: p.Epoch, Updated: timePtr(p.Updated)}
		n.OtherEpoch = !p.Evicted && p.Epoch != "" && p.Epoch != r.Journal.Epoch
		n.Lag = max(r.Journal.Head-p.Revision, 0)
		nodes[p.NodeID] = n
	}
	for _, l := range leases {
		r.Leases = append(r.Leases, leaseJSON{Name: l.Name, Node: l.Owner.NodeID, Instance: l.Owner.Instance, Token: l.Token,
			Held: l.Held, Acquired: timePtr(l.Acquired), Renewed: timePtr(l.Renewed), Expires: timePtr(l.Expires)})
		id, ok := strings.CutPrefix(l.Name, lock.MemberPrefix)
		if !ok {
			continue
		}
		n := nodes[id]
		if n == nil {
			if !l.Held {
				continue // departed and forgotten; the lease only keeps its token
			}
			n = &nodeJSON{ID: id}
			nodes[id] = n
		}
		n.Live = l.Held
		n.Instance = l.Owner.Instance
		n.LastHeartbeat = timePtr(l.Renewed)
		n.LeaseExpires = timePtr(l.Expires)
	}
	for _, n := range nodes {
		r.Nodes = append(r.Nodes, *n)
	}
	sort.Slice(r.Nodes, func(i, j int) bool { return r.Nodes[i].ID < r.Nodes[j].ID })
	r.Janitor = job(leases, "janitor", janitor.DefaultLeaseName,
		"the next run is scheduled by each node that enables the janitor (03:00 and every 24h by default)")
	r.GC = job(leases, "datastore gc", datastore.DefaultLeaseName, "collections run when the application starts them")
	for _, l := range leases {
		if name, ok := strings.CutPrefix(l.Name, lock.SchedulePrefix); ok {
			j := job(leases, name, l.Name, "")
			if l.Held {
				j.NextRun = timePtr(l.Expires)
			} else {
				j.Note = "a run is due"
			}
			r.Schedules = append(r.Schedules, j)
		}
	}
	return r, nil
}

// job describes the job that runs under the lease name.
func job(leases []lock.Info, title, name, note string) jobJSON {
	j := jobJSON{Name: title, Lease: name, Note: note}
	for _, l := range leases {
		if l.Name != name {
			continue
		}
		j.Known = true
		j.LastRun = timePtr(l.Acquired)
		j.Node = l.Owner.NodeID
		// A schedule lease is held until the next run is due; any other
		// job's lease is held while it runs.
		j.Running = l.Held && !strings.HasPrefix(name, lock.SchedulePrefix)
	}
	if !j.Known {
		j.Note = strings.TrimSuffix("never ran; "+j.Note, "; ")
	}
	return j
}

func fmtTime(t *time.Time) string {
	if t == nil {
		return "-"
	}
	return t.Format("2006-01-02 15:04:05Z")
}

func yesNo(b bool) string {
	if b {
		return "yes"
	}
	return "no"
}

func (r *statusReport) print(w io.Writer) {
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	where := r.Dir
	if r.Dir == "" {
		where = r.Store + ", prefix " + r.Prefix
	}
	fmt.Fprintf(tw, "store\t%s\n", where)
	if r.Schema != nil {
		fmt.Fprintf(tw, "schema\tversion %d (compatible down to %d; this release: %d)\n", r.Schema.Version, r.Schema.Compat, r.Schema.Release)
	}
	fmt.Fprintf(tw, "journal\tepoch %s, head %d, tail %d\n", r.Journal.Epoch, r.Journal.Head, r.Journal.Tail)
	if r.Pending != nil {
		if r.Pending.Entries == 0 {
			fmt.Fprintf(tw, "pending\tnone\n")
		} else {
			fmt.Fprintf(tw, "pending\t%d entries, the oldest waiting %s\n", r.Pending.Entries,
				time.Duration(r.Pending.OldestAgeSeconds*float64(time.Second)).Round(time.Millisecond))
		}
	}
	for _, j := range append([]jobJSON{r.Janitor, r.GC}, r.Schedules...) {
		fmt.Fprintf(tw, "%s\t%s\n", j.Name, j.describe())
	}
	tw.Flush()

	fmt.Fprintln(w)
	tw = tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "NODE\tLIVE\tEVICTED\tPOSITION\tLAG\tLAST HEARTBEAT\tPOSITION SAVED\tINSTANCE")
	if len(r.Nodes) == 0 {
		fmt.Fprintln(tw, "(none)\t\t\t\t\t\t\t")
	}
	for _, n := range r.Nodes {
		position, lag := "-", "-"
		if n.HasPosition {
			position, lag = fmt.Sprint(n.Position), fmt.Sprint(n.Lag)
			if n.OtherEpoch {
				lag = "other epoch"
			}
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\n", n.ID, yesNo(n.Live), yesNo(n.Evicted), position, lag,
			fmtTime(n.LastHeartbeat), fmtTime(n.Updated), dash(n.Instance))
	}
	tw.Flush()

	fmt.Fprintln(w)
	tw = tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "LEASE\tHOLDER\tTOKEN\tHELD\tACQUIRED\tEXPIRES")
	if len(r.Leases) == 0 {
		fmt.Fprintln(tw, "(none)\t\t\t\t\t")
	}
	for _, l := range r.Leases {
		holder := l.Node
		if l.Instance != "" {
			holder += "/" + l.Instance
		}
		fmt.Fprintf(tw, "%s\t%s\t%d\t%s\t%s\t%s\n", l.Name, dash(holder), l.Token, yesNo(l.Held), fmtTime(l.Acquired), fmtTime(l.Expires))
	}
	tw.Flush()
}

func (j jobJSON) describe() string {
	var parts []string
	if j.Running {
		parts = append(parts, "running on "+j.Node)
	}
	if j.LastRun != nil {
		parts = append(parts, "last run "+fmtTime(j.LastRun)+" on "+j.Node)
	}
	if j.NextRun != nil {
		parts = append(parts, "next run "+fmtTime(j.NextRun))
	}
	if j.Note != "" {
		parts = append(parts, j.Note)
	}
	return strings.Join(parts, "; ")
}

func dash(s string) string {
	if s == "" {
		return "-"
	}
	return s
}
