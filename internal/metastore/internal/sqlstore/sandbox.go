package sqlstore

import (
	"context"
	"encoding/json"
	"fmt"
	"maps"
	"time"

	"github.com/sandkeep/sandkeep/internal/metastore"
	"github.com/sandkeep/sandkeep/internal/metastore/internal/storeutil"
	"github.com/sandkeep/sandkeep/internal/sandboxstate"
)

// The lifecycle tables (migration 0003_lifecycle): see metastore.SandboxStore.

const sandboxCols = `id, project_id, provider, provider_id, state, state_since, created_at, last_activity,
	backup, clean_version, flushed, verified_version, flush_failures, last_attempt, last_flush_error,
	agent_state, agent_version, pending_paths, pending_bytes, last_heartbeat, notified, extended_until,
	token_hash, last_error`

// trunc is t as stored: UTC, microseconds.
func trunc(t time.Time) time.Time { return t.UTC().Truncate(time.Microsecond) }

func truncZero(t time.Time) time.Time {
	if t.IsZero() {
		return t
	}
	return trunc(t)
}

func scanSandbox(r Row) (metastore.Sandbox, error) {
	var sb metastore.Sandbox
	var state, backup, notified string
	var lastAttempt, lastHB, extended *time.Time
	if err := r.Scan(&sb.ID, &sb.ProjectID, &sb.Provider, &sb.ProviderID, &state, &sb.StateSince, &sb.CreatedAt, &sb.LastActivity,
		&backup, &sb.CleanVersion, &sb.Flushed, &sb.VerifiedVersion, &sb.FlushFailures, &lastAttempt, &sb.LastFlushError,
		&sb.AgentState, &sb.AgentVersion, &sb.PendingPaths, &sb.PendingBytes, &lastHB, &notified, &extended,
		&sb.TokenHash, &sb.LastError); err != nil {
		return sb, err
	}
	sb.State, sb.Backup = sandboxstate.State(state), metastore.BackupState(backup)
	sb.LastAttempt, sb.LastHeartbeat, sb.ExtendedUntil = deref(lastAttempt), deref(lastHB), deref(extended)
	if err := json.Unmarshal([]byte(notified), &sb.NotifiedAt); err != nil {
		return sb, fmt.Errorf("stored notified %q: %w", notified, err)
	}
	return sb, nil
}

func checkSandboxText(sb metastore.Sandbox) error {
	for _, s := range []string{sb.ID, sb.ProjectID, sb.Provider, sb.ProviderID, sb.AgentState, sb.LastFlushError, sb.TokenHash, sb.LastError} {
		if !storeutil.Storable(s) {
			return fmt.Errorf("%w: sandbox field %q is not storable text", metastore.ErrInvalid, s)
		}
	}
	return nil
}

