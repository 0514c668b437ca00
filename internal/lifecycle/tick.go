package lifecycle

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"sync"
	"time"

	"github.com/sandkeep/sandkeep/internal/metastore"
	"github.com/sandkeep/sandkeep/internal/policy"
	"github.com/sandkeep/sandkeep/internal/provider"
)

// maxSteps bounds the actions one tick takes on one sandbox (flush, verify,
// destroy is three).
const maxSteps = 6

// Tick makes one pass over the sandboxes: each is decided on and acted upon
// (see the package documentation), and Tick returns when every one is
// done. Sandboxes of a project busy with another operation
// (EnsureSandbox, a previous tick) are skipped. Errors of single sandboxes
// are recorded and logged, not returned.
func (m *Manager) Tick(ctx context.Context) error {
	wg, err := m.dispatch(ctx, true)
	wg.Wait()
	if err != nil {
		return err
	}
	return ctx.Err()
}

// dispatch starts a step for each project's sandbox, at most Parallel at
// once across every dispatch. With wait it waits for free slots (Tick);
// without (Run), projects that find no free slot wait for the next tick,
// so a sandbox whose provider calls are slow holds one slot and never the
// whole loop.
func (m *Manager) dispatch(ctx context.Context, wait bool) (*sync.WaitGroup, error) {
	var wg sync.WaitGroup
	if m.cfg.Provider == nil {
		return &wg, nil
	}
	all, err := m.st.ListSandboxes(ctx, metastore.SandboxFilter{})
	if err != nil {
		return &wg, err
	}
	// Per project: the live sandbox, or else the newest destroyed one
	// (delete_history).
	type pick struct {
		sb   metastore.Sandbox
		live bool
	}
	picks := map[string]pick{}
	var order []string
	for _, sb := range all {
		p, seen := picks[sb.ProjectID]
		if !seen {
			order = append(order, sb.ProjectID)
		}
		switch {
		case sb.Live():
			picks[sb.ProjectID] = pick{sb, true}
		case !p.live && (!seen || sb.CreatedAt.After(p.sb.CreatedAt)):
			picks[sb.ProjectID] = pick{sb, false}
		}
	}
	if !wait && len(order) > 0 {
		// Round robin: with every slot but one held by slow sandboxes,
		// each project still gets its turn.
		k := int(m.rr.Add(1) % uint64(len(order)))
		order = slices.Concat(order[k:], order[:k])
	}
	for _, project := range order {
		p := picks[project]
		if !p.live && !m.historyPolicyMayApply(ctx, project) {
			continue
		}
		if m.locks.busy(project) {
			continue // its step (or an ensure) is still running
		}
		if wait {
			select {
			case m.slots <- struct{}{}:
			case <-ctx.Done():
				return &wg, nil
			}
		} else {
			select {
			case m.slots <- struct{}{}:
			default:
				continue // every slot busy: next tick
			}
		}
		wg.Add(1)
		m.running.Add(1)
		go func() {
			defer func() { <-m.slots; wg.Done(); m.running.Done() }()
			m.step(ctx, p.sb)
		}()
	}
	return &wg, nil
}

// historyPolicyMayApply: a destroyed sandbox matters only when history is
// ever deleted.
func (m *Manager) historyPolicyMayApply(ctx context.Context, project string) bool {
	pol, _, err := m.effectivePolicy(ctx, project)
	return err == nil && pol.DeleteHistoryAfter > 0
}

