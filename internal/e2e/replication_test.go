package e2e

import (
	"bytes"
	"context"
	"net/http"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/sandkeep/sandkeep/internal/agent"
	"github.com/sandkeep/sandkeep/internal/blobstore"
	"github.com/sandkeep/sandkeep/internal/blobstore/blobstoretest"
	"github.com/sandkeep/sandkeep/internal/blobstore/s3store"
	"github.com/sandkeep/sandkeep/internal/coordtest"
	"github.com/sandkeep/sandkeep/internal/id"
	"github.com/sandkeep/sandkeep/internal/repo"
	"github.com/sandkeep/sandkeep/internal/server"
	"github.com/sandkeep/sandkeep/internal/testenv"
	"github.com/sandkeep/sandkeep/internal/workspacetest"
	pb "github.com/sandkeep/sandkeep/proto/sandkeep/v1"
)

// TestReplicationToSecondBucket: two versitygw servers, one the primary
// bucket, the other the replica (--replica-s3-bucket). After a burst of
// syncs, uploads and a rollback, the replication lag drains to 0 and the
// replica holds exactly the primary's objects; deleting a project empties
// its prefix in both. A chunk rotten on the primary is read from the
// replica by `get` and by a restore. Then the primary server stops: `get`,
// a file link and a restore into an empty directory still work, from the
// replica.
func TestReplicationToSecondBucket(t *testing.T) {
	primary, stopPrimary := testenv.OwnS3(t)
	replica, _ := testenv.OwnS3(t)
	t.Setenv("AWS_ACCESS_KEY_ID", primary.AccessKey) // both servers take the same keys
	t.Setenv("AWS_SECRET_ACCESS_KEY", primary.SecretKey)
	bucket, rbucket := testenv.NewBucketName(t), testenv.NewBucketName(t)
	c := coordtest.Start(t, coordtest.Options{Postgres: true, Config: server.Config{
		S3Bucket: bucket, S3Endpoint: primary.Endpoint, S3Region: primary.Region, S3PathStyle: true,
		ReplicaS3Bucket: rbucket, ReplicaS3Endpoint: replica.Endpoint, ReplicaS3Region: replica.Region, ReplicaS3PathStyle: true,
	}})
	ctx := t.Context()
	pid, token := c.Project(t, "replicated")
	ws := filepath.Join(t.TempDir(), "ws")
	workspacetest.Generate(t, ws, workspacetest.Options{SmallFiles: 40, LargeSize: 5 << 20, Seed: 17})
	t.Cleanup(func() { workspacetest.MakeWritable(ws) })
	cfg := agentConfig(c, token, ws, t)
	for i := range 3 {
		writeFile(t, ws, "burst.txt", string(rune('a'+i)))
		if _, err := agent.SyncOnce(ctx, cfg); err != nil {
			t.Fatal(err)
		}
	}
	putFiles(t, c, pid, [2]string{"uploaded.txt", "put while replicated\n"})
	got(c.Admin.RollbackProject(ctx, &pb.RollbackProjectRequest{ProjectId: pid, Version: 3, AgentTimeout: nil}))(t)
	doomed, _ := c.Project(t, "doomed")
	putFiles(t, c, doomed, [2]string{"d.txt", "to be deleted\n"})

	waitReplicated(t, c)
	prim := openBucket(t, bucket, primary)
	repl := openBucket(t, rbucket, replica)
	pObjs, rObjs := objects(t, prim, ""), objects(t, repl, "")
	if len(pObjs) < 10 || !mapsEqual(pObjs, rObjs) {
		for k := range pObjs {
			if _, ok := rObjs[k]; !ok {
				t.Logf("not on the replica: %s", k)
			}
		}
		t.Fatalf("after the lag drained: primary %d objects, replica %d, or they differ", len(pObjs), len(rObjs))
	}
	// check --replica compares both; a pack lost on the replica is named,
	// and --repair copies it again.
	if rep, code := checkCLI(t, c, "--replica"); code != 0 || len(rep.Problems) != 0 {
		t.Fatalf("check --replica after the lag drained: exit %d, %+v", code, rep)
	}
	var lostKey string
	for k := range objects(t, repl, repo.ProjectPrefix(pid)+"packs/") {
		lostKey = k
		break
	}
	if err := repl.Delete(ctx, lostKey); err != nil {
		t.Fatal(err)
	}
	rep, code := checkCLI(t, c, "--replica")
	if code != 1 || len(rep.Problems) != 1 || rep.Problems[0].Kind != repo.ProblemNotReplicated || repo.PackKey(pid, mustParseID(t, rep.Problems[0].Pack)) != lostKey {
		t.Fatalf("check --replica with %s lost on the replica: exit %d, %+v", lostKey, code, rep)
	}
	if rep, code = checkCLI(t, c, "--replica", "--repair"); code != 0 || !rep.Problems[0].Repaired {
		t.Fatalf("check --replica --repair: exit %d, %+v", code, rep)
	}
	waitReplicated(t, c)
	if rep, code := checkCLI(t, c, "--replica"); code != 0 || len(rep.Problems) != 0 {
		t.Fatalf("check --replica after the repair: exit %d, %+v", code, rep)
	}
	st := got(c.Admin.GetReplicationStatus(ctx, &pb.GetReplicationStatusRequest{ProjectId: pid}))(t)
	if !st.GetConfigured() || st.GetObjects() != 0 || st.GetReplica() == "" {
		t.Fatalf("status: %v", st)
	}

	// A deleted project leaves neither bucket holding anything of it.
	if len(objects(t, repl, repo.ProjectPrefix(doomed))) == 0 {
		t.Fatal("the doomed project was never replicated")
	}
	got(c.Admin.DeleteProject(ctx, &pb.DeleteProjectRequest{ProjectId: doomed}))(t)
	waitReplicated(t, c)
	for name, s := range map[string]blobstore.Store{"primary": prim, "replica": repl} {
		if left := objects(t, s, repo.ProjectPrefix(doomed)); len(left) != 0 {
			t.Fatalf("%s keeps %d objects of the deleted project", name, len(left))
		}
		if left := objects(t, s, "deleted/"); len(left) != 0 {
			t.Fatalf("%s keeps deletion marks: %v", name, left)
		}
	}

	// The primary is gone: reads come from the replica.
	head := listVersions(t, c, pid)[0].GetNumber()
	want, err := os.ReadFile(filepath.Join(ws, "burst.txt"))
	if err != nil {
		t.Fatal(err)
	}
	// A chunk rotten on the primary is read from the replica.
	root, _ := id.FromBytes(listVersions(t, c, pid)[0].GetRoot())
	n, err := c.Server.Repo.Lookup(ctx, pid, root, "burst.txt")
	if err != nil {
		t.Fatal(err)
	}
	locs, err := c.Server.Meta.LocateBlobs(ctx, pid, []id.ID{n.Chunks[0].ID})
	if err != nil {
		t.Fatal(err)
	}
	l := locs[n.Chunks[0].ID]
	blobstoretest.FlipByte(t, prim, repo.PackKey(pid, l.PackID), l.Offset)
	if data, err := readFileRPC(t, c, pid, "burst.txt", head); err != nil || !bytes.Equal(data, want) {
		t.Fatalf("get of a chunk rotten on the primary: %q, %v", data, err)
	}
	// And a restore, the primary up, takes that chunk from the replica.
	rotDst := filepath.Join(t.TempDir(), "rot")
	if _, err := agent.Restore(ctx, agent.Config{Remote: cfg.Remote, Workspace: rotDst, CacheDir: filepath.Join(t.TempDir(), "c"), KeepSetuid: true}, head); err != nil {
		t.Fatalf("restore with a chunk rotten on the primary: %v", err)
	}
	t.Cleanup(func() { workspacetest.MakeWritable(rotDst) })
	if b, err := os.ReadFile(filepath.Join(rotDst, "burst.txt")); err != nil || !bytes.Equal(b, want) {
		t.Fatalf("burst.txt restored around a rotten chunk: %q, %v", b, err)
	}

	stopPrimary()
	if data, err := readFileRPC(t, c, pid, "burst.txt", head); err != nil || !bytes.Equal(data, want) {
		t.Fatalf("get with the primary down: %q, %v", data, err)
	}
	if r := httpDo(t, http.MethodGet, createLink(t, c, pid, "uploaded.txt", 4), nil); r.status != http.StatusOK || string(r.body) != "put while replicated\n" {
		t.Fatalf("link with the primary down: %d %q", r.status, r.body)
	}
	dst := filepath.Join(t.TempDir(), "restored")
	if _, err := agent.Restore(ctx, agent.Config{Remote: cfg.Remote, Workspace: dst, CacheDir: filepath.Join(t.TempDir(), "c"), KeepSetuid: true}, 3); err != nil {
		t.Fatalf("restore with the primary down: %v", err)
	}
	t.Cleanup(func() { workspacetest.MakeWritable(dst) })
	if b, err := os.ReadFile(filepath.Join(dst, "burst.txt")); err != nil || string(b) != "c" {
		t.Fatalf("burst.txt restored from the replica: %q, %v", b, err)
	}
}

