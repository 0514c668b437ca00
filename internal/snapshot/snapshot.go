// Package snapshot is the agent's backup engine: it scans a workspace
// directory, chunks and hashes the files that changed since the previous
// scan, uploads through a Remote only the chunks and trees the project does
// not store yet, and returns the id of the workspace's root tree.
//
// # Pipeline
//
// One goroutine walks the workspace depth-first through open directory
// descriptors (fstatat/openat with O_NOFOLLOW: symlinks are stored, never
// followed, and a directory swapped for a symlink mid-scan cannot redirect
// a read), applying the ignore rules before descending. Files whose stat
// matches the previous Index reuse their chunk refs without being read; the
// others go to Workers goroutines that read and hash (BLAKE3) them. A file
// shorter than Params.Min is one chunk, read straight into a buffer of the
// chunk budget (BufferBytes); the chunks not known to be stored go to a
// batcher that asks Remote.FindMissing about batches of them (at most
// MaxIDs ids). Larger files are chunked (FastCDC) one at a time: the worker
// asks about each chunk itself and hands a missing one to the packers
// without copying it (it waits for them only before its chunker reads into
// the buffer again). Two packer goroutines compress the missing chunks into
// one shared pack of about PackSize bytes (a large chunk straight into the
// pack buffer), uploaded by up to UploadConcurrency goroutines; a new pack
// starts only when fewer than UploadConcurrency are in flight, and the
// buffers of uploaded packs are reused. So a Run holds, whatever the size
// of the workspace or of its files: BufferBytes of small chunks (and up to
// half as much of free buffers), one chunker (Params.Max plus a read of up
// to 1 MiB) for large files, and UploadConcurrency pack buffers of
// PackSize + PackSize/16 bytes (see Options.PackSize), besides the Indexes.
//
// A directory's tree is encoded as soon as its last entry is known (bottom
// up, so children before parents). Once every data pack is uploaded, and so
// indexed by the remote, the trees the remote lacks are sent with
// UploadTrees, children first, in calls of at most MaxTreeBytes. Trees and
// chunks the previous Index names are known to be stored and are not asked
// about again.
//
// # Incremental scans
//
// With Options.Dirty (the paths a watcher reported since prev), a Run
// visits only the directories on the way to those paths. Each visited
// directory is opened and stat'ed, then either listed (it or one of its
// entries is dirty; prev has no complete entry for it; its inode or ctime
// is not the one prev recorded, so entries changed without a report), its
// entries lstat'ed against prev as in a full scan, or rebuilt from prev's
// encoded tree with the new subtree ids, modes and mtimes of the
// subdirectories below it that were visited. Every other directory keeps
// its tree and index entries from prev, unread. A listed directory's
// subdirectories with no dirty path below them are likewise trusted only
// if their inode and ctime are unchanged, so a replaced directory or an
// unreported change of its entries is not missed; a directory renamed
// within its parent is found by its inode, so its files are not read
// again. The work is proportional to the dirty paths and the size of the
// directories holding them, not to the workspace. Stats.Files, Bytes,
// Dirs and Symlinks still describe the whole snapshot; the other counts
// describe what the Run looked at.
//
// # Consistency
//
// A file is stat'ed again after it was read; if its size, mtime, ctime or
// inode moved, it is read again (Options.Retries times). A file that keeps
// changing is never committed half-written: the tree keeps its previous
// version from the Index (or leaves it out if it is new) and its path is
// reported in Stats.FilesChangedDuringRead. A file whose mtime is less than
// racyMarginNs before it was read is recorded as racy and read again by the
// next Run that looks at it, since a write within the same tick of the
// kernel's coarse clock could leave its stat unchanged.
package snapshot

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"os"
	"runtime"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"golang.org/x/sync/errgroup"
	"golang.org/x/sync/semaphore"

	"github.com/sandkeep/sandkeep/internal/chunker"
	"github.com/sandkeep/sandkeep/internal/id"
	"github.com/sandkeep/sandkeep/internal/ignore"
	"github.com/sandkeep/sandkeep/internal/pack"
)

