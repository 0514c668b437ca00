package cluster

import (
	"context"
	"errors"
	"fmt"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"github.com/sandkeep/sandkeep/internal/metastore"
	"github.com/sandkeep/sandkeep/internal/metastore/sqlitestore"
	"github.com/sandkeep/sandkeep/internal/sessions"
)

// fakeLocal is a replica's agent sessions: the projects it holds, and
// what their agents answer.
type fakeLocal struct {
	mu       sync.Mutex
	projects map[string]int64 // project -> version its agent answers
	fail     map[string]string
	calls    []string
}

func (f *fakeLocal) answer(kind, project string) (int64, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.calls = append(f.calls, kind+" "+project)
	v, ok := f.projects[project]
	if !ok {
		return 0, sessions.ErrNoAgent
	}
	if msg := f.fail[project]; msg != "" {
		return 0, fmt.Errorf("%w: %s", sessions.ErrAgentFailed, msg)
	}
	return v, nil
}

func (f *fakeLocal) Flush(_ context.Context, p string, _ time.Duration) (int64, error) {
	return f.answer("flush", p)
}

func (f *fakeLocal) Rollback(_ context.Context, p string, v int64) (int64, error) {
	return f.answer(fmt.Sprintf("rollback(%d)", v), p)
}

func (f *fakeLocal) Agents(string) []sessions.Info { return nil }
func (f *fakeLocal) Connected() int                { return len(f.projects) }

func newNode(t *testing.T, st metastore.ClusterStore, id string, local *fakeLocal) *Node {
	t.Helper()
	n := New(Config{ID: id, Addr: id + ":7420", Store: st, Local: local})
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { defer close(done); _ = n.Run(ctx) }()
	t.Cleanup(func() { cancel(); <-done })
	return n
}

// TestRouting: a command for an agent on another replica goes through the
// store's mailbox (no notifier: polling) and comes back with its answer;
// failures keep their meaning; a dead replica's routes are ignored.
func TestRouting(t *testing.T) {
	st, err := sqlitestore.Open(t.Context(), filepath.Join(t.TempDir(), "meta.db"))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { st.Close() })
	la := &fakeLocal{projects: map[string]int64{"prj_a": 7, "prj_bad": 1}, fail: map[string]string{"prj_bad": "disk full"}}
	lb := &fakeLocal{projects: map[string]int64{}}
	a := newNode(t, st, "rep_a", la)
	b := newNode(t, st, "rep_b", lb)
	// Register a's sessions as its registry would (Run has registered a).
	for _, p := range []string{"prj_a", "prj_bad"} {
		a.OnSession(p, "ses_"+p, true)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if err := a.beat(ctx); err != nil {
		t.Fatal(err)
	}
	if err := b.beat(ctx); err != nil {
		t.Fatal(err)
	}

	if v, err := b.Flush(ctx, "prj_a", time.Second); err != nil || v != 7 {
		t.Fatalf("flush through b: %d, %v", v, err)
	}
	if v, err := b.Rollback(ctx, "prj_a", 3); err != nil || v != 7 {
		t.Fatalf("rollback through b: %d, %v", v, err)
	}
	if _, err := b.Flush(ctx, "prj_bad", time.Second); !errors.Is(err, sessions.ErrAgentFailed) {
		t.Fatalf("flush of a failing agent through b: %v", err)
	}
	if _, err := b.Flush(ctx, "prj_none", time.Second); !errors.Is(err, sessions.ErrNoAgent) {
		t.Fatalf("flush of a project with no agent: %v", err)
	}
	la.mu.Lock()
	calls := fmt.Sprint(la.calls)
	la.mu.Unlock()
	if calls != "[flush prj_a rollback(3) prj_a flush prj_bad]" {
		t.Fatalf("replica a ran %s", calls)
	}

	// The session closed on a: b no longer routes there.
	a.OnSession("prj_a", "ses_prj_a", false)
	if _, err := b.Flush(ctx, "prj_a", time.Second); !errors.Is(err, sessions.ErrNoAgent) {
		t.Fatalf("flush after the session closed: %v", err)
	}
	// A route held by a replica that stopped heartbeating is ignored.
	if err := st.SetAgentRoute(ctx, metastore.AgentRoute{SessionID: "ses_old", ProjectID: "prj_a", ReplicaID: "rep_dead"}); err != nil {
		t.Fatal(err)
	}
	if _, err := b.Flush(ctx, "prj_a", time.Second); !errors.Is(err, sessions.ErrNoAgent) {
		t.Fatalf("flush routed to a dead replica: %v", err)
	}
	rs, err := b.Replicas(ctx)
	if err != nil || len(rs) != 2 || rs[0].ID != "rep_a" || rs[0].Agents != 2 {
		t.Fatalf("replicas: %+v, %v", rs, err)
	}
}
