package gc_test

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/sandkeep/sandkeep/internal/gc"
	"github.com/sandkeep/sandkeep/internal/id"
	"github.com/sandkeep/sandkeep/internal/metastore"
	"github.com/sandkeep/sandkeep/internal/repo"
)

func TestSelect(t *testing.T) {
	now := time.Date(2025, 6, 1, 12, 0, 0, 0, time.UTC)
	day := 24 * time.Hour
	// Versions 1..6, version n created (7-n) days ago; 2 is pinned.
	var vs []metastore.Version
	for n := int64(1); n <= 6; n++ {
		vs = append(vs, metastore.Version{Number: n, CreatedAt: now.Add(-time.Duration(7-n) * day), Pinned: n == 2})
	}
	tests := []struct {
		name     string
		versions []metastore.Version
		policy   metastore.Retention
		keep     []int64
	}{
		{"default keeps everything recent", vs, metastore.DefaultRetention(), []int64{6, 5, 4, 3, 2, 1}},
		{"keep last 1: head and pinned", vs, metastore.Retention{KeepLast: 1}, []int64{6, 2}},
		{"keep nothing still keeps head and pinned", vs, metastore.Retention{}, []int64{6, 2}},
		{"keep last 3", vs, metastore.Retention{KeepLast: 3}, []int64{6, 5, 4, 2}},
		{"keep last more than there are", vs, metastore.Retention{KeepLast: 100}, []int64{6, 5, 4, 3, 2, 1}},
		{"keep within 2.5 days", vs, metastore.Retention{KeepWithin: 60 * time.Hour}, []int64{6, 5, 2}},
		{"keep within is exclusive at the bound", vs, metastore.Retention{KeepWithin: 2 * day}, []int64{6, 2}},
		{"rules add up", vs, metastore.Retention{KeepLast: 2, KeepWithin: 4*day + time.Hour}, []int64{6, 5, 4, 3, 2}},
		{"only the head", vs[5:], metastore.Retention{}, []int64{6}},
		{"no versions", nil, metastore.Retention{KeepLast: 5}, nil},
		{"unordered input, numbers with gaps", []metastore.Version{vs[2], vs[5], vs[0], vs[3]}, metastore.Retention{KeepLast: 2}, []int64{6, 4}},
		{"a version from the future is young", []metastore.Version{{Number: 1, CreatedAt: now.Add(time.Hour)}, {Number: 2, CreatedAt: now.Add(-time.Hour)}},
			metastore.Retention{KeepWithin: time.Minute}, []int64{2, 1}},
		{"an old pinned head", []metastore.Version{{Number: 9, CreatedAt: now.Add(-100 * day), Pinned: true}}, metastore.Retention{}, []int64{9}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			keep, drop := gc.Select(tt.versions, tt.policy, now)
			var got, dropped []int64
			for _, v := range keep {
				got = append(got, v.Number)
			}
			for _, v := range drop {
				dropped = append(dropped, v.Number)
			}
			if !slices.Equal(got, tt.keep) {
				t.Fatalf("keep %v, want %v", got, tt.keep)
			}
			if len(got)+len(dropped) != len(tt.versions) || !slices.IsSortedFunc(dropped, func(a, b int64) int { return int(b - a) }) {
				t.Fatalf("drop %v: not the rest, newest first", dropped)
			}
			for _, n := range dropped {
				if slices.Contains(got, n) {
					t.Fatalf("version %d both kept and dropped", n)
				}
			}
		})
	}
}

