// Package policy is sandkeep's lifecycle decision engine: given a sandbox's
// state, its last activity, its run lease and its backup status, Decide says
// what the coordinator should do with it next (nothing, notify, flush,
// verify, stop, archive, destroy, delete the project's history) and when to
// look again. The coordinator's lifecycle manager and `sandkeep simulate`
// both call Decide, so a simulation replays the real rules.
//
// Everything here is a pure function of its arguments: no clock, no I/O, no
// randomness. The caller performs the action, records its outcome in the
// Sandbox (NotifiedAt, Backup, State, …) and calls Decide again.
//
// # The rules
//
//  1. Lease. A sandbox whose run lease is held (LeaseUntil > now) is left
//     alone, whatever its state: nothing is stopped, flushed or destroyed
//     under a run. Look again when the lease ends.
//  2. Idle. Activity is max(LastActivity, LeaseUntil): agent heartbeats
//     that report file changes, and run leases (a lease counts as activity
//     until it ends; record an early release by setting LeaseUntil to the
//     release time). idle = now − activity. Nothing else (CPU, guesses)
//     counts. The manager sets LastActivity when it creates a sandbox.
//  3. Which cleanup. started → stop after StopAfter. stopped → archive after
//     ArchiveAfter, destroy after DestroyAfter (the later one wins once its
//     notify point is reached, so a sandbox idle past both is destroyed, not
//     archived first). archived → destroy after DestroyAfter. destroyed →
//     delete_history after DeleteHistoryAfter (only once destroyed: history
//     is never deleted while a sandbox holds the only copy). A zero
//     duration means never. Stop always comes before destroy: a started
//     sandbox is stopped first, never destroyed directly.
//  4. Notify. With NotifyGrace > 0, each cleanup is announced (Action
//     notify, For = the cleanup) NotifyGrace before it is due, and runs no
//     earlier than NotifyGrace after the announcement, nor before
//     ExtendedUntil (the platform's answer to the webhook). A notification
//     older than the last activity belongs to an earlier idle period and is
//     ignored, so the caller never has to clear NotifiedAt.
//  5. Backup gate. Destroy needs Backup.Clean &&
//     Backup.Verified && Backup.CleanVersion == Backup.Head. Otherwise the
//     decision is flush (when not clean at the head) or verify (clean but
//     not verified), For = the cleanup. On a stopped or archived sandbox a
//     flush means the manager must start it so its agent can flush.
//     delete_history has no gate: it deletes the backup on purpose, and
//     only once the sandbox is destroyed (which passed the gate).
//  6. Failures. After a failed flush or verify (FlushFailures > 0) the next
//     attempt waits Backoff(FlushFailures) after LastAttempt; until then the
//     decision is none with NotBefore = the retry time. Every such decision
//     has Alert set and a Reason that starts with "alert:". A failed flush
//     or verify never leads to destroy: only a later success opens the gate.
//  7. Flush before stop. A started sandbox due to stop is flushed first when
//     its backup is not clean at the head (its agent is running now; once
//     stopped it would have to be started again to flush). If that flush
//     failed and its retry is not due yet, it is stopped anyway, with an
//     alert: stopping keeps the disk, so nothing is lost, and destroy still
//     waits for a verified flush.
//  8. Error state. A sandbox in error is flushed (then verified) at once,
//     whatever its idle time, with the backoff of rule 6; it is destroyed
//     only through the gate of rule 5, after DestroyAfter idle.
//  9. Transitions. creating, starting and stopping are in progress: none,
//     look again after TransitionRecheck. An unknown state is an alert.
//
// Decision.NotBefore is when the decision can next change if nothing else
// happens (zero: not until something changes). For an action it is zero:
// perform it, record the outcome and call Decide again.
//
// Decide expects a policy that passed Validate (after Merge); given any
// other it still returns a decision and never panics.
package policy

import (
	"encoding/json"
	"errors"
	"fmt"
	"time"

	"github.com/sandkeep/sandkeep/internal/retry"
	"github.com/sandkeep/sandkeep/internal/sandboxstate"
)

// State is a sandbox's lifecycle state (package sandboxstate: the same
// type as provider.State).
type State = sandboxstate.State

// The sandbox states.
const (
	StateCreating  = sandboxstate.Creating
	StateStarting  = sandboxstate.Starting
	StateStarted   = sandboxstate.Started
	StateStopping  = sandboxstate.Stopping
	StateStopped   = sandboxstate.Stopped
	StateArchived  = sandboxstate.Archived
	StateDestroyed = sandboxstate.Destroyed
	StateError     = sandboxstate.Error
)

