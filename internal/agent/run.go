package agent

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"reflect"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/sandkeep/sandkeep/internal/control"
	"github.com/sandkeep/sandkeep/internal/id"
	"github.com/sandkeep/sandkeep/internal/ignore"
	"github.com/sandkeep/sandkeep/internal/remote"
	"github.com/sandkeep/sandkeep/internal/retry"
	"github.com/sandkeep/sandkeep/internal/snapshot"
	"github.com/sandkeep/sandkeep/internal/watcher"
	pb "github.com/sandkeep/sandkeep/proto/sandkeep/v1"
)

// RunOptions tune the continuous agent.
type RunOptions struct {
	// Quiet is how long a changed path must stay unchanged before it is
	// synced (default 250ms); Cap bounds how long a path that keeps
	// changing waits (default 2s).
	Quiet, Cap time.Duration
	// FullScanInterval is the safety-net full scan period (default 10m).
	FullScanInterval time.Duration
	// HeartbeatInterval is the period of heartbeats to the coordinator
	// (default 10s; heartbeats are also sent on every state change).
	HeartbeatInterval time.Duration
	// ForcePoll watches by periodic scans instead of inotify.
	ForcePoll    bool
	PollInterval time.Duration
	// Socket is the control socket path ("" = no socket).
	Socket string
	// StopTimeout bounds the final flush when stop is signalled.
	StopTimeout time.Duration
	// RetryMin and RetryMax bound the backoff after a failed sync.
	RetryMin, RetryMax time.Duration
}

func (o *RunOptions) defaults() {
	if o.Quiet <= 0 {
		o.Quiet = 250 * time.Millisecond
	}
	if o.Cap <= 0 {
		o.Cap = 2 * time.Second
	}
	if o.FullScanInterval <= 0 {
		o.FullScanInterval = 10 * time.Minute
	}
	if o.HeartbeatInterval <= 0 {
		o.HeartbeatInterval = 10 * time.Second
	}
	if o.StopTimeout <= 0 {
		o.StopTimeout = 60 * time.Second
	}
	if o.RetryMin <= 0 {
		o.RetryMin = 250 * time.Millisecond
	}
	if o.RetryMax <= 0 {
		o.RetryMax = 15 * time.Second
	}
}

// ErrNotSaved is returned by Run when it stopped with changes not
// committed; the error names them.
var ErrNotSaved = errors.New("changes not saved")

type flushReq struct {
	at    time.Time
	reply chan flushReply
	ctx   context.Context
}

type flushReply struct {
	version int64
	err     error
}

// runner is the continuous agent. One goroutine (loop) owns the sync state;
// the control socket and the session stream talk to it through channels and
// read its status under mu.
type runner struct {
	cfg  Config
	opts RunOptions
	log  *slog.Logger
	c    *remote.Client
	w    *watcher.Watcher
	ign  *ignore.Matcher

	// Owned by loop.
	idx      *snapshot.Index
	base     *pb.Version
	tried    []id.ID // roots asked to commit on base, outcome unknown (see baseState.Committing)
	pending  *pendingSet
	pace     pacer
	flushes  []flushReq
	failures int
	// ready is closed once a session exists (Flush waits for it);
	// tokenRefused: the coordinator refuses the token (refuseToken).
	ready        chan struct{}
	tokenRefused atomic.Bool
	nextRetry    time.Time
	idxDirty     bool
	idxSaved     time.Time

	flushCh chan flushReq
	cmdCh   chan *pb.Command
	results chan *pb.CommandResult
	kick    chan struct{} // heartbeat now

	mu     sync.Mutex
	status control.Status
}

