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

// jobRun is what a tick of a leader's periodic job did, for tests.
type jobRun[R any] struct {
	led    bool // false: another replica leads; nothing was done
	report R
	err    error
}

// gcRun is what a tick of the periodic collection did.
type gcRun = jobRun[gc.Report]

// jobLoop runs a background job on each tick, on the leader only (the
// periodic collection, the periodic scrub).
type jobLoop[R any] struct {
	name  string
	ticks <-chan time.Time
	lead  func(context.Context) (bool, error)
	work  func(context.Context) (R, error)
	// done logs the outcome of a run that was not cancelled.
	done func(r R, err error, took time.Duration)
	log  *slog.Logger
	// ran, if set, is told what each tick did (tests).
	ran func(jobRun[R])
}

// run runs until ctx ends. A run that fails is logged and the next tick
// tries again; a tick that comes while a run is still going is dropped
// (time.Ticker drops ticks a slow receiver misses).
func (l *jobLoop[R]) run(ctx context.Context) {
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

func (l *jobLoop[R]) once(ctx context.Context) jobRun[R] {
	led, err := l.lead(ctx)
	if err != nil {
		if ctx.Err() == nil {
			l.log.Warn(l.name+": leader election failed; skipping this run", "err", err)
		}
		return jobRun[R]{err: err}
	}
	if !led {
		l.log.Debug(l.name + ": another replica leads the background jobs; skipping this run")
		return jobRun[R]{}
	}
	start := time.Now()
	rep, err := l.work(ctx)
	if ctx.Err() == nil && l.done != nil {
		l.done(rep, err, time.Since(start))
	}
	return jobRun[R]{led: true, report: rep, err: err}
}

// gcDone logs a periodic collection.
func (s *Server) gcDone(log *slog.Logger) func(gc.Report, error, time.Duration) {
	return func(rep gc.Report, err error, took time.Duration) {
		switch {
		case err != nil:
			// With every project, a failure of some leaves the others
			// collected: both are in the report.
			log.Error("gc: periodic collection failed", "err", err, "report", rep.String(), "seconds", took.Seconds())
		case rep.VersionsDeleted+rep.PacksDeleted+rep.PacksCondemned+rep.PacksRepacked+rep.PacksRescued > 0:
			log.Info("gc: periodic collection", "report", rep.String(), "seconds", took.Seconds())
		default:
			log.Debug("gc: periodic collection found nothing to do", "projects", rep.Projects, "seconds", took.Seconds())
		}
	}
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

// leads says whether this replica leads the background jobs (always, on
// SQLite).
func (s *Server) leads(ctx context.Context) (bool, error) {
	leader := s.backgroundLeader()
	if leader == nil {
		return true, nil
	}
	return leader.TryLead(ctx)
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
	log := s.log.With("component", "gc")
	l := &jobLoop[gc.Report]{name: "gc", ticks: ticks, work: s.collectGarbage, done: s.gcDone(log), log: log, ran: s.gcRan, lead: s.leads}
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
