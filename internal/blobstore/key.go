package blobstore

import (
	"fmt"
	"strings"
	"unicode/utf8"
)

// ValidateKey reports whether key is a valid object key. It returns nil or an
// error wrapping ErrInvalidKey. A valid key is 1..MaxKeyLen bytes of valid
// UTF-8 made of non-empty "/"-separated segments, none of which is "." or "..";
// it contains no backslash, NUL or other ASCII control character. It therefore
// never starts or ends with "/" and never contains "//".
//
// Stores call ValidateKey before touching storage.
func ValidateKey(key string) error {
	if key == "" {
		return fmt.Errorf("%w: empty key", ErrInvalidKey)
	}
	if len(key) > MaxKeyLen {
		return fmt.Errorf("%w: key is %d bytes, longer than %d", ErrInvalidKey, len(key), MaxKeyLen)
	}
	if err := validateChars(key); err != nil {
		return err
	}
	if key[0] == '/' {
		return fmt.Errorf("%w: absolute key %q", ErrInvalidKey, key)
	}
	for seg := range strings.SplitSeq(key, "/") {
		if err := validateSegment(key, seg); err != nil {
			return err
		}
	}
	return nil
}

// ValidatePrefix reports whether prefix may be passed to Store.List. It
// returns nil or an error wrapping ErrInvalidKey. The empty prefix (every
// object) is valid. Otherwise every complete segment (each one followed by a
// "/") must be a valid key segment; the final, partial segment may be empty
// (the prefix ends with "/") or any text allowed in a key, so "a/b" matches
// both "a/b/c" and "a/bc".
func ValidatePrefix(prefix string) error {
	if prefix == "" {
		return nil
	}
	if len(prefix) > MaxKeyLen {
		return fmt.Errorf("%w: prefix is %d bytes, longer than %d", ErrInvalidKey, len(prefix), MaxKeyLen)
	}
	if err := validateChars(prefix); err != nil {
		return err
	}
	if prefix[0] == '/' {
		return fmt.Errorf("%w: absolute prefix %q", ErrInvalidKey, prefix)
	}
	i := strings.LastIndexByte(prefix, '/')
	if i < 0 {
		return nil
	}
	for seg := range strings.SplitSeq(prefix[:i], "/") {
		if err := validateSegment(prefix, seg); err != nil {
			return err
		}
	}
	return nil
}

func validateChars(s string) error {
	if !utf8.ValidString(s) {
		return fmt.Errorf("%w: %q is not valid UTF-8", ErrInvalidKey, s)
	}
	for i := 0; i < len(s); i++ {
		switch c := s[i]; {
		case c == 0:
			return fmt.Errorf("%w: %q contains a NUL byte", ErrInvalidKey, s)
		case c == '\\':
			return fmt.Errorf("%w: %q contains a backslash", ErrInvalidKey, s)
		case c < 0x20 || c == 0x7f:
			return fmt.Errorf("%w: %q contains a control character", ErrInvalidKey, s)
		}
	}
	return nil
}

func validateSegment(s, seg string) error {
	switch seg {
	case "":
		return fmt.Errorf("%w: %q has an empty segment", ErrInvalidKey, s)
	case ".", "..":
		return fmt.Errorf("%w: %q has a %q segment", ErrInvalidKey, s, seg)
	}
	return nil
}

// CheckRange reports whether offset and length (negative: to the end) select
// a range inside an object of size bytes, as Store.Get requires, and returns
// the length of that range. The range may be empty, even at offset == size.
// Errors wrap ErrInvalidRange.
func CheckRange(size, offset, length int64) (int64, error) {
	switch {
	case offset < 0:
		return 0, fmt.Errorf("%w: negative offset %d", ErrInvalidRange, offset)
	case offset > size:
		return 0, fmt.Errorf("%w: offset %d past the end of a %d-byte object", ErrInvalidRange, offset, size)
	case length < 0:
		return size - offset, nil
	case length > size-offset:
		return 0, fmt.Errorf("%w: %d bytes at offset %d run past the end of a %d-byte object", ErrInvalidRange, length, offset, size)
	}
	return length, nil
}
