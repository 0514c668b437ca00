package restore

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path"
	"syscall"
	"time"

	"golang.org/x/sys/unix"
)

// All filesystem work goes through an *os.Root opened on the workspace, or
// through an *os.Root of one of its directories opened from it: no path,
// and no symlink met on the way (already on disk or created by the plan),
// can make an operation land outside the workspace. On top of that the plan
// is checked so that every entry's parent is a directory of the plan, which
// the restore makes a real directory (replacing a symlink found there)
// before creating anything in it.

// dirCache keeps the last parent directory used, opened as an os.Root, so
// that consecutive operations in one directory (the common case: the plan
// is in tree order and packs are written in that order) resolve with a
// single openat instead of one per path element. Each goroutine has its
// own; it holds at most one descriptor.
type dirCache struct {
	ws    *os.Root
	dir   string
	root  *os.Root
	stale bool
}

// open returns the directory holding p and p's last element.
func (c *dirCache) open(p string) (*os.Root, string, error) {
	dir, base := path.Split(p)
	if dir == "" {
		return c.ws, base, nil
	}
	dir = dir[:len(dir)-1]
	if c.root != nil && c.dir == dir && !c.stale {
		return c.root, base, nil
	}
	c.close()
	r, err := c.ws.OpenRoot(dir)
	if err != nil {
		return nil, "", err
	}
	c.dir, c.root = dir, r
	return r, base, nil
}

// invalidate makes the next open reopen its directory (after a directory
// was removed: the cached one might have been inside it). What open
// returned last stays usable until then.
func (c *dirCache) invalidate() { c.stale = true }

func (c *dirCache) close() {
	if c.root != nil {
		c.root.Close()
	}
	c.root, c.dir, c.stale = nil, "", false
}

// fileMode converts unix permission bits (with setuid/setgid/sticky) to an
// os.FileMode.
func fileMode(m uint32) os.FileMode {
	fm := os.FileMode(m & 0o777)
	if m&0o4000 != 0 {
		fm |= os.ModeSetuid
	}
	if m&0o2000 != 0 {
		fm |= os.ModeSetgid
	}
	if m&0o1000 != 0 {
		fm |= os.ModeSticky
	}
	return fm
}

// unixMode is the inverse of fileMode for the permission part of fm.
func unixMode(fm os.FileMode) uint32 {
	m := uint32(fm.Perm())
	if fm&os.ModeSetuid != 0 {
		m |= 0o4000
	}
	if fm&os.ModeSetgid != 0 {
		m |= 0o2000
	}
	if fm&os.ModeSticky != 0 {
		m |= 0o1000
	}
	return m
}

func nlinkOf(fi os.FileInfo) uint64 {
	if st, ok := fi.Sys().(*syscall.Stat_t); ok {
		return uint64(st.Nlink)
	}
	return 1
}

// removeAny removes whatever is at base in dir (a directory with its
// contents; RemoveAll never follows symlinks).
func removeAny(c *dirCache, dir *os.Root, base string, fi os.FileInfo) error {
	if fi.IsDir() {
		c.invalidate()
		return dir.RemoveAll(base)
	}
	return dir.Remove(base)
}

// makeDir makes p a real directory the restore can write into, and reports
// whether it created it. Its mode and times are applied by the final pass.
// A symlink or file at p is replaced.
func makeDir(c *dirCache, p string, mode uint32) (created bool, err error) {
	dir, base, err := c.open(p)
	if err != nil {
		return false, err
	}
	err = dir.Mkdir(base, os.FileMode(mode&0o777|0o700))
	if !errors.Is(err, fs.ErrExist) {
		return err == nil, err
	}
	fi, err := dir.Lstat(base)
	switch {
	case err != nil:
		return false, err
	case fi.IsDir():
		// Keep it; make sure we can create children in it.
		if fi.Mode().Perm()&0o700 != 0o700 {
			return false, dir.Chmod(base, fi.Mode().Perm()|0o700)
		}
		return false, nil
	}
	if err := dir.Remove(base); err != nil {
		return false, fmt.Errorf("replace %s: %w", typeName(fi), err)
	}
	err = dir.Mkdir(base, os.FileMode(mode&0o777|0o700))
	return err == nil, err
}

func typeName(fi os.FileInfo) string {
	switch t := fi.Mode().Type(); {
	case t == 0:
		return "file"
	case t&os.ModeSymlink != 0:
		return "symlink"
	case t&os.ModeDir != 0:
		return "directory"
	default:
		return t.String()
	}
}

// makeSymlink makes p a symlink to target, replacing what is there, and sets
// the link's own mtime.
func makeSymlink(c *dirCache, p, target string, mtimeNs int64) error {
	dir, base, err := c.open(p)
	if err != nil {
		return err
	}
	if err := dir.Symlink(target, base); errors.Is(err, fs.ErrExist) {
		fi, err := dir.Lstat(base)
		if err != nil {
			return err
		}
		same := false
		if fi.Mode()&os.ModeSymlink != 0 {
			cur, err := dir.Readlink(base)
			same = err == nil && cur == target
		}
		if !same {
			if err := removeAny(c, dir, base, fi); err != nil {
				return fmt.Errorf("replace %s: %w", typeName(fi), err)
			}
			if err := dir.Symlink(target, base); err != nil {
				return err
			}
		}
	} else if err != nil {
		return err
	}
	return lchtimes(dir, base, mtimeNs)
}

// lchtimes sets atime and mtime of base itself (never what it points to),
// relative to a descriptor of its directory: neither can lead outside.
func lchtimes(dir *os.Root, base string, ns int64) error {
	d, err := dir.Open(".")
	if err != nil {
		return err
	}
	defer d.Close()
	rc, err := d.SyscallConn()
	if err != nil {
		return err
	}
	ts := unix.NsecToTimespec(ns)
	var uerr error
	if err := rc.Control(func(fd uintptr) {
		uerr = unix.UtimesNanoAt(int(fd), base, []unix.Timespec{ts, ts}, unix.AT_SYMLINK_NOFOLLOW)
	}); err != nil {
		return err
	}
	if uerr != nil {
		return &os.PathError{Op: "utimensat", Path: base, Err: uerr}
	}
	return nil
}

// createExcl creates base in dir as a new file open for writing. Whatever
// is already there (a plan naming the path twice, something that appeared
// meanwhile) is replaced, never written through.
func createExcl(c *dirCache, dir *os.Root, base string) (*os.File, error) {
	f, err := dir.OpenFile(base, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o600)
	if !errors.Is(err, fs.ErrExist) {
		return f, err
	}
	fi, err := dir.Lstat(base)
	if err != nil {
		return nil, err
	}
	if err := removeAny(c, dir, base, fi); err != nil {
		return nil, fmt.Errorf("replace %s: %w", typeName(fi), err)
	}
	return dir.OpenFile(base, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o600)
}

func truncateFile(dir *os.Root, base string, size int64) error {
	f, err := dir.OpenFile(base, os.O_WRONLY, 0)
	if err != nil {
		return err
	}
	err = f.Truncate(size)
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	return err
}

// setModeTimes applies mode and atime=mtime=ns to base in dir.
func setModeTimes(dir *os.Root, base string, mode uint32, ns int64) error {
	if err := dir.Chmod(base, fileMode(mode)); err != nil {
		return err
	}
	t := time.Unix(0, ns)
	return dir.Chtimes(base, t, t)
}
