package coordcli

import (
	"context"
	"fmt"
	"strconv"
	"text/tabwriter"

	"github.com/spf13/cobra"

	pb "github.com/sandkeep/sandkeep/proto/sandkeep/v1"
)

func changeName(k pb.ChangeKind) string {
	switch k {
	case pb.ChangeKind_CHANGE_KIND_ADDED:
		return "added"
	case pb.ChangeKind_CHANGE_KIND_MODIFIED:
		return "modified"
	case pb.ChangeKind_CHANGE_KIND_DELETED:
		return "deleted"
	}
	return "unknown"
}

func newDiff(g *globals) *cobra.Command {
	var project string
	var asJSON bool
	cmd := &cobra.Command{
		Use:   "diff --project ID FROM TO",
		Short: "List the paths added, modified and deleted from version FROM to version TO, with sizes",
		Long: `List the paths that differ between two versions, in path order: added, modified
and deleted files and symlinks, and added or deleted directories (shown with a
trailing /). FROM and TO are version numbers, "head", or 0 for the empty tree.

Output: one line per path, CHANGE SIZE PATH, where SIZE is "old -> new" for a
modification. --json prints an array of {change, path, type, size, old_size,
new_size, old, new}.`,
		Args: cobra.ExactArgs(2),
		RunE: func(cmd *cobra.Command, args []string) error {
			if err := requireProject(project); err != nil {
				return err
			}
			return g.adminCall(cmd, func(ctx context.Context, c pb.AdminServiceClient) error {
				from, err := parseVersionArg(ctx, c, project, args[0])
				if err != nil {
					return err
				}
				to, err := parseVersionArg(ctx, c, project, args[1])
				if err != nil {
					return err
				}
				type changeJSON struct {
					Change  string    `json:"change"`
					Path    string    `json:"path"`
					Type    string    `json:"type"`
					Size    int64     `json:"size"`
					OldSize *int64    `json:"old_size,omitempty"`
					NewSize *int64    `json:"new_size,omitempty"`
					Old     *fileJSON `json:"old,omitempty"`
					New     *fileJSON `json:"new,omitempty"`
				}
				var out []changeJSON
				tw := tabwriter.NewWriter(g.stdout, 0, 4, 2, ' ', 0)
				token := ""
				for {
					resp, err := c.DiffVersions(ctx, &pb.DiffVersionsRequest{ProjectId: project, FromVersion: from, ToVersion: to, PageSize: 10000, PageToken: token})
					if err != nil {
						return err
					}
					for _, ch := range resp.GetChanges() {
						old, nw := ch.GetOldFile(), ch.GetNewFile()
						cur := nw
						if cur == nil {
							cur = old
						}
						if asJSON {
							j := changeJSON{Change: changeName(ch.GetKind()), Path: ch.GetPath(), Type: typeName(cur.GetType()), Size: cur.GetSize(), Old: toFileJSON(old), New: toFileJSON(nw)}
							if old != nil {
								j.OldSize = ptr(old.GetSize())
							}
							if nw != nil {
								j.NewSize = ptr(nw.GetSize())
							}
							out = append(out, j)
							continue
						}
						size := strconv.FormatInt(cur.GetSize(), 10)
						if old != nil && nw != nil {
							size = fmt.Sprintf("%d -> %d", old.GetSize(), nw.GetSize())
						}
						fmt.Fprintf(tw, "%s\t%s\t%s\n", changeName(ch.GetKind()), size, display(cur))
					}
					if token = resp.GetNextPageToken(); token == "" {
						break
					}
				}
				if asJSON {
					if out == nil {
						out = []changeJSON{}
					}
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
