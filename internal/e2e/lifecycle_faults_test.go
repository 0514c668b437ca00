package e2e

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/sandkeep/sandkeep/internal/coordcli"
	"github.com/sandkeep/sandkeep/internal/provider/faulty"
	"github.com/sandkeep/sandkeep/internal/provider/guard"
	"github.com/sandkeep/sandkeep/internal/provider/local"
	"github.com/sandkeep/sandkeep/internal/retry"
	"github.com/sandkeep/sandkeep/internal/server"
	pb "github.com/sandkeep/sandkeep/proto/sandkeep/v1"
)

// startFaulty is startLifecycle with the local provider behind injected
// faults (package faulty) and the server's provider guard tuned to test
// time.
func startFaulty(t *testing.T, f faulty.Faults, mod func(*server.Config)) (*lcEnv, *faulty.Provider) {
	t.Helper()
	agentBin := buildAgentOnce(t)
	lp, err := local.New(local.Config{Root: filepath.Join(t.TempDir(), "sandboxes"), AgentBinary: agentBin,
		AgentArgs: []string{"--stop-timeout", "5s"}, Logger: slog.New(slog.DiscardHandler)})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = lp.Close() })
	fl := faulty.New(lp, f)
	e := startLifecycle(t, func(cfg *server.Config) {
		cfg.Lifecycle.ProviderInstance = fl
		cfg.Lifecycle.ProviderCallTimeout = 3 * time.Second
		cfg.Lifecycle.AgentTimeout = 30 * time.Second
		cfg.Lifecycle.FlushTimeout = 20 * time.Second
		cfg.Lifecycle.Guard = guard.Config{Attempts: 5, Backoff: retry.Backoff{Min: 20 * time.Millisecond, Max: 200 * time.Millisecond, Jitter: 0.2},
			Threshold: 50, Cooldown: time.Second}
		if mod != nil {
			mod(cfg)
		}
	})
	return e, fl
}