// TestCondemnThenDeleteAfterGrace: a dead pack is condemned by one run and
// deleted only by a run at least Grace later.
func TestCondemnThenDeleteAfterGrace(t *testing.T) {
	f := newFixture(t)
	f.setRetention(1, 0)
	big, keep, b := randomContent(1, 200<<10), "kept small file", randomContent(2, 50<<10)
	v1 := f.commit(map[string]string{"a": big, "keep": keep})
	v2 := f.commit(map[string]string{"keep": keep, "b": b})
	want2 := f.read(v2)
	bigPack, _ := f.locate(sum(big))
	tree1, _ := f.locate(v1.Root)
	if _, ok := f.objects()[repo.VersionKey(f.pid, 1)]; !ok {
		t.Fatal("no version record for version 1")
	}
	epoch0, _ := f.meta.PackEpoch(f.ctx, f.pid)

	const grace = time.Hour
	rep := f.gc(gc.Options{Grace: grace, MergeBelow: -1})
	if rep.VersionsDeleted != 1 || rep.PacksDeleted != 0 || rep.PacksCondemned != 2 || rep.PacksRepacked != 1 || rep.PacksWritten != 1 {
		t.Fatalf("first run: %+v; want version 1 deleted, pack 1 repacked (keep moved out), its tree pack condemned", rep)
	}
	if slices.Contains(f.versions(), 1) {
		t.Fatal("version 1 still listed")
	}
	if _, ok := f.objects()[repo.VersionKey(f.pid, 1)]; ok {
		t.Fatal("version 1's record is still in the bucket")
	}
	condemnedAt := f.clock.Now()
	for _, pid := range []id.ID{bigPack.PackID, tree1.PackID} {
		p, ok := f.pack(pid)
		if !ok || !p.CondemnedAt.Equal(condemnedAt) || p.Deleting {
			t.Fatalf("pack %s = %+v, want condemned at %v", pid.Short(), p, condemnedAt)
		}
		if _, ok := f.objects()[repo.PackKey(f.pid, pid)]; !ok {
			t.Fatalf("condemned pack %s already gone from the bucket", pid.Short())
		}
	}
	if l, _ := f.locate(sum(keep)); l.PackID == bigPack.PackID {
		t.Fatal("the live blob was not moved out of the repacked pack")
	}
	sameFiles(t, "version 2 after the first run", f.read(v2), want2)

	// Half the grace period later: nothing is deleted.
	f.clock.Advance(grace / 2)
	rep = f.gc(gc.Options{Grace: grace, MergeBelow: -1})
	if rep.PacksDeleted != 0 || rep.PacksCondemned != 0 || rep.BytesCondemned == 0 {
		t.Fatalf("run within the grace period: %+v", rep)
	}
	// The grace period after the condemnation: both go.
	f.clock.Advance(grace / 2)
	before := f.objects()
	rep = f.gc(gc.Options{Grace: grace, MergeBelow: -1})
	if rep.PacksDeleted != 2 || rep.BytesCondemned != 0 {
		t.Fatalf("run after the grace period: %+v", rep)
	}
	after := f.objects()
	if freed := packBytes(before) - packBytes(after); freed != rep.BytesFreed {
		t.Fatalf("bucket shrank by %d bytes, report says %d freed", freed, rep.BytesFreed)
	}
	if rep.BytesAfter != packBytes(after) || rep.BytesBefore != packBytes(before) {
		t.Fatalf("report bytes %d -> %d, bucket %d -> %d", rep.BytesBefore, rep.BytesAfter, packBytes(before), packBytes(after))
	}
	for _, pid := range []id.ID{bigPack.PackID, tree1.PackID} {
		if _, ok := f.pack(pid); ok {
			t.Fatalf("pack %s still listed", pid.Short())
		}
		if _, err := f.store.Stat(f.ctx, repo.PackKey(f.pid, pid)); !isNotFound(err) {
			t.Fatalf("pack %s object: %v, want not found", pid.Short(), err)
		}
	}
	if _, ok := f.locate(sum(big)); ok {
		t.Fatal("the dead blob is still indexed")
	}
	if e, _ := f.meta.PackEpoch(f.ctx, f.pid); e != epoch0+1 {
		t.Fatalf("pack epoch %d, want %d", e, epoch0+1)
	}
	sameFiles(t, "version 2 at the end", f.read(v2), want2)
	// Nothing left to do.
	f.clock.Advance(grace)
	if rep := f.gc(gc.Options{Grace: grace, MergeBelow: -1}); rep.PacksDeleted+rep.PacksCondemned+rep.PacksRepacked+rep.VersionsDeleted != 0 {
		t.Fatalf("idle run: %+v", rep)
	}
}