// Defaults of Options, chosen for the agent's memory budget (DESIGN.md:
// RSS <= 64 MiB syncing 100k files): with them and the default chunk sizes
// a Run holds at most 4 MiB of small files' chunks (and 2 MiB of free
// ones), a chunker of 5 MiB for the large file being read and 2 pack
// buffers of 4.25 MiB (see Pipeline). Packs of 4 MiB still make a
// workspace of 100k small files (about 130 MB compressed) a few dozen
// PUTs, and their buffers hold an incompressible chunk of Params.Max (4
// MiB) whole. The chunk budget is not smaller because it sets the size of
// FindMissing batches (a quarter of it), which are asked one at a time:
// each costs a round trip to the coordinator.
const (
	DefaultUploadConcurrency = 2
	DefaultRetries           = 3
	DefaultBufferBytes       = 4 << 20
	DefaultPackSize          = 4 << 20
)

// Options tune a Run. The zero value is usable.
type Options struct {
	// Params are the chunk size bounds (default chunker.DefaultParams).
	Params chunker.Params
	// Ignore holds the workspace's ignore rules; nil ignores nothing.
	Ignore *ignore.Matcher
	// AlwaysIgnore are gitignore patterns ignored whatever Ignore says
	// (no "!" rule re-includes them), e.g. the agent's own state.
	AlwaysIgnore []string
	// Workers is the number of goroutines reading and hashing files
	// (default GOMAXPROCS).
	Workers int
	// UploadConcurrency is the number of packs uploaded at once, and of
	// pack buffers (default 2).
	UploadConcurrency int
	// Logger receives debug and warning messages (default slog.Default()).
	Logger *slog.Logger
	// Retries is how many times a file that changed while it was read is
	// read again (default 3; negative for none).
	Retries int
	// PackSize is the stored size at which a pack is finished and uploaded
	// (default DefaultPackSize; packs are built in buffers of PackSize +
	// PackSize/16 bytes, or what a pack of one incompressible chunk of
	// Params.Max bytes needs if that is more).
	PackSize int
	// BufferBytes bounds the small files' chunks held between hashing and
	// packing (large files' chunks go one at a time); FindMissing is asked
	// about batches of a quarter of it (default DefaultBufferBytes; raised
	// so that a batch and the largest such chunk fit).
	BufferBytes int
	// Dirty, when non-nil, limits the scan to what may have changed since
	// prev: workspace-relative slash paths (files or directories) as
	// reported by the watcher. Directories not in Dirty and with no Dirty
	// path below them are not listed: their tree id (and index entries)
	// are taken from prev. nil means a full scan. A Dirty path may no
	// longer exist; "." or "" is the root. An invalid path makes the Run a
	// full scan. See "Incremental scans" in the package documentation.
	Dirty []string
	// Progress, when set, is kept up to date while the Run goes (for a
	// progress display; the Run never reads it).
	Progress *Progress

	// afterRead, set by tests only (export_test.go), runs after a file was
	// read and before it is stat'ed again.
	afterRead func(relPath string, attempt int)
	// earlyTreeBytes, set by tests only, replaces the const of the same
	// name when not 0.
	earlyTreeBytes int
}

func (o Options) withDefaults() (Options, error) {
	if o.Params == (chunker.Params{}) {
		o.Params = chunker.DefaultParams
	}
	if err := o.Params.Validate(); err != nil {
		return o, err
	}
	if o.Workers <= 0 {
		o.Workers = runtime.GOMAXPROCS(0)
	}
	if o.UploadConcurrency <= 0 {
		o.UploadConcurrency = DefaultUploadConcurrency
	}
	if o.Logger == nil {
		o.Logger = slog.Default()
	}
	switch {
	case o.Retries == 0:
		o.Retries = DefaultRetries
	case o.Retries < 0:
		o.Retries = 0
	}
	if o.PackSize <= 0 {
		o.PackSize = DefaultPackSize
	}
	o.PackSize = min(o.PackSize, pack.MaxBlobSize)
	if o.BufferBytes <= 0 {
		o.BufferBytes = DefaultBufferBytes
	}
	// The budget carries the chunks of small files (shorter than
	// Params.Min; large files' chunks have a slot of their own). The
	// batcher holds less than a batch (a quarter of the budget) while it
	// waits for more chunks; the rest of the budget drains on its own. A
	// worker can always make progress if what remains holds the largest.
	o.BufferBytes = max(o.BufferBytes, bufCap(o.Params.Min)*4/3+4)
	if len(o.AlwaysIgnore) > 0 {
		o.Ignore = o.Ignore.WithAlways(o.AlwaysIgnore...)
	}
	return o, nil
}

