package gc

import (
	"context"
	"fmt"
	"time"

	"github.com/sandkeep/sandkeep/internal/blobstore"
	"github.com/sandkeep/sandkeep/internal/id"
	"github.com/sandkeep/sandkeep/internal/metastore"
	"github.com/sandkeep/sandkeep/internal/repo"
)

// Orphans: objects no row names. An agent asks for a signed upload URL,
// PUTs, and only then calls CompletePacks, which indexes the pack; an agent
// that dies (or an attacker who never completes) leaves the object behind,
// and a URL handed out before a project's deletion can still store an
// object under the deleted project's prefix until it expires. The mark and
// sweep of gc.go reads only the database, so these are found by listing.

// sweepOrphans deletes the project's pack objects that no pack row names
// (in any state) and that are older than the grace (an upload may still be
// on its way to CompletePacks until then). Like every pack deletion it is
// two-phase: the ids are first recorded as deleting packs (ClaimOrphans,
// atomic with the check that no row names them), so an upload completed
// meanwhile is refused (stale) rather than indexed over a deleted object;
// then the objects are deleted and the rows dropped (DropPacks, which also
// advances the project's pack epoch).
func (g *run) sweepOrphans(ctx context.Context, cutoff time.Time) error {
	prefix := repo.ProjectPrefix(g.pid) + "packs/"
	var batch []metastore.Pack
	flush := func() error {
		if len(batch) == 0 {
			return nil
		}
		defer func() { batch = batch[:0] }()
		if g.opts.DryRun {
			known, err := g.meta.GetPacks(ctx, g.pid, ids(batch))
			if err != nil {
				return fmt.Errorf("orphan sweep: %w", err)
			}
			for _, p := range batch {
				if _, ok := known[p.ID]; !ok {
					g.rep.OrphansDeleted++
					g.rep.OrphanBytes += p.Size
				}
			}
			return nil
		}
		claimed, err := g.meta.ClaimOrphans(ctx, g.pid, batch)
		if err != nil {
			return fmt.Errorf("orphan sweep: %w", err)
		}
		sizes := make(map[id.ID]int64, len(batch))
		for _, p := range batch {
			sizes[p.ID] = p.Size
		}
		for _, pid := range claimed {
			key := repo.PackKey(g.pid, pid)
			if err := g.store.Delete(ctx, key); err != nil {
				return fmt.Errorf("orphan sweep: %w", err)
			}
			g.rep.OrphansDeleted++
			g.rep.OrphanBytes += sizes[pid]
			g.log.Info("deleted an uploaded object no pack row named", "key", key, "size", sizes[pid])
		}
		if err := g.meta.DropPacks(ctx, g.pid, claimed); err != nil {
			return fmt.Errorf("orphan sweep: %w", err)
		}
		return nil
	}
	err := g.store.List(ctx, prefix, func(o blobstore.Object) error {
		pid, ok := repo.ParsePackKey(g.pid, o.Key)
		if !ok {
			return nil // not a pack key: left alone
		}
		if !o.ModTime.Before(cutoff) {
			return nil // an upload may still be completed
		}
		batch = append(batch, metastore.Pack{ProjectID: g.pid, ID: pid, Type: metastore.BlobData, Size: o.Size, CreatedAt: o.ModTime})
		if len(batch) >= 500 {
			return flush()
		}
		return nil
	})
	if err == nil {
		err = flush()
	}
	return err
}

// sweepDeletedProjects deletes whatever a signed URL handed out before a
// project's deletion stored under its prefix afterwards. A project stays on
// the list until no URL of it can be valid any more (urlTTL after the
// deletion, plus the grace for clock skew).
func sweepDeletedProjects(ctx context.Context, r *repo.Repo, opts Options, rep *Report) error {
	gone, err := r.Meta().DeletedProjects(ctx)
	if err != nil {
		return err
	}
	now := opts.Now()
	for _, d := range gone {
		if opts.DryRun {
			continue
		}
		n, b, err := blobstore.DeletePrefix(ctx, r.Store(), repo.ProjectPrefix(d.ID))
		if err != nil {
			return fmt.Errorf("sweep deleted project %s: %w", d.ID, err)
		}
		rep.OrphansDeleted += n
		rep.OrphanBytes += b
		if n > 0 {
			opts.Logger.Warn("deleted objects stored under a deleted project (an upload URL used after the deletion)", "project", d.ID, "objects", n, "bytes", b)
		}
		if now.Sub(d.DeletedAt) > opts.URLTTL+max(opts.Grace, 0) {
			if err := r.Meta().ForgetDeletedProject(ctx, d.ID); err != nil {
				return err
			}
		}
	}
	return nil
}
