package e2e

import (
	"context"
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
	// Without the admin token /metrics (which names every project) is refused.
	for _, auth := range []string{"", "Bearer " + token, "Bearer ska_nonsense"} {
		req, _ := http.NewRequest(http.MethodGet, c.HTTP+"/metrics", nil)
		if auth != "" {
			req.Header.Set("Authorization", auth)
		}
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if resp.StatusCode != http.StatusUnauthorized {
			t.Fatalf("/metrics with authorization %q: %d, want 401", auth, resp.StatusCode)
		}
	}
	body := []byte(c.Metrics(t))
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
