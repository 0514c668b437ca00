package repo

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"time"

	"github.com/sandkeep/sandkeep/internal/id"
	"github.com/sandkeep/sandkeep/internal/metastore"
	"github.com/sandkeep/sandkeep/internal/retry"
	"github.com/sandkeep/sandkeep/internal/tree"
)

// What the repository does so that garbage collection (package gc) never
// deletes a blob a version references. The argument is in package gc's
// documentation; the repository's part is:
//
//   - Commit names, in the commit's transaction, every blob the new tree
//     references that the parent's tree does not (newRefs), and the store
//     refuses the commit unless each is indexed in a live (not condemned)
//     pack: metastore.FileChanges.Requires.
//   - Uploads treat condemned blobs as missing (metastore MissingBlobs), so
//     an agent stores them again, and AddPack then moves them to the new
//     pack; PutTrees does the same for trees.
//   - A pack is indexed only with the pack epoch read before its object was
//     verified or written (indexPack), so a pack id that garbage collection
//     deleted while the upload was in flight is never indexed over a
//     deleted object.

// newRefs returns the blobs that tree b references and tree a does not
// share: b itself, every subtree of b whose id differs from the entry at
// the same path in a (walked recursively), and the chunks of every file of b
// whose chunks differ from the file at the same path in a. Everything else
// b reaches is reachable from a. a may be zero (no parent).
func (r *Repo) newRefs(ctx context.Context, projectID string, a, b id.ID) ([]id.ID, error) {
	w := refWalker{r: r, ctx: ctx, project: projectID, seen: make(map[id.ID]bool), pairs: make(map[[2]id.ID]bool)}
	if err := w.walk(a, b); err != nil {
		return nil, err
	}
	return w.out, nil
}

type refWalker struct {
	r       *Repo
	ctx     context.Context
	project string
	seen    map[id.ID]bool    // ids in out
	pairs   map[[2]id.ID]bool // (a, b) subtree pairs walked
	out     []id.ID
}

func (w *refWalker) add(x id.ID) {
	if !w.seen[x] {
		w.seen[x] = true
		w.out = append(w.out, x)
	}
}

func (w *refWalker) walk(a, b id.ID) error {
	if a == b || b.IsZero() {
		return nil
	}
	// A subtree walked against nothing has given everything it reaches.
	if k := [2]id.ID{a, b}; w.pairs[k] || w.pairs[[2]id.ID{{}, b}] {
		return nil
	} else {
		w.pairs[k] = true
	}
	if err := w.ctx.Err(); err != nil {
		return err
	}
	w.add(b)
	ta, err := w.r.LoadTree(w.ctx, w.project, a)
	if err != nil {
		return err
	}
	tb, err := w.r.LoadTree(w.ctx, w.project, b)
	if err != nil {
		return err
	}
	i := 0
	for k := range tb.Nodes {
		nb := &tb.Nodes[k]
		for i < len(ta.Nodes) && ta.Nodes[i].Name < nb.Name {
			i++
		}
		var na *tree.Node
		if i < len(ta.Nodes) && ta.Nodes[i].Name == nb.Name {
			na = &ta.Nodes[i]
		}
		switch nb.Type {
		case tree.Dir:
			var sub id.ID
			if na != nil && na.Type == tree.Dir {
				sub = na.Subtree
			}
			if err := w.walk(sub, nb.Subtree); err != nil {
				return err
			}
		case tree.File:
			if na != nil && na.Type == tree.File && sameChunks(na, nb) {
				continue
			}
			for _, c := range nb.Chunks {
				w.add(c.ID)
			}
		}
	}
	return nil
}

func sameChunks(a, b *tree.Node) bool {
	if len(a.Chunks) != len(b.Chunks) {
		return false
	}
	for i := range a.Chunks {
		if a.Chunks[i].ID != b.Chunks[i].ID {
			return false
		}
	}
	return true
}

// storedLive returns which of ids the project stores in live packs (not in
// condemned ones), in bounded batches.
func (r *Repo) storedLive(ctx context.Context, projectID string, ids []id.ID) (map[id.ID]bool, error) {
	out := make(map[id.ID]bool, len(ids))
	for start := 0; start < len(ids); start += MaxIDsPerCall {
		part := ids[start:min(start+MaxIDsPerCall, len(ids))]
		missing, err := r.meta.MissingBlobs(ctx, projectID, part)
		if err != nil {
			return nil, fmt.Errorf("find stored blobs: %w", err)
		}
		gone := make(map[id.ID]bool, len(missing))
		for _, m := range missing {
			gone[m] = true
		}
		for _, x := range part {
			if !gone[x] {
				out[x] = true
			}
		}
	}
	return out, nil
}

// indexAttempts bounds the retries of indexPack when garbage collection
// forgets packs of the project while a pack is being indexed.
const indexAttempts = 5

// indexPack reads the project's pack epoch, runs verify (which checks, or
// writes, the pack's object and returns its blobs) and indexes the pack with
// that epoch, retrying when the store answers ErrStale.
func (r *Repo) indexPack(ctx context.Context, p metastore.Pack, verify func() ([]metastore.BlobLocation, error)) error {
	bo := retry.Backoff{Min: 20 * time.Millisecond, Max: time.Second, Jitter: 0.2}
	for attempt := 1; ; attempt++ {
		epoch, err := r.meta.PackEpoch(ctx, p.ProjectID)
		if err != nil {
			return fmt.Errorf("pack epoch: %w", err)
		}
		locs, err := verify()
		if err != nil {
			return err
		}
		p.Epoch = epoch
		err = r.meta.AddPack(ctx, p, locs)
		if !errors.Is(err, metastore.ErrStale) {
			return err
		}
		if attempt >= indexAttempts {
			// The agent uploads the pack again on its next attempt.
			return fmt.Errorf("%w: %w", ErrMissing, err)
		}
		r.log.Info("pack changed state while indexed; retrying", "project", p.ProjectID, "pack", p.ID.Short(), "err", err)
		if err := retry.Sleep(ctx, bo.Delay(attempt)); err != nil {
			return ctx.Err()
		}
	}
}

// maintenance holds one semaphore per (repo, project): garbage collection
// and project deletion of one project run one at a time in this process.
// (They are safe to run concurrently, also on several coordinators; the
// lock only avoids duplicate work.)
var maintenance sync.Map // maintenanceKey -> chan struct{}

type maintenanceKey struct {
	r       *Repo
	project string
}

// LockMaintenance waits until no other garbage collection or deletion of
// the project runs in this process, and returns the function that ends
// this one.
func (r *Repo) LockMaintenance(ctx context.Context, projectID string) (unlock func(), err error) {
	v, _ := maintenance.LoadOrStore(maintenanceKey{r, projectID}, make(chan struct{}, 1))
	sem := v.(chan struct{})
	select {
	case sem <- struct{}{}:
		return func() { <-sem }, nil
	case <-ctx.Done():
		return nil, ctx.Err()
	}
}
