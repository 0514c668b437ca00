// Package agentcli is the `sandkeep-agent` command line.
package agentcli

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/signal"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/spf13/cobra"
	"google.golang.org/grpc/status"

	"github.com/sandkeep/sandkeep/internal/agent"
	"github.com/sandkeep/sandkeep/internal/cli"
	"github.com/sandkeep/sandkeep/internal/envflag"
	"github.com/sandkeep/sandkeep/internal/remote"
)

// Version is set at build time.
var Version = "dev"

// Exit codes.
const (
	exitOK      = 0
	exitError   = 1
	exitPartial = 3 // sync committed, but some files kept changing and were not saved
	// exitUnreadable: sync committed, but some paths could not be read
	// (permission denied, I/O error) and were not saved.
	exitUnreadable = 4
)

// Main runs the command line and returns the exit code.
func Main(args []string, stdout, stderr io.Writer) int {
	follow := setMemoryPolicy()
	defer cli.StartProfiling("sandkeep-agent")()
	code := exitOK
	sig := &signals{stop: make(chan struct{})}
	root := newRoot(stdout, stderr, &code, sig)
	root.SetArgs(args)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	if follow {
		go followLiveHeap(ctx)
	}
	ch := make(chan os.Signal, 2)
	signal.Notify(ch, os.Interrupt, syscall.SIGTERM)
	defer signal.Stop(ch)
	go sig.handle(ch, cancel, stderr)
	if cmd, err := root.ExecuteContextC(ctx); err != nil {
		if cli.WantsJSON(cmd) {
			cli.PrintError(stderr, cli.Error{Code: errorCode(err), Message: errorMessage(err)})
		} else {
			fmt.Fprintln(stderr, "sandkeep-agent:", errorText(err))
		}
		if code == exitOK {
			code = exitError
		}
	}
	return code
}

// errorCode is the gRPC code inside err ("" if none).
func errorCode(err error) string {
	var se interface{ GRPCStatus() *status.Status }
	if errors.As(err, &se) {
		return se.GRPCStatus().Code().String()
	}
	return ""
}

// errorMessage is errorText without the code.
func errorMessage(err error) string {
	var se interface {
		error
		GRPCStatus() *status.Status
	}
	if errors.As(err, &se) && strings.HasPrefix(se.Error(), "rpc error: ") {
		// A raw gRPC error: its message without gRPC's wrapping (errors
		// that wrote their own message keep it).
		return strings.Replace(err.Error(), se.Error(), se.GRPCStatus().Message(), 1)
	}
	return err.Error()
}

// errorText is err as the user reads it: a gRPC status inside it shows
// as its message and code once, without "rpc error: code = … desc =".
func errorText(err error) string {
	var se interface {
		error
		GRPCStatus() *status.Status
	}
	if errors.As(err, &se) {
		return fmt.Sprintf("%s (%s)", errorMessage(err), se.GRPCStatus().Code())
	}
	return err.Error()
}

type globals struct {
	cfg            agent.Config
	logLevel       string
	connectTimeout time.Duration
	stdout         io.Writer
	stderr         io.Writer
}

// signals turns the first SIGTERM/SIGINT into a graceful stop for `run`
// (flush, then exit) and an immediate cancel for other commands; a second
// signal always cancels at once.
type signals struct {
	mu       sync.Mutex
	graceful bool
	stop     chan struct{}
	n        int
}

func (s *signals) handle(ch <-chan os.Signal, cancel context.CancelFunc, stderr io.Writer) {
	for range ch {
		s.mu.Lock()
		s.n++
		first, graceful := s.n == 1, s.graceful
		s.mu.Unlock()
		if first && graceful {
			fmt.Fprintln(stderr, "sandkeep-agent: stopping after a final flush (signal again to stop at once)")
			close(s.stop)
			continue
		}
		cancel()
	}
}

// oneShot sets up a command that runs once (sync --once, restore): it says
// at once what it waits for and gives up after --connect-timeout.
func (g *globals) oneShot() {
	g.cfg.Remote.ConnectTimeout = g.connectTimeout
	g.cfg.Remote.OnWaiting = func(addr string) {
		fmt.Fprintf(g.stderr, "sandkeep-agent: waiting for the coordinator at %s (giving up after %s; --connect-timeout)\n", addr, g.connectTimeout)
	}
}

