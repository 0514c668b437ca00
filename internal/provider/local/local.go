// Package local is the provider.Provider used by the demo and the tests: a
// sandbox is a directory under Config.Root plus a `sandkeep-agent run`
// process working on its workspace.
//
//	ROOT/ID/workspace/   the agent's --workspace: the sandbox's files
//	ROOT/ID/cache/       the agent's --cache-dir
//	ROOT/ID/agent.sock   the agent's --socket (under the temp dir when the
//	                     path would be too long for a unix socket)
//	ROOT/ID/agent.log    the agent's stdout and stderr
//	ROOT/ID/labels.json  the labels
//	ROOT/ID/spec.json    the create spec, environment included (mode 0600)
//	ROOT/ID/state.json   state, pid, times: what a restarted coordinator reads
//
// The lifecycle, mapped onto a VM's:
//
//   - Create makes the directory and starts the agent with the spec's Env
//     (plus SANDKEEP_SANDBOX_ID=ID unless Env sets it) in its own process
//     group. The sandbox is started as soon as the process runs: whether
//     the agent restored the workspace is the coordinator's to know (the
//     agent's heartbeats), as it would be on Daytona. Image, Snapshot and
//     the resources are recorded but mean nothing here.
//   - Stop sends SIGTERM to the agent's process group (the agent flushes
//     and exits 0) and waits for it to exit, SIGKILLing it after
//     Config.StopTimeout. The directory stays, as a stopped VM keeps its
//     disk: Start runs a new agent on the same workspace.
//   - Archive is a stop: it needs a stopped sandbox (as on Daytona), and
//     only records the state archived; nothing moves anywhere.
//   - Delete SIGKILLs the process group if it runs and removes the
//     directory: the workspace is gone, which is the point — its files live
//     in the bucket.
//   - An agent that exits by itself (a crash, a refused token) puts the
//     sandbox in error; Start runs it again.
//
// Get and List answer from an in-memory table that is filled from the
// directories under Root, so a provider made on the Root of a previous
// process (a restarted coordinator) sees the sandboxes it left, adopts
// their still-running agents (recognised by pid and start time), and marks
// those whose agent died meanwhile as error. One provider at a time should
// manage a Root; Close leaves the agents running, for the next one.
package local

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"maps"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/sandkeep/sandkeep/internal/atomicfile"
	"github.com/sandkeep/sandkeep/internal/provider"
)

// Config configures the provider.
type Config struct {
	// Root holds one directory per sandbox. Required; created if missing.
	Root string
	// AgentBinary is the sandkeep-agent executable. Required.
	AgentBinary string
	// AgentArgs are added to `run --workspace … --socket … --cache-dir …`
	// (e.g. --force-poll, --log-level debug).
	AgentArgs []string
	// BaseEnv is every agent's environment before the spec's Env (default:
	// PATH, HOME, TMPDIR, LANG and TZ of this process — not the whole
	// environment, which may hold the coordinator's own secrets).
	BaseEnv []string
	// StopTimeout bounds how long Stop waits for the agent to flush and exit
	// before it SIGKILLs it (default 90s; the agent's own bound on its final
	// flush, --stop-timeout, is 60s).
	StopTimeout time.Duration
	// KillTimeout bounds the wait for a SIGKILLed agent to go (default 10s).
	KillTimeout time.Duration
	// PollInterval is how often the liveness of an adopted agent (one
	// started by an earlier process) is checked (default 250ms).
	PollInterval time.Duration
	// Logger (default: discard).
	Logger *slog.Logger
}

// Provider is the local provider. It is safe for concurrent use.
type Provider struct {
	cfg Config
	log *slog.Logger

	ctx    context.Context // ends on Close: stops adopted-process watchers
	cancel context.CancelFunc
	wg     sync.WaitGroup

	mu     sync.Mutex
	boxes  map[string]*box
	closed bool
}

var _ provider.Provider = (*Provider)(nil)

// box is one sandbox. mu is never held while waiting for a process.
type box struct {
	id, dir string

	mu     sync.Mutex
	labels map[string]string
	st     stateFile
	proc   *proc // the running agent, if any
	gone   bool  // removed from disk

	creating bool // guarded by Provider.mu: Create has not made its directory yet
}

