package storeutil

import (
	"errors"
	"math/rand/v2"
	"regexp"
	"strings"
	"testing"
	"time"
	"unicode/utf8"

	"github.com/sandkeep/sandkeep/internal/metastore"
)

func TestNewProjectID(t *testing.T) {
	re := regexp.MustCompile(`^prj_[a-z2-7]{20}$`)
	seen := map[string]bool{}
	for range 1000 {
		id := NewProjectID()
		if !re.MatchString(id) || seen[id] {
			t.Fatalf("NewProjectID() = %q (seen before: %v)", id, seen[id])
		}
		seen[id] = true
	}
}

func TestPrefixEnd(t *testing.T) {
	tests := []struct {
		prefix, end string
		ok          bool
	}{
		{"", "", false},
		{"a", "b", true},
		{"dir/", "dir0", true},
		{"100%", "100&", true},
		{"a_", "a`", true},
		{"é", "ê", true},
		{"\u007f", "\u0080", true}, // one byte to two
		{"\u07ff", "\u0800", true}, // two bytes to three
		{"\ud7ff", "\ue000", true}, // skips the surrogates
		{"\uffff", "\U00010000", true},
		{"a\U0010FFFF", "b", true}, // the last code point carries
		{"\U0010FFFF\U0010FFFF", "", false},
	}
	for _, tt := range tests {
		end, ok := PrefixEnd(tt.prefix)
		if end != tt.end || ok != tt.ok {
			t.Errorf("PrefixEnd(%q) = %q, %v; want %q, %v", tt.prefix, end, ok, tt.end, tt.ok)
		}
		if ok && !utf8.ValidString(end) {
			t.Errorf("PrefixEnd(%q) = %q is not valid UTF-8", tt.prefix, end)
		}
	}
}

// TestPrefixEndRange checks the property the stores rely on, on random
// strings over an alphabet with the edge cases: s starts with p exactly when
// p <= s < PrefixEnd(p) (bytewise).
func TestPrefixEndRange(t *testing.T) {
	alphabet := []rune{'a', 'b', '/', '%', '_', 0x7f, 0x80, 0x7ff, 0x800, 0xd7ff, 0xe000, 0xffff, 0x10000, utf8.MaxRune}
	r := rand.New(rand.NewPCG(1, 2))
	word := func() string {
		rs := make([]rune, r.IntN(4))
		for i := range rs {
			rs[i] = alphabet[r.IntN(len(alphabet))]
		}
		return string(rs)
	}
	for range 100000 {
		p, s := word(), word()
		end, ok := PrefixEnd(p)
		in := p <= s && (!ok || s < end)
		if in != strings.HasPrefix(s, p) {
			t.Fatalf("prefix %q, end %q (%v), string %q: in range %v, HasPrefix %v", p, end, ok, s, in, !in)
		}
	}
}

func TestCheckName(t *testing.T) {
	for name, valid := range map[string]bool{
		"a":                      true,
		"with space":             true,
		strings.Repeat("x", 128): true,
		strings.Repeat("é", 128): true,
		"":                       false,
		strings.Repeat("x", 129): false,
		"a\tb":                   false,
		"a\x00b":                 false,
		"\xff":                   false,
		"zero\u200bwidth":        false,
		"line\u2028separator":    false,
		"emoji 🚀 and ünïcödé 日本": true,
	} {
		err := CheckName(name)
		if (err == nil) != valid || (err != nil && !errors.Is(err, metastore.ErrInvalid)) {
			t.Errorf("CheckName(%q) = %v, want valid %v", name, err, valid)
		}
	}
}

func TestCheckPath(t *testing.T) {
	for p, valid := range map[string]bool{
		"a":                               true,
		"a/b/c.txt":                       true,
		"100%/_x":                         true,
		".hidden/..dots/x.":               true,
		strings.Repeat("a", MaxPathLen):   true,
		"":                                false,
		"/abs":                            false,
		"trailing/":                       false,
		"a//b":                            false,
		"./a":                             false,
		"a/../b":                          false,
		"..":                              false,
		"nul\x00":                         false,
		"bad\xff":                         false,
		strings.Repeat("a", MaxPathLen+1): false,
	} {
		err := CheckPath(p)
		if (err == nil) != valid || (err != nil && !errors.Is(err, metastore.ErrInvalid)) {
			t.Errorf("CheckPath(%.40q) = %v, want valid %v", p, err, valid)
		}
	}
}

