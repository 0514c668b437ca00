//go:build linux

package snapshot_test

import (
	"bytes"
	"fmt"
	"io/fs"
	"math/rand/v2"
	"os"
	"path"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/sandkeep/sandkeep/internal/ignore"
	"github.com/sandkeep/sandkeep/internal/snapshot"
)

// workload makes random trees and random changes to them, and tells which
// paths each change touched, as the watcher would report them (without the
// parents it adds: the snapshot lists the parent of every dirty path).
type workload struct {
	t     testing.TB
	ws    string
	rng   *rand.Rand
	clock time.Time // mtimes given to written files: distinct, in the past
	seq   int
}

func newWorkload(t testing.TB, ws string, seed uint64) *workload {
	return &workload{t: t, ws: ws, rng: rand.New(rand.NewPCG(seed, seed*0x9e3779b97f4a7c15+1)), clock: time.Unix(1_600_000_000, 0)}
}

func (w *workload) abs(rel string) string { return filepath.Join(w.ws, filepath.FromSlash(rel)) }

func (w *workload) name(prefix string) string {
	w.seq++
	names := []string{"a", "b", "src", "lib", "x.go", "README", "data.bin", "z", "é", "sub dir"}
	return fmt.Sprintf("%s%s-%d", prefix, names[w.rng.IntN(len(names))], w.seq)
}

// writeFile writes random content and gives the file a fresh mtime in the
// past: never racy, and never the mtime it had.
func (w *workload) writeFile(rel string) {
	size := w.rng.IntN(6000)
	if w.rng.IntN(10) == 0 {
		size = 0
	}
	must(w.t, os.WriteFile(w.abs(rel), randBytes(w.rng.Uint64(), size), 0o644))
	w.clock = w.clock.Add(time.Second + time.Duration(w.rng.IntN(1000)))
	must(w.t, os.Chtimes(w.abs(rel), w.clock, w.clock))
}

// entries lists the workspace: directories (the root as "") and the rest.
func (w *workload) entries() (dirs, files, links []string) {
	dirs = []string{""}
	err := filepath.WalkDir(w.ws, func(p string, d fs.DirEntry, err error) error {
		if err != nil || p == w.ws {
			return err
		}
		rel, _ := filepath.Rel(w.ws, p)
		rel = filepath.ToSlash(rel)
		switch {
		case d.IsDir():
			dirs = append(dirs, rel)
		case d.Type()&fs.ModeSymlink != 0:
			links = append(links, rel)
		case d.Type().IsRegular():
			if rel != ignore.FileName {
				files = append(files, rel)
			}
		}
		return nil
	})
	must(w.t, err)
	return dirs, files, links
}

func (w *workload) pick(s []string) string { return s[w.rng.IntN(len(s))] }

// build makes a random tree of about n files.
func (w *workload) build(n int) {
	must(w.t, os.WriteFile(w.abs(ignore.FileName), []byte("*.log\nbuild/\n"), 0o644))
	must(w.t, os.Chtimes(w.abs(ignore.FileName), w.clock, w.clock))
	for range n {
		dirs, _, _ := w.entries()
		d := w.pick(dirs)
		switch w.rng.IntN(6) {
		case 0:
			must(w.t, os.Mkdir(w.abs(path.Join(d, w.name("d"))), 0o755))
		case 1:
			must(w.t, os.Symlink(w.name("../t"), w.abs(path.Join(d, w.name("l")))))
		default:
			w.writeFile(path.Join(d, w.name("f")))
		}
	}
}

