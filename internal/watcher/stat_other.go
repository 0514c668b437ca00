//go:build !linux

package watcher

import "io/fs"

// statOf extracts what the watcher compares from an lstat result. Outside
// Linux (development machines only) there is no portable inode or ctime:
// directories are told apart by path alone and polling compares size, mtime
// and mode.
func statOf(fi fs.FileInfo) (fileID, pollRec) {
	return fileID{}, pollRec{
		size:  fi.Size(),
		mtime: fi.ModTime().UnixNano(),
		mode:  uint32(fi.Mode()),
	}
}