// TestYoungPacksAreLeftAlone: packs written less than Grace ago are not
// condemned even when nothing references them (an agent's commit may be on
// its way).
func TestYoungPacksAreLeftAlone(t *testing.T) {
	f := newFixture(t)
	f.commit(map[string]string{"a": "aaa"})
	orphan := f.uploadPack(randomContent(3, 10<<10)) // uploaded, never committed
	f.clock = newClock(time.Now())                   // real time: everything is young
	if rep := f.gc(gc.Options{Grace: time.Hour}); rep.PacksCondemned != 0 {
		t.Fatalf("young packs condemned: %+v", rep)
	}
	f.clock.Advance(2 * time.Hour)
	rep := f.gc(gc.Options{Grace: time.Hour})
	if rep.PacksCondemned != 1 {
		t.Fatalf("old orphan pack not condemned: %+v", rep)
	}
	if p, _ := f.pack(orphan); p.CondemnedAt.IsZero() {
		t.Fatalf("orphan pack = %+v", p)
	}
}

// TestRescueCondemnedLivePack: a condemned pack that holds a blob of a kept
// version (a run raced with the commit that referenced it) is un-condemned,
// never deleted, whatever its age.
func TestRescueCondemnedLivePack(t *testing.T) {
	f := newFixture(t)
	content := randomContent(4, 30<<10)
	v1 := f.commit(map[string]string{"a": content})
	l, _ := f.locate(sum(content))
	if _, err := f.meta.CondemnPacks(f.ctx, f.pid, []id.ID{l.PackID}, f.clock.Now().Add(-48*time.Hour)); err != nil {
		t.Fatal(err)
	}
	rep := f.gc(gc.Options{Grace: time.Hour})
	if rep.PacksRescued != 1 || rep.PacksDeleted != 0 {
		t.Fatalf("report %+v, want the pack rescued", rep)
	}
	if p, _ := f.pack(l.PackID); !p.CondemnedAt.IsZero() || p.Deleting {
		t.Fatalf("pack after the run = %+v, want live", p)
	}
	sameFiles(t, "version 1", f.read(v1), map[string]string{"a": content})
}

