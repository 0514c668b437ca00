package e2e

import (
	"bytes"
	"flag"
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"

	"github.com/sandkeep/sandkeep/internal/agentcli"
	"github.com/sandkeep/sandkeep/internal/coordcli"
	"github.com/sandkeep/sandkeep/internal/coordtest"
)

// go test ./internal/e2e -run TestGoldenCLI -update rewrites the files.
var update = flag.Bool("update", false, "rewrite the golden files of TestGoldenCLI")

// normalizers replace what changes from run to run (ids, times, sizes of
// compressed data, durations, addresses) with placeholders, so a golden
// file shows the shape of an output and any change to it is a diff.
var normalizers = []struct {
	re   *regexp.Regexp
	with string
}{
	{regexp.MustCompile(`prj_[a-z0-9]+`), "prj_ID"},
	{regexp.MustCompile(`sbx_[a-z0-9]+`), "sbx_ID"},
	{regexp.MustCompile(`tok_[0-9a-f]+`), "tok_ID"},
	{regexp.MustCompile(`lse_[a-z0-9]+`), "lse_ID"},
	{regexp.MustCompile(`skt_[A-Za-z0-9_-]+`), "skt_SECRET"},
	{regexp.MustCompile(`\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(\.\d+)?(Z|[+-]\d\d:\d\d)`), "TIME"},
	{regexp.MustCompile(`\d{4}-\d\d-\d\d \d\d:\d\d:\d\d`), "TIME"},
	{regexp.MustCompile(`"root": "[0-9a-f]{64}"`), `"root": "HASH"`},
	{regexp.MustCompile(`blake3(-chunks)?:[0-9a-f]{64}`), "blake3:HASH"},
	{regexp.MustCompile(`127\.0\.0\.1:\d+`), "127.0.0.1:PORT"},
	{regexp.MustCompile(`\(go\d+\.\d+[^)]*\)`), "(GO)"},
	{regexp.MustCompile(`"go": "go[^"]*"`), `"go": "GO"`},
	{regexp.MustCompile(`in \d+(\.\d+)?(ms|µs|s)\b`), "in DURATION"},
	{regexp.MustCompile(`"seconds": [0-9.e-]+`), `"seconds": N`},
	{regexp.MustCompile(`\(\d+ bytes uploaded\)`), "(N bytes uploaded)"},
	{regexp.MustCompile(`"bytes_uploaded": \d+`), `"bytes_uploaded": N`},
	{regexp.MustCompile(`"bytes_downloaded": \d+`), `"bytes_downloaded": N`},
	// Stored sizes include version records, which hold times.
	{regexp.MustCompile(`"bytes_(freed|before|after|condemned)": \d+`), `"bytes_$1": N`},
	{regexp.MustCompile(`\b\d+(\.\d+)? (B|KiB|MiB)\b`), "SIZE"},
	{regexp.MustCompile(`\(\d+ downloaded\)`), "(N downloaded)"},
	{regexp.MustCompile(`sig=[A-Za-z0-9_-]+`), "sig=SIG"},
	{regexp.MustCompile(`expires=\d+`), "expires=UNIX"},
	{regexp.MustCompile(`exp=\d+`), "exp=UNIX"},
	{regexp.MustCompile(`pid \d+`), "pid PID"},
	{regexp.MustCompile(`/tmp/[^\s"]+`), "DIR"},
}

func normalize(s string) string {
	for _, n := range normalizers {
		s = n.re.ReplaceAllString(s, n.with)
	}
	return s
}

// golden compares got with testdata/golden/NAME.txt (or rewrites it).
func golden(t *testing.T, name, got string) {
	t.Helper()
	path := filepath.Join("testdata", "golden", name+".txt")
	got = normalize(got)
	if *update {
		if err := os.WriteFile(path, []byte(got), 0o644); err != nil {
			t.Fatal(err)
		}
		return
	}
	want, err := os.ReadFile(path)
	if err != nil {
		t.Fatalf("%v (run with -update to create it)", err)
	}
	if string(want) != got {
		t.Errorf("%s differs from %s (run with -update if the change is meant):\n--- want\n%s\n--- got\n%s", name, path, want, got)
	}
}

