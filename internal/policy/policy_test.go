package policy

import (
	"encoding/json"
	"math/rand/v2"
	"strings"
	"testing"
	"time"
)

var t0 = time.Date(2026, 3, 2, 9, 0, 0, 0, time.UTC)

func at(d time.Duration) time.Time { return t0.Add(d) }

func dur(d time.Duration) *time.Duration { return &d }

var (
	clean    = BackupStatus{Clean: true, CleanVersion: 7, Head: 7}
	ready    = BackupStatus{Clean: true, CleanVersion: 7, Head: 7, Verified: true}
	dirty    = BackupStatus{CleanVersion: 6, Head: 7}
	behind   = BackupStatus{Clean: true, CleanVersion: 6, Head: 7}
	failed3  = BackupStatus{CleanVersion: 6, Head: 7, FlushFailures: 3, LastFlushError: "s3 down", LastAttempt: at(70 * time.Minute)}
	vfailed1 = BackupStatus{Clean: true, CleanVersion: 7, Head: 7, FlushFailures: 1, LastFlushError: "pack missing", LastAttempt: at(70 * time.Minute)}
)

func notified(a Action, d time.Duration) map[Action]time.Time { return map[Action]time.Time{a: at(d)} }

func TestDecide(t *testing.T) {
	def := Default() // stop 10m, destroy 1h, grace 5m
	noGrace := Policy{StopAfter: 10 * time.Minute, DestroyAfter: time.Hour}
	archive := Policy{StopAfter: 10 * time.Minute, ArchiveAfter: 2 * time.Hour, DestroyAfter: 24 * time.Hour, NotifyGrace: 5 * time.Minute}
	history := Policy{StopAfter: 10 * time.Minute, DestroyAfter: time.Hour, DeleteHistoryAfter: 30 * 24 * time.Hour, NotifyGrace: 5 * time.Minute}
	tests := []struct {
		name      string
		now       time.Duration // since t0; LastActivity is t0 unless set
		p         Policy
		s         Sandbox
		action    Action
		forAction Action
		alert     bool
		notBefore time.Duration // -1: zero time
		reason    string        // substring
	}{
		// Rule 1: lease.
		{name: "lease held: never stopped", now: 3 * time.Hour, p: def, s: Sandbox{State: StateStarted, LeaseUntil: at(4 * time.Hour), Backup: ready},
			action: ActionNone, notBefore: 4 * time.Hour, reason: "run lease"},
		{name: "lease held: never destroyed", now: 3 * time.Hour, p: def, s: Sandbox{State: StateStopped, LeaseUntil: at(4 * time.Hour), Backup: ready, NotifiedAt: notified(ActionDestroy, 0)},
			action: ActionNone, notBefore: 4 * time.Hour},
		{name: "lease held on an errored sandbox", now: 3 * time.Hour, p: def, s: Sandbox{State: StateError, LeaseUntil: at(4 * time.Hour), Backup: dirty},
			action: ActionNone, notBefore: 4 * time.Hour},
		// Rule 2: a lease counts as activity until it ends.
		{name: "expired lease is the last activity", now: 2*time.Hour + 3*time.Minute, p: def, s: Sandbox{State: StateStarted, LeaseUntil: at(2 * time.Hour), Backup: clean},
			action: ActionNone, notBefore: 2*time.Hour + 5*time.Minute},
		{name: "heartbeat after the lease is the last activity", now: 2*time.Hour + 3*time.Minute, p: def, s: Sandbox{State: StateStarted, LastActivity: at(2 * time.Hour), LeaseUntil: at(time.Hour), Backup: clean},
			action: ActionNone, notBefore: 2*time.Hour + 5*time.Minute},
		// Rule 9: transitions and unknown states.
		{name: "creating", now: time.Hour, p: def, s: Sandbox{State: StateCreating}, action: ActionNone, notBefore: time.Hour + TransitionRecheck},
		{name: "starting", now: time.Hour, p: def, s: Sandbox{State: StateStarting}, action: ActionNone, notBefore: time.Hour + TransitionRecheck},
		{name: "stopping", now: time.Hour, p: def, s: Sandbox{State: StateStopping}, action: ActionNone, notBefore: time.Hour + TransitionRecheck},
		{name: "unknown state", now: time.Hour, p: def, s: Sandbox{State: "paused"}, action: ActionNone, alert: true, notBefore: -1, reason: "alert: unknown"},
		// Rules 3, 4: started → notify → stop.
		{name: "started, busy", now: 2 * time.Minute, p: def, s: Sandbox{State: StateStarted, Backup: clean},
			action: ActionNone, notBefore: 5 * time.Minute, reason: "idle 2m0s"},
		{name: "started, notify point", now: 5 * time.Minute, p: def, s: Sandbox{State: StateStarted, Backup: clean},
			action: ActionNotify, forAction: ActionStop, notBefore: -1},
		{name: "stale notification from an earlier idle period", now: 6 * time.Minute, p: def, s: Sandbox{State: StateStarted, Backup: clean, NotifiedAt: notified(ActionStop, -time.Hour)},
			action: ActionNotify, forAction: ActionStop, notBefore: -1},
		{name: "notified, in grace", now: 7 * time.Minute, p: def, s: Sandbox{State: StateStarted, Backup: clean, NotifiedAt: notified(ActionStop, 5*time.Minute)},
			action: ActionNone, notBefore: 10 * time.Minute, reason: "stop due"},
		{name: "notified late: grace runs from the notification", now: 12 * time.Minute, p: def, s: Sandbox{State: StateStarted, Backup: clean, NotifiedAt: notified(ActionStop, 9*time.Minute)},
			action: ActionNone, notBefore: 14 * time.Minute},
		{name: "notified, due, clean: stop", now: 10 * time.Minute, p: def, s: Sandbox{State: StateStarted, Backup: clean, NotifiedAt: notified(ActionStop, 5*time.Minute)},
			action: ActionStop, notBefore: -1},
		{name: "extended by the platform", now: 10 * time.Minute, p: def, s: Sandbox{State: StateStarted, Backup: clean, NotifiedAt: notified(ActionStop, 5*time.Minute), ExtendedUntil: at(40 * time.Minute)},
			action: ActionNone, notBefore: 40 * time.Minute},
		{name: "extension over", now: 40 * time.Minute, p: def, s: Sandbox{State: StateStarted, Backup: clean, NotifiedAt: notified(ActionStop, 5*time.Minute), ExtendedUntil: at(40 * time.Minute)},
			action: ActionStop, notBefore: -1},
		{name: "no grace: no webhook, stop at the threshold", now: 10 * time.Minute, p: noGrace, s: Sandbox{State: StateStarted, Backup: clean},
			action: ActionStop, notBefore: -1},
		{name: "no grace, before the threshold", now: 9 * time.Minute, p: noGrace, s: Sandbox{State: StateStarted, Backup: clean},
			action: ActionNone, notBefore: 10 * time.Minute},
		{name: "grace longer than the threshold (invalid): notify once idle", now: 0, p: Policy{StopAfter: 2 * time.Minute, NotifyGrace: 5 * time.Minute}, s: Sandbox{State: StateStarted, Backup: clean},
			action: ActionNotify, forAction: ActionStop, notBefore: -1},
		{name: "never stop", now: 100 * time.Hour, p: Policy{}, s: Sandbox{State: StateStarted, Backup: dirty},
			action: ActionNone, notBefore: -1, reason: "no cleanup"},
		// Rule 7: flush before stop.
		{name: "due, dirty: flush before stop", now: 10 * time.Minute, p: noGrace, s: Sandbox{State: StateStarted, Backup: dirty},
			action: ActionFlush, forAction: ActionStop, notBefore: -1, reason: "flush before stop"},
		{name: "due, clean behind head: flush before stop", now: 10 * time.Minute, p: noGrace, s: Sandbox{State: StateStarted, Backup: behind},
			action: ActionFlush, forAction: ActionStop, notBefore: -1},
		{name: "due, unverified is fine for stop", now: 10 * time.Minute, p: noGrace, s: Sandbox{State: StateStarted, Backup: clean},
			action: ActionStop, notBefore: -1},
		{name: "flush failed, in backoff: stop anyway, alert", now: 71 * time.Minute, p: noGrace, s: Sandbox{State: StateStarted, Backup: failed3},
			action: ActionStop, alert: true, notBefore: -1, reason: "alert: stopping with unflushed changes"},
		{name: "flush failed, retry due: flush again, alert", now: 72 * time.Minute, p: noGrace, s: Sandbox{State: StateStarted, Backup: failed3},
			action: ActionFlush, forAction: ActionStop, alert: true, notBefore: -1, reason: "alert: retrying flush"},
		// Rules 3, 4, 5: stopped → destroy through the backup gate.
		{name: "stopped, before the destroy notify", now: 30 * time.Minute, p: def, s: Sandbox{State: StateStopped, Backup: ready},
			action: ActionNone, notBefore: 55 * time.Minute},
		{name: "stopped, destroy notify", now: 55 * time.Minute, p: def, s: Sandbox{State: StateStopped, Backup: ready},
			action: ActionNotify, forAction: ActionDestroy, notBefore: -1},
		{name: "stopped, stop's notification does not count for destroy", now: 56 * time.Minute, p: def, s: Sandbox{State: StateStopped, Backup: ready, NotifiedAt: notified(ActionStop, 5*time.Minute)},
			action: ActionNotify, forAction: ActionDestroy, notBefore: -1},
		{name: "stopped, destroy due, ready: destroy", now: time.Hour, p: def, s: Sandbox{State: StateStopped, Backup: ready, NotifiedAt: notified(ActionDestroy, 55*time.Minute)},
			action: ActionDestroy, notBefore: -1},
		{name: "destroy due, dirty: flush", now: time.Hour, p: def, s: Sandbox{State: StateStopped, Backup: dirty, NotifiedAt: notified(ActionDestroy, 55*time.Minute)},
			action: ActionFlush, forAction: ActionDestroy, notBefore: -1, reason: "backup not clean"},
		{name: "destroy due, clean but head moved: flush", now: time.Hour, p: def, s: Sandbox{State: StateStopped, Backup: behind, NotifiedAt: notified(ActionDestroy, 55*time.Minute)},
			action: ActionFlush, forAction: ActionDestroy, notBefore: -1, reason: "clean at 6 but head is 7"},
		{name: "destroy due, clean: verify", now: time.Hour, p: def, s: Sandbox{State: StateStopped, Backup: clean, NotifiedAt: notified(ActionDestroy, 55*time.Minute)},
			action: ActionVerify, forAction: ActionDestroy, notBefore: -1, reason: "not verified"},
		// Rule 6: failures never destroy.
		{name: "flush failed, in backoff: wait, alert", now: 71 * time.Minute, p: def, s: Sandbox{State: StateStopped, Backup: failed3, NotifiedAt: notified(ActionDestroy, 55*time.Minute)},
			action: ActionNone, forAction: ActionDestroy, alert: true, notBefore: 72 * time.Minute, reason: "not destroying"},
		{name: "flush failed, retry due: flush, alert", now: 72 * time.Minute, p: def, s: Sandbox{State: StateStopped, Backup: failed3, NotifiedAt: notified(ActionDestroy, 55*time.Minute)},
			action: ActionFlush, forAction: ActionDestroy, alert: true, notBefore: -1, reason: "alert: idle"},
		{name: "verify failed, in backoff", now: 70*time.Minute + 10*time.Second, p: def, s: Sandbox{State: StateStopped, Backup: vfailed1, NotifiedAt: notified(ActionDestroy, 55*time.Minute)},
			action: ActionNone, forAction: ActionDestroy, alert: true, notBefore: 70*time.Minute + 30*time.Second, reason: "verify retry"},
		{name: "verify failed, retry due: verify, alert", now: 71 * time.Minute, p: def, s: Sandbox{State: StateStopped, Backup: vfailed1, NotifiedAt: notified(ActionDestroy, 55*time.Minute)},
			action: ActionVerify, forAction: ActionDestroy, alert: true, notBefore: -1},
		{name: "destroy extended", now: time.Hour, p: def, s: Sandbox{State: StateStopped, Backup: ready, NotifiedAt: notified(ActionDestroy, 55*time.Minute), ExtendedUntil: at(5 * time.Hour)},
			action: ActionNone, notBefore: 5 * time.Hour},
		{name: "never destroy", now: 1000 * time.Hour, p: Policy{StopAfter: 10 * time.Minute}, s: Sandbox{State: StateStopped, Backup: ready},
			action: ActionNone, notBefore: -1},
		// Archive.
		{name: "stopped, archive notify first", now: 90 * time.Minute, p: archive, s: Sandbox{State: StateStopped, Backup: dirty},
			action: ActionNone, notBefore: 115 * time.Minute},
		{name: "stopped, archive notify", now: 115 * time.Minute, p: archive, s: Sandbox{State: StateStopped, Backup: dirty},
			action: ActionNotify, forAction: ActionArchive, notBefore: -1},
		{name: "stopped, archive due: no backup gate", now: 2 * time.Hour, p: archive, s: Sandbox{State: StateStopped, Backup: dirty, NotifiedAt: notified(ActionArchive, 115*time.Minute)},
			action: ActionArchive, notBefore: -1},
		{name: "stopped past both: destroy wins", now: 24 * time.Hour, p: archive, s: Sandbox{State: StateStopped, Backup: ready, NotifiedAt: notified(ActionArchive, 115*time.Minute)},
			action: ActionNotify, forAction: ActionDestroy, notBefore: -1},
		{name: "archived, waiting for destroy", now: 3 * time.Hour, p: archive, s: Sandbox{State: StateArchived, Backup: ready},
			action: ActionNone, notBefore: 24*time.Hour - 5*time.Minute},
		{name: "archived, destroy due, ready", now: 24 * time.Hour, p: archive, s: Sandbox{State: StateArchived, Backup: ready, NotifiedAt: notified(ActionDestroy, 24*time.Hour-5*time.Minute)},
			action: ActionDestroy, notBefore: -1},
		{name: "archived, destroy due, dirty: flush", now: 24 * time.Hour, p: archive, s: Sandbox{State: StateArchived, Backup: dirty, NotifiedAt: notified(ActionDestroy, 24*time.Hour-5*time.Minute)},
			action: ActionFlush, forAction: ActionDestroy, notBefore: -1},
		// Destroyed → delete history.
		{name: "destroyed, history kept forever", now: 1000 * time.Hour, p: def, s: Sandbox{State: StateDestroyed, Backup: ready},
			action: ActionNone, notBefore: -1},
		{name: "destroyed, before history deletion", now: 2 * time.Hour, p: history, s: Sandbox{State: StateDestroyed, Backup: ready},
			action: ActionNone, notBefore: 30*24*time.Hour - 5*time.Minute},
		{name: "destroyed, history deletion notify", now: 30 * 24 * time.Hour, p: history, s: Sandbox{State: StateDestroyed, Backup: ready},
			action: ActionNotify, forAction: ActionDeleteHistory, notBefore: -1},
		{name: "destroyed, history deletion due", now: 30*24*time.Hour + 5*time.Minute, p: history, s: Sandbox{State: StateDestroyed, Backup: behind, NotifiedAt: notified(ActionDeleteHistory, 30*24*time.Hour)},
			action: ActionDeleteHistory, notBefore: -1},
		{name: "destroyed, history already deleted", now: 40 * 24 * time.Hour, p: history, s: Sandbox{State: StateDestroyed, HistoryDeleted: true},
			action: ActionNone, notBefore: -1},
		// Rule 8: error.
		{name: "error, dirty: flush at once", now: time.Minute, p: def, s: Sandbox{State: StateError, Backup: dirty},
			action: ActionFlush, forAction: ActionDestroy, notBefore: -1, reason: "sandbox in error"},
		{name: "error, clean: verify at once", now: time.Minute, p: def, s: Sandbox{State: StateError, Backup: clean},
			action: ActionVerify, forAction: ActionDestroy, notBefore: -1},
		{name: "error, flush failed: backoff, alert, no destroy", now: 71 * time.Minute, p: def, s: Sandbox{State: StateError, Backup: failed3, NotifiedAt: notified(ActionDestroy, 55*time.Minute)},
			action: ActionNone, forAction: ActionDestroy, alert: true, notBefore: 72 * time.Minute},
		{name: "error, ready, not idle long enough", now: 10 * time.Minute, p: def, s: Sandbox{State: StateError, Backup: ready},
			action: ActionNone, notBefore: 55 * time.Minute},
		{name: "error, ready, due: destroy", now: time.Hour, p: def, s: Sandbox{State: StateError, Backup: ready, NotifiedAt: notified(ActionDestroy, 55*time.Minute)},
			action: ActionDestroy, notBefore: -1},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			s := tt.s
			if s.LastActivity.IsZero() {
				s.LastActivity = t0
			}
			d := Decide(at(tt.now), tt.p, s)
			if d.Action != tt.action || d.For != tt.forAction || d.Alert != tt.alert {
				t.Fatalf("got %s for %q alert %v (%s), want %s for %q alert %v", d.Action, d.For, d.Alert, d.Reason, tt.action, tt.forAction, tt.alert)
			}
			want := time.Time{}
			if tt.notBefore >= 0 {
				want = at(tt.notBefore)
			}
			if !d.NotBefore.Equal(want) {
				t.Fatalf("NotBefore %v, want %v (%s)", d.NotBefore, want, d.Reason)
			}
			if !strings.Contains(d.Reason, tt.reason) {
				t.Fatalf("reason %q does not contain %q", d.Reason, tt.reason)
			}
			if d.Alert != strings.HasPrefix(d.Reason, "alert:") {
				t.Fatalf("Alert %v but reason %q", d.Alert, d.Reason)
			}
		})
	}
}

