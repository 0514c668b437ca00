package coordcli

import (
	"context"
	"errors"
	"fmt"
	"github.com/sandkeep/sandkeep/internal/progress"
	"io"
	"strconv"
	"strings"
	"sync/atomic"
	"text/tabwriter"
	"time"

	"github.com/spf13/cobra"
	"github.com/spf13/pflag"
	"google.golang.org/protobuf/types/known/durationpb"
	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/sandkeep/sandkeep/internal/cost"
	"github.com/sandkeep/sandkeep/internal/policy"
	"github.com/sandkeep/sandkeep/internal/server"
	pb "github.com/sandkeep/sandkeep/proto/sandkeep/v1"
)

// lifecycleFlags adds serve's provider, policy and rate flags.
func lifecycleFlags(f *pflag.FlagSet, lc *server.LifecycleConfig) {
	def := policy.Default()
	rates := cost.DefaultRates()
	lc.Policy, lc.Rates = def, rates
	f.StringVar(&lc.Provider, "provider", "", "sandbox provider: local or daytona (default: none; sandbox operations then fail with \"no provider configured\")")
	f.StringVar(&lc.DaytonaAPIURL, "daytona-api-url", "", "Daytona API base URL (default https://app.daytona.io/api)")
	f.StringVar(&lc.DaytonaAPIKey, "daytona-api-key", "", "Daytona API key")
	f.StringVar(&lc.DaytonaOrg, "daytona-org", "", "Daytona organization id (X-Daytona-Organization-ID)")
	f.StringVar(&lc.DaytonaSnapshot, "daytona-snapshot", "", "Daytona snapshot of new sandboxes (one with sandkeep-agent installed by install.sh --boot)")
	f.StringVar(&lc.DaytonaTarget, "daytona-target", "", "Daytona region of new sandboxes (default: the organization's)")
	f.StringVar(&lc.LocalRoot, "local-root", "", "local provider: directory of the sandboxes (default <data>/sandboxes)")
	f.StringVar(&lc.LocalAgent, "local-agent", "", "local provider: the sandkeep-agent binary (default: beside sandkeep, else in PATH)")
	f.StringVar(&lc.AgentCoordinator, "agent-coordinator", "", "gRPC address the agents of created sandboxes reach (default: the --listen address)")
	f.DurationVar(&lc.Policy.StopAfter, "stop-after", def.StopAfter, "global policy: stop a sandbox after this long idle (0: never)")
	f.DurationVar(&lc.Policy.DestroyAfter, "destroy-after", def.DestroyAfter, "global policy: destroy after this long idle, once flushed and verified (0: never)")
	f.DurationVar(&lc.Policy.ArchiveAfter, "archive-after", def.ArchiveAfter, "global policy: archive a stopped sandbox after this long idle (0: never)")
	f.DurationVar(&lc.Policy.DeleteHistoryAfter, "delete-history-after", def.DeleteHistoryAfter, "global policy: delete a project's whole history this long after it went idle, once its sandbox is destroyed (0: never)")
	f.DurationVar(&lc.Policy.NotifyGrace, "notify-grace", def.NotifyGrace, "global policy: call the webhook this long before each cleanup (0: no webhook)")
	f.StringVar(&lc.Webhook, "lifecycle-webhook", "", "global cleanup webhook URL (projects may set their own with 'sandkeep policy set --webhook')")
	f.Var((*rate)(&lc.Rates.StartedPerHour), "rate-started", "USD per hour of a running sandbox (Daytona's list price for 1 vCPU, 1 GiB, 3 GiB disk)")
	f.Var((*rate)(&lc.Rates.StoppedPerHour), "rate-stopped", "USD per hour of a stopped sandbox (its disk)")
	f.Var((*rate)(&lc.Rates.ArchivedPerHour), "rate-archived", "USD per hour of an archived sandbox")
	f.Var((*rate)(&lc.Rates.StoragePerGBMonth), "rate-storage", "USD per GiB-month of bucket storage (S3 Standard's list price)")
	f.DurationVar(&lc.TickEvery, "lifecycle-tick", 5*time.Second, "how often the lifecycle manager looks at every sandbox")
	f.DurationVar(&lc.ReconcileEvery, "reconcile-every", time.Minute, "how often the database is reconciled with the provider")
	f.DurationVar(&lc.ProviderCallTimeout, "provider-timeout", 30*time.Second, "bound on one provider call attempt (a call that hangs counts as a provider failure; 5 in a row open the circuit for 30s)")
	f.DurationVar(&lc.AgentTimeout, "agent-timeout", 2*time.Minute, "a started sandbox whose agent has not answered for this long is replaced by 'sandkeep sandbox ensure'")
	f.DurationVar(&lc.StuckAfter, "stuck-after", 15*time.Minute, "a sandbox in the error state or in a transition for this long is flushed if its agent answers, then destroyed (the next ensure creates another)")
}

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

