package journal

import (
	"context"
	"time"
)

// SetConnSchedule shortens ConnIdle and ConnMaxHold for one journal; call
// it before the first append.
func (j *SQL) SetConnSchedule(idle, maxHold time.Duration) {
	j.connIdle, j.connMaxHold = idle, maxHold
}

// LookupBatch runs the lookup of an open outcome for batch (n records
// above after), as the resolver does once the abandoned session has ended.
func (j *SQL) LookupBatch(ctx context.Context, batch int64, n int, after int64) (int64, bool, error) {
	return j.lookupBatch(ctx, batch, n, after, "", time.Time{})
}

// SetAfterSettle installs fn to run after each of the lookup's settling
// changes of the counter (delta), before its commit; call it before the
// lookup.
func (j *SQL) SetAfterSettle(fn func(ctx context.Context, delta int64) error) { j.afterSettle = fn }
