package agentcli

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"text/tabwriter"
	"time"

	"github.com/spf13/cobra"

	"github.com/sandkeep/sandkeep/internal/agent"
	"github.com/sandkeep/sandkeep/internal/cli"
	"github.com/sandkeep/sandkeep/internal/control"
	"github.com/sandkeep/sandkeep/internal/envflag"
)

// defaultSocket is /run/sandkeep/agent.sock, or a per-user path under
// $XDG_RUNTIME_DIR (else the temp dir) when /run/sandkeep is not writable.
func defaultSocket() string {
	if err := os.MkdirAll(filepath.Dir(control.DefaultSocket), 0o755); err == nil {
		if f, err := os.CreateTemp(filepath.Dir(control.DefaultSocket), ".probe"); err == nil {
			f.Close()
			os.Remove(f.Name())
			return control.DefaultSocket
		}
	}
	if d := os.Getenv("XDG_RUNTIME_DIR"); d != "" {
		return filepath.Join(d, "sandkeep", "agent.sock")
	}
	return filepath.Join(os.TempDir(), fmt.Sprintf("sandkeep-%d", os.Getuid()), "agent.sock")
}

// socketFor finds the socket of the one agent on this machine: the flag or
// SANDKEEP_SOCKET, else the default paths in order.
func socketFor(flag string) string {
	if flag != "" {
		return flag
	}
	candidates := []string{control.DefaultSocket}
	if d := os.Getenv("XDG_RUNTIME_DIR"); d != "" {
		candidates = append(candidates, filepath.Join(d, "sandkeep", "agent.sock"))
	}
	candidates = append(candidates, filepath.Join(os.TempDir(), fmt.Sprintf("sandkeep-%d", os.Getuid()), "agent.sock"))
	for _, c := range candidates {
		if fi, err := os.Stat(c); err == nil && fi.Mode()&os.ModeSocket != 0 {
			return c
		}
	}
	return control.DefaultSocket
}

func addSocketFlag(cmd *cobra.Command, p *string) {
	cmd.Flags().StringVar(p, "socket", "", "control socket (env SANDKEEP_SOCKET; default "+control.DefaultSocket+")")
}

