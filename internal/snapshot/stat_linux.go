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

func sysTimes(st *syscall.Stat_t) (mtimeNs, ctimeNs int64) { return st.Mtim.Nano(), st.Ctim.Nano() }
