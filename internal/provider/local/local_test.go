package local_test

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/sandkeep/sandkeep/internal/provider"
	"github.com/sandkeep/sandkeep/internal/provider/faulty"
	"github.com/sandkeep/sandkeep/internal/provider/guard"
	"github.com/sandkeep/sandkeep/internal/provider/local"
	"github.com/sandkeep/sandkeep/internal/provider/providertest"
	"github.com/sandkeep/sandkeep/internal/retry"
)

var (
	binDir  string
	stubErr error
	stubBin string
	stubMu  sync.Once
)

func TestMain(m *testing.M) {
	var err error
	if binDir, err = os.MkdirTemp("", "sandkeep-local-provider-bin-"); err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	code := m.Run()
	os.RemoveAll(binDir)
	os.Exit(code)
}

// stub builds testdata/stubagent once.
func stub(t *testing.T) string {
	t.Helper()
	if testing.Short() {
		t.Skip("builds a stub agent; skipped with -short")
	}
	stubMu.Do(func() {
		stubBin = filepath.Join(binDir, "stubagent")
		cmd := exec.Command("go", "build", "-o", stubBin, "./testdata/stubagent")
		if out, err := cmd.CombinedOutput(); err != nil {
			stubErr = fmt.Errorf("build stub agent: %v\n%s", err, out)
		}
	})
	if stubErr != nil {
		t.Fatal(stubErr)
	}
	return stubBin
}

// newProvider makes a provider with the stub agent on a fresh root; when
// the test ends every sandbox left is deleted (killing its agent).
func newProvider(t *testing.T, mod ...func(*local.Config)) *local.Provider {
	t.Helper()
	cfg := local.Config{Root: filepath.Join(t.TempDir(), "sandboxes"), AgentBinary: stub(t), StopTimeout: 20 * time.Second}
	for _, m := range mod {
		m(&cfg)
	}
	p, err := local.New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { deleteAll(t, p) })
	return p
}

func deleteAll(t *testing.T, p *local.Provider) {
	// (t.Context() is already cancelled when cleanups run.)
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	list, err := p.List(ctx, nil)
	if err != nil {
		t.Errorf("cleanup: %v", err)
	}
	for _, sb := range list {
		if err := p.Delete(ctx, sb.ID); err != nil {
			t.Errorf("cleanup: delete %s: %v", sb.ID, err)
		}
	}
	p.Close()
}

var stubEnv = map[string]string{provider.EnvCoordinator: "127.0.0.1:1", provider.EnvToken: "skt_stub"}

func specWith(labels map[string]string, env ...string) provider.CreateSpec {
	e := map[string]string{}
	for k, v := range stubEnv {
		e[k] = v
	}
	for i := 0; i+1 < len(env); i += 2 {
		e[env[i]] = env[i+1]
	}
	return provider.CreateSpec{Labels: labels, Env: e}
}

func TestConformance(t *testing.T) {
	stub(t)
	providertest.RunWith(t, func(t *testing.T) provider.Provider { return newProvider(t) }, providertest.Options{
		Poll: 5 * time.Millisecond, Timeout: 30 * time.Second,
		Spec: func(_ *testing.T, labels map[string]string) provider.CreateSpec { return specWith(labels) },
	})
}

// TestConformanceUnderFaults: behind the coordinator's guard, the local
// provider keeps its guarantees while every call may fail like a 503 or a
// 429 and transitions are slow (package faulty).
func TestConformanceUnderFaults(t *testing.T) {
	stub(t)
	var mu sync.Mutex
	var fls []*faulty.Provider
	t.Cleanup(func() {
		n := 0
		for _, fl := range fls {
			c := fl.Counts()
			n += c["unavailable"] + c["throttle"]
		}
		if n == 0 {
			t.Error("no fault was injected")
		}
	})
	providertest.RunWith(t, func(t *testing.T) provider.Provider {
		fl := faulty.New(newProvider(t), faulty.Faults{Seed: 9, Unavailable: 0.1, Throttle: 0.1, Slow: 10 * time.Millisecond})
		mu.Lock()
		fls = append(fls, fl)
		mu.Unlock()
		return guard.New(fl, guard.Config{CallTimeout: 10 * time.Second, Attempts: 8, Threshold: 1000,
			Backoff: retry.Backoff{Min: time.Millisecond, Max: 5 * time.Millisecond}, Log: slog.New(slog.DiscardHandler)})
	}, providertest.Options{
		Poll: 5 * time.Millisecond, Timeout: 30 * time.Second,
		Spec: func(_ *testing.T, labels map[string]string) provider.CreateSpec { return specWith(labels) },
	})
}

