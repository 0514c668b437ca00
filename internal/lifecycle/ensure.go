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
	"github.com/sandkeep/sandkeep/internal/retry"
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
	// Replaced lists the sandboxes found unusable on the way, and replaced.
	Replaced []Replacement
}

// Replacement is a sandbox EnsureSandbox gave up on and replaced.
type Replacement struct {
	SandboxID string
	Reason    string // ReasonLost, ReasonFailed, ReasonSilent, ReasonStuck
	Detail    string // what was seen
	// Lost says what may not have been saved: "" only when a flush
	// confirmed everything; otherwise the pending paths and bytes of its
	// last heartbeat, and that changes after it are lost.
	Lost string
}

// Why a sandbox is replaced.
const (
	ReasonLost   = "lost"   // gone at the provider (not found, destroyed behind sandkeep's back)
	ReasonFailed = "failed" // in the error state, or its start failed
	ReasonSilent = "silent" // started, but its agent never answered within AgentTimeout
	ReasonStuck  = "stuck"  // in a transition (creating, starting, stopping) past its deadline
)

// maxReplacements bounds the sandboxes one EnsureSandbox replaces: a
// provider that loses every sandbox it makes is an outage, not bad luck.
const maxReplacements = 4

// unusable is why a sandbox cannot be brought up and must be replaced.
type unusable struct {
	reason, detail string
}

func (u *unusable) Error() string { return u.reason + ": " + u.detail }

func replaceable(err error) (*unusable, bool) {
	var u *unusable
	ok := errors.As(err, &u)
	return u, ok
}

// EnsureSandbox returns a ready sandbox of the project: its existing started
// one, or one started or created through the provider, once its agent has
// restored the head — ready means an agent of that sandbox reports state
// idle or syncing and either the head's version or a clean workspace.
//
// A sandbox found unusable on the way — gone at the provider, in the error
// state and failing to start, silent (no agent within AgentTimeout of its
// start) or stuck in a transition — is replaced within the same call: its
// agent is flushed if it answers, it is destroyed and marked so, and a new
// one is created (which restores the head); Ensured.Replaced says which and
// what may not have been saved. A provider outage is waited out (with the
// provider's own Retry-After) until ReadyTimeout.
//
// Concurrent calls for one project share one attempt (and the registry's
// one-live-sandbox-per-project rule holds across replicas). It counts as
// activity: the sandbox is not reaped right after.
func (m *Manager) EnsureSandbox(ctx context.Context, projectID string) (Ensured, error) {
	if err := m.needProvider(); err != nil {
		return Ensured{}, err
	}
	if _, err := m.meta.GetProject(ctx, projectID); err != nil {
		return Ensured{}, err
	}
	began := time.Now()
	res, _, err := m.flights.do(ctx, projectID, func() (Ensured, error) {
		// The attempt outlives a caller that gives up: others may wait on it.
		fctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), m.cfg.ReadyTimeout)
		defer cancel()
		return m.ensure(fctx, projectID)
	})
	if m.cfg.Metrics != nil {
		result := "ok"
		if err != nil {
			result = "error"
		}
		m.cfg.Metrics.EnsureSeconds.WithLabelValues(result).Observe(time.Since(began).Seconds())
	}
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
	var lastOutage error
	for outages := 1; ; {
		sb, version, err := m.ensureOnce(ctx, projectID, &res)
		if err == nil {
			res.Sandbox, res.Took, res.Version = sb, time.Since(began), version
			m.count("ensure", "ok")
			m.log.Info("lifecycle: sandbox ready", "sandbox", sb.ID, "project", projectID, "created", res.Created, "started", res.Started,
				"version", version, "replaced", len(res.Replaced), "took", res.Took)
			return res, nil
		}
		if u, ok := replaceable(err); ok {
			if len(res.Replaced) >= maxReplacements {
				m.count("ensure", "error")
				return res, fmt.Errorf("%w: %d sandboxes of project %s were unusable in a row (last: %s); the provider may be failing: check its status and retry",
					provider.ErrUnavailable, len(res.Replaced), projectID, u)
			}
			res.Replaced = append(res.Replaced, m.replace(ctx, sb, u))
			continue
		}
		if errors.Is(err, provider.ErrUnavailable) && ctx.Err() == nil {
			// A provider outage: wait it out (its advice, or a backoff)
			// while the deadline allows.
			lastOutage = err
			wait, ok := retry.After(err)
			if !ok {
				wait = retry.Backoff{Min: 500 * time.Millisecond, Max: 10 * time.Second, Jitter: 0.2}.Delay(outages)
			}
			outages++
			if dl, ok := ctx.Deadline(); !ok || time.Until(dl) > wait {
				m.log.Warn("lifecycle: provider unavailable during ensure; retrying", "project", projectID, "in", wait, "err", err)
				if retry.Sleep(ctx, wait) == nil {
					continue
				}
			}
		}
		m.count("ensure", "error")
		if ctx.Err() != nil && lastOutage != nil && !errors.Is(err, provider.ErrUnavailable) {
			err = fmt.Errorf("%w (the provider was unavailable: %v)", err, lastOutage)
		}
		return res, err
	}
}

