package agent

import (
	"context"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"slices"
	"strings"

	"github.com/sandkeep/sandkeep/internal/remote"
	pb "github.com/sandkeep/sandkeep/proto/sandkeep/v1"
)

// ErrTargetDiffers: a restore target holds content that differs from the
// version; nothing was written. Restore into an empty directory, or with
// RestoreOptions.Force.
var ErrTargetDiffers = errors.New("restore target is not empty and differs from the version")

// RestoreOptions say what a restore does.
type RestoreOptions struct {
	// Version to restore; 0 is the head.
	Version int64
	// Force makes a non-empty target exactly the version: files that differ
	// are overwritten and whatever the version lacks is removed. Without it
	// such a target is refused and left as it was.
	Force bool
}

// TargetError lists what a non-empty target holds that the version does not.
type TargetError struct {
	Dir      string
	Version  int64
	Paths    []string // a few of them, sorted
	Count    int      // how many in all
	Examples []string // "path (why)"
}

func (e *TargetError) Error() string {
	more := ""
	if e.Count > len(e.Examples) {
		more = fmt.Sprintf(" and %d more", e.Count-len(e.Examples))
	}
	return fmt.Sprintf("%v: %s holds %d path(s) that differ from version %d: %s%s; restore into an empty directory, or pass --force to make %s exactly version %d (this overwrites and removes those paths)",
		ErrTargetDiffers, e.Dir, e.Count, e.Version, strings.Join(e.Examples, ", "), more, e.Dir, e.Version)
}

func (e *TargetError) Unwrap() error { return ErrTargetDiffers }

// diskEntry is what a target path holds.
type diskEntry struct {
	mode  fs.FileMode
	size  int64
	mtime int64
}

// scanTarget lists dir's entries (slash paths relative to dir) and the bytes
// its regular files hold.
func scanTarget(dir string) (map[string]diskEntry, int64, error) {
	out := make(map[string]diskEntry)
	var total int64
	err := filepath.WalkDir(dir, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if p == dir {
			return nil
		}
		fi, err := d.Info()
		if err != nil {
			return err
		}
		rel, err := filepath.Rel(dir, p)
		if err != nil {
			return err
		}
		out[filepath.ToSlash(rel)] = diskEntry{mode: fi.Mode(), size: fi.Size(), mtime: fi.ModTime().UnixNano()}
		if fi.Mode().IsRegular() {
			total += fi.Size()
		}
		return nil
	})
	return out, total, err
}

// compareTarget reads the version's plan (entries only) and returns the
// target paths that differ from it: a file of another size or time, another
// type, a symlink to elsewhere, or a path the version lacks.
func compareTarget(ctx context.Context, c *remote.Client, dir string, version int64, disk map[string]diskEntry) (differ []string, why map[string]string, number int64, err error) {
	stream, err := c.RestorePlan(ctx, version)
	if err != nil {
		return nil, nil, 0, err
	}
	why = make(map[string]string)
	inVersion := make(map[string]bool, len(disk))
	for {
		msg, err := stream.Recv()
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			return nil, nil, 0, fmt.Errorf("restore plan: %w", err)
		}
		if v := msg.GetVersion(); v != nil && number == 0 {
			number = v.GetNumber()
		}
		for _, e := range msg.GetEntries() {
			p := e.GetPath()
			d, ok := disk[p]
			if !ok {
				continue // the restore adds it
			}
			inVersion[p] = true
			switch e.GetType() {
			case pb.EntryType_ENTRY_TYPE_DIRECTORY:
				if !d.mode.IsDir() {
					why[p] = "not a directory on disk"
				}
			case pb.EntryType_ENTRY_TYPE_SYMLINK:
				if d.mode&fs.ModeSymlink == 0 {
					why[p] = "not a symlink on disk"
				} else if t, err := os.Readlink(filepath.Join(dir, filepath.FromSlash(p))); err != nil || t != e.GetTarget() {
					why[p] = "points elsewhere"
				}
			default:
				switch {
				case !d.mode.IsRegular():
					why[p] = "not a file on disk"
				case d.size != e.GetSize() || d.mtime != e.GetMtimeNs():
					why[p] = "changed"
				}
			}
		}
	}
	for p := range disk {
		if !inVersion[p] {
			why[p] = "not in the version"
		}
	}
	for p := range why {
		differ = append(differ, p)
	}
	slices.Sort(differ)
	return differ, why, number, nil
}

// removeExtras removes the target paths the version lacks (a path inside
// one already removed is skipped).
func removeExtras(dir string, paths []string, why map[string]string) error {
	var removed []string
	for _, p := range paths { // sorted: a directory comes before its contents
		if why[p] != "not in the version" {
			continue
		}
		if n := len(removed); n > 0 && strings.HasPrefix(p, removed[n-1]+"/") {
			continue
		}
		full := filepath.Join(dir, filepath.FromSlash(p))
		makeWritable(full)
		if err := os.RemoveAll(full); err != nil {
			return fmt.Errorf("remove %s (not in the version): %w", p, err)
		}
		removed = append(removed, p)
	}
	return nil
}

// makeWritable gives the owner write access to every directory under path,
// so that RemoveAll can empty read-only directories.
func makeWritable(path string) {
	_ = filepath.WalkDir(path, func(p string, d fs.DirEntry, err error) error {
		if err == nil && d.IsDir() {
			if fi, err := d.Info(); err == nil {
				_ = os.Chmod(p, fi.Mode().Perm()|0o700)
			}
		}
		return nil
	})
}
