package repo

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"path"
	"slices"
	"strings"
	"sync"
	"testing"

	"github.com/sandkeep/sandkeep/internal/blobstore"
	"github.com/sandkeep/sandkeep/internal/blobstore/blobstoretest"
	"github.com/sandkeep/sandkeep/internal/id"
	"github.com/sandkeep/sandkeep/internal/metastore"
	"github.com/sandkeep/sandkeep/internal/pack"
	"github.com/sandkeep/sandkeep/internal/testenv"
	"github.com/sandkeep/sandkeep/internal/tree"
	"github.com/sandkeep/sandkeep/internal/tree/treetest"
)

// browseFixture is a repo on SQLite and a local directory with one project,
// whose versions are built from maps of path -> content.
type browseFixture struct {
	t     testing.TB
	ctx   context.Context
	r     *Repo
	pid   string
	store blobstore.Backend
	// chunkSize splits file contents into chunks of this size.
	chunkSize int
}

// bfEntry is one workspace entry of a fixture version: a file (content),
// a symlink (target, when link is set) or an empty directory (dir).
type bfEntry struct {
	content []byte
	link    string
	dir     bool
	mode    uint32
}

func newBrowseFixture(t testing.TB) *browseFixture {
	t.Helper()
	ctx := context.Background()
	meta, st := testenv.Local(t)
	p, err := meta.CreateProject(ctx, "browse")
	if err != nil {
		t.Fatal(err)
	}
	return &browseFixture{t: t, ctx: ctx, r: New(meta, st, Options{}), pid: p.ID, store: st, chunkSize: 1000}
}

func bfFile(s string) bfEntry { return bfEntry{content: []byte(s), mode: 0o644} }

// commit stores the chunks and trees of files and commits them on the head.
func (f *browseFixture) commit(files map[string]bfEntry) metastore.Version {
	f.t.Helper()
	root := f.storeTree(files)
	p, err := f.r.Meta().GetProject(f.ctx, f.pid)
	if err != nil {
		f.t.Fatal(err)
	}
	v, err := f.r.Commit(f.ctx, f.pid, CommitRequest{Parent: p.Head, Root: root, Kind: metastore.KindSync})
	if err != nil {
		f.t.Fatalf("commit: %v", err)
	}
	return v
}

// mtimeOf gives an entry an mtime that depends on its content only, so an
// unchanged file keeps its node across versions.
func mtimeOf(e bfEntry) int64 {
	h := id.Sum(append(append([]byte(e.link), e.content...), byte(e.mode)))
	return 1_700_000_000_000_000_000 + int64(h[0])<<20 + int64(h[1])<<12 + int64(h[2])
}

func (f *browseFixture) storeTree(files map[string]bfEntry) id.ID {
	f.t.Helper()
	// Data: one pack of every chunk the project lacks.
	w := pack.NewWriter()
	added := map[id.ID]bool{}
	entries := map[string]tree.Node{}
	for p, e := range files {
		if e.dir {
			entries[p] = tree.Node{Type: tree.Dir}
			continue
		}
		n := tree.Node{Mode: e.mode, MtimeNs: mtimeOf(e)}
		if e.link != "" {
			n.Type, n.Target = tree.Symlink, e.link
		} else {
			n.Type, n.Size = tree.File, int64(len(e.content))
			for off := 0; off < len(e.content); off += f.chunkSize {
				c := e.content[off:min(off+f.chunkSize, len(e.content))]
				cid := id.Sum(c)
				n.Chunks = append(n.Chunks, tree.ChunkRef{ID: cid, Size: uint32(len(c))})
				if !added[cid] {
					added[cid] = true
					if _, err := w.Add(pack.Data, cid, c); err != nil {
						f.t.Fatal(err)
					}
				}
			}
		}
		entries[p] = n
	}
	if w.Len() > 0 {
		data, packID, _, err := w.Finish()
		if err != nil {
			f.t.Fatal(err)
		}
		if err := f.store.Put(f.ctx, PackKey(f.pid, packID), bytes.NewReader(data), int64(len(data))); err != nil {
			f.t.Fatal(err)
		}
		if _, err := f.r.CompletePacks(f.ctx, f.pid, []PackRef{{ID: packID, Size: int64(len(data))}}); err != nil {
			f.t.Fatal(err)
		}
	}
	encoded, rootID, err := treetest.Build(entries)
	if err != nil {
		f.t.Fatal(err)
	}
	if _, err := f.r.PutTrees(f.ctx, f.pid, encoded); err != nil {
		f.t.Fatal(err)
	}
	return rootID
}

