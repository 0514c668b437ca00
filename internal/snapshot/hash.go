package snapshot

import (
	"context"
	"errors"
	"io"
	"math/bits"
	"sync"
	"time"

	"github.com/sandkeep/sandkeep/internal/chunker"
	"github.com/sandkeep/sandkeep/internal/id"
	"github.com/sandkeep/sandkeep/internal/tree"
)

// chunkMsg carries a chunk that may need uploading from a hash worker to
// the batcher. data is a pooled copy (see getBuf), counted in the budget.
type chunkMsg struct {
	id   id.ID
	data []byte
}

// chunkers keeps Chunkers (and their buffers of about 8 MiB) across Runs.
var chunkers sync.Pool

type pooledChunker struct {
	p chunker.Params
	c *chunker.Chunker
}

func getChunker(p chunker.Params) *pooledChunker {
	if pc, ok := chunkers.Get().(*pooledChunker); ok && pc.p == p {
		return pc
	}
	return &pooledChunker{p: p, c: chunker.New(nil, p)}
}

func putChunker(pc *pooledChunker) {
	pc.c.Reset(nil)
	chunkers.Put(pc)
}

// hashLoop is one hash worker.
func (r *run) hashLoop(ctx context.Context) error {
	pc := getChunker(r.opts.Params)
	defer putChunker(pc)
	for j := range r.jobs {
		if err := r.hashFile(ctx, pc.c, j); err != nil {
			return err
		}
		if err := r.release(j.dir); err != nil {
			return err
		}
	}
	return nil
}

// hashFile fills the node of one file: read, chunk and hash it until two
// stats around the read agree, then record its chunks. A file that keeps
// changing or cannot be read keeps its previous version (or is left out).
func (r *run) hashFile(ctx context.Context, ch *chunker.Chunker, j fileJob) error {
	node, ex := &j.dir.nodes[j.slot], &j.dir.extra[j.slot]
	var known map[id.ID]struct{}
	if j.prev != nil && len(j.prev.chunks) > 0 {
		// The previous version's chunks are stored: no need to ask.
		known = make(map[id.ID]struct{}, len(j.prev.chunks))
		for _, c := range j.prev.chunks {
			known[c.ID] = struct{}{}
		}
	}
	before := ex.st // the walker's lstat
	for attempt := 0; ; attempt++ {
		var res readResult
		var err error
		if attempt > 0 {
			var kind entryKind
			if before, kind, err = j.dir.h.lstat(j.name); err == nil && kind != kindFile {
				err = errNotRegular
			}
		}
		if err == nil {
			res, err = r.readFile(ctx, ch, j, before, attempt, known)
		}
		switch {
		case ctx.Err() != nil:
			return ctx.Err()
		case err != nil && isNotExist(err):
			ex.omit = true // vanished
			return nil
		case err != nil && err != errNotRegular:
			r.c.skipped.Add(1)
			r.log.Warn("cannot read file; keeping its previous version", "path", j.rel, "err", err)
			r.keepPrev(j)
			return nil
		case err == nil && res.stable:
			node.Size, node.MtimeNs, node.Mode, node.Chunks = res.st.size, res.st.mtimeNs, res.st.mode, res.refs
			ex.st, ex.racy = res.st, res.racy
			return nil
		case attempt >= r.opts.Retries:
			r.log.Warn("file kept changing while read; keeping its previous version", "path", j.rel, "attempts", attempt+1)
			r.mu.Lock()
			r.changed = append(r.changed, j.rel)
			r.mu.Unlock()
			r.keepPrev(j)
			return nil
		}
		// Give a writer in progress a moment to finish.
		t := time.NewTimer(time.Duration(attempt+1) * 20 * time.Millisecond)
		select {
		case <-t.C:
		case <-ctx.Done():
			t.Stop()
			return ctx.Err()
		}
	}
}

// keepPrev makes a file's node its previous version, or omits it.
func (r *run) keepPrev(j fileJob) {
	node, ex := &j.dir.nodes[j.slot], &j.dir.extra[j.slot]
	if j.prev == nil {
		ex.omit = true
		return
	}
	p := j.prev
	node.Size, node.MtimeNs, node.Mode, node.Chunks = p.st.size, p.st.mtimeNs, p.st.mode, p.chunks
	// The index keeps the old stat, so the next Run reads the file again.
	ex.st, ex.racy = p.st, p.racy
}

