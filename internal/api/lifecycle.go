package api

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/types/known/durationpb"
	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/sandkeep/sandkeep/internal/errinfo"
	"github.com/sandkeep/sandkeep/internal/lifecycle"
	"github.com/sandkeep/sandkeep/internal/metastore"
	"github.com/sandkeep/sandkeep/internal/policy"
	"github.com/sandkeep/sandkeep/internal/provider"
	"github.com/sandkeep/sandkeep/internal/retry"
	"github.com/sandkeep/sandkeep/internal/sessions"
	pb "github.com/sandkeep/sandkeep/proto/sandkeep/v1"
)

// LifecycleServer implements pb.LifecycleServiceServer over the lifecycle
// manager (admin token only; the auth interceptor enforces that).
type LifecycleServer struct {
	pb.UnimplementedLifecycleServiceServer
	m   *lifecycle.Manager
	log *slog.Logger
}

// NewLifecycleServer returns the lifecycle API over m.
func NewLifecycleServer(m *lifecycle.Manager, log *slog.Logger) *LifecycleServer {
	return &LifecycleServer{m: m, log: log}
}

// DefaultLeaseTTL is the ttl of a lease acquired or renewed without one.
const DefaultLeaseTTL = 10 * time.Minute

// lifecycleStatus maps the lifecycle's and the providers' errors, then the
// rest as toStatus does.
func (s *LifecycleServer) status(ctx context.Context, op string, err error) error {
	if err == nil {
		return nil
	}
	var code codes.Code
	switch {
	case errors.Is(err, context.DeadlineExceeded):
		code = codes.DeadlineExceeded
	case errors.Is(err, lifecycle.ErrNoProvider), errors.Is(err, lifecycle.ErrRefused),
		errors.Is(err, metastore.ErrLeaseEnded), errors.Is(err, metastore.ErrIllegalTransition),
		errors.Is(err, provider.ErrConflict), errors.Is(err, provider.ErrUnsupported):
		code = codes.FailedPrecondition
	case errors.Is(err, lifecycle.ErrNotReady), errors.Is(err, provider.ErrUnavailable), errors.Is(err, sessions.ErrNoAgent),
		errors.Is(err, sessions.ErrAgentGone):
		code = codes.Unavailable
	case errors.Is(err, provider.ErrQuota):
		code = codes.ResourceExhausted
	case errors.Is(err, provider.ErrFailed), errors.Is(err, sessions.ErrAgentFailed):
		code = codes.Aborted
	case errors.Is(err, provider.ErrUnauthorized):
		s.log.ErrorContext(ctx, "the provider refused the coordinator's credentials", "op", op, "err", err)
		return status.Error(codes.Unavailable, op+": the sandbox provider refused the coordinator's credentials")
	default:
		return toStatus(ctx, s.log, op, err)
	}
	return status.Error(code, err.Error())
}

func ts(t time.Time) *timestamppb.Timestamp {
	if t.IsZero() {
		return nil
	}
	return timestamppb.New(t)
}

func sandboxToPB(v lifecycle.View) *pb.Sandbox {
	return &pb.Sandbox{
		Id: v.ID, ProjectId: v.ProjectID, Provider: v.Provider, ProviderId: v.ProviderID, State: string(v.State),
		StateSince: ts(v.StateSince), CreateTime: ts(v.CreatedAt), LastActivityTime: ts(v.LastActivity),
		BackupStatus: string(v.Backup), CleanVersion: v.CleanVersion, Flushed: v.Flushed, VerifiedVersion: v.VerifiedVersion,
		HeadVersion: v.Head, ReadyToDestroy: v.Ready, Location: v.Location, FlushFailures: int32(v.FlushFailures), LastFlushError: v.LastFlushError,
		AgentState: v.AgentState, PendingPaths: v.PendingPaths, PendingBytes: v.PendingBytes,
		LastHeartbeatTime: ts(v.LastHeartbeat), ExtendedUntil: ts(v.ExtendedUntil), LeaseUntil: ts(v.LeaseUntil), LastError: v.LastError,
	}
}

func leaseToPB(l metastore.RunLease) *pb.RunLease {
	return &pb.RunLease{Id: l.ID, ProjectId: l.ProjectID, CreateTime: ts(l.CreatedAt), ExpireTime: ts(l.ExpiresAt), ReleaseTime: ts(l.ReleasedAt)}
}

func needID(v, what string) error {
	if v == "" {
		return status.Errorf(codes.InvalidArgument, "%s is required", what)
	}
	return nil
}