// CreateSandbox implements metastore.SandboxStore.
func (s *Store) CreateSandbox(ctx context.Context, sb metastore.Sandbox) (metastore.Sandbox, error) {
	if sb.ID == "" || sb.ProjectID == "" || sb.Provider == "" || !sb.State.Valid() {
		return sb, fmt.Errorf("%w: a sandbox needs an id, a project, a provider and a valid state", metastore.ErrInvalid)
	}
	if err := checkSandboxText(sb); err != nil {
		return sb, err
	}
	if sb.CreatedAt.IsZero() {
		sb.CreatedAt = storeutil.Now()
	}
	if sb.StateSince.IsZero() {
		sb.StateSince = sb.CreatedAt
	}
	if sb.LastActivity.IsZero() {
		sb.LastActivity = sb.CreatedAt
	}
	if sb.Backup == "" {
		sb.Backup = metastore.BackupDirty
	}
	if sb.NotifiedAt == nil {
		sb.NotifiedAt = map[string]time.Time{}
	}
	sb.CreatedAt, sb.StateSince, sb.LastActivity = trunc(sb.CreatedAt), trunc(sb.StateSince), trunc(sb.LastActivity)
	notified, err := json.Marshal(sb.NotifiedAt)
	if err != nil {
		return sb, err
	}
	err = s.d.Write(ctx, func(q Querier) error {
		if err := needProject(ctx, q, sb.ProjectID); err != nil {
			return err
		}
		_, err := q.Exec(ctx, `INSERT INTO sandboxes (`+sandboxCols+`) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12,
			$13, $14, $15, $16, $17, $18, $19, $20, $21, $22, $23, $24)`,
			sb.ID, sb.ProjectID, sb.Provider, sb.ProviderID, string(sb.State), sb.StateSince, sb.CreatedAt, sb.LastActivity,
			string(sb.Backup), sb.CleanVersion, sb.Flushed, sb.VerifiedVersion, sb.FlushFailures, nullTime(sb.LastAttempt), sb.LastFlushError,
			sb.AgentState, sb.AgentVersion, sb.PendingPaths, sb.PendingBytes, nullTime(sb.LastHeartbeat), string(notified), nullTime(sb.ExtendedUntil),
			sb.TokenHash, sb.LastError)
		if s.d.IsUnique(err) {
			return fmt.Errorf("%w: sandbox %s, or a live sandbox of project %s", metastore.ErrAlreadyExists, sb.ID, sb.ProjectID)
		}
		if err != nil {
			return err
		}
		_, err = q.Exec(ctx, `INSERT INTO sandbox_intervals (sandbox_id, seq, project_id, state, started_at) VALUES ($1, 1, $2, $3, $4)`,
			sb.ID, sb.ProjectID, string(sb.State), sb.StateSince)
		return err
	})
	if err != nil {
		return sb, fmt.Errorf("create sandbox: %w", err)
	}
	return sb, nil
}

// getSandbox reads the sandbox where (with $1 = arg) holds.
func getSandbox(ctx context.Context, q Querier, where, arg string) (metastore.Sandbox, error) {
	sb, err := scanSandbox(q.QueryRow(ctx, `SELECT `+sandboxCols+` FROM sandboxes WHERE `+where, arg))
	if noRows(err) {
		return sb, storeutil.NotFound("sandbox %q", arg)
	}
	if err != nil {
		return sb, fmt.Errorf("get sandbox %s: %w", arg, err)
	}
	return sb, nil
}

// GetSandbox implements metastore.SandboxStore.
func (s *Store) GetSandbox(ctx context.Context, id string) (metastore.Sandbox, error) {
	if !storeutil.Storable(id) {
		return metastore.Sandbox{}, storeutil.NotFound("sandbox %q", id)
	}
	return getSandbox(ctx, s.d.Reader(), `id = $1`, id)
}

// LiveSandbox implements metastore.SandboxStore.
func (s *Store) LiveSandbox(ctx context.Context, projectID string) (metastore.Sandbox, error) {
	if !storeutil.Storable(projectID) {
		return metastore.Sandbox{}, storeutil.NotFound("sandbox of project %q", projectID)
	}
	return getSandbox(ctx, s.d.Reader(), `project_id = $1 AND state <> 'destroyed'`, projectID)
}

// ListSandboxes implements metastore.SandboxStore.
func (s *Store) ListSandboxes(ctx context.Context, f metastore.SandboxFilter) ([]metastore.Sandbox, error) {
	q := `SELECT ` + sandboxCols + ` FROM sandboxes WHERE true`
	var args []any
	if f.ProjectID != "" {
		args = append(args, f.ProjectID)
		q += fmt.Sprintf(` AND project_id = $%d`, len(args))
	}
	if f.LiveOnly {
		q += ` AND state <> 'destroyed'`
	}
	b := s.dl.Bytewise
	out, err := collect(ctx, s.d.Reader(), scanSandbox, q+` ORDER BY project_id`+b+`, created_at, id`+b, args...)
	if err != nil {
		return nil, fmt.Errorf("list sandboxes: %w", err)
	}
	return out, nil
}