// Run restores the workspace if it is empty or behind, then watches and
// syncs until stop is closed; then it flushes (bounded by StopTimeout) and
// returns nil only if everything was committed. Cancelling ctx aborts at
// once; what was not saved is reported in the error.
func Run(ctx context.Context, stop <-chan struct{}, cfg Config, opts RunOptions) error {
	opts.defaults()
	r := &runner{
		cfg: cfg, opts: opts, log: cfg.logger(),
		pending: newPendingSet(opts.Quiet, opts.Cap),
		pace:    pacer{quiet: opts.Quiet, cap: opts.Cap},
		flushCh: make(chan flushReq), cmdCh: make(chan *pb.Command, 4),
		results: make(chan *pb.CommandResult, 4), kick: make(chan struct{}, 1),
		ready: make(chan struct{}),
	}
	r.status = control.Status{State: "connecting", Workspace: cfg.Workspace, Coordinator: cfg.Remote.Addr, StartedAt: time.Now().UTC()}
	if err := checkWorkspace(cfg.Workspace); err != nil {
		return err
	}
	// The control socket answers at once: `status` says what the agent
	// waits for, and a flush is refused rather than left hanging.
	if opts.Socket != "" {
		l, err := control.Listen(opts.Socket)
		if err != nil {
			return err
		}
		defer l.Close()
		sctx, cancel := context.WithCancel(ctx)
		defer cancel()
		go func() {
			if err := control.Serve(sctx, l, r, r.log); err != nil {
				r.log.Error("control socket", "err", err)
			}
		}()
	}
	var err error
	if r.c, err = r.connectOrStop(ctx, stop); err != nil {
		return err
	}
	defer r.c.Close()
	r.mu.Lock()
	r.status.Project = r.c.ProjectID()
	r.status.CoordinatorUp = true
	r.status.State = "restoring"
	r.mu.Unlock()
	close(r.ready)

	sessCtx, cancelSess := context.WithCancel(ctx)
	defer cancelSess()
	go r.sessionLoop(sessCtx)

	if err := r.start(ctx); err != nil {
		return err
	}
	return r.loop(ctx, stop)
}

// ErrStoppedUnconnected: the agent was stopped before it ever reached the
// coordinator; nothing was restored or synced.
var ErrStoppedUnconnected = errors.New("stopped before the coordinator answered; nothing was restored or synced")

// connectOrStop is connect, bounded by --stop-timeout once stop closes: an
// agent told to stop before it ever reached the coordinator still connects
// (and then makes its final flush) if it can within the stop timeout, and
// otherwise ends with ErrStoppedUnconnected.
func (r *runner) connectOrStop(ctx context.Context, stop <-chan struct{}) (*remote.Client, error) {
	cctx, cancel := context.WithCancel(ctx)
	defer cancel()
	go func() {
		select {
		case <-stop:
		case <-cctx.Done():
			return
		}
		t := time.NewTimer(r.opts.StopTimeout)
		defer t.Stop()
		select {
		case <-t.C:
			cancel()
		case <-cctx.Done():
		}
	}()
	c, err := r.connect(cctx)
	if err == nil {
		return c, nil
	}
	select {
	case <-stop:
		if ctx.Err() == nil && !remote.IsTokenRefused(err) {
			return nil, fmt.Errorf("%w (coordinator %s, within --stop-timeout %s)", ErrStoppedUnconnected, r.cfg.Remote.Addr, r.opts.StopTimeout)
		}
	default:
	}
	return nil, err
}

// connect opens a session, retrying while the coordinator is unreachable.
// A refused token is final: it returns at once.
func (r *runner) connect(ctx context.Context) (*remote.Client, error) {
	bo := retry.Backoff{Min: r.opts.RetryMin, Max: r.opts.RetryMax, Jitter: 0.2}
	for attempt := 1; ; attempt++ {
		backoff := bo.Delay(attempt)
		cfg := r.cfg.Remote
		cfg.ConnectTimeout = 30 * time.Second
		c, err := remote.Open(ctx, cfg)
		if err == nil {
			return c, nil
		}
		if remote.IsTokenRefused(err) {
			r.refuseToken(err)
			return nil, fmt.Errorf("the coordinator at %s refused the token (unknown, revoked or expired, or its project was deleted): %w; create one with `sandkeep token create`", cfg.Addr, err)
		}
		if ctx.Err() != nil {
			return nil, err
		}
		r.setError(err)
		r.log.Warn("coordinator unreachable; retrying", "err", err, "in", backoff)
		if retry.Sleep(ctx, backoff) != nil {
			return nil, ctx.Err()
		}
	}
}

