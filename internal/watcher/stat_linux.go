//go:build linux

package watcher

import (
	"io/fs"
	"syscall"
)

// statOf extracts what the watcher compares from an lstat result.
func statOf(fi fs.FileInfo) (fileID, pollRec) {
	rec := pollRec{
		size:  fi.Size(),
		mtime: fi.ModTime().UnixNano(),
		mode:  uint32(fi.Mode()),
	}
	st, ok := fi.Sys().(*syscall.Stat_t)
	if !ok {
		return fileID{}, rec
	}
	rec.ctime = int64(st.Ctim.Sec)*1e9 + int64(st.Ctim.Nsec)
	rec.ino = uint64(st.Ino)
	return fileID{dev: uint64(st.Dev), ino: rec.ino}, rec
}
