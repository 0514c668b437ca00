package api

// The disaster-recovery RPCs: rebuilding the database from the bucket and
// checking what is stored, over repo.Rebuild and repo.Check.

import (
	"context"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/types/known/durationpb"
	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/sandkeep/sandkeep/internal/metastore"
	"github.com/sandkeep/sandkeep/internal/replication"
	"github.com/sandkeep/sandkeep/internal/repo"
	pb "github.com/sandkeep/sandkeep/proto/sandkeep/v1"
)

// progressEvery paces the progress messages of a long repair stream.
const progressEvery = 250 * time.Millisecond

// progressSender sends a progress message at most every progressEvery
// (and always the first of a phase); send errors end the stream's context
// and so the work.
func progressSender(send func(*pb.RepairProgress) error) func(repo.RepairProgress) {
	var last time.Time
	phase := ""
	return func(p repo.RepairProgress) {
		if now := time.Now(); p.Phase != phase || now.Sub(last) >= progressEvery || p.Done == p.Total {
			last, phase = now, p.Phase
			_ = send(&pb.RepairProgress{ProjectId: p.Project, Phase: p.Phase, Done: int64(p.Done), Total: int64(p.Total), Bytes: p.Bytes})
		}
	}
}

// RebuildFromBucket implements pb.AdminServiceServer.
func (s *AdminServer) RebuildFromBucket(req *pb.RebuildFromBucketRequest, stream pb.AdminService_RebuildFromBucketServer) error {
	ctx := stream.Context()
	start := time.Now()
	rep, err := s.repo.Rebuild(ctx, repo.RebuildOptions{
		ProjectID: req.GetProjectId(), DryRun: req.GetDryRun(), TrustFooters: req.GetTrustFooters(),
		Progress: progressSender(func(p *pb.RepairProgress) error { return stream.Send(&pb.RebuildFromBucketResponse{Progress: p}) }),
	})
	if err != nil {
		return toStatus(ctx, s.log, "rebuild from bucket", err)
	}
	out := &pb.RebuildReport{DryRun: rep.DryRun, Skipped: rep.Skipped, Objects: int64(rep.Objects), Took: durationpb.New(time.Since(start))}
	for _, p := range rep.Projects {
		out.Projects = append(out.Projects, &pb.ProjectRebuild{
			ProjectId: p.ID, Name: p.Name, Record: p.Record, Packs: int64(p.Packs), PacksBad: int64(p.PacksBad),
			Blobs: int64(p.Blobs), BlobsBad: int64(p.BlobsBad), Bytes: p.Bytes, Versions: int64(p.Versions),
			Head: p.Head, Files: p.Files, Problems: p.Problems,
		})
	}
	s.log.InfoContext(ctx, "rebuilt from the bucket", "project", req.GetProjectId(), "dry_run", rep.DryRun, "projects", len(rep.Projects), "skipped", len(rep.Skipped), "took", time.Since(start))
	return stream.Send(&pb.RebuildFromBucketResponse{Report: out})
}

// CheckRepository implements pb.AdminServiceServer.
func (s *AdminServer) CheckRepository(req *pb.CheckRepositoryRequest, stream pb.AdminService_CheckRepositoryServer) error {
	ctx := stream.Context()
	if pct := req.GetReadDataPercent(); pct < 0 || pct > 100 || pct != pct {
		return status.Errorf(codes.InvalidArgument, "read_data_percent %v: want 0 to 100", pct)
	}
	if req.GetRateBytesPerSecond() < 0 {
		return status.Error(codes.InvalidArgument, "rate_bytes_per_second must not be negative")
	}
	if pid := req.GetProjectId(); pid != "" {
		if _, err := s.repo.Meta().GetProject(ctx, pid); err != nil {
			return toStatus(ctx, s.log, "check", err)
		}
	}
	start := time.Now()
	rep, err := s.repo.Check(ctx, repo.CheckOptions{
		ProjectID: req.GetProjectId(), ReadDataPercent: req.GetReadDataPercent(), Repair: req.GetRepair(),
		RateBytesPerSecond: req.GetRateBytesPerSecond(), Replica: req.GetReplica(),
		Progress: progressSender(func(p *pb.RepairProgress) error { return stream.Send(&pb.CheckRepositoryResponse{Progress: p}) }),
	})
	if s.metrics != nil {
		s.metrics.ObserveCheck(rep.BytesRead, rep.ProblemKinds(), err)
	}
	if err != nil {
		return toStatus(ctx, s.log, "check", err)
	}
	s.log.InfoContext(ctx, "checked", "project", req.GetProjectId(), "packs", rep.Packs, "packs_read", rep.PacksRead, "bytes_read", rep.BytesRead,
		"problems", len(rep.Problems), "repair", req.GetRepair(), "took", time.Since(start))
	return stream.Send(&pb.CheckRepositoryResponse{Report: checkReportToPB(rep, time.Since(start))})
}

// checkReportToPB converts a check report.
func checkReportToPB(rep repo.CheckReport, took time.Duration) *pb.CheckReport {
	out := &pb.CheckReport{
		Projects: int64(rep.Projects), Packs: int64(rep.Packs), PacksRead: int64(rep.PacksRead), BytesRead: rep.BytesRead,
		ChunksDropped: int64(rep.ChunksDropped), Took: durationpb.New(took), ReadDataPercent: rep.ReadDataPercent,
	}
	for _, p := range rep.Problems {
		cp := &pb.CheckProblem{ProjectId: p.ProjectID, Kind: p.Kind, Detail: p.Detail, Versions: p.Versions, Paths: p.Paths, Repaired: p.Repaired}
		if !p.PackID.IsZero() {
			cp.PackId = p.PackID.Bytes()
		}
		if !p.ChunkID.IsZero() {
			cp.ChunkId = p.ChunkID.Bytes()
		}
		out.Problems = append(out.Problems, cp)
	}
	return out
}

// GetReplicationStatus implements pb.AdminServiceServer.
func (s *AdminServer) GetReplicationStatus(ctx context.Context, req *pb.GetReplicationStatusRequest) (*pb.GetReplicationStatusResponse, error) {
	rs, ok := s.repo.Store().(*replication.Store)
	if !ok {
		return &pb.GetReplicationStatusResponse{Primary: s.repo.Store().Name()}, nil
	}
	prefix := ""
	if pid := req.GetProjectId(); pid != "" {
		if _, err := s.repo.Meta().GetProject(ctx, pid); err != nil {
			return nil, toStatus(ctx, s.log, "replication status", err)
		}
		prefix = repo.ProjectPrefix(pid)
	}
	q, ok := s.repo.Meta().(metastore.ReplicationStore)
	if !ok {
		return nil, status.Error(codes.FailedPrecondition, "this metadata store keeps no replication queue")
	}
	lag, err := q.ReplicationLag(ctx, prefix)
	if err != nil {
		return nil, toStatus(ctx, s.log, "replication status", err)
	}
	resp := &pb.GetReplicationStatusResponse{Configured: true, Primary: rs.Primary().Name(), Replica: rs.Replica().Name(),
		Objects: lag.Objects, Bytes: lag.Bytes, Failing: lag.Failing, LastError: lag.LastError}
	if !lag.Oldest.IsZero() {
		resp.OldestTime = timestamppb.New(lag.Oldest)
	}
	return resp, nil
}
