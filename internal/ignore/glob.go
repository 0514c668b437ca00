package ignore

import (
	"math/bits"
	"strings"
)

// glob is one compiled wildcard pattern. Patterns that are a plain literal,
// "*" + literal, or literal + "/**" (the common cases) are matched by string
// comparison; the rest by simulating a small NFA over the bytes of the text,
// which costs O(len(text) × len(pattern)/64) and never backtracks.
type glob struct {
	kind     globKind
	lit      string // kindLiteral, kindSuffix, kindPrefix
	pathname bool   // wildcards do not match "/"
	states   []state
}

type globKind uint8

const (
	kindNever   globKind = iota // a malformed pattern: matches nothing
	kindLiteral                 // text == lit
	kindSuffix                  // "*" + lit, lit without "/" or wildcards
	kindPrefix                  // lit + "**" (lit ending in "/")
	kindNFA
)

type op uint8

const (
	opByte    op = iota // consume b
	opAny               // "?": consume one byte (not "/" in pathname mode)
	opClass             // "[...]": consume one byte of cls (never "/" in pathname mode)
	opStar              // "*": ε to next; consume a byte (not "/" in pathname mode) and stay
	opDeep              // trailing "**": ε to next; consume any byte and stay
	opSplit             // "**/" entry: ε to the loop below, ε past it (zero directories)
	opDirLoop           // "**/" loop: consume any byte and stay; consume "/" and go on
)

type state struct {
	op  op
	b   byte
	cls byteSet
}

// byteSet is a set of bytes.
type byteSet [4]uint64

func (c *byteSet) set(b byte)      { c[b>>6] |= 1 << (b & 63) }
func (c *byteSet) has(b byte) bool { return c[b>>6]&(1<<(b&63)) != 0 }

// compileGlob compiles pattern p. In pathname mode, wildcards do not match
// "/" and "**" next to slashes matches across directories.
func compileGlob(p string, pathname bool) glob {
	g := glob{pathname: pathname}
	for i := 0; i < len(p); {
		switch c := p[i]; c {
		case '\\':
			if i+1 >= len(p) {
				return glob{kind: kindNever}
			}
			g.states = append(g.states, state{op: opByte, b: p[i+1]})
			i += 2
		case '?':
			g.states = append(g.states, state{op: opAny})
			i++
		case '[':
			cls, n, ok := parseClass(p[i:])
			if !ok {
				return glob{kind: kindNever}
			}
			g.states = append(g.states, state{op: opClass, cls: cls})
			i += n
		case '*':
			j := i
			for j < len(p) && p[j] == '*' {
				j++
			}
			startsSegment := i == 0 || p[i-1] == '/'
			endsSegment := j == len(p) || p[j] == '/' || (p[j] == '\\' && j+1 < len(p) && p[j+1] == '/')
			switch {
			case !pathname || j-i < 2 || !startsSegment || !endsSegment:
				// Collapse runs of stars: "**" not between slashes is "*".
				if n := len(g.states); n == 0 || g.states[n-1].op != opStar {
					g.states = append(g.states, state{op: opStar})
				}
			case j == len(p):
				g.states = append(g.states, state{op: opDeep})
			default:
				if p[j] == '\\' {
					j++
				}
				j++ // the slash belongs to the "**/" group
				g.states = append(g.states, state{op: opSplit}, state{op: opDirLoop})
			}
			i = j
		default:
			g.states = append(g.states, state{op: opByte, b: c})
			i++
		}
	}
	g.kind = kindNFA
	g.simplify()
	return g
}

// simplify recognises the patterns that need no NFA.
func (g *glob) simplify() {
	literal := func(st []state) (string, bool) {
		var sb strings.Builder
		for _, s := range st {
			if s.op != opByte {
				return "", false
			}
			sb.WriteByte(s.b)
		}
		return sb.String(), true
	}
	st := g.states
	if lit, ok := literal(st); ok {
		g.kind, g.lit, g.states = kindLiteral, lit, nil
		return
	}
	if len(st) > 0 && st[0].op == opStar {
		if lit, ok := literal(st[1:]); ok && (!g.pathname || strings.IndexByte(lit, '/') < 0) {
			g.kind, g.lit, g.states = kindSuffix, lit, nil
			return
		}
	}
	if n := len(st); n > 1 && st[n-1].op == opDeep {
		if lit, ok := literal(st[:n-1]); ok && strings.HasSuffix(lit, "/") {
			g.kind, g.lit, g.states = kindPrefix, lit, nil
		}
	}
}

func (g *glob) match(text string) bool {
	switch g.kind {
	case kindNever:
		return false
	case kindLiteral:
		return text == g.lit
	case kindSuffix:
		// lit has no "/", so in pathname mode the text must have none either.
		return strings.HasSuffix(text, g.lit) && (!g.pathname || strings.IndexByte(text, '/') < 0)
	case kindPrefix:
		return strings.HasPrefix(text, g.lit)
	}
	return g.run(text)
}

