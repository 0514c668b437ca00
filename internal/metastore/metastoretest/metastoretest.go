// Package metastoretest is the conformance suite every metastore.Store
// implementation passes: the SQLite store and the PostgreSQL store run the
// very same tests, so they behave alike down to the error values.
package metastoretest

import (
	"context"
	"errors"
	"fmt"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/sandkeep/sandkeep/internal/id"
	"github.com/sandkeep/sandkeep/internal/metastore"
)

// Run runs the suite. open must return a new, empty, migrated store; Run
// closes it when the test ends. Groups run in parallel, each on its own
// store.
func Run(t *testing.T, open func(t *testing.T) metastore.Store) {
	runGroups(t, open, []group[metastore.Store]{
		{"Projects", testProjects},
		{"Tokens", testTokens},
		{"TokenListing", testTokenListing},
		{"Limits", testLimits},
		{"DeletedProjects", testDeletedProjects},
		{"BlobIndex", testBlobIndex},
		{"BlobIndexLargeBatches", testLargeBatches},
		{"Versions", testVersions},
		{"ProjectFiles", testProjectFiles},
		{"ConcurrentCommits", testConcurrentCommits},
		{"ConcurrentProjects", testConcurrentProjects},
		{"ContextCancellation", testContextCancellation},
		{"Retention", testRetention},
		{"PinsAndDeleteVersions", testPinsAndDeleteVersions},
		{"PackLifecycle", testPackLifecycle},
		{"DeleteProject", testDeleteProject},
		{"ConcurrentGC", testConcurrentGC},
		{"Import", testImport},
		{"ForgetBlobs", testForgetBlobs},
	})
}

// group is one group of tests of a suite, run on a store of its own.
type group[S any] struct {
	name string
	fn   func(t *testing.T, s S)
}

// runGroups runs the groups in parallel, each on a store from open that is
// closed when the group ends.
func runGroups[S interface{ Close() error }](t *testing.T, open func(t *testing.T) S, groups []group[S]) {
	for _, g := range groups {
		t.Run(g.name, func(t *testing.T) {
			t.Parallel()
			s := open(t)
			t.Cleanup(func() {
				if err := s.Close(); err != nil {
					t.Errorf("Close: %v", err)
				}
			})
			g.fn(t, s)
		})
	}
}

// ---- helpers ----

// same fails the test unless got and want print alike with %+v: times
// compare by instant, precision and location (every stored time is UTC).
func same(t *testing.T, what string, got, want any) {
	t.Helper()
	if g, w := fmt.Sprintf("%+v", got), fmt.Sprintf("%+v", want); g != w {
		t.Fatalf("%s:\n got  %s\n want %s", what, g, w)
	}
}

// wantErr fails the test unless errors.Is(err, target) (nil: err == nil).
func wantErr(t *testing.T, what string, err, target error) {
	t.Helper()
	if target == nil {
		if err != nil {
			t.Fatalf("%s: unexpected error: %v", what, err)
		}
		return
	}
	if !errors.Is(err, target) {
		t.Fatalf("%s: err = %v, want %v", what, err, target)
	}
}

func must[T any](t *testing.T, what string) func(T, error) T {
	return func(v T, err error) T {
		t.Helper()
		if err != nil {
			t.Fatalf("%s: %v", what, err)
		}
		return v
	}
}

// now returns the current time at the stores' precision.
func now() time.Time { return time.Now().UTC().Truncate(time.Microsecond) }

func blobID(tag string, i int) id.ID { return id.Sum([]byte(tag + "/" + strconv.Itoa(i))) }

func newProject(t *testing.T, s metastore.Store, name string) metastore.Project {
	t.Helper()
	return must[metastore.Project](t, "CreateProject "+name)(s.CreateProject(t.Context(), name))
}

func commit(t *testing.T, s metastore.Store, projectID string, parent int64, ch metastore.FileChanges) metastore.Version {
	t.Helper()
	v := metastore.Version{ProjectID: projectID, Parent: parent, Root: blobID("root", int(parent)+1), Kind: metastore.KindSync}
	return must[metastore.Version](t, fmt.Sprintf("CommitVersion on %d", parent))(s.CommitVersion(t.Context(), v, ch))
}

func listAllFiles(t *testing.T, s metastore.Store, projectID, prefix string) []metastore.ProjectFile {
	t.Helper()
	return must[[]metastore.ProjectFile](t, "ListProjectFiles")(s.ListProjectFiles(t.Context(), projectID, prefix, metastore.ListOptions{}))
}

func paths(fs []metastore.ProjectFile) []string {
	out := make([]string, len(fs))
	for i, f := range fs {
		out[i] = f.Path
	}
	return out
}

func numbers(vs []metastore.Version) []int64 {
	out := make([]int64, len(vs))
	for i, v := range vs {
		out[i] = v.Number
	}
	return out
}

// ---- projects ----

var projectIDRE = regexp.MustCompile(`^prj_[a-z2-7]{20}$`)

func testProjects(t *testing.T, s metastore.Store) {
	ctx := t.Context()
	before := now()
	p := newProject(t, s, "alpha")
	after := now()
	if !projectIDRE.MatchString(p.ID) {
		t.Fatalf("project id %q does not match %s", p.ID, projectIDRE)
	}
	if p.Name != "alpha" || p.Head != 0 || p.CreatedAt.Before(before) || p.CreatedAt.After(after) || p.CreatedAt.Location() != time.UTC {
		t.Fatalf("CreateProject = %+v", p)
	}
	same(t, "GetProject", must[metastore.Project](t, "GetProject")(s.GetProject(ctx, p.ID)), p)

	t.Run("duplicate name", func(t *testing.T) {
		_, err := s.CreateProject(ctx, "alpha")
		wantErr(t, "CreateProject(alpha) again", err, metastore.ErrAlreadyExists)
	})

	t.Run("invalid names", func(t *testing.T) {
		for _, name := range []string{
			"",
			strings.Repeat("a", 129),
			strings.Repeat("é", 129),
			"nul\x00byte",
			"tab\there",
			"new\nline",
			"bad utf8 \xff\xfe",
			"zero\u200bwidth",
			"no\u00a0break",
			"\x7f",
		} {
			_, err := s.CreateProject(ctx, name)
			wantErr(t, fmt.Sprintf("CreateProject(%q)", name), err, metastore.ErrInvalid)
		}
	})

	valid := []string{"b", strings.Repeat("é", 128), strings.Repeat("z", 128), "My Project (2) – ünïcödé 日本", "100%_done", "with space", "'quote\"s"}
	t.Run("valid names", func(t *testing.T) {
		for _, name := range valid {
			got, err := s.CreateProject(ctx, name)
			wantErr(t, fmt.Sprintf("CreateProject(%q)", name), err, nil)
			same(t, "name", got.Name, name)
		}
	})

	t.Run("list", func(t *testing.T) {
		list := must[[]metastore.Project](t, "ListProjects")(s.ListProjects(ctx))
		want := append([]string{"alpha"}, valid...)
		slices.Sort(want) // bytewise, as both stores order names
		var got []string
		ids := map[string]bool{}
		for _, lp := range list {
			got = append(got, lp.Name)
			ids[lp.ID] = true
			same(t, "listed project", lp, must[metastore.Project](t, "GetProject")(s.GetProject(ctx, lp.ID)))
		}
		same(t, "ListProjects names", got, want)
		if len(ids) != len(list) {
			t.Fatalf("project ids are not unique: %v", ids)
		}
	})

	t.Run("not found", func(t *testing.T) {
		for _, pid := range []string{"prj_aaaaaaaaaaaaaaaaaaaa", "", "alpha", "bad\xff", "nul\x00"} {
			_, err := s.GetProject(ctx, pid)
			wantErr(t, fmt.Sprintf("GetProject(%q)", pid), err, metastore.ErrNotFound)
		}
	})
}

// ---- tokens ----

