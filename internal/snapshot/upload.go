package snapshot

import (
	"context"
	"fmt"
	"sync"

	"golang.org/x/sync/errgroup"

	"github.com/sandkeep/sandkeep/internal/id"
	"github.com/sandkeep/sandkeep/internal/pack"
)

// inflight is the set of chunks between the batcher and the remote: asked
// about, or missing and not uploaded yet. A chunk arriving again meanwhile
// (the same content in another file) is dropped; once the remote has it, it
// leaves the set, and FindMissing answers for later copies. So the set is
// bounded by what is in flight, not by the size of the Run.
type inflight struct {
	mu  sync.Mutex
	ids map[id.ID]struct{}
}

// add reports whether cid was not in flight, and adds it.
func (f *inflight) add(cid id.ID) bool {
	f.mu.Lock()
	defer f.mu.Unlock()
	if _, ok := f.ids[cid]; ok {
		return false
	}
	f.ids[cid] = struct{}{}
	return true
}

func (f *inflight) remove(cid id.ID) {
	f.mu.Lock()
	delete(f.ids, cid)
	f.mu.Unlock()
}

// batch collects the chunks from the hash workers, drops those already in
// flight, asks the remote which of the others it lacks, in batches of at
// most MaxIDs ids and batchBytes, and passes the missing ones to the
// packers.
func (r *run) batch(ctx context.Context) error {
	limit := int64(r.batchBytes)
	var batch []chunkMsg
	var held int64
	flush := func() error {
		if len(batch) == 0 {
			return nil
		}
		ids := make([]id.ID, len(batch))
		for i, c := range batch {
			ids[i] = c.id
		}
		missing, err := r.remote.FindMissing(ctx, ids)
		if err != nil {
			return fmt.Errorf("find missing chunks: %w", err)
		}
		want := make(map[id.ID]struct{}, len(missing))
		for _, m := range missing {
			want[m] = struct{}{}
		}
		out := batch[:0]
		var present []id.ID
		for _, c := range batch {
			if _, ok := want[c.id]; ok {
				out = append(out, c)
			} else {
				r.c.chunksReused.Add(1)
				present = append(present, c.id)
				r.drop(c)
			}
		}
		r.stored(present...)
		batch, held = nil, 0
		if len(out) == 0 {
			return nil
		}
		select {
		case r.packs <- out:
			return nil
		case <-ctx.Done():
			return ctx.Err()
		}
	}
	for {
		select {
		case c, ok := <-r.chunks:
			if !ok {
				// Every worker is done, so nothing else sends to
				// r.packs (large chunks go there directly). On an error
				// it stays open: the packers stop on the cancelled
				// context, and a worker still sending gets the same.
				if err := flush(); err != nil {
					return err
				}
				close(r.packs)
				return nil
			}
			if !r.inflight.add(c.id) {
				r.c.chunksReused.Add(1)
				r.drop(c)
				continue
			}
			batch = append(batch, c)
			held += int64(cap(c.data))
			if len(batch) >= MaxIDs || held >= limit {
				if err := flush(); err != nil {
					return err
				}
			}
		case <-ctx.Done():
			return ctx.Err()
		}
	}
}

// maxPackBlobs bounds the blobs of one pack: a pack of tiny, compressible
// chunks would otherwise hold hundreds of thousands, and the writer keeps
// an entry and an index slot (about 110 bytes) for each until it finishes.
// Their footer (56 bytes each) is then about 900 KiB.
const maxPackBlobs = 16 << 10

// packCapacity is the size of the pack buffers for packs of target bytes
// and chunks of at most maxChunk bytes: a sixteenth above the target (room
// for the footer of a few thousand small chunks; a pack of more is
// finished a little below its target), and never less than an empty pack
// needs to take the largest chunk, which is compressed straight into the
// buffer (see emitLarge), whole.
func packCapacity(target, maxChunk int) int {
	return max(target+target/16, pack.EmptyPackNeeds(maxChunk))
}

