package lifecycle

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/sandkeep/sandkeep/internal/metastore"
	"github.com/sandkeep/sandkeep/internal/policy"
	"github.com/sandkeep/sandkeep/internal/provider"
	"github.com/sandkeep/sandkeep/internal/provider/faulty"
	"github.com/sandkeep/sandkeep/internal/provider/guard"
	"github.com/sandkeep/sandkeep/internal/retry"
	pb "github.com/sandkeep/sandkeep/proto/sandkeep/v1"
)

// withFaults puts the fake provider behind faults and the guard the
// coordinator uses, with test-sized timeouts.
func withFaults(f faulty.Faults, fp **faulty.Provider) func(*Config) {
	return func(c *Config) {
		fl := faulty.New(c.Provider, f)
		if fp != nil {
			*fp = fl
		}
		c.Provider = guard.New(fl, guard.Config{
			CallTimeout: 50 * time.Millisecond, Attempts: 6, Threshold: 1000,
			Backoff: retry.Backoff{Min: time.Millisecond, Max: 10 * time.Millisecond, Jitter: 0.2},
			Log:     slog.New(slog.DiscardHandler),
		})
	}
}

// A sandbox the provider lost (its agent killed, its disk gone) is
// replaced by the next EnsureSandbox at once: no error, the answer says
// which was replaced and why, and what its last heartbeat had pending.
func TestEnsureReplacesLostSandbox(t *testing.T) {
	var fl *faulty.Provider
	e := newEnv(t, withFaults(faulty.Faults{}, &fl))
	p := e.project("lost")
	first := e.ensure(p)
	// The agent reports work in progress, then the provider loses it.
	e.agents.beat(p, &pb.Heartbeat{SessionId: "s-" + first.Sandbox.ID, SandboxId: first.Sandbox.ID, State: pb.AgentState_AGENT_STATE_SYNCING,
		Version: e.head(p), PendingPaths: 3, PendingBytes: 300})
	if err := fl.Lose(t.Context(), first.Sandbox.ProviderID); err != nil {
		t.Fatal(err)
	}
	res, err := e.m.EnsureSandbox(t.Context(), p)
	if err != nil {
		t.Fatalf("ensure after a loss: %v", err)
	}
	if res.Sandbox.ID == first.Sandbox.ID || !res.Created {
		t.Fatalf("not replaced: %+v", res)
	}
	if len(res.Replaced) != 1 || res.Replaced[0].SandboxID != first.Sandbox.ID || res.Replaced[0].Reason != ReasonLost {
		t.Fatalf("replaced: %+v", res.Replaced)
	}
	if lost := res.Replaced[0].Lost; !strings.Contains(lost, "3 pending paths") {
		t.Fatalf("the loss report does not name the pending work: %q", lost)
	}
	if old := e.get(first.Sandbox.ID); old.State != provider.StateDestroyed {
		t.Fatalf("the lost sandbox is %s", old.State)
	}
	if n := metricValue(e, `sandkeep_sandboxes_replaced_total{reason="lost"} `); n != 1 {
		t.Fatalf("replaced metric %v", n)
	}
}

