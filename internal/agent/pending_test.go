package agent

import (
	"fmt"
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

// simulateRounds runs the agent's round scheduling (pendingSet + pacer) in
// virtual time: writes is when each path is written (ms), a round takes
// roundMs. It returns the round start times (ms) and the time the last
// path was settled.
func simulateRounds(t *testing.T, writes map[string][]int, roundMs int) (rounds []int, lastSettled int) {
	t.Helper()
	const quiet, cap = 250 * time.Millisecond, 2 * time.Second
	t0 := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	at := func(ms int) time.Time { return t0.Add(time.Duration(ms) * time.Millisecond) }
	type ev struct {
		ms   int
		path string
	}
	var evs []ev
	end := 0
	for p, ms := range writes {
		for _, m := range ms {
			evs = append(evs, ev{m, p})
			end = max(end, m)
		}
	}
	slices.SortFunc(evs, func(a, b ev) int { return a.ms - b.ms })
	s := newPendingSet(quiet, cap)
	pc := pacer{quiet: quiet, cap: cap}
	i := 0
	for now := 0; now <= end+10_000; now++ {
		for i < len(evs) && evs[i].ms <= now {
			s.note(evs[i].path, at(evs[i].ms), 0)
			i++
		}
		next, ok := s.next()
		if !ok {
			continue
		}
		if e := pc.earliest(); e.After(next) {
			next = e
		}
		if next.After(at(now)) {
			continue
		}
		full, paths := s.due(at(now))
		rounds = append(rounds, now)
		// Writes during the round are noted before it settles.
		for i < len(evs) && evs[i].ms < now+roundMs {
			s.note(evs[i].path, at(evs[i].ms), 0)
			i++
		}
		s.settle(at(now), full, paths)
		pc.done(at(now), at(now+roundMs))
		if s.empty() {
			lastSettled = now
		}
		now += roundMs
	}
	if !s.empty() {
		t.Fatalf("paths left pending: %q", s.all())
	}
	return rounds, lastSettled
}

func TestRoundPacing(t *testing.T) {
	t.Run("a 10 s burst of new files makes about ten rounds", func(t *testing.T) {
		w := make(map[string][]int)
		for ms := range 10_000 {
			w[fmt.Sprintf("node_modules/p%05d", ms)] = []int{ms}
		}
		rounds, last := simulateRounds(t, w, 20)
		t.Logf("%d rounds, at %v ms; last write settled at %d ms", len(rounds), rounds, last)
		if len(rounds) > 15 {
			t.Errorf("%d rounds for a 10 s burst (at %v ms), want about ten", len(rounds), rounds)
		}
		if last > 10_000+2_500 {
			t.Errorf("the last write was settled at %d ms, more than the cap after the burst", last)
		}
	})
	t.Run("isolated changes each go out after the quiet window", func(t *testing.T) {
		w := map[string][]int{}
		for i := range 20 {
			w[fmt.Sprintf("f%02d", i)] = []int{i * 1000}
		}
		rounds, _ := simulateRounds(t, w, 30)
		if len(rounds) != 20 {
			t.Fatalf("%d rounds, want 20", len(rounds))
		}
		for i, r := range rounds {
			if r != i*1000+250 {
				t.Errorf("change %d went out at %d ms, want %d", i, r, i*1000+250)
			}
		}
	})
	t.Run("a busy log does not hold back another file", func(t *testing.T) {
		var log []int
		for ms := 0; ms < 6000; ms += 50 {
			log = append(log, ms)
		}
		rounds, _ := simulateRounds(t, map[string][]int{"app.log": log, "main.go": {3100}}, 20)
		if !slices.Contains(rounds, 3350) {
			t.Errorf("main.go (written at 3100 ms) not synced at 3350 ms: rounds at %v", rounds)
		}
	})
}

// TestPendingSetRescanNow checks the start's rescan: due at once, not after
// the quiet window a noted rescan waits; a report during its round keeps a
// rescan pending, which then waits its quiet window again.
func TestPendingSetRescanNow(t *testing.T) {
	const quiet, cap = 250 * time.Millisecond, 2 * time.Second
	t0 := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	at := func(ms int) time.Time { return t0.Add(time.Duration(ms) * time.Millisecond) }

	waits := newPendingSet(quiet, cap)
	waits.noteRescan(at(0))
	if next, _ := waits.next(); !next.Equal(at(250)) {
		t.Fatalf("a noted rescan is due at %v, want the quiet window", next.Sub(t0))
	}

	s := newPendingSet(quiet, cap)
	s.noteRescanNow(at(0))
	if next, ok := s.next(); !ok || !next.Equal(at(0)) {
		t.Fatalf("the start's rescan is due at %v (%v), want at once", next.Sub(t0), ok)
	}
	if full, _ := s.due(at(0)); !full {
		t.Fatal("the start's rescan is not due at once")
	}
	// The round starts at 0; the watcher asks for a rescan at 100 ms.
	s.noteRescan(at(100))
	s.settle(at(0), true, nil)
	if !s.rescanPending() {
		t.Fatal("a rescan asked during the round was dropped")
	}
	if next, _ := s.next(); !next.Equal(at(350)) {
		t.Errorf("the rescan asked during the round is due at %v, want its quiet window (350 ms)", next.Sub(t0))
	}
}
