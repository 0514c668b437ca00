package lifecycle

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"maps"
	"os"
	"sync"
	"testing"
	"time"

	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/sandkeep/sandkeep/internal/metastore"
	"github.com/sandkeep/sandkeep/internal/metastore/sqlitestore"
	"github.com/sandkeep/sandkeep/internal/metrics"
	"github.com/sandkeep/sandkeep/internal/provider"
	"github.com/sandkeep/sandkeep/internal/repo"
	"github.com/sandkeep/sandkeep/internal/sessions"
	"github.com/sandkeep/sandkeep/internal/testclock"
	"github.com/sandkeep/sandkeep/internal/testenv"
	"github.com/sandkeep/sandkeep/internal/tree"
	pb "github.com/sandkeep/sandkeep/proto/sandkeep/v1"
)

// ---- fake clock ----

func newClock() *testclock.Clock {
	return testclock.New(time.Date(2031, 5, 6, 7, 0, 0, 0, time.UTC))
}

// ---- fake provider ----

// fakeProvider keeps sandboxes in memory; operations complete at once
// unless slow is set (then Start/Stop leave the sandbox in starting/stopping
// until settle is called). onCreate/onStart/onStop simulate the agent.
type fakeProvider struct {
	mu       sync.Mutex
	boxes    map[string]*provider.Sandbox
	seq      int
	slow     bool
	failNext map[string]error // op -> error for its next call
	calls    []string
	onUp     func(sb provider.Sandbox, env map[string]string) // the agent comes up
	onDown   func(sb provider.Sandbox)                        // the agent goes away
	created  func(id string)                                  // after Create stored a box (called without mu)
	envs     map[string]map[string]string
	now      func() time.Time
}

func newFakeProvider(now func() time.Time) *fakeProvider {
	return &fakeProvider{boxes: map[string]*provider.Sandbox{}, failNext: map[string]error{}, envs: map[string]map[string]string{}, now: now}
}

func (p *fakeProvider) Name() string { return "fake" }

func (p *fakeProvider) take(op string) error {
	p.calls = append(p.calls, op)
	if err, ok := p.failNext[op]; ok {
		delete(p.failNext, op)
		return err
	}
	return nil
}

func (p *fakeProvider) Create(_ context.Context, spec provider.CreateSpec) (provider.Sandbox, error) {
	p.mu.Lock()
	if err := p.take("create"); err != nil {
		p.mu.Unlock()
		return provider.Sandbox{}, err
	}
	p.seq++
	sb := &provider.Sandbox{ID: fmt.Sprintf("fake-%d", p.seq), State: provider.StateStarted, Labels: maps.Clone(spec.Labels), CreatedAt: p.now()}
	if p.slow {
		sb.State = provider.StateCreating
	}
	p.boxes[sb.ID] = sb
	p.envs[sb.ID] = maps.Clone(spec.Env)
	cp, up, env, created := *sb, p.onUp, p.envs[sb.ID], p.created
	p.mu.Unlock()
	if up != nil && cp.State == provider.StateStarted {
		up(cp, env)
	}
	if created != nil {
		created(cp.ID)
	}
	return cp, nil
}

func (p *fakeProvider) get(id string) (*provider.Sandbox, error) {
	sb, ok := p.boxes[id]
	if !ok || sb.State == provider.StateDestroyed {
		return nil, fmt.Errorf("%w: %s", provider.ErrNotFound, id)
	}
	return sb, nil
}

func (p *fakeProvider) Start(_ context.Context, id string) error {
	p.mu.Lock()
	if err := p.take("start"); err != nil {
		p.mu.Unlock()
		return err
	}
	sb, err := p.get(id)
	if err != nil {
		p.mu.Unlock()
		return err
	}
	if sb.State == provider.StateStarted || sb.State == provider.StateStarting {
		p.mu.Unlock()
		return nil
	}
	sb.State = provider.StateStarted
	if p.slow {
		sb.State = provider.StateStarting
	}
	cp, up, env := *sb, p.onUp, p.envs[id]
	p.mu.Unlock()
	if up != nil && cp.State == provider.StateStarted {
		up(cp, env)
	}
	return nil
}