// rate is a float flag whose default prints as a price (6 significant
// decimals at most), not as 9.452054794520548e-05.
type rate float64

func (r *rate) String() string {
	return strings.TrimRight(strings.TrimRight(strconv.FormatFloat(float64(*r), 'f', 8, 64), "0"), ".")
}
func (r *rate) Type() string { return "usd" }
func (r *rate) Set(s string) error {
	v, err := strconv.ParseFloat(s, 64)
	if err != nil || v < 0 {
		return fmt.Errorf("want a non-negative number, got %q", s)
	}
	*r = rate(v)
	return nil
}

// newLifecycleCommands are `sandbox`, `lease`, `policy` and `cost`.
func newLifecycleCommands(g *globals) []*cobra.Command {
	return []*cobra.Command{newSandbox(g), newLease(g), newPolicy(g), newCost(g)}
}

func fmtTime(t *timestamppb.Timestamp) string {
	if t == nil {
		return "-"
	}
	return t.AsTime().Local().Format("2006-01-02 15:04:05")
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

func tptr(t *timestamppb.Timestamp) *time.Time {
	if t == nil {
		return nil
	}
	v := t.AsTime()
	return &v
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

// leaseJSON is a lease in --json output.
func leaseJSON(l *pb.RunLease) map[string]any {
	out := map[string]any{"id": l.GetId(), "project_id": l.GetProjectId(), "created": tsOrNil(l.GetCreateTime()),
		"expires": tsOrNil(l.GetExpireTime()), "released": tsOrNil(l.GetReleaseTime())}
	return out
}

func tsOrNil(t *timestamppb.Timestamp) any {
	if t == nil {
		return nil
	}
	return t.AsTime()
}

func leaseLine(w io.Writer, l *pb.RunLease) {
	end := l.GetExpireTime()
	if l.GetReleaseTime() != nil {
		end = l.GetReleaseTime()
	}
	fmt.Fprintf(w, "%s until %s\n", l.GetId(), end.AsTime().Format(time.RFC3339))
}

func newLease(g *globals) *cobra.Command {
	cmd := &cobra.Command{Use: "lease", Short: "Run leases: a project's sandbox is never reaped while one is held"}
	var project string
	var ttl, renewTTL time.Duration
	var acquireJSON, renewJSON, releaseJSON bool
	acquire := &cobra.Command{
		Use:   "acquire --project ID [--ttl 10m]",
		Short: "Take a run lease; prints its id alone on stdout",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if err := requireProject(project); err != nil {
				return err
			}
			req := &pb.AcquireRunLeaseRequest{ProjectId: project, Ttl: durationpb.New(ttl)}
			return lifecycleRPC(g, cmd, callTimeout, pb.LifecycleServiceClient.AcquireRunLease, req, func(resp *pb.AcquireRunLeaseResponse) error {
				if acquireJSON {
					return printJSON(g.stdout, leaseJSON(resp.GetLease()))
				}
				fmt.Fprintf(g.stderr, "lease held until %s\n", resp.GetLease().GetExpireTime().AsTime().Format(time.RFC3339))
				fmt.Fprintln(g.stdout, resp.GetLease().GetId())
				return nil
			})
		},
	}
	acquire.Flags().StringVar(&project, "project", "", "project id")
	acquire.Flags().DurationVar(&ttl, "ttl", 10*time.Minute, "the lease ends this long from now unless renewed")
	acquire.Flags().BoolVar(&acquireJSON, "json", false, `print {"id", "project_id", "created", "expires", "released"}`)
	renew := &cobra.Command{
		Use:   "renew ID [--ttl 10m]",
		Short: "Make a lease end ttl from now",
		Args:  cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			req := &pb.RenewRunLeaseRequest{LeaseId: args[0], Ttl: durationpb.New(renewTTL)}
			return lifecycleRPC(g, cmd, callTimeout, pb.LifecycleServiceClient.RenewRunLease, req, func(resp *pb.RenewRunLeaseResponse) error {
				if renewJSON {
					return printJSON(g.stdout, leaseJSON(resp.GetLease()))
				}
				leaseLine(g.stdout, resp.GetLease())
				return nil
			})
		},
	}
	renew.Flags().DurationVar(&renewTTL, "ttl", 10*time.Minute, "the lease ends this long from now")
	renew.Flags().BoolVar(&renewJSON, "json", false, `print {"id", "project_id", "created", "expires", "released"}`)
	release := &cobra.Command{
		Use:   "release ID",
		Short: "End a lease now",
		Args:  cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			req := &pb.ReleaseRunLeaseRequest{LeaseId: args[0]}
			return lifecycleRPC(g, cmd, callTimeout, pb.LifecycleServiceClient.ReleaseRunLease, req, func(resp *pb.ReleaseRunLeaseResponse) error {
				if releaseJSON {
					return printJSON(g.stdout, leaseJSON(resp.GetLease()))
				}
				leaseLine(g.stdout, resp.GetLease())
				return nil
			})
		},
	}
	release.Flags().BoolVar(&releaseJSON, "json", false, `print {"id", "project_id", "created", "expires", "released"}`)
	var listProject string
	var listJSON bool
	list := &cobra.Command{
		Use:   "list [--project ID] [--json]",
		Short: "List the run leases held now: ID, PROJECT, CREATED, EXPIRES",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			req := &pb.ListRunLeasesRequest{ProjectId: listProject}
			return lifecycleRPC(g, cmd, callTimeout, pb.LifecycleServiceClient.ListRunLeases, req, func(resp *pb.ListRunLeasesResponse) error {
				return printList(g.stdout, listJSON, resp.GetLeases(), leaseJSON, "ID\tPROJECT\tCREATED\tEXPIRES", func(w io.Writer, l *pb.RunLease) {
					fmt.Fprintf(w, "%s\t%s\t%s\t%s\n", l.GetId(), l.GetProjectId(), fmtTime(l.GetCreateTime()), fmtTime(l.GetExpireTime()))
				})
			})
		},
	}
	list.Flags().StringVar(&listProject, "project", "", "only this project's leases")
	list.Flags().BoolVar(&listJSON, "json", false, `print an array of {"id", "project_id", "created", "expires", "released"}`)
	cmd.AddCommand(acquire, renew, release, list)
	return cmd
}

