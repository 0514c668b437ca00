package agentcli

import (
	"context"
	"os"
	"runtime"
	"runtime/debug"
	"runtime/metrics"
	"time"
)

// The agent's memory policy. DESIGN.md budgets 64 MiB of RSS while syncing
// 100k files, and about 13 MiB of that are the binary's own pages (text and
// read-only data, which the kernel maps in as they are touched); the rest
// is the Go runtime's, which these settings bound.
const (
	// DefaultMemoryLimit is the soft memory limit
	// (runtime/debug.SetMemoryLimit) unless GOMEMLIMIT is set: near it the
	// garbage collector runs more often instead of letting the heap grow.
	// What a sync holds (see snapshot's Pipeline: the index, the chunk
	// budget, a large file's chunker and chunk, two pack buffers) stays
	// well below it.
	DefaultMemoryLimit = 44 << 20
	// DefaultGCPercent is the garbage collector's target (GOGC) unless
	// GOGC is set: the heap may grow to 1.5 times the live data between
	// collections, not twice. Most of the agent's heap is byte buffers
	// with no pointers to scan, so collections are cheap.
	DefaultGCPercent = 50
)

// setMemoryPolicy applies the defaults the environment does not override.
// It reports whether the limit is the default, which followLiveHeap is then
// to adapt.
func setMemoryPolicy() (follow bool) {
	if os.Getenv("GOGC") == "" {
		debug.SetGCPercent(DefaultGCPercent)
	}
	if os.Getenv("GOMEMLIMIT") == "" {
		debug.SetMemoryLimit(DefaultMemoryLimit)
		return true
	}
	return false
}

// The soft limit follows the live heap when the live data outgrow it. The
// index and trees of a very large workspace do not fit DefaultMemoryLimit
// (a million files: an RSS of 157 MiB), and a live heap near the limit
// makes the collector run back to back: a 1M-file initial sync spent most
// of its CPU collecting (160 CPU-s against 3.5 for 100k files). Above the default, the limit leaves the collector's own
// pacing room (live plus GOGC percent, and limitSlack), so such an agent
// takes the memory its index needs instead of the CPU.
const (
	limitEvery = time.Second // how often the live heap is read
	limitSlack = 8 << 20
)

// limitFor returns the soft memory limit for a live heap of live bytes
// with GOGC gcPercent.
func limitFor(live, gcPercent uint64) int64 {
	return max(DefaultMemoryLimit, int64(live+live*capGOGC(gcPercent)/100+limitSlack))
}

// capGOGC bounds GOGC for the arithmetic of the memory policy: GOGC=off may
// read as a huge value.
func capGOGC(pct uint64) uint64 { return min(pct, 1000) }

// followLiveHeap sets the soft memory limit to limitFor the live heap of
// the last collection, every limitEvery, until ctx is done.
func followLiveHeap(ctx context.Context) {
	f := newLimitFollower()
	tick := time.NewTicker(limitEvery)
	defer tick.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-tick.C:
			f.update()
		}
	}
}

// limitFollower is followLiveHeap's state: the metrics it reads and the
// limit it last set.
type limitFollower struct {
	samples []metrics.Sample
	cur     int64
}

func newLimitFollower() *limitFollower {
	return &limitFollower{cur: DefaultMemoryLimit, samples: []metrics.Sample{
		{Name: "/gc/heap/live:bytes"}, // as of the last collection
		{Name: "/gc/gogc:percent"},
	}}
}

// update sets the limit for the live heap now, if it changed.
func (f *limitFollower) update() {
	metrics.Read(f.samples)
	if f.samples[0].Value.Kind() != metrics.KindUint64 || f.samples[1].Value.Kind() != metrics.KindUint64 {
		return // not this runtime's metrics: keep the limit
	}
	if l := limitFor(f.samples[0].Value.Uint64(), f.samples[1].Value.Uint64()); l != f.cur {
		debug.SetMemoryLimit(l)
		f.cur = l
	}
}

