package simulate

import (
	"bytes"
	"encoding/json"
	"math"
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/sandkeep/sandkeep/internal/cost"
	"github.com/sandkeep/sandkeep/internal/policy"
)

// TestSyntheticTarget is the acceptance figure: on the default
// synthetic trace sandkeep runs ≥ 80 % fewer sandbox-hours than always-on
// and loses no file, while destroying without sandkeep loses files.
func TestSyntheticTarget(t *testing.T) {
	tr, err := Synthetic(DefaultSynthetic())
	if err != nil {
		t.Fatal(err)
	}
	rep, err := Replay(&tr, DefaultOptions())
	if err != nil {
		t.Fatal(err)
	}
	var buf bytes.Buffer
	if err := rep.WriteTable(&buf); err != nil {
		t.Fatal(err)
	}
	t.Log("\n" + buf.String())
	if rep.Trace.Projects != 200 || rep.Trace.Days != 14 {
		t.Fatalf("trace %+v", rep.Trace)
	}
	sk, _ := rep.Result(Sandkeep)
	if sk.RunningHoursSavedPct < 80 {
		t.Errorf("sandkeep saves %.1f %% of sandbox-hours, want ≥ 80 %%", sk.RunningHoursSavedPct)
	}
	if sk.FilesLost != 0 {
		t.Errorf("sandkeep lost %d files", sk.FilesLost)
	}
	if sk.FilesWritten == 0 || sk.Restores == 0 || sk.Actions[policy.ActionDestroy] == 0 {
		t.Errorf("the trace does not exercise the engine: %+v", sk)
	}
	if sk.FailedFlushes == 0 || sk.FlushStarts == 0 || sk.AlertingDecisions == 0 {
		t.Errorf("the trace does not exercise failed flushes: %+v", sk)
	}
	if sk.CostSavingsPct < 80 {
		t.Errorf("sandkeep saves %.1f %% of the cost", sk.CostSavingsPct)
	}
	naive, _ := rep.Result(NaiveDestroy)
	if naive.FilesLost == 0 {
		t.Error("naive-destroy lost no file: the metric measures nothing")
	}
	for _, s := range []Strategy{AlwaysOn, Timers} {
		if r, _ := rep.Result(s); r.FilesLost != 0 || r.Restores != 0 {
			t.Errorf("%s: %+v", s, r)
		}
	}
	if on, _ := rep.Result(AlwaysOn); on.Starts != 0 || on.Waits != 0 || on.RunningHoursSavedPct != 0 {
		t.Errorf("always-on %+v", on)
	}
	// Deterministic: same seed, same report.
	tr2, _ := Synthetic(DefaultSynthetic())
	rep2, err := Replay(&tr2, DefaultOptions())
	if err != nil || !reflect.DeepEqual(rep, rep2) {
		t.Fatalf("a second replay differs (%v)", err)
	}
	// Another seed still meets the target.
	c := DefaultSynthetic()
	c.Seed = 7
	tr3, _ := Synthetic(c)
	rep3, err := Replay(&tr3, DefaultOptions())
	if err != nil {
		t.Fatal(err)
	}
	if sk3, _ := rep3.Result(Sandkeep); sk3.RunningHoursSavedPct < 80 || sk3.FilesLost != 0 {
		t.Errorf("seed 7: %+v", sk3)
	}
}

// TestHoursConserved: every strategy accounts for every second of every
// project's life, in exactly one state.
func TestHoursConserved(t *testing.T) {
	tr, err := Synthetic(SyntheticConfig{Projects: 40, Days: 5, Seed: 3})
	if err != nil {
		t.Fatal(err)
	}
	var want float64
	for _, p := range tr.Projects {
		want += tr.End.Sub(p.Created).Seconds()
	}
	for _, s := range Strategies {
		tl, err := Simulate(&tr, s, DefaultOptions())
		if err != nil {
			t.Fatal(err)
		}
		var got float64
		for _, v := range tl.Usage.Seconds {
			got += v
		}
		if math.Abs(got-want) > 1e-3 {
			t.Errorf("%s: %v s accounted, want %v", s, got, want)
		}
		if tl.Runs != Summarize(&tr).Runs {
			t.Errorf("%s ran %d runs of %d", s, tl.Runs, Summarize(&tr).Runs)
		}
	}
}

