package repo

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"testing"

	"github.com/sandkeep/sandkeep/internal/metastore/sqlitestore"
	"github.com/sandkeep/sandkeep/internal/workspacetest"
)

// The recovery benchmarks (on SQLite and a local directory: they measure
// sandkeep's work, not a network's): a rebuild of the database from the
// bucket per 1,000 versions and per 100,000 blobs, and the read-back of a
// check (scrub) in MB/s.
//
//	go test -run '^$' -bench 'Rebuild|CheckReadData' -benchtime 3x ./internal/repo

// BenchmarkRebuild1000Versions: 1,000 versions of a small project, each
// adding one file (a pack and a tree each).
func BenchmarkRebuild1000Versions(b *testing.B) {
	f := newBrowseFixture(b)
	for i := range 1000 {
		f.commit(map[string]bfEntry{fmt.Sprintf("f%04d.txt", i): bfFile(fmt.Sprintf("version %d\n", i))})
	}
	benchRebuild(b, f, 1000)
}

// BenchmarkRebuild100kBlobs: 100,000 chunks in 100 versions of 1,000 files.
func BenchmarkRebuild100kBlobs(b *testing.B) {
	f := newBrowseFixture(b)
	for v := range 100 {
		files := make(map[string]bfEntry, 1000)
		for i := range 1000 {
			files[fmt.Sprintf("d%03d/f%04d", v, i)] = bfFile(fmt.Sprintf("blob %d of version %d, padded to look like a small file", i, v))
		}
		f.commit(files)
	}
	benchRebuild(b, f, 100)
}

func benchRebuild(b *testing.B, f *browseFixture, versions int) {
	ctx := context.Background()
	if err := f.r.WriteProjectRecord(ctx, f.pid); err != nil {
		b.Fatal(err)
	}
	for b.Loop() {
		b.StopTimer()
		meta, err := sqlitestore.Open(ctx, filepath.Join(b.TempDir(), "rebuilt.db"))
		if err != nil {
			b.Fatal(err)
		}
		r := New(meta, f.store, Options{})
		b.StartTimer()
		rep, err := r.Rebuild(ctx, RebuildOptions{})
		b.StopTimer()
		if err != nil || len(rep.Projects) != 1 || rep.Projects[0].Versions != versions || len(rep.Projects[0].Problems) > 0 {
			b.Fatalf("rebuild: %+v, %v", rep, err)
		}
		b.ReportMetric(float64(rep.Projects[0].Blobs), "blobs/op")
		meta.Close()
		b.StartTimer()
	}
}

// BenchmarkCheckReadData: check --read-data of 64 MiB of incompressible
// chunks in 16 versions of a 4 MiB file (MB/s is the scrub's throughput
// here).
func BenchmarkCheckReadData(b *testing.B) {
	f := newBrowseFixture(b)
	f.chunkSize = 1 << 20
	ws := b.TempDir()
	var total int64
	for v := range 16 {
		p := filepath.Join(ws, fmt.Sprint(v))
		workspacetest.RandomFile(b, p, 4<<20, uint64(v))
		data, err := os.ReadFile(p)
		if err != nil {
			b.Fatal(err)
		}
		f.commit(map[string]bfEntry{"big": {content: data, mode: 0o644}})
		total += int64(len(data))
	}
	b.SetBytes(total)
	ctx := context.Background()
	for b.Loop() {
		rep, err := f.r.Check(ctx, CheckOptions{ReadDataPercent: 100})
		if err != nil || len(rep.Problems) > 0 || rep.BytesRead < total {
			b.Fatalf("check: %+v, %v", rep, err)
		}
	}
}
