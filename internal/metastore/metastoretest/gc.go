package metastoretest

import (
	"errors"
	"fmt"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/sandkeep/sandkeep/internal/id"
	"github.com/sandkeep/sandkeep/internal/metastore"
)

// The garbage collection, retention and project deletion parts of the
// suite (see Run).

// packIDs returns the ids of packs.
func packIDs(ps []metastore.Pack) []id.ID {
	out := make([]id.ID, len(ps))
	for i, p := range ps {
		out[i] = p.ID
	}
	return out
}

func listAllPacks(t *testing.T, s metastore.Store, projectID string) []metastore.Pack {
	t.Helper()
	return must[[]metastore.Pack](t, "ListPacks")(s.ListPacks(t.Context(), projectID, metastore.ListOptions{Limit: 10000}))
}

func packByID(t *testing.T, s metastore.Store, projectID string, pid id.ID) metastore.Pack {
	t.Helper()
	for _, p := range listAllPacks(t, s, projectID) {
		if p.ID == pid {
			return p
		}
	}
	t.Fatalf("pack %s is not listed", pid.Short())
	return metastore.Pack{}
}

func sortedIDs(ids []id.ID) []id.ID {
	out := slices.Clone(ids)
	slices.SortFunc(out, func(a, b id.ID) int { return strings.Compare(string(a[:]), string(b[:])) })
	return out
}

func epoch(t *testing.T, s metastore.Store, projectID string) int64 {
	t.Helper()
	return must[int64](t, "PackEpoch")(s.PackEpoch(t.Context(), projectID))
}

func testRetention(t *testing.T, s metastore.Store) {
	ctx := t.Context()
	p := newProject(t, s, "retention")
	const nope = "prj_aaaaaaaaaaaaaaaaaaaa"

	def := metastore.Retention{KeepLast: 50, KeepWithin: 30 * 24 * time.Hour}
	same(t, "DefaultRetention", metastore.DefaultRetention(), def)
	same(t, "GetRetention of a new project", must[metastore.Retention](t, "GetRetention")(s.GetRetention(ctx, p.ID)), def)

	for _, r := range []metastore.Retention{
		{KeepLast: 1},
		{KeepLast: 0, KeepWithin: 0},
		{KeepLast: 7, KeepWithin: 90*time.Minute + 123456*time.Microsecond},
		{KeepLast: 1 << 30, KeepWithin: 100 * 365 * 24 * time.Hour},
	} {
		wantErr(t, fmt.Sprintf("SetRetention(%+v)", r), s.SetRetention(ctx, p.ID, r), nil)
		same(t, "GetRetention", must[metastore.Retention](t, "GetRetention")(s.GetRetention(ctx, p.ID)), r)
	}
	// Kept to the microsecond.
	wantErr(t, "SetRetention", s.SetRetention(ctx, p.ID, metastore.Retention{KeepLast: 2, KeepWithin: time.Second + 1500}), nil)
	same(t, "GetRetention (microseconds)", must[metastore.Retention](t, "GetRetention")(s.GetRetention(ctx, p.ID)),
		metastore.Retention{KeepLast: 2, KeepWithin: time.Second + time.Microsecond})

	for _, r := range []metastore.Retention{{KeepLast: -1}, {KeepWithin: -time.Second}, {KeepLast: 1<<30 + 1}, {KeepWithin: 101 * 365 * 24 * time.Hour}} {
		wantErr(t, fmt.Sprintf("SetRetention(%+v)", r), s.SetRetention(ctx, p.ID, r), metastore.ErrInvalid)
	}
	for _, pid := range []string{nope, "", "bad\xff"} {
		wantErr(t, fmt.Sprintf("SetRetention(%q)", pid), s.SetRetention(ctx, pid, def), metastore.ErrNotFound)
		_, err := s.GetRetention(ctx, pid)
		wantErr(t, fmt.Sprintf("GetRetention(%q)", pid), err, metastore.ErrNotFound)
	}
	// Projects are separate.
	q := newProject(t, s, "retention-2")
	same(t, "GetRetention of another project", must[metastore.Retention](t, "GetRetention")(s.GetRetention(ctx, q.ID)), def)
}

