package api

import (
	"context"
	"errors"
	"log/slog"
	"strconv"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/sandkeep/sandkeep/internal/auth"
	"github.com/sandkeep/sandkeep/internal/links"
	"github.com/sandkeep/sandkeep/internal/metastore"
	"github.com/sandkeep/sandkeep/internal/metrics"
	"github.com/sandkeep/sandkeep/internal/repo"
	"github.com/sandkeep/sandkeep/internal/sessions"
	pb "github.com/sandkeep/sandkeep/proto/sandkeep/v1"
)

// AdminServer implements pb.AdminServiceServer (admin token only; the auth
// interceptor enforces that).
type AdminServer struct {
	pb.UnimplementedAdminServiceServer
	repo     *repo.Repo
	sessions *sessions.Registry
	agents   Commander // sessions, or the cluster's router
	links    *links.Linker
	log      *slog.Logger
	gcGrace  time.Duration // gc.Options.Grace of CollectGarbage (0: gc's default)
	console  ConsoleLinker // nil: no web console
	metrics  *metrics.Metrics
	cluster  Cluster
}

// NewAdminServer returns the admin API over r and the agent sessions reg.
func NewAdminServer(r *repo.Repo, reg *sessions.Registry, log *slog.Logger) *AdminServer {
	return &AdminServer{repo: r, sessions: reg, agents: reg, log: log}
}

// Commander sends commands to a project's agents: *sessions.Registry (this
// replica's streams) or a cluster.Node (wherever the streams are).
type Commander interface {
	Flush(ctx context.Context, projectID string, timeout time.Duration) (int64, error)
	Rollback(ctx context.Context, projectID string, version int64) (int64, error)
}

// WithCommander routes flushes and new heads through c.
func (s *AdminServer) WithCommander(c Commander) *AdminServer {
	s.agents = c
	return s
}

// FlushProject implements pb.AdminServiceServer.
func (s *AdminServer) FlushProject(ctx context.Context, req *pb.FlushProjectRequest) (*pb.FlushProjectResponse, error) {
	if _, err := s.repo.Meta().GetProject(ctx, req.GetProjectId()); err != nil {
		return nil, toStatus(ctx, s.log, "flush project", err)
	}
	timeout := req.GetTimeout().AsDuration()
	switch {
	case req.GetTimeout() == nil || timeout == 0:
		timeout = time.Minute
	case timeout < 0 || timeout > time.Hour:
		return nil, status.Error(codes.InvalidArgument, "timeout must be in (0, 1h]")
	}
	v, err := s.agents.Flush(ctx, req.GetProjectId(), timeout)
	switch {
	case errors.Is(err, sessions.ErrNoAgent), errors.Is(err, sessions.ErrAgentGone):
		return nil, status.Error(codes.Unavailable, err.Error())
	case errors.Is(err, sessions.ErrAgentFailed):
		return nil, status.Error(codes.Aborted, err.Error())
	case err != nil:
		return nil, toStatus(ctx, s.log, "flush project", err)
	}
	return &pb.FlushProjectResponse{Version: v}, nil
}

// ListAgents implements pb.AdminServiceServer.
func (s *AdminServer) ListAgents(ctx context.Context, req *pb.ListAgentsRequest) (*pb.ListAgentsResponse, error) {
	if _, err := s.repo.Meta().GetProject(ctx, req.GetProjectId()); err != nil {
		return nil, toStatus(ctx, s.log, "list agents", err)
	}
	out := &pb.ListAgentsResponse{}
	for _, a := range s.sessions.Agents(req.GetProjectId()) {
		out.Agents = append(out.Agents, &pb.AgentInfo{SessionId: a.SessionID, Connected: a.Connected, LastSeenTime: timestamppb.New(a.LastSeen), Heartbeat: a.Heartbeat})
	}
	return out, nil
}

// CreateProject implements pb.AdminServiceServer.
func (s *AdminServer) CreateProject(ctx context.Context, req *pb.CreateProjectRequest) (*pb.CreateProjectResponse, error) {
	p, err := s.repo.Meta().CreateProject(ctx, req.GetName())
	if err != nil {
		return nil, toStatus(ctx, s.log, "create project", err)
	}
	s.log.InfoContext(ctx, "project created", "project", p.ID, "name", p.Name)
	s.repo.ProjectChanged(ctx, p.ID, "created")
	return &pb.CreateProjectResponse{Project: projectToPB(p)}, nil
}