// waitFor polls cond every 5ms for up to 20s.
func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(20 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

type startRecord struct {
	PID       int               `json:"pid"`
	PGID      int               `json:"pgid"`
	Args      []string          `json:"args"`
	Env       map[string]string `json:"env"`
	Socket    string            `json:"socket"`
	Workspace string            `json:"workspace"`
	Cache     string            `json:"cache"`
}

// starts reads the stub's start records of a sandbox.
func starts(t *testing.T, p *local.Provider, id string) []startRecord {
	t.Helper()
	f, err := os.Open(filepath.Join(p.Dir(id), "cache", "starts.jsonl"))
	if errors.Is(err, os.ErrNotExist) {
		return nil
	}
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	var out []startRecord
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		var r startRecord
		if err := json.Unmarshal(sc.Bytes(), &r); err != nil {
			continue // a line being written
		}
		out = append(out, r)
	}
	return out
}

func readLines(path string) []string {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil
	}
	return strings.Fields(string(b))
}

func pidAlive(pid int) bool {
	b, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/stat")
	if err != nil {
		return false
	}
	i := strings.LastIndexByte(string(b), ')')
	f := strings.Fields(string(b[i+1:]))
	return len(f) > 0 && f[0] != "Z"
}

func wait(t *testing.T, p provider.Provider, id string, want provider.State) provider.Sandbox {
	t.Helper()
	sb, err := provider.WaitForState(t.Context(), p, id, want, 5*time.Millisecond)
	if err != nil {
		t.Fatalf("WaitForState(%s): %v", want, err)
	}
	return sb
}

