package lifecycle

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"net/http/httptest"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/sandkeep/sandkeep/internal/id"
	"github.com/sandkeep/sandkeep/internal/metastore"
	"github.com/sandkeep/sandkeep/internal/policy"
	"github.com/sandkeep/sandkeep/internal/provider"
	pb "github.com/sandkeep/sandkeep/proto/sandkeep/v1"
)

func dur(d time.Duration) *time.Duration { return &d }

// reaper reads sandkeep_reaper_actions_total{action, result} from /metrics.
func (e *env) reaper(action, result string) float64 {
	return metricValue(e, fmt.Sprintf(`sandkeep_reaper_actions_total{action=%q,result=%q} `, action, result))
}

// metricValue reads the sample whose line starts with want from /metrics.
func metricValue(e *env, want string) float64 {
	rec := httptest.NewRecorder()
	e.metrics.Handler().ServeHTTP(rec, httptest.NewRequest(http.MethodGet, "/metrics", nil))
	for _, line := range strings.Split(rec.Body.String(), "\n") {
		if v, ok := strings.CutPrefix(line, want); ok {
			f, _ := strconv.ParseFloat(v, 64)
			return f
		}
	}
	return 0
}

// webhookServer records the notices it receives.
type webhookServer struct {
	mu      sync.Mutex
	notices []CleanupNotice
	status  int
	url     string
}

func newWebhook(t *testing.T) *webhookServer {
	w := &webhookServer{status: http.StatusNoContent}
	srv := httptest.NewServer(http.HandlerFunc(func(rw http.ResponseWriter, r *http.Request) {
		var n CleanupNotice
		if err := json.NewDecoder(r.Body).Decode(&n); err != nil {
			t.Errorf("webhook body: %v", err)
		}
		w.mu.Lock()
		w.notices = append(w.notices, n)
		st := w.status
		w.mu.Unlock()
		rw.WriteHeader(st)
	}))
	t.Cleanup(srv.Close)
	w.url = srv.URL
	return w
}

func (w *webhookServer) actions() []string {
	w.mu.Lock()
	defer w.mu.Unlock()
	var out []string
	for _, n := range w.notices {
		out = append(out, n.Action)
	}
	return out
}

// TestIdleSandboxLifecycle: a sandbox that goes idle is announced, flushed,
// stopped, announced again, verified and destroyed, each at the time the
// default policy says; EnsureSandbox then brings a new one.
func TestIdleSandboxLifecycle(t *testing.T) {
	hook := newWebhook(t)
	e := newEnv(t, func(c *Config) { c.Webhook = hook.url })
	p := e.project("idle")
	res := e.ensure(p)
	if !res.Created || res.Sandbox.State != provider.StateStarted {
		t.Fatalf("ensure: %+v", res)
	}
	sb := res.Sandbox
	e.write(p) // head 1
	if got := e.get(sb.ID); got.Flushed || got.Backup != metastore.BackupClean || got.CleanVersion != 1 {
		t.Fatalf("after a write: flushed %v backup %s clean at %d", got.Flushed, got.Backup, got.CleanVersion)
	}

	e.advance(4*time.Minute, time.Minute)
	if len(hook.actions()) != 0 {
		t.Fatalf("notified before the notify point: %v", hook.actions())
	}
	e.advance(time.Minute, time.Minute) // 5m: stop is announced
	if got := hook.actions(); len(got) != 1 || got[0] != "stop" {
		t.Fatalf("notices at 5m: %v", got)
	}
	e.advance(4*time.Minute, time.Minute)
	if st := e.get(sb.ID).State; st != provider.StateStarted {
		t.Fatalf("state before stop is due: %s", st)
	}
	e.advance(time.Minute, time.Minute) // 10m: flush, then stop
	got := e.get(sb.ID)
	if got.State != provider.StateStopped || !got.Flushed || got.CleanVersion != 1 {
		t.Fatalf("at 10m: state %s flushed %v clean at %d", got.State, got.Flushed, got.CleanVersion)
	}
	if e.agents.flushCount() != 1 {
		t.Fatalf("%d flushes, want 1", e.agents.flushCount())
	}
	e.advance(45*time.Minute, time.Minute) // 55m: destroy is announced
	if got := hook.actions(); len(got) != 2 || got[1] != "destroy" {
		t.Fatalf("notices at 55m: %v", got)
	}
	if e.prov.count("delete") != 0 {
		t.Fatal("destroyed before it was due")
	}
	e.advance(5*time.Minute, time.Minute) // 60m: verify, destroy
	got = e.get(sb.ID)
	if got.State != provider.StateDestroyed || got.VerifiedVersion != 1 {
		t.Fatalf("at 60m: state %s verified %d", got.State, got.VerifiedVersion)
	}
	if e.prov.state(sb.ProviderID) != provider.StateDestroyed {
		t.Fatalf("provider state %s", e.prov.state(sb.ProviderID))
	}
	tok, err := e.meta.GetToken(t.Context(), got.TokenHash)
	if err != nil || !tok.Revoked {
		t.Fatalf("token of the destroyed sandbox: %+v %v", tok, err)
	}
	for _, a := range []string{"stop", "flush", "verify", "destroy", "notify"} {
		if e.reaper(a, "ok") < 1 {
			t.Errorf("metric reaper_actions{action=%s,result=ok} not counted", a)
		}
	}

	// Cost: 10 minutes started, 50 stopped.
	rep, err := e.m.Cost(t.Context(), p, time.Time{})
	if err != nil {
		t.Fatal(err)
	}
	pc := rep.Projects[0]
	if pc.Seconds[policy.StateStarted] != 600 || pc.Seconds[policy.StateStopped] != 3000 {
		t.Fatalf("seconds by state: %v", pc.Seconds)
	}
	if pc.Savings <= 0.8 {
		t.Fatalf("savings %.3f, want > 0.8 against always-on", pc.Savings)
	}

	// EnsureSandbox brings a new one.
	res2 := e.ensure(p)
	if !res2.Created || res2.Sandbox.ID == sb.ID {
		t.Fatalf("second ensure: %+v", res2)
	}
}

