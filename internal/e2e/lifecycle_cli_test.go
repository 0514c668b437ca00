package e2e

import (
	"bytes"
	"encoding/json"
	"strings"
	"testing"

	"github.com/sandkeep/sandkeep/internal/coordcli"
	"github.com/sandkeep/sandkeep/internal/coordtest"
)

// TestLifecycleCLI runs the lifecycle commands in-process against a
// coordinator without a provider: policies, leases and cost work; sandbox
// operations say that no provider is configured.
func TestLifecycleCLI(t *testing.T) {
	c := coordtest.Start(t, coordtest.Options{})
	project, _ := c.Project(t, "cli")
	run := func(wantOK bool, args ...string) string {
		t.Helper()
		var out, errb bytes.Buffer
		code := coordcli.Main(append([]string{"--coordinator", c.Addr, "--admin-token", c.Server.AdminToken}, args...), &out, &errb)
		if (code == 0) != wantOK {
			t.Fatalf("sandkeep %s: exit %d\nstdout: %s\nstderr: %s", strings.Join(args, " "), code, out.String(), errb.String())
		}
		return out.String() + errb.String()
	}
	out := run(true, "policy", "set", "--project", project, "--stop-after", "3m", "--destroy-after", "20m", "--notify-grace", "1m", "--webhook", "http://127.0.0.1:9/hook")
	for _, want := range []string{"stop-after", "3m0s", "project", "destroy-after", "20m0s", "http://127.0.0.1:9/hook"} {
		if !strings.Contains(out, want) {
			t.Fatalf("policy set output lacks %q:\n%s", want, out)
		}
	}
	var pol struct {
		Effective map[string]string `json:"effective"`
		Override  map[string]string `json:"override"`
	}
	if err := json.Unmarshal([]byte(run(true, "policy", "show", "--project", project, "--json")), &pol); err != nil {
		t.Fatal(err)
	}
	if pol.Effective["stop_after"] != "3m0s" || pol.Override["destroy_after"] != "20m0s" || pol.Effective["notify_grace"] != "1m0s" || pol.Effective["archive_after"] != "never" {
		t.Fatalf("policy show: %+v", pol)
	}
	if out := run(false, "policy", "set", "--project", project, "--destroy-after", "1m"); !strings.Contains(out, "InvalidArgument") {
		t.Fatalf("contradicting policy: %s", out)
	}
	lease := strings.TrimSpace(strings.Split(run(true, "lease", "acquire", "--project", project, "--ttl", "10m"), "\n")[0])
	if !strings.HasPrefix(lease, "lse_") {
		t.Fatalf("lease acquire printed %q", lease)
	}
	if out := run(true, "lease", "renew", lease, "--ttl", "20m"); !strings.Contains(out, lease) {
		t.Fatalf("lease renew: %s", out)
	}
	run(true, "lease", "release", lease)
	if out := run(false, "lease", "renew", lease); !strings.Contains(out, "FailedPrecondition") {
		t.Fatalf("renew a released lease: %s", out)
	}
	if out := run(true, "sandbox", "list", "--json"); strings.TrimSpace(out) != "[]" {
		t.Fatalf("sandbox list: %s", out)
	}
	if out := run(false, "sandbox", "ensure", "--project", project); !strings.Contains(out, "no provider configured") || !strings.Contains(out, "FailedPrecondition") {
		t.Fatalf("ensure without provider: %s", out)
	}
	var cost struct {
		Total struct {
			TotalDollars float64 `json:"total_dollars"`
		} `json:"total"`
		Projects []any `json:"projects"`
	}
	if err := json.Unmarshal([]byte(run(true, "cost", "--json", "--since", "24h")), &cost); err != nil {
		t.Fatal(err)
	}
	if out := run(true, "cost", "--project", project); !strings.Contains(out, "TOTAL") {
		t.Fatalf("cost table: %s", out)
	}
}
