package e2e

import (
	"bytes"
	"context"
	"errors"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"google.golang.org/protobuf/types/known/durationpb"

	"github.com/sandkeep/sandkeep/internal/coordtest"
	"github.com/sandkeep/sandkeep/internal/lifecycle"
	"github.com/sandkeep/sandkeep/internal/policy"
	"github.com/sandkeep/sandkeep/internal/provider"
	"github.com/sandkeep/sandkeep/internal/provider/local"
	"github.com/sandkeep/sandkeep/internal/server"
	"github.com/sandkeep/sandkeep/internal/testclock"
	"github.com/sandkeep/sandkeep/internal/workspacetest"
	pb "github.com/sandkeep/sandkeep/proto/sandkeep/v1"
)

var (
	lcAgentOnce sync.Once
	lcAgentBin  string
	lcAgentErr  error
)

// buildAgentOnce builds sandkeep-agent as buildBinaries does (static), once
// per test binary: the local provider runs it.
func buildAgentOnce(t *testing.T) string {
	t.Helper()
	if testing.Short() {
		t.Skip("builds sandkeep-agent; skipped with -short")
	}
	lcAgentOnce.Do(func() {
		dir, err := os.MkdirTemp("", "sandkeep-lifecycle-agent-")
		if err != nil {
			lcAgentErr = err
			return
		}
		lcAgentBin = filepath.Join(dir, "sandkeep-agent")
		cmd := exec.Command("go", "build", "-trimpath", "-ldflags", "-s -w", "-o", lcAgentBin, "./agent")
		cmd.Dir = moduleRoot(t)
		cmd.Env = append(os.Environ(), "CGO_ENABLED=0")
		if out, err := cmd.CombinedOutput(); err != nil {
			lcAgentErr = errors.New("build agent: " + err.Error() + "\n" + string(out))
		}
	})
	if lcAgentErr != nil {
		t.Fatal(lcAgentErr)
	}
	return lcAgentBin
}

// lcEnv is a coordinator with the local provider running real agents, its
// lifecycle loop driven by hand.
type lcEnv struct {
	t     *testing.T
	c     *coordtest.Coordinator
	clock *testclock.Clock // starts at the real now (agents stamp heartbeats with real time), moves only when told
	lc    pb.LifecycleServiceClient
	m     *lifecycle.Manager
	prov  *local.Provider
}

func startLifecycle(t *testing.T, mod func(*server.Config)) *lcEnv {
	t.Helper()
	return startLifecycleOn(t, coordtest.Options{}, mod)
}

// startLifecycleOn is startLifecycle on the backends base names (its
// Config is replaced).
func startLifecycleOn(t *testing.T, base coordtest.Options, mod func(*server.Config)) *lcEnv {
	t.Helper()
	agentBin := buildAgentOnce(t)
	clock := testclock.New(time.Now().UTC())
	cfg := server.Config{Lifecycle: server.LifecycleConfig{
		Provider: server.ProviderLocal, LocalAgent: agentBin, LocalRoot: filepath.Join(t.TempDir(), "sandboxes"),
		// The agent's final flush on SIGTERM is bounded: a stop with S3 down
		// must not take a minute.
		LocalAgentArgs: []string{"--stop-timeout", "2s"},
		Manual:         true, Now: clock.Now,
		Policy:       policy.Policy{StopAfter: 10 * time.Minute, DestroyAfter: time.Hour},
		FlushTimeout: 2 * time.Second, ReadyTimeout: 90 * time.Second,
	}}
	if mod != nil {
		mod(&cfg)
	}
	base.Config = cfg
	c := coordtest.Start(t, base)
	e := &lcEnv{t: t, c: c, clock: clock, m: c.Server.Lifecycle, lc: pb.NewLifecycleServiceClient(c.Conn(t, c.Server.AdminToken))}
	prov := e.m.Provider()
	for {
		// The server guards every provider (package guard); tests may
		// add faults (package faulty).
		g, ok := prov.(interface{ Unwrap() provider.Provider })
		if !ok {
			break
		}
		prov = g.Unwrap()
	}
	p, ok := prov.(*local.Provider)
	if !ok {
		t.Fatalf("provider %T, want the local one", e.m.Provider())
	}
	e.prov = p
	t.Cleanup(func() {
		// Leave no agent running: destroy whatever is left.
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		sbs, _ := p.List(ctx, nil)
		for _, sb := range sbs {
			workspacetest.MakeWritable(p.Workspace(sb.ID))
			_ = p.Delete(ctx, sb.ID)
		}
		if t.Failed() {
			for _, sb := range sbs {
				b, _ := os.ReadFile(p.LogPath(sb.ID))
				t.Logf("agent log of %s:\n%s", sb.ID, b)
			}
		}
	})
	return e
}

