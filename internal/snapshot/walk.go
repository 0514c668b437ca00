package snapshot

import (
	"context"
	"fmt"
	"os"
	"slices"
	"sync/atomic"

	"github.com/sandkeep/sandkeep/internal/id"
	"github.com/sandkeep/sandkeep/internal/tree"
)

// dirState is a directory being scanned. Its nodes are filled by the walker
// (everything but the files it hands to workers and the subtree ids), by
// the hash workers (one slot each) and by its subdirectories as they finish
// (their Subtree). The slices are never reallocated once the walker has
// handed out slots, so these writers touch distinct elements; pending
// counts the slots not filled yet plus the walker's own hold, and whoever
// drops it to zero builds the tree.
type dirState struct {
	rel     string     // workspace-relative path, "" for the root
	h       *dirHandle // open while entries are scanned and files read
	parent  *dirState
	slot    int       // index of this directory's node in parent.nodes
	prev    *dirIndex // the previous index's entry, or nil
	nodes   []tree.Node
	extra   []nodeExtra // parallel to nodes
	pending atomic.Int64
}

// nodeExtra is what the index needs beyond a node, and whether the node is
// left out of the tree.
type nodeExtra struct {
	st   fileStat // files: the stat the content was read under
	racy bool
	omit bool
}

// builtTree is an encoded tree the remote may lack.
type builtTree struct {
	id  id.ID
	enc []byte
}

// fileJob asks a hash worker to fill one file node.
type fileJob struct {
	dir  *dirState
	slot int
	name string
	rel  string
	prev *fileEntry // the previous index's entry, or nil
}

// walk scans the workspace depth-first on one goroutine.
func (r *run) walk(ctx context.Context) error {
	defer close(r.jobs)
	root := &dirState{prev: r.prev.dirs[""]}
	root.pending.Store(1)
	return r.walkDir(ctx, root, r.ws)
}

type subdir struct {
	slot int
	name string
	rel  string
}

// walkDir opens and lists d (called name in its parent, or the workspace
// path for the root), fills the nodes it can, hands the files that need
// reading to the workers and walks the subdirectories; then it drops its
// hold on d.
func (r *run) walkDir(ctx context.Context, d *dirState, name string) error {
	var parent *dirHandle
	path := name
	if d.parent != nil {
		parent = d.parent.h
		path = parent.path + string(os.PathSeparator) + name
	}
	h, err := openDir(parent, name, path)
	if err != nil {
		if d.parent == nil {
			return fmt.Errorf("open workspace: %w", err)
		}
		return r.dirFailed(d, err)
	}
	r.mu.Lock()
	r.open[h] = struct{}{}
	r.mu.Unlock()
	d.h = h
	names, err := h.names()
	if err != nil {
		if d.parent == nil {
			return fmt.Errorf("list workspace: %w", err)
		}
		r.closeDir(d)
		return r.dirFailed(d, err)
	}
	slices.Sort(names)
	d.nodes = make([]tree.Node, 0, len(names))
	d.extra = make([]nodeExtra, 0, len(names))
	var jobs []fileJob
	var subdirs []subdir
	for _, name := range names {
		if err := ctx.Err(); err != nil {
			return err
		}
		rel := name
		if d.rel != "" {
			rel = d.rel + "/" + name
		}
		st, kind, err := h.lstat(name)
		if err != nil {
			if isNotExist(err) {
				continue // vanished since the listing
			}
			r.c.skipped.Add(1)
			r.log.Warn("cannot stat; left out of the snapshot", "path", rel, "err", err)
			continue
		}
		if r.opts.Ignore.MatchEntry(rel, kind == kindDir) {
			r.c.ignored.Add(1)
			continue
		}
		switch kind {
		case kindFile:
			slot := len(d.nodes)
			d.nodes = append(d.nodes, tree.Node{Name: name, Type: tree.File, Mode: st.mode, MtimeNs: st.mtimeNs, Size: st.size})
			d.extra = append(d.extra, nodeExtra{st: st})
			pe := d.prev.lookup(name)
			if pe != nil && !pe.racy && pe.st == st {
				d.nodes[slot].Chunks = pe.chunks
				r.c.unchanged.Add(1)
				r.c.chunksReused.Add(int64(len(pe.chunks)))
				continue
			}
			jobs = append(jobs, fileJob{dir: d, slot: slot, name: name, rel: rel, prev: pe})
		case kindDir:
			subdirs = append(subdirs, subdir{slot: len(d.nodes), name: name, rel: rel})
			d.nodes = append(d.nodes, tree.Node{Name: name, Type: tree.Dir, Mode: st.mode, MtimeNs: st.mtimeNs})
			d.extra = append(d.extra, nodeExtra{st: st})
		case kindSymlink:
			target, err := h.readlink(name)
			if err != nil || target == "" || len(target) > tree.MaxTargetLen {
				if err == nil || !isNotExist(err) {
					r.c.skipped.Add(1)
					r.log.Warn("cannot store symlink; left out of the snapshot", "path", rel, "len", len(target), "err", err)
				}
				continue
			}
			d.nodes = append(d.nodes, tree.Node{Name: name, Type: tree.Symlink, Mode: st.mode, MtimeNs: st.mtimeNs, Target: target})
			d.extra = append(d.extra, nodeExtra{})
		default:
			r.c.skipped.Add(1)
			r.log.Debug("skipping special file (socket, fifo or device)", "path", rel)
		}
	}
	// From here on d.nodes is never reallocated.
	d.pending.Add(int64(len(jobs) + len(subdirs)))
	for _, j := range jobs {
		select {
		case r.jobs <- j:
		case <-ctx.Done():
			return ctx.Err()
		}
	}
	for _, s := range subdirs {
		child := &dirState{rel: s.rel, parent: d, slot: s.slot, prev: r.prev.dirs[s.rel]}
		child.pending.Store(1)
		if err := r.walkDir(ctx, child, s.name); err != nil {
			return err
		}
	}
	return r.release(d)
}

