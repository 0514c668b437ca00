//go:build unix

package snapshot_test

import (
	"context"
	"fmt"
	"os"
	"runtime"
	"runtime/debug"
	"runtime/metrics"
	"runtime/pprof"
	"sync"
	"testing"
	"time"

	"github.com/sandkeep/sandkeep/internal/snapshot"
)

type zzPeak struct {
	stop chan struct{}
	wg   sync.WaitGroup
	peak uint64
}

func zzStart() *zzPeak {
	h := &zzPeak{stop: make(chan struct{})}
	h.wg.Add(1)
	go func() {
		defer h.wg.Done()
		s := []metrics.Sample{{Name: "/gc/heap/live:bytes"}}
		t := time.NewTicker(2 * time.Millisecond)
		defer t.Stop()
		for {
			metrics.Read(s)
			if v := s[0].Value.Uint64(); v > h.peak+(1<<20) {
				h.peak = v
				if p := os.Getenv("ZZ_PROF"); p != "" {
					f, _ := os.Create(p)
					pprof.WriteHeapProfile(f)
					f.Close()
				}
			}
			select {
			case <-h.stop:
				return
			case <-t.C:
			}
		}
	}()
	return h
}

// TestZZMeasure: first sync of $ZZ_WS with a remote that lacks everything.
func TestZZMeasure(t *testing.T) {
	ws := os.Getenv("ZZ_WS")
	if ws == "" {
		t.Skip()
	}
	runtime.GC()
	debug.FreeOSMemory()
	os.WriteFile("/proc/self/clear_refs", []byte("5"), 0)
	base := peakRSS()
	var ru0 = cpuSeconds()
	start := time.Now()
	h := zzStart()
	d := &discardRemote{}
	var o snapshot.Options
	fmt.Sscan(os.Getenv("ZZ_PACK"), &o.PackSize)
	fmt.Sscan(os.Getenv("ZZ_BUF"), &o.BufferBytes)
	fmt.Sscan(os.Getenv("ZZ_UP"), &o.UploadConcurrency)
	res, err := snapshot.Run(context.Background(), ws, d, nil, o)
	if err != nil {
		t.Fatal(err)
	}
	close(h.stop)
	h.wg.Wait()
	var gc []metrics.Sample = []metrics.Sample{{Name: "/gc/cycles/total:gc-cycles"}}
	metrics.Read(gc)
	t.Logf("ZZ first sync %d files %d MB -> %d MB packed: wall %.2fs cpu %.2fs peakRSS %.0f MiB (base %.0f) peakHeap %.0f MiB gcs %d",
		res.Files, res.Bytes>>20, d.bytes>>20, time.Since(start).Seconds(), cpuSeconds()-ru0, peakRSS(), base, float64(h.peak)/(1<<20), gc[0].Value.Uint64())
}
