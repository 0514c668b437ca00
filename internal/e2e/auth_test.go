package e2e

import (
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/sandkeep/sandkeep/internal/agent"
	"github.com/sandkeep/sandkeep/internal/coordtest"
	"github.com/sandkeep/sandkeep/internal/id"
	pb "github.com/sandkeep/sandkeep/proto/sandkeep/v1"
)

func TestTokensAndScopes(t *testing.T) {
	c := coordtest.Start(t, coordtest.Options{})
	ctx := context.Background()
	projA, tokA := c.Project(t, "a")
	_, tokB := c.Project(t, "b")

	// Project A gets a version.
	ws := filepath.Join(t.TempDir(), "ws")
	if err := os.MkdirAll(ws, 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(ws, "secret.txt"), []byte("A's data"), 0o644); err != nil {
		t.Fatal(err)
	}
	if _, err := agent.SyncOnce(ctx, agentConfig(c, tokA, ws, t)); err != nil {
		t.Fatal(err)
	}
	countVersions := func() int {
		resp, err := c.Admin.ListVersions(ctx, &pb.ListVersionsRequest{ProjectId: projA})
		if err != nil {
			t.Fatal(err)
		}
		return len(resp.GetVersions())
	}
	if n := countVersions(); n != 1 {
		t.Fatalf("project A has %d versions, want 1", n)
	}

	root := id.Sum([]byte("x")).Bytes()
	tests := []struct {
		name  string
		token string
		call  func(pb.AgentServiceClient) error
		want  codes.Code
	}{
		{"no token", "", func(a pb.AgentServiceClient) error {
			_, err := a.OpenSession(ctx, &pb.OpenSessionRequest{})
			return err
		}, codes.Unauthenticated},
		{"garbage token", "skt_nonsense", func(a pb.AgentServiceClient) error {
			_, err := a.CommitVersion(ctx, &pb.CommitVersionRequest{Parent: 1, Root: root})
			return err
		}, codes.Unauthenticated},
		{"overlong token", "skt_" + strings.Repeat("a", 5000), func(a pb.AgentServiceClient) error {
			_, err := a.OpenSession(ctx, &pb.OpenSessionRequest{})
			return err
		}, codes.Unauthenticated},
		{"admin token on the agent API", c.Server.AdminToken, func(a pb.AgentServiceClient) error {
			_, err := a.CommitVersion(ctx, &pb.CommitVersionRequest{Parent: 1, Root: root})
			return err
		}, codes.PermissionDenied},
		{"stale parent", tokA, func(a pb.AgentServiceClient) error {
			s, err := a.OpenSession(ctx, &pb.OpenSessionRequest{})
			if err != nil {
				return err
			}
			_, err = a.CommitVersion(ctx, &pb.CommitVersionRequest{Parent: 0, Root: s.GetHead().GetRoot()})
			return err
		}, codes.FailedPrecondition},
		{"root that is not stored", tokA, func(a pb.AgentServiceClient) error {
			_, err := a.CommitVersion(ctx, &pb.CommitVersionRequest{Parent: 1, Root: root})
			return err
		}, codes.FailedPrecondition},
		{"bad id length", tokA, func(a pb.AgentServiceClient) error {
			_, err := a.FindMissingChunks(ctx, &pb.FindMissingChunksRequest{Ids: [][]byte{{1, 2, 3}}})
			return err
		}, codes.InvalidArgument},
		{"garbage tree", tokA, func(a pb.AgentServiceClient) error {
			_, err := a.UploadTrees(ctx, &pb.UploadTreesRequest{Trees: [][]byte{[]byte("not a tree")}})
			return err
		}, codes.InvalidArgument},
		{"pack never uploaded", tokA, func(a pb.AgentServiceClient) error {
			_, err := a.CompletePacks(ctx, &pb.CompletePacksRequest{Packs: []*pb.PackUpload{{PackId: root, Size: 100}}})
			return err
		}, codes.FailedPrecondition},
		{"project B sees none of A's versions", tokB, func(a pb.AgentServiceClient) error {
			s, err := a.GetRestorePlan(ctx, &pb.GetRestorePlanRequest{Version: 1})
			if err != nil {
				return err
			}
			_, err = s.Recv()
			return err
		}, codes.NotFound},
		{"project B cannot commit A's root", tokB, func(a pb.AgentServiceClient) error {
			resp, err := c.Admin.ListVersions(ctx, &pb.ListVersionsRequest{ProjectId: projA})
			if err != nil {
				return err
			}
			_, err = a.CommitVersion(ctx, &pb.CommitVersionRequest{Parent: 0, Root: resp.GetVersions()[0].GetRoot()})
			return err
		}, codes.FailedPrecondition},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			err := tt.call(c.AgentConn(t, tt.token))
			if got := status.Code(err); got != tt.want {
				t.Fatalf("got %v (%v), want %v", got, err, tt.want)
			}
			if n := countVersions(); n != 1 {
				t.Fatalf("project A has %d versions after a refused call, want 1", n)
			}
		})
	}

	// A sandbox token cannot call the admin API.
	admin := pb.NewAdminServiceClient(c.Conn(t, tokA))
	if _, err := admin.CreateProject(ctx, &pb.CreateProjectRequest{Name: "evil"}); status.Code(err) != codes.PermissionDenied {
		t.Fatalf("sandbox token on admin API: %v, want PermissionDenied", err)
	}
	if _, err := admin.ListVersions(ctx, &pb.ListVersionsRequest{ProjectId: projA}); status.Code(err) != codes.PermissionDenied {
		t.Fatalf("sandbox token listing versions: %v, want PermissionDenied", err)
	}
}