func testPinsAndDeleteVersions(t *testing.T, s metastore.Store) {
	ctx := t.Context()
	p := newProject(t, s, "pins")
	const nope = "prj_aaaaaaaaaaaaaaaaaaaa"
	for parent := range int64(6) {
		commit(t, s, p.ID, parent, metastore.FileChanges{})
	}

	wantErr(t, "SetPinned(2)", s.SetPinned(ctx, p.ID, 2, true), nil)
	wantErr(t, "SetPinned(3)", s.SetPinned(ctx, p.ID, 3, true), nil)
	wantErr(t, "SetPinned(3, false)", s.SetPinned(ctx, p.ID, 3, false), nil)
	if v := must[metastore.Version](t, "GetVersion")(s.GetVersion(ctx, p.ID, 2)); !v.Pinned {
		t.Fatalf("version 2 not pinned: %+v", v)
	}
	if v := must[metastore.Version](t, "GetVersion")(s.GetVersion(ctx, p.ID, 3)); v.Pinned {
		t.Fatalf("version 3 still pinned: %+v", v)
	}
	wantErr(t, "SetPinned of an unknown version", s.SetPinned(ctx, p.ID, 99, true), metastore.ErrNotFound)
	wantErr(t, "SetPinned in an unknown project", s.SetPinned(ctx, nope, 1, true), metastore.ErrNotFound)
	wantErr(t, "SetPinned in a project named in invalid UTF-8", s.SetPinned(ctx, "bad\xff", 1, true), metastore.ErrNotFound)

	// The head (6) and the pinned version (2) survive; unknown and repeated
	// numbers are ignored.
	got := must[[]int64](t, "DeleteVersions")(s.DeleteVersions(ctx, p.ID, []int64{6, 5, 2, 1, 99, 1, 0, -3}))
	same(t, "deleted", got, []int64{1, 5})
	same(t, "remaining", numbers(must[[]metastore.Version](t, "ListVersions")(s.ListVersions(ctx, p.ID, metastore.ListOptions{}))), []int64{6, 4, 3, 2})
	_, err := s.GetVersion(ctx, p.ID, 5)
	wantErr(t, "GetVersion of a deleted version", err, metastore.ErrNotFound)
	same(t, "DeleteVersions again", must[[]int64](t, "DeleteVersions")(s.DeleteVersions(ctx, p.ID, []int64{1, 5})), []int64(nil))
	same(t, "DeleteVersions of nothing", must[[]int64](t, "DeleteVersions")(s.DeleteVersions(ctx, p.ID, nil)), []int64(nil))
	same(t, "paged after a gap", numbers(must[[]metastore.Version](t, "ListVersions")(s.ListVersions(ctx, p.ID, metastore.ListOptions{Limit: 2, After: "4"}))), []int64{3, 2})

	// Numbering goes on from the head; the head is still the head.
	v7 := commit(t, s, p.ID, 6, metastore.FileChanges{})
	if v7.Number != 7 {
		t.Fatalf("commit after deleting versions: number %d, want 7", v7.Number)
	}
	same(t, "delete the old head", must[[]int64](t, "DeleteVersions")(s.DeleteVersions(ctx, p.ID, []int64{6, 7})), []int64{6})
	same(t, "HeadVersion", must[metastore.Version](t, "HeadVersion")(s.HeadVersion(ctx, p.ID)), v7)

	_, err = s.DeleteVersions(ctx, nope, []int64{1})
	wantErr(t, "DeleteVersions in an unknown project", err, metastore.ErrNotFound)

	// Many numbers at once, most unknown (more than one statement's worth
	// in SQLite).
	q := newProject(t, s, "pins-many")
	for parent := range int64(30) {
		commit(t, s, q.ID, parent, metastore.FileChanges{})
	}
	var all []int64
	for n := int64(2500); n >= 1; n-- {
		all = append(all, n)
	}
	got = must[[]int64](t, "DeleteVersions")(s.DeleteVersions(ctx, q.ID, all))
	if len(got) != 29 || got[0] != 1 || got[28] != 29 {
		t.Fatalf("DeleteVersions of 1..2500 with versions 1..30 deleted %v", got)
	}
}

