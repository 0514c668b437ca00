// Package storeutil holds what the SQLite and PostgreSQL metadata stores
// share besides the schema: argument validation, id generation, time
// normalisation, paging and path-prefix ranges. Both stores call the same
// checks, so they accept and refuse exactly the same inputs.
package storeutil

import (
	"crypto/rand"
	"encoding/base32"
	"fmt"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"time"
	"unicode"
	"unicode/utf8"

	"github.com/sandkeep/sandkeep/internal/id"
	"github.com/sandkeep/sandkeep/internal/metastore"
)

// Limits of what the stores accept.
const (
	DefaultLimit = 1000 // rows per page when ListOptions.Limit is 0
	MaxNameLen   = 128  // characters of a project name
	MaxPathLen   = 4096 // bytes of a project file path
	MaxNoteLen   = 1024 // bytes of a token note
)

// ProjectIDPrefix starts every project id.
const ProjectIDPrefix = "prj_"

var lowerB32 = base32.NewEncoding("abcdefghijklmnopqrstuvwxyz234567").WithPadding(base32.NoPadding)

// NewProjectID returns "prj_" and 20 random lowercase base32 characters
// (100 bits from crypto/rand).
func NewProjectID() string {
	var b [13]byte         // 104 bits -> 21 characters, of which 20 are kept
	_, _ = rand.Read(b[:]) // crypto/rand.Read never fails (Go 1.24+): it crashes the program instead
	return ProjectIDPrefix + lowerB32.EncodeToString(b[:])[:20]
}

// CheckName validates a project name: 1 to 128 printable characters (Unicode
// letters, marks, numbers, punctuation, symbols and the ASCII space).
func CheckName(name string) error {
	if !utf8.ValidString(name) {
		return fmt.Errorf("%w: project name is not valid UTF-8", metastore.ErrInvalid)
	}
	n := utf8.RuneCountInString(name)
	if n < 1 || n > MaxNameLen {
		return fmt.Errorf("%w: project name must be 1 to %d characters, got %d", metastore.ErrInvalid, MaxNameLen, n)
	}
	for _, r := range name {
		if !unicode.IsPrint(r) {
			return fmt.Errorf("%w: project name contains the unprintable character %U", metastore.ErrInvalid, r)
		}
	}
	return nil
}

var tokenHash = regexp.MustCompile(`^[0-9a-f]{64}$`)

// CheckToken validates t and returns it with its times normalised: a zero
// CreatedAt becomes now.
func CheckToken(t metastore.Token, now time.Time) (metastore.Token, error) {
	if !Storable(t.ProjectID) {
		return t, fmt.Errorf("%w: project id %q", metastore.ErrInvalid, t.ProjectID)
	}
	if !tokenHash.MatchString(t.Hash) {
		return t, fmt.Errorf("%w: token hash must be the lowercase hex SHA-256 of the secret (64 characters)", metastore.ErrInvalid)
	}
	switch t.Kind {
	case metastore.TokenAdmin:
		if t.ProjectID != "" {
			return t, fmt.Errorf("%w: an admin token has no project", metastore.ErrInvalid)
		}
	case metastore.TokenSandbox:
		if t.ProjectID == "" {
			return t, fmt.Errorf("%w: a sandbox token needs a project", metastore.ErrInvalid)
		}
	default:
		return t, fmt.Errorf("%w: unknown token kind %q", metastore.ErrInvalid, t.Kind)
	}
	if len(t.Note) > MaxNoteLen || !utf8.ValidString(t.Note) || strings.ContainsRune(t.Note, 0) {
		return t, fmt.Errorf("%w: token note must be valid UTF-8 without NUL, at most %d bytes", metastore.ErrInvalid, MaxNoteLen)
	}
	if t.CreatedAt.IsZero() {
		t.CreatedAt = now
	}
	var err error
	if t.CreatedAt, err = Time(t.CreatedAt); err != nil {
		return t, err
	}
	if !t.ExpiresAt.IsZero() {
		if t.ExpiresAt, err = Time(t.ExpiresAt); err != nil {
			return t, err
		}
	}
	return t, nil
}