func (e *lcEnv) tick() {
	e.t.Helper()
	if err := e.m.Tick(e.t.Context()); err != nil {
		e.t.Fatalf("tick: %v", err)
	}
}

// advance moves the fake clock by total in steps, ticking after each.
func (e *lcEnv) advance(total, step time.Duration) {
	e.t.Helper()
	for d := time.Duration(0); d < total; d += step {
		e.clock.Advance(step)
		e.tick()
	}
}

func (e *lcEnv) sandbox(id string) *pb.Sandbox {
	e.t.Helper()
	resp, err := e.lc.GetSandbox(e.t.Context(), &pb.GetSandboxRequest{SandboxId: id})
	if err != nil {
		e.t.Fatal(err)
	}
	return resp.GetSandbox()
}

func (e *lcEnv) ensure(project string) *pb.EnsureSandboxResponse {
	e.t.Helper()
	ctx, cancel := context.WithTimeout(e.t.Context(), 2*time.Minute)
	defer cancel()
	resp, err := e.lc.EnsureSandbox(ctx, &pb.EnsureSandboxRequest{ProjectId: project})
	if err != nil {
		e.t.Fatalf("EnsureSandbox: %v", err)
	}
	return resp
}

// synced waits until the sandbox's agent reports a clean workspace at the
// project's head, with something committed.
func (e *lcEnv) synced(project string, sb *pb.Sandbox) int64 {
	e.t.Helper()
	deadline := time.Now().Add(60 * time.Second)
	for {
		resp, err := e.c.Admin.ListAgents(e.t.Context(), &pb.ListAgentsRequest{ProjectId: project})
		if err != nil {
			e.t.Fatal(err)
		}
		head := headOf(e.t, e.c, project)
		for _, a := range resp.GetAgents() {
			hb := a.GetHeartbeat()
			if a.GetConnected() && hb.GetSandboxId() == sb.GetId() && hb.GetClean() && hb.GetVersion() == head && head > 0 &&
				hb.GetState() == pb.AgentState_AGENT_STATE_IDLE {
				return head
			}
		}
		if time.Now().After(deadline) {
			e.t.Fatalf("the agent of %s did not sync (head %d, agents %v)", sb.GetId(), head, resp.GetAgents())
		}
		time.Sleep(50 * time.Millisecond)
	}
}

func headOf(t *testing.T, c *coordtest.Coordinator, project string) int64 {
	t.Helper()
	p, err := c.Admin.GetProject(t.Context(), &pb.GetProjectRequest{ProjectId: project})
	if err != nil {
		t.Fatal(err)
	}
	return p.GetProject().GetHead()
}

func copyTree(t *testing.T, src string) string {
	t.Helper()
	dst := filepath.Join(t.TempDir(), "copy")
	if out, err := exec.Command("cp", "-a", src, dst).CombinedOutput(); err != nil {
		t.Fatalf("cp -a: %v\n%s", err, out)
	}
	t.Cleanup(func() { workspacetest.MakeWritable(dst) })
	return dst
}

func (e *lcEnv) reaperMetric(action, result string) float64 {
	e.t.Helper()
	b := e.c.Metrics(e.t)
	want := `sandkeep_reaper_actions_total{action="` + action + `",result="` + result + `"} `
	for _, line := range strings.Split(string(b), "\n") {
		if v, ok := strings.CutPrefix(line, want); ok {
			f, _ := strconv.ParseFloat(v, 64)
			return f
		}
	}
	return 0
}

