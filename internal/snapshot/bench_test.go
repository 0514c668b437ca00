//go:build unix

package snapshot_test

import (
	"bufio"
	"context"
	"go/build"
	"os"
	"path/filepath"
	"runtime"
	"runtime/debug"
	"runtime/metrics"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/sandkeep/sandkeep/internal/id"
	"github.com/sandkeep/sandkeep/internal/snapshot"
)

// sourceTree returns the Go distribution's source tree (about 11k files,
// 150 MB), read in place: the snapshot only reads it.
func sourceTree(b *testing.B) (string, int64) {
	dir := filepath.Join(build.Default.GOROOT, "src")
	if env := os.Getenv("SANDKEEP_BENCH_TREE"); env != "" {
		dir = env
	}
	var total int64
	err := filepath.WalkDir(dir, func(p string, d os.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if d.Type().IsRegular() {
			fi, err := d.Info()
			if err != nil {
				return err
			}
			total += fi.Size()
		}
		return nil
	})
	if err != nil {
		b.Skipf("no source tree to snapshot: %v", err)
	}
	return dir, total
}

// peakRSS returns the process's peak resident set size in MiB (Linux).
func peakRSS() float64 {
	f, err := os.Open("/proc/self/status")
	if err != nil {
		return 0
	}
	defer f.Close()
	s := bufio.NewScanner(f)
	for s.Scan() {
		if v, ok := strings.CutPrefix(s.Text(), "VmHWM:"); ok {
			kb, _ := strconv.ParseFloat(strings.TrimSuffix(strings.TrimSpace(v), " kB"), 64)
			return kb / 1024
		}
	}
	return 0
}

// cpuSeconds returns the user+system CPU time of the process so far.
func cpuSeconds() float64 {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		return 0
	}
	return float64(ru.Utime.Nano()+ru.Stime.Nano()) / 1e9
}

// blake3Speed measures single-core BLAKE3 throughput now, in MB/s: on a
// shared machine it tells how much CPU the benchmark really got (an idle
// core of this class does about 2800).
func blake3Speed() float64 {
	buf := make([]byte, 64<<20)
	start := time.Now()
	id.Sum(buf)
	return float64(len(buf)) / 1e6 / time.Since(start).Seconds()
}

// BenchmarkRunSourceTree is an initial sync: every chunk is missing (but
// for copies within the tree), so all of it is read, chunked, hashed,
// compressed and packed. The remote discards the packs.
func BenchmarkRunSourceTree(b *testing.B) {
	dir, total := sourceTree(b)
	b.SetBytes(total)
	var packed int64
	cpu0 := cpuSeconds()
	for b.Loop() {
		d := newMemoRemote()
		res, err := snapshot.Run(context.Background(), dir, d, nil, snapshot.Options{})
		if err != nil {
			b.Fatal(err)
		}
		packed = d.bytes
		_ = res
	}
	cpu := (cpuSeconds() - cpu0) / float64(b.N)
	// Throughput if the CPU time were spread over GOMAXPROCS idle cores:
	// the figure that matters on a loaded machine.
	b.ReportMetric(float64(total)/1e6/cpu*float64(runtime.GOMAXPROCS(0)), "MB/s-per-cpu-budget")
	b.ReportMetric(cpu, "cpu-s/op")
	b.ReportMetric(blake3Speed(), "blake3-MB/s")
	b.ReportMetric(float64(packed)/float64(total), "stored/raw")
	b.ReportMetric(peakRSS(), "peak-RSS-MiB")
}

// storedRemote has every chunk and tree already.
type storedRemote struct{ discardRemote }

func (*storedRemote) FindMissing(context.Context, []id.ID) ([]id.ID, error) { return nil, nil }

