package metastore

import (
	"context"
	"time"
)

// Replication ops.
const (
	ReplicatePut    = "put"    // copy the object from the primary to the replica
	ReplicateDelete = "delete" // delete the object from the replica
)

// ReplicationOp is one entry of the replication queue.
type ReplicationOp struct {
	Seq        int64 // order of enqueueing; set by the store
	Op         string
	Key        string
	Size       int64
	EnqueuedAt time.Time
	Attempts   int
	NextAt     time.Time
	LastError  string
}

// ReplicationLag is what the queue holds (of a key prefix).
type ReplicationLag struct {
	Objects, Bytes int64
	Oldest         time.Time // zero when empty
	Failing        int64     // entries that failed at least once
	LastError      string    // of the most recently failed entry
}

// ReplicationStore is the durable queue of the objects to copy to the
// replica bucket (package replication). All methods are safe for
// concurrent use.
type ReplicationStore interface {
	// EnqueueReplication appends ops (Op, Key, Size) in order; each is due
	// at once. Seq grows with every entry. A delete supersedes (removes)
	// the queued puts of its key.
	EnqueueReplication(ctx context.Context, ops []ReplicationOp) error
	// DueReplication returns at most max entries due at now, by Seq.
	DueReplication(ctx context.Context, now time.Time, max int) ([]ReplicationOp, error)
	// DoneReplication removes entries.
	DoneReplication(ctx context.Context, seqs []int64) error
	// FailReplication records a failed attempt: the entry is due again at
	// next.
	FailReplication(ctx context.Context, seq int64, next time.Time, errText string) error
	// ReplicationLag sums the entries whose key starts with prefix ("":
	// all).
	ReplicationLag(ctx context.Context, prefix string) (ReplicationLag, error)
}