// start brings the workspace in line with the head before watching.
func (r *runner) start(ctx context.Context) error {
	pid := r.c.ProjectID()
	idxPath, err := r.cfg.indexPath(pid)
	if err != nil {
		return err
	}
	if r.idx, err = snapshot.LoadIndex(idxPath); err != nil {
		r.log.Warn("agent index unreadable; re-reading every file", "err", err)
		r.idx = nil
	}
	stPath, _ := r.cfg.statePath(pid)
	st, err := loadState(stPath, pid)
	if err != nil {
		r.log.Warn("agent state unreadable", "err", err)
	}
	head := r.c.Session.GetHead()
	empty, err := isEmptyDir(r.cfg.Workspace)
	if err != nil {
		return err
	}
	switch {
	case head == nil:
		r.log.Info("project has no version yet; the first sync makes version 1")
	case empty:
		r.log.Info("workspace is empty: restoring the head", "version", head.GetNumber())
		if err := r.restoreHead(ctx, head); err != nil {
			return err
		}
	default:
		if err := catchUp(ctx, r.c, r.cfg.Workspace, r.idx, st, head, r.log); err != nil {
			return err
		}
	}
	if r.base == nil {
		// Commits go on the head; the disk wins (see Reconcile).
		r.base = head
	}
	if r.ign, err = ignore.Load(r.cfg.Workspace); err != nil {
		return fmt.Errorf("load .sandkeepignore: %w", err)
	}
	abs, err := absPath(r.cfg.Workspace)
	if err != nil {
		return err
	}
	r.w, err = watcher.New(ctx, watcher.Options{
		Root: abs, Ignore: r.ignoreFunc(), ForcePoll: r.opts.ForcePoll, PollInterval: r.opts.PollInterval, Logger: r.log,
	})
	if err != nil {
		return err
	}
	ws := r.w.Status()
	if ws.FallbackReason != "" {
		r.log.Warn("watching by polling", "reason", ws.FallbackReason)
	}
	// Everything before the watcher started: one full scan, at once.
	r.pending.noteRescanNow(time.Now())
	r.setState("syncing")
	return nil
}

// reloadIgnore re-reads .sandkeepignore and, if its rules changed, applies
// them to the next scan and to the watcher (which then asks for a rescan).
// Every scan calls it first: a change of the ignore file made before a
// flush must be in the flushed version even if its event is not in yet
// (or was folded into a rescan).
func (r *runner) reloadIgnore() {
	m, err := ignore.Load(r.cfg.Workspace)
	if err != nil {
		r.log.Warn("reload .sandkeepignore; keeping the previous rules", "err", err)
		return
	}
	if reflect.DeepEqual(m, r.ign) {
		return
	}
	r.log.Info("ignore rules changed", "file", ignore.FileName)
	r.ign = m
	r.w.SetIgnore(r.ignoreFunc())
}

func (r *runner) ignoreFunc() func(string, bool) bool {
	m := r.ign
	return func(rel string, isDir bool) bool { return m.Match(rel, isDir) }
}

func (r *runner) restoreHead(ctx context.Context, head *pb.Version) error {
	r.setState("restoring")
	stream, err := r.c.RestorePlan(ctx, head.GetNumber())
	if err != nil {
		return err
	}
	idx := snapshot.NewIndex()
	res, err := restoreRun(ctx, stream, r.cfg, idx)
	if err != nil {
		return fmt.Errorf("restore version %d: %w", head.GetNumber(), err)
	}
	r.log.Info("restored", "version", head.GetNumber(), "files", res.Files, "bytes", res.Bytes, "downloaded", res.BytesDownloaded, "took", res.Duration)
	r.idx = idx
	r.base = head
	r.persist(true)
	return nil
}

