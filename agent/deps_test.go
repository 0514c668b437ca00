package main

import (
	"os/exec"
	"strings"
	"testing"
)

// agentSide are the packages of this module sandkeep-agent may link: its
// own, the shared formats and the small client helpers. A coordinator
// package (auth, metastore, blobstore, provider, policy, repo, server …)
// entering the agent's dependencies fails this test: the agent runs in an
// untrusted sandbox and stays small.
var agentSide = map[string]bool{
	"agent": true, "proto/sandkeep/v1": true,
	"internal/agentcli": true, "internal/agent": true, "internal/snapshot": true, "internal/restore": true,
	"internal/remote": true, "internal/watcher": true, "internal/control": true, "internal/ignore": true,
	// shared formats and helpers
	"internal/chunker": true, "internal/pack": true, "internal/tree": true, "internal/id": true,
	"internal/progress": true, "internal/retry": true, "internal/dial": true, "internal/errinfo": true,
	"internal/redact": true, "internal/envflag": true, "internal/atomicfile": true, "internal/cli": true,
}

func TestAgentLinksNoCoordinatorCode(t *testing.T) {
	if testing.Short() {
		t.Skip("runs go list")
	}
	out, err := exec.Command("go", "list", "-deps", "github.com/sandkeep/sandkeep/agent").Output()
	if err != nil {
		t.Fatalf("go list: %v", err)
	}
	const mod = "github.com/sandkeep/sandkeep/"
	for _, p := range strings.Fields(string(out)) {
		rel, ok := strings.CutPrefix(p, mod)
		if !ok {
			continue
		}
		if !agentSide[rel] {
			t.Errorf("sandkeep-agent links %s, which is not an agent-side package (see agentSide)", rel)
		}
	}
}
