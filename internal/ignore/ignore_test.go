package ignore

import (
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
)

type matchCase struct {
	rules string
	path  string
	isDir bool
	want  bool
}

// cases are checked against this package and, when git is installed,
// against `git check-ignore` (TestAgreesWithGit).
var cases = []matchCase{
	// No rules.
	{"", "a", false, false},
	{"", "a/b", true, false},
	// Comments and blank lines.
	{"# a comment\n\n", "# a comment", false, false},
	{"#a", "#a", false, false},
	{`\#a`, "#a", false, true},
	{`\!a`, "!a", false, true},
	// Unanchored names match at any depth.
	{"*.o", "a.o", false, true},
	{"*.o", "dir/sub/a.o", false, true},
	{"*.o", "a.c", false, false},
	{"*.o", "a.o", true, true},
	{"*.o", "a.o.c", false, false},
	{"x", "y/x", false, true},
	{"x", "y/x", true, true},
	{"x", "xy", false, false},
	{"x", "x/y", false, true}, // inside an ignored directory
	{"*", "anything/at/all", false, true},
	{"foo*", "dir/foobar", false, true},
	{"foo*", "dir/barfoo", false, false},
	// Directory-only rules.
	{"build/", "build", true, true},
	{"build/", "build", false, false},
	{"build/", "sub/build", true, true},
	{"build/", "build/x.c", false, true},
	{"build/", "sub/build/x/y", false, true},
	{"build/", "sub/build", false, false},
	{"/build/", "sub/build", true, false},
	{"/build/", "build", true, true},
	// Anchored rules.
	{"/x", "x", false, true},
	{"/x", "y/x", false, false},
	{"a/b", "a/b", false, true},
	{"a/b", "c/a/b", false, false},
	{"a/b", "a/b/c", false, true},
	{"/*.c", "cat-file.c", false, true},
	{"/*.c", "mozilla-sha1/sha1.c", false, false},
	{"foo/*.html", "foo/x.html", false, true},
	{"foo/*.html", "foo/bar/x.html", false, false},
	{"foo/*", "foo/bar", true, true},
	{"foo/*", "foo", true, false},
	// "**".
	{"**/foo", "foo", false, true},
	{"**/foo", "a/b/foo", false, true},
	{"**/foo", "a/b/foox", false, false},
	{"**/foo/bar", "foo/bar", false, true},
	{"**/foo/bar", "x/y/foo/bar", false, true},
	{"**/foo/bar", "x/foo/baz", false, false},
	{"abc/**", "abc", true, false},
	{"abc/**", "abc/x", false, true},
	{"abc/**", "abc/x/y", false, true},
	{"abc/**", "x/abc/y", false, false},
	{"a/**/b", "a/b", false, true},
	{"a/**/b", "a/x/b", false, true},
	{"a/**/b", "a/x/y/b", false, true},
	{"a/**/b", "a/xb", false, false},
	{"a/**/b", "a/x/yb", false, false},
	{"doc/**/*.pdf", "doc/a.pdf", false, true},
	{"doc/**/*.pdf", "doc/x/y/a.pdf", false, true},
	{"doc/**/*.pdf", "doc/x/y/a.pdfx", false, false},
	{"a**b", "axxb", false, true},
	{"x/a**b", "x/ax/yb", false, false},
	{"**", "a/b/c", false, true},
	{"/**", "a", false, true},
	{"a/**/", "a/b", true, true},
	{"a/**/", "a/b", false, false},
	// Negation: the last matching rule wins.
	{"*.log\n!keep.log", "x.log", false, true},
	{"*.log\n!keep.log", "keep.log", false, false},
	{"*.log\n!keep.log", "d/keep.log", false, false},
	{"!keep.log\n*.log", "keep.log", false, true},
	{"/*\n!/keep/", "a", false, true},
	{"/*\n!/keep/", "keep", true, false},
	{"/*\n!/keep/", "keep/x", false, false},
	{"/*\n!/keep/", "keep", false, true},
	// A path in an excluded directory cannot be re-included.
	{"dir/\n!dir/keep", "dir/keep", false, true},
	{"dir/\n!dir/keep", "other/keep", false, false},
	{"!x", "x", false, false},
	// "?" and classes.
	{"a?c", "abc", false, true},
	{"a?c", "ac", false, false},
	{"x/a?c", "x/a/c", false, false},
	{"[abc].txt", "a.txt", false, true},
	{"[abc].txt", "d.txt", false, false},
	{"[!a].txt", "b.txt", false, true},
	{"[!a].txt", "a.txt", false, false},
	{"[^a].txt", "a.txt", false, false},
	{"[a-c]x", "bx", false, true},
	{"[a-c]x", "dx", false, false},
	{"[]]x", "]x", false, true},
	{"[a-]x", "-x", false, true},
	{"[[:digit:]]*", "1abc", false, true},
	{"[[:digit:]]*", "abc", false, false},
	{"[[:upper:][:digit:]]z", "Qz", false, true},
	{`[\]]x`, "]x", false, true},
	// Malformed patterns match nothing.
	{"[abc", "[abc", false, false},
	{"[abc", "a", false, false},
	{"foo\\", "foo", false, false},
	{"[[:nope:]]", "a", false, false},
	// Escapes and spaces.
	{`\*`, "*", false, true},
	{`\*`, "x", false, false},
	{"foo  ", "foo", false, true},
	{"foo\\ ", "foo ", false, true},
	{"foo\\ ", "foo", false, false},
	{"my file.txt", "dir/my file.txt", false, true},
	// Line endings.
	{"foo\r\nbar\r\n", "foo", false, true},
	{"foo\r\nbar\r\n", "bar", false, true},
	{"\ufefffoo", "foo", false, true},
	// Names need not be UTF-8.
	{"\xff*", "d/\xffabc", false, true},
	{"é", "dir/é", false, true},
	{"?", "é", false, false}, // "?" is one byte, as in git
	{"??", "é", false, true},
}