// BenchmarkRunSourceTreeStored is a scan without an index of content the
// remote already has (a rescan after a restore, or after the index was
// lost): everything is read, chunked and hashed, nothing is compressed.
func BenchmarkRunSourceTreeStored(b *testing.B) {
	dir, total := sourceTree(b)
	b.SetBytes(total)
	cpu0 := cpuSeconds()
	for b.Loop() {
		if _, err := snapshot.Run(context.Background(), dir, &storedRemote{}, nil, snapshot.Options{}); err != nil {
			b.Fatal(err)
		}
	}
	cpu := (cpuSeconds() - cpu0) / float64(b.N)
	b.ReportMetric(float64(total)/1e6/cpu*float64(runtime.GOMAXPROCS(0)), "MB/s-per-cpu-budget")
	b.ReportMetric(cpu, "cpu-s/op")
}

// BenchmarkRunSourceTreeUnchanged is a rescan with an index and no change.
func BenchmarkRunSourceTreeUnchanged(b *testing.B) {
	dir, _ := sourceTree(b)
	d := &discardRemote{}
	res, err := snapshot.Run(context.Background(), dir, d, nil, snapshot.Options{})
	if err != nil {
		b.Fatal(err)
	}
	b.ResetTimer()
	for b.Loop() {
		res2, err := snapshot.Run(context.Background(), dir, d, res.Index, snapshot.Options{})
		if err != nil {
			b.Fatal(err)
		}
		if res2.Stats.BytesRead != 0 {
			b.Fatalf("unchanged rescan read %d bytes", res2.Stats.BytesRead)
		}
	}
	b.ReportMetric(float64(res.Files), "files")
}

// resetPeakRSS restarts the VmHWM count (Linux).
func resetPeakRSS() { os.WriteFile("/proc/self/clear_refs", []byte("5"), 0) }

// heapPeak samples the size of the heap objects every 2 ms until done.
type heapPeak struct {
	stop chan struct{}
	wg   sync.WaitGroup
	peak uint64
}

func startHeapPeak() *heapPeak {
	h := &heapPeak{stop: make(chan struct{})}
	h.wg.Add(1)
	go func() {
		defer h.wg.Done()
		s := []metrics.Sample{{Name: "/memory/classes/heap/objects:bytes"}}
		t := time.NewTicker(2 * time.Millisecond)
		defer t.Stop()
		for {
			metrics.Read(s)
			h.peak = max(h.peak, s[0].Value.Uint64())
			select {
			case <-h.stop:
				return
			case <-t.C:
			}
		}
	}()
	return h
}

// done returns the peak in MiB.
func (h *heapPeak) done() float64 {
	close(h.stop)
	h.wg.Wait()
	return float64(h.peak) / (1 << 20)
}

// liveHeap returns the live heap in MiB after a full collection.
func liveHeap() float64 {
	runtime.GC()
	runtime.GC() // the second one empties the pools' victim caches
	var m runtime.MemStats
	runtime.ReadMemStats(&m)
	return float64(m.HeapAlloc) / (1 << 20)
}

// smallFiles makes a workspace of n small files (200 B to 8 KiB, about 4
// KiB on average), 100 per directory, 10 directories per top-level one:
// N/T/file-I.txt with T = I/1000 and N = I/100%10.
func smallFiles(t testing.TB, ws string, n int) {
	buf := make([]byte, 8<<10)
	for i := range n {
		dir := filepath.Join(ws, strconv.Itoa(i/1000), strconv.Itoa(i/100%10))
		if i%100 == 0 {
			if err := os.MkdirAll(dir, 0o755); err != nil {
				t.Fatal(err)
			}
		}
		size := 200 + i*7919%(len(buf)-200)
		copy(buf, strconv.Itoa(i))
		if err := os.WriteFile(filepath.Join(dir, "file-"+strconv.Itoa(i)+".txt"), buf[:size], 0o644); err != nil {
			t.Fatal(err)
		}
	}
}

func smallFile(i int) string {
	return strconv.Itoa(i/1000) + "/" + strconv.Itoa(i/100%10) + "/file-" + strconv.Itoa(i) + ".txt"
}

