package api

import (
	"context"
	"errors"
	"io"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/types/known/durationpb"
	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/sandkeep/sandkeep/internal/metastore"
	"github.com/sandkeep/sandkeep/internal/metrics"
	"github.com/sandkeep/sandkeep/internal/repo"
	"github.com/sandkeep/sandkeep/internal/sessions"
	pb "github.com/sandkeep/sandkeep/proto/sandkeep/v1"
)

// maxPutData bounds one data message of a PutFiles stream.
const maxPutData = 1 << 20

// PutFiles implements pb.AdminServiceServer: the files of the stream go
// through repo.Putter (chunked, packed, verified, committed on the head by
// compare-and-set), then a live agent is told as for a rollback.
func (s *AdminServer) PutFiles(stream pb.AdminService_PutFilesServer) error {
	ctx := stream.Context()
	in := &putStream{stream: stream}
	first, err := in.header()
	if err != nil {
		return err
	}
	if first == nil {
		return status.Error(codes.InvalidArgument, "an empty PutFiles stream: send a header, then the file's bytes")
	}
	wait, err := agentWait(first.GetAgentTimeout(), defaultPutWait)
	if err != nil {
		return err
	}
	projectID := first.GetProjectId()
	putter, err := s.repo.NewPut(ctx, projectID)
	if err != nil {
		return toStatus(ctx, s.log, "put files", err)
	}
	for h := first; h != nil; {
		if h.GetProjectId() != projectID {
			return status.Errorf(codes.InvalidArgument, "header for %s names project %q; the stream is for %q", h.GetPath(), h.GetProjectId(), projectID)
		}
		e := repo.Edit{Path: h.GetPath(), Mode: h.GetMode(), Body: in}
		if h.GetMtime() != nil {
			e.Mtime = h.GetMtime().AsTime()
		}
		in.startFile()
		if err := putter.Add(ctx, e); err != nil {
			if in.err != nil { // the stream broke or lied, not the put
				return in.err
			}
			return toStatus(ctx, s.log, "put files", err)
		}
		if h, err = in.header(); err != nil {
			return err
		}
	}
	res, err := putter.Commit(ctx)
	if err != nil {
		return toStatus(ctx, s.log, "put files", err)
	}
	s.log.InfoContext(ctx, "files put", "project", projectID, "version", res.Version.Number, "files", res.Files, "bytes", res.Bytes)
	return stream.SendAndClose(&pb.PutFilesResponse{
		Version: VersionToPB(res.Version), Files: int64(res.Files), Bytes: res.Bytes,
		NewChunks: int64(res.NewChunks), PackedBytes: res.PackedBytes,
		Agent: s.tellAgent(ctx, projectID, res.Version.Number, wait),
	})
}

// putStream reads a PutFiles stream: header returns the next header (nil
// at the end), Read the bytes of the current file until the next header.
type putStream struct {
	stream  pb.AdminService_PutFilesServer
	pending *pb.PutFileHeader // read by Read, to be returned by header
	data    []byte
	inFile  bool
	ended   bool
	err     error // a status error from the stream itself
}

func (p *putStream) recv() (*pb.PutFilesRequest, error) {
	m, err := p.stream.Recv()
	if errors.Is(err, io.EOF) {
		p.ended = true
		return nil, nil
	}
	if err != nil {
		p.err = err
		return nil, err
	}
	if d := m.GetData(); len(d) > maxPutData {
		p.err = status.Errorf(codes.InvalidArgument, "a data message of %d bytes; at most %d", len(d), maxPutData)
		return nil, p.err
	}
	return m, nil
}

// header skips to the next header: the current file must have been read.
func (p *putStream) header() (*pb.PutFileHeader, error) {
	if h := p.pending; h != nil {
		p.pending = nil
		return h, nil
	}
	if p.ended {
		return nil, nil
	}
	m, err := p.recv()
	if err != nil || m == nil {
		return nil, err
	}
	if m.GetHeader() == nil {
		return nil, status.Error(codes.InvalidArgument, "file data before its header")
	}
	return m.GetHeader(), nil
}

