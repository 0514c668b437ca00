// Package provider is the interface between sandkeep's lifecycle manager and
// whatever runs sandboxes: Daytona (package daytona, its REST API) or the
// local provider (package local, a directory plus a `sandkeep-agent run`
// process) used by the demo and the tests. One conformance suite
// (package providertest) holds both to the guarantees documented here.
//
// Every method takes a context and is bounded by it. Errors are wrapped with
// %w around the sentinel errors below, so callers test them with errors.Is.
package provider

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/sandkeep/sandkeep/internal/sandboxstate"
)

// State is a sandbox's state (package sandboxstate: one type for every
// package). Providers map their own states onto these (each provider
// documents its mapping) and keep the raw one in Sandbox.ProviderState.
type State = sandboxstate.State

// The states, in the order of a sandbox's life.
const (
	StateCreating  = sandboxstate.Creating
	StateStarting  = sandboxstate.Starting
	StateStarted   = sandboxstate.Started
	StateStopping  = sandboxstate.Stopping
	StateStopped   = sandboxstate.Stopped
	StateArchived  = sandboxstate.Archived
	StateDestroyed = sandboxstate.Destroyed
	StateError     = sandboxstate.Error
)

// States lists every state.
func States() []State { return sandboxstate.All() }

// Transition reports whether a sandbox may go from one state to another
// (sandboxstate.Transition).
func Transition(from, to State) bool { return sandboxstate.Transition(from, to) }

// Sandbox is what a provider reports about one sandbox.
type Sandbox struct {
	ID            string
	State         State
	Labels        map[string]string
	CreatedAt     time.Time
	ProviderState string // the provider's own state name, unmapped (Daytona: "pulling_snapshot", …)
	ErrorReason   string // why it is in StateError, when the provider says
}

// Label keys sandkeep puts on the sandboxes it creates.
const (
	LabelProject = "sandkeep.project" // the project id
	LabelManaged = "sandkeep.managed" // "true": made by sandkeep (the reconciler lists by it)
)

// Environment variables a sandbox's agent reads (see the agent's README).
const (
	EnvCoordinator = "SANDKEEP_COORDINATOR"
	EnvToken       = "SANDKEEP_TOKEN"
	EnvSandboxID   = "SANDKEEP_SANDBOX_ID"
)

// CreateSpec describes a sandbox to create.
type CreateSpec struct {
	// Labels, including LabelProject; List selects on them.
	Labels map[string]string
	// Env is the sandbox's environment: SANDKEEP_COORDINATOR, SANDKEEP_TOKEN,
	// SANDKEEP_SANDBOX_ID… (the local provider sets SANDKEEP_SANDBOX_ID to
	// the id it assigns when Env lacks it; Daytona assigns ids itself, so
	// there the caller's own id goes in Env).
	Env map[string]string
	// Image (a container image reference) or Snapshot (a provider snapshot
	// name); at most one. Neither: the provider's default.
	Image, Snapshot string
	// Resources; 0 leaves the provider's default. Daytona accepts them only
	// with an Image (a snapshot fixes its own resources).
	CPU, MemoryGiB, DiskGiB int
	// AutoStopMinutes is the provider's own idle timer. 0 disables it:
	// sandkeep's lifecycle manager decides when a sandbox stops.
	AutoStopMinutes int
}

// Provider runs sandboxes.
//
// Guarantees every implementation keeps (package providertest checks them):
//   - Create returns once the provider accepted the sandbox, with its id; it
//     may still be creating or starting. Callers use WaitForState.
//   - Start on a started or starting sandbox, Stop on a stopped, stopping or
//     archived one and Archive on an archived one succeed without doing
//     anything. An operation the sandbox's state forbids (Stop while it is
//     being created, Archive while it runs) is ErrConflict.
//   - Start, Stop and Archive may return while the transition is in
//     progress; WaitForState observes its end.
//   - Delete is idempotent: deleting a missing sandbox is not an error.
//     After Delete, Get reports ErrNotFound or StateDestroyed.
//   - Get, Start, Stop, Archive on an unknown id: ErrNotFound.
//   - List returns the sandboxes whose labels include every given label
//     (an empty selector: all), destroyed ones excepted.
type Provider interface {
	Name() string
	Create(ctx context.Context, spec CreateSpec) (Sandbox, error)
	Start(ctx context.Context, id string) error
	Stop(ctx context.Context, id string) error
	// Archive moves a stopped sandbox to cheaper storage. Providers without
	// archive return ErrUnsupported.
	Archive(ctx context.Context, id string) error
	Delete(ctx context.Context, id string) error
	Get(ctx context.Context, id string) (Sandbox, error)
	List(ctx context.Context, labels map[string]string) ([]Sandbox, error)
}