// testPackLifecycle walks packs through live, condemned, deleting and
// forgotten, with the effect of each state on uploads and commits.
func testPackLifecycle(t *testing.T, s metastore.Store) {
	ctx := t.Context()
	p := newProject(t, s, "lifecycle")
	other := newProject(t, s, "lifecycle-other")
	const nope = "prj_aaaaaaaaaaaaaaaaaaaa"

	packA, blobsA := makePack(p.ID, "A", metastore.BlobData, 4)
	packB, blobsB := makePack(p.ID, "B", metastore.BlobData, 3)
	packT, blobsT := makePack(p.ID, "T", metastore.BlobTree, 2)
	created := now().Add(-time.Hour)
	packA.CreatedAt = created
	for _, pk := range []struct {
		p metastore.Pack
		b []metastore.BlobLocation
	}{{packA, blobsA}, {packB, blobsB}, {packT, blobsT}} {
		wantErr(t, "AddPack", s.AddPack(ctx, pk.p, pk.b), nil)
	}
	wantErr(t, "AddPack in another project", s.AddPack(ctx, metastore.Pack{ProjectID: other.ID, ID: packA.ID, Type: metastore.BlobData, Size: packA.Size}, []metastore.BlobLocation{{ID: blobsA[0].ID, Type: metastore.BlobData, Length: 1}}), nil)
	idsA := []id.ID{blobsA[0].ID, blobsA[1].ID, blobsA[2].ID, blobsA[3].ID}

	t.Run("list", func(t *testing.T) {
		all := listAllPacks(t, s, p.ID)
		same(t, "ListPacks ids", packIDs(all), sortedIDs([]id.ID{packA.ID, packB.ID, packT.ID}))
		a := packByID(t, s, p.ID, packA.ID)
		want := packA
		want.CreatedAt = created
		same(t, "listed pack A", a, want)
		if b := packByID(t, s, p.ID, packB.ID); b.CreatedAt.IsZero() || !b.CondemnedAt.IsZero() || b.Deleting || b.Type != metastore.BlobData || b.Size != packB.Size {
			t.Fatalf("listed pack B = %+v", b)
		}
		// Paging by hex id.
		first := must[[]metastore.Pack](t, "ListPacks")(s.ListPacks(ctx, p.ID, metastore.ListOptions{Limit: 2}))
		rest := must[[]metastore.Pack](t, "ListPacks")(s.ListPacks(ctx, p.ID, metastore.ListOptions{After: first[1].ID.String()}))
		same(t, "paged", packIDs(append(first, rest...)), packIDs(all))
		_, err := s.ListPacks(ctx, p.ID, metastore.ListOptions{After: "not-hex"})
		wantErr(t, "ListPacks with a bad After", err, metastore.ErrInvalid)
		_, err = s.ListPacks(ctx, nope, metastore.ListOptions{})
		wantErr(t, "ListPacks of an unknown project", err, metastore.ErrNotFound)
		empty := newProject(t, s, "lifecycle-empty")
		if got := must[[]metastore.Pack](t, "ListPacks")(s.ListPacks(ctx, empty.ID, metastore.ListOptions{})); len(got) != 0 {
			t.Fatalf("ListPacks of an empty project = %v", got)
		}
		got := must[map[id.ID]metastore.Pack](t, "GetPacks")(s.GetPacks(ctx, p.ID, []id.ID{packB.ID, blobsA[0].ID, packA.ID, packA.ID}))
		if len(got) != 2 || got[packA.ID].ID != packA.ID || got[packB.ID].Size != packB.Size || got[packA.ID].Type != metastore.BlobData {
			t.Fatalf("GetPacks(A, B, a blob id, A again) = %+v, want packs A and B", got)
		}
		if got := must[map[id.ID]metastore.Pack](t, "GetPacks")(s.GetPacks(ctx, other.ID, []id.ID{packB.ID})); len(got) != 0 {
			t.Fatalf("GetPacks of another project's pack = %+v, want none", got)
		}
		_, err = s.GetPacks(ctx, nope, []id.ID{packA.ID})
		wantErr(t, "GetPacks of an unknown project", err, metastore.ErrNotFound)
		same(t, "PackEpoch of a new project", epoch(t, s, p.ID), int64(0))
		_, err = s.PackEpoch(ctx, nope)
		wantErr(t, "PackEpoch of an unknown project", err, metastore.ErrNotFound)
	})

	at := now().Add(-10 * time.Minute)
	t.Run("condemn", func(t *testing.T) {
		same(t, "CondemnPacks", must[int](t, "CondemnPacks")(s.CondemnPacks(ctx, p.ID, []id.ID{packA.ID, packA.ID, blobID("nopack", 1)}, at)), 1)
		same(t, "CondemnPacks again", must[int](t, "CondemnPacks")(s.CondemnPacks(ctx, p.ID, []id.ID{packA.ID}, now())), 0)
		a := packByID(t, s, p.ID, packA.ID)
		if !a.CondemnedAt.Equal(at) || a.Deleting {
			t.Fatalf("condemned pack = %+v, want condemned at %v", a, at)
		}
		// Condemned blobs still resolve, but count as missing for uploads
		// and commits.
		same(t, "MissingBlobs", must[[]id.ID](t, "MissingBlobs")(s.MissingBlobs(ctx, p.ID, append([]id.ID{blobsB[0].ID}, idsA...))), idsA)
		if got := must[map[id.ID]metastore.BlobLocation](t, "LocateBlobs")(s.LocateBlobs(ctx, p.ID, idsA)); len(got) != 4 || got[idsA[0]] != blobsA[0] {
			t.Fatalf("LocateBlobs of condemned blobs = %v", got)
		}
		// Another project's pack of the same id is not condemned.
		same(t, "MissingBlobs in the other project", must[[]id.ID](t, "MissingBlobs")(s.MissingBlobs(ctx, other.ID, idsA[:1])), []id.ID{})
		_, err := s.CondemnPacks(ctx, nope, []id.ID{packA.ID}, at)
		wantErr(t, "CondemnPacks in an unknown project", err, metastore.ErrNotFound)
	})

	t.Run("commit requires live blobs", func(t *testing.T) {
		head := func() int64 { return must[metastore.Project](t, "GetProject")(s.GetProject(ctx, p.ID)).Head }
		h := head()
		for _, req := range [][]id.ID{
			{blobsB[0].ID, idsA[1]},        // condemned
			{blobsB[0].ID, blobID("x", 9)}, // unknown
		} {
			_, err := s.CommitVersion(ctx, metastore.Version{ProjectID: p.ID, Parent: h, Root: blobID("root", 50), Kind: metastore.KindSync},
				metastore.FileChanges{Upsert: []metastore.ProjectFile{{Path: "never", Size: 1}}, Requires: req})
			wantErr(t, "CommitVersion requiring a missing blob", err, metastore.ErrMissing)
		}
		if head() != h {
			t.Fatal("a refused commit moved the head")
		}
		if _, err := s.GetProjectFile(ctx, p.ID, "never"); !errors.Is(err, metastore.ErrNotFound) {
			t.Fatalf("a refused commit changed the files: %v", err)
		}
		// A stale parent is a conflict, whatever the blobs.
		_, err := s.CommitVersion(ctx, metastore.Version{ProjectID: p.ID, Parent: h + 5, Root: blobID("root", 50), Kind: metastore.KindSync},
			metastore.FileChanges{Requires: []id.ID{idsA[0]}})
		wantErr(t, "CommitVersion on a stale parent", err, metastore.ErrConflict)
		v := commit(t, s, p.ID, h, metastore.FileChanges{Requires: []id.ID{blobsB[0].ID, blobsT[1].ID, blobsB[0].ID}})
		if v.Number != h+1 {
			t.Fatalf("commit = %+v", v)
		}
	})

	t.Run("upload moves condemned blobs", func(t *testing.T) {
		// A new pack holding a condemned blob (an uploader was told it is
		// missing) takes it over.
		packC := metastore.Pack{ProjectID: p.ID, ID: blobID("pack/C", 0), Type: metastore.BlobData, Size: 1000, Epoch: epoch(t, s, p.ID)}
		locC := metastore.BlobLocation{ID: idsA[0], Type: metastore.BlobData, PackID: packC.ID, Offset: 10, Length: blobsA[0].Length, RawLength: blobsA[0].RawLength, Codec: 1}
		live := metastore.BlobLocation{ID: blobsB[1].ID, Type: metastore.BlobData, PackID: packC.ID, Offset: 500, Length: 5, RawLength: 5}
		wantErr(t, "AddPack", s.AddPack(ctx, packC, []metastore.BlobLocation{locC, live}), nil)
		got := must[map[id.ID]metastore.BlobLocation](t, "LocateBlobs")(s.LocateBlobs(ctx, p.ID, []id.ID{idsA[0], idsA[1], blobsB[1].ID}))
		same(t, "moved blob", got[idsA[0]], locC)
		same(t, "still condemned blob", got[idsA[1]], blobsA[1])
		same(t, "live blob keeps its first location", got[blobsB[1].ID], blobsB[1])
		same(t, "MissingBlobs", must[[]id.ID](t, "MissingBlobs")(s.MissingBlobs(ctx, p.ID, idsA)), idsA[1:])
	})

	t.Run("re-adding a condemned pack un-condemns it", func(t *testing.T) {
		same(t, "CondemnPacks B", must[int](t, "CondemnPacks")(s.CondemnPacks(ctx, p.ID, []id.ID{packB.ID}, at)), 1)
		b := packB
		b.Epoch = epoch(t, s, p.ID)
		wantErr(t, "AddPack again", s.AddPack(ctx, b, blobsB), nil)
		if got := packByID(t, s, p.ID, packB.ID); !got.CondemnedAt.IsZero() {
			t.Fatalf("pack B after AddPack = %+v, want live", got)
		}
	})

	t.Run("uncondemn", func(t *testing.T) {
		same(t, "CondemnPacks T", must[int](t, "CondemnPacks")(s.CondemnPacks(ctx, p.ID, []id.ID{packT.ID}, at)), 1)
		same(t, "UncondemnPacks", must[int](t, "UncondemnPacks")(s.UncondemnPacks(ctx, p.ID, []id.ID{packT.ID, packB.ID})), 1)
		if got := packByID(t, s, p.ID, packT.ID); !got.CondemnedAt.IsZero() {
			t.Fatalf("pack T = %+v, want live", got)
		}
		_, err := s.UncondemnPacks(ctx, nope, []id.ID{packT.ID})
		wantErr(t, "UncondemnPacks in an unknown project", err, metastore.ErrNotFound)
	})

	t.Run("delete and drop", func(t *testing.T) {
		// Pack A was condemned at `at`; pack B is live: only A goes, and
		// only when named with the condemnation the caller saw.
		e0 := epoch(t, s, p.ID)
		listedA := packByID(t, s, p.ID, packA.ID)
		listedB := packByID(t, s, p.ID, packB.ID)
		wrongA := listedA
		wrongA.CondemnedAt = at.Add(-time.Second)
		got := must[[]id.ID](t, "DeletePacks")(s.DeletePacks(ctx, p.ID, []metastore.Pack{wrongA, listedB}))
		same(t, "DeletePacks of another condemnation", got, []id.ID(nil))
		// B condemned since it was listed as live: left alone too.
		same(t, "CondemnPacks B", must[int](t, "CondemnPacks")(s.CondemnPacks(ctx, p.ID, []id.ID{packB.ID}, at)), 1)
		got = must[[]id.ID](t, "DeletePacks")(s.DeletePacks(ctx, p.ID, []metastore.Pack{listedA, listedB}))
		same(t, "DeletePacks", got, []id.ID{packA.ID})
		same(t, "UncondemnPacks B", must[int](t, "UncondemnPacks")(s.UncondemnPacks(ctx, p.ID, []id.ID{packB.ID})), 1)
		if a := packByID(t, s, p.ID, packA.ID); !a.Deleting {
			t.Fatalf("pack A = %+v, want deleting", a)
		}
		// Its blobs are gone from the index; the moved one is not.
		locs := must[map[id.ID]metastore.BlobLocation](t, "LocateBlobs")(s.LocateBlobs(ctx, p.ID, idsA))
		if len(locs) != 1 || locs[idsA[0]].PackID != blobID("pack/C", 0) {
			t.Fatalf("LocateBlobs after DeletePacks = %v", locs)
		}
		// A deleting pack cannot be un-condemned, condemned or re-added.
		same(t, "UncondemnPacks of a deleting pack", must[int](t, "UncondemnPacks")(s.UncondemnPacks(ctx, p.ID, []id.ID{packA.ID})), 0)
		same(t, "CondemnPacks of a deleting pack", must[int](t, "CondemnPacks")(s.CondemnPacks(ctx, p.ID, []id.ID{packA.ID}, now())), 0)
		a := packA
		a.Epoch = e0
		wantErr(t, "AddPack of a deleting pack", s.AddPack(ctx, a, blobsA), metastore.ErrStale)
		// Deleting again reports it again (a retry after a crash).
		same(t, "DeletePacks again", must[[]id.ID](t, "DeletePacks")(s.DeletePacks(ctx, p.ID, []metastore.Pack{packByID(t, s, p.ID, packA.ID)})), []id.ID{packA.ID})
		same(t, "PackEpoch before DropPacks", epoch(t, s, p.ID), e0)

		// DropPacks forgets only deleting packs, and advances the epoch.
		wantErr(t, "DropPacks", s.DropPacks(ctx, p.ID, []id.ID{packA.ID, packB.ID}), nil)
		same(t, "packs", packIDs(listAllPacks(t, s, p.ID)), sortedIDs([]id.ID{packB.ID, packT.ID, blobID("pack/C", 0)}))
		same(t, "PackEpoch after DropPacks", epoch(t, s, p.ID), e0+1)
		wantErr(t, "DropPacks of nothing", s.DropPacks(ctx, p.ID, []id.ID{packA.ID}), nil)
		same(t, "PackEpoch after an empty DropPacks", epoch(t, s, p.ID), e0+1)
		same(t, "other project's epoch", epoch(t, s, other.ID), int64(0))

		// An upload verified before the drop cannot index the pack again...
		wantErr(t, "AddPack with the old epoch", s.AddPack(ctx, a, blobsA), metastore.ErrStale)
		if got := must[map[id.ID]metastore.BlobLocation](t, "LocateBlobs")(s.LocateBlobs(ctx, p.ID, idsA[1:])); len(got) != 0 {
			t.Fatalf("a stale AddPack indexed %v", got)
		}
		// ... one verified after it can.
		a.Epoch = e0 + 1
		wantErr(t, "AddPack with the new epoch", s.AddPack(ctx, a, blobsA), nil)
		same(t, "MissingBlobs", must[[]id.ID](t, "MissingBlobs")(s.MissingBlobs(ctx, p.ID, idsA)), []id.ID{})
		_, err := s.DeletePacks(ctx, nope, []metastore.Pack{listedA})
		wantErr(t, "DeletePacks in an unknown project", err, metastore.ErrNotFound)
		wantErr(t, "DropPacks in an unknown project", s.DropPacks(ctx, nope, []id.ID{packA.ID}), metastore.ErrNotFound)
	})

	t.Run("move blobs", func(t *testing.T) {
		src1, b1 := makePack(p.ID, "src1", metastore.BlobData, 5)
		src2, b2 := makePack(p.ID, "src2", metastore.BlobData, 5)
		src1.Epoch, src2.Epoch = epoch(t, s, p.ID), epoch(t, s, p.ID)
		wantErr(t, "AddPack src1", s.AddPack(ctx, src1, b1), nil)
		wantErr(t, "AddPack src2", s.AddPack(ctx, src2, b2), nil)
		dst := metastore.Pack{ProjectID: p.ID, ID: blobID("pack/dst", 0), Type: metastore.BlobData, Size: 10000, Epoch: epoch(t, s, p.ID)}
		var moves []metastore.BlobLocation
		for i, x := range []id.ID{b1[0].ID, b1[1].ID, b1[2].ID, b2[0].ID, blobID("x", 77)} {
			moves = append(moves, metastore.BlobLocation{ID: x, Type: metastore.BlobData, PackID: dst.ID, Offset: int64(100 * i), Length: 50, RawLength: 60, Codec: 2, RawOffset: int64(60 * i)})
		}
		// Only blobs in src1 move: b2[0] lives in src2, x/77 is unknown.
		same(t, "MoveBlobs", must[int](t, "MoveBlobs")(s.MoveBlobs(ctx, dst, moves, []id.ID{src1.ID})), 3)
		got := must[map[id.ID]metastore.BlobLocation](t, "LocateBlobs")(s.LocateBlobs(ctx, p.ID, []id.ID{b1[0].ID, b1[3].ID, b2[0].ID, blobID("x", 77)}))
		same(t, "moved", got[b1[0].ID], moves[0])
		same(t, "not asked", got[b1[3].ID], b1[3])
		same(t, "other source", got[b2[0].ID], b2[0])
		if _, ok := got[blobID("x", 77)]; ok {
			t.Fatal("MoveBlobs indexed an unknown blob")
		}
		if d := packByID(t, s, p.ID, dst.ID); d.Type != metastore.BlobData || d.Size != 10000 || !d.CondemnedAt.IsZero() {
			t.Fatalf("destination pack = %+v", d)
		}
		// Many source packs (more than one statement takes in SQLite).
		var many []id.ID
		for i := range 2500 {
			many = append(many, blobID("no-such-pack", i))
		}
		dst2 := metastore.Pack{ProjectID: p.ID, ID: blobID("pack/dst-many", 0), Type: metastore.BlobData, Size: 10000, Epoch: epoch(t, s, p.ID)}
		back := slices.Clone(moves[:1])
		back[0].PackID = dst2.ID
		same(t, "MoveBlobs from many packs", must[int](t, "MoveBlobs")(s.MoveBlobs(ctx, dst2, back, append(many, dst.ID))), 1)
		same(t, "MoveBlobs back", must[int](t, "MoveBlobs")(s.MoveBlobs(ctx, dst, moves[:1], append(many, dst2.ID))), 1)
		// Moving again changes nothing; a condemned source moves too.
		same(t, "MoveBlobs again", must[int](t, "MoveBlobs")(s.MoveBlobs(ctx, dst, moves, []id.ID{src1.ID})), 0)
		same(t, "CondemnPacks src2", must[int](t, "CondemnPacks")(s.CondemnPacks(ctx, p.ID, []id.ID{src2.ID}, now())), 1)
		same(t, "MoveBlobs from a condemned pack", must[int](t, "MoveBlobs")(s.MoveBlobs(ctx, dst, moves, nil)), 1)
		// The destination's epoch is checked like AddPack's.
		stale := dst
		stale.ID, stale.Epoch = blobID("pack/dst2", 0), epoch(t, s, p.ID)-1
		_, err := s.MoveBlobs(ctx, stale, nil, nil)
		wantErr(t, "MoveBlobs with an old epoch", err, metastore.ErrStale)
		_, err = s.MoveBlobs(ctx, metastore.Pack{ProjectID: nope, ID: blobID("pack/dst3", 0), Type: metastore.BlobData, Size: 1}, nil, nil)
		wantErr(t, "MoveBlobs in an unknown project", err, metastore.ErrNotFound)
	})
}

