package tree

import (
	"bytes"
	"errors"
	"testing"
)

func FuzzDecode(f *testing.F) {
	good, err := sample().Encode()
	if err != nil {
		f.Fatal(err)
	}
	f.Add(good)
	f.Add([]byte("SKT1\x00"))
	f.Add(rawEncode(&Tree{Nodes: []Node{{Name: "d", Type: Dir, Mode: 0o755, Subtree: cid("d")}}}))
	f.Add(rawEncode(&Tree{Nodes: []Node{{Name: "l", Type: Symlink, Mode: 0o777, Target: "../x"}, file("z", ChunkRef{cid("1"), 1})}}))
	f.Fuzz(func(t *testing.T, b []byte) {
		tr, err := Decode(b)
		if err != nil {
			if !errors.Is(err, ErrInvalid) {
				t.Fatalf("error does not wrap ErrInvalid: %v", err)
			}
			return
		}
		enc, err := tr.Encode()
		if err != nil {
			t.Fatalf("decoded tree does not encode: %v", err)
		}
		if !bytes.Equal(enc, b) {
			t.Fatalf("Encode(Decode(b)) != b:\n b   %x\n enc %x", b, enc)
		}
		for i := range tr.Nodes {
			if n, ok := tr.Find(tr.Nodes[i].Name); !ok || n != &tr.Nodes[i] {
				t.Fatalf("Find(%q) failed", tr.Nodes[i].Name)
			}
		}
	})
}
