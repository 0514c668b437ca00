package fsstore

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"net/url"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/sandkeep/sandkeep/internal/blobstore"
	"github.com/sandkeep/sandkeep/internal/blobstore/blobstoretest"
	"github.com/sandkeep/sandkeep/internal/urlsign"
)

var testKey = bytes.Repeat([]byte("k"), urlsign.MinKeyLen)

// newTestStore returns a store in a fresh directory served by an
// httptest.Server, and the directory.
func newTestStore(t *testing.T) (*Store, string) {
	t.Helper()
	signer, err := urlsign.New(testKey)
	if err != nil {
		t.Fatal(err)
	}
	dir := filepath.Join(t.TempDir(), "blobs")
	mux := http.NewServeMux()
	srv := httptest.NewServer(mux)
	t.Cleanup(srv.Close)
	s, err := New(dir, Options{BaseURL: srv.URL, URLSigner: signer})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Close() })
	mux.Handle(BlobPath, s.Handler())
	return s, dir
}

func TestConformance(t *testing.T) {
	blobstoretest.Run(t, func(t *testing.T) blobstore.Backend {
		s, _ := newTestStore(t)
		return s
	})
}

func TestName(t *testing.T) {
	s, dir := newTestStore(t)
	if got, want := s.Name(), "fs:"+dir; got != want {
		t.Errorf("Name() = %q, want %q", got, want)
	}
}

