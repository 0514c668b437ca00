// Package faulty wraps a provider.Provider and makes it misbehave the way
// real providers do, for tests: calls that fail with 5xx or 429 answers,
// calls that hang, transitions that take long, sandboxes that end in an
// error state, and sandboxes lost behind sandkeep's back. It works over
// any provider (the local one, the Daytona client), so the conformance
// suite, the lifecycle tests and the soak test share one source of faults.
//
// Faults are drawn from a seeded generator; which call draws which fault
// still depends on the order in which goroutines call, so tests check
// invariants (nothing committed lost, no Internal error), not sequences.
package faulty

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"sync"
	"time"

	"github.com/sandkeep/sandkeep/internal/provider"
)

// Faults are the probabilities (0–1) of each fault per call, and its
// parameters.
type Faults struct {
	Seed uint64
	// Unavailable: the call fails like a 5xx and does nothing.
	Unavailable float64
	// Throttle: the call fails like a 429 with Retry-After RetryAfter
	// (default 20ms) and does nothing.
	Throttle   float64
	RetryAfter time.Duration
	// Hang: the call blocks until its context ends and does nothing.
	Hang float64
	// Slow: after a create, start or stop, Get reports the transition as
	// still in progress (creating, starting, stopping) for this long.
	Slow time.Duration
	// ErrorState: a start (or create) leaves the sandbox in StateError
	// ("failed to start"): it is stopped underneath and reported as error
	// until it is started again or deleted.
	ErrorState float64
	// Loss: before answering a Get of a sandbox, the provider loses it
	// (Lose): its process is killed and its disk removed; from then on it
	// is not found.
	Loss float64
}

// Loser is implemented by providers that can lose a sandbox the way a real
// provider does (the local provider kills its agent with SIGKILL and
// removes its directory). Others lose it through Delete.
type Loser interface {
	Lose(ctx context.Context, id string) error
}

// Provider is a provider with faults.
type Provider struct {
	inner provider.Provider

	mu      sync.Mutex
	f       Faults
	rng     *rand.Rand
	slow    map[string]slowness // id -> transition in progress
	errored map[string]string   // id -> error reason
	counts  map[string]int      // fault -> times injected
}

type slowness struct {
	state provider.State // reported while in progress
	until time.Time
}

var _ provider.Provider = (*Provider)(nil)

// New wraps p.
func New(p provider.Provider, f Faults) *Provider {
	return &Provider{inner: p, f: f.withDefaults(), rng: rand.New(rand.NewPCG(f.Seed, f.Seed^0x9e3779b97f4a7c15)),
		slow: map[string]slowness{}, errored: map[string]string{}, counts: map[string]int{}}
}

func (f Faults) withDefaults() Faults {
	if f.RetryAfter <= 0 {
		f.RetryAfter = 20 * time.Millisecond
	}
	return f
}

// SetFaults changes the faults from now on (the seed is kept).
func (p *Provider) SetFaults(f Faults) {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.f = f.withDefaults()
}

// Counts returns how often each fault was injected.
func (p *Provider) Counts() map[string]int {
	p.mu.Lock()
	defer p.mu.Unlock()
	out := make(map[string]int, len(p.counts))
	for k, v := range p.counts {
		out[k] = v
	}
	return out
}

// Lose loses a sandbox now, as a provider does: gone without a flush.
func (p *Provider) Lose(ctx context.Context, id string) error {
	p.mu.Lock()
	p.counts["loss"]++
	delete(p.slow, id)
	delete(p.errored, id)
	p.mu.Unlock()
	if l, ok := p.inner.(Loser); ok {
		return l.Lose(ctx, id)
	}
	return p.inner.Delete(ctx, id)
}

// Fail puts a sandbox in the error state now (it is stopped underneath).
func (p *Provider) Fail(ctx context.Context, id, reason string) error {
	p.mu.Lock()
	p.counts["error_state"]++
	p.errored[id] = reason
	p.mu.Unlock()
	if err := p.inner.Stop(ctx, id); err != nil && !errors.Is(err, provider.ErrNotFound) {
		return err
	}
	return nil
}

func (p *Provider) roll(prob float64) bool {
	return prob > 0 && p.rng.Float64() < prob
}

// fault draws the call-level faults: it returns a non-nil error when the
// call must fail without reaching the provider.
func (p *Provider) fault(ctx context.Context, op string) error {
	p.mu.Lock()
	var kind string
	switch {
	case p.roll(p.f.Hang):
		kind = "hang"
	case p.roll(p.f.Unavailable):
		kind = "unavailable"
	case p.roll(p.f.Throttle):
		kind = "throttle"
	}
	if kind != "" {
		p.counts[kind]++
	}
	after := p.f.RetryAfter
	p.mu.Unlock()
	switch kind {
	case "hang":
		<-ctx.Done()
		return fmt.Errorf("faulty: %s hung: %w", op, ctx.Err())
	case "unavailable":
		// A 503 is answered before the request is acted on.
		return &provider.UnavailableError{Op: op, Err: errors.New("faulty: 503 Service Unavailable"), NotActed: true}
	case "throttle":
		return &provider.UnavailableError{Op: op, Err: errors.New("faulty: 429 Too Many Requests"), After: after, NotActed: true}
	}
	return nil
}

