package agent

import "testing"

// TestStatusNotCleanDuringARound: the watcher's events are read between
// rounds, so a write made just before a flush may not be pending yet when
// the round starts; until the round ends the status must not say clean
// (TestRunCoordinatorUnreachable saw clean=true during a stuck flush).
func TestStatusNotCleanDuringARound(t *testing.T) {
	for _, tc := range []struct {
		state string
		clean bool
	}{
		{"idle", true},
		{"syncing", false},
		{"restoring", false},
		{"stopping", false},
	} {
		r := &runner{kick: make(chan struct{}, 1)}
		r.status.Clean = true
		r.setState(tc.state)
		if got := r.Status().Clean; got != tc.clean {
			t.Errorf("after setState(%q): clean=%v, want %v", tc.state, got, tc.clean)
		}
	}
}
