package testenv

import (
	"context"
	"path/filepath"
	"testing"

	"github.com/sandkeep/sandkeep/internal/blobstore/fsstore"
	"github.com/sandkeep/sandkeep/internal/metastore/sqlitestore"
)

// Local opens the embedded stores in a fresh temporary directory: SQLite
// metadata (closed when the test ends) and a local blob directory. It is
// what `sandkeep serve` uses with no flags.
func Local(t testing.TB) (*sqlitestore.Store, *fsstore.Store) {
	t.Helper()
	dir := t.TempDir()
	meta, err := sqlitestore.Open(context.Background(), filepath.Join(dir, "meta.db"))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { meta.Close() })
	blobs, err := fsstore.New(filepath.Join(dir, "blobs"), fsstore.Options{})
	if err != nil {
		t.Fatal(err)
	}
	return meta, blobs
}