// step decides on one sandbox and acts until the decision is none.
func (m *Manager) step(ctx context.Context, sb metastore.Sandbox) {
	unlock, ok := m.locks.tryLock(sb.ProjectID)
	if !ok {
		return
	}
	defer unlock()
	id := sb.ID
	for range maxSteps {
		if ctx.Err() != nil {
			return
		}
		var err error
		if sb, err = m.st.GetSandbox(ctx, id); err != nil {
			if !errors.Is(err, metastore.ErrNotFound) {
				m.log.Warn("lifecycle: read sandbox", "sandbox", id, "err", err)
			}
			return
		}
		if m.stale(sb) {
			m.gone(ctx, sb, "its create never completed")
			return
		}
		if u := m.stuck(sb); u != nil {
			// Flushed if its agent answers, then destroyed; the next
			// EnsureSandbox creates another.
			m.replace(ctx, sb, u)
			return
		}
		if sb.State.Transitional() && sb.ProviderID != "" {
			m.refresh(ctx, sb)
			if sb, err = m.st.GetSandbox(ctx, id); err != nil {
				return
			}
		}
		pol, hook, err := m.effectivePolicy(ctx, sb.ProjectID)
		if err != nil {
			m.log.Warn("lifecycle: policy", "project", sb.ProjectID, "err", err)
			return
		}
		ps, err := m.policySandbox(ctx, sb)
		if err != nil {
			if errors.Is(err, metastore.ErrNotFound) {
				return // the project is gone
			}
			m.log.Warn("lifecycle: sandbox status", "sandbox", id, "err", err)
			return
		}
		now := m.now()
		d := policy.Decide(now, pol, ps)
		m.noteAlert(sb, d)
		if d.Action == policy.ActionNone {
			return
		}
		m.log.Info("lifecycle: action", "sandbox", sb.ID, "project", sb.ProjectID, "action", d.Action, "for", d.For, "reason", d.Reason)
		if err := m.execute(ctx, sb, d, pol, hook); err != nil {
			if ctx.Err() != nil {
				return
			}
			m.log.Warn("lifecycle: action failed", "sandbox", sb.ID, "project", sb.ProjectID, "action", d.Action, "err", err)
			if d.Action != policy.ActionFlush && d.Action != policy.ActionVerify {
				return
			}
			// A failed flush or verify is recorded: decide again (rule 7
			// may stop the sandbox anyway; otherwise the backoff waits).
		}
	}
}

// stuck reports a sandbox in the error state or in a transition for longer
// than StuckAfter.
func (m *Manager) stuck(sb metastore.Sandbox) *unusable {
	if sb.ProviderID == "" || sb.StateSince.IsZero() || m.now().Sub(sb.StateSince) <= m.cfg.StuckAfter {
		return nil
	}
	switch {
	case sb.State == provider.StateError:
		return &unusable{ReasonFailed, fmt.Sprintf("in the error state since %s (%s)", sb.StateSince.Format(time.RFC3339), sb.LastError)}
	case sb.State.Transitional():
		return &unusable{ReasonStuck, fmt.Sprintf("%s since %s", sb.State, sb.StateSince.Format(time.RFC3339))}
	}
	return nil
}

// noteAlert logs an alerting decision at ERROR once per distinct reason.
func (m *Manager) noteAlert(sb metastore.Sandbox, d policy.Decision) {
	m.mu.Lock()
	defer m.mu.Unlock()
	if !d.Alert {
		delete(m.alerts, sb.ID)
		return
	}
	if m.alerts[sb.ID] == d.Reason {
		return
	}
	m.alerts[sb.ID] = d.Reason
	m.log.Error("lifecycle: alert", "sandbox", sb.ID, "project", sb.ProjectID, "action", d.Action, "for", d.For, "reason", d.Reason)
}

// effectivePolicy merges the project's override into the global policy.
// An override that makes the merged policy invalid is ignored (with a
// warning): SetPolicy refuses those, the global policy may have changed
// since.
func (m *Manager) effectivePolicy(ctx context.Context, project string) (policy.Policy, string, error) {
	lp, err := m.st.GetLifecyclePolicy(ctx, project)
	switch {
	case errors.Is(err, metastore.ErrNotFound):
		return withoutGraceIfNoHook(m.cfg.Policy, m.cfg.Webhook), m.cfg.Webhook, nil
	case err != nil:
		return policy.Policy{}, "", err
	}
	p, hook := m.merged(lp)
	if err := p.Validate(); err != nil {
		m.log.Warn("lifecycle: project policy contradicts the global one; using the global policy", "project", project, "err", err)
		p = withoutGraceIfNoHook(m.cfg.Policy, hook)
	}
	return p, hook, nil
}

