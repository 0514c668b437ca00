package snapshot

import (
	"context"
	"fmt"
	"sync"

	"golang.org/x/sync/errgroup"

	"github.com/sandkeep/sandkeep/internal/id"
	"github.com/sandkeep/sandkeep/internal/pack"
)

// batch collects the chunks from the hash workers, drops those already seen
// in this Run, asks the remote which of the others it lacks, in batches of
// at most MaxIDs ids and batchBytes, and passes the missing ones
// to the packer.
func (r *run) batch(ctx context.Context) error {
	defer close(r.packs)
	seen := make(map[id.ID]struct{})
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
		for _, c := range batch {
			if _, ok := want[c.id]; ok {
				out = append(out, c)
			} else {
				r.c.chunksReused.Add(1)
				r.drop(c)
			}
		}
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
				return flush()
			}
			if _, dup := seen[c.id]; dup {
				r.c.chunksReused.Add(1)
				r.drop(c)
				continue
			}
			seen[c.id] = struct{}{}
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

// writers keeps pack writers across Runs: a used writer starts its next
// pack with a buffer of the right size instead of growing one.
var writers sync.Pool

// pack compresses the missing chunks into packs on r.packers goroutines
// (each batch goes whole to one of them, so a small change makes one pack)
// and uploads each pack when it reaches PackSize, with at most
// UploadConcurrency uploads in flight. It returns once every pack is
// uploaded, and so indexed by the remote.
func (r *run) pack(ctx context.Context) error {
	ug, uctx := errgroup.WithContext(ctx)
	ug.SetLimit(r.opts.UploadConcurrency)
	upload := func(packID id.ID, data []byte) {
		// Go blocks while UploadConcurrency uploads are in flight, which
		// bounds the finished packs held in memory.
		ug.Go(func() error {
			if err := r.remote.UploadPack(uctx, packID, data); err != nil {
				return fmt.Errorf("upload pack %s: %w", packID.Short(), err)
			}
			r.c.packs.Add(1)
			r.c.bytesUploaded.Add(int64(len(data)))
			return nil
		})
	}
	var pg errgroup.Group
	for range r.packers {
		pg.Go(func() error { return r.packLoop(uctx, upload) })
	}
	perr := pg.Wait()
	if uerr := ug.Wait(); uerr != nil {
		return uerr
	}
	return perr
}

func (r *run) packLoop(ctx context.Context, upload func(id.ID, []byte)) error {
	w, _ := writers.Get().(*pack.Writer)
	if w == nil {
		w = pack.NewWriter()
	}
	finish := func() error {
		data, packID, _, err := w.Finish()
		if err != nil {
			return err
		}
		upload(packID, data)
		return nil
	}
	for {
		select {
		case b, ok := <-r.packs:
			if !ok {
				if w.Len() > 0 {
					if err := finish(); err != nil {
						return err
					}
				}
				writers.Put(w)
				return nil
			}
			for i, c := range b {
				if _, err := w.Add(pack.Data, c.id, c.data); err != nil {
					for _, c := range b[i:] {
						r.drop(c)
					}
					return err
				}
				r.drop(c)
				r.c.chunksNew.Add(1)
				if w.Size() >= r.opts.PackSize {
					if err := finish(); err != nil {
						return err
					}
				}
			}
		case <-ctx.Done():
			return ctx.Err()
		}
	}
}

// uploadTrees sends the trees built by this Run that the remote lacks,
// children first, in calls of at most MaxTreeBytes. It runs after every
// data pack is uploaded.
func (r *run) uploadTrees(ctx context.Context) error {
	// r.trees is in the order the trees were finished: every tree after
	// its subtrees. Keep the first of identical trees.
	seen := make(map[id.ID]struct{}, len(r.trees))
	trees := make([]builtTree, 0, len(r.trees))
	for _, t := range r.trees {
		if _, dup := seen[t.id]; !dup {
			seen[t.id] = struct{}{}
			trees = append(trees, t)
		}
	}
	missing := make(map[id.ID]struct{})
	for i := 0; i < len(trees); i += MaxIDs {
		part := trees[i:min(i+MaxIDs, len(trees))]
		ids := make([]id.ID, len(part))
		for k, t := range part {
			ids[k] = t.id
		}
		m, err := r.remote.FindMissing(ctx, ids)
		if err != nil {
			return fmt.Errorf("find missing trees: %w", err)
		}
		for _, x := range m {
			missing[x] = struct{}{}
		}
	}
	var batch [][]byte
	size := 0
	send := func() error {
		if len(batch) == 0 {
			return nil
		}
		if err := r.remote.UploadTrees(ctx, batch); err != nil {
			return fmt.Errorf("upload trees: %w", err)
		}
		r.c.trees.Add(int64(len(batch)))
		batch, size = nil, 0
		return nil
	}
	for _, t := range trees {
		if _, ok := missing[t.id]; !ok {
			continue
		}
		if len(t.enc) > MaxTreeBytes {
			return fmt.Errorf("tree %s is %d bytes, more than the %d a remote accepts: a directory has too many entries", t.id.Short(), len(t.enc), MaxTreeBytes)
		}
		if size+len(t.enc) > MaxTreeBytes {
			if err := send(); err != nil {
				return err
			}
		}
		batch = append(batch, t.enc)
		size += len(t.enc)
	}
	if err := send(); err != nil {
		return err
	}
	r.trees = nil
	return nil
}
