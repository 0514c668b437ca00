//go:build linux

package snapshot_test

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io/fs"
	"math/rand/v2"
	"net"
	"os"
	"path"
	"path/filepath"
	"slices"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/sandkeep/sandkeep/internal/chunker"
	"github.com/sandkeep/sandkeep/internal/id"
	"github.com/sandkeep/sandkeep/internal/ignore"
	"github.com/sandkeep/sandkeep/internal/snapshot"
	"github.com/sandkeep/sandkeep/internal/tree"
)

// settle makes the files under ws old enough for the index to trust their
// stat (see racyMarginNs in snapshot.go): it sets their mtimes a second
// back instead of waiting for the clock to pass them.
func settle(t testing.TB, ws string) {
	t.Helper()
	past := time.Now().Add(-time.Second)
	must(t, filepath.WalkDir(ws, func(p string, d fs.DirEntry, err error) error {
		if err != nil || !d.Type().IsRegular() {
			return err
		}
		return os.Chtimes(p, past, past)
	}))
}

func randBytes(seed uint64, n int) []byte {
	b := make([]byte, n)
	var s [32]byte
	s[0], s[1] = byte(seed), byte(seed>>8)
	rand.NewChaCha8(s).Read(b)
	return b
}

func must(t testing.TB, err error) {
	t.Helper()
	if err != nil {
		t.Fatal(err)
	}
}

func write(t testing.TB, ws, rel string, data []byte, mode os.FileMode) {
	t.Helper()
	p := filepath.Join(ws, rel)
	must(t, os.MkdirAll(filepath.Dir(p), 0o755))
	must(t, os.WriteFile(p, data, 0o644))
	must(t, os.Chmod(p, mode))
}

func run(t testing.TB, ws string, r snapshot.Remote, prev *snapshot.Index, opts snapshot.Options) snapshot.Result {
	t.Helper()
	res, err := snapshot.Run(context.Background(), ws, r, prev, opts)
	if err != nil {
		t.Fatalf("Run: %v", err)
	}
	return res
}

// verify walks the stored trees from root and compares them with the disk:
// every entry on disk that is not special and not expected absent is in the
// tree with the same type, mode bits, mtime, size, content and target, and
// the tree holds nothing else.
func verify(t testing.TB, f *fakeRemote, root id.ID, ws string, absent func(rel string) bool) {
	t.Helper()
	var walk func(tid id.ID, rel string)
	walk = func(tid id.ID, rel string) {
		tr := f.tree(t, tid)
		ents, err := os.ReadDir(filepath.Join(ws, rel))
		must(t, err)
		var want []string
		for _, e := range ents {
			r := path.Join(rel, e.Name())
			switch e.Type() & os.ModeType {
			case 0, os.ModeDir, os.ModeSymlink:
				if absent == nil || !absent(r) {
					want = append(want, e.Name())
				}
			}
		}
		var got []string
		for _, n := range tr.Nodes {
			got = append(got, n.Name)
		}
		if !slices.Equal(got, want) {
			t.Fatalf("directory %q: tree has %q, disk has %q", rel, got, want)
		}
		for i := range tr.Nodes {
			n := &tr.Nodes[i]
			r := path.Join(rel, n.Name)
			p := filepath.Join(ws, r)
			var st syscall.Stat_t
			must(t, syscall.Lstat(p, &st))
			if mode := st.Mode & 0o7777; n.Mode != mode {
				t.Errorf("%q: mode %#o, disk %#o", r, n.Mode, mode)
			}
			if n.MtimeNs != st.Mtim.Nano() {
				t.Errorf("%q: mtime %d, disk %d", r, n.MtimeNs, st.Mtim.Nano())
			}
			switch st.Mode & syscall.S_IFMT {
			case syscall.S_IFREG:
				if n.Type != tree.File {
					t.Fatalf("%q: type %s, disk has a file", r, n.Type)
				}
				data, err := os.ReadFile(p)
				must(t, err)
				if n.Size != int64(len(data)) || !bytes.Equal(f.content(t, n), data) {
					t.Errorf("%q: content differs from disk (size %d vs %d)", r, n.Size, len(data))
				}
			case syscall.S_IFDIR:
				if n.Type != tree.Dir {
					t.Fatalf("%q: type %s, disk has a directory", r, n.Type)
				}
				walk(n.Subtree, r)
			case syscall.S_IFLNK:
				target, err := os.Readlink(p)
				must(t, err)
				if n.Type != tree.Symlink || n.Target != target {
					t.Errorf("%q: %s -> %q, disk has a symlink to %q", r, n.Type, n.Target, target)
				}
			}
		}
	}
	walk(root, "")
}