// ensureOnce finds, starts or creates the project's sandbox and waits for
// its agent. An *unusable error names a sandbox to replace.
func (m *Manager) ensureOnce(ctx context.Context, projectID string, res *Ensured) (metastore.Sandbox, int64, error) {
	sb, err := m.st.LiveSandbox(ctx, projectID)
	if err == nil && m.stale(sb) {
		// A create that never got its provider id (a crash): nothing to start.
		m.gone(ctx, sb, "its create never completed")
		err = metastore.ErrNotFound
	}
	switch {
	case errors.Is(err, metastore.ErrNotFound):
		if sb, err = m.create(ctx, projectID); err != nil {
			return sb, 0, err
		}
		res.Created = true
	case err != nil:
		return sb, 0, err
	}
	// Ensuring is activity: the platform is about to use the sandbox.
	now := m.now()
	if _, err := m.st.UpdateSandbox(ctx, sb.ID, func(s *metastore.Sandbox) error {
		if now.After(s.LastActivity) {
			s.LastActivity = now
		}
		return nil
	}); err != nil {
		return sb, 0, err
	}
	if sb, err = m.bringUp(ctx, sb, res); err != nil {
		return sb, 0, err
	}
	var ready *agentView
	if err := m.waitAgent(ctx, sb, m.cfg.AgentTimeout, func(a *agentView) bool {
		if a.ready() {
			ready = a
			return true
		}
		return false
	}); err != nil {
		if _, ok := replaceable(err); ok {
			return sb, 0, err
		}
		return sb, 0, fmt.Errorf("%w: sandbox %s: %w", ErrNotReady, sb.ID, err)
	}
	if cur, err := m.st.GetSandbox(ctx, sb.ID); err == nil {
		sb = cur
	}
	return sb, ready.version, nil
}