// States lists every state in lifecycle order.
var States = sandboxstate.All()

// Action is what Decide asks the caller to do.
type Action string

// The actions.
const (
	ActionNone          Action = "none"
	ActionNotify        Action = "notify"
	ActionStop          Action = "stop"
	ActionFlush         Action = "flush"
	ActionVerify        Action = "verify"
	ActionDestroy       Action = "destroy"
	ActionArchive       Action = "archive"
	ActionDeleteHistory Action = "delete_history"
)

// Retry backoff after failed flushes or verifies, and the recheck interval of
// transitional states.
const (
	RetryBase         = 30 * time.Second
	RetryMax          = 30 * time.Minute
	TransitionRecheck = 30 * time.Second
)

// Policy holds the idle thresholds of one project. Zero means never, except
// that Default fills in StopAfter, DestroyAfter and NotifyGrace.
type Policy struct {
	StopAfter          time.Duration // idle → stop
	DestroyAfter       time.Duration // idle → destroy, only once flushed and verified
	ArchiveAfter       time.Duration // idle → archive a stopped sandbox (0: never)
	DeleteHistoryAfter time.Duration // idle → delete the project's version history (0: never)
	NotifyGrace        time.Duration // webhook this long before each cleanup (0: no webhook)
}

// Default is the global policy unless configured: stop after 10 minutes idle,
// destroy after an hour once flushed and verified, never archive, never
// delete history, notify 5 minutes before each cleanup.
func Default() Policy {
	return Policy{
		StopAfter:    10 * time.Minute,
		DestroyAfter: time.Hour,
		NotifyGrace:  5 * time.Minute,
	}
}

// Validate reports a policy whose thresholds contradict each other.
func (p Policy) Validate() error {
	var errs []error
	for _, f := range []struct {
		name string
		d    time.Duration
	}{{"stop-after", p.StopAfter}, {"destroy-after", p.DestroyAfter}, {"archive-after", p.ArchiveAfter}, {"delete-history-after", p.DeleteHistoryAfter}, {"notify-grace", p.NotifyGrace}} {
		if f.d < 0 {
			errs = append(errs, fmt.Errorf("%s must not be negative (%s)", f.name, f.d))
		}
	}
	if p.DestroyAfter > 0 {
		switch {
		case p.StopAfter == 0:
			errs = append(errs, errors.New("destroy-after needs stop-after: a sandbox is stopped before it is destroyed"))
		case p.DestroyAfter < p.StopAfter:
			errs = append(errs, fmt.Errorf("destroy-after (%s) must not be shorter than stop-after (%s)", p.DestroyAfter, p.StopAfter))
		}
	}
	if p.ArchiveAfter > 0 {
		switch {
		case p.StopAfter == 0:
			errs = append(errs, errors.New("archive-after needs stop-after: only a stopped sandbox is archived"))
		case p.ArchiveAfter < p.StopAfter:
			errs = append(errs, fmt.Errorf("archive-after (%s) must not be shorter than stop-after (%s)", p.ArchiveAfter, p.StopAfter))
		}
		if p.DestroyAfter > 0 && p.ArchiveAfter >= p.DestroyAfter {
			errs = append(errs, fmt.Errorf("archive-after (%s) must be shorter than destroy-after (%s), or it never happens", p.ArchiveAfter, p.DestroyAfter))
		}
	}
	if p.DeleteHistoryAfter > 0 {
		switch {
		case p.DestroyAfter == 0:
			errs = append(errs, errors.New("delete-history-after needs destroy-after: history is deleted only once the sandbox is destroyed"))
		case p.DeleteHistoryAfter < p.DestroyAfter:
			errs = append(errs, fmt.Errorf("delete-history-after (%s) must not be shorter than destroy-after (%s)", p.DeleteHistoryAfter, p.DestroyAfter))
		}
	}
	if p.NotifyGrace > 0 && p.StopAfter > 0 && p.NotifyGrace >= p.StopAfter {
		errs = append(errs, fmt.Errorf("notify-grace (%s) must be shorter than stop-after (%s): the webhook fires while the sandbox is idle", p.NotifyGrace, p.StopAfter))
	}
	return errors.Join(errs...)
}

// Override is a per-project policy: a nil field inherits the global value,
// a set one (zero included, meaning never) replaces it.
type Override struct {
	StopAfter          *time.Duration
	DestroyAfter       *time.Duration
	ArchiveAfter       *time.Duration
	DeleteHistoryAfter *time.Duration
	NotifyGrace        *time.Duration
}

