package main

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/json"
	"fmt"
	"io"
	"io/fs"
	"math/rand/v2"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"sort"
	"strings"
	"sync"
	"time"
)

// recipe names the way the reference workspace is built; change it when the
// recipe changes so cached workspaces are rebuilt.
const recipe = "go-mod-sources+goroot-src+3-random/v1"

// randomFiles are the incompressible files of the reference workspace.
var randomFiles = []struct {
	name string
	size int64
}{{"random/large-32m.bin", 32 << 20}, {"random/medium-16m.bin", 16 << 20}, {"random/small-8m.bin", 8 << 20}}

// wsInfo describes a reference workspace; it is kept next to it (not in it).
type wsInfo struct {
	Recipe  string   `json:"recipe"`
	SizeMB  int      `json:"size_mb"`
	Sources []string `json:"sources"`
}

// referenceWorkspace returns the cached reference workspace under benchDir,
// building it first if it is missing or was built with other settings.
func referenceWorkspace(ctx context.Context, benchDir string, sizeMB int) (string, wsInfo, error) {
	dir := filepath.Join(benchDir, "workspace")
	infoPath := filepath.Join(benchDir, "workspace.json")
	var info wsInfo
	if b, err := os.ReadFile(infoPath); err == nil && json.Unmarshal(b, &info) == nil &&
		info.Recipe == recipe && info.SizeMB == sizeMB {
		if _, err := os.Stat(dir); err == nil {
			return dir, info, nil
		}
	}
	logf("building the reference workspace in %s (once; cached)", dir)
	start := time.Now()
	tmp := dir + ".tmp"
	for _, d := range []string{dir, tmp} {
		if err := removeAll(d); err != nil {
			return "", info, err
		}
	}
	_ = os.Remove(infoPath)
	info = wsInfo{Recipe: recipe, SizeMB: sizeMB}
	budget := int64(sizeMB) * 1e6

	rng := rand.New(rand.NewChaCha8([32]byte{'s', 'k', 'b', 'e', 'n', 'c', 'h'}))
	for _, rf := range randomFiles {
		buf := make([]byte, rf.size)
		for i := 0; i+8 <= len(buf); i += 8 {
			v := rng.Uint64()
			for j := range 8 {
				buf[i+j] = byte(v >> (8 * j))
			}
		}
		if err := writeFile(filepath.Join(tmp, rf.name), buf, 0o644); err != nil {
			return "", info, err
		}
		budget -= rf.size
	}
	info.Sources = append(info.Sources, "3 random files (56 MiB)")

	mods, err := moduleDirs()
	if err != nil {
		return "", info, err
	}
	var modBytes int64
	for _, m := range mods {
		n, err := copyTree(ctx, m.Dir, filepath.Join(tmp, "mod", m.Path+"@"+m.Version), &budget)
		if err != nil {
			return "", info, err
		}
		modBytes += n
	}
	info.Sources = append(info.Sources, fmt.Sprintf("%d module source trees (%.1f MB)", len(mods), float64(modBytes)/1e6))
	if modBytes < 400e6 && budget > 0 {
		goroot := ""
		if out, err := exec.Command("go", "env", "GOROOT").Output(); err == nil {
			goroot = filepath.Join(strings.TrimSpace(string(out)), "src")
		}
		n, err := copyTree(ctx, goroot, filepath.Join(tmp, "goroot", "src"), &budget)
		if err != nil {
			return "", info, err
		}
		info.Sources = append(info.Sources, fmt.Sprintf("%s (%.1f MB)", goroot, float64(n)/1e6))
	}
	if err := os.Rename(tmp, dir); err != nil {
		return "", info, err
	}
	b, _ := json.MarshalIndent(info, "", "  ")
	if err := os.WriteFile(infoPath, b, 0o644); err != nil {
		return "", info, err
	}
	logf("built the reference workspace in %.1f s", time.Since(start).Seconds())
	return dir, info, nil
}

type module struct {
	Path, Version, Dir string
	Main               bool
}