func absentSet(paths ...string) func(string) bool {
	return func(rel string) bool {
		for _, p := range paths {
			if rel == p || strings.HasPrefix(rel, p+"/") {
				return true
			}
		}
		return false
	}
}

type shape struct {
	name    string
	build   func(t *testing.T, ws string)
	opts    snapshot.Options
	absent  []string
	files   int64
	skipped int64
	ignored int64
	check   func(t *testing.T, res snapshot.Result, f *fakeRemote)
}

var shapes = []shape{
	{
		name:  "empty",
		build: func(t *testing.T, ws string) {},
		check: func(t *testing.T, res snapshot.Result, f *fakeRemote) {
			empty, err := (&tree.Tree{}).ID()
			must(t, err)
			if res.Root != empty {
				t.Errorf("root %s, want the empty tree %s", res.Root.Short(), empty.Short())
			}
		},
	},
	{
		name: "nested and empty dirs",
		build: func(t *testing.T, ws string) {
			write(t, ws, "a/b/c/d/e/f.txt", []byte("deep"), 0o644)
			write(t, ws, "a/b/sibling.txt", []byte("sib"), 0o644)
			must(t, os.MkdirAll(filepath.Join(ws, "a/empty"), 0o755))
			must(t, os.MkdirAll(filepath.Join(ws, "x/y/z"), 0o755))
			must(t, os.MkdirAll(filepath.Join(ws, "e1"), 0o755))
			must(t, os.MkdirAll(filepath.Join(ws, "e2"), 0o755)) // the same (empty) tree twice
		},
		files: 2,
		check: func(t *testing.T, res snapshot.Result, f *fakeRemote) {
			if res.Stats.Dirs != 11 {
				t.Errorf("Dirs = %d, want 11", res.Stats.Dirs)
			}
		},
	},
	{
		name: "zero-byte files",
		build: func(t *testing.T, ws string) {
			write(t, ws, "empty", nil, 0o644)
			write(t, ws, "sub/empty", nil, 0o600)
			write(t, ws, "sub/also-empty", nil, 0o755)
		},
		files: 3,
	},
	{
		name: "multi-chunk file",
		build: func(t *testing.T, ws string) {
			write(t, ws, "big.bin", randBytes(1, 3*chunker.DefaultParams.Max+17), 0o644)
			write(t, ws, "small.txt", []byte("small"), 0o644)
		},
		files: 2,
		check: func(t *testing.T, res snapshot.Result, f *fakeRemote) {
			if res.Stats.ChunksNew < 4 {
				t.Errorf("ChunksNew = %d for a file of 3*Max+17 bytes and a small one", res.Stats.ChunksNew)
			}
			if res.Bytes != int64(3*chunker.DefaultParams.Max+17+5) {
				t.Errorf("Bytes = %d", res.Bytes)
			}
		},
	},
	{
		name: "mode bits",
		build: func(t *testing.T, ws string) {
			write(t, ws, "run.sh", []byte("#!/bin/sh\necho hi\n"), 0o755)
			write(t, ws, "private", []byte("p"), 0o600)
			write(t, ws, "readonly", []byte("r"), 0o444)
			write(t, ws, "setuid-tool", []byte("x"), 0o755|os.ModeSetuid)
			write(t, ws, "setgid-tool", []byte("y"), 0o755|os.ModeSetgid)
			must(t, os.Mkdir(filepath.Join(ws, "sticky"), 0o755))
			must(t, os.Chmod(filepath.Join(ws, "sticky"), 0o777|os.ModeSticky))
			must(t, os.Mkdir(filepath.Join(ws, "closed"), 0o700))
		},
		files: 5,
	},
	{
		name: "symlinks",
		build: func(t *testing.T, ws string) {
			write(t, ws, "target.txt", []byte("t"), 0o644)
			write(t, ws, "dir/inside.txt", []byte("i"), 0o644)
			must(t, os.Symlink("target.txt", filepath.Join(ws, "relative")))
			must(t, os.Symlink("/etc/hostname", filepath.Join(ws, "absolute")))
			must(t, os.Symlink("nowhere/at/all", filepath.Join(ws, "dangling")))
			must(t, os.Symlink("dir", filepath.Join(ws, "to-dir")))
			must(t, os.Symlink("loop", filepath.Join(ws, "loop")))
			must(t, os.Symlink("../../outside", filepath.Join(ws, "dir/up")))
		},
		files: 2,
		check: func(t *testing.T, res snapshot.Result, f *fakeRemote) {
			if res.Stats.Symlinks != 6 {
				t.Errorf("Symlinks = %d, want 6", res.Stats.Symlinks)
			}
		},
	},
	{
		name: "names",
		build: func(t *testing.T, ws string) {
			write(t, ws, "with space/file name.txt", []byte("spaces"), 0o644)
			write(t, ws, "ünïcödé/日本語.txt", []byte("こんにちは"), 0o644)
			write(t, ws, "not-utf8-\xff\xfe", []byte("bytes"), 0o644)
			write(t, ws, "tab\tand\nnewline", []byte("ws"), 0o644)
			write(t, ws, "-leading-dash", []byte("d"), 0o644)
			write(t, ws, `back\slash`, []byte("b"), 0o644)
			write(t, ws, "#hash", []byte("h"), 0o644)
			write(t, ws, "B", []byte("upper"), 0o644)
			write(t, ws, "a", []byte("lower"), 0o644)
		},
		files: 9,
	},
	{
		name: "fifo and socket are skipped",
		build: func(t *testing.T, ws string) {
			write(t, ws, "regular", []byte("r"), 0o644)
			must(t, syscall.Mkfifo(filepath.Join(ws, "pipe"), 0o644))
			l, err := net.Listen("unix", filepath.Join(ws, "sock"))
			must(t, err)
			t.Cleanup(func() { l.Close() })
		},
		files:   1,
		skipped: 2,
	},
	{
		name: "ignore rules",
		build: func(t *testing.T, ws string) {
			write(t, ws, ignore.FileName, []byte("*.log\n!keep.log\nbuild/\n/top-only\nnode_modules/\n!secret/\n"), 0o644)
			write(t, ws, "a.log", []byte("x"), 0o644)
			write(t, ws, "keep.log", []byte("k"), 0o644)
			write(t, ws, "sub/b.log", []byte("x"), 0o644)
			write(t, ws, "sub/keep.log", []byte("k"), 0o644)
			write(t, ws, "build/out/x.o", []byte("x"), 0o644)
			write(t, ws, "sub/build/y.o", []byte("y"), 0o644)
			write(t, ws, "build.txt", []byte("a file called build.txt"), 0o644)
			write(t, ws, "top-only", []byte("t"), 0o644)
			write(t, ws, "sub/top-only", []byte("t"), 0o644)
			write(t, ws, "node_modules/pkg/index.js", []byte("js"), 0o644)
			write(t, ws, "secret/state.db", []byte("s"), 0o600)
			write(t, ws, "main.go", []byte("package main"), 0o644)
		},
		opts:   snapshot.Options{AlwaysIgnore: []string{"/secret/"}},
		absent: []string{"a.log", "sub/b.log", "build", "sub/build", "top-only", "node_modules", "secret"},
		// .sandkeepignore, keep.log, sub/keep.log, build.txt, sub/top-only, main.go
		files: 6,
		// a.log, build, top-only, node_modules, secret; sub/b.log, sub/build:
		// the contents of ignored directories are never looked at.
		ignored: 7,
	},
}