func (p *fakeProvider) Stop(_ context.Context, id string) error {
	p.mu.Lock()
	if err := p.take("stop"); err != nil {
		p.mu.Unlock()
		return err
	}
	sb, err := p.get(id)
	if err != nil {
		p.mu.Unlock()
		return err
	}
	if sb.State == provider.StateStopped || sb.State == provider.StateArchived {
		p.mu.Unlock()
		return nil
	}
	sb.State = provider.StateStopped
	if p.slow {
		sb.State = provider.StateStopping
	}
	cp, down := *sb, p.onDown
	p.mu.Unlock()
	if down != nil {
		down(cp)
	}
	return nil
}

func (p *fakeProvider) Archive(_ context.Context, id string) error {
	p.mu.Lock()
	defer p.mu.Unlock()
	if err := p.take("archive"); err != nil {
		return err
	}
	sb, err := p.get(id)
	if err != nil {
		return err
	}
	if sb.State != provider.StateStopped && sb.State != provider.StateArchived {
		return provider.ErrConflict
	}
	sb.State = provider.StateArchived
	return nil
}

func (p *fakeProvider) Delete(_ context.Context, id string) error {
	p.mu.Lock()
	if err := p.take("delete"); err != nil {
		p.mu.Unlock()
		return err
	}
	sb, ok := p.boxes[id]
	if ok {
		sb.State = provider.StateDestroyed
	}
	down := p.onDown
	p.mu.Unlock()
	if ok && down != nil {
		down(*sb)
	}
	return nil
}

func (p *fakeProvider) Get(_ context.Context, id string) (provider.Sandbox, error) {
	p.mu.Lock()
	defer p.mu.Unlock()
	sb, err := p.get(id)
	if err != nil {
		return provider.Sandbox{}, err
	}
	return *sb, nil
}

func (p *fakeProvider) List(_ context.Context, labels map[string]string) ([]provider.Sandbox, error) {
	p.mu.Lock()
	defer p.mu.Unlock()
	var out []provider.Sandbox
	for _, sb := range p.boxes {
		if sb.State != provider.StateDestroyed && provider.MatchLabels(sb.Labels, labels) {
			out = append(out, *sb)
		}
	}
	return out, nil
}

// settle ends every transition in progress (slow mode), running the agent
// hooks.
func (p *fakeProvider) settle() {
	p.mu.Lock()
	var ups []provider.Sandbox
	for _, sb := range p.boxes {
		switch sb.State {
		case provider.StateCreating, provider.StateStarting:
			sb.State = provider.StateStarted
			ups = append(ups, *sb)
		case provider.StateStopping:
			sb.State = provider.StateStopped
		}
	}
	up := p.onUp
	envs := maps.Clone(p.envs)
	p.mu.Unlock()
	for _, sb := range ups {
		if up != nil {
			up(sb, envs[sb.ID])
		}
	}
}

func (p *fakeProvider) state(id string) provider.State {
	p.mu.Lock()
	defer p.mu.Unlock()
	if sb, ok := p.boxes[id]; ok {
		return sb.State
	}
	return ""
}

func (p *fakeProvider) set(id string, st provider.State) {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.boxes[id].State = st
}

func (p *fakeProvider) failOnce(op string, err error) {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.failNext[op] = err
}

func (p *fakeProvider) count(op string) int {
	p.mu.Lock()
	defer p.mu.Unlock()
	n := 0
	for _, c := range p.calls {
		if c == op {
			n++
		}
	}
	return n
}

// ---- fake agents ----

// fakeAgents is the session registry seen by the manager: one agent per
// sandbox id, with a settable heartbeat; Flush answers with flushVersion()
// or flushErr.
type fakeAgents struct {
	mu       sync.Mutex
	agents   map[string]sessions.Info // by sandbox id
	flushErr error
	flushes  int
	version  func(project string) int64 // what a flush returns (default: the head)
	onHB     func(project string, hb *pb.Heartbeat)
}

