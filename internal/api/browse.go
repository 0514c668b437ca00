package api

import (
	"context"
	"encoding/base64"
	"strconv"
	"strings"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/sandkeep/sandkeep/internal/id"
	"github.com/sandkeep/sandkeep/internal/links"
	"github.com/sandkeep/sandkeep/internal/repo"
	"github.com/sandkeep/sandkeep/internal/tree"
	pb "github.com/sandkeep/sandkeep/proto/sandkeep/v1"
)

// Listing bounds.
const (
	defaultListPage = 1000
	maxListPage     = 10000
	// maxPageBytes bounds the paths in one page, far below the message limit.
	maxPageBytes = 4 << 20
	// historyScan bounds the versions one ListFileHistory call examines; a
	// page may then end early, with a token.
	historyScan = 10000
	// readPiece is the largest data field of one ReadFileResponse.
	readPiece = 1 << 20

	defaultLinkTTL = 24 * time.Hour
	maxLinkTTL     = 366 * 24 * time.Hour
	defaultWait    = time.Minute
)

// WithLinks lets the server make file links with l (CreateFileLink is
// UNAVAILABLE without it).
func (s *AdminServer) WithLinks(l *links.Linker) *AdminServer {
	s.links = l
	return s
}

func pageSize(n int32, def, max int) (int, error) {
	switch {
	case n < 0:
		return 0, status.Error(codes.InvalidArgument, "negative page_size")
	case n == 0:
		return def, nil
	case int(n) > max:
		return max, nil
	}
	return int(n), nil
}

// Page tokens are opaque to clients: base64url of a kind and fields
// separated by NUL (which no path contains).
func makeToken(kind string, fields ...string) string {
	return base64.RawURLEncoding.EncodeToString([]byte(kind + "\x00" + strings.Join(fields, "\x00")))
}

func parseToken(tok, kind string, n int) ([]string, error) {
	b, err := base64.RawURLEncoding.DecodeString(tok)
	if err != nil {
		return nil, status.Error(codes.InvalidArgument, "bad page_token")
	}
	parts := strings.Split(string(b), "\x00")
	if len(parts) != n+1 || parts[0] != kind {
		return nil, status.Error(codes.InvalidArgument, "bad page_token")
	}
	return parts[1:], nil
}

func tokenInt(s string) (int64, error) {
	v, err := strconv.ParseInt(s, 10, 64)
	if err != nil || v < 0 {
		return 0, status.Error(codes.InvalidArgument, "bad page_token")
	}
	return v, nil
}

// cleanPath validates a workspace path from a request.
func cleanPath(p, what string) (string, error) {
	if _, err := tree.CleanPath(p); err != nil {
		return "", status.Errorf(codes.InvalidArgument, "%s: %v", what, err)
	}
	return p, nil
}

func fileInfoToPB(p string, n *tree.Node) *pb.FileInfo {
	if n == nil {
		return nil
	}
	fi := &pb.FileInfo{Path: p, Type: entryTypeToPB(n.Type), Mode: n.Mode, MtimeNs: n.MtimeNs, Size: n.Size, Target: n.Target}
	if n.Type == tree.File {
		fi.Checksum = repo.ContentID(n)
		fi.ContentType = repo.ContentType(n.Name)
	}
	return fi
}

func changeKind(old, new *tree.Node) pb.ChangeKind {
	switch {
	case old == nil:
		return pb.ChangeKind_CHANGE_KIND_ADDED
	case new == nil:
		return pb.ChangeKind_CHANGE_KIND_DELETED
	}
	return pb.ChangeKind_CHANGE_KIND_MODIFIED
}

// versionRoot returns the root of a version; 0 is the empty tree.
func (s *AdminServer) versionRoot(ctx context.Context, projectID string, number int64) (id.ID, error) {
	if number < 0 {
		return id.ID{}, status.Error(codes.InvalidArgument, "negative version")
	}
	if number == 0 {
		_, err := s.repo.Meta().GetProject(ctx, projectID)
		return id.ID{}, err
	}
	v, err := s.repo.Meta().GetVersion(ctx, projectID, number)
	if err != nil {
		return id.ID{}, err
	}
	return v.Root, nil
}