// loop is the agent's single owner goroutine.
func (r *runner) loop(ctx context.Context, stop <-chan struct{}) error {
	defer r.w.Close()
	events := r.w.Events()
	full := time.NewTicker(r.opts.FullScanInterval)
	defer full.Stop()
	save := time.NewTicker(indexSaveInterval)
	defer save.Stop()
	timer := time.NewTimer(time.Hour)
	defer timer.Stop()
	for {
		r.updatePending()
		timer.Reset(r.nextWake())
		select {
		case <-ctx.Done():
			return r.notSaved(ctx.Err())
		case <-stop:
			return r.shutdown(ctx)
		case ev, ok := <-events:
			if !ok {
				events = nil
				r.pending.noteRescan(time.Now())
				continue
			}
			r.noteEvent(ev)
		case fr := <-r.flushCh:
			r.flushes = append(r.flushes, fr)
		case cmd := <-r.cmdCh:
			r.command(ctx, cmd)
		case <-full.C:
			r.pending.noteRescan(time.Now())
		case <-save.C:
			if r.idxDirty {
				r.persist(false)
			}
		case <-timer.C:
		}
		r.expireFlushes()
		if r.due() {
			r.round(ctx)
		}
	}
}

// noteEvent records what the watcher reported.
func (r *runner) noteEvent(ev watcher.Event) {
	now := time.Now()
	r.mu.Lock()
	r.status.LastWrite = now.UTC()
	r.mu.Unlock()
	if ev.Rescan {
		r.pending.noteRescan(now)
		return
	}
	for _, p := range ev.Paths {
		if p == ignore.FileName {
			r.reloadIgnore()
		}
		var size int64
		if fi, err := os.Lstat(filepath.Join(r.cfg.Workspace, filepath.FromSlash(p))); err == nil && fi.Mode().IsRegular() {
			size = fi.Size()
		}
		r.pending.note(p, now, size)
	}
}

// due reports whether a sync round should run now.
func (r *runner) due() bool {
	if time.Now().Before(r.nextRetry) {
		return false
	}
	return len(r.flushes) > 0 || r.nextWake() <= 0
}

// nextWake is how long until a round is due: at once for a flush, else
// when the first pending path (or rescan) is due under the per-path
// debounce (see pendingSet); never before a scheduled retry.
func (r *runner) nextWake() time.Duration {
	wait := time.Hour
	if len(r.flushes) > 0 {
		wait = 0
	} else if at, ok := r.pending.next(); ok {
		if e := r.pace.earliest(); e.After(at) {
			at = e
		}
		wait = time.Until(at)
	}
	return max(wait, time.Until(r.nextRetry), 0)
}

// round runs one sync: scan, upload, commit. A flush or a due rescan scans
// the whole workspace (its unchanged files cost an lstat each); otherwise
// only the due paths are looked at. On failure the pending work stays and a
// retry is scheduled with backoff.
func (r *runner) round(ctx context.Context) {
	start := time.Now()
	rescan, paths := r.pending.due(start)
	full := rescan || len(r.flushes) > 0
	if !full && len(paths) == 0 {
		return
	}
	var dirty []string
	if !full {
		dirty = paths
	}
	untap := r.tapEvents(r.w.Events())
	v, err := r.syncOnce(ctx, dirty)
	for _, ev := range untap() {
		r.noteEvent(ev) // as of now: after start, so they stay pending
	}
	if len(r.flushes) == 0 {
		r.pace.done(start, time.Now())
	}
	if err != nil {
		r.failures++
		backoff := retry.Backoff{Min: r.opts.RetryMin, Max: r.opts.RetryMax, Jitter: 0.2}.Delay(r.failures)
		if remote.IsTokenRefused(err) {
			backoff = r.opts.RetryMax // final until an operator acts: retry slowly
			r.nextRetry = time.Now().Add(backoff)
			r.refuseToken(err)
			r.log.Error("sync refused: the coordinator refuses this agent's token (revoked, or the project was deleted)", "err", err, "in", backoff, "pending", len(r.pending.paths))
			return
		}
		r.nextRetry = time.Now().Add(backoff)
		r.setError(err)
		r.log.Warn("sync failed; retrying", "err", err, "in", backoff, "pending", len(r.pending.paths))
		return
	}
	r.acceptToken()
	r.failures, r.nextRetry = 0, time.Time{}
	r.pending.settle(start, full, paths)
	if full {
		// Every flush asked before this round's scan started is answered.
		kept := r.flushes[:0]
		for _, f := range r.flushes {
			if f.at.Before(start) {
				f.reply <- flushReply{version: v}
			} else {
				kept = append(kept, f)
			}
		}
		r.flushes = kept
	}
	r.mu.Lock()
	r.status.LastError = ""
	r.mu.Unlock()
	if r.pending.empty() {
		r.setState("idle")
	}
}

