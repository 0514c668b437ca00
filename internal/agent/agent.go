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

	"github.com/sandkeep/sandkeep/internal/id"
	"github.com/sandkeep/sandkeep/internal/ignore"
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
	// Progress receives a progress line on a terminal (restore).
	Progress io.Writer
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
// commits a version if anything changed. The workspace is the truth: the
// commit goes on whatever the head is.
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
	idxPath, err := cfg.indexPath(c.ProjectID())
	if err != nil {
		return SyncResult{}, err
	}
	prev, err := snapshot.LoadIndex(idxPath)
	if err != nil {
		log.Warn("agent index unreadable; re-reading every file", "path", idxPath, "err", err)
		prev = nil
	}
	ign, err := ignore.Load(cfg.Workspace)
	if err != nil {
		return SyncResult{}, fmt.Errorf("load .sandkeepignore: %w", err)
	}
	res, err := snapshot.Run(ctx, cfg.Workspace, c, prev, snapshot.Options{Ignore: ign, Logger: log})
	if err != nil {
		return SyncResult{}, fmt.Errorf("scan %s: %w", cfg.Workspace, err)
	}
	for _, p := range res.Stats.FilesChangedDuringRead {
		log.Warn("file kept changing while read; its previous version is kept", "path", p)
	}
	head := c.Session.GetHead()
	out := SyncResult{Version: head, Stats: res.Stats}
	if head != nil && bytes.Equal(head.GetRoot(), res.Root.Bytes()) {
		log.Info("no change", "version", head.GetNumber())
	} else {
		v, err := commit(ctx, c, head.GetNumber(), res.Root, pb.VersionKind_VERSION_KIND_SYNC)
		if err != nil {
			return SyncResult{}, err
		}
		out.Version, out.Changed = v, true
		log.Info("version committed", "version", v.GetNumber(), "files", v.GetFiles(), "bytes", v.GetBytes(),
			"uploaded", res.Stats.BytesUploaded, "chunks_new", res.Stats.ChunksNew)
	}
	if err := saveIndex(res.Index, idxPath); err != nil {
		log.Warn("save agent index", "path", idxPath, "err", err)
	}
	if len(res.Stats.FilesChangedDuringRead) > 0 {
		return out, &ChangingFilesError{Paths: res.Stats.FilesChangedDuringRead}
	}
	return out, nil
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
	log := cfg.logger()
	if cfg.Workspace == "" {
		return RestoreResult{}, errors.New("no workspace (--workspace)")
	}
	c, err := remote.Open(ctx, cfg.Remote)
	if err != nil {
		return RestoreResult{}, err
	}
	defer c.Close()
	stream, err := c.RestorePlan(ctx, version)
	if err != nil {
		return RestoreResult{}, err
	}
	idx := snapshot.NewIndex()
	res, err := restoreRun(ctx, stream, cfg, idx)
	if err != nil {
		return res, err
	}
	if idxPath, err := cfg.indexPath(c.ProjectID()); err == nil {
		if err := saveIndex(idx, idxPath); err != nil {
			log.Warn("save agent index", "path", idxPath, "err", err)
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
		Workspace: cfg.Workspace,
		Progress:  cfg.Progress,
		Logger:    cfg.logger(),
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
