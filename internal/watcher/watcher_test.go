package watcher

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"math/rand/v2"
	"os"
	"path/filepath"
	"runtime"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/fsnotify/fsnotify"
)

// waitLimit bounds every wait for an expected event: a failure guard, never
// a synchronisation device.
const waitLimit = 10 * time.Second

const testPollInterval = 5 * time.Millisecond

func quietLogger() *slog.Logger { return slog.New(slog.NewTextHandler(io.Discard, nil)) }

// start creates a watcher on root in the given mode and closes it at the end
// of the test.
func start(t *testing.T, mode Mode, opts Options) (*Watcher, *recorder) {
	t.Helper()
	opts.ForcePoll = mode == ModePoll
	return startExpect(t, opts, mode)
}

// startExpect creates a watcher with opts as given and checks it runs in
// the given mode.
func startExpect(t *testing.T, opts Options, mode Mode) (*Watcher, *recorder) {
	t.Helper()
	if opts.Logger == nil {
		opts.Logger = quietLogger()
	}
	if opts.PollInterval == 0 {
		opts.PollInterval = testPollInterval
	}
	w, err := New(context.Background(), opts)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { w.Close() })
	if got := w.Mode(); got != mode {
		t.Fatalf("Mode() = %q, want %q", got, mode)
	}
	return w, &recorder{t: t, w: w, root: opts.Root, seen: map[string]bool{}}
}

// recorder accumulates what a watcher reported.
type recorder struct {
	t           *testing.T
	w           *Watcher
	root        string
	seen        map[string]bool
	all         []string // every path ever reported, in order
	rescans     int
	allowRescan bool
	syncs       int
}

func (r *recorder) record(ev Event) {
	r.t.Helper()
	if ev.Rescan {
		r.rescans++
		if !r.allowRescan {
			r.t.Fatalf("unexpected Rescan (status %+v)", r.w.Status())
		}
		if len(ev.Paths) != 0 {
			r.t.Fatalf("Rescan event with paths %v", ev.Paths)
		}
	}
	if !slices.IsSorted(ev.Paths) {
		r.t.Fatalf("paths not sorted: %v", ev.Paths)
	}
	for _, p := range ev.Paths {
		if p == "" || strings.HasPrefix(p, "/") || strings.Contains(p, "\\") || (p != "." && filepath.Clean(p) != p) {
			r.t.Fatalf("malformed path %q", p)
		}
		r.seen[p] = true
		r.all = append(r.all, p)
	}
}

// until reads events until done returns true.
func (r *recorder) until(what string, done func() bool) {
	r.t.Helper()
	timeout := time.NewTimer(waitLimit)
	defer timeout.Stop()
	for !done() {
		select {
		case ev, ok := <-r.w.Events():
			if !ok {
				r.t.Fatalf("events closed while waiting for %s", what)
			}
			r.record(ev)
		case <-timeout.C:
			seen := make([]string, 0, len(r.seen))
			for p := range r.seen {
				seen = append(seen, p)
			}
			slices.Sort(seen)
			if len(seen) > 50 {
				seen = append(seen[:50], "...")
			}
			r.t.Fatalf("timed out waiting for %s; seen %v; status %+v", what, seen, r.w.Status())
		}
	}
}

// waitFor waits until every path has been reported since the last reset.
func (r *recorder) waitFor(paths ...string) {
	r.t.Helper()
	r.until(fmt.Sprint(paths), func() bool {
		for _, p := range paths {
			if !r.seen[p] {
				return false
			}
		}
		return true
	})
}

// waitRescan waits for a Rescan.
func (r *recorder) waitRescan() {
	r.t.Helper()
	r.allowRescan = true
	n := r.rescans
	r.until("Rescan", func() bool { return r.rescans > n })
}

func (r *recorder) reset() { clear(r.seen) }

// sync creates a fresh file at the root and waits for it: everything that
// happened before has been handled by then (inotify delivers in order; a
// polling walk that sees the new file sees everything done before it).
func (r *recorder) sync() {
	r.t.Helper()
	r.syncs++
	name := fmt.Sprintf("sync-%d", r.syncs)
	writeFile(r.t, filepath.Join(r.root, name), "s")
	r.waitFor(name)
}

