// Package agent is what runs inside a sandbox: one-shot sync and restore
// now, continuous watch-and-sync on top of them. It talks to the
// coordinator through package remote only.
package agent

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/sandkeep/sandkeep/internal/id"
	"github.com/sandkeep/sandkeep/internal/ignore"
	"github.com/sandkeep/sandkeep/internal/progress"
	"github.com/sandkeep/sandkeep/internal/remote"
	"github.com/sandkeep/sandkeep/internal/restore"
	"github.com/sandkeep/sandkeep/internal/snapshot"
	"github.com/sandkeep/sandkeep/internal/tree"
	pb "github.com/sandkeep/sandkeep/proto/sandkeep/v1"
)

// Config is what every agent command needs.
type Config struct {
	Remote    remote.Config
	Workspace string
	// CacheDir keeps the agent's file index (a cache: losing it costs a
	// re-read of the workspace, nothing else). Default: the user cache dir.
	CacheDir string
	Logger   *slog.Logger
	// Progress receives progress lines of sync --once and restore: redrawn
	// in place on a terminal, every few seconds elsewhere (package
	// progress); nil: none.
	Progress io.Writer
	// KeepSetuid restores setuid/setgid bits as stored (default: dropped).
	KeepSetuid bool

	// existingBytes: what the restore target holds already (RestoreWith).
	existingBytes int64
}

func (c *Config) logger() *slog.Logger {
	if c.Logger == nil {
		return slog.Default()
	}
	return c.Logger
}

// DefaultCacheDir is where the index lives unless --cache-dir says otherwise.
func DefaultCacheDir() string {
	if d, err := os.UserCacheDir(); err == nil {
		return filepath.Join(d, "sandkeep")
	}
	return filepath.Join(os.TempDir(), "sandkeep-cache")
}

// indexPath is the cache file of one workspace of one project.
func (c *Config) indexPath(projectID string) (string, error) {
	abs, err := filepath.Abs(c.Workspace)
	if err != nil {
		return "", err
	}
	dir := c.CacheDir
	if dir == "" {
		dir = DefaultCacheDir()
	}
	sum := sha256.Sum256([]byte(abs))
	return filepath.Join(dir, projectID+"-"+hex.EncodeToString(sum[:8])+".index"), nil
}

// SyncResult is the outcome of one sync.
type SyncResult struct {
	Version *pb.Version // the head after the sync
	Changed bool        // a new version was committed
	Stats   snapshot.Stats
}

// SyncOnce scans the workspace, uploads what the coordinator lacks and
// commits a version if anything changed. The disk wins: the commit goes on
// the head. If the head moved since this workspace was last synced (a
// rollback, another sandbox), it is merged in first by the same rule as
// `run` (see catchUp and Reconcile), so a sync never undoes a rollback.
func SyncOnce(ctx context.Context, cfg Config) (SyncResult, error) {
	log := cfg.logger()
	if err := checkWorkspace(cfg.Workspace); err != nil {
		return SyncResult{}, err
	}
	c, err := remote.Open(ctx, cfg.Remote)
	if err != nil {
		return SyncResult{}, err
	}
	defer c.Close()
	pid := c.ProjectID()
	idxPath, err := cfg.indexPath(pid)
	if err != nil {
		return SyncResult{}, err
	}
	stPath, err := cfg.statePath(pid)
	if err != nil {
		return SyncResult{}, err
	}
	prev, err := snapshot.LoadIndex(idxPath)
	if err != nil {
		log.Warn("agent index unreadable; re-reading every file", "path", idxPath, "err", err)
		prev = nil
	}
	st, err := loadState(stPath, pid)
	if err != nil {
		log.Warn("agent state unreadable", "err", err)
	}
	head := c.Session.GetHead()
	if err := catchUp(ctx, c, cfg.Workspace, prev, st, head, log); err != nil {
		return SyncResult{}, err
	}
	ign, err := ignore.Load(cfg.Workspace)
	if err != nil {
		return SyncResult{}, fmt.Errorf("load .sandkeepignore: %w", err)
	}
	var res snapshot.Result
	var v *pb.Version
	var prog *snapshot.Progress
	if cfg.Progress != nil {
		prog = &snapshot.Progress{}
		stop := progress.Start(cfg.Progress, func(el time.Duration) string {
			s := progress.Line("sync", prog.FilesDone.Load(), prog.FilesSeen.Load(), prog.BytesDone.Load(), prog.BytesSeen.Load(), el)
			return s + ", " + progress.Bytes(prog.BytesUploaded.Load()) + " uploaded"
		})
		defer stop()
	}
	for attempt := 0; ; attempt++ {
		v, res, err = syncOnce(ctx, c, cfg.Workspace, prev, ign, head, stPath, log, prog)
		if errors.Is(err, remote.ErrBlobMissing) && prev != nil && attempt == 0 {
			log.Warn("the coordinator no longer stores chunks the agent index names; re-reading every file", "err", err)
			prev = nil
			continue
		}
		if err != nil {
			return SyncResult{}, err
		}
		break
	}
	for _, p := range res.Stats.FilesChangedDuringRead {
		log.Warn("file kept changing while read; its previous version is kept", "path", p)
	}
	out := SyncResult{Version: head, Stats: res.Stats}
	if v != nil {
		out.Version, out.Changed = v, true
		log.Info("version committed", "version", v.GetNumber(), "files", v.GetFiles(), "bytes", v.GetBytes(),
			"uploaded", res.Stats.BytesUploaded, "chunks_new", res.Stats.ChunksNew)
	} else if head != nil {
		log.Info("no change", "version", head.GetNumber())
	}
	if out.Version != nil {
		if err := saveState(stPath, pid, out.Version, nil); err != nil {
			log.Warn("save agent state", "path", stPath, "err", err)
		}
	}
	if err := saveIndex(res.Index, idxPath); err != nil {
		log.Warn("save agent index", "path", idxPath, "err", err)
	}
	if res.Stats.UnsavedCount > 0 {
		return out, &UnreadableError{Paths: res.Stats.Unsaved, Count: res.Stats.UnsavedCount}
	}
	if len(res.Stats.FilesChangedDuringRead) > 0 {
		return out, &ChangingFilesError{Paths: res.Stats.FilesChangedDuringRead}
	}
	return out, nil
}