// GetProject implements pb.AdminServiceServer.
func (s *AdminServer) GetProject(ctx context.Context, req *pb.GetProjectRequest) (*pb.GetProjectResponse, error) {
	p, err := s.repo.Meta().GetProject(ctx, req.GetProjectId())
	if err != nil {
		return nil, toStatus(ctx, s.log, "get project", err)
	}
	return &pb.GetProjectResponse{Project: projectToPB(p)}, nil
}

// ListProjects implements pb.AdminServiceServer.
func (s *AdminServer) ListProjects(ctx context.Context, _ *pb.ListProjectsRequest) (*pb.ListProjectsResponse, error) {
	ps, err := s.repo.Meta().ListProjects(ctx)
	if err != nil {
		return nil, toStatus(ctx, s.log, "list projects", err)
	}
	out := &pb.ListProjectsResponse{Projects: make([]*pb.Project, len(ps))}
	for i, p := range ps {
		out.Projects[i] = projectToPB(p)
	}
	return out, nil
}

// CreateSandboxToken implements pb.AdminServiceServer.
func (s *AdminServer) CreateSandboxToken(ctx context.Context, req *pb.CreateSandboxTokenRequest) (*pb.CreateSandboxTokenResponse, error) {
	if req.GetTtlSeconds() < 0 {
		return nil, status.Error(codes.InvalidArgument, "negative ttl")
	}
	if len(req.GetNote()) > 1024 {
		return nil, status.Error(codes.InvalidArgument, "note longer than 1024 bytes")
	}
	if _, err := s.repo.Meta().GetProject(ctx, req.GetProjectId()); err != nil {
		return nil, toStatus(ctx, s.log, "create token", err)
	}
	secret, err := auth.NewSecret(metastore.TokenSandbox)
	if err != nil {
		return nil, toStatus(ctx, s.log, "create token", err)
	}
	t := metastore.Token{Hash: auth.Hash(secret), Kind: metastore.TokenSandbox, ProjectID: req.GetProjectId(), CreatedAt: time.Now().UTC(), Note: req.GetNote()}
	switch ttl := req.GetTtlSeconds(); {
	case req.GetNoExpiry() && ttl != 0:
		return nil, status.Error(codes.InvalidArgument, "no_expiry and ttl_seconds exclude each other")
	case req.GetNoExpiry():
	case ttl > 0:
		if ttl > int64(100*365*24*time.Hour/time.Second) {
			return nil, status.Error(codes.InvalidArgument, "ttl longer than 100 years")
		}
		t.ExpiresAt = t.CreatedAt.Add(time.Duration(ttl) * time.Second)
	default:
		t.ExpiresAt = t.CreatedAt.Add(DefaultTokenTTL)
	}
	if err := s.repo.Meta().CreateToken(ctx, t); err != nil {
		return nil, toStatus(ctx, s.log, "create token", err)
	}
	resp := &pb.CreateSandboxTokenResponse{Token: secret, TokenId: metastore.TokenID(t.Hash)}
	if !t.ExpiresAt.IsZero() {
		resp.ExpireTime = timestamppb.New(t.ExpiresAt)
	}
	return resp, nil
}

// ListVersions implements pb.AdminServiceServer.
func (s *AdminServer) ListVersions(ctx context.Context, req *pb.ListVersionsRequest) (*pb.ListVersionsResponse, error) {
	size := int(req.GetPageSize())
	switch {
	case size < 0:
		return nil, status.Error(codes.InvalidArgument, "negative page_size")
	case size == 0:
		size = 100
	case size > 1000:
		size = 1000
	}
	if tok := req.GetPageToken(); tok != "" {
		if n, err := strconv.ParseInt(tok, 10, 64); err != nil || n <= 0 {
			return nil, status.Error(codes.InvalidArgument, "bad page_token")
		}
	}
	if _, err := s.repo.Meta().GetProject(ctx, req.GetProjectId()); err != nil {
		return nil, toStatus(ctx, s.log, "list versions", err)
	}
	vs, err := s.repo.Meta().ListVersions(ctx, req.GetProjectId(), metastore.ListOptions{Limit: size + 1, After: req.GetPageToken()})
	if err != nil {
		return nil, toStatus(ctx, s.log, "list versions", err)
	}
	out := &pb.ListVersionsResponse{}
	if len(vs) > size {
		vs = vs[:size]
		out.NextPageToken = strconv.FormatInt(vs[len(vs)-1].Number, 10)
	}
	for _, v := range vs {
		out.Versions = append(out.Versions, VersionToPB(v))
	}
	return out, nil
}