// proc is a running agent: a child of this process (own) or one adopted
// from an earlier process.
type proc struct {
	pid   int
	ticks uint64        // start time in clock ticks since boot (/proc/PID/stat), 0 unknown
	done  chan struct{} // closed once it exited and the state says so
	own   bool
}

// stateFile is state.json.
type stateFile struct {
	State       provider.State `json:"state"`
	Detail      string         `json:"detail,omitempty"` // reported as ProviderState
	ErrorReason string         `json:"error_reason,omitempty"`
	CreatedAt   time.Time      `json:"created_at"`
	UpdatedAt   time.Time      `json:"updated_at"`
	PID         int            `json:"pid,omitempty"`
	StartTicks  uint64         `json:"start_ticks,omitempty"`
	Socket      string         `json:"socket"`
	Starts      int            `json:"starts"`
}

// specFile is spec.json.
type specFile struct {
	Env             map[string]string `json:"env"`
	Image           string            `json:"image,omitempty"`
	Snapshot        string            `json:"snapshot,omitempty"`
	CPU             int               `json:"cpu,omitempty"`
	MemoryGiB       int               `json:"memory_gib,omitempty"`
	DiskGiB         int               `json:"disk_gib,omitempty"`
	AutoStopMinutes int               `json:"auto_stop_minutes,omitempty"`
}

// New returns a provider on cfg.Root and loads the sandboxes already there.
func New(cfg Config) (*Provider, error) {
	if cfg.Root == "" {
		return nil, errors.New("local provider: Root is required")
	}
	if cfg.AgentBinary == "" {
		return nil, errors.New("local provider: AgentBinary is required")
	}
	root, err := filepath.Abs(cfg.Root)
	if err != nil {
		return nil, err
	}
	cfg.Root = root
	if bin, err := filepath.Abs(cfg.AgentBinary); err == nil && strings.ContainsRune(cfg.AgentBinary, filepath.Separator) {
		cfg.AgentBinary = bin
	}
	if cfg.BaseEnv == nil {
		for _, k := range []string{"PATH", "HOME", "TMPDIR", "LANG", "TZ"} {
			if v, ok := os.LookupEnv(k); ok {
				cfg.BaseEnv = append(cfg.BaseEnv, k+"="+v)
			}
		}
	}
	if cfg.StopTimeout <= 0 {
		cfg.StopTimeout = 90 * time.Second
	}
	if cfg.KillTimeout <= 0 {
		cfg.KillTimeout = 10 * time.Second
	}
	if cfg.PollInterval <= 0 {
		cfg.PollInterval = 250 * time.Millisecond
	}
	if err := os.MkdirAll(root, 0o700); err != nil {
		return nil, fmt.Errorf("local provider: %w", err)
	}
	log := cfg.Logger
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	p := &Provider{cfg: cfg, log: log, boxes: make(map[string]*box)}
	p.ctx, p.cancel = context.WithCancel(context.Background())
	if err := p.scan(); err != nil {
		p.Close()
		return nil, err
	}
	return p, nil
}

// Name is "local".
func (p *Provider) Name() string { return "local" }

// Close stops watching. The agents keep running (a coordinator restart does
// not stop sandboxes); a provider made later on the same Root adopts them.
func (p *Provider) Close() error {
	p.mu.Lock()
	p.closed = true
	p.mu.Unlock()
	p.cancel()
	p.wg.Wait()
	return nil
}

func (p *Provider) isClosed() bool {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.closed
}

// Dir is a sandbox's directory.
func (p *Provider) Dir(id string) string { return filepath.Join(p.cfg.Root, id) }

// Workspace is a sandbox's workspace directory.
func (p *Provider) Workspace(id string) string { return filepath.Join(p.cfg.Root, id, "workspace") }

// Location is the sandbox's workspace directory (provider.Locator).
func (p *Provider) Location(id string) string { return p.Workspace(id) }

// LogPath is the file holding a sandbox's agent output.
func (p *Provider) LogPath(id string) string { return filepath.Join(p.cfg.Root, id, "agent.log") }

// Socket is the control socket of a sandbox's agent.
func (p *Provider) Socket(id string) (string, error) {
	b, err := p.box(id)
	if err != nil {
		return "", err
	}
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.st.Socket, nil
}

var idRE = regexp.MustCompile(`^lsb-[0-9a-f]{12}$`)

func newID() string {
	b := make([]byte, 6)
	_, _ = rand.Read(b)
	return "lsb-" + hex.EncodeToString(b)
}

