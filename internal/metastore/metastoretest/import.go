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
