package repo_test

import (
	"bytes"
	"context"
	"errors"
	"strings"
	"testing"

	"github.com/sandkeep/sandkeep/internal/blobstore"
	"github.com/sandkeep/sandkeep/internal/blobstore/blobstoretest"
	"github.com/sandkeep/sandkeep/internal/id"
	"github.com/sandkeep/sandkeep/internal/metastore"
	"github.com/sandkeep/sandkeep/internal/pack"
	"github.com/sandkeep/sandkeep/internal/repo"
	"github.com/sandkeep/sandkeep/internal/testenv"
	"github.com/sandkeep/sandkeep/internal/tree"
)

type delFixture struct {
	ctx   context.Context
	meta  metastore.Store
	store *blobstoretest.Faulty
	r     *repo.Repo
}

func newDelFixture(t *testing.T) *delFixture {
	t.Helper()
	ctx := context.Background()
	meta, fs := testenv.Local(t)
	st := &blobstoretest.Faulty{Backend: fs}
	return &delFixture{ctx: ctx, meta: meta, store: st, r: repo.New(meta, st, repo.Options{})}
}

// project makes a project with a token, one committed version of a few
// files and its tree cached; it returns the id, the token hash and the root.
func (f *delFixture) project(t *testing.T, name string) (string, string, id.ID) {
	t.Helper()
	p, err := f.meta.CreateProject(f.ctx, name)
	if err != nil {
		t.Fatal(err)
	}
	hash := strings.Repeat(string("0123456789abcdef"[len(name)%16]), 64)
	if err := f.meta.CreateToken(f.ctx, metastore.Token{Hash: hash, Kind: metastore.TokenSandbox, ProjectID: p.ID}); err != nil {
		t.Fatal(err)
	}
	w := pack.NewWriter()
	var nodes []tree.Node
	for i, content := range []string{"one " + name, "two " + name, "three " + name} {
		c := []byte(content)
		cid := id.Sum(c)
		if _, err := w.Add(pack.Data, cid, c); err != nil {
			t.Fatal(err)
		}
		nodes = append(nodes, tree.Node{Name: string(rune('a' + i)), Type: tree.File, Mode: 0o644, Size: int64(len(c)),
			Chunks: []tree.ChunkRef{{ID: cid, Size: uint32(len(c))}}})
	}
	data, packID, _, err := w.Finish()
	if err != nil {
		t.Fatal(err)
	}
	if err := f.store.Put(f.ctx, repo.PackKey(p.ID, packID), bytes.NewReader(data), int64(len(data))); err != nil {
		t.Fatal(err)
	}
	if _, err := f.r.CompletePacks(f.ctx, p.ID, []repo.PackRef{{ID: packID, Size: int64(len(data))}}); err != nil {
		t.Fatal(err)
	}
	enc, err := (&tree.Tree{Nodes: nodes}).Encode()
	if err != nil {
		t.Fatal(err)
	}
	ids, err := f.r.PutTrees(f.ctx, p.ID, [][]byte{enc})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := f.r.Commit(f.ctx, p.ID, repo.CommitRequest{Root: ids[0], Kind: metastore.KindSync}); err != nil {
		t.Fatal(err)
	}
	if _, err := f.r.LoadTree(f.ctx, p.ID, ids[0]); err != nil {
		t.Fatal(err)
	}
	return p.ID, hash, ids[0]
}

