package restore

import (
	"fmt"
	"os"
	"path/filepath"
	"syscall"
	"testing"
	"time"

	"github.com/sandkeep/sandkeep/internal/id"
	"github.com/sandkeep/sandkeep/internal/pack"
	pb "github.com/sandkeep/sandkeep/proto/sandkeep/v1"
)

// benchPlan stores 2000 files of 64 KiB (compressible, one chunk each) and
// 10 files of 8 MiB (incompressible, 1 MiB chunks) in ~16 MiB packs and
// returns a plan of batches of at most 1000 entries, with ranges merged per
// pack up to 16 MiB as the coordinator does.
func benchPlan(b *testing.B, e *env) (msgs func() []*pb.GetRestorePlanResponse, total int64) {
	var entries []*pb.PlanEntry
	w := pack.NewWriter()
	flush := func() {
		if w.Len() == 0 {
			return
		}
		data, pid, es, err := w.Finish()
		if err != nil {
			b.Fatal(err)
		}
		for _, en := range es {
			e.loc[en.ID] = blobLoc{pid, en}
		}
		e.data[pid] = data
		e.srv.put(packPath(pid), data)
	}
	add := func(c []byte) {
		if _, err := w.Add(pack.Data, id.Sum(c), c); err != nil {
			b.Fatal(err)
		}
		if w.Size() >= pack.TargetSize {
			flush()
		}
	}
	for d := range 20 {
		entries = append(entries, dirE(fmt.Sprintf("d%02d", d), 0o755, baseNs))
		for i := range 100 {
			c := textBytes(d*100+i, 64<<10)
			// Make each file distinct and only moderately compressible.
			copy(c, randBytes(uint64(d*100+i), 16<<10))
			add(c)
			entries = append(entries, fileE(fmt.Sprintf("d%02d/f%03d.txt", d, i), 0o644, baseNs, c))
			total += int64(len(c))
		}
	}
	entries = append(entries, dirE("big", 0o755, baseNs))
	for i := range 10 {
		var chunks [][]byte
		for j := range 8 {
			c := randBytes(uint64(10_000+i*8+j), 1<<20)
			add(c)
			chunks = append(chunks, c)
		}
		entries = append(entries, fileE(fmt.Sprintf("big/b%d.bin", i), 0o644, baseNs, chunks...))
		total += 8 << 20
	}
	flush()
	msgs = func() []*pb.GetRestorePlanResponse {
		var out []*pb.GetRestorePlanResponse
		for start := 0; start < len(entries); start += 1000 {
			batch := entries[start:min(start+1000, len(entries))]
			out = append(out, &pb.GetRestorePlanResponse{Entries: batch, Ranges: mergedRanges(e, chunkIDs(batch...))})
		}
		return out
	}
	return msgs, total
}

// mergedRanges splits the per-pack ranges of rangesFor at 16 MiB.
func mergedRanges(e *env, ids []id.ID) []*pb.PackRange {
	var out []*pb.PackRange
	for _, r := range e.rangesFor(false, ids...) {
		var cur *pb.PackRange
		for _, bl := range r.Blobs {
			abs := r.Offset + bl.Offset
			if cur == nil || abs+bl.Length-cur.Offset > 16<<20 {
				cur = &pb.PackRange{PackId: r.PackId, Request: r.Request, Offset: abs}
				out = append(out, cur)
			}
			cur.Blobs = append(cur.Blobs, &pb.RangeBlob{Id: bl.Id, Offset: abs - cur.Offset, Length: bl.Length, RawLength: bl.RawLength, Codec: bl.Codec})
			cur.Length = abs + bl.Length - cur.Offset
		}
	}
	return out
}

func BenchmarkRestore(b *testing.B) {
	e := newEnv(b)
	msgs, total := benchPlan(b, e)
	dir := b.TempDir()
	b.SetBytes(total)
	b.ResetTimer()
	var res Result
	cpu0 := cpuTime()
	for i := 0; b.Loop(); i++ {
		ws := filepath.Join(dir, fmt.Sprint(i))
		var err error
		res, err = Run(b.Context(), source(msgs()...), Options{Workspace: ws})
		if err != nil {
			b.Fatal(err)
		}
		b.StopTimer()
		os.RemoveAll(ws)
		b.StartTimer()
	}
	// CPU time of the process (restore and the in-process server): a figure
	// that means something on a loaded machine, where wall time does not.
	b.ReportMetric(float64(cpuTime()-cpu0)/1e6/float64(b.N), "cpu-ms/op")
	b.ReportMetric(float64(res.Ranges), "GETs/op")
	b.ReportMetric(float64(res.BytesDownloaded)/float64(total), "downloaded/restored")
}

// BenchmarkRestoreSeeded restores over a complete workspace: every chunk is
// verified on disk, nothing is fetched.
func BenchmarkRestoreSeeded(b *testing.B) {
	e := newEnv(b)
	msgs, total := benchPlan(b, e)
	ws := filepath.Join(b.TempDir(), "ws")
	if _, err := Run(b.Context(), source(msgs()...), Options{Workspace: ws}); err != nil {
		b.Fatal(err)
	}
	b.SetBytes(total)
	cpu0 := cpuTime()
	for b.Loop() {
		res, err := Run(b.Context(), source(msgs()...), Options{Workspace: ws})
		if err != nil || res.Ranges != 0 {
			b.Fatal(err, res.Ranges)
		}
	}
	b.ReportMetric(float64(cpuTime()-cpu0)/1e6/float64(b.N), "cpu-ms/op")
}

func cpuTime() time.Duration {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		return 0
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}