var t0 = time.Date(2026, 3, 2, 9, 0, 0, 0, time.UTC)

func small() Trace {
	return Trace{End: t0.Add(3 * time.Hour), Projects: []Project{{
		ID: "p1", InitialFiles: 100, InitialBytes: 50 << 20,
		Runs: []Run{
			{Start: t0, Duration: Duration(10 * time.Minute), Files: 4, Bytes: 1 << 20},
			{Start: t0.Add(2 * time.Hour), Duration: Duration(5 * time.Minute), Files: 1, Bytes: 100},
		},
	}}}
}

func sec(d string) float64 {
	v, err := time.ParseDuration(d)
	if err != nil {
		panic(err)
	}
	return v.Seconds()
}

func near(a, b float64) bool { return math.Abs(a-b) < 1e-6 }

// TestSmallTrace checks a replay against figures worked out by hand (see the
// comments) for one project: a 10-minute run, two hours idle, a 5-minute run.
func TestSmallTrace(t *testing.T) {
	tr := small()
	if err := tr.Normalize(); err != nil {
		t.Fatal(err)
	}
	opt := DefaultOptions()
	opt.FailureRate = 0
	type want struct {
		running, stopped, destroyed float64
		starts, restores, creates   int
		waits                       []float64
		lost                        int64
		actions                     map[policy.Action]int
	}
	// restore = 1 s + 51 MiB / 50 MiB/s + 104 files / 2000 files/s = 2.072 s
	tests := map[Strategy]want{
		// creating 0–2 s, run 2 s–10m2s, notify 15m2s, flush 20m2s–20m4s,
		// stopping –20m7s, destroy notify 65m2s, verify 70m2s–70m3s,
		// destroyed; 2h: create 2 s + restore 2.072 s, run until
		// 2h5m4.072s, notify, flush 2h15m4.072s, stopping until 2h15m9.072s.
		Sandkeep: {running: sec("20m7s") + sec("15m9.072s"), stopped: sec("49m56s") + sec("44m50.928s"), destroyed: sec("49m57s"),
			restores: 1, creates: 2, waits: []float64{4.072}, lost: 0,
			actions: map[policy.Action]int{policy.ActionNotify: 3, policy.ActionFlush: 2, policy.ActionStop: 2, policy.ActionVerify: 1, policy.ActionDestroy: 1}},
		// stop at 25m2s (+3 s), start 5 s at 2h, run until 2h5m5s, stop at
		// 2h20m5s (+3 s).
		Timers: {running: sec("25m5s") + sec("20m8s"), stopped: sec("94m55s") + sec("39m52s"),
			starts: 1, creates: 1, waits: []float64{5}, actions: map[policy.Action]int{policy.ActionStop: 2}},
		// stop at 20m2s (+3 s), destroy at 70m2s losing 104 files; create
		// 2 s at 2h, nothing restored; stop at 2h15m2s (+3 s).
		NaiveDestroy: {running: sec("20m5s") + sec("15m5s"), stopped: sec("49m57s") + sec("44m55s"), destroyed: sec("49m58s"),
			creates: 2, waits: []float64{2}, lost: 104, actions: map[policy.Action]int{policy.ActionStop: 2, policy.ActionDestroy: 1}},
		AlwaysOn: {running: sec("3h"), creates: 1, actions: map[policy.Action]int{}},
	}
	for s, w := range tests {
		tl, err := Simulate(&tr, s, opt)
		if err != nil {
			t.Fatal(err)
		}
		u := tl.Usage
		if !near(u.RunningHours()*3600, w.running) || !near(u.Seconds[policy.StateStopped], w.stopped) || !near(u.Seconds[policy.StateDestroyed], w.destroyed) {
			t.Errorf("%s: running %v stopped %v destroyed %v, want %v %v %v", s, u.RunningHours()*3600, u.Seconds[policy.StateStopped], u.Seconds[policy.StateDestroyed], w.running, w.stopped, w.destroyed)
		}
		if tl.Starts != w.starts || tl.Restores != w.restores || tl.Creates != w.creates || tl.FilesLost != w.lost || tl.FilesWritten != 5 {
			t.Errorf("%s: starts %d restores %d creates %d lost %d written %d", s, tl.Starts, tl.Restores, tl.Creates, tl.FilesLost, tl.FilesWritten)
		}
		if len(tl.Waits) != len(w.waits) {
			t.Errorf("%s: waits %v, want %v", s, tl.Waits, w.waits)
		} else {
			for i := range w.waits {
				if !near(tl.Waits[i], w.waits[i]) {
					t.Errorf("%s: waits %v, want %v", s, tl.Waits, w.waits)
				}
			}
		}
		if len(tl.Actions) != len(w.actions) || (len(w.actions) > 0 && !reflect.DeepEqual(tl.Actions, w.actions)) {
			t.Errorf("%s: actions %v, want %v", s, tl.Actions, w.actions)
		}
		if s == Sandkeep {
			// 50 MiB for 602 s, 51 MiB until 2h5m4.072s, 51 MiB + 100 B after.
			mi := float64(1 << 20)
			stored := 50*mi*602 + 51*mi*(sec("2h5m4.072s")-602) + (51*mi+100)*(sec("3h")-sec("2h5m4.072s"))
			if !near(u.StoredBytes/stored, 1) {
				t.Errorf("stored byte-seconds %v, want %v", u.StoredBytes, stored)
			}
			if len(tl.RestoreWaits) != 1 || tl.Alerts != 0 {
				t.Errorf("restore waits %v, alerts %d", tl.RestoreWaits, tl.Alerts)
			}
		} else if u.StoredBytes != 0 {
			t.Errorf("%s pays for a bucket", s)
		}
	}
}