func testTokens(t *testing.T, s metastore.Store) {
	ctx := t.Context()
	p := newProject(t, s, "tokens")
	hash := func(i int) string { return blobID("token", i).String() }
	created := now().Add(-time.Minute)

	tokens := []metastore.Token{
		{Hash: hash(1), Kind: metastore.TokenAdmin, CreatedAt: created, Note: "bootstrap"},
		{Hash: hash(2), Kind: metastore.TokenSandbox, ProjectID: p.ID, CreatedAt: created, ExpiresAt: created.Add(time.Hour), Note: "sandbox ✓"},
		{Hash: hash(3), Kind: metastore.TokenSandbox, ProjectID: p.ID, CreatedAt: created, Revoked: true},
	}
	for _, tok := range tokens {
		wantErr(t, "CreateToken", s.CreateToken(ctx, tok), nil)
		same(t, "GetToken", must[metastore.Token](t, "GetToken")(s.GetToken(ctx, tok.Hash)), tok)
	}

	t.Run("zero CreatedAt means now", func(t *testing.T) {
		before := now()
		wantErr(t, "CreateToken", s.CreateToken(ctx, metastore.Token{Hash: hash(4), Kind: metastore.TokenAdmin}), nil)
		got := must[metastore.Token](t, "GetToken")(s.GetToken(ctx, hash(4)))
		if got.CreatedAt.Before(before) || got.CreatedAt.After(now()) || !got.ExpiresAt.IsZero() {
			t.Fatalf("GetToken = %+v", got)
		}
	})

	t.Run("errors", func(t *testing.T) {
		tests := []struct {
			name string
			tok  metastore.Token
			want error
		}{
			{"duplicate", tokens[0], metastore.ErrAlreadyExists},
			{"unknown project", metastore.Token{Hash: hash(10), Kind: metastore.TokenSandbox, ProjectID: "prj_aaaaaaaaaaaaaaaaaaaa"}, metastore.ErrNotFound},
			{"hash not hex", metastore.Token{Hash: "secret-token", Kind: metastore.TokenAdmin}, metastore.ErrInvalid},
			{"hash upper case", metastore.Token{Hash: strings.ToUpper(hash(11)), Kind: metastore.TokenAdmin}, metastore.ErrInvalid},
			{"hash short", metastore.Token{Hash: hash(12)[:63], Kind: metastore.TokenAdmin}, metastore.ErrInvalid},
			{"unknown kind", metastore.Token{Hash: hash(13), Kind: "root"}, metastore.ErrInvalid},
			{"sandbox without project", metastore.Token{Hash: hash(14), Kind: metastore.TokenSandbox}, metastore.ErrInvalid},
			{"admin with project", metastore.Token{Hash: hash(15), Kind: metastore.TokenAdmin, ProjectID: p.ID}, metastore.ErrInvalid},
			{"invalid UTF-8 project", metastore.Token{Hash: hash(16), Kind: metastore.TokenSandbox, ProjectID: "bad\xff"}, metastore.ErrInvalid},
		}
		for _, tt := range tests {
			t.Run(tt.name, func(t *testing.T) {
				wantErr(t, "CreateToken", s.CreateToken(ctx, tt.tok), tt.want)
			})
		}
	})

	t.Run("not found", func(t *testing.T) {
		for _, h := range []string{hash(99), "", "not-a-hash", "bad\xff"} {
			_, err := s.GetToken(ctx, h)
			wantErr(t, fmt.Sprintf("GetToken(%q)", h), err, metastore.ErrNotFound)
		}
	})
}

func testTokenListing(t *testing.T, s metastore.Store) {
	ctx := t.Context()
	p := newProject(t, s, "token-listing")
	other := newProject(t, s, "token-listing-other")
	hash := func(i int) string { return blobID("listed-token", i).String() }
	t0 := now().Add(-time.Hour)
	toks := []metastore.Token{
		{Hash: hash(1), Kind: metastore.TokenSandbox, ProjectID: p.ID, CreatedAt: t0, Note: "first"},
		{Hash: hash(2), Kind: metastore.TokenSandbox, ProjectID: p.ID, CreatedAt: t0.Add(time.Minute), ExpiresAt: t0.Add(48 * time.Hour), SandboxID: "sbx_one"},
		{Hash: hash(3), Kind: metastore.TokenSandbox, ProjectID: other.ID, CreatedAt: t0},
	}
	for _, tok := range toks {
		wantErr(t, "CreateToken", s.CreateToken(ctx, tok), nil)
	}
	list := must[[]metastore.Token](t, "ListTokens")(s.ListTokens(ctx, p.ID))
	same(t, "ListTokens", list, toks[:2])

	used := now().Add(-time.Second)
	wantErr(t, "TouchToken", s.TouchToken(ctx, hash(1), used), nil)
	wantErr(t, "TouchToken of an unknown hash", s.TouchToken(ctx, hash(99), used), nil)
	if got := must[metastore.Token](t, "GetToken")(s.GetToken(ctx, hash(1))); !got.LastUsedAt.Equal(used.Truncate(time.Microsecond)) {
		t.Fatalf("LastUsedAt = %v, want %v", got.LastUsedAt, used)
	}

	rev := must[metastore.Token](t, "RevokeTokenID")(s.RevokeTokenID(ctx, metastore.TokenID(hash(2))))
	if !rev.Revoked || rev.Hash != hash(2) {
		t.Fatalf("RevokeTokenID = %+v, want token 2 revoked", rev)
	}
	if got := must[metastore.Token](t, "GetToken")(s.GetToken(ctx, hash(1))); got.Revoked {
		t.Fatal("revoking token 2 revoked token 1")
	}
	_, err := s.RevokeTokenID(ctx, metastore.TokenID(hash(98)))
	wantErr(t, "RevokeTokenID of an unknown id", err, metastore.ErrNotFound)
	for _, bad := range []string{"", "tok_", "tok_XYZ", hash(1), "tok_" + hash(1), "tok_0123456789abcdeg", "tok_%"} {
		_, err := s.RevokeTokenID(ctx, bad)
		wantErr(t, fmt.Sprintf("RevokeTokenID(%q)", bad), err, metastore.ErrInvalid)
	}
	_, err = s.ListTokens(ctx, "prj_aaaaaaaaaaaaaaaaaaaa")
	wantErr(t, "ListTokens of an unknown project", err, metastore.ErrNotFound)
}

func testDeletedProjects(t *testing.T, s metastore.Store) {
	ctx := t.Context()
	p := newProject(t, s, "deleted-list")
	// Orphans: ids without a row are claimed as deleting; AddPack of one
	// then fails until DropPacks forgets it; ids with a row are left alone.
	live, liveBlobs := makePack(p.ID, "live", metastore.BlobData, 1)
	wantErr(t, "AddPack", s.AddPack(ctx, live, liveBlobs), nil)
	orphan, orphanBlobs := makePack(p.ID, "orphan", metastore.BlobData, 1)
	claimed := must[[]id.ID](t, "ClaimOrphans")(s.ClaimOrphans(ctx, p.ID, []metastore.Pack{live, orphan}))
	same(t, "ClaimOrphans", claimed, []id.ID{orphan.ID})
	orphan.Epoch = must[int64](t, "PackEpoch")(s.PackEpoch(ctx, p.ID))
	wantErr(t, "AddPack of a claimed orphan", s.AddPack(ctx, orphan, orphanBlobs), metastore.ErrStale)
	if got := must[map[id.ID]metastore.Pack](t, "GetPacks")(s.GetPacks(ctx, p.ID, []id.ID{orphan.ID})); !got[orphan.ID].Deleting {
		t.Fatalf("claimed orphan = %+v, want deleting", got[orphan.ID])
	}
	wantErr(t, "DropPacks", s.DropPacks(ctx, p.ID, claimed), nil)
	orphan.Epoch = must[int64](t, "PackEpoch")(s.PackEpoch(ctx, p.ID))
	wantErr(t, "AddPack after DropPacks", s.AddPack(ctx, orphan, orphanBlobs), nil)
	start := now().Add(-time.Second)
	wantErr(t, "DeleteProject", s.DeleteProject(ctx, p.ID), nil)
	var found *metastore.DeletedProject
	for _, d := range must[[]metastore.DeletedProject](t, "DeletedProjects")(s.DeletedProjects(ctx)) {
		if d.ID == p.ID {
			found = &d
		}
	}
	if found == nil || found.DeletedAt.Before(start) || found.DeletedAt.After(now().Add(time.Second)) {
		t.Fatalf("DeletedProjects after deleting %s: %+v", p.ID, found)
	}
	_, err := s.ClaimOrphans(ctx, p.ID, nil)
	wantErr(t, "ClaimOrphans of a deleted project", err, metastore.ErrNotFound)
	wantErr(t, "ForgetDeletedProject", s.ForgetDeletedProject(ctx, p.ID), nil)
	for _, d := range must[[]metastore.DeletedProject](t, "DeletedProjects")(s.DeletedProjects(ctx)) {
		if d.ID == p.ID {
			t.Fatal("ForgetDeletedProject left the project listed")
		}
	}
}