func TestAgentInvocationAndRestart(t *testing.T) {
	t.Setenv("SANDKEEP_ADMIN_TOKEN", "must-not-leak")
	p := newProvider(t, func(c *local.Config) { c.AgentArgs = []string{"--force-poll", "--log-level", "debug"} })
	ctx := t.Context()
	labels := map[string]string{provider.LabelProject: "prj_1"}
	sb, err := p.Create(ctx, specWith(labels, "STUB_X", "1"))
	if err != nil {
		t.Fatal(err)
	}
	if sb.State != provider.StateStarted || !strings.HasPrefix(sb.ID, "lsb-") || !strings.Contains(sb.ProviderState, "running") {
		t.Fatalf("created %+v", sb)
	}
	id, dir := sb.ID, p.Dir(sb.ID)
	waitFor(t, "the agent to start", func() bool { return len(starts(t, p, id)) == 1 })
	r := starts(t, p, id)[0]
	sock, _ := p.Socket(id)
	wantArgs := []string{"run", "--workspace", filepath.Join(dir, "workspace"), "--socket", sock, "--cache-dir", filepath.Join(dir, "cache"), "--force-poll", "--log-level", "debug"}
	if !slices.Equal(r.Args, wantArgs) {
		t.Fatalf("agent args %q, want %q", r.Args, wantArgs)
	}
	if sock != filepath.Join(dir, "agent.sock") {
		t.Fatalf("socket %s", sock)
	}
	if r.Env[provider.EnvToken] != "skt_stub" || r.Env[provider.EnvCoordinator] != "127.0.0.1:1" || r.Env[provider.EnvSandboxID] != id || r.Env["STUB_X"] != "1" {
		t.Fatalf("agent env %v", r.Env)
	}
	if _, ok := r.Env["SANDKEEP_ADMIN_TOKEN"]; ok {
		t.Fatal("the provider's own environment leaked into the agent")
	}
	if r.PGID != r.PID {
		t.Fatalf("agent pgid %d, pid %d: not its own process group", r.PGID, r.PID)
	}
	// The files a restarted coordinator reads.
	var gotLabels map[string]string
	if b, err := os.ReadFile(filepath.Join(dir, "labels.json")); err != nil || json.Unmarshal(b, &gotLabels) != nil || gotLabels[provider.LabelProject] != "prj_1" {
		t.Fatalf("labels.json: %s, %v", b, err)
	}
	if fi, err := os.Stat(filepath.Join(dir, "spec.json")); err != nil || fi.Mode().Perm() != 0o600 {
		t.Fatalf("spec.json (holds the token) mode: %v, %v", fi.Mode(), err)
	}
	var st struct {
		State string `json:"state"`
		PID   int    `json:"pid"`
	}
	if b, err := os.ReadFile(filepath.Join(dir, "state.json")); err != nil || json.Unmarshal(b, &st) != nil || st.State != "started" || st.PID != r.PID {
		t.Fatalf("state.json: %s, %v", b, err)
	}

	// Stop: SIGTERM, a clean exit; the workspace stays.
	if err := os.WriteFile(filepath.Join(p.Workspace(id), "work.txt"), []byte("kept"), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := p.Stop(ctx, id); err != nil {
		t.Fatal(err)
	}
	got, err := p.Get(ctx, id)
	if err != nil || got.State != provider.StateStopped || !strings.Contains(got.ProviderState, "exit status 0") {
		t.Fatalf("after Stop: %+v, %v", got, err)
	}
	if stops := readLines(filepath.Join(dir, "cache", "stops")); !slices.Equal(stops, []string{strconv.Itoa(r.PID)}) {
		t.Fatalf("stops %v: the agent did not exit on SIGTERM", stops)
	}
	if pidAlive(r.PID) {
		t.Fatal("agent still alive after Stop")
	}
	// Start: a new agent on the same workspace.
	if err := p.Start(ctx, id); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "the agent to start again", func() bool { return len(starts(t, p, id)) == 2 })
	r2 := starts(t, p, id)[1]
	if r2.PID == r.PID || r2.Workspace != r.Workspace || !slices.Equal(r2.Args, r.Args) || r2.Env[provider.EnvToken] != "skt_stub" {
		t.Fatalf("restart record %+v", r2)
	}
	if b, err := os.ReadFile(filepath.Join(p.Workspace(id), "work.txt")); err != nil || string(b) != "kept" {
		t.Fatalf("workspace after a restart: %q, %v", b, err)
	}
	// Delete: the agent killed, the directory gone.
	if err := p.Delete(ctx, id); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(dir); !errors.Is(err, os.ErrNotExist) {
		t.Fatalf("sandbox directory after Delete: %v", err)
	}
	waitFor(t, "the agent to die", func() bool { return !pidAlive(r2.PID) })
	if _, err := p.Get(ctx, id); !errors.Is(err, provider.ErrNotFound) {
		t.Fatalf("Get after Delete: %v", err)
	}
}

func TestStopWaitsForTheAgent(t *testing.T) {
	p := newProvider(t)
	sb, err := p.Create(t.Context(), specWith(nil, "STUB_TERM_DELAY", "300ms"))
	if err != nil {
		t.Fatal(err)
	}
	waitFor(t, "the agent to start", func() bool { return len(starts(t, p, sb.ID)) == 1 })
	start := time.Now()
	if err := p.Stop(t.Context(), sb.ID); err != nil {
		t.Fatal(err)
	}
	if d := time.Since(start); d < 300*time.Millisecond {
		t.Fatalf("Stop returned after %s, before the agent finished", d)
	}
	if len(readLines(filepath.Join(p.Dir(sb.ID), "cache", "stops"))) != 1 {
		t.Fatal("Stop returned before the agent exited cleanly")
	}
	if got, _ := p.Get(t.Context(), sb.ID); got.State != provider.StateStopped {
		t.Fatalf("after Stop: %s", got.State)
	}
}

func TestStopKillsAHungAgent(t *testing.T) {
	p := newProvider(t, func(c *local.Config) { c.StopTimeout = 200 * time.Millisecond })
	sb, err := p.Create(t.Context(), specWith(nil, "STUB_IGNORE_TERM", "1"))
	if err != nil {
		t.Fatal(err)
	}
	waitFor(t, "the agent to start", func() bool { return len(starts(t, p, sb.ID)) == 1 })
	pid := starts(t, p, sb.ID)[0].PID
	start := time.Now()
	if err := p.Stop(t.Context(), sb.ID); err != nil {
		t.Fatal(err)
	}
	if d := time.Since(start); d < 200*time.Millisecond || d > 15*time.Second {
		t.Fatalf("Stop took %s", d)
	}
	got, _ := p.Get(t.Context(), sb.ID)
	if got.State != provider.StateStopped || !strings.Contains(got.ProviderState, "killed") {
		t.Fatalf("after Stop of a hung agent: %+v", got)
	}
	if pidAlive(pid) {
		t.Fatal("hung agent still alive")
	}
	if _, err := os.Stat(p.Workspace(sb.ID)); err != nil {
		t.Fatalf("workspace after a forced stop: %v", err)
	}
}

