package repo

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"slices"
	"strings"
	"time"

	"github.com/sandkeep/sandkeep/internal/chunker"
	"github.com/sandkeep/sandkeep/internal/id"
	"github.com/sandkeep/sandkeep/internal/metastore"
	"github.com/sandkeep/sandkeep/internal/pack"
	"github.com/sandkeep/sandkeep/internal/tree"
)

// MaxEditsPerCall bounds the paths of one Put.
const MaxEditsPerCall = 1000

// Edit is one change Put makes to a project's head: a file written from
// Body, or (Delete) a path removed with everything under it.
type Edit struct {
	// Path is slash-separated and relative to the workspace root.
	Path string
	// Delete removes Path; Body is then unused.
	Delete bool
	// Body is the file's content, read once, in a stream.
	Body io.Reader
	// Mode holds the permission bits (0 means 0644).
	Mode uint32
	// Mtime is the file's modification time (zero means now).
	Mtime time.Time
}

// PutResult is what Put committed.
type PutResult struct {
	Version metastore.Version
	// Files and Bytes count the files written and their bytes; Deleted the
	// paths removed.
	Files   int
	Bytes   int64
	Deleted int
	// NewChunks and PackedBytes count what went to the store.
	NewChunks   int
	PackedBytes int64
}

// Put writes files into (and deletes paths from) a project's head without a
// sandbox: NewPut, Add for each edit, then Commit.
func (r *Repo) Put(ctx context.Context, projectID string, edits []Edit) (PutResult, error) {
	p, err := r.NewPut(ctx, projectID)
	if err != nil {
		return PutResult{}, err
	}
	for _, e := range edits {
		if err := p.Add(ctx, e); err != nil {
			return PutResult{}, err
		}
	}
	return p.Commit(ctx)
}

// Putter builds one version from edits to a project's head, by the data
// path an agent uses: every file is chunked as the agent chunks it, the
// chunks the project lacks are packed and stored, each pack is read back
// and verified (CompletePacks) before a chunk is indexed, the changed trees
// are checked and stored (PutTrees) and the version is committed on the
// head by compare-and-set (Commit), with kind upload. Bodies are streamed
// (memory stays within about two packs whatever a file's size). Chunks
// stored by a Putter that never commits are collected by GC like any
// unreferenced upload. A Putter is not safe for concurrent use.
type Putter struct {
	r         *Repo
	projectID string
	lim       metastore.Limits
	ops       []putOp
	named     map[string]bool // paths edited
	dirs      map[string]bool // directories above them
	up        *uploader
	res       PutResult
}

// NewPut starts a Put on a project.
func (r *Repo) NewPut(ctx context.Context, projectID string) (*Putter, error) {
	if _, err := r.meta.GetProject(ctx, projectID); err != nil {
		return nil, fmt.Errorf("project %s: %w", projectID, err)
	}
	lim, err := r.Limits(ctx, projectID)
	if err != nil {
		return nil, err
	}
	return &Putter{
		r: r, projectID: projectID, lim: lim,
		named: map[string]bool{}, dirs: map[string]bool{},
		up: &uploader{r: r, projectID: projectID, w: pack.NewWriter(), seen: map[id.ID]struct{}{}},
	}, nil
}

// Add checks one edit and, for a file, reads its body to the end, storing
// the chunks the project lacks.
func (p *Putter) Add(ctx context.Context, e Edit) error {
	if len(p.ops) >= MaxEditsPerCall {
		return fmt.Errorf("%w: more than %d paths in one put", ErrInvalid, MaxEditsPerCall)
	}
	elems, err := tree.SplitPath(e.Path)
	if err != nil {
		return fmt.Errorf("path %q: %w", e.Path, err)
	}
	if len(elems) > p.lim.MaxDepth {
		return fmt.Errorf("%w: path %q is deeper than the project's limit of %d", ErrInvalid, e.Path, p.lim.MaxDepth)
	}
	path := strings.Join(elems, "/")
	if p.named[path] {
		return fmt.Errorf("%w: %s named twice", ErrInvalid, path)
	}
	// A path inside another edited in the same put is ambiguous (write a/b
	// and delete a): refuse it, either way round.
	if p.dirs[path] {
		return fmt.Errorf("%w: %s holds another path of this put", ErrInvalid, path)
	}
	for k := 1; k < len(elems); k++ {
		if dir := strings.Join(elems[:k], "/"); p.named[dir] {
			return fmt.Errorf("%w: %s is inside %s, also named", ErrInvalid, path, dir)
		}
	}
	op := putOp{elems: elems}
	if e.Delete {
		p.res.Deleted++
	} else {
		if e.Body == nil {
			return fmt.Errorf("%w: %s: no content", ErrInvalid, path)
		}
		mode := e.Mode & tree.ModeMask
		if mode == 0 {
			mode = 0o644
		}
		mt := e.Mtime
		if mt.IsZero() {
			mt = time.Now()
		}
		op.node = &tree.Node{Name: elems[len(elems)-1], Type: tree.File, Mode: mode, MtimeNs: mt.UnixNano()}
		if err := p.up.file(ctx, path, op.node, e.Body, p.lim.MaxBytes-p.res.Bytes); err != nil {
			return err
		}
		p.res.Files++
		p.res.Bytes += op.node.Size
	}
	p.named[path] = true
	for k := 1; k < len(elems); k++ {
		p.dirs[strings.Join(elems[:k], "/")] = true
	}
	p.ops = append(p.ops, op)
	return nil
}