func TestNewOptions(t *testing.T) {
	signer, err := urlsign.New(testKey)
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	tests := []struct {
		name string
		opts Options
		ok   bool
	}{
		{"none", Options{}, true},
		{"both", Options{BaseURL: "http://127.0.0.1:7421", URLSigner: signer}, true},
		{"with path", Options{BaseURL: "https://example.com/sandkeep/", URLSigner: signer}, true},
		{"no signer", Options{BaseURL: "http://127.0.0.1:7421"}, false},
		{"no base", Options{URLSigner: signer}, false},
		{"relative", Options{BaseURL: "/v1", URLSigner: signer}, false},
		{"ftp", Options{BaseURL: "ftp://x", URLSigner: signer}, false},
		{"query", Options{BaseURL: "http://x/?a=b", URLSigner: signer}, false},
	}
	for _, tt := range tests {
		s, err := New(dir, tt.opts)
		if (err == nil) != tt.ok {
			t.Errorf("%s: New = %v, want ok=%v", tt.name, err, tt.ok)
		}
		if s != nil {
			s.Close()
		}
	}
	s, err := New(filepath.Join(dir, "plain"), Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	if _, err := s.SignGet(t.Context(), "a", time.Minute); err == nil {
		t.Error("SignGet without a signer succeeded")
	}
}

// TestHostileKeysStayInside checks that keys trying to escape the directory
// touch nothing outside it, and that symlinks planted inside the directory
// are not followed out of it.
func TestHostileKeysStayInside(t *testing.T) {
	s, dir := newTestStore(t)
	ctx := t.Context()
	parent := filepath.Dir(dir)
	outside := filepath.Join(parent, "outside")
	if err := os.Mkdir(outside, 0o700); err != nil {
		t.Fatal(err)
	}
	secret := filepath.Join(outside, "secret")
	if err := os.WriteFile(secret, []byte("secret"), 0o600); err != nil {
		t.Fatal(err)
	}
	for _, key := range []string{"../x", "a/../../x", "/etc/passwd", "a\x00b", "../outside/secret", "..\\outside"} {
		if err := s.Put(ctx, key, strings.NewReader("x"), 1); !errors.Is(err, blobstore.ErrInvalidKey) {
			t.Errorf("Put(%q) = %v, want ErrInvalidKey", key, err)
		}
		if err := s.Delete(ctx, key); !errors.Is(err, blobstore.ErrInvalidKey) {
			t.Errorf("Delete(%q) = %v, want ErrInvalidKey", key, err)
		}
	}

	// Symlinks inside the store pointing outside: a directory and a file.
	if err := os.Symlink(outside, filepath.Join(dir, "dirlink")); err != nil {
		t.Fatal(err)
	}
	if err := os.Symlink(secret, filepath.Join(dir, "filelink")); err != nil {
		t.Fatal(err)
	}
	if err := s.Put(ctx, "dirlink/new", strings.NewReader("x"), 1); err == nil {
		t.Error("Put through a symlinked directory succeeded")
	}
	if err := s.Put(ctx, "dirlink/secret", strings.NewReader("pwned!"), 6); err == nil {
		t.Error("Put over a file behind a symlinked directory succeeded")
	}
	if _, err := s.Get(ctx, "dirlink/secret", 0, -1); err == nil {
		t.Error("Get through a symlinked directory succeeded")
	}
	if _, err := s.Get(ctx, "filelink", 0, -1); err == nil {
		t.Error("Get of a symlink to a file outside succeeded")
	}
	if err := s.Delete(ctx, "dirlink/secret"); err == nil {
		if _, serr := os.Stat(secret); serr != nil {
			t.Error("Delete through a symlinked directory removed a file outside")
		}
	}
	// Overwriting the file symlink replaces the link, not its target.
	if err := s.Put(ctx, "filelink", strings.NewReader("mine"), 4); err != nil {
		t.Errorf("Put(filelink) = %v", err)
	}
	if b, err := os.ReadFile(secret); err != nil || string(b) != "secret" {
		t.Errorf("file outside is now %q, %v", b, err)
	}
	if fi, err := os.Lstat(filepath.Join(dir, "filelink")); err != nil || !fi.Mode().IsRegular() {
		t.Errorf("filelink after Put: %v, %v; want a regular file", fi, err)
	}
	if _, err := os.Stat(filepath.Join(outside, "new")); err == nil {
		t.Error("a file was created outside the store")
	}
	// Nothing but the planted links and our object in the parent or the store.
	entries, _ := os.ReadDir(parent)
	var names []string
	for _, e := range entries {
		names = append(names, e.Name())
	}
	if !slices.Equal(names, []string{"blobs", "outside"}) {
		t.Errorf("parent directory holds %v", names)
	}
	// The dangling-outside directory link is not listed or entered.
	var keys []string
	if err := s.List(ctx, "", func(o blobstore.Object) error {
		keys = append(keys, o.Key)
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	if !slices.Equal(keys, []string{"filelink"}) {
		t.Errorf("List = %v, want [filelink]", keys)
	}
}

func TestKeyConflict(t *testing.T) {
	s, _ := newTestStore(t)
	ctx := t.Context()
	if err := s.Put(ctx, "a/b", strings.NewReader("x"), 1); err != nil {
		t.Fatal(err)
	}
	if err := s.Put(ctx, "a", strings.NewReader("x"), 1); !errors.Is(err, ErrKeyConflict) {
		t.Errorf("Put(a) with a/b stored = %v, want ErrKeyConflict", err)
	}
	if err := s.Put(ctx, "a/b/c", strings.NewReader("x"), 1); !errors.Is(err, ErrKeyConflict) {
		t.Errorf("Put(a/b/c) with a/b stored = %v, want ErrKeyConflict", err)
	}
	if err := s.Delete(ctx, "a"); err != nil {
		t.Errorf("Delete of a directory key = %v", err)
	}
	if _, err := s.Stat(ctx, "a/b"); err != nil {
		t.Errorf("Delete(a) damaged a/b: %v", err)
	}
}

func TestNoTempFilesLeft(t *testing.T) {
	s, dir := newTestStore(t)
	ctx := t.Context()
	_ = s.Put(ctx, "t/short", strings.NewReader("abc"), 4)
	_ = s.Put(ctx, "t/long", strings.NewReader("abcde"), 4)
	if err := s.Put(ctx, "t/ok", strings.NewReader("abcd"), 4); err != nil {
		t.Fatal(err)
	}
	entries, err := os.ReadDir(filepath.Join(dir, "t"))
	if err != nil {
		t.Fatal(err)
	}
	if len(entries) != 1 || entries[0].Name() != "ok" {
		t.Errorf("directory holds %v, want only ok", entries)
	}
	// A leftover temporary file (as after a crash) is not listed.
	if err := os.WriteFile(filepath.Join(dir, "t", tmpMarker+"crash"), []byte("x"), 0o600); err != nil {
		t.Fatal(err)
	}
	var keys []string
	_ = s.List(ctx, "", func(o blobstore.Object) error { keys = append(keys, o.Key); return nil })
	if !slices.Equal(keys, []string{"t/ok"}) {
		t.Errorf("List = %v, want [t/ok]", keys)
	}
	// Deleting the last object removes the directories it leaves empty.
	if err := os.Remove(filepath.Join(dir, "t", tmpMarker+"crash")); err != nil {
		t.Fatal(err)
	}
	if err := s.Delete(ctx, "t/ok"); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(filepath.Join(dir, "t")); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("empty directory t left behind: %v", err)
	}
	if _, err := os.Stat(dir); err != nil {
		t.Errorf("store directory removed: %v", err)
	}
}

func TestHandlerErrors(t *testing.T) {
	s, _ := newTestStore(t)
	ctx := t.Context()
	if err := s.Put(ctx, "h/obj", strings.NewReader("hello"), 5); err != nil {
		t.Fatal(err)
	}
	get, err := s.SignGet(ctx, "h/obj", time.Minute)
	if err != nil {
		t.Fatal(err)
	}
	put, err := s.SignPut(ctx, "h/new", 5, time.Minute)
	if err != nil {
		t.Fatal(err)
	}
	other, err := s.SignGet(ctx, "h/other", time.Minute)
	if err != nil {
		t.Fatal(err)
	}
	h := s.Handler()
	u, _ := url.Parse(get.URL)
	pu, _ := url.Parse(put.URL)
	ou, _ := url.Parse(other.URL)

	tests := []struct {
		name   string
		method string
		target string
		body   string
		cl     int64 // -1: chunked
		code   int
	}{
		{"get", "GET", u.RequestURI(), "", 0, 200},
		{"head", "HEAD", u.RequestURI(), "", 0, 405},
		{"delete", "DELETE", u.RequestURI(), "", 0, 405},
		{"post", "POST", pu.RequestURI(), "hello", 5, 405},
		{"no signature", "GET", u.Path, "", 0, 403},
		{"other key's signature", "GET", u.Path + "?" + ou.RawQuery, "", 0, 403},
		{"get with put signature", "GET", pu.RequestURI(), "", 0, 403},
		{"put with get signature", "PUT", strings.Replace(u.RequestURI(), "h/obj", "h/new", 1), "hello", 5, 403},
		{"tampered size", "PUT", strings.Replace(pu.RequestURI(), "size=5", "size=6", 1), "hello!", 6, 403},
		{"bad key", "GET", "/v1/blobs/a/../b?" + u.RawQuery, "", 0, 400},
		{"bad key encoded", "GET", "/v1/blobs/a%2F..%2F..%2Fb?" + u.RawQuery, "", 0, 400},
		{"not a blob path", "GET", "/v1/other", "", 0, 404},
		{"put too large", "PUT", pu.RequestURI(), "hello!", 6, 413},
		{"put too small", "PUT", pu.RequestURI(), "hell", 4, 400},
		{"put chunked", "PUT", pu.RequestURI(), "hello", -1, 411},
		{"put", "PUT", pu.RequestURI(), "hello", 5, 201},
		{"put again (create-only)", "PUT", pu.RequestURI(), "HELLO", 5, 412},
		{"missing", "GET", ou.RequestURI(), "", 0, 404},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var body io.Reader
			if tt.body != "" {
				body = strings.NewReader(tt.body)
			}
			req := httptest.NewRequestWithContext(t.Context(), tt.method, tt.target, body)
			req.ContentLength = tt.cl
			w := httptest.NewRecorder()
			h.ServeHTTP(w, req)
			if w.Code != tt.code {
				t.Errorf("%s %s: %d %q, want %d", tt.method, tt.target, w.Code, w.Body, tt.code)
			}
		})
	}

	// A client that hangs up half way through the body stores nothing.
	trunc, err := s.SignPut(ctx, "h/trunc", 100, time.Minute)
	if err != nil {
		t.Fatal(err)
	}
	tu, _ := url.Parse(trunc.URL)
	req := httptest.NewRequestWithContext(ctx, "PUT", tu.RequestURI(), io.MultiReader(strings.NewReader("half"), errReader{io.ErrUnexpectedEOF}))
	req.ContentLength = 100
	rec := httptest.NewRecorder()
	h.ServeHTTP(rec, req)
	if rec.Code != 400 {
		t.Errorf("truncated PUT: %d %q, want 400", rec.Code, rec.Body)
	}
	if _, err := s.Stat(ctx, "h/trunc"); !errors.Is(err, blobstore.ErrNotFound) {
		t.Errorf("truncated PUT stored something: %v", err)
	}

	// Expired URLs are refused with 403 and say so.
	exp, err := s.SignGet(ctx, "h/obj", -time.Second)
	if err != nil {
		t.Fatal(err)
	}
	eu, _ := url.Parse(exp.URL)
	w := httptest.NewRecorder()
	h.ServeHTTP(w, httptest.NewRequestWithContext(ctx, "GET", eu.RequestURI(), nil))
	if w.Code != 403 || !strings.Contains(w.Body.String(), "expired") {
		t.Errorf("expired GET: %d %q", w.Code, w.Body)
	}
}