// Sentinel errors. Providers wrap them with %w.
var (
	ErrNotFound     = errors.New("sandbox not found")
	ErrConflict     = errors.New("sandbox is in the wrong state for the operation")
	ErrUnavailable  = errors.New("provider unavailable")
	ErrQuota        = errors.New("provider quota exceeded")
	ErrUnsupported  = errors.New("operation not supported by the provider")
	ErrUnauthorized = errors.New("provider refused the credentials")
	// ErrFailed: the sandbox is in StateError (WaitForState).
	ErrFailed = errors.New("sandbox failed")
)

// DefaultPoll is WaitForState's polling period when given 0.
const DefaultPoll = time.Second

// WaitForState polls Get every poll until the sandbox is in state want and
// returns it. It stops early with an error wrapping ErrFailed when the
// sandbox is in StateError (unless that is what is wanted), ErrNotFound when
// it is destroyed or gone (unless want is StateDestroyed, which a missing
// sandbox satisfies), and the context's error, naming the last state seen,
// when ctx ends. Errors from Get end the wait (the provider clients retry
// transient failures themselves).
func WaitForState(ctx context.Context, p Provider, id string, want State, poll time.Duration) (Sandbox, error) {
	if poll <= 0 {
		poll = DefaultPoll
	}
	var timer *time.Timer
	defer func() {
		if timer != nil {
			timer.Stop()
		}
	}()
	for {
		sb, err := p.Get(ctx, id)
		switch {
		case errors.Is(err, ErrNotFound) && want == StateDestroyed:
			return Sandbox{ID: id, State: StateDestroyed}, nil
		case err != nil:
			if ctx.Err() != nil {
				return sb, fmt.Errorf("wait for sandbox %s to be %s: %w", id, want, ctx.Err())
			}
			return sb, fmt.Errorf("wait for sandbox %s to be %s: %w", id, want, err)
		case sb.State == want:
			return sb, nil
		case sb.State == StateError:
			reason := sb.ErrorReason
			if reason == "" {
				reason = sb.ProviderState
			}
			return sb, fmt.Errorf("wait for sandbox %s to be %s: %w: %s", id, want, ErrFailed, reason)
		case sb.State == StateDestroyed:
			return sb, fmt.Errorf("wait for sandbox %s to be %s: it was destroyed: %w", id, want, ErrNotFound)
		}
		if timer == nil {
			timer = time.NewTimer(poll)
		} else {
			timer.Reset(poll)
		}
		select {
		case <-ctx.Done():
			return sb, fmt.Errorf("wait for sandbox %s to be %s (last seen %s, %s): %w", id, want, sb.State, sb.ProviderState, ctx.Err())
		case <-timer.C:
		}
	}
}

// MatchLabels reports whether labels include every key/value of selector.
func MatchLabels(labels, selector map[string]string) bool {
	for k, v := range selector {
		if got, ok := labels[k]; !ok || got != v {
			return false
		}
	}
	return true
}

// Locator is implemented by providers that can say where a sandbox's
// workspace is for a person to look (the local provider: its directory).
// Wrappers (guard, faulty) pass it through.
type Locator interface {
	Location(id string) string
}

// LocationOf returns p's location of sandbox id, "" if p cannot say.
func LocationOf(p Provider, id string) string {
	for p != nil {
		if l, ok := p.(Locator); ok {
			return l.Location(id)
		}
		u, ok := p.(interface{ Unwrap() Provider })
		if !ok {
			return ""
		}
		p = u.Unwrap()
	}
	return ""
}

// UnavailableError is an ErrUnavailable that says more: when the provider
// asked to be called again (HTTP Retry-After), and whether it certainly did
// not act on the request (a 429, an open circuit, a refused connection), so
// that even a Create may be sent again.
type UnavailableError struct {
	Op       string
	Err      error // the cause (may be nil)
	After    time.Duration
	NotActed bool
}

func (e *UnavailableError) Error() string {
	s := ErrUnavailable.Error()
	if e.Op != "" {
		s = e.Op + ": " + s
	}
	if e.Err != nil {
		s += ": " + e.Err.Error()
	}
	if e.After > 0 {
		s += fmt.Sprintf(" (retry in %s)", e.After.Round(time.Millisecond))
	}
	return s
}

// Unwrap makes errors.Is(err, ErrUnavailable) hold, and reaches the cause.
func (e *UnavailableError) Unwrap() []error {
	if e.Err == nil {
		return []error{ErrUnavailable}
	}
	return []error{ErrUnavailable, e.Err}
}

// RetryAfter is the provider's advice on when to try again (0: none).
func (e *UnavailableError) RetryAfter() time.Duration { return e.After }

// NotActedOn reports whether err says the provider certainly did not act on
// the request (so a non-idempotent call may be repeated).
func NotActedOn(err error) bool {
	var n interface{ NotActed() bool }
	if errors.As(err, &n) && n.NotActed() {
		return true
	}
	var u *UnavailableError
	return errors.As(err, &u) && u.NotActed
}
