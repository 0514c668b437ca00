package agent

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"path"
	"sort"
	"syscall"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"

	"github.com/sandkeep/sandkeep/internal/remote"
	"github.com/sandkeep/sandkeep/internal/restore"
	"github.com/sandkeep/sandkeep/internal/snapshot"
	"github.com/sandkeep/sandkeep/internal/tree"
	pb "github.com/sandkeep/sandkeep/proto/sandkeep/v1"
)

// ConflictSuffix is put, with the version number, after the name of a file
// that changed both on disk and in the new head: the disk keeps its file,
// and the head's content is written beside it as NAME.sandkeep-conflict-vN.
const ConflictSuffix = ".sandkeep-conflict-v"

// MergeResult says what a Reconcile did.
type MergeResult struct {
	Applied   int      // paths brought to the head's state
	Deleted   int      // paths removed because the head no longer has them
	KeptLocal int      // paths changed on disk and kept as they are
	Conflicts []string // conflict copies written (workspace-relative)
}

// Reconcile brings a workspace whose last synced version is base to the
// head, keeping every change made on disk since base. The rule, per path:
//
//   - unchanged on disk since base: it becomes what the head has (updated,
//     created or deleted);
//   - changed on disk, unchanged in the head: the disk wins;
//   - changed on both: the disk wins, and if the head has a file there its
//     content is written beside it as PATH.sandkeep-conflict-vN (N = head
//     version), so neither side is lost.
//
// With no base (the agent never synced this workspace, or its state was
// lost) nothing is taken from the head: the disk wins entirely, and the
// head's content stays in the version history. The caller commits the
// result on top of head.
//
// Reconcile decides "unchanged on disk" from idx (the agent's index as of
// base) where it can, else from size, mode and mtime against base.
func Reconcile(ctx context.Context, c *remote.Client, ws string, idx *snapshot.Index, base, head *pb.Version, log *slog.Logger) (MergeResult, error) {
	var res MergeResult
	if head == nil || base == nil || base.GetNumber() == head.GetNumber() || bytes.Equal(base.GetRoot(), head.GetRoot()) {
		return res, nil
	}
	headEntries, err := listing(ctx, c, head.GetNumber())
	if err != nil {
		return res, fmt.Errorf("list version %d: %w", head.GetNumber(), err)
	}
	baseEntries, err := listing(ctx, c, base.GetNumber())
	if status.Code(err) == codes.NotFound { // status.Code sees through wrapping
		// The base was collected (retention) while the agent was away:
		// as with no base, the disk wins on top of the head.
		log.Warn("the version this workspace was synced from is gone (collected); keeping the disk as it is on top of the head",
			"base", base.GetNumber(), "head", head.GetNumber())
		return res, nil
	}
	if err != nil {
		return res, fmt.Errorf("list version %d: %w", base.GetNumber(), err)
	}
	root, err := os.OpenRoot(ws)
	if err != nil {
		return res, err
	}
	defer root.Close()

	take, deletes := planMerge(root, idx, baseEntries, headEntries, head.GetNumber(), &res)
	if len(take) > 0 {
		stream, err := c.RestorePlan(ctx, head.GetNumber())
		if err != nil {
			return res, err
		}
		if _, err := restore.Run(ctx, &filteredPlan{src: stream, take: take}, restore.Options{Workspace: ws, Logger: log}); err != nil {
			return res, fmt.Errorf("apply version %d: %w", head.GetNumber(), err)
		}
	}
	if err := removeDeleted(root, deletes, &res); err != nil {
		return res, err
	}
	for _, cp := range res.Conflicts {
		log.Warn("changed on disk and in the new head: the disk version is kept, the head's is saved beside it", "conflict_copy", cp, "version", head.GetNumber())
	}
	return res, nil
}