// tapMaxPaths bounds the paths tapEvents holds; beyond it they are folded
// into one rescan.
const tapMaxPaths = 10000

// tapEvents reads the watcher's events while a round runs (the loop,
// which reads them otherwise, is busy with the round) until the returned
// function is called, which returns them for the loop to note. Each one
// marks the status not clean at once: a write made just before a flush,
// or during a round stuck retrying an unreachable coordinator, must not
// leave the status (and the heartbeats) saying clean. A closed channel is
// left for the loop to see.
func (r *runner) tapEvents(events <-chan watcher.Event) (untap func() []watcher.Event) {
	done := make(chan struct{})
	out := make(chan []watcher.Event, 1)
	go func() {
		var evs []watcher.Event
		paths, rescan := 0, false
		defer func() {
			if rescan {
				evs = []watcher.Event{{Rescan: true}}
			}
			out <- evs
		}()
		for {
			select {
			case <-done:
				return
			case ev, ok := <-events:
				if !ok {
					return
				}
				paths += len(ev.Paths)
				rescan = rescan || ev.Rescan || paths > tapMaxPaths
				if !rescan {
					evs = append(evs, ev)
				}
				r.mu.Lock()
				wasClean := r.status.Clean
				r.status.Clean = false
				r.status.PendingPaths += int64(len(ev.Paths))
				r.mu.Unlock()
				if wasClean {
					r.heartbeatNow()
				}
			}
		}
	}()
	return func() []watcher.Event {
		close(done)
		return <-out
	}
}

// syncOnce scans, uploads and commits on the base. With dirty == nil it
// scans the whole tree (the index makes unchanged files cost an lstat);
// else only the directories on the way to the dirty paths (the paths the
// watcher reported since r.idx; others the watcher reported may be left
// for a later round). It returns the version that holds what was scanned.
func (r *runner) syncOnce(ctx context.Context, dirty []string) (int64, error) {
	r.setState("syncing")
	ign := r.ign
	r.reloadIgnore()
	opts := snapshot.Options{Ignore: r.ign, Logger: r.log}
	if dirty != nil && r.idx != nil && r.ign == ign {
		opts.Dirty = dirty // new ignore rules need the whole tree
	}
	res, err := snapshot.Run(ctx, r.cfg.Workspace, r.c, r.idx, opts)
	if errors.Is(err, remote.ErrBlobMissing) {
		return 0, r.dropIndex(err)
	}
	if err != nil {
		return 0, err
	}
	r.pending.retry(res.Stats.FilesChangedDuringRead, time.Now())
	r.idx, r.idxDirty = res.Index, true
	if r.base != nil && bytes.Equal(r.base.GetRoot(), res.Root.Bytes()) {
		r.persist(false)
		return r.base.GetNumber(), nil
	}
	kind := pb.VersionKind_VERSION_KIND_SYNC
	if len(r.flushes) > 0 {
		kind = pb.VersionKind_VERSION_KIND_FLUSH
	}
	// Record the attempt first: if the answer is lost (or the agent dies)
	// a head made of this root is known to be this workspace's own.
	if !slices.Contains(r.tried, res.Root) {
		r.tried = append(r.tried[max(len(r.tried)-15, 0):], res.Root)
		r.persist(false)
	}
	v, err := commit(ctx, r.c, r.base.GetNumber(), res.Root, kind)
	if errors.Is(err, remote.ErrConflict) {
		// The head moved under us (a rollback, another sandbox): merge it
		// in, then the next round commits on the new head.
		if merr := r.followHead(ctx); merr != nil {
			return 0, fmt.Errorf("%w; merging the new head: %v", err, merr)
		}
		return 0, fmt.Errorf("head moved; merged, committing again: %w", err)
	}
	if errors.Is(err, remote.ErrBlobMissing) {
		return 0, r.dropIndex(err)
	}
	if err != nil {
		return 0, err
	}
	r.base, r.tried = v, nil
	r.mu.Lock()
	r.status.Version = v.GetNumber()
	r.status.LastCommit = time.Now().UTC()
	r.status.Commits++
	r.mu.Unlock()
	// The base state is saved at once; the index (a cache: stat data and
	// chunk refs, still true of the files it lists whatever version they
	// went into) at most every 30 s, so that a commit does not cost a
	// write of the whole index. An agent that dies re-reads only the files
	// changed since the saved index.
	r.persist(false)
	r.log.Info("version committed", "version", v.GetNumber(), "files", v.GetFiles(), "bytes", v.GetBytes(), "uploaded", res.Stats.BytesUploaded, "kind", kind)
	r.heartbeatNow()
	return v.GetNumber(), nil
}