// TestOutageNeverDestroys: with the bucket down for the whole trace, flushes
// fail, the engine alerts and retries, and never destroys.
func TestOutageNeverDestroys(t *testing.T) {
	tr := small()
	tr.Outages = []Window{{Start: t0, End: t0.Add(3 * time.Hour)}}
	if err := tr.Normalize(); err != nil {
		t.Fatal(err)
	}
	opt := DefaultOptions()
	tl, err := Simulate(&tr, Sandkeep, opt)
	if err != nil {
		t.Fatal(err)
	}
	if tl.Actions[policy.ActionDestroy] != 0 || tl.FilesLost != 0 || tl.Restores != 0 {
		t.Fatalf("destroyed during an outage: %+v", tl)
	}
	if tl.Failures[policy.ActionFlush] < 3 || tl.Alerts == 0 || tl.FlushStarts == 0 || tl.Actions[policy.ActionStop] < 2 {
		t.Fatalf("no retries: %+v", tl)
	}
	// The outage ends: the next retry flushes, then verify, then destroy.
	tr.Outages[0].End = t0.Add(90 * time.Minute)
	tl, err = Simulate(&tr, Sandkeep, opt)
	if err != nil {
		t.Fatal(err)
	}
	if tl.Actions[policy.ActionDestroy] != 1 || tl.FilesLost != 0 || tl.Restores != 1 {
		t.Fatalf("after the outage: %+v", tl)
	}
}

// TestNoFailures: without failures nothing alerts and no stopped sandbox
// is started just to flush.
func TestNoFailures(t *testing.T) {
	tr, err := Synthetic(SyntheticConfig{Projects: 30, Days: 7, Seed: 5})
	if err != nil {
		t.Fatal(err)
	}
	tr.Outages = nil
	opt := DefaultOptions()
	opt.FailureRate = 0
	tl, err := Simulate(&tr, Sandkeep, opt)
	if err != nil {
		t.Fatal(err)
	}
	if tl.Alerts != 0 || tl.FlushStarts != 0 || len(tl.Failures) != 0 || tl.FilesLost != 0 {
		t.Fatalf("%+v", tl)
	}
}

