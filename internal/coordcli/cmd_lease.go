package coordcli

import (
	"fmt"
	"io"
	"time"

	"github.com/spf13/cobra"
	"google.golang.org/protobuf/types/known/durationpb"

	pb "github.com/sandkeep/sandkeep/proto/sandkeep/v1"
)

// leaseJSON is a lease in --json output.
func leaseJSON(l *pb.RunLease) map[string]any {
	out := map[string]any{"id": l.GetId(), "project_id": l.GetProjectId(), "created": tptr(l.GetCreateTime()),
		"expires": tptr(l.GetExpireTime()), "released": tptr(l.GetReleaseTime())}
	return out
}

func leaseLine(w io.Writer, l *pb.RunLease) {
	end := l.GetExpireTime()
	if l.GetReleaseTime() != nil {
		end = l.GetReleaseTime()
	}
	fmt.Fprintf(w, "%s until %s\n", l.GetId(), end.AsTime().Format(time.RFC3339))
}

func newLease(g *globals) *cobra.Command {
	cmd := &cobra.Command{Use: "lease", Short: "Run leases: a project's sandbox is never reaped while one is held"}
	var project string
	var ttl, renewTTL time.Duration
	var acquireJSON, renewJSON, releaseJSON bool
	acquire := &cobra.Command{
		Use:   "acquire --project ID [--ttl 10m]",
		Short: "Take a run lease; prints its id alone on stdout",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if err := requireProject(project); err != nil {
				return err
			}
			req := &pb.AcquireRunLeaseRequest{ProjectId: project, Ttl: durationpb.New(ttl)}
			return lifecycleRPC(g, cmd, callTimeout, pb.LifecycleServiceClient.AcquireRunLease, req, func(resp *pb.AcquireRunLeaseResponse) error {
				if acquireJSON {
					return printJSON(g.stdout, leaseJSON(resp.GetLease()))
				}
				fmt.Fprintf(g.stderr, "lease held until %s\n", resp.GetLease().GetExpireTime().AsTime().Format(time.RFC3339))
				fmt.Fprintln(g.stdout, resp.GetLease().GetId())
				return nil
			})
		},
	}
	acquire.Flags().StringVar(&project, "project", "", "project id")
	acquire.Flags().DurationVar(&ttl, "ttl", 10*time.Minute, "the lease ends this long from now unless renewed")
	acquire.Flags().BoolVar(&acquireJSON, "json", false, `print {"id", "project_id", "created", "expires", "released"}`)
	renew := &cobra.Command{
		Use:   "renew ID [--ttl 10m]",
		Short: "Make a lease end ttl from now",
		Args:  cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			req := &pb.RenewRunLeaseRequest{LeaseId: args[0], Ttl: durationpb.New(renewTTL)}
			return lifecycleRPC(g, cmd, callTimeout, pb.LifecycleServiceClient.RenewRunLease, req, func(resp *pb.RenewRunLeaseResponse) error {
				if renewJSON {
					return printJSON(g.stdout, leaseJSON(resp.GetLease()))
				}
				leaseLine(g.stdout, resp.GetLease())
				return nil
			})
		},
	}
	renew.Flags().DurationVar(&renewTTL, "ttl", 10*time.Minute, "the lease ends this long from now")
	renew.Flags().BoolVar(&renewJSON, "json", false, `print {"id", "project_id", "created", "expires", "released"}`)
	release := &cobra.Command{
		Use:   "release ID",
		Short: "End a lease now",
		Args:  cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			req := &pb.ReleaseRunLeaseRequest{LeaseId: args[0]}
			return lifecycleRPC(g, cmd, callTimeout, pb.LifecycleServiceClient.ReleaseRunLease, req, func(resp *pb.ReleaseRunLeaseResponse) error {
				if releaseJSON {
					return printJSON(g.stdout, leaseJSON(resp.GetLease()))
				}
				leaseLine(g.stdout, resp.GetLease())
				return nil
			})
		},
	}
	release.Flags().BoolVar(&releaseJSON, "json", false, `print {"id", "project_id", "created", "expires", "released"}`)
	var listProject string
	var listJSON bool
	list := &cobra.Command{
		Use:   "list [--project ID] [--json]",
		Short: "List the run leases held now: ID, PROJECT, CREATED, EXPIRES",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			req := &pb.ListRunLeasesRequest{ProjectId: listProject}
			return lifecycleRPC(g, cmd, callTimeout, pb.LifecycleServiceClient.ListRunLeases, req, func(resp *pb.ListRunLeasesResponse) error {
				return printList(g.stdout, listJSON, resp.GetLeases(), leaseJSON, "ID\tPROJECT\tCREATED\tEXPIRES", func(w io.Writer, l *pb.RunLease) {
					fmt.Fprintf(w, "%s\t%s\t%s\t%s\n", l.GetId(), l.GetProjectId(), fmtTime(l.GetCreateTime()), fmtTime(l.GetExpireTime()))
				})
			})
		},
	}
	list.Flags().StringVar(&listProject, "project", "", "only this project's leases")
	list.Flags().BoolVar(&listJSON, "json", false, `print an array of {"id", "project_id", "created", "expires", "released"}`)
	cmd.AddCommand(acquire, renew, release, list)
	return cmd
}
