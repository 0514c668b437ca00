package api

import (
	"context"
	"io"
	"log/slog"
	"path/filepath"
	"testing"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/sandkeep/sandkeep/internal/blobstore/fsstore"
	"github.com/sandkeep/sandkeep/internal/metastore/sqlitestore"
	"github.com/sandkeep/sandkeep/internal/repo"
	"github.com/sandkeep/sandkeep/internal/sessions"
	"github.com/sandkeep/sandkeep/internal/urlsign"
	pb "github.com/sandkeep/sandkeep/proto/sandkeep/v1"
)

// fakePutStream is the server side of a PutFiles stream fed from a list.
type fakePutStream struct {
	grpc.ServerStream
	ctx  context.Context
	msgs []*pb.PutFilesRequest
	resp *pb.PutFilesResponse
}

func (s *fakePutStream) Context() context.Context { return s.ctx }

func (s *fakePutStream) Recv() (*pb.PutFilesRequest, error) {
	if len(s.msgs) == 0 {
		return nil, io.EOF
	}
	m := s.msgs[0]
	s.msgs = s.msgs[1:]
	return m, nil
}

func (s *fakePutStream) SendAndClose(r *pb.PutFilesResponse) error {
	s.resp = r
	return nil
}

// FuzzPutFiles feeds PutFiles streams made from arbitrary bytes (headers
// with arbitrary paths, projects and modes; data of any length, in any
// order) to the real handler over SQLite and a local blob store. The
// answer is success or a clear client error, never a panic, Internal or
// Unknown.
func FuzzPutFiles(f *testing.F) {
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
	srv := NewAdminServer(repo.New(meta, blobs, repo.Options{Logger: log}), sessions.New(log), log)
	p, err := meta.CreateProject(ctx, "fuzz")
	if err != nil {
		f.Fatal(err)
	}
	f.Add([]byte("Ha.txt\x00Dhello"), uint8(0))
	f.Add([]byte("Hdir/b\x00D\x00\x01Hdir\x00"), uint8(1))
	f.Add([]byte("H../x\x00Dx"), uint8(2))
	f.Add([]byte("DxHa\x00"), uint8(0))
	f.Fuzz(func(t *testing.T, data []byte, mode uint8) {
		// H<path>\x00 starts a file (the project is the real one unless
		// mode says otherwise); D<bytes up to the next H> is data.
		var msgs []*pb.PutFilesRequest
		for i := 0; i < len(data); {
			switch data[i] {
			case 'H':
				j := i + 1
				for j < len(data) && data[j] != 0 {
					j++
				}
				project := p.ID
				if mode%5 == 4 {
					project = string(data[i+1 : j])
				}
				msgs = append(msgs, &pb.PutFilesRequest{Msg: &pb.PutFilesRequest_Header{Header: &pb.PutFileHeader{
					ProjectId: project, Path: string(data[i+1 : j]), Mode: uint32(mode) << 4}}})
				i = j + 1
			default:
				j := i + 1
				for j < len(data) && data[j] != 'H' {
					j++
				}
				msgs = append(msgs, &pb.PutFilesRequest{Msg: &pb.PutFilesRequest_Data{Data: data[i+1 : j]}})
				i = j
			}
		}
		err := srv.PutFiles(&fakePutStream{ctx: ctx, msgs: msgs})
		if c := status.Code(err); c == codes.Internal || c == codes.Unknown {
			t.Fatalf("PutFiles of %q answered %v: %v", data, c, err)
		}
	})
}