func TestMatch(t *testing.T) {
	for _, c := range cases {
		m := Parse(c.rules)
		if got := m.Match(c.path, c.isDir); got != c.want {
			t.Errorf("rules %q: Match(%q, dir=%v) = %v, want %v", c.rules, c.path, c.isDir, got, c.want)
		}
	}
}

func TestMatchEntryIgnoresParents(t *testing.T) {
	m := Parse("build/\n")
	if m.MatchEntry("build/x.c", false) {
		t.Error("MatchEntry looked at the parent directory")
	}
	if !m.Match("build/x.c", false) {
		t.Error("Match did not look at the parent directory")
	}
}

func TestPathForms(t *testing.T) {
	m := Parse("build/\n/top\n")
	for _, c := range []struct {
		path  string
		isDir bool
		want  bool
	}{
		{"build/", false, true}, // trailing slash implies a directory
		{"./build", true, true},
		{"/build", true, true},
		{"/top", false, true},
		{"", true, false},
		{".", true, false},
		{"/", true, false},
	} {
		if got := m.Match(c.path, c.isDir); got != c.want {
			t.Errorf("Match(%q, %v) = %v, want %v", c.path, c.isDir, got, c.want)
		}
	}
}

func TestNilAndEmpty(t *testing.T) {
	var m *Matcher
	if m.Match("a", false) || m.MatchEntry("a", true) || !m.Empty() {
		t.Error("nil matcher matches")
	}
	if (&Matcher{}).Match("a", false) {
		t.Error("zero matcher matches")
	}
	if !Parse("# only comments\n\n  \n").Empty() {
		t.Error("comments made rules")
	}
}