// bfPaths lists every path of files, with the directories they imply, in
// tree order.
func bfPaths(files map[string]bfEntry) []string {
	set := map[string]bool{}
	for p := range files {
		for q := p; q != "."; q = path.Dir(q) {
			set[q] = true
		}
	}
	out := make([]string, 0, len(set))
	for p := range set {
		out = append(out, p)
	}
	slices.SortFunc(out, ComparePaths)
	return out
}

func TestComparePaths(t *testing.T) {
	sorted := []string{"a", "a/b", "a/b/c", "a/x", "a-b", "a.txt", "b", "b/a", "ba"}
	for i := range sorted {
		for j := range sorted {
			got := ComparePaths(sorted[i], sorted[j])
			want := 0
			if i < j {
				want = -1
			} else if i > j {
				want = 1
			}
			if got != want {
				t.Errorf("ComparePaths(%q, %q) = %d, want %d", sorted[i], sorted[j], got, want)
			}
		}
	}
}

func TestWalkPagesInTreeOrder(t *testing.T) {
	f := newBrowseFixture(t)
	files := map[string]bfEntry{
		"a-b":         bfFile("1"),
		"a.txt":       bfFile("2"),
		"a/x":         bfFile("3"),
		"a/y/z":       bfFile("4"),
		"a/y/zz":      bfFile("5"),
		"b":           {link: "a.txt", mode: 0o777},
		"c/empty":     {dir: true},
		"c/d/e/f/g":   bfFile("6"),
		"日本/ファイル.txt": bfFile("7"),
	}
	v := f.commit(files)
	want := bfPaths(files)
	all := func(dir, after string) []string {
		var got []string
		if err := f.r.Walk(f.ctx, f.pid, v.Root, dir, after, func(p string, _ *tree.Node) error {
			got = append(got, p)
			return nil
		}); err != nil {
			t.Fatal(err)
		}
		return got
	}
	if got := all("", ""); !slices.Equal(got, want) {
		t.Fatalf("walk = %q\nwant %q", got, want)
	}
	// Resuming after any path (present or not) gives exactly the rest.
	afters := append(slices.Clone(want), "a/m", "a/y/zzz", "0", "zzz", "a/y/z/q", "c/d/e")
	for _, after := range afters {
		var rest []string
		for _, p := range want {
			if ComparePaths(p, after) > 0 {
				rest = append(rest, p)
			}
		}
		if got := all("", after); !slices.Equal(got, rest) {
			t.Errorf("walk after %q = %q\nwant %q", after, got, rest)
		}
	}
	// Under a directory, with and without a resume point.
	if got := all("a", ""); !slices.Equal(got, []string{"a/x", "a/y", "a/y/z", "a/y/zz"}) {
		t.Errorf("walk a = %q", got)
	}
	if got := all("a", "a/y/z"); !slices.Equal(got, []string{"a/y/zz"}) {
		t.Errorf("walk a after a/y/z = %q", got)
	}
	if got := all("a", "a-b"); len(got) != 0 {
		t.Errorf("walk a after a-b = %q, want nothing", got)
	}
	if got := all("a", "0"); len(got) != 4 {
		t.Errorf("walk a after 0 = %q, want all 4", got)
	}
	if got := all("a.txt", ""); !slices.Equal(got, []string{"a.txt"}) {
		t.Errorf("walk of a file = %q", got)
	}
	if err := f.r.Walk(f.ctx, f.pid, v.Root, "nope", "", func(string, *tree.Node) error { return nil }); !errors.Is(err, metastore.ErrNotFound) {
		t.Errorf("walk of a missing dir: %v", err)
	}
	// ErrStop ends it quietly.
	n := 0
	if err := f.r.Walk(f.ctx, f.pid, v.Root, "", "", func(string, *tree.Node) error {
		n++
		if n == 3 {
			return ErrStop
		}
		return nil
	}); err != nil || n != 3 {
		t.Errorf("stop: n=%d err=%v", n, err)
	}
}

