package snapshot

import (
	"context"
	"errors"
	"fmt"
	"io"
	"math/bits"
	"sync"
	"time"

	"github.com/sandkeep/sandkeep/internal/chunker"
	"github.com/sandkeep/sandkeep/internal/id"
	"github.com/sandkeep/sandkeep/internal/tree"
)

// chunkMsg carries a chunk that may need uploading from a hash worker to
// the batcher. data is a recycled copy (see chunkBufs), counted in the budget.
type chunkMsg struct {
	id   id.ID
	data []byte
	// large: data is a chunk of a large file in the Run's chunker buffer
	// (see emitLarge), not a copy counted in the budget.
	large bool
}

// getChunker takes a chunker for a large file. A Run makes at most
// maxChunkers, kept until it ends: their buffers (Params.Max plus a read of
// up to 1 MiB: 5 MiB by default) are the largest the scan holds, and small
// files (the many) need none. They are not kept across Runs, so that an
// idle agent holds none.
func (r *run) getChunker(ctx context.Context) (*chunker.Chunker, error) {
	select {
	case ch := <-r.chunkers:
		return ch, nil
	case <-ctx.Done():
		return nil, ctx.Err()
	}
}

func (r *run) putChunker(ch *chunker.Chunker) {
	ch.Reset(nil)
	r.chunkers <- ch
}

// newChunkers returns the channel of a Run's chunkers: maxChunkers of them,
// each made on first use.
func newChunkers() chan *chunker.Chunker {
	c := make(chan *chunker.Chunker, maxChunkers)
	for range maxChunkers {
		c <- nil
	}
	return c
}

// maxChunkers bounds the large files read at once in a Run: one chunks and
// hashes at more than 1 GB/s, faster than the packers compress.
const maxChunkers = 1

