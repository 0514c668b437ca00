package lifecycle

import (
	"math"
	"testing"
	"time"

	"github.com/sandkeep/sandkeep/internal/cost"
	"github.com/sandkeep/sandkeep/internal/id"
	"github.com/sandkeep/sandkeep/internal/metastore"
	"github.com/sandkeep/sandkeep/internal/policy"
	"github.com/sandkeep/sandkeep/internal/provider"
)

// step is one state change at an offset from the start (h hours).
type step struct {
	at    float64 // hours
	state provider.State
}

func near(a, b float64) bool { return math.Abs(a-b) < 1e-9*math.Max(1, math.Abs(b)) }

// TestCostAccounting: time in each state × its rate, plus stored bytes ×
// the storage rate, against an always-on baseline.
func TestCostAccounting(t *testing.T) {
	rates := cost.Rates{StartedPerHour: 1, StoppedPerHour: 0.1, ArchivedPerHour: 0.01, StoragePerGBMonth: 730} // 1 $/GiB-hour
	cases := []struct {
		name     string
		steps    []step  // first: creation
		now      float64 // hours after the start
		since    float64 // hours after the start; < 0: all time
		bytes    int64
		started  float64 // expected hours
		stopped  float64
		archived float64
		compute  float64
		storage  float64
		alwaysOn float64
	}{
		{name: "always running", steps: []step{{0, provider.StateStarted}}, now: 10, since: -1,
			started: 10, compute: 10, alwaysOn: 10},
		{name: "stopped most of the time", steps: []step{{0, provider.StateStarted}, {1, provider.StateStopping}, {1.5, provider.StateStopped}}, now: 10, since: -1,
			started: 1, stopped: 8.5, compute: 1 + 0.5 + 0.85, alwaysOn: 10},
		{name: "destroyed after archive", steps: []step{{0, provider.StateCreating}, {0.5, provider.StateStarted}, {2, provider.StateStopping}, {2.5, provider.StateStopped},
			{4, provider.StateArchived}, {8, provider.StateDestroyed}}, now: 10, since: -1,
			started: 1.5, stopped: 1.5, archived: 4, compute: 0.5 + 1.5 + 0.5 + 0.15 + 0.04, alwaysOn: 10},
		{name: "since cuts an interval", steps: []step{{0, provider.StateStarted}, {4, provider.StateStopping}, {4, provider.StateStopped}}, now: 10, since: 2,
			started: 2, stopped: 6, compute: 2 + 0.6, alwaysOn: 8},
		{name: "storage", steps: []step{{0, provider.StateStarted}, {1, provider.StateStopping}, {1, provider.StateStopped}}, now: 5, since: -1,
			bytes: 2 << 30, started: 1, stopped: 4, compute: 1.4, storage: 2 * 5, alwaysOn: 5},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			e := newEnv(t, func(c *Config) { c.Rates = rates; c.Provider = nil })
			start := e.clock.Now()
			hours := func(h float64) time.Time { return start.Add(time.Duration(h * float64(time.Hour))) }
			p := e.project("cost")
			sb, err := e.meta.CreateSandbox(t.Context(), metastore.Sandbox{ID: metastore.NewSandboxID(), ProjectID: p, Provider: "fake",
				State: tc.steps[0].state, CreatedAt: hours(tc.steps[0].at)})
			if err != nil {
				t.Fatal(err)
			}
			for _, s := range tc.steps[1:] {
				if _, err := e.meta.TransitionSandbox(t.Context(), sb.ID, s.state, hours(s.at), true, ""); err != nil {
					t.Fatal(err)
				}
			}
			if tc.bytes > 0 {
				epoch, _ := e.meta.PackEpoch(t.Context(), p)
				if err := e.meta.AddPack(t.Context(), metastore.Pack{ProjectID: p, ID: id.ID{1}, Type: metastore.BlobData, Size: tc.bytes, Epoch: epoch},
					[]metastore.BlobLocation{{ID: id.ID{2}, Type: metastore.BlobData, Length: 1, RawLength: 1}}); err != nil {
					t.Fatal(err)
				}
			}
			e.clock.Advance(time.Duration(tc.now * float64(time.Hour)))
			var since time.Time
			if tc.since >= 0 {
				since = hours(tc.since)
			} else {
				// The project was created at the real now, before the fake
				// start: storage counts from the start.
				since = start
			}
			rep, err := e.m.Cost(t.Context(), p, since)
			if err != nil {
				t.Fatal(err)
			}
			if len(rep.Projects) != 1 {
				t.Fatalf("projects: %+v", rep.Projects)
			}
			pc := rep.Projects[0]
			h := func(s policy.State) float64 { return pc.Seconds[s] / 3600 }
			if !near(h(policy.StateStarted), tc.started) || !near(h(policy.StateStopped), tc.stopped) || !near(h(policy.StateArchived), tc.archived) {
				t.Errorf("hours: started %v stopped %v archived %v, want %v %v %v", h(policy.StateStarted), h(policy.StateStopped), h(policy.StateArchived), tc.started, tc.stopped, tc.archived)
			}
			if !near(pc.Cost.Compute, tc.compute) || !near(pc.Cost.Storage, tc.storage) || !near(pc.Cost.Total, tc.compute+tc.storage) {
				t.Errorf("cost: compute %v storage %v total %v, want %v %v", pc.Cost.Compute, pc.Cost.Storage, pc.Cost.Total, tc.compute, tc.storage)
			}
			if !near(pc.AlwaysOn, tc.alwaysOn) || !near(pc.Savings, cost.Savings(tc.compute+tc.storage, tc.alwaysOn)) {
				t.Errorf("always-on %v savings %v, want %v", pc.AlwaysOn, pc.Savings, tc.alwaysOn)
			}
			if !near(rep.Total.Cost.Total, pc.Cost.Total) {
				t.Errorf("total %v, project %v", rep.Total.Cost.Total, pc.Cost.Total)
			}
		})
	}
}

