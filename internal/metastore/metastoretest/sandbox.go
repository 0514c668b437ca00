package metastoretest

import (
	"errors"
	"sync"
	"testing"
	"time"

	"github.com/sandkeep/sandkeep/internal/metastore"
	"github.com/sandkeep/sandkeep/internal/policy"
	"github.com/sandkeep/sandkeep/internal/provider"
)

// LifecycleStore is a store with the lifecycle tables.
type LifecycleStore interface {
	metastore.Store
	metastore.SandboxStore
}

// RunSandboxStore runs the conformance suite of metastore.SandboxStore.
// open must return a new, empty, migrated store; it is closed when the test
// ends.
func RunSandboxStore(t *testing.T, open func(t *testing.T) LifecycleStore) {
	runGroups(t, open, []group[LifecycleStore]{
		{"Registry", testSandboxRegistry},
		{"StateMachine", testSandboxStateMachine},
		{"OneLivePerProject", testOneLivePerProject},
		{"RunLeases", testRunLeases},
		{"Policies", testLifecyclePolicies},
		{"StoredBytesAndTokens", testStoredBytesAndTokens},
		{"DeleteProjectCascades", testLifecycleDeleteProject},
	})
}

var t0 = time.Date(2030, 1, 2, 3, 4, 5, 123456000, time.UTC)

func mkProject(t *testing.T, s LifecycleStore, name string) string {
	t.Helper()
	p, err := s.CreateProject(t.Context(), name)
	if err != nil {
		t.Fatal(err)
	}
	return p.ID
}

func mkSandbox(t *testing.T, s LifecycleStore, projectID string, state provider.State, at time.Time) metastore.Sandbox {
	t.Helper()
	sb, err := s.CreateSandbox(t.Context(), metastore.Sandbox{ID: metastore.NewSandboxID(), ProjectID: projectID, Provider: "fake", State: state, CreatedAt: at})
	if err != nil {
		t.Fatalf("CreateSandbox: %v", err)
	}
	return sb
}

