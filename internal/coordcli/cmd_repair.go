package coordcli

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/spf13/cobra"
	"google.golang.org/grpc"

	"github.com/sandkeep/sandkeep/internal/cli"
	"github.com/sandkeep/sandkeep/internal/progress"
	pb "github.com/sandkeep/sandkeep/proto/sandkeep/v1"
)

// newRepair is `sandkeep repair`.
func newRepair(g *globals) *cobra.Command {
	cmd := &cobra.Command{
		Use:   "repair",
		Short: "Disaster recovery: rebuild the database from the bucket",
		Args:  cobra.NoArgs,
	}
	cmd.AddCommand(newRepairRebuild(g))
	return cmd
}

// newRepairRebuild is `sandkeep repair rebuild --from-bucket`.
func newRepairRebuild(g *globals) *cobra.Command {
	var project string
	var fromBucket, dryRun, trust, asJSON, quiet bool
	cmd := &cobra.Command{
		Use:   "rebuild --from-bucket [--project ID] [--dry-run]",
		Short: "Recreate the database's projects, versions, blob index and file listings from the bucket (the database was lost)",
		Long: `rebuild reads the bucket the coordinator serves (one LIST, every pack's footer, and
every chunk unless --trust-footers) and recreates in its database: the projects with
their names and settings (retention, limits, lifecycle policy, pins), every version as it
was (numbers, kinds, parents, times), the blob index and the head's file listing.

Run it on a coordinator started on an empty database and the old bucket. It is
idempotent: run it again to resume or to check. A database that already has a project
keeps its rows and its head. Tokens are not in the bucket: create new ones
(sandkeep token create). Sandboxes are not either: the lifecycle loop finds the
provider's.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if !fromBucket {
				return errors.New("say where to rebuild from: --from-bucket (the only source there is)")
			}
			last, err := repairStream(g, cmd, quiet, "rebuild", func(ctx context.Context, c pb.AdminServiceClient) (grpc.ServerStreamingClient[pb.RebuildFromBucketResponse], error) {
				return c.RebuildFromBucket(ctx, &pb.RebuildFromBucketRequest{ProjectId: project, DryRun: dryRun, TrustFooters: trust})
			})
			if err != nil {
				return err
			}
			rep := last.GetReport()
			if rep == nil {
				return errors.New("the coordinator ended the rebuild without a report; run it again (it resumes)")
			}
			if asJSON {
				return printJSON(g.stdout, rebuildJSON(rep))
			}
			printRebuild(g, rep)
			return nil
		},
	}
	f := cmd.Flags()
	f.BoolVar(&fromBucket, "from-bucket", false, "rebuild from the bucket the coordinator serves (required)")
	f.StringVar(&project, "project", "", "only this project id (default: every project in the bucket)")
	f.BoolVar(&dryRun, "dry-run", false, "read and check everything, write nothing; print what would be rebuilt")
	f.BoolVar(&trust, "trust-footers", false, "index packs from their footers without reading every chunk (faster; `check --read-data` verifies later)")
	f.BoolVar(&quiet, "quiet", false, "no progress lines on stderr")
	f.BoolVar(&asJSON, "json", false, `print {"dry_run", "objects", "seconds", "projects": [{"id", "name", "record", "packs", "packs_bad", "blobs", "blobs_bad", "bytes", "versions", "head", "files", "problems"}], "skipped"}`)
	return cmd
}

func rebuildJSON(rep *pb.RebuildReport) map[string]any {
	projects := jsonList(rep.GetProjects(), func(p *pb.ProjectRebuild) map[string]any {
		return map[string]any{"id": p.GetProjectId(), "name": p.GetName(), "record": p.GetRecord(), "packs": p.GetPacks(), "packs_bad": p.GetPacksBad(),
			"blobs": p.GetBlobs(), "blobs_bad": p.GetBlobsBad(), "bytes": p.GetBytes(), "versions": p.GetVersions(), "head": p.GetHead(),
			"files": p.GetFiles(), "problems": cli.NonNil(p.GetProblems())}
	})
	return map[string]any{"dry_run": rep.GetDryRun(), "objects": rep.GetObjects(), "seconds": rep.GetTook().AsDuration().Seconds(),
		"projects": projects, "skipped": cli.NonNil(rep.GetSkipped())}
}

func printRebuild(g *globals, rep *pb.RebuildReport) {
	verb := "rebuilt"
	if rep.GetDryRun() {
		verb = "would rebuild (dry run)"
	}
	tw := newTable(g.stdout, "PROJECT\tNAME\tVERSIONS\tHEAD\tFILES\tPACKS\tCHUNKS\tBAD\tSTORED")
	for _, p := range rep.GetProjects() {
		files := fmt.Sprint(p.GetFiles())
		if rep.GetDryRun() {
			files = "-" // the listing is built from the head's tree only when written
		}
		fmt.Fprintf(tw, "%s\t%s\t%d\t%d\t%s\t%d\t%d\t%d\t%s\n", p.GetProjectId(), p.GetName(), p.GetVersions(), p.GetHead(), files,
			p.GetPacks(), p.GetBlobs(), p.GetPacksBad()+p.GetBlobsBad(), progress.Bytes(p.GetBytes()))
	}
	_ = tw.Flush()
	for _, p := range rep.GetProjects() {
		for _, pr := range p.GetProblems() {
			fmt.Fprintf(g.stdout, "%s: %s\n", p.GetProjectId(), pr)
		}
	}
	for _, s := range rep.GetSkipped() {
		fmt.Fprintf(g.stdout, "skipped %s\n", s)
	}
	fmt.Fprintf(g.stdout, "%s %d project(s) from %d objects in %s\n", verb, len(rep.GetProjects()), rep.GetObjects(), rep.GetTook().AsDuration().Round(time.Millisecond))
	if !rep.GetDryRun() && len(rep.GetProjects()) > 0 {
		fmt.Fprintln(g.stdout, "tokens are not kept in the bucket: create new ones with `sandkeep token create --project ID`")
	}
}