func TestCrashedAgentIsError(t *testing.T) {
	p := newProvider(t)
	ctx := t.Context()
	sb, err := p.Create(ctx, specWith(nil, "STUB_EXIT", "3"))
	if err != nil {
		t.Fatal(err)
	}
	_, err = provider.WaitForState(ctx, p, sb.ID, provider.StateStarted, 5*time.Millisecond)
	if err == nil {
		// It may be seen started before it exits: wait for the error.
		_, err = provider.WaitForState(ctx, p, sb.ID, provider.StateStopped, 5*time.Millisecond)
	}
	if !errors.Is(err, provider.ErrFailed) || !strings.Contains(err.Error(), "exit status 3") {
		t.Fatalf("crashed agent: %v", err)
	}
	// error → starting: Start runs it again (it crashes again).
	if err := p.Start(ctx, sb.ID); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "the second start", func() bool { return len(starts(t, p, sb.ID)) == 2 })
	wait(t, p, sb.ID, provider.StateError)
	// error → stopped.
	if err := p.Stop(ctx, sb.ID); err != nil {
		t.Fatal(err)
	}
	wait(t, p, sb.ID, provider.StateStopped)
}

func TestDeleteKillsTheProcessGroup(t *testing.T) {
	if _, err := exec.LookPath("sleep"); err != nil {
		t.Skip("no sleep(1)")
	}
	p := newProvider(t)
	sb, err := p.Create(t.Context(), specWith(nil, "STUB_CHILD", "1"))
	if err != nil {
		t.Fatal(err)
	}
	childFile := filepath.Join(p.Dir(sb.ID), "cache", "child")
	waitFor(t, "the agent's child", func() bool { return len(readLines(childFile)) == 1 })
	child, _ := strconv.Atoi(readLines(childFile)[0])
	agent := starts(t, p, sb.ID)[0].PID
	if !pidAlive(child) || !pidAlive(agent) {
		t.Fatal("agent or child not running")
	}
	// Read-only things in the workspace do not stop Delete.
	ro := filepath.Join(p.Workspace(sb.ID), "ro")
	if err := os.MkdirAll(ro, 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(ro, "f"), []byte("x"), 0o444); err != nil {
		t.Fatal(err)
	}
	if err := os.Chmod(ro, 0o555); err != nil {
		t.Fatal(err)
	}
	if err := p.Delete(t.Context(), sb.ID); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(p.Dir(sb.ID)); !errors.Is(err, os.ErrNotExist) {
		t.Fatalf("directory after Delete: %v", err)
	}
	// The child is not ours to reap: wait for init to do it.
	waitFor(t, "the agent's child to die", func() bool { return !pidAlive(child) })
	waitFor(t, "the agent to die", func() bool { return !pidAlive(agent) })
}

