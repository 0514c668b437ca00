package restore

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net/url"
	"os"
	"time"

	"github.com/sandkeep/sandkeep/internal/id"
	"github.com/sandkeep/sandkeep/internal/pack"
	"github.com/sandkeep/sandkeep/internal/redact"
	"github.com/sandkeep/sandkeep/internal/retry"
)

// worker is one of the Options.Parallel goroutines of phases B and D, with
// its buffers (one pack read, one decoded chunk, one hashing buffer) and its
// directory cache. Workers are reused from batch to batch.
type worker struct {
	r       *runner
	dc      dirCache
	stored  []byte
	raw     []byte
	dec     pack.Decoder // keeps the last group frame decoded
	scanBuf []byte
	hasher  *id.Hasher
}

func grow(b []byte, n int64) []byte {
	if int64(cap(b)) < n {
		return make([]byte, n)
	}
	return b[:n]
}

// deliver writes a verified chunk to every place that needs it.
func (w *worker) deliver(wt *want, data []byte) {
	for _, t := range wt.targets {
		if t.f.failure() != nil {
			continue
		}
		if err := w.write(t, data); err != nil {
			t.f.fail(err)
		}
	}
}

// write writes one chunk of a file. Files are opened per write, so the
// number of open descriptors is bounded by the number of workers. The write
// that completes a file gives it its mode and times, on the same descriptor.
func (w *worker) write(t target, data []byte) error {
	fh, err := w.openForWrite(t.f)
	if err != nil {
		return err
	}
	_, err = fh.WriteAt(data, t.off)
	if err == nil {
		w.r.stats.bytesDone.Add(int64(len(data)))
		if t.f.pending.Add(-1) == 0 {
			err = t.f.finish(fh)
		}
	}
	if cerr := fh.Close(); err == nil {
		err = cerr
	}
	return err
}

// scan hashes the planned extents of f that lie within the file on disk.
func (w *worker) scan(ctx context.Context, f *fileJob) {
	dir, base, err := w.dc.open(f.path)
	if err != nil {
		f.scanErr = err
		return
	}
	fh, err := dir.Open(base)
	if err != nil {
		f.scanErr = err
		return
	}
	defer fh.Close()
	if w.scanBuf == nil {
		w.scanBuf = make([]byte, scanBufSize)
		w.hasher = id.NewHasher()
	}
	matched := make([]bool, len(f.ids))
	n := 0
	for i, cid := range f.ids {
		size := f.refs[i].GetSize()
		if f.offs[i]+size > f.diskSize || ctx.Err() != nil {
			break
		}
		w.hasher.Reset()
		got, err := io.CopyBuffer(w.hasher, io.NewSectionReader(fh, f.offs[i], size), w.scanBuf)
		if err != nil {
			f.scanErr = err
			return
		}
		if got == size && w.hasher.Sum() == cid {
			matched[i] = true
			n++
		}
	}
	f.matched, f.nMatched = matched, n
}

// copyFromDisk copies a chunk from its verified location on disk, checking
// it again; if it changed meanwhile it is fetched instead.
func (w *worker) copyFromDisk(ctx context.Context, wt *want) {
	src := wt.disk
	w.raw = grow(w.raw, wt.size)
	err := w.readAt(src.f.path, w.raw, src.off)
	if err == nil && id.Sum(w.raw) != wt.id {
		err = errors.New("it changed on disk")
	}
	if err == nil {
		w.r.reused.Add(int64(len(wt.targets)))
		w.deliver(wt, w.raw)
		return
	}
	w.r.log.Debug("restore: seed copy failed", "chunk", wt.id.Short(), "from", src.f.path, "err", err)
	if s := wt.src; s != nil {
		w.fetch(ctx, &job{req: s.req, start: s.abs, end: s.abs + s.length, wants: []*want{wt}})
		return
	}
	w.r.failWant(wt, fmt.Errorf("%w (its copy in %q: %v)", ErrMissingChunk, src.f.path, err))
}

// preallocMin is the smallest file restore preallocates: a file of several
// chunks, which the workers may write out of order. A smaller one is written
// whole at once and would only pay a system call more.
const preallocMin = 1 << 20

