// Package blobstore defines the object store sandkeep keeps packs and version
// records in, and the short-lived signed URLs through which agents reach it.
//
// Implementations: fsstore (a local directory, the embedded default) and
// s3store (any S3-compatible service). Both pass the conformance suite in
// blobstoretest.
package blobstore

import (
	"context"
	"errors"
	"io"
	"time"
)

// ErrNotFound is returned (wrapped) when an object does not exist.
var ErrNotFound = errors.New("object not found")

// ErrInvalidKey is returned (wrapped) for a key that is empty, absolute,
// contains "..", ".", empty segments, a backslash or a NUL byte, or is longer
// than MaxKeyLen. Stores must reject such keys before touching storage.
// ValidateKey also rejects keys that are not valid UTF-8 or that contain
// ASCII control characters (S3 listings cannot carry them faithfully).
var ErrInvalidKey = errors.New("invalid object key")

// ErrInvalidRange is returned (wrapped) by Get for a negative offset or a
// range that extends past the end of the object.
var ErrInvalidRange = errors.New("invalid object range")

// ErrSizeMismatch is returned (wrapped) by Put when the reader yields fewer or
// more bytes than the size it was given. Nothing is stored in that case.
var ErrSizeMismatch = errors.New("object size mismatch")

// ErrExists is returned (wrapped) by a create-only write (a signed PUT URL,
// Creator.Create) when the key already holds an object; nothing changed.
var ErrExists = errors.New("object already exists")

// MaxKeyLen is the longest key a store accepts.
const MaxKeyLen = 900

// Object describes one stored object.
type Object struct {
	Key  string
	Size int64
	// ModTime is when the object was stored (the store's clock; second
	// precision at least).
	ModTime time.Time
}

// Store is a flat namespace of immutable objects addressed by slash-separated
// keys such as "projects/<project>/packs/ab/<pack-id>".
//
// Guarantees every implementation gives:
//   - Put is atomic: a concurrent or later Get sees either no object or the
//     whole object, never a prefix. Put over an existing key replaces it.
//   - Put fails (and stores nothing) when r yields fewer or more than size bytes.
//   - Get of a missing key, Stat of a missing key: an error wrapping ErrNotFound.
//   - Delete of a missing key succeeds.
//   - List visits keys under prefix in lexical order; it is for GC and
//     project deletion only, never for a hot path.
//   - Every method honours ctx cancellation.
type Store interface {
	// Put stores exactly size bytes read from r under key.
	Put(ctx context.Context, key string, r io.Reader, size int64) error
	// Get returns a reader over length bytes of key starting at offset; a
	// negative length reads to the end. A range past the end of the object is
	// an error. The caller closes the reader.
	Get(ctx context.Context, key string, offset, length int64) (io.ReadCloser, error)
	// Stat returns the size of key.
	Stat(ctx context.Context, key string) (int64, error)
	// Delete removes key.
	Delete(ctx context.Context, key string) error
	// List calls fn for each object whose key starts with prefix. An error
	// from fn stops the listing and is returned.
	List(ctx context.Context, prefix string, fn func(Object) error) error
}

// SignedURL is a request an agent can make without holding any credential.
type SignedURL struct {
	Method  string            // "GET" or "PUT"
	URL     string            // absolute http(s) URL
	Headers map[string]string // headers the request must carry (may be empty)
	Expires time.Time
}

// Signer issues short-lived URLs for one store. GET URLs accept an HTTP Range
// header. PUT URLs accept exactly one body of the given size, and only
// create: a PUT to a key that already holds an object fails (HTTP 412) and
// leaves the object as it was, so a URL handed to an untrusted agent can
// never replace an object, whatever its lifetime. (s3store signs
// "If-None-Match: *", which the S3 server must honour; fsstore links the
// new file in place, which fails if the name exists.)
type Signer interface {
	SignPut(ctx context.Context, key string, size int64, ttl time.Duration) (SignedURL, error)
	SignGet(ctx context.Context, key string, ttl time.Duration) (SignedURL, error)
}

// Tracker is implemented by a backend that must learn of the objects
// written through its signed PUT URLs (the replication wrapper copies
// them). The coordinator calls Written before it relies on such an object.
type Tracker interface {
	Written(ctx context.Context, key string, size int64) error
}

// Backend is a store together with its signer: what the coordinator runs on.
type Backend interface {
	Store
	Signer
	// Name describes the backend for logs, e.g. "fs:/data/blobs" or "s3://bucket/prefix".
	Name() string
}