// UnreadableError says some entries of the workspace could not be read
// (permission denied, I/O error) and are not in the version as they are on
// disk: it holds their previous content, or not them at all. The version
// was committed all the same.
type UnreadableError struct {
	Paths []string // the first of them, sorted
	Count int64
}

func (e *UnreadableError) Error() string {
	shown := e.Paths[:min(5, len(e.Paths))]
	more := ""
	if e.Count > int64(len(shown)) {
		more = fmt.Sprintf(" and %d more", e.Count-int64(len(shown)))
	}
	return fmt.Sprintf("%d path(s) could not be read and were not saved: %s%s (fix their permissions, or list them in .sandkeepignore)",
		e.Count, strings.Join(shown, ", "), more)
}

// syncOnce is one scan and, if the root differs from head's, one commit on
// head (nil v: nothing changed). The root is recorded in the state at
// stPath before the commit, so that a lost answer is recognised later.
func syncOnce(ctx context.Context, c *remote.Client, ws string, prev *snapshot.Index, ign *ignore.Matcher, head *pb.Version, stPath string, log *slog.Logger, prog *snapshot.Progress) (*pb.Version, snapshot.Result, error) {
	res, err := snapshot.Run(ctx, ws, c, prev, snapshot.Options{Ignore: ign, Logger: log, Progress: prog})
	if err != nil {
		return nil, res, fmt.Errorf("scan %s: %w", ws, err)
	}
	if head != nil && bytes.Equal(head.GetRoot(), res.Root.Bytes()) {
		return nil, res, nil
	}
	if head != nil {
		if err := saveState(stPath, c.ProjectID(), head, []id.ID{res.Root}); err != nil {
			log.Warn("save agent state", "path", stPath, "err", err)
		}
	}
	v, err := commit(ctx, c, head.GetNumber(), res.Root, pb.VersionKind_VERSION_KIND_SYNC)
	return v, res, err
}

// ChangingFilesError says some files kept changing while they were read;
// the version holds their previous content (or not the file at all).
type ChangingFilesError struct{ Paths []string }

func (e *ChangingFilesError) Error() string {
	return fmt.Sprintf("%d file(s) kept changing while read and were not saved in this version, first: %q", len(e.Paths), e.Paths[0])
}

// commit commits root on parent. If the response was lost and a retry found
// the head already at root, that is success.
func commit(ctx context.Context, c *remote.Client, parent int64, root id.ID, kind pb.VersionKind) (*pb.Version, error) {
	v, err := c.Commit(ctx, parent, root, kind)
	if errors.Is(err, remote.ErrConflict) {
		s, herr := c.API().OpenSession(ctx, &pb.OpenSessionRequest{})
		if herr == nil && s.GetHead() != nil && s.GetHead().GetParent() == parent && bytes.Equal(s.GetHead().GetRoot(), root.Bytes()) {
			return s.GetHead(), nil
		}
	}
	return v, err
}

func saveIndex(idx *snapshot.Index, path string) error {
	if idx == nil {
		return nil
	}
	if err := os.MkdirAll(filepath.Dir(path), 0o700); err != nil {
		return err
	}
	return idx.Save(path)
}

func checkWorkspace(dir string) error {
	if dir == "" {
		return errors.New("no workspace (--workspace)")
	}
	fi, err := os.Lstat(dir)
	if err != nil {
		return fmt.Errorf("workspace: %w", err)
	}
	if !fi.IsDir() {
		return fmt.Errorf("workspace %s is not a directory", dir)
	}
	return nil
}

// RestoreResult is the outcome of a restore.
type RestoreResult = restore.Result

// Restore brings the workspace to version (0 = head). Files already on disk
// are a seed: only missing chunks are downloaded. Entries on disk that the
// version does not have are left alone.
func Restore(ctx context.Context, cfg Config, version int64) (RestoreResult, error) {
	return RestoreWith(ctx, cfg, RestoreOptions{Version: version})
}

