//go:build unix

package snapshot_test

import (
	"bufio"
	"context"
	"go/build"
	"os"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"syscall"
	"testing"

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
	b.ReportMetric(float64(packed)/float64(total), "stored/raw")
	b.ReportMetric(peakRSS(), "peak-RSS-MiB")
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
