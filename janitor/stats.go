package janitor

import "time"

// Report describes one janitor run (or plan).
type Report struct {
	// Head and Tail are the journal's before the run; NewTail the tail it
	// set (equal to Tail when it pruned nothing).
	Head, Tail, NewTail int64
	// Horizon is the lowest revision some node still needs: the lowest
	// position among live and recently departed nodes, plus one. PinnedBy
	// names that node, PinnedWhy why it counts, and PinnedLag how far it
	// is behind the head. Retention (KeepRecords, KeepFor) may keep more.
	Horizon   int64
	PinnedBy  string
	PinnedWhy string
	PinnedLag int64
	// Evicted lists the nodes the run evicted: it marked their position
	// and they had not come back when it looked again before raising the
	// tail. A node that saved a new position after the plan is not
	// evicted, and one that holds its membership lease again has its
	// eviction taken back. For Plan, the nodes a run would evict.
	Evicted []Eviction
	// Deleted is the number of records deleted, in Batches fenced batches.
	Deleted int64
	Batches int
	// Duration is how long the run took.
	Duration time.Duration
}

// Eviction is one node evicted: its position, and how long it had been
// gone (its lease lapsed, or its position unsaved) by the store's clock.
type Eviction struct {
	NodeID   string
	Revision int64
	Gone     time.Duration
}

// Stats describes the janitor's work since it was made.
type Stats struct {
	// Runs counts runs on this node; Errors those that failed, LastError
	// the last failure (nil after a success).
	Runs, Errors int
	LastError    error
	// LastRun is when the last run on this node started, and Last its
	// report. NextRun is the next scheduled time (zero before Start).
	LastRun time.Time
	Last    Report
	NextRun time.Time
	// Deleted and Evicted add up every run's (evictions that stood, as
	// in Report.Evicted).
	Deleted int64
	Evicted int
}

func (j *Janitor) record(start time.Time, rep Report, err error) {
	j.mu.Lock()
	defer j.mu.Unlock()
	j.stats.Runs++
	j.stats.LastRun = start
	j.stats.Last = rep
	j.stats.Deleted += rep.Deleted
	j.stats.Evicted += len(rep.Evicted)
	j.stats.LastError = err
	if err != nil {
		j.stats.Errors++
	}
}

// Stats returns the janitor's statistics. It is safe to call at any time.
func (j *Janitor) Stats() Stats {
	j.mu.Lock()
	defer j.mu.Unlock()
	s := j.stats
	s.Last.Evicted = append([]Eviction(nil), s.Last.Evicted...)
	return s
}
