package snapshot

import (
	"io/fs"

	"github.com/sandkeep/sandkeep/internal/tree"
)

// fileStat is what the index compares to decide that a file is unchanged.
type fileStat struct {
	size    int64
	mtimeNs int64
	ctimeNs int64 // 0 where the platform has no ctime
	inode   uint64
	mode    uint32 // tree mode: permission bits plus setuid/setgid/sticky
}

// entryKind is the type of a directory entry, as the scan sees it.
type entryKind uint8

const (
	kindOther entryKind = iota // fifo, socket, device: not stored
	kindFile
	kindDir
	kindSymlink
)

// statOf extracts a fileStat from an lstat or fstat result.
func statOf(fi fs.FileInfo) fileStat {
	st := fileStat{size: fi.Size(), mtimeNs: fi.ModTime().UnixNano(), mode: treeMode(fi.Mode())}
	st.ctimeNs, st.inode = sysStat(fi)
	return st
}

// treeMode maps Go's mode bits to the tree's: the permission bits and the
// setuid (0o4000), setgid (0o2000) and sticky (0o1000) bits.
func treeMode(m fs.FileMode) uint32 {
	mode := uint32(m.Perm())
	if m&fs.ModeSetuid != 0 {
		mode |= 0o4000
	}
	if m&fs.ModeSetgid != 0 {
		mode |= 0o2000
	}
	if m&fs.ModeSticky != 0 {
		mode |= 0o1000
	}
	return mode & tree.ModeMask
}

// sameFile reports whether two stats of one path describe the same content:
// same inode, size, mtime and ctime. A write, truncation, rename over or
// chmod between them changes at least one of these.
func sameFile(a, b fileStat) bool {
	return a.inode == b.inode && a.size == b.size && a.mtimeNs == b.mtimeNs && a.ctimeNs == b.ctimeNs
}
