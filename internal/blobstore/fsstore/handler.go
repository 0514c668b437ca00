package fsstore

import (
	"context"
	"errors"
	"io"
	"net/http"
	"strconv"
	"strings"
	"time"

	"github.com/sandkeep/sandkeep/internal/blobstore"
	"github.com/sandkeep/sandkeep/internal/urlsign"
)

// Handler returns the HTTP handler serving the store's signed URLs at
// BlobPath + key (mount it as mux.Handle(fsstore.BlobPath, s.Handler()), or
// behind http.StripPrefix when BaseURL has a path):
//
//   - GET reads the object; a single-range Range header (bytes=a-b, bytes=a-,
//     bytes=-n) gives 206 or 416.
//   - PUT creates the object from the body, whose Content-Length must equal
//     the signed size: 201. It never replaces an object: 412 if the key
//     exists (S3's answer to If-None-Match: *), and the object is unchanged.
//
// Errors: 400 bad key or short body, 403 missing, bad or expired signature,
// 404 no such object, 405 other methods, 409 key conflict, 411 PUT without
// Content-Length, 412 object exists, 413 body larger than signed.
func (s *Store) Handler() http.Handler {
	return http.HandlerFunc(s.serveHTTP)
}

func (s *Store) serveHTTP(w http.ResponseWriter, r *http.Request) {
	key, ok := strings.CutPrefix(r.URL.Path, BlobPath)
	if !ok {
		http.NotFound(w, r)
		return
	}
	if r.Method != http.MethodGet && r.Method != http.MethodPut {
		w.Header().Set("Allow", "GET, PUT")
		http.Error(w, "method not allowed", http.StatusMethodNotAllowed)
		return
	}
	if err := blobstore.ValidateKey(key); err != nil {
		http.Error(w, "invalid object key", http.StatusBadRequest)
		return
	}
	if s.signer == nil {
		http.Error(w, "signed URLs are not enabled", http.StatusForbidden)
		return
	}
	if err := s.signer.Verify(r.Method, r.URL.Path, r.URL.Query(), time.Now()); err != nil {
		msg := "bad signature"
		if errors.Is(err, urlsign.ErrExpired) {
			msg = "URL expired"
		}
		http.Error(w, msg, http.StatusForbidden)
		return
	}
	if r.Method == http.MethodGet {
		s.serveGet(w, r, key)
	} else {
		s.servePut(w, r, key)
	}
}

func (s *Store) serveGet(w http.ResponseWriter, r *http.Request, key string) {
	f, _, err := s.open(r.Context(), key)
	if err != nil {
		s.httpError(w, r, "get", key, err)
		return
	}
	defer f.Close()
	w.Header().Set("Content-Type", "application/octet-stream")
	w.Header().Set("X-Content-Type-Options", "nosniff")
	// Objects are immutable, but the URL is short-lived and private.
	w.Header().Set("Cache-Control", "private, no-store")
	http.ServeContent(w, r, "", time.Time{}, f)
}

func (s *Store) servePut(w http.ResponseWriter, r *http.Request, key string) {
	size, err := strconv.ParseInt(r.URL.Query().Get("size"), 10, 64)
	if err != nil || size < 0 {
		http.Error(w, "URL is not a signed PUT URL", http.StatusBadRequest)
		return
	}
	switch {
	case r.ContentLength < 0:
		http.Error(w, "Content-Length required", http.StatusLengthRequired)
		return
	case r.ContentLength > size:
		http.Error(w, "body larger than the signed size", http.StatusRequestEntityTooLarge)
		return
	case r.ContentLength < size:
		http.Error(w, "body smaller than the signed size", http.StatusBadRequest)
		return
	}
	if s.allow != nil {
		if err := s.allow(r.Context(), key); err != nil {
			http.Error(w, err.Error(), http.StatusForbidden)
			return
		}
	}
	if _, err := s.Stat(r.Context(), key); err == nil {
		// Cheap early answer; create checks again atomically.
		http.Error(w, "object exists; signed PUTs never replace an object", http.StatusPreconditionFailed)
		return
	}
	// The server stops the body at Content-Length, which equals size; create
	// checks that the client really sent that much.
	if err := s.create(r.Context(), key, r.Body, size); err != nil {
		s.httpError(w, r, "put", key, err)
		return
	}
	w.WriteHeader(http.StatusCreated)
}

func (s *Store) httpError(w http.ResponseWriter, r *http.Request, op, key string, err error) {
	switch {
	case errors.Is(err, blobstore.ErrNotFound):
		http.Error(w, "no such object", http.StatusNotFound)
	case errors.Is(err, blobstore.ErrInvalidKey):
		http.Error(w, "invalid object key", http.StatusBadRequest)
	case errors.Is(err, blobstore.ErrSizeMismatch) || errors.Is(err, io.ErrUnexpectedEOF):
		http.Error(w, "body size does not match the signed size", http.StatusBadRequest)
	case errors.Is(err, blobstore.ErrExists):
		http.Error(w, "object exists; signed PUTs never replace an object", http.StatusPreconditionFailed)
	case errors.Is(err, ErrKeyConflict):
		http.Error(w, "key conflicts with another object", http.StatusConflict)
	case errors.Is(err, context.Canceled) || r.Context().Err() != nil:
		// The client went away; nobody reads the answer.
		http.Error(w, "request canceled", http.StatusBadRequest)
	default:
		s.log.ErrorContext(r.Context(), "fsstore: serving signed URL", "op", op, "key", key, "store", s.dir, "err", err)
		http.Error(w, "internal error", http.StatusInternalServerError)
	}
}