// socketPath is DIR/agent.sock, or a path under the temp dir when that
// would not fit in a unix socket address (108 bytes on Linux).
func socketPath(dir, id string) string {
	if s := filepath.Join(dir, "agent.sock"); len(s) < 100 {
		return s
	}
	return filepath.Join(os.TempDir(), "sandkeep-"+id+".sock")
}

// Create makes a sandbox and starts its agent.
func (p *Provider) Create(ctx context.Context, spec provider.CreateSpec) (provider.Sandbox, error) {
	if err := ctx.Err(); err != nil {
		return provider.Sandbox{}, err
	}
	if p.isClosed() {
		return provider.Sandbox{}, fmt.Errorf("local provider is closed: %w", provider.ErrUnavailable)
	}
	id := newID()
	for range 10 { // 48 random bits: a collision is all but impossible
		p.mu.Lock()
		_, taken := p.boxes[id]
		p.mu.Unlock()
		if _, err := os.Lstat(p.Dir(id)); !taken && errors.Is(err, fs.ErrNotExist) {
			break
		}
		id = newID()
	}
	dir := p.Dir(id)
	now := time.Now().UTC()
	b := &box{id: id, dir: dir, labels: cloneMap(spec.Labels), creating: true, st: stateFile{
		State: provider.StateCreating, Detail: "creating", CreatedAt: now, UpdatedAt: now, Socket: socketPath(dir, id),
	}}
	env := cloneMap(spec.Env)
	if _, ok := env[provider.EnvSandboxID]; !ok {
		env[provider.EnvSandboxID] = id
	}
	sf := specFile{Env: env, Image: spec.Image, Snapshot: spec.Snapshot, CPU: spec.CPU, MemoryGiB: spec.MemoryGiB, DiskGiB: spec.DiskGiB, AutoStopMinutes: spec.AutoStopMinutes}
	b.mu.Lock()
	defer b.mu.Unlock()
	p.mu.Lock()
	p.boxes[id] = b
	p.mu.Unlock()
	// The box is in the table, locked, before its directory exists, so that
	// a concurrent scan never loads a half-made directory as a sandbox.
	fail := func(err error) (provider.Sandbox, error) {
		p.mu.Lock()
		delete(p.boxes, id)
		b.creating = false
		p.mu.Unlock()
		b.gone = true
		if !errors.Is(err, fs.ErrExist) { // (an id collision: not ours to remove)
			_ = removeAll(dir)
		}
		return provider.Sandbox{}, fmt.Errorf("local provider: create sandbox: %w", err)
	}
	if err := mkSandboxDir(b, sf); err != nil {
		return fail(err)
	}
	if err := p.spawn(b, env); err != nil {
		return fail(err)
	}
	p.mu.Lock()
	b.creating = false
	p.mu.Unlock()
	p.log.Info("sandbox created", "id", id, "pid", b.proc.pid)
	return b.snapshot(), nil
}

// mkSandboxDir makes a new sandbox's directory and files.
func mkSandboxDir(b *box, sf specFile) error {
	if err := os.Mkdir(b.dir, 0o700); err != nil {
		return err
	}
	if err := os.Mkdir(filepath.Join(b.dir, "workspace"), 0o755); err != nil {
		return err
	}
	if err := os.Mkdir(filepath.Join(b.dir, "cache"), 0o700); err != nil {
		return err
	}
	if err := writeJSON(filepath.Join(b.dir, "labels.json"), b.labels, 0o644); err != nil {
		return err
	}
	if err := writeJSON(filepath.Join(b.dir, "spec.json"), sf, 0o600); err != nil {
		return err
	}
	return writeJSON(filepath.Join(b.dir, "state.json"), b.st, 0o644)
}

