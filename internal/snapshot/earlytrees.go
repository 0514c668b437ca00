package snapshot

import (
	"cmp"
	"context"
	"fmt"
	"math"
	"sync"

	"github.com/sandkeep/sandkeep/internal/id"
)

// earlyTreeBytes is how many bytes of ready trees the early uploader waits
// for before it sends them, in calls of at most earlyCallBytes: they go up
// while the data's buffers are full, so each call's request (a copy of its
// trees) stays small.
const (
	earlyTreeBytes = 256 << 10
	earlyCallBytes = 512 << 10
)

// settling tracks the chunks this Run has handed on for upload that the
// remote may not hold yet, so that trees can be uploaded while the data is
// still flowing: the remote refuses a tree naming a chunk it does not hold.
//
// Every chunk is noted (emit) before it leaves its hash worker and settled
// once the remote is known to hold it: it said so (FindMissing), or the pack
// holding it was uploaded. A tree is built after the chunks of all its files
// were emitted, so a tree built when mark() was m names only chunks emitted
// at or before m; once oldest() > m, each of them is settled. A copy
// of a chunk emitted while an earlier copy is pending keeps the earlier
// (smaller) number, and is settled with it.
type settling struct {
	mu      sync.Mutex
	seq     uint64
	pending map[id.ID]uint64 // emitted, not settled: the first pending emission
	wake    chan struct{}    // (buffered, 1) chunks settled
}

func newSettling() *settling {
	return &settling{pending: make(map[id.ID]uint64), wake: make(chan struct{}, 1)}
}

// emit notes that chunk x is handed on.
func (s *settling) emit(x id.ID) {
	s.mu.Lock()
	s.seq++
	if _, ok := s.pending[x]; !ok {
		s.pending[x] = s.seq
	}
	s.mu.Unlock()
}

// settle notes that the remote holds the chunks xs and, if there are any,
// wakes the early uploader: once per call (a batch or a pack), not per
// chunk, as each wake looks at every pending chunk.
func (s *settling) settle(xs ...id.ID) {
	if len(xs) == 0 {
		return
	}
	s.mu.Lock()
	for _, x := range xs {
		delete(s.pending, x)
	}
	s.mu.Unlock()
	select {
	case s.wake <- struct{}{}:
	default:
	}
}

// stored notes that the remote holds the chunks ids (FindMissing said so,
// or their pack was uploaded): they leave inflight first, then settle, so
// that a copy emitted in between is pending until it settles itself.
func (r *run) stored(ids ...id.ID) {
	for _, x := range ids {
		r.inflight.remove(x)
	}
	r.settling.settle(ids...)
}

// mark returns the number of emissions so far.
func (s *settling) mark() uint64 {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.seq
}

// oldest returns the number of the oldest pending emission, or MaxUint64
// if none is pending.
func (s *settling) oldest() uint64 {
	s.mu.Lock()
	defer s.mu.Unlock()
	o := uint64(math.MaxUint64)
	for _, n := range s.pending {
		o = min(o, n)
	}
	return o
}

// uploadEarlyTrees sends, while the data is still being uploaded, the
// trees whose chunks the remote holds, children first, each time
// earlyTreeBytes of them are ready; it returns when stop is closed, leaving
// the rest to uploadTrees. Trees go in the order they were built, so a
// tree's subtrees are sent before it or in the same call.
func (r *run) uploadEarlyTrees(ctx context.Context, stop <-chan struct{}) error {
	for {
		select {
		case <-stop:
			return nil
		case <-ctx.Done():
			return ctx.Err()
		case <-r.settling.wake:
		}
		oldest := r.settling.oldest()
		r.mu.Lock()
		n, size := r.treesSent, 0
		for n < len(r.trees) && r.trees[n].mark < oldest {
			size += len(r.trees[n].enc)
			n++
		}
		ready := r.trees[r.treesSent:n:n]
		r.mu.Unlock()
		if size < cmp.Or(r.opts.earlyTreeBytes, earlyTreeBytes) {
			continue
		}
		if err := r.sendTrees(ctx, ready, earlyCallBytes); err != nil {
			return err
		}
		r.mu.Lock()
		r.treesSent = n
		r.mu.Unlock()
	}
}

// sendTrees sends the trees of list the remote lacks, skipping those sent
// before in this Run, in calls of at most callBytes (and MaxTreeBytes). The
// remote must hold every chunk they name, and every subtree not in list
// before its parent.
func (r *run) sendTrees(ctx context.Context, list []builtTree, callBytes int) error {
	trees := make([]builtTree, 0, len(list))
	for _, t := range list {
		if _, dup := r.treesSeen[t.id]; !dup {
			r.treesSeen[t.id] = struct{}{}
			trees = append(trees, t)
		}
	}
	missing := make(map[id.ID]struct{})
	for i := 0; i < len(trees); i += MaxIDs {
		part := trees[i:min(i+MaxIDs, len(trees))]
		ids := make([]id.ID, len(part))
		for k, t := range part {
			ids[k] = t.id
		}
		m, err := r.remote.FindMissing(ctx, ids)
		if err != nil {
			return fmt.Errorf("find missing trees: %w", err)
		}
		for _, x := range m {
			missing[x] = struct{}{}
		}
	}
	var batch [][]byte
	size := 0
	send := func() error {
		if len(batch) == 0 {
			return nil
		}
		if err := r.remote.UploadTrees(ctx, batch); err != nil {
			return fmt.Errorf("upload trees: %w", err)
		}
		r.c.trees.Add(int64(len(batch)))
		batch, size = nil, 0
		return nil
	}
	for _, t := range trees {
		if _, ok := missing[t.id]; !ok {
			continue
		}
		if len(t.enc) > MaxTreeBytes {
			return fmt.Errorf("tree %s is %d bytes, more than the %d a remote accepts: a directory has too many entries", t.id.Short(), len(t.enc), MaxTreeBytes)
		}
		if size+len(t.enc) > min(callBytes, MaxTreeBytes) {
			if err := send(); err != nil {
				return err
			}
		}
		batch = append(batch, t.enc)
		size += len(t.enc)
	}
	return send()
}
