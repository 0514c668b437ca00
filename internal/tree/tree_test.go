package tree

import (
	"bytes"
	"encoding/binary"
	"errors"
	"math"
	"reflect"
	"strings"
	"testing"

	"github.com/sandkeep/sandkeep/internal/id"
	"github.com/sandkeep/sandkeep/internal/pack"
)

func cid(s string) id.ID { return id.Sum([]byte(s)) }

// sample is a tree with every node kind, odd names and extreme values.
func sample() *Tree {
	return &Tree{Nodes: []Node{
		{Name: " leading space", Type: File, Mode: 0o644, MtimeNs: 1_700_000_000_123_456_789, Size: 3,
			Chunks: []ChunkRef{{ID: cid("abc"), Size: 3}}},
		{Name: "big.bin", Type: File, Mode: 0o4755, MtimeNs: -1, Size: 5<<20 + 1,
			Chunks: []ChunkRef{{ID: cid("c1"), Size: 1 << 20}, {ID: cid("c2"), Size: 4 << 20}, {ID: cid("c3"), Size: 1}}},
		{Name: "empty", Type: File, Mode: 0o600, MtimeNs: 0},
		{Name: "link-abs", Type: Symlink, Mode: 0o777, MtimeNs: math.MinInt64, Target: "/etc/passwd"},
		{Name: "link-dangling", Type: Symlink, Mode: 0o777, MtimeNs: math.MaxInt64, Target: "../nowhere/at all"},
		{Name: "src", Type: Dir, Mode: 0o1777, MtimeNs: 42, Subtree: cid("subtree")},
		{Name: "win\\style", Type: File, Mode: 0, MtimeNs: 1, Size: 0},
		{Name: "ünïcødé 文件.txt", Type: File, Mode: 0o644, MtimeNs: 5, Size: 7,
			Chunks: []ChunkRef{{ID: cid("u"), Size: 7}}},
		{Name: "\xff\xfe not utf-8", Type: Dir, Mode: 0o755, Subtree: cid("x")},
	}}
}

// goldenID pins the encoding: if this changes, the format changed, and
// every stored tree id with it.
const goldenID = "f0b45e603d428c1d7d95afba5c206765a5fb77f67059a726e4cdf8a63d9c0d2b"

func TestGoldenID(t *testing.T) {
	got, err := sample().ID()
	if err != nil {
		t.Fatal(err)
	}
	if got.String() != goldenID {
		t.Fatalf("tree id = %s, want %s: the tree encoding changed", got, goldenID)
	}
	empty, err := (&Tree{}).Encode()
	if err != nil || string(empty) != "SKT1\x00" {
		t.Fatalf("empty tree encodes to %q, %v", empty, err)
	}
}

func TestRoundTrip(t *testing.T) {
	for _, tr := range []*Tree{sample(), {}, {Nodes: sample().Nodes[:1]}} {
		b, err := tr.Encode()
		if err != nil {
			t.Fatal(err)
		}
		got, err := Decode(b)
		if err != nil {
			t.Fatal(err)
		}
		want := tr
		if len(want.Nodes) == 0 {
			want = &Tree{Nodes: []Node{}}
		}
		if !reflect.DeepEqual(got, want) {
			t.Fatalf("round trip differs:\n got %+v\nwant %+v", got, want)
		}
		b2, err := got.Encode()
		if err != nil || !bytes.Equal(b, b2) {
			t.Fatalf("re-encoding differs: %v", err)
		}
	}
}

func TestFind(t *testing.T) {
	tr := sample()
	for _, n := range tr.Nodes {
		got, ok := tr.Find(n.Name)
		if !ok || got.Name != n.Name || got != &tr.Nodes[slicesIndex(tr, n.Name)] {
			t.Fatalf("Find(%q) = %v, %v", n.Name, got, ok)
		}
	}
	for _, name := range []string{"", "a", "src/", "zzz", "big.bi"} {
		if _, ok := tr.Find(name); ok {
			t.Fatalf("Find(%q) found something", name)
		}
	}
	if _, ok := (&Tree{}).Find("x"); ok {
		t.Fatal("found in empty tree")
	}
}