// moduleDirs lists the downloaded modules of this project's build list
// (not the main module), sorted by path.
func moduleDirs() ([]module, error) {
	cmd := exec.Command("go", "list", "-m", "-e", "-json", "all")
	cmd.Env = append(os.Environ(), "GOFLAGS=-mod=readonly", "GOPROXY=off")
	out, err := cmd.Output()
	if err != nil {
		return nil, fmt.Errorf("go list -m all: %w", err)
	}
	var mods []module
	dec := json.NewDecoder(bytes.NewReader(out))
	for dec.More() {
		var m module
		if err := dec.Decode(&m); err != nil {
			return nil, err
		}
		if !m.Main && m.Dir != "" {
			mods = append(mods, m)
		}
	}
	sort.Slice(mods, func(i, j int) bool { return mods[i].Path < mods[j].Path })
	return mods, nil
}

// copyTree copies the regular files of src to dst (owner-writable) while
// *budget allows, in lexical order, and returns the bytes copied.
func copyTree(ctx context.Context, src, dst string, budget *int64) (int64, error) {
	var n int64
	err := filepath.WalkDir(src, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if ctx.Err() != nil {
			return ctx.Err()
		}
		if !d.Type().IsRegular() {
			return nil
		}
		fi, err := d.Info()
		if err != nil {
			return err
		}
		if fi.Size() > *budget {
			*budget = 0 // over the cap: copy nothing more, here or later
			return filepath.SkipAll
		}
		rel, _ := filepath.Rel(src, p)
		if err := copyFile(p, filepath.Join(dst, rel), fi.Mode().Perm()|0o200); err != nil {
			return err
		}
		*budget -= fi.Size()
		n += fi.Size()
		return nil
	})
	return n, err
}

func copyFile(src, dst string, perm fs.FileMode) error {
	in, err := os.Open(src)
	if err != nil {
		return err
	}
	defer in.Close()
	if err := os.MkdirAll(filepath.Dir(dst), 0o755); err != nil {
		return err
	}
	out, err := os.OpenFile(dst, os.O_WRONLY|os.O_CREATE|os.O_EXCL, perm)
	if err != nil {
		return err
	}
	if _, err := io.Copy(out, in); err != nil {
		out.Close()
		return err
	}
	return out.Close()
}

func writeFile(p string, data []byte, perm fs.FileMode) error {
	if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
		return err
	}
	return os.WriteFile(p, data, perm)
}

// removeAll removes a tree, first making its directories writable (restored
// trees may hold read-only directories).
func removeAll(dir string) error {
	_ = filepath.WalkDir(dir, func(p string, d fs.DirEntry, err error) error {
		if err == nil && d.IsDir() {
			_ = os.Chmod(p, 0o755)
		}
		return nil
	})
	return os.RemoveAll(dir)
}

// entry is what the benchmark compares per path: type and permission bits,
// and size + SHA-256 for regular files or the target for symlinks.
type entry struct {
	Mode fs.FileMode
	Size int64
	Hash [32]byte
	Link string
}

// manifest maps slash-separated relative paths (not ".") to entries.
type manifest map[string]entry

func (m manifest) stats() (files int, bytes int64) {
	for _, e := range m {
		if e.Mode.IsRegular() {
			files++
			bytes += e.Size
		}
	}
	return files, bytes
}

// scan walks root and hashes every regular file (in parallel).
func scan(ctx context.Context, root string) (manifest, error) {
	m := manifest{}
	var files []string
	err := filepath.WalkDir(root, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if ctx.Err() != nil {
			return ctx.Err()
		}
		if p == root {
			return nil
		}
		rel, _ := filepath.Rel(root, p)
		rel = filepath.ToSlash(rel)
		fi, err := d.Info()
		if err != nil {
			return err
		}
		e := entry{Mode: fi.Mode().Type() | fi.Mode().Perm()}
		switch {
		case fi.Mode().IsRegular():
			e.Size = fi.Size()
			files = append(files, rel)
		case fi.Mode()&fs.ModeSymlink != 0:
			if e.Link, err = os.Readlink(p); err != nil {
				return err
			}
		}
		m[rel] = e
		return nil
	})
	if err != nil {
		return nil, err
	}
	var (
		mu       sync.Mutex
		firstErr error
		wg       sync.WaitGroup
		work     = make(chan string)
	)
	for range runtime.NumCPU() {
		wg.Go(func() {
			for rel := range work {
				h, err := hashFile(filepath.Join(root, filepath.FromSlash(rel)))
				mu.Lock()
				if err != nil && firstErr == nil {
					firstErr = err
				}
				e := m[rel]
				e.Hash = h
				m[rel] = e
				mu.Unlock()
			}
		})
	}
	for _, rel := range files {
		if ctx.Err() != nil {
			break
		}
		work <- rel
	}
	close(work)
	wg.Wait()
	if firstErr == nil {
		firstErr = ctx.Err()
	}
	return m, firstErr
}