// TestCommitReferencingCondemnedBlob: the hook in repo. A blob held only in
// a condemned pack counts as missing for uploads; a commit whose tree names
// it without uploading it is refused; uploading it again moves it (a new
// pack) or un-condemns its pack (the same pack).
func TestCommitReferencingCondemnedBlob(t *testing.T) {
	f := newFixture(t)
	f.setRetention(1, 0)
	a, x := randomContent(5, 100<<10), "small x"
	f.commit(map[string]string{"a": a, "x": x})
	f.commit(map[string]string{"x": x})
	rep := f.gc(gc.Options{Grace: time.Hour})
	if rep.PacksCondemned == 0 {
		t.Fatalf("nothing condemned: %+v", rep)
	}
	la, ok := f.locate(sum(a))
	if p, _ := f.pack(la.PackID); !ok || p.CondemnedAt.IsZero() {
		t.Fatalf("a's pack = %+v, want condemned", p)
	}
	missing, err := f.r.MissingBlobs(f.ctx, f.pid, []id.ID{sum(a), sum(x)})
	if err != nil || !slices.Equal(missing, []id.ID{sum(a)}) {
		t.Fatalf("MissingBlobs = %v, %v; want a (held only in a condemned pack)", missing, err)
	}

	// A client that names a without uploading it: the trees are accepted
	// (a is indexed) but the commit is not.
	head := f.versions()[0]
	root := f.putTrees(map[string]string{"a": a, "x": x})
	_, err = f.commitRoot(root)
	if !errors.Is(err, repo.ErrMissing) || !errors.Is(err, metastore.ErrMissing) {
		t.Fatalf("commit naming a condemned blob: %v, want ErrMissing", err)
	}
	if f.versions()[0] != head {
		t.Fatal("the refused commit moved the head")
	}

	// The agent's way: a is reported missing, uploaded again with another
	// chunk (a new pack), and moves there.
	other := "another new file"
	v3 := f.commit(map[string]string{"a": a, "x": x, "new": other})
	if l, _ := f.locate(sum(a)); l.PackID == la.PackID {
		t.Fatal("a was not moved to the new pack")
	}
	f.clock.Advance(time.Hour)
	f.gc(gc.Options{Grace: time.Hour})
	if _, ok := f.pack(la.PackID); ok {
		t.Fatal("the condemned pack survived its grace period")
	}
	sameFiles(t, "version 3", f.read(v3), map[string]string{"a": a, "x": x, "new": other})

	// Again, but the same pack comes back: a alone, uploaded alone twice.
	f.commit(map[string]string{"x": x})
	f.clock.Advance(time.Hour)
	f.gc(gc.Options{Grace: time.Hour})
	f.commit(map[string]string{"x": x, "new": other}) // drop a's new pack's other blob too
	f.clock.Advance(time.Hour)
	f.gc(gc.Options{Grace: time.Hour})
	solo := f.uploadPack(a) // a's own pack, as an agent would make it
	f.commit(map[string]string{"x": x})
	f.clock.Advance(time.Hour)
	f.gc(gc.Options{Grace: time.Hour})
	if p, ok := f.pack(solo); !ok || p.CondemnedAt.IsZero() {
		t.Fatalf("a's pack = %+v (listed %v), want condemned", p, ok)
	}
	v := f.commit(map[string]string{"x": x, "a": a}) // uploads the very same pack again
	if p, _ := f.pack(solo); !p.CondemnedAt.IsZero() {
		t.Fatalf("re-uploaded pack = %+v, want un-condemned", p)
	}
	f.clock.Advance(time.Hour)
	f.gc(gc.Options{Grace: time.Hour})
	sameFiles(t, "last version", f.read(v), map[string]string{"a": a, "x": x})
}

// TestRepack: the live blobs of a mostly dead pack are copied into a new
// pack, verified, re-indexed, and the old pack condemned then deleted.
func TestRepack(t *testing.T) {
	f := newFixture(t)
	f.setRetention(1, 0)
	files := map[string]string{"big": randomContent(6, 600<<10)}
	small := map[string]string{}
	for i := range 5 {
		p, c := fmt.Sprintf("dir/s%d", i), randomContent(uint64(10+i), 3000+i)
		files[p], small[p] = c, c
	}
	f.commit(files)
	old, _ := f.locate(sum(files["dir/s0"]))
	v2 := f.commit(small)

	rep := f.gc(gc.Options{Grace: time.Hour})
	if rep.PacksRepacked < 1 || rep.PacksWritten < 1 {
		t.Fatalf("report %+v, want a repack", rep)
	}
	var moved id.ID
	for p, c := range small {
		l, ok := f.locate(sum(c))
		if !ok || l.PackID == old.PackID {
			t.Fatalf("%s still indexed in the old pack", p)
		}
		if moved.IsZero() {
			moved = l.PackID
		} else if l.PackID != moved {
			t.Fatalf("the live blobs went to different packs")
		}
	}
	np, ok := f.pack(moved)
	if !ok || !np.CondemnedAt.IsZero() || np.Type != metastore.BlobData {
		t.Fatalf("new pack = %+v", np)
	}
	if size := f.objects()[repo.PackKey(f.pid, moved)]; size != np.Size || size > 20000 {
		t.Fatalf("new pack is %d bytes in the store, %d indexed", size, np.Size)
	}
	sameFiles(t, "version 2 after the repack", f.read(v2), small)
	// The old pack holds the dead blob only now, and goes after Grace.
	f.clock.Advance(time.Hour)
	f.gc(gc.Options{Grace: time.Hour})
	if _, ok := f.pack(old.PackID); ok {
		t.Fatal("the repacked pack survived")
	}
	sameFiles(t, "version 2 at the end", f.read(v2), small)
	if total := packBytes(f.objects()); total > 40000 {
		t.Fatalf("%d bytes of packs left for %d bytes of files", total, 5*3002)
	}
}