// DiffVersions implements pb.AdminServiceServer.
func (s *AdminServer) DiffVersions(ctx context.Context, req *pb.DiffVersionsRequest) (*pb.DiffVersionsResponse, error) {
	size, err := pageSize(req.GetPageSize(), defaultListPage, maxListPage)
	if err != nil {
		return nil, err
	}
	from, to := req.GetFromVersion(), req.GetToVersion()
	fromS, toS := strconv.FormatInt(from, 10), strconv.FormatInt(to, 10)
	after := ""
	if tok := req.GetPageToken(); tok != "" {
		f, err := parseToken(tok, "diff", 3)
		if err != nil {
			return nil, err
		}
		if f[0] != fromS || f[1] != toS {
			return nil, status.Error(codes.InvalidArgument, "page_token belongs to another diff")
		}
		if after, err = cleanPath(f[2], "page_token"); err != nil {
			return nil, err
		}
	}
	a, err := s.versionRoot(ctx, req.GetProjectId(), from)
	if err != nil {
		return nil, toStatus(ctx, s.log, "diff versions", err)
	}
	b, err := s.versionRoot(ctx, req.GetProjectId(), to)
	if err != nil {
		return nil, toStatus(ctx, s.log, "diff versions", err)
	}
	out := &pb.DiffVersionsResponse{}
	nbytes, last := 0, ""
	err = s.repo.DiffFrom(ctx, req.GetProjectId(), a, b, after, func(c repo.Change) error {
		if len(out.Changes) >= size || nbytes >= maxPageBytes {
			out.NextPageToken = makeToken("diff", fromS, toS, last)
			return repo.ErrStop
		}
		out.Changes = append(out.Changes, &pb.FileChange{
			Path: c.Path, Kind: changeKind(c.Old, c.New),
			OldFile: fileInfoToPB(c.Path, c.Old), NewFile: fileInfoToPB(c.Path, c.New),
		})
		nbytes += 2*len(c.Path) + 200
		last = c.Path
		return nil
	})
	if err != nil {
		return nil, toStatus(ctx, s.log, "diff versions", err)
	}
	return out, nil
}

// ListFiles implements pb.AdminServiceServer.
func (s *AdminServer) ListFiles(ctx context.Context, req *pb.ListFilesRequest) (*pb.ListFilesResponse, error) {
	size, err := pageSize(req.GetPageSize(), defaultListPage, maxListPage)
	if err != nil {
		return nil, err
	}
	number := req.GetVersion()
	if number < 0 {
		return nil, status.Error(codes.InvalidArgument, "negative version")
	}
	prefix := strings.TrimRight(req.GetPrefix(), "/")
	if prefix != "" {
		if _, err := cleanPath(prefix, "prefix"); err != nil {
			return nil, err
		}
	}
	number, after, err := filesPageToken(req.GetPageToken(), number, prefix)
	if err != nil {
		return nil, err
	}
	v, err := s.repo.ResolveVersion(ctx, req.GetProjectId(), number)
	if err != nil {
		return nil, toStatus(ctx, s.log, "list files", err)
	}
	out := &pb.ListFilesResponse{Version: VersionToPB(v)}
	nbytes, last := 0, ""
	depth := 0 // of the entries directly in prefix
	if prefix != "" {
		depth = strings.Count(prefix, "/") + 1
	}
	err = s.repo.Walk(ctx, req.GetProjectId(), v.Root, prefix, after, func(p string, n *tree.Node) error {
		if req.GetChildrenOnly() {
			if strings.Count(p, "/") > depth { // below a child (a resumed listing)
				if n.Type == tree.Dir {
					return repo.ErrSkipDir
				}
				return nil
			}
		} else if n.Type == tree.Dir {
			return nil
		}
		if len(out.Files) >= size || nbytes >= maxPageBytes {
			out.NextPageToken = makeToken("files", strconv.FormatInt(v.Number, 10), prefix, last)
			return repo.ErrStop
		}
		out.Files = append(out.Files, fileInfoToPB(p, n))
		nbytes += len(p) + len(n.Target) + 150
		last = p
		if n.Type == tree.Dir { // children only: listed, not entered
			return repo.ErrSkipDir
		}
		return nil
	})
	if err != nil {
		return nil, toStatus(ctx, s.log, "list files", err)
	}
	return out, nil
}

