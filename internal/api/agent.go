package api

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"io"
	"log/slog"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/sandkeep/sandkeep/internal/auth"
	"github.com/sandkeep/sandkeep/internal/metastore"
	"github.com/sandkeep/sandkeep/internal/metrics"
	"github.com/sandkeep/sandkeep/internal/repo"
	"github.com/sandkeep/sandkeep/internal/sessions"
	pb "github.com/sandkeep/sandkeep/proto/sandkeep/v1"
)

// AgentServer implements pb.AgentServiceServer. The project of every call is
// the sandbox token's project.
type AgentServer struct {
	pb.UnimplementedAgentServiceServer
	repo     *repo.Repo
	sessions *sessions.Registry
	log      *slog.Logger
	m        *metrics.Metrics
}

// SetMetrics makes the server record its work in m.
func (s *AgentServer) SetMetrics(m *metrics.Metrics) { s.m = m }

// NewAgentServer returns the agent API over r, registering session streams
// in reg.
func NewAgentServer(r *repo.Repo, reg *sessions.Registry, log *slog.Logger) *AgentServer {
	return &AgentServer{repo: r, sessions: reg, log: log}
}

// Session implements pb.AgentServiceServer.
func (s *AgentServer) Session(stream pb.AgentService_SessionServer) error {
	ctx := stream.Context()
	pid, err := s.project(ctx)
	if err != nil {
		return err
	}
	p, _ := auth.FromContext(ctx)
	err = s.sessions.ServeToken(pid, p.TokenHash, stream)
	switch {
	case err == nil, errors.Is(err, io.EOF), errors.Is(err, context.Canceled):
		return nil
	case errors.Is(err, sessions.ErrInvalid):
		return status.Error(codes.InvalidArgument, err.Error())
	case errors.Is(err, sessions.ErrTooMany):
		return status.Error(codes.ResourceExhausted, err.Error())
	case errors.Is(err, sessions.ErrDisconnected), errors.Is(err, sessions.ErrRevoked):
		return status.Error(codes.Unauthenticated, err.Error())
	}
	if st, ok := status.FromError(err); ok {
		return st.Err()
	}
	return toStatus(ctx, s.log, "session", err)
}

func (s *AgentServer) project(ctx context.Context) (string, error) {
	p, err := principal(ctx)
	if err != nil {
		return "", err
	}
	if p.ProjectID == "" {
		return "", status.Error(codes.PermissionDenied, "the agent API needs a sandbox token")
	}
	return p.ProjectID, nil
}

// OpenSession implements pb.AgentServiceServer.
func (s *AgentServer) OpenSession(ctx context.Context, req *pb.OpenSessionRequest) (*pb.OpenSessionResponse, error) {
	pid, err := s.project(ctx)
	if err != nil {
		return nil, err
	}
	if len(req.GetSandboxId()) > 256 || len(req.GetHostname()) > 256 || len(req.GetAgentVersion()) > 128 || len(req.GetWorkspace()) > 4096 {
		return nil, status.Error(codes.InvalidArgument, "session field too long")
	}
	var sid [12]byte
	_, _ = rand.Read(sid[:])
	resp := &pb.OpenSessionResponse{
		SessionId: "ses_" + hex.EncodeToString(sid[:]), ProjectId: pid,
		MaxPackSize: repo.MaxPackSize, MaxIdsPerCall: repo.MaxIDsPerCall,
	}
	head, err := s.repo.Meta().HeadVersion(ctx, pid)
	switch {
	case err == nil:
		resp.Head = VersionToPB(head)
	case !errors.Is(err, metastore.ErrNotFound):
		return nil, toStatus(ctx, s.log, "open session", err)
	}
	s.log.InfoContext(ctx, "session opened", "project", pid, "session", resp.SessionId, "sandbox", req.GetSandboxId(), "host", req.GetHostname(), "agent", req.GetAgentVersion())
	return resp, nil
}

