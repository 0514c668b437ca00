// Package workspacetest builds workspaces for tests and compares two
// directory trees exactly: entry types, contents, modes, symlink targets and
// mtimes (ns).
package workspacetest

import (
	"bytes"
	"fmt"
	"io/fs"
	"math/rand/v2"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

// Options shape a generated workspace.
type Options struct {
	SmallFiles int   // number of small files spread over nested directories
	LargeSize  int64 // size of one large random file (0: none)
	Seed       uint64
}

// Generate fills dir with a workspace exercising every feature: nested and
// empty directories, zero-byte files, a large file, exec and setuid bits,
// relative, absolute and dangling symlinks, names with spaces and non-ASCII
// letters, and opts.SmallFiles small files. It sets distinct ns mtimes.
func Generate(t testing.TB, dir string, opts Options) {
	t.Helper()
	r := rand.New(rand.NewPCG(opts.Seed, 42))
	must := func(err error) {
		t.Helper()
		if err != nil {
			t.Fatal(err)
		}
	}
	write := func(rel string, data []byte, mode os.FileMode) {
		t.Helper()
		p := filepath.Join(dir, rel)
		must(os.MkdirAll(filepath.Dir(p), 0o755))
		must(os.WriteFile(p, data, 0o644))
		must(os.Chmod(p, mode))
	}
	must(os.MkdirAll(dir, 0o755))
	write("README.md", []byte("# hello\n"), 0o644)
	write("empty.txt", nil, 0o644)
	write("bin/run.sh", []byte("#!/bin/sh\necho hi\n"), 0o755)
	write("bin/setuid-tool", []byte("x"), os.ModeSetuid|0o755) // os.Chmod takes Go mode bits, not 0o4000
	write("bin/setgid-tool", []byte("x"), os.ModeSetgid|0o750)
	for rel, bit := range map[string]os.FileMode{"bin/setuid-tool": os.ModeSetuid, "bin/setgid-tool": os.ModeSetgid} {
		if fi, err := os.Lstat(filepath.Join(dir, rel)); err != nil || fi.Mode()&bit == 0 {
			t.Fatalf("fixture: %s lacks its %v bit (%v, %v)", rel, bit, fi.Mode(), err)
		}
	}
	write("with space/file name.txt", []byte("spaces"), 0o600)
	write("ünïcödé/日本語.txt", []byte("こんにちは"), 0o644)
	write("deep/a/b/c/d/e/f.txt", []byte("deep"), 0o644)
	must(os.MkdirAll(filepath.Join(dir, "empty-dir/nested-empty"), 0o755))
	must(os.MkdirAll(filepath.Join(dir, "readonly-dir"), 0o755))
	write("readonly-dir/inside.txt", []byte("ro"), 0o444)
	must(os.Symlink("README.md", filepath.Join(dir, "link-relative")))
	must(os.Symlink("/etc/hostname", filepath.Join(dir, "link-absolute")))
	must(os.Symlink("does/not/exist", filepath.Join(dir, "link-dangling")))
	must(os.Symlink("../README.md", filepath.Join(dir, "bin/link-up")))
	must(os.Symlink("deep/a", filepath.Join(dir, "link-to-dir")))
	if opts.LargeSize > 0 {
		big := make([]byte, opts.LargeSize)
		fillRandom(r, big)
		write("large/big.bin", big, 0o644)
	}
	for i := 0; i < opts.SmallFiles; i++ {
		n := r.IntN(2048) + 1
		data := make([]byte, n)
		// Source-like, compressible content with some randomness.
		for j := range data {
			data[j] = "abcdefghij \n{}();=+"[r.IntN(19)]
		}
		write(fmt.Sprintf("src/m%02d/p%02d/f%05d.go", i%37, i%13, i), data, 0o644)
	}
	// Distinct mtimes with nanoseconds, children before parents.
	var paths []string
	must(filepath.WalkDir(dir, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if p != dir {
			paths = append(paths, p)
		}
		return nil
	}))
	sort.Sort(sort.Reverse(sort.StringSlice(paths)))
	base := time.Date(2024, 3, 1, 12, 0, 0, 0, time.UTC).UnixNano()
	for i, p := range paths {
		ts := base + int64(i)*1_000_003_777
		tv := []unix.Timespec{unix.NsecToTimespec(ts), unix.NsecToTimespec(ts)}
		must(unix.UtimesNanoAt(unix.AT_FDCWD, p, tv, unix.AT_SYMLINK_NOFOLLOW))
	}
	// readonly-dir's mode last, after its children exist.
	must(os.Chmod(filepath.Join(dir, "readonly-dir"), 0o555))
	fixDirTime(t, filepath.Join(dir, "readonly-dir"), base-7)
}

func fixDirTime(t testing.TB, p string, ns int64) {
	tv := []unix.Timespec{unix.NsecToTimespec(ns), unix.NsecToTimespec(ns)}
	if err := unix.UtimesNanoAt(unix.AT_FDCWD, p, tv, unix.AT_SYMLINK_NOFOLLOW); err != nil {
		t.Fatal(err)
	}
}