// replace gives up on a sandbox: its agent is flushed if it answers, the
// sandbox is deleted at the provider (left to the reconciler if the
// provider does not answer) and marked destroyed, and its token revoked.
// It reports what may not have been saved.
func (m *Manager) replace(ctx context.Context, sb metastore.Sandbox, u *unusable) Replacement {
	r := Replacement{SandboxID: sb.ID, Reason: u.reason, Detail: u.detail}
	if cur, err := m.st.GetSandbox(ctx, sb.ID); err == nil {
		sb = cur
	}
	flushed := false
	if m.agentConnected(ctx, sb) {
		if v, err := m.cfg.Agents.Flush(ctx, sb.ProjectID, m.cfg.FlushTimeout); err == nil {
			flushed = true
			m.log.Info("lifecycle: flushed a sandbox before replacing it", "sandbox", sb.ID, "version", v)
		} else {
			m.log.Warn("lifecycle: flush before replacing failed", "sandbox", sb.ID, "err", err)
		}
	}
	if !flushed {
		// Without a flush nothing after its last heartbeat is known to
		// be saved: say what that heartbeat had pending, and from when.
		prj, _ := m.meta.GetProject(ctx, sb.ProjectID)
		r.Lost = lossReport(sb, backupStatus(sb, prj.Head))
	}
	if sb.ProviderID != "" && u.reason != ReasonLost {
		octx, cancel := context.WithTimeout(ctx, m.cfg.OpTimeout)
		err := m.cfg.Provider.Delete(octx, sb.ProviderID)
		cancel()
		if err != nil && !errors.Is(err, provider.ErrNotFound) {
			// Still labelled sandkeep.managed: the reconciler destroys it
			// once the provider answers (flushing its agent first).
			m.log.Warn("lifecycle: delete of a replaced sandbox failed; the reconciler will retry", "sandbox", sb.ID, "err", err)
		}
	}
	if sb.Live() {
		note := "replaced: " + u.Error()
		lastError := note
		if r.Lost != "" {
			lastError += "; may have lost: " + r.Lost
		}
		m.markDestroyed(ctx, sb, note, lastError)
	}
	if m.cfg.Metrics != nil {
		m.cfg.Metrics.SandboxesReplaced.WithLabelValues(u.reason).Inc()
	}
	m.count("replace", u.reason)
	m.log.Warn("lifecycle: sandbox replaced", "sandbox", sb.ID, "project", sb.ProjectID, "reason", u.reason, "detail", u.detail,
		"flushed", flushed, "may_have_lost", r.Lost)
	return r
}

// stale: a create that never got its provider id (the coordinator died
// half way) and is older than OrphanGrace.
func (m *Manager) stale(sb metastore.Sandbox) bool {
	return sb.ProviderID == "" && sb.State == provider.StateCreating && m.now().Sub(sb.CreatedAt) > m.cfg.OrphanGrace
}

// bringUp gets the sandbox to started at the provider. A sandbox gone at
// the provider, failing to start or stuck in a transition is *unusable.
func (m *Manager) bringUp(ctx context.Context, sb metastore.Sandbox, res *Ensured) (metastore.Sandbox, error) {
	for range 4 {
		if sb.ProviderID == "" {
			return sb, &unusable{ReasonStuck, "its create is still being recorded by another call"}
		}
		if sb.State == provider.StateDestroyed {
			return sb, &unusable{ReasonLost, "it was destroyed meanwhile"}
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
				return sb, m.why(ctx, err, "did not start")
			}
		case provider.StateStopping:
			if err := m.waitState(ctx, sb, provider.StateStopped); err != nil {
				return sb, m.why(ctx, err, "did not stop")
			}
			continue
		case provider.StateStopped, provider.StateArchived, provider.StateError:
			if err := m.start(ctx, sb); err != nil {
				return sb, m.why(ctx, err, "could not be started from "+string(ps.State))
			}
			res.Started = true
		case provider.StateDestroyed:
			return sb, &unusable{ReasonLost, "the provider does not have it any more"}
		}
		return m.st.GetSandbox(ctx, sb.ID)
	}
	return sb, &unusable{ReasonStuck, "its state kept changing"}
}