// Time returns t in UTC truncated to microseconds, the precision both
// databases keep, or ErrInvalid for a time outside years 1..9999.
func Time(t time.Time) (time.Time, error) {
	t = t.UTC().Truncate(time.Microsecond)
	if y := t.Year(); y < 1 || y > 9999 {
		return time.Time{}, fmt.Errorf("%w: time %s is outside years 1..9999", metastore.ErrInvalid, t)
	}
	return t, nil
}

// Now returns the current time as the stores record it.
func Now() time.Time { return time.Now().UTC().Truncate(time.Microsecond) }

// CheckPack validates a pack and its blobs (a zero PackID means p.ID; a zero
// CreatedAt means now) and returns the blobs to insert:
// deduplicated by id (the first occurrence wins) and sorted by id, so that
// concurrent transactions take row locks in the same order.
func CheckPack(p metastore.Pack, blobs []metastore.BlobLocation) (metastore.Pack, []metastore.BlobLocation, error) {
	if p.ProjectID == "" || !Storable(p.ProjectID) {
		return p, nil, fmt.Errorf("%w: pack project id %q", metastore.ErrInvalid, p.ProjectID)
	}
	if p.ID.IsZero() {
		return p, nil, fmt.Errorf("%w: pack without id", metastore.ErrInvalid)
	}
	if p.Type != metastore.BlobData && p.Type != metastore.BlobTree {
		return p, nil, fmt.Errorf("%w: pack %s has unknown type %d", metastore.ErrInvalid, p.ID.Short(), p.Type)
	}
	if p.Size < 0 {
		return p, nil, fmt.Errorf("%w: pack %s has negative size", metastore.ErrInvalid, p.ID.Short())
	}
	if p.CreatedAt.IsZero() {
		p.CreatedAt = Now()
	}
	var err error
	if p.CreatedAt, err = Time(p.CreatedAt); err != nil {
		return p, nil, err
	}
	seen := make(map[id.ID]bool, len(blobs))
	out := make([]metastore.BlobLocation, 0, len(blobs))
	for _, b := range blobs {
		if b.PackID.IsZero() {
			b.PackID = p.ID
		}
		switch {
		case b.ID.IsZero():
			return p, nil, fmt.Errorf("%w: blob without id in pack %s", metastore.ErrInvalid, p.ID.Short())
		case b.PackID != p.ID:
			return p, nil, fmt.Errorf("%w: blob %s names pack %s, not %s", metastore.ErrInvalid, b.ID.Short(), b.PackID.Short(), p.ID.Short())
		case b.Type != p.Type:
			return p, nil, fmt.Errorf("%w: blob %s of type %d in a pack of type %d", metastore.ErrInvalid, b.ID.Short(), b.Type, p.Type)
		case b.Offset < 0 || b.Length < 0 || b.RawLength < 0 || b.RawOffset < 0:
			return p, nil, fmt.Errorf("%w: blob %s has a negative offset or length", metastore.ErrInvalid, b.ID.Short())
		case b.Offset+b.Length > p.Size:
			return p, nil, fmt.Errorf("%w: blob %s ends at %d, past the end of pack %s (%d bytes)", metastore.ErrInvalid, b.ID.Short(), b.Offset+b.Length, p.ID.Short(), p.Size)
		}
		if seen[b.ID] {
			continue
		}
		seen[b.ID] = true
		out = append(out, b)
	}
	slices.SortFunc(out, func(a, b metastore.BlobLocation) int { return strings.Compare(string(a.ID[:]), string(b.ID[:])) })
	return p, out, nil
}

