package coordcli

import (
	"context"
	"fmt"
	"io"
	"sync/atomic"
	"time"

	"github.com/spf13/cobra"
	"google.golang.org/protobuf/types/known/durationpb"

	"github.com/sandkeep/sandkeep/internal/progress"
	pb "github.com/sandkeep/sandkeep/proto/sandkeep/v1"
)

// ensureWithProgress calls EnsureSandbox and, meanwhile, shows on w what
// the project's sandbox is doing (its state and its agent's), polled once
// a second.
func ensureWithProgress(ctx context.Context, c pb.LifecycleServiceClient, req *pb.EnsureSandboxRequest, quiet bool, w io.Writer) (*pb.EnsureSandboxResponse, error) {
	if quiet {
		return c.EnsureSandbox(ctx, req)
	}
	var what atomic.Value
	what.Store("looking for the project's sandbox")
	pctx, cancel := context.WithCancel(ctx)
	defer cancel()
	go func() {
		t := time.NewTicker(time.Second)
		defer t.Stop()
		for {
			if resp, err := c.ListSandboxes(pctx, &pb.ListSandboxesRequest{ProjectId: req.GetProjectId()}); err == nil {
				for _, sb := range resp.GetSandboxes() {
					s := "sandbox " + sb.GetId() + " " + sb.GetState()
					if a := sb.GetAgentState(); a != "" {
						s += ", agent " + a
					}
					what.Store(s)
				}
			}
			select {
			case <-pctx.Done():
				return
			case <-t.C:
			}
		}
	}()
	stop := progress.Start(w, func(el time.Duration) string {
		return fmt.Sprintf("ensure: %s, %s", what.Load(), el.Truncate(100*time.Millisecond))
	})
	defer stop()
	return c.EnsureSandbox(ctx, req)
}

// sandboxJSON is the JSON form of a sandbox.
type sandboxJSON struct {
	ID              string     `json:"id"`
	ProjectID       string     `json:"project_id"`
	Provider        string     `json:"provider"`
	ProviderID      string     `json:"provider_id"`
	State           string     `json:"state"`
	StateSince      *time.Time `json:"state_since,omitempty"`
	Created         *time.Time `json:"created,omitempty"`
	LastActivity    *time.Time `json:"last_activity,omitempty"`
	Backup          string     `json:"backup"`
	CleanVersion    int64      `json:"clean_version"`
	Flushed         bool       `json:"flushed"`
	VerifiedVersion int64      `json:"verified_version"`
	Head            int64      `json:"head"`
	ReadyToDestroy  bool       `json:"ready_to_destroy"`
	FlushFailures   int32      `json:"flush_failures,omitempty"`
	LastFlushError  string     `json:"last_flush_error,omitempty"`
	AgentState      string     `json:"agent_state,omitempty"`
	PendingPaths    int64      `json:"pending_paths"`
	PendingBytes    int64      `json:"pending_bytes"`
	LastHeartbeat   *time.Time `json:"last_heartbeat,omitempty"`
	ExtendedUntil   *time.Time `json:"extended_until,omitempty"`
	LeaseUntil      *time.Time `json:"lease_until,omitempty"`
	LastError       string     `json:"last_error,omitempty"`
	Location        string     `json:"location,omitempty"`
}

func toSandboxJSON(s *pb.Sandbox) sandboxJSON {
	return sandboxJSON{ID: s.GetId(), ProjectID: s.GetProjectId(), Provider: s.GetProvider(), ProviderID: s.GetProviderId(),
		State: s.GetState(), StateSince: tptr(s.GetStateSince()), Created: tptr(s.GetCreateTime()), LastActivity: tptr(s.GetLastActivityTime()),
		Backup: s.GetBackupStatus(), CleanVersion: s.GetCleanVersion(), Flushed: s.GetFlushed(), VerifiedVersion: s.GetVerifiedVersion(),
		Head: s.GetHeadVersion(), ReadyToDestroy: s.GetReadyToDestroy(), FlushFailures: s.GetFlushFailures(), LastFlushError: s.GetLastFlushError(),
		AgentState: s.GetAgentState(), PendingPaths: s.GetPendingPaths(), PendingBytes: s.GetPendingBytes(), LastHeartbeat: tptr(s.GetLastHeartbeatTime()),
		ExtendedUntil: tptr(s.GetExtendedUntil()), LeaseUntil: tptr(s.GetLeaseUntil()), LastError: s.GetLastError(), Location: s.GetLocation()}
}

