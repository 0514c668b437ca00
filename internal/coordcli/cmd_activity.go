package coordcli

import (
	"fmt"

	"github.com/spf13/cobra"

	"github.com/sandkeep/sandkeep/internal/progress"
	pb "github.com/sandkeep/sandkeep/proto/sandkeep/v1"
)

func newActivity(g *globals) *cobra.Command {
	var asJSON bool
	cmd := &cobra.Command{
		Use:   "activity",
		Short: "What the coordinator's background work did since it started (GC, lifecycle, replacements, failed verifications)",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			return adminRPC(g, cmd, callTimeout, pb.AdminServiceClient.GetActivity, &pb.GetActivityRequest{}, func(a *pb.GetActivityResponse) error {
				if asJSON {
					return printJSON(g.stdout, map[string]any{
						"start_time": a.GetStartTime().AsTime(), "gc_runs_ok": a.GetGcRunsOk(), "gc_runs_failed": a.GetGcRunsFailed(),
						"gc_bytes_freed": a.GetGcBytesFreed(), "gc_versions_deleted": a.GetGcVersionsDeleted(),
						"gc_last_success_time":      tptr(a.GetGcLastSuccessTime()),
						"lifecycle_actions":         counts(a.GetLifecycleActions()),
						"sandboxes_replaced":        counts(a.GetSandboxesReplaced()),
						"packs_failed_verification": a.GetPacksFailedVerification(),
					})
				}
				fmt.Fprintf(g.stdout, "since %s\n", a.GetStartTime().AsTime().UTC().Format("2006-01-02T15:04:05Z"))
				fmt.Fprintf(g.stdout, "gc: %d runs, %d failed, %s freed, %d versions deleted\n", a.GetGcRunsOk(), a.GetGcRunsFailed(), progress.Bytes(a.GetGcBytesFreed()), a.GetGcVersionsDeleted())
				for _, c := range a.GetLifecycleActions() {
					fmt.Fprintf(g.stdout, "lifecycle %s %s: %d\n", c.GetWhat(), c.GetResult(), c.GetCount())
				}
				for _, c := range a.GetSandboxesReplaced() {
					fmt.Fprintf(g.stdout, "replaced (%s): %d\n", c.GetWhat(), c.GetCount())
				}
				fmt.Fprintf(g.stdout, "packs failing verification: %d\n", a.GetPacksFailedVerification())
				return nil
			})
		},
	}
	cmd.Flags().BoolVar(&asJSON, "json", false, `print {"start_time", "gc_runs_ok", "gc_runs_failed", "gc_bytes_freed", "gc_versions_deleted", "gc_last_success_time", "lifecycle_actions", "sandboxes_replaced", "packs_failed_verification"}`)
	return cmd
}

type countJSON struct {
	What   string `json:"what"`
	Result string `json:"result,omitempty"`
	Count  int64  `json:"count"`
}

func counts(cs []*pb.ActivityCount) []countJSON {
	return jsonList(cs, func(c *pb.ActivityCount) countJSON {
		return countJSON{What: c.GetWhat(), Result: c.GetResult(), Count: c.GetCount()}
	})
}
