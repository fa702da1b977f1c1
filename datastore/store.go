package datastore

import (
	"context"
	"crypto/sha256"
	"errors"
	"fmt"
	"hash"
	"io"
	"time"
)

// Errors. Id validation errors match ident.ErrInvalid instead.
var (
	// ErrNotFound: no blob has the id.
	ErrNotFound = errors.New("datastore: blob not found")
	// ErrCorrupt: a blob's stored content does not hash to its id, or
	// has another length than recorded; a Get reports it at the end of
	// the content instead of io.EOF.
	ErrCorrupt = errors.New("datastore: blob corrupt")
	// ErrUploadExpired: a Put wrote nothing for longer than a
	// collector's grace period (its reader stalled), and the collector
	// removed the upload as abandoned. Nothing was stored; put the
	// content again.
	ErrUploadExpired = errors.New("datastore: upload expired")
	// ErrInvalidArgument: a bad configuration or argument.
	ErrInvalidArgument = errors.New("datastore: invalid argument")
)

// Info describes a stored blob.
type Info struct {
	ID     ID
	Length int64
	// LastUsed is the store's time of the last Put or Touch of the blob
	// (database time, or the file server's modification time): what a
	// collector compares with its grace period.
	LastUsed time.Time
	// Created is when the blob was first stored (database time); zero
	// where the backend does not record it (File).
	Created time.Time
}

// Store is a content-addressed blob store, shared by every node of a
// cluster: File (a shared folder) and SQL implement it, and Collector
// collects its garbage. All methods are safe for concurrent use, by any
// number of nodes at once.
type Store interface {
	// Put stores the content r yields and returns its id and length.
	// It hashes while it copies, in memory that does not depend on the
	// content's size, and makes the blob visible under its id only once
	// all of it is durably stored. Content that is stored already is not
	// stored twice: Put refreshes its last use, like Touch. Put reads r to
	// EOF (or the first error) and does not close it.
	Put(ctx context.Context, r io.Reader) (Info, error)

	// Get returns a reader of the blob's content. Unless the store was
	// configured with SkipVerify, the reader hashes what it returns and,
	// at the end, returns an error matching ErrCorrupt instead of io.EOF
	// when the content does not match its id: a caller must not use the
	// bytes unless it read to io.EOF without error. The caller closes the
	// reader. ErrNotFound when there is no such blob.
	Get(ctx context.Context, id ID) (io.ReadCloser, error)

	// Stat returns the blob's Info, or ErrNotFound.
	Stat(ctx context.Context, id ID) (Info, error)

	// Exists reports whether the blob is stored.
	Exists(ctx context.Context, id ID) (bool, error)

	// Touch records a new use of a stored blob, in the store's time, so
	// that a collector running now keeps it (see the package doc). It
	// returns ErrNotFound when the blob is gone: the caller must Put the
	// content again before it refers to it.
	Touch(ctx context.Context, id ID) error

	// Delete removes the blob at once, referenced or not: for operators.
	// Applications leave deleting to a Collector. ErrNotFound when there
	// is no such blob.
	Delete(ctx context.Context, id ID) error

	// Walk calls fn for every stored blob, in ascending id order, until
	// fn returns an error (which Walk returns). Blobs put or deleted
	// while it runs may or may not be seen.
	Walk(ctx context.Context, fn func(Info) error) error
}

// verifier is the reader Get returns: it counts and (unless skip) hashes
// what it passes on, and at EOF replaces io.EOF with an ErrCorrupt error
// when the content has another length or hash than expected.
type verifier struct {
	id     ID
	r      io.Reader
	close  func() error
	h      hash.Hash // nil: length check only
	length int64     // expected; -1: unknown (File, where the file's size is the length)
	n      int64
	err    error // sticky
}

func newVerifier(id ID, r io.Reader, length int64, skip bool, close func() error) *verifier {
	v := &verifier{id: id, r: r, close: close, length: length}
	if !skip {
		v.h = sha256.New()
	}
	return v
}

func (v *verifier) Read(p []byte) (int, error) {
	if v.err != nil {
		return 0, v.err
	}
	n, err := v.r.Read(p)
	if n > 0 {
		v.n += int64(n)
		if v.h != nil {
			v.h.Write(p[:n])
		}
		if v.length >= 0 && v.n > v.length {
			v.err = fmt.Errorf("read blob %s: %w: longer than its recorded %d bytes", v.id, ErrCorrupt, v.length)
			return 0, v.err
		}
	}
	if err == io.EOF {
		err = v.atEOF()
	}
	if err != nil {
		v.err = err
	}
	return n, err
}

func (v *verifier) atEOF() error {
	if v.length >= 0 && v.n != v.length {
		return fmt.Errorf("read blob %s: %w: %d bytes, recorded %d", v.id, ErrCorrupt, v.n, v.length)
	}
	if v.h != nil {
		if got := sumID(v.h); got != v.id {
			return fmt.Errorf("read blob %s: %w: its %d bytes hash to %s", v.id, ErrCorrupt, v.n, got)
		}
	}
	return io.EOF
}

// Close closes the underlying reader.
func (v *verifier) Close() error { return v.close() }

// ctxReader stops reading when ctx ends.
type ctxReader struct {
	ctx context.Context
	r   io.Reader
}

func (c ctxReader) Read(p []byte) (int, error) {
	if err := c.ctx.Err(); err != nil {
		return 0, err
	}
	return c.r.Read(p)
}

// readErr wraps an error of the caller's reader so that it stays
// recognisable (errors.Is) and says where it came from.
func readErr(err error) error { return fmt.Errorf("put blob: read content: %w", err) }