func (a *fakeAgents) Agents(projectID string) []sessions.Info {
	a.mu.Lock()
	defer a.mu.Unlock()
	var out []sessions.Info
	for _, i := range a.agents {
		if i.ProjectID == projectID {
			out = append(out, i)
		}
	}
	return out
}

func (a *fakeAgents) Flush(_ context.Context, projectID string, _ time.Duration) (int64, error) {
	a.mu.Lock()
	defer a.mu.Unlock()
	a.flushes++
	if a.flushErr != nil {
		return 0, a.flushErr
	}
	n := 0
	for _, i := range a.agents {
		if i.ProjectID == projectID && i.Connected {
			n++
		}
	}
	if n == 0 {
		return 0, sessions.ErrNoAgent
	}
	return a.version(projectID), nil
}

// up connects an agent for a sandbox, idle and clean at version, and
// passes the heartbeat to the manager as the registry would.
func (a *fakeAgents) up(project, sandboxID string, version int64) {
	hb := &pb.Heartbeat{SessionId: "s-" + sandboxID, SandboxId: sandboxID, State: pb.AgentState_AGENT_STATE_IDLE, Version: version, Clean: true}
	a.beat(project, hb)
}

func (a *fakeAgents) beat(project string, hb *pb.Heartbeat) {
	a.mu.Lock()
	a.agents[hb.GetSandboxId()] = sessions.Info{SessionID: hb.GetSessionId(), ProjectID: project, Connected: true, Heartbeat: hb}
	on := a.onHB
	a.mu.Unlock()
	if on != nil {
		on(project, hb)
	}
}

func (a *fakeAgents) down(sandboxID string) {
	a.mu.Lock()
	defer a.mu.Unlock()
	if i, ok := a.agents[sandboxID]; ok {
		i.Connected = false
		a.agents[sandboxID] = i
	}
}

func (a *fakeAgents) setFlushErr(err error) {
	a.mu.Lock()
	defer a.mu.Unlock()
	a.flushErr = err
}

func (a *fakeAgents) flushCount() int {
	a.mu.Lock()
	defer a.mu.Unlock()
	return a.flushes
}

// ---- environment ----

type env struct {
	t       *testing.T
	m       *Manager
	meta    *sqlitestore.Store
	repo    *repo.Repo
	prov    *fakeProvider
	agents  *fakeAgents
	clock   *testclock.Clock
	metrics *metrics.Metrics
	logs    *logBuffer
}

type logBuffer struct {
	mu sync.Mutex
	b  []byte
}

func (l *logBuffer) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.b = append(l.b, p...)
	return len(p), nil
}

func (l *logBuffer) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return string(l.b)
}

func newEnv(t *testing.T, mod ...func(*Config)) *env {
	t.Helper()
	meta, blobs := testenv.Local(t)
	logs := &logBuffer{}
	var w io.Writer = logs
	if os.Getenv("SANDKEEP_TEST_VERBOSE") != "" {
		w = io.MultiWriter(logs, os.Stderr)
	}
	log := slog.New(slog.NewTextHandler(w, &slog.HandlerOptions{Level: slog.LevelDebug}))
	r := repo.New(meta, blobs, repo.Options{Logger: log})
	e := &env{t: t, meta: meta, repo: r, clock: newClock(), metrics: metrics.New(), logs: logs}
	e.prov = newFakeProvider(e.clock.Now)
	e.agents = &fakeAgents{agents: map[string]sessions.Info{}}
	e.agents.version = func(project string) int64 { return e.head(project) }
	// The fake agent connects when its sandbox starts, at the head, and
	// goes away when it stops.
	e.prov.onUp = func(_ provider.Sandbox, env map[string]string) {
		sid := env[provider.EnvSandboxID]
		sb, err := e.meta.GetSandbox(context.Background(), sid)
		if err != nil {
			return
		}
		e.agents.up(sb.ProjectID, sid, e.head(sb.ProjectID))
	}
	e.prov.onDown = func(sb provider.Sandbox) { e.agents.down(sb.Labels[LabelSandbox]) }
	cfg := Config{
		Repo: r, Store: meta, Agents: e.agents, Provider: e.prov, Metrics: e.metrics, Log: log,
		Now: e.clock.Now, AgentCoordinator: "127.0.0.1:1", Poll: time.Millisecond,
		ReadyTimeout: 10 * time.Second, OpTimeout: 10 * time.Second, FlushTimeout: 5 * time.Second,
	}
	for _, f := range mod {
		f(&cfg)
	}
	m, err := New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	e.m = m
	e.agents.onHB = m.OnHeartbeat
	return e
}

