// Package backoff computes jittered exponential delays for loops that retry
// after consecutive errors (listeners, heartbeats, handler retries).
package backoff

import (
	"math/rand/v2"
	"time"
)

// Backoff doubles its delay after each failure from Min up to Max, with
// ±20% jitter so that many nodes do not retry in lockstep. The zero value
// is not usable; use New. Not safe for concurrent use.
type Backoff struct {
	Min, Max time.Duration
	cur      time.Duration
}

// New returns a Backoff starting at min and capped at max.
func New(min, max time.Duration) *Backoff { return &Backoff{Min: min, Max: max} }

// Next returns the delay before the next attempt and doubles the one after.
func (b *Backoff) Next() time.Duration {
	if b.cur == 0 {
		b.cur = b.Min
	}
	d := Jitter(b.cur, 0.2)
	b.cur = min(b.cur*2, b.Max)
	return d
}

// Reset starts over at Min after a success.
func (b *Backoff) Reset() { b.cur = 0 }

// Jitter returns d varied uniformly by ±frac (0 <= frac < 1).
func Jitter(d time.Duration, frac float64) time.Duration {
	if d <= 0 || frac <= 0 {
		return d
	}
	f := 1 + frac*(2*rand.Float64()-1)
	return time.Duration(float64(d) * f)
}
