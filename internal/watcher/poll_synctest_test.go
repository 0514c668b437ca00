package watcher

import (
	"context"
	"os"
	"path/filepath"
	"slices"
	"testing"
	"testing/synctest"
	"time"
)

// TestPollIntervalSynctest checks polling's timing on a fake clock: a
// change is reported at the first walk after it, never before, and walks are
// spaced by the interval counted from the end of the previous one. Polling
// only lstats and reads directories (no inotify descriptor a bubble cannot
// see through), so testing/synctest's clock drives it exactly; inotify mode
// and the real-time tests above cover the rest.
func TestPollIntervalSynctest(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		root := t.TempDir()
		const every = time.Minute // fake time: costs nothing
		w, err := New(context.Background(), Options{Root: root, ForcePoll: true, PollInterval: every, Logger: quietLogger()})
		if err != nil {
			t.Fatal(err)
		}
		defer w.Close()

		// drain takes every batch the watcher has ready once all its
		// goroutines are idle (a walk's reports may go out in more than one
		// batch: the sender takes what is there whenever it can).
		drain := func() []string {
			var got []string
			for {
				synctest.Wait()
				select {
				case ev := <-w.Events():
					got = append(got, ev.Paths...)
				default:
					slices.Sort(got)
					return slices.Compact(got)
				}
			}
		}

		// Nothing changed: three intervals and a half pass without an event.
		time.Sleep(3*every + every/2)
		if got := drain(); len(got) != 0 {
			t.Fatalf("reported %v with nothing changed", got)
		}

		// A file written now is seen at the next walk (at 4 intervals), not
		// a nanosecond earlier.
		if err := os.WriteFile(filepath.Join(root, "a.txt"), []byte("x"), 0o644); err != nil {
			t.Fatal(err)
		}
		time.Sleep(every/2 - time.Nanosecond)
		if got := drain(); len(got) != 0 {
			t.Fatalf("reported %v before the next walk", got)
		}
		time.Sleep(time.Nanosecond)
		if got, want := drain(), []string{".", "a.txt"}; !slices.Equal(got, want) {
			t.Fatalf("at the walk: reported %v, want %v", got, want)
		}

		// A removal likewise: seen one whole interval later, not before.
		if err := os.Remove(filepath.Join(root, "a.txt")); err != nil {
			t.Fatal(err)
		}
		time.Sleep(every - time.Nanosecond)
		if got := drain(); len(got) != 0 {
			t.Fatalf("reported %v before the next walk", got)
		}
		time.Sleep(time.Nanosecond)
		if got, want := drain(), []string{".", "a.txt"}; !slices.Equal(got, want) {
			t.Fatalf("at the walk: reported %v, want %v", got, want)
		}
	})
}