// TestRunLeaseBlocksReaping: a sandbox under a run lease is never reaped,
// however idle; once the lease ends (released or expired) the idle time
// counts from its end.
func TestRunLeaseBlocksReaping(t *testing.T) {
	e := newEnv(t)
	p := e.project("leased")
	sb := e.ensure(p).Sandbox
	lease, err := e.m.AcquireRunLease(t.Context(), p, 30*time.Minute)
	if err != nil {
		t.Fatal(err)
	}
	for range 20 { // renewed for 8 hours
		e.advance(25*time.Minute, 5*time.Minute)
		if _, err := e.m.RenewRunLease(t.Context(), lease.ID, 30*time.Minute); err != nil {
			t.Fatal(err)
		}
	}
	if st := e.get(sb.ID).State; st != provider.StateStarted || e.agents.flushCount() != 0 || len(e.prov.calls) != 1 {
		t.Fatalf("under a lease: state %s, %d flushes, provider calls %v", st, e.agents.flushCount(), e.prov.calls)
	}
	// Released: idle from the release.
	if _, err := e.m.ReleaseRunLease(t.Context(), lease.ID); err != nil {
		t.Fatal(err)
	}
	e.advance(9*time.Minute, time.Minute)
	if st := e.get(sb.ID).State; st != provider.StateStarted {
		t.Fatalf("stopped 9 minutes after the release: %s", st)
	}
	e.advance(2*time.Minute, time.Minute)
	if st := e.get(sb.ID).State; st != provider.StateStopped {
		t.Fatalf("11 minutes after the release: %s, want stopped", st)
	}

	// An expired lease protects nothing.
	p2 := e.project("expired")
	sb2 := e.ensure(p2).Sandbox
	l2, err := e.m.AcquireRunLease(t.Context(), p2, 20*time.Minute)
	if err != nil {
		t.Fatal(err)
	}
	e.advance(25*time.Minute, time.Minute)
	if st := e.get(sb2.ID).State; st != provider.StateStarted {
		t.Fatalf("5 minutes after the lease expired: %s", st)
	}
	if _, err := e.m.RenewRunLease(t.Context(), l2.ID, time.Minute); !errors.Is(err, metastore.ErrLeaseEnded) {
		t.Fatalf("renewing an expired lease: %v", err)
	}
	e.advance(6*time.Minute, time.Minute)
	if st := e.get(sb2.ID).State; st != provider.StateStopped {
		t.Fatalf("11 minutes after the lease expired: %s, want stopped", st)
	}
}

