package e2e

// The hostile-client suite: a sandbox's own token in the hands of the code
// the sandbox runs, driving the agent API and the signed URLs by hand. Every
// attack ends by restoring every committed version and comparing it with
// what was committed: nothing done with the token may damage history.
//
// Each test runs on the embedded stores (SQLite + local blob dir) and on the
// production ones (PostgreSQL + versitygw).

import (
	"bytes"
	"context"
	"crypto/rand"
	"errors"
	"fmt"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus/testutil"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/sandkeep/sandkeep/internal/agent"
	"github.com/sandkeep/sandkeep/internal/blobstore"
	"github.com/sandkeep/sandkeep/internal/coordtest"
	"github.com/sandkeep/sandkeep/internal/errinfo"
	"github.com/sandkeep/sandkeep/internal/gc"
	"github.com/sandkeep/sandkeep/internal/id"
	"github.com/sandkeep/sandkeep/internal/metastore"
	"github.com/sandkeep/sandkeep/internal/pack"
	"github.com/sandkeep/sandkeep/internal/repo"
	"github.com/sandkeep/sandkeep/internal/restore"
	"github.com/sandkeep/sandkeep/internal/server"
	"github.com/sandkeep/sandkeep/internal/testenv"
	"github.com/sandkeep/sandkeep/internal/tree"
	"github.com/sandkeep/sandkeep/internal/workspacetest"
	pb "github.com/sandkeep/sandkeep/proto/sandkeep/v1"
)

var hostileBackends = []struct {
	name string
	opts coordtest.Options
}{
	{"sqlite-local", coordtest.Options{}},
	{"postgres-s3", coordtest.Options{Postgres: true, S3: true}},
}

// victim is a project with honest history: two versions, the first pinned.
type victim struct {
	c       *coordtest.Coordinator
	project string
	token   string
	ws      string
	// want maps a version number to the snapshot it must restore to.
	want map[int64]map[string]workspacetest.Entry
}

func newVictim(t *testing.T, c *coordtest.Coordinator, name string) *victim {
	t.Helper()
	ctx := context.Background()
	v := &victim{c: c, want: map[int64]map[string]workspacetest.Entry{}}
	v.project, v.token = c.Project(t, name)
	v.ws = filepath.Join(t.TempDir(), "ws")
	workspacetest.Generate(t, v.ws, workspacetest.Options{SmallFiles: 40, LargeSize: 3<<20 + 17, Seed: 7})
	t.Cleanup(func() { workspacetest.MakeWritable(v.ws) })
	v.sync(t)
	if _, err := c.Admin.PinVersion(ctx, &pb.PinVersionRequest{ProjectId: v.project, Version: 1, Pinned: true}); err != nil {
		t.Fatalf("pin version 1: %v", err)
	}
	writeWS(t, v.ws, "notes/second.txt", "the second version")
	v.sync(t)
	return v
}

// sync commits the workspace and records what the new version must restore to.
func (v *victim) sync(t *testing.T) int64 {
	t.Helper()
	res, err := agent.SyncOnce(context.Background(), agentConfig(v.c, v.token, v.ws, t))
	if err != nil {
		t.Fatalf("honest sync: %v", err)
	}
	n := res.Version.GetNumber()
	v.want[n] = workspacetest.Snapshot(t, v.ws)
	return n
}

// checkHistory restores every version the victim committed and compares it
// byte for byte with what was committed.
func (v *victim) checkHistory(t *testing.T) {
	t.Helper()
	for n, want := range v.want {
		dir := restoreVersion(t, v.c, v.token, n)
		if d := workspacetest.Diff(want, workspacetest.Snapshot(t, dir)); len(d) > 0 {
			t.Fatalf("version %d no longer restores to what was committed:\n  %v", n, head(d))
		}
		removeTree(t, dir)
	}
}

// attacker drives the agent API with a sandbox token, by hand.
type attacker struct {
	t   *testing.T
	api pb.AgentServiceClient
}

func newAttacker(t *testing.T, c *coordtest.Coordinator, token string) *attacker {
	return &attacker{t: t, api: c.AgentConn(t, token)}
}