// spawn starts the agent; b.mu is held. The state becomes started.
func (p *Provider) spawn(b *box, env map[string]string) error {
	args := []string{"run",
		"--workspace", filepath.Join(b.dir, "workspace"),
		"--socket", b.st.Socket,
		"--cache-dir", filepath.Join(b.dir, "cache"),
	}
	args = append(args, p.cfg.AgentArgs...)
	cmd := exec.Command(p.cfg.AgentBinary, args...)
	cmd.Dir = b.dir
	cmd.Env = append(slices.Clone(p.cfg.BaseEnv), envList(env)...)
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	logf, err := os.OpenFile(filepath.Join(b.dir, "agent.log"), os.O_WRONLY|os.O_CREATE|os.O_APPEND, 0o600)
	if err != nil {
		return err
	}
	defer logf.Close() // the child has its own descriptor
	cmd.Stdout, cmd.Stderr = logf, logf
	if err := cmd.Start(); err != nil {
		return fmt.Errorf("start agent: %w", err)
	}
	pr := &proc{pid: cmd.Process.Pid, ticks: startTicks(cmd.Process.Pid), done: make(chan struct{}), own: true}
	b.proc = pr
	b.st.PID, b.st.StartTicks = pr.pid, pr.ticks
	b.st.Starts++
	p.set(b, provider.StateStarted, fmt.Sprintf("agent running (pid %d)", pr.pid), "")
	go func() {
		err := cmd.Wait()
		p.exited(b, pr, exitDetail(err))
		close(pr.done)
	}()
	return nil
}

func exitDetail(err error) string {
	var ee *exec.ExitError
	switch {
	case err == nil:
		return "exit status 0"
	case errors.As(err, &ee):
		return ee.ProcessState.String()
	default:
		return err.Error()
	}
}

// exited records an agent's exit.
func (p *Provider) exited(b *box, pr *proc, how string) {
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.proc != pr {
		return
	}
	b.proc = nil
	if p.isClosed() || b.gone {
		// A closed provider leaves the state to the one that replaced it.
		return
	}
	b.st.PID, b.st.StartTicks = 0, 0
	switch b.st.State {
	case provider.StateStopping:
		p.set(b, provider.StateStopped, "agent stopped ("+how+")", "")
		p.log.Info("sandbox stopped", "id", b.id, "agent", how)
	case provider.StateStarted, provider.StateStarting:
		p.set(b, provider.StateError, "agent exited", "agent exited unexpectedly ("+how+")")
		p.log.Warn("sandbox agent exited unexpectedly", "id", b.id, "agent", how, "log", filepath.Join(b.dir, "agent.log"))
	default:
		p.persist(b)
	}
}

// set changes the state and writes state.json; b.mu is held.
func (p *Provider) set(b *box, s provider.State, detail, reason string) {
	b.st.State, b.st.Detail, b.st.ErrorReason = s, detail, reason
	b.st.UpdatedAt = time.Now().UTC()
	p.persist(b)
}

func (p *Provider) persist(b *box) {
	if b.gone {
		return
	}
	if err := writeJSON(filepath.Join(b.dir, "state.json"), b.st, 0o644); err != nil && !errors.Is(err, fs.ErrNotExist) {
		// (Not existing: another provider on the same Root deleted it.)
		p.log.Error("write sandbox state", "id", b.id, "err", err)
	}
}

func (b *box) snapshot() provider.Sandbox {
	return provider.Sandbox{
		ID: b.id, State: b.st.State, Labels: cloneMap(b.labels), CreatedAt: b.st.CreatedAt,
		ProviderState: b.st.Detail, ErrorReason: b.st.ErrorReason,
	}
}

// box finds a sandbox, loading it from disk if another process made it.
func (p *Provider) box(id string) (*box, error) {
	if !idRE.MatchString(id) {
		return nil, fmt.Errorf("sandbox %q: %w", id, provider.ErrNotFound)
	}
	p.mu.Lock()
	b, ok := p.boxes[id]
	p.mu.Unlock()
	if !ok {
		var err error
		if b, err = p.load(id); err != nil {
			return nil, err
		}
		if b == nil {
			return nil, fmt.Errorf("sandbox %s: %w", id, provider.ErrNotFound)
		}
	}
	if p.vanished(b) {
		return nil, fmt.Errorf("sandbox %s: %w", id, provider.ErrNotFound)
	}
	return b, nil
}

// Get returns a sandbox. One being deleted is destroyed; a deleted one is
// ErrNotFound.
func (p *Provider) Get(ctx context.Context, id string) (provider.Sandbox, error) {
	if err := ctx.Err(); err != nil {
		return provider.Sandbox{}, err
	}
	b, err := p.box(id)
	if err != nil {
		return provider.Sandbox{}, err
	}
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.gone {
		return provider.Sandbox{}, fmt.Errorf("sandbox %s: %w", id, provider.ErrNotFound)
	}
	return b.snapshot(), nil
}