// TestFailedFlushNeverDestroys: while flushes fail, the sandbox is stopped
// (stop keeps the disk) but never destroyed; the failures alert and retry
// with the engine's backoff; a later success opens the gate.
func TestFailedFlushNeverDestroys(t *testing.T) {
	e := newEnv(t)
	p := e.project("s3-down")
	sb := e.ensure(p).Sandbox
	e.write(p)
	e.agents.setFlushErr(errors.New("agent reported a failure: upload: connection refused"))
	e.advance(3*time.Hour, time.Minute)
	got := e.get(sb.ID)
	if got.State == provider.StateDestroyed || e.prov.count("delete") != 0 {
		t.Fatal("destroyed although every flush failed")
	}
	if got.Backup != metastore.BackupFailed || got.FlushFailures == 0 || !strings.Contains(got.LastFlushError, "connection refused") {
		t.Fatalf("backup %s, failures %d, error %q", got.Backup, got.FlushFailures, got.LastFlushError)
	}
	if e.reaper("alert", "flush") < 1 || e.reaper("flush", "error") < 1 {
		t.Fatal("failed flushes not counted as alerts")
	}
	if !strings.Contains(e.logs.String(), "level=ERROR") {
		t.Fatal("no ERROR log for the failed flushes")
	}
	// Backoff: far fewer attempts than ticks (180 ticks).
	attempts := e.agents.flushCount()
	if attempts < 3 || attempts > 20 {
		t.Fatalf("%d flush attempts in 3h with backoff", attempts)
	}
	// The stopped sandbox is started to flush, then stopped again.
	if e.prov.count("start") == 0 {
		t.Fatal("a stopped sandbox was never started to retry its flush")
	}
	// S3 back: the next retry flushes, verifies and destroys.
	e.agents.setFlushErr(nil)
	e.advance(3*time.Hour, time.Minute)
	if got := e.get(sb.ID); got.State != provider.StateDestroyed || got.FlushFailures != 0 {
		t.Fatalf("after recovery: state %s, failures %d", got.State, got.FlushFailures)
	}
}

// TestFailedVerifyNeverDestroys: a head whose packs are missing fails
// verify: no destroy, alert.
func TestFailedVerifyNeverDestroys(t *testing.T) {
	e := newEnv(t)
	p := e.project("missing-pack")
	sb := e.ensure(p).Sandbox
	// A head whose root tree is indexed in a pack that is not in the bucket.
	root := id.ID{7, 7, 7}
	epoch, _ := e.meta.PackEpoch(t.Context(), p)
	if err := e.meta.AddPack(t.Context(), metastore.Pack{ProjectID: p, ID: id.ID{9}, Type: metastore.BlobTree, Size: 100, Epoch: epoch},
		[]metastore.BlobLocation{{ID: root, Type: metastore.BlobTree, Length: 50, RawLength: 50}}); err != nil {
		t.Fatal(err)
	}
	if _, err := e.meta.CommitVersion(t.Context(), metastore.Version{ProjectID: p, Root: root, Kind: metastore.KindSync}, metastore.FileChanges{}); err != nil {
		t.Fatal(err)
	}
	e.agents.up(p, sb.ID, 1)
	e.advance(4*time.Hour, 5*time.Minute)
	got := e.get(sb.ID)
	if got.State == provider.StateDestroyed {
		t.Fatal("destroyed with an unverifiable head")
	}
	if got.VerifiedVersion != 0 || got.FlushFailures == 0 || !strings.Contains(got.LastFlushError, "verify") {
		t.Fatalf("verified %d failures %d error %q", got.VerifiedVersion, got.FlushFailures, got.LastFlushError)
	}
	if e.reaper("alert", "verify") < 1 {
		t.Fatal("failed verify not alerted")
	}
	if _, err := e.m.VerifyHead(t.Context(), p); err == nil {
		t.Fatal("VerifyHead passed")
	}
}

