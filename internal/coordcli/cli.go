// Package coordcli is the `sandkeep` command: `serve` runs the coordinator,
// the other subcommands are its admin client.
package coordcli

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/signal"
	"strings"
	"syscall"

	"github.com/spf13/cobra"
	"google.golang.org/grpc"

	"github.com/sandkeep/sandkeep/internal/cli"
	"github.com/sandkeep/sandkeep/internal/dial"
	"github.com/sandkeep/sandkeep/internal/envflag"
	"github.com/sandkeep/sandkeep/internal/server"
)

// Version is set at build time.
var Version = "dev"

// Main runs the command line and returns the exit code.
func Main(args []string, stdout, stderr io.Writer) int {
	defer cli.StartProfiling("sandkeep")()
	root, g := newRoot(stdout, stderr)
	root.SetArgs(args)
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	cmd, err := root.ExecuteContextC(ctx)
	if err != nil {
		g.report(stderr, err, cli.WantsJSON(cmd))
		return 1
	}
	return 0
}

// globals are the admin client's connection flags.
type globals struct {
	coordinator string
	adminToken  string
	dataDir     string
	tls         bool
	caFile      string
	stdout      io.Writer
	stderr      io.Writer
	// flagChanged: the connection flags given on the command line (for
	// error messages naming where a value came from).
	flagChanged map[string]bool
}

func newRoot(stdout, stderr io.Writer) (*cobra.Command, *globals) {
	g := &globals{stdout: stdout, stderr: stderr, flagChanged: map[string]bool{}}
	root := cli.NewRoot("sandkeep", "sandkeep coordinator: keeps every version of every sandbox workspace", Version, stdout, stderr)
	pf := root.PersistentFlags()
	pf.StringVar(&g.coordinator, "coordinator", server.DefaultListen, "coordinator gRPC address: host:port, or a comma-separated list of replicas to fail over between (env SANDKEEP_COORDINATOR)")
	pf.StringVar(&g.adminToken, "admin-token", "", "admin token (env SANDKEEP_ADMIN_TOKEN; default: read from <data>/admin.token)")
	pf.StringVar(&g.dataDir, "data", server.DefaultDataDir, "coordinator data directory (env SANDKEEP_DATA)")
	pf.BoolVar(&g.tls, "tls", false, "use TLS to reach the coordinator (env SANDKEEP_TLS)")
	pf.StringVar(&g.caFile, "tls-ca", "", "PEM file of a CA to trust (env SANDKEEP_TLS_CA)")
	root.PersistentPreRunE = func(cmd *cobra.Command, _ []string) error {
		for _, f := range []string{"coordinator", "admin-token", "data"} {
			g.flagChanged[f] = cmd.Flags().Changed(f)
		}
		return envflag.Apply(cmd.Flags(), "coordinator", "admin-token", "data", "tls", "tls-ca")
	}
	root.AddCommand(newServe(g), newProject(g), newToken(g), newVersions(g),
		newDiff(g), newFiles(g), newHistory(g), newGet(g), newRollback(g), newLink(g),
		newGC(g), newVersion(g), newRetention(g), newSimulate(g),
		newPut(g), newFlush(g), newConsoleURL(g), newActivity(g), newReplicas(g), newCheck(g), newRepair(g), newReplication(g))
	root.AddCommand(newLifecycleCommands(g)...) // lifecycle: sandbox, lease, policy, cost
	return root, g
}

// dial connects to the coordinator with the admin token (--admin-token,
// else <data>/admin.token).
func (g *globals) dial() (*grpc.ClientConn, error) {
	tok := g.adminToken
	if tok == "" {
		b, err := os.ReadFile(server.AdminTokenFile(g.dataDir))
		if err != nil {
			if errors.Is(err, os.ErrNotExist) {
				return nil, fmt.Errorf("no admin token: %s not found; set SANDKEEP_ADMIN_TOKEN or --admin-token, or point --data (SANDKEEP_DATA) at the coordinator's data directory", server.AdminTokenFile(g.dataDir))
			}
			return nil, fmt.Errorf("read admin token: %w", err)
		}
		tok = strings.TrimSpace(string(b))
	}
	return dial.Dial(g.coordinator, dial.Options{Token: tok, TLS: g.tls, CAFile: g.caFile})
}

func printJSON(w io.Writer, v any) error { return cli.PrintJSON(w, v) }

func newLogger(w io.Writer, level, format string) (*slog.Logger, error) {
	var lv slog.Level
	if err := lv.UnmarshalText([]byte(level)); err != nil {
		return nil, fmt.Errorf("--log-level: %w", err)
	}
	opts := &slog.HandlerOptions{Level: lv}
	switch format {
	case "text":
		return slog.New(slog.NewTextHandler(w, opts)), nil
	case "json":
		return slog.New(slog.NewJSONHandler(w, opts)), nil
	}
	return nil, fmt.Errorf("--log-format must be text or json, not %q", format)
}

// newLifecycleCommands are `sandbox`, `lease`, `policy` and `cost`.
func newLifecycleCommands(g *globals) []*cobra.Command {
	return []*cobra.Command{newSandbox(g), newLease(g), newPolicy(g), newCost(g)}
}
