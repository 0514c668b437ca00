package e2e

import (
	"context"
	"os"
	"path/filepath"
	"testing"

	"github.com/sandkeep/sandkeep/internal/agent"
	"github.com/sandkeep/sandkeep/internal/coordtest"
	"github.com/sandkeep/sandkeep/internal/workspacetest"
)

// restoreHeadAndCompare restores the head into a new dir and requires it
// equal to ws.
func restoreHeadAndCompare(t *testing.T, c *coordtest.Coordinator, token, ws string) {
	t.Helper()
	dir := filepath.Join(t.TempDir(), "check")
	t.Cleanup(func() { workspacetest.MakeWritable(dir) })
	cfg := agentConfig(c, token, dir, t)
	if _, err := agent.Restore(context.Background(), cfg, 0); err != nil {
		t.Fatalf("restore head: %v", err)
	}
	workspacetest.RequireEqual(t, ws, dir)
}

func TestRunSyncsAndFlushes(t *testing.T) {
	for _, poll := range []bool{false, true} {
		name := "inotify"
		if poll {
			name = "poll"
		}
		t.Run(name, func(t *testing.T) {
			c := coordtest.Start(t, coordtest.Options{})
			_, token := c.Project(t, "run-"+name)
			ws := filepath.Join(t.TempDir(), "ws")
			if err := os.MkdirAll(ws, 0o755); err != nil {
				t.Fatal(err)
			}
			a := startAgent(t, c, token, ws, agent.RunOptions{ForcePoll: poll, PollInterval: 50e6}, "")
			write := func(rel, data string) {
				p := filepath.Join(ws, rel)
				if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
					t.Fatal(err)
				}
				if err := os.WriteFile(p, []byte(data), 0o644); err != nil {
					t.Fatal(err)
				}
			}
			write("a.txt", "hello")
			write("a/b/c/f", "deep")
			v1 := a.flush()
			if v1 < 1 {
				t.Fatalf("flush returned version %d", v1)
			}
			restoreHeadAndCompare(t, c, token, ws)

			// Editor atomic save, directory rename, delete a tree.
			write("a.txt.swp", "new content")
			if err := os.Rename(filepath.Join(ws, "a.txt.swp"), filepath.Join(ws, "a.txt")); err != nil {
				t.Fatal(err)
			}
			if err := os.Rename(filepath.Join(ws, "a/b"), filepath.Join(ws, "moved")); err != nil {
				t.Fatal(err)
			}
			write("big/x/1", "1")
			write("big/x/2", "2")
			v2 := a.flush()
			if v2 <= v1 {
				t.Fatalf("flush after changes returned %d, want > %d", v2, v1)
			}
			restoreHeadAndCompare(t, c, token, ws)
			if err := os.RemoveAll(filepath.Join(ws, "big")); err != nil {
				t.Fatal(err)
			}
			a.flush()
			restoreHeadAndCompare(t, c, token, ws)

			// A flush with nothing changed returns the same version.
			v3 := a.flush()
			if v4 := a.flush(); v4 != v3 {
				t.Fatalf("idle flushes returned %d then %d", v3, v4)
			}
			write("last.txt", "written just before SIGTERM")
			if err := a.stopGracefully(); err != nil {
				t.Fatalf("graceful stop: %v", err)
			}
			restoreHeadAndCompare(t, c, token, ws)
		})
	}
}