func TestGetResponseHeaders(t *testing.T) {
	s, _ := newTestStore(t)
	ctx := t.Context()
	if err := s.Put(ctx, "h/obj", strings.NewReader("<html>hello</html>"), 18); err != nil {
		t.Fatal(err)
	}
	get, err := s.SignGet(ctx, "h/obj", time.Minute)
	if err != nil {
		t.Fatal(err)
	}
	req, _ := get.NewRequest(ctx, nil, 0)
	req.Header.Set("Range", "bytes=6-10")
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	h := resp.Header
	if resp.StatusCode != 206 || string(b) != "hello" || h.Get("Content-Length") != "5" ||
		h.Get("Content-Range") != "bytes 6-10/18" || h.Get("Content-Type") != "application/octet-stream" {
		t.Errorf("ranged GET: %d %q %v", resp.StatusCode, b, h)
	}
}

func TestExpiry(t *testing.T) {
	now := time.Unix(1000, 300_000_000)
	tests := []struct {
		ttl  time.Duration
		want int64
	}{
		{time.Minute, 1061},
		{time.Second, 1002},
		{700 * time.Millisecond, 1001},
		{0, 1000},
		{-time.Millisecond, 1000},
		{-time.Minute, 940},
	}
	for _, tt := range tests {
		if got := expiry(now, tt.ttl).Unix(); got != tt.want {
			t.Errorf("expiry(%v) = %d, want %d", tt.ttl, got, tt.want)
		}
	}
}