// TestGoldenCLI runs every command that prints a result, in text and JSON,
// against one coordinator and compares stdout, stderr and the exit code
// with testdata/golden/*.txt.
func TestGoldenCLI(t *testing.T) {
	c := coordtest.Start(t, coordtest.Options{})
	ws := t.TempDir()
	cache := t.TempDir()
	var project, token string
	admin := func(name string, wantCode int, args ...string) string {
		t.Helper()
		var out, errb bytes.Buffer
		code := coordcli.Main(append([]string{"--coordinator", c.Addr, "--admin-token", c.Server.AdminToken}, args...), &out, &errb)
		if code != wantCode {
			t.Fatalf("sandkeep %s: exit %d, want %d\n%s%s", strings.Join(args, " "), code, wantCode, out.String(), errb.String())
		}
		if name != "" {
			golden(t, name, fmt.Sprintf("$ sandkeep %s\n[exit %d]\n--- stdout\n%s--- stderr\n%s", strings.Join(args, " "), code, out.String(), errb.String()))
		}
		return out.String()
	}
	agentRun := func(name string, wantCode int, args ...string) string {
		t.Helper()
		var out, errb bytes.Buffer
		code := agentcli.Main(append([]string{"--coordinator", c.Addr, "--token", token, "--cache-dir", cache}, args...), &out, &errb)
		if code != wantCode {
			t.Fatalf("sandkeep-agent %s: exit %d, want %d\n%s%s", strings.Join(args, " "), code, wantCode, out.String(), errb.String())
		}
		if name != "" {
			shown := strings.ReplaceAll(strings.Join(args, " "), ws, "WS")
			golden(t, name, strings.ReplaceAll(fmt.Sprintf("$ sandkeep-agent %s\n[exit %d]\n--- stdout\n%s--- stderr\n%s", shown, code, out.String(), errb.String()), ws, "WS"))
		}
		return out.String()
	}

	project = strings.TrimSpace(admin("project-create", 0, "project", "create", "golden"))
	admin("project-create-json", 0, "project", "create", "golden-json", "--json")
	token = strings.TrimSpace(admin("", 0, "token", "create", "--project", project, "--note", "golden"))
	admin("project-list", 0, "project", "list")
	admin("project-list-json", 0, "project", "list", "--json")
	admin("project-limits", 0, "project", "limits", "--project", project)
	admin("project-limits-json", 0, "project", "limits", "--project", project, "--json")
	admin("token-create", 0, "token", "create", "--project", project, "--ttl", "1h")
	spare := admin("token-create-json", 0, "token", "create", "--project", project, "--json")
	spareID := regexp.MustCompile(`tok_[0-9a-f]+`).FindString(spare)
	admin("token-revoke-json", 0, "token", "revoke", spareID, "--json")
	admin("token-list", 0, "token", "list", "--project", project)
	admin("token-list-json", 0, "token", "list", "--project", project, "--json")

	if err := os.WriteFile(filepath.Join(ws, "a.txt"), []byte("hello\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	agentRun("agent-sync", 0, "sync", "--once", "--workspace", ws)
	if err := os.MkdirAll(filepath.Join(ws, "src"), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(ws, "src", "main.go"), []byte("package main\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	agentRun("agent-sync-json", 0, "sync", "--once", "--workspace", ws, "--json")
	agentRun("agent-sync-unchanged", 0, "sync", "--once", "--workspace", ws)
	agentRun("agent-restore", 0, "restore", "--workspace", filepath.Join(t.TempDir(), "r1"))
	agentRun("agent-restore-json", 0, "restore", "--workspace", filepath.Join(t.TempDir(), "r2"), "--version", "1", "--json")
	agentRun("agent-restore-no-version", 1, "restore", "--workspace", filepath.Join(t.TempDir(), "r3"), "--version", "999")
	agentRun("agent-restore-no-version-json", 1, "restore", "--workspace", filepath.Join(t.TempDir(), "r4"), "--version", "999", "--json")

	admin("versions", 0, "versions", "--project", project)
	admin("versions-json", 0, "versions", "--project", project, "--json")
	admin("files", 0, "files", "--project", project)
	admin("files-json", 0, "files", "--project", project, "--json")
	admin("diff", 0, "diff", "--project", project, "1", "2")
	admin("diff-json", 0, "diff", "--project", project, "1", "2", "--json")
	admin("history", 0, "history", "--project", project, "src/main.go")
	admin("history-json", 0, "history", "--project", project, "src/main.go", "--json")
	admin("history-never", 0, "history", "--project", project, "nope.txt")
	admin("get", 0, "get", "--project", project, "a.txt")
	admin("get-no-version", 1, "get", "--project", project, "a.txt", "--version", "999")
	admin("version-pin", 0, "version", "pin", "--project", project, "--version", "1")
	admin("versions-pinned", 0, "versions", "--project", project)
	admin("version-unpin-json", 0, "version", "unpin", "--project", project, "--version", "1", "--json")
	admin("version-pin-json", 0, "version", "pin", "--project", project, "--version", "1", "--json")
	admin("link-json", 0, "link", "--project", project, "a.txt", "--json")
	admin("retention-set-json", 0, "retention", "set", "--project", project, "--keep-last", "10", "--json")
	admin("rollback", 0, "rollback", "--project", project, "--version", "1", "--wait", "0s")
	admin("rollback-json", 0, "rollback", "--project", project, "--version", "2", "--wait", "0s", "--json")
	admin("retention-show", 0, "retention", "show", "--project", project)
	admin("retention-show-json", 0, "retention", "show", "--project", project, "--json")
	admin("gc", 0, "gc", "--project", project)
	admin("gc-json", 0, "gc", "--project", project, "--json")
	admin("policy-show", 0, "policy", "show", "--project", project)
	admin("policy-show-json", 0, "policy", "show", "--project", project, "--json")
	admin("policy-set-short-stop", 0, "policy", "set", "--project", project, "--stop-after", "30s", "--destroy-after", "1m")
	admin("lease-acquire-json", 0, "lease", "acquire", "--project", project, "--json")
	admin("lease-list", 0, "lease", "list", "--project", project)
	admin("lease-list-json", 0, "lease", "list", "--json")
	lease := regexp.MustCompile(`lse_[a-z0-9]+`).FindString(admin("", 0, "lease", "list", "--project", project))
	admin("lease-renew-json", 0, "lease", "renew", lease, "--json")
	admin("lease-release", 0, "lease", "release", lease)
	admin("cost", 0, "cost", "--project", project)
	admin("sandbox-list-json", 0, "sandbox", "list", "--json")
	admin("sandbox-ensure-no-provider", 1, "sandbox", "ensure", "--project", project)
	admin("sandbox-ensure-no-provider-json", 1, "sandbox", "ensure", "--project", project, "--json")
	admin("version", 0, "version")
	admin("version-json", 0, "version", "--json")
	admin("simulate-json", 0, "simulate", "--synthetic", "--seed", "1", "--json")
	agentRun("agent-version", 0, "version")
	admin("project-delete-json", 0, "project", "delete", project, "--json")
}

// Errors that name the next step, each checked against what it says.
func TestCLIErrorsSayWhatToDo(t *testing.T) {
	c := coordtest.Start(t, coordtest.Options{})
	project, _ := c.Project(t, "errors")
	dir := t.TempDir()
	run := func(env map[string]string, args ...string) (int, string) {
		t.Helper()
		for k, v := range env {
			t.Setenv(k, v)
		}
		var out, errb bytes.Buffer
		code := coordcli.Main(args, &out, &errb)
		return code, out.String() + errb.String()
	}
	tests := []struct {
		name string
		env  map[string]string
		args []string
		want []string
	}{
		{"coordinator unreachable", nil, []string{"--coordinator", "127.0.0.1:1", "--admin-token", "x", "project", "list"},
			[]string{"cannot reach the coordinator at 127.0.0.1:1", "is `sandkeep serve` running there?", "--coordinator"}},
		{"coordinator unreachable, from the environment", map[string]string{"SANDKEEP_COORDINATOR": "127.0.0.1:1"}, []string{"--admin-token", "x", "project", "list"},
			[]string{"cannot reach the coordinator at 127.0.0.1:1", "SANDKEEP_COORDINATOR"}},
		{"wrong admin token from the flag", nil, []string{"--coordinator", c.Addr, "--admin-token", "ska_wrong", "project", "list"},
			[]string{"Unauthenticated", "read from --admin-token"}},
		{"wrong admin token from the environment", map[string]string{"SANDKEEP_ADMIN_TOKEN": "ska_wrong"}, []string{"--coordinator", c.Addr, "project", "list"},
			[]string{"Unauthenticated", "read from SANDKEEP_ADMIN_TOKEN"}},
		{"no admin token file", nil, []string{"--coordinator", c.Addr, "--data", dir, "project", "list"},
			[]string{filepath.Join(dir, "admin.token") + " not found", "SANDKEEP_ADMIN_TOKEN"}},
		{"missing version", nil, []string{"--coordinator", c.Addr, "--admin-token", c.Server.AdminToken, "files", "--project", project, "--version", "7"},
			[]string{"version 7 of project", "it has no versions yet"}},
		{"no double gRPC prefix", nil, []string{"--coordinator", c.Addr, "--admin-token", c.Server.AdminToken, "files", "--project", "prj_nope"},
			[]string{"NotFound"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Setenv("SANDKEEP_COORDINATOR", "")
			t.Setenv("SANDKEEP_ADMIN_TOKEN", "")
			os.Unsetenv("SANDKEEP_COORDINATOR")
			os.Unsetenv("SANDKEEP_ADMIN_TOKEN")
			code, out := run(tt.env, tt.args...)
			if code == 0 {
				t.Fatalf("exit 0: %s", out)
			}
			for _, w := range tt.want {
				if !strings.Contains(out, w) {
					t.Errorf("output lacks %q:\n%s", w, out)
				}
			}
			if strings.Contains(out, "rpc error: code =") {
				t.Errorf("a raw gRPC error reached the user:\n%s", out)
			}
		})
	}
	// The agent names the token's source and the command that makes one.
	for _, src := range []struct{ name, flag, env string }{{"--token", "skt_wrong", ""}, {"SANDKEEP_TOKEN", "", "skt_wrong"}} {
		t.Run("agent token from "+src.name, func(t *testing.T) {
			args := []string{"--coordinator", c.Addr, "--cache-dir", t.TempDir(), "sync", "--once", "--workspace", t.TempDir()}
			if src.flag != "" {
				args = append([]string{"--token", src.flag}, args...)
			}
			t.Setenv("SANDKEEP_TOKEN", src.env)
			var out, errb bytes.Buffer
			if code := agentcli.Main(args, &out, &errb); code == 0 {
				t.Fatal("sync with a wrong token succeeded")
			}
			for _, w := range []string{"refused the sandbox token from " + src.name, "sandkeep token create"} {
				if !strings.Contains(errb.String(), w) {
					t.Errorf("agent error lacks %q: %s", w, errb.String())
				}
			}
			if strings.Contains(errb.String(), "rpc error: code =") {
				t.Errorf("a raw gRPC error reached the user: %s", errb.String())
			}
		})
	}
}