// Unwrap returns the wrapped provider.
func (p *Provider) Unwrap() provider.Provider { return p.inner }

// Name is the wrapped provider's name.
func (p *Provider) Name() string { return p.inner.Name() }

// Create creates a sandbox, maybe failing, hanging, slowly or into error.
func (p *Provider) Create(ctx context.Context, spec provider.CreateSpec) (provider.Sandbox, error) {
	if err := p.fault(ctx, "create"); err != nil {
		return provider.Sandbox{}, err
	}
	sb, err := p.inner.Create(ctx, spec)
	if err != nil {
		return sb, err
	}
	p.afterStart(ctx, sb.ID, provider.StateCreating)
	return p.view(sb), nil
}

// Start starts a sandbox (clearing an injected error state).
func (p *Provider) Start(ctx context.Context, id string) error {
	if err := p.fault(ctx, "start"); err != nil {
		return err
	}
	p.mu.Lock()
	_, wasErrored := p.errored[id]
	delete(p.errored, id)
	p.mu.Unlock()
	before, _ := p.inner.Get(ctx, id)
	if err := p.inner.Start(ctx, id); err != nil {
		return err
	}
	if wasErrored || (before.State != provider.StateStarted && before.State != provider.StateStarting) {
		p.afterStart(ctx, id, provider.StateStarting) // a real start, not a no-op
	}
	return nil
}

func (p *Provider) afterStart(ctx context.Context, id string, state provider.State) {
	p.mu.Lock()
	fail := p.roll(p.f.ErrorState)
	if p.f.Slow > 0 {
		p.slow[id] = slowness{state: state, until: time.Now().Add(p.f.Slow)}
		p.counts["slow"]++
	}
	p.mu.Unlock()
	if fail {
		_ = p.Fail(ctx, id, "faulty: failed to start")
	}
}

// Stop stops a sandbox.
func (p *Provider) Stop(ctx context.Context, id string) error {
	if err := p.fault(ctx, "stop"); err != nil {
		return err
	}
	before, _ := p.inner.Get(ctx, id)
	if err := p.inner.Stop(ctx, id); err != nil {
		return err
	}
	p.mu.Lock()
	if p.f.Slow > 0 && before.State == provider.StateStarted {
		p.slow[id] = slowness{state: provider.StateStopping, until: time.Now().Add(p.f.Slow)}
		p.counts["slow"]++
	}
	p.mu.Unlock()
	return nil
}

// Archive archives a sandbox.
func (p *Provider) Archive(ctx context.Context, id string) error {
	if err := p.fault(ctx, "archive"); err != nil {
		return err
	}
	return p.inner.Archive(ctx, id)
}

// Delete deletes a sandbox.
func (p *Provider) Delete(ctx context.Context, id string) error {
	if err := p.fault(ctx, "delete"); err != nil {
		return err
	}
	if err := p.inner.Delete(ctx, id); err != nil {
		return err
	}
	p.mu.Lock()
	delete(p.slow, id)
	delete(p.errored, id)
	p.mu.Unlock()
	return nil
}

// Get reads a sandbox, as the faults make it look.
func (p *Provider) Get(ctx context.Context, id string) (provider.Sandbox, error) {
	if err := p.fault(ctx, "get"); err != nil {
		return provider.Sandbox{}, err
	}
	sb, err := p.inner.Get(ctx, id)
	if err != nil {
		return sb, err
	}
	p.mu.Lock()
	lose := sb.State != provider.StateDestroyed && p.roll(p.f.Loss)
	p.mu.Unlock()
	if lose {
		if err := p.Lose(ctx, id); err != nil {
			return provider.Sandbox{}, err
		}
		return p.inner.Get(ctx, id)
	}
	return p.view(sb), nil
}

// List lists sandboxes, as the faults make them look.
func (p *Provider) List(ctx context.Context, labels map[string]string) ([]provider.Sandbox, error) {
	if err := p.fault(ctx, "list"); err != nil {
		return nil, err
	}
	list, err := p.inner.List(ctx, labels)
	for i := range list {
		list[i] = p.view(list[i])
	}
	return list, err
}

// view applies injected error states and slow transitions.
func (p *Provider) view(sb provider.Sandbox) provider.Sandbox {
	p.mu.Lock()
	defer p.mu.Unlock()
	if reason, ok := p.errored[sb.ID]; ok && sb.State != provider.StateDestroyed {
		sb.State, sb.ProviderState, sb.ErrorReason = provider.StateError, "error", reason
		return sb
	}
	s, ok := p.slow[sb.ID]
	if !ok {
		return sb
	}
	if time.Now().After(s.until) {
		delete(p.slow, sb.ID)
		return sb
	}
	// Only the end state of the transition is held back.
	switch {
	case (s.state == provider.StateCreating || s.state == provider.StateStarting) && sb.State == provider.StateStarted,
		s.state == provider.StateStopping && sb.State == provider.StateStopped:
		sb.State, sb.ProviderState = s.state, string(s.state)+" (slow)"
	}
	return sb
}
