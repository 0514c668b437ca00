package daytona_test

import (
	"context"
	"encoding/json"
	"errors"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"net/url"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/sandkeep/sandkeep/internal/provider"
	"github.com/sandkeep/sandkeep/internal/provider/daytona"
	"github.com/sandkeep/sandkeep/internal/provider/daytona/fakedaytona"
	"github.com/sandkeep/sandkeep/internal/provider/faulty"
	"github.com/sandkeep/sandkeep/internal/provider/guard"
	"github.com/sandkeep/sandkeep/internal/provider/providertest"
	"github.com/sandkeep/sandkeep/internal/retry"
)

// sleeps records the client's waits between attempts instead of waiting.
type sleeps struct {
	mu sync.Mutex
	d  []time.Duration
}

func (s *sleeps) sleep(ctx context.Context, d time.Duration) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.d = append(s.d, d)
	return ctx.Err()
}

func (s *sleeps) get() []time.Duration {
	s.mu.Lock()
	defer s.mu.Unlock()
	return append([]time.Duration(nil), s.d...)
}

func newClient(t *testing.T, fake *fakedaytona.Server, base string, mod ...func(*daytona.Config)) (*daytona.Client, *sleeps) {
	t.Helper()
	sl := &sleeps{}
	cfg := daytona.Config{
		APIURL: base, APIKey: fake.APIKey(), OrganizationID: fake.OrganizationID(),
		RequestTimeout: 10 * time.Second, Sleep: sl.sleep,
	}
	for _, m := range mod {
		m(&cfg)
	}
	c, err := daytona.New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	return c, sl
}

func TestConformance(t *testing.T) {
	for _, tt := range []struct {
		name string
		opts fakedaytona.Options
	}{
		{"instant", fakedaytona.Options{}},
		{"slow", fakedaytona.Options{Polls: 3}},
		{"paginated", fakedaytona.Options{Polls: 1, Paginated: true}},
	} {
		t.Run(tt.name, func(t *testing.T) {
			fake, base := fakedaytona.Start(t, tt.opts)
			c, _ := newClient(t, fake, base)
			providertest.RunWith(t, func(t *testing.T) provider.Provider { return c }, providertest.Options{
				Poll: time.Millisecond, Timeout: 30 * time.Second,
				Spec: func(_ *testing.T, labels map[string]string) provider.CreateSpec {
					return provider.CreateSpec{Labels: labels, Env: map[string]string{provider.EnvToken: "skt_x"}, Snapshot: "sandkeep-base"}
				},
			})
		})
	}
}

// TestConformanceUnderFaults: the client keeps the provider's guarantees
// while the API answers 503, 502 and 429 at random and holds some reads
// past the client's timeout; and behind the coordinator's guard when the
// faults come from the provider interface itself (package faulty).
func TestConformanceUnderFaults(t *testing.T) {
	spec := func(_ *testing.T, labels map[string]string) provider.CreateSpec {
		return provider.CreateSpec{Labels: labels, Env: map[string]string{provider.EnvToken: "skt_x"}, Snapshot: "sandkeep-base"}
	}
	t.Run("api chaos", func(t *testing.T) {
		fake, base := fakedaytona.Start(t, fakedaytona.Options{Polls: 1, Chaos: &fakedaytona.Chaos{
			Seed: 3, ServerError: 0.1, Throttle: 0.1, SlowGets: 0.05, Delay: 300 * time.Millisecond}})
		c, _ := newClient(t, fake, base, func(c *daytona.Config) {
			c.RequestTimeout, c.MaxAttempts, c.Sleep = 100*time.Millisecond, 12, nil
			c.RetryMin, c.RetryMax = time.Millisecond, 5*time.Millisecond
		})
		t.Cleanup(func() { // after the parallel subtests
			var failed int
			for _, r := range fake.Requests() {
				if r.Status == http.StatusServiceUnavailable || r.Status == http.StatusBadGateway || r.Status == http.StatusTooManyRequests {
					failed++
				}
			}
			if failed == 0 {
				t.Error("no fault was injected")
			}
		})
		providertest.RunWith(t, func(t *testing.T) provider.Provider { return c }, providertest.Options{
			Poll: time.Millisecond, Timeout: 30 * time.Second, Spec: spec})
	})
	t.Run("interface faults behind the guard", func(t *testing.T) {
		fake, base := fakedaytona.Start(t, fakedaytona.Options{Polls: 1})
		c, _ := newClient(t, fake, base)
		// No hangs here: a create that hangs is ambiguous (it may have
		// made a sandbox), so it is not repeated; the lifecycle's ensure
		// replaces it instead (internal/e2e's soak test).
		fl := faulty.New(c, faulty.Faults{Seed: 5, Unavailable: 0.1, Throttle: 0.1, Slow: 5 * time.Millisecond})
		g := guard.New(fl, guard.Config{CallTimeout: 100 * time.Millisecond, Attempts: 8, Threshold: 1000,
			Backoff: retry.Backoff{Min: time.Millisecond, Max: 5 * time.Millisecond}, Log: slog.New(slog.DiscardHandler)})
		t.Cleanup(func() {
			if c := fl.Counts(); c["unavailable"]+c["throttle"] == 0 {
				t.Errorf("no fault was injected: %v", c)
			}
		})
		providertest.RunWith(t, func(t *testing.T) provider.Provider { return g }, providertest.Options{
			Poll: time.Millisecond, Timeout: 30 * time.Second, Spec: spec})
	})
}

