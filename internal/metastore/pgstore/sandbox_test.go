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
	// The server ends the leader's session behind its back.
	var n int
	if err := b.pool.QueryRow(ctx, `SELECT count(pg_terminate_backend(pid)) FROM pg_locks
		WHERE locktype = 'advisory' AND granted AND classid::bigint = $1 AND objid::bigint = $2`,
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

func TestReplicationStore(t *testing.T) {
	metastoretest.RunReplicationStore(t, func(t *testing.T) metastoretest.ReplicationStore { return open(t, testenv.Postgres(t)) })
}
