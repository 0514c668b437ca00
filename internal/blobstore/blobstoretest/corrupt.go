package blobstoretest

import (
	"bytes"
	"io"
	"testing"

	"github.com/sandkeep/sandkeep/internal/blobstore"
)

// FlipByte inverts the byte at off of the object key in s: rot, for tests
// of what finds it (the object is deleted and written again, so
// create-only stores take it too).
func FlipByte(t testing.TB, s blobstore.Store, key string, off int64) {
	t.Helper()
	ctx := t.Context()
	rc, err := s.Get(ctx, key, 0, -1)
	if err != nil {
		t.Fatal(err)
	}
	data, err := io.ReadAll(rc)
	rc.Close()
	if err != nil {
		t.Fatal(err)
	}
	data[off] ^= 0xff
	if err := s.Delete(ctx, key); err != nil {
		t.Fatal(err)
	}
	if err := s.Put(ctx, key, bytes.NewReader(data), int64(len(data))); err != nil {
		t.Fatal(err)
	}
}
