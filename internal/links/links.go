// Package links serves a project's files over HTTP from the bucket, with no
// sandbox running: stable links that outlive the sandbox.
//
//	GET|HEAD /v1/projects/{id}/files/{path}             the head's file
//	GET|HEAD /v1/projects/{id}/files/{path}?version=N   version N's file
//
// A request is allowed by an expiring signed URL (made by Linker, with the
// coordinator's urlsign key: the signature covers the project, the path, the
// version and the expiry) or by "Authorization: Bearer <admin token>".
// Sandbox tokens are refused: they are the agent's credential, never a
// download credential.
//
// Responses carry Content-Type (from the extension), Content-Length,
// Last-Modified (the file's mtime), ETag (the content hash, quoted, as in
// project_files.checksum) and Accept-Ranges; If-None-Match gives 304, a
// single byte range gives 206 (416 when unsatisfiable; several ranges are
// answered with the whole file), If-Range is honoured.
//
// What a client learns without access: 400 for a malformed request (which
// does not depend on what is stored), 401 without credentials or with an
// unknown token, 403 for a bad or expired signature or a non-admin token —
// always decided before anything is looked up, so the answer is the same
// whether the project, version or file exists. 404 (one body for every
// missing thing: project, version, path, or a path that is a directory or
// symlink) is only ever sent to an authorized request.
//
// Content is streamed chunk by chunk from ranged GETs of the packs, each
// chunk verified against its hash before any of its bytes is written. A
// chunk that fails verification before the first byte is sent gives 500; after
// it, the connection is aborted, so a client never gets wrong bytes, only a
// short body it detects through Content-Length.
package links

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"mime"
	"net/http"
	"net/url"
	"path"
	"strconv"
	"strings"
	"time"

	"github.com/sandkeep/sandkeep/internal/auth"
	"github.com/sandkeep/sandkeep/internal/metastore"
	"github.com/sandkeep/sandkeep/internal/repo"
	"github.com/sandkeep/sandkeep/internal/tree"
	"github.com/sandkeep/sandkeep/internal/urlsign"
)

// Prefix is the URL path prefix the Handler serves.
const Prefix = "/v1/projects/"

const filesSep = "/files/"

// ParamVersion is the query parameter naming the version.
const ParamVersion = "version"

// signedMethod is the method links are signed for; HEAD is allowed by a
// GET signature.
const signedMethod = http.MethodGet

// URLPath returns the (unescaped) URL path of a file of a project.
func URLPath(projectID, filePath string) string {
	return Prefix + projectID + filesSep + filePath
}

// escapedPath is URLPath with each element escaped.
func escapedPath(projectID, filePath string) string {
	elems := strings.Split(filePath, "/")
	for i, e := range elems {
		elems[i] = url.PathEscape(e)
	}
	return Prefix + url.PathEscape(projectID) + filesSep + strings.Join(elems, "/")
}

// Linker makes signed links.
type Linker struct {
	signer *urlsign.Signer
	base   string
	now    func() time.Time
}

// NewLinker returns a Linker for links under publicURL (the scheme, host and
// optional path prefix under which the coordinator's HTTP listener is
// reached).
func NewLinker(signer *urlsign.Signer, publicURL string) *Linker {
	return &Linker{signer: signer, base: strings.TrimRight(publicURL, "/"), now: time.Now}
}

// WithClock makes l read the time from now (tests; default time.Now).
func (l *Linker) WithClock(now func() time.Time) *Linker {
	l.now = now
	return l
}

// Expiry is when a link made now with lifetime ttl expires (whole seconds,
// as signed).
func (l *Linker) Expiry(ttl time.Duration) time.Time {
	return l.now().Add(ttl).Truncate(time.Second)
}

// Sign returns a link to filePath (a valid workspace path) of version
// (positive) of a project, valid until exp.
func (l *Linker) Sign(projectID, filePath string, version int64, exp time.Time) string {
	q := l.signer.Sign(signedMethod, URLPath(projectID, filePath), exp, url.Values{ParamVersion: {strconv.FormatInt(version, 10)}})
	return l.base + escapedPath(projectID, filePath) + "?" + q
}

// Handler serves file links. Mount it so that it sees the request path as
// sent (not through http.ServeMux, which would redirect "..": this handler
// refuses such paths instead).
type Handler struct {
	repo   *repo.Repo
	signer *urlsign.Signer
	authn  *auth.Authenticator
	log    *slog.Logger
	now    func() time.Time
}

// NewHandler returns a Handler serving the files of r, accepting links
// signed by signer and admin tokens known to r's metadata store.
func NewHandler(r *repo.Repo, signer *urlsign.Signer, log *slog.Logger) *Handler {
	if log == nil {
		log = slog.Default()
	}
	return &Handler{repo: r, signer: signer, authn: auth.NewAuthenticator(r.Meta()), log: log, now: time.Now}
}