// List returns the sandboxes whose labels include every selector label.
func (p *Provider) List(ctx context.Context, labels map[string]string) ([]provider.Sandbox, error) {
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	if err := p.scan(); err != nil {
		return nil, err
	}
	p.mu.Lock()
	boxes := slices.Collect(maps.Values(p.boxes))
	p.mu.Unlock()
	var out []provider.Sandbox
	for _, b := range boxes {
		b.mu.Lock()
		sb, ok := b.snapshot(), !b.gone && b.st.State != provider.StateDestroyed
		b.mu.Unlock()
		if ok && provider.MatchLabels(sb.Labels, labels) {
			out = append(out, sb)
		}
	}
	slices.SortFunc(out, func(a, b provider.Sandbox) int {
		if c := a.CreatedAt.Compare(b.CreatedAt); c != 0 {
			return c
		}
		return strings.Compare(a.ID, b.ID)
	})
	return out, nil
}

// scan loads the directories under Root that the table lacks and drops
// the entries whose directory is gone.
func (p *Provider) scan() error {
	entries, err := os.ReadDir(p.cfg.Root)
	if err != nil {
		return fmt.Errorf("local provider: %w", err)
	}
	present := map[string]bool{}
	for _, e := range entries {
		if !e.IsDir() || !idRE.MatchString(e.Name()) {
			continue
		}
		present[e.Name()] = true
		p.mu.Lock()
		_, ok := p.boxes[e.Name()]
		p.mu.Unlock()
		if !ok {
			if _, err := p.load(e.Name()); err != nil {
				p.log.Warn("unreadable sandbox directory", "dir", filepath.Join(p.cfg.Root, e.Name()), "err", err)
			}
		}
	}
	p.mu.Lock()
	var missing []*box
	for id, b := range p.boxes {
		if !present[id] {
			missing = append(missing, b)
		}
	}
	p.mu.Unlock()
	for _, b := range missing {
		p.vanished(b)
	}
	return nil
}

// vanished drops b from the table if its directory is gone (another
// provider on the same Root deleted it) and reports whether it did.
func (p *Provider) vanished(b *box) bool {
	p.mu.Lock()
	creating := b.creating
	p.mu.Unlock()
	if creating {
		return false
	}
	if _, err := os.Stat(b.dir); !errors.Is(err, fs.ErrNotExist) {
		return false
	}
	p.mu.Lock()
	if p.boxes[b.id] == b {
		delete(p.boxes, b.id)
	}
	p.mu.Unlock()
	return true
}

// load reads a sandbox directory into the table (nil if there is none).
// A live agent recorded in it is adopted; a dead one leaves the sandbox in
// error (or stopped, if it was stopping).
func (p *Provider) load(id string) (*box, error) {
	dir := p.Dir(id)
	var st stateFile
	if err := readJSON(filepath.Join(dir, "state.json"), &st); err != nil {
		if errors.Is(err, fs.ErrNotExist) {
			if _, serr := os.Stat(dir); errors.Is(serr, fs.ErrNotExist) {
				return nil, nil
			}
			// A directory a crashed Create left half made.
			st = stateFile{State: provider.StateError, Detail: "incomplete", ErrorReason: "sandbox directory without state.json", Socket: socketPath(dir, id)}
			if fi, err := os.Stat(dir); err == nil {
				st.CreatedAt = fi.ModTime().UTC()
			}
		} else {
			return nil, err
		}
	}
	b := &box{id: id, dir: dir, st: st, labels: map[string]string{}}
	if err := readJSON(filepath.Join(dir, "labels.json"), &b.labels); err != nil && !errors.Is(err, fs.ErrNotExist) {
		return nil, err
	}
	if b.labels == nil {
		b.labels = map[string]string{}
	}
	if st.State == provider.StateDestroyed {
		// A Delete that did not finish: finish it.
		if err := p.kill(b, &proc{pid: st.PID, ticks: st.StartTicks}); err != nil {
			p.log.Warn("kill agent of a deleted sandbox", "id", id, "err", err)
		}
		if err := removeAll(dir); err != nil {
			return nil, err
		}
		return nil, nil
	}
	p.mu.Lock()
	if other, ok := p.boxes[id]; ok { // loaded meanwhile
		p.mu.Unlock()
		return other, nil
	}
	p.boxes[id] = b
	p.mu.Unlock()

	b.mu.Lock()
	defer b.mu.Unlock()
	if st.PID == 0 {
		return b, nil
	}
	if !alive(st.PID, st.StartTicks) {
		b.st.PID, b.st.StartTicks = 0, 0
		switch st.State {
		case provider.StateStopping:
			p.set(b, provider.StateStopped, "agent stopped (found exited)", "")
		case provider.StateStarted, provider.StateStarting:
			p.set(b, provider.StateError, "agent exited", "agent not running (found exited by a later provider)")
		}
		return b, nil
	}
	pr := &proc{pid: st.PID, ticks: st.StartTicks, done: make(chan struct{})}
	watching := p.goTracked(func() {
		t := time.NewTicker(p.cfg.PollInterval)
		defer t.Stop()
		for alive(pr.pid, pr.ticks) {
			select {
			case <-p.ctx.Done():
				return
			case <-t.C:
			}
		}
		p.exited(b, pr, "exited")
		close(pr.done)
	})
	if !watching { // closed
		return b, nil
	}
	b.proc = pr
	p.log.Info("adopted a running sandbox agent", "id", id, "pid", st.PID)
	if st.State == provider.StateStopping {
		p.enforceStop(b, pr)
	}
	return b, nil
}

