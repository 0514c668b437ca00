package e2e

import (
	"context"
	"errors"
	"fmt"
	"io"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/reflect/protoreflect"
	"google.golang.org/protobuf/types/known/emptypb"

	"github.com/sandkeep/sandkeep/internal/auth"
	"github.com/sandkeep/sandkeep/internal/coordtest"
	"github.com/sandkeep/sandkeep/internal/dial"
	"github.com/sandkeep/sandkeep/internal/metastore"
	pb "github.com/sandkeep/sandkeep/proto/sandkeep/v1"
)

// rpc is one method of the coordinator's gRPC API.
type rpc struct {
	service, method         string
	clientStream, srvStream bool
}

func (r rpc) full() string { return "/" + r.service + "/" + r.method }

// allRPCs lists every method of sandkeep's services, from the descriptors:
// a method added later is in the table without anyone adding it.
func allRPCs() []rpc {
	var out []rpc
	for _, fd := range []protoreflect.FileDescriptor{pb.File_sandkeep_v1_agent_proto, pb.File_sandkeep_v1_admin_proto, pb.File_sandkeep_v1_lifecycle_proto} {
		for i := range fd.Services().Len() {
			sd := fd.Services().Get(i)
			for j := range sd.Methods().Len() {
				md := sd.Methods().Get(j)
				out = append(out, rpc{string(sd.FullName()), string(md.Name()), md.IsStreamingClient(), md.IsStreamingServer()})
			}
		}
	}
	return append(out,
		rpc{"grpc.health.v1.Health", "Check", false, false},
		rpc{"grpc.reflection.v1.ServerReflection", "ServerReflectionInfo", true, true})
}

// call makes r with an empty request (every field unset) and returns the
// status code of the outcome.
func call(ctx context.Context, conn *grpc.ClientConn, r rpc) codes.Code {
	if !r.clientStream && !r.srvStream {
		return status.Code(conn.Invoke(ctx, r.full(), &emptypb.Empty{}, &emptypb.Empty{}))
	}
	st, err := conn.NewStream(ctx, &grpc.StreamDesc{ClientStreams: r.clientStream, ServerStreams: r.srvStream}, r.full())
	if err != nil {
		return status.Code(err)
	}
	if r.method == "Session" {
		// A session's first message must be a heartbeat with a session id.
		// io.EOF from SendMsg means the server ended the stream: its status
		// comes from RecvMsg (gRPC's contract), below.
		if err := st.SendMsg(&pb.SessionRequest{Msg: &pb.SessionRequest_Heartbeat{Heartbeat: &pb.Heartbeat{SessionId: "ses_matrix"}}}); err != nil && !errors.Is(err, io.EOF) {
			return status.Code(err)
		}
	} else if err := st.SendMsg(&emptypb.Empty{}); err != nil && !errors.Is(err, io.EOF) {
		return status.Code(err)
	}
	_ = st.CloseSend()
	if err := st.RecvMsg(&emptypb.Empty{}); err != nil && !errors.Is(err, io.EOF) {
		return status.Code(err)
	}
	return codes.OK
}

// Every RPC × every kind of credential: the tap handle and the interceptors
// let through exactly the right token kind, and nothing else.
func TestAuthMatrix(t *testing.T) {
	c := coordtest.Start(t, coordtest.Options{})
	ctx := context.Background()
	_, mine := c.Project(t, "matrix-mine")
	_, other := c.Project(t, "matrix-other")
	projects, err := c.Server.Meta.ListProjects(ctx)
	if err != nil {
		t.Fatal(err)
	}
	// An expired and a revoked sandbox token of the project.
	mk := func(mod func(*metastore.Token)) string {
		secret, err := auth.NewSecret(metastore.TokenSandbox)
		if err != nil {
			t.Fatal(err)
		}
		tok := metastore.Token{Hash: auth.Hash(secret), Kind: metastore.TokenSandbox, ProjectID: projects[0].ID, CreatedAt: time.Now().Add(-time.Hour)}
		mod(&tok)
		if err := c.Server.Meta.CreateToken(ctx, tok); err != nil {
			t.Fatal(err)
		}
		return secret
	}
	expired := mk(func(t *metastore.Token) { t.ExpiresAt = time.Now().Add(-time.Minute) })
	revoked := mk(func(t *metastore.Token) { t.Revoked = true })

	// What each credential may reach: "agent", "admin" (admin and lifecycle
	// services), "any" (health, reflection).
	type cred struct {
		name, token string
		may         map[string]bool
	}
	creds := []cred{
		{"none", "", nil},
		{"garbage", "skt_garbage", nil},
		{"malformed", "not-a-token", nil},
		{"expired sandbox token", expired, nil},
		{"revoked sandbox token", revoked, nil},
		{"sandbox token of this project", mine, map[string]bool{"agent": true, "any": true}},
		{"sandbox token of another project", other, map[string]bool{"agent": true, "any": true}},
		{"admin token", c.Server.AdminToken, map[string]bool{"admin": true, "any": true}},
	}
	area := func(r rpc) string {
		switch r.service {
		case "sandkeep.v1.AgentService":
			return "agent"
		case "sandkeep.v1.AdminService", "sandkeep.v1.LifecycleService":
			return "admin"
		}
		return "any"
	}
	rpcs := allRPCs()
	if len(rpcs) < 30 {
		t.Fatalf("only %d RPCs found in the descriptors", len(rpcs))
	}
	for _, cr := range creds {
		var conn *grpc.ClientConn
		if cr.token == "" {
			conn, err = grpc.NewClient(c.Addr, grpc.WithTransportCredentials(insecure.NewCredentials()))
		} else {
			conn, err = dial.Dial(c.Addr, dial.Options{Token: cr.token})
		}
		if err != nil {
			t.Fatal(err)
		}
		for _, r := range rpcs {
			t.Run(fmt.Sprintf("%s/%s", cr.name, r.full()), func(t *testing.T) {
				cctx, cancel := context.WithTimeout(ctx, 20*time.Second)
				defer cancel()
				got := call(cctx, conn, r)
				switch {
				case cr.may == nil:
					if got != codes.Unauthenticated {
						t.Fatalf("%s with %s: %v, want Unauthenticated", r.full(), cr.name, got)
					}
				case !cr.may[area(r)]:
					if got != codes.PermissionDenied {
						t.Fatalf("%s with %s: %v, want PermissionDenied", r.full(), cr.name, got)
					}
				default:
					if got == codes.Unauthenticated || got == codes.PermissionDenied {
						t.Fatalf("%s with %s: %v, want the call let through", r.full(), cr.name, got)
					}
				}
			})
		}
		conn.Close()
	}
}
