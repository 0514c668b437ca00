// Package id defines the content address used everywhere in sandkeep: the
// BLAKE3-256 hash of a blob's plaintext (a chunk of a file, or an encoded tree),
// and of a whole pack object.
package id

import (
	"encoding/hex"
	"errors"
	"fmt"

	"github.com/zeebo/blake3"
)

// Size is the length of an ID in bytes.
const Size = 32

// ID is a BLAKE3-256 digest. The zero value means "no id".
type ID [Size]byte

// ErrInvalid is returned (wrapped) when a string is not a valid hex id.
var ErrInvalid = errors.New("invalid id")

// Sum returns the id of data.
func Sum(data []byte) ID {
	return ID(blake3.Sum256(data))
}

// Hasher is an incremental hasher producing an ID.
type Hasher struct{ h *blake3.Hasher }

// NewHasher returns a new incremental hasher.
func NewHasher() *Hasher { return &Hasher{h: blake3.New()} }

// Write adds p to the hash. It never fails.
func (h *Hasher) Write(p []byte) (int, error) { return h.h.Write(p) }

// Sum returns the id of everything written so far.
func (h *Hasher) Sum() ID {
	var out ID
	h.h.Sum(out[:0])
	return out
}

// Reset clears the hasher for reuse.
func (h *Hasher) Reset() { h.h.Reset() }

// String returns the lowercase hex form of the id.
func (i ID) String() string { return hex.EncodeToString(i[:]) }

// Short returns the first 12 hex digits, for logs.
func (i ID) Short() string { return hex.EncodeToString(i[:6]) }

// IsZero reports whether i is the zero id.
func (i ID) IsZero() bool { return i == ID{} }

// Bytes returns a copy of the id as a slice.
func (i ID) Bytes() []byte { b := i; return b[:] }

// Parse parses a 64-digit lowercase or uppercase hex id.
func Parse(s string) (ID, error) {
	var out ID
	if len(s) != 2*Size {
		return out, fmt.Errorf("%w: %q has length %d, want %d", ErrInvalid, truncate(s), len(s), 2*Size)
	}
	if _, err := hex.Decode(out[:], []byte(s)); err != nil {
		return ID{}, fmt.Errorf("%w: %q: %v", ErrInvalid, truncate(s), err)
	}
	return out, nil
}

// FromBytes converts a 32-byte slice to an ID.
func FromBytes(b []byte) (ID, error) {
	var out ID
	if len(b) != Size {
		return out, fmt.Errorf("%w: %d bytes, want %d", ErrInvalid, len(b), Size)
	}
	copy(out[:], b)
	return out, nil
}

// MarshalText implements encoding.TextMarshaler (hex).
func (i ID) MarshalText() ([]byte, error) { return []byte(i.String()), nil }

// UnmarshalText implements encoding.TextUnmarshaler (hex).
func (i *ID) UnmarshalText(b []byte) error {
	v, err := Parse(string(b))
	if err != nil {
		return err
	}
	*i = v
	return nil
}

func truncate(s string) string {
	if len(s) > 80 {
		return s[:80] + "…"
	}
	return s
}
