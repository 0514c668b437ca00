// Package lifecycle is the coordinator's sandbox lifecycle manager: it keeps
// the sandbox registry (metastore.SandboxStore) in step with the agents'
// heartbeats and the provider, and stops, flushes, verifies, destroys,
// archives and deletes according to each project's policy, as decided by
// the policy engine (package policy: the same rules `sandkeep simulate`
// replays).
//
// # The loop
//
// Tick looks at every sandbox that is not destroyed (and at the last
// destroyed one of a project without a live one, for delete_history),
// feeds it to policy.Decide and performs the action, recording its outcome,
// until the decision is none — at most a few actions per sandbox per tick.
// Run calls Tick every Config.TickEvery and Reconcile every
// Config.ReconcileEvery (and once at start), on the leader only: with SQLite
// every coordinator leads (there is one); with PostgreSQL Config.Leader is
// pgstore's advisory-lock leader, so exactly one replica runs the loop
// (flushes go over the agent's session stream, which lives on the replica
// the agent reached: a flush asked by a leader the agent is not connected
// to fails as "no agent", is retried with backoff and never destroys).
// Tests call Tick and Reconcile themselves with a fake clock (Config.Now).
//
// # Actions
//
//   - notify: POST a JSON CleanupNotice to the project's webhook (the
//     project's policy, else the global one), bounded by
//     Config.WebhookTimeout; the announcement is recorded whether or not the
//     webhook answered, so a broken webhook delays cleanups by the grace
//     period only. The platform postpones a cleanup by renewing a run lease
//     or with ExtendSandbox.
//   - stop: provider Stop (the agent flushes on SIGTERM); the state is then
//     read back from the provider.
//   - flush: a flush barrier over the agent's session stream
//     (sessions.Registry.Flush). A stopped, archived or failed sandbox is
//     started first (policy rule 5: its agent must run to flush), then the
//     manager waits for its agent to connect.
//   - verify: every pack the head's tree references (its trees and file
//     chunks, through the blob index) exists in the bucket and is long
//     enough; each distinct pack is Stat-ed once.
//   - destroy: provider Delete, only when the engine says so (flushed clean
//     at the head and the head verified); the sandbox's token is revoked.
//   - archive: provider Archive (ErrUnsupported is logged and ignored).
//   - delete_history: repo.DeleteProject — every object and row of the
//     project, the lifecycle rows included.
//
// A failed flush or verify is recorded (Backup "failed", FlushFailures,
// LastAttempt), logged at ERROR, counted in sandkeep_reaper_actions_total
// {action="alert"} and retried after policy.Backoff; it never leads to a
// destroy.
//
// # Backup status
//
// Heartbeats (OnHeartbeat, wired to sessions.Registry.OnHeartbeat) update
// the sandbox whose id the agent reports (SANDKEEP_SANDBOX_ID): last
// activity (last_write_time, never later than now), agent state, pending
// work, and clean/dirty with the version it is clean at. The destroy gate
// needs more than a clean heartbeat: Flushed, set only by a successful
// flush barrier and cleared by any heartbeat reporting pending changes or a
// newer version.
package lifecycle

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"sync"
	"sync/atomic"
	"time"

	"github.com/sandkeep/sandkeep/internal/cost"
	"github.com/sandkeep/sandkeep/internal/metastore"
	"github.com/sandkeep/sandkeep/internal/metrics"
	"github.com/sandkeep/sandkeep/internal/policy"
	"github.com/sandkeep/sandkeep/internal/provider"
	"github.com/sandkeep/sandkeep/internal/repo"
	"github.com/sandkeep/sandkeep/internal/sessions"
)

// Errors the API maps to status codes.
var (
	// ErrNoProvider: the coordinator runs without a sandbox provider.
	ErrNoProvider = errors.New("no provider configured (sandkeep serve --provider local|daytona)")
	// ErrRefused: the operation would lose data or break a rule (destroy
	// without a verified flush, a policy that contradicts itself).
	ErrRefused = errors.New("refused")
	// ErrNotReady: the sandbox did not become ready in time.
	ErrNotReady = errors.New("sandbox not ready")
)