// run simulates the NFA: cur holds the states reachable after the bytes
// consumed so far (closed under ε moves); state len(g.states) accepts.
func (g *glob) run(text string) bool {
	n := len(g.states)
	words := n/64 + 1
	var bufA, bufB [4]uint64
	var cur, next []uint64
	if words <= len(bufA) {
		cur, next = bufA[:words], bufB[:words]
	} else {
		cur, next = make([]uint64, words), make([]uint64, words)
	}
	g.add(cur, 0)
	for k := 0; k < len(text); k++ {
		c := text[k]
		clear(next)
		live := false
		for w, word := range cur {
			for word != 0 {
				i := w*64 + bits.TrailingZeros64(word)
				word &= word - 1
				if i == n {
					continue
				}
				s := &g.states[i]
				switch s.op {
				case opByte:
					if c == s.b {
						g.add(next, i+1)
						live = true
					}
				case opAny:
					if !g.pathname || c != '/' {
						g.add(next, i+1)
						live = true
					}
				case opClass:
					if s.cls.has(c) && (!g.pathname || c != '/') {
						g.add(next, i+1)
						live = true
					}
				case opStar:
					if !g.pathname || c != '/' {
						g.add(next, i)
						live = true
					}
				case opDeep:
					g.add(next, i)
					live = true
				case opDirLoop:
					g.add(next, i)
					if c == '/' {
						g.add(next, i+1)
					}
					live = true
				}
			}
		}
		if !live {
			return false
		}
		cur, next = next, cur
	}
	return cur[n/64]&(1<<(n%64)) != 0
}

// add puts state i and everything reachable from it by ε moves into set.
func (g *glob) add(set []uint64, i int) {
	for {
		bit := uint64(1) << (i % 64)
		if set[i/64]&bit != 0 {
			return
		}
		set[i/64] |= bit
		if i == len(g.states) {
			return
		}
		switch g.states[i].op {
		case opStar, opDeep:
			i++
		case opSplit:
			g.add(set, i+1)
			i += 2
		default:
			return
		}
	}
}

// parseClass parses the bracket expression at the start of s ("[...]"). It
// returns the set, the length consumed, and false if the expression is
// unterminated or names an unknown class.
func parseClass(s string) (cls byteSet, n int, ok bool) {
	i := 1
	negated := false
	if i < len(s) && (s[i] == '!' || s[i] == '^') {
		negated = true
		i++
	}
	prev := -1 // the previous single byte, which may start a range
	for first := true; ; first = false {
		if i >= len(s) {
			return cls, 0, false
		}
		c := s[i]
		switch {
		case c == ']' && !first:
			if negated {
				for k := range cls {
					cls[k] = ^cls[k]
				}
			}
			return cls, i + 1, true
		case c == '\\':
			if i+1 >= len(s) {
				return cls, 0, false
			}
			cls.set(s[i+1])
			prev = int(s[i+1])
			i += 2
		case c == '-' && prev >= 0 && i+1 < len(s) && s[i+1] != ']':
			hi := s[i+1]
			i += 2
			if hi == '\\' {
				if i >= len(s) {
					return cls, 0, false
				}
				hi = s[i]
				i++
			}
			for x := prev; x <= int(hi); x++ {
				cls.set(byte(x))
			}
			prev = -1
		case c == '[' && i+1 < len(s) && s[i+1] == ':':
			end := strings.IndexByte(s[i+2:], ']')
			if end < 0 {
				return cls, 0, false
			}
			name := s[i+2 : i+2+end]
			if !strings.HasSuffix(name, ":") {
				// Not a "[:name:]": the "[" is an ordinary byte.
				cls.set('[')
				prev = '['
				i++
				continue
			}
			if !addNamedClass(&cls, name[:len(name)-1]) {
				return cls, 0, false
			}
			prev = -1
			i += 2 + end + 1
		default:
			cls.set(c)
			prev = int(c)
			i++
		}
	}
}

// addNamedClass adds a POSIX class of the C locale (ASCII only).
func addNamedClass(cls *byteSet, name string) bool {
	var f func(c byte) bool
	switch name {
	case "alnum":
		f = func(c byte) bool { return isAlpha(c) || isDigit(c) }
	case "alpha":
		f = isAlpha
	case "blank":
		f = func(c byte) bool { return c == ' ' || c == '\t' }
	case "cntrl":
		f = func(c byte) bool { return c < 0x20 || c == 0x7f }
	case "digit":
		f = isDigit
	case "graph":
		f = func(c byte) bool { return c > 0x20 && c < 0x7f }
	case "lower":
		f = func(c byte) bool { return c >= 'a' && c <= 'z' }
	case "print":
		f = func(c byte) bool { return c >= 0x20 && c < 0x7f }
	case "punct":
		f = func(c byte) bool { return c > 0x20 && c < 0x7f && !isAlpha(c) && !isDigit(c) }
	case "space":
		f = func(c byte) bool { return c == ' ' || (c >= '\t' && c <= '\r') }
	case "upper":
		f = func(c byte) bool { return c >= 'A' && c <= 'Z' }
	case "xdigit":
		f = func(c byte) bool { return isDigit(c) || (c|0x20 >= 'a' && c|0x20 <= 'f') }
	default:
		return false
	}
	for c := 0; c < 256; c++ {
		if f(byte(c)) {
			cls.set(byte(c))
		}
	}
	return true
}

func isAlpha(c byte) bool { return c|0x20 >= 'a' && c|0x20 <= 'z' }
func isDigit(c byte) bool { return c >= '0' && c <= '9' }