// CheckVersion validates the caller's part of a version to commit.
func CheckVersion(v metastore.Version) error {
	switch {
	case v.ProjectID == "" || !Storable(v.ProjectID):
		return fmt.Errorf("%w: version project id %q", metastore.ErrInvalid, v.ProjectID)
	case v.Parent < 0:
		return fmt.Errorf("%w: negative parent %d", metastore.ErrInvalid, v.Parent)
	case v.Root.IsZero():
		return fmt.Errorf("%w: version without root tree", metastore.ErrInvalid)
	case v.Kind != metastore.KindSync && v.Kind != metastore.KindFlush && v.Kind != metastore.KindRollback && v.Kind != metastore.KindUpload:
		return fmt.Errorf("%w: unknown version kind %q", metastore.ErrInvalid, v.Kind)
	case v.Files < 0 || v.Bytes < 0:
		return fmt.Errorf("%w: negative file count or size", metastore.ErrInvalid)
	case len(v.SandboxID) > 256 || !utf8.ValidString(v.SandboxID) || strings.ContainsRune(v.SandboxID, 0):
		return fmt.Errorf("%w: sandbox id must be valid UTF-8 without NUL, at most 256 bytes", metastore.ErrInvalid)
	}
	return nil
}

// CheckPath validates a project file path: relative, slash-separated, clean
// (no empty, "." or ".." segment), valid UTF-8 without NUL, at most 4096
// bytes.
func CheckPath(p string) error {
	if p == "" || len(p) > MaxPathLen {
		return fmt.Errorf("%w: file path must be 1 to %d bytes", metastore.ErrInvalid, MaxPathLen)
	}
	if err := checkText(p); err != nil {
		return fmt.Errorf("%w: file path %q: %v", metastore.ErrInvalid, p, err)
	}
	for seg := range strings.SplitSeq(p, "/") {
		if seg == "" || seg == "." || seg == ".." {
			return fmt.Errorf("%w: file path %q is not a clean relative path", metastore.ErrInvalid, p)
		}
	}
	return nil
}

// CheckPrefix validates a listing prefix: any valid UTF-8 without NUL (it
// need not end at a path separator), at most 4096 bytes.
func CheckPrefix(prefix string) error {
	if len(prefix) > MaxPathLen {
		return fmt.Errorf("%w: prefix longer than %d bytes", metastore.ErrInvalid, MaxPathLen)
	}
	if err := checkText(prefix); err != nil {
		return fmt.Errorf("%w: prefix %q: %v", metastore.ErrInvalid, prefix, err)
	}
	return nil
}

// Storable reports whether s can be stored as text in both databases: valid
// UTF-8 without NUL. A key that is not storable names nothing; the stores
// answer ErrNotFound for it without asking the database.
func Storable(s string) bool { return checkText(s) == nil }

// NotFound returns an error wrapping ErrNotFound for what.
func NotFound(format string, args ...any) error {
	return fmt.Errorf("%w: "+format, append([]any{metastore.ErrNotFound}, args...)...)
}

func checkText(s string) error {
	if !utf8.ValidString(s) {
		return fmt.Errorf("not valid UTF-8")
	}
	if strings.ContainsRune(s, 0) {
		return fmt.Errorf("contains NUL")
	}
	return nil
}

// PrefixEnd returns the smallest string greater than every string that
// starts with prefix, for the range query prefix <= path < end; ok is false
// when there is no such bound (an empty prefix, or only U+10FFFF). The
// databases compare paths bytewise, and UTF-8 byte order is code point order,
// so incrementing the last code point (skipping the surrogates, which UTF-8
// cannot encode) gives the bound while keeping it valid UTF-8. No LIKE is
// involved, so '%' and '_' in paths are ordinary characters.
func PrefixEnd(prefix string) (end string, ok bool) {
	rs := []rune(prefix)
	for i := len(rs) - 1; i >= 0; i-- {
		r := rs[i]
		if r == utf8.MaxRune {
			continue // drop it and carry into the previous character
		}
		r++
		if r == 0xD800 {
			r = 0xE000
		}
		return string(rs[:i]) + string(r), true
	}
	return "", false
}