// A sandbox in the error state that will not start again, one whose agent
// never answers, and one stuck starting are each replaced within the call.
func TestEnsureReplacesUnusableSandboxes(t *testing.T) {
	tests := []struct {
		name   string
		reason string
		setup  func(e *env, fl *faulty.Provider, sb metastore.Sandbox)
	}{
		{"error state, start fails", ReasonFailed, func(e *env, fl *faulty.Provider, sb metastore.Sandbox) {
			if err := fl.Fail(e.t.Context(), sb.ProviderID, "disk full"); err != nil {
				e.t.Fatal(err)
			}
			e.prov.failOnce("start", fmt.Errorf("%w: boot failed", provider.ErrFailed))
		}},
		{"agent silent", ReasonSilent, func(e *env, _ *faulty.Provider, sb metastore.Sandbox) {
			// Stopped; when started again its agent never comes up.
			if _, err := e.m.StopSandbox(e.t.Context(), sb.ID); err != nil {
				e.t.Fatal(err)
			}
			up := e.prov.onUp
			e.prov.onUp = func(s provider.Sandbox, env map[string]string) {
				if env[provider.EnvSandboxID] == sb.ID {
					return
				}
				up(s, env)
			}
		}},
		{"stuck starting", ReasonStuck, func(e *env, _ *faulty.Provider, sb metastore.Sandbox) {
			if _, err := e.m.StopSandbox(e.t.Context(), sb.ID); err != nil {
				e.t.Fatal(err)
			}
			e.prov.slow = true // starts never settle
			e.t.Cleanup(func() {})
		}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var fl *faulty.Provider
			e := newEnv(t, withFaults(faulty.Faults{}, &fl), func(c *Config) {
				c.AgentTimeout = 100 * time.Millisecond
				c.OpTimeout = 200 * time.Millisecond
			})
			p := e.project("unusable")
			first := e.ensure(p)
			tt.setup(e, fl, first.Sandbox)
			if tt.reason == ReasonStuck {
				// Only the first sandbox is stuck: the replacement settles
				// as soon as it exists.
				e.prov.mu.Lock()
				e.prov.created = func(string) {
					e.prov.mu.Lock()
					e.prov.slow = false
					e.prov.mu.Unlock()
					e.prov.settle()
				}
				e.prov.mu.Unlock()
			}
			res, err := e.m.EnsureSandbox(t.Context(), p)
			if err != nil {
				t.Fatalf("ensure: %v", err)
			}
			if res.Sandbox.ID == first.Sandbox.ID || len(res.Replaced) != 1 || res.Replaced[0].Reason != tt.reason {
				t.Fatalf("got %s, replaced %+v; want a new sandbox replacing %s (%s)", res.Sandbox.ID, res.Replaced, first.Sandbox.ID, tt.reason)
			}
			// Its agent was gone: no flush could confirm it, so the
			// answer says what its last heartbeat knew.
			if lost := res.Replaced[0].Lost; !strings.Contains(lost, "nothing pending") {
				t.Fatalf("loss report %q, want the clean last heartbeat", lost)
			}
		})
	}
}

// A provider outage is not an error while the deadline allows (the ensure
// waits it out); past it, the error is ErrUnavailable, never anything a
// caller cannot act on.
func TestEnsureProviderOutage(t *testing.T) {
	var fl *faulty.Provider
	e := newEnv(t, withFaults(faulty.Faults{Unavailable: 1}, &fl), func(c *Config) { c.ReadyTimeout = 300 * time.Millisecond })
	p := e.project("outage")
	_, err := e.m.EnsureSandbox(t.Context(), p)
	if !errors.Is(err, provider.ErrUnavailable) {
		t.Fatalf("ensure during an outage: %v, want ErrUnavailable", err)
	}
	if _, err := e.meta.LiveSandbox(t.Context(), p); !errors.Is(err, metastore.ErrNotFound) {
		t.Fatalf("a failed create left a live row: %v", err)
	}
	// The outage ends: the next ensure succeeds.
	fl.SetFaults(faulty.Faults{})
	e.ensure(p)
}

// 5xx, 429 and slow transitions on every call: one sandbox per project,
// all ready, for 100 concurrent ensures over 20 projects.
func TestEnsureConcurrentUnderFaults(t *testing.T) {
	var fl *faulty.Provider
	e := newEnv(t, withFaults(faulty.Faults{Seed: 7, Unavailable: 0.1, Throttle: 0.1, Slow: 20 * time.Millisecond}, &fl),
		func(c *Config) { c.ReadyTimeout = 30 * time.Second })
	projects := make([]string, 20)
	for i := range projects {
		projects[i] = e.project(fmt.Sprintf("p%02d", i))
	}
	var wg sync.WaitGroup
	var mu sync.Mutex
	got := map[string]map[string]bool{}
	for i := range 100 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			p := projects[i%len(projects)]
			res, err := e.m.EnsureSandbox(context.Background(), p)
			if err != nil {
				t.Errorf("ensure %s: %v", p, err)
				return
			}
			mu.Lock()
			if got[p] == nil {
				got[p] = map[string]bool{}
			}
			got[p][res.Sandbox.ID] = true
			mu.Unlock()
		}()
	}
	wg.Wait()
	for _, p := range projects {
		if len(got[p]) != 1 {
			t.Errorf("project %s got sandboxes %v, want one", p, got[p])
		}
		if sb := e.live(p); sb.State != provider.StateStarted {
			t.Errorf("project %s sandbox %s is %s", p, sb.ID, sb.State)
		}
	}
	if c := fl.Counts(); c["unavailable"]+c["throttle"] == 0 {
		t.Fatalf("no fault was injected: %v", c)
	}
}

