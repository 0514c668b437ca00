package repo

import (
	"context"
	"errors"
	"fmt"
	"sort"
	"strconv"
	"strings"

	"github.com/sandkeep/sandkeep/internal/id"
	"github.com/sandkeep/sandkeep/internal/metastore"
	"github.com/sandkeep/sandkeep/internal/tree"
)

// Browsing versions without a sandbox: resolve a path, page a tree, diff two
// versions from a resume point, and follow one path through the versions.
//
// Every listing is in tree order: depth first, the entries of a directory
// sorted bytewise by name, a directory right before its entries. That is the
// order of ComparePaths, so a listing resumes after a path by skipping
// whole subtrees (a binary search per level), never by re-walking them.

// ErrStop, returned by a callback, ends a walk early without an error.
var ErrStop = errors.New("stop walking")

// ErrSkipDir, returned by a Walk callback for a directory, skips what is
// below it.
var ErrSkipDir = errors.New("skip this directory")

// ComparePaths orders workspace paths in tree order: element by element,
// bytewise, a path before the paths below it. (Plain string order differs:
// "a-b" < "a/x" bytewise, but "a/x" comes first in tree order.)
func ComparePaths(a, b string) int {
	for {
		ea, ra, moreA := strings.Cut(a, "/")
		eb, rb, moreB := strings.Cut(b, "/")
		if c := strings.Compare(ea, eb); c != 0 {
			return c
		}
		switch {
		case !moreA && !moreB:
			return 0
		case !moreA:
			return -1
		case !moreB:
			return 1
		}
		a, b = ra, rb
	}
}

// ResolveVersion returns version number of a project, or its head for 0
// (an error wrapping metastore.ErrNotFound when it has none yet).
func (r *Repo) ResolveVersion(ctx context.Context, projectID string, number int64) (metastore.Version, error) {
	switch {
	case number < 0:
		return metastore.Version{}, fmt.Errorf("%w: negative version", ErrInvalid)
	case number == 0:
		v, err := r.meta.HeadVersion(ctx, projectID)
		if errors.Is(err, metastore.ErrNotFound) {
			if _, perr := r.meta.GetProject(ctx, projectID); perr != nil {
				return metastore.Version{}, fmt.Errorf("project %s: %w", projectID, perr)
			}
			return metastore.Version{}, fmt.Errorf("project %s has no version yet: %w", projectID, metastore.ErrNotFound)
		}
		return v, err
	}
	v, err := r.meta.GetVersion(ctx, projectID, number)
	if err != nil {
		return metastore.Version{}, err // names the version and the ones that exist
	}
	return v, nil
}

// Lookup returns the entry at path p (a valid workspace path) of the tree
// root, descending only along p. A missing entry is an error wrapping
// metastore.ErrNotFound.
func (r *Repo) Lookup(ctx context.Context, projectID string, root id.ID, p string) (*tree.Node, error) {
	elems, err := tree.SplitPath(p)
	if err != nil {
		return nil, err
	}
	tid := root
	for i, e := range elems {
		t, err := r.LoadTree(ctx, projectID, tid)
		if err != nil {
			return nil, err
		}
		n, ok := t.Find(e)
		if !ok {
			return nil, fmt.Errorf("%w: no such path %q", metastore.ErrNotFound, p)
		}
		if i == len(elems)-1 {
			return n, nil
		}
		if n.Type != tree.Dir {
			return nil, fmt.Errorf("%w: no such path %q", metastore.ErrNotFound, p)
		}
		tid = n.Subtree
	}
	panic("unreachable")
}

// Walk calls fn for every entry below dir ("" for the whole tree) of the
// tree root, in tree order, starting strictly after the path after (""
// to start at the beginning). If dir names a file or symlink, fn sees that
// entry alone. fn returning ErrStop ends the walk with a nil error; fn
// returning ErrSkipDir for a directory skips what is below it. Walk
// skips everything up to after by binary search, so resuming a listing
// costs the depth of the tree, not the entries before it.
func (r *Repo) Walk(ctx context.Context, projectID string, root id.ID, dir, after string, fn func(path string, n *tree.Node) error) error {
	err := r.walk(ctx, projectID, root, dir, after, fn)
	if errors.Is(err, ErrStop) {
		return nil
	}
	return err
}

