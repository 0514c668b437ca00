// Package guard wraps a provider.Provider so that a misbehaving provider
// cannot stall or flood the lifecycle manager:
//
//   - every call is bounded by Config.CallTimeout (a call that hangs ends
//     as provider.ErrUnavailable);
//   - transient failures (ErrUnavailable: 5xx, 429, timeouts, refused
//     connections) are retried with exponential backoff and jitter,
//     honouring the provider's Retry-After; Create only when the provider
//     certainly did not act on it (provider.NotActedOn), since a repeated
//     create could make two sandboxes;
//   - a circuit breaker opens after Config.Threshold consecutive transient
//     failures: for Config.Cooldown every call fails at once with an
//     *provider.UnavailableError (NotActed, After = the rest of the
//     cooldown), then one call probes the provider and closes it again on
//     success;
//   - every call is counted and timed by operation
//     (sandkeep_provider_calls_total{op,result},
//     sandkeep_provider_call_seconds{op}, sandkeep_provider_circuit_open).
//
// Answers that are not transient (ErrNotFound, ErrConflict, ErrQuota,
// ErrUnauthorized, …) pass through untouched and do not count against the
// breaker: the provider is up, the request was wrong.
package guard

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"time"

	"github.com/sandkeep/sandkeep/internal/metrics"
	"github.com/sandkeep/sandkeep/internal/provider"
	"github.com/sandkeep/sandkeep/internal/retry"
)

// Config tunes a Provider; zero values take the defaults.
type Config struct {
	CallTimeout time.Duration // one attempt (default 30s)
	Attempts    int           // attempts per call (default 4)
	Backoff     retry.Backoff // between attempts (default 250ms doubling to 5s, 20 % jitter)
	MaxAfter    time.Duration // longest Retry-After honoured within a call (default 30s)
	Threshold   int           // consecutive transient failures that open the circuit (default 5)
	Cooldown    time.Duration // how long it stays open (default 30s)
	Metrics     *metrics.Metrics
	Log         *slog.Logger
	Now         func() time.Time                                 // default time.Now
	Sleep       func(ctx context.Context, d time.Duration) error // default retry.Sleep
}

// Provider is a guarded provider.Provider.
type Provider struct {
	inner provider.Provider
	cfg   Config

	mu        sync.Mutex
	failures  int       // consecutive transient failures
	openUntil time.Time // the circuit is open until then
	probing   bool      // a half-open probe is in flight
}

var _ provider.Provider = (*Provider)(nil)

// New wraps p.
func New(p provider.Provider, cfg Config) *Provider {
	def := func(d *time.Duration, v time.Duration) {
		if *d <= 0 {
			*d = v
		}
	}
	def(&cfg.CallTimeout, 30*time.Second)
	def(&cfg.MaxAfter, 30*time.Second)
	def(&cfg.Cooldown, 30*time.Second)
	if cfg.Attempts <= 0 {
		cfg.Attempts = 4
	}
	if cfg.Backoff == (retry.Backoff{}) {
		cfg.Backoff = retry.Backoff{Min: 250 * time.Millisecond, Max: 5 * time.Second, Jitter: 0.2}
	}
	if cfg.Threshold <= 0 {
		cfg.Threshold = 5
	}
	if cfg.Log == nil {
		cfg.Log = slog.Default()
	}
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	if cfg.Sleep == nil {
		cfg.Sleep = retry.Sleep
	}
	return &Provider{inner: p, cfg: cfg}
}

// Unwrap returns the wrapped provider.
func (g *Provider) Unwrap() provider.Provider { return g.inner }

// Name is the wrapped provider's name.
func (g *Provider) Name() string { return g.inner.Name() }

// Open reports whether the circuit is open now.
func (g *Provider) Open() bool {
	g.mu.Lock()
	defer g.mu.Unlock()
	return g.cfg.Now().Before(g.openUntil)
}

// Create creates a sandbox (retried only when the provider did not act).
func (g *Provider) Create(ctx context.Context, spec provider.CreateSpec) (provider.Sandbox, error) {
	var sb provider.Sandbox
	err := g.call(ctx, "create", provider.NotActedOn, func(ctx context.Context) error {
		var err error
		sb, err = g.inner.Create(ctx, spec)
		return err
	})
	return sb, err
}

// Start starts a sandbox.
func (g *Provider) Start(ctx context.Context, id string) error {
	return g.call(ctx, "start", transient, func(ctx context.Context) error { return g.inner.Start(ctx, id) })
}

// Stop stops a sandbox.
func (g *Provider) Stop(ctx context.Context, id string) error {
	return g.call(ctx, "stop", transient, func(ctx context.Context) error { return g.inner.Stop(ctx, id) })
}

// Archive archives a sandbox.
func (g *Provider) Archive(ctx context.Context, id string) error {
	return g.call(ctx, "archive", transient, func(ctx context.Context) error { return g.inner.Archive(ctx, id) })
}

// Delete deletes a sandbox.
func (g *Provider) Delete(ctx context.Context, id string) error {
	return g.call(ctx, "delete", transient, func(ctx context.Context) error { return g.inner.Delete(ctx, id) })
}