// dirFailed settles a directory that could not be listed: vanished or
// replaced, it is left out; unreadable, it keeps its previous tree if it
// had one.
func (r *run) dirFailed(d *dirState, err error) error {
	p := d.parent
	switch {
	case isNotExist(err) || isReplaced(err):
		p.extra[d.slot].omit = true
	case d.prev != nil && !d.prev.tree.IsZero():
		r.c.skipped.Add(1)
		r.log.Warn("cannot list directory; keeping its previous version", "path", d.rel, "err", err)
		p.nodes[d.slot].Subtree = d.prev.tree
		r.mu.Lock()
		r.next.dirs[d.rel] = d.prev
		r.mu.Unlock()
	default:
		r.c.skipped.Add(1)
		r.log.Warn("cannot list directory; left out of the snapshot", "path", d.rel, "err", err)
		p.extra[d.slot].omit = true
	}
	return r.release(p)
}

// release drops one hold on d; the last one builds d's tree and releases
// d's parent in turn.
func (r *run) release(d *dirState) error {
	for d != nil {
		if d.pending.Add(-1) > 0 {
			return nil
		}
		r.closeDir(d)
		tid, err := r.finish(d)
		if err != nil {
			return err
		}
		p := d.parent
		if p == nil {
			r.root = tid
			r.rootDone.Store(true)
			return nil
		}
		p.nodes[d.slot].Subtree = tid
		d = p
	}
	return nil
}

// closeDir closes d's handle once nothing more is read through it.
func (r *run) closeDir(d *dirState) {
	if d.h == nil {
		return
	}
	r.mu.Lock()
	delete(r.open, d.h)
	r.mu.Unlock()
	d.h.close()
	d.h = nil
}

// closeAll closes the handles a failed Run left open.
func (r *run) closeAll() {
	r.mu.Lock()
	defer r.mu.Unlock()
	for h := range r.open {
		h.close()
	}
	clear(r.open)
}

// finish builds, encodes and records d's tree, and d's index entry.
func (r *run) finish(d *dirState) (id.ID, error) {
	nodes := d.nodes[:0]
	files := make([]fileEntry, 0, len(d.nodes))
	var nFiles, nDirs, nLinks, nBytes int64
	for i := range d.nodes {
		n, ex := d.nodes[i], d.extra[i]
		if ex.omit {
			continue
		}
		switch n.Type {
		case tree.File:
			files = append(files, fileEntry{name: n.Name, st: ex.st, racy: ex.racy, chunks: n.Chunks})
			nFiles++
			nBytes += n.Size
		case tree.Dir:
			nDirs++
		case tree.Symlink:
			nLinks++
		}
		nodes = append(nodes, n)
	}
	t := tree.Tree{Nodes: nodes}
	enc, err := t.Encode()
	if err != nil {
		return id.ID{}, fmt.Errorf("directory %q: %w", d.rel, err)
	}
	tid := id.Sum(enc)
	r.c.files.Add(nFiles)
	r.c.dirs.Add(nDirs)
	r.c.symlinks.Add(nLinks)
	r.c.bytes.Add(nBytes)
	r.mu.Lock()
	// A tree the previous Run stored needs no upload and no question.
	if d.prev == nil || d.prev.tree != tid {
		r.trees = append(r.trees, builtTree{id: tid, enc: enc})
	}
	r.next.dirs[d.rel] = &dirIndex{tree: tid, files: slices.Clip(files), sorted: true}
	r.mu.Unlock()
	d.nodes, d.extra = nil, nil
	return tid, nil
}