// dropIndex forgets the index after the coordinator said a chunk it names
// is not stored (collected by GC after the versions holding it were
// dropped, or lost): the next round, a full scan, reads every file again
// and asks the coordinator what it lacks.
func (r *runner) dropIndex(cause error) error {
	r.log.Warn("the coordinator no longer stores chunks the agent index names; re-reading every file", "err", cause)
	r.idx, r.idxDirty = nil, false
	r.pending.noteRescan(time.Now())
	return cause
}

// followHead merges the coordinator's current head into the workspace.
func (r *runner) followHead(ctx context.Context) error {
	s, err := r.c.API().OpenSession(ctx, &pb.OpenSessionRequest{})
	if err != nil {
		return err
	}
	head := s.GetHead()
	if head == nil {
		return errors.New("the project has no head")
	}
	return r.mergeTo(ctx, head)
}

func (r *runner) mergeTo(ctx context.Context, head *pb.Version) error {
	if ownCommit(r.base.GetNumber(), r.tried, head) {
		// Our own commit whose answer was lost: nothing to merge.
		r.log.Info("the head is this workspace's own commit", "version", head.GetNumber())
		r.base, r.tried = head, nil
		r.persist(true)
		r.pending.noteRescan(time.Now())
		return nil
	}
	res, err := Reconcile(ctx, r.c, r.cfg.Workspace, r.idx, r.base, head, r.log)
	if err != nil {
		return err
	}
	r.log.Info("workspace brought to the new head", "version", head.GetNumber(), "applied", res.Applied, "deleted", res.Deleted, "kept_local", res.KeptLocal, "conflicts", len(res.Conflicts))
	r.base, r.tried = head, nil
	r.persist(true)
	r.pending.noteRescan(time.Now())
	return nil
}

// indexSaveInterval is how often at most the index is saved, but for
// restores, merges and shutdown.
const indexSaveInterval = 30 * time.Second

// persist saves the base state (always) and the index (at most every 30s
// unless forced: it is a cache).
func (r *runner) persist(force bool) {
	pid := r.c.ProjectID()
	if p, err := r.cfg.statePath(pid); err == nil && r.base != nil {
		if err := saveState(p, pid, r.base, r.tried); err != nil {
			r.log.Warn("save agent state", "err", err)
		}
	}
	if r.idx == nil || (!force && time.Since(r.idxSaved) < indexSaveInterval) {
		return
	}
	if p, err := r.cfg.indexPath(pid); err == nil {
		if err := saveIndex(r.idx, p); err != nil {
			r.log.Warn("save agent index", "err", err)
		}
	}
	r.idxSaved, r.idxDirty = time.Now(), false
}