// target asks for the upload URL of a pack.
func (a *attacker) target(packID id.ID, size int) (*pb.SignedRequest, error) {
	resp, err := a.api.GetUploadTargets(context.Background(), &pb.GetUploadTargetsRequest{Packs: []*pb.PackUpload{{PackId: packID.Bytes(), Size: int64(size)}}})
	if err != nil {
		return nil, err
	}
	return resp.GetTargets()[0].GetRequest(), nil
}

// put sends body to a signed request and returns the HTTP status.
func (a *attacker) put(sr *pb.SignedRequest, body []byte) int {
	a.t.Helper()
	req, err := http.NewRequest(sr.GetMethod(), sr.GetUrl(), bytes.NewReader(body))
	if err != nil {
		a.t.Fatal(err)
	}
	req.ContentLength = int64(len(body))
	for k, v := range sr.GetHeaders() {
		req.Header.Set(k, v)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		a.t.Fatalf("PUT: %v", err)
	}
	resp.Body.Close()
	return resp.StatusCode
}

func (a *attacker) complete(packID id.ID, size int) error {
	_, err := a.api.CompletePacks(context.Background(), &pb.CompletePacksRequest{Packs: []*pb.PackUpload{{PackId: packID.Bytes(), Size: int64(size)}}})
	return err
}

// upload stores a pack the attacker built: target, PUT, complete.
func (a *attacker) upload(data []byte, packID id.ID) (*pb.SignedRequest, error) {
	a.t.Helper()
	sr, err := a.target(packID, len(data))
	if err != nil {
		return nil, err
	}
	if code := a.put(sr, data); code/100 != 2 {
		a.t.Fatalf("PUT of the attacker's pack: %d", code)
	}
	return sr, a.complete(packID, len(data))
}

func wantCode(t *testing.T, what string, err error, want codes.Code) {
	t.Helper()
	if status.Code(err) != want {
		t.Fatalf("%s: %v, want %v", what, err, want)
	}
}

func randomBytes(t *testing.T, n int) []byte {
	b := make([]byte, n)
	if _, err := rand.Read(b); err != nil {
		t.Fatal(err)
	}
	return b
}

// Attack 1: replace or remove a committed pack through a signed URL.
func TestHostilePacksAreImmutable(t *testing.T) {
	for _, b := range hostileBackends {
		t.Run(b.name, func(t *testing.T) {
			c := coordtest.Start(t, b.opts)
			v := newVictim(t, c, "immutable")
			a := newAttacker(t, c, v.token)
			ctx := context.Background()

			// No URL for a pack the project stores: every committed pack is refused.
			packs, err := c.Server.Meta.ListPacks(ctx, v.project, metastore.ListOptions{Limit: 1000})
			if err != nil || len(packs) == 0 {
				t.Fatalf("list packs: %d, %v", len(packs), err)
			}
			for _, p := range packs {
				_, err := a.target(p.ID, int(p.Size))
				wantCode(t, "upload target for stored pack "+p.ID.Short(), err, codes.AlreadyExists)
				if errinfo.Reason(err) != errinfo.PackStored {
					t.Fatalf("refusal carries reason %q, want %s", errinfo.Reason(err), errinfo.PackStored)
				}
			}

			// A URL obtained before the pack was stored cannot replace it afterwards.
			w := pack.NewWriter()
			chunk := []byte("the attacker's own chunk, stored honestly first")
			if _, err := w.Add(pack.Data, id.Sum(chunk), chunk); err != nil {
				t.Fatal(err)
			}
			data, packID, _, err := w.Finish()
			if err != nil {
				t.Fatal(err)
			}
			sr, err := a.upload(data, packID)
			if err != nil {
				t.Fatalf("honest upload by the attacker: %v", err)
			}
			if code := a.put(sr, randomBytes(t, len(data))); code != http.StatusPreconditionFailed {
				t.Fatalf("replaying a signed PUT over a stored pack: HTTP %d, want 412", code)
			}
			rc, err := c.Server.Blobs.Get(ctx, repo.PackKey(v.project, packID), 0, -1)
			if err != nil {
				t.Fatal(err)
			}
			stored := new(bytes.Buffer)
			_, _ = stored.ReadFrom(rc)
			rc.Close()
			if !bytes.Equal(stored.Bytes(), data) {
				t.Fatal("the stored pack changed under a replayed signed PUT")
			}
			v.checkHistory(t)
		})
	}
}