// policyValuesJSON is the JSON form of PolicyValues: Go duration strings
// ("never" for 0, as the text says), unset fields left out.
func policyValuesJSON(v *pb.PolicyValues) map[string]string {
	out := map[string]string{}
	for _, f := range []struct {
		name string
		d    *durationpb.Duration
	}{{"stop_after", v.GetStopAfter()}, {"destroy_after", v.GetDestroyAfter()}, {"archive_after", v.GetArchiveAfter()},
		{"delete_history_after", v.GetDeleteHistoryAfter()}, {"notify_grace", v.GetNotifyGrace()}} {
		if f.d != nil {
			out[f.name] = f.d.AsDuration().String()
			if f.d.AsDuration() == 0 {
				out[f.name] = "never"
			}
		}
	}
	return out
}

func printPolicy(w io.Writer, p *pb.ProjectPolicy, asJSON bool) error {
	if asJSON {
		return printJSON(w, map[string]any{"project_id": p.GetProjectId(), "effective": policyValuesJSON(p.GetEffective()),
			"global": policyValuesJSON(p.GetGlobal()), "override": policyValuesJSON(p.GetOverride()),
			"webhook_url": p.GetWebhookUrl(), "project_webhook_url": p.GetProjectWebhookUrl()})
	}
	eff, over := policyValuesJSON(p.GetEffective()), policyValuesJSON(p.GetOverride())
	tw := newTable(w, "SETTING\tVALUE\tFROM")
	for _, k := range []string{"stop_after", "destroy_after", "archive_after", "delete_history_after", "notify_grace"} {
		v, from := eff[k], "global"
		if _, ok := over[k]; ok {
			from = "project"
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\n", strings.ReplaceAll(k, "_", "-"), v, from)
	}
	hook, from := p.GetWebhookUrl(), "global"
	if p.GetProjectWebhookUrl() != "" {
		from = "project"
	}
	if hook == "" {
		hook = "(none)"
	}
	fmt.Fprintf(tw, "webhook\t%s\t%s\n", hook, from)
	return tw.Flush()
}

func newPolicy(g *globals) *cobra.Command {
	cmd := &cobra.Command{Use: "policy", Short: "Lifecycle policies: the global one (serve flags) and per-project overrides"}
	var project, webhook string
	var asJSON, reset bool
	var stopAfter, destroyAfter, archiveAfter, deleteHistoryAfter, notifyGrace time.Duration
	set := &cobra.Command{
		Use:   "set --project ID [--stop-after 10m] [--destroy-after 1h] [--archive-after D] [--delete-history-after D] [--notify-grace D] [--webhook URL] [--reset]",
		Short: "Override the global policy for a project (given flags only; 0 means never); prints the result",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if project == "" {
				return errors.New("--project is required (the global policy is set with serve's flags)")
			}
			f := cmd.Flags()
			o := &pb.PolicyValues{}
			for _, x := range []struct {
				name string
				v    time.Duration
				dst  **durationpb.Duration
			}{{"stop-after", stopAfter, &o.StopAfter}, {"destroy-after", destroyAfter, &o.DestroyAfter}, {"archive-after", archiveAfter, &o.ArchiveAfter},
				{"delete-history-after", deleteHistoryAfter, &o.DeleteHistoryAfter}, {"notify-grace", notifyGrace, &o.NotifyGrace}} {
				if f.Changed(x.name) {
					*x.dst = durationpb.New(x.v)
				}
			}
			req := &pb.SetPolicyRequest{ProjectId: project, Override: o, ResetOverride: reset}
			if f.Changed("webhook") {
				req.WebhookUrl = &webhook
			}
			return lifecycleRPC(g, cmd, callTimeout, pb.LifecycleServiceClient.SetPolicy, req, func(resp *pb.SetPolicyResponse) error {
				return printPolicy(g.stdout, resp.GetPolicy(), asJSON)
			})
		},
	}
	sf := set.Flags()
	sf.StringVar(&project, "project", "", "project id")
	sf.DurationVar(&stopAfter, "stop-after", 0, "stop after this long idle (0: never)")
	sf.DurationVar(&destroyAfter, "destroy-after", 0, "destroy after this long idle, once flushed and verified (0: never)")
	sf.DurationVar(&archiveAfter, "archive-after", 0, "archive a stopped sandbox after this long idle (0: never)")
	sf.DurationVar(&deleteHistoryAfter, "delete-history-after", 0, "delete the project's whole history after this long idle, once destroyed (0: never)")
	sf.DurationVar(&notifyGrace, "notify-grace", 0, "call the webhook this long before each cleanup (0: no webhook)")
	sf.StringVar(&webhook, "webhook", "", "the project's cleanup webhook URL (\"\": use the global one)")
	sf.BoolVar(&reset, "reset", false, "drop the project's overrides first (then apply the given flags)")
	sf.BoolVar(&asJSON, "json", false, "print JSON")

	var showProject string
	var showJSON bool
	show := &cobra.Command{
		Use:   "show [--project ID] [--json]",
		Short: "The effective policy of a project (or the global one)",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			req := &pb.GetPolicyRequest{ProjectId: showProject}
			return lifecycleRPC(g, cmd, callTimeout, pb.LifecycleServiceClient.GetPolicy, req, func(resp *pb.GetPolicyResponse) error {
				return printPolicy(g.stdout, resp.GetPolicy(), showJSON)
			})
		},
	}
	show.Flags().StringVar(&showProject, "project", "", "project id (default: the global policy)")
	show.Flags().BoolVar(&showJSON, "json", false, "print JSON")
	cmd.AddCommand(set, show)
	return cmd
}