// The loop recovers a sandbox in the error state past StuckAfter: its
// agent is flushed if it answers, it is destroyed, and the next ensure
// creates another.
func TestStuckSandboxRecovered(t *testing.T) {
	var fl *faulty.Provider
	e := newEnv(t, withFaults(faulty.Faults{}, &fl), func(c *Config) { c.StuckAfter = 10 * time.Minute })
	p := e.project("stuck")
	first := e.ensure(p).Sandbox
	if err := fl.Fail(t.Context(), first.ProviderID, "kernel panic"); err != nil {
		t.Fatal(err)
	}
	// Its agent still answers (the fake keeps it connected when the
	// sandbox fails): flushed before the destroy.
	e.agents.up(p, first.ID, e.head(p))
	flushes := e.agents.flushCount()
	if _, err := e.m.Reconcile(t.Context()); err != nil { // sees the error state
		t.Fatal(err)
	}
	if sb := e.get(first.ID); sb.State != provider.StateError {
		t.Fatalf("state %s, want error", sb.State)
	}
	e.clock.Advance(11 * time.Minute)
	e.tick()
	if sb := e.get(first.ID); sb.State != provider.StateDestroyed {
		t.Fatalf("a sandbox in error for 11 minutes is %s, want destroyed", sb.State)
	}
	if e.agents.flushCount() <= flushes {
		t.Fatal("the stuck sandbox's agent was not flushed first")
	}
	res := e.ensure(p)
	if res.Sandbox.ID == first.ID || !res.Created {
		t.Fatalf("ensure after recovery: %+v", res)
	}
}

// hangingStop makes Stop of one sandbox block until released.
type hangingStop struct {
	provider.Provider
	id      string
	release chan struct{}
}

func (h *hangingStop) Stop(ctx context.Context, id string) error {
	if id == h.id {
		select {
		case <-h.release:
		case <-ctx.Done():
			return ctx.Err()
		}
	}
	return h.Provider.Stop(ctx, id)
}

// One sandbox whose provider call hangs holds one slot of the loop; the
// other projects' sandboxes are still stopped on time.
func TestSlowSandboxDoesNotStallTheLoop(t *testing.T) {
	h := &hangingStop{release: make(chan struct{})}
	e := newEnv(t, func(c *Config) {
		h.Provider = c.Provider
		c.Provider = h
		c.Parallel = 2
		c.Policy = policy.Default()
		c.Policy.NotifyGrace = 0  // straight to stop
		c.Policy.DestroyAfter = 0 // and no further
	})
	var projects []string
	for i := range 5 {
		p := e.project(fmt.Sprintf("p%d", i))
		projects = append(projects, p)
		sb := e.ensure(p).Sandbox
		if i == 0 {
			h.id = sb.ProviderID
		}
	}
	e.clock.Advance(time.Hour) // every sandbox is due to stop
	ctx, cancel := context.WithCancel(t.Context())
	defer cancel()
	defer close(h.release)
	// Passes without waiting, as Run makes them, until the four others
	// are stopped (bounded).
	for range 2000 {
		stopped := 0
		for _, p := range projects[1:] {
			if sb := e.live(p); sb.State == provider.StateStopped {
				stopped++
			}
		}
		if stopped == 4 {
			break
		}
		if _, err := e.m.dispatch(ctx, false); err != nil {
			t.Fatal(err)
		}
		time.Sleep(time.Millisecond)
	}
	for _, p := range projects[1:] {
		if sb := e.live(p); sb.State != provider.StateStopped {
			t.Fatalf("project %s: %s while another sandbox's stop hangs", p, sb.State)
		}
	}
	if sb := e.live(projects[0]); sb.State == provider.StateStopped {
		t.Fatal("the hanging stop returned")
	}
}
