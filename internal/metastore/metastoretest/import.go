package metastoretest

import (
	"testing"
	"time"

	"github.com/sandkeep/sandkeep/internal/id"
	"github.com/sandkeep/sandkeep/internal/metastore"
)

// testImport: the calls a rebuild from the bucket makes recreate rows as
// they were, are idempotent, and refuse what would contradict the
// database.
func testImport(t *testing.T, s metastore.Store) {
	ctx := t.Context()
	created := now().Add(-48 * time.Hour)
	p := metastore.Project{ID: "prj_importedaaaaaaaaaaa", Name: "imported", CreatedAt: created}
	wantErr(t, "ImportProject", s.ImportProject(ctx, p), nil)
	wantErr(t, "ImportProject again", s.ImportProject(ctx, p), nil)
	got := must[metastore.Project](t, "GetProject")(s.GetProject(ctx, p.ID))
	same(t, "imported project", got, metastore.Project{ID: p.ID, Name: "imported", CreatedAt: created})
	other := newProject(t, s, "taken-name")
	wantErr(t, "ImportProject of a taken name", s.ImportProject(ctx, metastore.Project{ID: "prj_importedbbbbbbbbbbb", Name: other.Name, CreatedAt: created}), metastore.ErrAlreadyExists)
	wantErr(t, "ImportProject without id", s.ImportProject(ctx, metastore.Project{Name: "x", CreatedAt: created}), metastore.ErrInvalid)

	// Versions with gaps (garbage collection deleted some), out of order.
	vs := []metastore.Version{
		{ProjectID: p.ID, Number: 7, Parent: 6, Root: id.Sum([]byte("r7")), Kind: metastore.KindRollback, SandboxID: "sbx_1", CreatedAt: created.Add(7 * time.Minute), Files: 2, Bytes: 20},
		{ProjectID: p.ID, Number: 2, Parent: 1, Root: id.Sum([]byte("r2")), Kind: metastore.KindSync, CreatedAt: created.Add(2 * time.Minute), Files: 1, Bytes: 10, Pinned: true},
		{ProjectID: p.ID, Number: 6, Parent: 5, Root: id.Sum([]byte("r6")), Kind: metastore.KindUpload, CreatedAt: created.Add(6 * time.Minute), Files: 3, Bytes: 30},
	}
	for _, v := range vs {
		wantErr(t, "ImportVersion", s.ImportVersion(ctx, v), nil)
		wantErr(t, "ImportVersion again", s.ImportVersion(ctx, v), nil)
	}
	same(t, "head before SetHead", must[metastore.Project](t, "GetProject")(s.GetProject(ctx, p.ID)).Head, int64(0))
	files := []metastore.ProjectFile{{Path: "a.txt", Size: 10, ContentType: "text/plain", Checksum: "c1"}, {Path: "d/b.txt", Size: 10}}
	wantErr(t, "SetHead", s.SetHead(ctx, p.ID, 7, files), nil)
	same(t, "versions", numbers(must[[]metastore.Version](t, "ListVersions")(s.ListVersions(ctx, p.ID, metastore.ListOptions{}))), []int64{7, 6, 2})
	for _, v := range vs {
		same(t, "imported version", must[metastore.Version](t, "GetVersion")(s.GetVersion(ctx, p.ID, v.Number)), v)
	}
	same(t, "files", paths(listAllFiles(t, s, p.ID, "")), []string{"a.txt", "d/b.txt"})
	// SetHead replaces the listing.
	wantErr(t, "SetHead again", s.SetHead(ctx, p.ID, 7, files[1:]), nil)
	same(t, "files after SetHead again", paths(listAllFiles(t, s, p.ID, "")), []string{"d/b.txt"})
	// A commit continues from the head.
	v8 := commit(t, s, p.ID, 7, metastore.FileChanges{})
	same(t, "commit after import", v8.Number, int64(8))

	wantErr(t, "ImportVersion of an unknown project", s.ImportVersion(ctx, metastore.Version{ProjectID: "prj_nopenopenopenopenope", Number: 1, Root: id.Sum([]byte("r")), Kind: metastore.KindSync}), metastore.ErrNotFound)
	wantErr(t, "ImportVersion number not past parent", s.ImportVersion(ctx, metastore.Version{ProjectID: p.ID, Number: 3, Parent: 3, Root: id.Sum([]byte("r")), Kind: metastore.KindSync}), metastore.ErrInvalid)
	wantErr(t, "ImportVersion bad kind", s.ImportVersion(ctx, metastore.Version{ProjectID: p.ID, Number: 9, Parent: 8, Root: id.Sum([]byte("r")), Kind: "evil"}), metastore.ErrInvalid)
	wantErr(t, "SetHead to a missing version", s.SetHead(ctx, p.ID, 5, nil), metastore.ErrNotFound)
	wantErr(t, "SetHead of an unknown project", s.SetHead(ctx, "prj_nopenopenopenopenope", 0, nil), metastore.ErrNotFound)
	wantErr(t, "SetHead with a hostile path", s.SetHead(ctx, p.ID, 8, []metastore.ProjectFile{{Path: "../x"}}), metastore.ErrInvalid)
	same(t, "files after refused SetHeads", paths(listAllFiles(t, s, p.ID, "")), []string{"d/b.txt"})
}

