package lifecycle

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"time"

	"github.com/sandkeep/sandkeep/internal/metastore"
	"github.com/sandkeep/sandkeep/internal/policy"
)

// CleanupNotice is the JSON body POSTed to a project's webhook
// NotifyGrace before a cleanup. The platform postpones the cleanup by
// renewing (or acquiring) a run lease of the project, or with
// LifecycleService.ExtendSandbox, before NotBefore.
type CleanupNotice struct {
	Event        string    `json:"event"`  // "sandkeep.cleanup"
	Action       string    `json:"action"` // stop, destroy, archive, delete_history
	SandboxID    string    `json:"sandbox_id"`
	ProjectID    string    `json:"project_id"`
	ProviderID   string    `json:"provider_id,omitempty"`
	State        string    `json:"state"`
	LastActivity time.Time `json:"last_activity"`
	// NotBefore: the cleanup happens at this time or later.
	NotBefore    time.Time `json:"not_before"`
	GraceSeconds float64   `json:"grace_seconds"`
	Reason       string    `json:"reason"`
	SentAt       time.Time `json:"sent_at"`
}

func (m *Manager) notify(ctx context.Context, sb metastore.Sandbox, d policy.Decision, pol policy.Policy, hook string) error {
	now := m.now()
	n := CleanupNotice{
		Event: "sandkeep.cleanup", Action: string(d.For), SandboxID: sb.ID, ProjectID: sb.ProjectID, ProviderID: sb.ProviderID,
		State: string(sb.State), LastActivity: sb.LastActivity, NotBefore: now.Add(pol.NotifyGrace),
		GraceSeconds: pol.NotifyGrace.Seconds(), Reason: d.Reason, SentAt: now,
	}
	result := "skipped"
	if hook != "" {
		if err := m.post(ctx, hook, n); err != nil {
			// Recorded anyway: a broken webhook must not keep sandboxes
			// running forever; it delays each cleanup by the grace only.
			m.log.Warn("lifecycle: webhook failed; the cleanup still waits for the grace period", "sandbox", sb.ID, "url", hook, "err", err)
			result = "error"
		} else {
			result = "ok"
		}
	}
	m.count("notify", result)
	_, err := m.st.UpdateSandbox(ctx, sb.ID, func(s *metastore.Sandbox) error {
		if s.NotifiedAt == nil {
			s.NotifiedAt = map[string]time.Time{}
		}
		s.NotifiedAt[string(d.For)] = now
		return nil
	})
	return err
}

func (m *Manager) post(ctx context.Context, url string, body any) error {
	b, err := json.Marshal(body)
	if err != nil {
		return err
	}
	ctx, cancel := context.WithTimeout(ctx, m.cfg.WebhookTimeout)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, url, bytes.NewReader(b))
	if err != nil {
		return err
	}
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set("User-Agent", "sandkeep-coordinator")
	resp, err := m.cfg.HTTPClient.Do(req)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	_, _ = io.Copy(io.Discard, io.LimitReader(resp.Body, 64<<10))
	if resp.StatusCode/100 != 2 {
		return fmt.Errorf("webhook answered %s", resp.Status)
	}
	return nil
}