func TestChanges(t *testing.T) {
	now := time.Date(2025, 1, 2, 3, 4, 5, 6789, time.UTC)
	local := time.Date(2024, 1, 1, 12, 0, 0, 1500, time.FixedZone("X", 3600))
	ups, dels, err := Changes("prj_x", metastore.FileChanges{
		Upsert: []metastore.ProjectFile{
			{Path: "b", Size: 1},
			{Path: "a", Size: 2, CreatedAt: local, UpdatedAt: local},
			{Path: "b", Size: 3, ProjectID: "prj_x"},
		},
		Delete: []string{"c", "b", "c", "a2"},
	}, now)
	if err != nil {
		t.Fatal(err)
	}
	if len(ups) != 2 || ups[0].Path != "a" || ups[1].Path != "b" || ups[1].Size != 3 {
		t.Fatalf("upserts = %+v", ups)
	}
	for _, f := range ups {
		if f.ProjectID != "prj_x" {
			t.Errorf("%s: project %q", f.Path, f.ProjectID)
		}
	}
	if want := local.UTC().Truncate(time.Microsecond); !ups[0].CreatedAt.Equal(want) || ups[0].CreatedAt.Location() != time.UTC {
		t.Errorf("a: CreatedAt %v, want %v in UTC", ups[0].CreatedAt, want)
	}
	if n := now.Truncate(time.Microsecond); !ups[1].CreatedAt.Equal(n) || !ups[1].UpdatedAt.Equal(n) {
		t.Errorf("b: times %v %v, want now", ups[1].CreatedAt, ups[1].UpdatedAt)
	}
	if strings.Join(dels, ",") != "a2,c" {
		t.Errorf("deletes = %v, want [a2 c]", dels)
	}

	for _, ch := range []metastore.FileChanges{
		{Upsert: []metastore.ProjectFile{{Path: "x", ProjectID: "prj_other"}}},
		{Upsert: []metastore.ProjectFile{{Path: "x", Size: -1}}},
		{Upsert: []metastore.ProjectFile{{Path: "x", ContentType: "a\x00"}}},
		{Upsert: []metastore.ProjectFile{{Path: "x", UpdatedAt: time.Date(10000, 1, 1, 0, 0, 0, 0, time.UTC)}}},
		{Delete: []string{"/x"}},
	} {
		if _, _, err := Changes("prj_x", ch, now); !errors.Is(err, metastore.ErrInvalid) {
			t.Errorf("Changes(%+v) = %v, want ErrInvalid", ch, err)
		}
	}
}

func TestPaging(t *testing.T) {
	for _, tt := range []struct {
		opts   metastore.ListOptions
		limit  int
		before int64
		err    bool
	}{
		{metastore.ListOptions{}, DefaultLimit, 1<<63 - 1, false},
		{metastore.ListOptions{Limit: 5, After: "7"}, 5, 7, false},
		{metastore.ListOptions{After: "0"}, DefaultLimit, 0, false},
		{metastore.ListOptions{Limit: -1}, 0, 0, true},
		{metastore.ListOptions{After: "x"}, 0, 0, true},
		{metastore.ListOptions{After: "-3"}, 0, 0, true},
		{metastore.ListOptions{After: "99999999999999999999"}, 0, 0, true},
	} {
		limit, err1 := Limit(tt.opts)
		before, err2 := VersionsBefore(tt.opts)
		if tt.err {
			if err1 == nil && err2 == nil {
				t.Errorf("%+v: no error", tt.opts)
			}
			continue
		}
		if err1 != nil || err2 != nil || limit != tt.limit || before != tt.before {
			t.Errorf("%+v: limit %d (%v), before %d (%v); want %d, %d", tt.opts, limit, err1, before, err2, tt.limit, tt.before)
		}
	}
}
