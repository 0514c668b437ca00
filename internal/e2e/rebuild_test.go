package e2e

import (
	"bytes"
	"crypto/sha256"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/encoding/protojson"
	"google.golang.org/protobuf/types/known/durationpb"

	"github.com/sandkeep/sandkeep/internal/agent"
	"github.com/sandkeep/sandkeep/internal/coordcli"
	"github.com/sandkeep/sandkeep/internal/coordtest"
	"github.com/sandkeep/sandkeep/internal/workspacetest"
	pb "github.com/sandkeep/sandkeep/proto/sandkeep/v1"
)

// TestRebuildFromBucket: a project with synced, rolled-back, uploaded and
// collected versions (numbers with gaps, a pin, limits, a retention) and a
// second project live in the bucket; a third was deleted, a fourth's
// deletion was interrupted. The database is lost; `sandkeep repair rebuild
// --from-bucket` on a coordinator with an empty database brings back the
// first two exactly as they were — versions (numbers, kinds, parents,
// times, pins), every file of every version byte for byte, the head's
// listing, a path's history, the settings — and not the other two. A dry
// run first writes nothing; a second rebuild changes nothing; the old
// tokens are gone, a new one syncs on as version 6.
func TestRebuildFromBucket(t *testing.T) {
	for _, b := range []struct {
		name string
		opts coordtest.Options
	}{
		{"postgres+s3", coordtest.Options{S3: true, Postgres: true}},
		{"sqlite+local", coordtest.Options{}},
	} {
		t.Run(b.name, func(t *testing.T) { testRebuild(t, b.opts) })
	}
}

