package metastore

import (
	"context"
	"crypto/rand"
	"encoding/base32"
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/sandkeep/sandkeep/internal/policy"
	"github.com/sandkeep/sandkeep/internal/sandboxstate"
)

// This file holds the lifecycle manager's part of the metadata database
// (package lifecycle): the sandbox registry, the time each sandbox spent in
// each state, run leases and per-project lifecycle policies. Both stores
// implement SandboxStore beside Store (migration 0003_lifecycle); the
// conformance suite is metastoretest.RunSandboxStore.

var (
	// ErrIllegalTransition: a sandbox state change the state machine
	// (sandboxstate.Transition) forbids, or any change of a destroyed sandbox.
	ErrIllegalTransition = errors.New("illegal sandbox state transition")
	// ErrLeaseEnded: the run lease was released or expired.
	ErrLeaseEnded = errors.New("run lease ended")
)

// BackupState is what a sandbox's backup looks like to the coordinator.
type BackupState string

// The backup states.
const (
	// BackupClean: the agent reported nothing pending (at CleanVersion).
	BackupClean BackupState = "clean"
	// BackupDirty: changes are pending, or nothing is known yet.
	BackupDirty BackupState = "dirty"
	// BackupFailed: the last flush or verify failed (see LastFlushError).
	BackupFailed BackupState = "failed"
)

// Sandbox is one sandbox in the registry.
//
// ID is sandkeep's own id ("sbx_…", given to the agent as
// SANDKEEP_SANDBOX_ID before the provider assigns its ProviderID). State
// changes only through TransitionSandbox, which keeps the intervals that
// cost accounting sums; UpdateSandbox changes the other fields.
type Sandbox struct {
	ID         string
	ProjectID  string
	Provider   string // the provider's Name()
	ProviderID string // empty until the provider accepted the create
	State      sandboxstate.State
	StateSince time.Time // when it entered State
	CreatedAt  time.Time

	// LastActivity: the last file change its agent reported (heartbeat
	// last_write_time), or when it was created or ensured. Run leases are
	// kept apart (RunLeaseUntil).
	LastActivity time.Time

	// Backup status, from heartbeats and the manager's flushes and verifies.
	Backup       BackupState
	CleanVersion int64 // the version the workspace was clean at
	// Flushed: a flush barrier confirmed the workspace clean at
	// CleanVersion, and no heartbeat reported a change since. Only this
	// opens the destroy gate (policy.BackupStatus.Clean).
	Flushed bool
	// VerifiedVersion: the last head version whose packs were all found in
	// the bucket (0: none).
	VerifiedVersion int64
	FlushFailures   int
	LastAttempt     time.Time
	LastFlushError  string

	// From the agent's last heartbeat.
	AgentState    string
	AgentVersion  int64
	PendingPaths  int64
	PendingBytes  int64
	LastHeartbeat time.Time

	// NotifiedAt holds when each cleanup (policy action) was announced.
	NotifiedAt map[string]time.Time
	// ExtendedUntil: the platform postponed cleanups until then.
	ExtendedUntil time.Time
	// TokenHash is the hash of the sandbox token made for it (revoked when
	// it is destroyed).
	TokenHash string
	// LastError: the last provider error or illegal transition observed.
	LastError string
}

// Live reports whether the sandbox still exists (is not destroyed).
func (s Sandbox) Live() bool { return s.State != sandboxstate.Destroyed }

// SandboxInterval is a stretch of time a sandbox spent in one state. To is
// zero for the current state.
type SandboxInterval struct {
	SandboxID string
	ProjectID string
	State     sandboxstate.State
	From, To  time.Time
	Illegal   bool // entered by a transition the state machine forbids
}

// SandboxFilter selects sandboxes for ListSandboxes.
type SandboxFilter struct {
	ProjectID string // "" for every project
	LiveOnly  bool   // leave destroyed ones out
}

// Transition is the outcome of TransitionSandbox.
type Transition struct {
	From, To sandboxstate.State
	Changed  bool // false: it already was in To
	Illegal  bool // an observed transition the state machine forbids, recorded anyway
}

// RunLease keeps a project's sandbox from being reaped while an agent run is
// in flight.
type RunLease struct {
	ID        string // "lse_…"
	ProjectID string
	CreatedAt time.Time
	ExpiresAt time.Time
	// ReleasedAt is set by ReleaseRunLease (zero while not released).
	ReleasedAt time.Time
}

// Until is when the lease stops protecting the sandbox: its release or its
// expiry.
func (l RunLease) Until() time.Time {
	if !l.ReleasedAt.IsZero() && l.ReleasedAt.Before(l.ExpiresAt) {
		return l.ReleasedAt
	}
	return l.ExpiresAt
}

// LifecyclePolicy is a project's stored policy: an override of the global
// policy and a webhook that hears about cleanups.
type LifecyclePolicy struct {
	ProjectID  string
	Override   policy.Override
	WebhookURL string
	UpdatedAt  time.Time
}