func (r *Repo) walk(ctx context.Context, projectID string, root id.ID, dir, after string, fn func(string, *tree.Node) error) error {
	tid := root
	if dir != "" {
		n, err := r.Lookup(ctx, projectID, root, dir)
		if err != nil {
			return err
		}
		if n.Type != tree.Dir {
			if after == "" || ComparePaths(dir, after) > 0 {
				return fn(dir, n)
			}
			return nil
		}
		tid = n.Subtree
	}
	var skip []string
	switch {
	case after == "" || after == dir:
	case dir == "":
		skip = strings.Split(after, "/")
	case strings.HasPrefix(after, dir+"/"):
		skip = strings.Split(after[len(dir)+1:], "/")
	case ComparePaths(after, dir) < 0:
	default:
		return nil // after is past everything below dir
	}
	return r.walkTree(ctx, projectID, tid, dir, skip, fn)
}

// walkTree walks tree tid (at path dir) in tree order, skipping entries up
// to and including the relative path skip.
func (r *Repo) walkTree(ctx context.Context, projectID string, tid id.ID, dir string, skip []string, fn func(string, *tree.Node) error) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	t, err := r.LoadTree(ctx, projectID, tid)
	if err != nil {
		return err
	}
	start := 0
	if len(skip) > 0 {
		start = sort.Search(len(t.Nodes), func(i int) bool { return t.Nodes[i].Name >= skip[0] })
	}
	for i := start; i < len(t.Nodes); i++ {
		n := &t.Nodes[i]
		p := join(dir, n.Name)
		var below []string
		if len(skip) > 0 && n.Name == skip[0] {
			// n itself is at or before the resume point; only what is
			// below it may come after.
			if n.Type != tree.Dir {
				continue
			}
			below = skip[1:]
		} else if err := fn(p, n); err != nil {
			if errors.Is(err, ErrSkipDir) && n.Type == tree.Dir {
				continue
			}
			return err
		}
		if n.Type == tree.Dir {
			if err := r.walkTree(ctx, projectID, n.Subtree, p, below, fn); err != nil {
				return err
			}
		}
	}
	return nil
}

// DiffFrom calls fn, in tree order, for every path that differs between
// the trees a (older) and b (newer), starting strictly after the path after.
// Unlike Diff, each path is reported once, with both sides when it exists
// in both (so a type change is one Change), and a directory present on both
// sides is never reported itself, only what differs below it. It descends
// only into subtrees whose ids differ and skips, by binary search,
// everything up to after. fn returning ErrStop ends it with a nil error.
func (r *Repo) DiffFrom(ctx context.Context, projectID string, a, b id.ID, after string, fn func(Change) error) error {
	var skip []string
	if after != "" {
		skip = strings.Split(after, "/")
	}
	err := r.diffFrom(ctx, projectID, a, b, "", skip, fn)
	if errors.Is(err, ErrStop) {
		return nil
	}
	return err
}

func (r *Repo) diffFrom(ctx context.Context, projectID string, a, b id.ID, dir string, skip []string, fn func(Change) error) error {
	if a == b {
		return nil
	}
	if err := ctx.Err(); err != nil {
		return err
	}
	ta, err := r.LoadTree(ctx, projectID, a)
	if err != nil {
		return err
	}
	tb, err := r.LoadTree(ctx, projectID, b)
	if err != nil {
		return err
	}
	from := ""
	if len(skip) > 0 {
		from = skip[0]
	}
	return pairs(ta.Nodes, tb.Nodes, from, func(na, nb *tree.Node) error {
		name := nodeName(na, nb)
		p := join(dir, name)
		var below []string
		self := true
		if len(skip) > 0 && name == skip[0] {
			self, below = false, skip[1:]
		}
		bothDirs := na != nil && nb != nil && na.Type == tree.Dir && nb.Type == tree.Dir
		if self && !bothDirs && (na == nil || nb == nil || na.Type != nb.Type || !sameNode(na, nb)) {
			if err := fn(Change{Path: p, Old: na, New: nb}); err != nil {
				return err
			}
		}
		var sa, sb id.ID
		if na != nil && na.Type == tree.Dir {
			sa = na.Subtree
		}
		if nb != nil && nb.Type == tree.Dir {
			sb = nb.Subtree
		}
		if sa != sb {
			return r.diffFrom(ctx, projectID, sa, sb, p, below, fn)
		}
		return nil
	})
}

// Revision is one version in which a path changed: Old is its entry in
// the previous version (nil if absent), New in this one (nil if deleted).
type Revision struct {
	Version metastore.Version
	Old     *tree.Node
	New     *tree.Node
}

