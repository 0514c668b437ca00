// Command sandkeep-agent runs inside a sandbox: it syncs /workspace to the
// coordinator and restores it. See internal/agentcli.
package main

import (
	"os"

	"github.com/sandkeep/sandkeep/internal/agentcli"
)

func main() {
	os.Exit(agentcli.Main(os.Args[1:], os.Stdout, os.Stderr))
}