// WithClock makes h check expiries against now (tests; default time.Now).
func (h *Handler) WithClock(now func() time.Time) *Handler {
	h.now = now
	return h
}

// Fixed answers: the same status and body whatever is (or is not) stored.
func fail(w http.ResponseWriter, code int, msg string) {
	h := w.Header()
	for k := range h {
		delete(h, k)
	}
	h.Set("Content-Type", "text/plain; charset=utf-8")
	h.Set("X-Content-Type-Options", "nosniff")
	h.Set("Cache-Control", "no-store")
	if code == http.StatusUnauthorized {
		h.Set("WWW-Authenticate", `Bearer realm="sandkeep"`)
	}
	w.WriteHeader(code)
	_, _ = fmt.Fprintln(w, msg)
}

func notFound(w http.ResponseWriter) { fail(w, http.StatusNotFound, "not found") }

// ServeHTTP implements http.Handler.
func (h *Handler) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	if r.Method != http.MethodGet && r.Method != http.MethodHead {
		w.Header().Set("Allow", "GET, HEAD")
		fail(w, http.StatusMethodNotAllowed, "method not allowed")
		return
	}
	// Parse without looking anything up.
	rest, ok := strings.CutPrefix(r.URL.Path, Prefix)
	if !ok {
		notFound(w)
		return
	}
	projectID, filePath, ok := strings.Cut(rest, filesSep)
	if !ok || projectID == "" || strings.Contains(projectID, "/") || len(projectID) > 64 {
		notFound(w)
		return
	}
	if _, err := tree.CleanPath(filePath); err != nil {
		fail(w, http.StatusBadRequest, "invalid file path")
		return
	}
	query, err := url.ParseQuery(r.URL.RawQuery)
	if err != nil {
		fail(w, http.StatusBadRequest, "malformed query")
		return
	}
	var version int64
	switch vs := query[ParamVersion]; len(vs) {
	case 0:
	case 1:
		version, err = strconv.ParseInt(vs[0], 10, 64)
		if err != nil || version <= 0 {
			fail(w, http.StatusBadRequest, "version must be a positive integer")
			return
		}
	default:
		fail(w, http.StatusBadRequest, "more than one version")
		return
	}

	// Authorize, still without looking anything up.
	if code, msg := h.authorize(r, query); code != 0 {
		fail(w, code, msg)
		return
	}

	// Authorized: find the file.
	ctx := r.Context()
	v, err := h.repo.ResolveVersion(ctx, projectID, version)
	if err != nil {
		h.lookupFailed(w, r, err)
		return
	}
	n, err := h.repo.Lookup(ctx, projectID, v.Root, filePath)
	if err != nil {
		h.lookupFailed(w, r, err)
		return
	}
	if n.Type != tree.File {
		notFound(w)
		return
	}
	h.serveFile(w, r, projectID, filePath, n, version != 0)
}

// authorize returns 0 when the request may read any file of the project it
// names, else the status and message to answer with.
func (h *Handler) authorize(r *http.Request, query url.Values) (int, string) {
	if hdr := r.Header.Get("Authorization"); hdr != "" {
		p, err := h.authn.Authenticate(r.Context(), auth.BearerFrom(hdr))
		switch {
		case errors.Is(err, auth.ErrUnauthenticated):
			return http.StatusUnauthorized, "unauthorized"
		case err != nil:
			h.log.Error("file link: token lookup failed", "err", err)
			return http.StatusServiceUnavailable, "try again later"
		case !p.IsAdmin():
			return http.StatusForbidden, "forbidden"
		}
		return 0, ""
	}
	if len(query[urlsign.ParamSignature]) == 0 && len(query[urlsign.ParamExpires]) == 0 {
		return http.StatusUnauthorized, "unauthorized"
	}
	err := h.signer.Verify(signedMethod, r.URL.Path, query, h.now())
	switch {
	case err == nil:
		return 0, ""
	case errors.Is(err, urlsign.ErrExpired):
		return http.StatusForbidden, "link expired"
	}
	return http.StatusForbidden, "forbidden"
}

func (h *Handler) lookupFailed(w http.ResponseWriter, r *http.Request, err error) {
	switch {
	case errors.Is(err, metastore.ErrNotFound), errors.Is(err, tree.ErrInvalid):
		notFound(w)
	case errors.Is(err, context.Canceled):
	default:
		h.log.Error("file link: lookup failed", "path", r.URL.Path, "err", err)
		fail(w, http.StatusInternalServerError, "internal error")
	}
}

