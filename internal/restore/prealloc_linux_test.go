//go:build linux

package restore

import (
	"os"
	"path/filepath"
	"syscall"
	"testing"
)

// TestPreallocateReservesTheFile checks that preallocate gives a new file
// its size and its blocks before anything is written.
func TestPreallocateReservesTheFile(t *testing.T) {
	f, err := os.Create(filepath.Join(t.TempDir(), "big"))
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	const size = 3<<20 + 123
	if err := preallocate(f, size); err != nil {
		t.Fatal(err)
	}
	var st syscall.Stat_t
	if err := syscall.Fstat(int(f.Fd()), &st); err != nil {
		t.Fatal(err)
	}
	if st.Size == 0 {
		t.Skip("this file system cannot preallocate")
	}
	if st.Size != size || st.Blocks*512 < size {
		t.Errorf("size %d, %d bytes allocated; want %d, all allocated", st.Size, st.Blocks*512, size)
	}
}