// planMerge decides path by path (the three-way rule of Reconcile): take
// maps each head path to write to where it goes (itself, or its conflict
// copy), deletes lists what the head removed and the disk did not change.
func planMerge(root *os.Root, idx *snapshot.Index, baseEntries, headEntries map[string]*pb.PlanEntry, headNumber int64, res *MergeResult) (take map[string]string, deletes []string) {
	take = make(map[string]string) // head path -> path to write it at
	paths := make(map[string]bool, len(headEntries)+len(baseEntries))
	for p := range headEntries {
		paths[p] = true
	}
	for p := range baseEntries {
		paths[p] = true
	}
	for p := range paths {
		b, h := baseEntries[p], headEntries[p]
		if sameEntry(b, h) {
			continue // the head did not change p
		}
		local := localChanged(root, idx, p, b)
		switch {
		case !local && h != nil:
			take[p] = p
			res.Applied++
		case !local && h == nil:
			deletes = append(deletes, p)
		case h != nil && h.GetType() == pb.EntryType_ENTRY_TYPE_FILE && !diskEquals(root, idx, p, h):
			cp := p + ConflictSuffix + fmt.Sprint(headNumber)
			take[p] = cp
			res.Conflicts = append(res.Conflicts, cp)
			res.KeptLocal++
		default:
			res.KeptLocal++
		}
	}
	// Directories on the way to anything taken must exist.
	for p, dst := range take {
		for d := path.Dir(dst); d != "."; d = path.Dir(d) {
			src := d
			if dst != p {
				src = path.Dir(p) // conflict copies sit beside their file
			}
			if e := headEntries[src]; e != nil && e.GetType() == pb.EntryType_ENTRY_TYPE_DIRECTORY {
				if _, ok := take[src]; !ok {
					take[src] = src
				}
			}
			if dst != p {
				break
			}
		}
	}
	return take, deletes
}

// removeDeleted removes what the head deleted, deepest first, so
// directories are empty when their turn comes; a directory that still
// holds local files is kept.
func removeDeleted(root *os.Root, deletes []string, res *MergeResult) error {
	sort.Slice(deletes, func(i, j int) bool { return len(deletes[i]) > len(deletes[j]) })
	for _, p := range deletes {
		err := root.Remove(p)
		switch {
		case err == nil:
			res.Deleted++
		case errors.Is(err, os.ErrNotExist):
		case errors.Is(err, syscall.ENOTEMPTY) || errors.Is(err, syscall.EEXIST):
			res.KeptLocal++
		default:
			return fmt.Errorf("remove %s: %w", p, err)
		}
	}
	return nil
}

// listing collects a version's entries by path.
func listing(ctx context.Context, c *remote.Client, version int64) (map[string]*pb.PlanEntry, error) {
	stream, err := c.RestorePlan(ctx, version)
	if err != nil {
		return nil, err
	}
	out := make(map[string]*pb.PlanEntry)
	for {
		msg, err := stream.Recv()
		if errors.Is(err, io.EOF) {
			return out, nil
		}
		if err != nil {
			return nil, err
		}
		for _, e := range msg.GetEntries() {
			if _, err := tree.CleanPath(e.GetPath()); err != nil {
				return nil, fmt.Errorf("coordinator sent a bad path: %w", err)
			}
			out[e.GetPath()] = e
		}
	}
}

func sameChunks(a, b []*pb.ChunkRef) bool {
	if len(a) != len(b) {
		return false
	}
	for i := range a {
		if !bytes.Equal(a[i].GetId(), b[i].GetId()) || a[i].GetSize() != b[i].GetSize() {
			return false
		}
	}
	return true
}

// sameEntry compares content, type, mode and target (not mtimes of
// directories, which change with their children).
func sameEntry(a, b *pb.PlanEntry) bool {
	if a == nil || b == nil {
		return a == b
	}
	if a.GetType() != b.GetType() || a.GetMode() != b.GetMode() {
		return false
	}
	switch a.GetType() {
	case pb.EntryType_ENTRY_TYPE_FILE:
		return a.GetSize() == b.GetSize() && a.GetMtimeNs() == b.GetMtimeNs() && sameChunks(a.GetChunks(), b.GetChunks())
	case pb.EntryType_ENTRY_TYPE_SYMLINK:
		return a.GetTarget() == b.GetTarget()
	}
	return true
}

// localChanged reports whether the disk differs from the base entry b at p.
func localChanged(root *os.Root, idx *snapshot.Index, p string, b *pb.PlanEntry) bool {
	if b == nil {
		_, err := root.Lstat(p)
		return err == nil // something new on disk
	}
	return !diskEquals(root, idx, p, b) // includes: deleted on disk
}

