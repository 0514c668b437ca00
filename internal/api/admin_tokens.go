package api

import (
	"context"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/sandkeep/sandkeep/internal/metastore"
	pb "github.com/sandkeep/sandkeep/proto/sandkeep/v1"
)

// DefaultTokenTTL is the lifetime of a sandbox token created without one.
const DefaultTokenTTL = 30 * 24 * time.Hour

func tokenToPB(t metastore.Token, now time.Time) *pb.TokenInfo {
	out := &pb.TokenInfo{
		Id: metastore.TokenID(t.Hash), ProjectId: t.ProjectID, CreateTime: timestamppb.New(t.CreatedAt),
		Note: t.Note, SandboxId: t.SandboxID, Revoked: t.Revoked,
	}
	if !t.ExpiresAt.IsZero() {
		out.ExpireTime = timestamppb.New(t.ExpiresAt)
		out.Expired = !now.Before(t.ExpiresAt)
	}
	if !t.LastUsedAt.IsZero() {
		out.LastUseTime = timestamppb.New(t.LastUsedAt)
	}
	return out
}

// ListTokens implements pb.AdminServiceServer.
func (s *AdminServer) ListTokens(ctx context.Context, req *pb.ListTokensRequest) (*pb.ListTokensResponse, error) {
	toks, err := s.repo.Meta().ListTokens(ctx, req.GetProjectId())
	if err != nil {
		return nil, toStatus(ctx, s.log, "list tokens", err)
	}
	now := time.Now()
	out := &pb.ListTokensResponse{Tokens: make([]*pb.TokenInfo, len(toks))}
	for i, t := range toks {
		out.Tokens[i] = tokenToPB(t, now)
	}
	return out, nil
}

// RevokeToken implements pb.AdminServiceServer.
func (s *AdminServer) RevokeToken(ctx context.Context, req *pb.RevokeTokenRequest) (*pb.RevokeTokenResponse, error) {
	t, err := s.repo.Meta().RevokeTokenID(ctx, req.GetTokenId())
	if err != nil {
		return nil, toStatus(ctx, s.log, "revoke token", err)
	}
	if t.Kind == metastore.TokenAdmin {
		// Revoked all the same: an admin asked for it by id.
		s.log.WarnContext(ctx, "admin token revoked", "token", req.GetTokenId())
	}
	n := s.sessions.DisconnectToken(t.Hash)
	s.log.InfoContext(ctx, "token revoked", "token", req.GetTokenId(), "project", t.ProjectID, "sessions_closed", n)
	return &pb.RevokeTokenResponse{Token: tokenToPB(t, time.Now()), SessionsClosed: int32(n)}, nil
}

func limitsToPB(l metastore.Limits) *pb.ProjectLimits {
	l = l.WithDefaults()
	depth := int32(l.MaxDepth)
	return &pb.ProjectLimits{MaxFiles: &l.MaxFiles, MaxBytes: &l.MaxBytes, MaxDepth: &depth}
}

// GetProjectLimits implements pb.AdminServiceServer.
func (s *AdminServer) GetProjectLimits(ctx context.Context, req *pb.GetProjectLimitsRequest) (*pb.GetProjectLimitsResponse, error) {
	l, err := s.repo.Meta().GetLimits(ctx, req.GetProjectId())
	if err != nil {
		return nil, toStatus(ctx, s.log, "get limits", err)
	}
	return &pb.GetProjectLimitsResponse{Limits: limitsToPB(l)}, nil
}

// SetProjectLimits implements pb.AdminServiceServer.
func (s *AdminServer) SetProjectLimits(ctx context.Context, req *pb.SetProjectLimitsRequest) (*pb.SetProjectLimitsResponse, error) {
	in := req.GetLimits()
	if in.GetMaxFiles() < 0 || in.GetMaxBytes() < 0 || in.GetMaxDepth() < 0 {
		return nil, status.Error(codes.InvalidArgument, "limits must not be negative (0 means the default)")
	}
	l, err := s.repo.Meta().GetLimits(ctx, req.GetProjectId())
	if err != nil {
		return nil, toStatus(ctx, s.log, "set limits", err)
	}
	if in.MaxFiles != nil {
		l.MaxFiles = in.GetMaxFiles()
	}
	if in.MaxBytes != nil {
		l.MaxBytes = in.GetMaxBytes()
	}
	if in.MaxDepth != nil {
		l.MaxDepth = int(in.GetMaxDepth())
	}
	if err := s.repo.Meta().SetLimits(ctx, req.GetProjectId(), l); err != nil {
		return nil, toStatus(ctx, s.log, "set limits", err)
	}
	s.repo.ProjectChanged(ctx, req.GetProjectId(), "limits")
	return &pb.SetProjectLimitsResponse{Limits: limitsToPB(l)}, nil
}
