// Package replication keeps a second copy of the bucket in another store
// (another region, another provider): every object written to the primary
// is copied to the replica asynchronously, deletions too, through a durable
// queue in the database (metastore.ReplicationStore), in the order they
// were written; reads fall back to the replica when the primary fails.
//
// Store wraps the primary backend the coordinator runs on:
//
//   - Put enqueues a copy, then writes the primary: an entry whose write
//     failed finds no object to copy and is dropped, and a crash between the
//     two loses nothing (the entry is already durable).
//   - An object an agent wrote through a signed URL is enqueued by Written,
//     which the repo calls once the pack is verified and indexed (so what a
//     sandbox merely claims cannot fill the queue). A crash between the
//     index and the queue leaves the pack uncopied until `sandkeep check
//     --replica` reports it not_replicated and `--repair` queues it again.
//   - Delete deletes from the primary, then enqueues the replica's delete
//     (the replica never lacks what the primary still has).
//   - Get and Stat fall back to the replica when the primary fails (or lacks
//     the object); SignGet signs the replica's URLs while the primary does
//     not answer, so restores and links keep working when it is down.
//
// Worker drains the queue (on the leader of the background jobs, so that
// the order holds): a put copies the object as the primary has it now (a
// primary without it means it was deleted since: nothing to do), a delete
// deletes; failures are retried with backoff and show in the lag.
package replication

import (
	"context"
	"errors"
	"fmt"
	"io"
	"sync"
	"time"

	"github.com/sandkeep/sandkeep/internal/blobstore"
	"github.com/sandkeep/sandkeep/internal/metastore"
)

// Store is a primary backend replicated to another store.
type Store struct {
	primary blobstore.Backend
	replica blobstore.Backend
	queue   metastore.ReplicationStore
	// wake is signalled (without blocking) when an entry is enqueued.
	wake chan struct{}

	mu       sync.Mutex
	downAt   time.Time // when the primary last failed to answer (zero: it answers)
	probedAt time.Time
}

// probeEvery is how often at most SignGet asks whether the primary answers.
const probeEvery = 5 * time.Second

// New returns primary replicated to replica through queue.
func New(primary, replica blobstore.Backend, queue metastore.ReplicationStore) *Store {
	return &Store{primary: primary, replica: replica, queue: queue, wake: make(chan struct{}, 1)}
}

var (
	_ blobstore.Backend = (*Store)(nil)
	_ blobstore.Tracker = (*Store)(nil)
)

// Primary and Replica return the two stores.
func (s *Store) Primary() blobstore.Backend { return s.primary }

// Replica returns the replica store.
func (s *Store) Replica() blobstore.Backend { return s.replica }

// Name implements blobstore.Backend.
func (s *Store) Name() string {
	return s.primary.Name() + " (replicated to " + s.replica.Name() + ")"
}

func (s *Store) enqueue(ctx context.Context, op, key string, size int64) error {
	if err := blobstore.ValidateKey(key); err != nil {
		return err
	}
	if err := s.queue.EnqueueReplication(ctx, []metastore.ReplicationOp{{Op: op, Key: key, Size: size}}); err != nil {
		return fmt.Errorf("queue the replication of %s: %w", key, err)
	}
	return nil
}

// kick wakes the worker (without waiting): call it once the object is in
// the primary, so the worker does not find it missing and wait.
func (s *Store) kick() {
	select {
	case s.wake <- struct{}{}:
	default:
	}
}

// Put implements blobstore.Store.
func (s *Store) Put(ctx context.Context, key string, r io.Reader, size int64) error {
	if err := s.enqueue(ctx, metastore.ReplicatePut, key, size); err != nil {
		return err
	}
	if err := s.primary.Put(ctx, key, r, size); err != nil {
		return err
	}
	s.kick()
	return nil
}

// Written implements blobstore.Tracker: an object written through a signed
// URL is copied like one written by Put.
func (s *Store) Written(ctx context.Context, key string, size int64) error {
	if err := s.enqueue(ctx, metastore.ReplicatePut, key, size); err != nil {
		return err
	}
	s.kick()
	return nil
}

// Delete implements blobstore.Store.
func (s *Store) Delete(ctx context.Context, key string) error {
	if err := s.primary.Delete(ctx, key); err != nil {
		return err
	}
	if err := s.enqueue(context.WithoutCancel(ctx), metastore.ReplicateDelete, key, 0); err != nil {
		return err
	}
	s.kick()
	return nil
}

// Get implements blobstore.Store, from the replica when the primary fails.
func (s *Store) Get(ctx context.Context, key string, offset, length int64) (io.ReadCloser, error) {
	rc, err := s.primary.Get(ctx, key, offset, length)
	if err == nil || ctx.Err() != nil {
		return rc, err
	}
	s.failed(err)
	if rc2, err2 := s.replica.Get(ctx, key, offset, length); err2 == nil {
		return rc2, nil
	}
	return nil, err
}

// Stat implements blobstore.Store, from the replica when the primary fails.
func (s *Store) Stat(ctx context.Context, key string) (int64, error) {
	n, err := s.primary.Stat(ctx, key)
	if err == nil || ctx.Err() != nil {
		return n, err
	}
	s.failed(err)
	if n2, err2 := s.replica.Stat(ctx, key); err2 == nil {
		return n2, nil
	}
	return 0, err
}

// List implements blobstore.Store: the primary's listing (garbage
// collection and deletion work on the primary).
func (s *Store) List(ctx context.Context, prefix string, fn func(blobstore.Object) error) error {
	return s.primary.List(ctx, prefix, fn)
}

// SignPut implements blobstore.Signer: agents write to the primary.
func (s *Store) SignPut(ctx context.Context, key string, size int64, ttl time.Duration) (blobstore.SignedURL, error) {
	return s.primary.SignPut(ctx, key, size, ttl)
}

// SignGet implements blobstore.Signer: the primary's URL while it answers,
// the replica's while it does not.
func (s *Store) SignGet(ctx context.Context, key string, ttl time.Duration) (blobstore.SignedURL, error) {
	if s.primaryDown(ctx) {
		return s.replica.SignGet(ctx, key, ttl)
	}
	return s.primary.SignGet(ctx, key, ttl)
}

// failed notes that the primary failed a read (other than for a missing
// object).
func (s *Store) failed(err error) {
	if errors.Is(err, blobstore.ErrNotFound) {
		return
	}
	s.mu.Lock()
	s.downAt = time.Now()
	s.mu.Unlock()
}

// primaryDown says whether the primary failed to answer recently, asking
// it (a Stat of a key that does not exist) at most every probeEvery.
func (s *Store) primaryDown(ctx context.Context) bool {
	s.mu.Lock()
	now := time.Now()
	if now.Sub(s.probedAt) < probeEvery {
		down := !s.downAt.IsZero() && now.Sub(s.downAt) < probeEvery
		s.mu.Unlock()
		return down
	}
	s.probedAt = now
	s.mu.Unlock()
	pctx, cancel := context.WithTimeout(ctx, 2*time.Second)
	defer cancel()
	_, err := s.primary.Stat(pctx, "sandkeep-probe/primary")
	s.mu.Lock()
	defer s.mu.Unlock()
	if err == nil || errors.Is(err, blobstore.ErrNotFound) {
		s.downAt = time.Time{}
		return false
	}
	s.downAt = time.Now()
	return true
}