// pack compresses the missing chunks on r.packers goroutines into one
// shared pack writer (compression runs outside its lock; a small change
// makes one pack), and uploads each pack when it reaches PackSize. A Run
// holds at most UploadConcurrency pack buffers, each reused once the object
// store has its pack: the pack being filled and those being sent, so a new
// pack starts only when fewer than UploadConcurrency are being sent. The
// remote's verification and index of a sent pack (most of an upload's
// time) holds no buffer; at most UploadConcurrency+maxIndexing uploads are
// in flight. It returns once every pack is uploaded, and so indexed by the
// remote.
func (r *run) pack(ctx context.Context) error {
	ug, uctx := errgroup.WithContext(ctx)
	pw := &packWriter{
		r:       r,
		uploads: ug,
		uctx:    uctx,
		w:       pack.NewWriterCap(r.opts.PackSize, packCapacity(r.opts.PackSize, r.opts.Params.Max)),
		slots:   make(chan struct{}, r.opts.UploadConcurrency),
		pending: make(chan struct{}, r.opts.UploadConcurrency+maxIndexing),
	}
	pg, pctx := errgroup.WithContext(uctx)
	for range r.packers {
		pg.Go(func() error { return pw.compressAll(pctx) })
	}
	perr := pg.Wait()
	if perr == nil && pw.w.Len() > 0 {
		perr = pw.finish()
	}
	if uerr := ug.Wait(); uerr != nil {
		return uerr
	}
	return perr
}

// packWriter is the pack being filled by a Run's packer goroutines and the
// uploads of the packs finished before it.
type packWriter struct {
	r       *run
	uploads *errgroup.Group // one goroutine per finished pack
	uctx    context.Context // the uploads' context: done on the first error

	mu      sync.Mutex // guards w
	w       *pack.Writer
	slots   chan struct{} // pack buffers in use (the one filling and those being sent)
	pending chan struct{} // uploads not finished (sent or not)
}

// maxIndexing bounds the uploads whose packs the object store holds and
// the remote is still verifying and indexing, beyond those being sent.
const maxIndexing = 2

// compressAll is one packer goroutine: it compresses the batches from
// r.packs (large chunks are compressed later, straight into the pack) and
// adds them to the pack, until r.packs is closed or ctx is done.
func (pw *packWriter) compressAll(ctx context.Context) error {
	var comp pack.Compressor
	var g pack.GroupBuilder
	for {
		select {
		case b, ok := <-pw.r.packs:
			if !ok {
				return nil
			}
			if err := pw.compressBatch(b, &comp, &g); err != nil {
				return err
			}
		case <-ctx.Done():
			return ctx.Err()
		}
	}
}

// compressBatch packs one batch. Small chunks (small files, the many) are
// copied into groups of about pack.GroupTarget bytes compressed as one
// zstd frame: neighbouring files share their redundancy, and the chunk's
// buffer goes back to the budget at once. The others are compressed alone.
func (pw *packWriter) compressBatch(b []chunkMsg, comp *pack.Compressor, g *pack.GroupBuilder) error {
	for i, c := range b {
		var err error
		switch {
		case c.large:
			err = pw.add(c, pack.None, nil)
		case len(c.data) <= pack.MaxGroupMember:
			if !g.Fits(len(c.data)) {
				err = pw.flushGroup(comp, g)
			}
			if err == nil {
				err = g.Add(c.id, c.data)
			}
			if err == nil && g.Size() >= pack.GroupTarget {
				err = pw.flushGroup(comp, g)
			}
		default:
			var stored []byte
			var codec pack.Codec
			if stored, codec, err = comp.Compress(c.data); err == nil {
				err = pw.add(c, codec, stored)
			}
		}
		pw.r.drop(c)
		if err != nil {
			for _, c := range b[i+1:] {
				pw.r.drop(c)
			}
			g.Reset()
			return err
		}
	}
	return pw.flushGroup(comp, g)
}

// flushGroup compresses the group and adds it to the pack.
func (pw *packWriter) flushGroup(comp *pack.Compressor, g *pack.GroupBuilder) error {
	if g.Len() == 0 {
		return nil
	}
	defer g.Reset()
	stored, codec, err := comp.Compress(g.Plaintext())
	if err != nil {
		return err
	}
	pw.mu.Lock()
	defer pw.mu.Unlock()
	if err := pw.room(pw.w.Fits(pack.GroupNeeds(g, len(stored)))); err != nil {
		return err
	}
	if err := pw.w.AddGroup(pack.Data, g, codec, stored); err != nil {
		return err
	}
	pw.r.c.chunksNew.Add(int64(g.Len()))
	return pw.finishIfFull()
}