// assertNone fails if a path seen since the last reset matches bad.
func (r *recorder) assertNone(what string, bad func(string) bool) {
	r.t.Helper()
	for p := range r.seen {
		if bad(p) {
			r.t.Errorf("%s reported: %q", what, p)
		}
	}
}

func writeFile(t *testing.T, name, content string) {
	t.Helper()
	if err := os.WriteFile(name, []byte(content), 0o644); err != nil {
		t.Fatal(err)
	}
}

func mkdirAll(t *testing.T, name string) {
	t.Helper()
	if err := os.MkdirAll(name, 0o755); err != nil {
		t.Fatal(err)
	}
}

func rename(t *testing.T, from, to string) {
	t.Helper()
	if err := os.Rename(from, to); err != nil {
		t.Fatal(err)
	}
}

// bothModes runs f with inotify and with polling.
func bothModes(t *testing.T, f func(t *testing.T, mode Mode)) {
	for _, m := range []Mode{ModeInotify, ModePoll} {
		t.Run(string(m), func(t *testing.T) { f(t, m) })
	}
}

func TestFileCreateModifyChmodDelete(t *testing.T) {
	bothModes(t, func(t *testing.T, mode Mode) {
		root := t.TempDir()
		mkdirAll(t, filepath.Join(root, "d"))
		_, r := start(t, mode, Options{Root: root})
		f := filepath.Join(root, "d", "f")

		writeFile(t, f, "one")
		r.waitFor("d/f", "d")

		r.reset()
		fh, err := os.OpenFile(f, os.O_APPEND|os.O_WRONLY, 0)
		if err != nil {
			t.Fatal(err)
		}
		if _, err := fh.WriteString(" two"); err != nil {
			t.Fatal(err)
		}
		fh.Close()
		r.waitFor("d/f")

		r.reset()
		if err := os.Chmod(f, 0o600); err != nil {
			t.Fatal(err)
		}
		r.waitFor("d/f")

		r.reset()
		if err := os.Chmod(filepath.Join(root, "d"), 0o700); err != nil {
			t.Fatal(err)
		}
		r.waitFor("d")

		r.reset()
		if err := os.Remove(f); err != nil {
			t.Fatal(err)
		}
		r.waitFor("d/f", "d")

		r.reset()
		writeFile(t, filepath.Join(root, "top"), "x")
		r.waitFor("top", ".")
	})
}

func TestMkdirPThenWrite(t *testing.T) {
	bothModes(t, func(t *testing.T, mode Mode) {
		root := t.TempDir()
		_, r := start(t, mode, Options{Root: root})
		for i := range 50 {
			dir := filepath.Join(root, fmt.Sprint("m", i), "a", "b", "c")
			mkdirAll(t, dir)
			writeFile(t, filepath.Join(dir, "f"), "x")
			r.waitFor(fmt.Sprintf("m%d/a/b/c/f", i))
		}
		// Deeper, with a file at every level, written as fast as possible.
		dir := root
		var want []string
		rel := ""
		for i := range 12 {
			dir = filepath.Join(dir, fmt.Sprint("l", i))
			rel = join(ifElse(rel == "", ".", rel), fmt.Sprint("l", i))
			mkdirAll(t, dir)
			writeFile(t, filepath.Join(dir, "f"), "x")
			want = append(want, rel+"/f")
		}
		r.waitFor(want...)
	})
}

func ifElse[T any](c bool, a, b T) T {
	if c {
		return a
	}
	return b
}

