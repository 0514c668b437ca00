package agent

import (
	"slices"
	"time"
)

// pendingSet is the per-path debounce of the continuous agent. Every path
// the watcher reports is pending from then on; it becomes due once it has
// been quiet (no new report) for quiet, or cap after it was first reported
// if it keeps changing. A round syncs the due paths only, so a file being
// rewritten without pause delays nothing else: the others go out after
// their own quiet window, the busy one every cap.
//
// A full rescan (after a watcher overflow, an ignore-rule change, a restart
// or the safety-net timer) is one more pending item under the same rule.
//
// All times are given by the caller; pendingSet never reads the clock.
type pendingSet struct {
	quiet, cap time.Duration
	paths      map[string]pendingPath
	rescan     pendingPath // first is zero: no rescan pending
	bytes      int64       // sum of the paths' sizes
}

// pendingPath is one pending path: when it was first and last reported,
// and its size then (0 for what is not a regular file, or is gone).
type pendingPath struct {
	first, last time.Time
	size        int64
}

func newPendingSet(quiet, cap time.Duration) *pendingSet {
	return &pendingSet{quiet: quiet, cap: cap, paths: make(map[string]pendingPath)}
}

func (p pendingPath) dueAt(quiet, cap time.Duration) time.Time {
	q, c := p.last.Add(quiet), p.first.Add(cap)
	if c.Before(q) {
		return c
	}
	return q
}

// note records that path changed at now; size is its size as of now.
func (s *pendingSet) note(path string, now time.Time, size int64) {
	pp, ok := s.paths[path]
	if !ok {
		pp.first = now
	}
	pp.last = now
	s.set(path, pp, size)
}

func (s *pendingSet) set(path string, pp pendingPath, size int64) {
	s.bytes += size - s.paths[path].size
	pp.size = size
	s.paths[path] = pp
}

func (s *pendingSet) remove(path string) {
	s.bytes -= s.paths[path].size
	delete(s.paths, path)
}

// noteRescan records that the whole workspace must be scanned.
func (s *pendingSet) noteRescan(now time.Time) {
	if s.rescan.first.IsZero() {
		s.rescan.first = now
	}
	s.rescan.last = now
}

// noteRescanNow records that the whole workspace must be scanned at once,
// without waiting for a quiet window: at the agent's start there is no
// burst of reports to wait out, and the first sync should not wait. It is
// due as if its cap had run out.
func (s *pendingSet) noteRescanNow(now time.Time) {
	s.noteRescan(now)
	if due := now.Add(-s.cap); s.rescan.first.After(due) {
		s.rescan.first = due
	}
}

// empty reports whether nothing is pending.
func (s *pendingSet) empty() bool { return len(s.paths) == 0 && !s.rescanPending() }

func (s *pendingSet) rescanPending() bool { return !s.rescan.first.IsZero() }

// next is when the earliest pending item becomes due; ok is false when
// nothing is pending.
func (s *pendingSet) next() (at time.Time, ok bool) {
	if s.rescanPending() {
		at, ok = s.rescan.dueAt(s.quiet, s.cap), true
	}
	for _, pp := range s.paths {
		if d := pp.dueAt(s.quiet, s.cap); !ok || d.Before(at) {
			at, ok = d, true
		}
	}
	return at, ok
}

// due returns what a round at now should scan: rescan is true when a full
// rescan is due (then every pending path goes with it), else paths are the
// due paths, sorted.
func (s *pendingSet) due(now time.Time) (rescan bool, paths []string) {
	if s.rescanPending() && !s.rescan.dueAt(s.quiet, s.cap).After(now) {
		return true, nil
	}
	for p, pp := range s.paths {
		if !pp.dueAt(s.quiet, s.cap).After(now) {
			paths = append(paths, p)
		}
	}
	slices.Sort(paths)
	return false, paths
}

// all returns every pending path, sorted.
func (s *pendingSet) all() []string {
	out := make([]string, 0, len(s.paths))
	for p := range s.paths {
		out = append(out, p)
	}
	slices.Sort(out)
	return out
}

// settle records a successful round whose scan started at start and
// covered paths (every path, and the pending rescan, if full). A path
// reported again since start may have changed after the scan saw it: it
// stays pending, its cap counted from start, since the round captured it
// as of then at least.
func (s *pendingSet) settle(start time.Time, full bool, paths []string) {
	settle1 := func(p string) {
		pp, ok := s.paths[p]
		switch {
		case !ok:
		case pp.last.Before(start):
			s.remove(p)
		case pp.first.Before(start):
			pp.first = start
			s.paths[p] = pp
		}
	}
	if !full {
		for _, p := range paths {
			settle1(p)
		}
		return
	}
	for p := range s.paths {
		settle1(p)
	}
	switch {
	case !s.rescanPending():
	case s.rescan.last.Before(start):
		s.rescan = pendingPath{}
	case s.rescan.first.Before(start):
		s.rescan.first = start
	}
}

// retry marks paths (files that changed while being read) pending again.
func (s *pendingSet) retry(paths []string, now time.Time) {
	for _, p := range paths {
		s.set(p, pendingPath{first: now, last: now}, s.paths[p].size)
	}
}

// examples returns up to n pending paths, sorted (which ones, of more than
// n, is arbitrary).
func (s *pendingSet) examples(n int) []string {
	out := make([]string, 0, min(n, len(s.paths)))
	for p := range s.paths {
		if len(out) == n {
			break
		}
		out = append(out, p)
	}
	slices.Sort(out)
	return out
}

// pacer spaces rounds during a sustained burst of writes to many paths
// (npm install, tar x, git checkout), where the per-path rule alone would
// start a round the moment the previous one ends, committing a version
// every few tens of milliseconds. A round that starts within gap+quiet of
// the previous one's end is "busy": the gap before the next doubles (from
// quiet, up to cap); a round after a calmer spell resets it to zero. So
// isolated changes go out after their quiet window, and a 10 s burst makes
// about ten versions, not hundreds. Flushes ignore the pacer.
type pacer struct {
	quiet, cap time.Duration
	lastEnd    time.Time
	gap        time.Duration
}

// earliest is when the next round may start.
func (p *pacer) earliest() time.Time {
	if p.lastEnd.IsZero() {
		return time.Time{}
	}
	return p.lastEnd.Add(p.gap)
}

// done records a round that ran from start to end.
func (p *pacer) done(start, end time.Time) {
	if !p.lastEnd.IsZero() && start.Sub(p.lastEnd) <= p.gap+p.quiet {
		p.gap = min(max(2*p.gap, p.quiet), p.cap)
	} else {
		p.gap = 0
	}
	p.lastEnd = end
}