func TestShapes(t *testing.T) {
	for _, s := range shapes {
		t.Run(s.name, func(t *testing.T) {
			t.Parallel()
			ws := t.TempDir()
			s.build(t, ws)
			opts := s.opts
			if _, err := os.Lstat(filepath.Join(ws, ignore.FileName)); err == nil {
				m, err := ignore.Load(ws)
				must(t, err)
				opts.Ignore = m
			}
			settle(t, ws)
			f := newFake()
			res := run(t, ws, f, nil, opts)
			f.check(t)
			verify(t, f, res.Root, ws, absentSet(s.absent...))
			if res.Files != s.files || res.Stats.Files != s.files {
				t.Errorf("Files = %d, want %d", res.Files, s.files)
			}
			if res.Stats.Skipped != s.skipped {
				t.Errorf("Skipped = %d, want %d", res.Stats.Skipped, s.skipped)
			}
			if res.Stats.Ignored != s.ignored {
				t.Errorf("Ignored = %d, want %d", res.Stats.Ignored, s.ignored)
			}
			if res.Stats.PacksUploaded != f.packsStored || res.Stats.BytesUploaded != f.packBytes || res.Stats.TreesUploaded != f.treesStored {
				t.Errorf("stats say %d packs, %d bytes, %d trees; the remote stored %d, %d, %d",
					res.Stats.PacksUploaded, res.Stats.BytesUploaded, res.Stats.TreesUploaded, f.packsStored, f.packBytes, f.treesStored)
			}
			if res.Stats.BytesRead != res.Bytes {
				t.Errorf("BytesRead = %d, want every byte once (%d)", res.Stats.BytesRead, res.Bytes)
			}
			if s.check != nil {
				s.check(t, res, f)
			}

			// Nothing changed: the same root, nothing read, nothing missing.
			f.reset()
			res2 := run(t, ws, f, res.Index, opts)
			f.check(t)
			if res2.Root != res.Root {
				t.Errorf("second run: root %s, first %s", res2.Root.Short(), res.Root.Short())
			}
			st := res2.Stats
			if f.findMisses != 0 || f.packCalls != 0 || f.treeCalls != 0 || st.BytesRead != 0 || st.PacksUploaded != 0 || st.ChunksNew != 0 {
				t.Errorf("second run: %d misses, %d packs, %d tree calls, %d bytes read, %d new chunks",
					f.findMisses, f.packCalls, f.treeCalls, st.BytesRead, st.ChunksNew)
			}
			if st.FilesUnchanged != s.files || st.Files != s.files {
				t.Errorf("second run: %d of %d files unchanged", st.FilesUnchanged, st.Files)
			}
		})
	}
}

