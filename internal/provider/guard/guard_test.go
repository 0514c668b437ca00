package guard_test

import (
	"context"
	"errors"
	"log/slog"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/sandkeep/sandkeep/internal/metrics"
	"github.com/sandkeep/sandkeep/internal/provider"
	"github.com/sandkeep/sandkeep/internal/provider/guard"
	"github.com/sandkeep/sandkeep/internal/retry"
)

// scripted answers each call with the next error of its script (nil once
// the script is used up); an error "hang" blocks until the call's context
// ends.
type scripted struct {
	mu     sync.Mutex
	script []error
	calls  int
}

var errHang = errors.New("hang")

func (s *scripted) next(ctx context.Context) error {
	s.mu.Lock()
	s.calls++
	var err error
	if len(s.script) > 0 {
		err, s.script = s.script[0], s.script[1:]
	}
	s.mu.Unlock()
	if err == errHang {
		<-ctx.Done()
		return ctx.Err()
	}
	return err
}

func (s *scripted) Name() string { return "scripted" }
func (s *scripted) Create(ctx context.Context, _ provider.CreateSpec) (provider.Sandbox, error) {
	return provider.Sandbox{ID: "sb1", State: provider.StateCreating}, s.next(ctx)
}
func (s *scripted) Start(ctx context.Context, _ string) error   { return s.next(ctx) }
func (s *scripted) Stop(ctx context.Context, _ string) error    { return s.next(ctx) }
func (s *scripted) Archive(ctx context.Context, _ string) error { return s.next(ctx) }
func (s *scripted) Delete(ctx context.Context, _ string) error  { return s.next(ctx) }
func (s *scripted) Get(ctx context.Context, id string) (provider.Sandbox, error) {
	return provider.Sandbox{ID: id, State: provider.StateStarted}, s.next(ctx)
}
func (s *scripted) List(ctx context.Context, _ map[string]string) ([]provider.Sandbox, error) {
	return nil, s.next(ctx)
}

var (
	e5xx = &provider.UnavailableError{Op: "get", Err: errors.New("503")}
	e429 = &provider.UnavailableError{Op: "create", Err: errors.New("429"), NotActed: true, After: 7 * time.Second}
)

type clock struct {
	mu  sync.Mutex
	now time.Time
}

func (c *clock) Now() time.Time { c.mu.Lock(); defer c.mu.Unlock(); return c.now }
func (c *clock) Add(d time.Duration) {
	c.mu.Lock()
	c.now = c.now.Add(d)
	c.mu.Unlock()
}

func newGuard(inner provider.Provider, m *metrics.Metrics) (*guard.Provider, *clock, *[]time.Duration) {
	c := &clock{now: time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)}
	var waits []time.Duration
	g := guard.New(inner, guard.Config{
		CallTimeout: 50 * time.Millisecond, Attempts: 4, Threshold: 3, Cooldown: time.Minute,
		Backoff: retry.Backoff{Min: time.Second, Max: 8 * time.Second}, Metrics: m, Now: c.Now,
		Log:   slog.New(slog.DiscardHandler),
		Sleep: func(_ context.Context, d time.Duration) error { waits = append(waits, d); c.Add(d); return nil },
	})
	return g, c, &waits
}

func TestRetries(t *testing.T) {
	tests := []struct {
		name      string
		call      func(context.Context, *guard.Provider) error
		script    []error
		wantCalls int
		wantIs    error // nil: success
		wantWaits []time.Duration
	}{
		{"get retried on 5xx", get, []error{e5xx, e5xx}, 3, nil, []time.Duration{time.Second, 2 * time.Second}},
		// The third consecutive failure opens the circuit (Threshold 3),
		// which refuses the fourth attempt.
		{"get gives up when the circuit opens", get, []error{e5xx, e5xx, e5xx, e5xx, e5xx}, 3, provider.ErrUnavailable, nil},
		{"not found passes through", get, []error{provider.ErrNotFound}, 1, provider.ErrNotFound, nil},
		{"conflict passes through", start, []error{provider.ErrConflict}, 1, provider.ErrConflict, nil},
		{"create not repeated after an ambiguous 5xx", create, []error{e5xx}, 1, provider.ErrUnavailable, nil},
		{"create repeated after a 429, honouring Retry-After", create, []error{e429}, 2, nil, []time.Duration{7 * time.Second}},
		{"a hanging call times out and is retried", start, []error{errHang}, 2, nil, []time.Duration{time.Second}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			inner := &scripted{script: append([]error(nil), tt.script...)}
			g, _, waits := newGuard(inner, nil)
			err := tt.call(t.Context(), g)
			if tt.wantIs == nil && err != nil || tt.wantIs != nil && !errors.Is(err, tt.wantIs) {
				t.Fatalf("err %v, want %v", err, tt.wantIs)
			}
			if inner.calls != tt.wantCalls {
				t.Fatalf("%d calls, want %d", inner.calls, tt.wantCalls)
			}
			if tt.wantWaits != nil && !equalWaits(*waits, tt.wantWaits) {
				t.Fatalf("waits %v, want %v", *waits, tt.wantWaits)
			}
		})
	}
}