// Attack 2: a pack whose footer names chunks its bytes are not.
func TestHostileLyingFooter(t *testing.T) {
	for _, b := range hostileBackends {
		t.Run(b.name, func(t *testing.T) {
			c := coordtest.Start(t, b.opts)
			v := newVictim(t, c, "footer")
			a := newAttacker(t, c, v.token)
			ctx := context.Background()

			// The chunk of a file the user will write later.
			future := bytes.Repeat([]byte("future content the user will write\n"), 2000)
			x := id.Sum(future)
			garbage := randomBytes(t, len(future))

			lying := func() ([]byte, id.ID) {
				w := pack.NewWriter()
				if _, err := w.AddStored(pack.Data, x, pack.None, len(garbage), garbage); err != nil {
					t.Fatal(err)
				}
				data, pid, _, err := w.Finish()
				if err != nil {
					t.Fatal(err)
				}
				return data, pid
			}
			data, pid := lying()
			_, err := a.upload(data, pid)
			wantCode(t, "CompletePacks of a pack whose footer lies", err, codes.InvalidArgument)
			if _, err := c.Server.Blobs.Stat(ctx, repo.PackKey(v.project, pid)); !errorsIsNotFound(err) {
				t.Fatalf("the lying pack's object is still stored: %v", err)
			}

			// The same lie inside a group frame: a member named x whose
			// slice of the frame is garbage, beside an honest member.
			var g pack.GroupBuilder
			other := bytes.Repeat([]byte("an honest neighbour\n"), 500)
			if err := g.Add(x, garbage[:4000]); err != nil {
				t.Fatal(err)
			}
			if err := g.Add(id.Sum(other), other); err != nil {
				t.Fatal(err)
			}
			var comp pack.Compressor
			stored, codec, err := comp.Compress(g.Plaintext())
			if err != nil || codec != pack.Zstd {
				t.Fatalf("compress the group: %v, %v", codec, err)
			}
			gw := pack.NewWriter()
			if err := gw.AddGroup(pack.Data, &g, codec, stored); err != nil {
				t.Fatal(err)
			}
			gdata, gpid, _, err := gw.Finish()
			if err != nil {
				t.Fatal(err)
			}
			_, err = a.upload(gdata, gpid)
			wantCode(t, "CompletePacks of a group whose member lies", err, codes.InvalidArgument)
			resp, err := a.api.FindMissingChunks(ctx, &pb.FindMissingChunksRequest{Ids: [][]byte{id.Sum(other).Bytes()}})
			if err != nil || len(resp.GetMissing()) != 1 {
				t.Fatalf("the honest member of a refused group was indexed: %v, %v", resp.GetMissing(), err)
			}

			// Honest bytes under a pack id that is not theirs.
			w := pack.NewWriter()
			if _, err := w.Add(pack.Data, x, future); err != nil {
				t.Fatal(err)
			}
			honest, _, _, err := w.Finish()
			if err != nil {
				t.Fatal(err)
			}
			wrongID := id.Sum([]byte("not this pack"))
			_, err = a.upload(honest, wrongID)
			wantCode(t, "CompletePacks of a pack stored under another id", err, codes.InvalidArgument)

			// Nothing was indexed: the chunk is still missing, and an honest
			// sync of that content uploads it and restores exactly.
			resp, err = a.api.FindMissingChunks(ctx, &pb.FindMissingChunksRequest{Ids: [][]byte{x.Bytes()}})
			if err != nil || len(resp.GetMissing()) != 1 {
				t.Fatalf("FindMissingChunks after the attack: %v, %v; want the chunk missing", resp.GetMissing(), err)
			}
			if err := os.WriteFile(filepath.Join(v.ws, "future.txt"), future, 0o644); err != nil {
				t.Fatal(err)
			}
			v.sync(t)
			v.checkHistory(t)
		})
	}
}

