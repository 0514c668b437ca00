package pgstore

import (
	"context"
	"testing"

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
