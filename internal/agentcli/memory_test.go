package agentcli

import (
	"math"
	"runtime/debug"
	"testing"
)

func TestTrimmerTrimsOnceQuietAfterABurst(t *testing.T) {
	const MiB = 1 << 20
	tr := newTrimmer()
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

	// Idle: a trim that gives back little doubles the allocation needed
	// for the next one, up to trimAfterMax.
	trims := 0
	for range 20000 {
		if step(512 << 10) {
			trims++
			tr.trimmed(alloc, 18*MiB, 16*MiB)
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

func TestTrimmerReadsRuntimeMetrics(t *testing.T) {
	alloc, retained := newTrimmer().read()
	if alloc == 0 || retained == 0 {
		t.Fatalf("metrics: allocated %d, retained %d", alloc, retained)
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
	setMemoryPolicy()
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
	setMemoryPolicy()
	if got := debug.SetMemoryLimit(-1); got != math.MaxInt64 {
		t.Errorf("GOMEMLIMIT=off: memory limit %d", got)
	}
	if got := debug.SetGCPercent(pct); got != 100 {
		t.Errorf("GOGC=100: GC percent %d", got)
	}
}