// serveFile answers for the file n, with conditional and range handling.
func (h *Handler) serveFile(w http.ResponseWriter, r *http.Request, projectID, filePath string, n *tree.Node, pinned bool) {
	etag := `"` + repo.ContentID(n) + `"`
	hdr := w.Header()
	hdr.Set("ETag", etag)
	hdr.Set("Last-Modified", time.Unix(0, n.MtimeNs).UTC().Format(http.TimeFormat))
	hdr.Set("Accept-Ranges", "bytes")
	hdr.Set("X-Content-Type-Options", "nosniff")
	// Files are users' content: never let them run script on this origin.
	hdr.Set("Content-Security-Policy", "sandbox")
	if pinned {
		hdr.Set("Cache-Control", "private, max-age=3600")
	} else {
		hdr.Set("Cache-Control", "private, no-cache")
	}
	if inm := r.Header.Get("If-None-Match"); inm != "" && etagMatch(inm, etag) {
		w.WriteHeader(http.StatusNotModified)
		return
	}
	hdr.Set("Content-Type", repo.ContentType(n.Name))
	if cd := mime.FormatMediaType("inline", map[string]string{"filename": path.Base(filePath)}); cd != "" {
		hdr.Set("Content-Disposition", cd)
	}
	off, length, status := int64(0), n.Size, http.StatusOK
	if rg := r.Header.Get("Range"); rg != "" && ifRange(r.Header.Get("If-Range"), etag) {
		start, l, ok, satisfiable := parseRange(rg, n.Size)
		switch {
		case ok && !satisfiable:
			hdr.Set("Content-Range", fmt.Sprintf("bytes */%d", n.Size))
			hdr.Del("Content-Disposition")
			hdr.Set("Content-Type", "text/plain; charset=utf-8")
			w.WriteHeader(http.StatusRequestedRangeNotSatisfiable)
			_, _ = fmt.Fprintln(w, "range not satisfiable")
			return
		case ok:
			off, length, status = start, l, http.StatusPartialContent
			hdr.Set("Content-Range", fmt.Sprintf("bytes %d-%d/%d", start, start+l-1, n.Size))
		}
	}
	hdr.Set("Content-Length", strconv.FormatInt(length, 10))
	if r.Method == http.MethodHead || length == 0 {
		w.WriteHeader(status)
		return
	}
	started := false
	err := h.repo.ReadFile(r.Context(), projectID, n, off, length, func(b []byte) error {
		if !started {
			started = true
			w.WriteHeader(status)
		}
		_, err := w.Write(b)
		return err
	})
	if err == nil {
		return
	}
	if r.Context().Err() != nil {
		return // the client went away
	}
	h.log.Error("file link: reading the file failed", "project", projectID, "path", filePath, "started", started, "err", err)
	if !started {
		fail(w, http.StatusInternalServerError, "could not read the file")
		return
	}
	// Headers and some correct bytes are out: abort the connection so the
	// client sees a short body rather than wrong bytes.
	panic(http.ErrAbortHandler)
}

// etagMatch reports whether an If-None-Match value matches etag (weak
// comparison, as RFC 9110 asks for If-None-Match).
func etagMatch(header, etag string) bool {
	for _, t := range strings.Split(header, ",") {
		t = strings.TrimSpace(t)
		if t == "*" || strings.TrimPrefix(t, "W/") == etag {
			return true
		}
	}
	return false
}

// ifRange reports whether a Range header applies given the If-Range value
// (absent: it applies; an entity tag: only if it matches strongly; a date:
// never, since links carry no reliable modification date).
func ifRange(header, etag string) bool {
	if header == "" {
		return true
	}
	return header == etag
}

// parseRange parses a Range header of one byte range against a size. ok is
// false when the header is to be ignored (another unit, several ranges, bad
// syntax): the whole file is then sent. satisfiable is false when the range
// starts at or past the end (or asks for a zero-length suffix).
func parseRange(header string, size int64) (start, length int64, ok, satisfiable bool) {
	spec, found := strings.CutPrefix(header, "bytes=")
	if !found {
		return 0, 0, false, false
	}
	spec = strings.TrimSpace(spec)
	if strings.Contains(spec, ",") {
		return 0, 0, false, false
	}
	first, last, found := strings.Cut(spec, "-")
	if !found {
		return 0, 0, false, false
	}
	first, last = strings.TrimSpace(first), strings.TrimSpace(last)
	if first == "" {
		// Suffix: the last N bytes.
		n, err := parseDigits(last)
		if err != nil {
			return 0, 0, false, false
		}
		if n == 0 || size == 0 {
			return 0, 0, true, false
		}
		n = min(n, size)
		return size - n, n, true, true
	}
	s, err := parseDigits(first)
	if err != nil {
		return 0, 0, false, false
	}
	e := size - 1
	if last != "" {
		if e, err = parseDigits(last); err != nil || e < s {
			return 0, 0, false, false
		}
		e = min(e, size-1)
	}
	if s >= size {
		return 0, 0, true, false
	}
	return s, e - s + 1, true, true
}

// parseDigits parses a non-empty string of ASCII digits (no sign, no
// spaces).
func parseDigits(s string) (int64, error) {
	if s == "" || strings.TrimLeft(s, "0123456789") != "" {
		return 0, errors.New("not a number")
	}
	return strconv.ParseInt(s, 10, 64)
}
