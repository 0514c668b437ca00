package lifecycle

import (
	"context"
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/sandkeep/sandkeep/internal/metastore"
	"github.com/sandkeep/sandkeep/internal/policy"
	"github.com/sandkeep/sandkeep/internal/provider"
	"github.com/sandkeep/sandkeep/internal/provider/daytona"
	"github.com/sandkeep/sandkeep/internal/provider/daytona/fakedaytona"
)

// agentFollower wraps a provider: whenever Get reports a sandbox started,
// its (fake) agent is connected at the head; when it is stopped or deleted
// the agent goes away — what sandkeep-agent run in a Daytona sandbox does.
type agentFollower struct {
	provider.Provider
	e *env
}

func (a agentFollower) Get(ctx context.Context, id string) (provider.Sandbox, error) {
	sb, err := a.Provider.Get(ctx, id)
	if err == nil {
		a.follow(sb)
	}
	return sb, err
}

func (a agentFollower) follow(sb provider.Sandbox) {
	sid := sb.Labels[LabelSandbox]
	if sid == "" {
		return
	}
	switch sb.State {
	case provider.StateStarted:
		if _, ok := a.e.m.agentOf(metastore.Sandbox{ID: sid, ProjectID: sb.Labels[provider.LabelProject]}); !ok {
			a.e.agents.up(sb.Labels[provider.LabelProject], sid, a.e.head(sb.Labels[provider.LabelProject]))
		}
	default:
		a.e.agents.down(sid)
	}
}

func (a agentFollower) Stop(ctx context.Context, id string) error {
	err := a.Provider.Stop(ctx, id)
	if err == nil {
		if sb, gerr := a.Provider.Get(ctx, id); gerr == nil {
			a.e.agents.down(sb.Labels[LabelSandbox])
		}
	}
	return err
}

// newDaytonaEnv is an env whose provider is the Daytona client against the
// fake Daytona API.
func newDaytonaEnv(t *testing.T, opts fakedaytona.Options, mod ...func(*Config)) (*env, *fakedaytona.Server) {
	t.Helper()
	fake, apiURL := fakedaytona.Start(t, opts)
	client, err := daytona.New(daytona.Config{APIURL: apiURL, APIKey: fake.APIKey(), MaxAttempts: 3,
		Sleep: func(ctx context.Context, _ time.Duration) error { return ctx.Err() }})
	if err != nil {
		t.Fatal(err)
	}
	var e *env
	follower := &agentFollower{Provider: client}
	e = newEnv(t, append([]func(*Config){func(c *Config) { c.Provider = follower }}, mod...)...)
	follower.e = e
	return e, fake
}

// TestDaytonaLifecycle: create (with sandkeep's labels and env, auto-stop
// disabled), slow transitions followed across ticks, stop, verify, destroy.
func TestDaytonaLifecycle(t *testing.T) {
	e, fake := newDaytonaEnv(t, fakedaytona.Options{Polls: 2}, func(c *Config) {
		c.Policy = policy.Policy{StopAfter: 10 * time.Minute, DestroyAfter: time.Hour}
	})
	p := e.project("daytona")
	res := e.ensure(p)
	sb := res.Sandbox
	if !res.Created || sb.State != provider.StateStarted || sb.Provider != "daytona" || sb.ProviderID == "" {
		t.Fatalf("ensure: %+v", res)
	}
	dto, ok := fake.Sandbox(sb.ProviderID)
	if !ok {
		t.Fatal("the fake has no such sandbox")
	}
	if dto.Labels[provider.LabelProject] != p || dto.Labels[provider.LabelManaged] != "true" || dto.Labels[LabelSandbox] != sb.ID {
		t.Fatalf("labels: %v", dto.Labels)
	}
	if dto.Env[provider.EnvSandboxID] != sb.ID || dto.Env[provider.EnvCoordinator] != "127.0.0.1:1" || !strings.HasPrefix(dto.Env[provider.EnvToken], "skt_") {
		t.Fatalf("env: %v", dto.Env)
	}
	if dto.AutoStopInterval == nil || *dto.AutoStopInterval != 0 {
		t.Fatalf("autoStopInterval %v, want 0 (sandkeep decides)", dto.AutoStopInterval)
	}
	// The intervals saw creating, then started.
	ivs, _ := e.meta.SandboxIntervals(t.Context(), p, time.Time{})
	if len(ivs) < 2 || ivs[0].State != provider.StateCreating || ivs[len(ivs)-1].State != provider.StateStarted {
		t.Fatalf("intervals: %+v", ivs)
	}
	e.write(p)

	// Stop: stopping for a few polls, then stopped.
	e.advance(11*time.Minute, time.Minute)
	got := e.get(sb.ID)
	if got.State != provider.StateStopping && got.State != provider.StateStopped {
		t.Fatalf("after 11m: %s", got.State)
	}
	e.advance(3*time.Minute, time.Minute)
	if got := e.get(sb.ID); got.State != provider.StateStopped || !got.Flushed {
		t.Fatalf("after 14m: %s flushed %v", got.State, got.Flushed)
	}
	e.advance(50*time.Minute, 5*time.Minute)
	if got := e.get(sb.ID); got.State != provider.StateDestroyed {
		t.Fatalf("after 64m: %s (%s)", got.State, got.LastError)
	}
	if dto, _ := fake.Sandbox(sb.ProviderID); dto.State != fakedaytona.Destroyed && dto.State != fakedaytona.Destroying {
		t.Fatalf("Daytona state %s", dto.State)
	}

	// Back: a new sandbox (the old one is gone).
	res = e.ensure(p)
	if !res.Created || res.Sandbox.ID == sb.ID {
		t.Fatalf("second ensure: %+v", res)
	}
	// Stopped, then ensured: started again (Daytona's start), not replaced.
	if _, err := e.m.StopSandbox(t.Context(), res.Sandbox.ID); err != nil {
		t.Fatal(err)
	}
	if st := e.get(res.Sandbox.ID).State; st != provider.StateStopped {
		t.Fatalf("after StopSandbox: %s", st)
	}
	res2 := e.ensure(p)
	if res2.Created || !res2.Started || res2.Sandbox.ID != res.Sandbox.ID {
		t.Fatalf("ensure of a stopped Daytona sandbox: %+v", res2)
	}
}

