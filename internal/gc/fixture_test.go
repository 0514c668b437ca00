package gc_test

import (
	"bytes"
	"context"
	"errors"
	"io"
	"log/slog"
	"math/rand/v2"
	"path"
	"sort"
	"strings"
	"testing"
	"time"

	"github.com/sandkeep/sandkeep/internal/blobstore"
	"github.com/sandkeep/sandkeep/internal/gc"
	"github.com/sandkeep/sandkeep/internal/id"
	"github.com/sandkeep/sandkeep/internal/metastore"
	"github.com/sandkeep/sandkeep/internal/pack"
	"github.com/sandkeep/sandkeep/internal/repo"
	"github.com/sandkeep/sandkeep/internal/testclock"
	"github.com/sandkeep/sandkeep/internal/testenv"
	"github.com/sandkeep/sandkeep/internal/tree"
	"github.com/sandkeep/sandkeep/internal/tree/treetest"
)

// newClock is a clock tests move by hand, at database precision.
func newClock(t time.Time) *testclock.Clock { return testclock.New(t.UTC().Truncate(time.Microsecond)) }

// testLogger writes to the test log at Warn and above.
func testLogger(t testing.TB) *slog.Logger {
	return slog.New(slog.NewTextHandler(logWriter{t}, &slog.HandlerOptions{Level: slog.LevelWarn}))
}

type logWriter struct{ t testing.TB }

func (w logWriter) Write(p []byte) (int, error) {
	w.t.Helper()
	w.t.Log(strings.TrimSpace(string(p)))
	return len(p), nil
}

// fixture is a repository on SQLite and a local directory with one project,
// whose versions are built from maps of path -> content (each file one
// chunk), the way an agent would: only missing chunks and trees are
// uploaded.
type fixture struct {
	t     *testing.T
	ctx   context.Context
	meta  metastore.Store
	store blobstore.Backend
	r     *repo.Repo
	pid   string
	clock *testclock.Clock
}

func newFixture(t *testing.T) *fixture {
	t.Helper()
	return newFixtureWith(t, nil)
}

// newFixtureWith wraps the metadata store with wrap, if not nil.
func newFixtureWith(t *testing.T, wrap func(metastore.Store) metastore.Store) *fixture {
	t.Helper()
	ctx := context.Background()
	meta, st := testenv.Local(t)
	p, err := meta.CreateProject(ctx, "gc")
	if err != nil {
		t.Fatal(err)
	}
	var m metastore.Store = meta
	if wrap != nil {
		m = wrap(meta)
	}
	// The clock starts two hours ahead, so that packs written now are older
	// than the default grace period.
	return &fixture{t: t, ctx: ctx, meta: m, store: st, r: repo.New(m, st, repo.Options{Logger: testLogger(t)}), pid: p.ID,
		clock: newClock(time.Now().Add(2 * time.Hour))}
}

// randomContent returns n random (incompressible) bytes from seed.
func randomContent(seed uint64, n int) string {
	r := rand.New(rand.NewPCG(seed, 99))
	b := make([]byte, n)
	for i := range b {
		b[i] = byte(r.Uint32())
	}
	return string(b)
}

func mtimeOf(content string) int64 {
	h := id.Sum([]byte(content))
	return 1_700_000_000_000_000_000 + int64(h[0])<<20 + int64(h[1])<<12
}

// uploadPack stores the given chunks in one data pack, as an agent would,
// and returns its id.
func (f *fixture) uploadPack(chunks ...string) id.ID {
	f.t.Helper()
	w := pack.NewWriter()
	for _, c := range chunks {
		if _, err := w.Add(pack.Data, id.Sum([]byte(c)), []byte(c)); err != nil {
			f.t.Fatal(err)
		}
	}
	data, packID, _, err := w.Finish()
	if err != nil {
		f.t.Fatal(err)
	}
	if err := f.store.Put(f.ctx, repo.PackKey(f.pid, packID), bytes.NewReader(data), int64(len(data))); err != nil {
		f.t.Fatal(err)
	}
	if _, err := f.r.CompletePacks(f.ctx, f.pid, []repo.PackRef{{ID: packID, Size: int64(len(data))}}); err != nil {
		f.t.Fatalf("CompletePacks: %v", err)
	}
	return packID
}

