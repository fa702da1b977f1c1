package sqldialect

import (
	"fmt"
	"time"
)

// Time is a sql.Scanner for database timestamps that accepts what drivers
// return for them: time.Time, or text when a MySQL DSN lacks parseTime=true.
// Times are returned in UTC.
type Time struct{ T time.Time }

var timeLayouts = []string{
	"2006-01-02 15:04:05.999999999",
	"2006-01-02T15:04:05.999999999Z07:00",
	"2006-01-02 15:04:05.999999999Z07:00",
	"2006-01-02 15:04:05.999999999-07",
}

// Scan implements sql.Scanner.
func (t *Time) Scan(src any) error {
	switch v := src.(type) {
	case time.Time:
		t.T = v.UTC()
		return nil
	case nil:
		t.T = time.Time{}
		return nil
	case []byte:
		return t.parse(string(v))
	case string:
		return t.parse(v)
	}
	return fmt.Errorf("scan time: unsupported type %T", src)
}

func (t *Time) parse(s string) error {
	for _, l := range timeLayouts {
		if v, err := time.Parse(l, s); err == nil {
			t.T = v.UTC()
			return nil
		}
	}
	return fmt.Errorf("scan time: cannot parse %q", s)
}
