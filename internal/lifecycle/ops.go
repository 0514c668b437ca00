package lifecycle

import (
	"context"
	"errors"
	"fmt"
	"net/url"
	"time"

	"github.com/sandkeep/sandkeep/internal/metastore"
	"github.com/sandkeep/sandkeep/internal/policy"
	"github.com/sandkeep/sandkeep/internal/provider"
)

// MaxLeaseTTL bounds one run lease (renew it for longer runs).
const MaxLeaseTTL = 24 * time.Hour

// MaxExtension bounds one ExtendSandbox.
const MaxExtension = 7 * 24 * time.Hour

// View is a sandbox as the API shows it.
type View struct {
	metastore.Sandbox
	Head       int64     // the project's head version
	LeaseUntil time.Time // the project's run lease end (zero: none)
	Ready      bool      // flushed clean at the head and the head verified: may be destroyed
	Location   string    // where its workspace is, if the provider can say
}

// ListSandboxes returns the project's sandboxes ("" for all), destroyed
// ones too unless liveOnly.
func (m *Manager) ListSandboxes(ctx context.Context, projectID string, liveOnly bool) ([]View, error) {
	if projectID != "" {
		if _, err := m.meta.GetProject(ctx, projectID); err != nil {
			return nil, err
		}
	}
	sbs, err := m.st.ListSandboxes(ctx, metastore.SandboxFilter{ProjectID: projectID, LiveOnly: liveOnly})
	if err != nil {
		return nil, err
	}
	out := make([]View, 0, len(sbs))
	heads := map[string]int64{}
	leases := map[string]time.Time{}
	for _, sb := range sbs {
		if _, ok := heads[sb.ProjectID]; !ok {
			prj, err := m.meta.GetProject(ctx, sb.ProjectID)
			if err != nil && !errors.Is(err, metastore.ErrNotFound) {
				return nil, err
			}
			heads[sb.ProjectID] = prj.Head
			if leases[sb.ProjectID], err = m.st.RunLeaseUntil(ctx, sb.ProjectID); err != nil {
				return nil, err
			}
		}
		out = append(out, m.view(sb, heads[sb.ProjectID], leases[sb.ProjectID]))
	}
	return out, nil
}

func (m *Manager) view(sb metastore.Sandbox, head int64, lease time.Time) View {
	v := View{Sandbox: sb, Head: head, LeaseUntil: lease, Ready: backupStatus(sb, head).Ready()}
	if sb.ProviderID != "" && sb.Live() && m.cfg.Provider != nil {
		v.Location = provider.LocationOf(m.cfg.Provider, sb.ProviderID)
	}
	return v
}

// GetSandbox returns one sandbox.
func (m *Manager) GetSandbox(ctx context.Context, id string) (View, error) {
	sb, err := m.st.GetSandbox(ctx, id)
	if err != nil {
		return View{}, err
	}
	return m.viewOf(ctx, sb)
}

func (m *Manager) viewOf(ctx context.Context, sb metastore.Sandbox) (View, error) {
	prj, err := m.meta.GetProject(ctx, sb.ProjectID)
	if err != nil {
		return View{}, err
	}
	lease, err := m.st.RunLeaseUntil(ctx, sb.ProjectID)
	if err != nil {
		return View{}, err
	}
	return m.view(sb, prj.Head, lease), nil
}

// StopSandbox stops a sandbox now (its agent flushes on the way down).
func (m *Manager) StopSandbox(ctx context.Context, id string) (View, error) {
	if err := m.needProvider(); err != nil {
		return View{}, err
	}
	sb, err := m.st.GetSandbox(ctx, id)
	if err != nil {
		return View{}, err
	}
	unlock, err := m.locks.lock(ctx, sb.ProjectID)
	if err != nil {
		return View{}, err
	}
	defer unlock()
	if sb, err = m.st.GetSandbox(ctx, id); err != nil {
		return View{}, err
	}
	switch sb.State {
	case provider.StateStopped, provider.StateArchived:
	case provider.StateDestroyed:
		return View{}, fmt.Errorf("%w: sandbox %s is destroyed", ErrRefused, id)
	default:
		if err := m.stop(ctx, sb); err != nil {
			return View{}, err
		}
		if cur, err := m.st.GetSandbox(ctx, id); err == nil && cur.State == provider.StateStopping {
			_ = m.waitState(ctx, cur, provider.StateStopped)
		}
	}
	return m.GetSandbox(ctx, id)
}

// Destroyed is DestroySandbox's result.
type Destroyed struct {
	View View
	// Lost describes what a forced destroy may have lost (empty when the
	// backup was ready).
	Lost string
}

