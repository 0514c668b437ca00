package coordcli

import (
	"errors"
	"fmt"
	"time"

	"github.com/spf13/cobra"
	"google.golang.org/protobuf/types/known/durationpb"

	pb "github.com/sandkeep/sandkeep/proto/sandkeep/v1"
)

func newRollback(g *globals) *cobra.Command {
	var project string
	var version int64
	var wait time.Duration
	var asJSON bool
	cmd := &cobra.Command{
		Use:   "rollback --project ID --version N",
		Short: "Make version N's tree the new head; prints the new version number",
		Long: `Commit a new head version (kind rollback) whose tree is version N's: nothing is
copied and every version stays in the history. If an agent of the project is
connected it brings its workspace to the new head (files written after version
N are removed, older contents come back); changes on disk that it had not
committed yet are kept and committed on top. Prints the new version number
alone on stdout; what the agent did goes to stderr.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if err := requireProject(project); err != nil {
				return err
			}
			if version <= 0 {
				return errors.New("--version is required (a positive version number)")
			}
			req := &pb.RollbackProjectRequest{ProjectId: project, Version: version, AgentTimeout: durationpb.New(wait)}
			return adminRPC(g, cmd, wait+30*time.Second, pb.AdminServiceClient.RollbackProject, req, func(resp *pb.RollbackProjectResponse) error {
				if asJSON {
					return printJSON(g.stdout, map[string]any{"version": resp.GetVersion().GetNumber(), "to": version,
						"agent_connected": resp.GetAgentConnected(), "agent_applied": resp.GetAgentApplied(),
						"agent_version": resp.GetAgentVersion(), "agent_error": resp.GetAgentError()})
				}
				fmt.Fprintln(g.stdout, resp.GetVersion().GetNumber())
				printAgentApply(g.stderr, &pb.AgentApply{Connected: resp.GetAgentConnected(), Applied: resp.GetAgentApplied(),
					Version: resp.GetAgentVersion(), Error: resp.GetAgentError()}, "the rollback")
				return nil
			})
		},
	}
	cmd.Flags().StringVar(&project, "project", "", "project id")
	cmd.Flags().Int64Var(&version, "version", 0, "the version to roll back to")
	cmd.Flags().DurationVar(&wait, "wait", time.Minute, "how long to wait for a running agent to apply it")
	cmd.Flags().BoolVar(&asJSON, "json", false, `print {"version", "to", "agent_connected", "agent_applied", "agent_version", "agent_error"}`)
	return cmd
}
