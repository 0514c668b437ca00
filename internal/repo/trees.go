package repo

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"mime"
	"path"
	"sort"
	"strings"

	"github.com/sandkeep/sandkeep/internal/id"
	"github.com/sandkeep/sandkeep/internal/metastore"
	"github.com/sandkeep/sandkeep/internal/pack"
	"github.com/sandkeep/sandkeep/internal/tree"
)

// emptyTree stands for "no tree" (a project with no version yet).
var emptyTree = &tree.Tree{}

// LoadTree returns the decoded tree tid of a project. On a cache miss it
// reads the whole tree pack that holds it (one GET) and caches every tree in
// it: trees of one commit share a pack, so a walk costs few requests.
func (r *Repo) LoadTree(ctx context.Context, projectID string, tid id.ID) (*tree.Tree, error) {
	if tid.IsZero() {
		return emptyTree, nil
	}
	if t, ok := r.trees.get(projectID, tid); ok {
		return t, nil
	}
	locs, err := r.meta.LocateBlobs(ctx, projectID, []id.ID{tid})
	if err != nil {
		return nil, fmt.Errorf("locate tree %s: %w", tid.Short(), err)
	}
	loc, ok := locs[tid]
	if !ok || loc.Type != metastore.BlobTree {
		return nil, fmt.Errorf("%w: tree %s", ErrMissing, tid.Short())
	}
	key := PackKey(projectID, loc.PackID)
	rc, err := r.store.Get(ctx, key, 0, -1)
	if err != nil {
		return nil, fmt.Errorf("read tree pack %s: %w", loc.PackID.Short(), err)
	}
	data, err := io.ReadAll(io.LimitReader(rc, MaxPackSize+1))
	rc.Close()
	if err != nil {
		return nil, fmt.Errorf("read tree pack %s: %w", loc.PackID.Short(), err)
	}
	entries, err := pack.ReadIndex(bytes.NewReader(data), int64(len(data)))
	if err != nil {
		return nil, fmt.Errorf("tree pack %s: %w", loc.PackID.Short(), err)
	}
	var want *tree.Tree
	var buf []byte
	for _, e := range entries {
		if e.Type != pack.Tree {
			continue
		}
		end := e.Offset + uint64(e.Length)
		if end > uint64(len(data)) {
			return nil, fmt.Errorf("%w: tree pack %s entry past its end", pack.ErrCorrupt, loc.PackID.Short())
		}
		plain, err := pack.DecodeBlob(e, data[e.Offset:end], buf)
		if err != nil {
			if e.ID == tid {
				return nil, fmt.Errorf("tree %s: %w", tid.Short(), err)
			}
			r.log.Error("corrupt tree in pack", "project", projectID, "pack", loc.PackID.String(), "tree", e.ID.String(), "err", err)
			continue
		}
		t, err := tree.Decode(plain)
		if err != nil {
			return nil, fmt.Errorf("%w: tree %s in pack %s: %v", pack.ErrCorrupt, e.ID.Short(), loc.PackID.Short(), err)
		}
		r.trees.put(projectID, e.ID, t, int64(len(plain)))
		if e.ID == tid {
			want = t
		}
	}
	if want == nil {
		return nil, fmt.Errorf("%w: tree %s is not in pack %s", pack.ErrCorrupt, tid.Short(), loc.PackID.Short())
	}
	return want, nil
}

// Change is one difference between two trees, for a path.
type Change struct {
	Path string
	Old  *tree.Node // nil when added
	New  *tree.Node // nil when deleted
}

// Diff calls fn for every entry (files, directories, symlinks) that differs
// between the trees a and b, descending only into subtrees whose ids differ.
// Directories present on both sides are reported only if their mode or
// mtime changed. Paths are visited in sorted order, parents before children.
func (r *Repo) Diff(ctx context.Context, projectID string, a, b id.ID, fn func(Change) error) error {
	return r.diff(ctx, projectID, a, b, "", fn)
}

func join(dir, name string) string {
	if dir == "" {
		return name
	}
	return dir + "/" + name
}

func (r *Repo) diff(ctx context.Context, projectID string, a, b id.ID, dir string, fn func(Change) error) error {
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
	return pairs(ta.Nodes, tb.Nodes, "", func(na, nb *tree.Node) error {
		return r.diffNode(ctx, projectID, join(dir, nodeName(na, nb)), na, nb, fn)
	})
}