// A one-byte edit in the middle of a 100 MiB file uploads at most 2 chunks.
func TestOneByteEditInLargeFile(t *testing.T) {
	ws := t.TempDir()
	const size = 100 << 20
	data := randBytes(7, size)
	write(t, ws, "big.bin", data, 0o644)
	f := newFake()
	res := run(t, ws, f, nil, snapshot.Options{})
	if res.Stats.ChunksNew < 50 {
		t.Fatalf("first run: %d chunks", res.Stats.ChunksNew)
	}

	fh, err := os.OpenFile(filepath.Join(ws, "big.bin"), os.O_WRONLY, 0)
	must(t, err)
	_, err = fh.WriteAt([]byte{data[size/2] ^ 0x5a}, size/2)
	must(t, err)
	must(t, fh.Close())
	data[size/2] ^= 0x5a

	f.reset()
	res2 := run(t, ws, f, res.Index, snapshot.Options{})
	f.check(t)
	if res2.Stats.ChunksNew > 2 || f.chunksStored > 2 || f.chunksStored < 1 {
		t.Errorf("one-byte edit: %d chunks packed, %d stored; want 1 or 2", res2.Stats.ChunksNew, f.chunksStored)
	}
	if res2.Stats.BytesUploaded > 2*int64(chunker.DefaultParams.Max)+4096 {
		t.Errorf("one-byte edit uploaded %d bytes", res2.Stats.BytesUploaded)
	}
	n, ok := f.tree(t, res2.Root).Find("big.bin")
	if !ok || !bytes.Equal(f.content(t, n), data) {
		t.Fatal("edited file is not stored as on disk")
	}
}

// A file rewritten while read is read again and never stored half-written.
func TestFileChangedWhileRead(t *testing.T) {
	version := func(i int) []byte {
		// Each version has another size, so even a coarse clock shows it.
		return bytes.Repeat([]byte{byte('a' + i)}, 300<<10+i*1000)
	}
	cases := []struct {
		name     string
		prev     bool // a previous run stored version 0
		rewrites int  // the hook rewrites the file after this many reads
		remove   bool // the hook deletes the file instead
		want     []byte
		changed  bool
	}{
		{name: "settles after two rewrites", rewrites: 2, want: version(3)},
		{name: "keeps changing, new file", rewrites: 100, want: nil, changed: true},
		{name: "keeps changing, previous version kept", prev: true, rewrites: 100, want: version(0), changed: true},
		{name: "removed while read", remove: true, want: nil},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			t.Parallel()
			ws := t.TempDir()
			write(t, ws, "other.txt", []byte("other"), 0o644)
			p := filepath.Join(ws, "hot.txt")
			f := newFake()
			var prev *snapshot.Index
			if c.prev {
				must(t, os.WriteFile(p, version(0), 0o644))
				prev = run(t, ws, f, nil, snapshot.Options{}).Index
				f.reset()
				must(t, os.WriteFile(p, version(1), 0o644))
			} else {
				must(t, os.WriteFile(p, version(0), 0o644))
			}
			var opts snapshot.Options
			reads := 0
			snapshot.SetAfterRead(&opts, func(rel string, attempt int) {
				if rel != "hot.txt" {
					return
				}
				reads++
				switch {
				case c.remove:
					must(t, os.Remove(p))
				case reads <= c.rewrites:
					must(t, os.WriteFile(p, version(reads+1), 0o644))
				}
			})
			res := run(t, ws, f, prev, opts)
			f.check(t)
			n, ok := f.tree(t, res.Root).Find("hot.txt")
			switch {
			case c.want == nil && ok:
				t.Fatalf("file stored with %d bytes, want it left out", n.Size)
			case c.want != nil && !ok:
				t.Fatal("file left out")
			case c.want != nil && !bytes.Equal(f.content(t, n), c.want):
				t.Fatalf("stored %d bytes, not the expected version of %d bytes", n.Size, len(c.want))
			}
			if got := slices.Contains(res.Stats.FilesChangedDuringRead, "hot.txt"); got != c.changed {
				t.Fatalf("FilesChangedDuringRead = %q", res.Stats.FilesChangedDuringRead)
			}
			if c.changed && reads != snapshot.DefaultRetries+1 {
				t.Errorf("read %d times, want %d", reads, snapshot.DefaultRetries+1)
			}
			// The next run, with the file quiet, stores what is on disk.
			f.reset()
			res2 := run(t, ws, f, res.Index, snapshot.Options{})
			verify(t, f, res2.Root, ws, nil)
		})
	}
}

