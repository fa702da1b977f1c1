package oracle

import (
	"math"
	"time"
)

// waitSeconds is the WAIT clause for a lock timeout: whole seconds, rounded
// up, at least 1. Oracle has no session setting for a row-lock timeout, so
// every append carries it (AppendRequest.LockTimeout); a zero timeout
// means journal's default of 10 s.
func waitSeconds(d time.Duration) int {
	if d <= 0 {
		d = 10 * time.Second
	}
	s := (d + time.Second - 1) / time.Second
	return int(min(max(s, 1), math.MaxInt32))
}
