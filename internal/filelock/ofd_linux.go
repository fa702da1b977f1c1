package filelock

import "golang.org/x/sys/unix"

// Open file description locks exclude each other within one process too:
// no process-wide table is needed.
func (l *Lock) init() error    { return nil }
func (l *Lock) release() error { return l.f.Close() }

// lockCmd: open file description locks, which exclude each other within
// one process too.
const lockCmd = unix.F_OFD_SETLK