// Start runs the agent of a stopped, archived or failed sandbox again, on
// the same workspace.
func (p *Provider) Start(ctx context.Context, id string) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	b, err := p.box(id)
	if err != nil {
		return err
	}
	b.mu.Lock()
	defer b.mu.Unlock()
	switch {
	case b.gone || b.st.State == provider.StateDestroyed:
		return fmt.Errorf("start sandbox %s: %w", id, provider.ErrNotFound)
	case b.st.State == provider.StateStarted || b.st.State == provider.StateStarting:
		return nil
	case b.st.State == provider.StateCreating || b.st.State == provider.StateStopping || b.proc != nil:
		return fmt.Errorf("start sandbox %s: it is %s: %w", id, b.st.State, provider.ErrConflict)
	}
	var sf specFile
	if err := readJSON(filepath.Join(b.dir, "spec.json"), &sf); err != nil {
		return fmt.Errorf("start sandbox %s: %w", id, err)
	}
	p.set(b, provider.StateStarting, "starting agent", "")
	if err := p.spawn(b, sf.Env); err != nil {
		p.set(b, provider.StateError, "agent did not start", err.Error())
		return fmt.Errorf("start sandbox %s: %w", id, err)
	}
	p.log.Info("sandbox started", "id", id, "pid", b.proc.pid)
	return nil
}

// Stop sends SIGTERM to the agent and waits for it to exit (bounded by
// StopTimeout, after which it is killed, and by ctx, after which the stop
// goes on without the caller).
func (p *Provider) Stop(ctx context.Context, id string) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	b, err := p.box(id)
	if err != nil {
		return err
	}
	b.mu.Lock()
	var pr *proc
	switch {
	case b.gone || b.st.State == provider.StateDestroyed:
		b.mu.Unlock()
		return fmt.Errorf("stop sandbox %s: %w", id, provider.ErrNotFound)
	case b.st.State == provider.StateStopped || b.st.State == provider.StateArchived:
		b.mu.Unlock()
		return nil
	case b.st.State == provider.StateStopping:
		pr = b.proc
	case b.st.State == provider.StateError && b.proc == nil:
		p.set(b, provider.StateStopped, "agent stopped (after an error)", "")
		b.mu.Unlock()
		return nil
	case b.st.State == provider.StateStarted || b.st.State == provider.StateError:
		pr = b.proc
		if pr == nil { // cannot happen: started means an agent runs
			p.set(b, provider.StateStopped, "agent stopped (not running)", "")
			b.mu.Unlock()
			return nil
		}
		p.set(b, provider.StateStopping, fmt.Sprintf("agent stopping (SIGTERM sent to pid %d)", pr.pid), "")
		if err := p.signal(pr, syscall.SIGTERM); err != nil {
			p.log.Warn("SIGTERM agent", "id", id, "err", err)
		}
		p.enforceStop(b, pr)
	default: // creating, starting: only ever seen inside Create/Start
		b.mu.Unlock()
		return fmt.Errorf("stop sandbox %s: it is %s: %w", id, b.st.State, provider.ErrConflict)
	}
	b.mu.Unlock()
	if pr == nil {
		return nil
	}
	select {
	case <-pr.done:
	case <-ctx.Done():
		return fmt.Errorf("stop sandbox %s: the agent is still flushing (it is stopped in the background): %w", id, ctx.Err())
	case <-p.ctx.Done():
		return fmt.Errorf("stop sandbox %s: provider closed: %w", id, provider.ErrUnavailable)
	}
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.gone || b.st.State == provider.StateDestroyed {
		return fmt.Errorf("stop sandbox %s: deleted meanwhile: %w", id, provider.ErrNotFound)
	}
	return nil
}

