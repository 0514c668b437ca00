package e2e

import (
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"google.golang.org/protobuf/types/known/durationpb"

	"github.com/sandkeep/sandkeep/internal/agent"
	"github.com/sandkeep/sandkeep/internal/coordtest"
	"github.com/sandkeep/sandkeep/internal/server"
	"github.com/sandkeep/sandkeep/internal/sessions"
	"github.com/sandkeep/sandkeep/internal/workspacetest"
	pb "github.com/sandkeep/sandkeep/proto/sandkeep/v1"
)

// TestReplicasRouteCommands runs three coordinator replicas on one
// PostgreSQL database and one bucket: an agent connected to replica A is
// flushed (through B and through C), rolled back and given a put file
// through replica B (the commands go through the database's mailbox); the
// replicas list each other; when A dies, an agent given both addresses reconnects to B and
// its next flush, through B, succeeds.
func TestReplicasRouteCommands(t *testing.T) {
	key := strings.Repeat("ab", 32)
	a := coordtest.Start(t, coordtest.Options{S3: true, Postgres: true, Config: server.Config{SecretKey: key}})
	b := coordtest.Start(t, coordtest.Options{ReplicaOf: a, Config: server.Config{SecretKey: key}})
	c3 := coordtest.Start(t, coordtest.Options{ReplicaOf: a, Config: server.Config{SecretKey: key}})
	ctx := context.Background()
	pid, token := a.Project(t, "replicated")

	// The three replicas are in the registry, each seen by the others.
	for _, c := range []*coordtest.Coordinator{a, b, c3} {
		resp, err := c.Admin.ListReplicas(ctx, &pb.ListReplicasRequest{})
		if err != nil || len(resp.GetReplicas()) != 3 {
			t.Fatalf("replicas seen from %s: %v, %v", c.Addr, resp, err)
		}
		leaders := 0
		for _, r := range resp.GetReplicas() {
			if r.GetLeader() {
				leaders++
			}
		}
		if leaders > 1 {
			t.Fatalf("%d leaders: %v", leaders, resp)
		}
	}

	// An agent on replica A only, with both addresses (A first).
	ws := filepath.Join(t.TempDir(), "ws")
	writeFile(t, ws, "a.txt", "a1")
	cfg := agentConfig(a, token, ws, t)
	cfg.Remote.Addr = a.Addr + "," + b.Addr
	ag := startAgentConfig(t, cfg, agent.RunOptions{Quiet: time.Hour, Cap: time.Hour})
	v1 := ag.flush()

	// Flush through B: routed to A, which holds the stream.
	writeFile(t, ws, "b.txt", "b1")
	resp, err := b.Admin.FlushProject(ctx, &pb.FlushProjectRequest{ProjectId: pid, Timeout: durationpb.New(30 * time.Second)})
	if err != nil || resp.GetVersion() <= v1 {
		t.Fatalf("flush through replica B: %v, %v (version 1 was %d)", resp, err, v1)
	}
	v2 := resp.GetVersion()
	if got, err := readFileRPC(t, b, pid, "b.txt", v2); err != nil || string(got) != "b1" {
		t.Fatalf("b.txt at the version B's flush returned: %q, %v", got, err)
	}

	// And through the third replica.
	writeFile(t, ws, "c.txt", "c1")
	resp3, err := c3.Admin.FlushProject(ctx, &pb.FlushProjectRequest{ProjectId: pid, Timeout: durationpb.New(30 * time.Second)})
	if err != nil || resp3.GetVersion() <= v2 {
		t.Fatalf("flush through replica C: %v, %v (B's flush was %d)", resp3, err, v2)
	}
	if got, err := readFileRPC(t, c3, pid, "c.txt", resp3.GetVersion()); err != nil || string(got) != "c1" {
		t.Fatalf("c.txt at the version C's flush returned: %q, %v", got, err)
	}

	// A put through B: the agent on A applies it.
	put := putFiles(t, b, pid, [2]string{"from-b.txt", "put through replica B"})
	if !put.GetAgent().GetApplied() {
		t.Fatalf("the agent on A did not apply a put made through B: %v", put)
	}
	if got, err := os.ReadFile(filepath.Join(ws, "from-b.txt")); err != nil || string(got) != "put through replica B" {
		t.Fatalf("from-b.txt in the workspace: %q, %v", got, err)
	}

	// A rollback through B: the agent on A follows it.
	rb, err := b.Admin.RollbackProject(ctx, &pb.RollbackProjectRequest{ProjectId: pid, Version: v1, AgentTimeout: durationpb.New(30 * time.Second)})
	if err != nil || !rb.GetAgentConnected() || !rb.GetAgentApplied() {
		t.Fatalf("rollback through replica B: %v, %v", rb, err)
	}
	for _, gone := range []string{"b.txt", "c.txt", "from-b.txt"} {
		if _, err := os.Stat(filepath.Join(ws, gone)); !os.IsNotExist(err) {
			t.Fatalf("%s still in the workspace after rolling back to version %d through B: %v", gone, v1, err)
		}
	}

	// Replica A dies: the agent moves to B, and a flush through B reaches it.
	a.Stop()
	writeFile(t, ws, "after.txt", "written while A is gone")
	var v int64
	deadline := time.Now().Add(60 * time.Second)
	for {
		r, err := b.Admin.FlushProject(ctx, &pb.FlushProjectRequest{ProjectId: pid, Timeout: durationpb.New(10 * time.Second)})
		if err == nil {
			v = r.GetVersion()
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("no flush through B within 60 s of A dying: %v", err)
		}
		// The agent reconnects with backoff (RetryMax 1 s); until then B
		// answers "no agent", fast.
		time.Sleep(100 * time.Millisecond) // polling the agent's reconnection, an external process's state
	}
	if got, err := readFileRPC(t, b, pid, "after.txt", v); err != nil || string(got) != "written while A is gone" {
		t.Fatalf("after.txt in the version flushed through B: %q, %v", got, err)
	}
	resp2, err := b.Admin.ListReplicas(ctx, &pb.ListReplicasRequest{})
	if err != nil || len(resp2.GetReplicas()) != 2 || !hasReplica(resp2, resp2.GetSelf()) {
		t.Fatalf("replicas after A stopped: %v, %v", resp2, err)
	}
	// Every version reads back from B, none lost or doubled.
	vs := listVersions(t, b, pid)
	for i, x := range vs {
		if want := int64(len(vs) - i); x.GetNumber() != want {
			t.Fatalf("versions %v: not a gapless sequence", vs)
		}
	}
}

