package agent

import (
	"fmt"
	"testing"

	"github.com/sandkeep/sandkeep/internal/watcher"
)

// TestTapEventsDuringARound: the loop does not read the watcher while a
// round runs, so a write just before a flush may be reported only then;
// the tap must mark the status not clean at once (TestRunCoordinatorUnreachable
// saw clean=true during a flush stuck on an unreachable coordinator) and
// hand the events to the loop afterwards. A round that sees no event
// leaves the status clean (the lifecycle reads a not-clean heartbeat as a
// change since its flush).
func TestTapEventsDuringARound(t *testing.T) {
	ev := func(paths ...string) watcher.Event { return watcher.Event{Paths: paths} }
	for _, tc := range []struct {
		name      string
		events    []watcher.Event
		close     bool
		wantClean bool
		want      []watcher.Event
	}{
		{name: "no event", wantClean: true},
		{name: "a write", events: []watcher.Event{ev("a.txt")}, want: []watcher.Event{ev("a.txt")}},
		{name: "two batches", events: []watcher.Event{ev("a", "b"), ev("c")}, want: []watcher.Event{ev("a", "b"), ev("c")}},
		{name: "a rescan", events: []watcher.Event{ev("a"), {Rescan: true}, ev("b")}, want: []watcher.Event{{Rescan: true}}},
		{name: "closed", events: []watcher.Event{ev("a")}, close: true, want: []watcher.Event{ev("a")}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			r := &runner{kick: make(chan struct{}, 1)}
			r.status.Clean = true
			ch := make(chan watcher.Event) // unbuffered: each send is read by the tap
			untap := r.tapEvents(ch)
			for _, e := range tc.events {
				ch <- e
			}
			if tc.close {
				close(ch)
			}
			got := untap()
			if st := r.Status(); st.Clean != tc.wantClean {
				t.Errorf("clean=%v after %d events, want %v", st.Clean, len(tc.events), tc.wantClean)
			}
			if fmt.Sprint(got) != fmt.Sprint(tc.want) {
				t.Errorf("events handed back: %v, want %v", got, tc.want)
			}
			if !tc.wantClean && len(r.kick) == 0 {
				t.Error("no heartbeat asked for when the status turned not clean")
			}
		})
	}
}

func TestTapEventsFoldsManyPathsIntoARescan(t *testing.T) {
	r := &runner{kick: make(chan struct{}, 1)}
	ch := make(chan watcher.Event)
	untap := r.tapEvents(ch)
	for i := range tapMaxPaths/100 + 1 {
		paths := make([]string, 100)
		for j := range paths {
			paths[j] = fmt.Sprintf("d%d/f%d", i, j)
		}
		ch <- watcher.Event{Paths: paths}
	}
	got := untap()
	if len(got) != 1 || !got[0].Rescan {
		t.Fatalf("after %d paths: %d events (first rescan=%v), want one rescan", tapMaxPaths+100, len(got), len(got) > 0 && got[0].Rescan)
	}
	if st := r.Status(); st.Clean || st.PendingPaths != tapMaxPaths+100 {
		t.Fatalf("status: clean=%v pending=%d", st.Clean, st.PendingPaths)
	}
}
