// Package atomicfile replaces files so that readers, and a crash at any
// moment, see either the old content or the new one, never a mixture: the
// new content goes to a temp file in the same folder, which is fsynced,
// renamed over the target, and the folder fsynced.
//
// Temp files are named "." + target base name + "." + random + ".tmp", so
// they never look like a target whose names cannot start with '.'.
// RemoveStale deletes the ones a crashed writer left behind.
package atomicfile

import (
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"time"
)

const tempSuffix = ".tmp"

// IsTemp reports whether name (a base name) is a temp file of this package.
func IsTemp(name string) bool {
	return strings.HasPrefix(name, ".") && strings.HasSuffix(name, tempSuffix)
}

// CreateTemp creates a new, empty temp file for the target path in the
// target's folder. The caller writes, fsyncs and closes it, then calls
// os.Rename or os.Link (and SyncDir), or removes it.
func CreateTemp(path string, perm fs.FileMode) (*os.File, error) {
	dir, base := filepath.Split(path)
	var b [8]byte
	for range 10 {
		_, _ = rand.Read(b[:]) // crypto/rand.Read never fails
		name := filepath.Join(dir, "."+base+"."+hex.EncodeToString(b[:])+tempSuffix)
		f, err := os.OpenFile(name, os.O_RDWR|os.O_CREATE|os.O_EXCL, perm)
		if errors.Is(err, fs.ErrExist) {
			continue
		}
		return f, err
	}
	return nil, fmt.Errorf("create temp file for %s: too many collisions", path)
}

// WriteTemp writes data to a new temp file for path, fsyncs and closes it,
// and returns its name.
func WriteTemp(path string, data []byte, perm fs.FileMode) (string, error) {
	f, err := CreateTemp(path, perm)
	if err != nil {
		return "", err
	}
	name := f.Name()
	_, err = f.Write(data)
	if err == nil {
		err = f.Sync()
	}
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		os.Remove(name)
		return "", err
	}
	return name, nil
}

// WriteFile replaces path with data atomically and durably: temp file in
// the same folder, fsync, rename, fsync of the folder. When the rename has
// happened but the folder fsync fails, the error matches ErrNotDurable:
// readers may already see the new content, but a crash could undo it.
func WriteFile(path string, data []byte, perm fs.FileMode) error {
	tmp, err := WriteTemp(path, data, perm)
	if err != nil {
		return err
	}
	if err := os.Rename(tmp, path); err != nil {
		os.Remove(tmp)
		return err
	}
	if err := SyncDir(filepath.Dir(path)); err != nil {
		return fmt.Errorf("%w: %w", ErrNotDurable, err)
	}
	return nil
}

// ErrNotDurable: a file was replaced, but fsyncing its folder failed.
var ErrNotDurable = errors.New("replaced but not durable: folder fsync failed")

// RemoveStale removes the temp files in dir whose modification time is
// more than olderThan ago (left by writers that crashed), and returns how
// many it removed. Temp files younger than that may belong to a writer at
// work and are kept.
func RemoveStale(dir string, olderThan time.Duration) (int, error) {
	ents, err := os.ReadDir(dir)
	if err != nil {
		return 0, err
	}
	n := 0
	for _, e := range ents {
		if !e.Type().IsRegular() || !IsTemp(e.Name()) {
			continue
		}
		info, err := e.Info()
		if err != nil || time.Since(info.ModTime()) < olderThan {
			continue
		}
		if err := os.Remove(filepath.Join(dir, e.Name())); err == nil {
			n++
		}
	}
	return n, nil
}