func testLimits(t *testing.T, s metastore.Store) {
	ctx := t.Context()
	p := newProject(t, s, "limits")
	same(t, "GetLimits of a new project", must[metastore.Limits](t, "GetLimits")(s.GetLimits(ctx, p.ID)), metastore.Limits{})
	l := metastore.Limits{MaxFiles: 10, MaxBytes: 1 << 20, MaxDepth: 3}
	wantErr(t, "SetLimits", s.SetLimits(ctx, p.ID, l), nil)
	same(t, "GetLimits", must[metastore.Limits](t, "GetLimits")(s.GetLimits(ctx, p.ID)), l)
	l.MaxFiles = 0
	wantErr(t, "SetLimits again", s.SetLimits(ctx, p.ID, l), nil)
	same(t, "GetLimits after a reset", must[metastore.Limits](t, "GetLimits")(s.GetLimits(ctx, p.ID)), l)
	same(t, "WithDefaults", l.WithDefaults(), metastore.Limits{MaxFiles: metastore.DefaultMaxFiles, MaxBytes: 1 << 20, MaxDepth: 3})
	wantErr(t, "SetLimits negative", s.SetLimits(ctx, p.ID, metastore.Limits{MaxBytes: -1}), metastore.ErrInvalid)
	const nope = "prj_aaaaaaaaaaaaaaaaaaaa"
	_, err := s.GetLimits(ctx, nope)
	wantErr(t, "GetLimits of an unknown project", err, metastore.ErrNotFound)
	wantErr(t, "SetLimits of an unknown project", s.SetLimits(ctx, nope, l), metastore.ErrNotFound)
}

// ---- blob index ----

// makePack returns a pack of n blobs named tag/0..n-1, laid end to end.
func makePack(projectID, tag string, typ metastore.BlobType, n int) (metastore.Pack, []metastore.BlobLocation) {
	p := metastore.Pack{ProjectID: projectID, ID: blobID("pack/"+tag, 0), Type: typ}
	blobs := make([]metastore.BlobLocation, n)
	var off int64
	for i := range blobs {
		l := int64(100 + i%7)
		blobs[i] = metastore.BlobLocation{ID: blobID(tag, i), Type: typ, PackID: p.ID, Offset: off, Length: l, RawLength: 2 * l, Codec: uint8(i % 2)}
		if i%5 == 4 {
			// A group member: the locations keep where it starts in its
			// frame's plaintext.
			blobs[i].Codec, blobs[i].RawOffset = 2, int64(1000+i)
		}
		off += l
	}
	p.Size = off + 64 // and a footer
	return p, blobs
}