// Attack 5: claim to be another sandbox in CommitVersion.
func TestHostileCommitterIsTheServersWord(t *testing.T) {
	c := coordtest.Start(t, coordtest.Options{})
	pid, token := c.Project(t, "who")
	a := newAttacker(t, c, token)
	ctx := context.Background()
	tr := &tree.Tree{}
	enc, err := tr.Encode()
	if err != nil {
		t.Fatal(err)
	}
	up, err := a.api.UploadTrees(ctx, &pb.UploadTreesRequest{Trees: [][]byte{enc}})
	if err != nil {
		t.Fatal(err)
	}
	resp, err := a.api.CommitVersion(ctx, &pb.CommitVersionRequest{Root: up.GetIds()[0], Kind: pb.VersionKind_VERSION_KIND_SYNC, SessionId: "sbx_forged"})
	if err != nil {
		t.Fatal(err)
	}
	got := resp.GetVersion().GetSandboxId()
	toks, err := c.Server.Meta.ListTokens(ctx, pid)
	if err != nil || len(toks) != 1 {
		t.Fatalf("list tokens: %v, %v", toks, err)
	}
	if want := metastore.TokenID(toks[0].Hash); got != want {
		t.Fatalf("version records sandbox %q, want the authenticated token %q (not the forged session id)", got, want)
	}
}

// TestHostileTreesNameOnlyWhatIsStored attacks the check the agent's early
// tree upload leans on: the coordinator refuses a tree naming a chunk it
// does not index (never uploaded, or PUT but not completed, the window a
// tree sent too early would fall in), a chunk with another size, or a
// subtree it does not hold; it stores none of them, and a commit naming
// one is refused. The same tree with the right names goes through.
func TestHostileTreesNameOnlyWhatIsStored(t *testing.T) {
	c := coordtest.Start(t, coordtest.Options{})
	_, token := c.Project(t, "early")
	a := newAttacker(t, c, token)
	ctx := context.Background()
	chunk := []byte("a chunk the project holds")
	stored := a.storeChunk(chunk)

	// A chunk whose pack was PUT but not completed: not indexed.
	w := pack.NewWriter()
	pending := []byte("a chunk PUT but never completed")
	pendingID := id.Sum(pending)
	if _, err := w.Add(pack.Data, pendingID, pending); err != nil {
		t.Fatal(err)
	}
	data, packID, _, err := w.Finish()
	if err != nil {
		t.Fatal(err)
	}
	sr, err := a.target(packID, len(data))
	if err != nil {
		t.Fatal(err)
	}
	if code := a.put(sr, data); code/100 != 2 {
		t.Fatalf("PUT: %d", code)
	}

	file := func(cid id.ID, size int) tree.Node {
		return tree.Node{Name: "f", Type: tree.File, Mode: 0o644, Size: int64(size), Chunks: []tree.ChunkRef{{ID: cid, Size: uint32(size)}}}
	}
	for _, tc := range []struct {
		name   string
		nodes  []tree.Node
		code   codes.Code
		reason string
	}{
		{"a chunk never uploaded", []tree.Node{file(id.Sum([]byte("never uploaded")), 14)}, codes.FailedPrecondition, errinfo.BlobMissing},
		{"a chunk PUT but not completed", []tree.Node{file(pendingID, len(pending))}, codes.FailedPrecondition, errinfo.BlobMissing},
		{"a stored chunk with another size", []tree.Node{file(stored, len(chunk)+1)}, codes.InvalidArgument, ""},
		{"a subtree not stored", []tree.Node{{Name: "d", Type: tree.Dir, Mode: 0o755, Subtree: id.Sum([]byte("no such tree"))}}, codes.FailedPrecondition, errinfo.BlobMissing},
	} {
		enc, err := (&tree.Tree{Nodes: tc.nodes}).Encode()
		if err != nil {
			t.Fatal(err)
		}
		_, err = a.api.UploadTrees(ctx, &pb.UploadTreesRequest{Trees: [][]byte{enc}})
		if status.Code(err) != tc.code || errinfo.Reason(err) != tc.reason {
			t.Errorf("%s: UploadTrees = %v (reason %q), want %s (reason %q)", tc.name, err, errinfo.Reason(err), tc.code, tc.reason)
		}
		tid := id.Sum(enc)
		miss, err := a.api.FindMissingChunks(ctx, &pb.FindMissingChunksRequest{Ids: [][]byte{tid.Bytes()}})
		if err != nil || len(miss.GetMissing()) != 1 {
			t.Errorf("%s: the refused tree is stored (missing %v, %v)", tc.name, miss.GetMissing(), err)
		}
		if _, err := a.commit(0, tid); status.Code(err) != codes.FailedPrecondition {
			t.Errorf("%s: a commit naming the refused tree = %v, want FailedPrecondition", tc.name, err)
		}
	}
	root := a.storeTree([]tree.Node{file(stored, len(chunk))})
	if _, err := a.commit(0, root); err != nil {
		t.Fatalf("the honest tree: %v", err)
	}
}

