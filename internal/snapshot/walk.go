package snapshot

import (
	"bytes"
	"context"
	"fmt"
	"os"
	"slices"
	"strings"
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
	rel    string     // workspace-relative path, "" for the root
	h      *dirHandle // open while entries are scanned and files read
	parent *dirState
	slot   int       // index of this directory's node in parent.nodes
	prev   *dirIndex // the previous index's entry, or nil
	st     fileStat  // the directory's own lstat, if its parent was listed
	// distrust: prev is only a guess (a directory renamed within its
	// parent, or below one): list it and every directory below it.
	distrust bool
	nodes    []tree.Node
	extra    []nodeExtra // parallel to nodes
	pending  atomic.Int64
	idx      *dirIndex // the new index entry, once built
}

// nodeExtra is what the index needs beyond a node, and whether the node is
// left out of the tree.
type nodeExtra struct {
	st   fileStat // files: the stat the content was read under
	racy bool
	omit bool
	sub  *dirIndex // directories: the subdirectory's new index entry
}

// builtTree is an encoded tree the remote may lack.
type builtTree struct {
	id  id.ID
	enc []byte
	// mark is settling.mark() when the tree was built: every chunk it
	// names was emitted by then.
	mark uint64
}

// fileJob asks a hash worker to fill one file node.
type fileJob struct {
	dir  *dirState
	slot int
	name string
	rel  string
	prev *fileEntry // the previous index's entry, or nil
}

// dirtyNode is a directory on the way to a path an incremental Run was told
// may have changed (Options.Dirty).
type dirtyNode struct {
	// list: the directory must be listed, because a dirty path is the
	// directory itself or one of its entries.
	list bool
	kids map[string]*dirtyNode
}

func (t *dirtyNode) kid(name string) *dirtyNode {
	if t == nil {
		return nil
	}
	return t.kids[name]
}

// dirtyTree builds the tree of the directories to visit from Dirty paths;
// ok is false if a path is not a valid workspace path (scan everything).
func dirtyTree(paths []string) (root *dirtyNode, ok bool) {
	root = &dirtyNode{}
	for _, p := range paths {
		p = strings.TrimSuffix(p, "/")
		if p == "" || p == "." {
			root.list = true
			continue
		}
		elems, err := tree.SplitPath(p)
		if err != nil {
			return nil, false
		}
		n := root
		for i, e := range elems {
			if i == len(elems)-1 {
				n.list = true // p's parent: an entry was created, changed or removed
			}
			c := n.kids[e]
			if c == nil {
				c = &dirtyNode{}
				if n.kids == nil {
					n.kids = make(map[string]*dirtyNode)
				}
				n.kids[e] = c
			}
			n = c
		}
		n.list = true // if p is a directory: its own listing may have changed
	}
	return root, true
}

// walk scans the workspace depth-first on one goroutine.
func (r *run) walk(ctx context.Context) error {
	defer close(r.jobs)
	root := &dirState{prev: r.prev.root, st: r.rootSt}
	root.pending.Store(1)
	return r.visit(ctx, root, r.ws, r.dirty, r.dirty == nil || r.dirty.list)
}

// visit scans the directory d (called name in its parent, or the workspace
// path for the root). It lists d if list is set, if the previous index has
// no complete entry for it, if d's own stat differs from the one that entry
// recorded, or if a dirty path goes through a subdirectory that entry does
// not have; otherwise it rebuilds d's tree from that entry and visits only
// the subdirectories on the way to dirty paths (t).
func (r *run) visit(ctx context.Context, d *dirState, name string, t *dirtyNode, list bool) error {
	h, err := r.enter(d, name)
	if err != nil {
		if d.parent == nil {
			return fmt.Errorf("open workspace: %w", err)
		}
		return r.dirFailed(d, err)
	}
	if d.parent != nil && d.st == (fileStat{}) {
		// The parent was not listed: its node for d has the previous
		// index's mode and mtime, which d's own stat refreshes.
		st, err := h.stat()
		if err != nil {
			r.closeDir(d)
			return r.dirFailed(d, err)
		}
		d.st = st
		n := &d.parent.nodes[d.slot]
		n.Mode, n.MtimeNs = st.mode, st.mtimeNs
	}
	var v *dirView
	if d.prev != nil && d.prev.loose == nil {
		if v, err = d.prev.view(); err != nil {
			// Cannot happen to entries a Run built or LoadIndex checked.
			r.log.Warn("index entry unusable; listing the directory", "path", d.rel, "err", err)
			d.prev = nil
		}
	}
	if !r.full && !list && !d.distrust && v != nil && trusted(d.prev, d.st) && onlySubdirs(t, v) {
		return r.rebuildDir(ctx, d, t, v)
	}
	return r.walkDir(ctx, d, t, v)
}

