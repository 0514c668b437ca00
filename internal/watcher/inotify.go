package watcher

import (
	"errors"
	"fmt"
	"io/fs"
	"syscall"

	"github.com/fsnotify/fsnotify"
)

// fileID identifies a directory: inotify watches inodes, not paths.
type fileID struct{ dev, ino uint64 }

// dirNode is a watched directory.
type dirNode struct {
	id   fileID
	kids map[string]struct{} // names of watched subdirectories
}

// runInotify handles kernel events until the context is done or the watcher
// falls back to polling (w.fsw is nil then).
func (w *Watcher) runInotify() {
	for w.fsw != nil {
		var err error
		select {
		case <-w.ctx.Done():
			return
		case ev, ok := <-w.fsw.Events:
			if !ok {
				err = errors.New("inotify event channel closed")
				break
			}
			err = w.handle(ev)
		case e, ok := <-w.fsw.Errors:
			if !ok {
				err = errors.New("inotify error channel closed")
				break
			}
			err = w.sourceError(e)
		case e := <-w.testErrs:
			err = w.sourceError(e)
		case <-w.resyncReq:
			if err = w.resync(); err == nil {
				w.reportRescan()
			}
		}
		switch {
		case err == nil:
		case w.ctx.Err() != nil:
			return
		case errors.Is(err, errNoWatches):
			w.fallBack(noWatchesReason(err))
		default:
			w.fallBack(err.Error())
		}
	}
}

// sourceError handles an error from the event source: events may have been
// lost (a queue overflow, most likely), and with them the creation of
// directories that now lack a watch. Re-walk the tree, then ask for a
// rescan.
func (w *Watcher) sourceError(err error) error {
	w.overflows.Add(1)
	if errors.Is(err, fsnotify.ErrEventOverflow) {
		w.log.Warn("watcher: inotify event queue overflowed; rescanning the workspace "+
			"(raise fs.inotify.max_queued_events on the host if this repeats)", "root", w.root)
	} else {
		w.log.Warn("watcher: inotify error; rescanning the workspace", "err", err, "root", w.root)
	}
	if err := w.resync(); err != nil {
		return err
	}
	w.reportRescan()
	return nil
}

// handle turns one kernel event into reported paths and watch changes.
func (w *Watcher) handle(ev fsnotify.Event) error {
	rel, ok := w.rel(ev.Name)
	if !ok {
		return nil
	}
	structural := ev.Has(fsnotify.Create) || ev.Has(fsnotify.Remove) || ev.Has(fsnotify.Rename)
	if rel == "." {
		if ev.Has(fsnotify.Remove) || ev.Has(fsnotify.Rename) {
			return errors.New("the workspace root was removed or moved")
		}
		w.report(".")
		return nil
	}
	parent := parentOf(rel)
	if _, ok := w.dirs[parent]; !ok {
		// From a watch that was just dropped: its directory moved away
		// (the new place is being or was scanned), was removed, or became
		// ignored. The path is stale.
		return nil
	}
	_, isDir := w.dirs[rel]
	fi, lerr := w.lstat(rel)
	if lerr == nil {
		isDir = fi.IsDir()
	}
	if w.ignored(rel, isDir) {
		return nil
	}
	w.report(rel)
	if structural {
		w.report(parent)
	}
	if ev.Has(fsnotify.Remove) || ev.Has(fsnotify.Rename) {
		// Whatever is at rel now, the watches we hold for it are stale.
		// If a directory is there again, a Create follows and re-adds them.
		w.unwatchTree(rel)
	}
	if ev.Has(fsnotify.Create) && lerr == nil && fi.IsDir() {
		// A new directory (mkdir, or moved in): things may have been
		// created in it before its watch existed. Watch, then list.
		return w.scan(rel, true, nil)
	}
	return nil
}