func TestCreateRequest(t *testing.T) {
	fake, base := fakedaytona.Start(t, fakedaytona.Options{})
	c, _ := newClient(t, fake, base, func(c *daytona.Config) { c.Target = "eu" })
	ctx := t.Context()

	env := map[string]string{provider.EnvCoordinator: "coord:7420", provider.EnvToken: "skt_secret", provider.EnvSandboxID: "sbx_1"}
	sb, err := c.Create(ctx, provider.CreateSpec{
		Labels: map[string]string{provider.LabelProject: "prj_1"}, Env: env, Snapshot: "snap-1",
	})
	if err != nil {
		t.Fatal(err)
	}
	if sb.State != provider.StateStarted || sb.ProviderState != "started" || sb.CreatedAt.IsZero() {
		t.Fatalf("created %+v", sb)
	}
	got, _ := fake.Sandbox(sb.ID)
	if got.Snapshot != "snap-1" || got.Target != "eu" || got.Env[provider.EnvToken] != "skt_secret" || got.Labels[provider.LabelProject] != "prj_1" {
		t.Fatalf("fake got %+v", got)
	}
	// AutoStopMinutes 0 must reach Daytona as an explicit 0 (disabled), not
	// be omitted (Daytona's default: 15 minutes).
	if got.AutoStopInterval == nil || *got.AutoStopInterval != 0 {
		t.Fatalf("autoStopInterval = %v, want 0", got.AutoStopInterval)
	}

	// From an image: a build, resources allowed.
	sb, err = c.Create(ctx, provider.CreateSpec{Image: "ghcr.io/acme/dev:1.2", CPU: 2, MemoryGiB: 4, DiskGiB: 10, AutoStopMinutes: 30})
	if err != nil {
		t.Fatal(err)
	}
	got, _ = fake.Sandbox(sb.ID)
	if got.BuildInfo == nil || got.BuildInfo.DockerfileContent != "FROM ghcr.io/acme/dev:1.2\n" || got.CPU != 2 || got.Memory != 4 || got.Disk != 10 || *got.AutoStopInterval != 30 {
		t.Fatalf("image sandbox: %+v (build %+v)", got, got.BuildInfo)
	}

	// Refused before any request: what Daytona would refuse.
	n := len(fake.Requests())
	for _, spec := range []provider.CreateSpec{
		{Snapshot: "s", CPU: 2},
		{CPU: 1},
		{Snapshot: "s", Image: "i"},
		{Image: "bad\nRUN rm -rf /"},
		{AutoStopMinutes: -1},
	} {
		if _, err := c.Create(ctx, spec); err == nil {
			t.Errorf("Create(%+v) succeeded", spec)
		}
	}
	if len(fake.Requests()) != n {
		t.Fatalf("invalid specs reached the API")
	}
	// The headers.
	for _, r := range fake.Requests() {
		if !r.Authorized || r.Organization != fake.OrganizationID() {
			t.Fatalf("request %+v", r)
		}
	}
}

