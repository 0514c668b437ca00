// Command sandkeep is the coordinator: `sandkeep serve` and the admin
// subcommands. See internal/coordcli.
package main

import (
	"os"

	"github.com/sandkeep/sandkeep/internal/coordcli"
)

func main() {
	os.Exit(coordcli.Main(os.Args[1:], os.Stdout, os.Stderr))
}
