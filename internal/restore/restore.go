// Package restore rehydrates a workspace from a restore plan: the stream of
// batches the coordinator's GetRestorePlan sends (entries parents-first, and
// the pack ranges holding the chunks of the batch's files).
//
// For each batch, in order:
//
//  1. The whole message is validated before any of it touches the disk (see
//     planState.validate): a hostile plan stops the restore.
//  2. Directories and symlinks are created in plan order. A regular file
//     already at a file's path is kept as a seed; anything else there is
//     removed. (Nothing is looked up in a directory this restore created.)
//  3. Seed files are read and every planned chunk extent that fits is hashed;
//     extents that already hold their chunk are kept (Result.Reused), and a
//     map chunk id → verified location on disk serves other files of the
//     batch that need the same chunk (copied, re-verified, never fetched).
//     A seed is then repaired in place, unless it has other hard links or
//     cannot be read: then it is replaced.
//  4. The chunks still missing are fetched with ranged GETs (at most
//     Options.Parallel at once), trimmed and split to what is still needed,
//     streamed blob by blob, decoded and verified with pack.DecodeBlob, and
//     written with WriteAt to every (file, offset) that needs them. A new
//     file is created (O_EXCL, never through a link) and truncated to its
//     size by the first write that reaches it, so creation runs in parallel.
//     The write that completes a file gives it its mode and times.
//  5. Files are reported to Options.OnFile in plan order; a file with a
//     chunk that could not be fetched or verified is removed and reported in
//     a *FileError, after the rest of the plan has been restored.
//
// Directory modes and times are applied at the very end, children before
// parents, so that read-only directories can be filled and creating entries
// does not disturb their mtimes.
//
// What the restore keeps in memory is one batch (and the next one, received
// while the current one is worked on), one read and one decode buffer per
// worker, and one small record per directory of the plan (O(directories),
// never O(files)). Files are opened per write, so at most Options.Parallel
// descriptors are open at any time.
//
// Entries on disk that are not in the plan are left alone: deciding what to
// delete is the caller's business. An entry of the plan replaces whatever is
// at its path (a directory where the plan has a file is removed with its
// contents).
//
// When Run stops early (cancellation, an invalid plan, the plan stream
// failing), files of the batch in progress may be left incomplete; they were
// never reported to OnFile, and a later restore verifies them chunk by chunk
// as seeds. The caller must not treat the workspace as restored unless Run
// returned nil.
package restore

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"os"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/sandkeep/sandkeep/internal/progress"
	pb "github.com/sandkeep/sandkeep/proto/sandkeep/v1"
)

// PlanSource is a restore plan stream; a GetRestorePlan client stream
// satisfies it. io.EOF ends it.
type PlanSource interface {
	Recv() (*pb.GetRestorePlanResponse, error)
}

// FileInfo describes a file restored and verified.
type FileInfo struct {
	Path    string // slash-separated, relative to the workspace
	Size    int64
	MtimeNs int64
	Mode    uint32 // unix permission bits incl. setuid/setgid/sticky
	Chunks  []*pb.ChunkRef
}

// Options configure Run.
type Options struct {
	// Workspace is the target directory; it is created if missing and may
	// hold files already (they are used as seeds).
	Workspace string
	// HTTPClient makes the range GETs. Default: DefaultHTTPClient(Parallel).
	HTTPClient *http.Client
	// Parallel is the number of concurrent range GETs. Default 8.
	Parallel int
	// Progress gets progress lines (package progress: one line redrawn
	// at most 10 times a second on a terminal, a line every few seconds
	// elsewhere); nil: none.
	Progress io.Writer
	// Logger gets structured logs. Default: discard.
	Logger *slog.Logger
	// OnFile is called, from the goroutine running Run, after each file is
	// complete and verified and has its mode and times.
	OnFile func(FileInfo, os.FileInfo)
	// Retries is the number of retries of a range GET after a network
	// error, a stall or a 5xx/429 response, with exponential backoff.
	// Default 4; negative means none.
	Retries int
	// KeepSetuid restores setuid and setgid bits as stored. By default they
	// are dropped: a file written inside a sandbox must not become a setuid
	// binary of whoever restores it.
	KeepSetuid bool
	// ExistingBytes is how much the target holds already (files the restore
	// reuses or replaces); the free-space check counts it as available.
	ExistingBytes int64
	// SkipSpaceCheck turns off the check, made before anything is written,
	// that the target's file system has room for the version.
	SkipSpaceCheck bool
}

// Result summarises a restore.
type Result struct {
	// Version is the version restored, as the plan announced it.
	Version *pb.Version
	// Entries restored (files whose content was already right included).
	Files, Dirs, Symlinks int64
	// Bytes is the total size of the files restored.
	Bytes int64
	// BytesDownloaded is what the range GETs read from the network.
	BytesDownloaded int64
	// Ranges is the number of range GETs that completed.
	Ranges int
	// Reused counts chunks taken from disk instead of the network: chunk
	// extents already right in place, and chunks copied from another file
	// of the same batch.
	Reused   int64
	Duration time.Duration
}

const (
	defaultParallel = 8
	defaultRetries  = 4
	// mergeGap: two needed blobs of one pack closer than this are fetched in
	// one GET (as the coordinator merges its ranges); a larger hole of
	// unneeded bytes (chunks already on disk) splits the GET.
	mergeGap = 1 << 20
	// A GET covers between minPiece and maxPiece bytes of needed blobs
	// (aiming at an even spread of a batch over the workers), unless a
	// single blob is larger.
	minPiece = 2 << 20
	maxPiece = 16 << 20
	// scanBufSize is the read buffer used to hash seed files.
	scanBufSize = 1 << 20
)