// FindMissingChunks implements pb.AgentServiceServer.
func (s *AgentServer) FindMissingChunks(ctx context.Context, req *pb.FindMissingChunksRequest) (*pb.FindMissingChunksResponse, error) {
	pid, err := s.project(ctx)
	if err != nil {
		return nil, err
	}
	ids, err := parseIDs(req.GetIds(), "ids", repo.MaxIDsPerCall)
	if err != nil {
		return nil, err
	}
	missing, err := s.repo.MissingBlobs(ctx, pid, ids)
	if err != nil {
		return nil, toStatus(ctx, s.log, "find missing chunks", err)
	}
	if s.m != nil {
		s.m.ChunksAsked.Add(float64(len(ids)))
		s.m.ChunksMissing.Add(float64(len(missing)))
	}
	out := make([][]byte, len(missing))
	for i, m := range missing {
		out[i] = m.Bytes()
	}
	return &pb.FindMissingChunksResponse{Missing: out}, nil
}

func packRefs(ps []*pb.PackUpload) ([]repo.PackRef, error) {
	if len(ps) > 1000 {
		return nil, status.Errorf(codes.ResourceExhausted, "%d packs, at most 1000 per call", len(ps))
	}
	out := make([]repo.PackRef, len(ps))
	for i, p := range ps {
		pid, err := parseID(p.GetPackId(), "pack_id")
		if err != nil {
			return nil, err
		}
		out[i] = repo.PackRef{ID: pid, Size: p.GetSize()}
	}
	return out, nil
}

// GetUploadTargets implements pb.AgentServiceServer.
func (s *AgentServer) GetUploadTargets(ctx context.Context, req *pb.GetUploadTargetsRequest) (*pb.GetUploadTargetsResponse, error) {
	pid, err := s.project(ctx)
	if err != nil {
		return nil, err
	}
	refs, err := packRefs(req.GetPacks())
	if err != nil {
		return nil, err
	}
	urls, err := s.repo.UploadTargets(ctx, pid, refs)
	if err != nil {
		return nil, toStatus(ctx, s.log, "get upload targets", err)
	}
	resp := &pb.GetUploadTargetsResponse{Targets: make([]*pb.UploadTarget, len(urls))}
	for i, u := range urls {
		resp.Targets[i] = &pb.UploadTarget{PackId: refs[i].ID.Bytes(), Request: signedToPB(u)}
	}
	return resp, nil
}

// CompletePacks implements pb.AgentServiceServer.
func (s *AgentServer) CompletePacks(ctx context.Context, req *pb.CompletePacksRequest) (*pb.CompletePacksResponse, error) {
	pid, err := s.project(ctx)
	if err != nil {
		return nil, err
	}
	refs, err := packRefs(req.GetPacks())
	if err != nil {
		return nil, err
	}
	n, err := s.repo.CompletePacks(ctx, pid, refs)
	if s.m != nil {
		if err != nil {
			s.m.PacksCompleted.WithLabelValues("error").Inc()
		} else {
			s.m.PacksCompleted.WithLabelValues("ok").Add(float64(len(refs)))
			for _, r := range refs {
				s.m.PackBytes.Add(float64(r.Size))
			}
			s.m.ChunksIndexed.Add(float64(n))
		}
	}
	if err != nil {
		return nil, toStatus(ctx, s.log, "complete packs", err)
	}
	return &pb.CompletePacksResponse{ChunksIndexed: int64(n)}, nil
}

// UploadTrees implements pb.AgentServiceServer.
func (s *AgentServer) UploadTrees(ctx context.Context, req *pb.UploadTreesRequest) (*pb.UploadTreesResponse, error) {
	pid, err := s.project(ctx)
	if err != nil {
		return nil, err
	}
	ids, err := s.repo.PutTrees(ctx, pid, req.GetTrees())
	if err != nil {
		return nil, toStatus(ctx, s.log, "upload trees", err)
	}
	out := make([][]byte, len(ids))
	for i, v := range ids {
		out[i] = v.Bytes()
	}
	return &pb.UploadTreesResponse{Ids: out}, nil
}

