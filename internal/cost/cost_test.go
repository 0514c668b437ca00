package cost

import (
	"math"
	"strings"
	"testing"
	"time"

	"github.com/sandkeep/sandkeep/internal/policy"
)

func near(a, b float64) bool { return math.Abs(a-b) <= 1e-9*math.Max(1, math.Abs(b)) }

func TestDefaultRates(t *testing.T) {
	r := DefaultRates()
	if err := r.Validate(); err != nil {
		t.Fatal(err)
	}
	// 1 vCPU + 1 GiB + 3 GiB disk at Daytona's list prices.
	for name, got := range map[string][2]float64{
		"started":  {r.StartedPerHour, 0.066924},
		"stopped":  {r.StoppedPerHour, 0.000324},
		"archived": {r.ArchivedPerHour, 0.069 / 730},
		"storage":  {r.StoragePerGBMonth, 0.023},
	} {
		if !near(got[0], got[1]) {
			t.Errorf("%s rate %v, want %v", name, got[0], got[1])
		}
	}
}

func TestValidate(t *testing.T) {
	for _, r := range []Rates{{StartedPerHour: -1}, {StoragePerGBMonth: math.NaN()}, {StoppedPerHour: math.Inf(1)}} {
		if err := r.Validate(); err == nil || !strings.Contains(err.Error(), "non-negative") {
			t.Errorf("%+v: %v", r, err)
		}
	}
	if err := (Rates{}).Validate(); err != nil {
		t.Errorf("free rates: %v", err)
	}
}

func TestPerHour(t *testing.T) {
	r := Rates{StartedPerHour: 1, StoppedPerHour: 0.1, ArchivedPerHour: 0.01}
	want := map[policy.State]float64{
		policy.StateCreating: 1, policy.StateStarting: 1, policy.StateStarted: 1, policy.StateStopping: 1, policy.StateError: 1,
		policy.StateStopped: 0.1, policy.StateArchived: 0.01, policy.StateDestroyed: 0, "bogus": 0,
	}
	for s, w := range want {
		if got := r.PerHour(s); got != w {
			t.Errorf("%s: %v, want %v", s, got, w)
		}
	}
}

func TestPrice(t *testing.T) {
	r := Rates{StartedPerHour: 2, StoppedPerHour: 0.5, ArchivedPerHour: 0.25, StoragePerGBMonth: 730}
	var u Usage
	t0 := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	u.AddInterval(policy.StateStarted, t0, t0.Add(3*time.Hour))
	u.AddInterval(policy.StateStarting, t0, t0.Add(30*time.Minute))
	u.AddInterval(policy.StateStopped, t0, t0.Add(4*time.Hour))
	u.AddInterval(policy.StateArchived, t0, t0.Add(8*time.Hour))
	u.AddInterval(policy.StateDestroyed, t0, t0.Add(100*time.Hour))
	u.AddInterval(policy.StateStarted, t0, t0.Add(-time.Hour)) // ignored
	u.AddStorage(BytesPerGB, 2*3600)                           // 1 GiB for 2 h: 2/730 GiB-month
	b := Price(r, u)
	check := func(name string, got, want float64) {
		t.Helper()
		if !near(got, want) {
			t.Errorf("%s = %v, want %v", name, got, want)
		}
	}
	check("running", b.Running, 3*2+0.5*2)
	check("idle", b.Idle, 4*0.5+8*0.25)
	check("compute", b.Compute, 11)
	check("storage", b.Storage, 2)
	check("total", b.Total, 13)
	check("destroyed", b.ByState[policy.StateDestroyed], 0)
	check("running hours", u.RunningHours(), 3.5)
	check("stopped hours", u.Hours(policy.StateStopped), 4)
}

func TestUsageOfAndMerge(t *testing.T) {
	t0 := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	h := func(n int) time.Time { return t0.Add(time.Duration(n) * time.Hour) }
	iv := []Interval{
		{policy.StateStarted, h(0), h(2)},
		{policy.StateStopped, h(2), h(5)},
		{policy.StateDestroyed, h(5), h(9)},
	}
	u := UsageOf(iv, time.Time{}, time.Time{})
	if u.Hours(policy.StateStarted) != 2 || u.Hours(policy.StateStopped) != 3 || u.Hours(policy.StateDestroyed) != 4 {
		t.Fatalf("unclipped %+v", u.Seconds)
	}
	u = UsageOf(iv, h(1), h(3))
	if u.Hours(policy.StateStarted) != 1 || u.Hours(policy.StateStopped) != 1 || u.Hours(policy.StateDestroyed) != 0 {
		t.Fatalf("clipped %+v", u.Seconds)
	}
	var sum Usage
	sum.Merge(u)
	sum.Merge(Usage{Seconds: map[policy.State]float64{policy.StateStarted: 3600}, StoredBytes: 5})
	if sum.Hours(policy.StateStarted) != 2 || sum.StoredBytes != 5 {
		t.Fatalf("merged %+v", sum)
	}
}

func TestSavings(t *testing.T) {
	for _, tt := range []struct{ actual, base, want float64 }{
		{20, 100, 0.8}, {100, 100, 0}, {150, 100, -0.5}, {5, 0, 0},
	} {
		if got := Savings(tt.actual, tt.base); !near(got, tt.want) {
			t.Errorf("Savings(%v, %v) = %v, want %v", tt.actual, tt.base, got, tt.want)
		}
	}
}