// UpdateSandbox implements metastore.SandboxStore.
func (s *Store) UpdateSandbox(ctx context.Context, id string, fn func(*metastore.Sandbox) error) (metastore.Sandbox, error) {
	if !storeutil.Storable(id) {
		return metastore.Sandbox{}, storeutil.NotFound("sandbox %q", id)
	}
	var out metastore.Sandbox
	err := s.d.Write(ctx, func(q Querier) error {
		cur, err := getSandbox(ctx, q, `id = $1`+s.dl.ForUpdate, id)
		if err != nil {
			return err
		}
		next := cur
		next.NotifiedAt = make(map[string]time.Time, len(cur.NotifiedAt))
		maps.Copy(next.NotifiedAt, cur.NotifiedAt)
		if err := fn(&next); err != nil {
			return err
		}
		next.ID, next.ProjectID, next.Provider, next.CreatedAt = cur.ID, cur.ProjectID, cur.Provider, cur.CreatedAt
		next.State, next.StateSince = cur.State, cur.StateSince
		if next.Backup == "" {
			next.Backup = metastore.BackupDirty
		}
		if err := checkSandboxText(next); err != nil {
			return err
		}
		if next.NotifiedAt == nil {
			next.NotifiedAt = map[string]time.Time{}
		}
		for k, v := range next.NotifiedAt {
			next.NotifiedAt[k] = trunc(v)
		}
		notified, err := json.Marshal(next.NotifiedAt)
		if err != nil {
			return err
		}
		next.LastActivity, next.LastAttempt = trunc(next.LastActivity), truncZero(next.LastAttempt)
		next.LastHeartbeat, next.ExtendedUntil = truncZero(next.LastHeartbeat), truncZero(next.ExtendedUntil)
		_, err = q.Exec(ctx, `UPDATE sandboxes SET provider_id = $1, last_activity = $2, backup = $3, clean_version = $4,
			flushed = $5, verified_version = $6, flush_failures = $7, last_attempt = $8, last_flush_error = $9, agent_state = $10,
			agent_version = $11, pending_paths = $12, pending_bytes = $13, last_heartbeat = $14, notified = $15, extended_until = $16,
			token_hash = $17, last_error = $18 WHERE id = $19`,
			next.ProviderID, next.LastActivity, string(next.Backup), next.CleanVersion,
			next.Flushed, next.VerifiedVersion, next.FlushFailures, nullTime(next.LastAttempt), next.LastFlushError, next.AgentState,
			next.AgentVersion, next.PendingPaths, next.PendingBytes, nullTime(next.LastHeartbeat), string(notified), nullTime(next.ExtendedUntil),
			next.TokenHash, next.LastError, id)
		out = next
		return err
	})
	if err != nil {
		return out, fmt.Errorf("update sandbox %s: %w", id, err)
	}
	return out, nil
}