func testDeleteProject(t *testing.T, s metastore.Store) {
	ctx := t.Context()
	p := newProject(t, s, "doomed")
	keep := newProject(t, s, "kept")
	hash := func(i int) string { return blobID("doomed-token", i).String() }
	for i, pid := range []string{p.ID, p.ID, keep.ID} {
		wantErr(t, "CreateToken", s.CreateToken(ctx, metastore.Token{Hash: hash(i), Kind: metastore.TokenSandbox, ProjectID: pid}), nil)
	}
	wantErr(t, "CreateToken revoked", s.CreateToken(ctx, metastore.Token{Hash: hash(3), Kind: metastore.TokenSandbox, ProjectID: p.ID, Revoked: true}), nil)
	for _, pid := range []string{p.ID, keep.ID} {
		pack, blobs := makePack(pid, "d"+pid, metastore.BlobData, 3)
		wantErr(t, "AddPack", s.AddPack(ctx, pack, blobs), nil)
		commit(t, s, pid, 0, metastore.FileChanges{Upsert: []metastore.ProjectFile{{Path: "f", Size: 1}}})
		wantErr(t, "SetRetention", s.SetRetention(ctx, pid, metastore.Retention{KeepLast: 3}), nil)
	}

	same(t, "RevokeProjectTokens", must[int](t, "RevokeProjectTokens")(s.RevokeProjectTokens(ctx, p.ID)), 2)
	same(t, "RevokeProjectTokens again", must[int](t, "RevokeProjectTokens")(s.RevokeProjectTokens(ctx, p.ID)), 0)
	for i, want := range []bool{true, true, false, true} {
		if got := must[metastore.Token](t, "GetToken")(s.GetToken(ctx, hash(i))); got.Revoked != want {
			t.Fatalf("token %d: revoked %v, want %v", i, got.Revoked, want)
		}
	}
	_, err := s.RevokeProjectTokens(ctx, "prj_aaaaaaaaaaaaaaaaaaaa")
	wantErr(t, "RevokeProjectTokens of an unknown project", err, metastore.ErrNotFound)

	wantErr(t, "DeleteProject", s.DeleteProject(ctx, p.ID), nil)
	wantErr(t, "DeleteProject again", s.DeleteProject(ctx, p.ID), metastore.ErrNotFound)
	wantErr(t, "DeleteProject of invalid UTF-8", s.DeleteProject(ctx, "bad\xff"), metastore.ErrNotFound)
	for _, tt := range []struct {
		name string
		err  error
	}{
		{"GetProject", second(s.GetProject(ctx, p.ID))},
		{"GetToken", second(s.GetToken(ctx, hash(0)))},
		{"GetVersion", second(s.GetVersion(ctx, p.ID, 1))},
		{"ListPacks", second(s.ListPacks(ctx, p.ID, metastore.ListOptions{}))},
		{"GetRetention", second(s.GetRetention(ctx, p.ID))},
		{"GetProjectFile", second(s.GetProjectFile(ctx, p.ID, "f"))},
		{"MissingBlobs", second(s.MissingBlobs(ctx, p.ID, nil))},
	} {
		wantErr(t, tt.name+" after DeleteProject", tt.err, metastore.ErrNotFound)
	}
	// The other project is untouched.
	if got := must[metastore.Token](t, "GetToken")(s.GetToken(ctx, hash(2))); got.Revoked || got.ProjectID != keep.ID {
		t.Fatalf("other project's token = %+v", got)
	}
	if len(listAllPacks(t, s, keep.ID)) != 1 || len(listAllFiles(t, s, keep.ID, "")) != 1 {
		t.Fatal("DeleteProject touched another project")
	}
	same(t, "other retention", must[metastore.Retention](t, "GetRetention")(s.GetRetention(ctx, keep.ID)), metastore.Retention{KeepLast: 3})
	// The name is free again.
	newProject(t, s, "doomed")
}