// LabelSandbox is the label holding sandkeep's own sandbox id, so the
// reconciler recognises a sandbox whose create was interrupted before its
// provider id was recorded.
const LabelSandbox = "sandkeep.sandbox"

// Agents is what the manager needs of the live agent sessions
// (*sessions.Registry, or *cluster.Node behind several replicas).
type Agents interface {
	// Agents lists the sessions connected to this replica.
	Agents(projectID string) []sessions.Info
	// Flush reaches the project's agents wherever they are connected.
	Flush(ctx context.Context, projectID string, timeout time.Duration) (int64, error)
}

// remoteAgents is implemented by an Agents that also reaches agents
// connected to other replicas (*cluster.Node): whether one of the
// project's agents holds a stream on another live replica.
type remoteAgents interface {
	ConnectedElsewhere(ctx context.Context, projectID string) (bool, error)
}

// Config configures a Manager.
type Config struct {
	Repo     *repo.Repo             // required: metadata, bucket, project deletion
	Store    metastore.SandboxStore // required
	Agents   Agents                 // required
	Provider provider.Provider      // nil: sandbox operations fail with ErrNoProvider
	Metrics  *metrics.Metrics       // optional
	Log      *slog.Logger

	// Now is the clock of every lifecycle decision (default time.Now).
	// Waits (readiness, provider transitions) use real time.
	Now func() time.Time

	// Policy is the global policy (default policy.Default()); projects
	// override it field by field.
	Policy policy.Policy
	// Webhook is the global webhook URL (projects may set their own).
	Webhook        string
	WebhookTimeout time.Duration // default 5s
	HTTPClient     *http.Client  // for webhooks (default: a plain client)

	// Rates price sandbox time and storage (default cost.DefaultRates()).
	Rates cost.Rates

	// AgentCoordinator is the SANDKEEP_COORDINATOR given to created
	// sandboxes: the gRPC address their agents reach. Required to create.
	AgentCoordinator string
	// AgentEnv is added to every created sandbox's environment (e.g.
	// SANDKEEP_TLS).
	AgentEnv map[string]string
	// Spec is the template of created sandboxes (image or snapshot,
	// resources); labels and env are filled in. AutoStopMinutes stays as
	// given (0: sandkeep decides when to stop).
	Spec provider.CreateSpec

	FlushTimeout time.Duration // one flush barrier (default 60s)
	OpTimeout    time.Duration // one provider operation and the wait for its state (default 5m)
	ReadyTimeout time.Duration // EnsureSandbox as a whole (default 5m)
	// AgentTimeout: a started sandbox whose agent has not answered for
	// this long is silent, and EnsureSandbox replaces it (default 2m).
	AgentTimeout time.Duration
	// StuckAfter: the loop recovers a sandbox in the error state or in a
	// transition for this long — flushed if its agent answers, then
	// destroyed; the next EnsureSandbox creates another (default 15m).
	StuckAfter     time.Duration
	Poll           time.Duration // polling of provider states and agent readiness (default 250ms)
	TickEvery      time.Duration // Run's tick (default 5s)
	ReconcileEvery time.Duration // Run's reconcile (default 1m)
	// OrphanGrace: a provider sandbox younger than this is not taken for
	// an orphan (default 2m): its create may still be being recorded.
	OrphanGrace time.Duration
	// Parallel bounds the sandboxes handled at once by a tick (default 8).
	Parallel int
	// Leader elects the replica that runs the loop (nil: this one always).
	Leader metastore.Leader
}