// TransitionSandbox implements metastore.SandboxStore.
func (s *Store) TransitionSandbox(ctx context.Context, id string, to sandboxstate.State, at time.Time, observed bool, note string) (metastore.Transition, error) {
	if !to.Valid() {
		return metastore.Transition{}, fmt.Errorf("%w: state %q", metastore.ErrInvalid, to)
	}
	if !storeutil.Storable(id) {
		return metastore.Transition{}, storeutil.NotFound("sandbox %q", id)
	}
	if !storeutil.Storable(note) {
		note = "(unprintable note)"
	}
	at = trunc(at)
	var tr metastore.Transition
	err := s.d.Write(ctx, func(q Querier) error {
		cur, err := getSandbox(ctx, q, `id = $1`+s.dl.ForUpdate, id)
		if err != nil {
			return err
		}
		tr, err = metastore.CheckTransition(cur.State, to, observed)
		if err != nil || !tr.Changed {
			return err
		}
		if at.Before(cur.StateSince) {
			at = cur.StateSince // intervals never run backwards
		}
		var seq int
		if err := q.QueryRow(ctx, `SELECT COALESCE(max(seq), 0) FROM sandbox_intervals WHERE sandbox_id = $1`, id).Scan(&seq); err != nil {
			return err
		}
		if _, err := q.Exec(ctx, `UPDATE sandbox_intervals SET ended_at = $1 WHERE sandbox_id = $2 AND ended_at IS NULL`, at, id); err != nil {
			return err
		}
		// The interval of the final state closes at once: a destroyed
		// sandbox costs nothing.
		var end *time.Time
		if to == sandboxstate.Destroyed {
			end = &at
		}
		if _, err := q.Exec(ctx, `INSERT INTO sandbox_intervals (sandbox_id, seq, project_id, state, started_at, ended_at, illegal)
			VALUES ($1, $2, $3, $4, $5, $6, $7)`, id, seq+1, cur.ProjectID, string(to), at, end, tr.Illegal); err != nil {
			return err
		}
		lastErr := cur.LastError
		if tr.Illegal {
			lastErr = fmt.Sprintf("illegal transition %s -> %s observed at %s", cur.State, to, at.Format(time.RFC3339Nano))
			if note != "" {
				lastErr += ": " + note
			}
		}
		_, err = q.Exec(ctx, `UPDATE sandboxes SET state = $1, state_since = $2, last_error = $3 WHERE id = $4`, string(to), at, lastErr, id)
		if s.d.IsUnique(err) {
			return fmt.Errorf("%w: project %s has another live sandbox", metastore.ErrAlreadyExists, cur.ProjectID)
		}
		return err
	})
	if err != nil {
		return tr, fmt.Errorf("sandbox %s to %s: %w", id, to, err)
	}
	return tr, nil
}

// SandboxIntervals implements metastore.SandboxStore.
func (s *Store) SandboxIntervals(ctx context.Context, projectID string, since time.Time) ([]metastore.SandboxInterval, error) {
	q := `SELECT sandbox_id, project_id, state, started_at, ended_at, illegal FROM sandbox_intervals WHERE true`
	var args []any
	if projectID != "" {
		args = append(args, projectID)
		q += fmt.Sprintf(` AND project_id = $%d`, len(args))
	}
	if !since.IsZero() {
		args = append(args, since)
		q += fmt.Sprintf(` AND (ended_at IS NULL OR ended_at > $%d)`, len(args))
	}
	out, err := collect(ctx, s.d.Reader(), func(r Row) (metastore.SandboxInterval, error) {
		var iv metastore.SandboxInterval
		var state string
		var to *time.Time
		err := r.Scan(&iv.SandboxID, &iv.ProjectID, &state, &iv.From, &to, &iv.Illegal)
		iv.State, iv.To = sandboxstate.State(state), deref(to)
		return iv, err
	}, q+` ORDER BY started_at, sandbox_id`+s.dl.Bytewise+`, seq`, args...)
	if err != nil {
		return nil, fmt.Errorf("sandbox intervals: %w", err)
	}
	return out, nil
}

// ---- run leases ----

const leaseCols = `id, project_id, created_at, expires_at, released_at`

func scanLease(r Row) (metastore.RunLease, error) {
	var l metastore.RunLease
	var released *time.Time
	err := r.Scan(&l.ID, &l.ProjectID, &l.CreatedAt, &l.ExpiresAt, &released)
	l.ReleasedAt = deref(released)
	return l, err
}

// lockLease reads a lease that the transaction of q goes on to change.
func (s *Store) lockLease(ctx context.Context, q Querier, id string) (metastore.RunLease, error) {
	if !storeutil.Storable(id) {
		return metastore.RunLease{}, storeutil.NotFound("run lease %q", id)
	}
	l, err := scanLease(q.QueryRow(ctx, `SELECT `+leaseCols+` FROM run_leases WHERE id = $1`+s.dl.ForUpdate, id))
	if noRows(err) {
		return l, storeutil.NotFound("run lease %q", id)
	}
	return l, err
}