func (p *putStream) startFile() { p.inFile, p.data = true, nil }

// Read implements io.Reader over the current file's data messages.
func (p *putStream) Read(b []byte) (int, error) {
	for len(p.data) == 0 {
		if !p.inFile || p.ended {
			return 0, io.EOF
		}
		m, err := p.recv()
		if err != nil {
			return 0, err
		}
		if m == nil {
			p.inFile = false
			return 0, io.EOF
		}
		if h := m.GetHeader(); h != nil {
			p.pending, p.inFile = h, false
			return 0, io.EOF
		}
		p.data = m.GetData()
	}
	n := copy(b, p.data)
	p.data = p.data[n:]
	return n, nil
}

// DeleteFiles implements pb.AdminServiceServer.
func (s *AdminServer) DeleteFiles(ctx context.Context, req *pb.DeleteFilesRequest) (*pb.DeleteFilesResponse, error) {
	wait, err := agentWait(req.GetAgentTimeout(), defaultPutWait)
	if err != nil {
		return nil, err
	}
	if len(req.GetPaths()) == 0 {
		return nil, status.Error(codes.InvalidArgument, "no paths to delete")
	}
	edits := make([]repo.Edit, len(req.GetPaths()))
	for i, p := range req.GetPaths() {
		edits[i] = repo.Edit{Path: p, Delete: true}
	}
	res, err := s.repo.Put(ctx, req.GetProjectId(), edits)
	if err != nil {
		return nil, toStatus(ctx, s.log, "delete files", err)
	}
	return &pb.DeleteFilesResponse{
		Version: VersionToPB(res.Version), Deleted: int64(res.Deleted),
		Agent: s.tellAgent(ctx, req.GetProjectId(), res.Version.Number, wait),
	}, nil
}

// defaultPutWait is how long a put waits for a live agent by default.
const defaultPutWait = 30 * time.Second

// agentWait checks how long a call waits for a live agent to apply a new
// head (unset or 0: def; at most 1h).
func agentWait(d *durationpb.Duration, def time.Duration) (time.Duration, error) {
	wait := d.AsDuration()
	switch {
	case d == nil || wait == 0:
		return def, nil
	case wait < 0 || wait > time.Hour:
		return 0, status.Error(codes.InvalidArgument, "agent_timeout must be in (0, 1h]")
	}
	return wait, nil
}

// tellAgent tells a connected agent that the head is now version (made by
// the admin API, not by it) and waits, bounded, for it to bring its
// workspace there: the rollback path, whose three-way merge keeps the
// agent's own changes (see RollbackProject). No agent is not an error: the
// next one to start restores the head.
func (s *AdminServer) tellAgent(ctx context.Context, projectID string, version int64, wait time.Duration) *pb.AgentApply {
	wctx, cancel := context.WithTimeout(ctx, wait)
	defer cancel()
	av, err := s.agents.Rollback(wctx, projectID, version)
	switch {
	case err == nil:
		return &pb.AgentApply{Connected: true, Applied: true, Version: av}
	case errors.Is(err, sessions.ErrNoAgent):
		return &pb.AgentApply{}
	case errors.Is(err, sessions.ErrAgentGone):
		// It was leaving as the notice was sent: the next agent follows
		// the new head (the restart rule), as if none had been connected.
		s.log.InfoContext(ctx, "the agent left before applying the new head", "project", projectID, "version", version, "err", err)
		return &pb.AgentApply{Error: err.Error()}
	default:
		s.log.WarnContext(ctx, "agent did not apply the new head", "project", projectID, "version", version, "err", err)
		return &pb.AgentApply{Connected: true, Error: err.Error()}
	}
}

// ConsoleLinker makes login links of the web console (console.Console).
type ConsoleLinker interface {
	LoginURL(project string, ttl, sessionTTL time.Duration) (string, time.Time, error)
}

