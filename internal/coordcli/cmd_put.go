package coordcli

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"sync/atomic"
	"time"

	"github.com/spf13/cobra"
	"google.golang.org/protobuf/types/known/durationpb"
	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/sandkeep/sandkeep/internal/progress"
	pb "github.com/sandkeep/sandkeep/proto/sandkeep/v1"
)

// putChunk is the size of the data messages put sends.
const putChunk = 1 << 20

func newPut(g *globals) *cobra.Command {
	var project string
	var del bool
	var wait time.Duration
	var asJSON, quiet bool
	cmd := &cobra.Command{
		Use:   "put --project ID LOCAL_FILE PATH | put --project ID --delete PATH",
		Short: "Commit a version with PATH set to LOCAL_FILE (or without PATH), no sandbox needed",
		Long: `Write LOCAL_FILE ("-" for stdin) into the project's head as PATH and commit a
new version (kind upload); missing directories are created. With --delete,
commit a version without PATH (a directory goes with everything under it).

The file goes through the same path as an agent's upload: chunked, packed,
read back and verified by the coordinator, committed on the head by
compare-and-set, so a put racing a running agent loses nothing. A running
agent brings the file into its workspace (as for a rollback; its own changes
are kept); a destroyed sandbox gets it at its next ensure. Prints the new
version number alone on stdout; what the agent did goes to stderr.`,
		Example: `  sandkeep put --project $P ./report.pdf docs/report.pdf
  echo hello | sandkeep put --project $P - notes/hello.txt
  sandkeep put --project $P --delete docs/old`,
		RunE: func(cmd *cobra.Command, args []string) error {
			if err := requireProject(project); err != nil {
				return err
			}
			if del {
				if len(args) != 1 {
					return errors.New("put --delete takes one argument, the PATH to remove")
				}
				req := &pb.DeleteFilesRequest{ProjectId: project, Paths: args, AgentTimeout: durationpb.New(wait)}
				return adminRPC(g, cmd, wait+callTimeout, pb.AdminServiceClient.DeleteFiles, req, func(resp *pb.DeleteFilesResponse) error {
					return printPut(g, asJSON, resp.GetVersion(), map[string]any{"deleted": resp.GetDeleted()}, resp.GetAgent())
				})
			}
			if len(args) != 2 {
				return errors.New("put takes two arguments: LOCAL_FILE (or - for stdin) and the PATH in the workspace")
			}
			return runPut(g, cmd, project, args[0], args[1], wait, asJSON, quiet)
		},
	}
	cmd.Flags().StringVar(&project, "project", "", "project id")
	cmd.Flags().BoolVar(&del, "delete", false, "remove PATH instead of writing it")
	cmd.Flags().DurationVar(&wait, "wait", 30*time.Second, "how long to wait for a running agent to apply the new version")
	cmd.Flags().BoolVar(&quiet, "quiet", false, "no progress line on stderr")
	cmd.Flags().BoolVar(&asJSON, "json", false, `print {"version", "path", "bytes", "new_chunks", "packed_bytes", "agent_connected", "agent_applied", "agent_version", "agent_error"} ("deleted" instead of the sizes with --delete)`)
	return cmd
}

func runPut(g *globals, cmd *cobra.Command, project, local, path string, wait time.Duration, asJSON, quiet bool) error {
	var in io.Reader = os.Stdin
	var size int64 = -1
	mode := uint32(0o644)
	var mtime *timestamppb.Timestamp
	if local != "-" {
		f, err := os.Open(local)
		if err != nil {
			return err
		}
		defer f.Close()
		fi, err := f.Stat()
		if err != nil {
			return err
		}
		if !fi.Mode().IsRegular() {
			return fmt.Errorf("%s is not a regular file", local)
		}
		in, size, mode, mtime = f, fi.Size(), uint32(fi.Mode().Perm()), timestamppb.New(fi.ModTime())
	}
	return dialCall(g, cmd, 0, pb.NewAdminServiceClient, func(ctx context.Context, c pb.AdminServiceClient) error {
		stream, err := c.PutFiles(ctx)
		if err != nil {
			return err
		}
		h := &pb.PutFileHeader{ProjectId: project, Path: path, Mode: mode, Mtime: mtime, AgentTimeout: durationpb.New(wait)}
		if err := stream.Send(&pb.PutFilesRequest{Msg: &pb.PutFilesRequest_Header{Header: h}}); err != nil {
			return putSendErr(stream, err)
		}
		var sent atomic.Int64
		stop := func() {}
		if !quiet {
			stop = progress.Start(g.stderr, func(el time.Duration) string {
				return progress.Line("put "+path, 0, 1, sent.Load(), max(size, sent.Load()), el)
			})
		}
		defer func() { stop() }()
		buf := make([]byte, putChunk)
		for {
			n, rerr := io.ReadFull(in, buf)
			if n > 0 {
				if err := stream.Send(&pb.PutFilesRequest{Msg: &pb.PutFilesRequest_Data{Data: buf[:n]}}); err != nil {
					return putSendErr(stream, err)
				}
				sent.Add(int64(n))
			}
			if errors.Is(rerr, io.EOF) || errors.Is(rerr, io.ErrUnexpectedEOF) {
				break
			}
			if rerr != nil {
				return fmt.Errorf("read %s: %w", local, rerr)
			}
		}
		stop()
		stop = func() {}
		resp, err := stream.CloseAndRecv()
		if err != nil {
			return err
		}
		return printPut(g, asJSON, resp.GetVersion(), map[string]any{"path": path, "bytes": resp.GetBytes(),
			"new_chunks": resp.GetNewChunks(), "packed_bytes": resp.GetPackedBytes()}, resp.GetAgent())
	})
}

// putSendErr returns the status that ended a stream whose Send failed
// (Send reports only io.EOF; the reason comes with CloseAndRecv).
func putSendErr(stream pb.AdminService_PutFilesClient, err error) error {
	if errors.Is(err, io.EOF) {
		if _, rerr := stream.CloseAndRecv(); rerr != nil {
			return rerr
		}
	}
	return err
}

// printPut prints the new version and what the agent did.
func printPut(g *globals, asJSON bool, v *pb.Version, extra map[string]any, a *pb.AgentApply) error {
	if asJSON {
		out := map[string]any{"version": v.GetNumber(), "agent_connected": a.GetConnected(), "agent_applied": a.GetApplied(),
			"agent_version": a.GetVersion(), "agent_error": a.GetError()}
		for k, x := range extra {
			out[k] = x
		}
		return printJSON(g.stdout, out)
	}
	fmt.Fprintln(g.stdout, v.GetNumber())
	printAgentApply(g.stderr, a, "the new version")
	return nil
}

// printAgentApply says on w what a running agent did with a new head
// (what: "the rollback", "the new version").
func printAgentApply(w io.Writer, a *pb.AgentApply, what string) {
	switch {
	case a.GetApplied():
		fmt.Fprintf(w, "the running agent brought its workspace to version %d\n", a.GetVersion())
	case a.GetConnected():
		fmt.Fprintf(w, "warning: the running agent has not applied %s yet (%s); it will on its next sync\n", what, a.GetError())
	default:
		fmt.Fprintln(w, "no agent is connected; the next one to start restores the new head")
	}
}
