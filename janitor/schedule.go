package janitor

import "time"

// schedule says when the janitor runs: every interval, or at an hour of
// the day and then every sleep after the previous scheduled time.
type schedule struct {
	interval time.Duration // > 0: a plain interval
	hour     int           // 0–23: the first run's hour of day, in loc
	sleep    time.Duration
	loc      *time.Location
}

// first returns the first scheduled run at or after now: now+interval, or
// the next time the clock in loc shows the hour (today, if it has not
// passed yet).
func (s schedule) first(now time.Time) time.Time {
	if s.interval > 0 {
		return now.Add(s.interval)
	}
	n := now.In(s.loc)
	t := time.Date(n.Year(), n.Month(), n.Day(), s.hour, 0, 0, 0, s.loc)
	if t.Before(n) {
		t = time.Date(n.Year(), n.Month(), n.Day()+1, s.hour, 0, 0, 0, s.loc)
	}
	return t
}

// after returns the scheduled time that follows prev, or, when that has
// passed already (the process was paused, or a run took longer than the
// period), the first scheduled time after now: a schedule that fell
// behind runs once, not back to back. A sleep of whole days keeps the
// wall-clock hour across daylight-saving changes.
func (s schedule) after(prev, now time.Time) time.Time {
	step := func(t time.Time) time.Time {
		if s.interval > 0 {
			return t.Add(s.interval)
		}
		if s.sleep%(24*time.Hour) == 0 {
			// The hour is the schedule's, not t's: a slot that fell
			// into a daylight-saving gap (02:00 on the day clocks jump
			// to 03:00) ran at the hour after it, and the next day's
			// slot is back at the configured hour.
			t = t.In(s.loc)
			return time.Date(t.Year(), t.Month(), t.Day()+int(s.sleep/(24*time.Hour)), s.hour, 0, 0, 0, s.loc)
		}
		return t.Add(s.sleep)
	}
	t := step(prev)
	if !t.After(now) {
		// Skip the slots that were missed: one run made up for them.
		if s.interval > 0 || s.sleep%(24*time.Hour) != 0 {
			period := s.interval
			if period == 0 {
				period = s.sleep
			}
			t = t.Add((now.Sub(t)/period + 1) * period)
		}
		for !t.After(now) {
			t = step(t)
		}
	}
	return t
}