// Stats describe one Run. Files, Dirs, Symlinks and Bytes describe the
// whole snapshot, also in an incremental Run (the Index keeps the totals of
// every subtree); the other counts are of what the Run looked at, which in
// an incremental Run is only the directories it listed.
type Stats struct {
	Files    int64 // regular files in the snapshot
	Dirs     int64 // directories in the snapshot, the root excluded
	Symlinks int64 // symlinks in the snapshot
	// Skipped counts entries left out or kept at their previous version
	// because they cannot be stored or read: sockets, fifos, devices,
	// unreadable files and directories.
	Skipped int64
	Ignored int64 // entries matched by the ignore rules (not descended into)
	Bytes   int64 // total size of the files in the snapshot

	FilesUnchanged int64 // files listed and reused from the previous index without reading
	ChunksNew      int64 // chunks packed and uploaded
	ChunksReused   int64 // chunk refs that needed no upload
	BytesRead      int64 // file bytes read (re-reads included)
	BytesUploaded  int64 // pack bytes uploaded
	PacksUploaded  int
	TreesUploaded  int
	// FilesChangedDuringRead lists the files (workspace-relative) that kept
	// changing while read: the snapshot holds their previous version, or
	// not the file at all if it had none.
	FilesChangedDuringRead []string
	// Unsaved lists (at most MaxUnsavedListed, sorted) the entries that exist
	// but could not be read or stored: permission denied, I/O errors, a
	// symlink target too long. The snapshot holds their previous version, or
	// not them at all. UnsavedCount counts them all.
	Unsaved      []string
	UnsavedCount int64
}

// MaxUnsavedListed bounds Stats.Unsaved.
const MaxUnsavedListed = 1000

// Result is the outcome of a successful Run.
type Result struct {
	Root  id.ID // the root tree; stored on the remote
	Files int64
	Bytes int64
	Stats Stats
	// Index describes the snapshot; pass it as prev to the next Run and
	// save it (Index.Save) once the version is committed.
	Index *Index
}

