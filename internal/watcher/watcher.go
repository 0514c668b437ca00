package watcher

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/fsnotify/fsnotify"
)

// Mode is how the watcher learns about changes.
type Mode string

const (
	// ModeInotify: kernel events (fsnotify), one watch per directory.
	ModeInotify Mode = "inotify"
	// ModePoll: a periodic lstat walk of the whole tree, compared with the
	// previous one.
	ModePoll Mode = "poll"
)

const (
	// DefaultPollInterval is the polling period when Options.PollInterval is
	// zero.
	DefaultPollInterval = time.Second
	// DefaultMaxPending is the number of distinct pending paths beyond which
	// they collapse into a Rescan, when Options.MaxPending is zero.
	DefaultMaxPending = 50_000
)

// Options configure a Watcher.
type Options struct {
	// Root is the absolute path of the workspace. It may be a symlink (it is
	// resolved once); nothing below it is ever followed.
	Root string
	// Ignore reports whether a path is ignored: ignored directories are
	// never watched nor walked, ignored paths never reported. rel is
	// slash-separated and relative to Root ("." is never asked). It is
	// called from the watcher's goroutine and must not block. Nil ignores
	// nothing.
	Ignore func(rel string, isDir bool) bool
	// ForcePoll starts in polling mode (filesystems without events: FUSE,
	// some bind mounts; tests).
	ForcePoll bool
	// PollInterval is the pause between two walks in polling mode; default
	// DefaultPollInterval.
	PollInterval time.Duration
	// MaxPending bounds the distinct paths held while the consumer is slow;
	// beyond it they collapse into one Rescan. Default DefaultMaxPending.
	MaxPending int
	// Logger receives warnings (fallbacks, overflows); default slog.Default().
	Logger *slog.Logger

	hooks *testHooks // tests only
}

// testHooks let tests simulate what a test machine can't easily produce.
type testHooks struct {
	newFsnotify func() (*fsnotify.Watcher, error)
	addWatch    func(fsw *fsnotify.Watcher, name string) error
	collapsed   func() // pending paths collapsed into a Rescan
}

// Event is one batch of changes.
type Event struct {
	// Paths are relative slash-separated paths that may have changed,
	// sorted: files, or directories whose listing or metadata may have
	// changed. "." is the root.
	Paths []string
	// Rescan means anything may have changed (queue overflow, too many
	// pending paths, a mode switch, new ignore rules): the consumer must
	// rescan the whole tree. Paths is empty then.
	Rescan bool
}

// Status describes the watcher for diagnostics.
type Status struct {
	Mode Mode
	// WatchedDirs is the number of directories with an inotify watch (zero
	// when polling).
	WatchedDirs int
	// PolledPaths is the number of paths the last polling walk saw (zero
	// with inotify).
	PolledPaths int
	// FallbackReason says why the watcher polls although inotify was asked
	// for; empty with inotify or ForcePoll.
	FallbackReason string
	// Overflows counts kernel event queue overflows (and other errors from
	// the event source), each answered with a Rescan.
	Overflows int64
	// PendingOverflows counts the times pending paths exceeded MaxPending
	// and collapsed into a Rescan because the consumer was slow.
	PendingOverflows int64
}

// Watcher reports which paths under a root may have changed. Its methods are
// safe for concurrent use.
type Watcher struct {
	root   string // cleaned absolute path, symlink not resolved
	prefix string // root + "/"
	log    *slog.Logger
	hooks  testHooks
	every  time.Duration

	ignore atomic.Pointer[ignoreBox]
	pend   *pending
	out    chan Event

	ctx       context.Context
	cancel    context.CancelFunc
	wg        sync.WaitGroup
	closeOnce sync.Once
	resyncReq chan struct{} // capacity 1: SetIgnore was called
	testErrs  chan error    // injectError

	mu        sync.Mutex // guards mode, reason
	mode      Mode
	reason    string
	overflows atomic.Int64
	nDirs     atomic.Int64
	nPolled   atomic.Int64

	// Owned by the event loop goroutine (and by New before it starts).
	fsw   *fsnotify.Watcher
	dirs  map[string]*dirNode // watched directories by relative path
	byID  map[fileID]string   // watched directories by identity
	polls map[string]pollRec  // last polling walk
}