func errorsIsNotFound(err error) bool { return errors.Is(err, blobstore.ErrNotFound) }

// storeChunk uploads one chunk in a pack of its own and returns its id.
func (a *attacker) storeChunk(data []byte) id.ID {
	a.t.Helper()
	w := pack.NewWriter()
	cid := id.Sum(data)
	if _, err := w.Add(pack.Data, cid, data); err != nil {
		a.t.Fatal(err)
	}
	p, pid, _, err := w.Finish()
	if err != nil {
		a.t.Fatal(err)
	}
	if _, err := a.upload(p, pid); err != nil {
		a.t.Fatalf("upload chunk: %v", err)
	}
	return cid
}

// storeTree uploads one tree and returns its id.
func (a *attacker) storeTree(nodes []tree.Node) id.ID {
	a.t.Helper()
	tr := &tree.Tree{Nodes: nodes}
	enc, err := tr.Encode()
	if err != nil {
		a.t.Fatal(err)
	}
	resp, err := a.api.UploadTrees(context.Background(), &pb.UploadTreesRequest{Trees: [][]byte{enc}})
	if err != nil {
		a.t.Fatalf("upload tree: %v", err)
	}
	tid, _ := id.FromBytes(resp.GetIds()[0])
	return tid
}

// fanOut is a tree of n directories all naming sub.
func fanOut(n int, sub id.ID) []tree.Node {
	nodes := make([]tree.Node, n)
	for i := range nodes {
		nodes[i] = tree.Node{Name: fmt.Sprintf("d%06d", i), Type: tree.Dir, Mode: 0o755, Subtree: sub}
	}
	return nodes
}

// bigFile is a file naming one chunk times times.
func bigFile(name string, chunk id.ID, size, times int) tree.Node {
	refs := make([]tree.ChunkRef, times)
	for i := range refs {
		refs[i] = tree.ChunkRef{ID: chunk, Size: uint32(size)}
	}
	return tree.Node{Name: name, Type: tree.File, Mode: 0o644, Size: int64(size) * int64(times), Chunks: refs}
}

func (a *attacker) commit(parent int64, root id.ID) (*pb.Version, error) {
	resp, err := a.api.CommitVersion(context.Background(), &pb.CommitVersionRequest{Parent: parent, Root: root.Bytes(), Kind: pb.VersionKind_VERSION_KIND_SYNC})
	return resp.GetVersion(), err
}

