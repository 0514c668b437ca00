package server

// Periodic garbage collection: `sandkeep serve` collects every project each
// GCConfig.Interval (the --gc-interval flag, default 1h; 0 turns it off,
// leaving `sandkeep gc` to an operator or a cron job).
//
// Why running it unattended is safe: package gc never deletes a blob a kept
// version references, whatever runs beside it (agents syncing, a rollback,
// `sandkeep gc` from the CLI, another replica's run); its package
// documentation has the argument. A pack is deleted only by a run that
// starts at least GCConfig.Grace after the run that condemned it, so the
// interval only sets how soon the space comes back: with the defaults
// (interval 1h, grace 1h) a version that falls out of retention is dropped,
// and its dead packs condemned, by the next run (within an hour), and the
// packs are deleted by the first run at least an hour after that: within
// about three hours in all. The first run comes FirstGCDelay after the
// start (or one interval, if that is shorter), so a coordinator restarted
// more often than the interval still collects.
//
// With PostgreSQL, only the replica that leads the background jobs (the
// lifecycle manager's advisory lock, shared) collects: duplicate runs would
// be safe but would repack the same packs twice.

import (
	"context"
	"log/slog"
	"sync"
	"time"

	"github.com/sandkeep/sandkeep/internal/gc"
	"github.com/sandkeep/sandkeep/internal/metastore"
	"github.com/sandkeep/sandkeep/internal/metastore/pgstore"
)

// Defaults of `sandkeep serve` (a Config left at zero does not collect).
const (
	DefaultGCInterval = time.Hour
	DefaultGCGrace    = gc.DefaultGrace
	// FirstGCDelay is how long after the start the first periodic run
	// comes (at most; the interval if shorter).
	FirstGCDelay = 5 * time.Minute
)

// GCConfig configures garbage collection in the coordinator.
type GCConfig struct {
	// Interval is the time between two periodic collections of every
	// project; 0 (or negative) runs none.
	Interval time.Duration
	// Grace is gc.Options.Grace for the periodic runs and for the
	// CollectGarbage RPC (`sandkeep gc`): how long a condemned pack stays
	// before it is deleted, and how old a pack must be to be condemned. It
	// must exceed the longest upload-to-commit of an agent and the longest
	// restore. 0 means DefaultGCGrace.
	Grace time.Duration
}

// grace is the grace period the coordinator's collections use.
func (c GCConfig) grace() time.Duration {
	if c.Grace <= 0 {
		return DefaultGCGrace
	}
	return c.Grace
}

// gcRun is what a tick of the loop did, for tests.
type gcRun struct {
	led    bool // false: another replica leads; nothing was collected
	report gc.Report
	err    error
}

// gcLoop collects every project on each tick, on the leader only.
type gcLoop struct {
	ticks   <-chan time.Time
	lead    func(context.Context) (bool, error)
	collect func(context.Context) (gc.Report, error)
	log     *slog.Logger
	// ran, if set, is told what each tick did (tests).
	ran func(gcRun)
}

// run runs until ctx ends. A run that fails is logged and the next tick
// tries again; a tick that comes while a run is still going is dropped
// (time.Ticker drops ticks a slow receiver misses).
func (l *gcLoop) run(ctx context.Context) {
	for {
		select {
		case <-ctx.Done():
			return
		case <-l.ticks:
		}
		r := l.once(ctx)
		if ctx.Err() != nil {
			return
		}
		if l.ran != nil {
			l.ran(r)
		}
	}
}

func (l *gcLoop) once(ctx context.Context) gcRun {
	led, err := l.lead(ctx)
	if err != nil {
		if ctx.Err() == nil {
			l.log.Warn("gc: leader election failed; skipping this run", "err", err)
		}
		return gcRun{err: err}
	}
	if !led {
		l.log.Debug("gc: another replica leads the background jobs; skipping this run")
		return gcRun{}
	}
	start := time.Now()
	rep, err := l.collect(ctx)
	switch {
	case ctx.Err() != nil:
	case err != nil:
		// With every project, a failure of some leaves the others
		// collected: both are in the report.
		l.log.Error("gc: periodic collection failed", "err", err, "report", rep.String(), "seconds", time.Since(start).Seconds())
	case rep.VersionsDeleted+rep.PacksDeleted+rep.PacksCondemned+rep.PacksRepacked+rep.PacksRescued > 0:
		l.log.Info("gc: periodic collection", "report", rep.String(), "seconds", time.Since(start).Seconds())
	default:
		l.log.Debug("gc: periodic collection found nothing to do", "projects", rep.Projects, "seconds", time.Since(start).Seconds())
	}
	return gcRun{led: true, report: rep, err: err}
}

// backgroundLeader is the metastore.Leader of the background jobs (the
// lifecycle loop and periodic GC share it): nil with SQLite, where this
// coordinator is the only one.
func (s *Server) backgroundLeader() metastore.Leader {
	if s.leader == nil {
		if pg, ok := s.Meta.(*pgstore.Store); ok {
			s.leader = pg.LifecycleLeader()
		}
	}
	return s.leader
}

// collectGarbage is one periodic collection of every project.
func (s *Server) collectGarbage(ctx context.Context) (gc.Report, error) {
	rep, err := gc.Run(ctx, s.Repo, gc.Options{Grace: s.cfg.GC.grace(), URLTTL: s.cfg.URLTTL, Now: s.gcNow, Logger: s.log.With("component", "gc")})
	if s.Metrics != nil && ctx.Err() == nil {
		s.Metrics.ObserveGC(rep.BytesFreed, rep.VersionsDeleted, err == nil)
	}
	return rep, err
}

// runGC starts the periodic collection (unless GC.Interval is 0) and
// returns a function that waits for it to stop once ctx ends.
func (s *Server) runGC(ctx context.Context) (wait func()) {
	ticks, stop := s.gcTicks, func() {}
	if ticks == nil {
		if s.cfg.GC.Interval <= 0 {
			s.log.Info("periodic garbage collection is off (--gc-interval 0)")
			return func() {}
		}
		ticks, stop = gcTicker(min(s.cfg.GC.Interval, FirstGCDelay), s.cfg.GC.Interval)
	}
	leader := s.backgroundLeader()
	l := &gcLoop{
		ticks:   ticks,
		collect: s.collectGarbage,
		log:     s.log.With("component", "gc"),
		ran:     s.gcRan,
		lead: func(ctx context.Context) (bool, error) {
			if leader == nil {
				return true, nil
			}
			return leader.TryLead(ctx)
		},
	}
	done := make(chan struct{})
	go func() {
		defer close(done)
		defer stop()
		l.run(ctx)
	}()
	return func() { <-done }
}

// gcTicker ticks first after it is made, then every interval; like
// time.Ticker it drops ticks a slow receiver misses. stop ends it.
func gcTicker(first, interval time.Duration) (ticks <-chan time.Time, stop func()) {
	ch := make(chan time.Time, 1)
	done := make(chan struct{})
	timer := time.NewTimer(first)
	go func() {
		defer timer.Stop()
		for {
			select {
			case <-done:
				return
			case t := <-timer.C:
				select {
				case ch <- t:
				default:
				}
				timer.Reset(interval)
			}
		}
	}()
	var once sync.Once
	return ch, func() { once.Do(func() { close(done) }) }
}
