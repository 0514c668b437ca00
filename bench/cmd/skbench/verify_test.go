package main

import (
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// A benchmark that restores wrong data must fail: verify catches changed
// content, missing and extra files, modes and symlink targets.
func TestVerify(t *testing.T) {
	ctx := context.Background()
	mk := func() string {
		dir := t.TempDir()
		for p, s := range map[string]string{"a.go": "package a\n", "d/b.txt": "bbb", "d/e/c": ""} {
			if err := writeFile(filepath.Join(dir, p), []byte(s), 0o644); err != nil {
				t.Fatal(err)
			}
		}
		if err := os.Symlink("d/b.txt", filepath.Join(dir, "link")); err != nil {
			t.Fatal(err)
		}
		return dir
	}
	want, err := scan(ctx, mk())
	if err != nil {
		t.Fatal(err)
	}
	if files, bytes := want.stats(); files != 3 || bytes != 13 {
		t.Fatalf("stats = %d files, %d bytes", files, bytes)
	}
	if err := verify(ctx, "test", mk(), want); err != nil {
		t.Fatalf("identical trees: %v", err)
	}
	for name, mutate := range map[string]func(dir string) error{
		"content": func(dir string) error { return os.WriteFile(filepath.Join(dir, "d/b.txt"), []byte("bbc"), 0o644) },
		"size":    func(dir string) error { return os.WriteFile(filepath.Join(dir, "d/e/c"), []byte("x"), 0o644) },
		"missing": func(dir string) error { return os.Remove(filepath.Join(dir, "a.go")) },
		"extra":   func(dir string) error { return os.WriteFile(filepath.Join(dir, "new"), nil, 0o644) },
		"mode":    func(dir string) error { return os.Chmod(filepath.Join(dir, "a.go"), 0o755) },
		"link": func(dir string) error {
			os.Remove(filepath.Join(dir, "link"))
			return os.Symlink("a.go", filepath.Join(dir, "link"))
		},
	} {
		dir := mk()
		if err := mutate(dir); err != nil {
			t.Fatal(err)
		}
		if err := verify(ctx, "test", dir, want); err == nil || !strings.Contains(err.Error(), "WRONG DATA") {
			t.Errorf("%s: verify = %v, want a failure", name, err)
		}
	}
}

func TestChangeRevert(t *testing.T) {
	dir := t.TempDir()
	p := filepath.Join(dir, "f.go")
	if err := os.WriteFile(p, []byte("package f\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	before, _ := os.Stat(p)
	c, err := applyChange(p, "// x")
	if err != nil {
		t.Fatal(err)
	}
	if b, _ := os.ReadFile(p); string(b) != "package f\n// x\n" {
		t.Fatalf("after the change: %q", b)
	}
	if err := c.revert(); err != nil {
		t.Fatal(err)
	}
	after, _ := os.Stat(p)
	if b, _ := os.ReadFile(p); string(b) != "package f\n" || !after.ModTime().Equal(before.ModTime()) {
		t.Fatalf("after revert: %q, mtime %v (was %v)", b, after.ModTime(), before.ModTime())
	}
}
