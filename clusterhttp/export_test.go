package clusterhttp

import "time"

// SetEpochRecheck sets how long the journal's confirmation of the node's
// epoch stands for tokens of other epochs.
func SetEpochRecheck(m *Middleware, d time.Duration) { m.recheck = d }