// TestDaytonaErrors: 5xx answers are retried by the client; an outage that
// outlasts the retries fails the action, which is recorded and retried on a
// later tick; a quota refusal fails EnsureSandbox with ErrQuota and leaves
// no live row; a sandbox that fails at Daytona (error state) is recorded.
func TestDaytonaErrors(t *testing.T) {
	e, fake := newDaytonaEnv(t, fakedaytona.Options{MaxSandboxes: 1}, func(c *Config) {
		c.Policy = policy.Policy{StopAfter: 10 * time.Minute, DestroyAfter: time.Hour}
	})
	p := e.project("flaky")
	// Two 503s, then success: the create goes through.
	fake.FailNext(fakedaytona.Fault{Status: 503, Count: 2, Match: func(mp string) bool { return mp == "POST /sandbox" }})
	sb := e.ensure(p).Sandbox

	// Stop during an outage: every attempt 500s; nothing is recorded as
	// stopped, the error is kept, and the next tick after the outage stops.
	e.agents.setFlushErr(nil)
	fake.FailNext(fakedaytona.Fault{Status: 500, Count: -1, Match: func(mp string) bool { return strings.HasSuffix(mp, "/stop") }})
	e.advance(11*time.Minute, time.Minute)
	got := e.get(sb.ID)
	if got.State != provider.StateStarted || !strings.Contains(got.LastError, "stop") {
		t.Fatalf("stop during an outage: %s %q", got.State, got.LastError)
	}
	if e.reaper("stop", "error") < 1 {
		t.Fatal("failed stop not counted")
	}
	fake.ClearFaults()
	e.advance(time.Minute, time.Minute)
	if st := e.get(sb.ID).State; st != provider.StateStopped {
		t.Fatalf("after the outage: %s", st)
	}

	// Quota: a second project cannot get a sandbox.
	p2 := e.project("over-quota")
	if _, err := e.m.EnsureSandbox(t.Context(), p2); !errors.Is(err, provider.ErrQuota) {
		t.Fatalf("ensure over quota: %v, want ErrQuota", err)
	}
	if _, err := e.meta.LiveSandbox(t.Context(), p2); !errors.Is(err, metastore.ErrNotFound) {
		t.Fatalf("a refused create left a live row: %v", err)
	}

	// Daytona puts the sandbox in error: the reconciler records it, with
	// the reason; the policy flushes it (starting it) and keeps it until a
	// verified flush.
	fake.SetState(sb.ProviderID, fakedaytona.Error, "runner lost")
	if _, err := e.m.Reconcile(t.Context()); err != nil {
		t.Fatal(err)
	}
	if got := e.get(sb.ID); got.State != provider.StateError {
		t.Fatalf("after Daytona reported error: %s", got.State)
	}
}

// TestDaytonaReconcile: a Daytona sandbox with sandkeep's label and no row
// is destroyed; a row whose Daytona sandbox is gone is marked destroyed.
func TestDaytonaReconcile(t *testing.T) {
	e, fake := newDaytonaEnv(t, fakedaytona.Options{}, func(c *Config) { c.OrphanGrace = time.Nanosecond })
	p := e.project("drift")
	orphan, err := e.m.cfg.Provider.Create(t.Context(), provider.CreateSpec{Labels: map[string]string{provider.LabelManaged: "true", provider.LabelProject: p}})
	if err != nil {
		t.Fatal(err)
	}
	sb := e.ensure(p).Sandbox
	r, err := e.m.Reconcile(t.Context())
	if err != nil {
		t.Fatal(err)
	}
	if r.Orphans != 1 {
		t.Fatalf("reconcile: %+v", r)
	}
	if dto, _ := fake.Sandbox(orphan.ID); dto.State != fakedaytona.Destroyed && dto.State != fakedaytona.Destroying {
		t.Fatalf("orphan state at Daytona: %s", dto.State)
	}
	if st := e.get(sb.ID).State; st != provider.StateStarted {
		t.Fatalf("the known sandbox: %s", st)
	}
	// Deleted behind sandkeep's back.
	if err := e.m.cfg.Provider.Delete(t.Context(), sb.ProviderID); err != nil {
		t.Fatal(err)
	}
	if r, _ = e.m.Reconcile(t.Context()); r.MarkedDestroyed != 1 {
		t.Fatalf("reconcile after an outside delete: %+v", r)
	}
	if st := e.get(sb.ID).State; st != provider.StateDestroyed {
		t.Fatalf("row of the deleted sandbox: %s", st)
	}
}