func TestAuthErrors(t *testing.T) {
	fake, base := fakedaytona.Start(t, fakedaytona.Options{})
	c, sl := newClient(t, fake, base, func(c *daytona.Config) { c.APIKey = "wrong" })
	_, err := c.Get(t.Context(), "x")
	if !errors.Is(err, provider.ErrUnauthorized) {
		t.Fatalf("bad key: %v, want ErrUnauthorized", err)
	}
	var apiErr *daytona.APIError
	if !errors.As(err, &apiErr) || apiErr.StatusCode != 401 {
		t.Fatalf("bad key: %#v", err)
	}
	if _, err := c.Create(t.Context(), provider.CreateSpec{}); !errors.Is(err, provider.ErrUnauthorized) {
		t.Fatalf("bad key create: %v", err)
	}
	// Another organization: 403.
	c2, _ := newClient(t, fake, base, func(c *daytona.Config) { c.OrganizationID = "someone-else" })
	if _, err := c2.List(t.Context(), nil); !errors.Is(err, provider.ErrUnauthorized) {
		t.Fatalf("wrong organization: %v, want ErrUnauthorized", err)
	}
	if len(sl.get()) != 0 {
		t.Fatalf("auth errors were retried: %v", sl.get())
	}
	if _, err := daytona.New(daytona.Config{}); err == nil {
		t.Fatal("New without an API key succeeded")
	}
	if _, err := daytona.New(daytona.Config{APIKey: "k", APIURL: "ftp://x"}); err == nil {
		t.Fatal("New with an ftp URL succeeded")
	}
}

func TestNotFoundAndConflict(t *testing.T) {
	fake, base := fakedaytona.Start(t, fakedaytona.Options{Manual: true})
	c, sl := newClient(t, fake, base)
	ctx := t.Context()
	if _, err := c.Get(ctx, "nope"); !errors.Is(err, provider.ErrNotFound) {
		t.Fatalf("Get missing: %v", err)
	}
	sb, err := c.Create(ctx, provider.CreateSpec{})
	if err != nil {
		t.Fatal(err)
	}
	if sb.State != provider.StateCreating || sb.ProviderState != "creating" {
		t.Fatalf("manual fake: created in %s/%s", sb.State, sb.ProviderState)
	}
	// While it is being created: stop and delete are refused (409).
	if err := c.Stop(ctx, sb.ID); !errors.Is(err, provider.ErrConflict) {
		t.Fatalf("Stop while creating: %v, want ErrConflict", err)
	}
	if err := c.Delete(ctx, sb.ID); !errors.Is(err, provider.ErrConflict) {
		t.Fatalf("Delete while creating: %v, want ErrConflict", err)
	}
	fake.Advance(sb.ID)
	// Started: archive needs stopped (400 SANDBOX_STATE_ERROR).
	if err := c.Archive(ctx, sb.ID); !errors.Is(err, provider.ErrConflict) {
		t.Fatalf("Archive while started: %v, want ErrConflict", err)
	}
	var apiErr *daytona.APIError
	if err := c.Archive(ctx, sb.ID); !errors.As(err, &apiErr) || apiErr.StatusCode != 400 || apiErr.Code != "SANDBOX_STATE_ERROR" || apiErr.Message != "Sandbox is not stopped" {
		t.Fatalf("Archive error: %#v", err)
	}
	// Start of a started sandbox: fine.
	if err := c.Start(ctx, sb.ID); err != nil {
		t.Fatalf("Start while started: %v", err)
	}
	// Stop twice: the second is refused by Daytona (in progress), and the
	// client sees the sandbox stopping: done.
	if err := c.Stop(ctx, sb.ID); err != nil {
		t.Fatal(err)
	}
	if err := c.Stop(ctx, sb.ID); err != nil {
		t.Fatalf("second Stop: %v", err)
	}
	// Start while stopping: a conflict.
	if err := c.Start(ctx, sb.ID); !errors.Is(err, provider.ErrConflict) {
		t.Fatalf("Start while stopping: %v", err)
	}
	fake.Advance(sb.ID)
	if err := c.Stop(ctx, sb.ID); err != nil { // stopped: 400 "Sandbox is not started", then done
		t.Fatalf("Stop while stopped: %v", err)
	}
	// Legacy code-less 400s are conflicts too.
	fake.FailNext(fakedaytona.Fault{Status: 400, Message: "State change in progress"})
	if err := c.Start(ctx, sb.ID); !errors.Is(err, provider.ErrConflict) {
		t.Fatalf("legacy 400: %v", err)
	}
	// What Daytona cannot do for this sandbox.
	fake.FailNext(fakedaytona.Fault{Status: 400, Message: "Ephemeral sandboxes cannot be archived"})
	if err := c.Archive(ctx, sb.ID); !errors.Is(err, provider.ErrUnsupported) {
		t.Fatalf("ephemeral archive: %v", err)
	}
	// A 400 that is not about state is a plain error.
	fake.FailNext(fakedaytona.Fault{Status: 400, Message: "Invalid class"})
	if err := c.Start(ctx, sb.ID); err == nil || errors.Is(err, provider.ErrConflict) || errors.Is(err, provider.ErrUnavailable) {
		t.Fatalf("validation 400: %v", err)
	}
	// Delete goes through destroying; a second Delete meanwhile is fine,
	// and so is one after it is gone.
	if err := c.Delete(ctx, sb.ID); err != nil {
		t.Fatal(err)
	}
	if err := c.Delete(ctx, sb.ID); err != nil {
		t.Fatalf("Delete while destroying: %v", err)
	}
	got, err := c.Get(ctx, sb.ID)
	if err != nil || got.State != provider.StateDestroyed || got.ProviderState != "destroying" {
		t.Fatalf("Get while destroying: %+v, %v", got, err)
	}
	fake.Advance(sb.ID)
	if _, err := c.Get(ctx, sb.ID); !errors.Is(err, provider.ErrNotFound) {
		t.Fatalf("Get destroyed: %v", err)
	}
	if err := c.Delete(ctx, sb.ID); err != nil {
		t.Fatalf("Delete destroyed: %v", err)
	}
	for _, id := range []string{"", ".."} {
		if _, err := c.Get(ctx, id); !errors.Is(err, provider.ErrNotFound) {
			t.Fatalf("Get(%q): %v", id, err)
		}
	}
	if len(sl.get()) != 0 {
		t.Fatalf("4xx were retried: %v", sl.get())
	}
}