func TestLookup(t *testing.T) {
	f := newBrowseFixture(t)
	v := f.commit(map[string]bfEntry{"a/b/c.txt": bfFile("hello"), "l": {link: "a", mode: 0o777}})
	n, err := f.r.Lookup(f.ctx, f.pid, v.Root, "a/b/c.txt")
	if err != nil || n.Type != tree.File || n.Size != 5 {
		t.Fatalf("lookup = %+v, %v", n, err)
	}
	for _, p := range []string{"a/b/x", "l/b", "a/b/c.txt/d", "x"} {
		if _, err := f.r.Lookup(f.ctx, f.pid, v.Root, p); !errors.Is(err, metastore.ErrNotFound) {
			t.Errorf("lookup %q: %v, want not found", p, err)
		}
	}
	for _, p := range []string{"", "/a", "a/../a", "a//b", "a/./b", "a\x00b", "a/"} {
		if _, err := f.r.Lookup(f.ctx, f.pid, v.Root, p); !errors.Is(err, tree.ErrInvalid) {
			t.Errorf("lookup %q: %v, want invalid", p, err)
		}
	}
}

type bfChange struct {
	path     string
	old, new string // "" absent, else type:size
}

func describe(n *tree.Node) string {
	if n == nil {
		return ""
	}
	return fmt.Sprintf("%s:%d", n.Type, n.Size)
}

// expectedDiff computes the diff of two fixture versions from their maps.
func expectedDiff(a, b map[string]bfEntry) []bfChange {
	kind := func(files map[string]bfEntry) map[string]string {
		out := map[string]string{}
		for _, p := range bfPaths(files) {
			e, ok := files[p]
			switch {
			case !ok || e.dir:
				out[p] = "dir:0"
			case e.link != "":
				out[p] = "symlink:0#" + e.link
			default:
				out[p] = fmt.Sprintf("file:%d#%x", len(e.content), id.Sum(e.content))
			}
		}
		return out
	}
	ka, kb := kind(a), kind(b)
	var paths []string
	for p := range ka {
		paths = append(paths, p)
	}
	for p := range kb {
		if _, ok := ka[p]; !ok {
			paths = append(paths, p)
		}
	}
	slices.SortFunc(paths, ComparePaths)
	strip := func(s string) string { return strings.SplitN(s, "#", 2)[0] }
	var out []bfChange
	for _, p := range paths {
		oa, ob := ka[p], kb[p]
		if oa == ob || (oa == "dir:0" && ob == "dir:0") {
			continue
		}
		out = append(out, bfChange{p, strip(oa), strip(ob)})
	}
	return out
}

