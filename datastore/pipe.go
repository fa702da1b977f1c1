package datastore

import (
	"fmt"
	"hash"
	"io"
	"sync"
	"sync/atomic"
)

// Buffers of copyHashing: pipeBuffers of pipeBufferSize bytes (1 MiB in
// all) are the memory a File's Put needs, whatever the blob's size.
// Buffers of a few hundred KiB stay in the CPU's caches while they are
// read, hashed and written.
const (
	pipeBuffers    = 4
	pipeBufferSize = 256 << 10
)

// pipeBufs holds copyHashing's buffers between Puts.
var pipeBufs = sync.Pool{New: func() any {
	b := make([]byte, pipeBufferSize)
	return &b
}}

// copyHashing copies r to w and into h and returns the number of bytes
// copied. Reading (on the caller's goroutine), hashing and writing run
// concurrently, each in order, over a ring of buffers, so a Put costs
// about the slowest of the three rather than their sum. Errors of r are
// wrapped by readErr.
func copyHashing(w io.Writer, h hash.Hash, r io.Reader) (int64, error) {
	type slot struct {
		b    []byte
		refs atomic.Int32 // consumers still using b
	}
	// The buffers come from pipeBufs as the copy needs them: a small
	// blob takes one, and none is allocated (and zeroed) afresh per Put.
	free := make(chan *slot, pipeBuffers)
	taken := 0
	next := func() *slot {
		if taken < pipeBuffers {
			select {
			case s := <-free:
				return s
			default:
				taken++
				return &slot{b: *pipeBufs.Get().(*[]byte)}
			}
		}
		return <-free
	}
	release := func(s *slot) {
		if s.refs.Add(-1) == 0 {
			free <- s
		}
	}
	type part struct {
		s *slot
		n int
	}
	toHash, toWrite := make(chan part, pipeBuffers), make(chan part, pipeBuffers)
	var werr error
	var wg sync.WaitGroup
	wg.Add(2)
	go func() {
		defer wg.Done()
		for p := range toHash {
			h.Write(p.s.b[:p.n])
			release(p.s)
		}
	}()
	go func() {
		defer wg.Done()
		for p := range toWrite {
			if werr == nil {
				_, werr = w.Write(p.s.b[:p.n])
			}
			release(p.s)
		}
	}()
	var n int64
	var rerr error
	for rerr == nil {
		s := next()
		m, err := io.ReadFull(r, s.b)
		if m > 0 {
			s.refs.Store(2)
			toHash <- part{s, m}
			toWrite <- part{s, m}
			n += int64(m)
		} else {
			free <- s
		}
		switch err {
		case nil:
		case io.EOF, io.ErrUnexpectedEOF:
			rerr = io.EOF
		default:
			rerr = readErr(err)
		}
	}
	close(toHash)
	close(toWrite)
	wg.Wait()
	// Both consumers are done: every slot taken is back in free.
	for range taken {
		s := <-free
		pipeBufs.Put(&s.b)
	}
	if rerr != io.EOF {
		return n, rerr
	}
	if werr != nil {
		return n, fmt.Errorf("put blob: write: %w", werr)
	}
	return n, nil
}