// Get reads a sandbox.
func (g *Provider) Get(ctx context.Context, id string) (provider.Sandbox, error) {
	var sb provider.Sandbox
	err := g.call(ctx, "get", transient, func(ctx context.Context) error {
		var err error
		sb, err = g.inner.Get(ctx, id)
		return err
	})
	return sb, err
}

// List lists sandboxes.
func (g *Provider) List(ctx context.Context, labels map[string]string) ([]provider.Sandbox, error) {
	var out []provider.Sandbox
	err := g.call(ctx, "list", transient, func(ctx context.Context) error {
		var err error
		out, err = g.inner.List(ctx, labels)
		return err
	})
	return out, err
}

// ErrCircuitOpen is wrapped (inside a *provider.UnavailableError, with
// NotActed and the time left) by every call the open circuit refuses.
var ErrCircuitOpen = errors.New("circuit open")

// transient: worth another attempt.
func transient(err error) bool { return errors.Is(err, provider.ErrUnavailable) }

// call runs one operation: breaker, retries, per-attempt timeout, metrics.
func (g *Provider) call(ctx context.Context, op string, retryable func(error) bool, fn func(ctx context.Context) error) error {
	began := g.cfg.Now()
	err := retry.Do(ctx, retry.Policy{
		Attempts: g.cfg.Attempts, Backoff: g.cfg.Backoff, MaxAfter: g.cfg.MaxAfter, Sleep: g.cfg.Sleep,
		Retryable: func(err error) bool {
			// An open circuit is not retried within the call: the
			// caller hears at once, with the time it stays open.
			return !errors.Is(err, ErrCircuitOpen) && retryable(err)
		},
	}, func(ctx context.Context) error {
		if err := g.admit(op); err != nil {
			return err
		}
		actx, cancel := context.WithTimeout(ctx, g.cfg.CallTimeout)
		err := fn(actx)
		timedOut := actx.Err() != nil && ctx.Err() == nil
		cancel()
		if timedOut {
			// The provider did not answer in time: transient, and it may
			// have acted (a create may yet appear: the reconciler adopts
			// or destroys it).
			err = &provider.UnavailableError{Op: op, Err: fmt.Errorf("no answer within %s: %w", g.cfg.CallTimeout, context.DeadlineExceeded)}
		}
		g.record(err)
		return err
	})
	g.observe(op, began, err)
	return err
}

// admit lets a call through unless the circuit is open; after the cooldown
// one probe at a time goes through (half open).
func (g *Provider) admit(op string) error {
	g.mu.Lock()
	defer g.mu.Unlock()
	if g.failures < g.cfg.Threshold {
		return nil
	}
	now := g.cfg.Now()
	if now.Before(g.openUntil) || g.probing {
		after := g.openUntil.Sub(now)
		if after <= 0 {
			after = g.cfg.Backoff.Min
		}
		return &provider.UnavailableError{Op: op, NotActed: true, After: after,
			Err: fmt.Errorf("%w: not sent after %d consecutive provider failures", ErrCircuitOpen, g.failures)}
	}
	g.probing = true
	return nil
}

// record updates the breaker with the outcome of an attempt admit let
// through.
func (g *Provider) record(err error) {
	g.mu.Lock()
	defer g.mu.Unlock()
	g.probing = false
	if err == nil || !transient(err) {
		if g.failures >= g.cfg.Threshold {
			g.cfg.Log.Info("provider: circuit closed; the provider answers again", "provider", g.inner.Name())
		}
		g.failures = 0
		g.openUntil = time.Time{}
		g.gauge(0)
		return
	}
	g.failures++
	if g.failures >= g.cfg.Threshold {
		if !g.cfg.Now().Before(g.openUntil) {
			g.cfg.Log.Warn("provider: circuit open: calls fail at once for the cooldown", "provider", g.inner.Name(),
				"failures", g.failures, "cooldown", g.cfg.Cooldown, "err", err)
		}
		g.openUntil = g.cfg.Now().Add(g.cfg.Cooldown)
		g.gauge(1)
	}
}

func (g *Provider) gauge(v float64) {
	if g.cfg.Metrics != nil {
		g.cfg.Metrics.ProviderCircuitOpen.Set(v)
	}
}

func (g *Provider) observe(op string, began time.Time, err error) {
	if g.cfg.Metrics == nil {
		return
	}
	g.cfg.Metrics.ProviderCallSeconds.WithLabelValues(op).Observe(g.cfg.Now().Sub(began).Seconds())
	g.cfg.Metrics.ProviderCalls.WithLabelValues(op, Result(err)).Inc()
}

// Result names an outcome for metrics: ok, not_found, conflict,
// unavailable, circuit_open, quota, unauthorized, failed, error.
func Result(err error) string {
	switch {
	case err == nil:
		return "ok"
	case errors.Is(err, ErrCircuitOpen):
		return "circuit_open"
	case errors.Is(err, provider.ErrNotFound):
		return "not_found"
	case errors.Is(err, provider.ErrConflict):
		return "conflict"
	case errors.Is(err, provider.ErrUnavailable):
		return "unavailable"
	case errors.Is(err, provider.ErrQuota):
		return "quota"
	case errors.Is(err, provider.ErrUnauthorized):
		return "unauthorized"
	case errors.Is(err, provider.ErrFailed):
		return "failed"
	case errors.Is(err, provider.ErrUnsupported):
		return "unsupported"
	default:
		return "error"
	}
}
