// Package cost turns sandbox state time and stored bytes into money: time in
// each lifecycle state × that state's hourly rate, plus bucket bytes × a
// storage rate, and the savings against keeping every sandbox running.
//
// # Default rates
//
// DefaultRates prices Daytona's default sandbox (1 vCPU, 1 GiB RAM, 3 GiB
// disk) at Daytona's published pay-as-you-go list prices (daytona.io/pricing:
// vCPU $0.0504/h, memory $0.0162/GiB-h, disk $0.000108/GiB-h, all billed per
// second), and the bucket at AWS S3 Standard's list price ($0.023/GB-month,
// us-east-1, first 50 TB):
//
//	started   0.0504 + 1×0.0162 + 3×0.000108 = $0.066924/h   (CPU, memory, disk)
//	stopped   3×0.000108                     = $0.000324/h   (disk only)
//	archived  3 GiB at S3 Standard           ≈ $0.0000945/h  (an assumption: Daytona
//	          does not list an archive price; archived sandboxes live in object storage)
//	storage   $0.023 per GiB-month of bucket bytes (GiB = 2^30 bytes, month = 730 h,
//	          AWS's billing conventions)
//
// Daytona's free 5 GiB of disk per organisation is ignored. Other sizes or
// providers: set the rates (sandkeep's commands take them as flags).
//
// creating, starting, stopping and error are billed at the started rate (the
// sandbox holds its CPU and memory while it changes state), destroyed costs
// nothing.
package cost

import (
	"errors"
	"fmt"
	"math"
	"time"

	"github.com/sandkeep/sandkeep/internal/policy"
)

// HoursPerMonth and BytesPerGB are the storage billing units.
const (
	HoursPerMonth = 730
	BytesPerGB    = 1 << 30
)

// Rates are prices in USD.
type Rates struct {
	StartedPerHour    float64 `json:"started_per_hour"`     // running sandbox (and creating, starting, stopping, error)
	StoppedPerHour    float64 `json:"stopped_per_hour"`     // stopped sandbox: its disk
	ArchivedPerHour   float64 `json:"archived_per_hour"`    // archived sandbox
	StoragePerGBMonth float64 `json:"storage_per_gb_month"` // sandkeep's bucket, per GiB-month
}

// DefaultRates are the rates of the package documentation.
func DefaultRates() Rates {
	return Rates{
		StartedPerHour:    0.0504 + 0.0162 + 3*0.000108,
		StoppedPerHour:    3 * 0.000108,
		ArchivedPerHour:   3 * 0.023 / HoursPerMonth,
		StoragePerGBMonth: 0.023,
	}
}

// Validate rejects negative or non-finite rates.
func (r Rates) Validate() error {
	var errs []error
	for _, f := range []struct {
		name string
		v    float64
	}{{"started rate", r.StartedPerHour}, {"stopped rate", r.StoppedPerHour}, {"archived rate", r.ArchivedPerHour}, {"storage rate", r.StoragePerGBMonth}} {
		if f.v < 0 || math.IsNaN(f.v) || math.IsInf(f.v, 0) {
			errs = append(errs, fmt.Errorf("%s must be a non-negative number, not %v", f.name, f.v))
		}
	}
	return errors.Join(errs...)
}

// Running reports whether a state is billed as a running sandbox.
func Running(s policy.State) bool {
	switch s {
	case policy.StateCreating, policy.StateStarting, policy.StateStarted, policy.StateStopping, policy.StateError:
		return true
	}
	return false
}

// PerHour is the hourly rate of a state.
func (r Rates) PerHour(s policy.State) float64 {
	switch {
	case Running(s):
		return r.StartedPerHour
	case s == policy.StateStopped:
		return r.StoppedPerHour
	case s == policy.StateArchived:
		return r.ArchivedPerHour
	}
	return 0
}

// Usage is time spent in each state and bucket bytes held over time.
type Usage struct {
	Seconds     map[policy.State]float64 `json:"seconds"`
	StoredBytes float64                  `json:"stored_byte_seconds"` // byte-seconds
}

// Add counts seconds in a state; non-positive amounts are ignored.
func (u *Usage) Add(s policy.State, seconds float64) {
	if seconds <= 0 {
		return
	}
	if u.Seconds == nil {
		u.Seconds = make(map[policy.State]float64)
	}
	u.Seconds[s] += seconds
}

// AddInterval counts the time from from to to in a state.
func (u *Usage) AddInterval(s policy.State, from, to time.Time) {
	u.Add(s, to.Sub(from).Seconds())
}

// AddStorage counts bytes held for seconds.
func (u *Usage) AddStorage(bytes, seconds float64) {
	if bytes > 0 && seconds > 0 {
		u.StoredBytes += bytes * seconds
	}
}

// Merge adds another usage to u.
func (u *Usage) Merge(o Usage) {
	for s, v := range o.Seconds {
		u.Add(s, v)
	}
	u.StoredBytes += o.StoredBytes
}

// Hours is the time spent in a state, in hours.
func (u Usage) Hours(s policy.State) float64 { return u.Seconds[s] / 3600 }

// RunningHours is the time billed as a running sandbox, in hours.
func (u Usage) RunningHours() float64 {
	var h float64
	for _, s := range policy.States {
		if Running(s) {
			h += u.Hours(s)
		}
	}
	return h
}

// Interval is a stretch of time a sandbox spent in one state, as the
// coordinator records it (the time it entered each state).
type Interval struct {
	State    policy.State
	From, To time.Time
}

// UsageOf sums intervals clipped to [since, until); a zero since or until
// leaves that side open.
func UsageOf(intervals []Interval, since, until time.Time) Usage {
	var u Usage
	for _, iv := range intervals {
		from, to := iv.From, iv.To
		if !since.IsZero() && from.Before(since) {
			from = since
		}
		if !until.IsZero() && to.After(until) {
			to = until
		}
		u.AddInterval(iv.State, from, to)
	}
	return u
}

// Breakdown is a usage priced by rates, in USD.
type Breakdown struct {
	ByState map[policy.State]float64 `json:"by_state"`
	Running float64                  `json:"running"` // states billed at the started rate
	Idle    float64                  `json:"idle"`    // stopped and archived
	Compute float64                  `json:"compute"` // Running + Idle: the sandbox provider's bill
	Storage float64                  `json:"storage"` // the bucket
	Total   float64                  `json:"total"`
}

// Price applies rates to a usage.
func Price(r Rates, u Usage) Breakdown {
	b := Breakdown{ByState: make(map[policy.State]float64)}
	for _, s := range policy.States {
		sec, ok := u.Seconds[s]
		if !ok {
			continue
		}
		c := sec / 3600 * r.PerHour(s)
		b.ByState[s] = c
		if Running(s) {
			b.Running += c
		} else {
			b.Idle += c
		}
	}
	b.Compute = b.Running + b.Idle
	b.Storage = StorageCost(r, u.StoredBytes)
	b.Total = b.Compute + b.Storage
	return b
}

// StorageCost prices byte-seconds of bucket storage.
func StorageCost(r Rates, byteSeconds float64) float64 {
	return byteSeconds / BytesPerGB / (HoursPerMonth * 3600) * r.StoragePerGBMonth
}

// Savings is the fraction of alwaysOn saved by actual: 0.8 means 80 % less.
// It is 0 when alwaysOn is not positive, and negative when actual costs more.
func Savings(actual, alwaysOn float64) float64 {
	if alwaysOn <= 0 {
		return 0
	}
	return (alwaysOn - actual) / alwaysOn
}
