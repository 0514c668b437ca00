package coordcli

import (
	"fmt"
	"time"

	"github.com/spf13/cobra"
	"google.golang.org/protobuf/types/known/durationpb"

	pb "github.com/sandkeep/sandkeep/proto/sandkeep/v1"
)

func newConsoleURL(g *globals) *cobra.Command {
	var project string
	var ttl, session time.Duration
	var asJSON bool
	cmd := &cobra.Command{
		Use:   "console-url [--project ID] [--ttl 15m]",
		Short: "Print a URL that logs a browser into the web console (admin, or one project)",
		Long: `Print a login URL of the web console (served by sandkeep serve under /ui/ on
its HTTP listener). Opening it logs the browser in: as an admin (every
project), or with --project for that project alone — the link a platform
gives its end user. The URL works once, within --ttl; the session it starts
lasts --session and ends with "Sign out". Nothing of the admin token reaches
the browser.`,
		Example: `  sandkeep console-url
  sandkeep console-url --project $P --ttl 5m`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			req := &pb.CreateConsoleLinkRequest{ProjectId: project, Ttl: durationpb.New(ttl), SessionTtl: durationpb.New(session)}
			return adminRPC(g, cmd, callTimeout, pb.AdminServiceClient.CreateConsoleLink, req, func(resp *pb.CreateConsoleLinkResponse) error {
				if asJSON {
					return printJSON(g.stdout, map[string]any{"url": resp.GetUrl(), "project": project, "expire_time": resp.GetExpireTime().AsTime()})
				}
				fmt.Fprintln(g.stdout, resp.GetUrl())
				fmt.Fprintf(g.stderr, "open it within %s (it works once)\n", ttl)
				return nil
			})
		},
	}
	cmd.Flags().StringVar(&project, "project", "", "log in for this project alone (default: admin, every project)")
	cmd.Flags().DurationVar(&ttl, "ttl", 15*time.Minute, "how long the URL may be used (at most 24h)")
	cmd.Flags().DurationVar(&session, "session", 12*time.Hour, "how long the browser session lasts (at most 7 days)")
	cmd.Flags().BoolVar(&asJSON, "json", false, `print {"url", "project", "expire_time"}`)
	return cmd
}