func TestOverridesAndOverlaps(t *testing.T) {
	tr := Trace{End: t0.Add(3 * time.Hour), Projects: []Project{
		{ID: "fast", Policy: &policy.Override{StopAfter: durp(2 * time.Minute), DestroyAfter: durp(5 * time.Minute), NotifyGrace: durp(0)},
			Runs: []Run{{Start: t0, Duration: Duration(10 * time.Minute)}, {Start: t0.Add(5 * time.Minute), Duration: Duration(10 * time.Minute), Files: 1}}},
		{ID: "default", Runs: []Run{{Start: t0, Duration: Duration(10 * time.Minute)}}},
	}}
	if err := tr.Normalize(); err != nil {
		t.Fatal(err)
	}
	opt := DefaultOptions()
	opt.FailureRate = 0
	tl, err := Simulate(&tr, Sandkeep, opt)
	if err != nil {
		t.Fatal(err)
	}
	// fast: overlapping runs share the sandbox until 15m; flush at 17m,
	// stop, verify at 20m, destroyed at 20m1s. default: destroyed at 70m3s.
	if tl.Runs != 3 || len(tl.Waits) != 0 || tl.Actions[policy.ActionDestroy] != 2 {
		t.Fatalf("%+v", tl)
	}
	fast := tl.Usage.Seconds[policy.StateDestroyed] - (sec("3h") - sec("70m3s"))
	if !near(fast, sec("3h")-sec("20m1s")) {
		t.Fatalf("fast project destroyed for %v s", fast)
	}
	tr.Projects[0].Policy = &policy.Override{DestroyAfter: durp(time.Minute)}
	if _, err := Simulate(&tr, Sandkeep, opt); err == nil || !strings.Contains(err.Error(), `project "fast" policy`) {
		t.Fatalf("invalid override: %v", err)
	}
}

func durp(d time.Duration) *time.Duration { return &d }

func TestParse(t *testing.T) {
	doc := `{"end": "2026-03-02T12:00:00Z", "outages": [{"start": "2026-03-02T10:00:00Z", "end": "2026-03-02T10:30:00Z"}],
	  "projects": [{"id": "a", "initial_files": 3, "initial_bytes": 300, "policy": {"stop_after": "6m"},
	    "runs": [{"start": "2026-03-02T09:30:00Z", "duration": "1m"}, {"start": "2026-03-02T09:00:00Z", "duration": 90, "files": 2, "bytes": 20}]}]}`
	tr, err := Parse(strings.NewReader(doc))
	if err != nil {
		t.Fatal(err)
	}
	p := tr.Projects[0]
	if !tr.Start.Equal(t0) || !p.Created.Equal(t0) || p.Runs[0].Duration != Duration(90*time.Second) || p.Runs[0].Files != 2 ||
		len(tr.Outages) != 1 || *p.Policy.StopAfter != 6*time.Minute || p.InitialBytes != 300 {
		t.Fatalf("%+v", tr)
	}
	lines := `
{"end": "2026-03-02T12:00:00Z"}
{"project": "b", "start": "2026-03-02T09:30:00Z", "duration": "1m", "files": 1}

{"project": "a", "start": "2026-03-02T09:00:00Z", "duration": "2m"}
{"project": "b", "start": "2026-03-02T09:10:00Z", "duration": 30}
`
	tr, err = Parse(strings.NewReader(lines))
	if err != nil {
		t.Fatal(err)
	}
	if len(tr.Projects) != 2 || tr.Projects[0].ID != "b" || len(tr.Projects[0].Runs) != 2 || !tr.Projects[0].Created.Equal(t0.Add(10*time.Minute)) ||
		!tr.End.Equal(t0.Add(3*time.Hour)) || !tr.Start.Equal(t0) || tr.Projects[0].Runs[0].Project != "" {
		t.Fatalf("%+v", tr)
	}
	tr, err = Parse(strings.NewReader(`{"project": "a", "start": "2026-03-02T09:00:00Z", "duration": "2m"}` + "\n"))
	if err != nil || !tr.End.Equal(t0.Add(2*time.Minute)) {
		t.Fatalf("%+v %v", tr, err)
	}
	for _, bad := range []struct{ in, err string }{
		{``, "empty"},
		{`[1]`, "JSON object"},
		{`{"projects": []}`, "no projects"},
		{`{"projects": [{"id": "a", "runs": [{"start": "2026-03-02T09:00:00Z", "duration": "1m"}]}, {"id": "a", "runs": [{"start": "2026-03-02T09:00:00Z", "duration": "1m"}]}]}`, "twice"},
		{`{"projects": [{"id": "a", "runs": [{"start": "2026-03-02T09:00:00Z", "duration": "-1m"}]}]}`, "negative"},
		{`{"projects": [{"id": "a", "runs": [{"start": "2026-03-02T09:00:00Z", "duration": "soon"}]}]}`, "duration"},
		{`{"end": "2026-03-02T08:00:00Z", "projects": [{"id": "a", "runs": [{"start": "2026-03-02T09:00:00Z", "duration": "1m"}]}]}`, "not after its start"},
		{`{"projects": [{"id": "a", "policy": {"stop_after": "1m", "notify_grace": "2m"}, "runs": [{"start": "2026-03-02T09:00:00Z", "duration": "1m"}]}]}`, "notify-grace"},
		{`{"projects": [{"id": "a"}]}`, "neither runs nor a creation"},
		{`{"projects": [{"id": "a", "runs": [{"start": "2026-03-02T09:00:00Z", "duration": "1m", "byte": 1}]}]}`, "unknown field"},
		{`{"projects": []}` + "\n" + `{"projects": []}`, "alone"},
		{`{"end": "2026-03-02T12:00:00Z"}` + "\n" + `{"start": "2026-03-02T09:00:00Z", "duration": "1m"}`, `needs "project"`},
		{`{"project": "a", "start": "2026-03-02T09:00:00Z", "duration": "1m", "flies": 3}`, "unknown field"},
		{`{"end": "2026-03-02T09:30:00Z", "start": "2026-03-02T09:00:00Z"}` + "\n" + `{"project": "a", "start": "2026-03-02T10:00:00Z", "duration": "1m"}`, "outside the trace"},
	} {
		if _, err := Parse(strings.NewReader(bad.in)); err == nil || !strings.Contains(err.Error(), bad.err) {
			t.Errorf("%s: error %v, want %q", bad.in, err, bad.err)
		}
	}
}

