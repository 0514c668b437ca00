package api

// The garbage collection, retention and project deletion RPCs, over package
// gc and the repo's DeleteProject, Pin and retention methods.

import (
	"context"
	"math"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/types/known/durationpb"

	"github.com/sandkeep/sandkeep/internal/gc"
	"github.com/sandkeep/sandkeep/internal/metastore"
	pb "github.com/sandkeep/sandkeep/proto/sandkeep/v1"
)

// WithGCGrace sets the grace period of CollectGarbage's runs (see
// gc.Options.Grace; 0: gc.DefaultGrace), the one the coordinator's periodic
// collection uses.
func (s *AdminServer) WithGCGrace(d time.Duration) *AdminServer {
	s.gcGrace = d
	return s
}

// CollectGarbage implements pb.AdminServiceServer.
func (s *AdminServer) CollectGarbage(ctx context.Context, req *pb.CollectGarbageRequest) (*pb.CollectGarbageResponse, error) {
	if pid := req.GetProjectId(); pid != "" {
		if _, err := s.repo.Meta().GetProject(ctx, pid); err != nil {
			return nil, toStatus(ctx, s.log, "collect garbage", err)
		}
	}
	rep, err := gc.Run(ctx, s.repo, gc.Options{ProjectID: req.GetProjectId(), DryRun: req.GetDryRun(), Grace: s.gcGrace, Logger: s.log})
	if err != nil && (req.GetProjectId() != "" || len(rep.Failed) == 0) {
		return nil, toStatus(ctx, s.log, "collect garbage", err)
	}
	s.log.InfoContext(ctx, "garbage collected", "project", req.GetProjectId(), "dry_run", req.GetDryRun(), "report", rep.String())
	// A run over every project reports the projects that failed in the
	// response, beside what the others freed.
	return &pb.CollectGarbageResponse{
		Report: rep.String(), Projects: int64(rep.Projects), VersionsDeleted: int64(rep.VersionsDeleted),
		PacksDeleted: int64(rep.PacksDeleted), BytesFreed: rep.BytesFreed,
		PacksCondemned: int64(rep.PacksCondemned), BytesCondemned: rep.BytesCondemned,
		BytesBefore: rep.BytesBefore, BytesAfter: rep.BytesAfter, Failed: rep.Failed,
	}, nil
}

// DeleteProject implements pb.AdminServiceServer.
func (s *AdminServer) DeleteProject(ctx context.Context, req *pb.DeleteProjectRequest) (*pb.DeleteProjectResponse, error) {
	if req.GetProjectId() == "" {
		return nil, status.Error(codes.InvalidArgument, "project_id is required")
	}
	objects, freed, err := s.repo.DeleteProject(ctx, req.GetProjectId())
	if err != nil {
		return nil, toStatus(ctx, s.log, "delete project", err)
	}
	s.log.InfoContext(ctx, "project deleted", "project", req.GetProjectId(), "objects", objects, "bytes", freed)
	return &pb.DeleteProjectResponse{ObjectsDeleted: int64(objects), BytesFreed: freed}, nil
}

// PinVersion implements pb.AdminServiceServer.
func (s *AdminServer) PinVersion(ctx context.Context, req *pb.PinVersionRequest) (*pb.PinVersionResponse, error) {
	if req.GetVersion() <= 0 {
		return nil, status.Error(codes.InvalidArgument, "version must be positive")
	}
	if err := s.repo.Pin(ctx, req.GetProjectId(), req.GetVersion(), req.GetPinned()); err != nil {
		return nil, toStatus(ctx, s.log, "pin version", err)
	}
	v, err := s.repo.Meta().GetVersion(ctx, req.GetProjectId(), req.GetVersion())
	if err != nil {
		return nil, toStatus(ctx, s.log, "pin version", err)
	}
	return &pb.PinVersionResponse{Version: VersionToPB(v)}, nil
}

// GetRetention implements pb.AdminServiceServer.
func (s *AdminServer) GetRetention(ctx context.Context, req *pb.GetRetentionRequest) (*pb.GetRetentionResponse, error) {
	r, err := s.repo.GetRetention(ctx, req.GetProjectId())
	if err != nil {
		return nil, toStatus(ctx, s.log, "get retention", err)
	}
	return &pb.GetRetentionResponse{Policy: retentionToPB(r)}, nil
}

// SetRetention implements pb.AdminServiceServer.
func (s *AdminServer) SetRetention(ctx context.Context, req *pb.SetRetentionRequest) (*pb.SetRetentionResponse, error) {
	p := req.GetPolicy()
	within := p.GetKeepWithin().AsDuration()
	if p.GetKeepLast() < 0 || p.GetKeepLast() > math.MaxInt32 || within < 0 || (p.GetKeepWithin() != nil && p.GetKeepWithin().CheckValid() != nil) {
		return nil, status.Error(codes.InvalidArgument, "keep_last and keep_within must be valid and not negative")
	}
	r, err := s.repo.GetRetention(ctx, req.GetProjectId())
	if err != nil {
		return nil, toStatus(ctx, s.log, "set retention", err)
	}
	if p.KeepLast != nil {
		r.KeepLast = int(p.GetKeepLast())
	}
	if p.GetKeepWithin() != nil {
		r.KeepWithin = within
	}
	if err := s.repo.SetRetention(ctx, req.GetProjectId(), r); err != nil {
		return nil, toStatus(ctx, s.log, "set retention", err)
	}
	if r, err = s.repo.GetRetention(ctx, req.GetProjectId()); err != nil {
		return nil, toStatus(ctx, s.log, "set retention", err)
	}
	return &pb.SetRetentionResponse{Policy: retentionToPB(r)}, nil
}

func retentionToPB(r metastore.Retention) *pb.RetentionPolicy {
	keep := int64(r.KeepLast)
	return &pb.RetentionPolicy{KeepLast: &keep, KeepWithin: durationpb.New(r.KeepWithin)}
}
