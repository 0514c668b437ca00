package coordcli

import (
	"fmt"
	"strings"
	"time"

	"github.com/spf13/cobra"

	"github.com/sandkeep/sandkeep/internal/cli"
	"github.com/sandkeep/sandkeep/internal/progress"
	pb "github.com/sandkeep/sandkeep/proto/sandkeep/v1"
)

// newGC is `sandkeep gc`.
func newGC(g *globals) *cobra.Command {
	var project string
	var dryRun, asJSON, quiet bool
	cmd := &cobra.Command{
		Use:   "gc [--project ID] [--dry-run]",
		Short: "Apply retention and delete what no kept version references; prints what was freed",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			req := &pb.CollectGarbageRequest{ProjectId: project, DryRun: dryRun}
			if !quiet {
				what := "every project"
				if project != "" {
					what = project
				}
				stop := progress.Start(g.stderr, func(el time.Duration) string {
					return fmt.Sprintf("gc: collecting %s, %s", what, el.Truncate(100*time.Millisecond))
				})
				defer stop()
			}
			return adminRPC(g, cmd, 6*time.Hour, pb.AdminServiceClient.CollectGarbage, req, func(resp *pb.CollectGarbageResponse) error {
				if asJSON {
					if err := printJSON(g.stdout, map[string]any{"dry_run": dryRun, "projects": resp.GetProjects(), "versions_deleted": resp.GetVersionsDeleted(),
						"packs_deleted": resp.GetPacksDeleted(), "bytes_freed": resp.GetBytesFreed(), "packs_condemned": resp.GetPacksCondemned(),
						"bytes_condemned": resp.GetBytesCondemned(), "bytes_before": resp.GetBytesBefore(), "bytes_after": resp.GetBytesAfter(),
						"failed": cli.NonNil(resp.GetFailed()), "report": strings.TrimRight(resp.GetReport(), "\n")}); err != nil {
						return err
					}
				} else {
					fmt.Fprint(g.stdout, strings.TrimRight(resp.GetReport(), "\n")+"\n")
				}
				if len(resp.GetFailed()) > 0 {
					return fmt.Errorf("gc failed for %d project(s): %s", len(resp.GetFailed()), strings.Join(resp.GetFailed(), "; "))
				}
				return nil
			})
		},
	}
	cmd.Flags().StringVar(&project, "project", "", "only this project (default: every project)")
	cmd.Flags().BoolVar(&dryRun, "dry-run", false, "report what would be freed; delete nothing")
	cmd.Flags().BoolVar(&quiet, "quiet", false, "no progress lines on stderr")
	cmd.Flags().BoolVar(&asJSON, "json", false, `print {"dry_run", "projects", "versions_deleted", "packs_deleted", "bytes_freed", "packs_condemned", "bytes_condemned", "bytes_before", "bytes_after", "failed", "report"}`)
	return cmd
}
