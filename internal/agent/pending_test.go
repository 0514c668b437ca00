package agent

import (
	"slices"
	"testing"
	"time"
)

func TestPendingSetDebouncePerPath(t *testing.T) {
	const quiet, cap = 250 * time.Millisecond, 2 * time.Second
	t0 := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	at := func(ms int) time.Time { return t0.Add(time.Duration(ms) * time.Millisecond) }

	type note struct {
		ms   int
		path string
		size int64
	}
	tests := []struct {
		name      string
		notes     []note
		rescanAt  int // ms; -1: none
		checkAt   int
		wantNext  int // ms of the first due time
		wantDue   []string
		wantFull  bool
		wantBytes int64
	}{
		{
			name:     "one write is due after the quiet window",
			notes:    []note{{0, "a", 10}},
			rescanAt: -1, checkAt: 249, wantNext: 250, wantDue: nil, wantBytes: 10,
		},
		{
			name:     "due at the quiet window",
			notes:    []note{{0, "a", 10}},
			rescanAt: -1, checkAt: 250, wantNext: 250, wantDue: []string{"a"}, wantBytes: 10,
		},
		{
			name: "a busy path does not hold back a quiet one",
			// "hot" is written every 100 ms; "cold" once at 300 ms.
			notes: []note{
				{0, "hot", 1}, {100, "hot", 2}, {200, "hot", 3}, {300, "hot", 4}, {300, "cold", 5},
				{400, "hot", 6}, {500, "hot", 7},
			},
			rescanAt: -1, checkAt: 550, wantNext: 550, wantDue: []string{"cold"}, wantBytes: 7 + 5,
		},
		{
			name: "a path that keeps changing is due at the cap",
			notes: func() []note {
				var n []note
				for ms := 0; ms <= 2000; ms += 100 {
					n = append(n, note{ms, "hot", int64(ms)})
				}
				return n
			}(),
			rescanAt: -1, checkAt: 2000, wantNext: 2000, wantDue: []string{"hot"}, wantBytes: 2000,
		},
		{
			name:     "a due rescan takes everything",
			notes:    []note{{0, "a", 1}, {100, "b", 2}},
			rescanAt: 50, checkAt: 300, wantNext: 250, wantFull: true, wantBytes: 3,
		},
		{
			name:     "a rescan not due yet leaves the due paths alone",
			notes:    []note{{0, "a", 1}},
			rescanAt: 200, checkAt: 260, wantNext: 250, wantDue: []string{"a"}, wantBytes: 1,
		},
		{
			name:     "sizes are replaced, not added",
			notes:    []note{{0, "a", 100}, {10, "a", 40}},
			rescanAt: -1, checkAt: 0, wantNext: 260, wantBytes: 40,
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			s := newPendingSet(quiet, cap)
			for _, n := range tt.notes {
				s.note(n.path, at(n.ms), n.size)
			}
			if tt.rescanAt >= 0 {
				s.noteRescan(at(tt.rescanAt))
			}
			next, ok := s.next()
			if !ok || !next.Equal(at(tt.wantNext)) {
				t.Errorf("next = %v, %v; want %v", next.Sub(t0), ok, time.Duration(tt.wantNext)*time.Millisecond)
			}
			full, due := s.due(at(tt.checkAt))
			if full != tt.wantFull || !slices.Equal(due, tt.wantDue) {
				t.Errorf("due(%d ms) = %v, %q; want %v, %q", tt.checkAt, full, due, tt.wantFull, tt.wantDue)
			}
			if s.bytes != tt.wantBytes {
				t.Errorf("bytes = %d, want %d", s.bytes, tt.wantBytes)
			}
		})
	}
}

func TestPendingSetSettle(t *testing.T) {
	const quiet, cap = 250 * time.Millisecond, 2 * time.Second
	t0 := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	at := func(ms int) time.Time { return t0.Add(time.Duration(ms) * time.Millisecond) }

	s := newPendingSet(quiet, cap)
	if !s.empty() {
		t.Fatal("new set not empty")
	}
	if _, ok := s.next(); ok {
		t.Fatal("next on an empty set")
	}
	s.note("a", at(0), 1)
	s.note("b", at(0), 2)
	s.note("c", at(0), 4)
	// A round scans a and b starting at 300 ms; b is written again at
	// 310 ms, during the round.
	s.note("b", at(310), 8)
	s.settle(at(300), false, []string{"a", "b"})
	if got := s.all(); !slices.Equal(got, []string{"b", "c"}) {
		t.Fatalf("after settle: pending %q, want b (changed during the round) and c (not scanned)", got)
	}
	if s.bytes != 8+4 {
		t.Errorf("bytes = %d, want 12", s.bytes)
	}
	// b's cap now counts from the round's start, so a path that keeps
	// changing is not due again at once.
	if pp := s.paths["b"]; !pp.first.Equal(at(300)) {
		t.Errorf("b first = %v, want the round's start", pp.first.Sub(t0))
	}
	// Files that changed while read come back as new.
	s.retry([]string{"d"}, at(400))
	if _, ok := s.paths["d"]; !ok {
		t.Error("retry did not make d pending")
	}
	// A full round started after every report clears everything.
	s.noteRescan(at(350))
	s.settle(at(500), true, nil)
	if !s.empty() || s.bytes != 0 {
		t.Errorf("after a full round: pending %q, rescan %v, bytes %d", s.all(), s.rescanPending(), s.bytes)
	}
	// A rescan asked during a full round stays pending.
	s.noteRescan(at(640))
	s.note("e", at(650), 1)
	s.settle(at(620), true, nil)
	if !s.rescanPending() || len(s.paths) != 1 {
		t.Errorf("rescan and path reported after the round started were dropped: %v %q", s.rescanPending(), s.all())
	}
	if ex := s.examples(10); !slices.Equal(ex, []string{"e"}) {
		t.Errorf("examples = %q", ex)
	}
}