// testForgetBlobs: the repair of a check forgets a bad chunk's row in one
// pack only; the chunk is then missing (uploadable again), and a new
// upload of it indexes it anew.
func testForgetBlobs(t *testing.T, s metastore.Store) {
	ctx := t.Context()
	p := newProject(t, s, "forget")
	pk, blobs := makePack(p.ID, "forget", metastore.BlobData, 3)
	wantErr(t, "AddPack", s.AddPack(ctx, pk, blobs), nil)
	other, _ := makePack(p.ID, "other", metastore.BlobData, 1)
	a, b, c := blobs[0].ID, blobs[1].ID, blobs[2].ID

	same(t, "ForgetBlobs of another pack", must[int](t, "ForgetBlobs")(s.ForgetBlobs(ctx, p.ID, other.ID, []id.ID{a})), 0)
	same(t, "ForgetBlobs", must[int](t, "ForgetBlobs")(s.ForgetBlobs(ctx, p.ID, pk.ID, []id.ID{b, b, blobID("unknown", 1)})), 1)
	same(t, "MissingBlobs after ForgetBlobs", must[[]id.ID](t, "MissingBlobs")(s.MissingBlobs(ctx, p.ID, []id.ID{a, b, c})), []id.ID{b})
	locs := must[map[id.ID]metastore.BlobLocation](t, "LocateBlobs")(s.LocateBlobs(ctx, p.ID, []id.ID{a, b, c}))
	if _, ok := locs[b]; ok || len(locs) != 2 {
		t.Fatalf("LocateBlobs after forgetting b: %v", locs)
	}
	// Uploaded again, in another pack: indexed there.
	again := metastore.Pack{ProjectID: p.ID, ID: blobID("pack/again", 0), Type: metastore.BlobData, Size: 500}
	loc := metastore.BlobLocation{ID: b, Type: metastore.BlobData, PackID: again.ID, Length: 101, RawLength: 202}
	wantErr(t, "AddPack of the re-upload", s.AddPack(ctx, again, []metastore.BlobLocation{loc}), nil)
	same(t, "LocateBlobs after the re-upload", must[map[id.ID]metastore.BlobLocation](t, "LocateBlobs")(s.LocateBlobs(ctx, p.ID, []id.ID{b}))[b], loc)
	_, err := s.ForgetBlobs(ctx, "prj_nopenopenopenopenope", pk.ID, []id.ID{a})
	wantErr(t, "ForgetBlobs of an unknown project", err, metastore.ErrNotFound)
}
