package e2e

import (
	"context"
	"os"
	"path/filepath"
	"testing"

	"github.com/sandkeep/sandkeep/internal/agent"
	"github.com/sandkeep/sandkeep/internal/coordtest"
	"github.com/sandkeep/sandkeep/internal/workspacetest"
	pb "github.com/sandkeep/sandkeep/proto/sandkeep/v1"
)

// TestSyncOnceFollowsRollback: `sync --once` on a workspace last synced
// before a rollback follows the same merge rule as `run`: what did not
// change on disk since its last sync becomes the rollback's content (the
// rollback is not undone), what changed locally is kept and committed on
// top of the rollback.
func TestSyncOnceFollowsRollback(t *testing.T) {
	c := coordtest.Start(t, coordtest.Options{})
	pid, token := c.Project(t, "sync-once-merge")
	ctx := context.Background()
	ws := filepath.Join(t.TempDir(), "ws")
	cfg := agentConfig(c, token, ws, t)
	sync := func(wantVersion int64, wantChanged bool) {
		t.Helper()
		res, err := agent.SyncOnce(ctx, cfg)
		if err != nil || res.Version.GetNumber() != wantVersion || res.Changed != wantChanged {
			t.Fatalf("sync: version %d changed %v, err %v; want version %d changed %v", res.Version.GetNumber(), res.Changed, err, wantVersion, wantChanged)
		}
	}
	writeWS(t, ws, "a.txt", "one\n")
	writeWS(t, ws, "keep.txt", "same\n")
	sync(1, true)
	v1 := restoreVersion(t, c, token, 1)
	writeWS(t, ws, "a.txt", "two\n")
	writeWS(t, ws, "b.txt", "added in 2\n")
	sync(2, true)

	if _, err := c.Admin.RollbackProject(ctx, &pb.RollbackProjectRequest{ProjectId: pid, Version: 1}); err != nil {
		t.Fatal(err)
	}
	// Untouched since version 2: the sync brings the disk to the rollback
	// and has nothing to commit.
	sync(3, false)
	workspacetest.RequireEqual(t, v1, ws)

	// A rollback again, to 2, with a local change made meanwhile.
	if _, err := c.Admin.RollbackProject(ctx, &pb.RollbackProjectRequest{ProjectId: pid, Version: 2}); err != nil {
		t.Fatal(err)
	}
	writeWS(t, ws, "local.txt", "made locally\n")
	sync(5, true)
	for rel, want := range map[string]string{"a.txt": "two\n", "b.txt": "added in 2\n", "local.txt": "made locally\n", "keep.txt": "same\n"} {
		got, err := os.ReadFile(filepath.Join(ws, rel))
		if err != nil || string(got) != want {
			t.Fatalf("%s = %q, %v; want %q", rel, got, err, want)
		}
	}
	workspacetest.RequireEqual(t, ws, restoreVersion(t, c, token, 0))
}
