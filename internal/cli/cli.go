// Package cli is what the two command lines (sandkeep and sandkeep-agent)
// share: the root command's setup, JSON output, and the JSON form of an
// error under --json.
package cli

import (
	"encoding/json"
	"fmt"
	"io"
	"runtime"

	"github.com/spf13/cobra"
)

// NewRoot returns a root command that prints its own errors (Main does)
// and no usage on failure, writing to stdout and stderr.
func NewRoot(use, short, version string, stdout, stderr io.Writer) *cobra.Command {
	root := &cobra.Command{
		Use:           use,
		Short:         short,
		SilenceUsage:  true,
		SilenceErrors: true,
		Version:       version,
	}
	root.SetOut(stdout)
	root.SetErr(stderr)
	return root
}

// PrintJSON prints v as one indented JSON document (URLs keep their &).
func PrintJSON(w io.Writer, v any) error {
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	enc.SetEscapeHTML(false)
	return enc.Encode(v)
}

// PrintVersion prints a program's version (and the Go release it was
// built with): "NAME VERSION (GO)", or {"version", "go"} as JSON.
func PrintVersion(w io.Writer, name, version string, asJSON bool) error {
	if asJSON {
		return PrintJSON(w, map[string]string{"version": version, "go": runtime.Version()})
	}
	_, err := fmt.Fprintf(w, "%s %s (%s)\n", name, version, runtime.Version())
	return err
}

// NonNil returns s, or an empty slice for nil: a JSON list prints as []
// rather than null.
func NonNil[T any](s []T) []T {
	if s == nil {
		return []T{}
	}
	return s
}

// WantsJSON reports whether cmd (the command that ran) was given --json.
func WantsJSON(cmd *cobra.Command) bool {
	if cmd == nil {
		return false
	}
	f := cmd.Flags().Lookup("json")
	return f != nil && f.Value.String() == "true"
}

// Error is a failed command's error as --json prints it on stderr:
// {"error": {"code", "message", "hint"}}.
type Error struct {
	Code    string `json:"code"`
	Message string `json:"message"`
	Hint    string `json:"hint,omitempty"`
}

// PrintError prints e on w as one JSON line.
func PrintError(w io.Writer, e Error) {
	b, _ := json.Marshal(map[string]Error{"error": e})
	fmt.Fprintln(w, string(b))
}