// TestReplicasDestroyThroughB: a sandbox made through replica A, its agent
// connected to A, is destroyed through replica B. B's flush before the
// destroy reaches the agent through the database's mailbox, so the file
// written just before is in the head; nothing is reported lost, and the
// sandbox is gone. Both replicas call one provider (a provider is a
// service every replica reaches; the local one is shared in-process).
func TestReplicasDestroyThroughB(t *testing.T) {
	key := strings.Repeat("cd", 32)
	withKey := func(cfg *server.Config) { cfg.SecretKey = key }
	a := startLifecycleOn(t, coordtest.Options{S3: true, Postgres: true}, withKey)
	b := startLifecycleOn(t, coordtest.Options{ReplicaOf: a.c}, func(cfg *server.Config) {
		withKey(cfg)
		cfg.Lifecycle.ProviderInstance = a.prov
	})
	project, _ := a.c.Project(t, "destroyed-through-b")
	sb := a.ensure(project).GetSandbox()
	ws := a.prov.Workspace(sb.GetProviderId())
	t.Cleanup(func() { workspacetest.MakeWritable(ws) })
	writeFile(t, ws, "first.txt", "synced on A")
	a.synced(project, sb)

	// The agent's stream is on A, not B.
	for _, c := range []struct {
		name string
		e    *lcEnv
		want int
	}{{"A", a, 1}, {"B", b, 0}} {
		if n := connectedAgents(c.e.c.Server.Sessions.Agents(project)); n != c.want {
			t.Fatalf("agent streams of the project on replica %s: %d, want %d", c.name, n, c.want)
		}
	}

	writeFile(t, ws, "last.txt", "written just before the destroy")
	ctx, cancel := context.WithTimeout(t.Context(), 2*time.Minute)
	defer cancel()
	d, err := b.lc.DestroySandbox(ctx, &pb.DestroySandboxRequest{SandboxId: sb.GetId()})
	if err != nil {
		t.Fatalf("destroy through replica B: %v", err)
	}
	if d.GetSandbox().GetState() != "destroyed" || d.GetLost() != "" {
		t.Fatalf("destroy through B: state %s, lost %q", d.GetSandbox().GetState(), d.GetLost())
	}
	head := headOf(t, b.c, project)
	if got, err := readFileRPC(t, b.c, project, "last.txt", head); err != nil || string(got) != "written just before the destroy" {
		t.Fatalf("last.txt in the head (%d) after the destroy through B: %q, %v", head, got, err)
	}
	if _, err := os.Stat(a.prov.Dir(sb.GetProviderId())); !os.IsNotExist(err) {
		t.Fatalf("directory of the sandbox destroyed through B: %v", err)
	}
	// A, which made it, sees it destroyed too (one registry).
	if got := a.sandbox(sb.GetId()); got.GetState() != "destroyed" || got.GetVerifiedVersion() != head {
		t.Fatalf("the sandbox seen from A: state %s verified %d head %d", got.GetState(), got.GetVerifiedVersion(), head)
	}
}

func connectedAgents(infos []sessions.Info) int {
	n := 0
	for _, i := range infos {
		if i.Connected {
			n++
		}
	}
	return n
}

func hasReplica(resp *pb.ListReplicasResponse, id string) bool {
	for _, r := range resp.GetReplicas() {
		if r.GetId() == id {
			return true
		}
	}
	return false
}
