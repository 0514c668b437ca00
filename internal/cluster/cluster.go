// Package cluster lets several coordinator replicas serve one database and
// one bucket. An agent's session stream lives on the replica it reached;
// a command for it (flush, a new head to apply) decided on another replica
// — the one an admin call reached, or the lifecycle leader — goes through
// the database: a row in the mailbox (metastore.ClusterStore) addressed to
// the replica that holds the stream, woken by NOTIFY where the database has
// it (PostgreSQL), answered in the same row. Nothing runs beside the
// database. Replicas heartbeat into a registry, which `sandkeep replicas`
// lists. Coordinator-side code.
package cluster

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"strings"
	"sync"
	"time"

	"github.com/sandkeep/sandkeep/internal/metastore"
	"github.com/sandkeep/sandkeep/internal/sessions"
)

// Notification channels.
const (
	commandsChannel = "sandkeep_commands" // payload: the replica id a command is for
	resultsChannel  = "sandkeep_results"  // payload: the command id answered
)

// Defaults of Config.
const (
	DefaultBeat      = 2 * time.Second
	DefaultDeadAfter = 10 * time.Second
	// commandsKept is how long answered commands stay in the mailbox.
	commandsKept = time.Hour
	// pollEvery is how often the mailbox is read without a notification
	// (and how often a waiter looks at its answer): the fallback of
	// NOTIFY, and the only way on a database without it.
	pollEvery = 250 * time.Millisecond
)

// Local is the replica's own agent sessions (*sessions.Registry).
type Local interface {
	Flush(ctx context.Context, projectID string, timeout time.Duration) (int64, error)
	Rollback(ctx context.Context, projectID string, version int64) (int64, error)
	Agents(projectID string) []sessions.Info
	Connected() int
}

// Config configures a Node.
type Config struct {
	// ID names the replica (default: a fresh "rep_" id per process).
	ID string
	// Addr is the gRPC address it serves (shown by `sandkeep replicas`).
	Addr     string
	Store    metastore.ClusterStore // required
	Notifier metastore.Notifier     // optional: without it, replicas poll
	Local    Local                  // required
	// Leading reports whether this replica leads the background jobs;
	// LeaderToken its hold on the leadership (metastore.Replica).
	Leading     func() bool
	LeaderToken func() int64
	// Beat is the heartbeat period; a replica not seen for DeadAfter is
	// dead (its routes are ignored, then forgotten).
	Beat, DeadAfter time.Duration
	Log             *slog.Logger
}

// Node is one replica's part of the cluster. Its methods are safe for
// concurrent use.
type Node struct {
	cfg     Config
	started time.Time

	mu      sync.Mutex
	waiters map[string]chan struct{} // command id -> woken when answered
}

// New returns the node; Run makes it take part.
func New(cfg Config) *Node {
	if cfg.ID == "" {
		cfg.ID = metastore.NewReplicaID()
	}
	if cfg.Beat <= 0 {
		cfg.Beat = DefaultBeat
	}
	if cfg.DeadAfter <= 0 {
		cfg.DeadAfter = DefaultDeadAfter
	}
	if cfg.Log == nil {
		cfg.Log = slog.Default()
	}
	if cfg.Leading == nil {
		cfg.Leading = func() bool { return false }
	}
	if cfg.LeaderToken == nil {
		cfg.LeaderToken = func() int64 { return 0 }
	}
	cfg.Log = cfg.Log.With("component", "cluster", "replica", cfg.ID)
	return &Node{cfg: cfg, started: time.Now(), waiters: map[string]chan struct{}{}}
}

// ID is the replica's id.
func (n *Node) ID() string { return n.cfg.ID }