// TestPolicyOverrides: a project's override replaces the global values it
// sets; a contradicting one is refused.
func TestPolicyOverrides(t *testing.T) {
	e := newEnv(t, func(c *Config) { c.Policy = policy.Policy{StopAfter: 10 * time.Minute, DestroyAfter: time.Hour} })
	fast, slow := e.project("fast"), e.project("slow")
	if _, err := e.m.SetPolicy(t.Context(), fast, PolicyChange{Override: policy.Override{StopAfter: dur(2 * time.Minute), DestroyAfter: dur(5 * time.Minute)}}); err != nil {
		t.Fatal(err)
	}
	if _, err := e.m.SetPolicy(t.Context(), slow, PolicyChange{Override: policy.Override{DestroyAfter: dur(time.Minute)}}); !errors.Is(err, metastore.ErrInvalid) {
		t.Fatalf("destroy-after shorter than stop-after: %v, want ErrInvalid", err)
	}
	v, err := e.m.GetPolicy(t.Context(), fast)
	if err != nil || v.Effective.StopAfter != 2*time.Minute || v.Effective.DestroyAfter != 5*time.Minute || v.Global.StopAfter != 10*time.Minute {
		t.Fatalf("GetPolicy: %+v, %v", v, err)
	}
	// A partial change keeps the other fields; Reset drops them.
	v, err = e.m.SetPolicy(t.Context(), fast, PolicyChange{Override: policy.Override{DestroyAfter: dur(6 * time.Minute)}})
	if err != nil || v.Effective.StopAfter != 2*time.Minute || v.Effective.DestroyAfter != 6*time.Minute {
		t.Fatalf("partial SetPolicy: %+v, %v", v.Effective, err)
	}
	fsb, ssb := e.ensure(fast).Sandbox, e.ensure(slow).Sandbox
	e.advance(3*time.Minute, time.Minute)
	if a, b := e.get(fsb.ID).State, e.get(ssb.ID).State; a != provider.StateStopped || b != provider.StateStarted {
		t.Fatalf("after 3m: fast %s, slow %s", a, b)
	}
	e.advance(4*time.Minute, time.Minute)
	if a := e.get(fsb.ID).State; a != provider.StateDestroyed {
		t.Fatalf("after 7m: fast %s, want destroyed", a)
	}
	e.advance(5*time.Minute, time.Minute)
	if b := e.get(ssb.ID).State; b != provider.StateStopped {
		t.Fatalf("after 12m: slow %s, want stopped (global policy)", b)
	}
	v, err = e.m.SetPolicy(t.Context(), fast, PolicyChange{Reset: true})
	if err != nil || v.Effective != e.m.cfg.Policy {
		t.Fatalf("reset: %+v, %v", v.Effective, err)
	}
}

// TestWebhookGraceAndExtension: the webhook hears of each cleanup a grace
// period before it; ExtendSandbox or a run lease taken within the grace
// postpones it; a failing webhook delays nothing beyond the grace.
func TestWebhookGraceAndExtension(t *testing.T) {
	hook := newWebhook(t)
	e := newEnv(t, func(c *Config) {
		c.Policy = policy.Policy{StopAfter: 10 * time.Minute, DestroyAfter: time.Hour, NotifyGrace: 5 * time.Minute}
	})
	p := e.project("hooked")
	if _, err := e.m.SetPolicy(t.Context(), p, PolicyChange{Webhook: &hook.url}); err != nil {
		t.Fatal(err)
	}
	sb := e.ensure(p).Sandbox
	e.advance(5*time.Minute, time.Minute)
	hook.mu.Lock()
	if len(hook.notices) != 1 || hook.notices[0].Action != "stop" || hook.notices[0].SandboxID != sb.ID || hook.notices[0].GraceSeconds != 300 ||
		!hook.notices[0].NotBefore.Equal(e.clock.Now().Add(5*time.Minute)) {
		t.Fatalf("notices: %+v", hook.notices)
	}
	hook.mu.Unlock()
	// The platform answers: keep it 20 more minutes.
	if _, err := e.m.ExtendSandbox(t.Context(), "", p, 20*time.Minute); err != nil {
		t.Fatal(err)
	}
	e.advance(19*time.Minute, time.Minute) // 24m
	if st := e.get(sb.ID).State; st != provider.StateStarted {
		t.Fatalf("stopped during the extension: %s", st)
	}
	e.advance(2*time.Minute, time.Minute) // 26m
	if st := e.get(sb.ID).State; st != provider.StateStopped {
		t.Fatalf("after the extension: %s, want stopped", st)
	}
	if n := len(hook.actions()); n != 1 {
		t.Fatalf("%d notices; an extension does not re-announce", n)
	}

	// A run lease taken within the grace also postpones: here the destroy,
	// announced at 55m (an hour after the last activity, minus the grace).
	e.advance(28*time.Minute, time.Minute) // 54m
	if n := len(hook.actions()); n != 1 {
		t.Fatalf("%d notices at 54m", n)
	}
	e.advance(time.Minute, time.Minute) // 55m
	if got := hook.actions(); len(got) != 2 || got[1] != "destroy" {
		t.Fatalf("notices at 55m: %v", got)
	}
	if _, err := e.m.AcquireRunLease(t.Context(), p, 10*time.Minute); err != nil {
		t.Fatal(err)
	}
	e.advance(9*time.Minute, time.Minute) // 64m
	if st := e.get(sb.ID).State; st == provider.StateDestroyed {
		t.Fatal("destroyed under a run lease")
	}
	// The lease ended at 65m: a new idle period with its own announcement
	// (at 65m+55m) and destroy (at 65m+60m).
	e.advance(55*time.Minute, time.Minute) // 119m
	if got := hook.actions(); len(got) != 2 || e.get(sb.ID).State == provider.StateDestroyed {
		t.Fatalf("at 119m: notices %v, state %s", got, e.get(sb.ID).State)
	}
	e.advance(time.Minute, time.Minute) // 120m
	if got := hook.actions(); len(got) != 3 || got[2] != "destroy" {
		t.Fatalf("notices at 120m: %v", got)
	}
	e.advance(5*time.Minute, time.Minute) // 125m
	if st := e.get(sb.ID).State; st != provider.StateDestroyed {
		t.Fatalf("at 125m: %s, want destroyed", st)
	}

	// A failing webhook: the cleanup happens after the grace all the same.
	hook.mu.Lock()
	hook.status = http.StatusInternalServerError
	hook.mu.Unlock()
	sb2 := e.ensure(p).Sandbox
	e.advance(11*time.Minute, time.Minute)
	if st := e.get(sb2.ID).State; st != provider.StateStopped {
		t.Fatalf("with a failing webhook: %s, want stopped", st)
	}
	if e.reaper("notify", "error") < 1 {
		t.Fatal("failed webhook not counted")
	}
}

