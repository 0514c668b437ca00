package pgstore

import (
	"context"
	"errors"
	"testing"

	"github.com/sandkeep/sandkeep/internal/metastore"
	"github.com/sandkeep/sandkeep/internal/metastore/metastoretest"
	"github.com/sandkeep/sandkeep/internal/testenv"
)

func TestSandboxStoreConformance(t *testing.T) {
	metastoretest.RunSandboxStore(t, func(t *testing.T) metastoretest.LifecycleStore { return open(t, testenv.Postgres(t)) })
}

// TestLifecycleLeader: one replica at a time holds the leadership; it passes
// on when the leader resigns.
func TestLifecycleLeader(t *testing.T) {
	dsn := testenv.Postgres(t)
	a, b := open(t, dsn), open(t, dsn)
	defer a.Close()
	defer b.Close()
	ctx := context.Background()
	la, lb := a.LifecycleLeader(), b.LifecycleLeader()
	defer la.Resign()
	defer lb.Resign()
	if ok, err := la.TryLead(ctx); err != nil || !ok {
		t.Fatalf("first TryLead: %v, %v", ok, err)
	}
	if ok, err := lb.TryLead(ctx); err != nil || ok {
		t.Fatalf("second replica leads too: %v, %v", ok, err)
	}
	if ok, err := la.TryLead(ctx); err != nil || !ok {
		t.Fatalf("leader lost the lead: %v, %v", ok, err)
	}
	la.Resign()
	if ok, err := lb.TryLead(ctx); err != nil || !ok {
		t.Fatalf("after resign: %v, %v", ok, err)
	}
}

func TestClusterStore(t *testing.T) {
	metastoretest.RunClusterStore(t, func(t *testing.T) metastoretest.ClusterStore { return open(t, testenv.Postgres(t)) })
}

// TestLeaderFencing: a leader whose session the server ended (as a
// partition or a stuck process would) is deposed: once another replica
// leads, the old one's Fence refuses, though its process never resigned.
func TestLeaderFencing(t *testing.T) {
	dsn := testenv.Postgres(t)
	a, b := open(t, dsn), open(t, dsn)
	defer a.Close()
	defer b.Close()
	ctx := context.Background()
	la, lb := a.LifecycleLeader(), b.LifecycleLeader()
	defer la.Resign()
	defer lb.Resign()
	fa, fb := la.(metastore.Fencer), lb.(metastore.Fencer)
	if ok, err := la.TryLead(ctx); err != nil || !ok {
		t.Fatalf("TryLead: %v, %v", ok, err)
	}
	if err := fa.Fence(ctx); err != nil {
		t.Fatalf("the leader's fence: %v", err)
	}
	if err := fb.Fence(ctx); !errors.Is(err, metastore.ErrDeposed) {
		t.Fatalf("a replica that never led passed the fence: %v", err)
	}
	// The server ends the leader's session behind its back (this
	// database's holder: other tests' leaders hold the same key in theirs).
	var n int
	if err := b.pool.QueryRow(ctx, `SELECT count(pg_terminate_backend(pid)) FROM pg_locks WHERE `+lifecycleLockHeld,
		lifecycleLockClassID, lifecycleLockObjID).Scan(&n); err != nil || n != 1 {
		t.Fatalf("terminate the leader's session: %d, %v", n, err)
	}
	if ok, err := lb.TryLead(ctx); err != nil || !ok {
		t.Fatalf("the other replica could not take over: %v, %v", ok, err)
	}
	if err := fa.Fence(ctx); !errors.Is(err, metastore.ErrDeposed) {
		t.Fatalf("the deposed leader passed the fence: %v", err)
	}
	if err := fb.Fence(ctx); err != nil {
		t.Fatalf("the new leader's fence: %v", err)
	}
}

// TestLeaderPerDatabase: two deployments on one PostgreSQL server, each in
// its own database, each have their own leader; neither fences out the
// other's (the lock's key is the same in both databases, and pg_locks
// lists both).
func TestLeaderPerDatabase(t *testing.T) {
	x, y := open(t, testenv.Postgres(t)), open(t, testenv.Postgres(t))
	defer x.Close()
	defer y.Close()
	ctx := context.Background()
	lx, ly := x.LifecycleLeader(), y.LifecycleLeader()
	defer lx.Resign()
	defer ly.Resign()
	for name, l := range map[string]metastore.Leader{"x": lx, "y": ly} {
		if ok, err := l.TryLead(ctx); err != nil || !ok {
			t.Fatalf("TryLead in database %s: %v, %v", name, ok, err)
		}
	}
	for _, tt := range []struct {
		name  string
		store *Store
		l     metastore.Leader
	}{{"x", x, lx}, {"y", y, ly}} {
		want := tt.l.(*pgLeader).Token()
		if got, err := tt.store.LeaderToken(ctx); err != nil || got != want {
			t.Errorf("database %s: LeaderToken = %d, %v; its leader's session is %d", tt.name, got, err, want)
		}
		if err := tt.l.(metastore.Fencer).Fence(ctx); err != nil {
			t.Errorf("database %s: its leader failed the fence: %v", tt.name, err)
		}
	}
}

func TestReplicationStore(t *testing.T) {
	metastoretest.RunReplicationStore(t, func(t *testing.T) metastoretest.ReplicationStore { return open(t, testenv.Postgres(t)) })
}