// parseSince reads --since: RFC 3339, a date (YYYY-MM-DD, local), or a
// duration back from now ("24h").
func parseSince(s string, now time.Time) (time.Time, error) {
	if s == "" {
		return time.Time{}, nil
	}
	if d, err := time.ParseDuration(s); err == nil {
		return now.Add(-d), nil
	}
	if t, err := time.Parse(time.RFC3339, s); err == nil {
		return t, nil
	}
	if t, err := time.ParseInLocation("2006-01-02", s, time.Local); err == nil {
		return t, nil
	}
	return time.Time{}, fmt.Errorf("--since %q: want RFC 3339 (2026-01-02T15:04:05Z), a date (2026-01-02) or a duration back from now (24h)", s)
}

func newCost(g *globals) *cobra.Command {
	var project, since string
	var asJSON bool
	cmd := &cobra.Command{
		Use:   "cost [--project ID] [--since T] [--json]",
		Short: "Sandbox-hours by state, cost (compute + storage) and savings against always-on, per project and in total",
		Long: `Prices the time each project's sandboxes spent in each state (the lifecycle
registry's intervals) at serve's rates (--rate-started, --rate-stopped,
--rate-archived), plus the bucket (the project's stored bytes now × the time ×
--rate-storage), and compares it with an always-on baseline: a sandbox started
for the whole period since the project's first sandbox was created. --since
takes RFC 3339, a date, or a duration back from now (24h).`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			t, err := parseSince(since, time.Now())
			if err != nil {
				return err
			}
			req := &pb.GetCostRequest{ProjectId: project}
			if !t.IsZero() {
				req.Since = timestamppb.New(t)
			}
			return lifecycleRPC(g, cmd, callTimeout, pb.LifecycleServiceClient.GetCost, req, func(resp *pb.GetCostResponse) error {
				if asJSON {
					return printJSON(g.stdout, costJSON(resp))
				}
				return printCost(g.stdout, resp)
			})
		},
	}
	cmd.Flags().StringVar(&project, "project", "", "only this project")
	cmd.Flags().StringVar(&since, "since", "", "from this time (RFC 3339, a date, or a duration back from now)")
	cmd.Flags().BoolVar(&asJSON, "json", false, "print JSON")
	return cmd
}