func TestQuota(t *testing.T) {
	fake, base := fakedaytona.Start(t, fakedaytona.Options{MaxSandboxes: 1})
	c, _ := newClient(t, fake, base)
	if _, err := c.Create(t.Context(), provider.CreateSpec{}); err != nil {
		t.Fatal(err)
	}
	if _, err := c.Create(t.Context(), provider.CreateSpec{}); !errors.Is(err, provider.ErrQuota) {
		t.Fatalf("over quota: %v, want ErrQuota", err)
	}
	// The older API's quota answer: 403 with a message.
	fake.FailNext(fakedaytona.Fault{Status: 403, Message: "Total CPU limit exceeded. Maximum allowed: 10.\nTo increase concurrency limits, upgrade your organization's Tier"})
	if _, err := c.Create(t.Context(), provider.CreateSpec{}); !errors.Is(err, provider.ErrQuota) {
		t.Fatalf("legacy quota: %v, want ErrQuota", err)
	}
}

func TestRateLimitRetryAfter(t *testing.T) {
	fake, base := fakedaytona.Start(t, fakedaytona.Options{})
	c, sl := newClient(t, fake, base)
	fake.FailNext(fakedaytona.Fault{Status: 429, Count: 2, RetryAfter: "7", Message: "ThrottlerException: Too Many Requests"})
	sb, err := c.Create(t.Context(), provider.CreateSpec{Labels: map[string]string{"a": "b"}})
	if err != nil {
		t.Fatalf("Create after 429s: %v", err)
	}
	if got := sl.get(); len(got) != 2 || got[0] != 7*time.Second || got[1] != 7*time.Second {
		t.Fatalf("waits %v, want Retry-After (7s) twice", got)
	}
	// Exactly one sandbox was made.
	list, err := c.List(t.Context(), map[string]string{"a": "b"})
	if err != nil || len(list) != 1 || list[0].ID != sb.ID {
		t.Fatalf("List = %v, %v", list, err)
	}

	// An HTTP-date Retry-After.
	fake.FailNext(fakedaytona.Fault{Status: 429, RetryAfter: time.Now().Add(3 * time.Second).UTC().Format(http.TimeFormat)})
	if _, err := c.Get(t.Context(), sb.ID); err != nil {
		t.Fatal(err)
	}
	if got := sl.get(); len(got) != 3 || got[2] <= time.Second || got[2] > 3*time.Second {
		t.Fatalf("wait for an HTTP-date Retry-After: %v", got)
	}

	// A Retry-After longer than the cap gives up at once.
	fake.FailNext(fakedaytona.Fault{Status: 429, RetryAfter: "3600"})
	if _, err := c.Get(t.Context(), sb.ID); !errors.Is(err, provider.ErrUnavailable) {
		t.Fatalf("long Retry-After: %v, want ErrUnavailable", err)
	}
	// So does one that would pass the context's deadline.
	fake.FailNext(fakedaytona.Fault{Status: 429, RetryAfter: "30"})
	ctx, cancel := context.WithTimeout(t.Context(), 5*time.Second)
	defer cancel()
	if _, err := c.Get(ctx, sb.ID); !errors.Is(err, provider.ErrUnavailable) || !strings.Contains(err.Error(), "deadline") {
		t.Fatalf("Retry-After past the deadline: %v", err)
	}
	if n := len(sl.get()); n != 3 {
		t.Fatalf("gave-up cases waited: %v", sl.get())
	}
}