func testSandboxRegistry(t *testing.T, s LifecycleStore) {
	ctx := t.Context()
	pid := mkProject(t, s, "reg")
	if _, err := s.CreateSandbox(ctx, metastore.Sandbox{ID: "sbx_x", ProjectID: "prj_nope", Provider: "fake", State: provider.StateCreating}); !errors.Is(err, metastore.ErrNotFound) {
		t.Fatalf("CreateSandbox of an unknown project: %v, want ErrNotFound", err)
	}
	if _, err := s.CreateSandbox(ctx, metastore.Sandbox{ID: "sbx_x", ProjectID: pid, Provider: "fake", State: "bogus"}); !errors.Is(err, metastore.ErrInvalid) {
		t.Fatalf("CreateSandbox with a bad state: %v, want ErrInvalid", err)
	}
	sb := mkSandbox(t, s, pid, provider.StateCreating, t0)
	got, err := s.GetSandbox(ctx, sb.ID)
	if err != nil {
		t.Fatal(err)
	}
	if got.ProjectID != pid || got.State != provider.StateCreating || !got.CreatedAt.Equal(t0) || !got.StateSince.Equal(t0) ||
		!got.LastActivity.Equal(t0) || got.Backup != metastore.BackupDirty || got.Provider != "fake" {
		t.Fatalf("GetSandbox: %+v", got)
	}
	if _, err := s.GetSandbox(ctx, "sbx_unknown"); !errors.Is(err, metastore.ErrNotFound) {
		t.Fatalf("GetSandbox unknown: %v", err)
	}
	live, err := s.LiveSandbox(ctx, pid)
	if err != nil || live.ID != sb.ID {
		t.Fatalf("LiveSandbox: %v %v", live.ID, err)
	}

	// UpdateSandbox changes the mutable fields only, atomically.
	hb := t0.Add(time.Minute)
	up, err := s.UpdateSandbox(ctx, sb.ID, func(x *metastore.Sandbox) error {
		x.ProviderID = "prov-1"
		x.LastActivity = hb
		x.Backup, x.CleanVersion, x.Flushed, x.VerifiedVersion = metastore.BackupClean, 7, true, 7
		x.FlushFailures, x.LastAttempt, x.LastFlushError = 2, hb, "boom"
		x.AgentState, x.AgentVersion, x.PendingPaths, x.PendingBytes, x.LastHeartbeat = "idle", 7, 3, 4, hb
		x.NotifiedAt["stop"] = hb
		x.ExtendedUntil = hb.Add(time.Hour)
		x.TokenHash, x.LastError = "abc", "err"
		x.State, x.ProjectID = provider.StateStarted, "prj_other" // ignored
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	got, err = s.GetSandbox(ctx, sb.ID)
	if err != nil {
		t.Fatal(err)
	}
	if got.State != provider.StateCreating || got.ProjectID != pid {
		t.Fatalf("UpdateSandbox changed state or project: %+v", got)
	}
	if got.ProviderID != "prov-1" || !got.LastActivity.Equal(hb) || got.Backup != metastore.BackupClean || got.CleanVersion != 7 ||
		!got.Flushed || got.VerifiedVersion != 7 || got.FlushFailures != 2 || !got.LastAttempt.Equal(hb) || got.LastFlushError != "boom" ||
		got.AgentState != "idle" || got.AgentVersion != 7 || got.PendingPaths != 3 || got.PendingBytes != 4 || !got.LastHeartbeat.Equal(hb) ||
		!got.NotifiedAt["stop"].Equal(hb) || !got.ExtendedUntil.Equal(hb.Add(time.Hour)) || got.TokenHash != "abc" || got.LastError != "err" {
		t.Fatalf("after UpdateSandbox: %+v", got)
	}
	if up.ProviderID != "prov-1" || up.State != provider.StateCreating {
		t.Fatalf("UpdateSandbox returned %+v", up)
	}
	boom := errors.New("no")
	if _, err := s.UpdateSandbox(ctx, sb.ID, func(x *metastore.Sandbox) error { x.ProviderID = "changed"; return boom }); !errors.Is(err, boom) {
		t.Fatalf("UpdateSandbox with a failing fn: %v", err)
	}
	if got, _ := s.GetSandbox(ctx, sb.ID); got.ProviderID != "prov-1" {
		t.Fatalf("a failed UpdateSandbox wrote: %q", got.ProviderID)
	}
	if _, err := s.UpdateSandbox(ctx, "sbx_unknown", func(*metastore.Sandbox) error { return nil }); !errors.Is(err, metastore.ErrNotFound) {
		t.Fatalf("UpdateSandbox unknown: %v", err)
	}

	// Listing: by project, live only.
	pid2 := mkProject(t, s, "reg2")
	sb2 := mkSandbox(t, s, pid2, provider.StateStarted, t0)
	if _, err := s.TransitionSandbox(ctx, sb2.ID, provider.StateDestroyed, t0.Add(time.Hour), false, ""); err != nil {
		t.Fatal(err)
	}
	all, err := s.ListSandboxes(ctx, metastore.SandboxFilter{})
	if err != nil || len(all) != 2 {
		t.Fatalf("ListSandboxes: %d, %v", len(all), err)
	}
	liveOnly, err := s.ListSandboxes(ctx, metastore.SandboxFilter{LiveOnly: true})
	if err != nil || len(liveOnly) != 1 || liveOnly[0].ID != sb.ID {
		t.Fatalf("ListSandboxes live: %v, %v", liveOnly, err)
	}
	one, err := s.ListSandboxes(ctx, metastore.SandboxFilter{ProjectID: pid2})
	if err != nil || len(one) != 1 || one[0].ID != sb2.ID {
		t.Fatalf("ListSandboxes of a project: %v, %v", one, err)
	}
	if _, err := s.LiveSandbox(ctx, pid2); !errors.Is(err, metastore.ErrNotFound) {
		t.Fatalf("LiveSandbox of a project whose sandbox is destroyed: %v", err)
	}
}

func testSandboxStateMachine(t *testing.T, s LifecycleStore) {
	ctx := t.Context()
	pid := mkProject(t, s, "sm")
	sb := mkSandbox(t, s, pid, provider.StateCreating, t0)
	step := func(to provider.State, at time.Time, observed bool) metastore.Transition {
		t.Helper()
		tr, err := s.TransitionSandbox(ctx, sb.ID, to, at, observed, "note")
		if err != nil {
			t.Fatalf("-> %s: %v", to, err)
		}
		return tr
	}
	step(provider.StateStarted, t0.Add(1*time.Minute), false)
	if tr := step(provider.StateStarted, t0.Add(2*time.Minute), false); tr.Changed {
		t.Fatal("staying in a state changed something")
	}
	// Illegal, not observed: refused.
	if _, err := s.TransitionSandbox(ctx, sb.ID, provider.StateArchived, t0.Add(3*time.Minute), false, ""); !errors.Is(err, metastore.ErrIllegalTransition) {
		t.Fatalf("started -> archived: %v, want ErrIllegalTransition", err)
	}
	step(provider.StateStopping, t0.Add(10*time.Minute), false)
	step(provider.StateStopped, t0.Add(11*time.Minute), false)
	// Illegal but observed: recorded as such.
	tr := step(provider.StateStarted, t0.Add(20*time.Minute), true)
	if !tr.Illegal || !tr.Changed || tr.From != provider.StateStopped {
		t.Fatalf("observed stopped -> started: %+v", tr)
	}
	got, _ := s.GetSandbox(ctx, sb.ID)
	if got.State != provider.StateStarted || !got.StateSince.Equal(t0.Add(20*time.Minute)) || got.LastError == "" {
		t.Fatalf("after an illegal observed transition: %+v", got)
	}
	step(provider.StateDestroyed, t0.Add(30*time.Minute), false)
	if _, err := s.TransitionSandbox(ctx, sb.ID, provider.StateStarted, t0.Add(31*time.Minute), true, ""); !errors.Is(err, metastore.ErrIllegalTransition) {
		t.Fatalf("destroyed -> started (observed): %v, want ErrIllegalTransition", err)
	}
	ivs, err := s.SandboxIntervals(ctx, pid, time.Time{})
	if err != nil {
		t.Fatal(err)
	}
	want := []struct {
		state    provider.State
		from, to time.Duration
		illegal  bool
	}{
		{provider.StateCreating, 0, 1 * time.Minute, false},
		{provider.StateStarted, 1 * time.Minute, 10 * time.Minute, false},
		{provider.StateStopping, 10 * time.Minute, 11 * time.Minute, false},
		{provider.StateStopped, 11 * time.Minute, 20 * time.Minute, false},
		{provider.StateStarted, 20 * time.Minute, 30 * time.Minute, true},
		{provider.StateDestroyed, 30 * time.Minute, 30 * time.Minute, false},
	}
	if len(ivs) != len(want) {
		t.Fatalf("intervals: %+v", ivs)
	}
	for i, w := range want {
		iv := ivs[i]
		if iv.State != w.state || !iv.From.Equal(t0.Add(w.from)) || !iv.To.Equal(t0.Add(w.to)) || iv.Illegal != w.illegal || iv.SandboxID != sb.ID || iv.ProjectID != pid {
			t.Errorf("interval %d: %+v, want %+v", i, iv, w)
		}
	}
	// since drops the intervals that ended before it.
	ivs, err = s.SandboxIntervals(ctx, "", t0.Add(15*time.Minute))
	if err != nil || len(ivs) != 3 || ivs[0].State != provider.StateStopped {
		t.Fatalf("intervals since: %+v, %v", ivs, err)
	}
	// An open interval has a zero To.
	sb3 := mkSandbox(t, s, mkProject(t, s, "sm2"), provider.StateStarted, t0)
	ivs, err = s.SandboxIntervals(ctx, sb3.ProjectID, time.Time{})
	if err != nil || len(ivs) != 1 || !ivs[0].To.IsZero() {
		t.Fatalf("open interval: %+v, %v", ivs, err)
	}
}

func testOneLivePerProject(t *testing.T, s LifecycleStore) {
	ctx := t.Context()
	pid := mkProject(t, s, "one")
	first := mkSandbox(t, s, pid, provider.StateCreating, t0)
	if _, err := s.CreateSandbox(ctx, metastore.Sandbox{ID: metastore.NewSandboxID(), ProjectID: pid, Provider: "fake", State: provider.StateCreating}); !errors.Is(err, metastore.ErrAlreadyExists) {
		t.Fatalf("a second live sandbox: %v, want ErrAlreadyExists", err)
	}
	// Concurrent creates: exactly one wins.
	pid2 := mkProject(t, s, "race")
	var wg sync.WaitGroup
	var mu sync.Mutex
	wins := 0
	for range 8 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			_, err := s.CreateSandbox(ctx, metastore.Sandbox{ID: metastore.NewSandboxID(), ProjectID: pid2, Provider: "fake", State: provider.StateCreating})
			switch {
			case err == nil:
				mu.Lock()
				wins++
				mu.Unlock()
			case !errors.Is(err, metastore.ErrAlreadyExists):
				t.Errorf("concurrent CreateSandbox: %v", err)
			}
		}()
	}
	wg.Wait()
	if wins != 1 {
		t.Fatalf("%d concurrent creates won, want 1", wins)
	}
	// Once destroyed, the project may have a new one.
	if _, err := s.TransitionSandbox(ctx, first.ID, provider.StateDestroyed, t0.Add(time.Minute), false, ""); err != nil {
		t.Fatal(err)
	}
	mkSandbox(t, s, pid, provider.StateCreating, t0.Add(2*time.Minute))
}

