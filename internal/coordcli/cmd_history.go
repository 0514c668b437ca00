package coordcli

import (
	"context"
	"fmt"
	"strconv"
	"text/tabwriter"
	"time"

	"github.com/spf13/cobra"

	pb "github.com/sandkeep/sandkeep/proto/sandkeep/v1"
)

func newHistory(g *globals) *cobra.Command {
	var project string
	var asJSON bool
	cmd := &cobra.Command{
		Use:   "history --project ID PATH",
		Short: "List the versions in which PATH changed, newest first",
		Long: `List the versions in which PATH changed (was added, modified or deleted),
newest first. For a directory: the versions in which anything below it changed.

Output: VERSION TIME KIND CHANGE SIZE. --json prints an array of {version, time,
kind, change, size, checksum}.`,
		Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			if err := requireProject(project); err != nil {
				return err
			}
			return g.adminCall(cmd, func(ctx context.Context, c pb.AdminServiceClient) error {
				type revJSON struct {
					Version  int64     `json:"version"`
					Time     time.Time `json:"time"`
					Kind     string    `json:"kind"`
					Change   string    `json:"change"`
					Size     int64     `json:"size"`
					Checksum string    `json:"checksum,omitempty"`
				}
				out := []revJSON{}
				tw := tabwriter.NewWriter(g.stdout, 0, 4, 2, ' ', 0)
				if !asJSON {
					fmt.Fprintln(tw, "VERSION\tTIME\tKIND\tCHANGE\tSIZE")
				}
				revisions := 0
				token := ""
				for {
					resp, err := c.ListFileHistory(ctx, &pb.ListFileHistoryRequest{ProjectId: project, Path: args[0], PageSize: 1000, PageToken: token})
					if err != nil {
						return err
					}
					for _, r := range resp.GetRevisions() {
						revisions++
						v := r.GetVersion()
						j := revJSON{Version: v.GetNumber(), Time: v.GetCreateTime().AsTime(), Kind: kindName(v.GetKind()), Change: changeName(r.GetKind()), Size: r.GetFile().GetSize(), Checksum: r.GetFile().GetChecksum()}
						if asJSON {
							out = append(out, j)
							continue
						}
						size := strconv.FormatInt(j.Size, 10)
						if r.GetFile() == nil {
							size = "-"
						}
						fmt.Fprintf(tw, "%d\t%s\t%s\t%s\t%s\n", j.Version, j.Time.Format(time.RFC3339), j.Kind, j.Change, size)
					}
					if token = resp.GetNextPageToken(); token == "" {
						break
					}
				}
				if revisions == 0 {
					// Not an error (a script may ask about any path), but
					// say it, so an empty table is not a mystery.
					fmt.Fprintf(g.stderr, "sandkeep: no version of project %s holds %s: it never existed there (paths are relative to the workspace, e.g. src/main.go)\n", project, args[0])
				}
				if asJSON {
					return printJSON(g.stdout, out)
				}
				return tw.Flush()
			})
		},
	}
	cmd.Flags().StringVar(&project, "project", "", "project id")
	cmd.Flags().BoolVar(&asJSON, "json", false, "print JSON")
	return cmd
}