// change applies one random operation and returns the paths it touched.
func (w *workload) change() (desc string, touched []string) {
	dirs, files, links := w.entries()
	sub := dirs[1:]
	for {
		switch op := w.rng.IntN(14); {
		case op == 0: // create
			p := path.Join(w.pick(dirs), w.name("f"))
			w.writeFile(p)
			return "create " + p, []string{p}
		case op == 1 && len(files) > 0: // modify
			p := w.pick(files)
			w.writeFile(p)
			return "modify " + p, []string{p}
		case op == 2 && len(files) > 0: // delete
			p := w.pick(files)
			must(w.t, os.Remove(w.abs(p)))
			return "delete " + p, []string{p}
		case op == 3 && len(files) > 0: // rename a file, maybe over another
			a := w.pick(files)
			b := path.Join(w.pick(dirs), w.name("r"))
			if w.rng.IntN(3) == 0 {
				b = w.pick(files)
			}
			if a == b {
				continue
			}
			must(w.t, os.Rename(w.abs(a), w.abs(b)))
			return "rename " + a + " " + b, []string{a, b}
		case op == 4: // mkdir -p, with a file at the bottom
			p := w.pick(dirs)
			touched = nil
			for range 1 + w.rng.IntN(4) {
				p = path.Join(p, w.name("m"))
				touched = append(touched, p)
			}
			must(w.t, os.MkdirAll(w.abs(p), 0o755))
			f := path.Join(p, w.name("f"))
			w.writeFile(f)
			return "mkdir -p " + p, append(touched, f)
		case op == 5 && len(sub) > 0: // rm -rf
			p := w.pick(sub)
			must(w.t, os.RemoveAll(w.abs(p)))
			return "rm -rf " + p, []string{p}
		case op == 6 && len(sub) > 0: // rename a directory
			a := w.pick(sub)
			b := path.Join(w.pick(dirs), w.name("R"))
			if b == a || strings.HasPrefix(b, a+"/") {
				continue
			}
			must(w.t, os.Rename(w.abs(a), w.abs(b)))
			return "rename dir " + a + " " + b, []string{a, b}
		case op == 7 && len(files)+len(sub) > 0: // chmod
			p := w.pick(append(slices.Clone(files), sub...))
			fi, err := os.Lstat(w.abs(p))
			must(w.t, err)
			mode := fi.Mode().Perm() ^ 0o010
			must(w.t, os.Chmod(w.abs(p), mode))
			return "chmod " + p, []string{p}
		case op == 8 && len(links) > 0: // retarget a symlink
			p := w.pick(links)
			must(w.t, os.Remove(w.abs(p)))
			must(w.t, os.Symlink(w.name("elsewhere/"), w.abs(p)))
			return "retarget " + p, []string{p}
		case op == 9: // new symlink
			p := path.Join(w.pick(dirs), w.name("l"))
			must(w.t, os.Symlink(w.name("t"), w.abs(p)))
			return "symlink " + p, []string{p}
		case op == 10: // an ignored file
			p := path.Join(w.pick(dirs), w.name("i")+".log")
			w.writeFile(p)
			return "create ignored " + p, []string{p}
		case op == 11 && len(sub) > 0: // a directory's mtime only
			p := w.pick(sub)
			w.clock = w.clock.Add(time.Second)
			must(w.t, os.Chtimes(w.abs(p), w.clock, w.clock))
			return "touch dir " + p, []string{p}
		case op == 12 && len(files) > 0: // a file replaced by a directory
			p := w.pick(files)
			must(w.t, os.Remove(w.abs(p)))
			must(w.t, os.Mkdir(w.abs(p), 0o755))
			f := path.Join(p, w.name("f"))
			w.writeFile(f)
			return "file to dir " + p, []string{p, f}
		case op == 13 && len(sub) > 0: // a directory replaced by a file
			p := w.pick(sub)
			must(w.t, os.RemoveAll(w.abs(p)))
			w.writeFile(p)
			return "dir to file " + p, []string{p}
		}
	}
}

// leaves drops the paths that are directories above other paths of the
// same change: "mkdir -p a/b/c && touch a/b/c/f" reported as a/b/c/f only.
// That breaks the watcher's promise (the creation of a is a change of its
// parent's listing, reported neither as a nor as its parent); the snapshot
// still sees it, because every directory it visits is stat'ed and listed if
// its ctime moved.
func leaves(paths []string) []string {
	var out []string
	for _, p := range paths {
		if !slices.ContainsFunc(paths, func(q string) bool { return strings.HasPrefix(q, p+"/") }) {
			out = append(out, p)
		}
	}
	return out
}

func parents(paths []string) []string {
	var out []string
	for _, p := range paths {
		out = append(out, parentOf(p))
	}
	return out
}