// ListSandboxes implements pb.LifecycleServiceServer.
func (s *LifecycleServer) ListSandboxes(ctx context.Context, req *pb.ListSandboxesRequest) (*pb.ListSandboxesResponse, error) {
	vs, err := s.m.ListSandboxes(ctx, req.GetProjectId(), !req.GetIncludeDestroyed())
	if err != nil {
		return nil, s.status(ctx, "list sandboxes", err)
	}
	out := &pb.ListSandboxesResponse{}
	for _, v := range vs {
		out.Sandboxes = append(out.Sandboxes, sandboxToPB(v))
	}
	return out, nil
}

// GetSandbox implements pb.LifecycleServiceServer.
func (s *LifecycleServer) GetSandbox(ctx context.Context, req *pb.GetSandboxRequest) (*pb.GetSandboxResponse, error) {
	if err := needID(req.GetSandboxId(), "sandbox_id"); err != nil {
		return nil, err
	}
	v, err := s.m.GetSandbox(ctx, req.GetSandboxId())
	if err != nil {
		return nil, s.status(ctx, "get sandbox", err)
	}
	return &pb.GetSandboxResponse{Sandbox: sandboxToPB(v)}, nil
}

// EnsureSandbox implements pb.LifecycleServiceServer.
func (s *LifecycleServer) EnsureSandbox(ctx context.Context, req *pb.EnsureSandboxRequest) (*pb.EnsureSandboxResponse, error) {
	if err := needID(req.GetProjectId(), "project_id"); err != nil {
		return nil, err
	}
	res, err := s.m.EnsureSandbox(ctx, req.GetProjectId())
	if err != nil {
		return nil, s.ensureStatus(ctx, err, res.Replaced)
	}
	v, err := s.m.GetSandbox(ctx, res.Sandbox.ID)
	if err != nil {
		return nil, s.ensureStatus(ctx, err, res.Replaced)
	}
	out := &pb.EnsureSandboxResponse{Sandbox: sandboxToPB(v), Took: durationpb.New(res.Took), Created: res.Created, Started: res.Started, Version: res.Version}
	for _, r := range res.Replaced {
		out.Replaced = append(out.Replaced, &pb.SandboxReplacement{SandboxId: r.SandboxID, Reason: r.Reason, Detail: r.Detail, Lost: r.Lost})
	}
	return out, nil
}

// ensureStatus maps EnsureSandbox's errors. EnsureSandbox is safe to call
// again, so nothing it meets is Internal: a provider outage (or anything
// unforeseen) is Unavailable with a RetryInfo delay, its own deadline
// DeadlineExceeded; the sandboxes it replaced on the way are named.
func (s *LifecycleServer) ensureStatus(ctx context.Context, err error, replaced []lifecycle.Replacement) error {
	const op = "ensure sandbox"
	var note string
	for _, r := range replaced {
		note += fmt.Sprintf("; replaced %s (%s: %s)", r.SandboxID, r.Reason, r.Detail)
		if r.Lost != "" {
			note += ", may have lost: " + r.Lost
		}
	}
	switch {
	case errors.Is(err, context.DeadlineExceeded) || errors.Is(err, lifecycle.ErrNotReady):
		return status.Error(codes.DeadlineExceeded, op+": "+err.Error()+note+"; ensure again to keep waiting")
	case errors.Is(err, provider.ErrUnavailable):
		delay, ok := retry.After(err)
		if !ok {
			delay = 5 * time.Second
		}
		return errinfo.Retryable(codes.Unavailable, op+": the sandbox provider is unavailable: "+err.Error()+note+"; retry later", delay)
	}
	st := s.status(ctx, op, err)
	if status.Code(st) == codes.Internal || status.Code(st) == codes.Unknown {
		s.log.ErrorContext(ctx, "ensure sandbox failed", "err", err)
		return errinfo.Retryable(codes.Unavailable, op+": "+err.Error()+note+"; retry", 5*time.Second)
	}
	if note != "" {
		return status.Error(status.Code(st), status.Convert(st).Message()+note)
	}
	return st
}

// StopSandbox implements pb.LifecycleServiceServer.
func (s *LifecycleServer) StopSandbox(ctx context.Context, req *pb.StopSandboxRequest) (*pb.StopSandboxResponse, error) {
	if err := needID(req.GetSandboxId(), "sandbox_id"); err != nil {
		return nil, err
	}
	v, err := s.m.StopSandbox(ctx, req.GetSandboxId())
	if err != nil {
		return nil, s.status(ctx, "stop sandbox", err)
	}
	return &pb.StopSandboxResponse{Sandbox: sandboxToPB(v)}, nil
}