// TestEnsureSandboxConcurrent: concurrent calls for one project get one
// sandbox; a stopped sandbox is started, not replaced.
func TestEnsureSandboxConcurrent(t *testing.T) {
	e := newEnv(t)
	p := e.project("busy")
	var wg sync.WaitGroup
	ids := make([]string, 8)
	for i := range ids {
		wg.Add(1)
		go func() {
			defer wg.Done()
			res, err := e.m.EnsureSandbox(context.Background(), p)
			if err != nil {
				t.Error(err)
				return
			}
			ids[i] = res.Sandbox.ID
		}()
	}
	wg.Wait()
	for _, x := range ids {
		if x != ids[0] {
			t.Fatalf("concurrent ensures got different sandboxes: %v", ids)
		}
	}
	if n := e.prov.count("create"); n != 1 {
		t.Fatalf("%d creates", n)
	}
	if _, err := e.m.StopSandbox(t.Context(), ids[0]); err != nil {
		t.Fatal(err)
	}
	res := e.ensure(p)
	if res.Created || !res.Started || res.Sandbox.ID != ids[0] || res.Sandbox.State != provider.StateStarted {
		t.Fatalf("ensure of a stopped sandbox: %+v", res)
	}
	// Ready waits for the agent: with none connecting, EnsureSandbox fails.
	e2 := newEnv(t, func(c *Config) { c.ReadyTimeout = 100 * time.Millisecond })
	e2.prov.onUp = nil
	if _, err := e2.m.EnsureSandbox(t.Context(), e2.project("no-agent")); !errors.Is(err, ErrNotReady) {
		t.Fatalf("ensure without an agent: %v, want ErrNotReady", err)
	}
	// A failed create leaves nothing live behind.
	e3 := newEnv(t)
	p3 := e3.project("create-fails")
	e3.prov.failOnce("create", provider.ErrQuota)
	if _, err := e3.m.EnsureSandbox(t.Context(), p3); !errors.Is(err, provider.ErrQuota) {
		t.Fatalf("ensure with a failing create: %v", err)
	}
	if _, err := e3.meta.LiveSandbox(t.Context(), p3); !errors.Is(err, metastore.ErrNotFound) {
		t.Fatalf("a failed create left a live row: %v", err)
	}
	e3.ensure(p3)
}