func TestDiffFromMatchesAndResumes(t *testing.T) {
	f := newBrowseFixture(t)
	a := map[string]bfEntry{
		"same/one":      bfFile("1"),
		"same/deep/two": bfFile("2"),
		"mod.txt":       bfFile("old"),
		"gone.txt":      bfFile("bye"),
		"gonedir/x":     bfFile("x"),
		"gonedir/y/z":   bfFile("z"),
		"typechange":    bfFile("was a file"),
		"t2/inner":      bfFile("dir becomes file"),
		"link":          {link: "a", mode: 0o777},
	}
	b := map[string]bfEntry{
		"same/one":        bfFile("1"),
		"same/deep/two":   bfFile("2"),
		"mod.txt":         bfFile("new content"),
		"new/dir/file":    bfFile("new"),
		"typechange/now":  bfFile("a dir"),
		"t2":              bfFile("now a file"),
		"link":            {link: "b", mode: 0o777},
		"emptydir/nested": {dir: true},
	}
	va, vb := f.commit(a), f.commit(b)
	collect := func(from, to id.ID, after string, limit int) []bfChange {
		var got []bfChange
		err := f.r.DiffFrom(f.ctx, f.pid, from, to, after, func(c Change) error {
			got = append(got, bfChange{c.Path, describe(c.Old), describe(c.New)})
			if len(got) == limit {
				return ErrStop
			}
			return nil
		})
		if err != nil {
			t.Fatal(err)
		}
		return got
	}
	want := expectedDiff(a, b)
	if got := collect(va.Root, vb.Root, "", -1); !slices.Equal(got, want) {
		t.Fatalf("diff =\n%v\nwant\n%v", got, want)
	}
	// Paging by any size gives the same sequence.
	for size := 1; size <= len(want); size++ {
		var all []bfChange
		after := ""
		for {
			page := collect(va.Root, vb.Root, after, size)
			all = append(all, page...)
			if len(page) < size {
				break
			}
			after = page[len(page)-1].path
		}
		if !slices.Equal(all, want) {
			t.Fatalf("paged by %d:\n%v\nwant\n%v", size, all, want)
		}
	}
	// Reverse direction and from the empty tree.
	if got, w := collect(vb.Root, va.Root, "", -1), expectedDiff(b, a); !slices.Equal(got, w) {
		t.Fatalf("reverse diff =\n%v\nwant\n%v", got, w)
	}
	if got, w := collect(id.ID{}, va.Root, "", -1), expectedDiff(nil, a); !slices.Equal(got, w) {
		t.Fatalf("diff from nothing =\n%v\nwant\n%v", got, w)
	}
	if got := collect(va.Root, va.Root, "", -1); len(got) != 0 {
		t.Fatalf("diff of a version with itself: %v", got)
	}
}

func TestDiffFromRandomized(t *testing.T) {
	f := newBrowseFixture(t)
	rng := rand.New(rand.NewPCG(7, 7))
	names := []string{"a", "b", "a-b", "a.b", "c", "zz"}
	randPath := func() string {
		depth := 1 + rng.IntN(4)
		parts := make([]string, depth)
		for i := range parts {
			parts[i] = names[rng.IntN(len(names))]
		}
		return strings.Join(parts, "/")
	}
	gen := func(base map[string]bfEntry) map[string]bfEntry {
		out := map[string]bfEntry{}
		for p, e := range base {
			if rng.IntN(5) > 0 {
				out[p] = e
			}
		}
		for range 15 {
			out[randPath()] = bfFile(fmt.Sprint(rng.IntN(4)))
		}
		// Drop entries that would be both a file and a directory.
		for p := range out {
			for q := path.Dir(p); q != "."; q = path.Dir(q) {
				delete(out, q)
			}
		}
		return out
	}
	prev := gen(nil)
	vprev := f.commit(prev)
	for round := range 20 {
		next := gen(prev)
		vnext := f.commit(next)
		var got []bfChange
		if err := f.r.DiffFrom(f.ctx, f.pid, vprev.Root, vnext.Root, "", func(c Change) error {
			got = append(got, bfChange{c.Path, describe(c.Old), describe(c.New)})
			return nil
		}); err != nil {
			t.Fatal(err)
		}
		if want := expectedDiff(prev, next); !slices.Equal(got, want) {
			t.Fatalf("round %d: diff =\n%v\nwant\n%v", round, got, want)
		}
		// The version's project_files bookkeeping agrees with a full walk.
		var files, nbytes int64
		if err := f.r.Walk(f.ctx, f.pid, vnext.Root, "", "", func(_ string, n *tree.Node) error {
			if n.Type == tree.File {
				files++
				nbytes += n.Size
			}
			return nil
		}); err != nil {
			t.Fatal(err)
		}
		if files != vnext.Files || nbytes != vnext.Bytes {
			t.Fatalf("round %d: version says %d files %d bytes, tree has %d, %d", round, vnext.Files, vnext.Bytes, files, nbytes)
		}
		prev, vprev = next, vnext
	}
}

// onlyTrees leaves in the repo's cache just the trees keep and makes
// every store read fail, so any tree a walk needs beyond keep fails it.
func (f *browseFixture) onlyTrees(keep ...id.ID) {
	f.t.Helper()
	c := newTreeCache(64 << 20)
	for _, tid := range keep {
		t, err := f.r.LoadTree(f.ctx, f.pid, tid)
		if err != nil {
			f.t.Fatal(err)
		}
		c.put(f.pid, tid, t, 1)
	}
	f.r.trees = c
	f.r.store = &blobstoretest.Faulty{Backend: f.r.store, OnGet: func(string) error { return errors.New("this test allows no store read") }}
}

