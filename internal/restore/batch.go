package restore

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"io/fs"
	"slices"
	"sync"
	"sync/atomic"

	"github.com/sandkeep/sandkeep/internal/id"
	"github.com/sandkeep/sandkeep/internal/pack"
	pb "github.com/sandkeep/sandkeep/proto/sandkeep/v1"
)

// want is a chunk of the batch that some files still need.
type want struct {
	id      id.ID
	size    int64
	targets []target
	disk    *target  // a verified copy on disk, if any
	src     *blobSrc // where it is in the batch's ranges, if anywhere
}

type target struct {
	f   *fileJob
	off int64
}

type blobSrc struct {
	packID id.ID
	req    *pb.SignedRequest
	// fallback: the pack in the replica bucket, read when the chunk fails
	// verification from req (may be nil).
	fallback *pb.SignedRequest
	abs      int64 // offset in the pack
	length   int64
	rawLen   int64
	codec    pack.Codec
	rawOff   int64
}

// entry is the pack entry of blob blobID stored at s.
func (s *blobSrc) entry(blobID id.ID) pack.Entry {
	return pack.Entry{ID: blobID, Offset: uint64(s.abs), Length: uint32(s.length), RawLength: uint32(s.rawLen), Type: pack.Data, Codec: s.codec, RawOffset: uint32(s.rawOff)}
}

// sameFrame reports whether s and t are members of one group frame.
func (s *blobSrc) sameFrame(t *blobSrc) bool {
	return s.packID == t.packID && s.entry(id.ID{}).SameFrame(t.entry(id.ID{}))
}

// job is one unit of phase D: a GET of [start, end) of a pack feeding wants
// (sorted by offset), or a copy of one chunk from disk.
type job struct {
	req        *pb.SignedRequest
	start, end int64
	wants      []*want
	copy       *want
}

func (r *runner) runBatch(ctx context.Context, b *batch) error {
	defer r.dc.close()
	// Phase A: entries in plan order.
	var files []*fileJob
	for i := range b.items {
		if i%256 == 0 && ctx.Err() != nil {
			return ctx.Err()
		}
		it := &b.items[i]
		switch it.kind {
		case pb.EntryType_ENTRY_TYPE_DIRECTORY:
			created, err := makeDir(&r.dc, it.path, it.mode)
			if err != nil {
				r.st.dirs[it.dir].failed = true
				r.fail(it.path, err)
			}
			r.st.dirs[it.dir].fresh = created
		case pb.EntryType_ENTRY_TYPE_SYMLINK:
			if err := makeSymlink(&r.dc, it.path, it.target, it.mtime); err != nil {
				r.fail(it.path, err)
			} else {
				r.res.Symlinks++
			}
		case pb.EntryType_ENTRY_TYPE_FILE:
			f := it.file
			r.stats.filesSeen.Add(1)
			r.stats.bytesSeen.Add(f.size)
			r.prepareFile(f, r.st.inFreshDir(f.path))
			files = append(files, f)
		}
	}
	// Phase B: verify what is already on disk.
	r.scanSeeds(ctx, files)
	if err := ctx.Err(); err != nil {
		return err
	}
	// Phase C: decide what to copy and what to fetch.
	jobs, nFetch := r.planJobs(files, b.ranges)
	r.log.Debug("restore: batch", "entries", len(b.items), "files", len(files), "ranges", len(b.ranges),
		"gets", nFetch, "copies", len(jobs)-nFetch)
	// Phase D: fetch and write.
	r.runJobs(ctx, jobs)
	if err := ctx.Err(); err != nil {
		return err
	}
	// Phase E: finish or remove each file.
	for _, f := range files {
		r.finishFile(f)
	}
	return nil
}

// prepareFile looks at what is at f's path (unless its directory was just
// created): a regular file is kept as a seed (phase B verifies it), anything
// else is removed. A file not on disk is created by its first chunk write,
// in parallel with the others; an empty one is created here.
func (r *runner) prepareFile(f *fileJob, inFreshDir bool) {
	dir, base, err := r.dc.open(f.path)
	if err != nil {
		f.fail(err)
		return
	}
	if !inFreshDir {
		fi, err := dir.Lstat(base)
		switch {
		case errors.Is(err, fs.ErrNotExist):
		case err != nil:
			f.fail(err)
			return
		case fi.Mode().IsRegular():
			f.onDisk = true
			f.diskSize = fi.Size()
			f.diskMode = unixMode(fi.Mode())
			f.diskMtime = fi.ModTime().UnixNano()
			f.nlink = nlinkOf(fi)
			return
		default:
			if err := removeAny(&r.dc, dir, base, fi); err != nil {
				f.fail(fmt.Errorf("replace existing %s: %w", typeName(fi), err))
				return
			}
		}
	}
	f.fresh = true
	if len(f.ids) == 0 {
		fh, err := createExcl(&r.dc, dir, base)
		if err == nil {
			err = f.finish(fh)
			if cerr := fh.Close(); err == nil {
				err = cerr
			}
		}
		if err != nil {
			f.fail(err)
		}
	}
}