// DestroySandbox destroys a sandbox once its backup is ready: it first
// tries to get there (a flush barrier if the sandbox runs, a verify of the
// head) and refuses (ErrRefused) if it cannot. force destroys anyway and
// says what may be lost: the pending changes of the last heartbeat and
// whatever changed since the last confirmed flush.
func (m *Manager) DestroySandbox(ctx context.Context, id string, force bool) (Destroyed, error) {
	if err := m.needProvider(); err != nil {
		return Destroyed{}, err
	}
	sb, err := m.st.GetSandbox(ctx, id)
	if err != nil {
		return Destroyed{}, err
	}
	unlock, err := m.locks.lock(ctx, sb.ProjectID)
	if err != nil {
		return Destroyed{}, err
	}
	defer unlock()
	if sb, err = m.st.GetSandbox(ctx, id); err != nil {
		return Destroyed{}, err
	}
	if !sb.Live() {
		v, err := m.viewOf(ctx, sb)
		return Destroyed{View: v}, err
	}
	head := func() int64 {
		prj, _ := m.meta.GetProject(ctx, sb.ProjectID)
		return prj.Head
	}
	var lost string
	b := backupStatus(sb, head())
	if !b.Ready() && !force {
		// Try to make it ready: flush a running sandbox, verify the head.
		if !(b.Clean && b.CleanVersion == b.Head) && sb.State == provider.StateStarted {
			if m.agentConnected(ctx, sb) {
				_ = m.flush(ctx, sb)
			}
		}
		if sb, err = m.st.GetSandbox(ctx, id); err != nil {
			return Destroyed{}, err
		}
		if b = backupStatus(sb, head()); b.Clean && b.CleanVersion == b.Head && !b.Verified {
			_ = m.verify(ctx, sb)
			if sb, err = m.st.GetSandbox(ctx, id); err != nil {
				return Destroyed{}, err
			}
			b = backupStatus(sb, head())
		}
		if !b.Ready() {
			return Destroyed{}, fmt.Errorf("%w: %s; flush it (or stop it: the agent flushes on SIGTERM) and retry, or --force", ErrRefused, notReadyReason(sb, b))
		}
	}
	if !b.Ready() {
		lost = lossReport(sb, b)
		m.log.Warn("lifecycle: forced destroy without a verified flush", "sandbox", id, "project", sb.ProjectID, "may_lose", lost)
	}
	if err := m.destroy(ctx, sb, force); err != nil {
		return Destroyed{}, err
	}
	v, err := m.GetSandbox(ctx, id)
	return Destroyed{View: v, Lost: lost}, err
}

func lossReport(sb metastore.Sandbox, b policy.BackupStatus) string {
	s := notReadyReason(sb, b)
	if sb.LastHeartbeat.IsZero() {
		return s + "; no heartbeat was ever received: anything written in the sandbox and not synced is lost"
	}
	if sb.PendingPaths > 0 || sb.PendingBytes > 0 || sb.AgentState != "idle" {
		return fmt.Sprintf("%s; last heartbeat (%s, agent %s at version %d): %d pending paths, %d pending bytes not saved",
			s, sb.LastHeartbeat.Format(time.RFC3339), sb.AgentState, sb.AgentVersion, sb.PendingPaths, sb.PendingBytes)
	}
	return fmt.Sprintf("%s; last heartbeat (%s) reported nothing pending at version %d: changes after it are lost", s, sb.LastHeartbeat.Format(time.RFC3339), sb.AgentVersion)
}

// ExtendSandbox postpones every cleanup of the sandbox (or of the
// project's live sandbox when id is empty) until now+d: the platform's
// answer to a cleanup webhook.
func (m *Manager) ExtendSandbox(ctx context.Context, id, projectID string, d time.Duration) (View, error) {
	if d <= 0 || d > MaxExtension {
		return View{}, fmt.Errorf("%w: extension must be in (0, %s]", metastore.ErrInvalid, MaxExtension)
	}
	if id == "" {
		sb, err := m.st.LiveSandbox(ctx, projectID)
		if err != nil {
			return View{}, err
		}
		id = sb.ID
	}
	until := m.now().Add(d)
	sb, err := m.st.UpdateSandbox(ctx, id, func(s *metastore.Sandbox) error {
		if projectID != "" && s.ProjectID != projectID {
			return fmt.Errorf("%w: sandbox %s is not of project %s", metastore.ErrInvalid, id, projectID)
		}
		if until.After(s.ExtendedUntil) {
			s.ExtendedUntil = until
		}
		return nil
	})
	if err != nil {
		return View{}, err
	}
	m.count("extend", "ok")
	return m.viewOf(ctx, sb)
}

// AcquireRunLease takes a run lease of the project for ttl: its sandbox is
// not reaped until the lease ends.
func (m *Manager) AcquireRunLease(ctx context.Context, projectID string, ttl time.Duration) (metastore.RunLease, error) {
	if ttl <= 0 || ttl > MaxLeaseTTL {
		return metastore.RunLease{}, fmt.Errorf("%w: ttl must be in (0, %s]", metastore.ErrInvalid, MaxLeaseTTL)
	}
	return m.st.AcquireRunLease(ctx, projectID, m.now(), ttl)
}

