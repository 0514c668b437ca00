package sqlstore

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/sandkeep/sandkeep/internal/metastore"
	"github.com/sandkeep/sandkeep/internal/metastore/internal/storeutil"
)

// The cluster tables (migration 0005_cluster): see metastore.ClusterStore.

var _ metastore.ClusterStore = (*Store)(nil)

func storable(what string, ss ...string) error {
	for _, s := range ss {
		if s == "" || len(s) > 256 || !storeutil.Storable(s) {
			return fmt.Errorf("%w: %s %q", metastore.ErrInvalid, what, s)
		}
	}
	return nil
}

// BeatReplica implements metastore.ClusterStore.
func (s *Store) BeatReplica(ctx context.Context, r metastore.Replica) error {
	if err := storable("replica", r.ID, r.Addr); err != nil {
		return err
	}
	now := trunc(time.Now())
	started := truncZero(r.StartedAt)
	if started.IsZero() {
		started = now
	}
	_, err := s.d.Writer().Exec(ctx, `INSERT INTO replicas (id, addr, started_at, seen_at, is_leader, agents, leader_token) VALUES ($1, $2, $3, $4, $5, $6, $7)
		ON CONFLICT (id) DO UPDATE SET addr = excluded.addr, seen_at = excluded.seen_at, is_leader = excluded.is_leader, agents = excluded.agents,
		leader_token = excluded.leader_token`,
		r.ID, r.Addr, started, now, r.Leading, r.Agents, r.LeaderToken)
	if err != nil {
		return fmt.Errorf("replica heartbeat: %w", err)
	}
	return nil
}

// ListReplicas implements metastore.ClusterStore.
func (s *Store) ListReplicas(ctx context.Context, since time.Time) ([]metastore.Replica, error) {
	out, err := collect(ctx, s.d.Reader(), func(r Row) (metastore.Replica, error) {
		var x metastore.Replica
		err := r.Scan(&x.ID, &x.Addr, &x.StartedAt, &x.SeenAt, &x.Leading, &x.Agents, &x.LeaderToken)
		return x, err
	}, `SELECT id, addr, started_at, seen_at, is_leader, agents, leader_token FROM replicas WHERE seen_at >= $1 ORDER BY id`+s.dl.Bytewise, trunc(since))
	if err != nil {
		return nil, fmt.Errorf("list replicas: %w", err)
	}
	return out, nil
}

// ForgetReplica implements metastore.ClusterStore.
func (s *Store) ForgetReplica(ctx context.Context, replicaID string) error {
	return s.d.Write(ctx, func(q Querier) error {
		if _, err := q.Exec(ctx, `DELETE FROM agent_routes WHERE replica_id = $1`, replicaID); err != nil {
			return fmt.Errorf("forget replica %s: %w", replicaID, err)
		}
		if _, err := q.Exec(ctx, `DELETE FROM replicas WHERE id = $1`, replicaID); err != nil {
			return fmt.Errorf("forget replica %s: %w", replicaID, err)
		}
		return nil
	})
}

// SetAgentRoute implements metastore.ClusterStore.
func (s *Store) SetAgentRoute(ctx context.Context, r metastore.AgentRoute) error {
	if err := storable("agent route", r.SessionID, r.ProjectID, r.ReplicaID); err != nil {
		return err
	}
	at := truncZero(r.ConnectedAt)
	if at.IsZero() {
		at = trunc(time.Now())
	}
	_, err := s.d.Writer().Exec(ctx, `INSERT INTO agent_routes (session_id, project_id, replica_id, connected_at) VALUES ($1, $2, $3, $4)
		ON CONFLICT (session_id) DO UPDATE SET project_id = excluded.project_id, replica_id = excluded.replica_id, connected_at = excluded.connected_at`,
		r.SessionID, r.ProjectID, r.ReplicaID, at)
	if err != nil {
		return fmt.Errorf("set agent route: %w", err)
	}
	return nil
}

// DeleteAgentRoute implements metastore.ClusterStore.
func (s *Store) DeleteAgentRoute(ctx context.Context, sessionID, replicaID string) error {
	if _, err := s.d.Writer().Exec(ctx, `DELETE FROM agent_routes WHERE session_id = $1 AND replica_id = $2`, sessionID, replicaID); err != nil {
		return fmt.Errorf("delete agent route: %w", err)
	}
	return nil
}

// AgentRoutes implements metastore.ClusterStore.
func (s *Store) AgentRoutes(ctx context.Context, projectID string) ([]metastore.AgentRoute, error) {
	out, err := collect(ctx, s.d.Reader(), func(r Row) (metastore.AgentRoute, error) {
		var x metastore.AgentRoute
		err := r.Scan(&x.SessionID, &x.ProjectID, &x.ReplicaID, &x.ConnectedAt)
		return x, err
	}, `SELECT session_id, project_id, replica_id, connected_at FROM agent_routes WHERE project_id = $1 ORDER BY connected_at DESC, session_id`+s.dl.Bytewise, projectID)
	if err != nil {
		return nil, fmt.Errorf("agent routes: %w", err)
	}
	return out, nil
}

