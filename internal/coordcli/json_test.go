package coordcli

import (
	"bytes"
	"testing"

	"github.com/spf13/cobra"
)

// Every command that prints a result takes --json (serve runs the server;
// get prints the file's bytes).
func TestEveryCommandHasJSON(t *testing.T) {
	var b bytes.Buffer
	root, _ := newRoot(&b, &b)
	without := map[string]bool{"sandkeep serve": true, "sandkeep get": true}
	var walk func(c *cobra.Command)
	walk = func(c *cobra.Command) {
		if c.Runnable() && !without[c.CommandPath()] && c.Flags().Lookup("json") == nil {
			t.Errorf("%s has no --json", c.CommandPath())
		}
		for _, s := range c.Commands() {
			walk(s)
		}
	}
	walk(root)
}
