package e2e

import (
	"bytes"
	"encoding/json"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// Item 8: tokens expire by default, are listed without their secrets and
// revoked by id; per-project limits are shown and set.
func TestCLITokensAndLimits(t *testing.T) {
	coord, _ := buildBinaries(t)
	s := serveBinary(t, coord)
	env := append(os.Environ(), "SANDKEEP_COORDINATOR="+s.grpc, "SANDKEEP_DATA="+s.data)
	run := func(args ...string) (string, string, error) {
		cmd := exec.Command(coord, args...)
		cmd.Env = env
		var out, errb bytes.Buffer
		cmd.Stdout, cmd.Stderr = &out, &errb
		err := cmd.Run()
		return out.String(), errb.String(), err
	}
	must := func(args ...string) string {
		t.Helper()
		out, stderr, err := run(args...)
		if err != nil {
			t.Fatalf("sandkeep %v: %v\n%s%s", args, err, out, stderr)
		}
		return out
	}
	project := strings.TrimSpace(must("project", "create", "tokens"))

	// Default expiry: 30 days; the secret alone on stdout, the id on stderr.
	out, stderr, err := run("token", "create", "--project", project, "--note", "ci")
	if err != nil || !strings.HasPrefix(strings.TrimSpace(out), "skt_") || strings.Count(out, "\n") != 1 || !strings.Contains(stderr, "tok_") || !strings.Contains(stderr, "expires") {
		t.Fatalf("token create: %v\nstdout %q\nstderr %q", err, out, stderr)
	}
	secret := strings.TrimSpace(out)
	var created struct {
		Token, ID string
		Expires   *time.Time
	}
	if err := json.Unmarshal([]byte(must("token", "create", "--project", project, "--ttl", "0", "--json")), &created); err != nil || created.Expires != nil || !strings.HasPrefix(created.ID, "tok_") {
		t.Fatalf("token create --ttl 0 --json = %+v, %v; want no expiry", created, err)
	}
	var list []tokenJSONForTest
	if err := json.Unmarshal([]byte(must("token", "list", "--project", project, "--json")), &list); err != nil || len(list) != 2 {
		t.Fatalf("token list --json: %v, %+v", err, list)
	}
	first := list[0]
	if first.Note != "ci" || first.Expires == nil || first.Expires.Sub(first.Created) != 30*24*time.Hour || first.Revoked || first.LastUsed != nil {
		t.Fatalf("listed token = %+v, want note ci expiring 30 days after creation, unused", first)
	}
	if strings.Contains(must("token", "list", "--project", project), secret) {
		t.Fatal("token list shows a secret")
	}
	table := must("token", "list", "--project", project)
	for _, want := range []string{"ID", "EXPIRES", "LAST USED", first.ID, "valid"} {
		if !strings.Contains(table, want) {
			t.Fatalf("token list table lacks %q:\n%s", want, table)
		}
	}
	if out := must("token", "revoke", first.ID); !strings.Contains(out, "revoked "+first.ID) {
		t.Fatalf("token revoke printed %q", out)
	}
	if err := json.Unmarshal([]byte(must("token", "list", "--project", project, "--json")), &list); err != nil || !list[0].Revoked || list[1].Revoked {
		t.Fatalf("after revoke: %+v, %v", list, err)
	}
	if _, stderr, err := run("token", "revoke", "tok_0000000000000000"); err == nil || !strings.Contains(stderr, "not found") {
		t.Fatalf("revoking an unknown id: %v %s", err, stderr)
	}
	// The revoked secret no longer opens a session.
	_, agentBin := buildBinaries(t)
	cmd := exec.Command(agentBin, "sync", "--once", "--workspace", t.TempDir(), "--coordinator", s.grpc, "--cache-dir", filepath.Join(t.TempDir(), "c"))
	cmd.Env = append(os.Environ(), "SANDKEEP_TOKEN="+secret)
	if out, err := cmd.CombinedOutput(); err == nil || !strings.Contains(string(out), "refused the sandbox token from SANDKEEP_TOKEN") || strings.Count(string(out), "rpc error") > 0 {
		t.Fatalf("sync with a revoked token: %v\n%s", err, out)
	}

	// Limits: defaults shown, set, refused when negative.
	var lim map[string]any
	if err := json.Unmarshal([]byte(must("project", "limits", "--project", project, "--json")), &lim); err != nil || lim["max_files"] != float64(5_000_000) || lim["max_depth"] != float64(256) {
		t.Fatalf("project limits --json = %v, %v", lim, err)
	}
	if err := json.Unmarshal([]byte(must("project", "limits", "--project", project, "--max-files", "10", "--json")), &lim); err != nil || lim["max_files"] != float64(10) || lim["max_bytes"] != float64(256<<30) {
		t.Fatalf("project limits --max-files 10 = %v, %v", lim, err)
	}
	if _, stderr, err := run("project", "limits", "--project", project, "--max-depth", "-1"); err == nil || !strings.Contains(stderr, "negative") {
		t.Fatalf("negative limit: %v %s", err, stderr)
	}
}

type tokenJSONForTest struct {
	ID        string     `json:"id"`
	Created   time.Time  `json:"created"`
	Expires   *time.Time `json:"expires"`
	LastUsed  *time.Time `json:"last_used"`
	Note      string     `json:"note"`
	SandboxID string     `json:"sandbox_id"`
	Revoked   bool       `json:"revoked"`
}
