package journal_test

import (
	"os"
	"strconv"
)

func envInt(name string) int64 {
	v, _ := strconv.ParseInt(os.Getenv(name), 10, 64)
	return v
}