func TestRestartedProviderSeesSandboxes(t *testing.T) {
	root := filepath.Join(t.TempDir(), "root")
	cfg := local.Config{Root: root, AgentBinary: stub(t), StopTimeout: 20 * time.Second, PollInterval: 10 * time.Millisecond}
	p1, err := local.New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	ctx := t.Context()
	mk := func(name string) string {
		sb, err := p1.Create(ctx, specWith(map[string]string{provider.LabelProject: "prj_r", "name": name}))
		if err != nil {
			t.Fatal(err)
		}
		waitFor(t, "the agent to start", func() bool { return len(starts(t, p1, sb.ID)) == 1 })
		return sb.ID
	}
	running, stopped, archived, died := mk("running"), mk("stopped"), mk("archived"), mk("died")
	for _, id := range []string{stopped, archived} {
		if err := p1.Stop(ctx, id); err != nil {
			t.Fatal(err)
		}
	}
	if err := p1.Archive(ctx, archived); err != nil {
		t.Fatal(err)
	}
	// The coordinator goes away; its agents keep running…
	p1.Close()
	runningPID, diedPID := starts(t, p1, running)[0].PID, starts(t, p1, died)[0].PID
	if !pidAlive(runningPID) {
		t.Fatal("Close stopped an agent")
	}
	// …but one of them dies meanwhile.
	if err := syscall.Kill(diedPID, syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "the agent to die", func() bool { return !pidAlive(diedPID) })

	p2, err := local.New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { deleteAll(t, p2) })
	list, err := p2.List(ctx, map[string]string{provider.LabelProject: "prj_r"})
	if err != nil {
		t.Fatal(err)
	}
	got := map[string]provider.Sandbox{}
	for _, sb := range list {
		got[sb.ID] = sb
	}
	for id, want := range map[string]provider.State{running: provider.StateStarted, stopped: provider.StateStopped, archived: provider.StateArchived, died: provider.StateError} {
		if got[id].State != want {
			t.Errorf("restarted provider sees %s as %s (%s), want %s", id, got[id].State, got[id].ProviderState, want)
		}
	}
	if len(list) != 4 || got[running].Labels["name"] != "running" || got[running].CreatedAt.IsZero() {
		t.Fatalf("List = %+v", list)
	}
	// The adopted agent is stopped the usual way.
	if err := p2.Stop(ctx, running); err != nil {
		t.Fatal(err)
	}
	wait(t, p2, running, provider.StateStopped)
	if stops := readLines(filepath.Join(p2.Dir(running), "cache", "stops")); !slices.Equal(stops, []string{strconv.Itoa(runningPID)}) {
		t.Fatalf("adopted agent did not get SIGTERM: stops %v", stops)
	}
	// The others start again.
	for _, id := range []string{stopped, archived, died} {
		if err := p2.Start(ctx, id); err != nil {
			t.Fatalf("Start(%s): %v", id, err)
		}
		wait(t, p2, id, provider.StateStarted)
	}

	// Another provider on the same root sees what p2 creates and deletes.
	p3, err := local.New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	defer p3.Close()
	sb, err := p2.Create(ctx, specWith(map[string]string{"late": "1"}))
	if err != nil {
		t.Fatal(err)
	}
	if g, err := p3.Get(ctx, sb.ID); err != nil || g.State != provider.StateStarted || g.Labels["late"] != "1" {
		t.Fatalf("p3.Get of p2's new sandbox: %+v, %v", g, err)
	}
	if l, err := p3.List(ctx, map[string]string{"late": "1"}); err != nil || len(l) != 1 {
		t.Fatalf("p3.List: %v, %v", l, err)
	}
	if err := p2.Delete(ctx, sb.ID); err != nil {
		t.Fatal(err)
	}
	if _, err := p3.Get(ctx, sb.ID); !errors.Is(err, provider.ErrNotFound) {
		t.Fatalf("p3.Get after p2 deleted it: %v", err)
	}
	if l, _ := p3.List(ctx, map[string]string{"late": "1"}); len(l) != 0 {
		t.Fatalf("p3.List after p2 deleted it: %v", l)
	}
}

func TestLeftovers(t *testing.T) {
	root := filepath.Join(t.TempDir(), "root")
	// A Delete that crashed half way, and a Create that did.
	tomb := filepath.Join(root, "lsb-00000000000a")
	half := filepath.Join(root, "lsb-00000000000b")
	for _, d := range []string{filepath.Join(tomb, "workspace"), filepath.Join(half, "workspace")} {
		if err := os.MkdirAll(d, 0o755); err != nil {
			t.Fatal(err)
		}
	}
	if err := os.WriteFile(filepath.Join(tomb, "state.json"), []byte(`{"state":"destroyed","created_at":"2025-01-01T00:00:00Z"}`), 0o644); err != nil {
		t.Fatal(err)
	}
	// Not sandboxes: left alone.
	if err := os.MkdirAll(filepath.Join(root, "not-a-sandbox"), 0o755); err != nil {
		t.Fatal(err)
	}
	p := newProvider(t, func(c *local.Config) { c.Root = root })
	if _, err := os.Stat(tomb); !errors.Is(err, os.ErrNotExist) {
		t.Fatalf("a deleted sandbox's directory survived: %v", err)
	}
	list, err := p.List(t.Context(), nil)
	if err != nil || len(list) != 1 || list[0].ID != "lsb-00000000000b" || list[0].State != provider.StateError {
		t.Fatalf("List = %+v, %v", list, err)
	}
	if err := p.Delete(t.Context(), "lsb-00000000000b"); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(filepath.Join(root, "not-a-sandbox")); err != nil {
		t.Fatal("an unrelated directory was touched")
	}
}