// add adds c to the pack, compressed (stored, codec) or, for a large chunk,
// to be compressed straight into the pack. It finishes the pack first when
// c does not fit, and after when the pack is full; a new pack waits for a
// free buffer.
func (pw *packWriter) add(c chunkMsg, codec pack.Codec, stored []byte) error {
	pw.mu.Lock()
	defer pw.mu.Unlock()
	w := pw.w
	fits := w.Fits(len(stored))
	if c.large {
		// Compressed straight into the pack (no scratch buffer as large
		// as the chunk), so with room for the worst case.
		fits = w.FitsDirect(len(c.data))
	}
	if err := pw.room(fits); err != nil {
		return err
	}
	var err error
	if c.large {
		_, err = w.Add(pack.Data, c.id, c.data)
	} else {
		_, err = w.AddStored(pack.Data, c.id, codec, len(c.data), stored)
	}
	if err != nil {
		return err
	}
	pw.r.c.chunksNew.Add(1)
	return pw.finishIfFull()
}

// room makes the pack ready for what is about to be added (which fits or
// not in the current pack): it finishes a pack it does not fit, and a new
// pack waits for a free buffer. mu is held.
func (pw *packWriter) room(fits bool) error {
	if pw.w.Len() > 0 && !fits {
		if err := pw.finish(); err != nil {
			return err
		}
	}
	if pw.w.Len() == 0 {
		select {
		case pw.slots <- struct{}{}:
		case <-pw.uctx.Done():
			return pw.uctx.Err()
		}
	}
	return nil
}

// finishIfFull finishes the pack at its target size or blob count. mu is
// held.
func (pw *packWriter) finishIfFull() error {
	if pw.w.Size() >= pw.r.opts.PackSize || pw.w.Len() >= maxPackBlobs {
		return pw.finish()
	}
	return nil
}

// finish hands the pack, which holds a slot, to an uploader. The slot and
// the buffer come back as soon as the remote says the object store has the
// pack (see Remote), while the remote still verifies and indexes it; a new
// upload waits while UploadConcurrency+maxIndexing are unfinished. mu is
// held (or no packer is left).
func (pw *packWriter) finish() error {
	data, packID, entries, err := pw.w.Finish()
	if err != nil {
		return err
	}
	select {
	case pw.pending <- struct{}{}:
	case <-pw.uctx.Done():
		<-pw.slots
		return pw.uctx.Err()
	}
	r, size := pw.r, int64(len(data))
	pw.uploads.Go(func() error {
		defer func() { <-pw.pending }()
		var release sync.Once
		sent := func() {
			release.Do(func() {
				pw.w.Recycle(data)
				<-pw.slots
			})
		}
		// An upload that failed before it was sent gives its slot back
		// without recycling the buffer, which the failed request may
		// still have been reading.
		defer release.Do(func() { <-pw.slots })
		if err := r.remote.UploadPack(pw.uctx, packID, data, sent); err != nil {
			return fmt.Errorf("upload pack %s: %w", packID.Short(), err)
		}
		sent() // a pack the remote stored already, without a PUT
		r.c.packs.Add(1)
		r.c.bytesUploaded.Add(size)
		if p := r.opts.Progress; p != nil {
			p.BytesUploaded.Add(size)
		}
		ids := make([]id.ID, len(entries))
		for i, e := range entries {
			ids[i] = e.ID
		}
		r.stored(ids...)
		return nil
	})
	return nil
}

// uploadTrees sends the trees built by this Run that the remote lacks and
// uploadEarlyTrees did not send, children first, in calls of at most
// MaxTreeBytes. It runs after every data pack is uploaded.
func (r *run) uploadTrees(ctx context.Context) error {
	if err := r.sendTrees(ctx, r.trees[r.treesSent:], MaxTreeBytes); err != nil {
		return err
	}
	r.trees = nil
	return nil
}
