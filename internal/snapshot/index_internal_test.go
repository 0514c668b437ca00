package snapshot

import (
	"bytes"
	"os"
	"testing"

	"github.com/sandkeep/sandkeep/internal/id"
	"github.com/sandkeep/sandkeep/internal/tree"
)

// FuzzReadIndex: whatever the bytes, readIndex fails cleanly or returns an
// index that writes back to exactly those bytes.
func FuzzReadIndex(f *testing.F) {
	fi, err := os.Lstat("index.go")
	if err != nil {
		f.Fatal(err)
	}
	x := NewIndex()
	x.RecordFile("a/b.txt", fi, []tree.ChunkRef{{ID: [32]byte{1}, Size: uint32(fi.Size())}})
	x.RecordFile("c", fi, []tree.ChunkRef{{ID: [32]byte{2}, Size: uint32(fi.Size())}})
	x.RecordFile("a/a", fi, []tree.ChunkRef{{ID: [32]byte{3}, Size: uint32(fi.Size())}})
	var seed bytes.Buffer
	if err := x.write(&seed); err != nil {
		f.Fatal(err)
	}
	// The fuzzer works on the body; the checksum is appended, or else
	// nearly nothing would get past it.
	f.Add(seed.Bytes()[:seed.Len()-id.Size])
	f.Add([]byte(indexMagic + "\x01"))
	f.Fuzz(func(t *testing.T, body []byte) {
		sum := id.Sum(body)
		b := append(bytes.Clone(body), sum[:]...)
		x, err := readIndex(bytes.NewReader(b), int64(len(b)))
		if err != nil {
			return
		}
		var out bytes.Buffer
		if err := x.write(&out); err != nil {
			t.Fatal(err)
		}
		if !bytes.Equal(out.Bytes(), b) {
			t.Fatal("read/write is not the identity")
		}
	})
}
