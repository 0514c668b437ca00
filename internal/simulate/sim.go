package simulate

import (
	"errors"
	"fmt"
	"math"
	"math/rand/v2"
	"slices"
	"time"

	"github.com/sandkeep/sandkeep/internal/cost"
	"github.com/sandkeep/sandkeep/internal/policy"
)

// Strategy is a way of running the sandboxes of a trace.
type Strategy string

// The strategies, in report order.
const (
	AlwaysOn     Strategy = "always-on"     // never stops
	Timers       Strategy = "timers"        // Daytona's defaults: auto-stop after 15 min idle, auto-archive 7 days later, never destroys
	Sandkeep     Strategy = "sandkeep"      // the policy engine: stop, flush, verify, destroy; restore on the next run
	NaiveDestroy Strategy = "naive-destroy" // the same timers, destroying without a flush: what "files lost" would count without sandkeep
)

// Strategies lists them in report order.
var Strategies = []Strategy{AlwaysOn, Timers, Sandkeep, NaiveDestroy}

// Options are the model's parameters.
type Options struct {
	// Policy is sandkeep's global policy; a project's override in the
	// trace is merged into it. NaiveDestroy uses its StopAfter and
	// DestroyAfter without notify.
	Policy policy.Policy `json:"policy"`
	Rates  cost.Rates    `json:"rates"`
	// TimersStopAfter and TimersArchiveAfter are the Daytona-style
	// timers: auto-stop after idle, auto-archive after that long stopped.
	TimersStopAfter    Duration `json:"timers_stop_after"`
	TimersArchiveAfter Duration `json:"timers_archive_after"`
	// Provider timings, in seconds.
	CreateSeconds        float64 `json:"create_seconds"`         // create a sandbox (agent booted)
	StartSeconds         float64 `json:"start_seconds"`          // start a stopped sandbox
	ArchivedStartSeconds float64 `json:"archived_start_seconds"` // start an archived sandbox
	StopSeconds          float64 `json:"stop_seconds"`           // stop (the agent's final flush included)
	FlushSeconds         float64 `json:"flush_seconds"`          // flush barrier on a started sandbox
	VerifySeconds        float64 `json:"verify_seconds"`         // verify the head's packs
	// Restore of a destroyed project's head into a new sandbox:
	// RestoreBaseSeconds + bytes/RestoreBytesPerSecond + files/RestoreFilesPerSecond.
	RestoreBaseSeconds    float64 `json:"restore_base_seconds"`
	RestoreBytesPerSecond float64 `json:"restore_bytes_per_second"`
	RestoreFilesPerSecond float64 `json:"restore_files_per_second"`
	// FailureRate is the probability that a flush or verify fails, on top
	// of the trace's outages; draws are seeded by Seed and the project.
	FailureRate float64 `json:"failure_rate"`
	Seed        uint64  `json:"seed"`
}

// DefaultOptions is the default model. The timings are assumptions, not
// measurements: Daytona advertises sub-second creation from a snapshot, a
// stopped sandbox restarts in seconds, an archived one is "slower to start";
// restore at 50 MiB/s and 2000 files/s is well under the restore targets of
// DESIGN.md (≤ 0.5 × restic, < 30 s).
func DefaultOptions() Options {
	return Options{
		Policy:                policy.Default(),
		Rates:                 cost.DefaultRates(),
		TimersStopAfter:       Duration(15 * time.Minute),
		TimersArchiveAfter:    Duration(7 * 24 * time.Hour),
		CreateSeconds:         2,
		StartSeconds:          5,
		ArchivedStartSeconds:  60,
		StopSeconds:           3,
		FlushSeconds:          2,
		VerifySeconds:         1,
		RestoreBaseSeconds:    1,
		RestoreBytesPerSecond: 50 << 20,
		RestoreFilesPerSecond: 2000,
		FailureRate:           0.02,
		Seed:                  1,
	}
}