func slicesIndex(t *Tree, name string) int {
	for i := range t.Nodes {
		if t.Nodes[i].Name == name {
			return i
		}
	}
	return -1
}

func file(name string, chunks ...ChunkRef) Node {
	var size int64
	for _, c := range chunks {
		size += int64(c.Size)
	}
	return Node{Name: name, Type: File, Mode: 0o644, Size: size, Chunks: chunks}
}

func TestValidation(t *testing.T) {
	ok1 := file("a", ChunkRef{cid("1"), 10})
	dir := Node{Name: "d", Type: Dir, Mode: 0o755, Subtree: cid("d")}
	link := Node{Name: "l", Type: Symlink, Mode: 0o777, Target: "t"}
	mod := func(n Node, f func(*Node)) Node { f(&n); return n }
	tests := []struct {
		rule  string
		nodes []Node
	}{
		{"name not empty", []Node{mod(ok1, func(n *Node) { n.Name = "" })}},
		{"name not .", []Node{mod(ok1, func(n *Node) { n.Name = "." })}},
		{"name not ..", []Node{mod(ok1, func(n *Node) { n.Name = ".." })}},
		{"name without /", []Node{mod(ok1, func(n *Node) { n.Name = "a/b" })}},
		{"name without NUL", []Node{mod(ok1, func(n *Node) { n.Name = "a\x00" })}},
		{"name at most 1024 bytes", []Node{mod(ok1, func(n *Node) { n.Name = strings.Repeat("n", MaxNameLen+1) })}},
		{"names sorted", []Node{file("b"), file("a")}},
		{"names sorted bytewise", []Node{file("a"), file("B")}},
		{"names unique", []Node{file("a"), file("a")}},
		{"known type", []Node{mod(ok1, func(n *Node) { n.Type = 0 })}},
		{"known type 4", []Node{mod(ok1, func(n *Node) { n.Type = 4 })}},
		{"mode within 0o7777", []Node{mod(ok1, func(n *Node) { n.Mode = 0o10644 })}},
		{"file size is the chunk sum", []Node{mod(ok1, func(n *Node) { n.Size = 11 })}},
		{"empty file has size 0", []Node{mod(file("e"), func(n *Node) { n.Size = 1 })}},
		{"chunk size at least 1", []Node{file("a", ChunkRef{cid("1"), 0})}},
		{"chunk size at most MaxChunkSize", []Node{file("a", ChunkRef{cid("1"), MaxChunkSize + 1})}},
		{"chunk id not zero", []Node{file("a", ChunkRef{id.ID{}, 1})}},
		{"file has no subtree", []Node{mod(ok1, func(n *Node) { n.Subtree = cid("x") })}},
		{"file has no target", []Node{mod(ok1, func(n *Node) { n.Target = "x" })}},
		{"dir has a subtree", []Node{mod(dir, func(n *Node) { n.Subtree = id.ID{} })}},
		{"dir has no size", []Node{mod(dir, func(n *Node) { n.Size = 1 })}},
		{"dir has no chunks", []Node{mod(dir, func(n *Node) { n.Chunks = []ChunkRef{{cid("1"), 1}} })}},
		{"dir has no target", []Node{mod(dir, func(n *Node) { n.Target = "x" })}},
		{"symlink has a target", []Node{mod(link, func(n *Node) { n.Target = "" })}},
		{"symlink target at most 4096 bytes", []Node{mod(link, func(n *Node) { n.Target = strings.Repeat("t", MaxTargetLen+1) })}},
		{"symlink target without NUL", []Node{mod(link, func(n *Node) { n.Target = "a\x00b" })}},
		{"symlink has no size", []Node{mod(link, func(n *Node) { n.Size = 1 })}},
		{"symlink has no subtree", []Node{mod(link, func(n *Node) { n.Subtree = cid("x") })}},
		{"symlink has no chunks", []Node{mod(link, func(n *Node) { n.Chunks = []ChunkRef{{cid("1"), 1}} })}},
	}
	for _, tt := range tests {
		t.Run(tt.rule, func(t *testing.T) {
			tr := &Tree{Nodes: tt.nodes}
			if _, err := tr.Encode(); !errors.Is(err, ErrInvalid) {
				t.Fatalf("Encode err = %v, want ErrInvalid", err)
			}
			if _, err := tr.ID(); !errors.Is(err, ErrInvalid) {
				t.Fatalf("ID err = %v, want ErrInvalid", err)
			}
			// The decoder must never yield the invalid tree, even written
			// by hand (fields the format has no room for are dropped, so
			// some of these decode to a different, valid tree).
			got, err := Decode(rawEncode(tr))
			if err != nil && !errors.Is(err, ErrInvalid) {
				t.Fatalf("Decode err = %v, want ErrInvalid", err)
			}
			if err == nil && reflect.DeepEqual(got, tr) {
				t.Fatal("Decode accepted the invalid tree")
			}
		})
	}
	// Valid edge cases.
	for _, nodes := range [][]Node{
		{mod(ok1, func(n *Node) { n.Name = strings.Repeat("n", MaxNameLen) })},
		{mod(link, func(n *Node) { n.Target = strings.Repeat("t", MaxTargetLen) })},
		{file("a", ChunkRef{cid("1"), MaxChunkSize})},
		{file("B"), file("a"), file("a0"), file("\xff")},
		{mod(ok1, func(n *Node) { n.Mode = 0o7777 })},
	} {
		if _, err := (&Tree{Nodes: nodes}).Encode(); err != nil {
			t.Errorf("valid tree rejected: %v", err)
		}
	}
}

