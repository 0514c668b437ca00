package sqlitestore

import (
	"context"
	"encoding/binary"
	"fmt"
	"path/filepath"
	"testing"
	"time"

	"github.com/sandkeep/sandkeep/internal/id"
	"github.com/sandkeep/sandkeep/internal/metastore"
)

// BenchmarkInitialSyncMetadata runs what the coordinator asks of the store
// in an initial sync: the agent's lookups (one id per large chunk, lists of
// a thousand for batches of small ones), the packs' indexing, the tree
// upload's lookups and the commit with its project_files rows. One
// iteration is one sync into a fresh project of one database, after one
// sync that is not timed. "25k" is the bench's reference workspace (about
// 25,000 files, 23,000 new chunks in 50 packs), "100k" its tree of 100,000
// small files (one chunk each, 23 packs).
func BenchmarkInitialSyncMetadata(b *testing.B) {
	b.Run("25k", func(b *testing.B) { benchInitialSync(b, 25_000, 23_000, 50, 400) })
	b.Run("100k", func(b *testing.B) { benchInitialSync(b, 100_000, 100_000, 23, 0) })
}

// benchInitialSync is BenchmarkInitialSyncMetadata for one tree: singleIDs
// of its chunks are looked up one at a time (FindMissingChunks of one large
// chunk each).
func benchInitialSync(b *testing.B, files, chunks, packs, singleIDs int) {
	ctx := context.Background()
	s, err := Open(ctx, filepath.Join(b.TempDir(), "bench.db"))
	if err != nil {
		b.Fatal(err)
	}
	defer s.Close()
	mkID := func(run, i int, kind string) id.ID {
		var buf [16]byte
		binary.LittleEndian.PutUint64(buf[:], uint64(run))
		binary.LittleEndian.PutUint64(buf[8:], uint64(i))
		return id.Sum(append([]byte(kind), buf[:]...))
	}
	var commit time.Duration // in CommitVersion
	sync := func(run int) {
		p, err := s.CreateProject(ctx, fmt.Sprintf("bench-%d", run))
		if err != nil {
			b.Fatal(err)
		}
		ids := make([]id.ID, chunks)
		for i := range ids {
			ids[i] = mkID(run, i, "chunk")
		}
		for i := range singleIDs {
			if _, err := s.MissingBlobs(ctx, p.ID, ids[i:i+1]); err != nil {
				b.Fatal(err)
			}
		}
		for i := singleIDs; i < chunks; i += 1000 {
			if _, err := s.MissingBlobs(ctx, p.ID, ids[i:min(i+1000, chunks)]); err != nil {
				b.Fatal(err)
			}
		}
		per := chunks / packs
		for k := range packs {
			part := ids[k*per : min((k+1)*per, chunks)]
			if k == packs-1 {
				part = ids[k*per:]
			}
			blobs := make([]metastore.BlobLocation, len(part))
			for i, x := range part {
				blobs[i] = metastore.BlobLocation{ID: x, Type: metastore.BlobData, Offset: int64(i) * 4096, Length: 4096, RawLength: 8192}
			}
			pk := metastore.Pack{ID: mkID(run, k, "pack"), ProjectID: p.ID, Type: metastore.BlobData, Size: int64(len(part)) * 4096}
			if err := s.AddPack(ctx, pk, blobs); err != nil {
				b.Fatal(err)
			}
		}
		for i := 0; i < chunks; i += 1000 {
			if _, err := s.LocateBlobs(ctx, p.ID, ids[i:min(i+1000, chunks)]); err != nil {
				b.Fatal(err)
			}
		}
		root := mkID(run, 0, "tree")
		if err := s.AddPack(ctx, metastore.Pack{ID: mkID(run, 0, "treepack"), ProjectID: p.ID, Type: metastore.BlobTree, Size: 100},
			[]metastore.BlobLocation{{ID: root, Type: metastore.BlobTree, Length: 100, RawLength: 100}}); err != nil {
			b.Fatal(err)
		}
		now := time.Now()
		ups := make([]metastore.ProjectFile, files)
		for i := range ups {
			ups[i] = metastore.ProjectFile{ProjectID: p.ID, Path: fmt.Sprintf("src/pkg%03d/file%05d.go", i/100, i), Size: int64(i),
				Checksum: "blake3:" + mkID(run, i, "file").String(), CreatedAt: now, UpdatedAt: now}
		}
		start := time.Now()
		_, err = s.CommitVersion(ctx, metastore.Version{ProjectID: p.ID, Root: root, Kind: metastore.KindSync, Files: int64(files)},
			metastore.FileChanges{Upsert: ups, Requires: append(ids, root)})
		commit += time.Since(start)
		if err != nil {
			b.Fatal(err)
		}
	}
	sync(-1) // a coordinator that has run a while: its statements prepared
	commit = 0
	b.ResetTimer()
	for run := range b.N {
		sync(run)
	}
	// The commit is the sync's serial tail: nothing else runs beside it.
	b.ReportMetric(float64(commit.Milliseconds())/float64(b.N), "commit-ms/op")
}