func TestRenameDirInAroundOut(t *testing.T) {
	bothModes(t, func(t *testing.T, mode Mode) {
		root := t.TempDir()
		outside := t.TempDir()
		tree := filepath.Join(outside, "tree")
		mkdirAll(t, filepath.Join(tree, "x", "y"))
		writeFile(t, filepath.Join(tree, "x", "y", "f1"), "1")
		writeFile(t, filepath.Join(tree, "x", "f2"), "2")
		writeFile(t, filepath.Join(tree, "g"), "3")
		w, r := start(t, mode, Options{Root: root})

		// In: a Create of a directory with content; its subdirectories
		// must be watched too.
		rename(t, tree, filepath.Join(root, "in"))
		r.waitFor(".", "in", "in/x", "in/x/y", "in/x/y/f1", "in/x/f2", "in/g")
		r.reset()
		writeFile(t, filepath.Join(root, "in", "x", "y", "new"), "n")
		r.waitFor("in/x/y/new")
		if mode == ModeInotify {
			if got := w.Status().WatchedDirs; got != 4 {
				t.Errorf("WatchedDirs = %d, want 4", got)
			}
		}

		// Around: the old watches must not keep reporting old names.
		r.reset()
		rename(t, filepath.Join(root, "in"), filepath.Join(root, "moved"))
		r.waitFor("in", "moved")
		writeFile(t, filepath.Join(root, "moved", "x", "y", "new2"), "n")
		r.waitFor("moved/x/y/new2")
		r.sync()
		// (Polling reports the old names as removed; no new file may show
		// up under them.)
		r.assertNone("old name", func(p string) bool { return strings.HasPrefix(p, "in/") && strings.HasSuffix(p, "new2") })

		// Into a subdirectory, then back.
		mkdirAll(t, filepath.Join(root, "sub"))
		rename(t, filepath.Join(root, "moved"), filepath.Join(root, "sub", "moved"))
		rename(t, filepath.Join(root, "sub", "moved"), filepath.Join(root, "moved"))
		r.reset()
		writeFile(t, filepath.Join(root, "moved", "x", "new3"), "n")
		r.waitFor("moved/x/new3")

		// Out: nothing under the old name afterwards.
		r.reset()
		gone := filepath.Join(outside, "out")
		rename(t, filepath.Join(root, "moved"), gone)
		r.waitFor("moved", ".")
		r.reset()
		writeFile(t, filepath.Join(gone, "x", "y", "after"), "n")
		writeFile(t, filepath.Join(gone, "after"), "n")
		r.sync()
		r.assertNone("moved-out tree", func(p string) bool { return strings.HasSuffix(p, "after") })
		if mode == ModeInotify {
			if got := w.Status().WatchedDirs; got != 2 { // root, sub
				t.Errorf("WatchedDirs = %d, want 2", got)
			}
		}
	})
}

func TestSwapDirectories(t *testing.T) {
	// Renames racing with scans: a and b swap names while files are
	// written into both; after the dust settles, writes are reported under
	// the current names.
	bothModes(t, func(t *testing.T, mode Mode) {
		root := t.TempDir()
		for _, d := range []string{"a/sub", "b/sub"} {
			mkdirAll(t, filepath.Join(root, d))
		}
		w, r := start(t, mode, Options{Root: root})
		for i := range 20 {
			rename(t, filepath.Join(root, "a"), filepath.Join(root, "tmp"))
			rename(t, filepath.Join(root, "b"), filepath.Join(root, "a"))
			rename(t, filepath.Join(root, "tmp"), filepath.Join(root, "b"))
			writeFile(t, filepath.Join(root, "a", "sub", fmt.Sprint("fa", i)), "x")
			writeFile(t, filepath.Join(root, "b", "sub", fmt.Sprint("fb", i)), "x")
		}
		r.waitFor("a/sub/fa19", "b/sub/fb19")
		r.reset()
		writeFile(t, filepath.Join(root, "a", "sub", "last"), "x")
		writeFile(t, filepath.Join(root, "b", "sub", "last"), "x")
		r.waitFor("a/sub/last", "b/sub/last")
		r.sync() // the "last" files may have been found by a scan ahead of the swaps' events
		if mode == ModeInotify {
			if got := w.Status().WatchedDirs; got != 5 {
				t.Errorf("WatchedDirs = %d, want 5", got)
			}
		}
	})
}

