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
	pb "github.com/sandkeep/sandkeep/proto/sandkeep/v1"
)

// TestReplicasRouteCommands runs two coordinator replicas on one
// PostgreSQL database and one bucket: an agent connected to replica A is
// flushed, rolled back and given a put file through replica B (the
// commands go through the database's mailbox); both replicas list each
// other; when A dies, an agent given both addresses reconnects to B and
// its next flush, through B, succeeds.
func TestReplicasRouteCommands(t *testing.T) {
	key := strings.Repeat("ab", 32)
	a := coordtest.Start(t, coordtest.Options{S3: true, Postgres: true, Config: server.Config{SecretKey: key}})
	b := coordtest.Start(t, coordtest.Options{ReplicaOf: a, Config: server.Config{SecretKey: key}})
	ctx := context.Background()
	pid, token := a.Project(t, "replicated")

	// Both replicas are in the registry, each named by the other.
	for _, c := range []*coordtest.Coordinator{a, b} {
		resp, err := c.Admin.ListReplicas(ctx, &pb.ListReplicasRequest{})
		if err != nil || len(resp.GetReplicas()) != 2 {
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
	for _, gone := range []string{"b.txt", "from-b.txt"} {
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
	if err != nil || len(resp2.GetReplicas()) != 1 || resp2.GetReplicas()[0].GetId() != resp2.GetSelf() {
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
