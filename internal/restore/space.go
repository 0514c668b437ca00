package restore

import (
	"errors"
	"fmt"

	"golang.org/x/sys/unix"

	"github.com/sandkeep/sandkeep/internal/progress"
)

// ErrNoSpace: the target's file system has less free space than the version
// needs. Nothing was written.
var ErrNoSpace = errors.New("not enough free space for the restore")

// SpaceError says what a restore needed and what was free.
type SpaceError struct {
	Dir     string
	Version int64
	Need    int64 // bytes the version's files hold, less what the target holds already
	Free    int64 // bytes free for an unprivileged user on the target's file system
}

func (e *SpaceError) Error() string {
	return fmt.Sprintf("%v: version %d needs %s in %s, the file system has %s free; free space or restore elsewhere (nothing was written)",
		ErrNoSpace, e.Version, progress.Bytes(e.Need), e.Dir, progress.Bytes(e.Free))
}

func (e *SpaceError) Unwrap() error { return ErrNoSpace }

// freeSpace returns the bytes an unprivileged user may still write in dir.
func freeSpace(dir string) (int64, error) {
	var st unix.Statfs_t
	if err := unix.Statfs(dir, &st); err != nil {
		return 0, fmt.Errorf("statfs %s: %w", dir, err)
	}
	free := uint64(st.Bavail) * uint64(st.Bsize) //nolint:unconvert // field types differ by OS
	if free > 1<<62 {
		free = 1 << 62
	}
	return int64(free), nil
}

// checkSpace refuses a version whose files need more than the target's free
// space (plus what the target holds already, which the restore reuses or
// replaces). A small margin covers directories and block rounding.
func (r *runner) checkSpace(version int64, bytes int64) error {
	if r.opts.SkipSpaceCheck {
		return nil
	}
	free, err := freeSpace(r.opts.Workspace)
	if err != nil {
		r.log.Warn("cannot check free space; restoring anyway", "err", err)
		return nil
	}
	need := bytes - r.opts.ExistingBytes
	if need <= 0 {
		return nil
	}
	if need+need/64 > free {
		return &SpaceError{Dir: r.opts.Workspace, Version: version, Need: need, Free: free}
	}
	return nil
}