func parentOf(p string) string {
	if i := strings.LastIndexByte(p, '/'); i >= 0 {
		return p[:i]
	}
	return "."
}

// checkIncremental runs steps rounds of random changes on a random tree.
// Four chains of Runs follow the workspace: incremental Runs told the
// exact touched paths, incremental Runs told only their parent
// directories, incremental Runs told only the deepest touched paths (see
// leaves), and full Runs. After every round all three have the same
// root, the stored trees match the disk, and a full Run with an
// incremental chain's index finds the same root without reading anything
// and builds the same index.
func checkIncremental(t *testing.T, seed uint64, files, steps, perStep int) {
	ws := t.TempDir()
	w := newWorkload(t, ws, seed)
	w.build(files)
	m, err := ignore.Load(ws)
	must(t, err)
	opts := snapshot.Options{Ignore: m}
	f := newFake()
	res := run(t, ws, f, nil, opts)
	exact, parent, deep, full := res.Index, res.Index, res.Index, res.Index
	for step := range steps {
		var touched, deepest, descs []string
		for range 1 + w.rng.IntN(perStep) {
			d, p := w.change()
			descs = append(descs, d)
			touched = append(touched, p...)
			deepest = append(deepest, leaves(p)...)
		}
		if w.rng.IntN(4) == 0 { // noise: paths that do not exist
			touched = append(touched, "no/such/dir/file", w.name("gone"))
		}
		ctx := fmt.Sprintf("seed %d step %d: %s", seed, step, strings.Join(descs, "; "))

		run := func(prev *snapshot.Index, opts snapshot.Options) snapshot.Result {
			f.reset()
			res := run(t, ws, f, prev, opts)
			f.check(t)
			return res
		}
		fres := run(full, opts)
		full = fres.Index
		eo, po, do := opts, opts, opts
		eo.Dirty, po.Dirty, do.Dirty = touched, parents(touched), deepest
		eres := run(exact, eo)
		pres := run(parent, po)
		dres := run(deep, do)
		deep = dres.Index
		exact, parent = eres.Index, pres.Index
		for _, c := range []struct {
			name string
			res  snapshot.Result
		}{{"exact paths", eres}, {"parent directories", pres}, {"deepest paths only", dres}} {
			if c.res.Root != fres.Root {
				t.Errorf("%s: incremental Run (%s) root %s, full Run %s; dirty %q", ctx, c.name, c.res.Root.Short(), fres.Root.Short(), touched)
				verify(t, f, c.res.Root, ws, absentSet(rootIgnored(ws)...))
				t.FailNow()
			}
			st, fst := c.res.Stats, fres.Stats
			if st.Files != fst.Files || st.Bytes != fst.Bytes || st.Dirs != fst.Dirs || st.Symlinks != fst.Symlinks {
				t.Errorf("%s: %s: totals %d files %d bytes %d dirs %d links, full Run %d %d %d %d", ctx, c.name,
					st.Files, st.Bytes, st.Dirs, st.Symlinks, fst.Files, fst.Bytes, fst.Dirs, fst.Symlinks)
			}
			if !snapshot.IndexIsComplete(c.res.Index) {
				t.Fatalf("%s: %s: index incomplete", ctx, c.name)
			}
			check := run(c.res.Index, opts)
			if check.Root != fres.Root || check.Stats.BytesRead != 0 {
				t.Fatalf("%s: %s: a full Run with its index: same root %v, %d bytes read", ctx, c.name, check.Root == fres.Root, check.Stats.BytesRead)
			}
			if !bytes.Equal(snapshot.IndexBytes(check.Index), snapshot.IndexBytes(c.res.Index)) {
				t.Fatalf("%s: %s: the index differs from a full Run's", ctx, c.name)
			}
		}
		if !bytes.Equal(snapshot.IndexBytes(full), snapshot.IndexBytes(exact)) {
			t.Fatalf("%s: the full chain's index differs from the incremental one's", ctx)
		}
		verify(t, f, eres.Root, ws, absentSet(rootIgnored(ws)...))
	}
}

