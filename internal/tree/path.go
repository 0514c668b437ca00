package tree

import (
	"fmt"
	"strings"
)

// MaxPathLen is the longest workspace path, in bytes (Linux PATH_MAX).
const MaxPathLen = 4096

// SplitPath validates a workspace path and returns its elements. A workspace
// path is relative to the workspace root, slash-separated, and already
// canonical: not empty, no leading or trailing '/', no empty, "." or ".."
// elements, no NUL, at most MaxPathLen bytes, each element a valid name (see
// CheckName). Backslashes and non-UTF-8 bytes are ordinary name bytes, as on
// Linux. Invalid paths are rejected, never repaired, so that one file has
// exactly one path; use it on every path that comes from outside.
func SplitPath(p string) ([]string, error) {
	if err := checkPath(p); err != nil {
		return nil, err
	}
	return strings.Split(p, "/"), nil
}

// CleanPath validates a workspace path under the rules of SplitPath and
// returns it unchanged: a valid path is already in its only clean form, and
// any other form is an error wrapping ErrInvalid.
func CleanPath(p string) (string, error) {
	if err := checkPath(p); err != nil {
		return "", err
	}
	return p, nil
}

func checkPath(p string) error {
	switch {
	case p == "":
		return fmt.Errorf("%w: empty path", ErrInvalid)
	case len(p) > MaxPathLen:
		return fmt.Errorf("%w: path of %d bytes is longer than %d", ErrInvalid, len(p), MaxPathLen)
	case p[0] == '/':
		return fmt.Errorf("%w: path %s is absolute", ErrInvalid, quote(p))
	}
	for i, rest := 0, p; ; i++ {
		elem, tail, more := strings.Cut(rest, "/")
		if err := checkName(elem); err != nil {
			return fmt.Errorf("%w: path %s element %d: %v", ErrInvalid, quote(p), i, err)
		}
		if !more {
			return nil
		}
		rest = tail
	}
}
