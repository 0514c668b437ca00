//go:build unix && !linux

package restore

import (
	"os"

	"golang.org/x/sys/unix"
)

// futimens sets atime = mtime = ns on the open file f (microseconds only on
// these systems; the agent runs on Linux).
func futimens(f *os.File, ns int64) error {
	tv := unix.NsecToTimeval(ns)
	rc, err := f.SyscallConn()
	if err != nil {
		return err
	}
	var uerr error
	if err := rc.Control(func(fd uintptr) { uerr = unix.Futimes(int(fd), []unix.Timeval{tv, tv}) }); err != nil {
		return err
	}
	if uerr != nil {
		return &os.PathError{Op: "futimes", Path: f.Name(), Err: uerr}
	}
	return nil
}

// preallocate does nothing here: the file's size is set by Truncate.
func preallocate(*os.File, int64) error { return nil }