// enforceStop SIGKILLs the agent if it has not exited StopTimeout after
// SIGTERM, whether or not anyone still waits for it.
func (p *Provider) enforceStop(b *box, pr *proc) {
	p.goTracked(func() {
		t := time.NewTimer(p.cfg.StopTimeout)
		defer t.Stop()
		select {
		case <-pr.done:
			return
		case <-p.ctx.Done():
			return
		case <-t.C:
		}
		p.log.Warn("agent did not exit after SIGTERM; killing it", "id", b.id, "pid", pr.pid, "after", p.cfg.StopTimeout)
		b.mu.Lock()
		if b.proc == pr && b.st.State == provider.StateStopping {
			b.st.Detail = fmt.Sprintf("agent killed: no exit %s after SIGTERM", p.cfg.StopTimeout)
			p.persist(b)
		}
		b.mu.Unlock()
		_ = p.signal(pr, syscall.SIGKILL)
		select {
		case <-pr.done:
		case <-p.ctx.Done():
		case <-time.After(p.cfg.KillTimeout):
			p.log.Error("agent survived SIGKILL", "id", b.id, "pid", pr.pid)
		}
		b.mu.Lock()
		if b.proc == pr && b.st.State == provider.StateStopping {
			p.set(b, provider.StateStopped, b.st.Detail, "")
		}
		b.mu.Unlock()
	})
}

// goTracked runs fn in a goroutine Close waits for; false (and fn not run)
// once the provider is closed.
func (p *Provider) goTracked(fn func()) bool {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.closed {
		return false
	}
	p.wg.Add(1)
	go func() {
		defer p.wg.Done()
		fn()
	}()
	return true
}

// Archive records a stopped sandbox as archived (the local provider has no
// colder storage: its directory stays as it is). A sandbox that is not
// stopped is ErrConflict, as on Daytona.
func (p *Provider) Archive(ctx context.Context, id string) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	b, err := p.box(id)
	if err != nil {
		return err
	}
	b.mu.Lock()
	defer b.mu.Unlock()
	switch {
	case b.gone || b.st.State == provider.StateDestroyed:
		return fmt.Errorf("archive sandbox %s: %w", id, provider.ErrNotFound)
	case b.st.State == provider.StateArchived:
		return nil
	case b.st.State != provider.StateStopped || b.proc != nil:
		return fmt.Errorf("archive sandbox %s: it is %s, not stopped: %w", id, b.st.State, provider.ErrConflict)
	}
	p.set(b, provider.StateArchived, "archived (agent stopped, workspace kept)", "")
	return nil
}

// Delete kills the agent, if it runs, and removes the sandbox's directory.
// Deleting a missing sandbox is not an error.
func (p *Provider) Delete(ctx context.Context, id string) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	b, err := p.box(id)
	if errors.Is(err, provider.ErrNotFound) {
		return nil
	}
	if err != nil {
		return err
	}
	b.mu.Lock()
	if b.gone {
		b.mu.Unlock()
		return nil
	}
	pr := b.proc
	// A tombstone first: a crash before the directory is gone leaves a
	// sandbox the next provider finishes deleting.
	p.set(b, provider.StateDestroyed, "deleting", "")
	b.mu.Unlock()
	if pr != nil {
		if err := p.kill(b, pr); err != nil {
			return fmt.Errorf("delete sandbox %s: %w", id, err)
		}
	}
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.gone {
		return nil
	}
	if err := removeAll(b.dir); err != nil {
		return fmt.Errorf("delete sandbox %s: %w", id, err)
	}
	if b.st.Socket != "" && !strings.HasPrefix(b.st.Socket, b.dir+string(filepath.Separator)) {
		_ = os.Remove(b.st.Socket)
	}
	b.gone = true
	p.mu.Lock()
	if p.boxes[id] == b {
		delete(p.boxes, id)
	}
	p.mu.Unlock()
	p.log.Info("sandbox deleted", "id", id)
	return nil
}