func fillRandom(r *rand.Rand, b []byte) {
	for i := 0; i+8 <= len(b); i += 8 {
		v := r.Uint64()
		for k := 0; k < 8; k++ {
			b[i+k] = byte(v >> (8 * k))
		}
	}
	for i := len(b) &^ 7; i < len(b); i++ {
		b[i] = byte(r.Uint32())
	}
}

// RandomBytes returns n random bytes, the same for the same seed.
func RandomBytes(seed uint64, n int) []byte {
	b := make([]byte, n)
	fillRandom(rand.New(rand.NewPCG(seed, 7)), b)
	return b
}

// RandomFile writes size random bytes to path.
func RandomFile(t testing.TB, path string, size int64, seed uint64) {
	t.Helper()
	b := RandomBytes(seed, int(size))
	if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(path, b, 0o644); err != nil {
		t.Fatal(err)
	}
}

// Entry is one compared path.
type Entry struct {
	Type    fs.FileMode
	Mode    fs.FileMode
	MtimeNs int64
	Size    int64
	Target  string
	Content []byte
}

// Snapshot reads the tree under dir, skipping names in skip (relative paths).
func Snapshot(t testing.TB, dir string, skip ...string) map[string]Entry {
	t.Helper()
	out := make(map[string]Entry)
	err := filepath.WalkDir(dir, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		rel, _ := filepath.Rel(dir, p)
		if rel == "." {
			return nil
		}
		for _, s := range skip {
			if rel == s || strings.HasPrefix(rel, s+"/") {
				if d.IsDir() {
					return filepath.SkipDir
				}
				return nil
			}
		}
		fi, err := os.Lstat(p)
		if err != nil {
			return err
		}
		var st unix.Stat_t
		if err := unix.Lstat(p, &st); err != nil {
			return err
		}
		e := Entry{Type: fi.Mode().Type(), Mode: fi.Mode() & (fs.ModePerm | fs.ModeSetuid | fs.ModeSetgid | fs.ModeSticky), MtimeNs: st.Mtim.Nano()}
		switch {
		case fi.Mode().IsRegular():
			e.Size = fi.Size()
			if e.Content, err = os.ReadFile(p); err != nil {
				return err
			}
		case fi.Mode()&fs.ModeSymlink != 0:
			if e.Target, err = os.Readlink(p); err != nil {
				return err
			}
		}
		out[filepath.ToSlash(rel)] = e
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	return out
}

// Diff returns human-readable differences between two snapshots (empty when
// identical).
func Diff(want, got map[string]Entry) []string {
	var out []string
	var keys []string
	for k := range want {
		keys = append(keys, k)
	}
	for k := range got {
		if _, ok := want[k]; !ok {
			keys = append(keys, k)
		}
	}
	sort.Strings(keys)
	for _, k := range keys {
		w, wok := want[k]
		g, gok := got[k]
		switch {
		case !gok:
			out = append(out, "missing: "+k)
		case !wok:
			out = append(out, "unexpected: "+k)
		case w.Type != g.Type:
			out = append(out, fmt.Sprintf("%s: type %v, want %v", k, g.Type, w.Type))
		case w.Mode != g.Mode:
			out = append(out, fmt.Sprintf("%s: mode %v, want %v", k, g.Mode, w.Mode))
		case w.Target != g.Target:
			out = append(out, fmt.Sprintf("%s: target %q, want %q", k, g.Target, w.Target))
		case w.Size != g.Size || !bytes.Equal(w.Content, g.Content):
			out = append(out, fmt.Sprintf("%s: content differs (size %d, want %d)", k, g.Size, w.Size))
		case w.MtimeNs != g.MtimeNs:
			out = append(out, fmt.Sprintf("%s: mtime %d, want %d", k, g.MtimeNs, w.MtimeNs))
		}
	}
	return out
}

// RequireEqual fails the test if the trees under want and got differ.
func RequireEqual(t testing.TB, want, got string, skip ...string) {
	t.Helper()
	d := Diff(Snapshot(t, want, skip...), Snapshot(t, got, skip...))
	if len(d) > 0 {
		if len(d) > 30 {
			d = append(d[:30], fmt.Sprintf("... and %d more", len(d)-30))
		}
		t.Fatalf("%s and %s differ:\n  %s", want, got, strings.Join(d, "\n  "))
	}
}

// MakeWritable restores write permission under dir so t.TempDir cleanup can
// remove it.
func MakeWritable(dir string) {
	_ = filepath.WalkDir(dir, func(p string, d fs.DirEntry, err error) error {
		if err == nil && d.IsDir() {
			_ = os.Chmod(p, 0o755)
		}
		return nil
	})
}

// ClearSetuid clears the setuid and setgid bits of every file under dir:
// what a restore without --keep-setuid makes of them.
func ClearSetuid(t testing.TB, dir string) {
	t.Helper()
	err := filepath.WalkDir(dir, func(p string, d fs.DirEntry, err error) error {
		if err != nil || d.Type()&fs.ModeSymlink != 0 {
			return err
		}
		fi, err := d.Info()
		if err != nil {
			return err
		}
		if m := fi.Mode(); m&(fs.ModeSetuid|fs.ModeSetgid) != 0 {
			return os.Chmod(p, m&^(fs.ModeSetuid|fs.ModeSetgid))
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
}