// AcquireRunLease implements metastore.SandboxStore.
func (s *Store) AcquireRunLease(ctx context.Context, projectID string, now time.Time, ttl time.Duration) (metastore.RunLease, error) {
	if ttl <= 0 {
		return metastore.RunLease{}, fmt.Errorf("%w: lease ttl must be positive", metastore.ErrInvalid)
	}
	if !storeutil.Storable(projectID) {
		return metastore.RunLease{}, storeutil.NotFound("project %q", projectID)
	}
	now = trunc(now)
	l := metastore.RunLease{ID: metastore.NewRunLeaseID(), ProjectID: projectID, CreatedAt: now, ExpiresAt: trunc(now.Add(ttl))}
	err := s.d.Write(ctx, func(q Querier) error {
		if err := needProject(ctx, q, projectID); err != nil {
			return err
		}
		_, err := q.Exec(ctx, `INSERT INTO run_leases (id, project_id, created_at, expires_at) VALUES ($1, $2, $3, $4)`,
			l.ID, l.ProjectID, l.CreatedAt, l.ExpiresAt)
		return err
	})
	if err != nil {
		return l, fmt.Errorf("acquire run lease: %w", err)
	}
	return l, nil
}

// RenewRunLease implements metastore.SandboxStore.
func (s *Store) RenewRunLease(ctx context.Context, id string, now time.Time, ttl time.Duration) (metastore.RunLease, error) {
	if ttl <= 0 {
		return metastore.RunLease{}, fmt.Errorf("%w: lease ttl must be positive", metastore.ErrInvalid)
	}
	var l metastore.RunLease
	err := s.d.Write(ctx, func(q Querier) error {
		var err error
		if l, err = s.lockLease(ctx, q, id); err != nil {
			return err
		}
		if !l.Until().After(now) {
			return fmt.Errorf("%w: %s ended at %s", metastore.ErrLeaseEnded, id, l.Until().Format(time.RFC3339Nano))
		}
		l.ExpiresAt = trunc(now.Add(ttl))
		_, err = q.Exec(ctx, `UPDATE run_leases SET expires_at = $1 WHERE id = $2`, l.ExpiresAt, id)
		return err
	})
	if err != nil {
		return l, fmt.Errorf("renew run lease: %w", err)
	}
	return l, nil
}

// ReleaseRunLease implements metastore.SandboxStore.
func (s *Store) ReleaseRunLease(ctx context.Context, id string, now time.Time) (metastore.RunLease, error) {
	var l metastore.RunLease
	err := s.d.Write(ctx, func(q Querier) error {
		var err error
		if l, err = s.lockLease(ctx, q, id); err != nil {
			return err
		}
		if !l.ReleasedAt.IsZero() || !l.ExpiresAt.After(now) {
			return nil // released or expired already
		}
		l.ReleasedAt = trunc(now)
		_, err = q.Exec(ctx, `UPDATE run_leases SET released_at = $1 WHERE id = $2`, l.ReleasedAt, id)
		return err
	})
	if err != nil {
		return l, fmt.Errorf("release run lease: %w", err)
	}
	return l, nil
}

// RunLeaseUntil implements metastore.SandboxStore.
func (s *Store) RunLeaseUntil(ctx context.Context, projectID string) (time.Time, error) {
	var until *time.Time
	err := s.d.Reader().QueryRow(ctx, `SELECT max(CASE WHEN released_at IS NOT NULL AND released_at < expires_at THEN released_at ELSE expires_at END)
		FROM run_leases WHERE project_id = $1`, projectID).Scan(&until)
	if err != nil {
		return time.Time{}, fmt.Errorf("run lease of %s: %w", projectID, err)
	}
	return deref(until), nil
}

