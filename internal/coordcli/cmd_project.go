package coordcli

import (
	"fmt"
	"io"
	"time"

	"github.com/spf13/cobra"

	"github.com/sandkeep/sandkeep/internal/progress"
	pb "github.com/sandkeep/sandkeep/proto/sandkeep/v1"
)

// newProjectDelete is `sandkeep project delete`.
func newProjectDelete(g *globals) *cobra.Command {
	var asJSON, quiet bool
	cmd := &cobra.Command{
		Use:   "delete ID",
		Short: "Delete a project: every object and row, its tokens and links; prints the bytes freed",
		Long: `Delete a project: every object under its bucket prefix, every row, its sandbox
tokens (revoked at once, as are its file links). Prints the number of bytes
freed alone on stdout, and the number of objects on stderr.`,
		Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			req := &pb.DeleteProjectRequest{ProjectId: args[0]}
			if !quiet {
				stop := progress.Start(g.stderr, func(el time.Duration) string {
					return fmt.Sprintf("deleting project %s (every object under its prefix, then its rows), %s", args[0], el.Truncate(100*time.Millisecond))
				})
				defer stop()
			}
			return adminRPC(g, cmd, time.Hour, pb.AdminServiceClient.DeleteProject, req, func(resp *pb.DeleteProjectResponse) error {
				if asJSON {
					return printJSON(g.stdout, map[string]any{"project": args[0], "objects_deleted": resp.GetObjectsDeleted(), "bytes_freed": resp.GetBytesFreed()})
				}
				fmt.Fprintln(g.stdout, resp.GetBytesFreed())
				fmt.Fprintf(g.stderr, "deleted project %s: %d objects, %d bytes freed\n", args[0], resp.GetObjectsDeleted(), resp.GetBytesFreed())
				return nil
			})
		},
	}
	cmd.Flags().BoolVar(&asJSON, "json", false, `print {"project", "objects_deleted", "bytes_freed"}`)
	cmd.Flags().BoolVar(&quiet, "quiet", false, "no progress lines on stderr")
	return cmd
}

func newProject(g *globals) *cobra.Command {
	cmd := &cobra.Command{Use: "project", Short: "Create, list and delete projects"}
	var createJSON bool
	create := &cobra.Command{
		Use:   "create NAME",
		Short: "Create a project; prints its id alone on stdout",
		Args:  cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			return adminRPC(g, cmd, callTimeout, pb.AdminServiceClient.CreateProject, &pb.CreateProjectRequest{Name: args[0]}, func(resp *pb.CreateProjectResponse) error {
				if createJSON {
					return printJSON(g.stdout, projectJSON(resp.GetProject()))
				}
				fmt.Fprintln(g.stdout, resp.GetProject().GetId())
				return nil
			})
		},
	}
	create.Flags().BoolVar(&createJSON, "json", false, `print {"id", "name", "created", "head"}`)
	var asJSON bool
	list := &cobra.Command{
		Use:   "list",
		Short: "List projects",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			return adminRPC(g, cmd, callTimeout, pb.AdminServiceClient.ListProjects, &pb.ListProjectsRequest{}, func(resp *pb.ListProjectsResponse) error {
				return printList(g.stdout, asJSON, resp.GetProjects(), projectJSON, "ID\tNAME\tHEAD\tCREATED", func(w io.Writer, p *pb.Project) {
					fmt.Fprintf(w, "%s\t%s\t%d\t%s\n", p.GetId(), p.GetName(), p.GetHead(), p.GetCreateTime().AsTime().Format(time.RFC3339))
				})
			})
		},
	}
	list.Flags().BoolVar(&asJSON, "json", false, "print JSON")
	cmd.AddCommand(create, list, newProjectDelete(g), newProjectLimits(g))
	return cmd
}

// projectJSON is one element of `sandkeep project list --json`.
func projectJSON(p *pb.Project) map[string]any {
	return map[string]any{"id": p.GetId(), "name": p.GetName(), "created": p.GetCreateTime().AsTime(), "head": p.GetHead()}
}
