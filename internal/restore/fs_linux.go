//go:build linux

package restore

import (
	"errors"
	"os"
	"syscall"
	"unsafe"

	"golang.org/x/sys/unix"

	"github.com/sandkeep/sandkeep/internal/retry"
)

// futimens sets atime = mtime = ns on the open file f (utimensat with a NULL
// path, as glibc's futimens does).
func futimens(f *os.File, ns int64) error {
	ts := [2]unix.Timespec{unix.NsecToTimespec(ns), unix.NsecToTimespec(ns)}
	rc, err := f.SyscallConn()
	if err != nil {
		return err
	}
	var errno syscall.Errno
	if err := rc.Control(func(fd uintptr) {
		_, _, errno = unix.Syscall6(unix.SYS_UTIMENSAT, fd, 0, uintptr(unsafe.Pointer(&ts)), 0, 0, 0)
	}); err != nil {
		return err
	}
	if errno != 0 {
		return &os.PathError{Op: "futimens", Path: f.Name(), Err: errno}
	}
	return nil
}

// preallocate reserves size bytes for the new, empty file f (fallocate):
// the chunks the workers write into it, in any order, land in extents
// allocated once, and a disk too full for the file fails here, before any
// chunk is fetched for it. A file system that cannot preallocate leaves
// the file as it is (its size is set by Truncate after).
func preallocate(f *os.File, size int64) error {
	rc, err := f.SyscallConn()
	if err != nil {
		return err
	}
	var ferr error
	if err := rc.Control(func(fd uintptr) {
		ferr = retry.EINTR(func() error { return unix.Fallocate(int(fd), 0, 0, size) })
	}); err != nil {
		return err
	}
	if errors.Is(ferr, unix.EOPNOTSUPP) || errors.Is(ferr, unix.ENOSYS) {
		return nil
	}
	if ferr != nil {
		return &os.PathError{Op: "fallocate", Path: f.Name(), Err: ferr}
	}
	return nil
}