// Run snapshots the workspace directory: it uploads through remote every
// chunk and tree the snapshot needs that the remote lacks, and returns the
// root tree id. prev is the Index of the previous successful Run (or of a
// restore); nil reads every file. prev is only read (after sorting what
// RecordFile appended), so it must not be used concurrently with Run.
//
// Run fails on errors that make the snapshot unreliable: the workspace root
// cannot be listed, a remote call fails, ctx is done. Files and directories
// that vanish during the scan are left out; those that cannot be read are
// kept at their previous version and logged.
func Run(ctx context.Context, workspace string, remote Remote, prev *Index, opts Options) (Result, error) {
	opts, err := opts.withDefaults()
	if err != nil {
		return Result{}, fmt.Errorf("snapshot: %w", err)
	}
	fi, err := os.Lstat(workspace)
	if err != nil {
		return Result{}, fmt.Errorf("snapshot: %w", err)
	}
	if !fi.IsDir() {
		return Result{}, fmt.Errorf("snapshot: workspace %s is not a directory", workspace)
	}
	if prev == nil {
		prev = NewIndex()
	}
	prev.prepare()
	r := &run{
		ws:        workspace,
		remote:    remote,
		prev:      prev,
		rootSt:    statOf(fi),
		full:      true,
		opts:      opts,
		log:       opts.Logger,
		budget:    semaphore.NewWeighted(int64(opts.BufferBytes)),
		chunkers:  newChunkers(),
		largeFree: make(chan struct{}, 1),
		inflight:  inflight{ids: make(map[id.ID]struct{})},
		bufs:      newChunkBufs(opts.BufferBytes, opts.Params.Min),
		// Batches of a quarter of the budget: one filling, one being
		// looked up, two being packed.
		batchBytes: opts.BufferBytes / 4,
		packers:    packers(opts.Workers),
		jobs:       make(chan fileJob, 4*opts.Workers),
		chunks:     make(chan chunkMsg, 256),
		packs:      make(chan []chunkMsg, 1),
		open:       make(map[*dirHandle]struct{}),
		treesSeen:  make(map[id.ID]struct{}),
		settling:   newSettling(),
	}
	r.largeFree <- struct{}{}
	if opts.Dirty != nil && prev.root != nil {
		if t, ok := dirtyTree(opts.Dirty); ok {
			r.dirty, r.full = t, false
		}
	}
	defer r.closeAll()
	start := time.Now()

	g, gctx := errgroup.WithContext(ctx)
	var workers, data sync.WaitGroup
	data.Add(2) // the walk and the packer
	g.Go(func() error {
		defer data.Done()
		err := r.walk(gctx)
		r.log.Debug("snapshot walk done", "elapsed", time.Since(start))
		return err
	})
	for range opts.Workers {
		workers.Add(1)
		g.Go(func() error {
			defer workers.Done()
			return r.hashLoop(gctx)
		})
	}
	g.Go(func() error {
		workers.Wait()
		r.log.Debug("snapshot files read", "elapsed", time.Since(start))
		close(r.chunks)
		return nil
	})
	g.Go(func() error { return r.batch(gctx) })
	g.Go(func() error {
		defer data.Done()
		return r.pack(gctx)
	})
	// Trees whose chunks the remote holds go up while the data flows.
	dataDone := make(chan struct{})
	g.Go(func() error {
		data.Wait()
		close(dataDone)
		return nil
	})
	g.Go(func() error { return r.uploadEarlyTrees(gctx, dataDone) })
	err = g.Wait()
	if err == nil {
		r.log.Debug("snapshot data uploaded", "elapsed", time.Since(start))
		err = r.uploadTrees(ctx)
	}
	if err != nil {
		if cerr := ctx.Err(); cerr != nil {
			return Result{}, fmt.Errorf("snapshot: %w", cerr)
		}
		return Result{}, fmt.Errorf("snapshot: %w", err)
	}
	if !r.rootDone.Load() {
		return Result{}, errors.New("snapshot: internal error: root tree not built")
	}
	st := r.stats()
	r.log.Debug("snapshot done", "root", r.root.tree.Short(), "files", st.Files, "bytes", st.Bytes,
		"incremental", !r.full, "unchanged", st.FilesUnchanged, "read", st.BytesRead, "chunks_new", st.ChunksNew,
		"uploaded", st.BytesUploaded, "packs", st.PacksUploaded, "trees", st.TreesUploaded,
		"elapsed", time.Since(start))
	return Result{Root: r.root.tree, Files: st.Files, Bytes: st.Bytes, Stats: st, Index: &Index{root: r.root}}, nil
}

// run is the state of one Run.
type run struct {
	ws     string
	remote Remote
	prev   *Index
	rootSt fileStat   // lstat of the workspace
	full   bool       // list every directory
	dirty  *dirtyNode // incremental: the directories to visit
	opts   Options
	log    *slog.Logger

	budget     *semaphore.Weighted   // chunk plaintext between hashing and packing
	bufs       chunkBufs             // recycled chunk copies
	inflight   inflight              // chunks asked about or being packed
	chunkers   chan *chunker.Chunker // free chunkers (nil: not made yet)
	largeFree  chan struct{}         // holds a token when no large chunk is in flight (see emitLarge)
	batchBytes int                   // plaintext per FindMissing batch
	packers    int                   // goroutines compressing into packs
	jobs       chan fileJob          // walker -> hash workers
	chunks     chan chunkMsg         // hash workers -> batcher
	packs      chan []chunkMsg       // batcher -> packer: chunks the remote lacks

	mu        sync.Mutex // guards trees, treesSent, changed and open
	open      map[*dirHandle]struct{}
	trees     []builtTree
	treesSent int                // r.trees[:treesSent] are sent (uploadEarlyTrees)
	treesSeen map[id.ID]struct{} // trees sent or found stored, for sendTrees
	settling  *settling          // chunks handed on that the remote may lack
	changed   []string
	unsaved   []string

	root     *dirIndex // the new index, once built
	rootDone atomic.Bool

	c counters
}

