package snapshot

import (
	"bytes"
	"context"
	"encoding/binary"
	"os"
	"path/filepath"
	"slices"
	"testing"

	"github.com/sandkeep/sandkeep/internal/id"
	"github.com/sandkeep/sandkeep/internal/tree"
)

// storeAll is a remote that stores nothing and lacks everything.
type storeAll struct{}

func (storeAll) FindMissing(_ context.Context, ids []id.ID) ([]id.ID, error) { return ids, nil }
func (storeAll) UploadPack(context.Context, id.ID, []byte, func()) error     { return nil }
func (storeAll) UploadTrees(context.Context, [][]byte) error                 { return nil }

// testIndexes returns a complete index (of a Run over a small tree) and a
// loose one (recorded as a restore does).
func testIndexes(t testing.TB) (complete, loose *Index) {
	ws := t.TempDir()
	for _, p := range []string{"a/b.txt", "a/a", "c", "d/e/f/g"} {
		full := filepath.Join(ws, filepath.FromSlash(p))
		if err := os.MkdirAll(filepath.Dir(full), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(full, []byte("content of "+p), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	if err := os.Symlink("c", filepath.Join(ws, "link")); err != nil {
		t.Fatal(err)
	}
	res, err := Run(context.Background(), ws, storeAll{}, nil, Options{})
	if err != nil {
		t.Fatal(err)
	}
	fi, err := os.Lstat("index.go")
	if err != nil {
		t.Fatal(err)
	}
	loose = NewIndex()
	loose.RecordFile("a/b.txt", fi, []tree.ChunkRef{{ID: [32]byte{1}, Size: uint32(fi.Size())}})
	loose.RecordFile("c", fi, []tree.ChunkRef{{ID: [32]byte{2}, Size: uint32(fi.Size())}})
	loose.RecordFile("a/a", fi, []tree.ChunkRef{{ID: [32]byte{3}, Size: uint32(fi.Size())}})
	return res.Index, loose
}

func encoded(t testing.TB, x *Index) []byte {
	x.prepare()
	var b bytes.Buffer
	if err := x.write(&b); err != nil {
		t.Fatal(err)
	}
	return b.Bytes()
}

// FuzzReadIndex: whatever the bytes, readIndex fails cleanly or returns an
// index that writes back to exactly those bytes (for the current version;
// an older one is converted, and its conversion then writes back to
// itself).
func FuzzReadIndex(f *testing.F) {
	complete, loose := testIndexes(f)
	// The fuzzer works on the body; the checksum is appended, or else
	// nearly nothing would get past it.
	for _, x := range []*Index{complete, loose, NewIndex()} {
		b := encoded(f, x)
		f.Add(b[:len(b)-id.Size])
	}
	f.Add(v1Body(f))
	f.Add([]byte(indexMagic + "\x02"))
	f.Fuzz(func(t *testing.T, body []byte) {
		sum := id.Sum(body)
		b := append(bytes.Clone(body), sum[:]...)
		x, err := readIndex(bytes.NewReader(b), int64(len(b)))
		if err != nil {
			return
		}
		out := encoded(t, x)
		if body[len(indexMagic)] != indexVersion {
			b = out
			if x, err = readIndex(bytes.NewReader(b), int64(len(b))); err != nil {
				t.Fatalf("converted index does not read back: %v", err)
			}
			out = encoded(t, x)
		}
		if !bytes.Equal(out, b) {
			t.Fatal("read/write is not the identity")
		}
	})
}

// v1Body is the body of an index file of version 1 (no checksum): two
// directories, "" with the file "c" and "a" with "a" and "b.txt".
func v1Body(t testing.TB) []byte {
	fi, err := os.Lstat("index.go")
	if err != nil {
		t.Fatal(err)
	}
	st := statOf(fi)
	chunks := func(b byte) []tree.ChunkRef { return []tree.ChunkRef{{ID: [32]byte{b}, Size: uint32(st.size)}} }
	b := []byte(indexMagic + "\x01")
	b = binary.AppendUvarint(b, 2)
	dir := func(p string, names ...string) {
		b = binary.AppendUvarint(b, uint64(len(p)))
		b = append(b, p...)
		b = append(b, make([]byte, id.Size)...) // tree: dropped on load
		b = binary.AppendUvarint(b, uint64(len(names)))
		for i, n := range names {
			b = appendRec(b, n, st, false, chunks(byte(i+1)))
		}
	}
	dir("", "c")
	dir("a", "a", "b.txt")
	return b
}

// An index file of version 1 (before directories kept their trees) still
// loads: its files are trusted, its directories listed by the next Run.
func TestLoadIndexVersion1(t *testing.T) {
	body := v1Body(t)
	sum := id.Sum(body)
	p := filepath.Join(t.TempDir(), "v1.index")
	if err := os.WriteFile(p, append(body, sum[:]...), 0o600); err != nil {
		t.Fatal(err)
	}
	x, err := LoadIndex(p)
	if err != nil {
		t.Fatal(err)
	}
	if x.Len() != 3 {
		t.Fatalf("%d files, want 3", x.Len())
	}
	fi, _ := os.Lstat("index.go")
	for i, rel := range []string{"a/a", "a/b.txt", "c"} {
		s, ok := x.Lookup(rel)
		want := byte(i + 1)
		if rel == "c" {
			want = 1
		}
		if !ok || s.Size != fi.Size() || s.Chunks[0].ID != ([32]byte{want}) {
			t.Errorf("%s: %+v %v", rel, s, ok)
		}
	}
	if x.root.loose == nil || x.dir("a").loose == nil {
		t.Error("version 1 directories must load as loose ones")
	}
}

// Indexes survive Save and LoadIndex: complete ones with every tree, loose
// ones (a restore's, saved by `sandkeep-agent restore`) with every record.
func TestIndexSaveLoadInternal(t *testing.T) {
	complete, loose := testIndexes(t)
	for name, x := range map[string]*Index{"complete": complete, "loose": loose} {
		t.Run(name, func(t *testing.T) {
			p := filepath.Join(t.TempDir(), "index")
			if err := x.Save(p); err != nil {
				t.Fatal(err)
			}
			y, err := LoadIndex(p)
			if err != nil {
				t.Fatal(err)
			}
			if !bytes.Equal(encoded(t, x), encoded(t, y)) || x.Len() != y.Len() {
				t.Fatal("loaded index differs")
			}
			for _, rel := range []string{"a/b.txt", "a/a", "c", "d/e/f/g"} {
				a, ok1 := x.Lookup(rel)
				b, ok2 := y.Lookup(rel)
				if ok1 != ok2 || a.Size != b.Size || a.CtimeNs != b.CtimeNs || !slices.Equal(a.Chunks, b.Chunks) {
					t.Errorf("%s: %+v, loaded %+v", rel, a, b)
				}
			}
		})
	}
}

// RecordFile on a complete index makes only the directories on the way
// loose (copies: the complete entries may be shared with another index),
// and the file it records wins over the one the tree had.
func TestRecordFileOnCompleteIndex(t *testing.T) {
	complete, _ := testIndexes(t)
	before := encoded(t, complete)
	x := &Index{root: complete.root}
	fi, _ := os.Lstat("index.go")
	x.RecordFile("d/e/new", fi, []tree.ChunkRef{{ID: [32]byte{9}, Size: uint32(fi.Size())}})
	x.RecordFile("a/b.txt", fi, []tree.ChunkRef{{ID: [32]byte{8}, Size: uint32(fi.Size())}})
	if !bytes.Equal(encoded(t, complete), before) {
		t.Fatal("RecordFile changed an index sharing its entries")
	}
	if x.Len() != complete.Len()+1 {
		t.Errorf("%d files, want %d", x.Len(), complete.Len()+1)
	}
	if s, ok := x.Lookup("a/b.txt"); !ok || s.Chunks[0].ID != ([32]byte{8}) {
		t.Errorf("a/b.txt: %+v", s)
	}
	if s, ok := x.Lookup("d/e/f/g"); !ok || s.Size != int64(len("content of d/e/f/g")) {
		t.Errorf("d/e/f/g lost: %+v %v", s, ok)
	}
	if x.dir("d/e/f").loose != nil || x.dir("d/e").loose == nil || x.dir("a").loose == nil {
		t.Error("only the directories on the way must become loose")
	}
}