// TestDecideInvariants checks, over many random sandboxes, the rules that
// must hold whatever the inputs: nothing is stopped, archived or destroyed
// under a lease; destroy needs a ready backup; a started sandbox is never
// destroyed directly; NotBefore of a wait is in the future.
func TestDecideInvariants(t *testing.T) {
	r := rand.New(rand.NewPCG(1, 2))
	pols := []Policy{Default(), {StopAfter: 10 * time.Minute, DestroyAfter: time.Hour},
		{StopAfter: time.Minute, ArchiveAfter: time.Hour, DestroyAfter: 3 * time.Hour, DeleteHistoryAfter: 9 * time.Hour, NotifyGrace: 30 * time.Second}}
	rt := func() time.Time { return at(time.Duration(r.IntN(12*3600)) * time.Second) }
	for i := 0; i < 200000; i++ {
		p := pols[r.IntN(len(pols))]
		now := rt()
		s := Sandbox{
			State:        States[r.IntN(len(States))],
			LastActivity: rt(),
			Backup: BackupStatus{Clean: r.IntN(2) == 0, Verified: r.IntN(2) == 0, CleanVersion: int64(r.IntN(3)), Head: int64(r.IntN(3)),
				FlushFailures: r.IntN(3), LastAttempt: rt()},
		}
		if r.IntN(3) == 0 {
			s.LeaseUntil = rt()
		}
		if r.IntN(2) == 0 {
			s.NotifiedAt = map[Action]time.Time{ActionStop: rt(), ActionDestroy: rt(), ActionArchive: rt()}
		}
		if r.IntN(4) == 0 {
			s.ExtendedUntil = rt()
		}
		d := Decide(now, p, s)
		switch d.Action {
		case ActionStop, ActionArchive, ActionDestroy, ActionFlush, ActionVerify, ActionDeleteHistory, ActionNotify:
			if s.LeaseUntil.After(now) {
				t.Fatalf("%s under a lease: %+v", d.Action, s)
			}
		}
		if d.Action == ActionDestroy && (!s.Backup.Ready() || s.State == StateStarted) {
			t.Fatalf("destroy of %s with backup %+v", s.State, s.Backup)
		}
		if d.Action == ActionNone && !d.NotBefore.IsZero() && !d.NotBefore.After(now) {
			t.Fatalf("wait until %v at %v: %s", d.NotBefore, now, d.Reason)
		}
		if d.Action != ActionNone && !d.NotBefore.IsZero() {
			t.Fatalf("action %s with NotBefore", d.Action)
		}
	}
}