// Run registers the replica, heartbeats, and runs the commands other
// replicas route to it, until ctx ends; then it leaves the registry (its
// streams end with it).
func (n *Node) Run(ctx context.Context) error {
	if err := n.beat(ctx); err != nil {
		return fmt.Errorf("cluster: register replica: %w", err)
	}
	var wake <-chan string
	if n.cfg.Notifier != nil {
		var err error
		if wake, err = n.cfg.Notifier.Listen(ctx, commandsChannel); err != nil {
			n.cfg.Log.Warn("cannot listen for routed commands; polling", "err", err)
		}
		if results, err := n.cfg.Notifier.Listen(ctx, resultsChannel); err == nil {
			go n.dispatchResults(results)
		}
	}
	beat := time.NewTicker(n.cfg.Beat)
	defer beat.Stop()
	poll := time.NewTicker(pollEvery)
	defer poll.Stop()
	for {
		select {
		case <-ctx.Done():
			lctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 5*time.Second)
			defer cancel()
			if err := n.cfg.Store.ForgetReplica(lctx, n.cfg.ID); err != nil {
				n.cfg.Log.Warn("leaving the replica registry", "err", err)
			}
			return nil
		case <-beat.C:
			if err := n.beat(ctx); err != nil && ctx.Err() == nil {
				n.cfg.Log.Warn("replica heartbeat", "err", err)
			}
			n.tidy(ctx)
		case p, ok := <-wake:
			if !ok { // the listening connection broke: listen again
				wake = n.relisten(ctx)
				continue
			}
			if p == n.cfg.ID {
				n.takeCommands(ctx)
			}
		case <-poll.C:
			n.takeCommands(ctx)
		}
	}
}

func (n *Node) relisten(ctx context.Context) <-chan string {
	if ctx.Err() != nil {
		return nil
	}
	w, err := n.cfg.Notifier.Listen(ctx, commandsChannel)
	if err != nil {
		n.cfg.Log.Warn("cannot listen for routed commands; polling", "err", err)
		return nil
	}
	return w
}

func (n *Node) beat(ctx context.Context) error {
	return n.cfg.Store.BeatReplica(ctx, metastore.Replica{
		ID: n.cfg.ID, Addr: n.cfg.Addr, StartedAt: n.started, Leading: n.cfg.Leading(), Agents: n.cfg.Local.Connected(),
		LeaderToken: n.cfg.LeaderToken(),
	})
}

// tidy forgets replicas dead for long (with their routes) and old
// commands. Any replica may do it; it is idempotent.
func (n *Node) tidy(ctx context.Context) {
	all, err := n.cfg.Store.ListReplicas(ctx, time.Time{})
	if err != nil {
		return
	}
	for _, r := range all {
		if time.Since(r.SeenAt) > 6*n.cfg.DeadAfter {
			if err := n.cfg.Store.ForgetReplica(ctx, r.ID); err == nil {
				n.cfg.Log.Info("forgot a dead replica", "dead", r.ID, "seen", r.SeenAt)
			}
		}
	}
	_, _ = n.cfg.Store.DeleteCommands(ctx, time.Now().Add(-commandsKept))
}

// Replicas lists the live replicas. Where the database tells who holds the
// leadership (metastore.LeaderTokener), Leading marks that replica alone:
// a replica killed while leading keeps its last claim in the registry
// until it is dead, but no longer the lock.
func (n *Node) Replicas(ctx context.Context) ([]metastore.Replica, error) {
	rs, err := n.cfg.Store.ListReplicas(ctx, time.Now().Add(-n.cfg.DeadAfter))
	if err != nil {
		return nil, err
	}
	if lt, ok := n.cfg.Store.(metastore.LeaderTokener); ok {
		holder, err := lt.LeaderToken(ctx)
		if err != nil {
			return nil, err
		}
		for i := range rs {
			rs[i].Leading = holder != 0 && rs[i].LeaderToken == holder
		}
	}
	return rs, nil
}

// OnSession records (open) or drops the route of a session this replica's
// registry holds; wired to sessions.Registry.OnSession.
func (n *Node) OnSession(projectID, sessionID string, open bool) {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	var err error
	if open {
		err = n.cfg.Store.SetAgentRoute(ctx, metastore.AgentRoute{SessionID: sessionID, ProjectID: projectID, ReplicaID: n.cfg.ID})
	} else {
		err = n.cfg.Store.DeleteAgentRoute(ctx, sessionID, n.cfg.ID)
	}
	if err != nil {
		n.cfg.Log.Warn("agent route", "project", projectID, "session", sessionID, "open", open, "err", err)
	}
}

