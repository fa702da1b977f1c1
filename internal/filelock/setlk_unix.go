//go:build unix

package filelock

import (
	"errors"
	"os"

	"golang.org/x/sys/unix"
)

func tryLock(f *os.File) (bool, error) {
	return setlk(f, unix.F_WRLCK)
}

func unlock(f *os.File) error {
	_, err := setlk(f, unix.F_UNLCK)
	return err
}

// setlk sets or clears a lock on the whole file with lockCmd (F_OFD_SETLK
// on Linux, F_SETLK elsewhere), which never blocks.
func setlk(f *os.File, typ int16) (bool, error) {
	lk := unix.Flock_t{Type: typ, Whence: 0, Start: 0, Len: 0}
	for {
		err := unix.FcntlFlock(f.Fd(), lockCmd, &lk)
		switch {
		case err == nil:
			return true, nil
		case errors.Is(err, unix.EINTR):
			continue
		case errors.Is(err, unix.EAGAIN), errors.Is(err, unix.EACCES):
			return false, nil
		default:
			return false, err
		}
	}
}