type ignoreBox struct {
	f func(rel string, isDir bool) bool
}

// errNoWatches means inotify ran out of watches (or descriptors): poll.
var errNoWatches = errors.New("out of inotify watches")

// New starts watching opts.Root. In inotify mode it walks the tree and adds
// a watch on every directory that is not ignored before returning; in
// polling mode it takes the first snapshot. Changes made after New returns
// are reported; the consumer scans the tree itself once for what came before.
// The watcher stops when ctx is done or Close is called; Events is closed
// then.
func New(ctx context.Context, opts Options) (*Watcher, error) {
	if !filepath.IsAbs(opts.Root) {
		return nil, fmt.Errorf("watcher: root %q is not an absolute path", opts.Root)
	}
	root := filepath.Clean(opts.Root)
	fi, err := os.Stat(root)
	if err != nil {
		return nil, fmt.Errorf("watcher: %w", err)
	}
	if !fi.IsDir() {
		return nil, fmt.Errorf("watcher: root %q is not a directory", root)
	}
	w := &Watcher{
		root:      root,
		prefix:    strings.TrimSuffix(root, string(filepath.Separator)) + string(filepath.Separator),
		log:       opts.Logger,
		every:     opts.PollInterval,
		out:       make(chan Event),
		resyncReq: make(chan struct{}, 1),
		testErrs:  make(chan error),
	}
	if w.log == nil {
		w.log = slog.Default()
	}
	w.log = w.log.With("component", "watcher")
	if w.every <= 0 {
		w.every = DefaultPollInterval
	}
	maxPending := opts.MaxPending
	if maxPending <= 0 {
		maxPending = DefaultMaxPending
	}
	w.pend = newPending(maxPending)
	w.ignore.Store(&ignoreBox{f: opts.Ignore})
	if opts.hooks != nil {
		w.hooks = *opts.hooks
	}
	w.pend.onCollapse = w.hooks.collapsed
	if w.hooks.newFsnotify == nil {
		w.hooks.newFsnotify = fsnotify.NewWatcher
	}
	if w.hooks.addWatch == nil {
		w.hooks.addWatch = func(fsw *fsnotify.Watcher, name string) error { return fsw.Add(name) }
	}
	w.ctx, w.cancel = context.WithCancel(ctx)

	switch {
	case opts.ForcePoll:
		w.startPolling("")
	default:
		fsw, err := w.hooks.newFsnotify()
		if err != nil {
			reason := fmt.Sprintf("inotify unavailable: %v", err)
			if errors.Is(err, syscall.EMFILE) {
				reason += " (too many inotify instances: raise fs.inotify.max_user_instances on the host)"
			}
			w.fallBack(reason)
			break
		}
		w.fsw = fsw
		w.dirs = make(map[string]*dirNode)
		w.byID = make(map[fileID]string)
		w.setMode(ModeInotify, "")
		if err := w.scan(".", false, nil); err != nil {
			switch {
			case w.ctx.Err() != nil:
				w.cancel()
				w.fsw.Close()
				return nil, fmt.Errorf("watcher: %w", err)
			case errors.Is(err, errNoWatches):
				w.fallBack(noWatchesReason(err))
			default:
				w.fallBack(err.Error())
			}
		}
	}

	w.wg.Add(2)
	go w.run()
	go w.send()
	return w, nil
}

// Events delivers batches of changes. It is closed when the watcher stops.
// A slow consumer never blocks the watcher: changes coalesce until it reads.
func (w *Watcher) Events() <-chan Event { return w.out }

// Mode is how the watcher currently learns about changes.
func (w *Watcher) Mode() Mode {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.mode
}

// Status describes the watcher.
func (w *Watcher) Status() Status {
	w.mu.Lock()
	defer w.mu.Unlock()
	return Status{
		Mode:             w.mode,
		WatchedDirs:      int(w.nDirs.Load()),
		PolledPaths:      int(w.nPolled.Load()),
		FallbackReason:   w.reason,
		Overflows:        w.overflows.Load(),
		PendingOverflows: w.pend.collapsed(),
	}
}