// Manager is the lifecycle manager. It is safe for concurrent use.
type Manager struct {
	cfg  Config
	log  *slog.Logger
	meta metastore.Store
	st   metastore.SandboxStore

	locks   projectLocks
	flights flights
	slots   chan struct{}  // the loop's steps in flight (Parallel)
	running sync.WaitGroup // steps Run started
	rr      atomic.Uint64  // dispatch's round-robin start

	mu     sync.Mutex
	alerts map[string]string // sandbox id -> the last alert logged
}

// New returns a manager.
func New(cfg Config) (*Manager, error) {
	if cfg.Repo == nil || cfg.Store == nil || cfg.Agents == nil {
		return nil, errors.New("lifecycle: Repo, Store and Agents are required")
	}
	if cfg.Log == nil {
		cfg.Log = slog.Default()
	}
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	if cfg.Policy == (policy.Policy{}) {
		cfg.Policy = policy.Default()
	}
	if err := withoutGraceIfNoHook(cfg.Policy, cfg.Webhook).Validate(); err != nil {
		return nil, fmt.Errorf("lifecycle: global policy: %w", err)
	}
	if cfg.Rates == (cost.Rates{}) {
		cfg.Rates = cost.DefaultRates()
	}
	if err := cfg.Rates.Validate(); err != nil {
		return nil, fmt.Errorf("lifecycle: %w", err)
	}
	def := func(d *time.Duration, v time.Duration) {
		if *d <= 0 {
			*d = v
		}
	}
	def(&cfg.WebhookTimeout, 5*time.Second)
	def(&cfg.FlushTimeout, 60*time.Second)
	def(&cfg.OpTimeout, 5*time.Minute)
	def(&cfg.ReadyTimeout, 5*time.Minute)
	def(&cfg.AgentTimeout, 2*time.Minute)
	def(&cfg.StuckAfter, 15*time.Minute)
	def(&cfg.Poll, 250*time.Millisecond)
	def(&cfg.TickEvery, 5*time.Second)
	def(&cfg.ReconcileEvery, time.Minute)
	def(&cfg.OrphanGrace, 2*time.Minute)
	if cfg.Parallel <= 0 {
		cfg.Parallel = 8
	}
	if cfg.HTTPClient == nil {
		cfg.HTTPClient = &http.Client{}
	}
	return &Manager{cfg: cfg, log: cfg.Log, meta: cfg.Repo.Meta(), st: cfg.Store,
		locks: projectLocks{m: map[string]chan struct{}{}}, flights: flights{m: map[string]*flight{}}, alerts: map[string]string{},
		slots: make(chan struct{}, cfg.Parallel)}, nil
}

// Provider returns the configured provider (nil if none).
func (m *Manager) Provider() provider.Provider { return m.cfg.Provider }

// GlobalPolicy returns the global policy and webhook.
func (m *Manager) GlobalPolicy() (policy.Policy, string) { return m.cfg.Policy, m.cfg.Webhook }

// Rates returns the cost rates.
func (m *Manager) Rates() cost.Rates { return m.cfg.Rates }

func (m *Manager) now() time.Time { return m.cfg.Now().UTC() }

func (m *Manager) needProvider() error {
	if m.cfg.Provider == nil {
		return ErrNoProvider
	}
	return nil
}

func (m *Manager) count(action, result string) {
	if m.cfg.Metrics != nil {
		m.cfg.Metrics.ReaperActions.WithLabelValues(action, result).Inc()
	}
}

