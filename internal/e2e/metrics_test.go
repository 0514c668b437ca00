package e2e

import (
	"context"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/sandkeep/sandkeep/internal/agent"
	"github.com/sandkeep/sandkeep/internal/coordtest"
)

func TestMetricsEndpoint(t *testing.T) {
	c := coordtest.Start(t, coordtest.Options{})
	_, token := c.Project(t, "metrics")
	ws := filepath.Join(t.TempDir(), "ws")
	if err := os.MkdirAll(ws, 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(ws, "f.txt"), []byte("metrics"), 0o644); err != nil {
		t.Fatal(err)
	}
	if _, err := agent.SyncOnce(context.Background(), agentConfig(c, token, ws, t)); err != nil {
		t.Fatal(err)
	}
	resp, err := http.Get(c.HTTP + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(resp.Body)
	for _, want := range []string{
		`sandkeep_commits_total{kind="sync",result="ok"} 1`,
		`sandkeep_packs_completed_total{result="ok"} 1`,
		`sandkeep_chunks_asked_total`,
		`go_goroutines`,
	} {
		if !strings.Contains(string(body), want) {
			t.Errorf("/metrics lacks %q", want)
		}
	}
}