// Agents is the replica's own sessions of the project (the heartbeats of
// agents on other replicas are in the sandbox registry).
func (n *Node) Agents(projectID string) []sessions.Info { return n.cfg.Local.Agents(projectID) }

// ConnectedElsewhere reports whether a live replica other than this one
// holds a stream of the project (lifecycle's remoteAgents).
func (n *Node) ConnectedElsewhere(ctx context.Context, projectID string) (bool, error) {
	h, err := n.holders(ctx, projectID)
	return len(h) > 0, err
}

// Flush asks the project's agents for a flush barrier, wherever their
// streams are.
func (n *Node) Flush(ctx context.Context, projectID string, timeout time.Duration) (int64, error) {
	v, err := n.cfg.Local.Flush(ctx, projectID, timeout)
	if !errors.Is(err, sessions.ErrNoAgent) {
		return v, err
	}
	return n.route(ctx, projectID, metastore.CommandFlush, timeout.Milliseconds(), timeout+5*time.Second)
}

// Rollback tells the project's agents, wherever they are, that the head is
// now version, and waits for them to apply it (bounded by ctx).
func (n *Node) Rollback(ctx context.Context, projectID string, version int64) (int64, error) {
	v, err := n.cfg.Local.Rollback(ctx, projectID, version)
	if !errors.Is(err, sessions.ErrNoAgent) {
		return v, err
	}
	wait := time.Minute
	if dl, ok := ctx.Deadline(); ok {
		wait = time.Until(dl)
	}
	return n.route(ctx, projectID, metastore.CommandRollback, version, wait)
}

// route posts the command to every live replica that holds a stream of the
// project and waits for their answers: the highest version, or the first
// failure.
func (n *Node) route(ctx context.Context, projectID string, kind metastore.CommandKind, arg int64, wait time.Duration) (int64, error) {
	targets, err := n.holders(ctx, projectID)
	if err != nil {
		return 0, err
	}
	if len(targets) == 0 {
		return 0, sessions.ErrNoAgent
	}
	deadline := time.Now().Add(wait)
	ids := make([]string, 0, len(targets))
	for _, rep := range targets {
		id := metastore.NewCommandID()
		ch := make(chan struct{}, 1)
		n.mu.Lock()
		n.waiters[id] = ch
		n.mu.Unlock()
		defer func() {
			n.mu.Lock()
			delete(n.waiters, id)
			n.mu.Unlock()
		}()
		if err := n.cfg.Store.PostCommand(ctx, metastore.Command{ID: id, ReplicaID: rep, ProjectID: projectID, Kind: kind, Arg: arg, Deadline: deadline}); err != nil {
			return 0, fmt.Errorf("route %s to replica %s: %w", kind, rep, err)
		}
		if n.cfg.Notifier != nil {
			_ = n.cfg.Notifier.Notify(ctx, commandsChannel, rep)
		}
		ids = append(ids, id)
	}
	var best int64
	noAgent := 0
	for i, id := range ids {
		c, err := n.await(ctx, id, deadline)
		if err != nil {
			return 0, fmt.Errorf("%s routed to replica %s: %w", kind, targets[i], err)
		}
		switch c.Outcome {
		case metastore.OutcomeOK:
			best = max(best, c.Version)
		case metastore.OutcomeNoAgent:
			noAgent++
		case metastore.OutcomeGone:
			return 0, fmt.Errorf("%w (on replica %s)", sessions.ErrAgentGone, targets[i])
		case metastore.OutcomeFailed:
			return 0, fmt.Errorf("%w: %s", sessions.ErrAgentFailed, c.Error)
		default:
			return 0, fmt.Errorf("%s routed to replica %s: %s", kind, targets[i], c.Error)
		}
	}
	if noAgent == len(ids) {
		return 0, sessions.ErrNoAgent
	}
	return best, nil
}