// openForWrite opens f for a chunk write. A fresh file is created (and
// sized) by the first write to reach it; the others wait for that.
func (w *worker) openForWrite(f *fileJob) (*os.File, error) {
	dir, base, err := w.dc.open(f.path)
	if err != nil {
		return nil, err
	}
	if !f.fresh {
		return dir.OpenFile(base, os.O_WRONLY, 0)
	}
	f.createMu.Lock()
	defer f.createMu.Unlock()
	if f.created {
		return dir.OpenFile(base, os.O_WRONLY, 0)
	}
	fh, err := createExcl(&w.dc, dir, base)
	if err != nil {
		return nil, err
	}
	if f.size >= preallocMin {
		if err := preallocate(fh, f.size); err != nil {
			fh.Close()
			return nil, err
		}
	}
	if err := fh.Truncate(f.size); err != nil {
		fh.Close()
		return nil, err
	}
	f.created = true
	return fh, nil
}

func (w *worker) readAt(p string, buf []byte, off int64) error {
	dir, base, err := w.dc.open(p)
	if err != nil {
		return err
	}
	f, err := dir.Open(base)
	if err != nil {
		return err
	}
	_, err = f.ReadAt(buf, off)
	f.Close()
	return err
}

// fetch runs one GET job with retries; a retry resumes at the first blob not
// yet processed.
func (w *worker) fetch(ctx context.Context, j *job) {
	next := 0
	for attempt := 0; ; attempt++ {
		err := w.get(ctx, j, &next)
		if err == nil {
			w.r.ranges.Add(1)
			return
		}
		if ctx.Err() != nil {
			w.failFrom(j, next, ctx.Err())
			return
		}
		if !isRetryable(err) || attempt >= w.r.opts.Retries {
			if attempt > 0 {
				err = fmt.Errorf("after %d attempts: %w", attempt+1, err)
			}
			w.r.log.Warn("restore: range failed", "url", redact.URL(j.req.GetUrl()), "err", err)
			w.failFrom(j, next, err)
			return
		}
		d := retry.Backoff{Min: backoffBase, Max: backoffMax, Jitter: 0.2}.Delay(attempt + 1)
		w.r.log.Warn("restore: retrying range", "url", redact.URL(j.req.GetUrl()), "attempt", attempt+1, "wait", d, "err", err)
		if retry.Sleep(ctx, d) != nil {
			w.failFrom(j, next, ctx.Err())
			return
		}
	}
}

func (w *worker) failFrom(j *job, next int, err error) {
	for _, wt := range j.wants[next:] {
		w.r.failWant(wt, err)
	}
}