// why turns a provider wait's failure into *unusable where the sandbox is
// at fault (gone, failed, a transition past OpTimeout); a provider outage
// or the caller's deadline stay as they are.
func (m *Manager) why(ctx context.Context, err error, what string) error {
	switch {
	case errors.Is(err, provider.ErrUnavailable):
		return err // the provider, not the sandbox
	case errors.Is(err, provider.ErrNotFound):
		return &unusable{ReasonLost, what + ": the provider lost it"}
	case errors.Is(err, provider.ErrFailed):
		return &unusable{ReasonFailed, what + ": " + err.Error()}
	case errors.Is(err, provider.ErrConflict):
		return &unusable{ReasonFailed, what + ": " + err.Error()}
	case errors.Is(err, context.DeadlineExceeded) && ctx.Err() == nil:
		return &unusable{ReasonStuck, fmt.Sprintf("%s within %s", what, m.cfg.OpTimeout)}
	}
	return err
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

// agentConnected reports whether the sandbox's agent can be asked for a
// flush: connected to this replica, or (behind several replicas) an agent
// of its project connected to another one, which Flush reaches through
// the database. A flush gated on this reaches the project's agents.
func (m *Manager) agentConnected(ctx context.Context, sb metastore.Sandbox) bool {
	if _, ok := m.agentOf(sb); ok {
		return true
	}
	ra, ok := m.cfg.Agents.(remoteAgents)
	if !ok {
		return false
	}
	elsewhere, err := ra.ConnectedElsewhere(ctx, sb.ProjectID)
	if err != nil {
		m.log.Warn("lifecycle: look up agents on other replicas", "sandbox", sb.ID, "err", err)
	}
	return elsewhere
}

// waitAgent polls (real time) until an agent of the sandbox satisfies ok,
// the provider reports the sandbox failed or gone (*unusable), no agent of
// it has answered for silentAfter (*unusable, ReasonSilent; 0: wait as long
// as ctx allows), or ctx ends. An agent connected to this replica is read
// from its session; one connected to another replica from the heartbeats
// it records in the registry.
func (m *Manager) waitAgent(ctx context.Context, sb metastore.Sandbox, silentAfter time.Duration, ok func(*agentView) bool) error {
	t := time.NewTicker(m.cfg.Poll)
	defer t.Stop()
	checks := 0
	lastSeen := time.Now()
	var lastBeat time.Time
	if cur, err := m.st.GetSandbox(ctx, sb.ID); err == nil {
		lastBeat = cur.LastHeartbeat
	}
	for {
		var view *agentView
		if hb, found := m.agentOf(sb); found {
			view = &agentView{state: hb.GetState(), version: hb.GetVersion(), clean: hb.GetClean()}
		} else if cur, err := m.st.GetSandbox(ctx, sb.ID); err == nil && cur.LastHeartbeat.After(lastBeat) {
			// A heartbeat recorded since the wait began: the agent talks
			// to another replica.
			lastBeat = cur.LastHeartbeat
			view = &agentView{state: agentStateOf(cur.AgentState), version: cur.AgentVersion, clean: cur.Backup == metastore.BackupClean && cur.PendingPaths == 0}
		}
		if view != nil {
			lastSeen = time.Now()
			prj, err := m.meta.GetProject(ctx, sb.ProjectID)
			if err != nil {
				return err
			}
			view.head = prj.Head
			if ok(view) {
				return nil
			}
		}
		if silentAfter > 0 && time.Since(lastSeen) > silentAfter {
			return &unusable{ReasonSilent, fmt.Sprintf("started, but no agent answered within %s", silentAfter)}
		}
		checks++
		if checks%8 == 0 && sb.ProviderID != "" {
			// Now and then: did the sandbox die while we wait?
			ps, err := m.refresh(ctx, sb)
			if err == nil {
				switch ps.State {
				case provider.StateError:
					return &unusable{ReasonFailed, fmt.Sprintf("it went to the error state while its agent was awaited (%s %s)", ps.ProviderState, ps.ErrorReason)}
				case provider.StateDestroyed:
					return &unusable{ReasonLost, "it vanished at the provider while its agent was awaited"}
				case provider.StateStopped, provider.StateStopping, provider.StateArchived:
					return &unusable{ReasonFailed, fmt.Sprintf("it stopped while its agent was awaited (%s)", ps.ProviderState)}
				}
			}
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("waiting for the agent of %s: %w", sb.ID, ctx.Err())
		case <-t.C:
		}
	}
}

// agentStateOf is the inverse of agentStateName.
func agentStateOf(name string) pb.AgentState {
	if name != "" {
		for s := range pb.AgentState_name {
			if agentStateName(pb.AgentState(s)) == name {
				return pb.AgentState(s)
			}
		}
	}
	return pb.AgentState_AGENT_STATE_UNSPECIFIED
}
