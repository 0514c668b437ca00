package repo

import (
	"bytes"
	"context"
	"path/filepath"
	"strings"
	"testing"

	"github.com/sandkeep/sandkeep/internal/id"
	"github.com/sandkeep/sandkeep/internal/metastore/sqlitestore"
	"github.com/sandkeep/sandkeep/internal/pack"
)

// TestRebuildRefusesALyingPack attacks the rebuild with what a sandbox can
// leave in the bucket: a pack PUT through its signed URL and never
// completed, whose footer claims a chunk the project has (its id) over
// other bytes. The rebuild verifies every chunk: it reports the pack,
// indexes the genuine location only, and the file reads back intact. With
// --trust-footers the claim is not read, which the flag's help says.
func TestRebuildRefusesALyingPack(t *testing.T) {
	f := newBrowseFixture(t)
	ctx := context.Background()
	f.commit(map[string]bfEntry{"a.txt": bfFile("the genuine content")})
	if err := f.r.WriteProjectRecord(ctx, f.pid); err != nil {
		t.Fatal(err)
	}
	genuine := id.Sum([]byte("the genuine content"))
	w := pack.NewWriter()
	if _, err := w.Add(pack.Data, genuine, []byte("forged bytes of the same length")); err != nil {
		t.Fatal(err)
	}
	data, forgedID, _, err := w.Finish()
	if err != nil {
		t.Fatal(err)
	}
	if err := f.store.Put(ctx, PackKey(f.pid, forgedID), bytes.NewReader(data), int64(len(data))); err != nil {
		t.Fatal(err)
	}

	meta, err := sqlitestore.Open(ctx, filepath.Join(t.TempDir(), "rebuilt.db"))
	if err != nil {
		t.Fatal(err)
	}
	defer meta.Close()
	r := New(meta, f.store, Options{})
	rep, err := r.Rebuild(ctx, RebuildOptions{})
	if err != nil || len(rep.Projects) != 1 {
		t.Fatalf("rebuild: %+v, %v", rep, err)
	}
	p := rep.Projects[0]
	if p.PacksBad != 1 || !strings.Contains(strings.Join(p.Problems, "\n"), forgedID.Short()) {
		t.Fatalf("the forged pack is not reported: %+v", p)
	}
	locs, err := meta.LocateBlobs(ctx, f.pid, []id.ID{genuine})
	if err != nil || locs[genuine].PackID == forgedID {
		t.Fatalf("the genuine chunk is located in %v (forged pack %s), %v", locs[genuine].PackID.Short(), forgedID.Short(), err)
	}
	head, err := meta.HeadVersion(ctx, f.pid)
	if err != nil {
		t.Fatal(err)
	}
	n, err := r.Lookup(ctx, f.pid, head.Root, "a.txt")
	if err != nil {
		t.Fatal(err)
	}
	var got bytes.Buffer
	if err := r.ReadFile(ctx, f.pid, n, 0, n.Size, func(b []byte) error { got.Write(b); return nil }); err != nil || got.String() != "the genuine content" {
		t.Fatalf("a.txt after the rebuild: %q, %v", got.String(), err)
	}
}