type errReader struct{ err error }

func (e errReader) Read([]byte) (int, error) { return 0, e.err }

// TestPutRacesDeletesOfEmptyParents: Puts of deep keys while Deletes of
// their neighbours remove the parent directories they leave empty (what
// garbage collection does beside uploads: projects/P/packs/hh/...). A Put
// whose freshly made parent vanishes before the next level is made, or
// before its temporary file is created, makes it again: it never fails.
func TestPutRacesDeletesOfEmptyParents(t *testing.T) {
	s, _ := newTestStore(t)
	ctx := t.Context()
	const workers, rounds = 8, 150
	errs := make(chan error, workers)
	var wg sync.WaitGroup
	for w := range workers {
		wg.Go(func() {
			for r := range rounds {
				// Every worker shares the upper levels; each Delete leaves
				// them empty whenever no other key is in them.
				key := fmt.Sprintf("projects/p/packs/%d/%d-%d", r%3, w, r)
				if err := s.Put(ctx, key, strings.NewReader("x"), 1); err != nil {
					errs <- fmt.Errorf("Put(%q): %w", key, err)
					return
				}
				if err := s.Delete(ctx, key); err != nil {
					errs <- fmt.Errorf("Delete(%q): %w", key, err)
					return
				}
			}
		})
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Error(err)
	}
}