func equalWaits(a, b []time.Duration) bool {
	if len(a) != len(b) {
		return false
	}
	for i := range a {
		if a[i] != b[i] {
			return false
		}
	}
	return true
}

func get(ctx context.Context, g *guard.Provider) error { _, err := g.Get(ctx, "sb1"); return err }
func start(ctx context.Context, g *guard.Provider) error {
	return g.Start(ctx, "sb1")
}
func create(ctx context.Context, g *guard.Provider) error {
	_, err := g.Create(ctx, provider.CreateSpec{})
	return err
}

// The breaker opens after Threshold consecutive transient failures: calls
// then fail at once (the provider is not called) with the time left, until
// the cooldown ends; one probe then closes it.
func TestBreaker(t *testing.T) {
	m := metrics.New()
	inner := &scripted{script: []error{e5xx, e5xx, e5xx, e5xx}}
	g, c, _ := newGuard(inner, m)
	ctx := t.Context()
	// One call of 4 attempts: the third failure opens the circuit; the
	// fourth attempt is refused by it.
	err := get(ctx, g)
	if !errors.Is(err, provider.ErrUnavailable) || !g.Open() {
		t.Fatalf("err %v open %v", err, g.Open())
	}
	if inner.calls != 3 {
		t.Fatalf("%d provider calls, want 3 (the circuit refuses the fourth)", inner.calls)
	}
	if v := testutil.ToFloat64(m.ProviderCircuitOpen); v != 1 {
		t.Fatalf("circuit gauge %v", v)
	}
	// While open: no call reaches the provider; the error says when.
	err = g.Stop(ctx, "sb1")
	var u *provider.UnavailableError
	if !errors.As(err, &u) || !u.NotActed || u.After <= 0 || !errors.Is(err, guard.ErrCircuitOpen) || !strings.Contains(err.Error(), "circuit open") {
		t.Fatalf("open circuit: %v", err)
	}
	if inner.calls != 3 {
		t.Fatalf("the open circuit let a call through (%d)", inner.calls)
	}
	if ra, ok := retry.After(err); !ok || ra > time.Minute {
		t.Fatalf("retry after %v %v", ra, ok)
	}
	// After the cooldown one probe goes through; it succeeds (the script
	// has one failure left, so first fail → still open).
	c.Add(2 * time.Minute)
	if err := get(ctx, g); !errors.Is(err, provider.ErrUnavailable) {
		t.Fatalf("probe: %v", err)
	}
	c.Add(2 * time.Minute)
	if err := get(ctx, g); err != nil || g.Open() {
		t.Fatalf("second probe: %v open %v", err, g.Open())
	}
	if v := testutil.ToFloat64(m.ProviderCircuitOpen); v != 0 {
		t.Fatalf("circuit gauge %v after closing", v)
	}
	if n := testutil.ToFloat64(m.ProviderCalls.WithLabelValues("stop", "circuit_open")); n != 1 {
		t.Fatalf("circuit_open count %v", n)
	}
	if n := testutil.ToFloat64(m.ProviderCalls.WithLabelValues("get", "ok")); n != 1 {
		t.Fatalf("get ok count %v", n)
	}
}

// Answers that are not transient do not open the circuit.
func TestBreakerIgnoresRefusals(t *testing.T) {
	inner := &scripted{script: []error{provider.ErrNotFound, provider.ErrNotFound, provider.ErrConflict, provider.ErrQuota, provider.ErrNotFound}}
	g, _, _ := newGuard(inner, nil)
	for range 5 {
		_ = get(t.Context(), g)
	}
	if g.Open() {
		t.Fatal("refusals opened the circuit")
	}
}

func TestResult(t *testing.T) {
	for err, want := range map[error]string{
		nil: "ok", provider.ErrNotFound: "not_found", e5xx: "unavailable", provider.ErrQuota: "quota",
		provider.ErrUnauthorized: "unauthorized", provider.ErrFailed: "failed", errors.New("x"): "error",
		&provider.UnavailableError{Op: "get", Err: guard.ErrCircuitOpen}: "circuit_open",
	} {
		if got := guard.Result(err); got != want {
			t.Errorf("Result(%v) = %s, want %s", err, got, want)
		}
	}
}
