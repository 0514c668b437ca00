//go:build !linux && !darwin

package snapshot

import (
	"errors"
	"io/fs"
	"os"
	"path/filepath"
)

// Elsewhere the scan goes through paths and the os package: no ctime, no
// inode (the index then relies on size, mtime and mode), and no protection
// against a directory swapped for a symlink mid-scan.

var errNotDir = errors.New("not a directory")

func sysStat(fs.FileInfo) (ctimeNs int64, inode uint64) { return 0, 0 }

type dirHandle struct{ path string }

func openDir(parent *dirHandle, name, path string) (*dirHandle, error) {
	fi, err := os.Lstat(path)
	if err != nil {
		return nil, err
	}
	if !fi.IsDir() {
		return nil, &os.PathError{Op: "open", Path: path, Err: errNotDir}
	}
	return &dirHandle{path: path}, nil
}

func (d *dirHandle) close() {}

func (d *dirHandle) stat() (fileStat, error) {
	fi, err := os.Lstat(d.path)
	if err != nil {
		return fileStat{}, err
	}
	return statOf(fi), nil
}

func (d *dirHandle) names() ([]string, error) {
	f, err := os.Open(d.path)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	return f.Readdirnames(-1)
}

func (d *dirHandle) lstat(name string) (fileStat, entryKind, error) {
	fi, err := os.Lstat(filepath.Join(d.path, name))
	if err != nil {
		return fileStat{}, 0, err
	}
	return statOf(fi), kindOf(fi.Mode()), nil
}

func (d *dirHandle) readlink(name string) (string, error) {
	return os.Readlink(filepath.Join(d.path, name))
}

func (d *dirHandle) openFile(name string) (*fileReader, error) {
	f, err := os.Open(filepath.Join(d.path, name))
	if err != nil {
		return nil, err
	}
	return &fileReader{f}, nil
}

func kindOf(m fs.FileMode) entryKind {
	switch {
	case m.IsRegular():
		return kindFile
	case m.IsDir():
		return kindDir
	case m&fs.ModeSymlink != 0:
		return kindSymlink
	}
	return kindOther
}

type fileReader struct{ *os.File }

func (f *fileReader) stat() (fileStat, entryKind, error) {
	fi, err := f.File.Stat()
	if err != nil {
		return fileStat{}, 0, err
	}
	return statOf(fi), kindOf(fi.Mode()), nil
}

func isReplaced(err error) bool { return errors.Is(err, errNotDir) }