func TestDeleteLargeTree(t *testing.T) {
	bothModes(t, func(t *testing.T, mode Mode) {
		root := t.TempDir()
		big := filepath.Join(root, "big")
		for i := range 25 {
			for j := range 4 {
				d := filepath.Join(big, fmt.Sprint("d", i), fmt.Sprint("e", j))
				mkdirAll(t, d)
				for k := range 10 {
					writeFile(t, filepath.Join(d, fmt.Sprint("f", k)), "x")
				}
			}
		}
		w, r := start(t, mode, Options{Root: root})
		if mode == ModeInotify {
			if got := w.Status().WatchedDirs; got != 1+1+25+100 {
				t.Errorf("WatchedDirs = %d, want %d", got, 1+1+25+100)
			}
		} else if got := w.Status().PolledPaths; got != 1+1+25+100+1000 {
			t.Errorf("PolledPaths = %d, want %d", got, 1+1+25+100+1000)
		}
		if err := os.RemoveAll(big); err != nil {
			t.Fatal(err)
		}
		r.waitFor("big", ".", "big/d7/e3/f9")
		r.sync()
		if mode == ModeInotify {
			if got := w.Status().WatchedDirs; got != 1 {
				t.Errorf("WatchedDirs after delete = %d, want 1", got)
			}
		}
	})
}

func TestAtomicSave(t *testing.T) {
	bothModes(t, func(t *testing.T, mode Mode) {
		root := t.TempDir()
		mkdirAll(t, filepath.Join(root, "src"))
		f := filepath.Join(root, "src", "main.go")
		writeFile(t, f, "v0")
		_, r := start(t, mode, Options{Root: root})
		for i := range 10 {
			r.reset()
			tmp := filepath.Join(root, "src", ".main.go.swp")
			writeFile(t, tmp, fmt.Sprint("version ", i+1))
			rename(t, tmp, f)
			r.waitFor("src/main.go")
		}
		// And a plain write after the renames is still seen.
		r.reset()
		writeFile(t, f, "final")
		r.waitFor("src/main.go")
	})
}

func TestSymlinksNotFollowed(t *testing.T) {
	bothModes(t, func(t *testing.T, mode Mode) {
		root := t.TempDir()
		outside := t.TempDir()
		_, r := start(t, mode, Options{Root: root})
		if err := os.Symlink(outside, filepath.Join(root, "link")); err != nil {
			t.Fatal(err)
		}
		r.waitFor("link")
		r.reset()
		writeFile(t, filepath.Join(outside, "f"), "x")
		r.sync()
		r.assertNone("path through a symlink", func(p string) bool { return strings.HasPrefix(p, "link/") })
	})
}

func TestRootIsSymlink(t *testing.T) {
	bothModes(t, func(t *testing.T, mode Mode) {
		real := t.TempDir()
		link := filepath.Join(t.TempDir(), "ws")
		if err := os.Symlink(real, link); err != nil {
			t.Fatal(err)
		}
		_, r := start(t, mode, Options{Root: link})
		mkdirAll(t, filepath.Join(real, "a", "b"))
		writeFile(t, filepath.Join(real, "a", "b", "f"), "x")
		r.waitFor("a/b/f")
	})
}

func ignoreNodeModulesAndLogs(rel string, isDir bool) bool {
	base := rel[strings.LastIndexByte(rel, '/')+1:]
	return (isDir && base == "node_modules") || strings.HasSuffix(base, ".log")
}