// testConcurrentGC runs uploads and commits that require blobs while a
// collector condemns, un-condemns, deletes, drops and re-adds packs of the
// same project: only ErrMissing, ErrStale and ErrConflict may fail them,
// and nothing deadlocks (PostgreSQL's lock order).
func testConcurrentGC(t *testing.T, s metastore.Store) {
	ctx := t.Context()
	p := newProject(t, s, "gc-race")
	rounds := pick(10, 25)
	// Pack "hot" holds the blob every commit requires; the collector keeps
	// condemning, deleting and re-adding it.
	hot, hotBlobs := makePack(p.ID, "hot", metastore.BlobData, 2)
	wantErr(t, "AddPack hot", s.AddPack(ctx, hot, hotBlobs), nil)
	errc := make(chan error, 16)
	stop := make(chan struct{})
	var collector sync.WaitGroup
	collector.Go(func() {
		for i := 0; ; i++ {
			select {
			case <-stop:
				return
			default:
			}
			junk, blobs := makePack(p.ID, fmt.Sprintf("junk-%d", i), metastore.BlobData, 3)
			e, err := s.PackEpoch(ctx, p.ID)
			if err == nil {
				junk.Epoch = e
				err = s.AddPack(ctx, junk, blobs)
			}
			if err == nil {
				_, err = s.CondemnPacks(ctx, p.ID, []id.ID{junk.ID, hot.ID}, now().Add(-time.Hour))
			}
			if err == nil && i%3 == 0 {
				_, err = s.UncondemnPacks(ctx, p.ID, []id.ID{hot.ID})
			}
			var listed []metastore.Pack
			if err == nil {
				listed, err = s.ListPacks(ctx, p.ID, metastore.ListOptions{Limit: 100000})
			}
			var ids []id.ID
			if err == nil {
				ids, err = s.DeletePacks(ctx, p.ID, listed)
			}
			if err == nil {
				err = s.DropPacks(ctx, p.ID, ids)
			}
			if err == nil {
				h := hot
				if h.Epoch, err = s.PackEpoch(ctx, p.ID); err == nil {
					err = s.AddPack(ctx, h, hotBlobs)
				}
			}
			if err != nil && !errors.Is(err, metastore.ErrStale) {
				errc <- fmt.Errorf("collector: %w", err)
				return
			}
		}
	})
	var committers sync.WaitGroup
	for w := range 3 {
		committers.Go(func() {
			for i := range rounds {
				pk, blobs := makePack(p.ID, fmt.Sprintf("w%d-%d", w, i), metastore.BlobData, 2)
				e, err := s.PackEpoch(ctx, p.ID)
				if err != nil {
					errc <- err
					return
				}
				pk.Epoch = e
				if err := s.AddPack(ctx, pk, blobs); err != nil && !errors.Is(err, metastore.ErrStale) {
					errc <- fmt.Errorf("AddPack: %w", err)
					return
				}
				head, err := s.GetProject(ctx, p.ID)
				if err != nil {
					errc <- err
					return
				}
				_, err = s.CommitVersion(ctx, metastore.Version{ProjectID: p.ID, Parent: head.Head, Root: blobID(fmt.Sprintf("r%d", w), i), Kind: metastore.KindSync},
					metastore.FileChanges{Requires: []id.ID{hotBlobs[0].ID, blobs[0].ID}})
				if err != nil && !errors.Is(err, metastore.ErrMissing) && !errors.Is(err, metastore.ErrConflict) {
					errc <- fmt.Errorf("CommitVersion: %w", err)
					return
				}
			}
		})
	}
	finished := make(chan struct{})
	go func() { committers.Wait(); close(finished) }()
	select {
	case <-finished:
	case <-time.After(2 * time.Minute):
		t.Error("committers did not finish in 2 minutes (deadlock?)")
	}
	close(stop)
	collector.Wait()
	close(errc)
	for err := range errc {
		t.Error(err)
	}
}