// DestroySandbox implements pb.LifecycleServiceServer.
func (s *LifecycleServer) DestroySandbox(ctx context.Context, req *pb.DestroySandboxRequest) (*pb.DestroySandboxResponse, error) {
	if err := needID(req.GetSandboxId(), "sandbox_id"); err != nil {
		return nil, err
	}
	d, err := s.m.DestroySandbox(ctx, req.GetSandboxId(), req.GetForce())
	if err != nil {
		return nil, s.status(ctx, "destroy sandbox", err)
	}
	return &pb.DestroySandboxResponse{Sandbox: sandboxToPB(d.View), Lost: d.Lost}, nil
}

// ExtendSandbox implements pb.LifecycleServiceServer.
func (s *LifecycleServer) ExtendSandbox(ctx context.Context, req *pb.ExtendSandboxRequest) (*pb.ExtendSandboxResponse, error) {
	if req.GetSandboxId() == "" && req.GetProjectId() == "" {
		return nil, status.Error(codes.InvalidArgument, "sandbox_id or project_id is required")
	}
	v, err := s.m.ExtendSandbox(ctx, req.GetSandboxId(), req.GetProjectId(), req.GetDuration().AsDuration())
	if err != nil {
		return nil, s.status(ctx, "extend sandbox", err)
	}
	return &pb.ExtendSandboxResponse{Sandbox: sandboxToPB(v)}, nil
}

func ttlOf(d *durationpb.Duration) time.Duration {
	if d == nil || d.AsDuration() == 0 {
		return DefaultLeaseTTL
	}
	return d.AsDuration()
}

// AcquireRunLease implements pb.LifecycleServiceServer.
func (s *LifecycleServer) AcquireRunLease(ctx context.Context, req *pb.AcquireRunLeaseRequest) (*pb.AcquireRunLeaseResponse, error) {
	if err := needID(req.GetProjectId(), "project_id"); err != nil {
		return nil, err
	}
	l, err := s.m.AcquireRunLease(ctx, req.GetProjectId(), ttlOf(req.GetTtl()))
	if err != nil {
		return nil, s.status(ctx, "acquire run lease", err)
	}
	return &pb.AcquireRunLeaseResponse{Lease: leaseToPB(l)}, nil
}

// RenewRunLease implements pb.LifecycleServiceServer.
func (s *LifecycleServer) RenewRunLease(ctx context.Context, req *pb.RenewRunLeaseRequest) (*pb.RenewRunLeaseResponse, error) {
	if err := needID(req.GetLeaseId(), "lease_id"); err != nil {
		return nil, err
	}
	l, err := s.m.RenewRunLease(ctx, req.GetLeaseId(), ttlOf(req.GetTtl()))
	if err != nil {
		return nil, s.status(ctx, "renew run lease", err)
	}
	return &pb.RenewRunLeaseResponse{Lease: leaseToPB(l)}, nil
}

// ReleaseRunLease implements pb.LifecycleServiceServer.
func (s *LifecycleServer) ReleaseRunLease(ctx context.Context, req *pb.ReleaseRunLeaseRequest) (*pb.ReleaseRunLeaseResponse, error) {
	if err := needID(req.GetLeaseId(), "lease_id"); err != nil {
		return nil, err
	}
	l, err := s.m.ReleaseRunLease(ctx, req.GetLeaseId())
	if err != nil {
		return nil, s.status(ctx, "release run lease", err)
	}
	return &pb.ReleaseRunLeaseResponse{Lease: leaseToPB(l)}, nil
}

// ListRunLeases implements pb.LifecycleServiceServer.
func (s *LifecycleServer) ListRunLeases(ctx context.Context, req *pb.ListRunLeasesRequest) (*pb.ListRunLeasesResponse, error) {
	ls, err := s.m.ListRunLeases(ctx, req.GetProjectId())
	if err != nil {
		return nil, s.status(ctx, "list run leases", err)
	}
	out := &pb.ListRunLeasesResponse{}
	for _, l := range ls {
		out.Leases = append(out.Leases, leaseToPB(l))
	}
	return out, nil
}

func durOf(d *durationpb.Duration) *time.Duration {
	if d == nil {
		return nil
	}
	v := d.AsDuration()
	return &v
}

func pbDur(d *time.Duration) *durationpb.Duration {
	if d == nil {
		return nil
	}
	return durationpb.New(*d)
}