func testRunLeases(t *testing.T, s LifecycleStore) {
	ctx := t.Context()
	pid := mkProject(t, s, "lease")
	if u, err := s.RunLeaseUntil(ctx, pid); err != nil || !u.IsZero() {
		t.Fatalf("RunLeaseUntil without leases: %v, %v", u, err)
	}
	if _, err := s.AcquireRunLease(ctx, "prj_nope", t0, time.Minute); !errors.Is(err, metastore.ErrNotFound) {
		t.Fatalf("lease of an unknown project: %v", err)
	}
	if _, err := s.AcquireRunLease(ctx, pid, t0, 0); !errors.Is(err, metastore.ErrInvalid) {
		t.Fatalf("lease with ttl 0: %v", err)
	}
	a, err := s.AcquireRunLease(ctx, pid, t0, 10*time.Minute)
	if err != nil {
		t.Fatal(err)
	}
	if a.ProjectID != pid || !a.ExpiresAt.Equal(t0.Add(10*time.Minute)) || a.ID == "" {
		t.Fatalf("lease: %+v", a)
	}
	b, err := s.AcquireRunLease(ctx, pid, t0, 5*time.Minute)
	if err != nil {
		t.Fatal(err)
	}
	if u, _ := s.RunLeaseUntil(ctx, pid); !u.Equal(t0.Add(10 * time.Minute)) {
		t.Fatalf("RunLeaseUntil: %v", u)
	}
	r, err := s.RenewRunLease(ctx, b.ID, t0.Add(4*time.Minute), 20*time.Minute)
	if err != nil || !r.ExpiresAt.Equal(t0.Add(24*time.Minute)) {
		t.Fatalf("renew: %+v, %v", r, err)
	}
	if u, _ := s.RunLeaseUntil(ctx, pid); !u.Equal(t0.Add(24 * time.Minute)) {
		t.Fatalf("RunLeaseUntil after renew: %v", u)
	}
	// Renewing a lease that expired fails: it protected nothing meanwhile.
	if _, err := s.RenewRunLease(ctx, a.ID, t0.Add(11*time.Minute), time.Minute); !errors.Is(err, metastore.ErrLeaseEnded) {
		t.Fatalf("renew an expired lease: %v, want ErrLeaseEnded", err)
	}
	if _, err := s.RenewRunLease(ctx, "lse_nope", t0, time.Minute); !errors.Is(err, metastore.ErrNotFound) {
		t.Fatalf("renew unknown: %v", err)
	}
	active, err := s.ListRunLeases(ctx, pid, t0.Add(11*time.Minute))
	if err != nil || len(active) != 1 || active[0].ID != b.ID {
		t.Fatalf("ListRunLeases: %+v, %v", active, err)
	}
	// Release ends it early: its end is the release time.
	rel, err := s.ReleaseRunLease(ctx, b.ID, t0.Add(12*time.Minute))
	if err != nil || !rel.ReleasedAt.Equal(t0.Add(12*time.Minute)) || !rel.Until().Equal(t0.Add(12*time.Minute)) {
		t.Fatalf("release: %+v, %v", rel, err)
	}
	if _, err := s.ReleaseRunLease(ctx, b.ID, t0.Add(13*time.Minute)); err != nil {
		t.Fatalf("release again: %v", err)
	}
	if u, _ := s.RunLeaseUntil(ctx, pid); !u.Equal(t0.Add(12 * time.Minute)) {
		t.Fatalf("RunLeaseUntil after release: %v", u)
	}
	if _, err := s.RenewRunLease(ctx, b.ID, t0.Add(13*time.Minute), time.Minute); !errors.Is(err, metastore.ErrLeaseEnded) {
		t.Fatalf("renew a released lease: %v", err)
	}
	if active, _ := s.ListRunLeases(ctx, pid, t0.Add(13*time.Minute)); len(active) != 0 {
		t.Fatalf("active leases after release: %+v", active)
	}
	if _, err := s.ReleaseRunLease(ctx, "lse_nope", t0); !errors.Is(err, metastore.ErrNotFound) {
		t.Fatalf("release unknown: %v", err)
	}
}