// upload stores the chunks of files the project lacks (asking MissingBlobs,
// as FindMissingChunks does) in one pack, and the trees; it returns the
// root tree id.
func (f *fixture) upload(files map[string]string) id.ID {
	f.t.Helper()
	var ids []id.ID
	byID := map[id.ID]string{}
	for _, c := range files {
		if c == "" {
			continue
		}
		x := id.Sum([]byte(c))
		if _, dup := byID[x]; !dup {
			byID[x] = c
			ids = append(ids, x)
		}
	}
	sort.Slice(ids, func(i, j int) bool { return ids[i].String() < ids[j].String() })
	missing, err := f.r.MissingBlobs(f.ctx, f.pid, ids)
	if err != nil {
		f.t.Fatal(err)
	}
	if len(missing) > 0 {
		var chunks []string
		for _, m := range missing {
			chunks = append(chunks, byID[m])
		}
		f.uploadPack(chunks...)
	}
	return f.putTrees(files)
}

// putTrees stores the trees of files (without uploading any chunk) and
// returns the root id.
func (f *fixture) putTrees(files map[string]string) id.ID {
	f.t.Helper()
	entries := map[string]tree.Node{}
	for p, c := range files {
		n := tree.Node{Type: tree.File, Mode: 0o644, MtimeNs: mtimeOf(c), Size: int64(len(c))}
		if c != "" {
			n.Chunks = []tree.ChunkRef{{ID: id.Sum([]byte(c)), Size: uint32(len(c))}}
		}
		entries[p] = n
	}
	encoded, root, err := treetest.Build(entries)
	if err != nil {
		f.t.Fatal(err)
	}
	if _, err := f.r.PutTrees(f.ctx, f.pid, encoded); err != nil {
		f.t.Fatalf("PutTrees: %v", err)
	}
	return root
}

// commitRoot commits root on the head.
func (f *fixture) commitRoot(root id.ID) (metastore.Version, error) {
	f.t.Helper()
	p, err := f.meta.GetProject(f.ctx, f.pid)
	if err != nil {
		f.t.Fatal(err)
	}
	return f.r.Commit(f.ctx, f.pid, repo.CommitRequest{Parent: p.Head, Root: root, Kind: metastore.KindSync})
}

// commit uploads what files need and commits them on the head.
func (f *fixture) commit(files map[string]string) metastore.Version {
	f.t.Helper()
	v, err := f.commitRoot(f.upload(files))
	if err != nil {
		f.t.Fatalf("commit: %v", err)
	}
	return v
}

// read returns the files of version v, every chunk read from the store and
// verified.
func (f *fixture) read(v metastore.Version) map[string]string {
	f.t.Helper()
	out := map[string]string{}
	var walk func(tid id.ID, dir string)
	walk = func(tid id.ID, dir string) {
		t, err := f.r.LoadTree(f.ctx, f.pid, tid)
		if err != nil {
			f.t.Fatalf("version %d: load tree %s: %v", v.Number, dir, err)
		}
		for _, n := range t.Nodes {
			p := path.Join(dir, n.Name)
			switch n.Type {
			case tree.Dir:
				walk(n.Subtree, p)
			case tree.File:
				var b strings.Builder
				for _, c := range n.Chunks {
					b.WriteString(f.readBlob(c.ID))
				}
				out[p] = b.String()
			}
		}
	}
	walk(v.Root, "")
	return out
}

