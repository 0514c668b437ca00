package server

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"time"

	"github.com/sandkeep/sandkeep/internal/cost"
	"github.com/sandkeep/sandkeep/internal/lifecycle"
	"github.com/sandkeep/sandkeep/internal/metastore"
	"github.com/sandkeep/sandkeep/internal/policy"
	"github.com/sandkeep/sandkeep/internal/provider"
	"github.com/sandkeep/sandkeep/internal/provider/daytona"
	"github.com/sandkeep/sandkeep/internal/provider/guard"
	"github.com/sandkeep/sandkeep/internal/provider/local"
)

// Sandbox providers of --provider.
const (
	ProviderNone    = ""
	ProviderLocal   = "local"
	ProviderDaytona = "daytona"
)

// LifecycleConfig configures the lifecycle manager (package lifecycle).
type LifecycleConfig struct {
	// Provider: "" (none: lifecycle operations fail with FailedPrecondition
	// "no provider configured"; leases, policies and cost still work),
	// "local" or "daytona".
	Provider string
	// ProviderInstance, if set, is used instead of one built from Provider
	// (tests).
	ProviderInstance provider.Provider

	// Daytona: API base URL (default https://app.daytona.io/api), key
	// (required), organization, snapshot of new sandboxes, target region.
	DaytonaAPIURL, DaytonaAPIKey, DaytonaOrg, DaytonaSnapshot, DaytonaTarget string

	// Local: the directory of the sandboxes (default <data>/sandboxes) and
	// the sandkeep-agent binary (default: beside the coordinator's
	// executable, else in PATH).
	LocalRoot, LocalAgent string
	LocalAgentArgs        []string

	// AgentCoordinator is the gRPC address created sandboxes' agents reach
	// (default: the bound --listen address).
	AgentCoordinator string

	// Policy is the global policy (zero: policy.Default()); Webhook the
	// global cleanup webhook.
	Policy  policy.Policy
	Webhook string
	// Rates (zero: cost.DefaultRates()).
	Rates cost.Rates

	// TickEvery and ReconcileEvery pace the loop (defaults 5s, 1m).
	TickEvery, ReconcileEvery time.Duration
	// Manual: do not run the loop; the caller calls Tick and Reconcile
	// (tests, with Now a fake clock).
	Manual bool
	Now    func() time.Time
	// FlushTimeout, ReadyTimeout, AgentTimeout, StuckAfter: see
	// lifecycle.Config.
	FlushTimeout, ReadyTimeout, AgentTimeout, StuckAfter time.Duration
	// ProviderCallTimeout bounds one provider call attempt (guard.Config
	// CallTimeout; default 30s).
	ProviderCallTimeout time.Duration
	// Guard tunes the provider guard beyond the call timeout (tests).
	Guard guard.Config
}

// buildProvider makes the configured provider (nil for none).
func (s *Server) buildProvider() (provider.Provider, error) {
	lc := s.cfg.Lifecycle
	if lc.ProviderInstance != nil {
		return lc.ProviderInstance, nil
	}
	switch lc.Provider {
	case ProviderNone:
		return nil, nil
	case ProviderLocal:
		root := lc.LocalRoot
		if root == "" {
			root = filepath.Join(s.cfg.DataDir, "sandboxes")
		}
		agent := lc.LocalAgent
		if agent == "" {
			var err error
			if agent, err = findAgent(); err != nil {
				return nil, err
			}
		}
		return local.New(local.Config{Root: root, AgentBinary: agent, AgentArgs: lc.LocalAgentArgs, Logger: s.log.With("provider", "local")})
	case ProviderDaytona:
		if lc.DaytonaAPIKey == "" {
			return nil, errors.New("--provider daytona needs --daytona-api-key (or SANDKEEP_DAYTONA_API_KEY)")
		}
		return daytona.New(daytona.Config{APIURL: lc.DaytonaAPIURL, APIKey: lc.DaytonaAPIKey, OrganizationID: lc.DaytonaOrg,
			Target: lc.DaytonaTarget, Logger: s.log.With("provider", "daytona")})
	}
	return nil, fmt.Errorf("--provider %q: want local or daytona (or nothing)", lc.Provider)
}

// findAgent looks for sandkeep-agent beside the running executable, then in
// PATH.
func findAgent() (string, error) {
	if exe, err := os.Executable(); err == nil {
		p := filepath.Join(filepath.Dir(exe), "sandkeep-agent")
		if fi, err := os.Stat(p); err == nil && !fi.IsDir() {
			return p, nil
		}
	}
	p, err := exec.LookPath("sandkeep-agent")
	if err != nil {
		return "", errors.New("--provider local: sandkeep-agent not found beside the coordinator nor in PATH; give --local-agent")
	}
	return p, nil
}

// buildLifecycle makes the lifecycle manager (s.Lifecycle).
func (s *Server) buildLifecycle() error {
	lc := s.cfg.Lifecycle
	prov, err := s.buildProvider()
	if err != nil {
		return fmt.Errorf("sandbox provider: %w", err)
	}
	s.provider = prov
	if prov != nil {
		// Every provider call of the manager is bounded, retried and
		// behind a circuit breaker (package guard).
		gc := lc.Guard
		if lc.ProviderCallTimeout > 0 {
			gc.CallTimeout = lc.ProviderCallTimeout
		}
		gc.Metrics, gc.Log = s.Metrics, s.log.With("component", "provider")
		prov = guard.New(prov, gc)
	}
	st, ok := s.Meta.(metastore.SandboxStore)
	if !ok {
		return errors.New("the metadata store has no lifecycle tables")
	}
	coord := lc.AgentCoordinator
	if coord == "" {
		coord = s.GRPCAddr()
	}
	var agentEnv map[string]string
	if s.cfg.TLSCert != "" {
		agentEnv = map[string]string{"SANDKEEP_TLS": "true"}
	}
	leader := s.backgroundLeader() // shared with the periodic GC (gc.go)
	spec := provider.CreateSpec{}
	if lc.Provider == ProviderDaytona {
		spec.Snapshot = lc.DaytonaSnapshot
	}
	s.Lifecycle, err = lifecycle.New(lifecycle.Config{
		Repo: s.Repo, Store: st, Agents: s.Cluster, Provider: prov, Metrics: s.Metrics, Log: s.log.With("component", "lifecycle"),
		Now: lc.Now, Policy: lc.Policy, Webhook: lc.Webhook, Rates: lc.Rates, AgentCoordinator: coord, AgentEnv: agentEnv,
		Spec: spec, FlushTimeout: lc.FlushTimeout, ReadyTimeout: lc.ReadyTimeout, AgentTimeout: lc.AgentTimeout, StuckAfter: lc.StuckAfter,
		TickEvery: lc.TickEvery, ReconcileEvery: lc.ReconcileEvery, Leader: leader,
	})
	return err
}

// runLifecycle runs the manager's loop until ctx ends (unless Manual) and
// returns a function that waits for it to stop.
func (s *Server) runLifecycle(ctx context.Context) (wait func()) {
	if s.Lifecycle == nil || s.cfg.Lifecycle.Manual {
		return func() {}
	}
	done := make(chan struct{})
	go func() {
		defer close(done)
		s.Lifecycle.Run(ctx)
	}()
	return func() { <-done }
}

// closeProvider releases the provider (the local provider leaves its agents
// running for the next coordinator).
func (s *Server) closeProvider() {
	if c, ok := s.provider.(io.Closer); ok && s.cfg.Lifecycle.ProviderInstance == nil {
		_ = c.Close()
	}
}