// Merge applies a project's override to the global policy. The result is
// not validated: call Validate on it.
func Merge(global Policy, o Override) Policy {
	p := global
	set := func(dst *time.Duration, src *time.Duration) {
		if src != nil {
			*dst = *src
		}
	}
	set(&p.StopAfter, o.StopAfter)
	set(&p.DestroyAfter, o.DestroyAfter)
	set(&p.ArchiveAfter, o.ArchiveAfter)
	set(&p.DeleteHistoryAfter, o.DeleteHistoryAfter)
	set(&p.NotifyGrace, o.NotifyGrace)
	return p
}

// policyJSON is the JSON form of Policy and Override: Go duration strings
// ("10m0s"; "0s" means never).
type policyJSON struct {
	StopAfter          *string `json:"stop_after,omitempty"`
	DestroyAfter       *string `json:"destroy_after,omitempty"`
	ArchiveAfter       *string `json:"archive_after,omitempty"`
	DeleteHistoryAfter *string `json:"delete_history_after,omitempty"`
	NotifyGrace        *string `json:"notify_grace,omitempty"`
}

func durString(d time.Duration) *string { s := d.String(); return &s }

func durPtr(d *time.Duration) *string {
	if d == nil {
		return nil
	}
	return durString(*d)
}

func parseDur(name string, s *string) (*time.Duration, error) {
	if s == nil {
		return nil, nil
	}
	d, err := time.ParseDuration(*s)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", name, err)
	}
	return &d, nil
}

func (j policyJSON) override() (Override, error) {
	var o Override
	var err error
	for _, f := range []struct {
		name string
		src  *string
		dst  **time.Duration
	}{
		{"stop_after", j.StopAfter, &o.StopAfter},
		{"destroy_after", j.DestroyAfter, &o.DestroyAfter},
		{"archive_after", j.ArchiveAfter, &o.ArchiveAfter},
		{"delete_history_after", j.DeleteHistoryAfter, &o.DeleteHistoryAfter},
		{"notify_grace", j.NotifyGrace, &o.NotifyGrace},
	} {
		if *f.dst, err = parseDur(f.name, f.src); err != nil {
			return Override{}, err
		}
	}
	return o, nil
}

// MarshalJSON writes every field as a Go duration string.
func (p Policy) MarshalJSON() ([]byte, error) {
	return json.Marshal(policyJSON{
		StopAfter: durString(p.StopAfter), DestroyAfter: durString(p.DestroyAfter),
		ArchiveAfter: durString(p.ArchiveAfter), DeleteHistoryAfter: durString(p.DeleteHistoryAfter),
		NotifyGrace: durString(p.NotifyGrace),
	})
}

// UnmarshalJSON reads duration strings; a missing field is zero (never).
func (p *Policy) UnmarshalJSON(b []byte) error {
	var j policyJSON
	if err := json.Unmarshal(b, &j); err != nil {
		return err
	}
	o, err := j.override()
	if err != nil {
		return err
	}
	*p = Merge(Policy{}, o)
	return nil
}

// MarshalJSON writes the set fields as Go duration strings.
func (o Override) MarshalJSON() ([]byte, error) {
	return json.Marshal(policyJSON{
		StopAfter: durPtr(o.StopAfter), DestroyAfter: durPtr(o.DestroyAfter),
		ArchiveAfter: durPtr(o.ArchiveAfter), DeleteHistoryAfter: durPtr(o.DeleteHistoryAfter),
		NotifyGrace: durPtr(o.NotifyGrace),
	})
}

// UnmarshalJSON reads duration strings; a missing field stays unset.
func (o *Override) UnmarshalJSON(b []byte) error {
	var j policyJSON
	if err := json.Unmarshal(b, &j); err != nil {
		return err
	}
	v, err := j.override()
	if err != nil {
		return err
	}
	*o = v
	return nil
}

// BackupStatus is what the coordinator knows of a sandbox's backup.
type BackupStatus struct {
	// Clean: the last flush barrier confirmed that every change made in the
	// sandbox before it is committed, at CleanVersion. A later file change
	// clears it.
	Clean        bool
	CleanVersion int64
	// Head is the project's head version.
	Head int64
	// Verified: every pack the head references exists in the bucket.
	// Cleared whenever Head moves.
	Verified bool
	// LastFlushError is the error of the last failed flush or verify.
	LastFlushError string
	// FlushFailures counts consecutive failed flushes or verifies; a
	// success resets it to 0.
	FlushFailures int
	// LastAttempt is when the last flush or verify attempt ended.
	LastAttempt time.Time
}

