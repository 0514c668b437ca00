package lifecycle

import (
	"context"
	"errors"
	"fmt"

	"github.com/sandkeep/sandkeep/internal/metastore"
	"github.com/sandkeep/sandkeep/internal/provider"
)

// Reconciled counts what a Reconcile did.
type Reconciled struct {
	Orphans         int // provider sandboxes unknown to the database, destroyed
	OrphansKept     int // orphans left for later (their flush failed, or too young)
	MarkedDestroyed int // rows whose sandbox is gone at the provider
	StatesUpdated   int // rows whose state followed the provider's
}

// Reconcile repairs drift between the database and the provider:
//
//   - a sandbox the provider lists under sandkeep's label
//     (sandkeep.managed=true) that no live row names (an orphan: a create
//     interrupted before it was recorded, a row lost with a database) is
//     flushed if an agent of it is connected, then destroyed; if that flush
//     fails it is kept (and alerted on) until a later pass. Orphans younger
//     than OrphanGrace are left alone.
//   - a live row whose sandbox the provider does not know (Get: not found,
//     or destroyed) is marked destroyed;
//   - other rows take the state the provider reports (an illegal transition
//     is recorded and logged, not refused).
func (m *Manager) Reconcile(ctx context.Context) (Reconciled, error) {
	var r Reconciled
	if err := m.needProvider(); err != nil {
		return r, err
	}
	listed, err := m.cfg.Provider.List(ctx, map[string]string{provider.LabelManaged: "true"})
	if err != nil {
		return r, fmt.Errorf("list provider sandboxes: %w", err)
	}
	rows, err := m.st.ListSandboxes(ctx, metastore.SandboxFilter{LiveOnly: true})
	if err != nil {
		return r, err
	}
	byProvider := map[string]metastore.Sandbox{}
	byID := map[string]metastore.Sandbox{}
	for _, sb := range rows {
		byID[sb.ID] = sb
		if sb.ProviderID != "" {
			byProvider[sb.ProviderID] = sb
		}
	}
	seen := map[string]bool{}
	now := m.now()
	for _, ps := range listed {
		sb, ok := byProvider[ps.ID]
		if !ok {
			if sb, ok = byID[ps.Labels[LabelSandbox]]; ok && sb.ProviderID == "" {
				// A create recorded without its provider id: adopt it.
				if sb, err = m.st.UpdateSandbox(ctx, sb.ID, func(s *metastore.Sandbox) error { s.ProviderID = ps.ID; return nil }); err != nil {
					return r, err
				}
			} else {
				ok = false
			}
		}
		if !ok {
			if !ps.CreatedAt.IsZero() && now.Sub(ps.CreatedAt) < m.cfg.OrphanGrace {
				r.OrphansKept++
				continue
			}
			if m.destroyOrphan(ctx, ps) {
				r.Orphans++
			} else {
				r.OrphansKept++
			}
			continue
		}
		seen[sb.ID] = true
		if ps.State != sb.State {
			// Skip a project busy with an operation: it reads states itself.
			if unlock, free := m.locks.tryLock(sb.ProjectID); free {
				m.observe(ctx, sb, ps.State, "reconcile: "+ps.ProviderState)
				unlock()
				r.StatesUpdated++
			}
		}
	}
	for _, sb := range rows {
		if seen[sb.ID] {
			continue
		}
		if sb.ProviderID == "" {
			continue // being created (EnsureSandbox cleans up stale ones)
		}
		unlock, free := m.locks.tryLock(sb.ProjectID)
		if !free {
			continue
		}
		ps, err := m.refresh(ctx, sb) // marks it destroyed when not found
		unlock()
		if err != nil {
			m.log.Warn("lifecycle: reconcile: get sandbox", "sandbox", sb.ID, "err", err)
			continue
		}
		if ps.State == provider.StateDestroyed {
			if cur, err := m.st.GetSandbox(ctx, sb.ID); err == nil && cur.Live() {
				m.gone(ctx, cur, "the provider reports it destroyed")
			}
			r.MarkedDestroyed++
		} else if ps.State != sb.State {
			r.StatesUpdated++
		}
	}
	if r != (Reconciled{}) {
		m.log.Info("lifecycle: reconciled", "orphans_destroyed", r.Orphans, "orphans_kept", r.OrphansKept,
			"marked_destroyed", r.MarkedDestroyed, "states_updated", r.StatesUpdated)
	}
	return r, nil
}

// destroyOrphan flushes an orphan whose agent is connected, then destroys
// it. It reports whether the orphan is gone.
func (m *Manager) destroyOrphan(ctx context.Context, ps provider.Sandbox) bool {
	project := ps.Labels[provider.LabelProject]
	log := m.log.With("provider_id", ps.ID, "project", project, "sandbox", ps.Labels[LabelSandbox])
	if project != "" {
		orphan := metastore.Sandbox{ID: ps.Labels[LabelSandbox], ProviderID: ps.ID, ProjectID: project}
		if m.agentConnected(ctx, orphan) {
			v, err := m.cfg.Agents.Flush(ctx, project, m.cfg.FlushTimeout)
			if err != nil {
				m.count("alert", "orphan_flush")
				log.Error("lifecycle: alert: flushing an orphan sandbox failed; not destroying it", "err", err)
				return false
			}
			log.Info("lifecycle: orphan flushed", "version", v)
		}
	}
	if err := m.fence(ctx); err != nil {
		log.Warn("lifecycle: not destroying an orphan", "err", err)
		return false
	}
	err := m.cfg.Provider.Delete(ctx, ps.ID)
	if err != nil && !errors.Is(err, provider.ErrNotFound) {
		m.count("orphan_destroy", "error")
		log.Warn("lifecycle: destroy orphan", "err", err)
		return false
	}
	m.count("orphan_destroy", "ok")
	log.Warn("lifecycle: orphan sandbox destroyed (the provider had it, the database did not)")
	return true
}