// Validate checks the options.
func (o Options) Validate() error {
	var errs []error
	if err := o.Policy.Validate(); err != nil {
		errs = append(errs, fmt.Errorf("policy: %w", err))
	}
	if o.Policy.DestroyAfter == 0 {
		errs = append(errs, errors.New("policy: the sandkeep strategy needs destroy-after > 0"))
	}
	if err := o.Rates.Validate(); err != nil {
		errs = append(errs, err)
	}
	if o.TimersStopAfter <= 0 || o.TimersArchiveAfter < 0 {
		errs = append(errs, errors.New("timers: stop-after must be positive and archive-after not negative"))
	}
	for _, f := range []struct {
		name string
		v    float64
	}{{"create seconds", o.CreateSeconds}, {"start seconds", o.StartSeconds}, {"archived start seconds", o.ArchivedStartSeconds},
		{"stop seconds", o.StopSeconds}, {"flush seconds", o.FlushSeconds}, {"verify seconds", o.VerifySeconds}, {"restore base seconds", o.RestoreBaseSeconds}} {
		if f.v < 0 || math.IsNaN(f.v) || math.IsInf(f.v, 0) {
			errs = append(errs, fmt.Errorf("%s must be a non-negative number", f.name))
		}
	}
	if !(o.RestoreBytesPerSecond > 0) || !(o.RestoreFilesPerSecond > 0) {
		errs = append(errs, errors.New("restore rates must be positive"))
	}
	if !(o.FailureRate >= 0 && o.FailureRate < 1) {
		errs = append(errs, errors.New("failure rate must be in [0, 1)"))
	}
	return errors.Join(errs...)
}

// RestoreSeconds is the modelled restore time of a workspace.
func (o Options) RestoreSeconds(files, bytes int64) float64 {
	return o.RestoreBaseSeconds + float64(bytes)/o.RestoreBytesPerSecond + float64(files)/o.RestoreFilesPerSecond
}

// policyFor is the policy a strategy runs a project under.
func (o Options) policyFor(s Strategy, p Project) (policy.Policy, error) {
	switch s {
	case AlwaysOn:
		return policy.Policy{}, nil
	case Timers:
		pol := policy.Policy{StopAfter: time.Duration(o.TimersStopAfter)}
		if o.TimersArchiveAfter > 0 {
			pol.ArchiveAfter = time.Duration(o.TimersStopAfter + o.TimersArchiveAfter)
		}
		return pol, nil
	case NaiveDestroy:
		return policy.Policy{StopAfter: o.Policy.StopAfter, DestroyAfter: o.Policy.DestroyAfter}, nil
	}
	pol := o.Policy
	if p.Policy != nil {
		pol = policy.Merge(pol, *p.Policy)
	}
	if err := pol.Validate(); err != nil {
		return pol, fmt.Errorf("project %q policy: %w", p.ID, err)
	}
	if pol.DestroyAfter == 0 {
		return pol, fmt.Errorf("project %q policy: the sandkeep strategy needs destroy-after > 0", p.ID)
	}
	return pol, nil
}

// Tally is what one strategy did to one or many projects.
type Tally struct {
	Usage        cost.Usage
	Creates      int // sandboxes created, the first of each project included
	Starts       int // stopped or archived sandboxes started for a run
	FlushStarts  int // stopped or archived sandboxes started to flush
	Restores     int // runs that found the project destroyed: create + restore
	Waits        []float64
	RestoreWaits []float64
	Runs         int
	FilesWritten int64
	FilesLost    int64
	Actions      map[policy.Action]int
	Failures     map[policy.Action]int // failed flushes and verifies
	Alerts       int
}

func (t *Tally) merge(o Tally) {
	t.Usage.Merge(o.Usage)
	t.Creates += o.Creates
	t.Starts += o.Starts
	t.FlushStarts += o.FlushStarts
	t.Restores += o.Restores
	t.Waits = append(t.Waits, o.Waits...)
	t.RestoreWaits = append(t.RestoreWaits, o.RestoreWaits...)
	t.Runs += o.Runs
	t.FilesWritten += o.FilesWritten
	t.FilesLost += o.FilesLost
	for k, v := range o.Actions {
		if t.Actions == nil {
			t.Actions = map[policy.Action]int{}
		}
		t.Actions[k] += v
	}
	for k, v := range o.Failures {
		if t.Failures == nil {
			t.Failures = map[policy.Action]int{}
		}
		t.Failures[k] += v
	}
	t.Alerts += o.Alerts
}

