package coordcli

import (
	"errors"
	"fmt"
	"io"
	"strings"
	"time"

	"github.com/spf13/cobra"
	"google.golang.org/protobuf/types/known/durationpb"

	pb "github.com/sandkeep/sandkeep/proto/sandkeep/v1"
)

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