// BenchmarkIncrementalOneFile is the agent's common case: one file
// changed, an incremental Run told its path. Its cost depends on the
// directories on the way to the file, not on the size of the workspace.
func BenchmarkIncrementalOneFile(b *testing.B) {
	for _, n := range []int{1_000, 100_000} {
		b.Run("files="+strconv.Itoa(n), func(b *testing.B) {
			ws := b.TempDir()
			smallFiles(b, ws, n)
			d := &discardRemote{}
			res, err := snapshot.Run(context.Background(), ws, d, nil, snapshot.Options{})
			if err != nil {
				b.Fatal(err)
			}
			idx := res.Index
			i := 0
			for b.Loop() {
				rel := smallFile(i * 7919 % n)
				if err := os.WriteFile(filepath.Join(ws, rel), []byte("changed "+strconv.Itoa(i)), 0o644); err != nil {
					b.Fatal(err)
				}
				res, err := snapshot.Run(context.Background(), ws, d, idx, snapshot.Options{Dirty: []string{rel}})
				if err != nil {
					b.Fatal(err)
				}
				if res.Files != int64(n) || res.Stats.FilesUnchanged > 100 {
					b.Fatalf("%d files, %d listed", res.Files, res.Stats.FilesUnchanged)
				}
				idx = res.Index
				i++
			}
		})
	}
}

// TestMemory100k measures the peak RSS and heap of a first sync of a
// workspace of 100k small files (400 MB), of a full rescan with nothing
// changed, and of an incremental Run after a one-file change, and the heap
// the Index takes. It is slow, so it runs only with SANDKEEP_MEMORY_TEST=1;
// run it in a process of its own (go test -run TestMemory100k) so that
// nothing else shares the heap.
func TestMemory100k(t *testing.T) {
	if os.Getenv("SANDKEEP_MEMORY_TEST") == "" {
		t.Skip("set SANDKEEP_MEMORY_TEST=1")
	}
	ws := t.TempDir()
	smallFiles(t, ws, 100_000)
	syscall.Sync() // the first sync must not compete with the writeback of the tree
	base := liveHeap()
	measure := func(what string, f func() snapshot.Result) snapshot.Result {
		debug.FreeOSMemory()
		resetPeakRSS()
		cpu0 := cpuSeconds()
		start := time.Now()
		hp := startHeapPeak()
		res := f()
		t.Logf("%s: %v, cpu %.2fs, %d bytes read, peak RSS %.0f MiB, peak heap %.0f MiB",
			what, time.Since(start).Round(time.Millisecond), cpuSeconds()-cpu0, res.Stats.BytesRead, peakRSS(), hp.done())
		return res
	}
	runOpts := func(prev *snapshot.Index, r snapshot.Remote, opts snapshot.Options) snapshot.Result {
		res, err := snapshot.Run(context.Background(), ws, r, prev, opts)
		if err != nil {
			t.Fatal(err)
		}
		return res
	}
	res := measure("first sync", func() snapshot.Result { return runOpts(nil, &discardRemote{}, snapshot.Options{}) })
	// The files were written just before: racy. A settled index is what
	// the agent has after its next scan, a moment later.
	snapshot.AdvanceClock(t, time.Second)
	res = runOpts(res.Index, &storedRemote{}, snapshot.Options{})
	idx := liveHeap() - base
	t.Logf("%d files, %d MB; index: %.1f MiB live heap (%.0f B/file)", res.Files, res.Bytes>>20, idx, idx*(1<<20)/float64(res.Files))
	res = measure("unchanged full rescan", func() snapshot.Result { return runOpts(res.Index, &storedRemote{}, snapshot.Options{}) })
	rel := smallFile(57_300)
	if err := os.WriteFile(filepath.Join(ws, rel), []byte("changed"), 0o644); err != nil {
		t.Fatal(err)
	}
	measure("one-file change, incremental", func() snapshot.Result {
		return runOpts(res.Index, &discardRemote{}, snapshot.Options{Dirty: []string{rel}})
	})
	measure("one-file change, full rescan", func() snapshot.Result { return runOpts(res.Index, &discardRemote{}, snapshot.Options{}) })
}
