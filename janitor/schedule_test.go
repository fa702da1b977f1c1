package janitor

import (
	"testing"
	"time"

	"github.com/stretchr/testify/require"
)

func TestScheduleHourOfDay(t *testing.T) {
	berlin, err := time.LoadLocation("Europe/Berlin")
	if err != nil {
		t.Skip("no time zone database:", err)
	}
	s := schedule{hour: 3, sleep: 24 * time.Hour, loc: berlin}
	at := func(y int, m time.Month, d, h, min int) time.Time { return time.Date(y, m, d, h, min, 0, 0, berlin) }

	require.Equal(t, at(2026, 3, 10, 3, 0), s.first(at(2026, 3, 10, 1, 30)), "before 03:00: today")
	require.Equal(t, at(2026, 3, 11, 3, 0), s.first(at(2026, 3, 10, 3, 0).Add(time.Second)), "after 03:00: tomorrow")
	require.Equal(t, at(2026, 3, 10, 3, 0), s.first(at(2026, 3, 10, 3, 0)), "at 03:00 sharp: now")
	require.Equal(t, at(2026, 3, 10, 3, 0), s.first(at(2026, 3, 10, 1, 30).UTC()), "the hour is Location's, whatever now's zone")

	// The run took a minute: the next is a day after the scheduled time.
	require.Equal(t, at(2026, 3, 11, 3, 0), s.after(at(2026, 3, 10, 3, 0), at(2026, 3, 10, 3, 1)))
	// Daylight saving starts on 29 March 2026 in Berlin (02:00 → 03:00):
	// a 24 h sleep of whole days keeps 03:00.
	require.Equal(t, at(2026, 3, 29, 3, 0), s.after(at(2026, 3, 28, 3, 0), at(2026, 3, 28, 3, 5)))
	require.Equal(t, at(2026, 10, 25, 3, 0), s.after(at(2026, 10, 24, 3, 0), at(2026, 10, 24, 3, 5)), "and when it ends")

	// A process paused for three days runs once, then at the next 03:00.
	require.Equal(t, at(2026, 3, 14, 3, 0), s.after(at(2026, 3, 10, 3, 0), at(2026, 3, 13, 9, 0)))

	// Midnight is hour 24 in the config, 0 here.
	m := schedule{hour: 0, sleep: 24 * time.Hour, loc: berlin}
	require.Equal(t, at(2026, 3, 11, 0, 0), m.first(at(2026, 3, 10, 0, 1)))

	// A sleep that is not whole days is plain duration arithmetic, and
	// missed slots are skipped.
	h := schedule{hour: 3, sleep: 6 * time.Hour, loc: berlin}
	require.Equal(t, at(2026, 3, 10, 9, 0), h.after(at(2026, 3, 10, 3, 0), at(2026, 3, 10, 3, 2)))
	require.Equal(t, at(2026, 3, 11, 3, 0), h.after(at(2026, 3, 10, 3, 0), at(2026, 3, 10, 22, 0)))
}

// TestScheduleDaylightSavingHour: FirstRunHour 2 in Berlin. On 29 March
// 2026 02:00 does not exist (clocks jump from 02:00 to 03:00), so that
// day's run is at 03:00; every later run is back at 02:00, not an hour
// late for good. On 25 October 2026 02:00 happens twice (03:00 → 02:00):
// that day runs once, and the next day at 02:00 again.
func TestScheduleDaylightSavingHour(t *testing.T) {
	berlin, err := time.LoadLocation("Europe/Berlin")
	if err != nil {
		t.Skip("no time zone database:", err)
	}
	s := schedule{hour: 2, sleep: 24 * time.Hour, loc: berlin}
	at := func(y int, m time.Month, d, h, min int) time.Time { return time.Date(y, m, d, h, min, 0, 0, berlin) }

	gap := s.after(at(2026, 3, 28, 2, 0), at(2026, 3, 28, 2, 5))
	require.Equal(t, at(2026, 3, 29, 3, 0), gap, "02:00 does not exist that day: the run is at 03:00")
	require.Equal(t, at(2026, 3, 30, 2, 0), s.after(gap, gap.Add(5*time.Minute)), "the day after the gap runs at 02:00 again")
	require.Equal(t, at(2026, 3, 31, 2, 0), s.after(at(2026, 3, 30, 2, 0), at(2026, 3, 30, 2, 5)))
	// A process paused over the gap day runs once, then at 02:00.
	require.Equal(t, at(2026, 3, 30, 2, 0), s.after(at(2026, 3, 28, 2, 0), at(2026, 3, 29, 12, 0)))

	back := s.after(at(2026, 10, 24, 2, 0), at(2026, 10, 24, 2, 5))
	require.Equal(t, 25, back.In(berlin).Day())
	require.Equal(t, 2, back.In(berlin).Hour(), "the repeated hour: one of the two 02:00s")
	next := s.after(back, back.Add(5*time.Minute))
	require.Equal(t, at(2026, 10, 26, 2, 0), next, "not the second 02:00 of the same day, and not 01:00 or 03:00 the next")
	require.Equal(t, at(2026, 10, 26, 2, 0), s.after(back, back.Add(time.Hour+5*time.Minute)), "a run that lasted into the repeated hour")
}

func TestScheduleInterval(t *testing.T) {
	s := schedule{interval: 500 * time.Millisecond, loc: time.UTC}
	t0 := time.Date(2026, 12, 2, 10, 0, 0, 0, time.UTC)
	require.Equal(t, t0.Add(500*time.Millisecond), s.first(t0))
	require.Equal(t, t0.Add(time.Second), s.after(t0.Add(500*time.Millisecond), t0.Add(600*time.Millisecond)))
	// Fell behind by 10 s (a paused process): one run, then the next
	// slot after now, not twenty back to back.
	next := s.after(t0.Add(500*time.Millisecond), t0.Add(10*time.Second+100*time.Millisecond))
	require.Equal(t, t0.Add(10*time.Second+500*time.Millisecond), next)
	// Exactly on a slot: the one after it.
	require.Equal(t, t0.Add(2*time.Second), s.after(t0.Add(time.Second), t0.Add(1500*time.Millisecond)))
}

func TestConfigErrors(t *testing.T) {
	for _, c := range []struct {
		cfg   Config
		field string
	}{
		{Config{}, "NodeID"},
		{Config{NodeID: "a"}, "Journal, Revisions and Leases are required"},
	} {
		_, err := New(c.cfg)
		require.ErrorIs(t, err, ErrInvalidArgument)
		require.ErrorContains(t, err, c.field)
	}
}