// Attack 3: trees that name one chunk or subtree many times over.
func TestHostileExpansionIsBounded(t *testing.T) {
	for _, b := range hostileBackends {
		t.Run(b.name, func(t *testing.T) {
			c := coordtest.Start(t, b.opts)
			v := newVictim(t, c, "expansion")
			a := newAttacker(t, c, v.token)
			ctx := context.Background()
			head := headNumber(t, c, v.project)

			// 10^9 files from three trees of 1000 entries (about 100 KB uploaded).
			chunk := bytes.Repeat([]byte{'x'}, 1<<20)
			cid := a.storeChunk(chunk)
			leaf := make([]tree.Node, 1000)
			for i := range leaf {
				leaf[i] = tree.Node{Name: fmt.Sprintf("f%06d", i), Type: tree.File, Mode: 0o644, Size: 1, Chunks: []tree.ChunkRef{{ID: cid, Size: 1 << 20}}}
				leaf[i].Size = 1 << 20
			}
			l1 := a.storeTree(leaf)
			l2 := a.storeTree(fanOut(1000, l1))
			files := a.storeTree(fanOut(1000, l2))

			// 10 TiB of logical bytes: a 1 GiB file (one chunk named 1024
			// times), 100 of them in a directory, 100 such directories.
			gib := a.storeTree([]tree.Node{bigFile("big", cid, 1<<20, 1024)})
			hundred := a.storeTree(fanOut(100, gib))
			tib := a.storeTree(fanOut(100, hundred))

			// 300 directories deep.
			deep := a.storeTree(nil)
			for range 300 {
				deep = a.storeTree([]tree.Node{{Name: "d", Type: tree.Dir, Mode: 0o755, Subtree: deep}})
			}
			for _, tt := range []struct {
				name string
				root id.ID
				want string
			}{
				{"a billion files", files, "files"},
				{"ten TiB", tib, "bytes"},
				{"300 deep", deep, "deep"},
			} {
				_, err := a.commit(head, tt.root)
				wantCode(t, tt.name, err, codes.ResourceExhausted)
				if errinfo.Reason(err) != errinfo.LimitExceeded || !strings.Contains(status.Convert(err).Message(), tt.want) {
					t.Fatalf("%s: %v, want reason %s naming %q", tt.name, err, errinfo.LimitExceeded, tt.want)
				}
			}
			if h := headNumber(t, c, v.project); h != head {
				t.Fatalf("head moved to %d after refused commits", h)
			}

			// Per-project limits: a project that allows 10 TiB commits it; the
			// restore then refuses before writing, with the numbers, and leaves
			// no target behind.
			if err := c.Server.Meta.SetLimits(ctx, v.project, metastore.Limits{MaxBytes: 1 << 50}); err != nil {
				t.Fatal(err)
			}
			ver, err := a.commit(head, tib)
			if err != nil {
				t.Fatalf("commit within raised limits: %v", err)
			}
			dir := filepath.Join(t.TempDir(), "target")
			cfg := agentConfig(c, v.token, dir, t)
			_, err = agent.Restore(ctx, cfg, ver.GetNumber())
			var se *restore.SpaceError
			if !errors.As(err, &se) || se.Need < 9<<40 {
				t.Fatalf("restore of 10 TiB: %v, want a SpaceError", err)
			}
			if _, err := os.Lstat(dir); !os.IsNotExist(err) {
				t.Fatalf("the refused restore left its target behind: %v", err)
			}
			delete(v.want, head+1)
			v.checkHistory(t)
		})
	}
}

// Item 14: a restore into a directory with other content is refused unless
// --force, which makes it exactly the version.
func TestRestoreIntoNonEmptyTarget(t *testing.T) {
	c := coordtest.Start(t, coordtest.Options{})
	v := newVictim(t, c, "target")
	ctx := context.Background()
	n := headNumber(t, c, v.project)

	dir := restoreVersion(t, c, v.token, n)
	// Restoring over an exact copy is fine and changes nothing.
	if _, err := agent.Restore(ctx, agentConfig(c, v.token, dir, t), n); err != nil {
		t.Fatalf("restore over a matching target: %v", err)
	}
	writeWS(t, dir, "notes/second.txt", "edited locally")
	writeWS(t, dir, "extra.txt", "not in the version")
	before := workspacetest.Snapshot(t, dir)
	_, err := agent.Restore(ctx, agentConfig(c, v.token, dir, t), n)
	var te *agent.TargetError
	if !errors.As(err, &te) || te.Count != 2 || !strings.Contains(err.Error(), "extra.txt") || !strings.Contains(err.Error(), "--force") {
		t.Fatalf("restore over a differing target: %v, want a TargetError naming 2 paths and --force", err)
	}
	if d := workspacetest.Diff(before, workspacetest.Snapshot(t, dir)); len(d) > 0 {
		t.Fatalf("the refused restore changed the target: %v", d)
	}
	if _, err := agent.RestoreWith(ctx, agentConfig(c, v.token, dir, t), agent.RestoreOptions{Version: n, Force: true}); err != nil {
		t.Fatalf("restore --force: %v", err)
	}
	if d := workspacetest.Diff(v.want[n], workspacetest.Snapshot(t, dir)); len(d) > 0 {
		t.Fatalf("after --force the target is not exactly version %d: %v", n, d)
	}
}