// Run runs the loop until ctx ends: Reconcile at once and every
// ReconcileEvery, a pass over the sandboxes every TickEvery, on the leader
// only. A pass does not wait for slow sandboxes: each holds one of the
// Parallel slots (and its project's lock) until its provider calls end,
// bounded by their timeouts, while the others go on. Run returns once the
// steps it started have ended.
func (m *Manager) Run(ctx context.Context) {
	tick := time.NewTicker(m.cfg.TickEvery)
	defer tick.Stop()
	var lastReconcile time.Time
	defer func() {
		m.running.Wait()
		if m.cfg.Leader != nil {
			m.cfg.Leader.Resign()
		}
	}()
	for {
		if m.lead(ctx) {
			if time.Since(lastReconcile) >= m.cfg.ReconcileEvery {
				lastReconcile = time.Now()
				if m.cfg.Provider != nil {
					if _, err := m.Reconcile(ctx); err != nil && ctx.Err() == nil {
						m.log.Warn("lifecycle: reconcile failed", "err", err)
					}
				}
				if _, err := m.UpdateCostMetrics(ctx); err != nil && ctx.Err() == nil {
					m.log.Warn("lifecycle: cost metrics", "err", err)
				}
			}
			if _, err := m.dispatch(ctx, false); err != nil && ctx.Err() == nil {
				m.log.Warn("lifecycle: tick failed", "err", err)
			}
		}
		select {
		case <-ctx.Done():
			return
		case <-tick.C:
		}
	}
}

// fence proves, right before a destroy the loop decided, that this replica
// still leads (metastore.Fencer): a deposed leader's decisions are refused,
// not carried out. Destroys an admin asked for are not fenced.
func (m *Manager) fence(ctx context.Context) error {
	f, ok := m.cfg.Leader.(metastore.Fencer)
	if !ok {
		return nil // no election (one replica), or a leader without fencing
	}
	if err := f.Fence(ctx); err != nil {
		m.count("fenced", "refused")
		m.log.Warn("lifecycle: refusing a destroy decided as leader", "err", err)
		return fmt.Errorf("%w: %w", ErrRefused, err)
	}
	return nil
}

func (m *Manager) lead(ctx context.Context) bool {
	if m.cfg.Leader == nil {
		return true
	}
	ok, err := m.cfg.Leader.TryLead(ctx)
	if err != nil {
		if ctx.Err() == nil {
			m.log.Warn("lifecycle: leader election", "err", err)
		}
		return false
	}
	return ok
}

// ---- per-project locks and single flights ----

// projectLocks serialise the operations on one project's sandbox: a tick
// skips a project that is busy, EnsureSandbox waits for it.
type projectLocks struct {
	mu sync.Mutex
	m  map[string]chan struct{}
}

func (l *projectLocks) ch(project string) chan struct{} {
	l.mu.Lock()
	defer l.mu.Unlock()
	c, ok := l.m[project]
	if !ok {
		c = make(chan struct{}, 1)
		l.m[project] = c
	}
	return c
}

func (l *projectLocks) lock(ctx context.Context, project string) (func(), error) {
	c := l.ch(project)
	select {
	case c <- struct{}{}:
		return func() { <-c }, nil
	case <-ctx.Done():
		return nil, ctx.Err()
	}
}

// busy reports whether the project's lock is held now.
func (l *projectLocks) busy(project string) bool {
	return len(l.ch(project)) > 0
}

func (l *projectLocks) tryLock(project string) (func(), bool) {
	c := l.ch(project)
	select {
	case c <- struct{}{}:
		return func() { <-c }, true
	default:
		return nil, false
	}
}

// flights make concurrent EnsureSandbox calls of one project share one
// attempt.
type flights struct {
	mu sync.Mutex
	m  map[string]*flight
}

type flight struct {
	done chan struct{}
	res  Ensured
	err  error
}

func (f *flights) do(ctx context.Context, key string, fn func() (Ensured, error)) (Ensured, bool, error) {
	f.mu.Lock()
	fl, ok := f.m[key]
	if !ok {
		fl = &flight{done: make(chan struct{})}
		f.m[key] = fl
		go func() {
			defer close(fl.done)
			fl.res, fl.err = fn()
			f.mu.Lock()
			delete(f.m, key)
			f.mu.Unlock()
		}()
	}
	f.mu.Unlock()
	select {
	case <-fl.done:
		return fl.res, ok, fl.err
	case <-ctx.Done():
		return Ensured{}, ok, ctx.Err()
	}
}
