//go:build linux || darwin

package snapshot

import (
	"io"
	"os"
	"syscall"
)

// The scan talks to the kernel with plain syscalls: an os.File costs three
// more per file on Linux (non-blocking mode and the failed epoll
// registration) and os.Lstat allocates a FileInfo, which shows on trees of
// many small files.

// lstat stats path without following a symlink.
func lstat(path string) (fileStat, entryKind, error) {
	var st syscall.Stat_t
	for {
		err := syscall.Lstat(path, &st)
		if err == syscall.EINTR {
			continue
		}
		if err != nil {
			return fileStat{}, 0, &os.PathError{Op: "lstat", Path: path, Err: err}
		}
		s, k := fromSys(&st)
		return s, k, nil
	}
}

func fromSys(st *syscall.Stat_t) (fileStat, entryKind) {
	s := fileStat{size: st.Size, inode: st.Ino, mode: uint32(st.Mode) & 0o7777}
	s.mtimeNs, s.ctimeNs = sysTimes(st)
	var k entryKind
	switch st.Mode & syscall.S_IFMT {
	case syscall.S_IFREG:
		k = kindFile
	case syscall.S_IFDIR:
		k = kindDir
	case syscall.S_IFLNK:
		k = kindSymlink
	default:
		k = kindOther
	}
	return s, k
}

// fileReader reads a file through its descriptor.
type fileReader struct{ fd int }

// openRead opens a file for reading without following a symlink that
// replaced it (ELOOP) and without blocking on a fifo that replaced it.
func openRead(path string) (*fileReader, error) {
	for {
		fd, err := syscall.Open(path, syscall.O_RDONLY|syscall.O_NOFOLLOW|syscall.O_NONBLOCK|syscall.O_CLOEXEC, 0)
		if err == syscall.EINTR {
			continue
		}
		if err != nil {
			return nil, &os.PathError{Op: "open", Path: path, Err: err}
		}
		return &fileReader{fd: fd}, nil
	}
}

func (f *fileReader) Read(p []byte) (int, error) {
	if len(p) == 0 {
		return 0, nil
	}
	for {
		n, err := syscall.Read(f.fd, p)
		switch {
		case err == syscall.EINTR:
			continue
		case err != nil:
			return 0, err
		case n == 0:
			return 0, io.EOF
		}
		return n, nil
	}
}

// stat stats the open file.
func (f *fileReader) stat() (fileStat, entryKind, error) {
	var st syscall.Stat_t
	for {
		err := syscall.Fstat(f.fd, &st)
		if err == syscall.EINTR {
			continue
		}
		if err != nil {
			return fileStat{}, 0, err
		}
		s, k := fromSys(&st)
		return s, k, nil
	}
}

func (f *fileReader) Close() error { return syscall.Close(f.fd) }

// readDirNames lists a directory without following a symlink to it.
func readDirNames(abs string) ([]string, error) {
	fd, err := syscall.Open(abs, syscall.O_RDONLY|syscall.O_NOFOLLOW|syscall.O_DIRECTORY|syscall.O_CLOEXEC, 0)
	for err == syscall.EINTR {
		fd, err = syscall.Open(abs, syscall.O_RDONLY|syscall.O_NOFOLLOW|syscall.O_DIRECTORY|syscall.O_CLOEXEC, 0)
	}
	if err != nil {
		return nil, &os.PathError{Op: "open", Path: abs, Err: err}
	}
	f := os.NewFile(uintptr(fd), abs)
	defer f.Close()
	return f.Readdirnames(-1)
}