func testLifecyclePolicies(t *testing.T, s LifecycleStore) {
	ctx := t.Context()
	pid := mkProject(t, s, "pol")
	if _, err := s.GetLifecyclePolicy(ctx, pid); !errors.Is(err, metastore.ErrNotFound) {
		t.Fatalf("policy before set: %v", err)
	}
	stop, never := 3*time.Minute, time.Duration(0)
	p := metastore.LifecyclePolicy{ProjectID: pid, Override: policy.Override{StopAfter: &stop, DeleteHistoryAfter: &never}, WebhookURL: "http://127.0.0.1:1/hook", UpdatedAt: t0}
	if err := s.SetLifecyclePolicy(ctx, p); err != nil {
		t.Fatal(err)
	}
	got, err := s.GetLifecyclePolicy(ctx, pid)
	if err != nil {
		t.Fatal(err)
	}
	if got.WebhookURL != p.WebhookURL || got.Override.StopAfter == nil || *got.Override.StopAfter != stop ||
		got.Override.DeleteHistoryAfter == nil || *got.Override.DeleteHistoryAfter != 0 || got.Override.DestroyAfter != nil || !got.UpdatedAt.Equal(t0) {
		t.Fatalf("policy: %+v", got)
	}
	p.Override = policy.Override{}
	p.WebhookURL = ""
	if err := s.SetLifecyclePolicy(ctx, p); err != nil {
		t.Fatal(err)
	}
	if got, _ := s.GetLifecyclePolicy(ctx, pid); got.Override.StopAfter != nil || got.WebhookURL != "" {
		t.Fatalf("replaced policy: %+v", got)
	}
	if err := s.SetLifecyclePolicy(ctx, metastore.LifecyclePolicy{ProjectID: "prj_nope"}); !errors.Is(err, metastore.ErrNotFound) {
		t.Fatalf("policy of an unknown project: %v", err)
	}
}

