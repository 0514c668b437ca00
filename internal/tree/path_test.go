package tree

import (
	"errors"
	"reflect"
	"strings"
	"testing"
)

func TestPaths(t *testing.T) {
	tests := []struct {
		in   string
		want []string // nil: invalid
	}{
		{"a", []string{"a"}},
		{"a/b/c.txt", []string{"a", "b", "c.txt"}},
		{"dir with space/ünï/文件", []string{"dir with space", "ünï", "文件"}},
		{`back\slash/a\..\b`, []string{`back\slash`, `a\..\b`}},
		{"...", []string{"..."}},
		{"a/.hidden/..x", []string{"a", ".hidden", "..x"}},
		{"\xff\xfe", []string{"\xff\xfe"}},
		{"", nil},
		{"/", nil},
		{"/etc/passwd", nil},
		{"a/", nil},
		{"a//b", nil},
		{".", nil},
		{"..", nil},
		{"./a", nil},
		{"a/.", nil},
		{"a/../b", nil},
		{"../a", nil},
		{"a/..", nil},
		{"a\x00b", nil},
		{strings.Repeat("n", MaxNameLen+1), nil},
		{strings.Repeat("abc/", MaxPathLen/4) + "x", nil},
		{strings.Repeat("n", MaxNameLen), []string{strings.Repeat("n", MaxNameLen)}},
	}
	for _, tt := range tests {
		got, err := SplitPath(tt.in)
		clean, cerr := CleanPath(tt.in)
		if tt.want == nil {
			if !errors.Is(err, ErrInvalid) || !errors.Is(cerr, ErrInvalid) {
				t.Errorf("%q: SplitPath err %v, CleanPath err %v, want ErrInvalid", tt.in, err, cerr)
			}
			continue
		}
		if err != nil || !reflect.DeepEqual(got, tt.want) {
			t.Errorf("SplitPath(%q) = %q, %v; want %q", tt.in, got, err, tt.want)
		}
		if cerr != nil || clean != tt.in {
			t.Errorf("CleanPath(%q) = %q, %v", tt.in, clean, cerr)
		}
	}
}

func FuzzCleanPath(f *testing.F) {
	for _, s := range []string{"a", "a/b", "/a", "a/../b", "a//b", "./a", "a/", "..", `a\b`, "\xff/\x00", ""} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, p string) {
		clean, err := CleanPath(p)
		elems, serr := SplitPath(p)
		if (err == nil) != (serr == nil) {
			t.Fatalf("CleanPath err %v, SplitPath err %v", err, serr)
		}
		if err != nil {
			if !errors.Is(err, ErrInvalid) {
				t.Fatalf("error does not wrap ErrInvalid: %v", err)
			}
			return
		}
		if again, err := CleanPath(clean); err != nil || again != clean {
			t.Fatalf("CleanPath(%q) = %q, %v: not stable", clean, again, err)
		}
		if strings.Join(elems, "/") != clean {
			t.Fatalf("elements %q do not join to %q", elems, clean)
		}
		if clean == "" || clean[0] == '/' || len(clean) > MaxPathLen {
			t.Fatalf("bad clean path %q", clean)
		}
		for _, e := range elems {
			if e == "" || e == "." || e == ".." || strings.ContainsAny(e, "/\x00") {
				t.Fatalf("bad element %q in %q", e, clean)
			}
		}
	})
}
