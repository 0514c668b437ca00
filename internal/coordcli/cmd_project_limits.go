package coordcli

import (
	"fmt"

	"github.com/spf13/cobra"

	pb "github.com/sandkeep/sandkeep/proto/sandkeep/v1"
)

func newProjectLimits(g *globals) *cobra.Command {
	var project string
	var files, bytes int64
	var depth int32
	var asJSON bool
	cmd := &cobra.Command{
		Use:   "limits --project ID [--max-files N] [--max-bytes N] [--max-depth N] [--json]",
		Short: "Show or change what one version of a project may expand to",
		Long: `Show or change the project's limits. A commit whose tree would exceed one
is refused (ResourceExhausted, reason LIMIT_EXCEEDED) and nothing changes:
a sandbox cannot commit a tree that names one chunk or directory millions of
times over. With no --max-* flag the limits are shown. 0 sets the default:
5,000,000 files and directories, 256 GiB of files, 256 levels deep.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if err := requireProject(project); err != nil {
				return err
			}
			print := func(l *pb.ProjectLimits) error {
				if asJSON {
					return printJSON(g.stdout, map[string]any{"project": project, "max_files": l.GetMaxFiles(), "max_bytes": l.GetMaxBytes(), "max_depth": l.GetMaxDepth()})
				}
				fmt.Fprintf(g.stdout, "max files\t%d\nmax bytes\t%d\nmax depth\t%d\n", l.GetMaxFiles(), l.GetMaxBytes(), l.GetMaxDepth())
				return nil
			}
			f := cmd.Flags()
			set := &pb.ProjectLimits{}
			if f.Changed("max-files") {
				set.MaxFiles = &files
			}
			if f.Changed("max-bytes") {
				set.MaxBytes = &bytes
			}
			if f.Changed("max-depth") {
				set.MaxDepth = &depth
			}
			if set.MaxFiles == nil && set.MaxBytes == nil && set.MaxDepth == nil {
				return adminRPC(g, cmd, callTimeout, pb.AdminServiceClient.GetProjectLimits, &pb.GetProjectLimitsRequest{ProjectId: project},
					func(resp *pb.GetProjectLimitsResponse) error { return print(resp.GetLimits()) })
			}
			return adminRPC(g, cmd, callTimeout, pb.AdminServiceClient.SetProjectLimits, &pb.SetProjectLimitsRequest{ProjectId: project, Limits: set},
				func(resp *pb.SetProjectLimitsResponse) error { return print(resp.GetLimits()) })
		},
	}
	f := cmd.Flags()
	f.StringVar(&project, "project", "", "project id")
	f.Int64Var(&files, "max-files", 0, "most files, directories and symlinks in a version (0: default)")
	f.Int64Var(&bytes, "max-bytes", 0, "most bytes of files in a version (0: default)")
	f.Int32Var(&depth, "max-depth", 0, "deepest path, in components (0: default)")
	f.BoolVar(&asJSON, "json", false, "print JSON")
	return cmd
}