// Item 11: setuid and setgid bits come back only when asked for.
func TestRestoreDropsSetuid(t *testing.T) {
	c := coordtest.Start(t, coordtest.Options{})
	v := newVictim(t, c, "setuid")
	n := headNumber(t, c, v.project)
	cfg := agentConfig(c, v.token, filepath.Join(t.TempDir(), "plain"), t)
	cfg.KeepSetuid = false
	if _, err := agent.Restore(context.Background(), cfg, n); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { workspacetest.MakeWritable(cfg.Workspace) })
	checked := 0
	for p, e := range v.want[n] {
		if e.Mode&(os.ModeSetuid|os.ModeSetgid) == 0 {
			continue
		}
		fi, err := os.Lstat(filepath.Join(cfg.Workspace, p))
		if err != nil {
			t.Fatal(err)
		}
		if fi.Mode()&(os.ModeSetuid|os.ModeSetgid) != 0 || fi.Mode().Perm() != e.Mode.Perm() {
			t.Errorf("%s restored as %v; want %v without setuid/setgid", p, fi.Mode(), e.Mode.Perm())
		}
		checked++
	}
	if checked == 0 {
		t.Fatal("the workspace has no setuid or setgid file to check")
	}
}

// Attack 4: upload URLs outliving their project, and uploads never
// completed. The local store refuses a PUT into a deleted project at once;
// S3 presigned URLs cannot be revoked, so garbage collection sweeps the
// deleted project's prefix, and every project's objects that no row names.
func TestHostileOrphanUploads(t *testing.T) {
	for _, b := range hostileBackends {
		t.Run(b.name, func(t *testing.T) {
			c := coordtest.Start(t, b.opts)
			ctx := context.Background()
			countObjects := func(prefix string) int {
				n := 0
				if err := c.Server.Blobs.List(ctx, prefix, func(blobstore.Object) error { n++; return nil }); err != nil {
					t.Fatal(err)
				}
				return n
			}
			newPack := func(tag string) ([]byte, id.ID) {
				w := pack.NewWriter()
				chunk := []byte("orphan " + tag)
				if _, err := w.Add(pack.Data, id.Sum(chunk), chunk); err != nil {
					t.Fatal(err)
				}
				data, pid, _, err := w.Finish()
				if err != nil {
					t.Fatal(err)
				}
				return data, pid
			}

			// A URL fetched before the project's deletion, used after it.
			doomed, doomedToken := c.Project(t, "doomed")
			a := newAttacker(t, c, doomedToken)
			data, pid := newPack("late")
			sr, err := a.target(pid, len(data))
			if err != nil {
				t.Fatal(err)
			}
			if _, err := c.Admin.DeleteProject(ctx, &pb.DeleteProjectRequest{ProjectId: doomed}); err != nil {
				t.Fatal(err)
			}
			code := a.put(sr, data)
			if b.opts.S3 {
				if code/100 != 2 {
					t.Fatalf("S3 presigned PUT after deletion: %d (the test assumes S3 cannot revoke it)", code)
				}
			} else if code != http.StatusForbidden {
				t.Fatalf("local signed PUT into a deleted project: HTTP %d, want 403", code)
			}

			// An upload never completed, in a live project with history.
			v := newVictim(t, c, "orphans")
			va := newAttacker(t, c, v.token)
			odata, opid := newPack("never completed")
			osr, err := va.target(opid, len(odata))
			if err != nil {
				t.Fatal(err)
			}
			if code := va.put(osr, odata); code/100 != 2 {
				t.Fatalf("PUT: %d", code)
			}
			orphanKey := repo.PackKey(v.project, opid)

			// Within the grace nothing is touched (the upload may still be
			// completed); past it, both are gone and history is intact.
			if _, err := gc.Run(ctx, c.Server.Repo, gc.Options{}); err != nil {
				t.Fatal(err)
			}
			if _, err := c.Server.Blobs.Stat(ctx, orphanKey); err != nil {
				t.Fatalf("an upload younger than the grace was deleted: %v", err)
			}
			rep, err := gc.Run(ctx, c.Server.Repo, gc.Options{Now: func() time.Time { return time.Now().Add(2 * time.Hour) }})
			if err != nil {
				t.Fatal(err)
			}
			if _, err := c.Server.Blobs.Stat(ctx, orphanKey); !errorsIsNotFound(err) {
				t.Fatalf("the uncompleted upload survived gc past the grace: %v (%s)", err, rep)
			}
			if n := countObjects(repo.ProjectPrefix(doomed)); n != 0 {
				t.Fatalf("%d objects left under the deleted project after gc (%s)", n, rep)
			}
			if rep.OrphansDeleted < 1 || !strings.Contains(rep.String(), "no row named") {
				t.Fatalf("gc report does not count the orphans: %s", rep)
			}
			v.checkHistory(t)
		})
	}
}