// SandboxStore is the lifecycle part of the metadata database. All methods
// are safe for concurrent use; times are stored with microsecond precision
// and come back in UTC.
type SandboxStore interface {
	// CreateSandbox records a new sandbox (ID, ProjectID, Provider and State
	// required; CreatedAt, StateSince and LastActivity default to now) and
	// opens its first state interval. ErrAlreadyExists if the id is taken or
	// the project has a sandbox that is not destroyed; ErrNotFound for an
	// unknown project.
	CreateSandbox(ctx context.Context, sb Sandbox) (Sandbox, error)
	GetSandbox(ctx context.Context, id string) (Sandbox, error)
	// LiveSandbox returns the project's sandbox that is not destroyed, or
	// ErrNotFound.
	LiveSandbox(ctx context.Context, projectID string) (Sandbox, error)
	// ListSandboxes returns sandboxes by project, then creation time.
	ListSandboxes(ctx context.Context, f SandboxFilter) ([]Sandbox, error)
	// UpdateSandbox reads the sandbox, lets fn change it and writes it back,
	// atomically. fn may change every field except ID, ProjectID, Provider,
	// CreatedAt, State and StateSince (ignored). An error from fn is
	// returned and nothing is written.
	UpdateSandbox(ctx context.Context, id string, fn func(*Sandbox) error) (Sandbox, error)
	// TransitionSandbox moves the sandbox to state to at time at, closing
	// the current interval and opening the next. Being in to already changes
	// nothing. A transition sandboxstate.Transition forbids fails with
	// ErrIllegalTransition unless observed (the provider reported it:
	// reality wins), in which case it is recorded with Illegal set and note
	// in LastError. Nothing leaves destroyed: ErrIllegalTransition even when
	// observed. Leaving destroyed for a live state while the project has
	// another live sandbox is ErrAlreadyExists.
	TransitionSandbox(ctx context.Context, id string, to sandboxstate.State, at time.Time, observed bool, note string) (Transition, error)
	// SandboxIntervals returns the state intervals of a project's sandboxes
	// ("" for every project) that end after since (zero: all), by start.
	SandboxIntervals(ctx context.Context, projectID string, since time.Time) ([]SandboxInterval, error)

	// AcquireRunLease makes a lease of the project valid from now for ttl.
	AcquireRunLease(ctx context.Context, projectID string, now time.Time, ttl time.Duration) (RunLease, error)
	// RenewRunLease makes the lease expire ttl after now. ErrNotFound for an
	// unknown lease, ErrLeaseEnded for one released or expired at now.
	RenewRunLease(ctx context.Context, id string, now time.Time, ttl time.Duration) (RunLease, error)
	// ReleaseRunLease ends the lease at now (idempotent; ErrNotFound for an
	// unknown lease).
	ReleaseRunLease(ctx context.Context, id string, now time.Time) (RunLease, error)
	// RunLeaseUntil is the latest Until of the project's leases (zero if it
	// has none): the run lease as policy.Sandbox.LeaseUntil wants it.
	RunLeaseUntil(ctx context.Context, projectID string) (time.Time, error)
	// ListRunLeases returns the project's leases whose Until is after now,
	// by expiry.
	ListRunLeases(ctx context.Context, projectID string, now time.Time) ([]RunLease, error)

	// GetLifecyclePolicy returns the project's stored policy, ErrNotFound if
	// it has none (it follows the global one).
	GetLifecyclePolicy(ctx context.Context, projectID string) (LifecyclePolicy, error)
	// SetLifecyclePolicy stores (replaces) the project's policy.
	SetLifecyclePolicy(ctx context.Context, p LifecyclePolicy) error

	// StoredBytes is the size of the project's packs in the bucket (packs
	// being deleted by garbage collection excepted).
	StoredBytes(ctx context.Context, projectID string) (int64, error)
	// RevokeToken revokes one token by hash (unknown hashes are ignored).
	RevokeToken(ctx context.Context, hash string) error
}

// Leader elects the one coordinator replica that runs the background
// lifecycle manager. TryLead acquires the leadership if it is free and
// reports whether this process holds it (calling it again while leading is
// cheap and keeps it); Resign gives it up.
type Leader interface {
	TryLead(ctx context.Context) (bool, error)
	Resign()
}

// Fencer is a Leader that can prove, right before an irreversible act
// (destroying a sandbox), that it still leads: Fence fails with
// ErrDeposed once another replica may have taken over.
type Fencer interface {
	Fence(ctx context.Context) error
}

// ErrDeposed: this replica no longer leads the background jobs.
var ErrDeposed = errors.New("this replica no longer leads the background jobs")

var idB32 = base32.StdEncoding.WithPadding(base32.NoPadding)

// NewSandboxID returns a fresh sandbox id: "sbx_" + 20 lowercase base32
// characters.
func NewSandboxID() string { return "sbx_" + randomID() }

// NewRunLeaseID returns a fresh run lease id: "lse_" + 20 lowercase base32
// characters.
func NewRunLeaseID() string { return "lse_" + randomID() }

func randomID() string {
	var b [13]byte
	_, _ = rand.Read(b[:])
	return strings.ToLower(idB32.EncodeToString(b[:]))[:20]
}

// CheckTransition applies the rules of SandboxStore.TransitionSandbox to a
// sandbox in state from; both stores call it inside their transaction.
func CheckTransition(from, to sandboxstate.State, observed bool) (Transition, error) {
	tr := Transition{From: from, To: to}
	switch {
	case from == to:
		return tr, nil
	case from == sandboxstate.Destroyed:
		return tr, fmt.Errorf("%w: a destroyed sandbox stays destroyed (%s observed)", ErrIllegalTransition, to)
	case sandboxstate.Transition(from, to):
		tr.Changed = true
		return tr, nil
	case observed:
		tr.Changed, tr.Illegal = true, true
		return tr, nil
	}
	return tr, fmt.Errorf("%w: %s -> %s", ErrIllegalTransition, from, to)
}