func TestServerErrors(t *testing.T) {
	fake, base := fakedaytona.Start(t, fakedaytona.Options{})
	c, sl := newClient(t, fake, base, func(c *daytona.Config) {
		c.MaxAttempts = 4
		c.RetryMin, c.RetryMax = 100*time.Millisecond, 250*time.Millisecond
	})
	ctx := t.Context()
	sb, err := c.Create(ctx, provider.CreateSpec{})
	if err != nil {
		t.Fatal(err)
	}

	// 503 then success.
	fake.FailNext(fakedaytona.Fault{Status: 503, Count: 2})
	if got, err := c.Get(ctx, sb.ID); err != nil || got.ID != sb.ID {
		t.Fatalf("Get after two 503s: %+v, %v", got, err)
	}
	waits := sl.get()
	if len(waits) != 2 || waits[0] < 100*time.Millisecond || waits[0] > 120*time.Millisecond || waits[1] < 200*time.Millisecond || waits[1] > 240*time.Millisecond {
		t.Fatalf("backoff waits %v, want ~100ms then ~200ms", waits)
	}

	// 503 forever: ErrUnavailable after MaxAttempts, the waits capped.
	fake.FailNext(fakedaytona.Fault{Status: 503, Count: -1, Message: "upstream down"})
	before := len(fake.Requests())
	err = c.Stop(ctx, sb.ID)
	if !errors.Is(err, provider.ErrUnavailable) || !strings.Contains(err.Error(), "upstream down") || !strings.Contains(err.Error(), "after 4 attempts") {
		t.Fatalf("503 forever: %v", err)
	}
	if n := len(fake.Requests()) - before; n != 4 {
		t.Fatalf("%d attempts, want 4", n)
	}
	for _, w := range sl.get()[2:] {
		if w > 300*time.Millisecond {
			t.Fatalf("wait %v above RetryMax", w)
		}
	}
	if _, err := c.List(ctx, nil); !errors.Is(err, provider.ErrUnavailable) {
		t.Fatalf("List while down: %v", err)
	}
	fake.ClearFaults()

	// Create is not idempotent: a 500 (the request may have been acted on)
	// is not retried; a 503 is.
	before = len(fake.Requests())
	fake.FailNext(fakedaytona.Fault{Status: 500})
	if _, err := c.Create(ctx, provider.CreateSpec{}); !errors.Is(err, provider.ErrUnavailable) {
		t.Fatalf("create 500: %v", err)
	}
	if n := len(fake.Requests()) - before; n != 1 {
		t.Fatalf("create retried a 500: %d requests", n)
	}
	fake.FailNext(fakedaytona.Fault{Status: 503})
	if _, err := c.Create(ctx, provider.CreateSpec{}); err != nil {
		t.Fatalf("create after a 503: %v", err)
	}
	// Idempotent operations retry a 500.
	fake.FailNext(fakedaytona.Fault{Status: 500})
	if err := c.Stop(ctx, sb.ID); err != nil {
		t.Fatalf("stop after a 500: %v", err)
	}

	// A cancelled context stops the retries.
	fake.FailNext(fakedaytona.Fault{Status: 503, Count: -1})
	cctx, cancel := context.WithCancel(ctx)
	cancel()
	if _, err := c.Get(cctx, sb.ID); !errors.Is(err, context.Canceled) {
		t.Fatalf("cancelled: %v", err)
	}
}