// kill SIGKILLs an agent's process group and waits (bounded) for it to go.
func (p *Provider) kill(b *box, pr *proc) error {
	if pr.pid == 0 {
		return nil
	}
	if err := p.signal(pr, syscall.SIGKILL); err != nil {
		return err
	}
	deadline := time.Now().Add(p.cfg.KillTimeout)
	if pr.done != nil {
		select {
		case <-pr.done:
			return nil
		case <-time.After(p.cfg.KillTimeout):
			return fmt.Errorf("agent (pid %d) survived SIGKILL for %s", pr.pid, p.cfg.KillTimeout)
		}
	}
	for alive(pr.pid, pr.ticks) {
		if time.Now().After(deadline) {
			return fmt.Errorf("agent (pid %d) survived SIGKILL for %s", pr.pid, p.cfg.KillTimeout)
		}
		time.Sleep(10 * time.Millisecond)
	}
	return nil
}

// signal sends sig to the agent's process group (the agent leads it), once
// it is sure the pid still is that agent.
func (p *Provider) signal(pr *proc, sig syscall.Signal) error {
	if pr.done != nil {
		select {
		case <-pr.done: // exited (and reaped): its pid may be someone else's now
			return nil
		default:
		}
	}
	if !pr.own && !alive(pr.pid, pr.ticks) {
		return nil
	}
	if err := syscall.Kill(-pr.pid, sig); err != nil && !errors.Is(err, syscall.ESRCH) {
		return fmt.Errorf("signal agent (pid %d): %w", pr.pid, err)
	}
	return nil
}

// alive reports whether pid runs and is the process that started at ticks
// (0: unknown). A zombie is not alive.
func alive(pid int, ticks uint64) bool {
	if pid <= 0 {
		return false
	}
	state, t, err := procStat(pid)
	if err != nil {
		if errors.Is(err, fs.ErrNotExist) {
			if _, serr := os.Stat("/proc/self/stat"); serr == nil {
				return false // /proc works: the process is gone
			}
			return syscall.Kill(pid, 0) == nil // no /proc: best effort
		}
		return false
	}
	if state == "Z" || state == "X" {
		return false
	}
	return ticks == 0 || t == 0 || t == ticks
}

func startTicks(pid int) uint64 {
	_, t, _ := procStat(pid)
	return t
}

// procStat reads a process's state and start time from /proc/PID/stat.
func procStat(pid int) (string, uint64, error) {
	b, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/stat")
	if err != nil {
		return "", 0, err
	}
	// "pid (comm) state ppid … starttime(22nd) …"; comm may hold spaces
	// and parentheses, so fields are counted after the last ')'.
	i := bytes.LastIndexByte(b, ')')
	if i < 0 {
		return "", 0, errors.New("malformed /proc stat")
	}
	f := strings.Fields(string(b[i+1:]))
	if len(f) < 20 {
		return "", 0, errors.New("malformed /proc stat")
	}
	t, err := strconv.ParseUint(f[19], 10, 64)
	if err != nil {
		return "", 0, err
	}
	return f[0], t, nil
}

func envList(env map[string]string) []string {
	out := make([]string, 0, len(env))
	for _, k := range slices.Sorted(maps.Keys(env)) {
		out = append(out, k+"="+env[k])
	}
	return out
}

func cloneMap(m map[string]string) map[string]string {
	out := make(map[string]string, len(m))
	maps.Copy(out, m)
	return out
}

// writeJSON replaces a file atomically (fsynced).
func writeJSON(path string, v any, mode os.FileMode) error {
	b, err := json.MarshalIndent(v, "", "  ")
	if err != nil {
		return err
	}
	return atomicfile.WriteFile(path, append(b, '\n'), mode)
}

func readJSON(path string, v any) error {
	b, err := os.ReadFile(path)
	if err != nil {
		return err
	}
	return json.Unmarshal(b, v)
}

// removeAll removes dir even where restored files or directories are
// read-only.
func removeAll(dir string) error {
	if err := os.RemoveAll(dir); err == nil {
		return nil
	}
	_ = filepath.WalkDir(dir, func(path string, d fs.DirEntry, err error) error {
		if err == nil && d.IsDir() {
			_ = os.Chmod(path, 0o700)
		}
		return nil
	})
	return os.RemoveAll(dir)
}