// WithConsole lets CreateConsoleLink make login links.
func (s *AdminServer) WithConsole(c ConsoleLinker) *AdminServer {
	s.console = c
	return s
}

// CreateConsoleLink implements pb.AdminServiceServer.
func (s *AdminServer) CreateConsoleLink(ctx context.Context, req *pb.CreateConsoleLinkRequest) (*pb.CreateConsoleLinkResponse, error) {
	if s.console == nil {
		return nil, status.Error(codes.Unavailable, "this coordinator serves no web console")
	}
	if p := req.GetProjectId(); p != "" {
		if _, err := s.repo.Meta().GetProject(ctx, p); err != nil {
			return nil, toStatus(ctx, s.log, "create console link", err)
		}
	}
	u, exp, err := s.console.LoginURL(req.GetProjectId(), req.GetTtl().AsDuration(), req.GetSessionTtl().AsDuration())
	if err != nil {
		return nil, status.Error(codes.InvalidArgument, err.Error())
	}
	s.log.InfoContext(ctx, "console link created", "project", req.GetProjectId(), "expires", exp)
	return &pb.CreateConsoleLinkResponse{Url: u, ExpireTime: timestamppb.New(exp)}, nil
}

// WithMetrics lets GetActivity read the coordinator's metrics.
func (s *AdminServer) WithMetrics(m *metrics.Metrics) *AdminServer {
	s.metrics = m
	return s
}

// GetActivity implements pb.AdminServiceServer.
func (s *AdminServer) GetActivity(ctx context.Context, _ *pb.GetActivityRequest) (*pb.GetActivityResponse, error) {
	if s.metrics == nil {
		return nil, status.Error(codes.Unavailable, "this coordinator keeps no metrics")
	}
	a, err := s.metrics.Activity()
	if err != nil {
		return nil, toStatus(ctx, s.log, "get activity", err)
	}
	out := &pb.GetActivityResponse{
		StartTime: timestamppb.New(a.Since), GcRunsOk: a.GCRunsOK, GcRunsFailed: a.GCRunsFailed,
		GcBytesFreed: a.GCBytesFreed, GcVersionsDeleted: a.GCVersionsDeleted, PacksFailedVerification: a.PacksFailed,
	}
	if !a.GCLastSuccess.IsZero() {
		out.GcLastSuccessTime = timestamppb.New(a.GCLastSuccess)
	}
	for _, c := range a.ReaperActions {
		out.LifecycleActions = append(out.LifecycleActions, &pb.ActivityCount{What: c.What, Result: c.Result, Count: c.N})
	}
	for _, c := range a.Replaced {
		out.SandboxesReplaced = append(out.SandboxesReplaced, &pb.ActivityCount{What: c.What, Result: c.Result, Count: c.N})
	}
	return out, nil
}

// Cluster is what ListReplicas needs of the replica's cluster node.
type Cluster interface {
	ID() string
	Replicas(ctx context.Context) ([]metastore.Replica, error)
}

// WithCluster lets ListReplicas answer.
func (s *AdminServer) WithCluster(c Cluster) *AdminServer {
	s.cluster = c
	return s
}

// ListReplicas implements pb.AdminServiceServer.
func (s *AdminServer) ListReplicas(ctx context.Context, _ *pb.ListReplicasRequest) (*pb.ListReplicasResponse, error) {
	if s.cluster == nil {
		return nil, status.Error(codes.Unavailable, "this coordinator keeps no replica registry")
	}
	rs, err := s.cluster.Replicas(ctx)
	if err != nil {
		return nil, toStatus(ctx, s.log, "list replicas", err)
	}
	out := &pb.ListReplicasResponse{Self: s.cluster.ID()}
	for _, r := range rs {
		out.Replicas = append(out.Replicas, &pb.ReplicaInfo{Id: r.ID, Addr: r.Addr, StartTime: timestamppb.New(r.StartedAt),
			LastSeenTime: timestamppb.New(r.SeenAt), Leader: r.Leading, Agents: int64(r.Agents)})
	}
	return out, nil
}
