// Package watcher tells the agent which paths of the workspace may have
// changed. It watches the whole tree with inotify (through fsnotify, one watch
// per directory) or, where that is impossible, by polling: a periodic lstat
// walk compared with the previous one.
//
// # What it reports
//
// An [Event] is a batch of relative, slash-separated paths that may have
// changed, or Rescan, meaning anything may have changed. A file path means
// "lstat it again"; a directory path means "its listing (or its own
// metadata) may have changed". For a created, removed or renamed entry the
// entry and its parent directory are both reported. Events are hints, never
// facts: a reported path may turn out unchanged, may no longer exist, or may
// even be reported under a name it had a moment ago. The consumer's truth is
// lstat against its own index.
//
// # What it guarantees
//
//   - No lost change while it runs: every change to a path that is not
//     ignored, made after New returns, is eventually covered by an Event that
//     the consumer receives after the change happened — the path itself, its
//     parent directory, an ancestor directory the consumer is told to rescan
//     (a newly created directory: every entry found inside it is reported
//     too), or a Rescan. This holds across the hard cases: files created in a
//     directory before its watch existed (mkdir -p a/b/c && echo x > a/b/c/f
//     reports a/b/c/f: every new directory is watched first and listed right
//     after), directories moved in, out and around (stale watches are
//     dropped, moved-in trees are watched and listed), kernel queue
//     overflows, running out of inotify watches, and ignore rules changing.
//   - Bounded memory: pending paths are coalesced while the consumer is slow;
//     beyond Options.MaxPending distinct paths they collapse into one Rescan.
//     Polling keeps one small record per path.
//   - Graceful degradation: no inotify (NewWatcher fails), too few watches
//     (ENOSPC or EMFILE adding one) or the workspace root itself removed or
//     moved switch the watcher to polling for the whole tree, for the rest of
//     its life; Status says why, the log warns (with the sysctl to raise), and
//     the consumer gets a Rescan.
//   - The reader of kernel events is never blocked by the consumer; only the
//     goroutine delivering batches waits for it.
//   - Ignored paths are never watched (Ignore is applied before a watch is
//     added) and, but for the rare removal of an ignored entry whose kind can
//     no longer be told, never reported.
//   - Symlinks are never followed; the root itself may be a symlink.
//
// # What it does not guarantee
//
//   - What changed, or how: no old/new names for renames, no ordering
//     between paths, no distinction between create and modify.
//   - Changes made before New returns: the consumer scans the tree once
//     after New (or on the first Rescan).
//   - Perfection: inotify has corner cases (bind mounts showing one
//     directory at two paths, unmounts inside the tree, directories the agent
//     may not read, a race that outruns both an event and a listing). The
//     consumer's slow periodic full scan is the safety net, as the design
//     says.
//   - Timeliness in polling mode: a change is seen on the next walk, at most
//     one PollInterval plus the walk's duration later; a change that is
//     undone within one interval (same size, mtime, ctime, inode and mode)
//     is not seen at all, which is harmless.
//
// Debouncing is the consumer's job.
package watcher