// TestLifecycleLocalProvider: on the local provider with real agents, a
// project runs (EnsureSandbox, files written in the sandbox), goes idle, is
// flushed, stopped, verified and destroyed (its directory gone); a file
// link still downloads; EnsureSandbox brings it back with an identical
// workspace; under a run lease it is never reaped however idle.
func TestLifecycleLocalProvider(t *testing.T) {
	e := startLifecycle(t, nil)
	ctx := t.Context()
	project, _ := e.c.Project(t, "lifecycle")

	// Runs.
	first := e.ensure(project)
	sb := first.GetSandbox()
	if !first.GetCreated() || sb.GetState() != "started" || sb.GetProvider() != "local" {
		t.Fatalf("ensure: %+v", first)
	}
	t.Logf("sandbox %s (%s) ready in %s", sb.GetId(), sb.GetProviderId(), first.GetTook().AsDuration())
	ws := e.prov.Workspace(sb.GetProviderId())
	workspacetest.Generate(t, ws, workspacetest.Options{SmallFiles: 40, LargeSize: 3 << 20, Seed: 11})
	if err := os.WriteFile(filepath.Join(ws, "report.txt"), []byte("quarterly numbers\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { workspacetest.MakeWritable(ws) })
	e.synced(project, sb)
	// The heartbeats reached the registry.
	if got := e.sandbox(sb.GetId()); got.GetBackupStatus() != "clean" || got.GetCleanVersion() == 0 || got.GetAgentState() != "idle" {
		t.Fatalf("registry after sync: backup %s clean at %d agent %s", got.GetBackupStatus(), got.GetCleanVersion(), got.GetAgentState())
	}
	want := copyTree(t, ws)

	// Goes idle: nothing before stop-after.
	e.advance(9*time.Minute, 3*time.Minute)
	if st := e.sandbox(sb.GetId()).GetState(); st != "started" {
		t.Fatalf("state after 9 idle minutes: %s", st)
	}
	// Flushed, then stopped (the directory stays, like a stopped VM's disk).
	e.advance(2*time.Minute, time.Minute)
	got := e.sandbox(sb.GetId())
	if got.GetState() != "stopped" || !got.GetFlushed() || got.GetCleanVersion() != headOf(t, e.c, project) {
		t.Fatalf("after 11 idle minutes: state %s flushed %v clean at %d head %d", got.GetState(), got.GetFlushed(), got.GetCleanVersion(), headOf(t, e.c, project))
	}
	if _, err := os.Stat(ws); err != nil {
		t.Fatalf("workspace of a stopped sandbox: %v", err)
	}
	// Verified and destroyed after an hour.
	e.advance(50*time.Minute, 10*time.Minute)
	got = e.sandbox(sb.GetId())
	if got.GetState() != "destroyed" || got.GetVerifiedVersion() != got.GetCleanVersion() {
		t.Fatalf("after an idle hour: state %s verified %d clean at %d (%s)", got.GetState(), got.GetVerifiedVersion(), got.GetCleanVersion(), got.GetLastError())
	}
	if _, err := os.Stat(e.prov.Dir(sb.GetProviderId())); !errors.Is(err, os.ErrNotExist) {
		t.Fatalf("directory of the destroyed sandbox: %v", err)
	}
	if e.reaperMetric("destroy", "ok") < 1 || e.reaperMetric("verify", "ok") < 1 {
		t.Fatal("reaper metrics not counted")
	}

	// A file link still downloads with no sandbox.
	if code, body := e.download(ctx, project, "report.txt"); code != http.StatusOK || !bytes.Equal(body, []byte("quarterly numbers\n")) {
		t.Fatalf("file link after destroy: %d %q", code, body)
	}

	// EnsureSandbox brings it back, the workspace identical.
	second := e.ensure(project)
	sb2 := second.GetSandbox()
	if !second.GetCreated() || sb2.GetId() == sb.GetId() {
		t.Fatalf("second ensure: %+v", second)
	}
	t.Logf("sandbox %s restored in %s", sb2.GetId(), second.GetTook().AsDuration())
	ws2 := e.prov.Workspace(sb2.GetProviderId())
	t.Cleanup(func() { workspacetest.MakeWritable(ws2) })
	// The sandbox's agent restores without --keep-setuid.
	workspacetest.ClearSetuid(t, want)
	workspacetest.RequireEqual(t, want, ws2)

	// Under a run lease it is never reaped, however idle.
	lease, err := e.lc.AcquireRunLease(ctx, &pb.AcquireRunLeaseRequest{ProjectId: project, Ttl: durationpb.New(time.Hour)})
	if err != nil {
		t.Fatal(err)
	}
	for range 6 {
		e.advance(50*time.Minute, 25*time.Minute)
		if _, err := e.lc.RenewRunLease(ctx, &pb.RenewRunLeaseRequest{LeaseId: lease.GetLease().GetId(), Ttl: durationpb.New(time.Hour)}); err != nil {
			t.Fatal(err)
		}
	}
	if got := e.sandbox(sb2.GetId()); got.GetState() != "started" || got.GetLeaseUntil() == nil {
		t.Fatalf("after 5 leased hours: state %s lease %v", got.GetState(), got.GetLeaseUntil())
	}
	if _, err := e.lc.ReleaseRunLease(ctx, &pb.ReleaseRunLeaseRequest{LeaseId: lease.GetLease().GetId()}); err != nil {
		t.Fatal(err)
	}
	e.advance(11*time.Minute, time.Minute)
	if st := e.sandbox(sb2.GetId()).GetState(); st != "stopped" {
		t.Fatalf("11 minutes after the release: %s, want stopped", st)
	}

	// sandbox list shows both; destroy without force of the stopped one
	// (flushed when it stopped) verifies and destroys.
	list, err := e.lc.ListSandboxes(ctx, &pb.ListSandboxesRequest{ProjectId: project, IncludeDestroyed: true})
	if err != nil || len(list.GetSandboxes()) != 2 {
		t.Fatalf("list: %v, %v", list, err)
	}
	workspacetest.MakeWritable(ws2)
	d, err := e.lc.DestroySandbox(ctx, &pb.DestroySandboxRequest{SandboxId: sb2.GetId()})
	if err != nil || d.GetSandbox().GetState() != "destroyed" || d.GetLost() != "" {
		t.Fatalf("destroy: %+v, %v", d, err)
	}
	// Cost: the registry's intervals, priced.
	cost, err := e.lc.GetCost(ctx, &pb.GetCostRequest{ProjectId: project})
	if err != nil {
		t.Fatal(err)
	}
	if tc := cost.GetTotal(); tc.GetSandboxHours() <= 0 || tc.GetComputeDollars() <= 0 || tc.GetStoredBytes() <= 0 || tc.GetSavings() <= 0 {
		t.Fatalf("cost: %+v", tc)
	}
}

// blobProxy is a TCP proxy that can refuse service, to take the blob store
// away from agents (their signed URLs point at it).
type blobProxy struct {
	ln     net.Listener
	mu     sync.Mutex
	target string
	down   bool
	conns  map[net.Conn]struct{}
}

func startBlobProxy(t *testing.T) *blobProxy {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	p := &blobProxy{ln: ln, conns: map[net.Conn]struct{}{}}
	t.Cleanup(func() { ln.Close(); p.setDown(true) })
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			p.mu.Lock()
			down, target := p.down, p.target
			if !down {
				p.conns[c] = struct{}{}
			}
			p.mu.Unlock()
			if down || target == "" {
				c.Close()
				continue
			}
			go p.serve(c, target)
		}
	}()
	return p
}