func newRoot(stdout, stderr io.Writer, code *int, sig *signals) *cobra.Command {
	g := &globals{stdout: stdout, stderr: stderr}
	root := cli.NewRoot("sandkeep-agent", "sandkeep agent: keeps a sandbox workspace in the coordinator's versions", Version, stdout, stderr)
	pf := root.PersistentFlags()
	pf.StringVar(&g.cfg.Remote.Addr, "coordinator", "127.0.0.1:7420", "coordinator gRPC address: host:port, or a comma-separated list of replicas to fail over between (env SANDKEEP_COORDINATOR)")
	pf.StringVar(&g.cfg.Remote.Token, "token", "", "sandbox token (env SANDKEEP_TOKEN)")
	pf.BoolVar(&g.cfg.Remote.TLS, "tls", false, "use TLS to reach the coordinator (env SANDKEEP_TLS)")
	pf.StringVar(&g.cfg.Remote.CAFile, "tls-ca", "", "PEM file of a CA to trust (env SANDKEEP_TLS_CA)")
	pf.StringVar(&g.cfg.Remote.SandboxID, "sandbox-id", "", "this sandbox's provider id (env SANDKEEP_SANDBOX_ID)")
	pf.StringVar(&g.cfg.Workspace, "workspace", "/workspace", "workspace directory (env SANDKEEP_WORKSPACE)")
	pf.StringVar(&g.cfg.CacheDir, "cache-dir", "", "agent index cache directory (env SANDKEEP_CACHE_DIR; default "+agent.DefaultCacheDir()+")")
	pf.StringVar(&g.logLevel, "log-level", "info", "debug, info, warn or error (env SANDKEEP_LOG_LEVEL; sync and restore default to warn)")
	pf.DurationVar(&g.connectTimeout, "connect-timeout", 30*time.Second, "sync --once and restore give up when the coordinator does not answer within this (env SANDKEEP_CONNECT_TIMEOUT)")
	root.PersistentPreRunE = func(cmd *cobra.Command, _ []string) error {
		switch {
		case cmd.Flags().Changed("token"):
			g.cfg.Remote.TokenSource = "--token"
		case os.Getenv("SANDKEEP_TOKEN") != "":
			g.cfg.Remote.TokenSource = "SANDKEEP_TOKEN"
		}
		if err := envflag.Apply(cmd.Flags(), "coordinator", "token", "tls", "tls-ca", "sandbox-id", "workspace", "cache-dir", "log-level", "connect-timeout"); err != nil {
			return err
		}
		if g.connectTimeout <= 0 {
			return errors.New("--connect-timeout must be positive")
		}
		if (cmd.Name() == "sync" || cmd.Name() == "restore") && !cmd.Flags().Changed("log-level") && os.Getenv("SANDKEEP_LOG_LEVEL") == "" {
			// One-shot commands print their own summary: the log keeps
			// to warnings unless asked.
			g.logLevel = "warn"
		}
		var lv slog.Level
		if err := lv.UnmarshalText([]byte(g.logLevel)); err != nil {
			return fmt.Errorf("--log-level: %w", err)
		}
		g.cfg.Logger = slog.New(slog.NewTextHandler(stderr, &slog.HandlerOptions{Level: lv}))
		g.cfg.Remote.Version = Version
		return nil
	}
	var versionJSON bool
	version := &cobra.Command{
		Use:   "version",
		Short: "Print sandkeep-agent's version",
		Args:  cobra.NoArgs,
		RunE: func(*cobra.Command, []string) error {
			return cli.PrintVersion(g.stdout, "sandkeep-agent", Version, versionJSON)
		},
	}
	version.Flags().BoolVar(&versionJSON, "json", false, `print {"version", "go"}`)
	root.AddCommand(newSync(g, code), newRestore(g), newRun(g, sig), newFlush(g), newStatus(g), version)
	return root
}

// syncJSON is `sandkeep-agent sync --once --json`.
type syncJSON struct {
	Version       int64    `json:"version"`
	Changed       bool     `json:"changed"` // a new version was made
	Files         int64    `json:"files"`
	Bytes         int64    `json:"bytes"`
	BytesUploaded int64    `json:"bytes_uploaded"`
	Changing      []string `json:"changing"`   // kept changing while read: not saved (exit 3)
	Unreadable    []string `json:"unreadable"` // could not be read: not saved (exit 4)
}