func (e *env) project(name string) string {
	e.t.Helper()
	p, err := e.meta.CreateProject(e.t.Context(), name)
	if err != nil {
		e.t.Fatal(err)
	}
	return p.ID
}

func (e *env) head(project string) int64 {
	p, err := e.meta.GetProject(context.Background(), project)
	if err != nil {
		return 0
	}
	return p.Head
}

// commit makes a new head version whose tree holds one symlink (stored in
// the bucket by the repo: the head verifies).
func (e *env) commit(project string) int64 {
	e.t.Helper()
	head := e.head(project)
	enc, err := (&tree.Tree{Nodes: []tree.Node{{Name: "link", Type: tree.Symlink, Mode: 0o777, Target: fmt.Sprintf("v%d", head+1)}}}).Encode()
	if err != nil {
		e.t.Fatal(err)
	}
	ids, err := e.repo.PutTrees(e.t.Context(), project, [][]byte{enc})
	if err != nil {
		e.t.Fatal(err)
	}
	v, err := e.repo.Commit(e.t.Context(), project, repo.CommitRequest{Parent: head, Root: ids[0], Kind: metastore.KindSync})
	if err != nil {
		e.t.Fatal(err)
	}
	return v.Number
}

// write simulates the agent of the project's live sandbox seeing a change
// now and committing it: a dirty heartbeat, then a clean one at the new
// head.
func (e *env) write(project string) {
	e.t.Helper()
	sb := e.live(project)
	now := timestamppb.New(e.clock.Now())
	e.agents.beat(project, &pb.Heartbeat{SessionId: "s-" + sb.ID, SandboxId: sb.ID, State: pb.AgentState_AGENT_STATE_SYNCING,
		Version: e.head(project), LastWriteTime: now, PendingPaths: 1, PendingBytes: 10})
	v := e.commit(project)
	e.agents.beat(project, &pb.Heartbeat{SessionId: "s-" + sb.ID, SandboxId: sb.ID, State: pb.AgentState_AGENT_STATE_IDLE,
		Version: v, LastWriteTime: now, Clean: true})
}

func (e *env) live(project string) metastore.Sandbox {
	e.t.Helper()
	sb, err := e.meta.LiveSandbox(e.t.Context(), project)
	if err != nil {
		e.t.Fatalf("live sandbox of %s: %v", project, err)
	}
	return sb
}

func (e *env) get(id string) metastore.Sandbox {
	e.t.Helper()
	sb, err := e.meta.GetSandbox(e.t.Context(), id)
	if err != nil {
		e.t.Fatal(err)
	}
	return sb
}

func (e *env) ensure(project string) Ensured {
	e.t.Helper()
	res, err := e.m.EnsureSandbox(e.t.Context(), project)
	if err != nil {
		e.t.Fatalf("EnsureSandbox: %v", err)
	}
	return res
}

func (e *env) tick() {
	e.t.Helper()
	if err := e.m.Tick(e.t.Context()); err != nil {
		e.t.Fatalf("Tick: %v", err)
	}
}

// advance moves the clock in steps, ticking after each.
func (e *env) advance(total, step time.Duration) {
	e.t.Helper()
	for d := time.Duration(0); d < total; d += step {
		e.clock.Advance(step)
		e.tick()
	}
}