func testRebuild(t *testing.T, opts coordtest.Options) {
	ctx := t.Context()
	a := coordtest.Start(t, opts)
	pid, token := a.Project(t, "rebuilt")
	ws := filepath.Join(t.TempDir(), "ws")
	writeFile(t, ws, "a.txt", "one\n")
	workspacetest.RandomFile(t, filepath.Join(ws, "data", "big.bin"), 3<<20, 5)
	cfg := agentConfig(a, token, ws, t)
	sync := func(want int64) {
		t.Helper()
		res, err := agent.SyncOnce(ctx, cfg)
		if err != nil || res.Version.GetNumber() != want {
			t.Fatalf("sync: version %d, %v (want %d)", res.Version.GetNumber(), err, want)
		}
	}
	sync(1)
	writeFile(t, ws, "a.txt", "two\n")
	writeFile(t, ws, "b.txt", "bee\n")
	sync(2)
	if err := os.RemoveAll(filepath.Join(ws, "data")); err != nil {
		t.Fatal(err)
	}
	sync(3)
	got(a.Admin.PinVersion(ctx, &pb.PinVersionRequest{ProjectId: pid, Version: 1, Pinned: true}))(t)
	got(a.Admin.RollbackProject(ctx, &pb.RollbackProjectRequest{ProjectId: pid, Version: 2, AgentTimeout: durationpb.New(1)}))(t)
	putFiles(t, a, pid, [2]string{"c.txt", "uploaded\n"})
	got(a.Admin.SetRetention(ctx, &pb.SetRetentionRequest{ProjectId: pid, Policy: &pb.RetentionPolicy{KeepLast: ptrTo(int64(2)), KeepWithin: durationpb.New(0)}}))(t)
	got(a.Admin.SetProjectLimits(ctx, &pb.SetProjectLimitsRequest{ProjectId: pid, Limits: &pb.ProjectLimits{MaxFiles: ptrTo(int64(1000))}}))(t)
	got(a.Admin.CollectGarbage(ctx, &pb.CollectGarbageRequest{ProjectId: pid}))(t)
	if got := versionNumbers(listVersions(t, a, pid)); got != "5 4 1" {
		t.Fatalf("versions after gc: %s, want 5 4 1", got)
	}
	second, _ := a.Project(t, "second")
	putFiles(t, a, second, [2]string{"x/y.txt", "why\n"})
	gone, _ := a.Project(t, "gone")
	putFiles(t, a, gone, [2]string{"g.txt", "gone\n"})
	got(a.Admin.DeleteProject(ctx, &pb.DeleteProjectRequest{ProjectId: gone}))(t)
	half, _ := a.Project(t, "half-deleted")
	putFiles(t, a, half, [2]string{"h.txt", "half\n"})
	// Its deletion began (the mark is written first) and stopped there.
	mark := []byte(`{"deleted_at":"2026-12-06T00:00:00Z"}`)
	if err := a.Server.Blobs.Put(ctx, "deleted/"+half, bytes.NewReader(mark), int64(len(mark))); err != nil {
		t.Fatal(err)
	}
	want := map[string]string{pid: projectState(t, a, pid), second: projectState(t, a, second)}

	// The database is lost: a coordinator on the same bucket, an empty
	// database.
	a.Stop()
	var b *coordtest.Coordinator
	if opts.S3 {
		b = coordtest.Start(t, coordtest.Options{BucketOf: a, Postgres: true})
	} else {
		for _, f := range []string{"sandkeep.db", "sandkeep.db-wal", "sandkeep.db-shm"} {
			_ = os.Remove(filepath.Join(a.DataDir, f))
		}
		b = coordtest.Start(t, coordtest.Options{DataDir: a.DataDir})
	}
	if ps := got(b.Admin.ListProjects(ctx, &pb.ListProjectsRequest{}))(t); len(ps.GetProjects()) != 0 {
		t.Fatalf("the new database has projects: %v", ps)
	}

	dry := rebuildCLI(t, b, "--dry-run")
	if !dry.DryRun || len(dry.Projects) != 2 {
		t.Fatalf("dry run: %+v", dry)
	}
	if ps := got(b.Admin.ListProjects(ctx, &pb.ListProjectsRequest{}))(t); len(ps.GetProjects()) != 0 {
		t.Fatalf("a dry run wrote projects: %v", ps)
	}
	for range 2 { // the second run changes nothing
		rep := rebuildCLI(t, b)
		if len(rep.Projects) != 2 || len(rep.Skipped) != 1 || !strings.HasPrefix(rep.Skipped[0], half) {
			t.Fatalf("rebuild: %+v", rep)
		}
		for _, p := range rep.Projects {
			if len(p.Problems) > 0 || !p.Record || p.BlobsBad > 0 || p.PacksBad > 0 {
				t.Fatalf("rebuild of %s: %+v", p.ID, p)
			}
		}
		for p, w := range want {
			if got := projectState(t, b, p); got != w {
				t.Fatalf("project %s after the rebuild:\n%s\nwant:\n%s", p, got, w)
			}
		}
	}
	for _, p := range []string{gone, half} {
		if _, err := b.Admin.GetProject(ctx, &pb.GetProjectRequest{ProjectId: p}); status.Code(err) != codes.NotFound {
			t.Fatalf("project %s after the rebuild: %v, want NotFound", p, err)
		}
	}

	// Tokens are not rebuilt; a new one syncs on top of the head.
	if _, err := agent.SyncOnce(ctx, agentConfig(b, token, ws, t)); status.Code(err) != codes.Unauthenticated {
		t.Fatalf("the old token after a rebuild: %v, want Unauthenticated", err)
	}
	tok := got(b.Admin.CreateSandboxToken(ctx, &pb.CreateSandboxTokenRequest{ProjectId: pid}))(t)
	cfg = agentConfig(b, tok.GetToken(), ws, t)
	writeFile(t, ws, "after.txt", "after the rebuild\n")
	res, err := agent.SyncOnce(ctx, cfg)
	if err != nil || res.Version.GetNumber() != 6 {
		t.Fatalf("sync after the rebuild: %v, %v (want version 6)", res.Version, err)
	}
	// And the head restores into an empty directory.
	dst := filepath.Join(t.TempDir(), "restored")
	if _, err := agent.Restore(ctx, agent.Config{Remote: cfg.Remote, Workspace: dst, CacheDir: filepath.Join(t.TempDir(), "c"), KeepSetuid: true}, 0); err != nil {
		t.Fatal(err)
	}
	workspacetest.RequireEqual(t, ws, dst)
}