// scanSeeds hashes, in parallel, the planned chunk extents of the files
// already on disk.
func (r *runner) scanSeeds(ctx context.Context, files []*fileJob) {
	var seeds []*fileJob
	for _, f := range files {
		if f.onDisk && len(f.ids) > 0 && f.failure() == nil {
			seeds = append(seeds, f)
		}
	}
	var next atomic.Int64
	var wg sync.WaitGroup
	for i := range min(len(r.workers), len(seeds)) {
		w := r.workers[i]
		wg.Go(func() {
			for ctx.Err() == nil {
				k := int(next.Add(1) - 1)
				if k >= len(seeds) {
					return
				}
				w.scan(ctx, seeds[k])
			}
			w.dc.close()
		})
	}
	wg.Wait()
}

// planJobs settles each file's seed (rewriting in place, or starting afresh
// when in-place writes would be unsafe), collects the chunks still needed,
// and turns them into disk copies and range GETs. It returns the jobs, GETs
// first, and the number of GETs.
func (r *runner) planJobs(files []*fileJob, ranges []planRange) ([]*job, int) {
	wants := make(map[id.ID]*want)
	var order []*want // wants with targets, in plan order
	for _, f := range files {
		if f.failure() != nil {
			continue
		}
		needsWrite := f.nMatched < len(f.ids) || (f.onDisk && f.diskSize != f.size)
		if f.onDisk && needsWrite {
			if err := r.settleSeed(f); err != nil {
				f.fail(err)
				continue
			}
		}
		f.pending.Store(int64(len(f.ids) - f.nMatched))
		r.reused.Add(int64(f.nMatched))
		for i, cid := range f.ids {
			size := f.refs[i].GetSize()
			w := wants[cid]
			if w == nil {
				w = &want{id: cid, size: size}
				wants[cid] = w
			}
			if size != w.size {
				f.fail(invalid("chunk %s is %d bytes here and %d bytes elsewhere in the plan", cid.Short(), size, w.size))
				break
			}
			t := target{f: f, off: f.offs[i]}
			if f.matched != nil && f.matched[i] {
				r.stats.bytesDone.Add(size)
				if w.disk == nil {
					w.disk = &t
				}
				continue
			}
			if len(w.targets) == 0 {
				order = append(order, w)
			}
			w.targets = append(w.targets, t)
		}
	}
	// Locate the needed chunks in the ranges (first occurrence wins).
	for i := range ranges {
		pr := &ranges[i]
		for _, bl := range pr.blobs {
			if w := wants[bl.id]; w != nil && len(w.targets) > 0 && w.src == nil {
				w.src = &blobSrc{packID: pr.packID, req: pr.req, fallback: pr.fallback, abs: pr.offset + bl.off, length: bl.length, rawLen: bl.rawLen, codec: bl.codec, rawOff: bl.rawOff}
			}
		}
	}
	var copies []*job
	groups := make(map[id.ID][]*want)
	var packs []id.ID
	var total int64
	for _, w := range order {
		switch {
		case w.disk != nil:
			copies = append(copies, &job{copy: w})
		case w.src != nil:
			if _, ok := groups[w.src.packID]; !ok {
				packs = append(packs, w.src.packID)
			}
			groups[w.src.packID] = append(groups[w.src.packID], w)
			total += w.src.length
		default:
			r.failWant(w, ErrMissingChunk)
		}
	}
	// Aim at two GETs per worker, so that a batch does not end with one
	// worker finishing a long GET alone.
	piece := min(max(total/int64(2*len(r.workers)), minPiece), maxPiece)
	var jobs []*job
	for _, pid := range packs {
		ws := groups[pid]
		slices.SortStableFunc(ws, func(a, b *want) int {
			return cmp.Or(compareInt64(a.src.abs, b.src.abs), compareInt64(a.src.rawOff, b.src.rawOff))
		})
		var cur *job
		for _, w := range ws {
			s := w.src
			if cur != nil && s.sameFrame(cur.wants[len(cur.wants)-1].src) {
				cur.wants = append(cur.wants, w) // the frame is read once
				continue
			}
			if cur != nil && s.abs >= cur.end && s.abs-cur.end < mergeGap && s.abs+s.length-cur.start <= piece {
				cur.wants = append(cur.wants, w)
				cur.end = s.abs + s.length
				continue
			}
			cur = &job{req: s.req, start: s.abs, end: s.abs + s.length, wants: []*want{w}}
			jobs = append(jobs, cur)
		}
	}
	slices.SortStableFunc(jobs, func(a, b *job) int { return compareInt64(b.end-b.start, a.end-a.start) })
	n := len(jobs)
	return append(jobs, copies...), n
}

