// Package treetest builds Merkle trees from flat path maps for tests: the
// one tree fixture builder of the test suites.
package treetest

import (
	"fmt"
	"path"
	"sort"
	"strings"

	"github.com/sandkeep/sandkeep/internal/id"
	"github.com/sandkeep/sandkeep/internal/tree"
)

// DirMtimeNs is the mtime Build gives directories.
const DirMtimeNs = 1_600_000_000_000_000_000

// Build encodes the trees of a workspace: entries maps slash paths to their
// nodes (files and symlinks; a node of Type Dir names an empty directory,
// its Subtree filled in). Directories the paths imply are made with mode
// 0755 and DirMtimeNs. It returns the encoded trees, deepest first (every
// subtree before the tree naming it: the order PutTrees wants), and the
// root's id.
func Build(entries map[string]tree.Node) (encoded [][]byte, root id.ID, err error) {
	nodes := map[string]tree.Node{}
	dirs := map[string]map[string]bool{"": {}}
	var addDir func(d string)
	addDir = func(d string) {
		if _, ok := dirs[d]; ok {
			return
		}
		dirs[d] = map[string]bool{}
		parent := parentOf(d)
		addDir(parent)
		dirs[parent][d] = true
	}
	for p, n := range entries {
		if _, err := tree.CleanPath(p); err != nil {
			return nil, id.ID{}, err
		}
		addDir(parentOf(p))
		if n.Type == tree.Dir {
			addDir(p)
			continue
		}
		dirs[parentOf(p)][p] = true
		n.Name = path.Base(p)
		nodes[p] = n
	}
	order := make([]string, 0, len(dirs))
	for d := range dirs {
		order = append(order, d)
	}
	sort.Slice(order, func(i, j int) bool {
		di, dj := strings.Count(order[i], "/"), strings.Count(order[j], "/")
		if order[i] == "" || order[j] == "" {
			return order[j] == "" && order[i] != ""
		}
		return di > dj || (di == dj && order[i] < order[j])
	})
	for _, d := range order {
		var t tree.Tree
		for child := range dirs[d] {
			n, ok := nodes[child]
			if !ok {
				return nil, id.ID{}, fmt.Errorf("treetest: directory %q not built before %q", child, d)
			}
			t.Nodes = append(t.Nodes, n)
		}
		sort.Slice(t.Nodes, func(i, j int) bool { return t.Nodes[i].Name < t.Nodes[j].Name })
		b, err := t.Encode()
		if err != nil {
			return nil, id.ID{}, err
		}
		encoded = append(encoded, b)
		if d == "" {
			root = id.Sum(b)
			continue
		}
		nodes[d] = tree.Node{Name: path.Base(d), Type: tree.Dir, Mode: 0o755, MtimeNs: DirMtimeNs, Subtree: id.Sum(b)}
	}
	return encoded, root, nil
}

func parentOf(p string) string {
	if d := path.Dir(p); d != "." {
		return d
	}
	return ""
}
