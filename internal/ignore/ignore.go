// Package ignore matches workspace paths against gitignore-style rules, as
// read from the .sandkeepignore file at the root of a workspace.
//
// The syntax and semantics are git's (gitignore(5)) for a single ignore file
// at the top of the tree:
//
//   - blank lines match nothing; a line starting with "#" is a comment ("\#"
//     for a literal "#");
//   - trailing spaces are dropped unless escaped with a backslash; a trailing
//     "\r" (CRLF files) and a leading UTF-8 byte order mark are dropped;
//   - a leading "!" negates a rule: a path excluded by an earlier rule is
//     included again ("\!" for a literal "!"). The last rule that matches a
//     path decides. A path inside an excluded directory cannot be re-included;
//   - a trailing "/" makes a rule match directories only;
//   - a rule with no "/" other than a trailing one matches a name at any depth;
//     a rule with a "/" at its start or in its middle is anchored at the root;
//   - "*" matches any run of bytes except "/", "?" any one byte except "/",
//     "[a-z]", "[!a-z]" / "[^a-z]" and "[[:alpha:]]" classes one byte of a set,
//     "\x" the byte x;
//   - "**" between slashes (or at the start or end) matches across
//     directories: "**/x" is x at any depth, "x/**" everything inside x, and
//     "a/**/b" matches a/b, a/x/b, a/x/y/b. Any other "**" is a plain "*".
//
// Matching is bytewise and case-sensitive, like git on Linux: names need not
// be UTF-8.
//
// Besides the user's rules a Matcher can hold fixed patterns (WithAlways)
// that no "!" rule can re-include, for files that must never be synced, such
// as the agent's own state.
package ignore

import (
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
)

// FileName is the name of the ignore file at the root of a workspace.
const FileName = ".sandkeepignore"

// MaxFileSize bounds the ignore file Load reads.
const MaxFileSize = 1 << 20

// Matcher decides whether workspace paths are ignored. The zero value and a
// nil *Matcher match nothing. A Matcher is immutable and safe for concurrent
// use.
type Matcher struct {
	rules  []rule // user rules: the last matching rule decides
	always []rule // fixed rules: any match ignores, and cannot be negated
}

// Load reads the ignore file of the workspace directory. A missing file gives
// a Matcher that matches nothing.
func Load(workspace string) (*Matcher, error) {
	name := filepath.Join(workspace, FileName)
	f, err := os.Open(name)
	if errors.Is(err, fs.ErrNotExist) {
		return &Matcher{}, nil
	}
	if err != nil {
		return nil, fmt.Errorf("ignore: %w", err)
	}
	defer f.Close()
	fi, err := f.Stat()
	if err != nil {
		return nil, fmt.Errorf("ignore: %w", err)
	}
	if !fi.Mode().IsRegular() {
		return nil, fmt.Errorf("ignore: %s is not a regular file", name)
	}
	if fi.Size() > MaxFileSize {
		return nil, fmt.Errorf("ignore: %s is %d bytes, at most %d allowed", name, fi.Size(), MaxFileSize)
	}
	b, err := io.ReadAll(io.LimitReader(f, MaxFileSize+1))
	if err != nil {
		return nil, fmt.Errorf("ignore: read %s: %w", name, err)
	}
	if len(b) > MaxFileSize {
		return nil, fmt.Errorf("ignore: %s is larger than %d bytes", name, MaxFileSize)
	}
	return Parse(string(b)), nil
}

// Parse compiles the rules of an ignore file. Lines that are not valid
// patterns (an unterminated "[", a trailing lone "\") never match, as in git.
func Parse(text string) *Matcher {
	return &Matcher{rules: parseRules(text)}
}

// WithAlways returns a copy of m that also ignores every path matched by the
// given patterns (gitignore syntax, one pattern per string), whatever m's
// rules say. m itself is not changed; m may be nil.
func (m *Matcher) WithAlways(patterns ...string) *Matcher {
	out := &Matcher{}
	if m != nil {
		out.rules = m.rules
		out.always = append(out.always, m.always...)
	}
	for _, p := range patterns {
		if r, ok := parseLine(p); ok {
			out.always = append(out.always, r)
		}
	}
	return out
}

