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

	"github.com/sandkeep/sandkeep/internal/progress"
	pb "github.com/sandkeep/sandkeep/proto/sandkeep/v1"
)

// repairStream runs a repair RPC of the AdminService (a server stream of
// progress messages, the report in the last one), shows its progress on
// stderr unless quiet, and returns the last message.
func repairStream[R any, P interface {
	*R
	GetProgress() *pb.RepairProgress
}](g *globals, cmd *cobra.Command, quiet bool, what string,
	open func(context.Context, pb.AdminServiceClient) (grpc.ServerStreamingClient[R], error)) (*R, error) {
	var last *R
	var cur atomic.Pointer[pb.RepairProgress]
	if !quiet {
		stop := progress.Start(g.stderr, func(el time.Duration) string { return repairLine(what, cur.Load(), el) })
		defer stop()
	}
	err := dialCall(g, cmd, 0, pb.NewAdminServiceClient, func(ctx context.Context, c pb.AdminServiceClient) error {
		stream, err := open(ctx, c)
		if err != nil {
			return err
		}
		for {
			m, err := stream.Recv()
			if errors.Is(err, io.EOF) {
				return nil
			}
			if err != nil {
				return err
			}
			if p := P(m).GetProgress(); p != nil {
				cur.Store(p)
			}
			last = m
		}
	})
	return last, err
}

// repairLine is the progress line of a repair stream.
func repairLine(what string, p *pb.RepairProgress, el time.Duration) string {
	el = el.Truncate(100 * time.Millisecond)
	if p == nil {
		return fmt.Sprintf("%s: starting, %s", what, el)
	}
	s := fmt.Sprintf("%s: %s", what, p.GetPhase())
	if p.GetProjectId() != "" {
		s += " of " + p.GetProjectId()
	}
	if p.GetTotal() > 0 {
		s += fmt.Sprintf(" %d/%d", p.GetDone(), p.GetTotal())
	}
	if p.GetBytes() > 0 {
		s += ", " + progress.Bytes(p.GetBytes()) + " read"
		if secs := el.Seconds(); secs > 0 {
			s += fmt.Sprintf(" (%s/s)", progress.Bytes(int64(float64(p.GetBytes())/secs)))
		}
	}
	return s + ", " + el.String()
}
