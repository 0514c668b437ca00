package watcher

import (
	"time"
)

// pollRec is what polling remembers of a path: a change of any field is a
// change of the path.
type pollRec struct {
	size  int64
	mtime int64 // ns
	ctime int64 // ns; catches chmod, chown, link count, and same-mtime rewrites
	ino   uint64
	mode  uint32 // fs.FileMode: type and permission bits
}

// startPolling switches to polling mode and takes the first snapshot.
func (w *Watcher) startPolling(reason string) {
	w.polls, _ = w.walk(nil)
	w.nPolled.Store(int64(len(w.polls)))
	w.setMode(ModePoll, reason)
}

// runPoll walks the tree every interval (counted from the end of the
// previous walk, so slow walks never pile up) until the context is done.
func (w *Watcher) runPoll() {
	t := time.NewTimer(w.every)
	defer t.Stop()
	for {
		select {
		case <-w.ctx.Done():
			return
		case <-t.C:
			cur, ok := w.walk(w.polls)
			if !ok {
				return
			}
			w.polls = cur
			w.nPolled.Store(int64(len(cur)))
			t.Reset(w.every)
		case <-w.resyncReq:
			// New ignore rules: a diff against the old snapshot would
			// report newly ignored paths as removed. Re-take it, then
			// ask for a rescan.
			cur, ok := w.walk(nil)
			if !ok {
				return
			}
			w.polls = cur
			w.nPolled.Store(int64(len(cur)))
			w.reportRescan()
		case err := <-w.testErrs:
			w.log.Warn("watcher: error ignored in polling mode", "err", err)
		}
	}
}

// walk lstats every path that is not ignored. With a previous snapshot it
// reports what differs: new paths and removed ones (with their parent
// directory) and changed ones. It consumes prev. ok is false when the
// context was cancelled during the walk.
func (w *Watcher) walk(prev map[string]pollRec) (cur map[string]pollRec, ok bool) {
	cur = make(map[string]pollRec, len(prev))
	if fi, err := w.lstat("."); err == nil && fi.IsDir() {
		_, rec := statOf(fi)
		w.note(prev, cur, ".", rec)
		if !w.walkDir(".", prev, cur) {
			return nil, false
		}
	}
	for rel := range prev { // not seen this time: removed (or ignored now)
		w.report(rel)
		if rel != "." {
			w.report(parentOf(rel))
		}
	}
	return cur, true
}

func (w *Watcher) walkDir(rel string, prev, cur map[string]pollRec) bool {
	if w.ctx.Err() != nil {
		return false
	}
	ents, _ := readDir(w.abs(rel)) // unreadable or gone: its entries count as removed
	for _, e := range ents {
		crel := join(rel, e.Name())
		isDir := e.IsDir()
		if w.ignored(crel, isDir) {
			continue
		}
		fi, err := e.Info() // lstat
		if err != nil {
			continue // gone since the listing
		}
		_, rec := statOf(fi)
		w.note(prev, cur, crel, rec)
		if fi.IsDir() {
			if !w.walkDir(crel, prev, cur) {
				return false
			}
		}
	}
	return true
}

// note records rel in the new snapshot and reports it if it is new or
// changed.
func (w *Watcher) note(prev, cur map[string]pollRec, rel string, rec pollRec) {
	cur[rel] = rec
	if prev == nil {
		return
	}
	old, ok := prev[rel]
	if !ok {
		w.report(rel)
		if rel != "." {
			w.report(parentOf(rel))
		}
		return
	}
	delete(prev, rel)
	if old != rec {
		w.report(rel)
	}
}