// RenewRunLease makes a lease end ttl from now.
func (m *Manager) RenewRunLease(ctx context.Context, id string, ttl time.Duration) (metastore.RunLease, error) {
	if ttl <= 0 || ttl > MaxLeaseTTL {
		return metastore.RunLease{}, fmt.Errorf("%w: ttl must be in (0, %s]", metastore.ErrInvalid, MaxLeaseTTL)
	}
	return m.st.RenewRunLease(ctx, id, m.now(), ttl)
}

// ListRunLeases returns the leases held now, of the project ("" for every
// project), by project then expiry.
func (m *Manager) ListRunLeases(ctx context.Context, projectID string) ([]metastore.RunLease, error) {
	ids := []string{projectID}
	if projectID == "" {
		prjs, err := m.meta.ListProjects(ctx)
		if err != nil {
			return nil, err
		}
		ids = ids[:0]
		for _, p := range prjs {
			ids = append(ids, p.ID)
		}
	} else if _, err := m.meta.GetProject(ctx, projectID); err != nil {
		return nil, err
	}
	var out []metastore.RunLease
	for _, id := range ids {
		ls, err := m.st.ListRunLeases(ctx, id, m.now())
		if err != nil {
			return nil, err
		}
		out = append(out, ls...)
	}
	return out, nil
}

// ReleaseRunLease ends a lease now.
func (m *Manager) ReleaseRunLease(ctx context.Context, id string) (metastore.RunLease, error) {
	return m.st.ReleaseRunLease(ctx, id, m.now())
}

// PolicyView is a project's policy as the API shows it.
type PolicyView struct {
	ProjectID string
	Effective policy.Policy
	Global    policy.Policy
	Override  policy.Override
	// Webhook is the effective webhook; ProjectWebhook the project's own.
	Webhook, ProjectWebhook string
	UpdatedAt               time.Time
}

// GetPolicy returns the project's effective policy ("" for the global one).
func (m *Manager) GetPolicy(ctx context.Context, projectID string) (PolicyView, error) {
	v := PolicyView{ProjectID: projectID, Effective: m.cfg.Policy, Global: m.cfg.Policy, Webhook: m.cfg.Webhook}
	if projectID == "" {
		return v, nil
	}
	if _, err := m.meta.GetProject(ctx, projectID); err != nil {
		return v, err
	}
	lp, err := m.st.GetLifecyclePolicy(ctx, projectID)
	switch {
	case errors.Is(err, metastore.ErrNotFound):
		return v, nil
	case err != nil:
		return v, err
	}
	v.Override, v.ProjectWebhook, v.UpdatedAt = lp.Override, lp.WebhookURL, lp.UpdatedAt
	v.Effective, v.Webhook, err = m.effectivePolicy(ctx, projectID)
	return v, err
}

// PolicyChange is a SetPolicy request: Override's set fields replace the
// stored ones (Reset drops the stored ones first); Webhook, if not nil,
// replaces the project's webhook ("" clears it).
type PolicyChange struct {
	Override policy.Override
	Reset    bool
	Webhook  *string
}

// SetPolicy changes a project's policy override. The merged policy must
// pass policy.Validate.
func (m *Manager) SetPolicy(ctx context.Context, projectID string, c PolicyChange) (PolicyView, error) {
	if projectID == "" {
		return PolicyView{}, fmt.Errorf("%w: the global policy is configured on serve (--stop-after …); give a project", metastore.ErrInvalid)
	}
	if _, err := m.meta.GetProject(ctx, projectID); err != nil {
		return PolicyView{}, err
	}
	lp, err := m.st.GetLifecyclePolicy(ctx, projectID)
	if err != nil && !errors.Is(err, metastore.ErrNotFound) {
		return PolicyView{}, err
	}
	lp.ProjectID = projectID
	if c.Reset {
		lp.Override = policy.Override{}
	}
	set := func(dst **time.Duration, src *time.Duration) {
		if src != nil {
			v := *src
			*dst = &v
		}
	}
	set(&lp.Override.StopAfter, c.Override.StopAfter)
	set(&lp.Override.DestroyAfter, c.Override.DestroyAfter)
	set(&lp.Override.ArchiveAfter, c.Override.ArchiveAfter)
	set(&lp.Override.DeleteHistoryAfter, c.Override.DeleteHistoryAfter)
	set(&lp.Override.NotifyGrace, c.Override.NotifyGrace)
	if c.Webhook != nil {
		if *c.Webhook != "" {
			u, err := url.Parse(*c.Webhook)
			if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
				return PolicyView{}, fmt.Errorf("%w: webhook %q: want an http(s) URL", metastore.ErrInvalid, *c.Webhook)
			}
		}
		lp.WebhookURL = *c.Webhook
	}
	merged, _ := m.merged(lp)
	if err := merged.Validate(); err != nil {
		return PolicyView{}, fmt.Errorf("%w: %v", metastore.ErrInvalid, err)
	}
	lp.UpdatedAt = m.now()
	if err := m.st.SetLifecyclePolicy(ctx, lp); err != nil {
		return PolicyView{}, err
	}
	m.cfg.Repo.ProjectChanged(ctx, projectID, "lifecycle policy")
	return m.GetPolicy(ctx, projectID)
}