// rootIgnored lists what the workload's ignore rules leave out.
func rootIgnored(ws string) []string {
	var out []string
	filepath.WalkDir(ws, func(p string, d fs.DirEntry, err error) error {
		if err != nil || p == ws {
			return err
		}
		rel, _ := filepath.Rel(ws, p)
		if strings.HasSuffix(rel, ".log") || (d.IsDir() && d.Name() == "build") {
			out = append(out, filepath.ToSlash(rel))
		}
		return nil
	})
	return out
}

func TestIncrementalMatchesFull(t *testing.T) {
	cases := []struct {
		name                  string
		files, steps, perStep int
		seeds                 uint64
		firstSeed             uint64
	}{
		{name: "one change per round", files: 60, steps: 20, perStep: 1, seeds: 4, firstSeed: 1},
		{name: "several changes per round", files: 120, steps: 10, perStep: 6, seeds: 4, firstSeed: 100},
		{name: "tiny tree, many rounds", files: 8, steps: 30, perStep: 2, seeds: 3, firstSeed: 200},
	}
	for _, c := range cases {
		for seed := c.firstSeed; seed < c.firstSeed+c.seeds; seed++ {
			t.Run(fmt.Sprintf("%s/seed=%d", c.name, seed), func(t *testing.T) {
				t.Parallel()
				checkIncremental(t, seed, c.files, c.steps, c.perStep)
			})
		}
	}
}

// FuzzIncremental explores more seeds and shapes (go test -fuzz
// FuzzIncremental); plain go test runs the seed corpus. Sizes are bounded.
func FuzzIncremental(f *testing.F) {
	f.Add(uint64(7), uint8(30), uint8(8), uint8(3))
	f.Add(uint64(8), uint8(5), uint8(20), uint8(1))
	f.Fuzz(func(t *testing.T, seed uint64, files, steps, perStep uint8) {
		checkIncremental(t, seed, int(files%100)+1, int(steps%20)+1, int(perStep%5)+1)
	})
}

// What an incremental Run looks at and reads, and the changes it sees
// although nobody reported them.
func TestIncrementalVisits(t *testing.T) {
	cases := []struct {
		name   string
		change func(w *workload) (dirty []string)
		// listed is the number of files the Run must find unchanged by
		// stat (so: the files of the directories it lists); -1: all.
		listed int
		read   int64 // bytes it must read
	}{
		{
			name:   "no change, empty Dirty: nothing listed",
			change: func(w *workload) []string { return []string{} },
		},
		{
			name: "one file changed: its directory listed, the file read",
			change: func(w *workload) []string {
				must(w.t, os.WriteFile(w.abs("a/b/f1"), []byte("new content"), 0o644))
				return []string{"a/b/f1"}
			},
			listed: 4, // a/b's other files
			read:   11,
		},
		{
			name: "directory renamed: listed all the way down, nothing read",
			change: func(w *workload) []string {
				must(w.t, os.Rename(w.abs("a"), w.abs("renamed")))
				return []string{"a", "renamed"}
			},
			listed: 1 + 3*5, // the root's file and renamed's: stat'ed against a's, not read
		},
		{
			name: "unreported new entry in a directory on the way",
			change: func(w *workload) []string {
				w.writeFile("a/b/f1")
				w.writeFile("a/unreported")
				return []string{"a/b/f1"}
			},
			listed: -1,
		},
		{
			name: "unreported new entry in a sibling of a listed directory",
			change: func(w *workload) []string {
				w.writeFile("a/new")
				w.writeFile("a/c/unreported")
				return []string{"a/new"}
			},
			listed: -1,
		},
		{
			name: "new directory reported by its deepest file only",
			change: func(w *workload) []string {
				must(w.t, os.MkdirAll(w.abs("a/c/x/y"), 0o755))
				w.writeFile("a/c/x/y/f")
				return []string{"a/c/x/y/f"}
			},
			listed: -1,
		},
		{
			name:   "an invalid Dirty path makes a full scan",
			change: func(w *workload) []string { return []string{"../outside"} },
			listed: 1 + 5 + 5 + 5 + 5, // every file
		},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			t.Parallel()
			ws := t.TempDir()
			w := newWorkload(t, ws, 1)
			for _, d := range []string{"a/b", "a/c", "a/c/d", "z"} {
				must(t, os.MkdirAll(w.abs(d), 0o755))
				for i := range 5 {
					w.writeFile(fmt.Sprintf("%s/f%d", d, i))
				}
			}
			w.writeFile("top")
			f := newFake()
			prev := run(t, ws, f, nil, snapshot.Options{}).Index
			opts := snapshot.Options{Dirty: c.change(w)}
			f.reset()
			res := run(t, ws, f, prev, opts)
			f.check(t)
			full := run(t, ws, f, prev, snapshot.Options{})
			if res.Root != full.Root {
				t.Fatalf("incremental root %s, full %s", res.Root.Short(), full.Root.Short())
			}
			verify(t, f, res.Root, ws, nil)
			listed := int64(c.listed)
			if c.listed < 0 {
				listed = full.Stats.FilesUnchanged
			}
			if res.Stats.FilesUnchanged > listed || (c.listed >= 0 && res.Stats.FilesUnchanged != listed) {
				t.Errorf("%d files listed unchanged, want %d", res.Stats.FilesUnchanged, listed)
			}
			if c.read >= 0 && c.listed >= 0 && res.Stats.BytesRead != c.read {
				t.Errorf("%d bytes read, want %d", res.Stats.BytesRead, c.read)
			}
			if res.Files != full.Files || res.Bytes != full.Bytes {
				t.Errorf("totals %d files %d bytes, full Run %d %d", res.Files, res.Bytes, full.Files, full.Bytes)
			}
		})
	}
}