// rawEncode writes a tree with no validation, the way a buggy or hostile
// writer would. Fields the format has no room for (a file's subtree, a
// directory's chunks) are dropped, so those trees may encode validly.
func rawEncode(t *Tree) []byte {
	b := []byte(Magic)
	b = binary.AppendUvarint(b, uint64(len(t.Nodes)))
	for i := range t.Nodes {
		b = appendNode(b, &t.Nodes[i])
	}
	return b
}

func TestDecodeStrict(t *testing.T) {
	good, err := sample().Encode()
	if err != nil {
		t.Fatal(err)
	}
	one := func(n Node) []byte { return rawEncode(&Tree{Nodes: []Node{n}}) }
	dirEnc := one(Node{Name: "d", Type: Dir, Mode: 0o755, Subtree: cid("d")})
	// "SKT1" count=1, namelen=1 "d", type 2, mode 0o755 = 0xed 0x03, mtime 0
	if !bytes.Equal(dirEnc[:10], []byte("SKT1\x01\x01d\x02\xed\x03")) {
		t.Fatalf("unexpected layout %x", dirEnc[:10])
	}
	nonMinCount := append([]byte("SKT1\x81\x00"), dirEnc[5:]...)
	nonMinMode := append(append([]byte{}, dirEnc[:8]...), append([]byte{0xed, 0x83, 0x00}, dirEnc[10:]...)...)
	nonMinMtime := append(append([]byte{}, dirEnc[:10]...), append([]byte{0x80, 0x00}, dirEnc[11:]...)...)
	tests := []struct {
		name string
		in   []byte
	}{
		{"empty input", nil},
		{"bad magic", append([]byte("SKT2"), good[4:]...)},
		{"magic only", []byte("SKT1")},
		{"trailing byte", append(bytes.Clone(good), 0)},
		{"count too large", append([]byte("SKT1\x02"), dirEnc[5:]...)},
		{"count smaller than entries", append([]byte("SKT1\x00"), dirEnc[5:]...)},
		{"huge count", binary.AppendUvarint([]byte("SKT1"), math.MaxUint64)},
		{"count over MaxEntries", binary.AppendUvarint([]byte("SKT1"), MaxEntries+1)},
		{"non-minimal count", nonMinCount},
		{"non-minimal mode", nonMinMode},
		{"non-minimal mtime", nonMinMtime},
		{"varint overflow", append([]byte("SKT1"), 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x01)},
		{"unknown type", bytes.Replace(bytes.Clone(dirEnc), []byte("d\x02"), []byte("d\x07"), 1)},
		{"huge chunk count", append(one(file("f"))[:len(one(file("f")))-1], 0xff, 0xff, 0xff, 0xff, 0x0f)},
		{"huge name length", append([]byte("SKT1\x01"), 0xff, 0xff, 0x03)},
		{"file size over int64", append(one(file("f"))[:len(one(file("f")))-2], 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x01, 0x00)},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if _, err := Decode(tt.in); !errors.Is(err, ErrInvalid) {
				t.Fatalf("Decode err = %v, want ErrInvalid", err)
			}
		})
	}
	if _, err := Decode(dirEnc); err != nil {
		t.Fatalf("baseline: %v", err)
	}
	// Every truncation of a valid encoding is invalid.
	for n := range len(good) {
		if _, err := Decode(good[:n]); !errors.Is(err, ErrInvalid) {
			t.Fatalf("truncated to %d bytes: %v", n, err)
		}
	}
}

