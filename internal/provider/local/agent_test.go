package local_test

import (
	"context"
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/sandkeep/sandkeep/internal/control"
	"github.com/sandkeep/sandkeep/internal/coordtest"
	"github.com/sandkeep/sandkeep/internal/provider"
	"github.com/sandkeep/sandkeep/internal/provider/local"
	"github.com/sandkeep/sandkeep/internal/workspacetest"
	pb "github.com/sandkeep/sandkeep/proto/sandkeep/v1"
)

var (
	agentOnce sync.Once
	agentBin  string
	agentErr  error
)

// realAgent builds sandkeep-agent the way `make build` does.
func realAgent(t *testing.T) string {
	t.Helper()
	if testing.Short() {
		t.Skip("builds sandkeep-agent; skipped with -short")
	}
	agentOnce.Do(func() {
		agentBin = filepath.Join(binDir, "sandkeep-agent")
		cmd := exec.Command("go", "build", "-trimpath", "-o", agentBin, "./agent")
		cmd.Dir = moduleRoot()
		cmd.Env = append(os.Environ(), "CGO_ENABLED=0")
		if out, err := cmd.CombinedOutput(); err != nil {
			agentErr = errors.New("build agent: " + err.Error() + "\n" + string(out))
		}
	})
	if agentErr != nil {
		t.Fatal(agentErr)
	}
	return agentBin
}

