package treetest

import (
	"testing"

	"github.com/sandkeep/sandkeep/internal/id"
	"github.com/sandkeep/sandkeep/internal/tree"
)

func TestBuild(t *testing.T) {
	enc, root, err := Build(map[string]tree.Node{
		"a.txt":     {Type: tree.File, Mode: 0o644},
		"d/e/f.txt": {Type: tree.File, Mode: 0o644},
		"d/link":    {Type: tree.Symlink, Mode: 0o777, Target: "e/f.txt"},
		"empty":     {Type: tree.Dir},
	})
	if err != nil {
		t.Fatal(err)
	}
	// d/e, then d and empty, then the root: every subtree before its parent.
	if len(enc) != 4 || id.Sum(enc[len(enc)-1]) != root {
		t.Fatalf("%d trees, last is not the root", len(enc))
	}
	seen := map[id.ID]bool{}
	for _, b := range enc {
		tr, err := tree.Decode(b)
		if err != nil {
			t.Fatal(err)
		}
		for _, n := range tr.Nodes {
			if n.Type == tree.Dir && !seen[n.Subtree] {
				t.Fatalf("subtree %s named before it was built", n.Name)
			}
		}
		seen[id.Sum(b)] = true
	}
	rt, _ := tree.Decode(enc[len(enc)-1])
	if len(rt.Nodes) != 3 || rt.Nodes[0].Name != "a.txt" || rt.Nodes[1].Name != "d" || rt.Nodes[2].Name != "empty" {
		t.Fatalf("root %+v", rt.Nodes)
	}
	if _, _, err := Build(map[string]tree.Node{"../x": {Type: tree.File}}); err == nil {
		t.Fatal("a hostile path was accepted")
	}
}
