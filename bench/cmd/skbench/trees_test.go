package main

import (
	"context"
	"io/fs"
	"path/filepath"
	"strings"
	"testing"
)

// The generated tree has exactly the files asked for, 10–30 per package
// directory, packages at depth 3–6, and is the same every time.
func TestSyntheticTree(t *testing.T) {
	gen := func() (string, treeInfo) {
		dir := t.TempDir()
		var info treeInfo
		if err := newTreeGen(2000).generate(context.Background(), dir, &info); err != nil {
			t.Fatal(err)
		}
		return dir, info
	}
	dir, info := gen()
	perDir := map[string]int{}
	files, maxDepth := 0, 0
	err := filepath.WalkDir(dir, func(p string, d fs.DirEntry, err error) error {
		if err != nil || d.IsDir() {
			return err
		}
		rel, _ := filepath.Rel(dir, filepath.Dir(p))
		perDir[rel]++
		files++
		maxDepth = max(maxDepth, strings.Count(rel, "/")+1)
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	if files != 2000 {
		t.Fatalf("%d files, want 2000", files)
	}
	if maxDepth > 6 {
		t.Errorf("depth %d, want <= 6", maxDepth)
	}
	small := 0
	for rel, n := range perDir {
		depth := strings.Count(rel, "/") + 1
		if depth >= 3 && n > 30 || depth < 3 && n > 2 {
			t.Errorf("%s (depth %d) holds %d files", rel, depth, n)
		}
		if depth >= 3 && n < 10 {
			small++ // only the last directory may be cut short
		}
	}
	if small > 1 {
		t.Errorf("%d package directories hold fewer than 10 files", small)
	}
	t.Logf("%d files, %d dirs (%d with files), %.1f MB, depth <= %d", files, info.Dirs, len(perDir), float64(info.Bytes)/1e6, maxDepth)
	dir2, info2 := gen()
	m1, err := scan(context.Background(), dir)
	if err != nil {
		t.Fatal(err)
	}
	m2, err := scan(context.Background(), dir2)
	if err != nil {
		t.Fatal(err)
	}
	if info != info2 || len(m1) != len(m2) {
		t.Fatalf("not deterministic: %+v vs %+v", info, info2)
	}
	for p, e := range m1 {
		if m2[p].Hash != e.Hash {
			t.Fatalf("not deterministic: %s differs", p)
		}
	}
}

func TestParseSizes(t *testing.T) {
	got, err := parseSizes("1k, 10k,2500")
	if err != nil || len(got) != 3 || got[0] != 1000 || got[1] != 10000 || got[2] != 2500 {
		t.Fatalf("parseSizes = %v, %v", got, err)
	}
	if sizeLabel(100000) != "100k" || sizeLabel(2500) != "2500" {
		t.Fatal("sizeLabel")
	}
	if _, err := parseSizes("ten"); err == nil {
		t.Fatal("parseSizes(ten) succeeded")
	}
}
