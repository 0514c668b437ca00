package coordcli

import (
	"fmt"
	"time"

	"github.com/spf13/cobra"
	"google.golang.org/protobuf/types/known/durationpb"

	pb "github.com/sandkeep/sandkeep/proto/sandkeep/v1"
)

func newFlush(g *globals) *cobra.Command {
	var project string
	var timeout time.Duration
	var asJSON bool
	cmd := &cobra.Command{
		Use:   "flush --project ID",
		Short: "Make the running agent commit everything on disk now; prints the version that holds it",
		Long: `The FlushProject barrier: the project's running agent syncs every change made
before the call and answers with the version that holds them (a new one, or
the head when nothing changed). Fails (Unavailable) when no agent of
the project is connected: start its sandbox first (sandkeep sandbox ensure).`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if err := requireProject(project); err != nil {
				return err
			}
			req := &pb.FlushProjectRequest{ProjectId: project, Timeout: durationpb.New(timeout)}
			return adminRPC(g, cmd, timeout+callTimeout, pb.AdminServiceClient.FlushProject, req, func(resp *pb.FlushProjectResponse) error {
				if asJSON {
					return printJSON(g.stdout, map[string]any{"project": project, "version": resp.GetVersion()})
				}
				fmt.Fprintln(g.stdout, resp.GetVersion())
				return nil
			})
		},
	}
	cmd.Flags().StringVar(&project, "project", "", "project id")
	cmd.Flags().DurationVar(&timeout, "timeout", time.Minute, "how long to wait for the agent (at most 1h)")
	cmd.Flags().BoolVar(&asJSON, "json", false, `print {"project", "version"}`)
	return cmd
}
