package blobstore

import (
	"errors"
	"path"
	"path/filepath"
	"strings"
	"testing"
)

func TestValidateKey(t *testing.T) {
	tests := []struct {
		key string
		ok  bool
	}{
		{"a", true},
		{"projects/p1/packs/ab/abcdef", true},
		{"a.b/.c/..d/d..", true},
		{"sp ace/ünïcode/%2F/?#&=", true},
		{strings.Repeat("x", MaxKeyLen), true},
		{"", false},
		{strings.Repeat("x", MaxKeyLen+1), false},
		{"/etc/passwd", false},
		{"/", false},
		{"a/", false},
		{"a//b", false},
		{".", false},
		{"..", false},
		{"../x", false},
		{"a/../../x", false},
		{"a/./b", false},
		{"a/..", false},
		{"a\\b", false},
		{"..\\x", false},
		{"a\x00b", false},
		{"a\nb", false},
		{"a\x7fb", false},
		{"a\xffb", false},
	}
	for _, tt := range tests {
		err := ValidateKey(tt.key)
		if tt.ok && err != nil {
			t.Errorf("ValidateKey(%q) = %v, want nil", tt.key, err)
		}
		if !tt.ok && !errors.Is(err, ErrInvalidKey) {
			t.Errorf("ValidateKey(%q) = %v, want ErrInvalidKey", tt.key, err)
		}
	}
}

func TestValidatePrefix(t *testing.T) {
	tests := []struct {
		prefix string
		ok     bool
	}{
		{"", true},
		{"a", true},
		{"a/", true},
		{"a/b", true},
		{"a/b/", true},
		{"a/.", true},  // matches "a/.x"
		{"a/..", true}, // matches "a/..x"
		{".", true},
		{"/", false},
		{"/a", false},
		{"a//", false},
		{"a//b", false},
		{"../", false},
		{"a/../b", false},
		{"./a", false},
		{"a\\", false},
		{"a\x00", false},
		{strings.Repeat("x", MaxKeyLen+1), false},
	}
	for _, tt := range tests {
		err := ValidatePrefix(tt.prefix)
		if tt.ok && err != nil {
			t.Errorf("ValidatePrefix(%q) = %v, want nil", tt.prefix, err)
		}
		if !tt.ok && !errors.Is(err, ErrInvalidKey) {
			t.Errorf("ValidatePrefix(%q) = %v, want ErrInvalidKey", tt.prefix, err)
		}
	}
}

func FuzzValidateKey(f *testing.F) {
	for _, s := range []string{"a", "a/b", "../x", "a/../../x", "/etc/passwd", "a\x00b", "a\\b", "a//b", ".", "a/.", "x/y.z/"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, key string) {
		err := ValidateKey(key)
		perr := ValidatePrefix(key)
		if err != nil {
			if !errors.Is(err, ErrInvalidKey) {
				t.Fatalf("ValidateKey(%q) = %v, does not wrap ErrInvalidKey", key, err)
			}
			if perr != nil && !errors.Is(perr, ErrInvalidKey) {
				t.Fatalf("ValidatePrefix(%q) = %v, does not wrap ErrInvalidKey", key, perr)
			}
			return
		}
		// Every valid key is a valid prefix, a clean relative path that
		// stays inside any directory it is joined to.
		if perr != nil {
			t.Fatalf("valid key %q is not a valid prefix: %v", key, perr)
		}
		if len(key) == 0 || len(key) > MaxKeyLen {
			t.Fatalf("valid key %q has bad length %d", key, len(key))
		}
		if path.Clean(key) != key || !filepath.IsLocal(key) || strings.ContainsAny(key, "\\\x00") {
			t.Fatalf("valid key %q is not a clean local path", key)
		}
		if strings.Contains(key, "..") && (strings.HasPrefix(key, "../") || strings.Contains(key, "/../") || strings.HasSuffix(key, "/..") || key == "..") {
			t.Fatalf("valid key %q escapes", key)
		}
	})
}