// A remote failing transiently makes Run fail; a retry with the same prev
// succeeds and uploads nothing the remote already had.
func TestTransientRemoteFailure(t *testing.T) {
	cases := []struct {
		name   string
		inject func(f *fakeRemote)
	}{
		{"FindMissing", func(f *fakeRemote) { f.failFind = 3 }},
		// Large files' chunks are asked about by the worker reading them,
		// small files' by the batcher: fail either first.
		{"FindMissing first call", func(f *fakeRemote) { f.failFind = 1 }},
		{"FindMissing later", func(f *fakeRemote) { f.failFind = 9 }},
		{"UploadPack", func(f *fakeRemote) { f.failPack = 2 }},
		{"UploadTrees", func(f *fakeRemote) { f.failTrees = 1 }},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			t.Parallel()
			ws := t.TempDir()
			for i := range 12 {
				write(t, ws, filepath.Join("d", string(rune('a'+i))+".bin"), randBytes(uint64(100+i), 700<<10), 0o644)
			}
			for i := range 50 {
				write(t, ws, filepath.Join("src", string(rune('a'+i%26))+string(rune('a'+i/26))+".txt"), randBytes(uint64(i), 3000), 0o644)
			}
			// Small packs and batches, so the failure strikes mid-run.
			opts := snapshot.Options{PackSize: 1 << 20, BufferBytes: 1}
			f := newFake()
			c.inject(f)
			_, err := snapshot.Run(context.Background(), ws, f, nil, opts)
			if !errors.Is(err, errInjected) {
				t.Fatalf("Run with a failing remote: %v", err)
			}
			stored := f.chunksStored
			f.reset()
			res := run(t, ws, f, nil, opts)
			f.check(t)
			verify(t, f, res.Root, ws, nil)
			for cid, n := range f.storedTimes {
				if n != 1 {
					t.Errorf("chunk %s stored %d times", cid.Short(), n)
				}
			}
			t.Logf("first run stored %d chunks, the retry %d", stored, f.chunksStored)
		})
	}
}

// Identical content is uploaded once per run.
func TestDedupWithinRun(t *testing.T) {
	ws := t.TempDir()
	big := randBytes(3, 6<<20)
	write(t, ws, "a/big", big, 0o644)
	write(t, ws, "b/big-copy", big, 0o644)
	for i := range 40 {
		write(t, ws, filepath.Join("same", string(rune('a'+i%26))+string(rune('a'+i/26))), []byte("identical small file\n"), 0o644)
	}
	f := newFake()
	res := run(t, ws, f, nil, snapshot.Options{})
	f.check(t)
	verify(t, f, res.Root, ws, nil)
	for cid, n := range f.storedTimes {
		if n != 1 {
			t.Errorf("chunk %s stored %d times", cid.Short(), n)
		}
	}
	if int64(len(f.storedTimes)) != res.Stats.ChunksNew {
		t.Errorf("ChunksNew %d, distinct chunks %d", res.Stats.ChunksNew, len(f.storedTimes))
	}
	if res.Stats.ChunksReused < 39 {
		t.Errorf("ChunksReused = %d", res.Stats.ChunksReused)
	}
}

