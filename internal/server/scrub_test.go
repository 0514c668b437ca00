package server

import (
	"context"
	"path/filepath"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/sandkeep/sandkeep/internal/agent"
	"github.com/sandkeep/sandkeep/internal/blobstore"
	"github.com/sandkeep/sandkeep/internal/blobstore/blobstoretest"
	"github.com/sandkeep/sandkeep/internal/repo"
	"github.com/sandkeep/sandkeep/internal/workspacetest"
)

// TestPeriodicScrub: each tick of the scrub reads back every pack
// (--scrub-read-data 100) and finds a flipped byte, counting it in the
// metrics; it repairs nothing.
func TestPeriodicScrub(t *testing.T) {
	ticks := make(chan time.Time)
	ran := make(chan scrubRun)
	s, admin := testServer(t, Config{Scrub: ScrubConfig{Interval: time.Hour, ReadDataPercent: 100}}, func(s *Server) {
		s.scrubTicks, s.scrubRan = ticks, func(r scrubRun) { ran <- r }
	})
	tick := func() repo.CheckReport {
		t.Helper()
		select {
		case ticks <- time.Now():
		case <-time.After(wait):
			t.Fatal("the periodic scrub does not take ticks")
		}
		r := receive(t, ran, "periodic scrub")
		if !r.led || r.err != nil {
			t.Fatalf("periodic scrub: led %v, %v", r.led, r.err)
		}
		return r.report
	}
	ctx := context.Background()
	pid, token := newProject(t, admin, "scrubbed")
	ws := filepath.Join(t.TempDir(), "ws")
	workspacetest.RandomFile(t, filepath.Join(ws, "big.bin"), 2<<20, 3)
	if _, err := agent.SyncOnce(ctx, agentCfg(s, token, ws, t.TempDir())); err != nil {
		t.Fatal(err)
	}
	clean := tick()
	if clean.Projects != 1 || clean.PacksRead == 0 || clean.BytesRead < 2<<20 || len(clean.Problems) != 0 {
		t.Fatalf("scrub of sound data: %+v", clean)
	}
	// Rot in the data pack.
	var key string
	var size int64
	_ = s.Blobs.List(ctx, repo.ProjectPrefix(pid)+"packs/", func(o blobstore.Object) error {
		if o.Size > size {
			key, size = o.Key, o.Size
		}
		return nil
	})
	blobstoretest.FlipByte(t, s.Blobs, key, 100)
	rotten := tick()
	if len(rotten.Problems) != 1 || rotten.Problems[0].Kind != repo.ProblemBadChunk || rotten.Problems[0].Repaired || rotten.ChunksDropped != 0 {
		t.Fatalf("scrub of a flipped byte: %+v", rotten)
	}
	if got := testutil.ToFloat64(s.Metrics.ScrubProblems.WithLabelValues(repo.ProblemBadChunk)); got != 1 {
		t.Fatalf("sandkeep_scrub_problems_total{kind=bad_chunk} = %v", got)
	}
	if got := testutil.ToFloat64(s.Metrics.ScrubBytes); got < float64(clean.BytesRead+rotten.BytesRead) {
		t.Fatalf("sandkeep_scrub_bytes_verified_total = %v, want at least %d", got, clean.BytesRead+rotten.BytesRead)
	}
	// Still there next time: the scrub repairs nothing.
	if again := tick(); len(again.Problems) != 1 {
		t.Fatalf("second scrub: %+v", again)
	}
}