func policyToPB(p policy.Policy) *pb.PolicyValues {
	return overrideToPB(policy.Override{StopAfter: &p.StopAfter, DestroyAfter: &p.DestroyAfter, ArchiveAfter: &p.ArchiveAfter,
		DeleteHistoryAfter: &p.DeleteHistoryAfter, NotifyGrace: &p.NotifyGrace})
}

func overrideToPB(o policy.Override) *pb.PolicyValues {
	return &pb.PolicyValues{StopAfter: pbDur(o.StopAfter), DestroyAfter: pbDur(o.DestroyAfter), ArchiveAfter: pbDur(o.ArchiveAfter),
		DeleteHistoryAfter: pbDur(o.DeleteHistoryAfter), NotifyGrace: pbDur(o.NotifyGrace)}
}

func projectPolicyToPB(v lifecycle.PolicyView) *pb.ProjectPolicy {
	return &pb.ProjectPolicy{ProjectId: v.ProjectID, Effective: policyToPB(v.Effective), Global: policyToPB(v.Global),
		Override: overrideToPB(v.Override), WebhookUrl: v.Webhook, ProjectWebhookUrl: v.ProjectWebhook, UpdateTime: ts(v.UpdatedAt)}
}

// SetPolicy implements pb.LifecycleServiceServer.
func (s *LifecycleServer) SetPolicy(ctx context.Context, req *pb.SetPolicyRequest) (*pb.SetPolicyResponse, error) {
	if err := needID(req.GetProjectId(), "project_id"); err != nil {
		return nil, err
	}
	o := req.GetOverride()
	c := lifecycle.PolicyChange{Reset: req.GetResetOverride(), Override: policy.Override{
		StopAfter: durOf(o.GetStopAfter()), DestroyAfter: durOf(o.GetDestroyAfter()), ArchiveAfter: durOf(o.GetArchiveAfter()),
		DeleteHistoryAfter: durOf(o.GetDeleteHistoryAfter()), NotifyGrace: durOf(o.GetNotifyGrace()),
	}}
	if req.WebhookUrl != nil {
		c.Webhook = req.WebhookUrl
	}
	v, err := s.m.SetPolicy(ctx, req.GetProjectId(), c)
	if err != nil {
		return nil, s.status(ctx, "set policy", err)
	}
	return &pb.SetPolicyResponse{Policy: projectPolicyToPB(v)}, nil
}

// GetPolicy implements pb.LifecycleServiceServer.
func (s *LifecycleServer) GetPolicy(ctx context.Context, req *pb.GetPolicyRequest) (*pb.GetPolicyResponse, error) {
	v, err := s.m.GetPolicy(ctx, req.GetProjectId())
	if err != nil {
		return nil, s.status(ctx, "get policy", err)
	}
	return &pb.GetPolicyResponse{Policy: projectPolicyToPB(v)}, nil
}

func projectCostToPB(c lifecycle.ProjectCost) *pb.ProjectCost {
	out := &pb.ProjectCost{ProjectId: c.ProjectID, SandboxHours: c.SandboxHours, StoredBytes: c.StoredBytes,
		ComputeDollars: c.Cost.Compute, StorageDollars: c.Cost.Storage, TotalDollars: c.Cost.Total,
		AlwaysOnHours: c.AlwaysOnHours, AlwaysOnDollars: c.AlwaysOn, Savings: c.Savings}
	for _, st := range policy.States {
		if sec, ok := c.Seconds[st]; ok {
			out.States = append(out.States, &pb.StateTime{State: string(st), Seconds: sec, Dollars: c.Cost.ByState[st]})
		}
	}
	return out
}

// GetCost implements pb.LifecycleServiceServer.
func (s *LifecycleServer) GetCost(ctx context.Context, req *pb.GetCostRequest) (*pb.GetCostResponse, error) {
	var since time.Time
	if req.GetSince() != nil {
		since = req.GetSince().AsTime()
	}
	rep, err := s.m.Cost(ctx, req.GetProjectId(), since)
	if err != nil {
		return nil, s.status(ctx, "cost", err)
	}
	out := &pb.GetCostResponse{Since: ts(rep.Since), Until: ts(rep.Until), Total: projectCostToPB(rep.Total),
		Rates: &pb.CostRates{StartedPerHour: rep.Rates.StartedPerHour, StoppedPerHour: rep.Rates.StoppedPerHour,
			ArchivedPerHour: rep.Rates.ArchivedPerHour, StoragePerGbMonth: rep.Rates.StoragePerGBMonth}}
	for _, p := range rep.Projects {
		out.Projects = append(out.Projects, projectCostToPB(p))
	}
	return out, nil
}