const commandCols = `id, replica_id, project_id, kind, arg, created_at, deadline, done, outcome, version, error`

func scanCommand(r Row) (metastore.Command, error) {
	var c metastore.Command
	var kind string
	err := r.Scan(&c.ID, &c.ReplicaID, &c.ProjectID, &kind, &c.Arg, &c.CreatedAt, &c.Deadline, &c.Done, &c.Outcome, &c.Version, &c.Error)
	c.Kind = metastore.CommandKind(kind)
	return c, err
}

// PostCommand implements metastore.ClusterStore.
func (s *Store) PostCommand(ctx context.Context, c metastore.Command) error {
	if err := storable("command", c.ID, c.ReplicaID, c.ProjectID); err != nil {
		return err
	}
	if c.Kind != metastore.CommandFlush && c.Kind != metastore.CommandRollback {
		return fmt.Errorf("%w: command kind %q", metastore.ErrInvalid, c.Kind)
	}
	if c.Deadline.IsZero() {
		return fmt.Errorf("%w: command without a deadline", metastore.ErrInvalid)
	}
	created := truncZero(c.CreatedAt)
	if created.IsZero() {
		created = trunc(time.Now())
	}
	_, err := s.d.Writer().Exec(ctx, `INSERT INTO replica_commands (id, replica_id, project_id, kind, arg, created_at, deadline) VALUES ($1, $2, $3, $4, $5, $6, $7)`,
		c.ID, c.ReplicaID, c.ProjectID, string(c.Kind), c.Arg, created, trunc(c.Deadline))
	if err != nil {
		return fmt.Errorf("post command: %w", err)
	}
	return nil
}

// TakeCommands implements metastore.ClusterStore.
func (s *Store) TakeCommands(ctx context.Context, replicaID string, max int) ([]metastore.Command, error) {
	for range 5 {
		out, err := s.takeCommands(ctx, replicaID, max)
		if !errors.Is(err, errRetake) {
			return out, err
		}
	}
	return nil, nil // contended: the caller takes them on its next call
}

func (s *Store) takeCommands(ctx context.Context, replicaID string, max int) ([]metastore.Command, error) {
	var out []metastore.Command
	err := s.d.Write(ctx, func(q Querier) error {
		var err error
		out, err = collect(ctx, q, scanCommand, `SELECT `+commandCols+` FROM replica_commands
			WHERE replica_id = $1 AND NOT taken AND deadline > $2 ORDER BY created_at, id`+s.dl.Bytewise+` LIMIT $3`, replicaID, trunc(time.Now()), max)
		if err != nil {
			return err
		}
		for _, c := range out {
			// Taken once: a command another call took in between is
			// dropped from this one's list.
			n, err := q.Exec(ctx, `UPDATE replica_commands SET taken = true WHERE id = $1 AND NOT taken`, c.ID)
			if err != nil {
				return err
			}
			if n == 0 {
				return errRetake
			}
		}
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("take commands: %w", err)
	}
	return out, nil
}

var errRetake = errors.New("a command was taken concurrently")

// FinishCommand implements metastore.ClusterStore.
func (s *Store) FinishCommand(ctx context.Context, id, outcome string, version int64, errText string) error {
	if len(errText) > 4096 {
		errText = errText[:4096]
	}
	if !storeutil.Storable(errText) {
		errText = "(unstorable error text)"
	}
	n, err := s.d.Writer().Exec(ctx, `UPDATE replica_commands SET done = true, taken = true, outcome = $2, version = $3, error = $4 WHERE id = $1`, id, outcome, version, errText)
	if err != nil {
		return fmt.Errorf("finish command: %w", err)
	}
	if n == 0 {
		return storeutil.NotFound("command %q", id)
	}
	return nil
}

// GetCommand implements metastore.ClusterStore.
func (s *Store) GetCommand(ctx context.Context, id string) (metastore.Command, error) {
	c, err := scanCommand(s.d.Reader().QueryRow(ctx, `SELECT `+commandCols+` FROM replica_commands WHERE id = $1`, id))
	if noRows(err) {
		return c, storeutil.NotFound("command %q", id)
	}
	if err != nil {
		return c, fmt.Errorf("get command: %w", err)
	}
	return c, nil
}

// DeleteCommands implements metastore.ClusterStore.
func (s *Store) DeleteCommands(ctx context.Context, before time.Time) (int, error) {
	n, err := s.d.Writer().Exec(ctx, `DELETE FROM replica_commands WHERE created_at < $1`, trunc(before))
	if err != nil {
		return 0, fmt.Errorf("delete commands: %w", err)
	}
	return int(n), nil
}