// TestRealAgent runs sandkeep-agent under the local provider against a real
// coordinator: files written in a sandbox survive its stop (SIGTERM
// flushes), its restart, and its deletion — a new sandbox of the project
// restores them into its empty workspace.
func TestRealAgent(t *testing.T) {
	bin := realAgent(t)
	c := coordtest.Start(t, coordtest.Options{})
	projectID, token := c.Project(t, "local-provider")
	p := newProvider(t, func(cfg *local.Config) {
		cfg.AgentBinary = bin
		cfg.StopTimeout = 60 * time.Second
		// --keep-setuid: the generated workspace holds setuid files and
		// the round trip is compared bit for bit.
		cfg.AgentArgs = []string{"--stop-timeout", "45s", "--keep-setuid"}
	})
	ctx := t.Context()
	spec := provider.CreateSpec{
		Labels: map[string]string{provider.LabelProject: projectID},
		Env:    map[string]string{provider.EnvCoordinator: c.Addr, provider.EnvToken: token},
	}
	dumpLogs := func(ids ...string) {
		if t.Failed() {
			for _, id := range ids {
				b, _ := os.ReadFile(p.LogPath(id))
				t.Logf("agent log of %s:\n%s", id, b)
			}
		}
	}
	// up waits for the agent's control socket to answer.
	up := func(id string) *control.Client {
		t.Helper()
		sock, err := p.Socket(id)
		if err != nil {
			t.Fatal(err)
		}
		cl := control.NewClient(sock)
		deadline := time.Now().Add(60 * time.Second)
		for {
			sctx, cancel := context.WithTimeout(ctx, 2*time.Second)
			st, err := cl.Status(sctx)
			cancel()
			// Ready once past "connecting" and "restoring": the agent opens
			// its socket before it has a coordinator or a workspace.
			if err == nil && st.State != "connecting" && st.State != "restoring" {
				return cl
			}
			if sb, gerr := p.Get(ctx, id); gerr == nil && sb.State == provider.StateError {
				t.Fatalf("agent failed: %s", sb.ErrorReason)
			}
			if time.Now().After(deadline) {
				t.Fatalf("agent of %s did not come up: %v", id, err)
			}
			time.Sleep(20 * time.Millisecond)
		}
	}

	sb, err := p.Create(ctx, spec)
	if err != nil {
		t.Fatal(err)
	}
	id := sb.ID
	defer dumpLogs(id)
	wait(t, p, id, provider.StateStarted)
	cl := up(id)
	// The agent knows its sandbox id (SANDKEEP_SANDBOX_ID, set by the
	// provider) and reports it in its heartbeats.
	waitFor(t, "a heartbeat naming the sandbox", func() bool {
		resp, err := c.Admin.ListAgents(ctx, &pb.ListAgentsRequest{ProjectId: projectID})
		if err != nil {
			t.Fatal(err)
		}
		for _, a := range resp.GetAgents() {
			if a.GetHeartbeat().GetSandboxId() == id {
				return true
			}
		}
		return false
	})
	ws := p.Workspace(id)
	workspacetest.Generate(t, ws, workspacetest.Options{SmallFiles: 30, LargeSize: 1 << 20, Seed: 5})
	t.Cleanup(func() { workspacetest.MakeWritable(ws) })
	v1, err := cl.Flush(ctx, 60*time.Second)
	if err != nil || v1 < 1 {
		t.Fatalf("flush: %d, %v", v1, err)
	}

	// Stop: SIGTERM makes the agent flush what was written since, and exit 0.
	if err := os.WriteFile(filepath.Join(ws, "last-words.txt"), []byte("written just before stop"), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := p.Stop(ctx, id); err != nil {
		t.Fatal(err)
	}
	got := wait(t, p, id, provider.StateStopped)
	if !strings.Contains(got.ProviderState, "exit status 0") {
		t.Fatalf("agent did not exit cleanly: %s", got.ProviderState)
	}
	want := workspacetest.Snapshot(t, ws)
	// The flush on SIGTERM committed the last file.
	if head := headVersion(t, c, projectID); head.GetNumber() <= v1 {
		t.Fatalf("head after Stop: version %d, want > %d", head.GetNumber(), v1)
	}

	// Start: the agent comes back on the same workspace (the head is its
	// base: nothing to restore) and keeps syncing.
	if err := p.Start(ctx, id); err != nil {
		t.Fatal(err)
	}
	cl = up(id)
	if diff := workspacetest.Diff(want, workspacetest.Snapshot(t, ws)); len(diff) > 0 {
		t.Fatalf("workspace changed across a restart: %v", diff)
	}
	if err := os.WriteFile(filepath.Join(ws, "after-restart.txt"), []byte("second life"), 0o644); err != nil {
		t.Fatal(err)
	}
	if _, err := cl.Flush(ctx, 60*time.Second); err != nil {
		t.Fatal(err)
	}
	want = workspacetest.Snapshot(t, ws)

	// Delete: the workspace is gone…
	workspacetest.MakeWritable(ws)
	if err := p.Delete(ctx, id); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(ws); !errors.Is(err, os.ErrNotExist) {
		t.Fatalf("workspace after Delete: %v", err)
	}

	// …and a new sandbox of the project restores it into its empty one.
	sb2, err := p.Create(ctx, spec)
	if err != nil {
		t.Fatal(err)
	}
	defer dumpLogs(sb2.ID)
	wait(t, p, sb2.ID, provider.StateStarted)
	up(sb2.ID) // past "connecting" and "restoring"
	ws2 := p.Workspace(sb2.ID)
	t.Cleanup(func() { workspacetest.MakeWritable(ws2) })
	if diff := workspacetest.Diff(want, workspacetest.Snapshot(t, ws2)); len(diff) > 0 {
		t.Fatalf("restored workspace differs: %v", diff)
	}
	workspacetest.MakeWritable(ws2)
	if err := p.Delete(ctx, sb2.ID); err != nil {
		t.Fatal(err)
	}
}

func headVersion(t *testing.T, c *coordtest.Coordinator, projectID string) *pb.Version {
	t.Helper()
	resp, err := c.Admin.ListVersions(t.Context(), &pb.ListVersionsRequest{ProjectId: projectID})
	if err != nil {
		t.Fatal(err)
	}
	var head *pb.Version
	for _, v := range resp.GetVersions() {
		if v.GetNumber() > head.GetNumber() {
			head = v
		}
	}
	return head
}
