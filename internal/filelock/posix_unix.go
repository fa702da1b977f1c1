//go:build unix && !linux

package filelock

import (
	"sync"

	"golang.org/x/sys/unix"
)

// Classic fcntl locks belong to the process: a second Lock of this process
// on the same file would succeed, and closing any descriptor of the file
// drops them. The table gives every file (by device and inode) one
// procLock, whose one open file the Locks of this process on it share.
var procTable = struct {
	sync.Mutex
	m map[fileKey]*procLock
}{m: make(map[fileKey]*procLock)}

// init makes l share its file's procLock, and that procLock's open file.
func (l *Lock) init() error {
	var st unix.Stat_t
	if err := unix.Fstat(int(l.f.Fd()), &st); err != nil {
		return err
	}
	k := fileKey{dev: uint64(st.Dev), ino: uint64(st.Ino)}
	procTable.Lock()
	defer procTable.Unlock()
	p := procTable.m[k]
	if p == nil {
		p = &procLock{f: l.f}
		procTable.m[k] = p
	} else {
		// Closing a descriptor drops every lock of the process on the
		// file: close ours only while no Lock of this process holds it.
		p.mu.Lock()
		l.f.Close()
		p.mu.Unlock()
		l.f = p.f
	}
	p.refs++
	l.proc, l.key = p, k
	return nil
}

// release drops l's share, closing the file with the last one.
func (l *Lock) release() error {
	if l.proc == nil {
		return l.f.Close()
	}
	procTable.Lock()
	defer procTable.Unlock()
	l.proc.refs--
	if l.proc.refs > 0 {
		return nil
	}
	delete(procTable.m, l.key)
	return l.proc.f.Close()
}

// lockCmd: classic POSIX record locks, owned by the process, hence the
// per-process table above.
const lockCmd = unix.F_SETLK