func (p *blobProxy) serve(c net.Conn, target string) {
	up, err := net.Dial("tcp", target)
	if err != nil {
		c.Close()
		return
	}
	p.mu.Lock()
	p.conns[up] = struct{}{}
	p.mu.Unlock()
	go func() { _, _ = io.Copy(up, c); up.Close() }()
	_, _ = io.Copy(c, up)
	c.Close()
}

func (p *blobProxy) setDown(down bool) {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.down = down
	if down {
		for c := range p.conns {
			c.Close()
		}
		p.conns = map[net.Conn]struct{}{}
	}
}

// TestLifecycleFlushFailurePreventsDestroy: with the blob store unreachable
// (the agents' upload URLs go through a proxy that is then cut), the flush
// fails: the sandbox is stopped (stop keeps the disk) but never destroyed,
// the failure alerts (metric, backup status "failed"); once storage is back
// the next retry flushes, verifies and destroys.
func TestLifecycleFlushFailurePreventsDestroy(t *testing.T) {
	px := startBlobProxy(t)
	e := startLifecycle(t, func(c *server.Config) { c.PublicURL = "http://" + px.ln.Addr().String() })
	px.mu.Lock()
	px.target = strings.TrimPrefix(e.c.HTTP, "http://")
	px.mu.Unlock()
	ctx := t.Context()
	project, _ := e.c.Project(t, "s3-down")
	sb := e.ensure(project).GetSandbox()
	ws := e.prov.Workspace(sb.GetProviderId())
	if err := os.WriteFile(filepath.Join(ws, "saved.txt"), []byte("before the outage"), 0o644); err != nil {
		t.Fatal(err)
	}
	e.synced(project, sb)

	px.setDown(true) // storage gone
	if err := os.WriteFile(filepath.Join(ws, "unsaved.txt"), bytes.Repeat([]byte("during the outage "), 1000), 0o644); err != nil {
		t.Fatal(err)
	}
	// Idle: the flush before stop fails; the sandbox is stopped anyway
	// (with an alert: stopping keeps the disk) and is never destroyed while
	// flushes fail.
	e.advance(11*time.Minute, time.Minute)
	got := e.sandbox(sb.GetId())
	if got.GetBackupStatus() != "failed" || got.GetFlushFailures() == 0 || got.GetFlushed() || got.GetState() != "stopped" {
		t.Fatalf("after the failed flush: state %s backup %s failures %d flushed %v", got.GetState(), got.GetBackupStatus(), got.GetFlushFailures(), got.GetFlushed())
	}
	e.advance(2*time.Hour, time.Hour)
	got = e.sandbox(sb.GetId())
	if got.GetState() == "destroyed" {
		t.Fatal("destroyed while its flush fails")
	}
	if _, err := os.Stat(filepath.Join(e.prov.Workspace(sb.GetProviderId()), "unsaved.txt")); err != nil {
		t.Fatalf("the unsaved file: %v", err)
	}
	if e.reaperMetric("alert", "flush") < 1 || e.reaperMetric("destroy", "ok") != 0 {
		t.Fatalf("alerts %v destroys %v", e.reaperMetric("alert", "flush"), e.reaperMetric("destroy", "ok"))
	}
	t.Logf("while storage is down: state %s, %d failed flushes, last error %q", got.GetState(), got.GetFlushFailures(), got.GetLastFlushError())

	// Storage back: the next retry saves the file and the sandbox goes.
	px.setDown(false)
	deadline := time.Now().Add(2 * time.Minute)
	for e.sandbox(sb.GetId()).GetState() != "destroyed" {
		if time.Now().After(deadline) {
			got := e.sandbox(sb.GetId())
			t.Fatalf("not destroyed after storage came back: %s, %s", got.GetState(), got.GetLastFlushError())
		}
		e.advance(time.Hour, time.Hour)
	}
	if code, body := e.download(ctx, project, "unsaved.txt"); code != http.StatusOK || len(body) != 18000 {
		t.Fatalf("the file written during the outage: %d, %d bytes", code, len(body))
	}
}

// download GETs a file link of the head with the admin token.
func (e *lcEnv) download(ctx context.Context, project, path string) (int, []byte) {
	e.t.Helper()
	req, _ := http.NewRequestWithContext(ctx, http.MethodGet, e.c.HTTP+"/v1/projects/"+project+"/files/"+path, nil)
	req.Header.Set("Authorization", "Bearer "+e.c.Server.AdminToken)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		e.t.Fatal(err)
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, body
}