// merged is a project's policy over the global one, and its webhook (the
// project's, else the global one); without a webhook the notify grace
// does not apply.
func (m *Manager) merged(lp metastore.LifecyclePolicy) (policy.Policy, string) {
	hook := lp.WebhookURL
	if hook == "" {
		hook = m.cfg.Webhook
	}
	return withoutGraceIfNoHook(policy.Merge(m.cfg.Policy, lp.Override), hook), hook
}

// withoutGraceIfNoHook: with no webhook nobody is notified, so the
// notify grace does not apply (and does not constrain stop-after).
func withoutGraceIfNoHook(p policy.Policy, hook string) policy.Policy {
	if hook == "" {
		p.NotifyGrace = 0
	}
	return p
}

// policySandbox is what policy.Decide needs to know of sb.
func (m *Manager) policySandbox(ctx context.Context, sb metastore.Sandbox) (policy.Sandbox, error) {
	prj, err := m.meta.GetProject(ctx, sb.ProjectID)
	if err != nil {
		return policy.Sandbox{}, err
	}
	lease, err := m.st.RunLeaseUntil(ctx, sb.ProjectID)
	if err != nil {
		return policy.Sandbox{}, err
	}
	ps := policy.Sandbox{
		State:         sb.State,
		LastActivity:  sb.LastActivity,
		LeaseUntil:    lease,
		ExtendedUntil: sb.ExtendedUntil,
		Backup:        backupStatus(sb, prj.Head),
		NotifiedAt:    map[policy.Action]time.Time{},
	}
	for k, v := range sb.NotifiedAt {
		ps.NotifiedAt[policy.Action(k)] = v
	}
	return ps, nil
}

func backupStatus(sb metastore.Sandbox, head int64) policy.BackupStatus {
	return policy.BackupStatus{
		Clean:          sb.Flushed,
		CleanVersion:   sb.CleanVersion,
		Head:           head,
		Verified:       sb.VerifiedVersion == head,
		LastFlushError: sb.LastFlushError,
		FlushFailures:  sb.FlushFailures,
		LastAttempt:    sb.LastAttempt,
	}
}

// execute performs one decision and records its outcome.
func (m *Manager) execute(ctx context.Context, sb metastore.Sandbox, d policy.Decision, pol policy.Policy, hook string) error {
	switch d.Action {
	case policy.ActionNotify:
		return m.notify(ctx, sb, d, pol, hook)
	case policy.ActionStop:
		return m.stop(ctx, sb)
	case policy.ActionFlush:
		return m.flush(ctx, sb)
	case policy.ActionVerify:
		return m.verify(ctx, sb)
	case policy.ActionDestroy:
		if err := m.fence(ctx); err != nil {
			return err
		}
		return m.destroy(ctx, sb, false)
	case policy.ActionArchive:
		return m.archive(ctx, sb)
	case policy.ActionDeleteHistory:
		return m.deleteHistory(ctx, sb)
	}
	return fmt.Errorf("unknown action %q", d.Action)
}

// ---- provider states ----

// observe records a state the provider reported.
func (m *Manager) observe(ctx context.Context, sb metastore.Sandbox, st provider.State, note string) {
	if !st.Valid() || st == sb.State {
		return
	}
	tr, err := m.st.TransitionSandbox(ctx, sb.ID, st, m.now(), true, note)
	switch {
	case err != nil:
		m.log.Warn("lifecycle: record observed state", "sandbox", sb.ID, "from", sb.State, "to", st, "err", err)
	case tr.Illegal:
		m.log.Warn("lifecycle: illegal transition observed at the provider; recorded", "sandbox", sb.ID, "from", tr.From, "to", tr.To, "note", note)
		m.count("illegal_transition", "observed")
	}
}

// move records a transition the manager makes (started -> stopping ...).
// An illegal one is recorded as observed: the provider accepted it.
func (m *Manager) move(ctx context.Context, sb metastore.Sandbox, to provider.State, note string) {
	if _, err := m.st.TransitionSandbox(ctx, sb.ID, to, m.now(), false, note); err != nil {
		if errors.Is(err, metastore.ErrIllegalTransition) {
			m.observe(ctx, sb, to, note)
			return
		}
		m.log.Warn("lifecycle: record state", "sandbox", sb.ID, "to", to, "err", err)
	}
}