// RestoreWith restores a version into cfg.Workspace. The target may be
// missing, empty, or already hold the version (then only what differs is
// fetched); a target that holds anything else is refused with a
// *TargetError and left as it was, unless opts.Force. A target the restore
// created is removed again if the restore fails before writing a file.
func RestoreWith(ctx context.Context, cfg Config, opts RestoreOptions) (_ RestoreResult, err error) {
	log := cfg.logger()
	if cfg.Workspace == "" {
		return RestoreResult{}, errors.New("no workspace (--workspace)")
	}
	version := opts.Version
	c, err := remote.Open(ctx, cfg.Remote)
	if err != nil {
		return RestoreResult{}, err
	}
	defer c.Close()

	var disk map[string]diskEntry
	var existing int64
	switch fi, serr := os.Lstat(cfg.Workspace); {
	case errors.Is(serr, os.ErrNotExist):
		defer func() {
			if err != nil {
				// The target did not exist: leave no empty directory
				// behind. (Files a failed restore did write intact stay,
				// as the restore keeps them: only bad files are removed.)
				_ = os.Remove(cfg.Workspace)
			}
		}()
	case serr != nil:
		return RestoreResult{}, fmt.Errorf("restore target: %w", serr)
	case !fi.IsDir():
		return RestoreResult{}, fmt.Errorf("restore target %s is not a directory", cfg.Workspace)
	default:
		if disk, existing, err = scanTarget(cfg.Workspace); err != nil {
			return RestoreResult{}, fmt.Errorf("restore target: %w", err)
		}
	}
	var differ []string
	var why map[string]string
	if len(disk) > 0 {
		var number int64
		differ, why, number, err = compareTarget(ctx, c, cfg.Workspace, version, disk)
		if err != nil {
			return RestoreResult{}, err
		}
		if len(differ) > 0 && !opts.Force {
			te := &TargetError{Dir: cfg.Workspace, Version: number, Count: len(differ)}
			for _, p := range differ[:min(5, len(differ))] {
				te.Paths = append(te.Paths, p)
				te.Examples = append(te.Examples, p+" ("+why[p]+")")
			}
			return RestoreResult{}, te
		}
	}
	cfg.existingBytes = existing
	stream, err := c.RestorePlan(ctx, version)
	if err != nil {
		return RestoreResult{}, err
	}
	idx := snapshot.NewIndex()
	res, err := restoreRun(ctx, stream, cfg, idx)
	if err != nil {
		return res, err
	}
	if opts.Force {
		if err := removeExtras(cfg.Workspace, differ, why); err != nil {
			return res, err
		}
	}
	if idxPath, err := cfg.indexPath(c.ProjectID()); err == nil {
		if err := saveIndex(idx, idxPath); err != nil {
			log.Warn("save agent index", "path", idxPath, "err", err)
		}
	}
	// The workspace now holds res.Version. If that is the head, it is the
	// base of later syncs (which merge in whatever the head becomes). An
	// older version restored on purpose is not: the next sync keeps the
	// disk as it is, on top of the head (so it becomes the head's content,
	// as a rollback would), rather than merging the head back in.
	if stPath, err := cfg.statePath(c.ProjectID()); err == nil {
		head := c.Session.GetHead()
		if rv := res.Version; rv != nil && head != nil && rv.GetNumber() == head.GetNumber() {
			err = saveState(stPath, c.ProjectID(), rv, nil)
		} else {
			err = os.Remove(stPath)
			if errors.Is(err, os.ErrNotExist) {
				err = nil
			}
		}
		if err != nil {
			log.Warn("save agent state", "path", stPath, "err", err)
		}
	}
	return res, nil
}

// chunkRefs converts a plan's chunk list to tree chunk refs.
func chunkRefs(cs []*pb.ChunkRef) []tree.ChunkRef {
	out := make([]tree.ChunkRef, 0, len(cs))
	for _, c := range cs {
		cid, err := id.FromBytes(c.GetId())
		if err != nil || c.GetSize() <= 0 || c.GetSize() > tree.MaxChunkSize {
			return nil
		}
		out = append(out, tree.ChunkRef{ID: cid, Size: uint32(c.GetSize())})
	}
	return out
}

// restoreRun runs a restore plan into cfg.Workspace, recording every
// restored file in idx so the next scan does not read it again.
func restoreRun(ctx context.Context, src restore.PlanSource, cfg Config, idx *snapshot.Index) (restore.Result, error) {
	return restore.Run(ctx, src, restore.Options{
		Workspace:     cfg.Workspace,
		KeepSetuid:    cfg.KeepSetuid,
		ExistingBytes: cfg.existingBytes,
		Progress:      cfg.Progress,
		Logger:        cfg.logger(),
		OnFile: func(f restore.FileInfo, fi os.FileInfo) {
			idx.RecordFile(f.Path, fi, chunkRefs(f.Chunks))
		},
	})
}

func absPath(p string) (string, error) {
	a, err := filepath.Abs(p)
	if err != nil {
		return "", fmt.Errorf("workspace: %w", err)
	}
	return a, nil
}