type projectCostJSON struct {
	ProjectID       string             `json:"project_id,omitempty"`
	HoursByState    map[string]float64 `json:"hours_by_state"`
	DollarsByState  map[string]float64 `json:"dollars_by_state"`
	SandboxHours    float64            `json:"sandbox_hours"`
	StoredBytes     int64              `json:"stored_bytes"`
	ComputeDollars  float64            `json:"compute_dollars"`
	StorageDollars  float64            `json:"storage_dollars"`
	TotalDollars    float64            `json:"total_dollars"`
	AlwaysOnHours   float64            `json:"always_on_hours"`
	AlwaysOnDollars float64            `json:"always_on_dollars"`
	Savings         float64            `json:"savings"`
}

func toProjectCostJSON(p *pb.ProjectCost) projectCostJSON {
	out := projectCostJSON{ProjectID: p.GetProjectId(), HoursByState: map[string]float64{}, DollarsByState: map[string]float64{},
		SandboxHours: p.GetSandboxHours(), StoredBytes: p.GetStoredBytes(), ComputeDollars: p.GetComputeDollars(),
		StorageDollars: p.GetStorageDollars(), TotalDollars: p.GetTotalDollars(), AlwaysOnHours: p.GetAlwaysOnHours(),
		AlwaysOnDollars: p.GetAlwaysOnDollars(), Savings: p.GetSavings()}
	for _, s := range p.GetStates() {
		out.HoursByState[s.GetState()] = s.GetSeconds() / 3600
		out.DollarsByState[s.GetState()] = s.GetDollars()
	}
	return out
}