// TestRepackKeepsPackWithCorruptBlob: a live blob that fails verification
// is not copied, and its pack is not condemned.
func TestRepackKeepsPackWithCorruptBlob(t *testing.T) {
	f := newFixture(t)
	f.setRetention(1, 0)
	good, bad := randomContent(20, 4000), randomContent(21, 5000)
	f.commit(map[string]string{"big": randomContent(22, 500<<10), "good": good, "bad": bad})
	f.commit(map[string]string{"good": good, "bad": bad})
	l, _ := f.locate(sum(bad))
	key := repo.PackKey(f.pid, l.PackID)
	rc, err := f.store.Get(f.ctx, key, 0, -1)
	if err != nil {
		t.Fatal(err)
	}
	data, _ := io.ReadAll(rc)
	rc.Close()
	data[l.Offset+l.Length/2] ^= 0x40
	if err := f.store.Put(f.ctx, key, bytes.NewReader(data), int64(len(data))); err != nil {
		t.Fatal(err)
	}
	rep := f.gc(gc.Options{Grace: time.Hour})
	if rep.BlobsCorrupt != 1 {
		t.Fatalf("report %+v, want one corrupt blob", rep)
	}
	if p, _ := f.pack(l.PackID); !p.CondemnedAt.IsZero() {
		t.Fatalf("pack with a corrupt live blob condemned: %+v", p)
	}
	if lg, _ := f.locate(sum(good)); lg.PackID == l.PackID {
		t.Fatal("the good blob was not moved")
	}
	if lb, _ := f.locate(sum(bad)); lb.PackID != l.PackID {
		t.Fatal("the corrupt blob was moved")
	}
}

// TestMergeSmallPacks: live small packs are merged into one.
func TestMergeSmallPacks(t *testing.T) {
	f := newFixture(t)
	files := map[string]string{}
	var last metastore.Version
	for i := range 6 {
		files[fmt.Sprintf("f%d", i)] = randomContent(uint64(30+i), 2000)
		last = f.commit(files)
	}
	dataPacks := func() int {
		n := 0
		for _, p := range f.packs() {
			if p.Type == metastore.BlobData && p.CondemnedAt.IsZero() {
				n++
			}
		}
		return n
	}
	if n := dataPacks(); n != 6 {
		t.Fatalf("%d data packs before, want 6", n)
	}
	rep := f.gc(gc.Options{Grace: time.Hour})
	if n := dataPacks(); n != 1 || rep.PacksRepacked < 6 {
		t.Fatalf("%d live data packs after merging, report %+v", n, rep)
	}
	f.clock.Advance(time.Hour)
	f.gc(gc.Options{Grace: time.Hour})
	sameFiles(t, "head", f.read(last), files)
	// Merging off: nothing happens.
	g := newFixture(t)
	for i := range 3 {
		g.commit(map[string]string{fmt.Sprintf("f%d", i): "x" + fmt.Sprint(i)})
	}
	if rep := g.gc(gc.Options{Grace: time.Hour, MergeBelow: -1}); rep.PacksRepacked != 0 {
		t.Fatalf("merging disabled, report %+v", rep)
	}
}

// state is everything a run could change.
type state struct {
	versions []int64
	packs    []metastore.Pack
	objects  map[string]int64
	locs     map[id.ID]metastore.BlobLocation
	epoch    int64
}

func (f *fixture) state(blobs []id.ID) state {
	f.t.Helper()
	locs, err := f.meta.LocateBlobs(f.ctx, f.pid, blobs)
	if err != nil {
		f.t.Fatal(err)
	}
	e, err := f.meta.PackEpoch(f.ctx, f.pid)
	if err != nil {
		f.t.Fatal(err)
	}
	return state{f.versions(), f.packs(), f.objects(), locs, e}
}