// Changes validates and normalises the file changes of a commit. Upserts get
// the project id, zero times become now, and later upserts of the same path
// win; deletes are deduplicated and a path also upserted is dropped from them
// (deletes apply before upserts). Both come back sorted by path.
func Changes(projectID string, ch metastore.FileChanges, now time.Time) ([]metastore.ProjectFile, []string, error) {
	byPath := make(map[string]metastore.ProjectFile, len(ch.Upsert))
	for _, f := range ch.Upsert {
		if f.ProjectID != "" && f.ProjectID != projectID {
			return nil, nil, fmt.Errorf("%w: file %q belongs to project %q, not %q", metastore.ErrInvalid, f.Path, f.ProjectID, projectID)
		}
		f.ProjectID = projectID
		if err := CheckPath(f.Path); err != nil {
			return nil, nil, err
		}
		if f.Size < 0 {
			return nil, nil, fmt.Errorf("%w: file %q has negative size", metastore.ErrInvalid, f.Path)
		}
		if err := checkText(f.ContentType); err != nil || len(f.ContentType) > 255 {
			return nil, nil, fmt.Errorf("%w: content type of %q must be valid UTF-8 without NUL, at most 255 bytes", metastore.ErrInvalid, f.Path)
		}
		if err := checkText(f.Checksum); err != nil || len(f.Checksum) > 255 {
			return nil, nil, fmt.Errorf("%w: checksum of %q must be valid UTF-8 without NUL, at most 255 bytes", metastore.ErrInvalid, f.Path)
		}
		var err error
		if f.CreatedAt.IsZero() {
			f.CreatedAt = now
		}
		if f.UpdatedAt.IsZero() {
			f.UpdatedAt = now
		}
		if f.CreatedAt, err = Time(f.CreatedAt); err != nil {
			return nil, nil, err
		}
		if f.UpdatedAt, err = Time(f.UpdatedAt); err != nil {
			return nil, nil, err
		}
		byPath[f.Path] = f
	}
	ups := make([]metastore.ProjectFile, 0, len(byPath))
	for _, f := range byPath {
		ups = append(ups, f)
	}
	slices.SortFunc(ups, func(a, b metastore.ProjectFile) int { return strings.Compare(a.Path, b.Path) })

	dels := make([]string, 0, len(ch.Delete))
	for _, p := range ch.Delete {
		if err := CheckPath(p); err != nil {
			return nil, nil, err
		}
		if _, up := byPath[p]; !up {
			dels = append(dels, p)
		}
	}
	slices.Sort(dels)
	return ups, slices.Compact(dels), nil
}

// FilesAfter validates ListProjectFiles' opts.After, a path (or any string:
// rows sort after it bytewise).
func FilesAfter(opts metastore.ListOptions) (string, error) {
	if err := checkText(opts.After); err != nil {
		return "", fmt.Errorf("%w: After %q: %v", metastore.ErrInvalid, opts.After, err)
	}
	return opts.After, nil
}

// Limit returns the page size of opts.
func Limit(opts metastore.ListOptions) (int, error) {
	switch {
	case opts.Limit < 0:
		return 0, fmt.Errorf("%w: negative limit %d", metastore.ErrInvalid, opts.Limit)
	case opts.Limit == 0:
		return DefaultLimit, nil
	}
	return opts.Limit, nil
}

// VersionsBefore parses ListVersions' opts.After: versions strictly older
// than the returned number are listed. An empty After lists from the head.
func VersionsBefore(opts metastore.ListOptions) (int64, error) {
	if opts.After == "" {
		return 1<<63 - 1, nil
	}
	n, err := strconv.ParseInt(opts.After, 10, 64)
	if err != nil || n < 0 {
		return 0, fmt.Errorf("%w: After must be a version number, got %q", metastore.ErrInvalid, opts.After)
	}
	return n, nil
}

