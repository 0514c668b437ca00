package agentcli

import (
	"math"
	"runtime"
	"runtime/debug"
	"testing"
)

func TestTrimmerTrimsOnceQuietAfterABurst(t *testing.T) {
	const MiB = 1 << 20
	tr := newTrimmer()
	tr.gcPercent = 50
	var alloc uint64 = 10 * MiB
	step := func(allocated uint64) bool {
		alloc += allocated
		return tr.due(alloc)
	}
	if step(0) {
		t.Fatal("trimmed on the first reading")
	}
	// A burst: busy, no trim.
	for range 5 {
		if step(50 * MiB) {
			t.Fatal("trimmed while busy")
		}
	}
	// Quiet after it: trim, once.
	if !step(100 << 10) {
		t.Fatal("no trim when quiet after a burst")
	}
	tr.trimmed(alloc, 40*MiB, 21*MiB)
	if tr.after != trimAfter {
		t.Fatalf("after a useful trim the threshold is %d", tr.after)
	}
	if step(100 << 10) {
		t.Fatal("trimmed again without allocating since")
	}
	// The end of the sync (a little allocation, then quiet): trim again.
	if step(5 * MiB) {
		t.Fatal("trimmed while busy")
	}
	if !step(100 << 10) {
		t.Fatal("no trim after the rest of a burst")
	}
	tr.trimmed(alloc, 30*MiB, 13*MiB)

	// Idle: a trim that gives back no more than the garbage the
	// collector's pacing allows (live 20 MiB, GOGC 50: up to 10 MiB)
	// doubles the allocation needed for the next one, up to trimAfterMax.
	trims := 0
	for range 20000 {
		if step(512 << 10) {
			trims++
			since := min(alloc-tr.trimAlloc, 10*MiB)
			tr.trimmed(alloc, 20*MiB+since, 20*MiB)
		}
	}
	if tr.after != trimAfterMax {
		t.Fatalf("threshold %d after useless trims, want %d", tr.after, trimAfterMax)
	}
	// 20000 periods of 512 KiB: 10000 MiB allocated, trimmed after 4, 8,
	// …, 256 MiB, then every 256 MiB.
	if trims > 7+int(math.Ceil(10000/256.0)) {
		t.Fatalf("%d trims while idle", trims)
	}
	// A useful trim brings the threshold back.
	step(300 * MiB)
	if !step(0) {
		t.Fatal("no trim after a new burst")
	}
	tr.trimmed(alloc, 60*MiB, 14*MiB)
	if tr.after != trimAfter {
		t.Fatalf("threshold %d after a useful trim", tr.after)
	}
}

func TestTrimmerUseful(t *testing.T) {
	const MiB = 1 << 20
	for _, tc := range []struct {
		name                string
		gogc, before, after uint64
		want                bool
	}{
		{"after a burst", 50, 52 * MiB, 21 * MiB, true},
		{"idle garbage within the heap goal", 50, 30 * MiB, 20 * MiB, false},
		{"small heap, a few MiB of garbage", 50, 10 * MiB, 4 * MiB, false},
		{"small heap after a burst", 50, 40 * MiB, 4 * MiB, true},
		{"GOGC 100 allows more garbage", 100, 38 * MiB, 20 * MiB, false},
		{"GOGC 100, after a burst", 100, 44 * MiB, 20 * MiB, true},
		{"nothing given back", 50, 20 * MiB, 20 * MiB, false},
		{"GOGC off (a huge percent, taken as 1000)", ^uint64(0), 200 * MiB, 20 * MiB, false},
		{"GOGC off, after a very large burst", ^uint64(0), 400 * MiB, 20 * MiB, true},
	} {
		tr := &trimmer{gcPercent: tc.gogc}
		if got := tr.useful(tc.before, tc.after); got != tc.want {
			t.Errorf("%s: useful(%d MiB -> %d MiB, GOGC %d) = %v", tc.name, tc.before/MiB, tc.after/MiB, tc.gogc, got)
		}
	}
}