// TestHeartbeats: heartbeats update activity and backup status of the
// sandbox they name, and only of their own project.
func TestHeartbeats(t *testing.T) {
	e := newEnv(t)
	p, other := e.project("hb"), e.project("other")
	sb := e.ensure(p).Sandbox
	before := e.get(sb.ID).LastActivity
	e.clock.Advance(time.Minute)
	w := e.clock.Now()
	e.m.OnHeartbeat(other, &pb.Heartbeat{SandboxId: sb.ID, LastWriteTime: timestamppb.New(w)})
	if got := e.get(sb.ID); !got.LastActivity.Equal(before) {
		t.Fatal("a heartbeat of another project changed the sandbox")
	}
	e.m.OnHeartbeat(p, &pb.Heartbeat{SandboxId: sb.ID, State: pb.AgentState_AGENT_STATE_SYNCING, LastWriteTime: timestamppb.New(w), PendingPaths: 3, PendingBytes: 99})
	got := e.get(sb.ID)
	if !got.LastActivity.Equal(w) || got.Backup != metastore.BackupDirty || got.PendingPaths != 3 || got.AgentState != "syncing" || !got.LastHeartbeat.Equal(w) {
		t.Fatalf("after a dirty heartbeat: %+v", got)
	}
	// A last_write_time in the future counts as now.
	e.m.OnHeartbeat(p, &pb.Heartbeat{SandboxId: sb.ID, State: pb.AgentState_AGENT_STATE_IDLE, Version: 4, Clean: true, LastWriteTime: timestamppb.New(w.Add(time.Hour))})
	got = e.get(sb.ID)
	if !got.LastActivity.Equal(w) || got.Backup != metastore.BackupClean || got.CleanVersion != 4 || got.Flushed {
		t.Fatalf("after a clean heartbeat: %+v", got)
	}
	// Flushed is set by a flush barrier only, and cleared by a change.
	e.commit(p)
	if err := e.m.flush(t.Context(), got); err != nil {
		t.Fatal(err)
	}
	if got := e.get(sb.ID); !got.Flushed || got.CleanVersion != 1 {
		t.Fatalf("after a flush: %+v", got)
	}
	e.m.OnHeartbeat(p, &pb.Heartbeat{SandboxId: sb.ID, State: pb.AgentState_AGENT_STATE_SYNCING, Version: 1, PendingPaths: 1})
	if got := e.get(sb.ID); got.Flushed {
		t.Fatal("a change after the flush left it flushed")
	}
	e.m.OnHeartbeat(p, &pb.Heartbeat{SandboxId: "sbx_unknown"}) // ignored
}

// TestDestroySandboxRefusal: destroy refuses an unflushed sandbox it cannot
// flush; it flushes and verifies one whose agent runs; --force says what it
// loses.
func TestDestroySandboxRefusal(t *testing.T) {
	e := newEnv(t)
	p := e.project("manual")
	sb := e.ensure(p).Sandbox
	e.write(p)
	e.agents.setFlushErr(errors.New("flush timed out"))
	if _, err := e.m.DestroySandbox(t.Context(), sb.ID, false); !errors.Is(err, ErrRefused) {
		t.Fatalf("destroy of an unflushable sandbox: %v, want ErrRefused", err)
	}
	e.agents.setFlushErr(nil)
	d, err := e.m.DestroySandbox(t.Context(), sb.ID, false)
	if err != nil || d.View.State != provider.StateDestroyed || d.Lost != "" {
		t.Fatalf("destroy after a flush: %+v, %v", d, err)
	}
	sb2 := e.ensure(p).Sandbox
	e.agents.beat(p, &pb.Heartbeat{SessionId: "x", SandboxId: sb2.ID, State: pb.AgentState_AGENT_STATE_SYNCING, Version: 1, PendingPaths: 5, PendingBytes: 1234})
	e.agents.down(sb2.ID)
	if _, err := e.m.DestroySandbox(t.Context(), sb2.ID, false); !errors.Is(err, ErrRefused) {
		t.Fatalf("destroy of a dirty sandbox without agent: %v", err)
	}
	d, err = e.m.DestroySandbox(t.Context(), sb2.ID, true)
	if err != nil || d.View.State != provider.StateDestroyed || !strings.Contains(d.Lost, "5 pending paths") {
		t.Fatalf("forced destroy: %+v, %v", d, err)
	}
}

