package api

import (
	"context"
	"log/slog"
	"path/filepath"
	"testing"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"

	"github.com/sandkeep/sandkeep/internal/auth"
	"github.com/sandkeep/sandkeep/internal/blobstore/fsstore"
	"github.com/sandkeep/sandkeep/internal/id"
	"github.com/sandkeep/sandkeep/internal/metastore"
	"github.com/sandkeep/sandkeep/internal/metastore/sqlitestore"
	"github.com/sandkeep/sandkeep/internal/repo"
	"github.com/sandkeep/sandkeep/internal/sessions"
	"github.com/sandkeep/sandkeep/internal/tree"
	"github.com/sandkeep/sandkeep/internal/urlsign"
	pb "github.com/sandkeep/sandkeep/proto/sandkeep/v1"
)

// FuzzAgentAPI feeds arbitrary bytes, decoded as each agent-API request,
// to the real handlers over SQLite and a local blob store, authenticated as
// a sandbox token. Whatever a hostile sandbox sends, the answer is a clear
// client error or success: never a panic, and never Internal or Unknown
// (which would mean a request reached a layer that did not expect it).
func FuzzAgentAPI(f *testing.F) {
	dir := f.TempDir()
	ctx := context.Background()
	meta, err := sqlitestore.Open(ctx, filepath.Join(dir, "meta.db"))
	if err != nil {
		f.Fatal(err)
	}
	f.Cleanup(func() { meta.Close() })
	signer, err := urlsign.New(make([]byte, 32))
	if err != nil {
		f.Fatal(err)
	}
	blobs, err := fsstore.New(filepath.Join(dir, "blobs"), fsstore.Options{BaseURL: "http://127.0.0.1:1", URLSigner: signer})
	if err != nil {
		f.Fatal(err)
	}
	log := slog.New(slog.DiscardHandler)
	r := repo.New(meta, blobs, repo.Options{Logger: log})
	srv := NewAgentServer(r, sessions.New(log), log)
	p, err := meta.CreateProject(ctx, "fuzz")
	if err != nil {
		f.Fatal(err)
	}
	actx := auth.WithPrincipal(ctx, auth.Principal{Kind: metastore.TokenSandbox, ProjectID: p.ID, TokenHash: auth.Hash("skt_fuzz")})

	seed := func(which uint8, m proto.Message) {
		b, err := proto.Marshal(m)
		if err != nil {
			f.Fatal(err)
		}
		f.Add(which, b)
	}
	x := id.Sum([]byte("x")).Bytes()
	empty, _ := (&tree.Tree{}).Encode()
	file, _ := (&tree.Tree{Nodes: []tree.Node{{Name: "f", Type: tree.File, Size: 1, Chunks: []tree.ChunkRef{{ID: id.Sum([]byte("y")), Size: 1}}}}}).Encode()
	seed(0, &pb.FindMissingChunksRequest{Ids: [][]byte{x, {1, 2}}})
	seed(1, &pb.GetUploadTargetsRequest{Packs: []*pb.PackUpload{{PackId: x, Size: 100}, {PackId: x, Size: -1}}})
	seed(2, &pb.CompletePacksRequest{Packs: []*pb.PackUpload{{PackId: x, Size: 1 << 40}}})
	seed(3, &pb.UploadTreesRequest{Trees: [][]byte{empty, file, {0xff}}})
	seed(4, &pb.CommitVersionRequest{Parent: 0, Root: id.Sum(empty).Bytes(), Kind: pb.VersionKind_VERSION_KIND_ROLLBACK, SessionId: "s"})
	seed(5, &pb.OpenSessionRequest{SandboxId: "sbx", Hostname: "h", Workspace: "/w"})

	f.Fuzz(func(t *testing.T, which uint8, data []byte) {
		var err error
		switch which % 6 {
		case 0:
			req := &pb.FindMissingChunksRequest{}
			if proto.Unmarshal(data, req) != nil {
				return
			}
			_, err = srv.FindMissingChunks(actx, req)
		case 1:
			req := &pb.GetUploadTargetsRequest{}
			if proto.Unmarshal(data, req) != nil {
				return
			}
			_, err = srv.GetUploadTargets(actx, req)
		case 2:
			req := &pb.CompletePacksRequest{}
			if proto.Unmarshal(data, req) != nil {
				return
			}
			_, err = srv.CompletePacks(actx, req)
		case 3:
			req := &pb.UploadTreesRequest{}
			if proto.Unmarshal(data, req) != nil {
				return
			}
			_, err = srv.UploadTrees(actx, req)
		case 4:
			req := &pb.CommitVersionRequest{}
			if proto.Unmarshal(data, req) != nil {
				return
			}
			_, err = srv.CommitVersion(actx, req)
		case 5:
			req := &pb.OpenSessionRequest{}
			if proto.Unmarshal(data, req) != nil {
				return
			}
			_, err = srv.OpenSession(actx, req)
		}
		if c := status.Code(err); c == codes.Internal || c == codes.Unknown {
			t.Fatalf("request %d answered %v: %v", which%6, c, err)
		}
	})
}