// subtree returns the tree id at dir in root.
func (f *browseFixture) subtree(root id.ID, dir string) id.ID {
	f.t.Helper()
	n, err := f.r.Lookup(f.ctx, f.pid, root, dir)
	if err != nil || n.Type != tree.Dir {
		f.t.Fatalf("lookup %s: %v", dir, err)
	}
	return n.Subtree
}

func bigTree() map[string]bfEntry {
	files := map[string]bfEntry{}
	for i := range 600 {
		files[fmt.Sprintf("d%02d/e%02d/f%04d.txt", i%30, i%17, i)] = bfFile(fmt.Sprint(i))
	}
	return files
}

// TestDiffWalksOnlyDifferingSubtrees: a one-file change in a large tree
// needs only the trees on the changed path.
func TestDiffWalksOnlyDifferingSubtrees(t *testing.T) {
	f := newBrowseFixture(t)
	files := bigTree()
	v1 := f.commit(files)
	files["d07/e07/f0007.txt"] = bfFile("changed")
	v2 := f.commit(files)
	f.onlyTrees(v1.Root, v2.Root, f.subtree(v1.Root, "d07"), f.subtree(v2.Root, "d07"), f.subtree(v1.Root, "d07/e07"), f.subtree(v2.Root, "d07/e07"))
	var got []string
	for _, after := range []string{"", "d07", "d07/e07/f0000.txt"} {
		got = got[:0]
		if err := f.r.DiffFrom(f.ctx, f.pid, v1.Root, v2.Root, after, func(c Change) error {
			got = append(got, c.Path)
			return nil
		}); err != nil {
			t.Fatalf("after %q: %v", after, err)
		}
		if !slices.Equal(got, []string{"d07/e07/f0007.txt"}) {
			t.Fatalf("diff after %q = %q", after, got)
		}
	}
}