func costJSON(r *pb.GetCostResponse) map[string]any {
	out := map[string]any{"until": r.GetUntil().AsTime(), "projects": jsonList(r.GetProjects(), toProjectCostJSON), "total": toProjectCostJSON(r.GetTotal()),
		"rates": map[string]float64{"started_per_hour": r.GetRates().GetStartedPerHour(), "stopped_per_hour": r.GetRates().GetStoppedPerHour(),
			"archived_per_hour": r.GetRates().GetArchivedPerHour(), "storage_per_gb_month": r.GetRates().GetStoragePerGbMonth()}}
	if r.GetSince() != nil {
		out["since"] = r.GetSince().AsTime()
	}
	return out
}

func printCost(w io.Writer, r *pb.GetCostResponse) error {
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', tabwriter.AlignRight)
	fmt.Fprintln(tw, "PROJECT\tSTARTED h\tSTOPPED h\tARCHIVED h\tOTHER h\tSTORED\tCOMPUTE $\tSTORAGE $\tTOTAL $\tALWAYS-ON $\tSAVINGS\t")
	row := func(name string, p *pb.ProjectCost) {
		h := map[string]float64{}
		for _, s := range p.GetStates() {
			h[s.GetState()] = s.GetSeconds() / 3600
		}
		other := 0.0
		for k, v := range h {
			if k != "started" && k != "stopped" && k != "archived" {
				other += v
			}
		}
		savings := "–" // nothing to compare yet
		if p.GetAlwaysOnDollars() > 0 {
			savings = fmt.Sprintf("%.1f%%", 100*p.GetSavings())
		}
		fmt.Fprintf(tw, "%s\t%.2f\t%.2f\t%.2f\t%.2f\t%s\t%.4f\t%.4f\t%.4f\t%.4f\t%s\t\n", name, h["started"], h["stopped"], h["archived"], other,
			humanBytes(p.GetStoredBytes()), p.GetComputeDollars(), p.GetStorageDollars(), p.GetTotalDollars(), p.GetAlwaysOnDollars(), savings)
	}
	for _, p := range r.GetProjects() {
		row(p.GetProjectId(), p)
	}
	row("TOTAL", r.GetTotal())
	return tw.Flush()
}

func humanBytes(n int64) string {
	const unit = 1024
	if n < unit {
		return fmt.Sprintf("%d B", n)
	}
	div, exp := int64(unit), 0
	for m := n / unit; m >= unit; m /= unit {
		div *= unit
		exp++
	}
	return fmt.Sprintf("%.1f %ciB", float64(n)/float64(div), "KMGTPE"[exp])
}