// filesPageToken reads a ListFiles page token: the version the listing
// is on and the path it resumes after ("" for the first page).
func filesPageToken(tok string, number int64, prefix string) (int64, string, error) {
	if tok == "" {
		return number, "", nil
	}
	f, err := parseToken(tok, "files", 3)
	if err != nil {
		return 0, "", err
	}
	tv, err := tokenInt(f[0])
	if err != nil {
		return 0, "", err
	}
	// A listing of the head stays on the version its first page saw.
	if (number != 0 && tv != number) || f[1] != prefix || tv == 0 {
		return 0, "", status.Error(codes.InvalidArgument, "page_token belongs to another listing")
	}
	after, err := cleanPath(f[2], "page_token")
	if err != nil {
		return 0, "", err
	}
	return tv, after, nil
}

// ListFileHistory implements pb.AdminServiceServer.
func (s *AdminServer) ListFileHistory(ctx context.Context, req *pb.ListFileHistoryRequest) (*pb.ListFileHistoryResponse, error) {
	size, err := pageSize(req.GetPageSize(), 100, 1000)
	if err != nil {
		return nil, err
	}
	p, err := cleanPath(req.GetPath(), "path")
	if err != nil {
		return nil, err
	}
	var before int64
	if tok := req.GetPageToken(); tok != "" {
		f, err := parseToken(tok, "history", 2)
		if err != nil {
			return nil, err
		}
		if f[0] != p {
			return nil, status.Error(codes.InvalidArgument, "page_token belongs to another path")
		}
		if before, err = tokenInt(f[1]); err != nil || before == 0 {
			return nil, status.Error(codes.InvalidArgument, "bad page_token")
		}
	}
	out := &pb.ListFileHistoryResponse{}
	next, err := s.repo.History(ctx, req.GetProjectId(), p, before, historyScan, func(r repo.Revision) error {
		out.Revisions = append(out.Revisions, &pb.FileRevision{
			Version: VersionToPB(r.Version), Kind: changeKind(r.Old, r.New), File: fileInfoToPB(p, r.New),
		})
		if len(out.Revisions) >= size {
			return repo.ErrStop
		}
		return nil
	})
	if err != nil {
		return nil, toStatus(ctx, s.log, "list file history", err)
	}
	if next != 0 {
		out.NextPageToken = makeToken("history", p, strconv.FormatInt(next, 10))
	}
	return out, nil
}

// ReadFile implements pb.AdminServiceServer.
func (s *AdminServer) ReadFile(req *pb.ReadFileRequest, stream pb.AdminService_ReadFileServer) error {
	ctx := stream.Context()
	p, err := cleanPath(req.GetPath(), "path")
	if err != nil {
		return err
	}
	if req.GetOffset() < 0 || req.GetLength() < 0 {
		return status.Error(codes.InvalidArgument, "negative offset or length")
	}
	v, err := s.repo.ResolveVersion(ctx, req.GetProjectId(), req.GetVersion())
	if err != nil {
		return toStatus(ctx, s.log, "read file", err)
	}
	n, err := s.repo.Lookup(ctx, req.GetProjectId(), v.Root, p)
	if err != nil {
		return toStatus(ctx, s.log, "read file", err)
	}
	if n.Type != tree.File {
		return status.Errorf(codes.InvalidArgument, "%s is a %s, not a file", p, n.Type)
	}
	off, length := req.GetOffset(), req.GetLength()
	if off > n.Size {
		return status.Errorf(codes.OutOfRange, "offset %d is past the end of a file of %d bytes", off, n.Size)
	}
	if length == 0 || length > n.Size-off {
		length = n.Size - off
	}
	if err := stream.Send(&pb.ReadFileResponse{File: fileInfoToPB(p, n), Version: VersionToPB(v)}); err != nil {
		return err
	}
	err = s.repo.ReadFile(ctx, req.GetProjectId(), n, off, length, func(b []byte) error {
		for len(b) > 0 {
			k := min(len(b), readPiece)
			// A fresh copy per message: gRPC may keep it after Send returns.
			if err := stream.Send(&pb.ReadFileResponse{Data: append([]byte(nil), b[:k]...)}); err != nil {
				return err
			}
			b = b[k:]
		}
		return nil
	})
	if err != nil {
		return toStatus(ctx, s.log, "read file", err)
	}
	return nil
}