func TestDryRunChangesNothing(t *testing.T) {
	f := newFixture(t)
	f.setRetention(1, 0)
	var blobs []id.ID
	files := map[string]string{"keep": "kept", "big": randomContent(40, 300<<10)}
	for i := range 4 {
		files[fmt.Sprintf("v%d", i)] = randomContent(uint64(41+i), 100<<10)
		if i > 0 {
			delete(files, fmt.Sprintf("v%d", i-1))
		}
		if i == 2 {
			delete(files, "big")
		}
		v := f.commit(files)
		blobs = append(blobs, v.Root)
		for _, c := range files {
			blobs = append(blobs, sum(c))
		}
	}
	for round := range 2 { // condemn, then delete
		before := f.state(blobs)
		dry := f.gc(gc.Options{Grace: time.Hour, DryRun: true})
		after := f.state(blobs)
		if fmt.Sprint(before) != fmt.Sprint(after) {
			t.Fatalf("round %d: the dry run changed something:\nbefore %+v\nafter  %+v", round, before, after)
		}
		if !dry.DryRun || !strings.Contains(dry.String(), "dry run") {
			t.Fatalf("round %d: dry run report %q", round, dry)
		}
		real := f.gc(gc.Options{Grace: time.Hour})
		dry.DryRun = false
		if fmt.Sprintf("%+v", dry) != fmt.Sprintf("%+v", real) {
			t.Fatalf("round %d: dry run predicted\n %+v\nthe run did\n %+v", round, dry, real)
		}
		if round == 0 && (real.VersionsDeleted != 3 || real.PacksCondemned == 0) {
			t.Fatalf("round 0 did too little: %+v", real)
		}
		if round == 1 && real.PacksDeleted == 0 {
			t.Fatalf("round 1 deleted nothing: %+v", real)
		}
		f.clock.Advance(time.Hour)
	}
}

// raceStore runs hook once, just before the first AddPack of the pack
// named target: the window between an upload's verification of the object
// and its indexing.
type raceStore struct {
	metastore.Store
	target id.ID
	hook   func()
	done   bool
}

func (s *raceStore) AddPack(ctx context.Context, p metastore.Pack, blobs []metastore.BlobLocation) error {
	if p.ID == s.target && !s.done {
		s.done = true
		s.hook()
	}
	return s.Store.AddPack(ctx, p, blobs)
}

// TestReusedPackIDNeverIndexedOverDeletedObject: an agent uploads a pack
// whose id (a content hash) is that of a pack GC is deleting; GC deletes
// the object after the agent's PUT and before its CompletePacks indexes it.
// The pack epoch makes the indexing fail (the agent uploads again) instead
// of indexing a deleted object.
func TestReusedPackIDNeverIndexedOverDeletedObject(t *testing.T) {
	var rs *raceStore
	f := newFixtureWith(t, func(m metastore.Store) metastore.Store { rs = &raceStore{Store: m}; return rs })
	f.setRetention(1, 0)
	a := randomContent(50, 20<<10)
	f.commit(map[string]string{"keep": "k"})
	solo := f.uploadPack(a) // never committed: dead
	f.commit(map[string]string{"keep": "k2"})
	f.gc(gc.Options{Grace: time.Hour})
	p, _ := f.pack(solo)
	if p.CondemnedAt.IsZero() {
		t.Fatalf("pack %+v, want condemned", p)
	}
	f.clock.Advance(time.Hour)

	// The agent's PUT of the same bytes has landed; GC runs between the
	// verification and the indexing.
	rs.target = solo
	rs.hook = func() {
		rep, err := gc.Run(f.ctx, f.r, gc.Options{ProjectID: f.pid, Grace: time.Hour, Now: f.clock.Now, Logger: testLogger(t)})
		if err != nil || rep.PacksDeleted == 0 {
			t.Errorf("gc inside the window: %+v, %v", rep, err)
		}
	}
	w := bytes.Buffer{}
	_ = w
	data, key := packBytesOf(t, a), repo.PackKey(f.pid, solo)
	if err := f.store.Put(f.ctx, key, bytes.NewReader(data), int64(len(data))); err != nil {
		t.Fatal(err)
	}
	_, err := f.r.CompletePacks(f.ctx, f.pid, []repo.PackRef{{ID: solo, Size: int64(len(data))}})
	if !errors.Is(err, repo.ErrMissing) {
		t.Fatalf("CompletePacks across a deletion: %v, want ErrMissing (upload again)", err)
	}
	if _, ok := f.locate(sum(a)); ok {
		t.Fatal("a blob of a deleted object was indexed")
	}
	// The agent uploads again: now it works.
	if err := f.store.Put(f.ctx, key, bytes.NewReader(data), int64(len(data))); err != nil {
		t.Fatal(err)
	}
	if _, err := f.r.CompletePacks(f.ctx, f.pid, []repo.PackRef{{ID: solo, Size: int64(len(data))}}); err != nil {
		t.Fatal(err)
	}
	if f.readBlob(sum(a)) != a {
		t.Fatal("re-uploaded blob reads back wrong")
	}
}

