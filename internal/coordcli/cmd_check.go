package coordcli

import (
	"context"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"time"

	"github.com/spf13/cobra"
	"google.golang.org/grpc"

	"github.com/sandkeep/sandkeep/internal/cli"
	"github.com/sandkeep/sandkeep/internal/id"
	"github.com/sandkeep/sandkeep/internal/progress"
	pb "github.com/sandkeep/sandkeep/proto/sandkeep/v1"
)

// newCheck is `sandkeep check`.
func newCheck(g *globals) *cobra.Command {
	var project, readData string
	var rateMB float64
	var repair, replica, asJSON, quiet bool
	cmd := &cobra.Command{
		Use:   "check [--project ID] [--read-data[=PERCENT]] [--replica] [--repair]",
		Short: "Check that everything the versions need is stored and (with --read-data) reads back intact",
		Long: `check verifies, from the database, that every tree and chunk the kept versions reach is
indexed and that every pack holding one exists in the bucket and is long enough. With
--read-data (all packs) or --read-data=PERCENT (that share, at random) the packs are read
back and every chunk decoded and hashed. Each problem names the pack, the chunk, the
versions that need it and the files.

--repair forgets bad chunks (and those of a missing pack): they become missing, so an agent
whose workspace still has the files uploads them again at its next full read
(sandkeep-agent sync --once with a fresh state does one) and the versions restore again.
What no workspace has any more is lost; check says which files those are.

Exit status 1 when a problem is found (with --repair: when one is left unrepaired).`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			pct, err := parsePercent(readData)
			if err != nil {
				return err
			}
			if rateMB < 0 {
				return errors.New("--rate must not be negative (MB/s; 0: no bound)")
			}
			req := &pb.CheckRepositoryRequest{ProjectId: project, ReadDataPercent: pct, Repair: repair, RateBytesPerSecond: int64(rateMB * 1e6), Replica: replica}
			last, err := repairStream(g, cmd, quiet, "check", func(ctx context.Context, c pb.AdminServiceClient) (grpc.ServerStreamingClient[pb.CheckRepositoryResponse], error) {
				return c.CheckRepository(ctx, req)
			})
			if err != nil {
				return err
			}
			rep := last.GetReport()
			if rep == nil {
				return errors.New("the coordinator ended the check without a report; run it again")
			}
			if asJSON {
				if err := printJSON(g.stdout, checkJSON(rep)); err != nil {
					return err
				}
			} else {
				printCheck(g, rep)
			}
			return checkVerdict(rep, repair)
		},
	}
	f := cmd.Flags()
	f.StringVar(&project, "project", "", "only this project (default: every project)")
	f.StringVar(&readData, "read-data", "0", "read back and verify every chunk of this share of the packs: PERCENT (0-100), or 100 when given alone")
	f.Lookup("read-data").NoOptDefVal = "100"
	f.BoolVar(&repair, "repair", false, "forget bad chunks so agents that still have the files upload them again")
	f.BoolVar(&replica, "replica", false, "also check that the replica bucket (serve --replica-s3-bucket) holds every needed pack; with --repair, copy again those it lacks")
	f.Float64Var(&rateMB, "rate", 0, "read at most this many MB per second (0: no bound)")
	f.BoolVar(&quiet, "quiet", false, "no progress lines on stderr")
	f.BoolVar(&asJSON, "json", false, `print {"projects", "packs", "packs_read", "bytes_read", "seconds", "read_data_percent", "chunks_dropped", "problems": [{"project", "kind", "pack", "chunk", "detail", "versions", "paths", "repaired"}]}`)
	return cmd
}

// parsePercent parses --read-data: "10", "10%", "2.5".
func parsePercent(s string) (float64, error) {
	v, err := strconv.ParseFloat(strings.TrimSuffix(strings.TrimSpace(s), "%"), 64)
	if err != nil || v < 0 || v > 100 || v != v {
		return 0, fmt.Errorf("--read-data=%q: want a percentage from 0 to 100 (e.g. --read-data=10), or --read-data alone for every pack", s)
	}
	return v, nil
}

func hexID(b []byte) string {
	if len(b) == 0 {
		return ""
	}
	x, err := id.FromBytes(b)
	if err != nil {
		return fmt.Sprintf("%x", b)
	}
	return x.String()
}

func checkJSON(rep *pb.CheckReport) map[string]any {
	problems := jsonList(rep.GetProblems(), func(p *pb.CheckProblem) map[string]any {
		return map[string]any{"project": p.GetProjectId(), "kind": p.GetKind(), "pack": hexID(p.GetPackId()), "chunk": hexID(p.GetChunkId()),
			"detail": p.GetDetail(), "versions": cli.NonNil(p.GetVersions()), "paths": cli.NonNil(p.GetPaths()), "repaired": p.GetRepaired()}
	})
	return map[string]any{"projects": rep.GetProjects(), "packs": rep.GetPacks(), "packs_read": rep.GetPacksRead(), "bytes_read": rep.GetBytesRead(),
		"seconds": rep.GetTook().AsDuration().Seconds(), "read_data_percent": rep.GetReadDataPercent(), "chunks_dropped": rep.GetChunksDropped(),
		"problems": problems}
}

func printCheck(g *globals, rep *pb.CheckReport) {
	took := rep.GetTook().AsDuration()
	line := fmt.Sprintf("checked %d project(s): %d packs", rep.GetProjects(), rep.GetPacks())
	if rep.GetPacksRead() > 0 {
		line += fmt.Sprintf(", %d read back and verified (%s", rep.GetPacksRead(), progress.Bytes(rep.GetBytesRead()))
		if took > 0 {
			line += fmt.Sprintf(", %s/s", progress.Bytes(int64(float64(rep.GetBytesRead())/took.Seconds())))
		}
		line += ")"
	} else {
		line += " present (no data read: add --read-data to verify every chunk)"
	}
	fmt.Fprintf(g.stdout, "%s in %s\n", line, took.Round(time.Millisecond))
	for _, p := range rep.GetProblems() {
		fmt.Fprintf(g.stdout, "%s %s: %s\n", p.GetKind(), p.GetProjectId(), p.GetDetail())
		if vs := p.GetVersions(); len(vs) > 0 {
			fmt.Fprintf(g.stdout, "  needed by version(s) %s\n", joinInts(vs))
		}
		if ps := p.GetPaths(); len(ps) > 0 {
			fmt.Fprintf(g.stdout, "  files: %s\n", strings.Join(ps, ", "))
		}
		if p.GetRepaired() {
			fmt.Fprintln(g.stdout, "  repaired: forgotten; a sync from a workspace that has these files uploads them again")
		}
	}
	if len(rep.GetProblems()) == 0 {
		fmt.Fprintln(g.stdout, "no problems found")
	}
}

// checkVerdict is the command's error: problems found (or left unrepaired).
func checkVerdict(rep *pb.CheckReport, repair bool) error {
	left := 0
	for _, p := range rep.GetProblems() {
		if !p.GetRepaired() {
			left++
		}
	}
	switch {
	case left == 0:
		return nil
	case repair:
		return fmt.Errorf("%d problem(s) cannot be repaired from the index: the files named above come back only from a workspace (or a replica bucket) that has them", left)
	default:
		return fmt.Errorf("check found %d problem(s); run `sandkeep check --repair` to make agents upload what they still have", left)
	}
}

func joinInts(vs []int64) string {
	s := make([]string, len(vs))
	for i, v := range vs {
		s[i] = strconv.FormatInt(v, 10)
	}
	return strings.Join(s, ", ")
}