// maxSteps bounds the event loop of one project, against a policy bug that
// would never let the clock move.
const maxSteps = 5_000_000

func secs(f float64) time.Duration { return time.Duration(f * float64(time.Second)) }

// waiting is a run that arrived while its sandbox was not started.
type waiting struct {
	run     Run
	restore bool // it is waiting for a create + restore
}

type runEnd struct {
	at           time.Time
	files, bytes int64
}

// sim replays one project under one strategy. The clock only moves to the
// next event: a run arriving or ending, a transition or operation
// completing, or the NotBefore of the last decision.
type sim struct {
	strategy Strategy
	pol      policy.Policy
	opt      *Options
	outages  []Window
	rng      *rand.Rand
	end      time.Time

	now        time.Time
	sb         policy.Sandbox
	stateSince time.Time

	// A transition (create, start, stop) blocks runs until busyUntil.
	busyUntil time.Time
	busyThen  func()
	// An operation (flush, verify) completes at opAt without blocking runs.
	opAt   time.Time
	opThen func()

	runs    []Run
	next    int
	waiting []waiting
	ends    []runEnd

	pendingFiles int64 // written and not yet flushed
	wsFiles      int64 // the workspace
	wsBytes      int64
	stored       float64   // bucket bytes (sandkeep only)
	firstReady   time.Time // the project's first sandbox was ready: runs that arrived by then waited for its creation, not for the policy

	t Tally
}

func newSim(s Strategy, pol policy.Policy, opt *Options, tr *Trace, p Project, idx int) *sim {
	return &sim{
		strategy: s, pol: pol, opt: opt, outages: tr.Outages, end: tr.End,
		rng:  rand.New(rand.NewPCG(opt.Seed, uint64(idx)+1)),
		runs: p.Runs,
		t:    Tally{Actions: map[policy.Action]int{}, Failures: map[policy.Action]int{}},
	}
}

// tracksBackup: only sandkeep has an agent and a backup to wait for. The
// other strategies present a backup that is always "ready" to the engine,
// so it never asks them to flush; the naive one therefore destroys
// whatever was written.
func (s *sim) tracksBackup() bool { return s.strategy == Sandkeep }

func (s *sim) enter(st policy.State) {
	if s.sb.State != "" {
		s.t.Usage.AddInterval(s.sb.State, s.stateSince, s.now)
	}
	s.sb.State = st
	s.stateSince = s.now
}

// advance moves the clock, accounting bucket storage.
func (s *sim) advance(t time.Time) {
	if t.After(s.end) {
		t = s.end
	}
	if s.stored > 0 {
		s.t.Usage.AddStorage(s.stored, t.Sub(s.now).Seconds())
	}
	s.now = t
}

func (s *sim) transition(via policy.State, d float64, then func()) {
	s.enter(via)
	s.busyUntil = s.now.Add(secs(d))
	s.busyThen = then
}

func (s *sim) operation(d float64, then func()) {
	s.opAt = s.now.Add(secs(d))
	s.opThen = then
}

func (s *sim) fails() bool {
	x := s.rng.Float64()
	for _, w := range s.outages {
		if !s.now.Before(w.Start) && s.now.Before(w.End) {
			return true
		}
	}
	return x < s.opt.FailureRate
}

