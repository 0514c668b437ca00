package server

// Periodic scrub: `sandkeep serve --scrub-interval D` checks every project
// each D on the leader (repo.Check): every pack a version needs is there,
// and --scrub-read-data percent of them, at random, are read back and every
// chunk verified, at most --scrub-rate bytes per second. Problems are
// logged as errors and counted in the metrics (sandkeep_scrub_*); repairing
// is left to an operator (`sandkeep check --repair`), who decides whether
// the files can come back from a workspace. Off by default: reading back
// costs the bucket's egress.

import (
	"context"
	"log/slog"
	"time"

	"github.com/sandkeep/sandkeep/internal/repo"
)

// Defaults of the periodic scrub's flags.
const (
	DefaultScrubReadData = 10.0 // percent of the packs read back per run
	DefaultScrubRate     = 50e6 // bytes per second
)

// ScrubConfig configures the periodic scrub.
type ScrubConfig struct {
	// Interval between two scrubs of every project; 0 runs none.
	Interval time.Duration
	// ReadDataPercent of the packs are read back and verified per run.
	ReadDataPercent float64
	// RateBytesPerSecond bounds the bytes read (0: no bound).
	RateBytesPerSecond int64
}

type scrubRun = jobRun[repo.CheckReport]

// scrub is one periodic check of every project.
func (s *Server) scrub(ctx context.Context) (repo.CheckReport, error) {
	rep, err := s.Repo.Check(ctx, repo.CheckOptions{ReadDataPercent: s.cfg.Scrub.ReadDataPercent, RateBytesPerSecond: s.cfg.Scrub.RateBytesPerSecond})
	if s.Metrics != nil && ctx.Err() == nil {
		s.Metrics.ObserveCheck(rep.BytesRead, rep.ProblemKinds(), err)
	}
	return rep, err
}

// scrubDone logs a periodic scrub: every problem (at most 20 lines).
func scrubDone(log *slog.Logger) func(repo.CheckReport, error, time.Duration) {
	return func(rep repo.CheckReport, err error, took time.Duration) {
		if err != nil {
			log.Error("scrub: periodic check failed", "err", err, "projects", rep.Projects, "seconds", took.Seconds())
			return
		}
		for i, p := range rep.Problems {
			if i == 20 {
				log.Error("scrub: more problems not logged", "problems", len(rep.Problems))
				break
			}
			log.Error("scrub: stored data is damaged; run `sandkeep check --read-data --repair` so agents that still have the files upload them again",
				"project", p.ProjectID, "kind", p.Kind, "detail", p.Detail, "versions", p.Versions, "paths", p.Paths)
		}
		log.Info("scrub: periodic check", "projects", rep.Projects, "packs", rep.Packs, "packs_read", rep.PacksRead,
			"bytes_read", rep.BytesRead, "problems", len(rep.Problems), "seconds", took.Seconds())
	}
}

// runScrub starts the periodic scrub (unless Scrub.Interval is 0) and
// returns a function that waits for it to stop once ctx ends.
func (s *Server) runScrub(ctx context.Context) (wait func()) {
	ticks, stop := s.scrubTicks, func() {}
	if ticks == nil {
		if s.cfg.Scrub.Interval <= 0 {
			return func() {}
		}
		ticks, stop = gcTicker(s.cfg.Scrub.Interval, s.cfg.Scrub.Interval)
	}
	log := s.log.With("component", "scrub")
	l := &jobLoop[repo.CheckReport]{name: "scrub", ticks: ticks, work: s.scrub, done: scrubDone(log), log: log, ran: s.scrubRan, lead: s.leads}
	done := make(chan struct{})
	go func() {
		defer close(done)
		defer stop()
		l.run(ctx)
	}()
	return func() { <-done }
}
