package links

import (
	"net/url"
	"strings"
	"testing"
	"time"

	"github.com/sandkeep/sandkeep/internal/urlsign"
)

func TestParseRange(t *testing.T) {
	const size = 1000
	for _, tc := range []struct {
		header          string
		start, length   int64
		ok, satisfiable bool
	}{
		{"bytes=0-0", 0, 1, true, true},
		{"bytes=0-999", 0, 1000, true, true},
		{"bytes=0-5000", 0, 1000, true, true},
		{"bytes=10-", 10, 990, true, true},
		{"bytes=-1", 999, 1, true, true},
		{"bytes=-5000", 0, 1000, true, true},
		{"bytes= 5 - 9 ", 5, 5, true, true},
		{"bytes=1000-", 0, 0, true, false},
		{"bytes=1000-1001", 0, 0, true, false},
		{"bytes=-0", 0, 0, true, false},
		{"bytes=5-4", 0, 0, false, false},
		{"bytes=0-1,3-4", 0, 0, false, false},
		{"bytes=a-b", 0, 0, false, false},
		{"bytes=+1-2", 0, 0, false, false},
		{"bytes=-+2", 0, 0, false, false},
		{"bytes=", 0, 0, false, false},
		{"bytes=-", 0, 0, false, false},
		{"bytes=5", 0, 0, false, false},
		{"items=0-1", 0, 0, false, false},
		{"bytes=99999999999999999999-", 0, 0, false, false},
	} {
		start, length, ok, sat := parseRange(tc.header, size)
		if ok != tc.ok || sat != tc.satisfiable || (sat && (start != tc.start || length != tc.length)) {
			t.Errorf("parseRange(%q) = %d, %d, %v, %v; want %d, %d, %v, %v", tc.header, start, length, ok, sat, tc.start, tc.length, tc.ok, tc.satisfiable)
		}
	}
	if _, _, ok, sat := parseRange("bytes=0-", 0); !ok || sat {
		t.Errorf("a range of an empty file must be unsatisfiable")
	}
}

func TestETagMatch(t *testing.T) {
	const tag = `"blake3:ab"`
	for h, want := range map[string]bool{
		`"blake3:ab"`:      true,
		`W/"blake3:ab"`:    true,
		`"x", "blake3:ab"`: true,
		`*`:                true,
		`"blake3:abc"`:     false,
		`blake3:ab`:        false,
		`"x",W/"y"`:        false,
	} {
		if got := etagMatch(h, tag); got != want {
			t.Errorf("etagMatch(%q) = %v, want %v", h, got, want)
		}
	}
	if !ifRange("", tag) || !ifRange(tag, tag) || ifRange(`W/`+tag, tag) || ifRange("Mon, 02 Jan 2006 15:04:05 GMT", tag) {
		t.Error("ifRange")
	}
}

// TestSignCoversProjectPathVersion: a link verifies for exactly its
// project, path and version, and its URL decodes to the signed path.
func TestSignCoversProjectPathVersion(t *testing.T) {
	s, err := urlsign.New([]byte(strings.Repeat("k", 32)))
	if err != nil {
		t.Fatal(err)
	}
	l := NewLinker(s, "https://files.example.com/base/")
	exp := time.Now().Add(time.Hour)
	link := l.Sign("prj_a", "dir with space/日本 #1?.txt", 3, exp)
	u, err := url.Parse(link)
	if err != nil {
		t.Fatal(err)
	}
	if !strings.HasPrefix(link, "https://files.example.com/base/v1/projects/prj_a/files/") {
		t.Fatalf("link %s", link)
	}
	p := strings.TrimPrefix(u.Path, "/base")
	if p != URLPath("prj_a", "dir with space/日本 #1?.txt") {
		t.Fatalf("link path decodes to %q", p)
	}
	if err := s.Verify("GET", p, u.Query(), time.Now()); err != nil {
		t.Fatalf("verify: %v", err)
	}
	for _, other := range []string{URLPath("prj_b", "dir with space/日本 #1?.txt"), URLPath("prj_a", "dir with space/other.txt")} {
		if err := s.Verify("GET", other, u.Query(), time.Now()); err == nil {
			t.Errorf("the signature verifies for %s", other)
		}
	}
	q := u.Query()
	q.Set(ParamVersion, "4")
	if err := s.Verify("GET", p, q, time.Now()); err == nil {
		t.Error("the signature verifies for another version")
	}
}