// History walks the versions of a project older than before (0: from the
// head) newest first, and calls fn for each one in which path p differs from
// the version listed before it (its parent). It resolves p in each version
// by descending only along p, and stops descending as soon as two
// consecutive versions share the subtree on the way: O(versions x depth).
// It examines at most maxScan versions (0: no bound) and returns the number
// of the oldest version examined when there may be older ones to examine
// (the resume point: pass it as before), or 0 when it reached the first.
// fn returning ErrStop ends it early: the resume point is then the version
// fn stopped at.
func (r *Repo) History(ctx context.Context, projectID, p string, before int64, maxScan int, fn func(Revision) error) (int64, error) {
	elems, err := tree.SplitPath(p)
	if err != nil {
		return 0, err
	}
	if before < 0 {
		return 0, fmt.Errorf("%w: negative version", ErrInvalid)
	}
	if _, err := r.meta.GetProject(ctx, projectID); err != nil {
		return 0, fmt.Errorf("project %s: %w", projectID, err)
	}
	after := ""
	if before > 0 {
		after = strconv.FormatInt(before, 10)
	}
	var (
		cur     metastore.Version // the version being examined
		curPath []pathStep        // p resolved in cur
		have    bool
		scanned int
	)
	for {
		vs, err := r.meta.ListVersions(ctx, projectID, metastore.ListOptions{Limit: 1000, After: after})
		if err != nil {
			return 0, fmt.Errorf("list versions: %w", err)
		}
		if len(vs) == 0 {
			break
		}
		for _, older := range vs {
			if err := ctx.Err(); err != nil {
				return 0, err
			}
			if !have {
				cur, have = older, true
				if curPath, err = r.resolvePath(ctx, projectID, cur.Root, elems, nil); err != nil {
					return 0, err
				}
				continue
			}
			olderPath, err := r.resolvePath(ctx, projectID, older.Root, elems, curPath)
			if err != nil {
				return 0, err
			}
			if err := report(cur, len(elems), curPath, olderPath, fn); err != nil {
				if errors.Is(err, ErrStop) {
					return cur.Number, nil
				}
				return 0, err
			}
			scanned++
			cur, curPath = older, olderPath
			if maxScan > 0 && scanned >= maxScan {
				return cur.Number + 1, nil // resume with cur itself next
			}
		}
		after = strconv.FormatInt(vs[len(vs)-1].Number, 10)
	}
	if have {
		// The oldest version: compared with the empty tree.
		if err := report(cur, len(elems), curPath, nil, fn); err != nil && !errors.Is(err, ErrStop) {
			return 0, err
		}
	}
	return 0, nil
}

// pathStep is one level of a path resolved in a tree: the id of the tree
// holding the element, and the element's entry there (nil when absent, and
// then the last step).
type pathStep struct {
	tree id.ID
	node *tree.Node
}

// resolvePath resolves elems in the tree root. hint is the same path
// resolved in another tree: from the first level where both pass through
// the same tree, the rest is taken from hint without loading anything.
func (r *Repo) resolvePath(ctx context.Context, projectID string, root id.ID, elems []string, hint []pathStep) ([]pathStep, error) {
	steps := make([]pathStep, 0, len(elems))
	tid := root
	for i, e := range elems {
		if i < len(hint) && hint[i].tree == tid {
			return append(steps, hint[i:]...), nil
		}
		t, err := r.LoadTree(ctx, projectID, tid)
		if err != nil {
			return nil, err
		}
		n, ok := t.Find(e)
		if !ok {
			return append(steps, pathStep{tree: tid}), nil
		}
		steps = append(steps, pathStep{tree: tid, node: n})
		if i == len(elems)-1 || n.Type != tree.Dir {
			break
		}
		tid = n.Subtree
	}
	return steps, nil
}

// leafOf returns the entry a resolved path names: nil unless every one of
// its depth elements was found.
func leafOf(steps []pathStep, depth int) *tree.Node {
	if len(steps) != depth {
		return nil
	}
	return steps[depth-1].node
}

// report calls fn for version v if the entry the path names differs between
// newSteps (in v) and oldSteps (in the version before it; nil for none).
func report(v metastore.Version, depth int, newSteps, oldSteps []pathStep, fn func(Revision) error) error {
	nn, on := leafOf(newSteps, depth), leafOf(oldSteps, depth)
	switch {
	case nn == nil && on == nil:
		return nil
	case nn != nil && on != nil && sameNode(nn, on):
		return nil
	}
	return fn(Revision{Version: v, Old: on, New: nn})
}