// command runs a coordinator command (from the session stream).
func (r *runner) command(ctx context.Context, cmd *pb.Command) {
	res := &pb.CommandResult{Id: cmd.GetId()}
	switch {
	case cmd.GetFlush() != nil:
		d := cmd.GetFlush().GetTimeout().AsDuration()
		if d <= 0 || d > control.MaxFlushTimeout {
			d = time.Minute
		}
		fctx, cancel := context.WithTimeout(ctx, d)
		reply := make(chan flushReply, 1)
		r.flushes = append(r.flushes, flushReq{at: time.Now(), reply: reply, ctx: fctx})
		go func() {
			defer cancel()
			select {
			case rep := <-reply:
				res.Version = rep.version
				if rep.err != nil {
					res.Error = rep.err.Error()
				}
			case <-fctx.Done():
				res.Error = "flush timed out: " + r.pendingSummary()
			}
			r.results <- res
		}()
		return
	case cmd.GetRollback() != nil:
		want := cmd.GetRollback().GetVersion()
		err := r.followHead(ctx)
		if err == nil && r.base.GetNumber() < want {
			err = fmt.Errorf("head is version %d, older than the rollback %d", r.base.GetNumber(), want)
		}
		res.Version = r.base.GetNumber()
		if err != nil {
			res.Error = err.Error()
		}
	default:
		res.Error = "unknown command"
	}
	r.results <- res
}

// expireFlushes answers flush requests whose caller gave up.
func (r *runner) expireFlushes() {
	kept := r.flushes[:0]
	for _, f := range r.flushes {
		if f.ctx != nil && f.ctx.Err() != nil {
			f.reply <- flushReply{err: fmt.Errorf("%w: %s", f.ctx.Err(), r.pendingSummary())}
			continue
		}
		kept = append(kept, f)
	}
	r.flushes = kept
}

// shutdown flushes, bounded by StopTimeout; ctx cancellation (a second
// signal) aborts.
func (r *runner) shutdown(ctx context.Context) error {
	if r.tokenRefused.Load() {
		// Nothing may be saved any more: stop at once, naming what is not.
		r.persist(true)
		r.drainEvents()
		return fmt.Errorf("%w (the coordinator refuses this agent's token: revoked, or the project was deleted): %s", ErrNotSaved, r.pendingSummary())
	}
	r.setState("stopping")
	sctx, cancel := context.WithTimeout(ctx, r.opts.StopTimeout)
	defer cancel()
	r.log.Info("stopping: final flush", "timeout", r.opts.StopTimeout)
	bo := retry.Backoff{Min: r.opts.RetryMin, Max: r.opts.RetryMax, Jitter: 0.2}
	for attempt := 1; ; attempt++ {
		start := time.Now()
		_, err := r.syncOnce(sctx, nil)
		if err == nil {
			r.pending.settle(start, true, nil)
			if r.pending.empty() {
				r.persist(true)
				r.log.Info("stopped; everything is committed", "version", r.base.GetNumber())
				return nil
			}
		} else {
			r.setError(err)
			r.log.Warn("final flush failed; retrying", "err", err)
		}
		select {
		case <-sctx.Done():
			r.persist(true)
			// Name what the watcher reported meanwhile too (a write
			// just before the signal may not have been noted yet).
			r.drainEvents()
			if err != nil {
				// The disk could not be compared with the last version:
				// whatever the pending list says, it is not saved.
				return fmt.Errorf("%w (%v; last attempt: %v): %s", ErrNotSaved, sctx.Err(), err, r.pendingSummary())
			}
			return r.notSaved(sctx.Err())
		case <-time.After(bo.Delay(attempt)):
		}
	}
}

// drainEvents notes the watcher's events that are ready, without waiting.
func (r *runner) drainEvents() {
	for {
		select {
		case ev, ok := <-r.w.Events():
			if !ok {
				return
			}
			r.noteEvent(ev)
		default:
			return
		}
	}
}

func (r *runner) notSaved(cause error) error {
	if r.pending.empty() {
		if cause != nil && !errors.Is(cause, context.Canceled) {
			return cause
		}
		return nil
	}
	return fmt.Errorf("%w (%v): %s", ErrNotSaved, cause, r.pendingSummary())
}