// sandboxOpTimeout bounds `sandbox stop` and `sandbox destroy`.
const sandboxOpTimeout = 10 * time.Minute

// sandboxStateLine prints "ID STATE", the output of stop and destroy.
func sandboxStateLine(w io.Writer, s *pb.Sandbox) {
	fmt.Fprintf(w, "%s %s\n", s.GetId(), s.GetState())
}

func newSandbox(g *globals) *cobra.Command {
	cmd := &cobra.Command{Use: "sandbox", Short: "Sandboxes: list, ensure, stop, destroy (needs serve --provider)"}
	var project string
	var asJSON, all bool
	list := &cobra.Command{
		Use:   "list [--project ID] [--all] [--json]",
		Short: "Sandboxes: id, project, state, last activity, backup status, the version it is clean at",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			req := &pb.ListSandboxesRequest{ProjectId: project, IncludeDestroyed: all}
			return lifecycleRPC(g, cmd, callTimeout, pb.LifecycleServiceClient.ListSandboxes, req, func(resp *pb.ListSandboxesResponse) error {
				return printList(g.stdout, asJSON, resp.GetSandboxes(), toSandboxJSON, "ID\tPROJECT\tSTATE\tLAST ACTIVITY\tBACKUP\tCLEAN AT\tHEAD\tREADY\tLOCATION", func(w io.Writer, s *pb.Sandbox) {
					backup := s.GetBackupStatus()
					if s.GetFlushed() {
						backup += " (flushed)"
					}
					// The LOCATION cell only where the provider gives one:
					// other rows still end with READY.
					loc := ""
					if l := s.GetLocation(); l != "" {
						loc = "\t" + l
					}
					fmt.Fprintf(w, "%s\t%s\t%s\t%s\t%s\t%d\t%d\t%v%s\n", s.GetId(), s.GetProjectId(), s.GetState(), fmtTime(s.GetLastActivityTime()),
						backup, s.GetCleanVersion(), s.GetHeadVersion(), s.GetReadyToDestroy(), loc)
				})
			})
		},
	}
	list.Flags().StringVar(&project, "project", "", "only this project's sandboxes")
	list.Flags().BoolVar(&all, "all", false, "include destroyed sandboxes")
	list.Flags().BoolVar(&asJSON, "json", false, "print JSON")

	var ensureProject string
	var ensureJSON, ensureQuiet bool
	var ensureTimeout time.Duration
	ensure := &cobra.Command{
		Use:   "ensure --project ID",
		Short: "Return when a sandbox of the project is ready with the head restored: prints its id and the seconds taken",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if err := requireProject(ensureProject); err != nil {
				return err
			}
			req := &pb.EnsureSandboxRequest{ProjectId: ensureProject}
			return dialCall(g, cmd, ensureTimeout, pb.NewLifecycleServiceClient, func(ctx context.Context, c pb.LifecycleServiceClient) error {
				resp, err := ensureWithProgress(ctx, c, req, ensureQuiet, g.stderr)
				if err != nil {
					return err
				}
				replaced := []map[string]string{}
				for _, r := range resp.GetReplaced() {
					replaced = append(replaced, map[string]string{"sandbox_id": r.GetSandboxId(), "reason": r.GetReason(), "detail": r.GetDetail(), "lost": r.GetLost()})
					// Always on stderr, even with --json: a replaced
					// sandbox may have taken unsaved work with it.
					line := fmt.Sprintf("replaced sandbox %s (%s: %s)", r.GetSandboxId(), r.GetReason(), r.GetDetail())
					if r.GetLost() != "" {
						line += "; may have lost: " + r.GetLost()
					} else {
						line += "; nothing unsaved was lost"
					}
					fmt.Fprintln(g.stderr, line)
				}
				if ensureJSON {
					return printJSON(g.stdout, map[string]any{"sandbox": toSandboxJSON(resp.GetSandbox()), "seconds": resp.GetTook().AsDuration().Seconds(),
						"created": resp.GetCreated(), "started": resp.GetStarted(), "version": resp.GetVersion(), "replaced": replaced})
				}
				how := "already running"
				switch {
				case resp.GetCreated():
					how = "created"
				case resp.GetStarted():
					how = "started"
				}
				fmt.Fprintf(g.stderr, "sandbox %s ready (%s, version %d)\n", resp.GetSandbox().GetId(), how, resp.GetVersion())
				fmt.Fprintf(g.stdout, "%s %.3f\n", resp.GetSandbox().GetId(), resp.GetTook().AsDuration().Seconds())
				return nil
			})
		},
	}
	ensure.Flags().StringVar(&ensureProject, "project", "", "project id")
	ensure.Flags().BoolVar(&ensureJSON, "json", false, "print JSON")
	ensure.Flags().DurationVar(&ensureTimeout, "timeout", 10*time.Minute, "give up after this long")
	ensure.Flags().BoolVar(&ensureQuiet, "quiet", false, "no progress lines on stderr")

	var stopJSON bool
	stop := &cobra.Command{
		Use:   "stop ID",
		Short: "Stop a sandbox now (its agent flushes on the way down)",
		Args:  cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			req := &pb.StopSandboxRequest{SandboxId: args[0]}
			return lifecycleRPC(g, cmd, sandboxOpTimeout, pb.LifecycleServiceClient.StopSandbox, req, func(resp *pb.StopSandboxResponse) error {
				if stopJSON {
					return printJSON(g.stdout, toSandboxJSON(resp.GetSandbox()))
				}
				sandboxStateLine(g.stdout, resp.GetSandbox())
				return nil
			})
		},
	}
	stop.Flags().BoolVar(&stopJSON, "json", false, "print the sandbox as JSON (as in sandbox list --json)")

	var force, destroyJSON bool
	destroy := &cobra.Command{
		Use:   "destroy ID [--force]",
		Short: "Destroy a sandbox; refused unless flushed at the head and the head verified (--force destroys anyway and says what it loses)",
		Args:  cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			req := &pb.DestroySandboxRequest{SandboxId: args[0], Force: force}
			return lifecycleRPC(g, cmd, sandboxOpTimeout, pb.LifecycleServiceClient.DestroySandbox, req, func(resp *pb.DestroySandboxResponse) error {
				if lost := resp.GetLost(); lost != "" {
					fmt.Fprintf(g.stderr, "warning: destroyed without a verified flush: %s\n", lost)
				}
				if destroyJSON {
					return printJSON(g.stdout, map[string]any{"sandbox": toSandboxJSON(resp.GetSandbox()), "lost": resp.GetLost()})
				}
				sandboxStateLine(g.stdout, resp.GetSandbox())
				return nil
			})
		},
	}
	destroy.Flags().BoolVar(&force, "force", false, "destroy even without a verified flush (reports what may be lost)")
	destroy.Flags().BoolVar(&destroyJSON, "json", false, `print {"sandbox", "lost"}`)

	var extendProject string
	var extendFor time.Duration
	var extendJSON bool
	extend := &cobra.Command{
		Use:   "extend [ID | --project ID] --for 30m",
		Short: "Postpone every cleanup of a sandbox (the answer to a cleanup webhook)",
		Args:  cobra.MaximumNArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			req := &pb.ExtendSandboxRequest{ProjectId: extendProject, Duration: durationpb.New(extendFor)}
			if len(args) == 1 {
				req.SandboxId = args[0]
			}
			return lifecycleRPC(g, cmd, callTimeout, pb.LifecycleServiceClient.ExtendSandbox, req, func(resp *pb.ExtendSandboxResponse) error {
				if extendJSON {
					return printJSON(g.stdout, toSandboxJSON(resp.GetSandbox()))
				}
				fmt.Fprintf(g.stdout, "%s extended until %s\n", resp.GetSandbox().GetId(), fmtTime(resp.GetSandbox().GetExtendedUntil()))
				return nil
			})
		},
	}
	extend.Flags().StringVar(&extendProject, "project", "", "the project's live sandbox")
	extend.Flags().DurationVar(&extendFor, "for", 30*time.Minute, "postpone cleanups this long from now")
	extend.Flags().BoolVar(&extendJSON, "json", false, "print the sandbox as JSON (as in sandbox list --json)")
	cmd.AddCommand(list, ensure, stop, destroy, extend)
	return cmd
}
