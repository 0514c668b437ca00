package agentcli

import (
	"bytes"
	"testing"

	"github.com/spf13/cobra"
)

// Every agent command that prints a result takes --json (run prints logs).
func TestEveryCommandHasJSON(t *testing.T) {
	var b bytes.Buffer
	code := 0
	root := newRoot(&b, &b, &code, &signals{stop: make(chan struct{})})
	var walk func(c *cobra.Command)
	walk = func(c *cobra.Command) {
		if c.Runnable() && c.CommandPath() != "sandkeep-agent run" && c.Flags().Lookup("json") == nil {
			t.Errorf("%s has no --json", c.CommandPath())
		}
		for _, s := range c.Commands() {
			walk(s)
		}
	}
	walk(root)
}
