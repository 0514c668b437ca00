package repo

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/sandkeep/sandkeep/internal/blobstore"
	"github.com/sandkeep/sandkeep/internal/metastore"
)

// DeleteProject deletes a project: every object under its prefix in the
// blob store and every row of it in the database. It returns the number of
// objects and bytes it deleted from the store.
//
// Order, so that a failure at any step leaves something a retry finishes:
//  1. revoke the project's tokens: its agents and links stop working at
//     once (the rows still exist, so the revocation is what shows), and
//     call Options.OnTokensRevoked (which ends the agents' open session
//     streams);
//  2. delete every object under projects/{id}/ (a LIST of the prefix: the
//     one place besides tests where the coordinator lists the bucket);
//  3. delete the project's rows (one transaction; everything cascades);
//  4. sweep the prefix once more, for objects written while step 2 ran
//     (a garbage collection repack, an upload through a URL signed before
//     step 1);
//  5. forget the project's trees in the cache.
//
// Calling it again after a partial failure finishes the job; once the rows
// are gone it still sweeps the prefix, and it returns metastore.ErrNotFound
// only when there was nothing left to delete. A PUT through a signed URL
// issued before the deletion (valid for Options.URLTTL) can still land
// afterwards; another call removes it.
func (r *Repo) DeleteProject(ctx context.Context, projectID string) (objects int, bytes int64, err error) {
	if projectID == "" || strings.ContainsAny(projectID, "/\\") || projectID == "." || projectID == ".." {
		return 0, 0, fmt.Errorf("%w: project id %q", ErrInvalid, projectID)
	}
	unlock, err := r.LockMaintenance(ctx, projectID)
	if err != nil {
		return 0, 0, err
	}
	defer unlock()
	defer r.trees.dropProject(projectID)

	exists := true
	revoked, err := r.meta.RevokeProjectTokens(ctx, projectID)
	switch {
	case errors.Is(err, metastore.ErrNotFound):
		exists = false
	case err != nil:
		return 0, 0, fmt.Errorf("revoke tokens: %w", err)
	}
	if exists && r.onRevoked != nil {
		r.onRevoked(projectID)
	}
	// A tombstone outside the prefix, removed once nothing is left: a
	// rebuild of the database from the bucket skips a project whose
	// deletion was interrupted instead of bringing it back.
	if err := r.markDeleted(ctx, projectID, true); err != nil {
		return 0, 0, err
	}
	prefix := ProjectPrefix(projectID)
	sweep := func() error {
		n, b, err := blobstore.DeletePrefix(ctx, r.store, prefix)
		objects += n
		bytes += b
		if err != nil {
			return fmt.Errorf("delete objects: %w", err)
		}
		return nil
	}
	if err := sweep(); err != nil {
		return objects, bytes, err
	}
	if exists {
		if err := r.meta.DeleteProject(ctx, projectID); err != nil && !errors.Is(err, metastore.ErrNotFound) {
			return objects, bytes, fmt.Errorf("delete rows: %w", err)
		}
		if err := sweep(); err != nil {
			return objects, bytes, err
		}
	}
	if err := r.markDeleted(ctx, projectID, false); err != nil {
		return objects, bytes, err
	}
	if !exists && objects == 0 {
		return 0, 0, fmt.Errorf("%w: project %q", metastore.ErrNotFound, projectID)
	}
	r.log.Info("project deleted", "project", projectID, "tokens_revoked", revoked, "objects", objects, "bytes", bytes)
	return objects, bytes, nil
}

// markDeleted writes (on) or removes the project's deletion mark.
func (r *Repo) markDeleted(ctx context.Context, projectID string, on bool) error {
	if !on {
		if err := r.store.Delete(ctx, tombstoneKey(projectID)); err != nil && !errors.Is(err, blobstore.ErrNotFound) {
			return fmt.Errorf("remove the deletion mark: %w", err)
		}
		return nil
	}
	tomb := `{"deleted_at":"` + time.Now().UTC().Format(time.RFC3339) + `"}`
	if err := r.store.Put(ctx, tombstoneKey(projectID), strings.NewReader(tomb), int64(len(tomb))); err != nil {
		return fmt.Errorf("mark the project deleted in the bucket: %w", err)
	}
	return nil
}