func newSync(g *globals, code *int) *cobra.Command {
	var once, asJSON, quiet bool
	cmd := &cobra.Command{
		Use:   "sync --once",
		Short: "Scan the workspace, upload what is missing, commit; prints the version number last",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if !once {
				return errors.New("sync needs --once (continuous sync is `sandkeep-agent run`)")
			}
			g.oneShot()
			if !quiet {
				g.cfg.Progress = g.stderr
			}
			res, err := agent.SyncOnce(cmd.Context(), g.cfg)
			var partial *agent.ChangingFilesError
			var unreadable *agent.UnreadableError
			switch {
			case errors.As(err, &unreadable):
				*code = exitUnreadable
				if !asJSON {
					fmt.Fprintln(g.stderr, "sandkeep-agent:", err)
				}
			case errors.As(err, &partial):
				*code = exitPartial
			case err != nil:
				return err
			}
			if res.Version == nil {
				// Nothing was ever committed and the workspace is empty
				// of changes: impossible, a first sync always commits.
				return errors.New("no version")
			}
			if asJSON {
				out := syncJSON{Version: res.Version.GetNumber(), Changed: res.Changed, Files: res.Version.GetFiles(), Bytes: res.Version.GetBytes(),
					BytesUploaded: res.Stats.BytesUploaded, Changing: cli.NonNil(res.Stats.FilesChangedDuringRead), Unreadable: cli.NonNil(res.Stats.Unsaved)}
				// Files not saved are named in the JSON and told by the
				// exit code (3 or 4), not as an error on stderr.
				return printJSON(g.stdout, out)
			}
			if res.Changed {
				fmt.Fprintf(g.stderr, "committed version %d: %d files, %d bytes (%d bytes uploaded)\n", res.Version.GetNumber(), res.Version.GetFiles(), res.Version.GetBytes(), res.Stats.BytesUploaded)
			} else {
				fmt.Fprintf(g.stderr, "no change since version %d\n", res.Version.GetNumber())
			}
			fmt.Fprintln(g.stdout, res.Version.GetNumber())
			if unreadable != nil {
				return nil // said above; the exit code is 4
			}
			return err
		},
	}
	cmd.Flags().BoolVar(&once, "once", false, "sync once and exit")
	cmd.Flags().BoolVar(&quiet, "quiet", false, "no progress lines on stderr (the summary and errors still)")
	cmd.Flags().BoolVar(&asJSON, "json", false, `print {"version", "changed", "files", "bytes", "bytes_uploaded", "changing", "unreadable"}`)
	return cmd
}

func newRestore(g *globals) *cobra.Command {
	var version int64
	var force, asJSON, quiet bool
	cmd := &cobra.Command{
		Use:   "restore --workspace DIR [--version N] [--force] [--keep-setuid]",
		Short: "Rehydrate the workspace from the head (or version N); only missing data is downloaded",
		Long: `Rehydrate the workspace from the head (or version N).

The target may be missing, empty, or hold the version already (only what
differs is downloaded). A target holding anything else is refused and left
as it was, naming a few of the paths that differ; --force makes it exactly
the version instead (differing files are overwritten, paths the version
lacks are removed). A target the restore created is removed if it fails.
Before writing, the restore checks that the file system has room.

setuid and setgid bits are dropped unless --keep-setuid: a file written in
a sandbox should not become a setuid binary of whoever restores it.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if version < 0 {
				return errors.New("--version must be a version number")
			}
			if !quiet {
				g.cfg.Progress = g.stderr
			}
			g.oneShot()
			res, err := agent.RestoreWith(cmd.Context(), g.cfg, agent.RestoreOptions{Version: version, Force: force})
			if err != nil {
				return err
			}
			if asJSON {
				return printJSON(g.stdout, map[string]any{"version": res.Version.GetNumber(), "files": res.Files, "dirs": res.Dirs, "symlinks": res.Symlinks,
					"bytes": res.Bytes, "bytes_downloaded": res.BytesDownloaded, "seconds": res.Duration.Seconds()})
			}
			fmt.Fprintf(g.stderr, "restored version %d: %d files, %d dirs, %d symlinks, %d bytes (%d downloaded) in %s\n",
				res.Version.GetNumber(), res.Files, res.Dirs, res.Symlinks, res.Bytes, res.BytesDownloaded, res.Duration.Round(1e6))
			fmt.Fprintln(g.stdout, res.Version.GetNumber())
			return nil
		},
	}
	cmd.Flags().Int64Var(&version, "version", 0, "version number to restore (default: the head)")
	cmd.Flags().BoolVar(&force, "force", false, "make a non-empty target exactly the version (overwrite what differs, remove what the version lacks)")
	cmd.Flags().BoolVar(&g.cfg.KeepSetuid, "keep-setuid", false, "restore setuid/setgid bits as stored (default: dropped)")
	cmd.Flags().BoolVar(&asJSON, "json", false, `print {"version", "files", "dirs", "symlinks", "bytes", "bytes_downloaded", "seconds"}`)
	cmd.Flags().BoolVar(&quiet, "quiet", false, "no progress lines on stderr (the summary and errors still)")
	return cmd
}

var _ = remote.ErrConflict