func TestDecodeErrorNamesEntry(t *testing.T) {
	b := rawEncode(&Tree{Nodes: []Node{file("ok"), file("p", ChunkRef{cid("x"), 5}), {Name: "zz", Type: File, Size: 9}}})
	_, err := Decode(b)
	if err == nil || !strings.Contains(err.Error(), `entry 2 "zz"`) {
		t.Fatalf("error does not name the entry: %v", err)
	}
}

func TestLimitsMatchPack(t *testing.T) {
	if MaxChunkSize != pack.MaxBlobSize || MaxEncodedSize != pack.MaxBlobSize {
		t.Fatal("tree limits drifted from pack.MaxBlobSize")
	}
}

func TestEncodeTooLarge(t *testing.T) {
	// One file with more chunks than fit in MaxEncodedSize.
	n := MaxEncodedSize/(id.Size+1) + 1
	chunks := make([]ChunkRef, n)
	for i := range chunks {
		chunks[i] = ChunkRef{ID: cid("c"), Size: 1}
	}
	if _, err := (&Tree{Nodes: []Node{file("huge", chunks...)}}).Encode(); !errors.Is(err, ErrInvalid) {
		t.Fatalf("oversized tree: %v", err)
	}
}

func BenchmarkDecode(b *testing.B) {
	tr := &Tree{}
	for i := range 10000 {
		name := string(rune('a'+i%26)) + strings.Repeat("x", i%20) + string(rune('0'+i/26%10)) + id.Sum([]byte{byte(i), byte(i >> 8)}).Short()
		tr.Nodes = append(tr.Nodes, file(name, ChunkRef{cid(name), 1000}))
	}
	sortNodes(tr)
	enc, err := tr.Encode()
	if err != nil {
		b.Fatal(err)
	}
	b.SetBytes(int64(len(enc)))
	b.ReportAllocs()
	for b.Loop() {
		if _, err := Decode(enc); err != nil {
			b.Fatal(err)
		}
	}
}

func sortNodes(t *Tree) {
	for i := 1; i < len(t.Nodes); i++ {
		for j := i; j > 0 && t.Nodes[j-1].Name > t.Nodes[j].Name; j-- {
			t.Nodes[j-1], t.Nodes[j] = t.Nodes[j], t.Nodes[j-1]
		}
	}
}

// TestEncodingBytes checks the encoding byte by byte against the format as
// documented, independently of the encoder.
func TestEncodingBytes(t *testing.T) {
	var a, b id.ID
	for i := range a {
		a[i], b[i] = 0x11, 0x22
	}
	tr := &Tree{Nodes: []Node{
		{Name: "d", Type: Dir, Mode: 0o755, MtimeNs: 300, Subtree: b},
		{Name: "f", Type: File, Mode: 0o644, MtimeNs: -1, Size: 3, Chunks: []ChunkRef{{ID: a, Size: 3}}},
		{Name: "l", Type: Symlink, Mode: 0o777, Target: "../x"},
	}}
	var want []byte
	want = append(want, "SKT1\x03"...)
	want = append(want, 1, 'd', 2, 0xed, 0x03, 0xd8, 0x04)
	want = append(want, b[:]...)
	want = append(want, 1, 'f', 1, 0xa4, 0x03, 0x01, 3, 1)
	want = append(want, a[:]...)
	want = append(want, 3)
	want = append(want, 1, 'l', 3, 0xff, 0x03, 0x00, 4, '.', '.', '/', 'x')
	got, err := tr.Encode()
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(got, want) {
		t.Fatalf("encoding\n got %x\nwant %x", got, want)
	}
}
