package replication

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"time"

	"github.com/sandkeep/sandkeep/internal/blobstore"
	"github.com/sandkeep/sandkeep/internal/metastore"
	"github.com/sandkeep/sandkeep/internal/retry"
)

// Worker copies the queued objects to the replica.
type Worker struct {
	Store *Store
	// Lead says whether this coordinator runs the worker now (the leader
	// of the background jobs); nil: always.
	Lead func(context.Context) (bool, error)
	Log  *slog.Logger
	// Poll is how often an idle worker looks at the queue besides being
	// woken by an enqueue here (entries enqueued by other replicas, retries
	// falling due); default 1s.
	Poll time.Duration
	// Backoff spaces the attempts of a failing entry (default 1s to 5m).
	Backoff retry.Backoff
	// Copied, if set, is told of every entry done (metrics, tests).
	Copied func(op metastore.ReplicationOp)
}

// batch is how many entries one pass takes.
const batch = 100

// settle is how long a put whose object the primary lacks is retried
// before it is dropped: an entry is queued before its write, which may
// still be going on (or may have failed: then there is nothing to copy).
const settle = time.Minute

var errNotYet = errors.New("not on the primary yet (its write may still be going on)")

// Run drains the queue until ctx ends.
func (w *Worker) Run(ctx context.Context) {
	w.defaults()
	t := time.NewTicker(w.Poll)
	defer t.Stop()
	for {
		n, err := w.Pass(ctx)
		if ctx.Err() != nil {
			return
		}
		if err != nil {
			w.Log.Warn("replication: pass failed", "err", err)
		}
		if n == batch {
			continue // more is due
		}
		select {
		case <-ctx.Done():
			return
		case <-w.Store.wake:
		case <-t.C:
		}
	}
}

func (w *Worker) defaults() {
	if w.Poll <= 0 {
		w.Poll = time.Second
	}
	if w.Backoff.Min <= 0 {
		w.Backoff = retry.Backoff{Min: time.Second, Max: 5 * time.Minute, Jitter: 0.2}
	}
	if w.Log == nil {
		w.Log = slog.Default()
	}
}

// Pass handles the entries due now (at most one batch) and returns how
// many it took.
func (w *Worker) Pass(ctx context.Context) (int, error) {
	w.defaults()
	if w.Lead != nil {
		if led, err := w.Lead(ctx); err != nil || !led {
			return 0, err
		}
	}
	due, err := w.Store.queue.DueReplication(ctx, time.Now(), batch)
	if err != nil {
		return 0, err
	}
	// A put followed, in this batch, by the delete of its key needs no copy.
	deletedAt := map[string]int64{}
	for _, op := range due {
		if op.Op == metastore.ReplicateDelete {
			deletedAt[op.Key] = op.Seq
		}
	}
	var done []int64
	for _, op := range due {
		if op.Op == metastore.ReplicatePut && deletedAt[op.Key] > op.Seq {
			done = append(done, op.Seq)
			continue
		}
		if err := w.apply(ctx, op); err != nil {
			if ctx.Err() != nil {
				break
			}
			next := time.Now().Add(w.Backoff.Delay(op.Attempts + 1))
			if errors.Is(err, errNotYet) {
				next = time.Now().Add(min(w.Poll, time.Second))
			}
			if ferr := w.Store.queue.FailReplication(ctx, op.Seq, next, err.Error()); ferr != nil {
				return len(due), ferr
			}
			if !errors.Is(err, errNotYet) && (op.Attempts == 0 || op.Attempts%10 == 9) {
				w.Log.Warn("replication: copy failed; retrying", "op", op.Op, "key", op.Key, "attempts", op.Attempts+1, "retry_at", next, "err", err)
			}
			continue
		}
		done = append(done, op.Seq)
		if w.Copied != nil {
			w.Copied(op)
		}
	}
	if err := w.Store.queue.DoneReplication(context.WithoutCancel(ctx), done); err != nil {
		return len(due), err
	}
	return len(due), nil
}

// apply carries out one entry.
func (w *Worker) apply(ctx context.Context, op metastore.ReplicationOp) error {
	s := w.Store
	switch op.Op {
	case metastore.ReplicateDelete:
		if err := s.replica.Delete(ctx, op.Key); err != nil && !errors.Is(err, blobstore.ErrNotFound) {
			return fmt.Errorf("delete from the replica: %w", err)
		}
		return nil
	case metastore.ReplicatePut:
		size, err := s.primary.Stat(ctx, op.Key)
		if errors.Is(err, blobstore.ErrNotFound) {
			if time.Since(op.EnqueuedAt) < settle {
				// Queued before the write: it may still be going on.
				return errNotYet
			}
			return nil // never written, or deleted since: nothing to copy
		}
		if err != nil {
			return fmt.Errorf("stat on the primary: %w", err)
		}
		rc, err := s.primary.Get(ctx, op.Key, 0, -1)
		if errors.Is(err, blobstore.ErrNotFound) {
			return nil
		}
		if err != nil {
			return fmt.Errorf("read from the primary: %w", err)
		}
		defer rc.Close()
		if err := s.replica.Put(ctx, op.Key, rc, size); err != nil {
			return fmt.Errorf("write to the replica: %w", err)
		}
		return nil
	default:
		return fmt.Errorf("unknown replication op %q", op.Op)
	}
}