func testBlobIndex(t *testing.T, s metastore.Store) {
	ctx := t.Context()
	p1 := newProject(t, s, "one")
	p2 := newProject(t, s, "two")
	a, b, c, d := blobID("x", 1), blobID("x", 2), blobID("x", 3), blobID("x", 4)

	t.Run("empty index", func(t *testing.T) {
		got := must[[]id.ID](t, "MissingBlobs")(s.MissingBlobs(ctx, p1.ID, []id.ID{a, b, a, c, b}))
		same(t, "MissingBlobs (deduplicated, input order)", got, []id.ID{a, b, c})
		if got := must[[]id.ID](t, "MissingBlobs")(s.MissingBlobs(ctx, p1.ID, nil)); len(got) != 0 {
			t.Fatalf("MissingBlobs(nil) = %v", got)
		}
		if got := must[map[id.ID]metastore.BlobLocation](t, "LocateBlobs")(s.LocateBlobs(ctx, p1.ID, []id.ID{a})); len(got) != 0 {
			t.Fatalf("LocateBlobs on an empty index = %v", got)
		}
	})

	pack1 := metastore.Pack{ProjectID: p1.ID, ID: blobID("pack", 1), Type: metastore.BlobData, Size: 1000}
	locA := metastore.BlobLocation{ID: a, Type: metastore.BlobData, PackID: pack1.ID, Offset: 0, Length: 10, RawLength: 20, Codec: 1}
	locB := metastore.BlobLocation{ID: b, Type: metastore.BlobData, PackID: pack1.ID, Offset: 10, Length: 30, RawLength: 30, Codec: 0}
	wantErr(t, "AddPack", s.AddPack(ctx, pack1, []metastore.BlobLocation{locA, locB}), nil)

	t.Run("after AddPack", func(t *testing.T) {
		same(t, "MissingBlobs", must[[]id.ID](t, "MissingBlobs")(s.MissingBlobs(ctx, p1.ID, []id.ID{c, a, d, b})), []id.ID{c, d})
		same(t, "LocateBlobs", must[map[id.ID]metastore.BlobLocation](t, "LocateBlobs")(s.LocateBlobs(ctx, p1.ID, []id.ID{a, b, c, a})),
			map[id.ID]metastore.BlobLocation{a: locA, b: locB})
	})

	t.Run("idempotent", func(t *testing.T) {
		wantErr(t, "AddPack again", s.AddPack(ctx, pack1, []metastore.BlobLocation{locA, locB}), nil)
		same(t, "LocateBlobs", must[map[id.ID]metastore.BlobLocation](t, "LocateBlobs")(s.LocateBlobs(ctx, p1.ID, []id.ID{a, b})),
			map[id.ID]metastore.BlobLocation{a: locA, b: locB})
	})

	t.Run("first location wins", func(t *testing.T) {
		pack2 := metastore.Pack{ProjectID: p1.ID, ID: blobID("pack", 2), Type: metastore.BlobData, Size: 500}
		otherB := metastore.BlobLocation{ID: b, Type: metastore.BlobData, PackID: pack2.ID, Offset: 0, Length: 30, RawLength: 30}
		locC := metastore.BlobLocation{ID: c, Type: metastore.BlobData, PackID: pack2.ID, Offset: 30, Length: 5, RawLength: 5}
		dupC := locC
		dupC.Offset = 100 // the same blob twice in one call: the first occurrence wins too
		wantErr(t, "AddPack", s.AddPack(ctx, pack2, []metastore.BlobLocation{otherB, locC, dupC}), nil)
		same(t, "LocateBlobs", must[map[id.ID]metastore.BlobLocation](t, "LocateBlobs")(s.LocateBlobs(ctx, p1.ID, []id.ID{a, b, c, d})),
			map[id.ID]metastore.BlobLocation{a: locA, b: locB, c: locC})
	})

	t.Run("tree pack", func(t *testing.T) {
		tp := metastore.Pack{ProjectID: p1.ID, ID: blobID("pack", 3), Type: metastore.BlobTree, Size: 100}
		tl := metastore.BlobLocation{ID: blobID("tree", 1), Type: metastore.BlobTree, Offset: 0, Length: 50, RawLength: 80, Codec: 1}
		wantErr(t, "AddPack", s.AddPack(ctx, tp, []metastore.BlobLocation{tl}), nil)
		tl.PackID = tp.ID // a zero PackID means the pack's
		same(t, "LocateBlobs", must[map[id.ID]metastore.BlobLocation](t, "LocateBlobs")(s.LocateBlobs(ctx, p1.ID, []id.ID{tl.ID})),
			map[id.ID]metastore.BlobLocation{tl.ID: tl})
	})

	t.Run("projects are separate", func(t *testing.T) {
		same(t, "MissingBlobs in another project", must[[]id.ID](t, "MissingBlobs")(s.MissingBlobs(ctx, p2.ID, []id.ID{a, b})), []id.ID{a, b})
		if got := must[map[id.ID]metastore.BlobLocation](t, "LocateBlobs")(s.LocateBlobs(ctx, p2.ID, []id.ID{a, b})); len(got) != 0 {
			t.Fatalf("LocateBlobs in another project = %v", got)
		}
		// The same pack id may exist in two projects.
		wantErr(t, "AddPack", s.AddPack(ctx, metastore.Pack{ProjectID: p2.ID, ID: pack1.ID, Type: metastore.BlobData, Size: 1000},
			[]metastore.BlobLocation{locA}), nil)
		same(t, "MissingBlobs", must[[]id.ID](t, "MissingBlobs")(s.MissingBlobs(ctx, p2.ID, []id.ID{a, b})), []id.ID{b})
	})

	t.Run("unknown project", func(t *testing.T) {
		for _, nope := range []string{"prj_aaaaaaaaaaaaaaaaaaaa", "", "bad\xff"} {
			_, err := s.MissingBlobs(ctx, nope, []id.ID{a})
			wantErr(t, fmt.Sprintf("MissingBlobs(%q)", nope), err, metastore.ErrNotFound)
			_, err = s.LocateBlobs(ctx, nope, []id.ID{a})
			wantErr(t, fmt.Sprintf("LocateBlobs(%q)", nope), err, metastore.ErrNotFound)
		}
		const nope = "prj_aaaaaaaaaaaaaaaaaaaa"
		wantErr(t, "AddPack", s.AddPack(ctx, metastore.Pack{ProjectID: nope, ID: blobID("pack", 9), Type: metastore.BlobData, Size: 100},
			[]metastore.BlobLocation{{ID: d, Type: metastore.BlobData, Length: 1}}), metastore.ErrNotFound)
	})

	t.Run("invalid packs change nothing", func(t *testing.T) {
		good := metastore.Pack{ProjectID: p1.ID, ID: blobID("pack", 10), Type: metastore.BlobData, Size: 100}
		blob := metastore.BlobLocation{ID: d, Type: metastore.BlobData, PackID: good.ID, Offset: 0, Length: 10, RawLength: 10}
		with := func(f func(*metastore.Pack, *metastore.BlobLocation)) (metastore.Pack, []metastore.BlobLocation) {
			p, b := good, blob
			f(&p, &b)
			return p, []metastore.BlobLocation{b}
		}
		tests := []struct {
			name string
			edit func(*metastore.Pack, *metastore.BlobLocation)
		}{
			{"zero pack id", func(p *metastore.Pack, b *metastore.BlobLocation) { p.ID = id.ID{}; b.PackID = id.ID{} }},
			{"no project", func(p *metastore.Pack, _ *metastore.BlobLocation) { p.ProjectID = "" }},
			{"unknown pack type", func(p *metastore.Pack, b *metastore.BlobLocation) { p.Type = 7; b.Type = 7 }},
			{"mixed types", func(_ *metastore.Pack, b *metastore.BlobLocation) { b.Type = metastore.BlobTree }},
			{"negative size", func(p *metastore.Pack, _ *metastore.BlobLocation) { p.Size = -1 }},
			{"zero blob id", func(_ *metastore.Pack, b *metastore.BlobLocation) { b.ID = id.ID{} }},
			{"other pack", func(_ *metastore.Pack, b *metastore.BlobLocation) { b.PackID = blobID("pack", 11) }},
			{"negative offset", func(_ *metastore.Pack, b *metastore.BlobLocation) { b.Offset = -1 }},
			{"negative length", func(_ *metastore.Pack, b *metastore.BlobLocation) { b.Length = -1 }},
			{"past the end", func(_ *metastore.Pack, b *metastore.BlobLocation) { b.Offset = 95 }},
		}
		for _, tt := range tests {
			t.Run(tt.name, func(t *testing.T) {
				p, bl := with(tt.edit)
				wantErr(t, "AddPack", s.AddPack(ctx, p, bl), metastore.ErrInvalid)
			})
		}
		same(t, "MissingBlobs", must[[]id.ID](t, "MissingBlobs")(s.MissingBlobs(ctx, p1.ID, []id.ID{d})), []id.ID{d})
	})
}

// Batch sizes: a pack of 10k blobs and queries of 20k ids (half of them
// unknown); 5000 files in one commit. Under the race detector: 5k blobs,
// 10k ids per query, 1500 files.
var (
	largeBatch  = pick(5000, 10000)
	largeCommit = pick(1500, 5000)
)

func pick(race, normal int) int {
	if RaceEnabled {
		return race
	}
	return normal
}

func testLargeBatches(t *testing.T, s metastore.Store) {
	ctx := t.Context()
	p := newProject(t, s, "large")
	n := largeBatch
	pack, blobs := makePack(p.ID, "big", metastore.BlobData, n)

	start := time.Now()
	wantErr(t, "AddPack of a large pack", s.AddPack(ctx, pack, blobs), nil)
	t.Logf("AddPack, %d blobs: %v", n, time.Since(start))
	wantErr(t, "AddPack of a large pack again", s.AddPack(ctx, pack, blobs), nil)

	// n known and n unknown ids, interleaved.
	query := make([]id.ID, 0, 2*n)
	var unknown []id.ID
	for i := range n {
		u := blobID("unknown", i)
		query = append(query, blobs[i].ID, u)
		unknown = append(unknown, u)
	}
	start = time.Now()
	missing := must[[]id.ID](t, "MissingBlobs")(s.MissingBlobs(ctx, p.ID, query))
	t.Logf("MissingBlobs, %d ids: %v", len(query), time.Since(start))
	if !slices.Equal(missing, unknown) {
		t.Fatalf("MissingBlobs returned %d ids, want the %d unknown ones in input order", len(missing), len(unknown))
	}

	start = time.Now()
	locs := must[map[id.ID]metastore.BlobLocation](t, "LocateBlobs")(s.LocateBlobs(ctx, p.ID, query))
	t.Logf("LocateBlobs, %d ids: %v", len(query), time.Since(start))
	if len(locs) != n {
		t.Fatalf("LocateBlobs found %d, want %d", len(locs), n)
	}
	for _, b := range blobs {
		if locs[b.ID] != b {
			t.Fatalf("LocateBlobs[%s] = %+v, want %+v", b.ID.Short(), locs[b.ID], b)
		}
	}

	// A second pack overlapping half of the first: only the new half is added.
	pack2, blobs2 := makePack(p.ID, "big2", metastore.BlobData, n)
	for i := range n / 2 {
		blobs2[i].ID = blobs[i].ID
	}
	wantErr(t, "AddPack overlapping", s.AddPack(ctx, pack2, blobs2), nil)
	locs = must[map[id.ID]metastore.BlobLocation](t, "LocateBlobs")(s.LocateBlobs(ctx, p.ID, []id.ID{blobs[0].ID, blobs2[n-1].ID}))
	if locs[blobs[0].ID].PackID != pack.ID || locs[blobs2[n-1].ID].PackID != pack2.ID {
		t.Fatalf("overlapping pack: locations %+v", locs)
	}
}

// ---- versions ----

