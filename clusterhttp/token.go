package clusterhttp

import (
	"errors"
	"strconv"
	"strings"
)

// errToken: a token that does not parse.
var errToken = errors.New(`token is not "<epoch>:<revision>"`)

// FormatToken returns the token for revision rev of the journal with the
// given epoch: "<epoch>:<rev>".
func FormatToken(epoch string, rev int64) string {
	return epoch + ":" + strconv.FormatInt(rev, 10)
}

// ParseToken splits a token into its epoch and revision. The revision must
// be a positive decimal integer, the epoch non-empty and free of spaces.
func ParseToken(token string) (epoch string, rev int64, err error) {
	i := strings.LastIndexByte(token, ':')
	if i <= 0 || len(token) > maxTokenLen {
		return "", 0, errToken
	}
	epoch = token[:i]
	if strings.ContainsAny(epoch, " \t,;") {
		return "", 0, errToken
	}
	rev, err = strconv.ParseInt(token[i+1:], 10, 64)
	if err != nil || rev < 1 || token[i+1] == '+' {
		return "", 0, errToken
	}
	return epoch, rev, nil
}

// maxTokenLen bounds what is parsed of a client's header.
const maxTokenLen = 256
