package coordcli

import (
	"fmt"
	"io"
	"time"

	"github.com/spf13/cobra"

	pb "github.com/sandkeep/sandkeep/proto/sandkeep/v1"
)

type replicaJSON struct {
	ID       string    `json:"id"`
	Addr     string    `json:"addr"`
	Started  time.Time `json:"start_time"`
	LastSeen time.Time `json:"last_seen_time"`
	Leader   bool      `json:"leader"`
	Agents   int64     `json:"agents"`
	Self     bool      `json:"self"`
}

func newReplicas(g *globals) *cobra.Command {
	var asJSON bool
	cmd := &cobra.Command{
		Use:   "replicas",
		Short: "List the live coordinator replicas on this database: address, agents, which one leads",
		Long: `List the coordinator replicas serving this database (seen within the last 10 s):
their gRPC address, the agent sessions each holds, and which one leads the
background jobs (lifecycle loop, reconciler, GC). A flush, a rollback or a put
reaches an agent whichever replica the call reaches. With SQLite there is one.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			return adminRPC(g, cmd, callTimeout, pb.AdminServiceClient.ListReplicas, &pb.ListReplicasRequest{}, func(resp *pb.ListReplicasResponse) error {
				toJSON := func(r *pb.ReplicaInfo) replicaJSON {
					return replicaJSON{ID: r.GetId(), Addr: r.GetAddr(), Started: r.GetStartTime().AsTime(), LastSeen: r.GetLastSeenTime().AsTime(),
						Leader: r.GetLeader(), Agents: r.GetAgents(), Self: r.GetId() == resp.GetSelf()}
				}
				return printList(g.stdout, asJSON, resp.GetReplicas(), toJSON, "ID\tADDR\tAGENTS\tLEADER\tSTARTED", func(w io.Writer, r *pb.ReplicaInfo) {
					id := r.GetId()
					if id == resp.GetSelf() {
						id += " (this)"
					}
					lead := ""
					if r.GetLeader() {
						lead = "yes"
					}
					fmt.Fprintf(w, "%s\t%s\t%d\t%s\t%s\n", id, r.GetAddr(), r.GetAgents(), lead, r.GetStartTime().AsTime().UTC().Format(time.RFC3339))
				})
			})
		},
	}
	cmd.Flags().BoolVar(&asJSON, "json", false, `print [{"id", "addr", "start_time", "last_seen_time", "leader", "agents", "self"}]`)
	return cmd
}