// ListRunLeases implements metastore.SandboxStore.
func (s *Store) ListRunLeases(ctx context.Context, projectID string, now time.Time) ([]metastore.RunLease, error) {
	out, err := collect(ctx, s.d.Reader(), scanLease, `SELECT `+leaseCols+` FROM run_leases WHERE project_id = $1 AND expires_at > $2
		AND (released_at IS NULL OR released_at > $2) ORDER BY expires_at, id`+s.dl.Bytewise, projectID, now)
	if err != nil {
		return nil, fmt.Errorf("list run leases: %w", err)
	}
	return out, nil
}

// ---- policies ----

// GetLifecyclePolicy implements metastore.SandboxStore.
func (s *Store) GetLifecyclePolicy(ctx context.Context, projectID string) (metastore.LifecyclePolicy, error) {
	p := metastore.LifecyclePolicy{ProjectID: projectID}
	if !storeutil.Storable(projectID) {
		return p, storeutil.NotFound("policy of project %q", projectID)
	}
	var override string
	err := s.d.Reader().QueryRow(ctx, `SELECT override, webhook_url, updated_at FROM lifecycle_policies WHERE project_id = $1`, projectID).
		Scan(&override, &p.WebhookURL, &p.UpdatedAt)
	if noRows(err) {
		return p, storeutil.NotFound("policy of project %q", projectID)
	}
	if err != nil {
		return p, fmt.Errorf("get policy of %s: %w", projectID, err)
	}
	if err := json.Unmarshal([]byte(override), &p.Override); err != nil {
		return p, fmt.Errorf("stored policy of %s: %w", projectID, err)
	}
	return p, nil
}

// SetLifecyclePolicy implements metastore.SandboxStore.
func (s *Store) SetLifecyclePolicy(ctx context.Context, p metastore.LifecyclePolicy) error {
	if !storeutil.Storable(p.WebhookURL) || !storeutil.Storable(p.ProjectID) {
		return fmt.Errorf("%w: webhook url or project id", metastore.ErrInvalid)
	}
	override, err := json.Marshal(p.Override)
	if err != nil {
		return err
	}
	if p.UpdatedAt.IsZero() {
		p.UpdatedAt = storeutil.Now()
	}
	return s.d.Write(ctx, func(q Querier) error {
		if err := needProject(ctx, q, p.ProjectID); err != nil {
			return err
		}
		_, err := q.Exec(ctx, `INSERT INTO lifecycle_policies (project_id, override, webhook_url, updated_at) VALUES ($1, $2, $3, $4)
			ON CONFLICT (project_id) DO UPDATE SET override = excluded.override, webhook_url = excluded.webhook_url, updated_at = excluded.updated_at`,
			p.ProjectID, string(override), p.WebhookURL, trunc(p.UpdatedAt))
		return err
	})
}

// ---- misc ----

// StoredBytes implements metastore.SandboxStore.
func (s *Store) StoredBytes(ctx context.Context, projectID string) (int64, error) {
	if !storeutil.Storable(projectID) {
		return 0, storeutil.NotFound("project %q", projectID)
	}
	var n int64
	err := s.d.Read(ctx, func(q Querier) error {
		if err := needProject(ctx, q, projectID); err != nil {
			return err
		}
		return q.QueryRow(ctx, `SELECT CAST(COALESCE(sum(size), 0) AS bigint) FROM packs WHERE project_id = $1 AND NOT deleting`, projectID).Scan(&n)
	})
	if err != nil {
		return 0, fmt.Errorf("stored bytes of %s: %w", projectID, err)
	}
	return n, nil
}

// RevokeToken implements metastore.SandboxStore.
func (s *Store) RevokeToken(ctx context.Context, hash string) error {
	if hash == "" || !storeutil.Storable(hash) {
		return nil
	}
	if _, err := s.d.Writer().Exec(ctx, `UPDATE tokens SET revoked = true WHERE hash = $1`, hash); err != nil {
		return fmt.Errorf("revoke token: %w", err)
	}
	return nil
}
