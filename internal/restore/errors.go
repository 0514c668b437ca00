package restore

import (
	"errors"
	"fmt"
	"net/http"
	"regexp"
	"strings"
	"time"

	"github.com/sandkeep/sandkeep/internal/pack"
)

var (
	// ErrInvalidPlan is wrapped by the error returned for a plan that cannot be
	// trusted (a path outside the workspace, an entry whose parent is not a
	// directory of the plan, a range that is too long, …). Such a plan stops
	// the restore before the batch holding it touches the disk.
	ErrInvalidPlan = errors.New("invalid restore plan")
	// ErrMissingChunk: a chunk a file needs is in none of its batch's ranges
	// and nowhere on disk.
	ErrMissingChunk = errors.New("chunk missing from the restore plan")
	// ErrShortRange: the storage returned fewer bytes than a range announced.
	ErrShortRange = errors.New("pack range shorter than planned")
	// ErrURLExpired: the storage refused a signed URL (HTTP 401/403). The URLs
	// of a plan are short-lived; ask the coordinator for a new plan.
	ErrURLExpired = errors.New("signed URL expired or rejected")
)

// FileError is returned when some entries could not be restored while the
// rest of the plan was. Every file listed was removed from the workspace
// (never left with wrong content), except those whose content was restored
// and verified but whose mode or times could not be set, and directories or
// symlinks that could not be created.
//
// errors.Is sees through it: errors.Is(err, pack.ErrCorrupt) reports whether
// any chunk failed verification, errors.Is(err, ErrURLExpired) whether a
// signed URL was refused, and so on.
type FileError struct {
	// Paths lists every entry not restored, in plan order.
	Paths []string
	// Err joins the distinct causes (the first of each kind).
	Err error
}

func (e *FileError) Error() string {
	const show = 10
	var b strings.Builder
	fmt.Fprintf(&b, "restore: %d %s not restored: ", len(e.Paths), plural(len(e.Paths), "entry", "entries"))
	for i, p := range e.Paths {
		if i == show {
			fmt.Fprintf(&b, " and %d more", len(e.Paths)-show)
			break
		}
		if i > 0 {
			b.WriteString(", ")
		}
		fmt.Fprintf(&b, "%q", p)
	}
	if e.Err != nil {
		b.WriteString(": ")
		b.WriteString(strings.ReplaceAll(e.Err.Error(), "\n", "; "))
	}
	return b.String()
}

func (e *FileError) Unwrap() error { return e.Err }

func plural(n int, one, many string) string {
	if n == 1 {
		return one
	}
	return many
}

// HTTPError is an unexpected HTTP status from the storage.
type HTTPError struct {
	StatusCode int
	Status     string
	// URL is the request URL without its query (which holds the signature).
	URL string
	// Code is the storage's error code when it sent one (S3's <Code>), or the
	// start of the response body.
	Code string
	// Expire is the signed URL's expiry time, zero when unknown.
	Expire time.Time
}

func (e *HTTPError) Error() string {
	msg := fmt.Sprintf("GET %s: %s", e.URL, e.Status)
	if e.Code != "" {
		msg += " (" + e.Code + ")"
	}
	if e.StatusCode == http.StatusUnauthorized || e.StatusCode == http.StatusForbidden {
		msg += ": " + ErrURLExpired.Error()
		if !e.Expire.IsZero() {
			if time.Now().After(e.Expire) {
				msg += fmt.Sprintf(" (it expired at %s)", e.Expire.UTC().Format(time.RFC3339))
			} else {
				msg += fmt.Sprintf(" (valid until %s)", e.Expire.UTC().Format(time.RFC3339))
			}
		}
		msg += "; request a new restore plan"
	}
	return msg
}

// Unwrap makes errors.Is(err, ErrURLExpired) true for 401 and 403.
func (e *HTTPError) Unwrap() error {
	if e.StatusCode == http.StatusUnauthorized || e.StatusCode == http.StatusForbidden {
		return ErrURLExpired
	}
	return nil
}

// permanentError marks an error a retry cannot fix.
type permanentError struct{ err error }

func (e permanentError) Error() string { return e.err.Error() }
func (e permanentError) Unwrap() error { return e.err }

func permanent(err error) error { return permanentError{err} }

func isRetryable(err error) bool {
	var p permanentError
	return !errors.As(err, &p)
}

var s3Code = regexp.MustCompile(`<Code>([^<]{1,64})</Code>`)

func errorCode(body []byte) string {
	if m := s3Code.FindSubmatch(body); m != nil {
		return string(m[1])
	}
	s := strings.TrimSpace(strings.ToValidUTF8(string(body), "?"))
	s = strings.Join(strings.Fields(s), " ")
	if len(s) > 120 {
		s = s[:120] + "…"
	}
	return s
}

// failures collects the entries not restored. Only the goroutine running Run
// touches it.
type failures struct {
	paths   []string
	causes  []error
	classes map[string]int
}

const maxOtherCauses = 4

func (f *failures) add(path string, err error) {
	f.paths = append(f.paths, path)
	if f.classes == nil {
		f.classes = make(map[string]int)
	}
	c := classOf(err)
	limit := 1
	if c == "other" {
		limit = maxOtherCauses
	}
	if f.classes[c] < limit {
		f.classes[c]++
		f.causes = append(f.causes, fmt.Errorf("%s: %w", path, err))
	}
}

func (f *failures) err() error {
	if len(f.paths) == 0 {
		return nil
	}
	return &FileError{Paths: f.paths, Err: errors.Join(f.causes...)}
}

func classOf(err error) string {
	var he *HTTPError
	switch {
	case errors.Is(err, pack.ErrCorrupt):
		return "corrupt"
	case errors.Is(err, ErrMissingChunk):
		return "missing"
	case errors.Is(err, ErrShortRange):
		return "short"
	case errors.Is(err, ErrURLExpired):
		return "expired"
	case errors.As(err, &he):
		return "http"
	}
	return "other"
}
