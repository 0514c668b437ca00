package lifecycle

import (
	"context"
	"errors"
	"fmt"

	"github.com/sandkeep/sandkeep/internal/id"
	"github.com/sandkeep/sandkeep/internal/metastore"
	"github.com/sandkeep/sandkeep/internal/repo"
	"github.com/sandkeep/sandkeep/internal/tree"
)

// verifyBatch is the number of ids per LocateBlobs call.
const verifyBatch = 1000

// VerifyHead checks that every pack the project's head references exists in
// the bucket: it walks the head's tree, locates every tree and chunk in the
// blob index, and Stats each distinct pack object once (it must be at least
// as long as the blobs it holds). It returns the head's number (0 for a
// project without versions, which has nothing to verify).
func (m *Manager) VerifyHead(ctx context.Context, projectID string) (int64, error) {
	v, err := m.meta.HeadVersion(ctx, projectID)
	if errors.Is(err, metastore.ErrNotFound) {
		if _, perr := m.meta.GetProject(ctx, projectID); perr != nil {
			return 0, perr
		}
		return 0, nil
	}
	if err != nil {
		return 0, err
	}
	ids := map[id.ID]struct{}{v.Root: {}}
	if !v.Root.IsZero() {
		err = m.cfg.Repo.Walk(ctx, projectID, v.Root, "", "", func(_ string, n *tree.Node) error {
			switch n.Type {
			case tree.Dir:
				if !n.Subtree.IsZero() {
					ids[n.Subtree] = struct{}{}
				}
			case tree.File:
				for _, c := range n.Chunks {
					ids[c.ID] = struct{}{}
				}
			}
			return nil
		})
		if err != nil {
			return 0, fmt.Errorf("walk the head (version %d): %w", v.Number, err)
		}
	} else {
		delete(ids, v.Root)
	}
	list := make([]id.ID, 0, len(ids))
	for x := range ids {
		list = append(list, x)
	}
	packEnd := map[id.ID]int64{}
	for i := 0; i < len(list); i += verifyBatch {
		batch := list[i:min(i+verifyBatch, len(list))]
		locs, err := m.meta.LocateBlobs(ctx, projectID, batch)
		if err != nil {
			return 0, err
		}
		for _, x := range batch {
			loc, ok := locs[x]
			if !ok {
				return 0, fmt.Errorf("head (version %d) references blob %s, which the index does not hold", v.Number, x)
			}
			packEnd[loc.PackID] = max(packEnd[loc.PackID], loc.Offset+loc.Length)
		}
	}
	store := m.cfg.Repo.Store()
	for p, end := range packEnd {
		size, err := store.Stat(ctx, repo.PackKey(projectID, p))
		if err != nil {
			return 0, fmt.Errorf("head (version %d): pack %s: %w", v.Number, p, err)
		}
		if size < end {
			return 0, fmt.Errorf("head (version %d): pack %s is %d bytes, its blobs need %d", v.Number, p, size, end)
		}
	}
	return v.Number, nil
}
