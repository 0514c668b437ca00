package simulate

import (
	"fmt"
	"math"
	"math/rand/v2"
	"time"
)

// SyntheticConfig shapes a synthetic trace.
type SyntheticConfig struct {
	Projects int
	Days     int
	Start    time.Time // midnight UTC of the first day
	Seed     uint64
}

// DefaultSynthetic is 200 projects over 14 days from Monday 2 March 2026,
// seed 1.
func DefaultSynthetic() SyntheticConfig {
	return SyntheticConfig{Projects: 200, Days: 14, Start: time.Date(2026, 3, 2, 0, 0, 0, 0, time.UTC), Seed: 1}
}

// Synthetic generates a seeded trace of AI-agent projects: bursty runs
// clustered in each project's working hours, with long idle gaps.
//
//   - 45 % of projects are "daily" (active on 85 % of weekdays, 15 % of
//     weekend days), 35 % "occasional" (30 % / 5 %), 20 % "abandoned"
//     (active on their first day and, each with probability 1/2, the next
//     two days, then never again).
//   - Projects are created over the first days (exponential, mean 2 days)
//     and live in one of ten time zones from UTC−8 to UTC+9; a project's
//     weekend is its local weekend.
//   - An active day has one work session, or two (40 %), each starting
//     between 09:00 and 18:00 local with 1–6 runs (geometric, mean 2.5);
//     runs last a log-normal 4 minutes median (30 s – 45 min) and are
//     separated by exponential gaps of mean 8 minutes (from 30 s), so some
//     runs follow each other within the stop threshold and some do not.
//   - A run writes no file (20 %) or a geometric number of files (mean 4)
//     of log-normal size (16 KiB median, 100 B – 50 MiB); a workspace starts
//     with a log-normal 40 MiB (1 MiB – 1 GiB) in about 30 KiB per file.
//   - One two-hour bucket outage, on day 4 (a Thursday in the default
//     trace) 14:00–16:00 UTC, makes every flush and verify in it fail.
func Synthetic(c SyntheticConfig) (Trace, error) {
	if c.Projects <= 0 || c.Days <= 0 {
		return Trace{}, fmt.Errorf("synthetic trace needs projects > 0 and days > 0 (got %d, %d)", c.Projects, c.Days)
	}
	r := rand.New(rand.NewPCG(c.Seed, 0x5a4d6b656570)) // "sandkeep"
	start := c.Start
	if start.IsZero() {
		start = DefaultSynthetic().Start
	}
	end := start.AddDate(0, 0, c.Days)
	t := Trace{Start: start, End: end}
	if c.Days > 3 {
		o := start.AddDate(0, 0, 3).Add(14 * time.Hour)
		t.Outages = []Window{{Start: o, End: o.Add(2 * time.Hour)}}
	}
	zones := []int{-8, -7, -5, -4, 0, 1, 2, 3, 8, 9}
	logn := func(median, sigma, lo, hi float64) float64 {
		return math.Min(hi, math.Max(lo, median*math.Exp(sigma*r.NormFloat64())))
	}
	geom := func(mean float64) int { // 1 + geometric, mean `mean`
		n := 1
		for r.Float64() > 1/mean {
			n++
		}
		return n
	}
	for i := 0; i < c.Projects; i++ {
		kind := r.Float64()
		tz := time.Duration(zones[r.IntN(len(zones))]) * time.Hour
		firstDay := min(int(r.ExpFloat64()*2), c.Days-1)
		lastDay := c.Days - 1
		if kind >= 0.80 {
			lastDay = min(firstDay+2, c.Days-1)
		}
		initBytes := logn(40<<20, 1, 1<<20, 1<<30)
		p := Project{
			ID:           fmt.Sprintf("p%03d", i+1),
			InitialBytes: int64(initBytes),
			InitialFiles: max(1, int64(initBytes/(30<<10))),
		}
		var lastEnd time.Time
		for d := firstDay; d <= lastDay; d++ {
			dayStart := start.AddDate(0, 0, d).Add(-tz) // local midnight in UTC
			wd := dayStart.Add(tz).Weekday()
			weekend := wd == time.Saturday || wd == time.Sunday
			var pActive float64
			switch {
			case d == firstDay:
				pActive = 1
			case kind < 0.45 && weekend:
				pActive = 0.15
			case kind < 0.45:
				pActive = 0.85
			case kind < 0.80 && weekend:
				pActive = 0.05
			case kind < 0.80:
				pActive = 0.30
			default:
				pActive = 0.5
			}
			if r.Float64() >= pActive {
				continue
			}
			sessions := 1
			if r.Float64() < 0.4 {
				sessions = 2
			}
			for s := 0; s < sessions; s++ {
				lo, hi := 9.0, 18.0
				if sessions == 2 {
					lo, hi = []float64{9, 13.5}[s], []float64{12, 18}[s]
				}
				at := dayStart.Add(time.Duration((lo + r.Float64()*(hi-lo)) * float64(time.Hour))).Truncate(time.Second)
				if at.Before(lastEnd) {
					at = lastEnd.Add(time.Minute)
				}
				for n := min(geom(2.5), 6); n > 0; n-- {
					dur := time.Duration(logn(240, 0.8, 30, 45*60) * float64(time.Second)).Truncate(time.Second)
					run := Run{Start: at, Duration: Duration(dur)}
					if r.Float64() >= 0.2 {
						run.Files = int64(geom(4))
						for f := int64(0); f < run.Files; f++ {
							run.Bytes += int64(logn(16<<10, 1.5, 100, 50<<20))
						}
					}
					if !at.Before(end) {
						break
					}
					p.Runs = append(p.Runs, run)
					lastEnd = run.End()
					gap := time.Duration(math.Max(30, r.ExpFloat64()*8*60) * float64(time.Second)).Truncate(time.Second)
					at = lastEnd.Add(gap)
				}
			}
		}
		if len(p.Runs) == 0 { // created on a day its first session fell past the end
			continue
		}
		t.Projects = append(t.Projects, p)
	}
	if err := t.Normalize(); err != nil {
		return Trace{}, fmt.Errorf("synthetic trace: %w", err)
	}
	return t, nil
}
