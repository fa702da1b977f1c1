package lock

import "time"

// Clock reads the time. tandem uses only differences between its readings
// (monotonic durations on one machine), never its absolute value, so a
// clock that is minutes off the others is harmless. Tests inject skewed or
// fake clocks.
type Clock interface {
	Now() time.Time
}

// SystemClock is the machine's clock.
type SystemClock struct{}

// Now implements Clock.
func (SystemClock) Now() time.Time { return time.Now() }
