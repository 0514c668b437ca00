package sqlitestore

import (
	"testing"
	"time"
)

// TestTimeTextFormatsEachInstant checks that the memo of UpsertFiles gives
// fmtTime's text for every time, whether it repeats, changes, or comes back
// in another zone.
func TestTimeTextFormatsEachInstant(t *testing.T) {
	t0 := time.Date(2026, 12, 7, 1, 2, 3, 456789000, time.UTC)
	paris := time.FixedZone("CET", 3600)
	var c timeText
	for i, tm := range []time.Time{
		t0, t0, // repeated
		t0.In(paris),                // the same instant elsewhere
		t0.Add(time.Microsecond),    // the next one
		t0,                          // and back
		{},                          // the zero time
		t0.Add(-24 * time.Hour * 3), // another day
	} {
		if got, want := c.of(tm), fmtTime(tm); got != want {
			t.Errorf("%d: of(%v) = %q, want %q", i, tm, got, want)
		}
	}
}
