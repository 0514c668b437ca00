package coordcli

import (
	"fmt"
	"time"

	"github.com/spf13/cobra"

	"github.com/sandkeep/sandkeep/internal/progress"
	pb "github.com/sandkeep/sandkeep/proto/sandkeep/v1"
)

// newReplication is `sandkeep replication`.
func newReplication(g *globals) *cobra.Command {
	cmd := &cobra.Command{
		Use:   "replication",
		Short: "The replica bucket (serve --replica-s3-bucket): how far it lags",
		Args:  cobra.NoArgs,
	}
	cmd.AddCommand(newReplicationStatus(g))
	return cmd
}

func newReplicationStatus(g *globals) *cobra.Command {
	var project string
	var asJSON bool
	cmd := &cobra.Command{
		Use:   "status [--project ID]",
		Short: "Objects and bytes not yet copied to the replica bucket, the oldest, failures",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			req := &pb.GetReplicationStatusRequest{ProjectId: project}
			return adminRPC(g, cmd, callTimeout, pb.AdminServiceClient.GetReplicationStatus, req, func(r *pb.GetReplicationStatusResponse) error {
				var lag float64
				if r.GetOldestTime() != nil {
					lag = time.Since(r.GetOldestTime().AsTime()).Seconds()
				}
				if asJSON {
					return printJSON(g.stdout, map[string]any{"configured": r.GetConfigured(), "primary": r.GetPrimary(), "replica": r.GetReplica(),
						"objects": r.GetObjects(), "bytes": r.GetBytes(), "oldest": tptr(r.GetOldestTime()), "lag_seconds": lag,
						"failing": r.GetFailing(), "last_error": r.GetLastError()})
				}
				if !r.GetConfigured() {
					fmt.Fprintf(g.stdout, "no replica bucket: %s is the only copy (serve --replica-s3-bucket B2 --replica-s3-endpoint ... keeps a second)\n", r.GetPrimary())
					return nil
				}
				fmt.Fprintf(g.stdout, "primary  %s\nreplica  %s\n", r.GetPrimary(), r.GetReplica())
				if r.GetObjects() == 0 {
					fmt.Fprintln(g.stdout, "lag      none: every object is on the replica")
					return nil
				}
				fmt.Fprintf(g.stdout, "lag      %d objects, %s, oldest queued %s ago\n", r.GetObjects(), progress.Bytes(r.GetBytes()),
					(time.Duration(lag) * time.Second).Round(time.Second))
				if r.GetFailing() > 0 {
					fmt.Fprintf(g.stdout, "failing  %d (last error: %s); the coordinator retries with backoff\n", r.GetFailing(), r.GetLastError())
				}
				return nil
			})
		},
	}
	cmd.Flags().StringVar(&project, "project", "", "only this project's objects (default: the whole bucket)")
	cmd.Flags().BoolVar(&asJSON, "json", false, `print {"configured", "primary", "replica", "objects", "bytes", "oldest", "lag_seconds", "failing", "last_error"}`)
	return cmd
}