// TestWalkResumeLoadsOnlyThePath: resuming a listing deep in a large tree
// needs only the trees on the way to the resume point and what follows it.
func TestWalkResumeLoadsOnlyThePath(t *testing.T) {
	f := newBrowseFixture(t)
	v := f.commit(bigTree())
	// The last directory: nothing after it but its own last entries.
	f.onlyTrees(v.Root, f.subtree(v.Root, "d29"), f.subtree(v.Root, "d29/e16"))
	var got []string
	if err := f.r.Walk(f.ctx, f.pid, v.Root, "", "d29/e16/f0000.txt", func(p string, _ *tree.Node) error {
		got = append(got, p)
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	if len(got) == 0 || !strings.HasPrefix(got[0], "d29/e16/f") {
		t.Fatalf("walk = %q", got)
	}
}

type bfRev struct {
	version  int64
	old, new string
}

func (f *browseFixture) history(p string, before int64, maxScan, limit int) ([]bfRev, int64) {
	f.t.Helper()
	var got []bfRev
	next, err := f.r.History(f.ctx, f.pid, p, before, maxScan, func(r Revision) error {
		got = append(got, bfRev{r.Version.Number, describe(r.Old), describe(r.New)})
		if len(got) == limit {
			return ErrStop
		}
		return nil
	})
	if err != nil {
		f.t.Fatal(err)
	}
	return got, next
}

func TestHistory(t *testing.T) {
	f := newBrowseFixture(t)
	files := map[string]bfEntry{"doc/readme.md": bfFile("v1"), "other": bfFile("o")}
	f.commit(files) // 1: created
	files["other"] = bfFile("o2")
	f.commit(files) // 2: unrelated change
	files["doc/readme.md"] = bfFile("v3 longer")
	f.commit(files) // 3: modified
	delete(files, "doc/readme.md")
	files["doc/keep"] = bfFile("k")
	f.commit(files) // 4: deleted
	files["other"] = bfFile("o5")
	f.commit(files) // 5: unrelated
	files["doc/readme.md"] = bfFile("v1")
	f.commit(files) // 6: back
	if _, err := f.r.Rollback(f.ctx, f.pid, 3); err != nil {
		t.Fatal(err)
	} // 7: rollback to 3 — readme differs from 6
	want := []bfRev{{7, "file:2", "file:9"}, {6, "", "file:2"}, {4, "file:9", ""}, {3, "file:2", "file:9"}, {1, "", "file:2"}}
	got, next := f.history("doc/readme.md", 0, 0, -1)
	if !slices.Equal(got, want) || next != 0 {
		t.Fatalf("history = %v (next %d)\nwant %v", got, next, want)
	}
	// Paging by results: every size gives the same sequence.
	for size := 1; size <= len(want); size++ {
		var all []bfRev
		before := int64(0)
		for {
			page, next := f.history("doc/readme.md", before, 0, size)
			all = append(all, page...)
			if next == 0 {
				break
			}
			before = next
		}
		if !slices.Equal(all, want) {
			t.Fatalf("paged by %d: %v", size, all)
		}
	}
	// Bounded scans: the same sequence, however small the bound.
	for scan := 1; scan <= 7; scan++ {
		var all []bfRev
		before := int64(0)
		for range 100 {
			page, next := f.history("doc/readme.md", before, scan, -1)
			all = append(all, page...)
			if next == 0 {
				break
			}
			before = next
		}
		if !slices.Equal(all, want) {
			t.Fatalf("scan bound %d: %v", scan, all)
		}
	}
	// A directory changes whenever something below it does.
	if got, _ := f.history("doc", 0, 0, -1); len(got) != 5 {
		t.Errorf("history of doc = %v", got)
	}
	if got, _ := f.history("nope/never", 0, 0, -1); len(got) != 0 {
		t.Errorf("history of a path that never existed = %v", got)
	}
	// A path below a file.
	if got, _ := f.history("other/x", 0, 0, -1); len(got) != 0 {
		t.Errorf("history below a file = %v", got)
	}
}

// TestHistoryDescendsOnlyAlongThePath: history over many versions of a large
// tree needs only the trees on the path.
func TestHistoryDescendsOnlyAlongThePath(t *testing.T) {
	f := newBrowseFixture(t)
	files := bigTree()
	var keep []id.ID
	var versions []metastore.Version
	for i := range 8 {
		files[fmt.Sprintf("d%02d/e%02d/f%04d.txt", i%30, i%17, i)] = bfFile(fmt.Sprint("change ", i))
		if i%3 == 0 {
			files["d05/e05/target.txt"] = bfFile(fmt.Sprint("target ", i))
		}
		versions = append(versions, f.commit(files))
	}
	for _, v := range versions {
		keep = append(keep, v.Root, f.subtree(v.Root, "d05"), f.subtree(v.Root, "d05/e05"))
	}
	f.onlyTrees(keep...)
	got, _ := f.history("d05/e05/target.txt", 0, 0, -1)
	if len(got) != 3 || got[0].version != 7 || got[2].version != 1 {
		t.Fatalf("history = %v", got)
	}
}

func TestReadFileRanges(t *testing.T) {
	f := newBrowseFixture(t)
	f.chunkSize = 100
	rng := rand.New(rand.NewPCG(1, 2))
	content := make([]byte, 1234)
	for i := range content {
		content[i] = byte(rng.IntN(256))
	}
	v := f.commit(map[string]bfEntry{"f.bin": {content: content, mode: 0o644}, "empty": bfFile("")})
	n, err := f.r.Lookup(f.ctx, f.pid, v.Root, "f.bin")
	if err != nil {
		t.Fatal(err)
	}
	read := func(off, length int64) ([]byte, error) {
		var out []byte
		err := f.r.ReadFile(f.ctx, f.pid, n, off, length, func(b []byte) error {
			out = append(out, b...)
			return nil
		})
		return out, err
	}
	for _, rg := range [][2]int64{{0, 1234}, {0, 0}, {0, 1}, {99, 2}, {100, 100}, {150, 1000}, {1233, 1}, {1234, 0}, {500, 734}} {
		got, err := read(rg[0], rg[1])
		if err != nil {
			t.Fatalf("range %v: %v", rg, err)
		}
		if !bytes.Equal(got, content[rg[0]:rg[0]+rg[1]]) {
			t.Fatalf("range %v: wrong bytes", rg)
		}
	}
	for _, rg := range [][2]int64{{-1, 1}, {0, 1235}, {1235, 0}, {1000, 300}} {
		if _, err := read(rg[0], rg[1]); !errors.Is(err, ErrInvalid) {
			t.Errorf("range %v: %v, want invalid", rg, err)
		}
	}
	e, _ := f.r.Lookup(f.ctx, f.pid, v.Root, "empty")
	if err := f.r.ReadFile(f.ctx, f.pid, e, 0, 0, func([]byte) error { t.Error("called for an empty file"); return nil }); err != nil {
		t.Fatal(err)
	}
}

func TestReadFileStopsAtACorruptChunk(t *testing.T) {
	f := newBrowseFixture(t)
	f.chunkSize = 100
	content := make([]byte, 1000)
	for i := range content {
		content[i] = byte(i * 7)
	}
	v := f.commit(map[string]bfEntry{"f.bin": {content: content, mode: 0o644}})
	n, _ := f.r.Lookup(f.ctx, f.pid, v.Root, "f.bin")
	// Corrupt the 4th chunk where it is stored.
	victim := n.Chunks[3].ID
	locs, err := f.r.Meta().LocateBlobs(f.ctx, f.pid, []id.ID{victim})
	if err != nil {
		t.Fatal(err)
	}
	l := locs[victim]
	key := PackKey(f.pid, l.PackID)
	rc, err := f.store.Get(f.ctx, key, 0, -1)
	if err != nil {
		t.Fatal(err)
	}
	data, _ := io.ReadAll(rc)
	rc.Close()
	data[l.Offset+l.Length/2] ^= 1
	if err := f.store.Put(f.ctx, key, bytes.NewReader(data), int64(len(data))); err != nil {
		t.Fatal(err)
	}
	var got []byte
	err = f.r.ReadFile(f.ctx, f.pid, n, 0, n.Size, func(b []byte) error {
		got = append(got, b...)
		return nil
	})
	if !errors.Is(err, pack.ErrCorrupt) {
		t.Fatalf("read of a corrupt file: %v", err)
	}
	if !bytes.Equal(got, content[:300]) {
		t.Fatalf("got %d bytes before the error, want exactly the 300 good ones", len(got))
	}
}

func TestRollback(t *testing.T) {
	f := newBrowseFixture(t)
	v1 := f.commit(map[string]bfEntry{"a": bfFile("1")})
	f.commit(map[string]bfEntry{"a": bfFile("2"), "b": bfFile("new")})
	rb, err := f.r.Rollback(f.ctx, f.pid, v1.Number)
	if err != nil {
		t.Fatal(err)
	}
	if rb.Number != 3 || rb.Parent != 2 || rb.Root != v1.Root || rb.Kind != metastore.KindRollback || rb.Files != 1 || rb.Bytes != 1 {
		t.Fatalf("rollback version = %+v", rb)
	}
	// project_files follows the new head.
	pf, err := f.r.Meta().ListProjectFiles(f.ctx, f.pid, "", metastore.ListOptions{})
	if err != nil || len(pf) != 1 || pf[0].Path != "a" {
		t.Fatalf("project files after rollback = %+v, %v", pf, err)
	}
	for _, bad := range []int64{0, -1, 99} {
		if _, err := f.r.Rollback(f.ctx, f.pid, bad); err == nil {
			t.Errorf("rollback to %d succeeded", bad)
		}
	}
}

// TestRollbackRacesCommits: rollbacks and commits racing on one project
// never lose each other: every one is a version, and each rollback's root is
// its target's.
func TestRollbackRacesCommits(t *testing.T) {
	f := newBrowseFixture(t)
	v1 := f.commit(map[string]bfEntry{"a": bfFile("base")})
	roots := make([]id.ID, 10)
	for i := range roots {
		roots[i] = f.storeTree(map[string]bfEntry{"a": bfFile(fmt.Sprint("w", i))})
	}
	errc := make(chan error, 20)
	var rollbacks sync.Map
	for i := range 10 {
		go func() {
			v, err := f.r.Rollback(f.ctx, f.pid, v1.Number)
			if err == nil {
				rollbacks.Store(v.Number, true)
			}
			errc <- err
		}()
		go func() {
			// A writer that retries on conflicts, like an agent.
			for {
				p, err := f.r.Meta().GetProject(f.ctx, f.pid)
				if err != nil {
					errc <- err
					return
				}
				_, err = f.r.Commit(f.ctx, f.pid, CommitRequest{Parent: p.Head, Root: roots[i], Kind: metastore.KindSync})
				if errors.Is(err, metastore.ErrConflict) {
					continue
				}
				errc <- err
				return
			}
		}()
	}
	for range 20 {
		if err := <-errc; err != nil {
			t.Fatal(err)
		}
	}
	vs, err := f.r.Meta().ListVersions(f.ctx, f.pid, metastore.ListOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if len(vs) != 21 {
		t.Fatalf("%d versions, want 21", len(vs))
	}
	nrb := 0
	seen := map[id.ID]bool{}
	for _, v := range vs {
		if v.Kind == metastore.KindRollback {
			nrb++
			if v.Root != v1.Root {
				t.Errorf("rollback version %d has root %s", v.Number, v.Root.Short())
			}
			if _, ok := rollbacks.Load(v.Number); !ok {
				t.Errorf("version %d is a rollback nobody made", v.Number)
			}
		} else if v.Number > 1 {
			seen[v.Root] = true
		}
	}
	if nrb != 10 || len(seen) != 10 {
		t.Fatalf("%d rollbacks and %d distinct writes kept, want 10 and 10", nrb, len(seen))
	}
}

// BenchmarkBrowse100k measures, on a 100k-file tree with a cold tree
// cache: resuming a listing deep in the tree, a one-file diff, and a path's
// history over 20 versions (go test -run '^$' -bench Browse100k
// ./internal/repo).
func BenchmarkBrowse100k(b *testing.B) {
	f := newBrowseFixture(b)
	files := map[string]bfEntry{}
	for i := range 100_000 {
		files[fmt.Sprintf("d%02d/e%02d/g%02d/f%06d.txt", i%40, i%23, i%7, i)] = bfFile(fmt.Sprint(i))
	}
	var versions []metastore.Version
	for i := range 20 {
		files[fmt.Sprintf("d%02d/e%02d/g%02d/f%06d.txt", i%40, i%23, i%7, i)] = bfFile(fmt.Sprint("v", i))
		if i%4 == 0 {
			files["d01/e01/target.txt"] = bfFile(fmt.Sprint("t", i))
		}
		versions = append(versions, f.commit(files))
	}
	head := versions[len(versions)-1]
	cold := func() { f.r.trees = newTreeCache(64 << 20) }
	b.Run("files-page-resumed", func(b *testing.B) {
		for b.Loop() {
			cold()
			n := 0
			if err := f.r.Walk(f.ctx, f.pid, head.Root, "", "d20/e10/g03/f050000.txt", func(string, *tree.Node) error {
				if n++; n == 1000 {
					return ErrStop
				}
				return nil
			}); err != nil || n != 1000 {
				b.Fatal(n, err)
			}
		}
	})
	b.Run("diff-one-file", func(b *testing.B) {
		a, c := versions[len(versions)-2], head
		for b.Loop() {
			cold()
			n := 0
			if err := f.r.DiffFrom(f.ctx, f.pid, a.Root, c.Root, "", func(Change) error { n++; return nil }); err != nil || n != 1 {
				b.Fatal(n, err)
			}
		}
	})
	b.Run("history-20-versions", func(b *testing.B) {
		for b.Loop() {
			cold()
			n := 0
			if _, err := f.r.History(f.ctx, f.pid, "d01/e01/target.txt", 0, 0, func(Revision) error { n++; return nil }); err != nil || n != 5 {
				b.Fatal(n, err)
			}
		}
	})
}