// writeCommitted writes a file into the sandbox's workspace and waits until
// a version holds it.
func (e *lcEnv) writeCommitted(project string, sb *pb.Sandbox, name, content string) {
	e.t.Helper()
	ws := e.prov.Workspace(sb.GetProviderId())
	if err := os.WriteFile(filepath.Join(ws, name), []byte(content), 0o644); err != nil {
		e.t.Fatal(err)
	}
	deadline := time.Now().Add(60 * time.Second)
	for {
		ctx, cancel := context.WithTimeout(e.t.Context(), 10*time.Second)
		resp, err := e.c.Admin.ReadFile(ctx, &pb.ReadFileRequest{ProjectId: project, Path: name})
		var got []byte
		if err == nil {
			for {
				chunk, rerr := resp.Recv()
				if rerr != nil {
					break
				}
				got = append(got, chunk.GetData()...)
			}
		}
		cancel()
		if string(got) == content {
			return
		}
		if time.Now().After(deadline) {
			e.t.Fatalf("%s was not committed within 60s", name)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// checkWorkspace fails unless the sandbox's workspace holds every file of
// want with its content.
func (e *lcEnv) checkWorkspace(sb *pb.Sandbox, want map[string]string) {
	e.t.Helper()
	ws := e.prov.Workspace(sb.GetProviderId())
	for name, content := range want {
		got, err := os.ReadFile(filepath.Join(ws, name))
		if err != nil || string(got) != content {
			e.t.Errorf("sandbox %s: committed file %s: %q, %v", sb.GetId(), name, got, err)
		}
	}
}

// The provider loses a sandbox (agent killed, directory removed, no flush)
// right after a commit: `ensure` at once answers with a new sandbox whose
// agent restored the committed file, and names the lost one and what its
// last heartbeat knew — never Internal, never "ensure again".
func TestEnsureAfterProviderLoss(t *testing.T) {
	e, fl := startFaulty(t, faulty.Faults{}, nil)
	p, _ := e.c.Project(t, "loss")
	first := e.ensure(p)
	e.writeCommitted(p, first.GetSandbox(), "committed.txt", "saved before the loss")
	// A write in flight, then the loss.
	if err := os.WriteFile(filepath.Join(e.prov.Workspace(first.GetSandbox().GetProviderId()), "in-flight.txt"), []byte("maybe"), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := fl.Lose(t.Context(), first.GetSandbox().GetProviderId()); err != nil {
		t.Fatal(err)
	}
	// As a platform would: `sandkeep sandbox ensure` at once.
	var out, errb bytes.Buffer
	code := coordcli.Main([]string{"--coordinator", e.c.Addr, "--admin-token", e.c.Server.AdminToken, "sandbox", "ensure", "--project", p, "--json"}, &out, &errb)
	if code != 0 {
		t.Fatalf("sandkeep sandbox ensure after the loss: exit %d\n%s%s", code, out.String(), errb.String())
	}
	var res struct {
		Sandbox struct {
			ID         string `json:"id"`
			ProviderID string `json:"provider_id"`
		} `json:"sandbox"`
		Created  bool `json:"created"`
		Replaced []struct {
			SandboxID string `json:"sandbox_id"`
			Reason    string `json:"reason"`
			Detail    string `json:"detail"`
			Lost      string `json:"lost"`
		} `json:"replaced"`
	}
	if err := json.Unmarshal(out.Bytes(), &res); err != nil {
		t.Fatalf("ensure --json: %v\n%s", err, out.String())
	}
	if res.Sandbox.ID == first.GetSandbox().GetId() || !res.Created {
		t.Fatalf("ensure after the loss: %s", out.String())
	}
	r := res.Replaced
	if len(r) != 1 || r[0].SandboxID != first.GetSandbox().GetId() || r[0].Reason != "lost" {
		t.Fatalf("replaced: %+v", r)
	}
	if line := errb.String(); !strings.Contains(line, "replaced sandbox "+first.GetSandbox().GetId()+" (lost: ") || !strings.Contains(line, "may have lost:") {
		t.Fatalf("stderr does not say what was replaced: %q", line)
	}
	second := &pb.Sandbox{Id: res.Sandbox.ID, ProviderId: res.Sandbox.ProviderID}
	e.checkWorkspace(second, map[string]string{"committed.txt": "saved before the loss"})
	// The in-flight write is in the new workspace (it was committed before
	// the loss) or the answer says what may be lost.
	if _, err := os.Stat(filepath.Join(e.prov.Workspace(second.GetProviderId()), "in-flight.txt")); err != nil && r[0].Lost == "" {
		t.Fatal("in-flight.txt is gone and the answer names no loss")
	}
	t.Logf("stderr of ensure: %s", errb.String())
}

// A provider that refuses everything: ensure answers Unavailable with a
// retry delay (not Internal), and works once the provider is back.
func TestEnsureProviderDown(t *testing.T) {
	e, fl := startFaulty(t, faulty.Faults{Unavailable: 1}, func(cfg *server.Config) { cfg.Lifecycle.ReadyTimeout = 3 * time.Second })
	p, _ := e.c.Project(t, "down")
	ctx, cancel := context.WithTimeout(t.Context(), time.Minute)
	defer cancel()
	_, err := e.lc.EnsureSandbox(ctx, &pb.EnsureSandboxRequest{ProjectId: p})
	if status.Code(err) != codes.Unavailable {
		t.Fatalf("ensure with the provider down: %v, want Unavailable", err)
	}
	if _, ok := retryDelay(err); !ok {
		t.Fatalf("no RetryInfo in %v", err)
	}
	fl.SetFaults(faulty.Faults{})
	e.ensure(p)
}

// TestLifecycleSoakUnderFaults drives 50 projects through write → stop →
// ensure → destroy → ensure cycles with real agents, once without faults
// and once with the provider answering 5xx and 429, hanging, starting
// slowly, failing into the error state and losing sandboxes. After every
// ensure the workspace must hold every committed file; no ensure may fail
// with Internal. It reports ensure p50/p99 of both phases.
func TestLifecycleSoakUnderFaults(t *testing.T) {
	projects := 50
	if testing.Short() {
		t.Skip("runs 50 projects of real agents")
	}
	if v, err := strconv.Atoi(os.Getenv("SANDKEEP_SOAK_PROJECTS")); err == nil && v > 0 {
		projects = v
	}
	const workers = 6
	e, fl := startFaulty(t, faulty.Faults{}, func(cfg *server.Config) { cfg.Lifecycle.ReadyTimeout = 2 * time.Minute })
	ids := make([]string, projects)
	for i := range ids {
		ids[i], _ = e.c.Project(t, fmt.Sprintf("soak-%02d", i))
	}
	committed := make([]map[string]string, projects)
	for i := range committed {
		committed[i] = map[string]string{}
	}
	type stats struct {
		mu        sync.Mutex
		ensures   []time.Duration
		failures  map[codes.Code]int
		replaced  map[string]int
		opErrors  int
		internals []string
	}
	phase := func(name string, cycle int) *stats {
		st := &stats{failures: map[codes.Code]int{}, replaced: map[string]int{}}
		ensure := func(i int) *pb.EnsureSandboxResponse {
			// A non-Internal failure may happen under faults; the next
			// ensure must then succeed.
			var lastErr error
			for range 3 {
				ctx, cancel := context.WithTimeout(t.Context(), 3*time.Minute)
				began := time.Now()
				resp, err := e.lc.EnsureSandbox(ctx, &pb.EnsureSandboxRequest{ProjectId: ids[i]})
				took := time.Since(began)
				cancel()
				st.mu.Lock()
				if err != nil {
					st.failures[status.Code(err)]++
					if c := status.Code(err); c == codes.Internal || c == codes.Unknown {
						st.internals = append(st.internals, err.Error())
					}
				} else {
					st.ensures = append(st.ensures, took)
					for _, r := range resp.GetReplaced() {
						st.replaced[r.GetReason()]++
					}
				}
				st.mu.Unlock()
				if err == nil {
					e.checkWorkspace(resp.GetSandbox(), committed[i])
					return resp
				}
				lastErr = err
			}
			t.Errorf("project %d: ensure failed three times: %v", i, lastErr)
			return nil
		}
		opErr := func(err error) {
			if err != nil {
				st.mu.Lock()
				st.opErrors++
				st.mu.Unlock()
			}
		}
		work := make(chan int)
		var wg sync.WaitGroup
		for range workers {
			wg.Add(1)
			go func() {
				defer wg.Done()
				for i := range work {
					sb := ensure(i)
					if sb == nil {
						continue
					}
					name := fmt.Sprintf("cycle-%d.txt", cycle)
					content := fmt.Sprintf("project %d, %s, cycle %d", i, name, cycle)
					e.writeCommitted(ids[i], sb.GetSandbox(), name, content)
					committed[i][name] = content
					// Idle: stopped (the agent flushes on SIGTERM).
					_, err := e.lc.StopSandbox(t.Context(), &pb.StopSandboxRequest{SandboxId: sb.GetSandbox().GetId()})
					opErr(err)
					// Back: started again on its own disk, or replaced.
					if sb = ensure(i); sb == nil {
						continue
					}
					// Destroyed once flushed and verified (refused, and
					// counted, when the faults get in the way).
					_, err = e.lc.DestroySandbox(t.Context(), &pb.DestroySandboxRequest{SandboxId: sb.GetSandbox().GetId()})
					opErr(err)
					// Back from the bucket.
					ensure(i)
				}
			}()
		}
		for i := range ids {
			work <- i
		}
		close(work)
		wg.Wait()
		slices.Sort(st.ensures)
		t.Logf("soak %s: %d projects, %d ensures: p50 %s, p99 %s; ensure failures %v; replaced %v; stop/destroy errors %d; faults injected %v",
			name, projects, len(st.ensures), pct(st.ensures, 50), pct(st.ensures, 99), st.failures, st.replaced, st.opErrors, fl.Counts())
		if len(st.internals) > 0 {
			t.Errorf("soak %s: %d ensures failed with Internal: %v", name, len(st.internals), st.internals)
		}
		return st
	}
	phase("without faults", 1)
	fl.SetFaults(faulty.Faults{Seed: 11, Unavailable: 0.05, Throttle: 0.05, Hang: 0.01, Slow: 100 * time.Millisecond,
		ErrorState: 0.05, Loss: 0.02})
	phase("with faults", 2)
	fl.SetFaults(faulty.Faults{})
	// Every project's files are all still there once more, from the bucket.
	for i := range ids {
		ctx, cancel := context.WithTimeout(t.Context(), 3*time.Minute)
		resp, err := e.lc.EnsureSandbox(ctx, &pb.EnsureSandboxRequest{ProjectId: ids[i]})
		cancel()
		if err != nil {
			t.Fatalf("final ensure of project %d: %v", i, err)
		}
		e.checkWorkspace(resp.GetSandbox(), committed[i])
	}
}

func pct(sorted []time.Duration, p int) time.Duration {
	if len(sorted) == 0 {
		return 0
	}
	i := (len(sorted)*p + 99) / 100
	return sorted[min(max(i-1, 0), len(sorted)-1)].Round(time.Millisecond)
}

func retryDelay(err error) (time.Duration, bool) {
	st, ok := status.FromError(err)
	if !ok {
		return 0, false
	}
	for _, d := range st.Details() {
		if strings.Contains(fmt.Sprintf("%T", d), "RetryInfo") {
			return 0, true
		}
	}
	return 0, false
}
