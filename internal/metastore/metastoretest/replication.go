package metastoretest

import (
	"context"
	"testing"
	"time"

	"github.com/sandkeep/sandkeep/internal/metastore"
)

// ReplicationStore is what the replication suite needs.
type ReplicationStore interface {
	metastore.ReplicationStore
	Close() error
}

// RunReplicationStore runs the conformance suite of
// metastore.ReplicationStore.
func RunReplicationStore(t *testing.T, open func(t *testing.T) ReplicationStore) {
	runGroups(t, open, []group[ReplicationStore]{
		{"Queue", testReplicationQueue},
	})
}

// testReplicationQueue: entries come back in order, failed ones later,
// done ones never; the lag of a prefix counts its entries alone.
func testReplicationQueue(t *testing.T, s ReplicationStore) {
	ctx := context.Background()
	same(t, "lag of an empty queue", must[metastore.ReplicationLag](t, "ReplicationLag")(s.ReplicationLag(ctx, "")), metastore.ReplicationLag{})
	before := now()
	ops := []metastore.ReplicationOp{
		{Op: metastore.ReplicatePut, Key: "projects/a/packs/00/p1", Size: 100},
		{Op: metastore.ReplicatePut, Key: "projects/b/packs/00/p2", Size: 50},
		{Op: metastore.ReplicateDelete, Key: "projects/a/packs/00/p1"},
		{Op: metastore.ReplicatePut, Key: "projects/a/versions/1", Size: 7},
	}
	wantErr(t, "EnqueueReplication", s.EnqueueReplication(ctx, ops), nil)
	wantErr(t, "EnqueueReplication of a bad op", s.EnqueueReplication(ctx, []metastore.ReplicationOp{{Op: "copy", Key: "k"}}), metastore.ErrInvalid)
	wantErr(t, "EnqueueReplication without key", s.EnqueueReplication(ctx, []metastore.ReplicationOp{{Op: metastore.ReplicatePut}}), metastore.ErrInvalid)

	due := must[[]metastore.ReplicationOp](t, "DueReplication")(s.DueReplication(ctx, time.Now().Add(time.Second), 10))
	if len(due) != 3 {
		t.Fatalf("due (the delete of p1 supersedes its put): %+v", due)
	}
	ops = ops[1:]
	for i, d := range due {
		if d.Key != ops[i].Key || d.Op != ops[i].Op || d.Size != ops[i].Size || (i > 0 && d.Seq <= due[i-1].Seq) ||
			d.EnqueuedAt.Before(before) || d.Attempts != 0 {
			t.Fatalf("due[%d] = %+v, want %+v in order", i, d, ops[i])
		}
	}
	if two := must[[]metastore.ReplicationOp](t, "DueReplication")(s.DueReplication(ctx, time.Now().Add(time.Second), 2)); len(two) != 2 || two[0].Seq != due[0].Seq {
		t.Fatalf("due, at most 2: %+v", two)
	}
	lagA := must[metastore.ReplicationLag](t, "ReplicationLag")(s.ReplicationLag(ctx, "projects/a/"))
	if lagA.Objects != 2 || lagA.Bytes != 7 || lagA.Oldest.Before(before) || lagA.Failing != 0 {
		t.Fatalf("lag of projects/a/: %+v", lagA)
	}

	testReplicationRetry(t, s, due)
}

// testReplicationRetry: of the due entries, the first fails (due again
// later, counted as failing), the others are done, then the first too.
func testReplicationRetry(t *testing.T, s ReplicationStore, due []metastore.ReplicationOp) {
	ctx := context.Background()
	later := time.Now().Add(time.Hour)
	wantErr(t, "FailReplication", s.FailReplication(ctx, due[0].Seq, later, "replica down"), nil)
	rest := must[[]metastore.ReplicationOp](t, "DueReplication")(s.DueReplication(ctx, time.Now().Add(time.Second), 10))
	if len(rest) != 2 || rest[0].Seq != due[1].Seq {
		t.Fatalf("due after a failure: %+v", rest)
	}
	all := must[metastore.ReplicationLag](t, "ReplicationLag")(s.ReplicationLag(ctx, ""))
	if all.Objects != 3 || all.Failing != 1 || all.LastError != "replica down" {
		t.Fatalf("lag with a failure: %+v", all)
	}
	wantErr(t, "DoneReplication", s.DoneReplication(ctx, []int64{rest[0].Seq, rest[1].Seq}), nil)
	retried := must[[]metastore.ReplicationOp](t, "DueReplication")(s.DueReplication(ctx, later.Add(time.Second), 10))
	if len(retried) != 1 || retried[0].Seq != due[0].Seq || retried[0].Attempts != 1 || retried[0].LastError != "replica down" {
		t.Fatalf("due at the retry: %+v", retried)
	}
	wantErr(t, "DoneReplication", s.DoneReplication(ctx, []int64{due[0].Seq}), nil)
	same(t, "lag when drained", must[metastore.ReplicationLag](t, "ReplicationLag")(s.ReplicationLag(ctx, "")), metastore.ReplicationLag{})
}