func compareInt64(a, b int64) int {
	switch {
	case a < b:
		return -1
	case a > b:
		return 1
	}
	return 0
}

// settleSeed prepares a file already on disk for writes. Writing in place
// is unsafe when the file has other hard links (they would change too) or
// could not be read: then it is replaced by a new file.
func (r *runner) settleSeed(f *fileJob) error {
	dir, base, err := r.dc.open(f.path)
	if err != nil {
		return err
	}
	if f.nlink > 1 || f.scanErr != nil {
		if err := dir.Remove(base); err != nil && !errors.Is(err, fs.ErrNotExist) {
			return err
		}
		f.onDisk, f.matched, f.nMatched, f.fresh = false, nil, 0, true
		if len(f.ids) == 0 {
			fh, err := createExcl(&r.dc, dir, base)
			if err != nil {
				return err
			}
			return fh.Close()
		}
		return nil
	}
	if f.diskMode&0o200 == 0 {
		if err := dir.Chmod(base, fileMode(f.diskMode|0o600)); err != nil {
			return err
		}
	}
	if f.diskSize != f.size {
		return truncateFile(dir, base, f.size)
	}
	return nil
}

func (r *runner) failWant(w *want, err error) {
	for _, t := range w.targets {
		t.f.fail(fmt.Errorf("chunk %s at offset %d: %w", w.id.Short(), t.off, err))
	}
}

func (r *runner) runJobs(ctx context.Context, jobs []*job) {
	var next atomic.Int64
	var wg sync.WaitGroup
	for i := range min(len(r.workers), len(jobs)) {
		w := r.workers[i]
		wg.Go(func() {
			for ctx.Err() == nil {
				k := int(next.Add(1) - 1)
				if k >= len(jobs) {
					return
				}
				if j := jobs[k]; j.copy != nil {
					w.copyFromDisk(ctx, j.copy)
				} else {
					w.fetch(ctx, j)
				}
			}
			w.dc.close()
		})
	}
	wg.Wait()
}

// finishFile reports a complete file (giving it its mode and times if no
// write did), or removes a file that could not be completed.
func (r *runner) finishFile(f *fileJob) {
	err := f.failure()
	if err == nil && f.pending.Load() != 0 {
		err = fmt.Errorf("%d chunks were not written", f.pending.Load())
	}
	dir, base, derr := r.dc.open(f.path)
	if err != nil {
		if derr == nil {
			derr = dir.Remove(base)
		}
		if derr != nil && !errors.Is(derr, fs.ErrNotExist) {
			err = fmt.Errorf("%w (removing the file failed too: %v)", err, derr)
		}
		r.fail(f.path, err)
		return
	}
	if derr != nil {
		r.fail(f.path, derr)
		return
	}
	fi := f.fi
	if fi == nil {
		// Nothing was written: the file was empty or already right.
		untouched := f.onDisk && f.nMatched == len(f.ids) && f.diskSize == f.size &&
			f.diskMode == f.mode && f.diskMtime == f.mtime
		if !untouched {
			if err := setModeTimes(dir, base, f.mode, f.mtime); err != nil {
				r.fail(f.path, err)
				return
			}
		}
		if r.opts.OnFile != nil {
			if fi, err = dir.Lstat(base); err != nil {
				r.fail(f.path, err)
				return
			}
		}
	}
	if r.opts.OnFile != nil {
		r.opts.OnFile(FileInfo{Path: f.path, Size: f.size, MtimeNs: f.mtime, Mode: f.mode, Chunks: f.refs}, fi)
	}
	r.res.Files++
	r.res.Bytes += f.size
	r.stats.filesDone.Add(1)
}

// finishDirs applies directory modes and times, children before parents
// (the reverse of plan order, where parents come first).
func (r *runner) finishDirs(ctx context.Context) {
	for i := len(r.st.dirs) - 1; i >= 0; i-- {
		if i%1024 == 0 && ctx.Err() != nil {
			return
		}
		d := &r.st.dirs[i]
		if d.failed {
			continue
		}
		dir, base, err := r.dc.open(d.path)
		if err == nil {
			err = setModeTimes(dir, base, d.mode, d.mtime)
		}
		if err != nil {
			r.fail(d.path, err)
			continue
		}
		r.res.Dirs++
	}
}
