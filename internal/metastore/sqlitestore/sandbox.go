package sqlitestore

import (
	"context"
	"database/sql"
	"encoding/json"
	"errors"
	"fmt"
	"time"

	"github.com/sandkeep/sandkeep/internal/metastore"
	"github.com/sandkeep/sandkeep/internal/metastore/internal/storeutil"
	"github.com/sandkeep/sandkeep/internal/provider"
)

// The lifecycle tables (migration 0003_lifecycle): see metastore.SandboxStore.

var _ metastore.SandboxStore = (*Store)(nil)

const sandboxCols = `id, project_id, provider, provider_id, state, state_since, created_at, last_activity,
	backup, clean_version, flushed, verified_version, flush_failures, last_attempt, last_flush_error,
	agent_state, agent_version, pending_paths, pending_bytes, last_heartbeat, notified, extended_until,
	token_hash, last_error`

func nullTime(t time.Time) any {
	if t.IsZero() {
		return nil
	}
	return fmtTime(t)
}

func parseNullTime(ns sql.NullString) (time.Time, error) {
	if !ns.Valid {
		return time.Time{}, nil
	}
	return parseTime(ns.String)
}

func scanSandbox(sc interface{ Scan(...any) error }) (metastore.Sandbox, error) {
	var sb metastore.Sandbox
	var state, since, created, activity, backup, notified string
	var flushed int
	var lastAttempt, lastHB, extended sql.NullString
	if err := sc.Scan(&sb.ID, &sb.ProjectID, &sb.Provider, &sb.ProviderID, &state, &since, &created, &activity,
		&backup, &sb.CleanVersion, &flushed, &sb.VerifiedVersion, &sb.FlushFailures, &lastAttempt, &sb.LastFlushError,
		&sb.AgentState, &sb.AgentVersion, &sb.PendingPaths, &sb.PendingBytes, &lastHB, &notified, &extended,
		&sb.TokenHash, &sb.LastError); err != nil {
		return sb, err
	}
	sb.State = provider.State(state)
	sb.Backup = metastore.BackupState(backup)
	sb.Flushed = flushed != 0
	var err error
	var errs []error
	sb.StateSince, err = parseTime(since)
	errs = append(errs, err)
	sb.CreatedAt, err = parseTime(created)
	errs = append(errs, err)
	sb.LastActivity, err = parseTime(activity)
	errs = append(errs, err)
	sb.LastAttempt, err = parseNullTime(lastAttempt)
	errs = append(errs, err)
	sb.LastHeartbeat, err = parseNullTime(lastHB)
	errs = append(errs, err)
	sb.ExtendedUntil, err = parseNullTime(extended)
	errs = append(errs, err)
	if err := json.Unmarshal([]byte(notified), &sb.NotifiedAt); err != nil {
		errs = append(errs, fmt.Errorf("stored notified %q: %w", notified, err))
	}
	return sb, errors.Join(errs...)
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
	now := storeutil.Now()
	if sb.CreatedAt.IsZero() {
		sb.CreatedAt = now
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
	err = inTx(ctx, s.w, func(tx *sql.Tx) error {
		if err := needProject(ctx, tx, sb.ProjectID); err != nil {
			return err
		}
		_, err := tx.ExecContext(ctx, `INSERT INTO sandboxes (`+sandboxCols+`) VALUES `+placeholders(1, 24),
			sb.ID, sb.ProjectID, sb.Provider, sb.ProviderID, string(sb.State), fmtTime(sb.StateSince), fmtTime(sb.CreatedAt), fmtTime(sb.LastActivity),
			string(sb.Backup), sb.CleanVersion, boolInt(sb.Flushed), sb.VerifiedVersion, sb.FlushFailures, nullTime(sb.LastAttempt), sb.LastFlushError,
			sb.AgentState, sb.AgentVersion, sb.PendingPaths, sb.PendingBytes, nullTime(sb.LastHeartbeat), string(notified), nullTime(sb.ExtendedUntil),
			sb.TokenHash, sb.LastError)
		if isUnique(err) {
			return fmt.Errorf("%w: sandbox %s, or a live sandbox of project %s", metastore.ErrAlreadyExists, sb.ID, sb.ProjectID)
		}
		if err != nil {
			return err
		}
		_, err = tx.ExecContext(ctx, `INSERT INTO sandbox_intervals (sandbox_id, seq, project_id, state, started_at) VALUES (?, 1, ?, ?, ?)`,
			sb.ID, sb.ProjectID, string(sb.State), fmtTime(sb.StateSince))
		return err
	})
	if err != nil {
		return sb, fmt.Errorf("create sandbox: %w", err)
	}
	return sb, nil
}

func trunc(t time.Time) time.Time { return t.UTC().Truncate(time.Microsecond) }

func boolInt(b bool) int {
	if b {
		return 1
	}
	return 0
}

// GetSandbox implements metastore.SandboxStore.
func (s *Store) GetSandbox(ctx context.Context, id string) (metastore.Sandbox, error) {
	if !storeutil.Storable(id) {
		return metastore.Sandbox{}, storeutil.NotFound("sandbox %q", id)
	}
	return getSandbox(ctx, s.r, `id = ?`, id)
}

func getSandbox(ctx context.Context, q querier, where string, arg string) (metastore.Sandbox, error) {
	sb, err := scanSandbox(q.QueryRowContext(ctx, `SELECT `+sandboxCols+` FROM sandboxes WHERE `+where, arg))
	if errors.Is(err, sql.ErrNoRows) {
		return sb, storeutil.NotFound("sandbox %q", arg)
	}
	if err != nil {
		return sb, fmt.Errorf("get sandbox %s: %w", arg, err)
	}
	return sb, nil
}

// LiveSandbox implements metastore.SandboxStore.
func (s *Store) LiveSandbox(ctx context.Context, projectID string) (metastore.Sandbox, error) {
	if !storeutil.Storable(projectID) {
		return metastore.Sandbox{}, storeutil.NotFound("sandbox of project %q", projectID)
	}
	return getSandbox(ctx, s.r, `project_id = ? AND state <> 'destroyed'`, projectID)
}

// ListSandboxes implements metastore.SandboxStore.
func (s *Store) ListSandboxes(ctx context.Context, f metastore.SandboxFilter) ([]metastore.Sandbox, error) {
	q := `SELECT ` + sandboxCols + ` FROM sandboxes WHERE 1=1`
	var args []any
	if f.ProjectID != "" {
		q += ` AND project_id = ?`
		args = append(args, f.ProjectID)
	}
	if f.LiveOnly {
		q += ` AND state <> 'destroyed'`
	}
	rows, err := s.r.QueryContext(ctx, q+` ORDER BY project_id, created_at, id`, args...)
	if err != nil {
		return nil, fmt.Errorf("list sandboxes: %w", err)
	}
	defer rows.Close()
	var out []metastore.Sandbox
	for rows.Next() {
		sb, err := scanSandbox(rows)
		if err != nil {
			return nil, fmt.Errorf("list sandboxes: %w", err)
		}
		out = append(out, sb)
	}
	return out, rows.Err()
}

// UpdateSandbox implements metastore.SandboxStore.
func (s *Store) UpdateSandbox(ctx context.Context, id string, fn func(*metastore.Sandbox) error) (metastore.Sandbox, error) {
	if !storeutil.Storable(id) {
		return metastore.Sandbox{}, storeutil.NotFound("sandbox %q", id)
	}
	var out metastore.Sandbox
	err := inTx(ctx, s.w, func(tx *sql.Tx) error {
		cur, err := getSandbox(ctx, tx, `id = ?`, id)
		if err != nil {
			return err
		}
		next := cur
		next.NotifiedAt = make(map[string]time.Time, len(cur.NotifiedAt))
		for k, v := range cur.NotifiedAt {
			next.NotifiedAt[k] = v
		}
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
		_, err = tx.ExecContext(ctx, `UPDATE sandboxes SET provider_id = ?, last_activity = ?, backup = ?, clean_version = ?,
			flushed = ?, verified_version = ?, flush_failures = ?, last_attempt = ?, last_flush_error = ?, agent_state = ?,
			agent_version = ?, pending_paths = ?, pending_bytes = ?, last_heartbeat = ?, notified = ?, extended_until = ?,
			token_hash = ?, last_error = ? WHERE id = ?`,
			next.ProviderID, fmtTime(next.LastActivity), string(next.Backup), next.CleanVersion,
			boolInt(next.Flushed), next.VerifiedVersion, next.FlushFailures, nullTime(next.LastAttempt), next.LastFlushError, next.AgentState,
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

func truncZero(t time.Time) time.Time {
	if t.IsZero() {
		return t
	}
	return trunc(t)
}

// TransitionSandbox implements metastore.SandboxStore.
func (s *Store) TransitionSandbox(ctx context.Context, id string, to provider.State, at time.Time, observed bool, note string) (metastore.Transition, error) {
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
	err := inTx(ctx, s.w, func(tx *sql.Tx) error {
		cur, err := getSandbox(ctx, tx, `id = ?`, id)
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
		if err := tx.QueryRowContext(ctx, `SELECT COALESCE(max(seq), 0) FROM sandbox_intervals WHERE sandbox_id = ?`, id).Scan(&seq); err != nil {
			return err
		}
		if _, err := tx.ExecContext(ctx, `UPDATE sandbox_intervals SET ended_at = ? WHERE sandbox_id = ? AND ended_at IS NULL`, fmtTime(at), id); err != nil {
			return err
		}
		if _, err := tx.ExecContext(ctx, `INSERT INTO sandbox_intervals (sandbox_id, seq, project_id, state, started_at, ended_at, illegal) VALUES (?, ?, ?, ?, ?, ?, ?)`,
			id, seq+1, cur.ProjectID, string(to), fmtTime(at), destroyedEnd(to, at), boolInt(tr.Illegal)); err != nil {
			return err
		}
		lastErr := cur.LastError
		if tr.Illegal {
			lastErr = fmt.Sprintf("illegal transition %s -> %s observed at %s", cur.State, to, fmtTime(at))
			if note != "" {
				lastErr += ": " + note
			}
		}
		_, err = tx.ExecContext(ctx, `UPDATE sandboxes SET state = ?, state_since = ?, last_error = ? WHERE id = ?`, string(to), fmtTime(at), lastErr, id)
		if isUnique(err) {
			return fmt.Errorf("%w: project %s has another live sandbox", metastore.ErrAlreadyExists, cur.ProjectID)
		}
		return err
	})
	if err != nil {
		return tr, fmt.Errorf("sandbox %s to %s: %w", id, to, err)
	}
	return tr, nil
}

// destroyedEnd closes the interval of the final state at once: a destroyed
// sandbox costs nothing and its interval has no length.
func destroyedEnd(to provider.State, at time.Time) any {
	if to == provider.StateDestroyed {
		return fmtTime(at)
	}
	return nil
}

// SandboxIntervals implements metastore.SandboxStore.
func (s *Store) SandboxIntervals(ctx context.Context, projectID string, since time.Time) ([]metastore.SandboxInterval, error) {
	q := `SELECT sandbox_id, project_id, state, started_at, ended_at, illegal FROM sandbox_intervals WHERE 1=1`
	var args []any
	if projectID != "" {
		q += ` AND project_id = ?`
		args = append(args, projectID)
	}
	if !since.IsZero() {
		q += ` AND (ended_at IS NULL OR ended_at > ?)`
		args = append(args, fmtTime(since))
	}
	rows, err := s.r.QueryContext(ctx, q+` ORDER BY started_at, sandbox_id, seq`, args...)
	if err != nil {
		return nil, fmt.Errorf("sandbox intervals: %w", err)
	}
	defer rows.Close()
	var out []metastore.SandboxInterval
	for rows.Next() {
		var iv metastore.SandboxInterval
		var state, from string
		var to sql.NullString
		var illegal int
		if err := rows.Scan(&iv.SandboxID, &iv.ProjectID, &state, &from, &to, &illegal); err != nil {
			return nil, err
		}
		iv.State, iv.Illegal = provider.State(state), illegal != 0
		if iv.From, err = parseTime(from); err != nil {
			return nil, err
		}
		if iv.To, err = parseNullTime(to); err != nil {
			return nil, err
		}
		out = append(out, iv)
	}
	return out, rows.Err()
}

// ---- run leases ----

const leaseCols = `id, project_id, created_at, expires_at, released_at`

func scanLease(sc interface{ Scan(...any) error }) (metastore.RunLease, error) {
	var l metastore.RunLease
	var created, expires string
	var released sql.NullString
	if err := sc.Scan(&l.ID, &l.ProjectID, &created, &expires, &released); err != nil {
		return l, err
	}
	var errs [3]error
	l.CreatedAt, errs[0] = parseTime(created)
	l.ExpiresAt, errs[1] = parseTime(expires)
	l.ReleasedAt, errs[2] = parseNullTime(released)
	return l, errors.Join(errs[:]...)
}

func getLease(ctx context.Context, q querier, id string) (metastore.RunLease, error) {
	if !storeutil.Storable(id) {
		return metastore.RunLease{}, storeutil.NotFound("run lease %q", id)
	}
	l, err := scanLease(q.QueryRowContext(ctx, `SELECT `+leaseCols+` FROM run_leases WHERE id = ?`, id))
	if errors.Is(err, sql.ErrNoRows) {
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
	err := inTx(ctx, s.w, func(tx *sql.Tx) error {
		if err := needProject(ctx, tx, projectID); err != nil {
			return err
		}
		_, err := tx.ExecContext(ctx, `INSERT INTO run_leases (id, project_id, created_at, expires_at) VALUES (?, ?, ?, ?)`,
			l.ID, l.ProjectID, fmtTime(l.CreatedAt), fmtTime(l.ExpiresAt))
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
	err := inTx(ctx, s.w, func(tx *sql.Tx) error {
		var err error
		if l, err = getLease(ctx, tx, id); err != nil {
			return err
		}
		if !l.Until().After(now) {
			return fmt.Errorf("%w: %s ended at %s", metastore.ErrLeaseEnded, id, fmtTime(l.Until()))
		}
		l.ExpiresAt = trunc(now.Add(ttl))
		_, err = tx.ExecContext(ctx, `UPDATE run_leases SET expires_at = ? WHERE id = ?`, fmtTime(l.ExpiresAt), id)
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
	err := inTx(ctx, s.w, func(tx *sql.Tx) error {
		var err error
		if l, err = getLease(ctx, tx, id); err != nil {
			return err
		}
		if !l.ReleasedAt.IsZero() || !l.ExpiresAt.After(now) {
			return nil // released or expired already
		}
		l.ReleasedAt = trunc(now)
		_, err = tx.ExecContext(ctx, `UPDATE run_leases SET released_at = ? WHERE id = ?`, fmtTime(l.ReleasedAt), id)
		return err
	})
	if err != nil {
		return l, fmt.Errorf("release run lease: %w", err)
	}
	return l, nil
}

// RunLeaseUntil implements metastore.SandboxStore.
func (s *Store) RunLeaseUntil(ctx context.Context, projectID string) (time.Time, error) {
	var until sql.NullString
	err := s.r.QueryRowContext(ctx, `SELECT max(CASE WHEN released_at IS NOT NULL AND released_at < expires_at THEN released_at ELSE expires_at END)
		FROM run_leases WHERE project_id = ?`, projectID).Scan(&until)
	if err != nil {
		return time.Time{}, fmt.Errorf("run lease of %s: %w", projectID, err)
	}
	return parseNullTime(until)
}

// ListRunLeases implements metastore.SandboxStore.
func (s *Store) ListRunLeases(ctx context.Context, projectID string, now time.Time) ([]metastore.RunLease, error) {
	rows, err := s.r.QueryContext(ctx, `SELECT `+leaseCols+` FROM run_leases WHERE project_id = ? AND expires_at > ?
		AND (released_at IS NULL OR released_at > ?) ORDER BY expires_at, id`, projectID, fmtTime(now), fmtTime(now))
	if err != nil {
		return nil, fmt.Errorf("list run leases: %w", err)
	}
	defer rows.Close()
	var out []metastore.RunLease
	for rows.Next() {
		l, err := scanLease(rows)
		if err != nil {
			return nil, err
		}
		out = append(out, l)
	}
	return out, rows.Err()
}

// ---- policies ----

// GetLifecyclePolicy implements metastore.SandboxStore.
func (s *Store) GetLifecyclePolicy(ctx context.Context, projectID string) (metastore.LifecyclePolicy, error) {
	p := metastore.LifecyclePolicy{ProjectID: projectID}
	if !storeutil.Storable(projectID) {
		return p, storeutil.NotFound("policy of project %q", projectID)
	}
	var override, updated string
	err := s.r.QueryRowContext(ctx, `SELECT override, webhook_url, updated_at FROM lifecycle_policies WHERE project_id = ?`, projectID).
		Scan(&override, &p.WebhookURL, &updated)
	if errors.Is(err, sql.ErrNoRows) {
		return p, storeutil.NotFound("policy of project %q", projectID)
	}
	if err != nil {
		return p, fmt.Errorf("get policy of %s: %w", projectID, err)
	}
	if err := json.Unmarshal([]byte(override), &p.Override); err != nil {
		return p, fmt.Errorf("stored policy of %s: %w", projectID, err)
	}
	p.UpdatedAt, err = parseTime(updated)
	return p, err
}

// SetLifecyclePolicy implements metastore.SandboxStore.
func (s *Store) SetLifecyclePolicy(ctx context.Context, p metastore.LifecyclePolicy) error {
	if !storeutil.Storable(p.WebhookURL) {
		return fmt.Errorf("%w: webhook url", metastore.ErrInvalid)
	}
	override, err := json.Marshal(p.Override)
	if err != nil {
		return err
	}
	if p.UpdatedAt.IsZero() {
		p.UpdatedAt = storeutil.Now()
	}
	return inTx(ctx, s.w, func(tx *sql.Tx) error {
		if err := needProject(ctx, tx, p.ProjectID); err != nil {
			return err
		}
		_, err := tx.ExecContext(ctx, `INSERT INTO lifecycle_policies (project_id, override, webhook_url, updated_at) VALUES (?, ?, ?, ?)
			ON CONFLICT (project_id) DO UPDATE SET override = excluded.override, webhook_url = excluded.webhook_url, updated_at = excluded.updated_at`,
			p.ProjectID, string(override), p.WebhookURL, fmtTime(p.UpdatedAt))
		return err
	})
}

// ---- misc ----

// StoredBytes implements metastore.SandboxStore.
func (s *Store) StoredBytes(ctx context.Context, projectID string) (int64, error) {
	if err := needProject(ctx, s.r, projectID); err != nil {
		return 0, err
	}
	var n int64
	if err := s.r.QueryRowContext(ctx, `SELECT COALESCE(sum(size), 0) FROM packs WHERE project_id = ? AND deleting = 0`, projectID).Scan(&n); err != nil {
		return 0, fmt.Errorf("stored bytes of %s: %w", projectID, err)
	}
	return n, nil
}

// RevokeToken implements metastore.SandboxStore.
func (s *Store) RevokeToken(ctx context.Context, hash string) error {
	if hash == "" || !storeutil.Storable(hash) {
		return nil
	}
	if _, err := s.w.ExecContext(ctx, `UPDATE tokens SET revoked = 1 WHERE hash = ?`, hash); err != nil {
		return fmt.Errorf("revoke token: %w", err)
	}
	return nil
}
