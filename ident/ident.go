// Package ident defines the identifiers every tandem package shares — node
// ids, producer names, table prefixes, lease names — and validates them.
//
// Identifiers end up in SQL (table prefixes) and in file paths (node ids,
// lease names), so each has a strict alphabet and a length limit. Nothing a
// caller passes is ever spliced into SQL or a path without passing one of the
// checks in this package first.
//
// ident imports nothing else from the module: it is the leaf every other
// package may depend on.
package ident

import (
	"errors"
	"fmt"
)

// Limits on identifier lengths, in bytes.
const (
	// MaxNodeIDLen is the longest node id. Node ids become file names in the
	// file backends and VARCHAR(64) keys in SQL.
	MaxNodeIDLen = 64
	// MaxProducerLen is the longest producer name (VARCHAR(128) in SQL).
	MaxProducerLen = 128
	// MaxPrefixLen is the longest table prefix. Oracle before 12.2 allows 30
	// characters per identifier and the longest table suffix is
	// "global_revision" (15), so a prefix may have at most 15.
	MaxPrefixLen = 15
	// MaxNameLen is the longest lease or lock name.
	MaxNameLen = 128
	// BlobIDLen is the length of a data store blob id: the SHA-256 of
	// the content in lowercase hex.
	BlobIDLen = 64
)

// ErrInvalid is matched (with errors.Is) by every validation error of this
// package. The concrete error is an *InvalidError naming the field.
var ErrInvalid = errors.New("invalid identifier")

// InvalidError reports an identifier that failed validation.
type InvalidError struct {
	Field  string // the configuration field or argument, e.g. "NodeID"
	Value  string // the rejected value (truncated to 80 bytes)
	Reason string // what is wrong with it
}

func (e *InvalidError) Error() string {
	return fmt.Sprintf("invalid %s %q: %s", e.Field, e.Value, e.Reason)
}

// Is makes errors.Is(err, ErrInvalid) true for every *InvalidError.
func (e *InvalidError) Is(target error) bool { return target == ErrInvalid }

func invalid(field, value, reason string) error {
	if len(value) > 80 {
		value = value[:80] + "…"
	}
	return &InvalidError{Field: field, Value: value, Reason: reason}
}

// NodeID validates a node id: 1 to MaxNodeIDLen bytes of [A-Za-z0-9._-],
// not starting with '.' or '-'. It is safe as a file name on every platform
// tandem supports and as a SQL parameter.
func NodeID(field, id string) error {
	return name(field, id, MaxNodeIDLen)
}

// LeaseName validates a lease or lock name with the same alphabet as
// node ids, up to MaxNameLen bytes.
func LeaseName(field, n string) error {
	return name(field, n, MaxNameLen)
}

func name(field, s string, max int) error {
	if s == "" {
		return invalid(field, s, "must not be empty")
	}
	if len(s) > max {
		return invalid(field, s, fmt.Sprintf("longer than %d bytes", max))
	}
	if s[0] == '.' || s[0] == '-' {
		return invalid(field, s, "must not start with '.' or '-'")
	}
	for i := 0; i < len(s); i++ {
		c := s[i]
		if !(c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '.' || c == '_' || c == '-') {
			return invalid(field, s, fmt.Sprintf("byte %d (%q) is not in [A-Za-z0-9._-]", i, c))
		}
	}
	return nil
}

// Producer validates a producer name: 1 to MaxProducerLen bytes of printable
// ASCII without spaces (for example "cache/users" or "search-index").
// Producers are stored as data, never used as identifiers.
func Producer(field, p string) error {
	if p == "" {
		return invalid(field, p, "must not be empty")
	}
	if len(p) > MaxProducerLen {
		return invalid(field, p, fmt.Sprintf("longer than %d bytes", MaxProducerLen))
	}
	for i := 0; i < len(p); i++ {
		if c := p[i]; c <= ' ' || c > '~' {
			return invalid(field, p, fmt.Sprintf("byte %d (%q) is not printable ASCII without space", i, c))
		}
	}
	return nil
}

// Prefix validates a SQL table prefix: 1 to MaxPrefixLen bytes of [a-z0-9_],
// starting with a letter. The prefix is the only caller-supplied text that
// becomes part of SQL, which is why it is this strict.
func Prefix(field, p string) error {
	if p == "" {
		return invalid(field, p, "must not be empty")
	}
	if len(p) > MaxPrefixLen {
		return invalid(field, p, fmt.Sprintf("longer than %d bytes", MaxPrefixLen))
	}
	if p[0] < 'a' || p[0] > 'z' {
		return invalid(field, p, "must start with a letter a-z")
	}
	for i := 0; i < len(p); i++ {
		if c := p[i]; !(c >= 'a' && c <= 'z' || c >= '0' && c <= '9' || c == '_') {
			return invalid(field, p, fmt.Sprintf("byte %d (%q) is not in [a-z0-9_]", i, c))
		}
	}
	return nil
}

// BlobID validates a data store blob id: exactly BlobIDLen bytes of
// lowercase hex [0-9a-f]. Blob ids become file paths and SQL keys; the
// error says what is wrong (length, upper case, a byte that is not a hex
// digit).
func BlobID(field, id string) error {
	if len(id) != BlobIDLen {
		return invalid(field, id, fmt.Sprintf("is %d bytes long, want %d (a SHA-256 in lowercase hex)", len(id), BlobIDLen))
	}
	for i := 0; i < len(id); i++ {
		switch c := id[i]; {
		case c >= '0' && c <= '9' || c >= 'a' && c <= 'f':
		case c >= 'A' && c <= 'F':
			return invalid(field, id, fmt.Sprintf("byte %d (%q) is upper case; ids are lowercase hex", i, c))
		default:
			return invalid(field, id, fmt.Sprintf("byte %d (%q) is not a hex digit [0-9a-f]", i, c))
		}
	}
	return nil
}