func hashFile(p string) ([32]byte, error) {
	var sum [32]byte
	f, err := os.Open(p)
	if err != nil {
		return sum, err
	}
	defer f.Close()
	h := sha256.New()
	if _, err := io.Copy(h, f); err != nil {
		return sum, err
	}
	copy(sum[:], h.Sum(nil))
	return sum, nil
}

// verify scans a restored tree and fails unless it equals want.
func verify(ctx context.Context, who, restored string, want manifest) error {
	got, err := scan(ctx, restored)
	if err != nil {
		return fmt.Errorf("%s: scanning the restored tree: %w", who, err)
	}
	var diffs []string
	for _, p := range sortedKeys(want) {
		w := want[p]
		g, ok := got[p]
		switch {
		case !ok:
			diffs = append(diffs, "missing "+p)
		case g.Mode != w.Mode:
			diffs = append(diffs, fmt.Sprintf("%s: mode %v, want %v", p, g.Mode, w.Mode))
		case g.Size != w.Size:
			diffs = append(diffs, fmt.Sprintf("%s: %d bytes, want %d", p, g.Size, w.Size))
		case g.Hash != w.Hash:
			diffs = append(diffs, p+": content differs")
		case g.Link != w.Link:
			diffs = append(diffs, fmt.Sprintf("%s: symlink to %q, want %q", p, g.Link, w.Link))
		}
	}
	for _, p := range sortedKeys(got) {
		if _, ok := want[p]; !ok {
			diffs = append(diffs, "unexpected "+p)
		}
	}
	if len(diffs) == 0 {
		return nil
	}
	n := len(diffs)
	if n > 10 {
		diffs = append(diffs[:10], "...")
	}
	return fmt.Errorf("%s RESTORED WRONG DATA: %d differences between %s and the workspace:\n  %s",
		who, n, restored, strings.Join(diffs, "\n  "))
}

func sortedKeys(m manifest) []string {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	return keys
}

// change is the one-file edit of the incremental step: it appends a line to
// a source file and can put the file back as it was (content and mtime).
type change struct {
	path  string
	size  int64
	mtime time.Time
}

// pickChangeFile picks a source file in the middle of the sorted tree (a .go
// file when there is one).
func pickChangeFile(root string, m manifest) string {
	var candidates, any []string
	for _, p := range sortedKeys(m) {
		if m[p].Mode.IsRegular() && m[p].Mode.Perm()&0o200 != 0 {
			any = append(any, p)
			if strings.HasSuffix(p, ".go") {
				candidates = append(candidates, p)
			}
		}
	}
	if len(candidates) == 0 {
		candidates = any
	}
	if len(candidates) == 0 {
		return ""
	}
	return filepath.Join(root, filepath.FromSlash(candidates[len(candidates)/2]))
}

func applyChange(path, line string) (*change, error) {
	fi, err := os.Stat(path)
	if err != nil {
		return nil, err
	}
	c := &change{path: path, size: fi.Size(), mtime: fi.ModTime()}
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_APPEND, 0)
	if err != nil {
		return nil, err
	}
	if _, err := f.WriteString(line + "\n"); err != nil {
		f.Close()
		return nil, err
	}
	return c, f.Close()
}

func (c *change) revert() error {
	if err := os.Truncate(c.path, c.size); err != nil {
		return err
	}
	return os.Chtimes(c.path, c.mtime, c.mtime)
}