func testVersions(t *testing.T, s metastore.Store) {
	ctx := t.Context()
	p := newProject(t, s, "versions")
	const nope = "prj_aaaaaaaaaaaaaaaaaaaa"

	t.Run("no versions yet", func(t *testing.T) {
		_, err := s.HeadVersion(ctx, p.ID)
		wantErr(t, "HeadVersion", err, metastore.ErrNotFound)
		if vs := must[[]metastore.Version](t, "ListVersions")(s.ListVersions(ctx, p.ID, metastore.ListOptions{})); len(vs) != 0 {
			t.Fatalf("ListVersions = %v", vs)
		}
		_, err = s.CommitVersion(ctx, metastore.Version{ProjectID: p.ID, Parent: 1, Root: blobID("root", 1), Kind: metastore.KindSync}, metastore.FileChanges{})
		wantErr(t, "CommitVersion on a parent that does not exist", err, metastore.ErrConflict)
	})

	before := now()
	in := metastore.Version{
		ProjectID: p.ID, Parent: 0, Root: blobID("root", 1), Kind: metastore.KindFlush, SandboxID: "sbx-1",
		Files: 3, Bytes: 12345, Pinned: true,
		Number: 42, CreatedAt: time.Unix(1, 0), // assigned by the store, not taken
	}
	v1 := must[metastore.Version](t, "CommitVersion")(s.CommitVersion(ctx, in, metastore.FileChanges{}))
	want := in
	want.Number, want.CreatedAt = 1, v1.CreatedAt
	same(t, "first version", v1, want)
	if v1.CreatedAt.Before(before) || v1.CreatedAt.After(now()) || v1.CreatedAt.Location() != time.UTC {
		t.Fatalf("CreatedAt = %v, want between %v and now, UTC", v1.CreatedAt, before)
	}
	same(t, "GetVersion(1)", must[metastore.Version](t, "GetVersion")(s.GetVersion(ctx, p.ID, 1)), v1)
	same(t, "HeadVersion", must[metastore.Version](t, "HeadVersion")(s.HeadVersion(ctx, p.ID)), v1)
	if got := must[metastore.Project](t, "GetProject")(s.GetProject(ctx, p.ID)); got.Head != 1 {
		t.Fatalf("project head = %d, want 1", got.Head)
	}

	t.Run("stale or future parent", func(t *testing.T) {
		for _, parent := range []int64{0, 2, 100} {
			_, err := s.CommitVersion(ctx, metastore.Version{ProjectID: p.ID, Parent: parent, Root: blobID("root", 9), Kind: metastore.KindSync}, metastore.FileChanges{})
			wantErr(t, fmt.Sprintf("CommitVersion on %d", parent), err, metastore.ErrConflict)
		}
		same(t, "HeadVersion", must[metastore.Version](t, "HeadVersion")(s.HeadVersion(ctx, p.ID)), v1)
		same(t, "versions", numbers(must[[]metastore.Version](t, "ListVersions")(s.ListVersions(ctx, p.ID, metastore.ListOptions{}))), []int64{1})
	})

	all := []metastore.Version{v1}
	for i := 2; i <= 5; i++ {
		kind := metastore.KindSync
		root := blobID("root", i)
		if i == 4 {
			kind, root = metastore.KindRollback, v1.Root // a rollback reuses an old root
		}
		v := must[metastore.Version](t, "CommitVersion")(s.CommitVersion(ctx, metastore.Version{
			ProjectID: p.ID, Parent: int64(i - 1), Root: root, Kind: kind, SandboxID: "sbx-2", Files: int64(i), Bytes: int64(i * 100),
		}, metastore.FileChanges{}))
		if v.Number != int64(i) || v.Parent != int64(i-1) || v.Root != root || v.Kind != kind {
			t.Fatalf("CommitVersion %d = %+v", i, v)
		}
		all = append(all, v)
	}
	newestFirst := slices.Clone(all)
	slices.Reverse(newestFirst)
	same(t, "HeadVersion", must[metastore.Version](t, "HeadVersion")(s.HeadVersion(ctx, p.ID)), all[4])

	t.Run("list", func(t *testing.T) {
		same(t, "ListVersions", must[[]metastore.Version](t, "ListVersions")(s.ListVersions(ctx, p.ID, metastore.ListOptions{})), newestFirst)
		tests := []struct {
			opts metastore.ListOptions
			want []int64
		}{
			{metastore.ListOptions{Limit: 2}, []int64{5, 4}},
			{metastore.ListOptions{Limit: 2, After: "4"}, []int64{3, 2}},
			{metastore.ListOptions{Limit: 2, After: "2"}, []int64{1}},
			{metastore.ListOptions{After: "1"}, []int64{}},
			{metastore.ListOptions{After: "100"}, []int64{5, 4, 3, 2, 1}},
			{metastore.ListOptions{Limit: 1000}, []int64{5, 4, 3, 2, 1}},
		}
		for _, tt := range tests {
			got := must[[]metastore.Version](t, "ListVersions")(s.ListVersions(ctx, p.ID, tt.opts))
			same(t, fmt.Sprintf("ListVersions(%+v)", tt.opts), numbers(got), tt.want)
		}
		// Paging through with Limit 2 yields every version once, newest first.
		var paged []metastore.Version
		opts := metastore.ListOptions{Limit: 2}
		for {
			page := must[[]metastore.Version](t, "ListVersions")(s.ListVersions(ctx, p.ID, opts))
			paged = append(paged, page...)
			if len(page) < opts.Limit {
				break
			}
			opts.After = strconv.FormatInt(page[len(page)-1].Number, 10)
		}
		same(t, "paged ListVersions", paged, newestFirst)
	})

	t.Run("errors", func(t *testing.T) {
		for _, tt := range []struct {
			name string
			err  error
			want error
		}{
			{"GetVersion 99", second(s.GetVersion(ctx, p.ID, 99)), metastore.ErrNotFound},
			{"GetVersion 0", second(s.GetVersion(ctx, p.ID, 0)), metastore.ErrNotFound},
			{"GetVersion unknown project", second(s.GetVersion(ctx, nope, 1)), metastore.ErrNotFound},
			{"GetVersion invalid UTF-8 project", second(s.GetVersion(ctx, "bad\xff", 1)), metastore.ErrNotFound},
			{"HeadVersion invalid UTF-8 project", second(s.HeadVersion(ctx, "bad\xff")), metastore.ErrNotFound},
			{"ListVersions invalid UTF-8 project", second(s.ListVersions(ctx, "bad\xff", metastore.ListOptions{})), metastore.ErrNotFound},
			{"HeadVersion unknown project", second(s.HeadVersion(ctx, nope)), metastore.ErrNotFound},
			{"ListVersions unknown project", second(s.ListVersions(ctx, nope, metastore.ListOptions{})), metastore.ErrNotFound},
			{"ListVersions bad After", second(s.ListVersions(ctx, p.ID, metastore.ListOptions{After: "v3"})), metastore.ErrInvalid},
			{"ListVersions negative After", second(s.ListVersions(ctx, p.ID, metastore.ListOptions{After: "-1"})), metastore.ErrInvalid},
			{"ListVersions negative Limit", second(s.ListVersions(ctx, p.ID, metastore.ListOptions{Limit: -1})), metastore.ErrInvalid},
		} {
			wantErr(t, tt.name, tt.err, tt.want)
		}
		good := metastore.Version{ProjectID: p.ID, Parent: 5, Root: blobID("root", 6), Kind: metastore.KindSync}
		for _, tt := range []struct {
			name string
			edit func(*metastore.Version)
			want error
		}{
			{"unknown project", func(v *metastore.Version) { v.ProjectID = nope; v.Parent = 0 }, metastore.ErrNotFound},
			{"no project", func(v *metastore.Version) { v.ProjectID = "" }, metastore.ErrInvalid},
			{"invalid UTF-8 project", func(v *metastore.Version) { v.ProjectID = "bad\xff" }, metastore.ErrInvalid},
			{"negative parent", func(v *metastore.Version) { v.Parent = -1 }, metastore.ErrInvalid},
			{"zero root", func(v *metastore.Version) { v.Root = id.ID{} }, metastore.ErrInvalid},
			{"no kind", func(v *metastore.Version) { v.Kind = "" }, metastore.ErrInvalid},
			{"unknown kind", func(v *metastore.Version) { v.Kind = "merge" }, metastore.ErrInvalid},
			{"negative files", func(v *metastore.Version) { v.Files = -1 }, metastore.ErrInvalid},
		} {
			v := good
			tt.edit(&v)
			_, err := s.CommitVersion(ctx, v, metastore.FileChanges{})
			wantErr(t, "CommitVersion "+tt.name, err, tt.want)
		}
		same(t, "HeadVersion", must[metastore.Version](t, "HeadVersion")(s.HeadVersion(ctx, p.ID)), all[4])
	})
}

