package coordcli

import (
	"context"
	"errors"
	"fmt"
	"io"
	"sync/atomic"
	"time"

	"github.com/spf13/cobra"
	"google.golang.org/grpc"

	"github.com/sandkeep/sandkeep/internal/atomicfile"
	"github.com/sandkeep/sandkeep/internal/progress"
	pb "github.com/sandkeep/sandkeep/proto/sandkeep/v1"
)

func newGet(g *globals) *cobra.Command {
	var project, output string
	var version int64
	var quiet bool
	cmd := &cobra.Command{
		Use:   "get --project ID PATH [--version N] [-o FILE]",
		Short: "Write a file of a version (default: the head) to stdout or FILE",
		Long: `Write the content of PATH in a version (default: the head) to stdout, or to
FILE with -o. The content is streamed from the bucket, every chunk verified
against its hash; with -o the file appears only complete and verified (written
beside FILE, then renamed), and a failure leaves no partial FILE.`,
		Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			if err := requireProject(project); err != nil {
				return err
			}
			if version < 0 {
				return errors.New("--version must not be negative")
			}
			// No overall deadline: a large file takes as long as it takes;
			// the stream fails if the coordinator goes away.
			return dialCall(g, cmd, 0, pb.NewAdminServiceClient, func(ctx context.Context, c pb.AdminServiceClient) error {
				stream, err := c.ReadFile(ctx, &pb.ReadFileRequest{ProjectId: project, Path: args[0], Version: version})
				if err != nil {
					return err
				}
				if output == "" || output == "-" {
					_, err := copyStream(g.stdout, stream)
					return err
				}
				// -o: progress on stderr (stdout may be the data).
				var got, size atomic.Int64
				size.Store(-1)
				stop := func() {}
				if !quiet {
					stop = progress.Start(g.stderr, func(el time.Duration) string {
						return progress.Line("get "+args[0], 0, 1, got.Load(), max(size.Load(), 0), el)
					})
				}
				defer stop()
				return atomicfile.Write(output, 0o644, func(w io.Writer) error {
					_, err := copyStream(&countingWriter{w: w, n: &got}, streamSize(stream, &size))
					return err
				})
			})
		},
	}
	cmd.Flags().StringVar(&project, "project", "", "project id")
	cmd.Flags().Int64Var(&version, "version", 0, "version number (default: the head)")
	cmd.Flags().StringVarP(&output, "output", "o", "", "write to this file instead of stdout")
	cmd.Flags().BoolVar(&quiet, "quiet", false, "with -o: no progress lines on stderr")
	return cmd
}

// countingWriter counts what goes through it (for progress).
type countingWriter struct {
	w io.Writer
	n *atomic.Int64
}

func (c *countingWriter) Write(p []byte) (int, error) {
	k, err := c.w.Write(p)
	c.n.Add(int64(k))
	return k, err
}

// sizeStream notes the announced file size (for progress) as the stream
// passes.
type sizeStream struct {
	grpc.ServerStreamingClient[pb.ReadFileResponse]
	size *atomic.Int64
}

func streamSize(s grpc.ServerStreamingClient[pb.ReadFileResponse], size *atomic.Int64) grpc.ServerStreamingClient[pb.ReadFileResponse] {
	return &sizeStream{s, size}
}

func (s *sizeStream) Recv() (*pb.ReadFileResponse, error) {
	m, err := s.ServerStreamingClient.Recv()
	if f := m.GetFile(); err == nil && f != nil {
		s.size.Store(f.GetSize())
	}
	return m, err
}

// copyStream writes a ReadFile stream to w and checks that exactly the
// announced size arrived.
func copyStream(w io.Writer, stream grpc.ServerStreamingClient[pb.ReadFileResponse]) (int64, error) {
	var n, want int64 = 0, -1
	for {
		msg, err := stream.Recv()
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			return n, err
		}
		if f := msg.GetFile(); f != nil {
			want = f.GetSize()
		}
		if len(msg.GetData()) > 0 {
			k, err := w.Write(msg.GetData())
			n += int64(k)
			if err != nil {
				return n, err
			}
		}
	}
	if want >= 0 && n != want {
		return n, fmt.Errorf("received %d bytes of a %d-byte file", n, want)
	}
	return n, nil
}
