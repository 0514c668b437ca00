package coordcli

import (
	"context"
	"errors"
	"fmt"
	"io"
	"strconv"
	"text/tabwriter"
	"time"

	"github.com/spf13/cobra"
	"google.golang.org/grpc"
	"google.golang.org/protobuf/types/known/timestamppb"

	pb "github.com/sandkeep/sandkeep/proto/sandkeep/v1"
)

// Shared scaffolding of the admin-client commands. The connection flags
// (--coordinator, --admin-token, --data, --tls, --tls-ca) have already been
// read from their SANDKEEP_* variables by the root's PersistentPreRunE when
// a RunE calls these.

// callTimeout bounds an ordinary admin call.
const callTimeout = 60 * time.Second

// dialCall connects to the coordinator with the admin token, makes a client
// of the connection with newClient and runs fn with it and a context that
// ends after timeout (with timeout 0, when the command's context ends). The
// connection is closed when fn returns.
func dialCall[C any](g *globals, cmd *cobra.Command, timeout time.Duration, newClient func(grpc.ClientConnInterface) C, fn func(context.Context, C) error) error {
	conn, err := g.dial()
	if err != nil {
		return err
	}
	defer conn.Close()
	ctx, cancel := cmd.Context(), context.CancelFunc(func() {})
	if timeout > 0 {
		ctx, cancel = context.WithTimeout(ctx, timeout)
	}
	defer cancel()
	return fn(ctx, newClient(conn))
}

// unaryCall is dialCall for a command that makes one call: it calls method
// with req and hands the response to then.
func unaryCall[C, Req, Resp any](g *globals, cmd *cobra.Command, timeout time.Duration, newClient func(grpc.ClientConnInterface) C,
	method func(C, context.Context, Req, ...grpc.CallOption) (Resp, error), req Req, then func(Resp) error) error {
	return dialCall(g, cmd, timeout, newClient, func(ctx context.Context, c C) error {
		resp, err := method(c, ctx, req)
		if err != nil {
			return err
		}
		return then(resp)
	})
}

// adminRPC makes one AdminService call, e.g.
//
//	adminRPC(g, cmd, callTimeout, pb.AdminServiceClient.CreateProject, req, func(resp *pb.CreateProjectResponse) error { ... })
func adminRPC[Req, Resp any](g *globals, cmd *cobra.Command, timeout time.Duration,
	method func(pb.AdminServiceClient, context.Context, Req, ...grpc.CallOption) (Resp, error), req Req, then func(Resp) error) error {
	return unaryCall(g, cmd, timeout, pb.NewAdminServiceClient, method, req, then)
}

// lifecycleRPC makes one LifecycleService call (see adminRPC).
func lifecycleRPC[Req, Resp any](g *globals, cmd *cobra.Command, timeout time.Duration,
	method func(pb.LifecycleServiceClient, context.Context, Req, ...grpc.CallOption) (Resp, error), req Req, then func(Resp) error) error {
	return unaryCall(g, cmd, timeout, pb.NewLifecycleServiceClient, method, req, then)
}

// jsonList converts every item with toJSON; the result is never nil, so an
// empty list prints as [] rather than null.
func jsonList[T, J any](items []T, toJSON func(T) J) []J {
	out := make([]J, 0, len(items))
	for _, it := range items {
		out = append(out, toJSON(it))
	}
	return out
}

// newTable starts a table on w: cells separated by tabs, columns two spaces
// apart. The header line is left out when header is "".
func newTable(w io.Writer, header string) *tabwriter.Writer {
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	if header != "" {
		fmt.Fprintln(tw, header)
	}
	return tw
}

// printTable prints a table of header and one row per item; row writes
// the item's tab-separated cells and the newline.
func printTable[T any](w io.Writer, header string, items []T, row func(io.Writer, T)) error {
	tw := newTable(w, header)
	for _, it := range items {
		row(tw, it)
	}
	return tw.Flush()
}

// printList is the output of a listing command: with --json an array of
// toJSON(item), else a table.
func printList[T, J any](w io.Writer, asJSON bool, items []T, toJSON func(T) J, header string, row func(io.Writer, T)) error {
	if asJSON {
		return printJSON(w, jsonList(items, toJSON))
	}
	return printTable(w, header, items, row)
}

func requireProject(project string) error {
	if project == "" {
		return errors.New("--project is required")
	}
	return nil
}

// parseVersionArg parses a version argument: a positive number, or "head"
// (resolved through GetProject).
func parseVersionArg(ctx context.Context, c pb.AdminServiceClient, project, s string) (int64, error) {
	if s == "head" {
		p, err := c.GetProject(ctx, &pb.GetProjectRequest{ProjectId: project})
		if err != nil {
			return 0, err
		}
		return p.GetProject().GetHead(), nil
	}
	v, err := strconv.ParseInt(s, 10, 64)
	if err != nil || v < 0 {
		return 0, fmt.Errorf("version %q: want a version number (0 for the empty tree) or \"head\"", s)
	}
	return v, nil
}

func ptr[T any](v T) *T { return &v }

func fmtTime(t *timestamppb.Timestamp) string {
	if t == nil {
		return "-"
	}
	return t.AsTime().Local().Format("2006-01-02 15:04:05")
}

func tptr(t *timestamppb.Timestamp) *time.Time {
	if t == nil {
		return nil
	}
	v := t.AsTime()
	return &v
}

// adminCall runs fn with an admin client and a context bounded by
// callTimeout.
func (g *globals) adminCall(cmd *cobra.Command, fn func(ctx context.Context, c pb.AdminServiceClient) error) error {
	return dialCall(g, cmd, callTimeout, pb.NewAdminServiceClient, fn)
}