// onlySubdirs reports whether every directory t leads to is a directory of
// the previous tree v.
func onlySubdirs(t *dirtyNode, v *dirView) bool {
	for name := range t.kids {
		i, ok := v.find(name)
		if !ok || v.nodes[i].Type != tree.Dir {
			return false
		}
	}
	return true
}

// enter opens d's directory (name in its parent's) and registers the handle.
func (r *run) enter(d *dirState, name string) (*dirHandle, error) {
	var parent *dirHandle
	path := name
	if d.parent != nil {
		parent = d.parent.h
		path = parent.path + string(os.PathSeparator) + name
	}
	h, err := openDir(parent, name, path)
	if err != nil {
		return nil, err
	}
	r.mu.Lock()
	r.open[h] = struct{}{}
	r.mu.Unlock()
	d.h = h
	return h, nil
}

type subdir struct {
	slot     int
	name     string
	rel      string
	st       fileStat
	t        *dirtyNode
	prev     *dirIndex
	distrust bool
}

func join(dir, name string) string {
	if dir == "" {
		return name
	}
	return dir + "/" + name
}

// walkDir lists d (open), fills the nodes it can, hands the files that
// need reading to the workers and visits the subdirectories that may have
// changed (all of them in a full scan); then it drops its hold on d.
func (r *run) walkDir(ctx context.Context, d *dirState, t *dirtyNode, v *dirView) error {
	h := d.h
	names, err := h.names()
	if err != nil {
		if d.parent == nil {
			return fmt.Errorf("list workspace: %w", err)
		}
		r.closeDir(d)
		return r.dirFailed(d, err)
	}
	slices.Sort(names)
	prev := &prevDir{d: d.prev, v: v}
	d.nodes = make([]tree.Node, 0, len(names))
	d.extra = make([]nodeExtra, 0, len(names))
	var jobs []fileJob
	var subdirs []subdir
	for _, name := range names {
		if err := ctx.Err(); err != nil {
			return err
		}
		rel := join(d.rel, name)
		st, kind, err := h.lstat(name)
		if err != nil {
			if isNotExist(err) {
				continue // vanished since the listing
			}
			r.notSaved(rel)
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
			if p := r.opts.Progress; p != nil {
				p.FilesSeen.Add(1)
				p.BytesSeen.Add(st.size)
			}
			pe, ok := prev.file(name)
			if ok && !pe.racy && pe.st == st {
				d.nodes[slot].Chunks = pe.chunks
				r.c.unchanged.Add(1)
				if p := r.opts.Progress; p != nil {
					p.FilesDone.Add(1)
					p.BytesDone.Add(st.size)
				}
				r.c.chunksReused.Add(int64(len(pe.chunks)))
				continue
			}
			j := fileJob{dir: d, slot: slot, name: name, rel: rel}
			if ok {
				j.prev = &pe
			}
			jobs = append(jobs, j)
		case kindDir:
			sp, renamed := prev.dir(name, st)
			subdirs = append(subdirs, subdir{slot: len(d.nodes), name: name, rel: rel, st: st, t: t.kid(name), prev: sp, distrust: d.distrust || renamed})
			d.nodes = append(d.nodes, tree.Node{Name: name, Type: tree.Dir, Mode: st.mode, MtimeNs: st.mtimeNs})
			d.extra = append(d.extra, nodeExtra{st: st})
		case kindSymlink:
			target, err := h.readlink(name)
			if err != nil || target == "" || len(target) > tree.MaxTargetLen {
				if err == nil || !isNotExist(err) {
					r.notSaved(rel)
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
	// In an incremental Run, a subdirectory no dirty path leads to is
	// taken from the previous index as it is, unless its own stat shows
	// it is not the directory that index knew (replaced, or its entries
	// changed without the change being reported).
	visits := subdirs[:0]
	for _, s := range subdirs {
		if !r.full && !s.distrust && s.t == nil && trusted(s.prev, s.st) {
			d.nodes[s.slot].Subtree = s.prev.tree
			d.extra[s.slot].sub = s.prev
			continue
		}
		visits = append(visits, s)
	}
	return r.dispatch(ctx, d, jobs, visits)
}

// dispatch hands a listed directory's files to the workers and visits its
// subdirectories, then drops walkDir's hold on d. From here on d.nodes is
// never reallocated.
func (r *run) dispatch(ctx context.Context, d *dirState, jobs []fileJob, visits []subdir) error {
	d.pending.Add(int64(len(jobs) + len(visits)))
	for _, j := range jobs {
		select {
		case r.jobs <- j:
		case <-ctx.Done():
			return ctx.Err()
		}
	}
	for _, s := range visits {
		child := &dirState{rel: s.rel, parent: d, slot: s.slot, prev: s.prev, st: s.st, distrust: s.distrust}
		child.pending.Store(1)
		list := r.full || s.distrust || s.t == nil || s.t.list || !trusted(s.prev, s.st)
		if err := r.visit(ctx, child, s.name, s.t, list); err != nil {
			return err
		}
	}
	return r.release(d)
}

// trusted reports whether the previous index's complete entry prev still
// describes the subdirectory whose lstat is st, as far as its own stat
// tells: same inode, and same ctime (which changes whenever an entry is
// created, removed or renamed in it, or it is chmodded or moved).
func trusted(prev *dirIndex, st fileStat) bool {
	return prev != nil && prev.loose == nil && prev.ino != 0 && prev.ino == st.inode && prev.ctime == st.ctimeNs
}

// rebuildDir makes d's tree from the previous index's entry v without
// listing d (open, so that subdirectories are opened through it): only the
// subdirectories on the way to dirty paths are visited, and their new
// subtree ids (and own mode and mtime) replace the old ones.
func (r *run) rebuildDir(ctx context.Context, d *dirState, t *dirtyNode, v *dirView) error {
	d.nodes = v.nodes
	d.extra = make([]nodeExtra, len(v.nodes))
	var visits []subdir
	for i := range d.nodes {
		n := &d.nodes[i]
		switch n.Type {
		case tree.File:
			d.extra[i] = nodeExtra{st: v.exts[i].stat(n), racy: v.exts[i].racy}
		case tree.Dir:
			d.extra[i].sub = v.subs[i]
			if c := t.kid(n.Name); c != nil {
				visits = append(visits, subdir{slot: i, name: n.Name, rel: join(d.rel, n.Name), t: c, prev: v.subs[i]})
			}
		}
	}
	d.pending.Add(int64(len(visits)))
	for _, s := range visits {
		child := &dirState{rel: s.rel, parent: d, slot: s.slot, prev: s.prev}
		child.pending.Store(1)
		if err := r.visit(ctx, child, s.name, s.t, s.t.list); err != nil {
			return err
		}
	}
	return r.release(d)
}

// prevDir is the previous index's entry of a directory being listed.
type prevDir struct {
	d     *dirIndex
	v     *dirView             // decoded, for a complete entry
	byIno map[uint64]*dirIndex // its subdirectories by inode, once needed
}

func (p *prevDir) file(name string) (fileEntry, bool) {
	switch {
	case p.v != nil:
		if i, ok := p.v.find(name); ok && p.v.nodes[i].Type == tree.File {
			return p.v.fileAt(i), true
		}
	case p.d != nil && p.d.loose != nil:
		return p.d.loose.file(name)
	}
	return fileEntry{}, false
}

// dir returns the entry of the subdirectory name, whose lstat is st. A
// directory new under that name may be one renamed within the parent: the
// entry of the subdirectory that had its inode is a good guess of its
// content, but only a guess (renamed reports it): changes below it may
// have been reported under its old name, so it must be listed all the way
// down, its files stat'ed against the guess (and so not read again).
func (p *prevDir) dir(name string, st fileStat) (prev *dirIndex, renamed bool) {
	switch {
	case p.v != nil:
		if i, ok := p.v.find(name); ok {
			return p.v.subs[i], false
		}
		if st.inode == 0 || len(p.d.subs) == 0 {
			return nil, false
		}
		if p.byIno == nil {
			p.byIno = make(map[uint64]*dirIndex, len(p.d.subs))
			for _, s := range p.d.subs {
				p.byIno[s.ino] = s
			}
		}
		prev = p.byIno[st.inode]
		return prev, prev != nil
	case p.d != nil && p.d.loose != nil:
		return p.d.loose.kids[name], false
	}
	return nil, false
}

// dirFailed settles a directory that could not be listed: vanished or
// replaced, it is left out; unreadable, it keeps its previous tree if it
// had one.
func (r *run) dirFailed(d *dirState, err error) error {
	p := d.parent
	switch {
	case isNotExist(err) || isReplaced(err):
		p.extra[d.slot].omit = true
	case d.prev != nil && d.prev.loose == nil:
		r.notSaved(d.rel)
		r.log.Warn("cannot list directory; keeping its previous version", "path", d.rel, "err", err)
		p.nodes[d.slot].Subtree = d.prev.tree
		p.extra[d.slot].sub = d.prev
	default:
		r.notSaved(d.rel)
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
			r.root = d.idx
			r.rootDone.Store(true)
			return nil
		}
		p.nodes[d.slot].Subtree = tid
		p.extra[d.slot].sub = d.idx
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

// finish builds, encodes and records d's tree, and d's index entry (the
// previous one, or parts of it, when nothing changed).
func (r *run) finish(d *dirState) (id.ID, error) {
	nodes := d.nodes[:0]
	extLen, ndirs := 0, 0
	for i := range d.nodes {
		switch ex := &d.extra[i]; {
		case ex.omit:
		case d.nodes[i].Type == tree.File:
			extLen += extSize(ex.st, ex.racy)
		case d.nodes[i].Type == tree.Dir:
			ndirs++
		}
	}
	ext := make([]byte, 0, extLen)
	subs := make([]*dirIndex, 0, ndirs)
	var tot totals
	for i := range d.nodes {
		n, ex := &d.nodes[i], &d.extra[i]
		if ex.omit {
			continue
		}
		switch n.Type {
		case tree.File:
			ext = appendExt(ext, ex.st, ex.racy)
			tot.files++
			tot.bytes += n.Size
		case tree.Dir:
			subs = append(subs, ex.sub)
			tot.dirs++
			tot.add(ex.sub.tot)
		case tree.Symlink:
			tot.links++
		}
		nodes = append(nodes, *n)
	}
	t := tree.Tree{Nodes: nodes}
	enc, err := t.Encode()
	if err != nil {
		return id.ID{}, fmt.Errorf("directory %q: %w", d.rel, err)
	}
	tid := id.Sum(enc)
	x := &dirIndex{tree: tid, enc: enc, ext: ext, subs: subs, ino: d.st.inode, ctime: d.st.ctimeNs, tot: tot}
	if p := d.prev; p != nil && p.loose == nil {
		if x.ino == 0 { // not stat'ed: its parent was not listed
			x.ino, x.ctime = p.ino, p.ctime
		}
		// Share what did not change with the previous index.
		sameExt, sameSubs := bytes.Equal(p.ext, ext), slices.Equal(p.subs, subs)
		switch {
		case p.tree == tid && sameExt && sameSubs && p.ino == x.ino && p.ctime == x.ctime:
			x = p
		default:
			if p.tree == tid {
				x.enc = p.enc
			}
			if sameExt {
				x.ext = p.ext
			}
			if sameSubs {
				x.subs = p.subs
			}
		}
	}
	d.idx = x
	r.mu.Lock()
	// A tree the previous Run stored needs no upload and no question.
	if d.prev == nil || d.prev.tree != tid {
		r.trees = append(r.trees, builtTree{id: tid, enc: enc, mark: r.settling.mark()})
	}
	r.mu.Unlock()
	d.nodes, d.extra = nil, nil
	return tid, nil
}
