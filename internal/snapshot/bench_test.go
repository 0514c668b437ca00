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
	"strconv"
	"strings"
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

// BenchmarkRunSourceTree is an initial sync: every chunk is missing, so all
// of it is read, chunked, hashed, compressed and packed. The remote
// discards the packs.
func BenchmarkRunSourceTree(b *testing.B) {
	dir, total := sourceTree(b)
	b.SetBytes(total)
	var packed int64
	cpu0 := cpuSeconds()
	for b.Loop() {
		d := &discardRemote{}
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

// TestMemory100k measures the peak RSS of a first sync and of an unchanged
// rescan of a workspace of 100k small files. It is slow, so it runs only
// with SANDKEEP_MEMORY_TEST=1; run it in a process of its own (go test
// -run TestMemory100k) so that nothing else shares the heap.
func TestMemory100k(t *testing.T) {
	if os.Getenv("SANDKEEP_MEMORY_TEST") == "" {
		t.Skip("set SANDKEEP_MEMORY_TEST=1")
	}
	ws := t.TempDir()
	buf := make([]byte, 8<<10)
	for i := range 100_000 {
		dir := filepath.Join(ws, strconv.Itoa(i/1000), strconv.Itoa(i/100%10))
		if i%100 == 0 {
			if err := os.MkdirAll(dir, 0o755); err != nil {
				t.Fatal(err)
			}
		}
		n := 200 + i*7919%(len(buf)-200)
		copy(buf, strconv.Itoa(i))
		if err := os.WriteFile(filepath.Join(dir, "file-"+strconv.Itoa(i)+".txt"), buf[:n], 0o644); err != nil {
			t.Fatal(err)
		}
	}
	time.Sleep(200 * time.Millisecond)
	debug.FreeOSMemory()
	resetPeakRSS()
	base := peakRSS()
	d := &discardRemote{}
	start := time.Now()
	res, err := snapshot.Run(context.Background(), ws, d, nil, snapshot.Options{})
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("first sync of %d files, %d MB: %v, peak RSS %.0f MiB (%.0f MiB before)", res.Files, res.Bytes>>20, time.Since(start), peakRSS(), base)
	debug.FreeOSMemory()
	resetPeakRSS()
	start = time.Now()
	res2, err := snapshot.Run(context.Background(), ws, &storedRemote{}, res.Index, snapshot.Options{})
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("unchanged rescan: %v, %d bytes read, peak RSS %.0f MiB", time.Since(start), res2.Stats.BytesRead, peakRSS())
}