// TestTreesGoUpWhileDataFlows sends every tree as soon as it is ready
// (early tree bytes 1), over workspaces with many directories, chunks shared
// between files and directories, identical subtrees and small packs: the
// fake refuses a tree that names a chunk or subtree it does not hold yet,
// whatever the interleaving, and the result must be complete. Each
// workspace is synced twice: the second Run finds everything stored.
func TestTreesGoUpWhileDataFlows(t *testing.T) {
	for round := range 4 {
		ws := t.TempDir()
		shared := randBytes(uint64(900+round), 300<<10) // a large chunk in several files
		for d := range 30 {
			dir := fmt.Sprintf("d%02d", d)
			write(t, ws, filepath.Join(dir, "own"), randBytes(uint64(round*100+d), 40<<10+d), 0o644)
			write(t, ws, filepath.Join(dir, "same.txt"), []byte("the same small file\n"), 0o644)
			write(t, ws, filepath.Join(dir, "sub", "x"), []byte("an identical subtree\n"), 0o644)
			if d%5 == 0 {
				write(t, ws, filepath.Join(dir, "shared"), shared, 0o644)
			}
		}
		f := newFake()
		opts := snapshot.Options{PackSize: 128 << 10, UploadConcurrency: 3}
		snapshot.SetEarlyTreeBytes(&opts, 1)
		res := run(t, ws, f, nil, opts)
		f.check(t)
		verify(t, f, res.Root, ws, nil)
		t.Logf("round %d: %d packs after the first trees", round, f.packsAfterTrees)
		if res.Stats.TreesUploaded != f.treesStored {
			t.Errorf("round %d: %d trees uploaded, %d stored", round, res.Stats.TreesUploaded, f.treesStored)
		}
		f.reset()
		again := run(t, ws, f, res.Index, opts)
		f.check(t)
		if again.Root != res.Root || f.treesStored != 0 || f.packsStored != 0 {
			t.Errorf("round %d: the second Run stored %d trees and %d packs (root %s, was %s)",
				round, f.treesStored, f.packsStored, again.Root.Short(), res.Root.Short())
		}
	}
}

// Packs respect PackSize; at most UploadConcurrency pack buffers are in use
// (so fewer are being sent), and at most MaxIndexing more uploads wait for
// their index.
func TestPacksAndConcurrency(t *testing.T) {
	ws := t.TempDir()
	for i := range 20 {
		write(t, ws, filepath.Join("f", string(rune('a'+i))), randBytes(uint64(200+i), 1<<20), 0o644)
	}
	f := newFake()
	opts := snapshot.Options{PackSize: 2 << 20, UploadConcurrency: 3}
	res := run(t, ws, f, nil, opts)
	f.check(t)
	verify(t, f, res.Root, ws, nil)
	if res.Stats.PacksUploaded < 5 {
		t.Errorf("%d packs for 20 MiB with a 2 MiB pack size", res.Stats.PacksUploaded)
	}
	if f.maxHolding > 3 {
		t.Errorf("%d packs being sent at once, limit 3", f.maxHolding)
	}
	if limit := 3 + snapshot.MaxIndexing; f.maxInFlight > limit {
		t.Errorf("%d uploads in flight, limit %d", f.maxInFlight, limit)
	}
	if max := int64(res.Stats.PacksUploaded) * (2<<20 + 4<<20 + 64<<10); res.Stats.BytesUploaded > max {
		t.Errorf("%d bytes in %d packs", res.Stats.BytesUploaded, res.Stats.PacksUploaded)
	}
}

// A pack's buffer is reused as soon as the remote has sent it, while the
// remote verifies and indexes it: with two buffers (one filling, one being
// sent), three packs go up while the first still waits for its index.
func TestBufferReusedOnceSent(t *testing.T) {
	ws := t.TempDir()
	for i := range 8 {
		write(t, ws, filepath.Join("f", string(rune('a'+i))), randBytes(uint64(300+i), 512<<10), 0o644)
	}
	f := newFake()
	f.indexAfter = 3
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	res, err := snapshot.Run(ctx, ws, f, nil, snapshot.Options{PackSize: 256 << 10, UploadConcurrency: 2})
	if err != nil {
		t.Fatalf("Run: %v (a sent pack's buffer was not reused while its index was pending)", err)
	}
	f.check(t)
	verify(t, f, res.Root, ws, nil)
	if f.maxHolding > 2 || f.maxInFlight < 3 || f.maxInFlight > 2+snapshot.MaxIndexing {
		t.Errorf("%d packs being sent at once (limit 2), %d uploads in flight (want 3 to %d)", f.maxHolding, f.maxInFlight, 2+snapshot.MaxIndexing)
	}
}