// Commit stores the last pack and commits the edits on the head. A commit
// that loses the race to another (an agent's sync) is rebuilt on the new
// head and tried again, so a put never overwrites a committed version: the
// other commit stays in the history and its other paths in the head.
func (p *Putter) Commit(ctx context.Context) (PutResult, error) {
	if len(p.ops) == 0 {
		return PutResult{}, fmt.Errorf("%w: nothing to put or delete", ErrInvalid)
	}
	if err := p.up.flush(ctx); err != nil {
		return PutResult{}, err
	}
	res := p.res
	res.NewChunks, res.PackedBytes = p.up.chunks, p.up.packed
	err := onHead(ctx, func(ctx context.Context) error { // the head moved: rebuild on the new one
		v, err := p.r.putOnHead(ctx, p.projectID, p.ops)
		res.Version = v
		return err
	})
	if err != nil {
		return PutResult{}, err
	}
	p.r.log.Info("files put", "project", p.projectID, "version", res.Version.Number, "files", res.Files, "bytes", res.Bytes, "deleted", res.Deleted)
	return res, nil
}

// putOp is one checked edit: its path's elements and the node to put
// there (nil: delete).
type putOp struct {
	elems []string
	node  *tree.Node
}

// uploader chunks files and stores the chunks the project lacks, in packs
// verified as an agent's are.
type uploader struct {
	r         *Repo
	projectID string
	w         *pack.Writer
	seen      map[id.ID]struct{} // chunks stored or in w during this Put
	chunks    int
	packed    int64
}

// file reads one body, chunk by chunk, into node's chunk list; at most
// budget bytes.
func (u *uploader) file(ctx context.Context, path string, node *tree.Node, body io.Reader, budget int64) error {
	c := chunker.New(body, chunker.DefaultParams)
	for {
		data, err := c.Next()
		if errors.Is(err, io.EOF) {
			return nil
		}
		if err != nil {
			return fmt.Errorf("read %s: %w", path, err)
		}
		node.Size += int64(len(data))
		if node.Size > budget {
			return fmt.Errorf("%w: %s: more than the project's limit of bytes allows (%d left)", ErrTooLarge, path, budget)
		}
		cid := id.Sum(data)
		node.Chunks = append(node.Chunks, tree.ChunkRef{ID: cid, Size: uint32(len(data))})
		if err := u.add(ctx, cid, data); err != nil {
			return err
		}
	}
}

// add stores one chunk unless the project has it already.
func (u *uploader) add(ctx context.Context, cid id.ID, data []byte) error {
	if _, ok := u.seen[cid]; ok {
		return nil
	}
	u.seen[cid] = struct{}{}
	missing, err := u.r.MissingBlobs(ctx, u.projectID, []id.ID{cid})
	if err != nil {
		return err
	}
	if len(missing) == 0 {
		return nil
	}
	if u.w.Len() > 0 && !u.w.FitsDirect(len(data)) {
		if err := u.flush(ctx); err != nil {
			return err
		}
	}
	if _, err := u.w.Add(pack.Data, cid, data); err != nil {
		return err
	}
	u.chunks++
	if u.w.Size() >= u.w.Target() {
		return u.flush(ctx)
	}
	return nil
}

// flush stores the pack being filled and indexes it through CompletePacks,
// which reads it back and verifies every chunk.
func (u *uploader) flush(ctx context.Context) error {
	if u.w.Len() == 0 {
		return nil
	}
	data, packID, _, err := u.w.Finish()
	if err != nil {
		return err
	}
	if err := u.r.store.Put(ctx, PackKey(u.projectID, packID), bytes.NewReader(data), int64(len(data))); err != nil {
		return fmt.Errorf("store pack %s: %w", packID.Short(), err)
	}
	if _, err := u.r.CompletePacks(ctx, u.projectID, []PackRef{{ID: packID, Size: int64(len(data))}}); err != nil {
		return err
	}
	u.packed += int64(len(data))
	u.w.Recycle(data)
	return nil
}

