package blobstore

import (
	"context"
	"errors"
	"fmt"
)

// PrefixDeleter is implemented by stores that can delete every object under a
// prefix faster than one Delete per object (S3 batch deletes, for example).
// DeletePrefix prefers it.
type PrefixDeleter interface {
	// DeletePrefix deletes every object whose key starts with prefix and
	// reports how many objects and bytes it deleted. prefix has been checked
	// with ValidatePrefix and is not empty.
	DeletePrefix(ctx context.Context, prefix string) (objects int, bytes int64, err error)
}

// DeletePrefix deletes every object in s whose key starts with prefix (see
// ValidatePrefix; "a/b" also deletes "a/bc", pass "a/b/" for a directory-like
// prefix) and reports how many objects and bytes it deleted. It uses s's own
// PrefixDeleter implementation when there is one, and otherwise lists the
// prefix and then deletes the listed keys one by one.
//
// The empty prefix is refused with ErrInvalidKey: wiping a whole store is
// never what a caller means.
//
// Objects written under prefix while DeletePrefix runs may survive it. On
// error the counts report what was deleted before the error.
func DeletePrefix(ctx context.Context, s Store, prefix string) (objects int, bytes int64, err error) {
	if prefix == "" {
		return 0, 0, fmt.Errorf("blobstore: delete prefix: %w: empty prefix", ErrInvalidKey)
	}
	if err := ValidatePrefix(prefix); err != nil {
		return 0, 0, fmt.Errorf("blobstore: delete prefix: %w", err)
	}
	if pd, ok := s.(PrefixDeleter); ok {
		return pd.DeletePrefix(ctx, prefix)
	}
	// List first, delete afterwards: not every store tolerates deletes
	// while a listing is in progress.
	var objs []Object
	err = s.List(ctx, prefix, func(o Object) error {
		objs = append(objs, o)
		return nil
	})
	if err != nil {
		return 0, 0, fmt.Errorf("blobstore: delete prefix %q: list: %w", prefix, err)
	}
	for _, o := range objs {
		if err := ctx.Err(); err != nil {
			return objects, bytes, fmt.Errorf("blobstore: delete prefix %q: %w", prefix, err)
		}
		if err := s.Delete(ctx, o.Key); err != nil && !errors.Is(err, ErrNotFound) {
			return objects, bytes, fmt.Errorf("blobstore: delete prefix %q: %w", prefix, err)
		}
		objects++
		bytes += o.Size
	}
	return objects, bytes, nil
}