// TestStateMachine: observed transitions follow the provider, illegal ones
// are recorded and logged; slow transitions are followed tick by tick.
func TestStateMachine(t *testing.T) {
	e := newEnv(t)
	p := e.project("sm")
	sb := e.ensure(p).Sandbox
	// The provider reports it stopped, then started again behind our back.
	e.prov.set(sb.ProviderID, provider.StateStopped)
	if _, err := e.m.Reconcile(t.Context()); err != nil {
		t.Fatal(err)
	}
	if st := e.get(sb.ID).State; st != provider.StateStopped {
		t.Fatalf("after reconcile: %s", st)
	}
	e.prov.set(sb.ProviderID, provider.StateStarted)
	if _, err := e.m.Reconcile(t.Context()); err != nil {
		t.Fatal(err)
	}
	got := e.get(sb.ID)
	if got.State != provider.StateStarted || !strings.Contains(got.LastError, "illegal transition stopped -> started") {
		t.Fatalf("after an illegal observed transition: %s %q", got.State, got.LastError)
	}
	ivs, _ := e.meta.SandboxIntervals(t.Context(), p, time.Time{})
	if last := ivs[len(ivs)-1]; !last.Illegal {
		t.Fatalf("last interval not marked illegal: %+v", last)
	}
	if e.reaper("illegal_transition", "observed") != 2 { // started->stopped is illegal too (no stopping seen)
		t.Fatalf("illegal transitions counted: %v", e.reaper("illegal_transition", "observed"))
	}

	// Slow provider: stopping is followed until stopped.
	e2 := newEnv(t, func(c *Config) { c.Policy = policy.Policy{StopAfter: time.Minute} })
	p2 := e2.project("slow")
	e2.prov.slow = true
	created := make(chan string, 1)
	e2.prov.created = func(id string) { created <- id }
	done := make(chan Ensured)
	go func() { done <- e2.ensure(p2) }()
	<-created // the box exists (creating)
	e2.prov.settle()
	sb2 := (<-done).Sandbox
	e2.advance(2*time.Minute, time.Minute)
	if st := e2.get(sb2.ID).State; st != provider.StateStopping {
		t.Fatalf("slow stop: %s, want stopping", st)
	}
	e2.prov.settle()
	e2.tick()
	if st := e2.get(sb2.ID).State; st != provider.StateStopped {
		t.Fatalf("after the provider stopped it: %s", st)
	}
}

// TestReconcilerOrphans: an orphan (provider has it, database does not) is
// flushed and destroyed; a row whose sandbox vanished is marked destroyed;
// a failed orphan flush keeps it.
func TestReconcilerOrphans(t *testing.T) {
	e := newEnv(t, func(c *Config) { c.OrphanGrace = time.Minute })
	p := e.project("orphans")
	// An orphan with a connected agent.
	orphan, err := e.prov.Create(t.Context(), provider.CreateSpec{Labels: map[string]string{
		provider.LabelProject: p, provider.LabelManaged: "true", LabelSandbox: "sbx_lost"}})
	if err != nil {
		t.Fatal(err)
	}
	e.agents.up(p, "sbx_lost", 0)
	// Not sandkeep's: left alone.
	foreign, _ := e.prov.Create(t.Context(), provider.CreateSpec{Labels: map[string]string{"team": "x"}})
	r, err := e.m.Reconcile(t.Context())
	if err != nil {
		t.Fatal(err)
	}
	if r.Orphans != 0 || r.OrphansKept != 1 {
		t.Fatalf("a young orphan: %+v", r)
	}
	e.clock.Advance(2 * time.Minute)
	e.agents.setFlushErr(errors.New("no"))
	if r, _ = e.m.Reconcile(t.Context()); r.OrphansKept != 1 || e.prov.state(orphan.ID) != provider.StateStarted {
		t.Fatalf("an orphan whose flush failed: %+v, %s", r, e.prov.state(orphan.ID))
	}
	e.agents.setFlushErr(nil)
	flushes := e.agents.flushCount()
	if r, _ = e.m.Reconcile(t.Context()); r.Orphans != 1 || e.prov.state(orphan.ID) != provider.StateDestroyed || e.agents.flushCount() != flushes+1 {
		t.Fatalf("orphan: %+v, %s", r, e.prov.state(orphan.ID))
	}
	if e.prov.state(foreign.ID) != provider.StateStarted {
		t.Fatal("a sandbox without sandkeep's label was touched")
	}
	// A row whose sandbox vanished.
	sb := e.ensure(p).Sandbox
	e.prov.mu.Lock()
	delete(e.prov.boxes, sb.ProviderID)
	e.prov.mu.Unlock()
	if r, _ = e.m.Reconcile(t.Context()); r.MarkedDestroyed != 1 {
		t.Fatalf("vanished: %+v", r)
	}
	if st := e.get(sb.ID).State; st != provider.StateDestroyed {
		t.Fatalf("vanished sandbox: %s", st)
	}
	// A create whose provider id was never recorded is adopted, not
	// destroyed.
	sb3 := e.ensure(p).Sandbox
	if _, err := e.meta.UpdateSandbox(t.Context(), sb3.ID, func(s *metastore.Sandbox) error { s.ProviderID = ""; return nil }); err != nil {
		t.Fatal(err)
	}
	if r, _ = e.m.Reconcile(t.Context()); r.Orphans != 0 {
		t.Fatalf("adopted sandbox taken for an orphan: %+v", r)
	}
	if got := e.get(sb3.ID); got.ProviderID != sb3.ProviderID {
		t.Fatalf("provider id not adopted: %q", got.ProviderID)
	}
}