// putOnHead applies ops to the head's tree and commits the result on it.
func (r *Repo) putOnHead(ctx context.Context, projectID string, ops []putOp) (metastore.Version, error) {
	p, err := r.meta.GetProject(ctx, projectID)
	if err != nil {
		return metastore.Version{}, fmt.Errorf("project %s: %w", projectID, err)
	}
	var root id.ID
	if p.Head > 0 {
		head, err := r.meta.GetVersion(ctx, projectID, p.Head)
		if err != nil {
			return metastore.Version{}, err
		}
		root = head.Root
	}
	e := &treeEditor{r: r, projectID: projectID}
	newRoot, err := e.apply(ctx, root, "", ops, 0)
	if err != nil {
		return metastore.Version{}, err
	}
	if err := e.store(ctx); err != nil {
		return metastore.Version{}, err
	}
	return r.Commit(ctx, projectID, CommitRequest{Parent: p.Head, Root: newRoot, Kind: metastore.KindUpload})
}

// treeEditor rebuilds the trees on the paths of a Put.
type treeEditor struct {
	r         *Repo
	projectID string
	encoded   [][]byte // new trees, children first
}

// apply returns the id of tree tid (zero: empty) with ops applied, whose
// elements from depth on are relative to it; dir names it, for errors.
func (e *treeEditor) apply(ctx context.Context, tid id.ID, dir string, ops []putOp, depth int) (id.ID, error) {
	t, err := e.r.LoadTree(ctx, e.projectID, tid)
	if err != nil {
		return id.ID{}, err
	}
	nodes := slices.Clone(t.Nodes)
	// Group the ops by their element at this depth, in order.
	byName := map[string][]putOp{}
	var names []string
	for _, o := range ops {
		n := o.elems[depth]
		if _, ok := byName[n]; !ok {
			names = append(names, n)
		}
		byName[n] = append(byName[n], o)
	}
	for _, name := range names {
		group := byName[name]
		i, found := slices.BinarySearchFunc(nodes, name, func(n tree.Node, name string) int { return strings.Compare(n.Name, name) })
		p := join(dir, name)
		if len(group) == 1 && len(group[0].elems) == depth+1 {
			o := group[0]
			switch {
			case o.node == nil && !found:
				return id.ID{}, fmt.Errorf("%w: %s: no such file or directory in the head version", metastore.ErrNotFound, p)
			case o.node == nil:
				nodes = slices.Delete(nodes, i, i+1)
			case found:
				nodes[i] = *o.node
			default:
				nodes = slices.Insert(nodes, i, *o.node)
			}
			continue
		}
		// Deeper paths: descend into (or create) the directory.
		var sub id.ID
		var node tree.Node
		if found {
			node = nodes[i]
			if node.Type != tree.Dir {
				return id.ID{}, fmt.Errorf("%w: %s is a %s in the head version, not a directory", ErrInvalid, p, node.Type)
			}
			sub = node.Subtree
		} else {
			node = tree.Node{Name: name, Type: tree.Dir, Mode: 0o755, MtimeNs: time.Now().UnixNano()}
		}
		newSub, err := e.apply(ctx, sub, p, group, depth+1)
		if err != nil {
			return id.ID{}, err
		}
		node.Subtree = newSub
		if found {
			nodes[i] = node
		} else {
			nodes = slices.Insert(nodes, i, node)
		}
	}
	nt := &tree.Tree{Nodes: nodes}
	enc, err := nt.Encode()
	if err != nil {
		return id.ID{}, fmt.Errorf("%w: %s: %w", ErrInvalid, dir, err)
	}
	e.encoded = append(e.encoded, enc)
	return id.Sum(enc), nil
}

// store sends the new trees, children first, in calls within
// MaxTreeBytesPerCall.
func (e *treeEditor) store(ctx context.Context) error {
	var batch [][]byte
	size := 0
	for _, b := range e.encoded {
		if size+len(b) > MaxTreeBytesPerCall && len(batch) > 0 {
			if _, err := e.r.PutTrees(ctx, e.projectID, batch); err != nil {
				return err
			}
			batch, size = nil, 0
		}
		batch = append(batch, b)
		size += len(b)
	}
	if _, err := e.r.PutTrees(ctx, e.projectID, batch); err != nil {
		return err
	}
	return nil
}