// readBlob reads and verifies one blob where the index says it is.
func (f *fixture) readBlob(x id.ID) string {
	f.t.Helper()
	locs, err := f.meta.LocateBlobs(f.ctx, f.pid, []id.ID{x})
	if err != nil {
		f.t.Fatal(err)
	}
	l, ok := locs[x]
	if !ok {
		f.t.Fatalf("blob %s is not indexed", x.Short())
	}
	rc, err := f.store.Get(f.ctx, repo.PackKey(f.pid, l.PackID), l.Offset, l.Length)
	if err != nil {
		f.t.Fatalf("blob %s: %v", x.Short(), err)
	}
	defer rc.Close()
	stored, err := io.ReadAll(rc)
	if err != nil {
		f.t.Fatal(err)
	}
	plain, err := pack.DecodeBlob(pack.Entry{ID: x, Offset: uint64(l.Offset), Length: uint32(l.Length), RawLength: uint32(l.RawLength),
		Type: pack.BlobType(l.Type), Codec: pack.Codec(l.Codec)}, stored, nil)
	if err != nil {
		f.t.Fatalf("blob %s: %v", x.Short(), err)
	}
	return string(plain)
}

// gc runs the collector on the project with the fixture's clock.
func (f *fixture) gc(opts gc.Options) gc.Report {
	f.t.Helper()
	opts.ProjectID = f.pid
	opts.Now = f.clock.Now
	opts.Logger = testLogger(f.t)
	rep, err := gc.Run(f.ctx, f.r, opts)
	if err != nil {
		f.t.Fatalf("gc: %v", err)
	}
	f.t.Logf("%v", rep)
	return rep
}

func (f *fixture) packs() []metastore.Pack {
	f.t.Helper()
	ps, err := f.meta.ListPacks(f.ctx, f.pid, metastore.ListOptions{Limit: 100000})
	if err != nil {
		f.t.Fatal(err)
	}
	return ps
}

func (f *fixture) pack(pid id.ID) (metastore.Pack, bool) {
	for _, p := range f.packs() {
		if p.ID == pid {
			return p, true
		}
	}
	return metastore.Pack{}, false
}

// objects lists the project's objects in the store: key -> size.
func (f *fixture) objects() map[string]int64 {
	f.t.Helper()
	return listObjects(f.t, f.store, repo.ProjectPrefix(f.pid))
}

func listObjects(t testing.TB, st blobstore.Store, prefix string) map[string]int64 {
	t.Helper()
	out := map[string]int64{}
	if err := st.List(context.Background(), prefix, func(o blobstore.Object) error {
		out[o.Key] = o.Size
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	return out
}

// packBytes sums the sizes of the pack objects of objs.
func packBytes(objs map[string]int64) int64 {
	var n int64
	for k, s := range objs {
		if strings.Contains(k, "/packs/") {
			n += s
		}
	}
	return n
}

func (f *fixture) locate(x id.ID) (metastore.BlobLocation, bool) {
	f.t.Helper()
	locs, err := f.meta.LocateBlobs(f.ctx, f.pid, []id.ID{x})
	if err != nil {
		f.t.Fatal(err)
	}
	l, ok := locs[x]
	return l, ok
}

func (f *fixture) setRetention(keepLast int, within time.Duration) {
	f.t.Helper()
	if err := f.r.SetRetention(f.ctx, f.pid, metastore.Retention{KeepLast: keepLast, KeepWithin: within}); err != nil {
		f.t.Fatal(err)
	}
}

func (f *fixture) versions() []int64 {
	f.t.Helper()
	vs, err := f.meta.ListVersions(f.ctx, f.pid, metastore.ListOptions{Limit: 10000})
	if err != nil {
		f.t.Fatal(err)
	}
	out := make([]int64, len(vs))
	for i, v := range vs {
		out[i] = v.Number
	}
	return out
}

func sum(s string) id.ID { return id.Sum([]byte(s)) }

func sameFiles(t *testing.T, what string, got, want map[string]string) {
	t.Helper()
	if len(got) != len(want) {
		t.Fatalf("%s: %d files, want %d", what, len(got), len(want))
	}
	for p, c := range want {
		if g, ok := got[p]; !ok || g != c {
			t.Fatalf("%s: file %s differs (%d bytes, want %d)", what, p, len(g), len(c))
		}
	}
}

func isNotFound(err error) bool { return errors.Is(err, blobstore.ErrNotFound) }