func TestUnreachable(t *testing.T) {
	// A listener that is closed at once: connection refused.
	hs := httptest.NewServer(http.NotFoundHandler())
	base := hs.URL + "/api"
	hs.Close()
	sl := &sleeps{}
	c, err := daytona.New(daytona.Config{APIURL: base, APIKey: "k", MaxAttempts: 3, Sleep: sl.sleep})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := c.Get(t.Context(), "x"); !errors.Is(err, provider.ErrUnavailable) {
		t.Fatalf("unreachable: %v", err)
	}
	// Connection refused: nothing was sent, so even create retries.
	if _, err := c.Create(t.Context(), provider.CreateSpec{}); !errors.Is(err, provider.ErrUnavailable) {
		t.Fatalf("unreachable create: %v", err)
	}
	if n := len(sl.get()); n != 4 {
		t.Fatalf("%d waits, want 2 per operation", n)
	}
}

func TestRequestTimeout(t *testing.T) {
	block := make(chan struct{})
	var mu sync.Mutex
	calls := 0
	hs := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		mu.Lock()
		calls++
		n := calls
		mu.Unlock()
		if n == 1 {
			select { // the first attempt hangs past the request timeout
			case <-block:
			case <-r.Context().Done():
			}
			return
		}
		w.Header().Set("Content-Type", "application/json")
		_, _ = w.Write([]byte(`{"id":"s1","state":"started","labels":{}}`))
	}))
	defer hs.Close()
	defer close(block)
	c, err := daytona.New(daytona.Config{APIURL: hs.URL, APIKey: "k", RequestTimeout: 50 * time.Millisecond, Sleep: (&sleeps{}).sleep})
	if err != nil {
		t.Fatal(err)
	}
	sb, err := c.Get(t.Context(), "s1")
	if err != nil || sb.State != provider.StateStarted {
		t.Fatalf("Get after a timed-out attempt: %+v, %v", sb, err)
	}
}

func TestSlowTransitions(t *testing.T) {
	fake, base := fakedaytona.Start(t, fakedaytona.Options{Polls: 2})
	c, _ := newClient(t, fake, base)
	ctx := t.Context()
	sb, err := c.Create(ctx, provider.CreateSpec{Image: "ubuntu:24.04"})
	if err != nil {
		t.Fatal(err)
	}
	// A build: pending_build → building_snapshot → creating → started, each
	// seen by two polls.
	var seen []string
	for range 20 {
		got, err := c.Get(ctx, sb.ID)
		if err != nil {
			t.Fatal(err)
		}
		if len(seen) == 0 || seen[len(seen)-1] != got.ProviderState {
			seen = append(seen, got.ProviderState)
			if got.State != daytona.MapState(got.ProviderState) {
				t.Fatalf("state %s for %s", got.State, got.ProviderState)
			}
		}
		if got.State == provider.StateStarted {
			break
		}
	}
	if strings.Join(seen, ",") != "pending_build,building_snapshot,creating,started" {
		t.Fatalf("states seen: %v", seen)
	}

	// Stop returns while stopping; WaitForState sees it through.
	if err := c.Stop(ctx, sb.ID); err != nil {
		t.Fatal(err)
	}
	if got, _ := c.Get(ctx, sb.ID); got.State != provider.StateStopping {
		t.Fatalf("after Stop: %s", got.State)
	}
	if _, err := provider.WaitForState(ctx, c, sb.ID, provider.StateStopped, time.Millisecond); err != nil {
		t.Fatal(err)
	}
	// Archive: archiving (reported stopped) → archived; start: restoring
	// (starting) → started.
	if err := c.Archive(ctx, sb.ID); err != nil {
		t.Fatal(err)
	}
	if got, _ := c.Get(ctx, sb.ID); got.State != provider.StateStopped || got.ProviderState != "archiving" {
		t.Fatalf("archiving: %+v", got)
	}
	if err := c.Archive(ctx, sb.ID); err != nil { // in progress: done
		t.Fatalf("second Archive: %v", err)
	}
	if _, err := provider.WaitForState(ctx, c, sb.ID, provider.StateArchived, time.Millisecond); err != nil {
		t.Fatal(err)
	}
	if err := c.Archive(ctx, sb.ID); err != nil { // archived: done
		t.Fatalf("Archive of an archived sandbox: %v", err)
	}
	if err := c.Start(ctx, sb.ID); err != nil {
		t.Fatal(err)
	}
	if got, _ := c.Get(ctx, sb.ID); got.State != provider.StateStarting || got.ProviderState != "restoring" {
		t.Fatalf("restoring: %+v", got)
	}
	if err := c.Start(ctx, sb.ID); err != nil { // restoring counts as starting: done
		t.Fatalf("second Start: %v", err)
	}
	if _, err := provider.WaitForState(ctx, c, sb.ID, provider.StateStarted, time.Millisecond); err != nil {
		t.Fatal(err)
	}

	// A build that fails: WaitForState reports it with the reason.
	sb2, err := c.Create(ctx, provider.CreateSpec{Image: "nope:latest"})
	if err != nil {
		t.Fatal(err)
	}
	fake.SetState(sb2.ID, fakedaytona.BuildFailed, "image nope:latest not found")
	_, err = provider.WaitForState(ctx, c, sb2.ID, provider.StateStarted, time.Millisecond)
	if !errors.Is(err, provider.ErrFailed) || !strings.Contains(err.Error(), "image nope:latest not found") {
		t.Fatalf("build failed: %v", err)
	}
}