func TestBackoff(t *testing.T) {
	for n, want := range map[int]time.Duration{0: 0, 1: 30 * time.Second, 2: time.Minute, 3: 2 * time.Minute, 7: 30 * time.Minute, 8: 30 * time.Minute, 1000: 30 * time.Minute} {
		if got := Backoff(n); got != want {
			t.Errorf("Backoff(%d) = %s, want %s", n, got, want)
		}
	}
}

func TestValidate(t *testing.T) {
	tests := []struct {
		name string
		p    Policy
		err  string // substring, "" for valid
	}{
		{"default", Default(), ""},
		{"always on", Policy{}, ""},
		{"stop only", Policy{StopAfter: 15 * time.Minute}, ""},
		{"everything", Policy{StopAfter: 10 * time.Minute, ArchiveAfter: time.Hour, DestroyAfter: 24 * time.Hour, DeleteHistoryAfter: 90 * 24 * time.Hour, NotifyGrace: 5 * time.Minute}, ""},
		{"destroy equals stop", Policy{StopAfter: time.Hour, DestroyAfter: time.Hour}, ""},
		{"negative", Policy{StopAfter: -time.Minute}, "must not be negative"},
		{"destroy without stop", Policy{DestroyAfter: time.Hour}, "destroy-after needs stop-after"},
		{"destroy before stop", Policy{StopAfter: time.Hour, DestroyAfter: time.Minute}, "must not be shorter than stop-after"},
		{"archive without stop", Policy{ArchiveAfter: time.Hour}, "archive-after needs stop-after"},
		{"archive before stop", Policy{StopAfter: time.Hour, ArchiveAfter: time.Minute}, "archive-after (1m0s) must not be shorter"},
		{"archive after destroy", Policy{StopAfter: time.Minute, ArchiveAfter: 2 * time.Hour, DestroyAfter: time.Hour}, "never happens"},
		{"history without destroy", Policy{StopAfter: time.Minute, DeleteHistoryAfter: time.Hour}, "delete-history-after needs destroy-after"},
		{"history before destroy", Policy{StopAfter: time.Minute, DestroyAfter: 2 * time.Hour, DeleteHistoryAfter: time.Hour}, "delete-history-after (1h0m0s) must not be shorter"},
		{"grace too long", Policy{StopAfter: 5 * time.Minute, NotifyGrace: 5 * time.Minute}, "notify-grace"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			err := tt.p.Validate()
			if tt.err == "" {
				if err != nil {
					t.Fatal(err)
				}
				return
			}
			if err == nil || !strings.Contains(err.Error(), tt.err) {
				t.Fatalf("error %v, want one containing %q", err, tt.err)
			}
		})
	}
}