// packBytesOf is the pack an agent makes of one chunk.
func packBytesOf(t *testing.T, chunk string) []byte {
	t.Helper()
	f := newFixture(t)
	pid := f.uploadPack(chunk)
	rc, err := f.store.Get(f.ctx, repo.PackKey(f.pid, pid), 0, -1)
	if err != nil {
		t.Fatal(err)
	}
	defer rc.Close()
	data, err := io.ReadAll(rc)
	if err != nil {
		t.Fatal(err)
	}
	return data
}

// TestPinnedVersionsSurvive: retention never drops a pinned version, and
// its data stays.
func TestPinnedVersionsSurvive(t *testing.T) {
	f := newFixture(t)
	f.setRetention(1, 0)
	files1 := map[string]string{"a": randomContent(60, 50<<10)}
	v1 := f.commit(files1)
	if err := f.r.Pin(f.ctx, f.pid, v1.Number, true); err != nil {
		t.Fatal(err)
	}
	f.commit(map[string]string{"b": "b"})
	f.commit(map[string]string{"c": "c"})
	f.gc(gc.Options{Grace: time.Hour})
	f.clock.Advance(time.Hour)
	f.gc(gc.Options{Grace: time.Hour})
	if got := f.versions(); !slices.Equal(got, []int64{3, 1}) {
		t.Fatalf("versions %v, want [3 1]", got)
	}
	sameFiles(t, "pinned version", f.read(v1), files1)
	if err := f.r.Pin(f.ctx, f.pid, v1.Number, false); err != nil {
		t.Fatal(err)
	}
	f.gc(gc.Options{Grace: time.Hour})
	if got := f.versions(); !slices.Equal(got, []int64{3}) {
		t.Fatalf("versions after unpinning %v, want [3]", got)
	}
	if err := f.r.Pin(f.ctx, f.pid, 1, true); !errors.Is(err, metastore.ErrNotFound) {
		t.Fatalf("pin a deleted version: %v", err)
	}
	r, err := f.r.GetRetention(f.ctx, f.pid)
	if err != nil || r != (metastore.Retention{KeepLast: 1}) {
		t.Fatalf("GetRetention = %+v, %v", r, err)
	}
}

// TestRunAllProjects collects every project, reporting each.
func TestRunAllProjects(t *testing.T) {
	f := newFixture(t)
	f.setRetention(1, 0)
	f.commit(map[string]string{"a": randomContent(70, 10<<10)})
	f.commit(map[string]string{"b": "b"})
	other, err := f.meta.CreateProject(f.ctx, "other")
	if err != nil {
		t.Fatal(err)
	}
	if err := f.meta.SetRetention(f.ctx, other.ID, metastore.Retention{KeepLast: 1}); err != nil {
		t.Fatal(err)
	}
	g := *f
	g.pid = other.ID
	g.commit(map[string]string{"x": "x1"})
	g.commit(map[string]string{"x": "x2"})
	rep, err := gc.Run(f.ctx, f.r, gc.Options{Now: f.clock.Now, Logger: testLogger(t)})
	if err != nil {
		t.Fatal(err)
	}
	if rep.Projects != 2 || rep.VersionsDeleted != 2 {
		t.Fatalf("report %+v, want 2 projects and 2 versions deleted", rep)
	}
	if s := rep.String(); !strings.Contains(s, "2 projects") || !strings.Contains(s, "2 versions deleted") {
		t.Fatalf("String() = %q", s)
	}
	if _, err := gc.Run(f.ctx, f.r, gc.Options{ProjectID: "prj_aaaaaaaaaaaaaaaaaaaa"}); !errors.Is(err, metastore.ErrNotFound) {
		t.Fatalf("gc of an unknown project: %v", err)
	}
}

