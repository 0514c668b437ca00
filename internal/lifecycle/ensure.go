package lifecycle

import (
	"context"
	"errors"
	"fmt"
	"maps"
	"time"

	"github.com/sandkeep/sandkeep/internal/auth"
	"github.com/sandkeep/sandkeep/internal/metastore"
	"github.com/sandkeep/sandkeep/internal/provider"
	pb "github.com/sandkeep/sandkeep/proto/sandkeep/v1"
)

// Ensured is EnsureSandbox's result.
type Ensured struct {
	Sandbox metastore.Sandbox
	// Took is the wall-clock time until the sandbox was ready.
	Took time.Duration
	// Created: a new sandbox was made; Started: an existing one was started.
	Created, Started bool
	// Version is the version the agent reported when it was found ready.
	Version int64
}

// EnsureSandbox returns a ready sandbox of the project: its existing started
// one, or one started or created through the provider, once its agent has
// restored the head — ready means a connected agent of that sandbox reports
// state idle or syncing and either the head's version or a clean
// workspace. Concurrent calls for one project share one attempt (and the
// registry's one-live-sandbox-per-project rule holds across replicas). It
// counts as activity: the sandbox is not reaped right after.
func (m *Manager) EnsureSandbox(ctx context.Context, projectID string) (Ensured, error) {
	if err := m.needProvider(); err != nil {
		return Ensured{}, err
	}
	if _, err := m.meta.GetProject(ctx, projectID); err != nil {
		return Ensured{}, err
	}
	res, _, err := m.flights.do(ctx, projectID, func() (Ensured, error) {
		// The attempt outlives a caller that gives up: others may wait on it.
		fctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), m.cfg.ReadyTimeout)
		defer cancel()
		return m.ensure(fctx, projectID)
	})
	return res, err
}

func (m *Manager) ensure(ctx context.Context, projectID string) (Ensured, error) {
	began := time.Now()
	unlock, err := m.locks.lock(ctx, projectID)
	if err != nil {
		return Ensured{}, err
	}
	defer unlock()
	var res Ensured
	sb, err := m.st.LiveSandbox(ctx, projectID)
	if err == nil && m.stale(sb) {
		// A create that never got its provider id (a crash): nothing to start.
		m.gone(ctx, sb, "its create never completed")
		err = metastore.ErrNotFound
	}
	switch {
	case errors.Is(err, metastore.ErrNotFound):
		if sb, err = m.create(ctx, projectID); err != nil {
			return res, err
		}
		res.Created = true
	case err != nil:
		return res, err
	}
	// Ensuring is activity: the platform is about to use the sandbox.
	now := m.now()
	if _, err := m.st.UpdateSandbox(ctx, sb.ID, func(s *metastore.Sandbox) error {
		if now.After(s.LastActivity) {
			s.LastActivity = now
		}
		return nil
	}); err != nil {
		return res, err
	}
	if sb, err = m.bringUp(ctx, sb, &res); err != nil {
		return res, err
	}
	var ready *agentView
	if err := m.waitAgent(ctx, sb, func(a *agentView) bool {
		if a.ready() {
			ready = a
			return true
		}
		return false
	}); err != nil {
		return res, fmt.Errorf("%w: sandbox %s: %v", ErrNotReady, sb.ID, err)
	}
	if cur, err := m.st.GetSandbox(ctx, sb.ID); err == nil {
		sb = cur
	}
	res.Sandbox, res.Took, res.Version = sb, time.Since(began), ready.version
	m.count("ensure", "ok")
	m.log.Info("lifecycle: sandbox ready", "sandbox", sb.ID, "project", projectID, "created", res.Created, "started", res.Started,
		"version", ready.version, "took", res.Took)
	return res, nil
}

// stale: a create that never got its provider id (the coordinator died
// half way) and is older than OrphanGrace.
func (m *Manager) stale(sb metastore.Sandbox) bool {
	return sb.ProviderID == "" && sb.State == provider.StateCreating && m.now().Sub(sb.CreatedAt) > m.cfg.OrphanGrace
}

// bringUp gets the sandbox to started at the provider.
func (m *Manager) bringUp(ctx context.Context, sb metastore.Sandbox, res *Ensured) (metastore.Sandbox, error) {
	for range 4 {
		if sb.ProviderID == "" {
			return sb, fmt.Errorf("sandbox %s has no provider id yet", sb.ID)
		}
		ps, err := m.refresh(ctx, sb)
		if err != nil {
			return sb, err
		}
		if sb, err = m.st.GetSandbox(ctx, sb.ID); err != nil {
			return sb, err
		}
		switch ps.State {
		case provider.StateStarted:
			return sb, nil
		case provider.StateCreating, provider.StateStarting:
			if err := m.waitState(ctx, sb, provider.StateStarted); err != nil {
				return sb, err
			}
		case provider.StateStopping:
			if err := m.waitState(ctx, sb, provider.StateStopped); err != nil {
				return sb, err
			}
			continue
		case provider.StateStopped, provider.StateArchived, provider.StateError:
			if err := m.start(ctx, sb); err != nil {
				return sb, err
			}
			res.Started = true
		case provider.StateDestroyed:
			return sb, fmt.Errorf("sandbox %s was destroyed meanwhile; ensure again", sb.ID)
		}
		return m.st.GetSandbox(ctx, sb.ID)
	}
	return sb, fmt.Errorf("sandbox %s did not settle", sb.ID)
}