func (f *delFixture) objects(t *testing.T, projectID string) (n int, size int64) {
	t.Helper()
	err := f.store.Backend.List(f.ctx, repo.ProjectPrefix(projectID), func(o blobstore.Object) error {
		n++
		size += o.Size
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	return n, size
}

func TestDeleteProject(t *testing.T) {
	f := newDelFixture(t)
	pid, hash, root := f.project(t, "doomed")
	other, otherHash, otherRoot := f.project(t, "kept")
	objects, size := f.objects(t, pid)
	keptObjects, _ := f.objects(t, other)
	if objects < 3 { // data pack, tree pack, version record
		t.Fatalf("%d objects before", objects)
	}
	// Tokens are revoked before any object goes.
	lists := 0
	f.store.OnList = func(string) error {
		lists++
		tok, err := f.meta.GetToken(f.ctx, hash)
		switch {
		case lists == 1 && (err != nil || !tok.Revoked):
			t.Errorf("while objects are deleted, the token is %+v (%v), want revoked", tok, err)
		case lists > 1 && !errors.Is(err, metastore.ErrNotFound):
			t.Errorf("at the second sweep the token is %+v (%v), want deleted", tok, err)
		}
		return nil
	}
	n, freed, err := f.r.DeleteProject(f.ctx, pid)
	if err != nil {
		t.Fatal(err)
	}
	f.store.OnList = nil
	if n != objects || freed != size {
		t.Fatalf("DeleteProject = %d objects, %d bytes; want %d, %d", n, freed, objects, size)
	}
	if n, _ := f.objects(t, pid); n != 0 {
		t.Fatalf("%d objects left", n)
	}
	if _, err := f.meta.GetProject(f.ctx, pid); !errors.Is(err, metastore.ErrNotFound) {
		t.Fatalf("GetProject after deletion: %v", err)
	}
	if _, err := f.meta.GetToken(f.ctx, hash); !errors.Is(err, metastore.ErrNotFound) {
		t.Fatalf("GetToken after deletion: %v", err)
	}
	// The tree cache forgot the project's trees.
	if _, err := f.r.LoadTree(f.ctx, pid, root); err == nil {
		t.Fatal("LoadTree of a deleted project's tree still answers from the cache")
	}
	if _, _, err := f.r.DeleteProject(f.ctx, pid); !errors.Is(err, metastore.ErrNotFound) {
		t.Fatalf("DeleteProject again: %v, want ErrNotFound", err)
	}
	// The other project is whole.
	if n, _ := f.objects(t, other); n != keptObjects {
		t.Fatalf("other project: %d objects, had %d", n, keptObjects)
	}
	if tok, err := f.meta.GetToken(f.ctx, otherHash); err != nil || tok.Revoked {
		t.Fatalf("other project's token: %+v, %v", tok, err)
	}
	if _, err := f.r.LoadTree(f.ctx, other, otherRoot); err != nil {
		t.Fatal(err)
	}
}

// TestDeleteProjectRetry: a deletion that fails half way is finished by
// the next call.
func TestDeleteProjectRetry(t *testing.T) {
	f := newDelFixture(t)
	pid, hash, _ := f.project(t, "doomed")
	objects, size := f.objects(t, pid)
	f.store.OnDelete = func(n int64, _ string) error {
		if n >= 2 {
			return errors.New("injected delete failure")
		}
		return nil
	}
	n, _, err := f.r.DeleteProject(f.ctx, pid)
	if err == nil || n != 1 {
		t.Fatalf("DeleteProject with failing deletes = %d objects, %v; want 1 and an error", n, err)
	}
	if tok, err := f.meta.GetToken(f.ctx, hash); err != nil || !tok.Revoked {
		t.Fatalf("after the failure the token is %+v, %v; want revoked", tok, err)
	}
	if _, err := f.meta.GetProject(f.ctx, pid); err != nil {
		t.Fatalf("rows went before the objects: %v", err)
	}
	f.store.OnDelete = nil
	n2, freed, err := f.r.DeleteProject(f.ctx, pid)
	if err != nil {
		t.Fatal(err)
	}
	if n+n2 != objects || freed > size {
		t.Fatalf("the two calls deleted %d+%d objects, want %d", n, n2, objects)
	}
	if left, _ := f.objects(t, pid); left != 0 {
		t.Fatalf("%d objects left", left)
	}
	if _, err := f.meta.GetProject(f.ctx, pid); !errors.Is(err, metastore.ErrNotFound) {
		t.Fatalf("GetProject: %v", err)
	}
}

// TestDeleteProjectSweepsOrphans: objects left under a deleted project's
// prefix (an upload through a URL signed before the deletion) are removed
// by another call.
func TestDeleteProjectSweepsOrphans(t *testing.T) {
	f := newDelFixture(t)
	pid, _, _ := f.project(t, "doomed")
	if _, _, err := f.r.DeleteProject(f.ctx, pid); err != nil {
		t.Fatal(err)
	}
	late := repo.PackKey(pid, id.Sum([]byte("late")))
	if err := f.store.Put(f.ctx, late, strings.NewReader("late"), 4); err != nil {
		t.Fatal(err)
	}
	n, size, err := f.r.DeleteProject(f.ctx, pid)
	if err != nil || n != 1 || size != 4 {
		t.Fatalf("DeleteProject of the leftovers = %d, %d, %v", n, size, err)
	}
}

func TestDeleteProjectRefusesBadIDs(t *testing.T) {
	f := newDelFixture(t)
	pid, _, _ := f.project(t, "kept")
	for _, bad := range []string{"", "a/b", "..", ".", `x\y`, "prj/"} {
		if _, _, err := f.r.DeleteProject(f.ctx, bad); !errors.Is(err, repo.ErrInvalid) {
			t.Errorf("DeleteProject(%q) = %v, want ErrInvalid", bad, err)
		}
	}
	if n, _ := f.objects(t, pid); n == 0 {
		t.Fatal("a refused deletion deleted objects")
	}
}

// TestDeleteProjectCallsOnTokensRevoked: the hook (which ends the agents'
// session streams) runs once the tokens are revoked and before any object
// goes; never for a project that does not exist.
func TestDeleteProjectCallsOnTokensRevoked(t *testing.T) {
	f := newDelFixture(t)
	var calls []string
	listed := false
	pid, hash, _ := f.project(t, "doomed")
	f.r = repo.New(f.meta, f.store, repo.Options{OnTokensRevoked: func(projectID string) {
		calls = append(calls, projectID)
		if tok, err := f.meta.GetToken(f.ctx, hash); err != nil || !tok.Revoked {
			t.Errorf("in OnTokensRevoked the token is %+v (%v), want revoked", tok, err)
		}
		if listed {
			t.Error("OnTokensRevoked ran after the objects were listed for deletion")
		}
	}})
	f.store.OnList = func(string) error { listed = true; return nil }
	if _, _, err := f.r.DeleteProject(f.ctx, pid); err != nil {
		t.Fatal(err)
	}
	if _, _, err := f.r.DeleteProject(f.ctx, pid); !errors.Is(err, metastore.ErrNotFound) {
		t.Fatalf("DeleteProject again: %v", err)
	}
	if _, _, err := f.r.DeleteProject(f.ctx, "prj_never"); !errors.Is(err, metastore.ErrNotFound) {
		t.Fatalf("DeleteProject of an unknown project: %v", err)
	}
	if len(calls) != 1 || calls[0] != pid {
		t.Fatalf("OnTokensRevoked calls: %v, want [%s]", calls, pid)
	}
}