// refresh reads the sandbox's state from the provider and records it. A
// sandbox the provider does not know is destroyed.
func (m *Manager) refresh(ctx context.Context, sb metastore.Sandbox) (provider.Sandbox, error) {
	octx, cancel := context.WithTimeout(ctx, m.cfg.OpTimeout)
	defer cancel()
	ps, err := m.cfg.Provider.Get(octx, sb.ProviderID)
	if errors.Is(err, provider.ErrNotFound) {
		m.gone(ctx, sb, "the provider does not know it")
		return provider.Sandbox{ID: sb.ProviderID, State: provider.StateDestroyed}, nil
	}
	if err != nil {
		return ps, err
	}
	note := ps.ProviderState
	if ps.ErrorReason != "" {
		note += ": " + ps.ErrorReason
	}
	m.observe(ctx, sb, ps.State, note)
	if ps.State == provider.StateError && ps.ErrorReason != "" {
		m.setLastError(ctx, sb.ID, "provider: "+ps.ErrorReason)
	}
	return ps, nil
}

// gone marks a sandbox whose provider sandbox vanished as destroyed.
func (m *Manager) gone(ctx context.Context, sb metastore.Sandbox, why string) {
	if !sb.Live() {
		return
	}
	m.log.Warn("lifecycle: sandbox gone at the provider; marked destroyed", "sandbox", sb.ID, "provider_id", sb.ProviderID, "why", why)
	m.markDestroyed(ctx, sb, why, "gone at the provider: "+why)
	m.count("mark_destroyed", "ok")
}

// markDestroyed records a sandbox sandkeep gives up on as destroyed
// (observed: the provider may still have it), keeps why in its last
// error, and revokes its token.
func (m *Manager) markDestroyed(ctx context.Context, sb metastore.Sandbox, note, lastError string) {
	m.observe(ctx, sb, provider.StateDestroyed, note)
	m.setLastError(ctx, sb.ID, lastError)
	if err := m.st.RevokeToken(ctx, sb.TokenHash); err != nil {
		m.log.Warn("lifecycle: revoke token", "sandbox", sb.ID, "err", err)
	}
}

func (m *Manager) setLastError(ctx context.Context, id, msg string) {
	if _, err := m.st.UpdateSandbox(ctx, id, func(s *metastore.Sandbox) error { s.LastError = msg; return nil }); err != nil {
		m.log.Warn("lifecycle: record error", "sandbox", id, "err", err)
	}
}

// waitState waits (real time, bounded by OpTimeout) for the provider to
// report want, recording what it sees.
func (m *Manager) waitState(ctx context.Context, sb metastore.Sandbox, want provider.State) error {
	octx, cancel := context.WithTimeout(ctx, m.cfg.OpTimeout)
	defer cancel()
	ps, err := provider.WaitForState(octx, m.cfg.Provider, sb.ProviderID, want, m.cfg.Poll)
	switch {
	case err == nil:
		m.observe(ctx, sb, want, ps.ProviderState)
		return nil
	case errors.Is(err, provider.ErrNotFound):
		m.gone(ctx, sb, err.Error())
	case errors.Is(err, provider.ErrFailed):
		m.observe(ctx, sb, provider.StateError, ps.ErrorReason)
		m.setLastError(ctx, sb.ID, err.Error())
	default:
		if ps.State.Valid() {
			m.observe(ctx, sb, ps.State, ps.ProviderState)
		}
	}
	return err
}

// ---- actions ----

func (m *Manager) stop(ctx context.Context, sb metastore.Sandbox) error {
	if sb.ProviderID == "" {
		return fmt.Errorf("sandbox %s has no provider id", sb.ID)
	}
	octx, cancel := context.WithTimeout(ctx, m.cfg.OpTimeout)
	err := m.cfg.Provider.Stop(octx, sb.ProviderID)
	cancel()
	if errors.Is(err, provider.ErrNotFound) {
		m.gone(ctx, sb, "stop: not found")
		return nil
	}
	if err != nil {
		m.count("stop", "error")
		m.setLastError(ctx, sb.ID, "stop: "+err.Error())
		return err
	}
	m.move(ctx, sb, provider.StateStopping, "stop")
	sb.State = provider.StateStopping
	m.count("stop", "ok")
	_, err = m.refresh(ctx, sb)
	return err
}