// TestNoProvider: without a provider the lifecycle operations fail with
// ErrNoProvider; leases, policies and cost still work.
func TestNoProvider(t *testing.T) {
	e := newEnv(t, func(c *Config) { c.Provider = nil })
	p := e.project("none")
	if _, err := e.m.EnsureSandbox(t.Context(), p); !errors.Is(err, ErrNoProvider) {
		t.Fatalf("EnsureSandbox: %v", err)
	}
	if _, err := e.m.AcquireRunLease(t.Context(), p, time.Minute); err != nil {
		t.Fatal(err)
	}
	if err := e.m.Tick(t.Context()); err != nil {
		t.Fatal(err)
	}
	if _, err := e.m.Cost(t.Context(), "", time.Time{}); err != nil {
		t.Fatal(err)
	}
}

// TestDeleteHistory: with delete-history-after, a project whose sandbox was
// destroyed loses its whole history (objects and rows) once idle that long,
// and never while a sandbox is live.
func TestDeleteHistory(t *testing.T) {
	e := newEnv(t, func(c *Config) {
		c.Policy = policy.Policy{StopAfter: 10 * time.Minute, DestroyAfter: time.Hour, DeleteHistoryAfter: 3 * time.Hour}
	})
	p := e.project("ephemeral")
	sb := e.ensure(p).Sandbox
	e.write(p)
	e.advance(2*time.Hour, 10*time.Minute)
	if st := e.get(sb.ID).State; st != provider.StateDestroyed {
		t.Fatalf("after 2h: %s", st)
	}
	if _, err := e.meta.GetProject(t.Context(), p); err != nil {
		t.Fatalf("history deleted early: %v", err)
	}
	e.advance(90*time.Minute, 10*time.Minute)
	if _, err := e.meta.GetProject(t.Context(), p); !errors.Is(err, metastore.ErrNotFound) {
		t.Fatalf("project after delete-history-after: %v", err)
	}
	if e.reaper("delete_history", "ok") != 1 {
		t.Fatal("delete_history not counted")
	}
}

// fencedLeader leads (TryLead) until deposed, and then fails its fence,
// as a leader whose database session ended behind its back does.
type fencedLeader struct{ deposed atomic.Bool }

func (l *fencedLeader) TryLead(context.Context) (bool, error) { return true, nil }
func (l *fencedLeader) Resign()                               {}
func (l *fencedLeader) Fence(context.Context) error {
	if l.deposed.Load() {
		return metastore.ErrDeposed
	}
	return nil
}

// TestDeposedLeaderCannotDestroy: a destroy the loop decides is refused
// once the replica is deposed, and carried out once it leads again.
func TestDeposedLeaderCannotDestroy(t *testing.T) {
	lead := &fencedLeader{}
	e := newEnv(t, func(c *Config) {
		c.Policy = policy.Policy{StopAfter: time.Minute, DestroyAfter: 5 * time.Minute}
		c.Leader = lead
	})
	p := e.project("fenced")
	sb := e.ensure(p).Sandbox
	e.write(p)
	e.advance(2*time.Minute, time.Minute) // stopped
	lead.deposed.Store(true)
	e.advance(10*time.Minute, time.Minute) // destroy due, decided, refused
	if n := e.prov.count("delete"); n != 0 {
		t.Fatalf("a deposed leader destroyed: %d deletes", n)
	}
	if st := e.get(sb.ID).State; st == provider.StateDestroyed {
		t.Fatalf("state %s after a refused destroy", st)
	}
	lead.deposed.Store(false)
	e.advance(time.Minute, time.Minute)
	if st := e.get(sb.ID).State; st != provider.StateDestroyed || e.prov.count("delete") != 1 {
		t.Fatalf("leading again: state %s, %d deletes", st, e.prov.count("delete"))
	}
}
