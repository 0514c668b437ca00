package snapshot

import (
	"io/fs"
	"syscall"
)

func sysStat(fi fs.FileInfo) (ctimeNs int64, inode uint64) {
	if st, ok := fi.Sys().(*syscall.Stat_t); ok {
		return st.Ctim.Nano(), st.Ino
	}
	return 0, 0
}