// SetIgnore replaces the ignore function (the ignore file was reloaded). The
// watcher then drops the watches of newly ignored directories, adds watches
// to newly included ones (or re-takes its polling snapshot), and emits a
// Rescan once that is done. It returns at once.
func (w *Watcher) SetIgnore(ignore func(rel string, isDir bool) bool) {
	w.ignore.Store(&ignoreBox{f: ignore})
	select {
	case w.resyncReq <- struct{}{}:
	default:
	}
}

// Close stops the watcher and waits for its goroutines to exit. It is safe
// to call more than once.
func (w *Watcher) Close() error {
	w.closeOnce.Do(w.cancel)
	w.wg.Wait()
	return nil
}

func (w *Watcher) setMode(m Mode, reason string) {
	w.mu.Lock()
	w.mode, w.reason = m, reason
	w.mu.Unlock()
}

// ignored applies the current ignore function. The root is never ignored.
func (w *Watcher) ignored(rel string, isDir bool) bool {
	if rel == "." {
		return false
	}
	f := w.ignore.Load().f
	return f != nil && f(rel, isDir)
}

// abs is the absolute path of a relative slash path.
func (w *Watcher) abs(rel string) string {
	if rel == "." {
		return w.root
	}
	return w.prefix + filepath.FromSlash(rel)
}

// rel is the relative slash path of an absolute path under the root.
func (w *Watcher) rel(name string) (string, bool) {
	if name == w.root {
		return ".", true
	}
	if !strings.HasPrefix(name, w.prefix) || len(name) == len(w.prefix) {
		return "", false
	}
	return filepath.ToSlash(name[len(w.prefix):]), true
}

// join appends a name to a relative slash path.
func join(rel, name string) string {
	if rel == "." {
		return name
	}
	return rel + "/" + name
}

// parentOf is the relative path of rel's directory ("." for top-level names).
func parentOf(rel string) string {
	if i := strings.LastIndexByte(rel, '/'); i >= 0 {
		return rel[:i]
	}
	return "."
}

// lstat is os.Lstat below the root and os.Stat for the root itself, which
// may be a symlink.
func (w *Watcher) lstat(rel string) (os.FileInfo, error) {
	if rel == "." {
		return os.Stat(w.root)
	}
	return os.Lstat(w.abs(rel))
}

// readDir lists a directory, unsorted.
func readDir(name string) ([]os.DirEntry, error) {
	f, err := os.Open(name)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	ents, err := f.ReadDir(-1)
	if errors.Is(err, io.EOF) {
		err = nil
	}
	return ents, err
}

// run is the event loop: inotify until that fails, then polling.
func (w *Watcher) run() {
	defer w.wg.Done()
	defer func() {
		if w.fsw != nil {
			w.fsw.Close()
			w.fsw = nil
		}
	}()
	for w.ctx.Err() == nil {
		if w.fsw != nil {
			w.runInotify()
		} else {
			w.runPoll()
		}
	}
}

// send hands batches to the consumer.
func (w *Watcher) send() {
	defer w.wg.Done()
	defer close(w.out)
	for {
		select {
		case <-w.ctx.Done():
			return
		case <-w.pend.wake:
		}
		ev, ok := w.pend.take()
		if !ok {
			continue
		}
		select {
		case w.out <- ev:
		case <-w.ctx.Done():
			return
		}
	}
}

// report records that rel may have changed.
func (w *Watcher) report(rel string) { w.pend.add(rel) }

// reportRescan records that anything may have changed.
func (w *Watcher) reportRescan() { w.pend.addRescan() }

// fallBack switches to polling for the rest of the watcher's life: it drops
// every watch, takes the first polling snapshot, and only then asks the
// consumer to rescan, so that every change is either before the consumer's
// rescan or after the snapshot.
func (w *Watcher) fallBack(reason string) {
	w.log.Warn("watcher: falling back to polling the whole workspace; changes are noticed later and each poll walks the tree",
		"reason", reason, "interval", w.every, "root", w.root)
	if w.fsw != nil {
		w.fsw.Close()
		w.fsw = nil
	}
	w.dirs, w.byID = nil, nil
	w.nDirs.Store(0)
	w.startPolling(reason)
	w.reportRescan()
}

func noWatchesReason(err error) string {
	return fmt.Sprintf("inotify watch limit reached (%v): raise fs.inotify.max_user_watches "+
		"on the host (e.g. sysctl fs.inotify.max_user_watches=524288) and restart the agent", err)
}