// get makes one GET of the job from its first unprocessed blob and streams
// the blobs through decode, verification and writes. It advances *next past
// every blob it processed (successfully or not).
func (w *worker) get(ctx context.Context, j *job, next *int) error {
	start, end := j.wants[*next].src.abs, j.end
	u := redact.URL(j.req.GetUrl())
	rctx, cancel := context.WithCancelCause(ctx)
	defer cancel(nil)
	req, err := newRangeRequest(rctx, j.req, start, end)
	if err != nil {
		var ue *url.Error
		if errors.As(err, &ue) {
			err = ue.Err // its message holds the signed URL
		}
		return permanent(fmt.Errorf("GET %s: %w", u, err))
	}
	hdr := time.AfterFunc(stallTimeout, func() { cancel(errStalled) })
	resp, err := w.r.opts.HTTPClient.Do(req)
	hdr.Stop()
	if err != nil {
		var ue *url.Error
		if errors.As(err, &ue) {
			err = ue.Err // its message holds the signed URL
		}
		if c := context.Cause(rctx); errors.Is(c, errStalled) {
			err = errStalled
		}
		return fmt.Errorf("GET %s: %w", u, err)
	}
	defer resp.Body.Close()
	avail, err := checkResponse(resp, j.req, start, end)
	if err != nil {
		return err
	}
	body := newStallReader(io.LimitReader(resp.Body, avail-start), cancel, func(n int) { w.r.stats.downloaded.Add(int64(n)) })
	defer body.timer.Stop()
	readErr := func(err error) error {
		if c := context.Cause(rctx); errors.Is(c, errStalled) {
			err = errStalled
		}
		return fmt.Errorf("GET %s bytes=%d-%d: %w", u, start, end-1, err)
	}
	pos := start
	var prev *blobSrc // the blob whose stored bytes w.stored holds
	for *next < len(j.wants) {
		wt := j.wants[*next]
		s := wt.src
		if prev != nil && s.sameFrame(prev) {
			// A member of the frame just read: its bytes are in w.stored.
			*next++
			w.decode(ctx, wt, w.stored)
			continue
		}
		if s.abs+s.length > avail {
			return permanent(fmt.Errorf("%w: GET %s bytes=%d-%d returned %d bytes; chunk %s needs bytes %d-%d",
				ErrShortRange, u, start, end-1, avail-start, wt.id.Short(), s.abs, s.abs+s.length-1))
		}
		if gap := s.abs - pos; gap > 0 {
			if err := discard(body, gap); err != nil {
				return readErr(err)
			}
		}
		w.stored = grow(w.stored, s.length)
		if _, err := io.ReadFull(body, w.stored); err != nil {
			return readErr(err)
		}
		pos = s.abs + s.length
		prev = s
		*next++
		w.decode(ctx, wt, w.stored)
	}
	// Read to the end so the connection can be reused.
	_, _ = io.CopyN(io.Discard, resp.Body, 4<<10)
	return nil
}

// decode verifies a blob and writes its chunk. A chunk that fails
// verification is read again from the plan's fallback (the replica
// bucket), if it has one, and verified the same way.
func (w *worker) decode(ctx context.Context, wt *want, stored []byte) {
	s := wt.src
	if s.rawLen != wt.size {
		w.r.failWant(wt, fmt.Errorf("%w: pack %s stores it as %d bytes, the plan says %d", pack.ErrCorrupt, s.packID.Short(), s.rawLen, wt.size))
		return
	}
	w.raw = grow(w.raw, s.rawLen)
	e := s.entry(wt.id)
	check := func(stored []byte) ([]byte, error) {
		plain, err := w.dec.Decode(e, stored, w.raw[:0])
		if err == nil && int64(len(plain)) != wt.size {
			err = fmt.Errorf("decoded to %d bytes, want %d", len(plain), wt.size)
		}
		return plain, err
	}
	plain, err := check(stored)
	if err != nil && s.fallback != nil {
		if again, ferr := w.fetchFallback(ctx, s); ferr == nil {
			if p2, err2 := check(again); err2 == nil {
				w.r.log.Warn("restore: a chunk failed verification and was read from the replica bucket", "pack", s.packID.Short(), "chunk", wt.id.Short(), "err", err)
				plain, err = p2, nil
			}
		}
	}
	if err != nil {
		if !errors.Is(err, pack.ErrCorrupt) {
			err = fmt.Errorf("%w: %w", pack.ErrCorrupt, err)
		}
		w.r.failWant(wt, fmt.Errorf("pack %s offset %d: %w", s.packID.Short(), s.abs, err))
		return
	}
	w.deliver(wt, plain)
}

// fetchFallback reads a blob's stored bytes from its fallback request.
func (w *worker) fetchFallback(ctx context.Context, s *blobSrc) ([]byte, error) {
	req, err := newRangeRequest(ctx, s.fallback, s.abs, s.abs+s.length)
	if err != nil {
		return nil, err
	}
	resp, err := w.r.opts.HTTPClient.Do(req)
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	avail, err := checkResponse(resp, s.fallback, s.abs, s.abs+s.length)
	if err != nil {
		return nil, err
	}
	if avail < s.abs+s.length {
		return nil, ErrShortRange
	}
	buf := make([]byte, s.length)
	if _, err := io.ReadFull(resp.Body, buf); err != nil {
		return nil, err
	}
	w.r.stats.downloaded.Add(s.length)
	return buf, nil
}