// TestReportString: the report says how long condemned packs wait.
func TestReportString(t *testing.T) {
	for _, tt := range []struct {
		grace time.Duration
		want  string
	}{{time.Hour, "after 1h;"}, {10 * time.Minute, "after 10m;"}, {90 * time.Minute, "after 1h30m;"}, {20 * time.Hour, "after 20h;"},
		{90 * time.Second, "after 1m30s;"}, {time.Millisecond, "after 1ms;"}, {0, "after 0s;"}} {
		r := gc.Report{Grace: tt.grace, PacksCondemned: 1, BytesCondemned: 10}
		if got := r.String(); !strings.Contains(got, tt.want) {
			t.Errorf("grace %s: %q lacks %q", tt.grace, got, tt.want)
		}
	}
}

// TestCommitRequiresOnlyWhatItAdds: a commit checks the blobs its tree adds
// to its parent's (repo's newRefs), not the ones it shares with it: a
// chunk unchanged since the parent may sit in a pack a racing run
// condemned (the next run rescues it), a chunk at a new path may not.
func TestCommitRequiresOnlyWhatItAdds(t *testing.T) {
	f := newFixture(t)
	a, b, b2, c := randomContent(80, 5000), randomContent(81, 5000), randomContent(82, 5000), randomContent(83, 5000)
	packs := map[string]id.ID{}
	for name, content := range map[string]string{"a": a, "b": b, "b2": b2, "c": c} {
		packs[name] = f.uploadPack(content)
	}
	f.commit(map[string]string{"d/a": a, "d/b": b, "e/c": c})
	condemn := func(names ...string) {
		t.Helper()
		var ids []id.ID
		for _, n := range names {
			ids = append(ids, packs[n])
		}
		if _, err := f.meta.CondemnPacks(f.ctx, f.pid, ids, f.clock.Now()); err != nil {
			t.Fatal(err)
		}
	}
	uncondemn := func(names ...string) {
		t.Helper()
		var ids []id.ID
		for _, n := range names {
			ids = append(ids, packs[n])
		}
		if _, err := f.meta.UncondemnPacks(f.ctx, f.pid, ids); err != nil {
			t.Fatal(err)
		}
	}

	// a and c are unchanged: their packs being condemned does not matter.
	condemn("a", "c")
	if _, err := f.commitRoot(f.putTrees(map[string]string{"d/a": a, "d/b": b2, "e/c": c})); err != nil {
		t.Fatalf("commit changing b only: %v", err)
	}
	// b2 is new to this version: refused while its pack is condemned.
	uncondemn("a", "c")
	condemn("b")
	if _, err := f.commitRoot(f.putTrees(map[string]string{"d/a": a, "d/b": b, "e/c": c})); !errors.Is(err, repo.ErrMissing) {
		t.Fatalf("commit bringing back a condemned chunk: %v, want ErrMissing", err)
	}
	uncondemn("b")
	// c moves to another directory: at a new path it is required.
	condemn("c")
	if _, err := f.commitRoot(f.putTrees(map[string]string{"d/a": a, "d/b": b2, "f/c": c})); !errors.Is(err, repo.ErrMissing) {
		t.Fatalf("commit moving a condemned chunk: %v, want ErrMissing", err)
	}
	uncondemn("c")
	v := f.commit(map[string]string{"d/a": a, "d/b": b2, "f/c": c})
	sameFiles(t, "last version", f.read(v), map[string]string{"d/a": a, "d/b": b2, "f/c": c})
}