func (s *sim) run(p Project) error {
	s.now = p.Created
	s.wsFiles, s.wsBytes = p.InitialFiles, p.InitialBytes
	s.pendingFiles = p.InitialFiles
	if s.strategy == Sandkeep {
		s.stored = float64(p.InitialBytes)
	}
	s.bringUp()
	for steps := 0; s.now.Before(s.end); steps++ {
		if steps > maxSteps {
			return fmt.Errorf("project %q, %s: simulation stuck at %s in %s", p.ID, s.strategy, s.now.Format(time.RFC3339), s.sb.State)
		}
		if !s.busyUntil.IsZero() {
			s.advance(s.busyUntil)
			if s.now.Before(s.busyUntil) {
				break // the trace ended during the transition
			}
			s.busyUntil = time.Time{}
			s.busyThen()
			continue
		}
		if !s.opAt.IsZero() && !s.now.Before(s.opAt) {
			s.opAt = time.Time{}
			s.opThen()
			continue
		}
		s.events()
		if len(s.waiting) > 0 {
			if s.sb.State == policy.StateStarted {
				s.begin()
			} else {
				s.bringUp()
				continue
			}
		}
		next := s.end
		if s.next < len(s.runs) && s.runs[s.next].Start.Before(next) {
			next = s.runs[s.next].Start
		}
		for _, e := range s.ends {
			if e.at.Before(next) {
				next = e.at
			}
		}
		if !s.opAt.IsZero() {
			// No decision while a flush or verify is in flight.
			if s.opAt.Before(next) {
				next = s.opAt
			}
		} else {
			d := s.decide()
			if d.Action != policy.ActionNone {
				s.perform(d)
				continue
			}
			if !d.NotBefore.IsZero() && d.NotBefore.Before(next) {
				next = d.NotBefore
			}
		}
		if !next.After(s.now) {
			return fmt.Errorf("project %q, %s: the clock would not move at %s in %s", p.ID, s.strategy, s.now.Format(time.RFC3339), s.sb.State)
		}
		s.advance(next)
	}
	s.now = s.end
	s.enter(s.sb.State) // close the last interval
	return nil
}

// events applies run ends and arrivals due by now.
func (s *sim) events() {
	kept := s.ends[:0]
	for _, e := range s.ends {
		if e.at.After(s.now) {
			kept = append(kept, e)
			continue
		}
		if e.at.After(s.sb.LastActivity) {
			s.sb.LastActivity = e.at
		}
		s.t.FilesWritten += e.files
		s.pendingFiles += e.files
		s.wsFiles += e.files
		s.wsBytes += e.bytes
		if s.strategy == Sandkeep {
			s.stored += float64(e.bytes)
		}
		if e.files > 0 || e.bytes > 0 {
			s.sb.Backup.Head++ // the agent's sync commits the run's changes
			s.sb.Backup.Clean = false
			s.sb.Backup.Verified = false
		}
	}
	s.ends = kept
	for s.next < len(s.runs) && !s.runs[s.next].Start.After(s.now) {
		s.waiting = append(s.waiting, waiting{run: s.runs[s.next]})
		s.next++
	}
}

// begin starts every waiting run in the started sandbox.
func (s *sim) begin() {
	for _, w := range s.waiting {
		s.t.Runs++
		if wait := s.now.Sub(w.run.Start).Seconds(); wait > 0 && w.run.Start.After(s.firstReady) {
			s.t.Waits = append(s.t.Waits, wait)
			if w.restore {
				s.t.RestoreWaits = append(s.t.RestoreWaits, wait)
			}
		}
		end := s.now.Add(time.Duration(w.run.Duration))
		if end.After(s.sb.LeaseUntil) {
			s.sb.LeaseUntil = end
		}
		s.sb.LastActivity = s.now
		s.ends = append(s.ends, runEnd{at: end, files: w.run.Files, bytes: w.run.Bytes})
	}
	s.waiting = s.waiting[:0]
}

// bringUp makes the sandbox ready for the waiting runs (or creates the
// project's first sandbox): start a stopped or archived one, create and
// restore a destroyed one. A transition in progress finishes first.
func (s *sim) bringUp() {
	started := func() {
		s.enter(policy.StateStarted)
		if s.sb.LastActivity.Before(s.now) {
			s.sb.LastActivity = s.now
		}
		if s.firstReady.IsZero() {
			s.firstReady = s.now
		}
	}
	switch s.sb.State {
	case "":
		s.t.Creates++
		s.transition(policy.StateCreating, s.opt.CreateSeconds, started)
	case policy.StateStopped, policy.StateArchived:
		s.t.Starts++
		d := s.opt.StartSeconds
		if s.sb.State == policy.StateArchived {
			d = s.opt.ArchivedStartSeconds
		}
		s.transition(policy.StateStarting, d, started)
	case policy.StateDestroyed:
		s.t.Creates++
		restore := 0.0
		if s.strategy == Sandkeep {
			s.t.Restores++
			restore = s.opt.RestoreSeconds(s.wsFiles, s.wsBytes)
			for i := range s.waiting {
				s.waiting[i].restore = true
			}
		} else {
			s.wsFiles, s.wsBytes = 0, 0 // nothing to restore: the workspace was lost
		}
		// The agent restores inside the new sandbox: creating, then
		// started while it restores; the run waits for both.
		s.transition(policy.StateCreating, s.opt.CreateSeconds, func() {
			s.enter(policy.StateStarted)
			s.busyUntil = s.now.Add(secs(restore))
			s.busyThen = started
		})
	default:
		panic("simulate: bring up from " + string(s.sb.State))
	}
}