// Attack: fill the coordinator's replication queue (serve
// --replica-s3-bucket) from the sandbox. Claims of packs never uploaded,
// over and over, and claims of packs already indexed queue nothing (a pack
// is queued for copying once verified, once); a pack whose footer lies is
// refused and never reaches the replica (its deletion alone is queued).
// The victim's history stays whole, and every version restores.
func TestHostileCannotFillTheReplicationQueue(t *testing.T) {
	env := testenv.S3(t)
	c := coordtest.Start(t, coordtest.Options{S3: true, Postgres: true, Config: server.Config{
		ReplicaS3Bucket: testenv.NewBucketName(t), ReplicaS3Endpoint: env.Endpoint, ReplicaS3Region: env.Region, ReplicaS3PathStyle: true,
	}})
	v := newVictim(t, c, "replicated-victim")
	a := newAttacker(t, c, v.token)
	ctx := context.Background()
	waitReplicated(t, c)
	queued := func() float64 {
		t.Helper()
		st, err := c.Admin.GetReplicationStatus(ctx, &pb.GetReplicationStatusRequest{})
		if err != nil {
			t.Fatal(err)
		}
		copied := testutil.ToFloat64(c.Server.Metrics.Replicated.WithLabelValues("put")) + testutil.ToFloat64(c.Server.Metrics.Replicated.WithLabelValues("delete"))
		return float64(st.GetObjects()) + copied
	}
	before := queued()

	// 1,000 claims of packs never uploaded, ten times over.
	claims := make([]*pb.PackUpload, 1000)
	for i := range claims {
		claims[i] = &pb.PackUpload{PackId: id.Sum([]byte(fmt.Sprint("never uploaded ", i))).Bytes(), Size: 4096}
	}
	for range 10 {
		if _, err := a.api.CompletePacks(ctx, &pb.CompletePacksRequest{Packs: claims}); err == nil {
			t.Fatal("CompletePacks of packs never uploaded succeeded")
		}
	}
	// Claims of the victim's packs, already indexed (and replicated).
	var indexed []*pb.PackUpload
	for key, size := range objects(t, c.Server.Blobs, repo.ProjectPrefix(v.project)+"packs/") {
		p, _ := repo.ParsePackKey(v.project, key)
		indexed = append(indexed, &pb.PackUpload{PackId: p.Bytes(), Size: size})
	}
	for range 10 {
		if _, err := a.api.CompletePacks(ctx, &pb.CompletePacksRequest{Packs: indexed}); err != nil {
			t.Fatalf("CompletePacks of indexed packs: %v", err)
		}
	}
	if after := queued(); after != before {
		t.Fatalf("claims queued or copied %v objects for the replica", after-before)
	}

	// A pack whose footer lies: refused, deleted, never on the replica.
	garbage := randomBytes(t, 4096)
	w := pack.NewWriter()
	if _, err := w.AddStored(pack.Data, id.Sum([]byte("a chunk the garbage claims to be")), pack.None, len(garbage), garbage); err != nil {
		t.Fatal(err)
	}
	data, lyingID, _, err := w.Finish()
	if err != nil {
		t.Fatal(err)
	}
	_, err = a.upload(data, lyingID)
	wantCode(t, "CompletePacks of a pack whose footer lies", err, codes.InvalidArgument)
	waitReplicated(t, c)
	replica := c.Server.Repo.Store().(interface{ Replica() blobstore.Backend }).Replica()
	if _, err := replica.Stat(ctx, repo.PackKey(v.project, lyingID)); !errors.Is(err, blobstore.ErrNotFound) {
		t.Fatalf("the lying pack on the replica: %v", err)
	}
	v.checkHistory(t)
}