func TestIgnoredNeverReported(t *testing.T) {
	bothModes(t, func(t *testing.T, mode Mode) {
		root := t.TempDir()
		mkdirAll(t, filepath.Join(root, "node_modules", "pkg"))
		mkdirAll(t, filepath.Join(root, "src"))
		var calls atomic.Int64
		ignore := func(rel string, isDir bool) bool {
			calls.Add(1)
			if strings.Contains(rel, "node_modules/") {
				t.Errorf("Ignore asked about %q, below an ignored directory", rel)
			}
			return ignoreNodeModulesAndLogs(rel, isDir)
		}
		w, r := start(t, mode, Options{Root: root, Ignore: ignore})
		if mode == ModeInotify {
			if got := w.Status().WatchedDirs; got != 2 { // root, src
				t.Errorf("WatchedDirs = %d, want 2", got)
			}
		}
		mkdirAll(t, filepath.Join(root, "node_modules", "a", "b"))
		writeFile(t, filepath.Join(root, "node_modules", "a", "b", "f"), "x")
		writeFile(t, filepath.Join(root, "node_modules", "pkg", "f"), "x")
		writeFile(t, filepath.Join(root, "build.log"), "x")
		mkdirAll(t, filepath.Join(root, "src", "node_modules", "deep"))
		writeFile(t, filepath.Join(root, "src", "node_modules", "deep", "f"), "x")
		writeFile(t, filepath.Join(root, "src", "app.log"), "x")
		rename(t, filepath.Join(root, "src", "app.log"), filepath.Join(root, "src", "app2.log"))
		if err := os.RemoveAll(filepath.Join(root, "node_modules", "pkg")); err != nil {
			t.Fatal(err)
		}
		writeFile(t, filepath.Join(root, "src", "ok.go"), "x")
		r.waitFor("src/ok.go")
		r.sync()
		r.assertNone("ignored path", func(p string) bool {
			return strings.Contains(p, "node_modules") || strings.HasSuffix(p, ".log")
		})
		if calls.Load() == 0 {
			t.Error("Ignore never called")
		}
	})
}

func TestSetIgnore(t *testing.T) {
	bothModes(t, func(t *testing.T, mode Mode) {
		root := t.TempDir()
		mkdirAll(t, filepath.Join(root, "gen", "deep"))
		w, r := start(t, mode, Options{Root: root})
		ignoreGen := func(rel string, isDir bool) bool { return rel == "gen" }

		w.SetIgnore(ignoreGen)
		r.waitRescan()
		r.reset()
		writeFile(t, filepath.Join(root, "gen", "deep", "f"), "x")
		writeFile(t, filepath.Join(root, "gen", "f"), "x")
		r.sync()
		r.assertNone("newly ignored path", func(p string) bool { return strings.HasPrefix(p, "gen") })
		if mode == ModeInotify {
			if got := w.Status().WatchedDirs; got != 1 {
				t.Errorf("WatchedDirs = %d, want 1", got)
			}
		}

		w.SetIgnore(nil)
		r.waitRescan()
		r.reset()
		writeFile(t, filepath.Join(root, "gen", "deep", "g"), "x")
		r.waitFor("gen/deep/g")
		if mode == ModeInotify {
			if got := w.Status().WatchedDirs; got != 3 {
				t.Errorf("WatchedDirs = %d, want 3", got)
			}
		}
	})
}

func TestOverflowRescans(t *testing.T) {
	root := t.TempDir()
	// The first watch of "late" fails (as if its creation event had been
	// lost); the resync after the overflow must watch it.
	// The watcher reports "late" before it tries to watch it, so the test
	// waits for the failed watch itself, not for the report.
	var failed atomic.Bool
	refused := make(chan struct{})
	hooks := &testHooks{addWatch: func(fsw *fsnotify.Watcher, name string) error {
		if filepath.Base(name) == "late" && failed.CompareAndSwap(false, true) {
			close(refused)
			return syscall.EACCES
		}
		return fsw.Add(name)
	}}
	w, r := start(t, ModeInotify, Options{Root: root, hooks: hooks})
	mkdirAll(t, filepath.Join(root, "late"))
	r.waitFor("late")
	select {
	case <-refused:
	case <-time.After(waitLimit):
		t.Fatal("the watch of late was never tried")
	}

	w.injectError(fsnotify.ErrEventOverflow)
	r.waitRescan()
	st := w.Status()
	if st.Overflows != 1 || st.Mode != ModeInotify || st.FallbackReason != "" {
		t.Errorf("status after overflow: %+v", st)
	}
	r.reset()
	writeFile(t, filepath.Join(root, "late", "f"), "x")
	r.waitFor("late/f")

	w.injectError(errors.New("some read error"))
	r.waitRescan()
	if got := w.Status().Overflows; got != 2 {
		t.Errorf("Overflows = %d, want 2", got)
	}
}

