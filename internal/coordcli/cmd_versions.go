package coordcli

import (
	"context"
	"errors"
	"fmt"
	"io"
	"time"

	"github.com/spf13/cobra"

	pb "github.com/sandkeep/sandkeep/proto/sandkeep/v1"
)

// versionJSON is one element of `sandkeep versions --json`.
type versionJSON struct {
	Number    int64     `json:"number"`
	Time      time.Time `json:"time"`
	Files     int64     `json:"files"`
	Bytes     int64     `json:"bytes"`
	Kind      string    `json:"kind"`
	Parent    int64     `json:"parent"`
	Root      string    `json:"root"`
	SandboxID string    `json:"sandbox_id,omitempty"`
	Pinned    bool      `json:"pinned"`
}

func toVersionJSON(v *pb.Version) versionJSON {
	return versionJSON{
		Number: v.GetNumber(), Time: v.GetCreateTime().AsTime(), Files: v.GetFiles(), Bytes: v.GetBytes(),
		Kind: kindName(v.GetKind()), Parent: v.GetParent(), Root: fmt.Sprintf("%x", v.GetRoot()), SandboxID: v.GetSandboxId(), Pinned: v.GetPinned(),
	}
}

func kindName(k pb.VersionKind) string {
	switch k {
	case pb.VersionKind_VERSION_KIND_SYNC:
		return "sync"
	case pb.VersionKind_VERSION_KIND_FLUSH:
		return "flush"
	case pb.VersionKind_VERSION_KIND_ROLLBACK:
		return "rollback"
	case pb.VersionKind_VERSION_KIND_UPLOAD:
		return "upload"
	}
	return "unknown"
}

func newVersions(g *globals) *cobra.Command {
	var project string
	var limit int
	var asJSON bool
	cmd := &cobra.Command{
		Use:   "versions --project ID",
		Short: "List a project's versions, newest first",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if err := requireProject(project); err != nil {
				return err
			}
			if limit < 0 {
				return errors.New("--limit must not be negative")
			}
			return g.adminCall(cmd, func(ctx context.Context, c pb.AdminServiceClient) error {
				var all []*pb.Version
				token := ""
				for {
					size := int32(1000)
					if limit > 0 && limit-len(all) < 1000 {
						size = int32(limit - len(all))
					}
					resp, err := c.ListVersions(ctx, &pb.ListVersionsRequest{ProjectId: project, PageSize: size, PageToken: token})
					if err != nil {
						return err
					}
					all = append(all, resp.GetVersions()...)
					token = resp.GetNextPageToken()
					if token == "" || (limit > 0 && len(all) >= limit) {
						break
					}
				}
				return printList(g.stdout, asJSON, all, toVersionJSON, "NUMBER\tTIME\tFILES\tBYTES\tKIND\tPINNED", func(w io.Writer, v *pb.Version) {
					// The PINNED cell only on pinned rows: the others still
					// end with their kind, as scripts expect.
					pinned := ""
					if v.GetPinned() {
						pinned = "\tpinned"
					}
					fmt.Fprintf(w, "%d\t%s\t%d\t%d\t%s%s\n", v.GetNumber(), v.GetCreateTime().AsTime().Format(time.RFC3339), v.GetFiles(), v.GetBytes(), kindName(v.GetKind()), pinned)
				})
			})
		},
	}
	cmd.Flags().StringVar(&project, "project", "", "project id")
	cmd.Flags().IntVar(&limit, "limit", 0, "at most this many versions (0: all)")
	cmd.Flags().BoolVar(&asJSON, "json", false, "print a JSON array of {number, time, files, bytes, kind, parent, root}")
	return cmd
}