func TestMerge(t *testing.T) {
	g := Default()
	if got := Merge(g, Override{}); got != g {
		t.Fatalf("empty override changed the policy: %+v", got)
	}
	got := Merge(g, Override{StopAfter: dur(2 * time.Minute), DestroyAfter: dur(0), NotifyGrace: dur(time.Minute)})
	want := Policy{StopAfter: 2 * time.Minute, DestroyAfter: 0, NotifyGrace: time.Minute}
	if got != want {
		t.Fatalf("got %+v, want %+v", got, want)
	}
	got = Merge(g, Override{ArchiveAfter: dur(30 * time.Minute), DeleteHistoryAfter: dur(48 * time.Hour)})
	if got.ArchiveAfter != 30*time.Minute || got.DeleteHistoryAfter != 48*time.Hour || got.StopAfter != g.StopAfter {
		t.Fatalf("got %+v", got)
	}
}

func TestJSON(t *testing.T) {
	b, err := json.Marshal(Default())
	if err != nil {
		t.Fatal(err)
	}
	if want := `{"stop_after":"10m0s","destroy_after":"1h0m0s","archive_after":"0s","delete_history_after":"0s","notify_grace":"5m0s"}`; string(b) != want {
		t.Fatalf("got %s, want %s", b, want)
	}
	var p Policy
	if err := json.Unmarshal(b, &p); err != nil || p != Default() {
		t.Fatalf("round trip: %+v, %v", p, err)
	}
	var o Override
	if err := json.Unmarshal([]byte(`{"stop_after":"5m","destroy_after":"0"}`), &o); err != nil {
		t.Fatal(err)
	}
	if o.StopAfter == nil || *o.StopAfter != 5*time.Minute || o.DestroyAfter == nil || *o.DestroyAfter != 0 || o.NotifyGrace != nil {
		t.Fatalf("override %+v", o)
	}
	b, _ = json.Marshal(o)
	if want := `{"stop_after":"5m0s","destroy_after":"0s"}`; string(b) != want {
		t.Fatalf("got %s, want %s", b, want)
	}
	if err := json.Unmarshal([]byte(`{"stop_after":"soon"}`), &o); err == nil || !strings.Contains(err.Error(), "stop_after") {
		t.Fatalf("bad duration: %v", err)
	}
}