type readResult struct {
	st     fileStat
	refs   []tree.ChunkRef
	stable bool // the file did not change while read
	racy   bool
}

// errNotRegular: the path no longer names a regular file.
var errNotRegular = errors.New("not a regular file")

// readFile reads, chunks and hashes one file once, sending the chunks not
// in known to the batcher. before is an lstat taken before the file was
// opened; the read is stable if an fstat after it agrees: the path still
// named the same inode when it was opened, and that inode did not change
// while read. (A rename over the path during the read leaves the tree with
// the complete old content; the new inode shows in the next scan.)
func (r *run) readFile(ctx context.Context, ch *chunker.Chunker, j fileJob, before fileStat, attempt int, known map[id.ID]struct{}) (readResult, error) {
	start := nowNs()
	f, err := j.dir.h.openFile(j.name)
	if err != nil {
		if isReplaced(err) {
			return readResult{}, nil // now a symlink: changed
		}
		return readResult{}, err
	}
	defer f.Close()
	refs := make([]tree.ChunkRef, 0, before.size/int64(r.opts.Params.Avg)+1)
	var total int64
	// Reading exactly the expected size spares the read that returns EOF;
	// a file that grew meanwhile shows in the second lstat.
	ch.Reset(&io.LimitedReader{R: f, N: before.size})
	defer ch.Reset(nil)
	for {
		if err := ctx.Err(); err != nil {
			return readResult{}, err
		}
		data, err := ch.Next()
		if err == io.EOF {
			break
		}
		if err != nil {
			r.c.bytesRead.Add(total)
			return readResult{}, err
		}
		cid := id.Sum(data)
		refs = append(refs, tree.ChunkRef{ID: cid, Size: uint32(len(data))})
		total += int64(len(data))
		if _, ok := known[cid]; ok {
			r.c.chunksReused.Add(1)
			continue
		}
		if err := r.emit(ctx, cid, data); err != nil {
			return readResult{}, err
		}
	}
	r.c.bytesRead.Add(total)
	if r.opts.afterRead != nil {
		r.opts.afterRead(j.rel, attempt)
	}
	after, kind, err := f.stat()
	if err != nil {
		return readResult{}, err
	}
	stable := kind == kindFile && sameFile(before, after) && before.mode == after.mode && total == after.size
	return readResult{st: after, refs: refs, stable: stable, racy: isRacy(after, start)}, nil
}

// emit copies a chunk into a pooled buffer, waits for room in the budget
// and hands it to the batcher.
func (r *run) emit(ctx context.Context, cid id.ID, data []byte) error {
	n := int64(bufCap(len(data)))
	if err := r.budget.Acquire(ctx, n); err != nil {
		return err
	}
	buf := getBuf(len(data))
	copy(buf, data)
	select {
	case r.chunks <- chunkMsg{id: cid, data: buf}:
		return nil
	case <-ctx.Done():
		r.budget.Release(n)
		return ctx.Err()
	}
}

// drop returns a chunk's buffer to the pool and its bytes to the budget.
func (r *run) drop(c chunkMsg) {
	r.budget.Release(int64(cap(c.data)))
	putBuf(c.data)
}

// Chunk copies come from power-of-two size classes, pooled, so that a scan
// does not allocate (and leave for the garbage collector) a copy of every
// byte it reads. Copies of at most minPooled bytes are allocated exactly.
const minPooled = 4 << 10

var bufPools [32]sync.Pool // by log2 of the capacity

func bufCap(n int) int {
	if n <= minPooled {
		return n
	}
	return 1 << bits.Len(uint(n-1))
}

func getBuf(n int) []byte {
	if n <= minPooled {
		return make([]byte, n)
	}
	k := bits.Len(uint(n - 1))
	if p, ok := bufPools[k].Get().(*[]byte); ok {
		return (*p)[:n]
	}
	return make([]byte, n, 1<<k)
}

func putBuf(b []byte) {
	c := cap(b)
	if c <= minPooled || c&(c-1) != 0 {
		return
	}
	b = b[:0]
	bufPools[bits.Len(uint(c-1))].Put(&b)
}