// holders returns the live replicas, other than this one, holding a
// stream of the project.
func (n *Node) holders(ctx context.Context, projectID string) ([]string, error) {
	routes, err := n.cfg.Store.AgentRoutes(ctx, projectID)
	if err != nil {
		return nil, err
	}
	if len(routes) == 0 {
		return nil, nil
	}
	// Only which replicas live: not who leads (Replicas asks the
	// database's locks for that, which routing does not need).
	live, err := n.cfg.Store.ListReplicas(ctx, time.Now().Add(-n.cfg.DeadAfter))
	if err != nil {
		return nil, err
	}
	alive := map[string]bool{}
	for _, r := range live {
		alive[r.ID] = true
	}
	seen := map[string]bool{}
	var out []string
	for _, r := range routes {
		if r.ReplicaID == n.cfg.ID || !alive[r.ReplicaID] || seen[r.ReplicaID] {
			continue
		}
		seen[r.ReplicaID] = true
		out = append(out, r.ReplicaID)
	}
	return out, nil
}

// await waits for the command's answer until deadline (then the command is
// abandoned: the other replica skips it, or its answer is ignored).
func (n *Node) await(ctx context.Context, id string, deadline time.Time) (metastore.Command, error) {
	n.mu.Lock()
	ch := n.waiters[id]
	n.mu.Unlock()
	t := time.NewTicker(pollEvery)
	defer t.Stop()
	end := time.NewTimer(time.Until(deadline) + pollEvery)
	defer end.Stop()
	for {
		c, err := n.cfg.Store.GetCommand(ctx, id)
		if err != nil {
			return c, err
		}
		if c.Done {
			return c, nil
		}
		select {
		case <-ctx.Done():
			return c, ctx.Err()
		case <-end.C:
			return c, context.DeadlineExceeded
		case <-ch:
		case <-t.C:
		}
	}
}

func (n *Node) dispatchResults(results <-chan string) {
	for id := range results {
		n.mu.Lock()
		ch := n.waiters[id]
		n.mu.Unlock()
		if ch != nil {
			select {
			case ch <- struct{}{}:
			default:
			}
		}
	}
}

// takeCommands runs the commands routed to this replica, each in its own
// goroutine (a flush may take a minute).
func (n *Node) takeCommands(ctx context.Context) {
	cmds, err := n.cfg.Store.TakeCommands(ctx, n.cfg.ID, 64)
	if err != nil {
		if ctx.Err() == nil {
			n.cfg.Log.Warn("take routed commands", "err", err)
		}
		return
	}
	for _, c := range cmds {
		go n.runCommand(ctx, c)
	}
}

func (n *Node) runCommand(ctx context.Context, c metastore.Command) {
	cctx, cancel := context.WithDeadline(ctx, c.Deadline)
	defer cancel()
	var v int64
	var err error
	switch c.Kind {
	case metastore.CommandFlush:
		v, err = n.cfg.Local.Flush(cctx, c.ProjectID, time.Duration(c.Arg)*time.Millisecond)
	case metastore.CommandRollback:
		v, err = n.cfg.Local.Rollback(cctx, c.ProjectID, c.Arg)
	default:
		err = fmt.Errorf("unknown command kind %q", c.Kind)
	}
	outcome, text := metastore.OutcomeOK, ""
	switch {
	case err == nil:
	case errors.Is(err, sessions.ErrNoAgent):
		outcome = metastore.OutcomeNoAgent
	case errors.Is(err, sessions.ErrAgentGone):
		outcome, text = metastore.OutcomeGone, err.Error()
	case errors.Is(err, sessions.ErrAgentFailed):
		outcome, text = metastore.OutcomeFailed, strings.TrimPrefix(err.Error(), sessions.ErrAgentFailed.Error()+": ")
	default:
		outcome, text = metastore.OutcomeError, err.Error()
	}
	fctx, fcancel := context.WithTimeout(context.WithoutCancel(ctx), 10*time.Second)
	defer fcancel()
	if err := n.cfg.Store.FinishCommand(fctx, c.ID, outcome, v, text); err != nil {
		n.cfg.Log.Warn("answer a routed command", "command", c.ID, "err", err)
		return
	}
	if n.cfg.Notifier != nil {
		_ = n.cfg.Notifier.Notify(fctx, resultsChannel, c.ID)
	}
	n.cfg.Log.Debug("routed command run", "command", c.ID, "kind", c.Kind, "project", c.ProjectID, "outcome", outcome)
}