func second[T any](_ T, err error) error { return err }

// ---- project files ----

func testProjectFiles(t *testing.T, s metastore.Store) {
	ctx := t.Context()
	p := newProject(t, s, "files")
	mtime := time.Date(2024, 5, 6, 7, 8, 9, 123456000, time.UTC)
	file := func(path string, size int64) metastore.ProjectFile {
		return metastore.ProjectFile{
			Path: path, Size: size, ContentType: "text/plain", Checksum: "blake3:" + blobID("content", int(size)).String(),
			CreatedAt: mtime, UpdatedAt: mtime,
		}
	}
	names := []string{
		"a.txt", "dir/b.txt", "dir/c.txt", "dir2/x", "dir/sub/deep.bin",
		"100%/a", "100_/b", "100x/c", "a_b", "aXb", "a%b", "a\\b",
		"é/1", "é/2", "ê", "z", "Z", "日本/ファイル.pdf", "\U0010FFFF/max", "\U0010FFFF\U0010FFFF",
	}
	var ups []metastore.ProjectFile
	for i, n := range names {
		ups = append(ups, file(n, int64(i)))
	}
	v1 := commit(t, s, p.ID, 0, metastore.FileChanges{Upsert: ups})

	sorted := slices.Clone(names)
	slices.Sort(sorted) // Go compares strings bytewise, as the stores must
	same(t, "all paths", paths(listAllFiles(t, s, p.ID, "")), sorted)

	t.Run("get", func(t *testing.T) {
		want := file("dir/b.txt", 1)
		want.ProjectID = p.ID
		same(t, "GetProjectFile", must[metastore.ProjectFile](t, "GetProjectFile")(s.GetProjectFile(ctx, p.ID, "dir/b.txt")), want)
		_, err := s.GetProjectFile(ctx, p.ID, "dir")
		wantErr(t, "GetProjectFile(dir)", err, metastore.ErrNotFound)
		_, err = s.GetProjectFile(ctx, "prj_aaaaaaaaaaaaaaaaaaaa", "a.txt")
		wantErr(t, "GetProjectFile in an unknown project", err, metastore.ErrNotFound)
		_, err = s.GetProjectFile(ctx, p.ID, "bad\xff")
		wantErr(t, "GetProjectFile of invalid UTF-8", err, metastore.ErrNotFound)
		_, err = s.GetProjectFile(ctx, "bad\xff", "a.txt")
		wantErr(t, "GetProjectFile in a project named in invalid UTF-8", err, metastore.ErrNotFound)
	})

	t.Run("prefix", func(t *testing.T) {
		for _, prefix := range []string{
			"dir/", "dir", "dir/sub/", "d",
			"100%", "100_", "a_", "a%", "a\\", "a", // '%', '_' and '\\' are not LIKE wildcards or escapes
			"é", "ê", "Z", "日本/", "\U0010FFFF", "\U0010FFFF\U0010FFFF", "nope", "a.txt/",
		} {
			var want []string
			for _, n := range sorted {
				if strings.HasPrefix(n, prefix) {
					want = append(want, n)
				}
			}
			got := paths(listAllFiles(t, s, p.ID, prefix))
			if len(got) != 0 || len(want) != 0 {
				same(t, fmt.Sprintf("ListProjectFiles(%q)", prefix), got, want)
			}
		}
		same(t, "ListProjectFiles(100%)", paths(listAllFiles(t, s, p.ID, "100%")), []string{"100%/a"})
		same(t, "ListProjectFiles(100_)", paths(listAllFiles(t, s, p.ID, "100_")), []string{"100_/b"})
	})

	t.Run("paging", func(t *testing.T) {
		for _, tt := range []struct {
			prefix string
			limit  int
		}{{"", 1}, {"", 3}, {"", 7}, {"dir", 2}, {"a", 2}} {
			var got []string
			opts := metastore.ListOptions{Limit: tt.limit}
			for pages := 0; ; pages++ {
				if pages > len(names) {
					t.Fatalf("paging %q by %d does not end", tt.prefix, tt.limit)
				}
				page := must[[]metastore.ProjectFile](t, "ListProjectFiles")(s.ListProjectFiles(ctx, p.ID, tt.prefix, opts))
				if len(page) > tt.limit {
					t.Fatalf("page of %d rows, limit %d", len(page), tt.limit)
				}
				got = append(got, paths(page)...)
				if len(page) < tt.limit {
					break
				}
				opts.After = page[len(page)-1].Path
			}
			same(t, fmt.Sprintf("paging %q by %d", tt.prefix, tt.limit), got, paths(listAllFiles(t, s, p.ID, tt.prefix)))
		}
		// After may be any string, not only a listed path.
		got := paths(must[[]metastore.ProjectFile](t, "ListProjectFiles")(s.ListProjectFiles(ctx, p.ID, "dir", metastore.ListOptions{After: "dir/bz"})))
		same(t, "After between paths", got, []string{"dir/c.txt", "dir/sub/deep.bin", "dir2/x"})
	})

	t.Run("listing errors", func(t *testing.T) {
		_, err := s.ListProjectFiles(ctx, p.ID, "", metastore.ListOptions{Limit: -1})
		wantErr(t, "negative limit", err, metastore.ErrInvalid)
		_, err = s.ListProjectFiles(ctx, p.ID, "bad\xff", metastore.ListOptions{})
		wantErr(t, "invalid UTF-8 prefix", err, metastore.ErrInvalid)
		_, err = s.ListProjectFiles(ctx, p.ID, "", metastore.ListOptions{After: "bad\xff"})
		wantErr(t, "invalid UTF-8 After", err, metastore.ErrInvalid)
		_, err = s.ListProjectFiles(ctx, "bad\xff", "", metastore.ListOptions{})
		wantErr(t, "project named in invalid UTF-8", err, metastore.ErrNotFound)
		_, err = s.ListProjectFiles(ctx, "prj_aaaaaaaaaaaaaaaaaaaa", "", metastore.ListOptions{})
		wantErr(t, "unknown project", err, metastore.ErrNotFound)
	})

	// v2 changes a file, deletes two (one of them never existed), adds one.
	later := mtime.Add(time.Hour)
	changed := file("a.txt", 999)
	changed.CreatedAt, changed.UpdatedAt = later, later
	v2 := commit(t, s, p.ID, v1.Number, metastore.FileChanges{
		Upsert: []metastore.ProjectFile{changed, file("new/file", 5)},
		Delete: []string{"dir/b.txt", "never/existed"},
	})

	t.Run("upsert and delete", func(t *testing.T) {
		got := must[metastore.ProjectFile](t, "GetProjectFile")(s.GetProjectFile(ctx, p.ID, "a.txt"))
		want := changed
		want.ProjectID, want.CreatedAt = p.ID, mtime // an update keeps the row's creation time
		same(t, "updated file", got, want)
		_, err := s.GetProjectFile(ctx, p.ID, "dir/b.txt")
		wantErr(t, "deleted file", err, metastore.ErrNotFound)
		same(t, "dir/", paths(listAllFiles(t, s, p.ID, "dir/")), []string{"dir/c.txt", "dir/sub/deep.bin"})
		same(t, "new/", paths(listAllFiles(t, s, p.ID, "new/")), []string{"new/file"})
	})

	snapshot := listAllFiles(t, s, p.ID, "")

	t.Run("conflict changes nothing", func(t *testing.T) {
		_, err := s.CommitVersion(ctx, metastore.Version{ProjectID: p.ID, Parent: v1.Number, Root: blobID("root", 99), Kind: metastore.KindSync},
			metastore.FileChanges{Upsert: []metastore.ProjectFile{file("a.txt", 1), file("conflict", 1)}, Delete: []string{"z", "dir/c.txt"}})
		wantErr(t, "CommitVersion on a stale parent", err, metastore.ErrConflict)
		same(t, "files after a conflict", listAllFiles(t, s, p.ID, ""), snapshot)
		same(t, "head after a conflict", must[metastore.Version](t, "HeadVersion")(s.HeadVersion(ctx, p.ID)), v2)
	})

	t.Run("invalid changes change nothing", func(t *testing.T) {
		for _, ch := range []metastore.FileChanges{
			{Upsert: []metastore.ProjectFile{file("ok", 1), file("../escape", 1)}},
			{Upsert: []metastore.ProjectFile{file("/absolute", 1)}},
			{Upsert: []metastore.ProjectFile{file("a//b", 1)}},
			{Upsert: []metastore.ProjectFile{file("a/./b", 1)}},
			{Upsert: []metastore.ProjectFile{file("trailing/", 1)}},
			{Upsert: []metastore.ProjectFile{file("", 1)}},
			{Upsert: []metastore.ProjectFile{file("nul\x00", 1)}},
			{Upsert: []metastore.ProjectFile{file("bad\xff", 1)}},
			{Upsert: []metastore.ProjectFile{{Path: "neg", Size: -1}}},
			{Upsert: []metastore.ProjectFile{{ProjectID: "prj_aaaaaaaaaaaaaaaaaaaa", Path: "other", Size: 1}}},
			{Delete: []string{"ok", ""}},
		} {
			_, err := s.CommitVersion(ctx, metastore.Version{ProjectID: p.ID, Parent: v2.Number, Root: blobID("root", 98), Kind: metastore.KindSync}, ch)
			wantErr(t, fmt.Sprintf("CommitVersion with %+v", ch), err, metastore.ErrInvalid)
		}
		same(t, "files after invalid commits", listAllFiles(t, s, p.ID, ""), snapshot)
		same(t, "head after invalid commits", must[metastore.Version](t, "HeadVersion")(s.HeadVersion(ctx, p.ID)), v2)
	})

	t.Run("same path deleted and upserted", func(t *testing.T) {
		before := now()
		f := metastore.ProjectFile{Path: "z", Size: 77} // zero times: the commit's time
		v := commit(t, s, p.ID, v2.Number, metastore.FileChanges{Upsert: []metastore.ProjectFile{file("z", 1), f}, Delete: []string{"z", "Z"}})
		got := must[metastore.ProjectFile](t, "GetProjectFile")(s.GetProjectFile(ctx, p.ID, "z"))
		if got.Size != 77 || !got.UpdatedAt.Equal(v.CreatedAt) || !got.CreatedAt.Equal(mtime) || v.CreatedAt.Before(before) {
			t.Fatalf("z = %+v, want size 77 (last upsert wins), updated at the commit time %v, created at %v", got, v.CreatedAt, mtime)
		}
		_, err := s.GetProjectFile(ctx, p.ID, "Z")
		wantErr(t, "deleted Z", err, metastore.ErrNotFound)

		// user_uploaded is sticky: a later sync of the file does not clear it.
		up := file("upload.pdf", 3)
		up.UserUploaded = true
		v = commit(t, s, p.ID, v.Number, metastore.FileChanges{Upsert: []metastore.ProjectFile{up}})
		up.UserUploaded = false
		up.Size = 4
		commit(t, s, p.ID, v.Number, metastore.FileChanges{Upsert: []metastore.ProjectFile{up}})
		got = must[metastore.ProjectFile](t, "GetProjectFile")(s.GetProjectFile(ctx, p.ID, "upload.pdf"))
		if !got.UserUploaded || got.Size != 4 {
			t.Fatalf("upload.pdf = %+v, want size 4 and still user-uploaded", got)
		}
	})

	t.Run("large commit", func(t *testing.T) {
		head := must[metastore.Version](t, "HeadVersion")(s.HeadVersion(ctx, p.ID))
		var many []metastore.ProjectFile
		var del []string
		for i := range largeCommit {
			many = append(many, file(fmt.Sprintf("bulk/%05d", i), int64(i)))
			del = append(del, fmt.Sprintf("bulk/%05d", i))
		}
		v := commit(t, s, p.ID, head.Number, metastore.FileChanges{Upsert: many})
		if got := listAllFiles(t, s, p.ID, "bulk/"); len(got) != 1000 || got[999].Path != "bulk/00999" {
			t.Fatalf("first page of bulk/: %d rows", len(got))
		}
		got := must[[]metastore.ProjectFile](t, "ListProjectFiles")(s.ListProjectFiles(ctx, p.ID, "bulk/", metastore.ListOptions{Limit: 10000}))
		if len(got) != largeCommit {
			t.Fatalf("bulk/: %d rows, want %d", len(got), largeCommit)
		}
		commit(t, s, p.ID, v.Number, metastore.FileChanges{Delete: del})
		if got := listAllFiles(t, s, p.ID, "bulk/"); len(got) != 0 {
			t.Fatalf("bulk/ after deleting: %d rows", len(got))
		}
	})
}