func (m *Manager) archive(ctx context.Context, sb metastore.Sandbox) error {
	octx, cancel := context.WithTimeout(ctx, m.cfg.OpTimeout)
	err := m.cfg.Provider.Archive(octx, sb.ProviderID)
	cancel()
	switch {
	case errors.Is(err, provider.ErrUnsupported):
		m.log.Info("lifecycle: the provider cannot archive; left stopped", "sandbox", sb.ID)
		m.count("archive", "unsupported")
		return nil
	case errors.Is(err, provider.ErrNotFound):
		m.gone(ctx, sb, "archive: not found")
		return nil
	case err != nil:
		m.count("archive", "error")
		m.setLastError(ctx, sb.ID, "archive: "+err.Error())
		return err
	}
	m.count("archive", "ok")
	_, err = m.refresh(ctx, sb)
	return err
}

// startForFlush brings a stopped, archived or failed sandbox up so its
// agent can flush, and waits for the agent to connect.
func (m *Manager) startForFlush(ctx context.Context, sb metastore.Sandbox) error {
	if sb.ProviderID == "" {
		return fmt.Errorf("sandbox %s has no provider id", sb.ID)
	}
	m.log.Info("lifecycle: starting the sandbox so that its agent can flush", "sandbox", sb.ID, "state", sb.State)
	if err := m.start(ctx, sb); err != nil {
		return err
	}
	octx, cancel := context.WithTimeout(ctx, m.cfg.ReadyTimeout)
	defer cancel()
	return m.waitAgent(octx, sb, 0, func(*agentView) bool { return true })
}

// start asks the provider to start the sandbox and waits until it runs.
func (m *Manager) start(ctx context.Context, sb metastore.Sandbox) error {
	octx, cancel := context.WithTimeout(ctx, m.cfg.OpTimeout)
	err := m.cfg.Provider.Start(octx, sb.ProviderID)
	cancel()
	if errors.Is(err, provider.ErrNotFound) {
		m.gone(ctx, sb, "start: not found")
		return err
	}
	if err != nil {
		m.count("start", "error")
		m.setLastError(ctx, sb.ID, "start: "+err.Error())
		return err
	}
	m.move(ctx, sb, provider.StateStarting, "start")
	sb.State = provider.StateStarting
	if err := m.waitState(ctx, sb, provider.StateStarted); err != nil {
		m.count("start", "error")
		return err
	}
	m.count("start", "ok")
	return nil
}

func (m *Manager) flush(ctx context.Context, sb metastore.Sandbox) error {
	if sb.State != provider.StateStarted {
		if err := m.startForFlush(ctx, sb); err != nil {
			m.flushFailed(ctx, sb, "flush", fmt.Errorf("start for flush: %w", err))
			return err
		}
	}
	v, err := m.cfg.Agents.Flush(ctx, sb.ProjectID, m.cfg.FlushTimeout)
	if err != nil {
		m.flushFailed(ctx, sb, "flush", err)
		return err
	}
	now := m.now()
	_, err = m.st.UpdateSandbox(ctx, sb.ID, func(s *metastore.Sandbox) error {
		s.Flushed, s.CleanVersion, s.Backup = true, v, metastore.BackupClean
		s.FlushFailures, s.LastFlushError, s.LastAttempt = 0, "", now
		return nil
	})
	m.count("flush", "ok")
	m.log.Info("lifecycle: flushed", "sandbox", sb.ID, "project", sb.ProjectID, "version", v)
	return err
}

