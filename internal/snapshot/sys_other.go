//go:build !linux && !darwin

package snapshot

import (
	"io/fs"
	"os"
)

// sysStat has no portable ctime or inode here: the index then relies on
// size, mtime and mode alone.
func sysStat(fs.FileInfo) (ctimeNs int64, inode uint64) { return 0, 0 }

func lstat(path string) (fileStat, entryKind, error) {
	fi, err := os.Lstat(path)
	if err != nil {
		return fileStat{}, 0, err
	}
	return statOf(fi), kindOf(fi.Mode()), nil
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

func openRead(path string) (*fileReader, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	return &fileReader{f}, nil
}

func (f *fileReader) stat() (fileStat, entryKind, error) {
	fi, err := f.File.Stat()
	if err != nil {
		return fileStat{}, 0, err
	}
	return statOf(fi), kindOf(fi.Mode()), nil
}

func readDirNames(abs string) ([]string, error) {
	f, err := os.Open(abs)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	return f.Readdirnames(-1)
}