// RollbackProject implements pb.AdminServiceServer.
//
// The new head is committed first (repo.Rollback: a compare-and-set on the
// head, retried when a concurrent commit moved it), then a connected agent
// is told and the call waits, bounded, for it to bring its workspace there.
// A workspace change racing the rollback ends in this defined state:
//
//   - committed before the rollback: it stays in the history (the version
//     below the rollback) and the workspace follows the rollback;
//   - not committed yet when the rollback lands (pending, or its commit
//     loses the compare-and-set): the agent's three-way merge keeps it (it
//     changed on disk since the agent's last commit) and commits it on top
//     of the rollback.
//
// So neither the rollback nor a committed write is ever lost.
func (s *AdminServer) RollbackProject(ctx context.Context, req *pb.RollbackProjectRequest) (*pb.RollbackProjectResponse, error) {
	wait, err := agentWait(req.GetAgentTimeout(), defaultWait)
	if err != nil {
		return nil, err
	}
	if req.GetVersion() <= 0 {
		return nil, status.Error(codes.InvalidArgument, "version must be positive")
	}
	v, err := s.repo.Rollback(ctx, req.GetProjectId(), req.GetVersion())
	if err != nil {
		return nil, toStatus(ctx, s.log, "rollback project", err)
	}
	s.log.InfoContext(ctx, "project rolled back", "project", req.GetProjectId(), "to", req.GetVersion(), "version", v.Number)
	a := s.tellAgent(ctx, req.GetProjectId(), v.Number, wait)
	return &pb.RollbackProjectResponse{
		Version: VersionToPB(v), AgentConnected: a.GetConnected(), AgentApplied: a.GetApplied(),
		AgentVersion: a.GetVersion(), AgentError: a.GetError(),
	}, nil
}

// CreateFileLink implements pb.AdminServiceServer.
func (s *AdminServer) CreateFileLink(ctx context.Context, req *pb.CreateFileLinkRequest) (*pb.CreateFileLinkResponse, error) {
	if s.links == nil {
		return nil, status.Error(codes.Unavailable, "this coordinator serves no file links")
	}
	p, err := cleanPath(req.GetPath(), "path")
	if err != nil {
		return nil, err
	}
	ttl := req.GetTtl().AsDuration()
	switch {
	case req.GetTtl() == nil || ttl == 0:
		ttl = defaultLinkTTL
	case ttl < time.Second || ttl > maxLinkTTL:
		return nil, status.Error(codes.InvalidArgument, "ttl must be in [1s, 366 days]")
	}
	v, err := s.repo.ResolveVersion(ctx, req.GetProjectId(), req.GetVersion())
	if err != nil {
		return nil, toStatus(ctx, s.log, "create file link", err)
	}
	n, err := s.repo.Lookup(ctx, req.GetProjectId(), v.Root, p)
	if err != nil {
		return nil, toStatus(ctx, s.log, "create file link", err)
	}
	if n.Type != tree.File {
		return nil, status.Errorf(codes.InvalidArgument, "%s is a %s, not a file", p, n.Type)
	}
	exp := s.links.Expiry(ttl)
	return &pb.CreateFileLinkResponse{
		Url:        s.links.Sign(req.GetProjectId(), p, v.Number, exp),
		ExpireTime: timestamppb.New(exp),
		Version:    v.Number,
	}, nil
}
