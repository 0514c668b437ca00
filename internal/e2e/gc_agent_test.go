package e2e

import (
	"context"
	"path/filepath"
	"testing"
	"time"

	"github.com/sandkeep/sandkeep/internal/agent"
	"github.com/sandkeep/sandkeep/internal/coordtest"
	"github.com/sandkeep/sandkeep/internal/gc"
	"github.com/sandkeep/sandkeep/internal/metastore"
	"github.com/sandkeep/sandkeep/internal/workspacetest"
)

// TestAgentHealsAfterGCCollectedItsChunks: a workspace was synced as
// version 1 and left; another sandbox committed version 2 without one of
// its files; retention then dropped version 1 and GC deleted that file's
// chunks. The first workspace's agent index still names them, and its
// base version is gone. Syncing it again (sync --once, and run's final
// flush) must not fail forever or commit a tree naming deleted chunks: the
// coordinator refuses the tree (BLOB_MISSING), the agent drops its index,
// re-reads the files and uploads what is missing. The disk wins on top of
// the head (its base is gone), and the new head restores byte for byte.
func TestAgentHealsAfterGCCollectedItsChunks(t *testing.T) {
	for _, mode := range []string{"sync-once", "run"} {
		t.Run(mode, func(t *testing.T) {
			c := coordtest.Start(t, coordtest.Options{})
			pid, token := c.Project(t, "heal-"+mode)
			ctx := context.Background()

			ws1 := filepath.Join(t.TempDir(), "ws1")
			writeWS(t, ws1, "keep.txt", "kept by both\n")
			workspacetest.RandomFile(t, filepath.Join(ws1, "data", "gone.bin"), 3<<20, 7)
			cfg1 := agentConfig(c, token, ws1, t)
			if res, err := agent.SyncOnce(ctx, cfg1); err != nil || res.Version.GetNumber() != 1 {
				t.Fatalf("first sync: %+v, %v", res, err)
			}

			// Another sandbox, never synced from version 1: its disk wins.
			ws2 := filepath.Join(t.TempDir(), "ws2")
			writeWS(t, ws2, "keep.txt", "kept by both\n")
			if res, err := agent.SyncOnce(ctx, agentConfig(c, token, ws2, t)); err != nil || res.Version.GetNumber() != 2 {
				t.Fatalf("second sandbox's sync: %+v, %v", res, err)
			}

			r := c.Server.Repo
			if err := r.SetRetention(ctx, pid, metastore.Retention{KeepLast: 1}); err != nil {
				t.Fatal(err)
			}
			now := time.Now().Add(2 * gc.DefaultGrace)
			for i := range 2 { // condemn, then delete a grace period later
				rep, err := gc.Run(ctx, r, gc.Options{ProjectID: pid, MergeBelow: -1, Now: func() time.Time { return now }})
				if err != nil {
					t.Fatal(err)
				}
				t.Logf("gc %d: %v", i, rep)
				if i == 1 && rep.PacksDeleted == 0 {
					t.Fatalf("gc deleted no pack: %v", rep)
				}
				now = now.Add(gc.DefaultGrace + time.Minute)
			}

			switch mode {
			case "sync-once":
				res, err := agent.SyncOnce(ctx, cfg1)
				if err != nil || !res.Changed || res.Version.GetNumber() != 3 {
					t.Fatalf("sync after gc: %+v, %v", res, err)
				}
			case "run":
				// Stopped at once: start (merge rule), then the final
				// flush, which must end with everything committed.
				stop := make(chan struct{})
				close(stop)
				rctx, cancel := context.WithTimeout(ctx, 60*time.Second)
				defer cancel()
				if err := agent.Run(rctx, stop, cfg1, agent.RunOptions{RetryMax: 200 * time.Millisecond}); err != nil {
					t.Fatalf("run after gc: %v", err)
				}
				if n := headNumber(t, c, pid); n != 3 {
					t.Fatalf("head is %d after run, want 3", n)
				}
			}
			dir := restoreVersion(t, c, token, 0)
			workspacetest.RequireEqual(t, ws1, dir)
		})
	}
}
