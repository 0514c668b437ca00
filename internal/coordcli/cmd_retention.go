package coordcli

import (
	"context"
	"errors"
	"fmt"
	"strconv"
	"time"

	"github.com/spf13/cobra"
	"google.golang.org/protobuf/types/known/durationpb"

	pb "github.com/sandkeep/sandkeep/proto/sandkeep/v1"
)

func newRetention(g *globals) *cobra.Command {
	cmd := &cobra.Command{Use: "retention", Short: "Show or change a project's retention policy"}
	printPolicy := func(p *pb.RetentionPolicy, asJSON bool) error {
		within := p.GetKeepWithin().AsDuration()
		days := strconv.FormatFloat(within.Hours()/24, 'f', -1, 64)
		if asJSON {
			return printJSON(g.stdout, map[string]any{"keep_last": p.GetKeepLast(), "keep_days": within.Hours() / 24, "keep_within_seconds": int64(within / time.Second)})
		}
		fmt.Fprintf(g.stdout, "keep-last %d\nkeep-days %s\n", p.GetKeepLast(), days)
		return nil
	}
	var project string
	var asJSON bool
	show := &cobra.Command{
		Use:   "show --project ID",
		Short: "Show the retention policy in effect",
		Long: `Show the retention policy in effect: garbage collection keeps the newest
keep-last versions and every version younger than keep-days, plus pinned
versions and the head. The default is keep-last 50, keep-days 30.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if err := requireProject(project); err != nil {
				return err
			}
			return g.adminCall(cmd, func(ctx context.Context, c pb.AdminServiceClient) error {
				resp, err := c.GetRetention(ctx, &pb.GetRetentionRequest{ProjectId: project})
				if err != nil {
					return err
				}
				return printPolicy(resp.GetPolicy(), asJSON)
			})
		},
	}
	show.Flags().StringVar(&project, "project", "", "project id")
	show.Flags().BoolVar(&asJSON, "json", false, "print JSON {keep_last, keep_days, keep_within_seconds}")
	var setProject string
	var keepLast int64
	var keepDays float64
	var setJSON bool
	set := &cobra.Command{
		Use:   "set --project ID [--keep-last N] [--keep-days D]",
		Short: "Change the retention policy (only the flags given); prints the policy in effect",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if err := requireProject(setProject); err != nil {
				return err
			}
			p := &pb.RetentionPolicy{}
			if cmd.Flags().Changed("keep-last") {
				if keepLast < 0 {
					return errors.New("--keep-last must not be negative")
				}
				p.KeepLast = ptr(keepLast)
			}
			if cmd.Flags().Changed("keep-days") {
				if keepDays < 0 || keepDays > 100*365 {
					return errors.New("--keep-days must be in [0, 36500]")
				}
				p.KeepWithin = durationpb.New(time.Duration(keepDays * 24 * float64(time.Hour)))
			}
			if p.KeepLast == nil && p.KeepWithin == nil {
				return errors.New("nothing to set: give --keep-last and/or --keep-days")
			}
			return g.adminCall(cmd, func(ctx context.Context, c pb.AdminServiceClient) error {
				resp, err := c.SetRetention(ctx, &pb.SetRetentionRequest{ProjectId: setProject, Policy: p})
				if err != nil {
					return err
				}
				return printPolicy(resp.GetPolicy(), setJSON)
			})
		},
	}
	set.Flags().StringVar(&setProject, "project", "", "project id")
	set.Flags().Int64Var(&keepLast, "keep-last", 0, "keep the newest N versions (0: none by count)")
	set.Flags().Float64Var(&keepDays, "keep-days", 0, "keep versions younger than D days (0: none by age)")
	set.Flags().BoolVar(&setJSON, "json", false, "print JSON {keep_last, keep_days, keep_within_seconds}")
	cmd.AddCommand(show, set)
	return cmd
}
