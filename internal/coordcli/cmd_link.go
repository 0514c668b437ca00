package coordcli

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/spf13/cobra"
	"google.golang.org/protobuf/types/known/durationpb"

	pb "github.com/sandkeep/sandkeep/proto/sandkeep/v1"
)

func newLink(g *globals) *cobra.Command {
	var linkJSON bool
	var project string
	var version int64
	var ttl time.Duration
	cmd := &cobra.Command{
		Use:   "link --project ID PATH [--version N] [--ttl 24h]",
		Short: "Print a signed URL serving a file of a version (default: the head's)",
		Long: `Print a signed URL of the coordinator's HTTP listener that serves PATH as it is
in version N (default: the head now; the link stays on that version) until it
expires, whether or not a sandbox exists. The URL alone goes to stdout.`,
		Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			if err := requireProject(project); err != nil {
				return err
			}
			if version < 0 {
				return errors.New("--version must not be negative")
			}
			return g.adminCall(cmd, func(ctx context.Context, c pb.AdminServiceClient) error {
				resp, err := c.CreateFileLink(ctx, &pb.CreateFileLinkRequest{ProjectId: project, Path: args[0], Version: version, Ttl: durationpb.New(ttl)})
				if err != nil {
					return err
				}
				if linkJSON {
					return printJSON(g.stdout, map[string]any{"url": resp.GetUrl(), "version": resp.GetVersion(), "expires": tptr(resp.GetExpireTime())})
				}
				fmt.Fprintln(g.stdout, resp.GetUrl())
				return nil
			})
		},
	}
	cmd.Flags().StringVar(&project, "project", "", "project id")
	cmd.Flags().Int64Var(&version, "version", 0, "version number (default: the head)")
	cmd.Flags().DurationVar(&ttl, "ttl", 24*time.Hour, "lifetime of the link")
	cmd.Flags().BoolVar(&linkJSON, "json", false, `print {"url", "version", "expires"}`)
	return cmd
}