// pairs is the one merge walk over two directories' sorted nodes: it calls
// fn with each name's node on side a and on side b (nil where the name is
// absent), in name order, starting at the first name >= from ("" for all).
// Diff and DiffFrom are built on it.
func pairs(a, b []tree.Node, from string, fn func(na, nb *tree.Node) error) error {
	i, j := 0, 0
	if from != "" {
		i = sort.Search(len(a), func(k int) bool { return a[k].Name >= from })
		j = sort.Search(len(b), func(k int) bool { return b[k].Name >= from })
	}
	for i < len(a) || j < len(b) {
		var na, nb *tree.Node
		switch {
		case j >= len(b) || (i < len(a) && a[i].Name < b[j].Name):
			na = &a[i]
			i++
		case i >= len(a) || b[j].Name < a[i].Name:
			nb = &b[j]
			j++
		default:
			na, nb = &a[i], &b[j]
			i++
			j++
		}
		if err := fn(na, nb); err != nil {
			return err
		}
	}
	return nil
}

func nodeName(a, b *tree.Node) string {
	if a != nil {
		return a.Name
	}
	return b.Name
}

func (r *Repo) diffNode(ctx context.Context, projectID, p string, na, nb *tree.Node, fn func(Change) error) error {
	switch {
	case na != nil && nb != nil && na.Type == tree.Dir && nb.Type == tree.Dir:
		if na.Mode != nb.Mode || na.MtimeNs != nb.MtimeNs {
			if err := fn(Change{Path: p, Old: na, New: nb}); err != nil {
				return err
			}
		}
		return r.diff(ctx, projectID, na.Subtree, nb.Subtree, p, fn)
	case na != nil && nb != nil && na.Type == nb.Type:
		if !sameNode(na, nb) {
			return fn(Change{Path: p, Old: na, New: nb})
		}
		return nil
	}
	// Added, deleted, or the type changed: report the old side going away
	// (with everything below it) and the new side appearing.
	if na != nil {
		if err := fn(Change{Path: p, Old: na}); err != nil {
			return err
		}
		if na.Type == tree.Dir {
			if err := r.diff(ctx, projectID, na.Subtree, id.ID{}, p, fn); err != nil {
				return err
			}
		}
	}
	if nb != nil {
		if err := fn(Change{Path: p, New: nb}); err != nil {
			return err
		}
		if nb.Type == tree.Dir {
			if err := r.diff(ctx, projectID, id.ID{}, nb.Subtree, p, fn); err != nil {
				return err
			}
		}
	}
	return nil
}

func sameNode(a, b *tree.Node) bool {
	if a.Type != b.Type || a.Mode != b.Mode || a.MtimeNs != b.MtimeNs || a.Size != b.Size || a.Target != b.Target || a.Subtree != b.Subtree || len(a.Chunks) != len(b.Chunks) {
		return false
	}
	for i := range a.Chunks {
		if a.Chunks[i] != b.Chunks[i] {
			return false
		}
	}
	return true
}

// ContentID is the checksum of a file's content as kept in project_files and
// used as ETag: "blake3:<hex>" of the content for files of at most one chunk
// (what b3sum prints), else "blake3-chunks:<hex>" of the concatenated chunk
// ids (stable for the same content, since chunk boundaries are).
func ContentID(n *tree.Node) string {
	switch len(n.Chunks) {
	case 0:
		return "blake3:" + id.Sum(nil).String()
	case 1:
		return "blake3:" + n.Chunks[0].ID.String()
	}
	h := id.NewHasher()
	for _, c := range n.Chunks {
		_, _ = h.Write(c.ID[:])
	}
	return "blake3-chunks:" + h.Sum().String()
}

// ContentType guesses a file's content type from its extension.
func ContentType(name string) string {
	if ct := mime.TypeByExtension(strings.ToLower(path.Ext(name))); ct != "" {
		return ct
	}
	return "application/octet-stream"
}

// fileChanges computes the project_files changes and the new totals from
// the parent version to root.
func (r *Repo) fileChanges(ctx context.Context, projectID string, old metastore.Version, root id.ID) (metastore.FileChanges, int64, int64, error) {
	var ch metastore.FileChanges
	files, nbytes := old.Files, old.Bytes
	err := r.Diff(ctx, projectID, old.Root, root, func(c Change) error {
		if c.Old != nil && c.Old.Type == tree.File && (c.New == nil || c.New.Type != tree.File) {
			ch.Delete = append(ch.Delete, c.Path)
			files--
			nbytes -= c.Old.Size
		}
		if c.New != nil && c.New.Type == tree.File {
			if c.Old != nil && c.Old.Type == tree.File {
				nbytes -= c.Old.Size
			} else {
				files++
			}
			nbytes += c.New.Size
			mt := timeOf(c.New.MtimeNs)
			ch.Upsert = append(ch.Upsert, metastore.ProjectFile{
				ProjectID: projectID, Path: c.Path, Size: c.New.Size,
				ContentType: ContentType(c.New.Name), Checksum: ContentID(c.New),
				CreatedAt: mt, UpdatedAt: mt,
			})
		}
		return nil
	})
	if err != nil {
		return ch, 0, 0, fmt.Errorf("diff trees: %w", err)
	}
	return ch, files, nbytes, nil
}