// Restore writes each file, sets its original mtime and records it at once
// (so its ctime is recent): the first scan after a restore trusts those
// records and reads nothing. A write just after the record changes the
// mtime, so it is still seen, even at the same size.
func TestRestoredFilesAreTrusted(t *testing.T) {
	ws := t.TempDir()
	w := newWorkload(t, ws, 3)
	for i := range 30 {
		must(t, os.MkdirAll(w.abs(fmt.Sprintf("d%d", i%3)), 0o755))
		w.writeFile(fmt.Sprintf("d%d/f%d", i%3, i))
	}
	f := newFake()
	res := run(t, ws, f, nil, snapshot.Options{})

	// "Restore" into a new workspace: write, set the mtime, record.
	ws2 := t.TempDir()
	seed := snapshot.NewIndex()
	var restore func(tid [32]byte, rel string)
	restore = func(tid [32]byte, rel string) {
		for _, n := range f.tree(t, tid).Nodes {
			r := path.Join(rel, n.Name)
			p := filepath.Join(ws2, filepath.FromSlash(r))
			switch n.Type {
			case 2: // directory
				must(t, os.MkdirAll(p, 0o755))
				restore(n.Subtree, r)
			case 1: // file
				must(t, os.WriteFile(p, f.content(t, &n), os.FileMode(n.Mode)))
				mt := time.Unix(0, n.MtimeNs)
				must(t, os.Chtimes(p, mt, mt))
				fi, err := os.Lstat(p)
				must(t, err)
				seed.RecordFile(r, fi, n.Chunks)
			}
		}
	}
	restore(res.Root, "")
	if seed.Len() != int(res.Files) {
		t.Fatalf("recorded %d files of %d", seed.Len(), res.Files)
	}
	// Written right after its record: same size, new content.
	target := "d1/f4"
	old, err := os.ReadFile(filepath.Join(ws2, target))
	must(t, err)
	changed := bytes.Clone(old)
	changed[0] ^= 0xff
	must(t, os.WriteFile(filepath.Join(ws2, target), changed, 0o644))

	f.reset()
	res2 := run(t, ws2, f, seed, snapshot.Options{})
	f.check(t)
	if res2.Stats.BytesRead != int64(len(changed)) || res2.Stats.FilesUnchanged != res.Files-1 {
		t.Errorf("first scan after the restore read %d bytes (want just the changed file's %d), %d of %d files unchanged",
			res2.Stats.BytesRead, len(changed), res2.Stats.FilesUnchanged, res.Files-1)
	}
	verify(t, f, res2.Root, ws2, nil)
}
