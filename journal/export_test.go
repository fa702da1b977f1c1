package journal

import "time"

// SetConnSchedule shortens ConnIdle and ConnMaxHold for one journal; call
// it before the first append.
func (j *SQL) SetConnSchedule(idle, maxHold time.Duration) {
	j.connIdle, j.connMaxHold = idle, maxHold
}