func TestTrimmerReadsRuntimeMetrics(t *testing.T) {
	tr := newTrimmer()
	alloc, retained := tr.read()
	if alloc == 0 || retained == 0 || tr.gcPercent == 0 {
		t.Fatalf("metrics: allocated %d, retained %d, GOGC %d", alloc, retained, tr.gcPercent)
	}
}

func TestMemoryPolicyDefaults(t *testing.T) {
	t.Setenv("GOMEMLIMIT", "")
	t.Setenv("GOGC", "")
	limit := debug.SetMemoryLimit(-1)
	pct := debug.SetGCPercent(100)
	debug.SetGCPercent(pct)
	defer func() {
		debug.SetMemoryLimit(limit)
		debug.SetGCPercent(pct)
	}()
	if !setMemoryPolicy() {
		t.Error("the default limit is not to follow the live heap")
	}
	if got := debug.SetMemoryLimit(-1); got != DefaultMemoryLimit {
		t.Errorf("memory limit %d, want %d", got, DefaultMemoryLimit)
	}
	if got := debug.SetGCPercent(pct); got != DefaultGCPercent {
		t.Errorf("GC percent %d, want %d", got, DefaultGCPercent)
	}

	// Set in the environment (read by the runtime at start): kept.
	debug.SetMemoryLimit(math.MaxInt64)
	debug.SetGCPercent(100)
	t.Setenv("GOMEMLIMIT", "off")
	t.Setenv("GOGC", "100")
	if setMemoryPolicy() {
		t.Error("GOMEMLIMIT set: the limit is to follow the live heap")
	}
	if got := debug.SetMemoryLimit(-1); got != math.MaxInt64 {
		t.Errorf("GOMEMLIMIT=off: memory limit %d", got)
	}
	if got := debug.SetGCPercent(pct); got != 100 {
		t.Errorf("GOGC=100: GC percent %d", got)
	}
}

func TestLimitFor(t *testing.T) {
	const mib = 1 << 20
	for _, c := range []struct {
		live, pct uint64
		want      int64
	}{
		{0, 50, DefaultMemoryLimit},
		{20 * mib, 50, DefaultMemoryLimit},           // 20+10+8 = 38 MiB: the default holds
		{30 * mib, 50, 53 * mib},                     // 30+15+8: room for GOGC's pacing
		{110 * mib, 50, 173 * mib},                   // a million files
		{110 * mib, 100, 228 * mib},                  // GOGC=100
		{10 * mib, math.MaxInt32, 10*mib*11 + 8*mib}, // GOGC=off reads huge: capped at 1000 %
	} {
		if got := limitFor(c.live, c.pct); got != c.want {
			t.Errorf("limitFor(%d MiB, %d%%) = %d MiB, want %d MiB", c.live/mib, c.pct, got/mib, c.want/mib)
		}
	}
}

// The follower raises the limit once the live heap outgrows the default,
// and brings it back once the live data are gone.
func TestLimitFollowerFollowsTheLiveHeap(t *testing.T) {
	limit := debug.SetMemoryLimit(DefaultMemoryLimit)
	defer debug.SetMemoryLimit(limit)
	live := make([][]byte, 0, 64)
	for range 64 { // 64 MiB live, more than the default limit
		live = append(live, make([]byte, 1<<20))
	}
	runtime.GC()
	f := newLimitFollower()
	f.update()
	if got := debug.SetMemoryLimit(-1); got <= 64<<20 {
		t.Errorf("limit %d MiB with 64 MiB live, want more than the live heap", got>>20)
	}
	runtime.KeepAlive(live)
	live = nil
	runtime.GC()
	f.update()
	if got := debug.SetMemoryLimit(-1); got != DefaultMemoryLimit {
		t.Errorf("limit %d MiB once the live data are gone, want the default %d MiB", got>>20, DefaultMemoryLimit>>20)
	}
}
