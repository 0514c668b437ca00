package e2e

import (
	"context"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/sandkeep/sandkeep/internal/agent"
	"github.com/sandkeep/sandkeep/internal/coordtest"
	"github.com/sandkeep/sandkeep/internal/workspacetest"
	pb "github.com/sandkeep/sandkeep/proto/sandkeep/v1"
)

// TestAgentOfDeletedProject: deleting a project while its agent runs ends
// the agent's session at once; the agent says in its status that its
// token is refused, keeps running, and leaves the workspace as it is.
func TestAgentOfDeletedProject(t *testing.T) {
	c := coordtest.Start(t, coordtest.Options{})
	pid, token := c.Project(t, "deleted-under-agent")
	ws := filepath.Join(t.TempDir(), "ws")
	writeWS(t, ws, "a.txt", "kept on disk\n")
	a := startAgent(t, c, token, ws, agent.RunOptions{RetryMax: 200 * time.Millisecond}, "")
	a.flush()
	before := workspacetest.Snapshot(t, ws)

	if _, err := c.Admin.DeleteProject(context.Background(), &pb.DeleteProjectRequest{ProjectId: pid}); err != nil {
		t.Fatal(err)
	}
	deadline := time.Now().Add(30 * time.Second)
	for {
		st, err := a.ctl.Status(context.Background())
		if err != nil {
			t.Fatalf("agent status: %v", err)
		}
		if strings.Contains(st.LastError, "refused this agent's token") && !st.CoordinatorUp {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("agent never reported its token refused: %+v", st)
		}
		time.Sleep(20 * time.Millisecond) // polling the agent's status, bounded
	}
	writeWS(t, ws, "b.txt", "written after the deletion\n")
	if _, err := a.ctl.Flush(context.Background(), time.Second); err == nil {
		t.Fatal("flush succeeded for a deleted project")
	}
	after := workspacetest.Snapshot(t, ws)
	delete(after, "b.txt")
	if d := workspacetest.Diff(before, after); len(d) > 0 {
		t.Fatalf("workspace changed after the project was deleted: %v", d)
	}
}