// ---- concurrency ----

// testConcurrentCommits races N committers on the same parent, several
// rounds: exactly one wins each round, the others get ErrConflict, and only
// the winner's changes are visible.
func testConcurrentCommits(t *testing.T, s metastore.Store) {
	ctx := t.Context()
	p := newProject(t, s, "race")
	const n, rounds = 12, 5
	var parent int64
	for round := range rounds {
		start := make(chan struct{})
		errs := make([]error, n)
		var wg sync.WaitGroup
		for i := range n {
			wg.Go(func() {
				<-start
				_, errs[i] = s.CommitVersion(ctx, metastore.Version{
					ProjectID: p.ID, Parent: parent, Root: blobID(fmt.Sprintf("root-%d", round), i), Kind: metastore.KindSync,
					SandboxID: strconv.Itoa(i),
				}, metastore.FileChanges{Upsert: []metastore.ProjectFile{{Path: fmt.Sprintf("r%d/w%02d", round, i), Size: int64(i)}}})
			})
		}
		close(start)
		wg.Wait()
		winner := -1
		for i, err := range errs {
			switch {
			case err == nil && winner >= 0:
				t.Fatalf("round %d: committers %d and %d both won", round, winner, i)
			case err == nil:
				winner = i
			case !errors.Is(err, metastore.ErrConflict):
				t.Fatalf("round %d: committer %d: %v, want nil or ErrConflict", round, i, err)
			}
		}
		if winner < 0 {
			t.Fatalf("round %d: nobody won", round)
		}
		head := must[metastore.Version](t, "HeadVersion")(s.HeadVersion(ctx, p.ID))
		if head.Number != parent+1 || head.Parent != parent || head.SandboxID != strconv.Itoa(winner) {
			t.Fatalf("round %d: head %+v, want number %d by committer %d", round, head, parent+1, winner)
		}
		same(t, fmt.Sprintf("round %d files", round), paths(listAllFiles(t, s, p.ID, fmt.Sprintf("r%d/", round))),
			[]string{fmt.Sprintf("r%d/w%02d", round, winner)})
		parent = head.Number
	}
	same(t, "versions", len(must[[]metastore.Version](t, "ListVersions")(s.ListVersions(ctx, p.ID, metastore.ListOptions{}))), rounds)
}