func TestCancel(t *testing.T) {
	ws := t.TempDir()
	for i := range 200 {
		write(t, ws, filepath.Join("d", string(rune('a'+i%26)), string(rune('a'+i/26))), randBytes(uint64(i), 100<<10), 0o644)
	}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	var opts snapshot.Options
	snapshot.SetAfterRead(&opts, func(string, int) { cancel() })
	start := time.Now()
	_, err := snapshot.Run(ctx, ws, newFake(), nil, opts)
	if !errors.Is(err, context.Canceled) {
		t.Fatalf("Run after cancel: %v", err)
	}
	if d := time.Since(start); d > 5*time.Second {
		t.Errorf("cancelled Run took %v", d)
	}
}

func TestWorkspaceMustBeADirectory(t *testing.T) {
	dir := t.TempDir()
	write(t, dir, "file", []byte("x"), 0o644)
	must(t, os.Mkdir(filepath.Join(dir, "real"), 0o755))
	must(t, os.Symlink("real", filepath.Join(dir, "link")))
	for _, name := range []string{"file", "link", "missing"} {
		if _, err := snapshot.Run(context.Background(), filepath.Join(dir, name), newFake(), nil, snapshot.Options{}); err == nil {
			t.Errorf("Run on %s succeeded", name)
		}
	}
}

// An index saved and loaded again lets the next run skip every file.
func TestIndexSaveLoad(t *testing.T) {
	ws := t.TempDir()
	shapes[4].build(t, ws) // mode bits
	shapes[6].build(t, ws) // names
	write(t, ws, "big", randBytes(9, 5<<20), 0o644)
	settle(t, ws)
	f := newFake()
	res := run(t, ws, f, nil, snapshot.Options{})
	p := filepath.Join(t.TempDir(), "agent.index")
	must(t, res.Index.Save(p))
	must(t, res.Index.Save(p)) // over an existing one
	if ents, _ := os.ReadDir(filepath.Dir(p)); len(ents) != 1 {
		t.Errorf("index directory holds %d entries, want just the index", len(ents))
	}
	x, err := snapshot.LoadIndex(p)
	must(t, err)
	if x.Len() != res.Index.Len() || x.Len() != int(res.Files) {
		t.Fatalf("loaded %d files, saved %d", x.Len(), res.Index.Len())
	}
	for _, d := range snapshot.Dirs(res.Index) {
		a, _ := snapshot.DirTree(res.Index, d)
		b, ok := snapshot.DirTree(x, d)
		if !ok || a != b {
			t.Errorf("directory %q: tree %s, loaded %s", d, a.Short(), b.Short())
		}
	}
	for _, rel := range []string{"run.sh", "setuid-tool", "not-utf8-\xff\xfe", "ünïcödé/日本語.txt", "big"} {
		a, ok1 := res.Index.Lookup(rel)
		b, ok2 := x.Lookup(rel)
		if !ok1 || !ok2 || a.Size != b.Size || a.MtimeNs != b.MtimeNs || a.CtimeNs != b.CtimeNs || a.Inode != b.Inode || a.Mode != b.Mode || !slices.Equal(a.Chunks, b.Chunks) {
			t.Errorf("%q: saved %+v (%v), loaded %+v (%v)", rel, a, ok1, b, ok2)
		}
	}
	f.reset()
	res2 := run(t, ws, f, x, snapshot.Options{})
	if res2.Root != res.Root || res2.Stats.BytesRead != 0 || f.findMisses != 0 {
		t.Errorf("run with the loaded index: same root %v, %d bytes read, %d misses", res2.Root == res.Root, res2.Stats.BytesRead, f.findMisses)
	}

	// Missing: empty, no error.
	x, err = snapshot.LoadIndex(filepath.Join(t.TempDir(), "none"))
	if err != nil || x == nil || x.Len() != 0 {
		t.Errorf("missing index: %v, %v", x, err)
	}
	// Corrupt: empty, an error to log.
	good, err := os.ReadFile(p)
	must(t, err)
	corrupt := map[string][]byte{
		"flipped byte": func() []byte { b := bytes.Clone(good); b[len(b)/2] ^= 1; return b }(),
		"truncated":    good[:len(good)-10],
		"empty":        nil,
		"garbage":      randBytes(5, 4096),
		"bad version":  func() []byte { b := bytes.Clone(good); b[6] = 99; return b }(),
		"huge count":   append([]byte("SKIDX\x00\x01\xff\xff\xff\xff\x0f"), make([]byte, 40)...),
	}
	for name, b := range corrupt {
		q := filepath.Join(t.TempDir(), "idx")
		must(t, os.WriteFile(q, b, 0o600))
		x, err := snapshot.LoadIndex(q)
		if err == nil || !errors.Is(err, snapshot.ErrCorruptIndex) || x == nil || x.Len() != 0 {
			t.Errorf("%s: LoadIndex = %v files, %v", name, x.Len(), err)
		}
	}
}