// hashLoop is one hash worker.
func (r *run) hashLoop(ctx context.Context) error {
	for j := range r.jobs {
		if err := r.hashFile(ctx, j); err != nil {
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
func (r *run) hashFile(ctx context.Context, j fileJob) error {
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
			res, err = r.readFile(ctx, j, before, attempt, known)
		}
		switch {
		case ctx.Err() != nil:
			return ctx.Err()
		case errors.As(err, new(remoteError)):
			return err
		case err != nil && isNotExist(err):
			ex.omit = true // vanished
			return nil
		case err != nil && !errors.Is(err, errNotRegular):
			r.notSaved(j.rel)
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

// remoteError is an error of the remote met while a file is read: unlike
// the file's own errors, it fails the Run.
type remoteError struct{ err error }

func (e remoteError) Error() string { return e.err.Error() }
func (e remoteError) Unwrap() error { return e.err }

// errNotRegular: the path no longer names a regular file.
var errNotRegular = errors.New("not a regular file")

// readFile reads, chunks and hashes one file once, sending the chunks not
// in known to the batcher. before is an lstat taken before the file was
// opened; the read is stable if an fstat after it agrees: the path still
// named the same inode when it was opened, and that inode did not change
// while read. (A rename over the path during the read leaves the tree with
// the complete old content; the new inode shows in the next scan.)
func (r *run) readFile(ctx context.Context, j fileJob, before fileStat, attempt int, known map[id.ID]struct{}) (readResult, error) {
	start := nowNs()
	f, err := j.dir.h.openFile(j.name)
	if err != nil {
		if isReplaced(err) {
			return readResult{}, nil // now a symlink: changed
		}
		return readResult{}, err
	}
	defer f.Close()
	var refs []tree.ChunkRef
	var total int64
	var small *chunkMsg
	if before.size < int64(r.opts.Params.Min) {
		// Shorter than the smallest chunk: one chunk (or none), read
		// straight into the buffer that carries it to the packer.
		small, err = r.readSmall(ctx, f, int(before.size))
		if small != nil {
			total = int64(len(small.data))
		}
	} else {
		refs, total, err = r.readChunked(ctx, f, before, known)
	}
	r.c.bytesRead.Add(total)
	if p := r.opts.Progress; p != nil {
		p.BytesDone.Add(total)
		if err == nil && attempt == 0 {
			p.FilesDone.Add(1)
		}
	}
	if err != nil {
		return readResult{}, err
	}
	if r.opts.afterRead != nil {
		r.opts.afterRead(j.rel, attempt)
	}
	after, kind, err := f.stat()
	stable := err == nil && kind == kindFile && sameFile(before, after) && before.mode == after.mode && total == after.size
	if small != nil {
		// Only a stable read's chunk is worth sending.
		if !stable || len(small.data) == 0 {
			r.drop(*small)
		} else {
			refs = []tree.ChunkRef{{ID: small.id, Size: uint32(len(small.data))}}
			if _, ok := known[small.id]; ok {
				r.c.chunksReused.Add(1)
				r.drop(*small)
			} else if err := r.send(ctx, *small); err != nil {
				return readResult{}, err
			}
		}
	}
	if err != nil {
		return readResult{}, err
	}
	return readResult{st: after, refs: refs, stable: stable, racy: isRacy(after, start)}, nil
}

// readSmall reads a file expected to be size bytes into a buffer counted
// in the budget, and hashes it. Fewer bytes (the file shrank) are fine: the
// stat after the read tells.
func (r *run) readSmall(ctx context.Context, f *fileReader, size int) (*chunkMsg, error) {
	if err := r.budget.Acquire(ctx, int64(bufCap(size))); err != nil {
		return nil, err
	}
	buf := r.bufs.get(size)
	n, err := io.ReadFull(f, buf)
	if err == io.EOF || err == io.ErrUnexpectedEOF {
		err = nil
	}
	c := chunkMsg{data: buf[:n]}
	if err != nil {
		r.drop(c)
		return nil, err
	}
	c.id = id.Sum(c.data)
	return &c, nil
}

// readChunked reads a large file through a chunker, sending each chunk
// not in known to the batcher as it comes.
func (r *run) readChunked(ctx context.Context, f *fileReader, before fileStat, known map[id.ID]struct{}) ([]tree.ChunkRef, int64, error) {
	ch, err := r.getChunker(ctx)
	if err != nil {
		return nil, 0, err
	}
	if ch == nil {
		ch = chunker.New(nil, r.opts.Params)
	}
	// The chunk emitLarge handed to the packers last is in ch's buffer:
	// the buffer is read again (and so overwritten), and ch reused, only
	// once they are done with it.
	defer func() {
		if r.largeDone(ctx) {
			r.putChunker(ch)
		} else {
			r.chunkers <- nil // a packer may still read it: not reused
		}
	}()
	refs := make([]tree.ChunkRef, 0, before.size/int64(r.opts.Params.Avg)+1)
	var total int64
	// Reading exactly the expected size spares the read that returns EOF;
	// a file that grew meanwhile shows in the second lstat.
	ch.Reset(&io.LimitedReader{R: f, N: before.size})
	for {
		if err := ctx.Err(); err != nil {
			return nil, total, err
		}
		if !ch.Ready() && !r.largeDone(ctx) {
			return nil, total, ctx.Err()
		}
		data, err := ch.Next()
		if errors.Is(err, io.EOF) {
			return refs, total, nil
		}
		if err != nil {
			return nil, total, err
		}
		cid := id.Sum(data)
		refs = append(refs, tree.ChunkRef{ID: cid, Size: uint32(len(data))})
		total += int64(len(data))
		if _, ok := known[cid]; ok {
			r.c.chunksReused.Add(1)
			continue
		}
		if err := r.emitLarge(ctx, cid, data); err != nil {
			return nil, total, err
		}
	}
}

// emitLarge hands a chunk of a large file to the packers if the remote
// lacks it. Large files are read one at a time (maxChunkers) and their
// chunks skip the batcher: the worker asks the remote about each one
// itself, while the packers compress the previous one. The chunk is not
// copied: the packer compresses it straight from the chunker's buffer into
// the pack, and the worker goes on cutting the chunks that follow in that
// buffer meanwhile; it waits for the packer (largeDone) only before the
// chunker reads into its buffer again (chunker.Ready), and before the
// chunker is reused. At most one such chunk is in flight (largeFree). So a
// large file costs its chunker and nothing else: no copy, no scratch.
func (r *run) emitLarge(ctx context.Context, cid id.ID, data []byte) error {
	r.settling.emit(cid)
	if !r.inflight.add(cid) {
		r.c.chunksReused.Add(1) // being packed: a copy in the same Run
		return nil
	}
	missing, err := r.remote.FindMissing(ctx, []id.ID{cid})
	if err != nil {
		return remoteError{fmt.Errorf("find missing chunks: %w", err)}
	}
	if len(missing) == 0 {
		r.stored(cid)
		r.c.chunksReused.Add(1)
		return nil
	}
	select {
	case <-r.largeFree:
	case <-ctx.Done():
		return ctx.Err()
	}
	c := chunkMsg{id: cid, data: data, large: true}
	select {
	case r.packs <- []chunkMsg{c}:
		return nil
	case <-ctx.Done():
		r.drop(c)
		return ctx.Err()
	}
}

// largeDone waits until no chunk handed over by emitLarge is in flight; it
// reports false if ctx is done first (a packer may then still read it).
func (r *run) largeDone(ctx context.Context) bool {
	select {
	case <-r.largeFree:
		r.largeFree <- struct{}{}
		return true
	case <-ctx.Done():
		return false
	}
}

// send hands a chunk, counted in the budget, to the batcher.
func (r *run) send(ctx context.Context, c chunkMsg) error {
	r.settling.emit(c.id)
	select {
	case r.chunks <- c:
		return nil
	case <-ctx.Done():
		r.drop(c)
		return ctx.Err()
	}
}

// drop recycles a chunk's buffer and returns its bytes (its capacity,
// which is what was counted) to the budget, or, for a chunk of a large
// file, tells its worker that the chunk is no longer read.
func (r *run) drop(c chunkMsg) {
	if c.large {
		r.largeFree <- struct{}{}
		return
	}
	r.budget.Release(int64(cap(c.data)))
	r.bufs.put(c.data)
}

// Chunk copies come from power-of-two size classes, recycled within a Run,
// so that a scan does not allocate (and leave for the garbage collector) a
// copy of every byte it reads. Copies of at most minPooled bytes are
// allocated exactly.
const minPooled = 512

// bufCap is the capacity of the buffer for a chunk of n bytes, which is
// what it counts in the budget.
func bufCap(n int) int {
	if n <= minPooled {
		return n
	}
	return 1 << bits.Len(uint(n-1))
}

// chunkBufs recycles the chunk copies of one Run. The budget bounds the
// buffers in use; of those given back it keeps up to limit bytes, making
// room for a buffer given back by dropping free ones of other classes,
// largest first: the free buffers follow what the scan reads now (small
// files, or the chunks of a large one). So the copies of a Run take at
// most the budget plus limit. Nothing is kept across Runs.
type chunkBufs struct {
	mu    sync.Mutex
	free  [bits.UintSize][][]byte // by log2 of the capacity
	held  int                     // bytes in free
	limit int
}

// newChunkBufs returns the pool of a Run whose budget is budget bytes and
// whose chunks in the budget are shorter than maxChunk bytes.
func newChunkBufs(budget, maxChunk int) chunkBufs {
	return chunkBufs{limit: max(budget/2, bufCap(maxChunk))}
}

func (p *chunkBufs) get(n int) []byte {
	c := bufCap(n)
	if c <= minPooled {
		return make([]byte, n)
	}
	k := bits.Len(uint(c - 1))
	p.mu.Lock()
	defer p.mu.Unlock()
	if l := len(p.free[k]); l > 0 {
		b := p.free[k][l-1]
		p.free[k][l-1] = nil
		p.free[k] = p.free[k][:l-1]
		p.held -= cap(b)
		return b[:n]
	}
	return make([]byte, n, c)
}

func (p *chunkBufs) put(b []byte) {
	c := cap(b)
	if c <= minPooled || c&(c-1) != 0 {
		return
	}
	k := bits.Len(uint(c - 1))
	p.mu.Lock()
	defer p.mu.Unlock()
	for j := len(p.free) - 1; j >= 0 && p.held+c > p.limit; j-- {
		for j != k && len(p.free[j]) > 0 && p.held+c > p.limit {
			l := len(p.free[j])
			p.held -= cap(p.free[j][l-1])
			p.free[j][l-1] = nil
			p.free[j] = p.free[j][:l-1]
		}
	}
	if p.held+c > p.limit {
		return
	}
	p.free[k] = append(p.free[k], b[:0])
	p.held += c
}