// flushFailed records a failed flush or verify: alert, metric, backoff.
func (m *Manager) flushFailed(ctx context.Context, sb metastore.Sandbox, what string, cause error) {
	now := m.now()
	up, err := m.st.UpdateSandbox(ctx, sb.ID, func(s *metastore.Sandbox) error {
		s.FlushFailures++
		s.LastAttempt = now
		s.LastFlushError = fmt.Sprintf("%s: %v", what, cause)
		s.Backup = metastore.BackupFailed
		return nil
	})
	if err != nil {
		m.log.Warn("lifecycle: record failure", "sandbox", sb.ID, "err", err)
	}
	m.count(what, "error")
	m.count("alert", what)
	m.log.Error("lifecycle: alert: "+what+" failed; the sandbox is not destroyed", "sandbox", sb.ID, "project", sb.ProjectID,
		"failures", up.FlushFailures, "retry_in", policy.Backoff(up.FlushFailures), "err", cause)
}

func (m *Manager) verify(ctx context.Context, sb metastore.Sandbox) error {
	head, err := m.VerifyHead(ctx, sb.ProjectID)
	if err != nil {
		m.flushFailed(ctx, sb, "verify", err)
		return err
	}
	_, err = m.st.UpdateSandbox(ctx, sb.ID, func(s *metastore.Sandbox) error {
		s.VerifiedVersion = head
		s.FlushFailures, s.LastFlushError = 0, ""
		if s.Backup == metastore.BackupFailed && s.Flushed {
			s.Backup = metastore.BackupClean
		}
		return nil
	})
	m.count("verify", "ok")
	return err
}

// destroy deletes the sandbox at the provider and records it. Unless
// force, it re-checks the backup gate first (a heartbeat may have arrived
// since the decision).
func (m *Manager) destroy(ctx context.Context, sb metastore.Sandbox, force bool) error {
	if !force {
		prj, err := m.meta.GetProject(ctx, sb.ProjectID)
		if err != nil {
			return err
		}
		cur, err := m.st.GetSandbox(ctx, sb.ID)
		if err != nil {
			return err
		}
		if b := backupStatus(cur, prj.Head); !b.Ready() {
			return fmt.Errorf("%w: %s", ErrRefused, notReadyReason(cur, b))
		}
		sb = cur
	}
	if sb.ProviderID != "" {
		octx, cancel := context.WithTimeout(ctx, m.cfg.OpTimeout)
		err := m.cfg.Provider.Delete(octx, sb.ProviderID)
		cancel()
		if err != nil && !errors.Is(err, provider.ErrNotFound) {
			m.count("destroy", "error")
			m.setLastError(ctx, sb.ID, "destroy: "+err.Error())
			return err
		}
	}
	if _, err := m.st.TransitionSandbox(ctx, sb.ID, provider.StateDestroyed, m.now(), true, "destroyed by sandkeep"); err != nil {
		return err
	}
	if err := m.st.RevokeToken(ctx, sb.TokenHash); err != nil {
		m.log.Warn("lifecycle: revoke token", "sandbox", sb.ID, "err", err)
	}
	m.count("destroy", "ok")
	m.log.Info("lifecycle: destroyed", "sandbox", sb.ID, "project", sb.ProjectID, "clean_version", sb.CleanVersion, "forced", force)
	return nil
}

func notReadyReason(sb metastore.Sandbox, b policy.BackupStatus) string {
	switch {
	case !b.Clean:
		return fmt.Sprintf("sandbox %s has no confirmed flush since its last change (backup %s)", sb.ID, sb.Backup)
	case b.CleanVersion != b.Head:
		return fmt.Sprintf("sandbox %s was flushed at version %d but the head is %d", sb.ID, b.CleanVersion, b.Head)
	default:
		return fmt.Sprintf("the head (version %d) is not verified", b.Head)
	}
}

func (m *Manager) deleteHistory(ctx context.Context, sb metastore.Sandbox) error {
	if _, err := m.st.LiveSandbox(ctx, sb.ProjectID); err == nil {
		return fmt.Errorf("%w: project %s has a live sandbox", ErrRefused, sb.ProjectID)
	}
	objects, bytes, err := m.cfg.Repo.DeleteProject(ctx, sb.ProjectID)
	if err != nil {
		m.count("delete_history", "error")
		return err
	}
	m.count("delete_history", "ok")
	m.log.Info("lifecycle: project history deleted", "project", sb.ProjectID, "objects", objects, "bytes", bytes)
	return nil
}