func TestBadIDsAndBinary(t *testing.T) {
	p := newProvider(t)
	ctx := t.Context()
	for _, id := range []string{"", "..", "../x", "lsb-../../etc", "LSB-000000000000", "lsb-00000000000z"} {
		if _, err := p.Get(ctx, id); !errors.Is(err, provider.ErrNotFound) {
			t.Errorf("Get(%q): %v", id, err)
		}
		if err := p.Delete(ctx, id); err != nil {
			t.Errorf("Delete(%q): %v", id, err)
		}
	}
	root := filepath.Join(t.TempDir(), "r")
	bad, err := local.New(local.Config{Root: root, AgentBinary: filepath.Join(t.TempDir(), "missing")})
	if err != nil {
		t.Fatal(err)
	}
	defer bad.Close()
	if _, err := bad.Create(ctx, specWith(nil)); err == nil {
		t.Fatal("Create with a missing agent binary succeeded")
	}
	if entries, _ := os.ReadDir(root); len(entries) != 0 {
		t.Fatalf("a failed Create left %v", entries)
	}
	if _, err := local.New(local.Config{AgentBinary: "x"}); err == nil {
		t.Fatal("New without a root succeeded")
	}
}

func TestLongRootSocket(t *testing.T) {
	root := filepath.Join(t.TempDir(), strings.Repeat("r", 90))
	p := newProvider(t, func(c *local.Config) { c.Root = root })
	sb, err := p.Create(t.Context(), specWith(nil))
	if err != nil {
		t.Fatal(err)
	}
	sock, err := p.Socket(sb.ID)
	if err != nil || len(sock) >= 100 || !strings.Contains(sock, sb.ID) {
		t.Fatalf("socket %q, %v", sock, err)
	}
	waitFor(t, "the agent to start", func() bool { return len(starts(t, p, sb.ID)) == 1 })
	if r := starts(t, p, sb.ID)[0]; r.Socket != sock {
		t.Fatalf("agent got --socket %s, want %s", r.Socket, sock)
	}
}

func TestConcurrentOperations(t *testing.T) {
	p := newProvider(t)
	ctx := t.Context()
	var wg sync.WaitGroup
	ids := make([]string, 6)
	for i := range ids {
		wg.Add(1)
		go func() {
			defer wg.Done()
			sb, err := p.Create(ctx, specWith(map[string]string{"n": strconv.Itoa(i)}))
			if err != nil {
				t.Error(err)
				return
			}
			ids[i] = sb.ID
		}()
	}
	// Lists running alongside the creates never see a half-made sandbox.
	for range 20 {
		list, err := p.List(ctx, nil)
		if err != nil {
			t.Fatal(err)
		}
		for _, sb := range list {
			if sb.State != provider.StateStarted {
				t.Fatalf("List saw %+v", sb)
			}
		}
	}
	wg.Wait()
	if t.Failed() {
		return
	}
	// Stop, Stop, Start and Delete racing on each sandbox.
	for _, id := range ids {
		for _, op := range []func() error{
			func() error { return p.Stop(ctx, id) },
			func() error { return p.Stop(ctx, id) },
			func() error { return p.Start(ctx, id) },
			func() error { return p.Delete(ctx, id) },
		} {
			wg.Add(1)
			go func() {
				defer wg.Done()
				if err := op(); err != nil && !errors.Is(err, provider.ErrConflict) && !errors.Is(err, provider.ErrNotFound) {
					t.Errorf("%s: %v", id, err)
				}
			}()
		}
	}
	wg.Wait()
	for _, id := range ids {
		if err := p.Delete(ctx, id); err != nil {
			t.Fatal(err)
		}
		if _, err := p.Get(ctx, id); !errors.Is(err, provider.ErrNotFound) {
			t.Fatalf("Get(%s) after Delete: %v", id, err)
		}
	}
	if list, _ := p.List(ctx, nil); len(list) != 0 {
		t.Fatalf("left: %v", list)
	}
}

// moduleRoot is the repository root (for building the real agent).
func moduleRoot() string {
	_, file, _, _ := runtime.Caller(0)
	return filepath.Join(filepath.Dir(file), "..", "..", "..")
}