func TestENOSPCSwitchesToPolling(t *testing.T) {
	root := t.TempDir()
	hooks := &testHooks{addWatch: func(fsw *fsnotify.Watcher, name string) error {
		if strings.Contains(name, "limit") {
			return fmt.Errorf("add %s: %w", name, syscall.ENOSPC)
		}
		return fsw.Add(name)
	}}
	w, r := start(t, ModeInotify, Options{Root: root, hooks: hooks})
	mkdirAll(t, filepath.Join(root, "limit"))
	r.waitRescan()
	st := w.Status()
	if st.Mode != ModePoll || w.Mode() != ModePoll {
		t.Fatalf("mode after ENOSPC: %+v", st)
	}
	if !strings.Contains(st.FallbackReason, "max_user_watches") || st.WatchedDirs != 0 {
		t.Errorf("status after ENOSPC: %+v", st)
	}
	r.reset()
	writeFile(t, filepath.Join(root, "limit", "f"), "x")
	mkdirAll(t, filepath.Join(root, "x", "y"))
	writeFile(t, filepath.Join(root, "x", "y", "g"), "x")
	r.waitFor("limit/f", "x/y/g")
	if w.Status().PolledPaths == 0 {
		t.Error("PolledPaths = 0 in polling mode")
	}
}

func TestENOSPCAtStart(t *testing.T) {
	root := t.TempDir()
	mkdirAll(t, filepath.Join(root, "a", "b"))
	var n atomic.Int64
	hooks := &testHooks{addWatch: func(fsw *fsnotify.Watcher, name string) error {
		if n.Add(1) > 2 {
			return syscall.ENOSPC
		}
		return fsw.Add(name)
	}}
	w, r := startExpect(t, Options{Root: root, hooks: hooks}, ModePoll)
	if !strings.Contains(w.Status().FallbackReason, "max_user_watches") {
		t.Errorf("status: %+v", w.Status())
	}
	r.waitRescan()
	writeFile(t, filepath.Join(root, "a", "b", "f"), "x")
	r.waitFor("a/b/f")
}

func TestNoInotify(t *testing.T) {
	root := t.TempDir()
	hooks := &testHooks{newFsnotify: func() (*fsnotify.Watcher, error) {
		return nil, fmt.Errorf("inotify_init1: %w", syscall.EMFILE)
	}}
	w, r := startExpect(t, Options{Root: root, hooks: hooks}, ModePoll)
	st := w.Status()
	if !strings.Contains(st.FallbackReason, "inotify unavailable") || !strings.Contains(st.FallbackReason, "max_user_instances") {
		t.Errorf("status: %+v", st)
	}
	r.waitRescan()
	writeFile(t, filepath.Join(root, "f"), "x")
	r.waitFor("f")
}

func TestForcePollHasNoReason(t *testing.T) {
	w, _ := start(t, ModePoll, Options{Root: t.TempDir()})
	if st := w.Status(); st.FallbackReason != "" || st.PolledPaths != 1 {
		t.Errorf("status: %+v", st)
	}
}

func TestRootRemovedFallsBackToPolling(t *testing.T) {
	ws := filepath.Join(t.TempDir(), "ws")
	mkdirAll(t, filepath.Join(ws, "d"))
	w, r := start(t, ModeInotify, Options{Root: ws})
	if err := os.RemoveAll(ws); err != nil {
		t.Fatal(err)
	}
	r.waitRescan()
	if st := w.Status(); st.Mode != ModePoll || !strings.Contains(st.FallbackReason, "root") {
		t.Fatalf("status: %+v", st)
	}
	r.reset()
	mkdirAll(t, filepath.Join(ws, "d"))
	writeFile(t, filepath.Join(ws, "d", "f"), "x")
	r.waitFor("d/f")
}

func TestNewErrors(t *testing.T) {
	ctx := context.Background()
	if _, err := New(ctx, Options{Root: "relative"}); err == nil {
		t.Error("relative root accepted")
	}
	if _, err := New(ctx, Options{Root: filepath.Join(t.TempDir(), "missing")}); err == nil {
		t.Error("missing root accepted")
	}
	f := filepath.Join(t.TempDir(), "file")
	writeFile(t, f, "x")
	if _, err := New(ctx, Options{Root: f}); err == nil {
		t.Error("file root accepted")
	}
}