// scan watches the directory rel and, recursively, every directory below it
// that is not ignored; each directory is watched before it is listed, so a
// change inside it is either seen by the listing or reported by the watch.
// With report it reports every entry found. With seen it records the
// directories visited. It returns errNoWatches (wrapped) when inotify is out
// of watches, the context's error when cancelled, nil otherwise: problems
// with single directories are logged and skipped.
func (w *Watcher) scan(rel string, report bool, seen map[string]struct{}) error {
	if err := w.ctx.Err(); err != nil {
		return err
	}
	fi, err := w.lstat(rel)
	if err != nil || !fi.IsDir() {
		return nil // gone or replaced already: its parent's events say so
	}
	id, _ := statOf(fi)
	if err := w.watch(rel, id); err != nil {
		if errors.Is(err, errNoWatches) {
			return err
		}
		if errors.Is(err, fs.ErrNotExist) || errors.Is(err, syscall.ENOTDIR) {
			return nil
		}
		if rel == "." {
			return fmt.Errorf("cannot watch the workspace root: %w", err)
		}
		w.log.Warn("watcher: cannot watch a directory; changes inside it are seen only by full scans",
			"dir", rel, "err", err)
	}
	if seen != nil {
		seen[rel] = struct{}{}
	}
	ents, err := readDir(w.abs(rel))
	if err != nil && len(ents) == 0 {
		if !errors.Is(err, fs.ErrNotExist) && !errors.Is(err, syscall.ENOTDIR) {
			w.log.Warn("watcher: cannot list a directory", "dir", rel, "err", err)
		}
		return nil
	}
	for _, e := range ents {
		crel := join(rel, e.Name())
		isDir := e.IsDir()
		if w.ignored(crel, isDir) {
			continue
		}
		if report {
			w.report(crel)
		}
		if isDir {
			if err := w.scan(crel, report, seen); err != nil {
				return err
			}
		}
	}
	return nil
}

// watch makes sure the directory rel, of identity id, has a watch.
func (w *Watcher) watch(rel string, id fileID) error {
	if n, ok := w.dirs[rel]; ok {
		if n.id == id {
			return nil
		}
		// Another directory used to be here: its watches are stale.
		w.unwatchTree(rel)
	}
	if id != (fileID{}) {
		if old, ok := w.byID[id]; ok {
			// The same directory under another name: it was moved and we
			// have not seen the event yet. inotify would hand back the old
			// watch (reporting the old name): drop it first.
			w.unwatchTree(old)
		}
	}
	if err := w.hooks.addWatch(w.fsw, w.abs(rel)); err != nil {
		if errors.Is(err, syscall.ENOSPC) || errors.Is(err, syscall.EMFILE) {
			return fmt.Errorf("%w: %w", errNoWatches, err)
		}
		return err
	}
	w.dirs[rel] = &dirNode{id: id}
	if id != (fileID{}) {
		w.byID[id] = rel
	}
	if rel != "." {
		if p, ok := w.dirs[parentOf(rel)]; ok {
			if p.kids == nil {
				p.kids = make(map[string]struct{})
			}
			p.kids[baseName(rel)] = struct{}{}
		}
	}
	w.nDirs.Store(int64(len(w.dirs)))
	return nil
}

// unwatchTree drops the watches of rel and every watched directory below it.
func (w *Watcher) unwatchTree(rel string) {
	n, ok := w.dirs[rel]
	if !ok {
		return
	}
	for kid := range n.kids {
		w.unwatchTree(join(rel, kid))
	}
	// The kernel may have dropped the watch already (directory deleted,
	// or moved: fsnotify drops moved watches itself); errors don't matter.
	_ = w.fsw.Remove(w.abs(rel))
	delete(w.dirs, rel)
	if w.byID[n.id] == rel {
		delete(w.byID, n.id)
	}
	if rel != "." {
		if p, ok := w.dirs[parentOf(rel)]; ok {
			delete(p.kids, baseName(rel))
		}
	}
	w.nDirs.Store(int64(len(w.dirs)))
}

// resync re-walks the whole tree: watches directories that lack one (their
// creation event was lost, or they were ignored until now) and drops the
// watches of directories that are gone or ignored now.
func (w *Watcher) resync() error {
	seen := make(map[string]struct{}, len(w.dirs))
	if err := w.scan(".", false, seen); err != nil {
		return err
	}
	if _, ok := seen["."]; !ok {
		return errors.New("the workspace root is gone")
	}
	for rel := range w.dirs {
		if _, ok := seen[rel]; !ok {
			w.unwatchTree(rel)
		}
	}
	return nil
}

func baseName(rel string) string {
	for i := len(rel) - 1; i >= 0; i-- {
		if rel[i] == '/' {
			return rel[i+1:]
		}
	}
	return rel
}