// Dedup returns ids without repeats, in first-seen order.
func Dedup(ids []id.ID) []id.ID {
	seen := make(map[id.ID]struct{}, len(ids))
	out := make([]id.ID, 0, len(ids))
	for _, x := range ids {
		if _, dup := seen[x]; !dup {
			seen[x] = struct{}{}
			out = append(out, x)
		}
	}
	return out
}

// IDBytes returns the ids as byte slices, the form the drivers bind.
func IDBytes(ids []id.ID) [][]byte {
	out := make([][]byte, len(ids))
	for i := range ids {
		out[i] = ids[i][:]
	}
	return out
}

// ParseID converts a stored 32-byte id.
func ParseID(b []byte, what string) (id.ID, error) {
	v, err := id.FromBytes(b)
	if err != nil {
		return v, fmt.Errorf("stored %s: %w", what, err)
	}
	return v, nil
}

// SortIDs returns ids deduplicated and in byte order, so that transactions
// lock rows in the same order.
func SortIDs(ids []id.ID) []id.ID {
	out := Dedup(ids)
	slices.SortFunc(out, func(a, b id.ID) int { return strings.Compare(string(a[:]), string(b[:])) })
	return out
}

// PacksAfter parses ListPacks' opts.After, a hex pack id, into the bytes that
// listed ids must exceed (empty: from the start).
func PacksAfter(opts metastore.ListOptions) ([]byte, error) {
	after := opts.After
	if after == "" {
		return []byte{}, nil
	}
	v, err := id.Parse(after)
	if err != nil {
		return nil, fmt.Errorf("%w: After must be a hex pack id: %v", metastore.ErrInvalid, err)
	}
	return v.Bytes(), nil
}

// MaxKeepLast bounds Retention.KeepLast.
const MaxKeepLast = 1 << 30

// MaxKeepWithin bounds Retention.KeepWithin (about 100 years).
const MaxKeepWithin = 100 * 365 * 24 * time.Hour

// CheckRetention validates a retention policy.
func CheckRetention(r metastore.Retention) error {
	if r.KeepLast < 0 || r.KeepLast > MaxKeepLast {
		return fmt.Errorf("%w: keep-last %d out of range [0, %d]", metastore.ErrInvalid, r.KeepLast, MaxKeepLast)
	}
	if r.KeepWithin < 0 || r.KeepWithin > MaxKeepWithin {
		return fmt.Errorf("%w: keep-within %v out of range [0, %v]", metastore.ErrInvalid, r.KeepWithin, MaxKeepWithin)
	}
	return nil
}

// SortNumbers returns version numbers deduplicated, ascending, without
// non-positive ones (no version has them).
func SortNumbers(ns []int64) []int64 {
	out := make([]int64, 0, len(ns))
	for _, n := range ns {
		if n > 0 {
			out = append(out, n)
		}
	}
	slices.Sort(out)
	return slices.Compact(out)
}

// FirstMissing returns the first id of want (in order) not in have.
func FirstMissing(want []id.ID, have map[id.ID]struct{}) (id.ID, bool) {
	for _, x := range want {
		if _, ok := have[x]; !ok {
			return x, true
		}
	}
	return id.ID{}, false
}

// MissingErr is the error of a commit whose Requires are not all stored.
func MissingErr(count int, first id.ID) error {
	return fmt.Errorf("%w: %d required blob(s) not stored in a live pack, first %s", metastore.ErrMissing, count, first.Short())
}

// StaleEpochErr is AddPack's error when the caller's epoch is old.
func StaleEpochErr(p metastore.Pack, epoch int64) error {
	return fmt.Errorf("%w: pack %s was verified at pack epoch %d, the project is at %d", metastore.ErrStale, p.ID.Short(), p.Epoch, epoch)
}

// DeletingErr is AddPack's error for a pack that garbage collection is
// deleting.
func DeletingErr(p metastore.Pack) error {
	return fmt.Errorf("%w: pack %s is being deleted by garbage collection; upload it again later", metastore.ErrStale, p.ID.Short())
}