func TestPendingCoalescesAndCollapses(t *testing.T) {
	p := newPending(3)
	if _, ok := p.take(); ok {
		t.Fatal("take on empty pending")
	}
	for _, s := range []string{"b", "a", "b", "c", "a"} {
		p.add(s)
	}
	ev, ok := p.take()
	if !ok || ev.Rescan || !slices.Equal(ev.Paths, []string{"a", "b", "c"}) {
		t.Fatalf("take = %+v, %v", ev, ok)
	}
	for _, s := range []string{"a", "b", "c", "d", "e"} {
		p.add(s)
	}
	ev, ok = p.take()
	if !ok || !ev.Rescan || len(ev.Paths) != 0 {
		t.Fatalf("take after overflow = %+v, %v", ev, ok)
	}
	if p.collapsed() != 1 {
		t.Errorf("collapsed = %d", p.collapsed())
	}
	if _, ok := p.take(); ok {
		t.Fatal("take after a Rescan was taken")
	}
	p.add("x")
	p.addRescan()
	p.add("y")
	if ev, _ := p.take(); !ev.Rescan {
		t.Fatalf("take = %+v, want Rescan", ev)
	}
}

func TestSlowConsumerCollapsesToRescan(t *testing.T) {
	bothModes(t, func(t *testing.T, mode Mode) {
		root := t.TempDir()
		collapsed := make(chan struct{})
		var once sync.Once
		hooks := &testHooks{collapsed: func() { once.Do(func() { close(collapsed) }) }}
		w, r := start(t, mode, Options{Root: root, MaxPending: 10, hooks: hooks})
		// Nobody reads while 100 files appear: whatever batch the sender
		// holds, the rest collapses into a Rescan, which the consumer gets
		// after that batch.
		for i := range 100 {
			writeFile(t, filepath.Join(root, fmt.Sprint("f", i)), "x")
		}
		select {
		case <-collapsed:
		case <-time.After(waitLimit):
			t.Fatal("pending paths never collapsed")
		}
		r.waitRescan()
		if w.Status().PendingOverflows == 0 {
			t.Error("PendingOverflows = 0")
		}
	})
}

func TestCloseStopsGoroutines(t *testing.T) {
	for _, mode := range []Mode{ModeInotify, ModePoll} {
		t.Run(string(mode), func(t *testing.T) {
			root := t.TempDir()
			mkdirAll(t, filepath.Join(root, "a", "b"))
			before := runtime.NumGoroutine()
			w, r := start(t, mode, Options{Root: root})
			writeFile(t, filepath.Join(root, "a", "b", "f"), "x")
			r.waitFor("a/b/f")
			// Leave something pending, undelivered.
			writeFile(t, filepath.Join(root, "a", "b", "g"), "x")
			if err := w.Close(); err != nil {
				t.Fatal(err)
			}
			if err := w.Close(); err != nil {
				t.Fatal(err)
			}
			drainUntilClosed(t, w)
			waitGoroutines(t, before)
		})
	}
}

func TestContextCancelStops(t *testing.T) {
	root := t.TempDir()
	before := runtime.NumGoroutine()
	ctx, cancel := context.WithCancel(context.Background())
	w, err := New(ctx, Options{Root: root, Logger: quietLogger()})
	if err != nil {
		t.Fatal(err)
	}
	cancel()
	drainUntilClosed(t, w)
	w.Close()
	waitGoroutines(t, before)
}

func TestCloseAfterFallback(t *testing.T) {
	root := t.TempDir()
	before := runtime.NumGoroutine()
	hooks := &testHooks{addWatch: func(fsw *fsnotify.Watcher, name string) error {
		if strings.HasSuffix(name, "limit") {
			return syscall.ENOSPC
		}
		return fsw.Add(name)
	}}
	w, r := start(t, ModeInotify, Options{Root: root, hooks: hooks})
	mkdirAll(t, filepath.Join(root, "limit"))
	r.waitRescan()
	w.Close()
	drainUntilClosed(t, w)
	waitGoroutines(t, before)
}