// projectState is everything a user sees of a project, as text: name,
// head, settings, every version, every file of every version with a hash
// of its content, the head's listing and a path's history.
func projectState(t *testing.T, c *coordtest.Coordinator, pid string) string {
	t.Helper()
	ctx := t.Context()
	var sb strings.Builder
	m := protojson.MarshalOptions{}
	p := got(c.Admin.GetProject(ctx, &pb.GetProjectRequest{ProjectId: pid}))(t)
	fmt.Fprintf(&sb, "project %s %q head %d\n", p.GetProject().GetId(), p.GetProject().GetName(), p.GetProject().GetHead())
	fmt.Fprintf(&sb, "retention %s\n", got(m.Marshal(got(c.Admin.GetRetention(ctx, &pb.GetRetentionRequest{ProjectId: pid}))(t)))(t))
	fmt.Fprintf(&sb, "limits %s\n", got(m.Marshal(got(c.Admin.GetProjectLimits(ctx, &pb.GetProjectLimitsRequest{ProjectId: pid}))(t)))(t))
	for _, v := range listVersions(t, c, pid) {
		fmt.Fprintf(&sb, "version %s\n", got(m.Marshal(v))(t))
		files := got(c.Admin.ListFiles(ctx, &pb.ListFilesRequest{ProjectId: pid, Version: v.GetNumber(), PageSize: 10000}))(t)
		for _, f := range files.GetFiles() {
			data, err := readFileRPC(t, c, pid, f.GetPath(), v.GetNumber())
			if err != nil {
				t.Fatalf("read %s at version %d: %v", f.GetPath(), v.GetNumber(), err)
			}
			fmt.Fprintf(&sb, "  %s %x\n", got(m.Marshal(f))(t), sha256.Sum256(data))
		}
	}
	head := got(c.Admin.ListFiles(ctx, &pb.ListFilesRequest{ProjectId: pid, PageSize: 10000}))(t)
	fmt.Fprintf(&sb, "head files %d\n", len(head.GetFiles()))
	if h, err := c.Admin.ListFileHistory(ctx, &pb.ListFileHistoryRequest{ProjectId: pid, Path: "a.txt"}); err == nil {
		fmt.Fprintf(&sb, "history %s\n", got(m.Marshal(h))(t))
	}
	return sb.String()
}

type rebuildReport struct {
	DryRun   bool `json:"dry_run"`
	Projects []struct {
		ID       string   `json:"id"`
		Name     string   `json:"name"`
		Record   bool     `json:"record"`
		Versions int64    `json:"versions"`
		Head     int64    `json:"head"`
		PacksBad int64    `json:"packs_bad"`
		BlobsBad int64    `json:"blobs_bad"`
		Problems []string `json:"problems"`
	} `json:"projects"`
	Skipped []string `json:"skipped"`
}

// rebuildCLI runs `sandkeep repair rebuild --from-bucket --json` against c.
func rebuildCLI(t *testing.T, c *coordtest.Coordinator, args ...string) rebuildReport {
	t.Helper()
	var out, errb bytes.Buffer
	argv := append([]string{"--coordinator", c.Addr, "--admin-token", c.Server.AdminToken, "repair", "rebuild", "--from-bucket", "--json", "--quiet"}, args...)
	if code := coordcli.Main(argv, &out, &errb); code != 0 {
		t.Fatalf("sandkeep %s: exit %d\n%s%s", strings.Join(argv[4:], " "), code, out.String(), errb.String())
	}
	var rep rebuildReport
	if err := json.Unmarshal(out.Bytes(), &rep); err != nil {
		t.Fatalf("rebuild --json: %v\n%s", err, out.String())
	}
	return rep
}

func versionNumbers(vs []*pb.Version) string {
	s := make([]string, len(vs))
	for i, v := range vs {
		s[i] = fmt.Sprint(v.GetNumber())
	}
	return strings.Join(s, " ")
}

func ptrTo[T any](v T) *T { return &v }

// got(f())(t) is f's value, the test failed if f's error is not nil.
func got[T any](v T, err error) func(t *testing.T) T {
	return func(t *testing.T) T {
		t.Helper()
		if err != nil {
			t.Fatal(err)
		}
		return v
	}
}
