package repo

import (
	"context"
	"errors"
	"fmt"
	"sync"

	"github.com/sandkeep/sandkeep/internal/id"
	"github.com/sandkeep/sandkeep/internal/metastore"
	"github.com/sandkeep/sandkeep/internal/tree"
)

// ErrLimit: a commit would make a version larger than one of the project's
// limits (metastore.Limits). Nothing was committed.
var ErrLimit = errors.New("project limit exceeded")

// Expansion is what a tree expands to when restored.
type Expansion struct {
	Entries int64 // files, symlinks and directories below the root
	Bytes   int64 // sum of the files' sizes
	Depth   int   // path components of the deepest entry (0 for an empty tree)
}

// expansionCache memoizes the expansion of trees by id (a tree's expansion
// depends on its content only, so one entry serves every project). Bounded:
// cleared when full.
type expansionCache struct {
	mu sync.Mutex
	m  map[id.ID]Expansion
}

const expansionCacheMax = 500_000

func (c *expansionCache) get(t id.ID) (Expansion, bool) {
	c.mu.Lock()
	defer c.mu.Unlock()
	e, ok := c.m[t]
	return e, ok
}

func (c *expansionCache) put(t id.ID, e Expansion) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.m == nil || len(c.m) >= expansionCacheMax {
		c.m = make(map[id.ID]Expansion)
	}
	c.m[t] = e
}

// Limits returns the project's limits with the defaults filled in.
func (r *Repo) Limits(ctx context.Context, projectID string) (metastore.Limits, error) {
	l, err := r.meta.GetLimits(ctx, projectID)
	if err != nil {
		return metastore.Limits{}, fmt.Errorf("limits of %s: %w", projectID, err)
	}
	return l.WithDefaults(), nil
}

// CheckExpansion computes what root expands to and fails with ErrLimit, naming
// the limit and the numbers, if that exceeds l. Work is bounded by the number
// of distinct trees, not by the expansion: a tree of 1000 entries that all
// name one subtree is read once, whatever it multiplies to. Sums saturate, so
// no forged tree can overflow them.
func (r *Repo) CheckExpansion(ctx context.Context, projectID string, root id.ID, l metastore.Limits) (Expansion, error) {
	l = l.WithDefaults()
	e, err := r.expand(ctx, projectID, root, 0, l)
	if err != nil {
		return Expansion{}, err
	}
	switch {
	case e.Entries > l.MaxFiles:
		return e, fmt.Errorf("%w: the version would hold %d files and directories, the project's limit is %d (sandkeep project limits --max-files)", ErrLimit, e.Entries, l.MaxFiles)
	case e.Bytes > l.MaxBytes:
		return e, fmt.Errorf("%w: the version would hold %d bytes of files, the project's limit is %d (sandkeep project limits --max-bytes)", ErrLimit, e.Bytes, l.MaxBytes)
	}
	return e, nil
}

func satAdd(a, b int64) int64 {
	if s := a + b; s >= a && s >= b {
		return s
	}
	return 1<<63 - 1
}

func satMul(a, n int64) int64 {
	if a == 0 || n == 0 {
		return 0
	}
	if a > (1<<63-1)/n {
		return 1<<63 - 1
	}
	return a * n
}

// expand returns the expansion of tree tid found at depth (0 for the root).
func (r *Repo) expand(ctx context.Context, projectID string, tid id.ID, depth int, l metastore.Limits) (Expansion, error) {
	if e, ok := r.expansions.get(tid); ok {
		if depth+e.Depth > l.MaxDepth {
			return e, fmt.Errorf("%w: the version would nest %d directories deep, the project's limit is %d (sandkeep project limits --max-depth)", ErrLimit, depth+e.Depth, l.MaxDepth)
		}
		return e, nil
	}
	if err := ctx.Err(); err != nil {
		return Expansion{}, err
	}
	t, err := r.LoadTree(ctx, projectID, tid)
	if err != nil {
		return Expansion{}, err
	}
	var e Expansion
	if len(t.Nodes) > 0 {
		e.Depth = 1
		if depth+1 > l.MaxDepth {
			return e, fmt.Errorf("%w: the version would nest more than %d directories deep, the project's limit (sandkeep project limits --max-depth)", ErrLimit, l.MaxDepth)
		}
	}
	// Subtrees named several times in one tree are expanded once.
	subs := make(map[id.ID]int64)
	for i := range t.Nodes {
		n := &t.Nodes[i]
		e.Entries++
		switch n.Type {
		case tree.File:
			e.Bytes = satAdd(e.Bytes, n.Size)
		case tree.Dir:
			subs[n.Subtree]++
		}
	}
	for sub, times := range subs {
		se, err := r.expand(ctx, projectID, sub, depth+1, l)
		if err != nil {
			return Expansion{}, err
		}
		e.Entries = satAdd(e.Entries, satMul(se.Entries, times))
		e.Bytes = satAdd(e.Bytes, satMul(se.Bytes, times))
		e.Depth = max(e.Depth, 1+se.Depth)
		// Stop early: the sums only grow.
		if e.Entries > l.MaxFiles || e.Bytes > l.MaxBytes {
			return e, nil
		}
	}
	r.expansions.put(tid, e)
	return e, nil
}