func drainUntilClosed(t *testing.T, w *Watcher) {
	t.Helper()
	timeout := time.NewTimer(waitLimit)
	defer timeout.Stop()
	for {
		select {
		case _, ok := <-w.Events():
			if !ok {
				return
			}
		case <-timeout.C:
			t.Fatal("Events not closed")
		}
	}
}

// waitGoroutines waits (bounded) until no more goroutines run than before.
// Close waits for the watcher's goroutines and fsnotify's reader, so this
// normally holds at once; the wait only covers runtime bookkeeping.
func waitGoroutines(t *testing.T, before int) {
	t.Helper()
	deadline := time.Now().Add(waitLimit)
	for {
		n := runtime.NumGoroutine()
		if n <= before {
			return
		}
		if time.Now().After(deadline) {
			buf := make([]byte, 1<<20)
			buf = buf[:runtime.Stack(buf, true)]
			t.Fatalf("%d goroutines after Close, %d before:\n%s", n, before, buf)
		}
		runtime.Gosched()
		time.Sleep(time.Millisecond)
	}
}

// TestRandomChurn throws fast random directory operations at the watcher
// (mkdir -p, renames across the tree, removals, writes) without waiting for
// anything, then checks that every directory that exists is watched under
// its current name and nothing else is: a file written in each is reported
// under its right path.
func TestRandomChurn(t *testing.T) {
	bothModes(t, func(t *testing.T, mode Mode) {
		for seed := range int64(4) {
			t.Run(fmt.Sprint("seed", seed), func(t *testing.T) { churn(t, mode, seed) })
		}
	})
}

func churn(t *testing.T, mode Mode, seed int64) {
	root := t.TempDir()
	w, r := start(t, mode, Options{Root: root})
	rng := rand.New(rand.NewPCG(uint64(seed), 42))
	names := []string{"a", "b", "c", "d"}
	randRel := func(depth int) string {
		parts := make([]string, 1+rng.IntN(depth))
		for i := range parts {
			parts[i] = names[rng.IntN(len(names))]
		}
		return strings.Join(parts, "/")
	}
	existingDirs := func() []string {
		var dirs []string
		filepath.WalkDir(root, func(p string, d os.DirEntry, err error) error {
			if err == nil && d.IsDir() && p != root {
				rel, _ := filepath.Rel(root, p)
				dirs = append(dirs, filepath.ToSlash(rel))
			}
			return nil
		})
		return dirs
	}
	for i := range 200 {
		dirs := existingDirs()
		switch op := rng.IntN(10); {
		case op < 3 || len(dirs) == 0:
			os.MkdirAll(filepath.Join(root, randRel(4)), 0o755)
		case op < 6:
			from := dirs[rng.IntN(len(dirs))]
			to := randRel(3)
			if to == from || strings.HasPrefix(to, from+"/") {
				continue
			}
			os.Rename(filepath.Join(root, from), filepath.Join(root, to)) // may fail: fine
		case op < 7:
			os.RemoveAll(filepath.Join(root, dirs[rng.IntN(len(dirs))]))
		default:
			d := dirs[rng.IntN(len(dirs))]
			os.WriteFile(filepath.Join(root, d, fmt.Sprint("f", i)), nil, 0o644)
		}
	}
	r.sync()
	dirs := existingDirs()
	var probes []string
	for _, d := range append(dirs, ".") {
		writeFile(t, filepath.Join(root, d, "probe"), "p")
		probes = append(probes, join(d, "probe"))
	}
	r.waitFor(probes...)
	if mode == ModeInotify {
		r.sync()
		st := w.Status()
		if st.WatchedDirs != len(dirs)+1 || len(w.fsw.WatchList()) != len(dirs)+1 {
			t.Errorf("WatchedDirs = %d, fsnotify has %d, want %d", st.WatchedDirs, len(w.fsw.WatchList()), len(dirs)+1)
		}
	}
}