// Trimming: the Go runtime keeps the pages a burst of work (an initial
// sync, a restore, a large change) used and then freed, and returns them to
// the kernel only slowly (and none of them while the heap stays below its
// last goal), so an idle agent would keep the RSS of its last burst.
// trimMemory gives them back once the agent is quiet after a burst.
const (
	trimEvery = time.Second // how often the runtime's metrics are read
	// trimQuiet: allocating less than this in a period (trimEvery) is
	// quiet: the agent waits (for changes, or for the coordinator).
	trimQuiet = 1 << 20
	// trimSlack is the least a trim must give back to count as useful;
	// see trimmer.useful. (Whether a trim is worth it cannot be told
	// beforehand: the live heap the runtime reports is that of the last
	// collection, made during the burst.)
	trimSlack = 8 << 20
	// trimAfter is how much must have been allocated since the last trim
	// for another one; it doubles after each trim that was not useful
	// (up to trimAfterMax) and comes back to trimAfter after one that
	// was. So a trim during a pause of a sync (waiting for a commit) is
	// followed by another once the sync is over, and an idle agent (a
	// heartbeat now and then, whose garbage the collector's own pacing
	// keeps within its heap goal) soon trims only every trimAfterMax.
	trimAfter    = 4 << 20
	trimAfterMax = 256 << 20
)

// trimmer decides when to trim from the runtime's metrics.
type trimmer struct {
	samples   []metrics.Sample
	gcPercent uint64 // GOGC, as of the last read
	started   bool
	lastAlloc uint64 // allocated bytes at the previous check
	trimAlloc uint64 // allocated bytes at the last trim
	after     uint64 // the current trimAfter
}

func newTrimmer() *trimmer {
	return &trimmer{after: trimAfter, samples: []metrics.Sample{
		{Name: "/gc/heap/allocs:bytes"},              // cumulative
		{Name: "/memory/classes/heap/objects:bytes"}, // live and unswept dead objects
		{Name: "/memory/classes/heap/unused:bytes"},
		{Name: "/memory/classes/heap/free:bytes"}, // free, not returned to the OS
		{Name: "/gc/gogc:percent"},
	}}
}

// read returns the cumulative allocation and the heap memory the process
// holds.
func (t *trimmer) read() (alloc, retained uint64) {
	metrics.Read(t.samples)
	v := func(i int) uint64 {
		if t.samples[i].Value.Kind() != metrics.KindUint64 {
			return 0
		}
		return t.samples[i].Value.Uint64()
	}
	t.gcPercent = v(4)
	return v(0), v(1) + v(2) + v(3)
}

// due reports whether to trim now, given the cumulative allocation.
func (t *trimmer) due(alloc uint64) bool {
	if !t.started {
		t.started, t.lastAlloc = true, alloc
		return false
	}
	quiet := alloc-t.lastAlloc < trimQuiet
	t.lastAlloc = alloc
	return quiet && alloc-t.trimAlloc >= t.after
}

// useful reports whether a trim that took the retained heap from before to
// after bytes gave back more than the collector's own pacing would have
// kept anyway: without trims the heap grows to its goal, the live heap
// plus GOGC percent of it (after is about the live heap), before a
// collection reuses the garbage. A trim is useful after a burst, whose
// buffers and garbage outgrew that goal; not while idle, when each trim
// gives back only the little garbage made since the last one.
func (t *trimmer) useful(before, after uint64) bool {
	return before > after+max(trimSlack, after*capGOGC(t.gcPercent)/100)
}

// trimmed records a trim made at allocation alloc that took the retained
// heap from before to after bytes.
func (t *trimmer) trimmed(alloc, before, after uint64) {
	t.trimAlloc, t.lastAlloc = alloc, alloc
	if t.useful(before, after) {
		t.after = trimAfter
	} else {
		t.after = min(2*t.after, trimAfterMax)
	}
}

// trimMemory returns the heap's free memory to the kernel whenever the
// agent is quiet after a burst, until ctx is done: two collections (the
// second frees what sync.Pools, gRPC's buffer pools among them, kept
// through the first), then debug.FreeOSMemory's scavenge.
func trimMemory(ctx context.Context) {
	t := newTrimmer()
	tick := time.NewTicker(trimEvery)
	defer tick.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-tick.C:
			alloc, before := t.read()
			if !t.due(alloc) {
				continue
			}
			runtime.GC()
			debug.FreeOSMemory()
			alloc, after := t.read()
			t.trimmed(alloc, before, after)
		}
	}
}