// TestCostTotalsAndMetric: the total sums the projects; the metric is set
// per project and kind.
func TestCostTotalsAndMetric(t *testing.T) {
	e := newEnv(t, func(c *Config) {
		c.Rates = cost.Rates{StartedPerHour: 2, StoppedPerHour: 0.5, ArchivedPerHour: 0, StoragePerGBMonth: 0}
	})
	a, b := e.project("a"), e.project("b")
	e.project("never-used") // no sandbox, no bytes: not listed
	start := e.clock.Now()
	for _, p := range []string{a, b} {
		if _, err := e.meta.CreateSandbox(t.Context(), metastore.Sandbox{ID: metastore.NewSandboxID(), ProjectID: p, Provider: "fake", State: provider.StateStarted, CreatedAt: start}); err != nil {
			t.Fatal(err)
		}
	}
	sb, _ := e.meta.LiveSandbox(t.Context(), b)
	if _, err := e.meta.TransitionSandbox(t.Context(), sb.ID, provider.StateStopping, start.Add(time.Hour), false, ""); err != nil {
		t.Fatal(err)
	}
	if _, err := e.meta.TransitionSandbox(t.Context(), sb.ID, provider.StateStopped, start.Add(time.Hour), false, ""); err != nil {
		t.Fatal(err)
	}
	e.clock.Advance(3 * time.Hour)
	rep, err := e.m.UpdateCostMetrics(t.Context())
	if err != nil {
		t.Fatal(err)
	}
	if len(rep.Projects) != 2 {
		t.Fatalf("projects: %+v", rep.Projects)
	}
	// a: 3h × 2 = 6; b: 1h × 2 + 2h × 0.5 = 3.
	if !near(rep.Total.Cost.Compute, 9) || !near(rep.Total.AlwaysOn, 12) || !near(rep.Total.Savings, 0.25) || !near(rep.Total.SandboxHours, 4) {
		t.Fatalf("total: %+v", rep.Total)
	}
	for _, p := range rep.Projects {
		want := map[string]float64{a: 6, b: 3}[p.ProjectID]
		if !near(p.Cost.Compute, want) {
			t.Errorf("project %s: %v, want %v", p.ProjectID, p.Cost.Compute, want)
		}
	}
	if got := metricValue(e, `sandkeep_cost_dollars{kind="compute",project="`+b+`"} `); !near(got, 3) {
		t.Fatalf("metric: %v", got)
	}
}