// diskEquals reports whether the entry on disk at p is e, judged by stat
// against the index (or e's own size, mode and mtime) without reading.
func diskEquals(root *os.Root, idx *snapshot.Index, p string, e *pb.PlanEntry) bool {
	fi, err := root.Lstat(p)
	if err != nil {
		return false
	}
	switch e.GetType() {
	case pb.EntryType_ENTRY_TYPE_DIRECTORY:
		return fi.IsDir()
	case pb.EntryType_ENTRY_TYPE_SYMLINK:
		if fi.Mode()&os.ModeSymlink == 0 {
			return false
		}
		t, err := root.Readlink(p)
		return err == nil && t == e.GetTarget()
	case pb.EntryType_ENTRY_TYPE_FILE:
		if !fi.Mode().IsRegular() || fi.Size() != e.GetSize() {
			return false
		}
		if st, ok := idx.Lookup(p); ok {
			if st.Size == fi.Size() && st.MtimeNs == fi.ModTime().UnixNano() && sameChunks(toPB(st.Chunks), e.GetChunks()) {
				return true
			}
		}
		return fi.ModTime().UnixNano() == e.GetMtimeNs()
	}
	return false
}

func toPB(cs []tree.ChunkRef) []*pb.ChunkRef {
	out := make([]*pb.ChunkRef, len(cs))
	for i, c := range cs {
		out[i] = &pb.ChunkRef{Id: c.ID.Bytes(), Size: int64(c.Size)}
	}
	return out
}

// filteredPlan passes through the plan batches of a version, keeping only
// the entries in take (renamed to their destination).
type filteredPlan struct {
	src  restore.PlanSource
	take map[string]string
}

func (f *filteredPlan) Recv() (*pb.GetRestorePlanResponse, error) {
	for {
		msg, err := f.src.Recv()
		if err != nil {
			return nil, err
		}
		out := &pb.GetRestorePlanResponse{Version: msg.GetVersion(), Ranges: msg.GetRanges()}
		for _, e := range msg.GetEntries() {
			dst, ok := f.take[e.GetPath()]
			if !ok {
				continue
			}
			if dst != e.GetPath() {
				c := proto.Clone(e).(*pb.PlanEntry)
				c.Path = dst
				out.Entries = append(out.Entries, c)
				continue
			}
			out.Entries = append(out.Entries, e)
		}
		if len(out.Entries) > 0 || out.Version != nil {
			return out, nil
		}
	}
}

// catchUp applies the restart rule to a workspace that is not restored
// from scratch: st is what the agent saved when it last synced it (nil if
// never, or lost), head the project's head. With no saved state the disk
// wins on top of the head; if the head is the version last synced (or this
// workspace's own commit whose answer was lost) there is nothing to merge;
// otherwise the head moved meanwhile (a rollback, another sandbox) and
// Reconcile merges it in, path by path, without dropping either side.
// Either way the next commit goes on head.
func catchUp(ctx context.Context, c *remote.Client, ws string, idx *snapshot.Index, st *baseState, head *pb.Version, log *slog.Logger) error {
	switch {
	case head == nil:
		return nil
	case st == nil:
		log.Warn("workspace is not empty and was never synced from here: keeping the disk as it is; the head stays in the version history", "head", head.GetNumber())
		return nil
	case st.Version == head.GetNumber():
		return nil
	case ownCommit(st.Version, st.Committing, head):
		log.Info("the last commit before the agent stopped went through", "version", head.GetNumber())
		return nil
	}
	base := &pb.Version{Number: st.Version, Root: st.Root.Bytes()}
	log.Info("head moved since this workspace was last synced: merging", "base", st.Version, "head", head.GetNumber())
	res, err := Reconcile(ctx, c, ws, idx, base, head, log)
	if err != nil {
		return fmt.Errorf("merge with version %d: %w", head.GetNumber(), err)
	}
	log.Info("merged", "applied", res.Applied, "deleted", res.Deleted, "kept_local", res.KeptLocal, "conflicts", len(res.Conflicts))
	return nil
}