func testStoredBytesAndTokens(t *testing.T, s LifecycleStore) {
	ctx := t.Context()
	pid := mkProject(t, s, "bytes")
	if n, err := s.StoredBytes(ctx, pid); err != nil || n != 0 {
		t.Fatalf("StoredBytes of an empty project: %d, %v", n, err)
	}
	for i := byte(1); i <= 2; i++ {
		epoch, err := s.PackEpoch(ctx, pid)
		if err != nil {
			t.Fatal(err)
		}
		if err := s.AddPack(ctx, metastore.Pack{ProjectID: pid, ID: [32]byte{i}, Type: metastore.BlobData, Size: 1000 * int64(i), Epoch: epoch},
			[]metastore.BlobLocation{{ID: [32]byte{i, 1}, Type: metastore.BlobData, Length: 10, RawLength: 10}}); err != nil {
			t.Fatal(err)
		}
	}
	if n, err := s.StoredBytes(ctx, pid); err != nil || n != 3000 {
		t.Fatalf("StoredBytes: %d, %v", n, err)
	}
	if _, err := s.StoredBytes(ctx, "prj_nope"); !errors.Is(err, metastore.ErrNotFound) {
		t.Fatalf("StoredBytes unknown: %v", err)
	}
	hash := "0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef"
	if err := s.CreateToken(ctx, metastore.Token{Hash: hash, Kind: metastore.TokenSandbox, ProjectID: pid}); err != nil {
		t.Fatal(err)
	}
	if err := s.RevokeToken(ctx, hash); err != nil {
		t.Fatal(err)
	}
	tok, err := s.GetToken(ctx, hash)
	if err != nil || !tok.Revoked {
		t.Fatalf("token after RevokeToken: %+v, %v", tok, err)
	}
	if err := s.RevokeToken(ctx, "unknown"); err != nil {
		t.Fatalf("RevokeToken unknown: %v", err)
	}
}