// testConcurrentProjects commits to several projects at once while readers
// query them: nothing may fail (no SQLITE_BUSY, no deadlock).
func testConcurrentProjects(t *testing.T, s metastore.Store) {
	ctx := t.Context()
	const projects, commits = 6, 15
	ids := make([]string, projects)
	for i := range ids {
		ids[i] = newProject(t, s, fmt.Sprintf("busy-%d", i)).ID
	}
	errc := make(chan error, 2*projects)
	var wg sync.WaitGroup
	for i, pid := range ids {
		wg.Go(func() { // a writer: commits and packs
			for c := range commits {
				pack, blobs := makePack(pid, fmt.Sprintf("w%d-%d", i, c), metastore.BlobData, 50)
				if err := s.AddPack(ctx, pack, blobs); err != nil {
					errc <- fmt.Errorf("AddPack: %w", err)
					return
				}
				if _, err := s.CommitVersion(ctx, metastore.Version{ProjectID: pid, Parent: int64(c), Root: blobID(pid, c), Kind: metastore.KindSync},
					metastore.FileChanges{Upsert: []metastore.ProjectFile{{Path: fmt.Sprintf("f/%03d", c), Size: 1}}}); err != nil {
					errc <- fmt.Errorf("CommitVersion: %w", err)
					return
				}
			}
		})
		wg.Go(func() { // a reader
			for c := range commits {
				if _, err := s.MissingBlobs(ctx, pid, []id.ID{blobID(fmt.Sprintf("w%d-%d", i, c), 0)}); err != nil {
					errc <- fmt.Errorf("MissingBlobs: %w", err)
					return
				}
				if _, err := s.ListProjectFiles(ctx, pid, "f/", metastore.ListOptions{}); err != nil {
					errc <- fmt.Errorf("ListProjectFiles: %w", err)
					return
				}
				if _, err := s.ListVersions(ctx, pid, metastore.ListOptions{Limit: 3}); err != nil {
					errc <- fmt.Errorf("ListVersions: %w", err)
					return
				}
			}
		})
	}
	wg.Wait()
	close(errc)
	for err := range errc {
		t.Error(err)
	}
	for _, pid := range ids {
		if p := must[metastore.Project](t, "GetProject")(s.GetProject(ctx, pid)); p.Head != commits {
			t.Errorf("project %s: head %d, want %d", pid, p.Head, commits)
		}
		if n := len(listAllFiles(t, s, pid, "f/")); n != commits {
			t.Errorf("project %s: %d files, want %d", pid, n, commits)
		}
	}
}

// ---- context ----

func testContextCancellation(t *testing.T, s metastore.Store) {
	p := newProject(t, s, "ctx")
	v1 := commit(t, s, p.ID, 0, metastore.FileChanges{Upsert: []metastore.ProjectFile{{Path: "keep", Size: 1}}})
	pack, blobs := makePack(p.ID, "ctx", metastore.BlobData, 3)

	canceled, cancel := context.WithCancel(t.Context())
	cancel()
	expired, cancel2 := context.WithDeadline(t.Context(), time.Now().Add(-time.Second))
	defer cancel2()

	for _, c := range []struct {
		name string
		ctx  context.Context
		want error
	}{{"canceled", canceled, context.Canceled}, {"deadline", expired, context.DeadlineExceeded}} {
		ctx := c.ctx
		calls := []struct {
			name string
			call func() error
		}{
			{"CreateProject", func() error { _, err := s.CreateProject(ctx, "never"); return err }},
			{"GetProject", func() error { _, err := s.GetProject(ctx, p.ID); return err }},
			{"ListProjects", func() error { _, err := s.ListProjects(ctx); return err }},
			{"CreateToken", func() error {
				return s.CreateToken(ctx, metastore.Token{Hash: blobID("tok", 1).String(), Kind: metastore.TokenAdmin})
			}},
			{"GetToken", func() error { _, err := s.GetToken(ctx, blobID("tok", 1).String()); return err }},
			{"MissingBlobs", func() error { _, err := s.MissingBlobs(ctx, p.ID, []id.ID{blobs[0].ID}); return err }},
			{"AddPack", func() error { return s.AddPack(ctx, pack, blobs) }},
			{"LocateBlobs", func() error { _, err := s.LocateBlobs(ctx, p.ID, []id.ID{blobs[0].ID}); return err }},
			{"CommitVersion", func() error {
				_, err := s.CommitVersion(ctx, metastore.Version{ProjectID: p.ID, Parent: 1, Root: blobID("root", 2), Kind: metastore.KindSync},
					metastore.FileChanges{Delete: []string{"keep"}})
				return err
			}},
			{"GetVersion", func() error { _, err := s.GetVersion(ctx, p.ID, 1); return err }},
			{"HeadVersion", func() error { _, err := s.HeadVersion(ctx, p.ID); return err }},
			{"ListVersions", func() error { _, err := s.ListVersions(ctx, p.ID, metastore.ListOptions{}); return err }},
			{"ListProjectFiles", func() error { _, err := s.ListProjectFiles(ctx, p.ID, "", metastore.ListOptions{}); return err }},
			{"GetProjectFile", func() error { _, err := s.GetProjectFile(ctx, p.ID, "keep"); return err }},
			{"DeleteProject", func() error { return s.DeleteProject(ctx, p.ID) }},
			{"RevokeProjectTokens", func() error { _, err := s.RevokeProjectTokens(ctx, p.ID); return err }},
			{"PackEpoch", func() error { _, err := s.PackEpoch(ctx, p.ID); return err }},
			{"ListPacks", func() error { _, err := s.ListPacks(ctx, p.ID, metastore.ListOptions{}); return err }},
			{"CondemnPacks", func() error { _, err := s.CondemnPacks(ctx, p.ID, []id.ID{pack.ID}, time.Now()); return err }},
			{"UncondemnPacks", func() error { _, err := s.UncondemnPacks(ctx, p.ID, []id.ID{pack.ID}); return err }},
			{"MoveBlobs", func() error { _, err := s.MoveBlobs(ctx, pack, blobs, nil); return err }},
			{"DeletePacks", func() error { _, err := s.DeletePacks(ctx, p.ID, []metastore.Pack{pack}); return err }},
			{"DropPacks", func() error { return s.DropPacks(ctx, p.ID, []id.ID{pack.ID}) }},
			{"GetRetention", func() error { _, err := s.GetRetention(ctx, p.ID); return err }},
			{"SetRetention", func() error { return s.SetRetention(ctx, p.ID, metastore.Retention{KeepLast: 1}) }},
			{"SetPinned", func() error { return s.SetPinned(ctx, p.ID, 1, true) }},
			{"DeleteVersions", func() error { _, err := s.DeleteVersions(ctx, p.ID, []int64{1}); return err }},
		}
		for _, call := range calls {
			wantErr(t, c.name+" "+call.name, call.call(), c.want)
		}
	}

	// Nothing was written, and the store still works.
	ctx := t.Context()
	same(t, "HeadVersion", must[metastore.Version](t, "HeadVersion")(s.HeadVersion(ctx, p.ID)), v1)
	same(t, "files", paths(listAllFiles(t, s, p.ID, "")), []string{"keep"})
	_, err := s.GetToken(ctx, blobID("tok", 1).String())
	wantErr(t, "GetToken", err, metastore.ErrNotFound)
	same(t, "MissingBlobs", len(must[[]id.ID](t, "MissingBlobs")(s.MissingBlobs(ctx, p.ID, []id.ID{blobs[0].ID}))), 1)
	same(t, "retention", must[metastore.Retention](t, "GetRetention")(s.GetRetention(ctx, p.ID)), metastore.DefaultRetention())
	if v := must[metastore.Version](t, "GetVersion")(s.GetVersion(ctx, p.ID, 1)); v.Pinned {
		t.Fatal("SetPinned with a canceled context pinned the version")
	}
	for _, lp := range must[[]metastore.Project](t, "ListProjects")(s.ListProjects(ctx)) {
		if lp.Name == "never" {
			t.Fatal("CreateProject with a canceled context created the project")
		}
	}
}