// waitReplicated waits (bounded) until the replication queue is empty.
func waitReplicated(t *testing.T, c *coordtest.Coordinator) {
	t.Helper()
	deadline := time.Now().Add(60 * time.Second)
	for {
		st := got(c.Admin.GetReplicationStatus(t.Context(), &pb.GetReplicationStatusRequest{}))(t)
		if st.GetObjects() == 0 {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("replication lag did not drain within 60 s: %v", st)
		}
		time.Sleep(50 * time.Millisecond) // polling the coordinator's background worker
	}
}

func openBucket(t *testing.T, bucket string, env testenv.S3Env) *s3store.Store {
	t.Helper()
	s, err := s3store.New(t.Context(), s3store.Config{Bucket: bucket, Endpoint: env.Endpoint, Region: env.Region, PathStyle: true})
	if err != nil {
		t.Fatal(err)
	}
	return s
}

// objects lists the keys under prefix with their sizes.
func objects(t *testing.T, s blobstore.Store, prefix string) map[string]int64 {
	t.Helper()
	out := map[string]int64{}
	if err := s.List(context.Background(), prefix, func(o blobstore.Object) error { out[o.Key] = o.Size; return nil }); err != nil {
		t.Fatal(err)
	}
	return out
}

func mapsEqual(a, b map[string]int64) bool {
	if len(a) != len(b) {
		return false
	}
	for k, v := range a {
		if w, ok := b[k]; !ok || w != v {
			return false
		}
	}
	return true
}

func mustParseID(t *testing.T, s string) id.ID {
	t.Helper()
	x, err := id.Parse(s)
	if err != nil {
		t.Fatal(err)
	}
	return x
}