// Ready reports whether the backup lets the sandbox be destroyed: clean at
// the head and the head verified.
func (b BackupStatus) Ready() bool {
	return b.Clean && b.Verified && b.CleanVersion == b.Head
}

// Sandbox is what Decide needs to know about one sandbox.
type Sandbox struct {
	State        State
	LastActivity time.Time // last agent heartbeat reporting changes (or creation)
	LeaseUntil   time.Time // end of the run lease; after now → never reaped
	Backup       BackupStatus
	// NotifiedAt holds when each cleanup was announced.
	NotifiedAt map[Action]time.Time
	// ExtendedUntil: the platform asked to postpone cleanups until then.
	ExtendedUntil time.Time
	// HistoryDeleted: the project's version history is gone.
	HistoryDeleted bool
}

// Decision is what to do next.
type Decision struct {
	Action Action
	// For is the cleanup a notify announces or a flush/verify prepares.
	For    Action
	Reason string
	// Alert: a flush or verify failed, or the state is unknown; page someone.
	Alert bool
	// NotBefore is when to look again if nothing changes (zero: not until
	// something changes).
	NotBefore time.Time
}

// Backoff is the wait before the next attempt after n consecutive failed
// flushes or verifies: RetryBase doubled per failure, at most RetryMax.
func Backoff(n int) time.Duration {
	if n <= 0 {
		return 0
	}
	// No jitter: decisions are replayed (simulate) and tested on a fake
	// clock; the loop's own pace spreads the retries.
	return retry.Backoff{Min: RetryBase, Max: RetryMax}.Delay(n)
}

func none(reason string, notBefore time.Time) Decision {
	return Decision{Action: ActionNone, Reason: reason, NotBefore: notBefore}
}

func ts(t time.Time) string { return t.UTC().Format(time.RFC3339) }

// Decide applies the rules of the package documentation.
func Decide(now time.Time, p Policy, s Sandbox) Decision {
	if s.LeaseUntil.After(now) {
		return none("run lease held until "+ts(s.LeaseUntil), s.LeaseUntil)
	}
	activity := s.LastActivity
	if s.LeaseUntil.After(activity) {
		activity = s.LeaseUntil
	}
	e := engine{now: now, p: p, s: s, activity: activity}
	switch s.State {
	case StateCreating, StateStarting, StateStopping:
		return none(string(s.State)+" in progress", now.Add(TransitionRecheck))
	case StateStarted:
		return e.cleanup(cleanupCandidates{{ActionStop, p.StopAfter}})
	case StateStopped:
		return e.cleanup(cleanupCandidates{{ActionArchive, p.ArchiveAfter}, {ActionDestroy, p.DestroyAfter}})
	case StateArchived:
		return e.cleanup(cleanupCandidates{{ActionDestroy, p.DestroyAfter}})
	case StateDestroyed:
		if s.HistoryDeleted {
			return none("destroyed, history deleted", time.Time{})
		}
		return e.cleanup(cleanupCandidates{{ActionDeleteHistory, p.DeleteHistoryAfter}})
	case StateError:
		if !s.Backup.Ready() {
			return e.prepare(ActionDestroy, "sandbox in error")
		}
		return e.cleanup(cleanupCandidates{{ActionDestroy, p.DestroyAfter}})
	}
	d := none(fmt.Sprintf("alert: unknown sandbox state %q", s.State), time.Time{})
	d.Alert = true
	return d
}

type engine struct {
	now      time.Time
	p        Policy
	s        Sandbox
	activity time.Time
}

type cleanupCandidates []struct {
	action Action
	after  time.Duration
}

// notifyAt is when the cleanup after d of idle is announced: NotifyGrace
// before it is due, but not before the idle period began.
func (e engine) notifyAt(d time.Duration) time.Time {
	t := e.activity.Add(d - e.p.NotifyGrace)
	if t.Before(e.activity) {
		t = e.activity
	}
	return t
}