func newRun(g *globals, sig *signals) *cobra.Command {
	var opts agent.RunOptions
	var socket string
	cmd := &cobra.Command{
		Use:   "run --workspace DIR",
		Short: "Restore the head if the workspace is empty or behind, then watch and sync until stopped",
		Long: `Run the agent: restore the head into an empty workspace (or merge a head that
moved while the agent was away, keeping every local change), then watch the
workspace and commit every change within about a second. SIGTERM or SIGINT
makes it flush and exit 0; a second signal, or --stop-timeout passing, exits
non-zero naming what was not saved.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if err := envflag.Apply(cmd.Flags(), "socket", "force-poll", "poll-interval", "stop-timeout", "full-scan-interval"); err != nil {
				return err
			}
			opts.Socket = socket
			if opts.Socket == "" {
				opts.Socket = defaultSocket()
			}
			sig.mu.Lock()
			sig.graceful = true
			sig.mu.Unlock()
			tctx, cancel := context.WithCancel(cmd.Context())
			defer cancel()
			go trimMemory(tctx)
			return agent.Run(cmd.Context(), sig.stop, g.cfg, opts)
		},
	}
	addSocketFlag(cmd, &socket)
	f := cmd.Flags()
	f.BoolVar(&opts.ForcePoll, "force-poll", false, "watch by polling (filesystems without inotify events) (env SANDKEEP_FORCE_POLL)")
	f.DurationVar(&opts.PollInterval, "poll-interval", time.Second, "polling period with --force-poll or after a fallback (env SANDKEEP_POLL_INTERVAL)")
	f.DurationVar(&opts.StopTimeout, "stop-timeout", 60*time.Second, "bound on the final flush when stopping (env SANDKEEP_STOP_TIMEOUT)")
	f.DurationVar(&opts.FullScanInterval, "full-scan-interval", 10*time.Minute, "period of the safety-net full scan (env SANDKEEP_FULL_SCAN_INTERVAL)")
	f.DurationVar(&opts.Quiet, "quiet", 250*time.Millisecond, "a changed path is synced once quiet this long")
	f.DurationVar(&opts.Cap, "max-delay", 2*time.Second, "a path that keeps changing is synced at the latest after this")
	f.BoolVar(&g.cfg.KeepSetuid, "keep-setuid", false, "restore setuid/setgid bits as stored (default: dropped)")
	return cmd
}

func newFlush(g *globals) *cobra.Command {
	var socket string
	var timeout time.Duration
	var asJSON bool
	cmd := &cobra.Command{
		Use:   "flush [--timeout 60s]",
		Short: "Return once every change made before it is committed; prints the version",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if err := envflag.Apply(cmd.Flags(), "socket"); err != nil {
				return err
			}
			if timeout <= 0 || timeout > control.MaxFlushTimeout {
				return errors.New("--timeout must be in (0, 1h]")
			}
			v, err := control.NewClient(socketFor(socket)).Flush(cmd.Context(), timeout)
			if err != nil {
				return fmt.Errorf("flush: %w", err)
			}
			if asJSON {
				return printJSON(g.stdout, map[string]int64{"version": v})
			}
			fmt.Fprintln(g.stdout, v)
			return nil
		},
	}
	addSocketFlag(cmd, &socket)
	cmd.Flags().DurationVar(&timeout, "timeout", 60*time.Second, "give up after this long (exit non-zero)")
	cmd.Flags().BoolVar(&asJSON, "json", false, `print {"version"}`)
	return cmd
}

func newStatus(g *globals) *cobra.Command {
	var socket string
	var asJSON bool
	cmd := &cobra.Command{
		Use:   "status [--json]",
		Short: "Show the running agent's state, head version, pending work, last commit, last error and watch mode",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if err := envflag.Apply(cmd.Flags(), "socket"); err != nil {
				return err
			}
			s, err := control.NewClient(socketFor(socket)).Status(cmd.Context())
			if err != nil {
				return err
			}
			if asJSON {
				return printJSON(g.stdout, s)
			}
			tw := tabwriter.NewWriter(g.stdout, 0, 4, 2, ' ', 0)
			row := func(k string, v any) { fmt.Fprintf(tw, "%s\t%v\n", k, v) }
			row("state", s.State)
			row("project", s.Project)
			row("workspace", s.Workspace)
			row("version", s.Version)
			row("clean", s.Clean)
			row("pending", fmt.Sprintf("%d paths, %d bytes", s.PendingPaths, s.PendingBytes))
			row("last write", fmtTime(s.LastWrite))
			row("last commit", fmtTime(s.LastCommit))
			if s.LastError != "" {
				row("last error", s.LastError+" ("+fmtTime(s.LastErrorTime)+")")
			}
			mode := s.WatchMode
			if s.WatchReason != "" {
				mode += " (" + s.WatchReason + ")"
			}
			row("watch", mode)
			coord := map[bool]string{true: "connected", false: "coordinator unreachable"}[s.CoordinatorUp]
			if s.TokenRefused {
				coord = "token refused (revoked, or the project was deleted): create a new one with `sandkeep token create`"
			}
			if s.Coordinator != "" {
				coord += " (" + s.Coordinator + ")"
			}
			row("coordinator", coord)
			return tw.Flush()
		},
	}
	addSocketFlag(cmd, &socket)
	cmd.Flags().BoolVar(&asJSON, "json", false, "print JSON")
	return cmd
}

// printJSON prints v as one indented JSON document.
func printJSON(w io.Writer, v any) error { return cli.PrintJSON(w, v) }

func fmtTime(t time.Time) string {
	if t.IsZero() {
		return "never"
	}
	return t.Local().Format(time.RFC3339) + fmt.Sprintf(" (%s ago)", time.Since(t).Round(time.Second))
}