func TestWithAlways(t *testing.T) {
	user := Parse("!.sandkeep/\n!state.db\n*.tmp\n")
	m := user.WithAlways(".sandkeep/", "/state.db")
	for _, c := range []struct {
		path  string
		isDir bool
		want  bool
	}{
		{".sandkeep", true, true},
		{".sandkeep/index", false, true},
		{"sub/.sandkeep", true, true},
		{".sandkeep", false, false}, // directory-only
		{"state.db", false, true},
		{"sub/state.db", false, false},
		{"x.tmp", false, true},
		{"x.txt", false, false},
	} {
		if got := m.Match(c.path, c.isDir); got != c.want {
			t.Errorf("Match(%q, %v) = %v, want %v", c.path, c.isDir, got, c.want)
		}
	}
	if user.Match(".sandkeep", true) || !user.Match("x.tmp", false) {
		t.Error("WithAlways changed its receiver")
	}
	var none *Matcher
	if !none.WithAlways("x").Match("x", false) {
		t.Error("WithAlways on nil")
	}
}

func TestLoad(t *testing.T) {
	dir := t.TempDir()
	m, err := Load(dir)
	if err != nil {
		t.Fatal(err)
	}
	if !m.Empty() || m.Match("x", false) {
		t.Fatal("missing file should match nothing")
	}
	if err := os.WriteFile(filepath.Join(dir, FileName), []byte("*.o\nnode_modules/\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	m, err = Load(dir)
	if err != nil {
		t.Fatal(err)
	}
	if !m.Match("a/b.o", false) || !m.Match("x/node_modules", true) || m.Match("a.c", false) {
		t.Fatal("loaded rules do not apply")
	}
	// A directory in place of the file is an error, not "no rules".
	dir2 := t.TempDir()
	if err := os.Mkdir(filepath.Join(dir2, FileName), 0o755); err != nil {
		t.Fatal(err)
	}
	if _, err := Load(dir2); err == nil {
		t.Fatal("Load of a directory succeeded")
	}
	// An unreadable file is an error (unless we are root).
	if os.Geteuid() != 0 {
		p := filepath.Join(dir, FileName)
		if err := os.Chmod(p, 0); err != nil {
			t.Fatal(err)
		}
		if _, err := Load(dir); err == nil {
			t.Fatal("Load of an unreadable file succeeded")
		}
	}
}

// TestAgreesWithGit checks the table against git itself, when installed.
func TestAgreesWithGit(t *testing.T) {
	git, err := exec.LookPath("git")
	if err != nil {
		t.Skip("git not installed")
	}
	for i, c := range cases {
		if c.path == "" {
			continue
		}
		t.Run("", func(t *testing.T) {
			t.Parallel()
			checkWithGit(t, git, i, c)
		})
	}
}

func checkWithGit(t *testing.T, git string, i int, c matchCase) {
	dir := t.TempDir()
	run := func(args ...string) error {
		cmd := exec.Command(git, args...)
		cmd.Dir = dir
		cmd.Env = append(os.Environ(), "GIT_CONFIG_NOSYSTEM=1", "HOME="+dir)
		return cmd.Run()
	}
	if err := run("init", "-q"); err != nil {
		t.Fatalf("git init: %v", err)
	}
	if err := os.WriteFile(filepath.Join(dir, ".gitignore"), []byte(c.rules), 0o644); err != nil {
		t.Fatal(err)
	}
	p := filepath.Join(dir, filepath.FromSlash(c.path))
	if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
		t.Fatal(err)
	}
	if c.isDir {
		if err := os.MkdirAll(p, 0o755); err != nil {
			t.Fatal(err)
		}
	} else if err := os.WriteFile(p, nil, 0o644); err != nil {
		t.Fatal(err)
	}
	err := run("check-ignore", "-q", "--no-index", "--", c.path)
	var exit *exec.ExitError
	var got bool
	switch {
	case err == nil:
		got = true
	case errors.As(err, &exit) && exit.ExitCode() == 1:
		got = false
	default:
		t.Fatalf("case %d: git check-ignore: %v", i, err)
	}
	if got != c.want {
		t.Errorf("case %d: git says rules %q, path %q (dir=%v) ignored=%v; the table says %v", i, c.rules, c.path, c.isDir, got, c.want)
	}
}

// refRegexp translates a pattern over the alphabet {a, b, /, *, ?} to a
// regular expression, independently of the NFA, following gitignore(5).
func refRegexp(pattern string, pathname bool) *regexp.Regexp {
	var sb strings.Builder
	sb.WriteString("^")
	for i := 0; i < len(pattern); {
		c := pattern[i]
		switch c {
		case '*':
			j := i
			for j < len(pattern) && pattern[j] == '*' {
				j++
			}
			atStart := i == 0 || pattern[i-1] == '/'
			switch {
			case pathname && j-i >= 2 && atStart && j == len(pattern):
				sb.WriteString(".*")
			case pathname && j-i >= 2 && atStart && pattern[j] == '/':
				sb.WriteString("(?:.*/)?")
				j++
			default:
				sb.WriteString("[^/]*")
			}
			i = j
		case '?':
			sb.WriteString("[^/]")
			i++
		default:
			sb.WriteString(regexp.QuoteMeta(string(c)))
			i++
		}
	}
	sb.WriteString("$")
	return regexp.MustCompile(sb.String())
}

func FuzzGlobAgainstRegexp(f *testing.F) {
	for _, s := range [][2]string{
		{"a/**/b", "a/a/b"}, {"**/a", "b/a"}, {"a*b", "aab"}, {"a/**", "a/b/b"},
		{"*/a", "b/a"}, {"a?/b", "ab/b"}, {"**/**/a", "a"}, {"a/**/**/b", "a/b/b"},
		{"*a*a*a*b", "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa"},
	} {
		f.Add(s[0], s[1])
	}
	alpha := func(s, set string) string {
		b := []byte(s)
		for i := range b {
			b[i] = set[int(b[i])%len(set)]
		}
		return string(b)
	}
	f.Fuzz(func(t *testing.T, pattern, text string) {
		pattern = alpha(pattern, "ab/*?")
		text = alpha(text, "ab/")
		if len(pattern) > 40 || len(text) > 60 {
			return
		}
		for _, pathname := range []bool{true, false} {
			p := pattern
			if !pathname {
				p = strings.ReplaceAll(p, "/", "")
				text = strings.ReplaceAll(text, "/", "")
			}
			g := compileGlob(p, pathname)
			got := g.match(text)
			want := refRegexp(p, pathname).MatchString(text)
			if got != want {
				t.Fatalf("pattern %q pathname=%v text %q: got %v, want %v", p, pathname, text, got, want)
			}
		}
	})
}

func FuzzParse(f *testing.F) {
	for _, c := range cases {
		f.Add(c.rules, c.path, c.isDir)
	}
	f.Fuzz(func(t *testing.T, rules, path string, isDir bool) {
		m := Parse(rules)
		got := m.Match(path, isDir)
		// Match is MatchEntry on the path and each of its parents.
		p, d := clean(path, isDir)
		want := false
		if p != "" {
			for i := 0; i <= len(p); i++ {
				if i == len(p) {
					want = want || m.MatchEntry(p, d)
				} else if p[i] == '/' {
					want = want || m.MatchEntry(p[:i], true)
				}
			}
		}
		if got != want {
			t.Fatalf("rules %q path %q: Match %v, MatchEntry chain %v", rules, path, got, want)
		}
	})
}

func BenchmarkMatchEntry(b *testing.B) {
	m := Parse("*.o\nnode_modules/\n/build/\n**/tmp/**\n*.py[cod]\ndocs/**/*.pdf\n!keep.o\n")
	paths := []string{"src/main.go", "a/b/c/d/e/file.o", "docs/x/y/z.pdf", "lib/x.pyc", "node_modules"}
	b.ReportAllocs()
	for i := 0; b.Loop(); i++ {
		m.MatchEntry(paths[i%len(paths)], i%5 == 4)
	}
}
