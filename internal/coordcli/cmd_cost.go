package coordcli

import (
	"fmt"
	"io"
	"text/tabwriter"
	"time"

	"github.com/spf13/cobra"
	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/sandkeep/sandkeep/internal/progress"
	pb "github.com/sandkeep/sandkeep/proto/sandkeep/v1"
)

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
			progress.Bytes(p.GetStoredBytes()), p.GetComputeDollars(), p.GetStorageDollars(), p.GetTotalDollars(), p.GetAlwaysOnDollars(), savings)
	}
	for _, p := range r.GetProjects() {
		row(p.GetProjectId(), p)
	}
	row("TOTAL", r.GetTotal())
	return tw.Flush()
}