// Empty reports whether m matches nothing because it has no rules.
func (m *Matcher) Empty() bool {
	return m == nil || (len(m.rules) == 0 && len(m.always) == 0)
}

// Match reports whether the slash-separated path relPath, relative to the
// workspace root, is ignored; isDir tells whether it names a directory. A
// path inside an ignored directory is ignored. A leading "/" or "./" and a
// trailing "/" (which implies isDir) are accepted; "" and "." (the root) are
// never ignored.
func (m *Matcher) Match(relPath string, isDir bool) bool {
	if m.Empty() {
		return false
	}
	relPath, isDir = clean(relPath, isDir)
	if relPath == "" {
		return false
	}
	for i := 0; i < len(relPath); i++ {
		if relPath[i] == '/' && m.MatchEntry(relPath[:i], true) {
			return true
		}
	}
	return m.MatchEntry(relPath, isDir)
}

// MatchEntry is Match for a caller that walks the tree top-down and never
// descends into an ignored directory: it does not look at relPath's parent
// directories, so it costs one test per rule however deep the path is.
// relPath must be clean (no leading or trailing "/").
func (m *Matcher) MatchEntry(relPath string, isDir bool) bool {
	if m.Empty() || relPath == "" {
		return false
	}
	base := relPath
	if i := strings.LastIndexByte(relPath, '/'); i >= 0 {
		base = relPath[i+1:]
	}
	for i := range m.always {
		if r := &m.always[i]; !r.negate && r.match(relPath, base, isDir) {
			return true
		}
	}
	for i := len(m.rules) - 1; i >= 0; i-- {
		if r := &m.rules[i]; r.match(relPath, base, isDir) {
			return !r.negate
		}
	}
	return false
}

func clean(p string, isDir bool) (string, bool) {
	for {
		switch {
		case strings.HasPrefix(p, "./"):
			p = p[2:]
		case strings.HasPrefix(p, "/"):
			p = p[1:]
		default:
			goto trailing
		}
	}
trailing:
	for strings.HasSuffix(p, "/") {
		p = p[:len(p)-1]
		isDir = true
	}
	if p == "." {
		p = ""
	}
	return p, isDir
}

// rule is one compiled line of an ignore file.
type rule struct {
	text     string // the line, for debugging
	negate   bool
	dirOnly  bool
	basename bool // no slash: matched against the last path element
	g        glob
}

func (r *rule) match(path, base string, isDir bool) bool {
	if r.dirOnly && !isDir {
		return false
	}
	if r.basename {
		return r.g.match(base)
	}
	return r.g.match(path)
}

func parseRules(text string) []rule {
	text = strings.TrimPrefix(text, "\ufeff")
	var rules []rule
	for len(text) > 0 {
		line := text
		if i := strings.IndexByte(text, '\n'); i >= 0 {
			line, text = text[:i], text[i+1:]
		} else {
			text = ""
		}
		if r, ok := parseLine(line); ok {
			rules = append(rules, r)
		}
	}
	return rules
}

// parseLine compiles one line; ok is false for blank lines and comments.
func parseLine(line string) (rule, bool) {
	orig := line
	line = strings.TrimSuffix(line, "\r")
	if line == "" || line[0] == '#' {
		return rule{}, false
	}
	line = trimTrailingSpaces(line)
	r := rule{text: orig}
	if strings.HasPrefix(line, "!") {
		r.negate = true
		line = line[1:]
	}
	if strings.HasSuffix(line, "/") {
		r.dirOnly = true
		line = line[:len(line)-1]
	}
	if line == "" {
		return rule{}, false
	}
	if strings.IndexByte(line, '/') < 0 {
		r.basename = true
	} else {
		line = strings.TrimPrefix(line, "/")
	}
	r.g = compileGlob(line, !r.basename)
	return r, true
}

// trimTrailingSpaces drops trailing spaces that are not escaped by a
// backslash.
func trimTrailingSpaces(s string) string {
	end := len(s)
	for end > 0 && s[end-1] == ' ' {
		// Count the backslashes before this space: an odd number escapes it.
		n := 0
		for j := end - 2; j >= 0 && s[j] == '\\'; j-- {
			n++
		}
		if n%2 == 1 {
			break
		}
		end--
	}
	return s[:end]
}