// TestWriteParse: a written trace reads back into the same replay.
func TestWriteParse(t *testing.T) {
	tr, err := Synthetic(SyntheticConfig{Projects: 20, Days: 6, Seed: 9})
	if err != nil {
		t.Fatal(err)
	}
	var buf bytes.Buffer
	if err := tr.Write(&buf); err != nil {
		t.Fatal(err)
	}
	back, err := Parse(&buf)
	if err != nil {
		t.Fatal(err)
	}
	a, err := Replay(&tr, DefaultOptions())
	if err != nil {
		t.Fatal(err)
	}
	b, err := Replay(&back, DefaultOptions())
	if err != nil {
		t.Fatal(err)
	}
	ja, _ := json.Marshal(a)
	jb, _ := json.Marshal(b)
	if !bytes.Equal(ja, jb) {
		t.Fatal("the replay of the written trace differs")
	}
}

func TestOptionsValidate(t *testing.T) {
	o := DefaultOptions()
	o.Policy.DestroyAfter = 0
	o.FailureRate = 1
	o.RestoreBytesPerSecond = 0
	o.StartSeconds = -1
	o.Rates = cost.Rates{StartedPerHour: -1}
	err := o.Validate()
	for _, want := range []string{"destroy-after > 0", "failure rate", "restore rates", "start seconds", "started rate"} {
		if err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("error %v lacks %q", err, want)
		}
	}
	if _, err := Synthetic(SyntheticConfig{}); err == nil {
		t.Error("empty synthetic config accepted")
	}
}

func TestPercentile(t *testing.T) {
	v := []float64{1, 2, 3, 4, 5, 6, 7, 8, 9, 10}
	for q, want := range map[float64]float64{0.5: 5, 0.99: 10, 1: 10, 0.1: 1, 0.11: 2} {
		if got := Percentile(v, q); got != want {
			t.Errorf("p%v = %v, want %v", q, got, want)
		}
	}
	if Percentile(nil, 0.5) != 0 {
		t.Error("empty")
	}
}
