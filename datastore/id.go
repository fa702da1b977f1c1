package datastore

import (
	"encoding/hex"
	"fmt"
	"hash"

	"github.com/tandem-go/tandem/ident"
)

// MinRecordLength is the size, in bytes, from which an application should
// keep a binary value in the data store rather than inline with the
// record that refers to it: Jackrabbit's minRecordLength, 100 bytes by
// default. Below it, an id (64 bytes) and the bookkeeping of a blob cost
// more than the value itself. The store accepts blobs of any size,
// including empty ones; the constant only guides the application.
const MinRecordLength = 100

// Inline reports whether a value of size bytes is better kept inline by
// the application than put into the data store: size < MinRecordLength.
func Inline(size int64) bool { return size < MinRecordLength }

// ID identifies a blob: the SHA-256 of its content in lowercase hex (64
// bytes). Every method of a Store validates the ids it receives (see
// ParseID) before they reach a path or a SQL statement.
type ID string

// ParseID validates s as a blob id and returns it. The error matches
// ident.ErrInvalid and says what is wrong: the length, upper case, or a
// byte that is not a hex digit (such as the '.' or '/' of a path).
func ParseID(s string) (ID, error) {
	if err := ident.BlobID("blob id", s); err != nil {
		return "", err
	}
	return ID(s), nil
}

// String returns the id as it is stored.
func (id ID) String() string { return string(id) }

// Valid reports whether id is a well-formed blob id.
func (id ID) Valid() bool { return ident.BlobID("blob id", string(id)) == nil }

// check validates id for the operation op.
func (id ID) check(op string) error {
	if err := ident.BlobID("blob id", string(id)); err != nil {
		return fmt.Errorf("%s: %w", op, err)
	}
	return nil
}

// sumID is the id of the content hashed by h.
func sumID(h hash.Hash) ID {
	var b [32]byte
	return ID(hex.EncodeToString(h.Sum(b[:0])))
}

// key is the binary form of an id, for the collector's mark set.
type key [32]byte

func (id ID) key() (k key) {
	_, _ = hex.Decode(k[:], []byte(id)) // validated before
	return k
}
