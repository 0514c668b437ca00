// Package urlsign signs and verifies URLs that the coordinator serves itself
// (local-store blob URLs, file download links) so that a client holding no
// credential can make exactly the request it was given, until it expires.
//
// A signed URL carries its expiry and an HMAC-SHA256 in its query string:
//
//	/v1/blobs/projects/p/packs/ab/x?exp=1767225600&sig=<base64url>&size=123
//
// The MAC covers the HTTP method, the (unescaped) URL path, the expiry and
// every other query parameter, so any change to them, including an added or
// removed parameter, invalidates the signature.
package urlsign

import (
	"crypto/hmac"
	"crypto/sha256"
	"encoding/base64"
	"encoding/binary"
	"errors"
	"fmt"
	"hash"
	"net/url"
	"slices"
	"strconv"
	"time"
)

// MinKeyLen is the shortest secret key New accepts.
const MinKeyLen = 32

// Query parameter names reserved by the signer. Extra parameters passed to
// Sign must not use them.
const (
	ParamExpires   = "exp"
	ParamSignature = "sig"
)

// ErrExpired is returned (wrapped) by Verify for a correctly signed URL whose
// expiry has passed.
var ErrExpired = errors.New("signed URL expired")

// ErrBadSignature is returned (wrapped) by Verify for a URL whose signature is
// missing, malformed or does not match its method, path and parameters.
var ErrBadSignature = errors.New("bad URL signature")

// sigLen is the length of an encoded signature.
var sigLen = base64.RawURLEncoding.EncodedLen(sha256.Size)

// domain separates these MACs from any other use of the same key.
const domain = "sandkeep-urlsign-v1"

// Signer signs and verifies URLs with one secret key. It is safe for
// concurrent use.
type Signer struct {
	key []byte
}

// New returns a Signer using a copy of key, which must be at least MinKeyLen
// bytes of secret random data. Every coordinator serving the same URLs must
// use the same key.
func New(key []byte) (*Signer, error) {
	if len(key) < MinKeyLen {
		return nil, fmt.Errorf("urlsign: key is %d bytes, need at least %d", len(key), MinKeyLen)
	}
	return &Signer{key: slices.Clone(key)}, nil
}

// Sign returns the query string (without a leading "?") that makes a request
// with method to path valid until exp (to the second, rounded down): the
// extra parameters, "exp" and "sig". path is the unescaped URL path the
// server will see (url.URL.Path). Sign panics if extra uses a reserved
// parameter name, which is a programming error.
func (s *Signer) Sign(method, path string, exp time.Time, extra url.Values) string {
	q := make(url.Values, len(extra)+2)
	for k, vs := range extra {
		if k == ParamExpires || k == ParamSignature {
			panic(fmt.Sprintf("urlsign: extra parameter %q is reserved", k))
		}
		q[k] = slices.Clone(vs)
	}
	q.Set(ParamExpires, strconv.FormatInt(exp.Unix(), 10))
	q.Set(ParamSignature, base64.RawURLEncoding.EncodeToString(s.mac(method, path, q)))
	return q.Encode()
}

// Verify checks that query (the parsed query string of a request with method
// to path) carries a valid signature that has not expired at now. It returns
// nil, or an error wrapping ErrBadSignature or ErrExpired. The signature is
// checked first, so a tampered expiry is ErrBadSignature, not ErrExpired.
func (s *Signer) Verify(method, path string, query url.Values, now time.Time) error {
	sigs := query[ParamSignature]
	if len(sigs) != 1 {
		return fmt.Errorf("urlsign: %w: want exactly one %q parameter, got %d", ErrBadSignature, ParamSignature, len(sigs))
	}
	if len(sigs[0]) != sigLen {
		return fmt.Errorf("urlsign: %w: malformed signature", ErrBadSignature)
	}
	exps := query[ParamExpires]
	if len(exps) != 1 {
		return fmt.Errorf("urlsign: %w: want exactly one %q parameter, got %d", ErrBadSignature, ParamExpires, len(exps))
	}
	exp, err := strconv.ParseInt(exps[0], 10, 64)
	if err != nil {
		return fmt.Errorf("urlsign: %w: malformed expiry", ErrBadSignature)
	}
	// Compare the canonical encodings, not decoded bytes: base64 decoders
	// accept several spellings (ignored newlines, non-zero padding bits) of
	// the same bytes, and a signed URL should have exactly one.
	want := base64.RawURLEncoding.EncodeToString(s.mac(method, path, query))
	if !hmac.Equal([]byte(sigs[0]), []byte(want)) {
		return fmt.Errorf("urlsign: %w", ErrBadSignature)
	}
	if now.Unix() >= exp {
		return fmt.Errorf("urlsign: %w at %s", ErrExpired, time.Unix(exp, 0).UTC().Format(time.RFC3339))
	}
	return nil
}

// mac computes the HMAC of method, path and every parameter of q except
// "sig", in a canonical, unambiguous (length-prefixed) encoding: parameters
// sorted by name, the values of a parameter sorted too.
func (s *Signer) mac(method, path string, q url.Values) []byte {
	m := hmac.New(sha256.New, s.key)
	writeField(m, domain)
	writeField(m, method)
	writeField(m, path)
	keys := make([]string, 0, len(q))
	for k := range q {
		if k != ParamSignature {
			keys = append(keys, k)
		}
	}
	slices.Sort(keys)
	writeLen(m, len(keys))
	for _, k := range keys {
		vs := slices.Clone(q[k])
		slices.Sort(vs)
		writeField(m, k)
		writeLen(m, len(vs))
		for _, v := range vs {
			writeField(m, v)
		}
	}
	return m.Sum(nil)
}

func writeLen(h hash.Hash, n int) {
	var b [binary.MaxVarintLen64]byte
	h.Write(b[:binary.PutUvarint(b[:], uint64(n))])
}

func writeField(h hash.Hash, s string) {
	writeLen(h, len(s))
	h.Write([]byte(s))
}