// create records and creates a new sandbox of the project.
func (m *Manager) create(ctx context.Context, projectID string) (metastore.Sandbox, error) {
	if m.cfg.AgentCoordinator == "" {
		return metastore.Sandbox{}, errors.New("lifecycle: no agent coordinator address configured (--agent-coordinator)")
	}
	sid := metastore.NewSandboxID()
	secret, err := auth.NewSecret(metastore.TokenSandbox)
	if err != nil {
		return metastore.Sandbox{}, err
	}
	now := m.now()
	tok := metastore.Token{Hash: auth.Hash(secret), Kind: metastore.TokenSandbox, ProjectID: projectID, CreatedAt: time.Now().UTC(), Note: "sandbox " + sid, SandboxID: sid}
	if err := m.meta.CreateToken(ctx, tok); err != nil {
		return metastore.Sandbox{}, err
	}
	sb, err := m.st.CreateSandbox(ctx, metastore.Sandbox{
		ID: sid, ProjectID: projectID, Provider: m.cfg.Provider.Name(), State: provider.StateCreating,
		CreatedAt: now, LastActivity: now, TokenHash: tok.Hash,
	})
	if errors.Is(err, metastore.ErrAlreadyExists) {
		// Another replica made one meanwhile: use it.
		_ = m.st.RevokeToken(ctx, tok.Hash)
		return m.st.LiveSandbox(ctx, projectID)
	}
	if err != nil {
		_ = m.st.RevokeToken(ctx, tok.Hash)
		return sb, err
	}
	spec := m.cfg.Spec
	spec.Labels = maps.Clone(m.cfg.Spec.Labels)
	if spec.Labels == nil {
		spec.Labels = map[string]string{}
	}
	spec.Labels[provider.LabelProject] = projectID
	spec.Labels[provider.LabelManaged] = "true"
	spec.Labels[LabelSandbox] = sid
	spec.Env = maps.Clone(m.cfg.AgentEnv)
	if spec.Env == nil {
		spec.Env = map[string]string{}
	}
	spec.Env[provider.EnvCoordinator] = m.cfg.AgentCoordinator
	spec.Env[provider.EnvToken] = secret
	spec.Env[provider.EnvSandboxID] = sid
	octx, cancel := context.WithTimeout(ctx, m.cfg.OpTimeout)
	ps, err := m.cfg.Provider.Create(octx, spec)
	cancel()
	if err != nil {
		m.count("create", "error")
		// Nothing to keep: a sandbox the provider made anyway carries our
		// labels, and the reconciler destroys it as an orphan.
		m.setLastError(ctx, sid, "create: "+err.Error())
		if _, terr := m.st.TransitionSandbox(ctx, sid, provider.StateDestroyed, m.now(), true, "create failed"); terr != nil {
			m.log.Warn("lifecycle: record failed create", "sandbox", sid, "err", terr)
		}
		_ = m.st.RevokeToken(ctx, tok.Hash)
		return sb, fmt.Errorf("create sandbox: %w", err)
	}
	m.count("create", "ok")
	if sb, err = m.st.UpdateSandbox(ctx, sid, func(s *metastore.Sandbox) error { s.ProviderID = ps.ID; return nil }); err != nil {
		return sb, err
	}
	m.observe(ctx, sb, ps.State, ps.ProviderState)
	m.log.Info("lifecycle: sandbox created", "sandbox", sid, "project", projectID, "provider", m.cfg.Provider.Name(), "provider_id", ps.ID)
	return m.st.GetSandbox(ctx, sid)
}

// agentView is the latest heartbeat of a connected agent of a sandbox.
type agentView struct {
	state   pb.AgentState
	version int64
	clean   bool
	head    int64
}

func (a *agentView) ready() bool {
	if a.state != pb.AgentState_AGENT_STATE_IDLE && a.state != pb.AgentState_AGENT_STATE_SYNCING {
		return false
	}
	return a.version == a.head || a.clean
}

// agentOf returns the newest heartbeat of a connected agent reporting the
// sandbox's id (sandkeep's or the provider's).
func (m *Manager) agentOf(sb metastore.Sandbox) (*pb.Heartbeat, bool) {
	for _, a := range m.cfg.Agents.Agents(sb.ProjectID) {
		if !a.Connected || a.Heartbeat == nil {
			continue
		}
		if id := a.Heartbeat.GetSandboxId(); id != "" && (id == sb.ID || id == sb.ProviderID) {
			return a.Heartbeat, true
		}
	}
	return nil, false
}

// waitAgent polls (real time) until a connected agent of the sandbox
// satisfies ok, the provider reports the sandbox failed or gone, or ctx
// ends.
func (m *Manager) waitAgent(ctx context.Context, sb metastore.Sandbox, ok func(*agentView) bool) error {
	t := time.NewTicker(m.cfg.Poll)
	defer t.Stop()
	checks := 0
	for {
		if hb, found := m.agentOf(sb); found {
			prj, err := m.meta.GetProject(ctx, sb.ProjectID)
			if err != nil {
				return err
			}
			if ok(&agentView{state: hb.GetState(), version: hb.GetVersion(), clean: hb.GetClean(), head: prj.Head}) {
				return nil
			}
		}
		checks++
		if checks%8 == 0 && sb.ProviderID != "" {
			// Now and then: did the sandbox die while we wait?
			ps, err := m.refresh(ctx, sb)
			if err == nil && (ps.State == provider.StateError || ps.State == provider.StateDestroyed) {
				return fmt.Errorf("sandbox %s is %s (%s %s)", sb.ID, ps.State, ps.ProviderState, ps.ErrorReason)
			}
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("waiting for the agent of %s: %w", sb.ID, ctx.Err())
		case <-t.C:
		}
	}
}