// Progress counts a Run's work as it happens: files and bytes found by the
// walk so far (the totals, growing until the walk ends), files and bytes
// done (reused unread, or read), bytes uploaded.
type Progress struct {
	FilesSeen, FilesDone, BytesSeen, BytesDone, BytesUploaded atomic.Int64
}

type counters struct {
	skipped, ignored, unchanged, chunksNew, chunksReused, unsaved atomic.Int64
	bytesRead, bytesUploaded, packs, trees                        atomic.Int64
}

func (r *run) stats() Stats {
	r.mu.Lock()
	changed := slices.Clone(r.changed)
	unsaved := slices.Clone(r.unsaved)
	r.mu.Unlock()
	slices.Sort(changed)
	slices.Sort(unsaved)
	var tot totals
	if r.root != nil {
		tot = r.root.tot
	}
	return Stats{
		Files: tot.files, Dirs: tot.dirs, Symlinks: tot.links,
		Skipped: r.c.skipped.Load(), Ignored: r.c.ignored.Load(), Bytes: tot.bytes,
		FilesUnchanged: r.c.unchanged.Load(), ChunksNew: r.c.chunksNew.Load(),
		ChunksReused: r.c.chunksReused.Load(), BytesRead: r.c.bytesRead.Load(),
		BytesUploaded: r.c.bytesUploaded.Load(), PacksUploaded: int(r.c.packs.Load()),
		TreesUploaded: int(r.c.trees.Load()), FilesChangedDuringRead: changed,
		Unsaved: unsaved, UnsavedCount: r.c.unsaved.Load(),
	}
}

// notSaved records an entry that exists but could not be read or stored.
func (r *run) notSaved(rel string) {
	r.c.skipped.Add(1)
	if r.c.unsaved.Add(1) > MaxUnsavedListed {
		return
	}
	r.mu.Lock()
	r.unsaved = append(r.unsaved, rel)
	r.mu.Unlock()
}

// packers is the number of goroutines compressing chunks into the shared
// pack: zstd is the costliest stage of a first sync, so it must not be
// bound to one core.
func packers(workers int) int { return min(max(workers, 1), 2) }

// racyMarginNs is how long before a file is read (or recorded) its mtime
// must be for its stat to be trusted next time. File timestamps come from a
// coarse kernel clock (one tick, at most 10 ms): a write in the same tick as
// the one recorded could leave the stat identical. A write sets the mtime
// to its own time, so once the recorded mtime is older than the margin, no
// later write can leave it unchanged (unless the writer also sets it back
// to that very value, within the same tick as the record: the ctime then
// shows nothing either; git's racy-clean check accepts the same case).
// Files with a recent (or future) mtime are recorded as racy and read
// again by the next Run that looks at them. The mtime, not the ctime,
// decides: restore sets each file's original mtime just before recording
// it, and the first scan after a restore must not read those files again.
const racyMarginNs = int64(100 * time.Millisecond)

// clockSkewNs is added to the clock's reading: tests move the package's
// time forward with it instead of sleeping (AdvanceClock).
var clockSkewNs atomic.Int64

func nowNs() int64 { return time.Now().UnixNano() + clockSkewNs.Load() }

// isRacy reports whether st was taken too soon after the file's last write
// (now being the time of the read or record) for an identical stat to prove
// the content unchanged later.
func isRacy(st fileStat, now int64) bool {
	return st.mtimeNs >= now-racyMarginNs
}

// isNotExist reports errors meaning the entry vanished or was replaced by
// something else while the scan looked at it.
func isNotExist(err error) bool {
	return errors.Is(err, fs.ErrNotExist)
}