func testLifecycleDeleteProject(t *testing.T, s LifecycleStore) {
	ctx := t.Context()
	pid := mkProject(t, s, "doomed")
	sb := mkSandbox(t, s, pid, provider.StateStarted, t0)
	if _, err := s.AcquireRunLease(ctx, pid, t0, time.Hour); err != nil {
		t.Fatal(err)
	}
	stop := time.Minute
	if err := s.SetLifecyclePolicy(ctx, metastore.LifecyclePolicy{ProjectID: pid, Override: policy.Override{StopAfter: &stop}}); err != nil {
		t.Fatal(err)
	}
	if err := s.DeleteProject(ctx, pid); err != nil {
		t.Fatal(err)
	}
	if _, err := s.GetSandbox(ctx, sb.ID); !errors.Is(err, metastore.ErrNotFound) {
		t.Fatalf("sandbox after DeleteProject: %v", err)
	}
	if ivs, err := s.SandboxIntervals(ctx, pid, time.Time{}); err != nil || len(ivs) != 0 {
		t.Fatalf("intervals after DeleteProject: %v, %v", ivs, err)
	}
	if u, err := s.RunLeaseUntil(ctx, pid); err != nil || !u.IsZero() {
		t.Fatalf("leases after DeleteProject: %v, %v", u, err)
	}
	if _, err := s.GetLifecyclePolicy(ctx, pid); !errors.Is(err, metastore.ErrNotFound) {
		t.Fatalf("policy after DeleteProject: %v", err)
	}
}