func TestManualAdvance(t *testing.T) {
	fake, base := fakedaytona.Start(t, fakedaytona.Options{Manual: true})
	c, _ := newClient(t, fake, base)
	ctx := t.Context()
	sb, err := c.Create(ctx, provider.CreateSpec{})
	if err != nil {
		t.Fatal(err)
	}
	// Polling alone does not move it.
	for range 5 {
		if got, _ := c.Get(ctx, sb.ID); got.State != provider.StateCreating {
			t.Fatalf("manual fake moved on a poll: %s", got.State)
		}
	}
	done := make(chan error, 1)
	go func() {
		_, err := provider.WaitForState(ctx, c, sb.ID, provider.StateStarted, time.Millisecond)
		done <- err
	}()
	if n := fake.AdvanceAll(); n != 1 {
		t.Fatalf("AdvanceAll moved %d", n)
	}
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	if fake.Advance(sb.ID) {
		t.Fatal("Advance of a settled sandbox moved it")
	}
}

func TestListEncoding(t *testing.T) {
	fake, base := fakedaytona.Start(t, fakedaytona.Options{})
	c, _ := newClient(t, fake, base)
	ctx := t.Context()
	sel := map[string]string{provider.LabelProject: "prj_a&b=c d", "z": `"{}"`, "a": "ü/?#%"}
	sb, err := c.Create(ctx, provider.CreateSpec{Labels: map[string]string{provider.LabelProject: "prj_a&b=c d", "z": `"{}"`, "a": "ü/?#%", "extra": "1"}})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := c.Create(ctx, provider.CreateSpec{Labels: map[string]string{provider.LabelProject: "prj_a"}}); err != nil {
		t.Fatal(err)
	}
	list, err := c.List(ctx, sel)
	if err != nil || len(list) != 1 || list[0].ID != sb.ID {
		t.Fatalf("List = %+v, %v", list, err)
	}
	// The selector went as one JSON object in the "labels" parameter,
	// with its keys sorted.
	reqs := fake.Requests()
	last := reqs[len(reqs)-1]
	if last.Method != "GET" || last.Path != "/api/sandbox" {
		t.Fatalf("last request %+v", last)
	}
	q, err := url.ParseQuery(last.RawQuery)
	if err != nil {
		t.Fatal(err)
	}
	want, _ := json.Marshal(sel)
	if q.Get("labels") != string(want) || !strings.HasPrefix(q.Get("labels"), `{"a":`) {
		t.Fatalf("labels parameter %q, want %q", q.Get("labels"), want)
	}
	var back map[string]string
	if err := json.Unmarshal([]byte(q.Get("labels")), &back); err != nil || len(back) != 3 || back["a"] != "ü/?#%" {
		t.Fatalf("labels parameter decodes to %v, %v", back, err)
	}
	// No selector: no labels parameter, everything listed.
	all, err := c.List(ctx, nil)
	if err != nil || len(all) != 2 {
		t.Fatalf("List(nil) = %v, %v", all, err)
	}
	reqs = fake.Requests()
	if q, _ := url.ParseQuery(reqs[len(reqs)-1].RawQuery); q.Has("labels") {
		t.Fatalf("empty selector sent labels=%q", q.Get("labels"))
	}
}