// CommitVersion implements pb.AgentServiceServer.
func (s *AgentServer) CommitVersion(ctx context.Context, req *pb.CommitVersionRequest) (*pb.CommitVersionResponse, error) {
	pid, err := s.project(ctx)
	if err != nil {
		return nil, err
	}
	root, err := parseID(req.GetRoot(), "root")
	if err != nil {
		return nil, err
	}
	kind := versionKindFromPB(req.GetKind())
	if kind == metastore.KindRollback || kind == metastore.KindUpload {
		return nil, status.Errorf(codes.InvalidArgument, "agents cannot commit %s versions", kind)
	}
	if len(req.GetSessionId()) > 256 {
		return nil, status.Error(codes.InvalidArgument, "session_id longer than 256 bytes")
	}
	// Who committed is the server's word: the authenticated token's sandbox
	// (or token id), never the session id the caller sends.
	p, _ := auth.FromContext(ctx)
	start := time.Now()
	v, err := s.repo.Commit(ctx, pid, repo.CommitRequest{Parent: req.GetParent(), Root: root, Kind: kind, SandboxID: p.Who()})
	if s.m != nil {
		result := "ok"
		switch {
		case errors.Is(err, metastore.ErrConflict):
			result = "conflict"
		case err != nil:
			result = "error"
		}
		s.m.Commits.WithLabelValues(result, string(kind)).Inc()
		s.m.CommitSeconds.Observe(time.Since(start).Seconds())
	}
	if err != nil {
		return nil, toStatus(ctx, s.log, "commit version", err)
	}
	s.log.InfoContext(ctx, "version committed", "project", pid, "version", v.Number, "files", v.Files, "bytes", v.Bytes, "kind", v.Kind)
	return &pb.CommitVersionResponse{Version: VersionToPB(v)}, nil
}

// GetRestorePlan implements pb.AgentServiceServer.
func (s *AgentServer) GetRestorePlan(req *pb.GetRestorePlanRequest, stream pb.AgentService_GetRestorePlanServer) error {
	ctx := stream.Context()
	pid, err := s.project(ctx)
	if err != nil {
		return err
	}
	start := time.Now()
	err = streamPlan(ctx, s.repo, s.log, pid, req.GetVersion(), stream.Send)
	if s.m != nil {
		result := "ok"
		if err != nil {
			result = "error"
		}
		s.m.RestorePlans.WithLabelValues(result).Inc()
		s.m.RestoreSeconds.Observe(time.Since(start).Seconds())
	}
	return err
}

func streamPlan(ctx context.Context, r *repo.Repo, log *slog.Logger, pid string, number int64, send func(*pb.GetRestorePlanResponse) error) error {
	var v metastore.Version
	var err error
	switch {
	case number < 0:
		return status.Error(codes.InvalidArgument, "negative version")
	case number == 0:
		v, err = r.Meta().HeadVersion(ctx, pid)
		if errors.Is(err, metastore.ErrNotFound) {
			return status.Error(codes.NotFound, "the project has no version yet")
		}
	default:
		v, err = r.Meta().GetVersion(ctx, pid, number)
	}
	if err != nil {
		return toStatus(ctx, log, "restore plan", err)
	}
	first := true
	err = r.Plan(ctx, pid, v, repo.PlanOptions{}, func(b repo.PlanBatch) error {
		msg := planToPB(b)
		if first {
			msg.Version = VersionToPB(v)
			first = false
		}
		return send(msg)
	})
	if err != nil {
		return toStatus(ctx, log, "restore plan", err)
	}
	if first { // an empty tree: still tell the agent which version it is
		return send(&pb.GetRestorePlanResponse{Version: VersionToPB(v)})
	}
	return nil
}

func planToPB(b repo.PlanBatch) *pb.GetRestorePlanResponse {
	msg := &pb.GetRestorePlanResponse{
		Entries: make([]*pb.PlanEntry, len(b.Entries)),
		Ranges:  make([]*pb.PackRange, len(b.Ranges)),
	}
	for i, e := range b.Entries {
		n := e.Node
		msg.Entries[i] = &pb.PlanEntry{Path: e.Path, Type: entryTypeToPB(n.Type), Mode: n.Mode, MtimeNs: n.MtimeNs, Size: n.Size, Chunks: chunksToPB(n.Chunks), Target: n.Target}
	}
	for i, rg := range b.Ranges {
		blobs := make([]*pb.RangeBlob, len(rg.Blobs))
		for j, bl := range rg.Blobs {
			blobs[j] = &pb.RangeBlob{Id: bl.ID.Bytes(), Offset: bl.Offset, Length: bl.Length, RawLength: bl.RawLength, Codec: codecToPB(bl.Codec), RawOffset: bl.RawOffset}
		}
		msg.Ranges[i] = &pb.PackRange{PackId: rg.PackID.Bytes(), Request: signedToPB(rg.URL), Offset: rg.Offset, Length: rg.Length, Blobs: blobs}
		if rg.Fallback != nil {
			msg.Ranges[i].Fallback = signedToPB(*rg.Fallback)
		}
	}
	return msg
}