func (r *runner) pendingSummary() string {
	paths := r.pending.all()
	s := fmt.Sprintf("%d path(s) changed since version %d", len(paths), r.base.GetNumber())
	if r.pending.rescanPending() {
		s += " (and a full rescan was pending)"
	}
	if len(paths) > 10 {
		paths = append(paths[:10], "…")
	}
	if len(paths) > 0 {
		s += ": " + strings.Join(paths, ", ")
	}
	return s
}

func (r *runner) updatePending() {
	ex := r.pending.examples(10)
	ws := r.w.Status()
	r.mu.Lock()
	r.status.PendingPaths = int64(len(r.pending.paths))
	r.status.PendingBytes = r.pending.bytes
	r.status.PendingExamples = ex
	r.status.Clean = r.pending.empty() && r.status.LastError == ""
	r.status.WatchMode = string(ws.Mode)
	r.status.WatchReason = ws.FallbackReason
	r.status.WatchedDirs = ws.WatchedDirs
	r.status.Overflows = ws.Overflows
	if r.base != nil {
		r.status.Version = r.base.GetNumber()
	}
	r.mu.Unlock()
}

func (r *runner) setState(s string) {
	r.mu.Lock()
	changed := r.status.State != s
	r.status.State = s
	r.mu.Unlock()
	if changed {
		r.heartbeatNow()
	}
}

func (r *runner) setError(err error) {
	r.mu.Lock()
	r.status.LastError = err.Error()
	r.status.LastErrorTime = time.Now().UTC()
	r.status.State = "error"
	r.mu.Unlock()
	r.heartbeatNow()
}

func (r *runner) heartbeatNow() {
	select {
	case r.kick <- struct{}{}:
	default:
	}
}

// refuseToken records that the coordinator refused the token: status says
// so, and a stop exits at once (there is nothing it may still save).
func (r *runner) refuseToken(err error) {
	r.tokenRefused.Store(true)
	r.mu.Lock()
	r.status.TokenRefused = true
	r.status.CoordinatorUp = false
	r.status.LastError = fmt.Sprintf("coordinator refused this agent's token (revoked, or the project was deleted): %v", err)
	r.status.LastErrorTime = time.Now().UTC()
	r.status.State = "token_refused"
	r.mu.Unlock()
	r.heartbeatNow()
}

// acceptToken clears refuseToken once a session stream is open again.
func (r *runner) acceptToken() {
	if r.tokenRefused.Swap(false) {
		r.mu.Lock()
		r.status.TokenRefused = false
		r.mu.Unlock()
	}
}

// Status implements control.Agent.
func (r *runner) Status() control.Status {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.status
}

// Flush implements control.Agent.
func (r *runner) Flush(ctx context.Context) (int64, error) {
	// Before the first session a flush waits (within its deadline) for the
	// coordinator, as it waits for a round.
	select {
	case <-r.ready:
	case <-ctx.Done():
		return 0, fmt.Errorf("not connected: still waiting for the coordinator at %s: %w", r.cfg.Remote.Addr, ctx.Err())
	}
	if r.tokenRefused.Load() {
		return 0, errors.New("the coordinator refuses this agent's token (revoked, or the project was deleted): nothing can be committed")
	}
	req := flushReq{at: time.Now(), reply: make(chan flushReply, 1), ctx: ctx}
	select {
	case r.flushCh <- req:
	case <-ctx.Done():
		return 0, fmt.Errorf("agent busy: %w", ctx.Err())
	}
	select {
	case rep := <-req.reply:
		return rep.version, rep.err
	case <-ctx.Done():
		// The loop answers on expiry too; don't wait for it.
		return 0, fmt.Errorf("flush: %w", ctx.Err())
	}
}

func isEmptyDir(dir string) (bool, error) {
	f, err := os.Open(dir)
	if err != nil {
		return false, err
	}
	defer f.Close()
	names, err := f.Readdirnames(-1)
	if err != nil {
		return false, err
	}
	for _, n := range names {
		if n != "lost+found" {
			return false, nil
		}
	}
	return true, nil
}