func TestListPages(t *testing.T) {
	fake, base := fakedaytona.Start(t, fakedaytona.Options{Paginated: true})
	c, _ := newClient(t, fake, base)
	ctx := t.Context()
	want := map[string]bool{}
	for range 230 {
		sb, err := c.Create(ctx, provider.CreateSpec{Labels: map[string]string{"p": "1"}})
		if err != nil {
			t.Fatal(err)
		}
		want[sb.ID] = true
	}
	if _, err := c.Create(ctx, provider.CreateSpec{Labels: map[string]string{"p": "2"}}); err != nil {
		t.Fatal(err)
	}
	before := len(fake.Requests())
	list, err := c.List(ctx, map[string]string{"p": "1"})
	if err != nil {
		t.Fatal(err)
	}
	if len(list) != len(want) {
		t.Fatalf("List returned %d, want %d", len(list), len(want))
	}
	for _, sb := range list {
		if !want[sb.ID] {
			t.Fatalf("unexpected %s", sb.ID)
		}
	}
	if n := len(fake.Requests()) - before; n != 3 {
		t.Fatalf("%d page requests, want 3", n)
	}
}

// A server that ignores the labels parameter cannot widen List's answer.
func TestListFiltersLocally(t *testing.T) {
	hs := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "application/json")
		_, _ = w.Write([]byte(`[{"id":"a","state":"started","labels":{"sandkeep.project":"p1"}},
			{"id":"b","state":"started","labels":{"sandkeep.project":"p2"}},
			{"id":"c","state":"destroying","labels":{"sandkeep.project":"p1"}},
			{"id":"d","state":"archived","labels":{"sandkeep.project":"p1"},"createdAt":"2025-06-01T10:00:00.000Z"}]`))
	}))
	defer hs.Close()
	c, err := daytona.New(daytona.Config{APIURL: hs.URL, APIKey: "k"})
	if err != nil {
		t.Fatal(err)
	}
	list, err := c.List(t.Context(), map[string]string{provider.LabelProject: "p1"})
	if err != nil {
		t.Fatal(err)
	}
	if len(list) != 2 || list[0].ID != "a" || list[1].ID != "d" || list[1].State != provider.StateArchived {
		t.Fatalf("List = %+v", list)
	}
	if want := time.Date(2025, 6, 1, 10, 0, 0, 0, time.UTC); !list[1].CreatedAt.Equal(want) {
		t.Fatalf("CreatedAt = %v", list[1].CreatedAt)
	}
}

func TestMapState(t *testing.T) {
	for raw, want := range map[string]provider.State{
		"creating": provider.StateCreating, "pending_build": provider.StateCreating, "building_snapshot": provider.StateCreating,
		"pulling_snapshot": provider.StateCreating, "unknown": provider.StateCreating,
		"starting": provider.StateStarting, "restoring": provider.StateStarting,
		"started": provider.StateStarted, "snapshotting": provider.StateStarted, "forking": provider.StateStarted,
		"stopping": provider.StateStopping,
		"stopped":  provider.StateStopped, "archiving": provider.StateStopped,
		"archived":   provider.StateArchived,
		"destroying": provider.StateDestroyed, "destroyed": provider.StateDestroyed,
		"error": provider.StateError, "build_failed": provider.StateError, "something_new": provider.StateError, "": provider.StateError,
	} {
		if got := daytona.MapState(raw); got != want {
			t.Errorf("MapState(%q) = %s, want %s", raw, got, want)
		}
	}
}
