package coordcli

import (
	"context"
	"errors"
	"fmt"

	"github.com/spf13/cobra"

	"github.com/sandkeep/sandkeep/internal/cli"
	pb "github.com/sandkeep/sandkeep/proto/sandkeep/v1"
)

func newVersion(g *globals) *cobra.Command {
	var asJSON bool
	cmd := &cobra.Command{
		Use:   "version [pin|unpin]",
		Short: "Print sandkeep's version; pin or unpin a project version",
		Args:  cobra.NoArgs,
		RunE: func(*cobra.Command, []string) error {
			return cli.PrintVersion(g.stdout, "sandkeep", Version, asJSON)
		},
	}
	cmd.Flags().BoolVar(&asJSON, "json", false, `print {"version", "go"}`)
	for _, pin := range []bool{true, false} {
		var project string
		var version int64
		var pinJSON bool
		name := "pin"
		short := "Pin a version: garbage collection never removes it"
		if !pin {
			name, short = "unpin", "Unpin a version: retention applies to it again"
		}
		sub := &cobra.Command{
			Use:   name + " --project ID --version N",
			Short: short,
			Args:  cobra.NoArgs,
			RunE: func(cmd *cobra.Command, _ []string) error {
				if err := requireProject(project); err != nil {
					return err
				}
				if version <= 0 {
					return errors.New("--version is required (a positive version number)")
				}
				return g.adminCall(cmd, func(ctx context.Context, c pb.AdminServiceClient) error {
					resp, err := c.PinVersion(ctx, &pb.PinVersionRequest{ProjectId: project, Version: version, Pinned: pin})
					if err != nil {
						return err
					}
					if pinJSON {
						return printJSON(g.stdout, toVersionJSON(resp.GetVersion()))
					}
					state := "pinned"
					if !resp.GetVersion().GetPinned() {
						state = "unpinned"
					}
					fmt.Fprintf(g.stdout, "version %d %s\n", resp.GetVersion().GetNumber(), state)
					return nil
				})
			},
		}
		sub.Flags().StringVar(&project, "project", "", "project id")
		sub.Flags().Int64Var(&version, "version", 0, "version number")
		sub.Flags().BoolVar(&pinJSON, "json", false, "print the version as JSON (as in versions --json)")
		cmd.AddCommand(sub)
	}
	return cmd
}