// cleanup picks, among the enabled candidates, the one with the longest
// threshold whose notify point has passed, and walks it through notify,
// grace, backup gate and action. With none reached it waits for the nearest.
func (e engine) cleanup(cands cleanupCandidates) Decision {
	var pick Action
	var after time.Duration
	var next time.Time
	for _, c := range cands {
		if c.after <= 0 {
			continue
		}
		at := e.notifyAt(c.after)
		if !e.now.Before(at) {
			if pick == "" || c.after > after {
				pick, after = c.action, c.after
			}
		} else if next.IsZero() || at.Before(next) {
			next = at
		}
	}
	if pick == "" {
		if next.IsZero() {
			return none(fmt.Sprintf("%s; no cleanup configured", e.s.State), time.Time{})
		}
		return none(fmt.Sprintf("%s, idle %s", e.s.State, e.idle()), next)
	}
	due := e.activity.Add(after)
	if e.p.NotifyGrace > 0 {
		n, ok := e.s.NotifiedAt[pick]
		if !ok || n.Before(e.activity) {
			return Decision{Action: ActionNotify, For: pick,
				Reason: fmt.Sprintf("idle %s: %s due at %s", e.idle(), pick, ts(maxTime(due, e.now.Add(e.p.NotifyGrace))))}
		}
		due = maxTime(due, n.Add(e.p.NotifyGrace))
	}
	if e.s.ExtendedUntil.After(due) {
		due = e.s.ExtendedUntil
	}
	if e.now.Before(due) {
		return none(fmt.Sprintf("idle %s: %s due at %s", e.idle(), pick, ts(due)), due)
	}
	switch pick {
	case ActionStop:
		return e.stop()
	case ActionDestroy:
		if !e.s.Backup.Ready() {
			return e.prepare(pick, fmt.Sprintf("idle %s", e.idle()))
		}
	}
	return Decision{Action: pick, Reason: fmt.Sprintf("idle %s (%s after %s)", e.idle(), pick, after)}
}

// stop is rule 7: flush first when dirty, stop anyway while a failed flush
// waits for its retry.
func (e engine) stop() Decision {
	b := e.s.Backup
	clean := b.Clean && b.CleanVersion == b.Head
	if clean {
		return Decision{Action: ActionStop, Reason: fmt.Sprintf("idle %s (stop after %s)", e.idle(), e.p.StopAfter)}
	}
	if b.FlushFailures == 0 {
		return Decision{Action: ActionFlush, For: ActionStop, Reason: fmt.Sprintf("idle %s: flush before stop", e.idle())}
	}
	retry := b.LastAttempt.Add(Backoff(b.FlushFailures))
	if !e.now.Before(retry) {
		return Decision{Action: ActionFlush, For: ActionStop, Alert: true,
			Reason: fmt.Sprintf("alert: retrying flush before stop after %d failures (last: %s)", b.FlushFailures, b.LastFlushError)}
	}
	return Decision{Action: ActionStop, Alert: true,
		Reason: fmt.Sprintf("alert: stopping with unflushed changes after %d failed flushes (last: %s); stop keeps the disk, destroy waits for a verified flush", b.FlushFailures, b.LastFlushError)}
}

// prepare is rules 5 and 6: flush or verify towards cleanup, with backoff
// after failures. Never returns the cleanup itself.
func (e engine) prepare(cleanup Action, why string) Decision {
	b := e.s.Backup
	act, what := ActionVerify, fmt.Sprintf("head %d not verified", b.Head)
	if !b.Clean || b.CleanVersion != b.Head {
		act = ActionFlush
		if b.Clean {
			what = fmt.Sprintf("clean at %d but head is %d", b.CleanVersion, b.Head)
		} else {
			what = "backup not clean"
		}
	}
	if b.FlushFailures > 0 {
		retry := b.LastAttempt.Add(Backoff(b.FlushFailures))
		if e.now.Before(retry) {
			return Decision{Action: ActionNone, For: cleanup, Alert: true, NotBefore: retry,
				Reason: fmt.Sprintf("alert: %s: %d failed flush/verify attempts (last: %s); not destroying; %s retry at %s", why, b.FlushFailures, b.LastFlushError, act, ts(retry))}
		}
		return Decision{Action: act, For: cleanup, Alert: true,
			Reason: fmt.Sprintf("alert: %s: %s; retrying %s after %d failures (last: %s)", why, what, act, b.FlushFailures, b.LastFlushError)}
	}
	return Decision{Action: act, For: cleanup, Reason: fmt.Sprintf("%s: %s; %s before %s", why, what, act, cleanup)}
}

func (e engine) idle() time.Duration { return e.now.Sub(e.activity).Round(time.Second) }

func maxTime(a, b time.Time) time.Time {
	if b.After(a) {
		return b
	}
	return a
}