// Run restores the plan streamed by src into opts.Workspace. It returns a
// *FileError (possibly joined with a fatal error) when some entries could
// not be restored; errors wrapping ErrInvalidPlan, the context's error or
// the stream's error when it stopped early.
func Run(ctx context.Context, src PlanSource, opts Options) (Result, error) {
	start := time.Now()
	if src == nil {
		return Result{}, errors.New("restore: no plan source")
	}
	if opts.Workspace == "" {
		return Result{}, errors.New("restore: no workspace")
	}
	if opts.Parallel <= 0 {
		opts.Parallel = defaultParallel
	}
	switch {
	case opts.Retries == 0:
		opts.Retries = defaultRetries
	case opts.Retries < 0:
		opts.Retries = 0
	}
	if opts.HTTPClient == nil {
		opts.HTTPClient = DefaultHTTPClient(opts.Parallel)
	}
	log := opts.Logger
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	if err := os.MkdirAll(opts.Workspace, 0o755); err != nil {
		return Result{}, fmt.Errorf("restore: workspace: %w", err)
	}
	root, err := os.OpenRoot(opts.Workspace)
	if err != nil {
		return Result{}, fmt.Errorf("restore: workspace: %w", err)
	}
	defer root.Close()

	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	r := &runner{
		opts:    opts,
		root:    root,
		dc:      dirCache{ws: root},
		log:     log,
		st:      newPlanState(),
		workers: make([]*worker, opts.Parallel),
	}
	defer r.dc.close()
	for i := range r.workers {
		r.workers[i] = &worker{r: r, dc: dirCache{ws: root}}
	}
	stop := progress.Start(opts.Progress, func(el time.Duration) string {
		return progress.Line("restore", r.stats.filesDone.Load(), r.stats.filesSeen.Load(), r.stats.bytesDone.Load(), r.stats.bytesSeen.Load(), el) +
			", " + progress.Bytes(r.stats.downloaded.Load()) + " downloaded"
	})
	defer stop()

	fatal := r.run(ctx, src)
	if fatal == nil || !errors.Is(fatal, context.Canceled) && !errors.Is(fatal, context.DeadlineExceeded) {
		r.finishDirs(ctx)
	}
	res := r.res
	res.BytesDownloaded = r.stats.downloaded.Load()
	res.Ranges = int(r.ranges.Load())
	res.Reused = r.reused.Load()
	res.Duration = time.Since(start)

	ferr := r.fails.err()
	log.Info("restore finished", "files", res.Files, "dirs", res.Dirs, "symlinks", res.Symlinks,
		"bytes", res.Bytes, "downloaded", res.BytesDownloaded, "ranges", res.Ranges, "reused_chunks", res.Reused,
		"failed", len(r.fails.paths), "duration", res.Duration, "err", errors.Join(fatal, ferr))
	if fatal != nil {
		return res, errors.Join(fmt.Errorf("restore: %w", fatal), ferr)
	}
	return res, ferr
}

type runner struct {
	opts    Options
	root    *os.Root
	dc      dirCache // for the goroutine running Run
	log     *slog.Logger
	st      *planState
	workers []*worker

	stats  stats
	ranges atomic.Int64
	reused atomic.Int64

	// Touched only by the goroutine running Run.
	res     Result
	fails   failures
	noSpace bool // an ENOSPC was logged: the next ones are not
}

func (r *runner) fail(p string, err error) {
	r.fails.add(p, err)
	if errors.Is(err, syscall.ENOSPC) {
		// One line, not one per file: the error names the totals.
		if !r.noSpace {
			r.noSpace = true
			free, _ := freeSpace(r.root.Name())
			r.log.Warn("restore: the file system is full; the remaining files fail the same way", "dir", r.root.Name(), "free", progress.Bytes(free), "first", p)
		}
		r.log.Debug("restore: entry not restored", "path", p, "err", err)
		return
	}
	r.log.Warn("restore: entry not restored", "path", p, "err", err)
}

type recvResult struct {
	msg *pb.GetRestorePlanResponse
	err error
}

func (r *runner) run(ctx context.Context, src PlanSource) error {
	// Receive the next batch while the current one is restored. If ctx ends
	// while Recv blocks, the receiving goroutine lingers until the stream
	// ends; callers cancel the stream with the same context.
	msgs := make(chan recvResult)
	done := make(chan struct{})
	defer close(done)
	go func() {
		for {
			m, err := src.Recv()
			select {
			case msgs <- recvResult{m, err}:
			case <-done:
				return
			}
			if err != nil {
				return
			}
		}
	}()
	for n := 0; ; n++ {
		var rr recvResult
		select {
		case <-ctx.Done():
			return ctx.Err()
		case rr = <-msgs:
		}
		if errors.Is(rr.err, io.EOF) {
			return nil
		}
		if rr.err != nil {
			return fmt.Errorf("restore plan: %w", rr.err)
		}
		if rr.msg == nil {
			continue
		}
		if v := rr.msg.GetVersion(); v != nil && r.res.Version == nil {
			r.res.Version = v
			if err := r.checkSpace(v.GetNumber(), v.GetBytes()); err != nil {
				return err
			}
		}
		if !r.opts.KeepSetuid {
			for _, e := range rr.msg.GetEntries() {
				if e != nil {
					e.Mode &^= 0o6000
				}
			}
		}
		b, err := r.st.validate(rr.msg)
		if err != nil {
			return fmt.Errorf("plan batch %d: %w", n, err)
		}
		if err := r.runBatch(ctx, b); err != nil {
			return err
		}
	}
}