// An index seeded by RecordFile (as a restore does) lets a run skip files.
func TestRecordFileSeed(t *testing.T) {
	ws := t.TempDir()
	shapes[1].build(t, ws)
	write(t, ws, "big", randBytes(11, 3<<20), 0o644)
	f := newFake()
	res := run(t, ws, f, nil, snapshot.Options{})
	seed := snapshot.NewIndex()
	var walk func(tid id.ID, rel string)
	walk = func(tid id.ID, rel string) {
		for _, n := range f.tree(t, tid).Nodes {
			r := path.Join(rel, n.Name)
			switch n.Type {
			case tree.Dir:
				walk(n.Subtree, r)
			case tree.File:
				fi, err := os.Lstat(filepath.Join(ws, r))
				must(t, err)
				seed.RecordFile(r, fi, n.Chunks)
			}
		}
	}
	walk(res.Root, "")
	if seed.Len() != int(res.Files) {
		t.Fatalf("seeded %d files, want %d", seed.Len(), res.Files)
	}
	// Recorded right after writing, the entries are racy: read once more.
	// Then a second passes (on the package's clock).
	snapshot.AdvanceClock(t, time.Second)
	f.reset()
	res2 := run(t, ws, f, seed, snapshot.Options{})
	if res2.Root != res.Root || f.findMisses != 0 || res2.Stats.PacksUploaded != 0 {
		t.Errorf("seeded run: same root %v, %d misses, %d packs", res2.Root == res.Root, f.findMisses, res2.Stats.PacksUploaded)
	}
	// Recorded long after the last change, they are trusted.
	seed = snapshot.NewIndex()
	walk(res.Root, "")
	f.reset()
	res3 := run(t, ws, f, seed, snapshot.Options{})
	if res3.Root != res.Root || res3.Stats.BytesRead != 0 || f.findMisses != 0 {
		t.Errorf("seeded run: same root %v, %d bytes read, %d misses", res3.Root == res.Root, res3.Stats.BytesRead, f.findMisses)
	}
}

// A directory the agent cannot list keeps its previous tree.
func TestUnreadableDirectoryKeepsPreviousTree(t *testing.T) {
	if os.Geteuid() == 0 {
		t.Skip("root can read everything")
	}
	ws := t.TempDir()
	write(t, ws, "locked/inside.txt", []byte("secret"), 0o644)
	write(t, ws, "open.txt", []byte("o"), 0o644)
	f := newFake()
	res := run(t, ws, f, nil, snapshot.Options{})
	locked := filepath.Join(ws, "locked")
	must(t, os.Chmod(locked, 0))
	defer os.Chmod(locked, 0o755)
	res2 := run(t, ws, f, res.Index, snapshot.Options{})
	before, _ := f.tree(t, res.Root).Find("locked")
	after, ok := f.tree(t, res2.Root).Find("locked")
	if !ok || after.Subtree != before.Subtree || after.Mode != 0 || res2.Stats.Skipped != 1 {
		t.Errorf("unreadable directory: kept %v, same subtree %v, skipped %d", ok, ok && after.Subtree == before.Subtree, res2.Stats.Skipped)
	}
}

// blockingRemote hangs in UploadPack until its context is done.
type blockingRemote struct{ discardRemote }

func (b *blockingRemote) UploadPack(ctx context.Context, _ id.ID, _ []byte, _ func()) error {
	<-ctx.Done()
	return ctx.Err()
}

func TestCancelWhileUploading(t *testing.T) {
	ws := t.TempDir()
	write(t, ws, "big", randBytes(21, 20<<20), 0o644)
	ctx, cancel := context.WithTimeout(context.Background(), 300*time.Millisecond)
	defer cancel()
	start := time.Now()
	_, err := snapshot.Run(ctx, ws, &blockingRemote{}, nil, snapshot.Options{PackSize: 1 << 20})
	if !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("Run with a hung remote: %v", err)
	}
	if d := time.Since(start); d > 5*time.Second {
		t.Errorf("Run returned %v after its deadline", d)
	}
}
