package e2e

import (
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
)

func TestInstallScript(t *testing.T) {
	_, agentBin := buildBinaries(t)
	script := filepath.Join(moduleRoot(t), "install.sh")
	run := func(args ...string) (string, error) {
		out, err := exec.Command("sh", append([]string{script}, args...)...).CombinedOutput()
		return string(out), err
	}
	tests := []struct {
		name    string
		source  func(t *testing.T) string
		boot    bool
		wantErr string
	}{
		{"local path", func(t *testing.T) string { return agentBin }, false, ""},
		{"local path with boot wiring", func(t *testing.T) string { return agentBin }, true, ""},
		{"url", func(t *testing.T) string {
			srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
				http.ServeFile(w, r, agentBin)
			}))
			t.Cleanup(srv.Close)
			return srv.URL + "/sandkeep-agent"
		}, false, ""},
		{"missing file", func(t *testing.T) string { return filepath.Join(t.TempDir(), "nope") }, false, "no such file"},
		{"not the agent", func(t *testing.T) string {
			p := filepath.Join(t.TempDir(), "fake")
			if err := os.WriteFile(p, []byte("#!/bin/sh\necho hello\n"), 0o755); err != nil {
				t.Fatal(err)
			}
			return p
		}, false, "is not sandkeep-agent"},
		{"url that 404s", func(t *testing.T) string {
			srv := httptest.NewServer(http.NotFoundHandler())
			t.Cleanup(srv.Close)
			return srv.URL + "/x"
		}, false, ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			prefix := filepath.Join(t.TempDir(), "bin")
			args := []string{"--prefix", prefix}
			if tt.boot {
				args = append(args, "--boot")
			}
			out, err := run(append(args, tt.source(t))...)
			installed := filepath.Join(prefix, "sandkeep-agent")
			if tt.name == "url that 404s" {
				if err == nil {
					t.Fatalf("install from a 404 succeeded: %s", out)
				}
				if _, serr := os.Stat(installed); serr == nil {
					t.Fatal("a failed download left a binary behind")
				}
				return
			}
			if tt.wantErr != "" {
				if err == nil || !strings.Contains(out, tt.wantErr) {
					t.Fatalf("want failure mentioning %q, got err=%v out=%s", tt.wantErr, err, out)
				}
				if _, serr := os.Stat(installed); serr == nil {
					t.Fatal("a refused source was installed")
				}
				return
			}
			if err != nil {
				t.Fatalf("install: %v\n%s", err, out)
			}
			v, err := exec.Command(installed, "--version").CombinedOutput()
			if err != nil || !strings.Contains(string(v), "sandkeep-agent") {
				t.Fatalf("installed agent does not run: %v %s", err, v)
			}
			ep := filepath.Join(prefix, "sandkeep-entrypoint")
			_, serr := os.Stat(ep)
			if tt.boot != (serr == nil) {
				t.Fatalf("entrypoint installed=%v, want %v", serr == nil, tt.boot)
			}
			if tt.boot {
				if out, err := exec.Command("sh", "-n", ep).CombinedOutput(); err != nil {
					t.Fatalf("entrypoint is not valid sh: %v %s", err, out)
				}
			}
		})
	}
}