func (s *sim) decide() policy.Decision {
	if !s.tracksBackup() {
		s.sb.Backup = policy.BackupStatus{Clean: true, Verified: true, CleanVersion: s.sb.Backup.Head, Head: s.sb.Backup.Head}
	}
	d := policy.Decide(s.now, s.pol, s.sb)
	if d.Alert {
		s.t.Alerts++
	}
	return d
}

func (s *sim) perform(d policy.Decision) {
	s.t.Actions[d.Action]++
	switch d.Action {
	case policy.ActionNotify:
		if s.sb.NotifiedAt == nil {
			s.sb.NotifiedAt = map[policy.Action]time.Time{}
		}
		s.sb.NotifiedAt[d.For] = s.now
	case policy.ActionStop:
		s.transition(policy.StateStopping, s.opt.StopSeconds, func() { s.enter(policy.StateStopped) })
	case policy.ActionArchive:
		s.enter(policy.StateArchived)
	case policy.ActionDestroy:
		s.t.FilesLost += s.pendingFiles
		s.pendingFiles = 0
		s.enter(policy.StateDestroyed)
	case policy.ActionDeleteHistory:
		s.sb.HistoryDeleted = true
		s.stored = 0
	case policy.ActionFlush:
		flush := func() {
			// The barrier covers what was written before it began.
			head, pending := s.sb.Backup.Head, s.pendingFiles
			s.operation(s.opt.FlushSeconds, func() {
				b := &s.sb.Backup
				b.LastAttempt = s.now
				if s.fails() {
					s.t.Failures[policy.ActionFlush]++
					b.FlushFailures++
					b.LastFlushError = "bucket unavailable (simulated)"
					return
				}
				s.pendingFiles -= pending
				b.Clean, b.CleanVersion = b.Head == head, head
				b.FlushFailures, b.LastFlushError = 0, ""
			})
		}
		switch s.sb.State {
		case policy.StateStarted, policy.StateError:
			flush()
		case policy.StateStopped, policy.StateArchived:
			// Its agent must run to flush: start it, then flush; the
			// engine stops it again.
			s.t.FlushStarts++
			d := s.opt.StartSeconds
			if s.sb.State == policy.StateArchived {
				d = s.opt.ArchivedStartSeconds
			}
			s.transition(policy.StateStarting, d, func() { s.enter(policy.StateStarted); flush() })
		default:
			panic("simulate: flush in " + string(s.sb.State))
		}
	case policy.ActionVerify:
		head := s.sb.Backup.Head
		s.operation(s.opt.VerifySeconds, func() {
			b := &s.sb.Backup
			b.LastAttempt = s.now
			if s.fails() {
				s.t.Failures[policy.ActionVerify]++
				b.FlushFailures++
				b.LastFlushError = "verify: bucket unavailable (simulated)"
				return
			}
			b.Verified = b.Head == head
			b.FlushFailures, b.LastFlushError = 0, ""
		})
	default:
		panic("simulate: unknown action " + string(d.Action))
	}
}

// Simulate replays every project of the trace under one strategy.
func Simulate(tr *Trace, s Strategy, opt Options) (Tally, error) {
	var total Tally
	for i, p := range tr.Projects {
		pol, err := opt.policyFor(s, p)
		if err != nil {
			return Tally{}, err
		}
		sm := newSim(s, pol, &opt, tr, p, i)
		if err := sm.run(p); err != nil {
			return Tally{}, err
		}
		total.merge(sm.t)
	}
	slices.Sort(total.Waits)
	slices.Sort(total.RestoreWaits)
	return total, nil
}
