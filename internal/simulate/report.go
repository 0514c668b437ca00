package simulate

import (
	"bytes"
	"fmt"
	"io"
	"math"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/sandkeep/sandkeep/internal/cost"
	"github.com/sandkeep/sandkeep/internal/policy"
)

// Report is the outcome of replaying a trace under every strategy.
type Report struct {
	Trace   TraceSummary `json:"trace"`
	Options Options      `json:"options"`
	Results []Result     `json:"strategies"`
}

// TraceSummary describes the replayed trace.
type TraceSummary struct {
	Start        time.Time `json:"start"`
	End          time.Time `json:"end"`
	Days         float64   `json:"days"`
	Projects     int       `json:"projects"`
	Runs         int       `json:"runs"`
	RunHours     float64   `json:"run_hours"`
	FilesWritten int64     `json:"files_written"`
	BytesWritten int64     `json:"bytes_written"`
	Outages      int       `json:"outages"`
}

// Result is one strategy's figures over the whole trace.
type Result struct {
	Strategy Strategy `json:"strategy"`
	// Hours by state; RunningHours sums the states billed as running
	// (creating, starting, started, stopping): the sandbox-hours.
	Hours        map[policy.State]float64 `json:"hours"`
	RunningHours float64                  `json:"running_hours"`
	// RunningHoursSavedPct: fewer running hours than always-on, in %.
	RunningHoursSavedPct float64        `json:"running_hours_saved_pct"`
	Cost                 cost.Breakdown `json:"cost"`
	// CostSavingsPct: lower total cost than always-on, in %.
	CostSavingsPct float64 `json:"cost_savings_pct"`
	Creates        int     `json:"creates"`
	Starts         int     `json:"starts"`
	FlushStarts    int     `json:"flush_starts"`
	Restores       int     `json:"restores"`
	// Waits: runs that found no started sandbox (the first creation of a
	// project aside), and how long they waited, in seconds.
	Waits             int                   `json:"waits"`
	WaitP50           float64               `json:"wait_p50_seconds"`
	WaitP99           float64               `json:"wait_p99_seconds"`
	WaitMax           float64               `json:"wait_max_seconds"`
	RestoreWaitP50    float64               `json:"restore_wait_p50_seconds"`
	RestoreWaitP99    float64               `json:"restore_wait_p99_seconds"`
	FilesWritten      int64                 `json:"files_written"`
	FilesLost         int64                 `json:"files_lost"`
	Actions           map[policy.Action]int `json:"actions"`
	FailedFlushes     int                   `json:"failed_flushes"`
	FailedVerifies    int                   `json:"failed_verifies"`
	AlertingDecisions int                   `json:"alerting_decisions"`
}

// Percentile is the nearest-rank percentile (0 < q ≤ 1) of sorted values, 0
// for none.
func Percentile(sorted []float64, q float64) float64 {
	if len(sorted) == 0 {
		return 0
	}
	i := int(math.Ceil(q*float64(len(sorted)))) - 1
	return sorted[min(max(i, 0), len(sorted)-1)]
}

// Summarize describes a trace.
func Summarize(tr *Trace) TraceSummary {
	s := TraceSummary{Start: tr.Start, End: tr.End, Days: tr.End.Sub(tr.Start).Hours() / 24, Projects: len(tr.Projects), Outages: len(tr.Outages)}
	for _, p := range tr.Projects {
		for _, r := range p.Runs {
			s.Runs++
			s.RunHours += time.Duration(r.Duration).Hours()
			s.FilesWritten += r.Files
			s.BytesWritten += r.Bytes
		}
	}
	return s
}

// Replay replays the trace under every strategy.
func Replay(tr *Trace, opt Options) (Report, error) {
	if err := opt.Validate(); err != nil {
		return Report{}, err
	}
	rep := Report{Trace: Summarize(tr), Options: opt}
	var base Result
	for _, s := range Strategies {
		t, err := Simulate(tr, s, opt)
		if err != nil {
			return Report{}, err
		}
		r := Result{
			Strategy: s, Hours: map[policy.State]float64{}, RunningHours: t.Usage.RunningHours(),
			Cost: cost.Price(opt.Rates, t.Usage), Creates: t.Creates, Starts: t.Starts, FlushStarts: t.FlushStarts,
			Restores: t.Restores, Waits: len(t.Waits), WaitP50: Percentile(t.Waits, 0.5), WaitP99: Percentile(t.Waits, 0.99),
			WaitMax: Percentile(t.Waits, 1), RestoreWaitP50: Percentile(t.RestoreWaits, 0.5), RestoreWaitP99: Percentile(t.RestoreWaits, 0.99),
			FilesWritten: t.FilesWritten, FilesLost: t.FilesLost, Actions: map[policy.Action]int{},
			FailedFlushes: t.Failures[policy.ActionFlush], FailedVerifies: t.Failures[policy.ActionVerify], AlertingDecisions: t.Alerts,
		}
		for st, sec := range t.Usage.Seconds {
			r.Hours[st] = sec / 3600
		}
		for a, n := range t.Actions {
			r.Actions[a] = n
		}
		if s == AlwaysOn {
			base = r
		}
		if base.RunningHours > 0 {
			r.RunningHoursSavedPct = 100 * (1 - r.RunningHours/base.RunningHours)
		}
		r.CostSavingsPct = 100 * cost.Savings(r.Cost.Total, base.Cost.Total)
		rep.Results = append(rep.Results, r)
	}
	return rep, nil
}

// Result returns the result of one strategy.
func (r Report) Result(s Strategy) (Result, bool) {
	for _, x := range r.Results {
		if x.Strategy == s {
			return x, true
		}
	}
	return Result{}, false
}

func fmtDur(d time.Duration) string {
	switch {
	case d == 0:
		return "0"
	case d%(24*time.Hour) == 0:
		return fmt.Sprintf("%dd", d/(24*time.Hour))
	case d%time.Hour == 0:
		return fmt.Sprintf("%dh", d/time.Hour)
	case d%time.Minute == 0:
		return fmt.Sprintf("%dm", d/time.Minute)
	}
	return d.String()
}

// WriteTable prints the report for people.
func (r Report) WriteTable(w io.Writer) error {
	t, o := r.Trace, r.Options
	p := o.Policy
	fmt.Fprintf(w, "trace: %d projects, %s → %s (%.1f days), %d runs (%.1f run-hours), %d files / %.1f MiB written, %d bucket outage(s)\n",
		t.Projects, t.Start.UTC().Format("2006-01-02 15:04"), t.End.UTC().Format("2006-01-02 15:04"), t.Days, t.Runs, t.RunHours,
		t.FilesWritten, float64(t.BytesWritten)/(1<<20), t.Outages)
	fmt.Fprintf(w, "sandkeep: stop after %s, destroy after %s once flushed and verified, notify %s before; flush/verify failure rate %g %%\n",
		fmtDur(p.StopAfter), fmtDur(p.DestroyAfter), fmtDur(p.NotifyGrace), 100*o.FailureRate)
	fmt.Fprintf(w, "timers: stop after %s, archive %s later; naive-destroy: stop after %s, destroy after %s, no flush\n",
		fmtDur(time.Duration(o.TimersStopAfter)), fmtDur(time.Duration(o.TimersArchiveAfter)), fmtDur(p.StopAfter), fmtDur(p.DestroyAfter))
	fmt.Fprintf(w, "rates: started $%.6f/h, stopped $%.6f/h, archived $%.7f/h, bucket $%.3f/GiB-month\n\n",
		o.Rates.StartedPerHour, o.Rates.StoppedPerHour, o.Rates.ArchivedPerHour, o.Rates.StoragePerGBMonth)
	var tb bytes.Buffer
	tw := tabwriter.NewWriter(&tb, 0, 4, 2, ' ', tabwriter.AlignRight)
	fmt.Fprintln(tw, "STRATEGY     \tRUNNING h\tSAVED\tSTOPPED h\tARCHIVED h\tCOMPUTE $\tSTORAGE $\tTOTAL $\tSAVINGS\tSTARTS\tRESTORES\tWAIT p50\tWAIT p99\tFILES LOST\t")
	for _, x := range r.Results {
		fmt.Fprintf(tw, "%-13s\t%.1f\t%.1f %%\t%.1f\t%.1f\t%.2f\t%.2f\t%.2f\t%.1f %%\t%d\t%d\t%.1f s\t%.1f s\t%d\t\n",
			x.Strategy, x.RunningHours, x.RunningHoursSavedPct, x.Hours[policy.StateStopped], x.Hours[policy.StateArchived],
			x.Cost.Compute, x.Cost.Storage, x.Cost.Total, x.CostSavingsPct, x.Starts, x.Restores, x.WaitP50, x.WaitP99, x.FilesLost)
	}
	if err := tw.Flush(); err != nil {
		return err
	}
	// Right alignment pads the first column on its left too: drop that.
	for _, line := range strings.SplitAfter(tb.String(), "\n") {
		if _, err := io.WriteString(w, strings.TrimPrefix(line, "  ")); err != nil {
			return err
		}
	}
	fmt.Fprintln(w, "(RUNNING h: sandbox-hours billed as running; SAVED: fewer of them than always-on; SAVINGS: lower total cost than always-on;")
	fmt.Fprintln(w, " STARTS: runs that found their sandbox stopped; RESTORES: runs that found it destroyed (create + restore); WAIT: those runs' wait)")
	for _, x := range r.Results {
		if x.Strategy != Sandkeep {
			continue
		}
		a := x.Actions
		fmt.Fprintf(w, "\nsandkeep engine: %d notify, %d flush (%d failed), %d verify (%d failed), %d stop, %d destroy; %d alerting decisions; %d starts only to flush; restore wait p50 %.1f s, p99 %.1f s, max wait %.1f s\n",
			a[policy.ActionNotify], a[policy.ActionFlush], x.FailedFlushes, a[policy.ActionVerify], x.FailedVerifies,
			a[policy.ActionStop], a[policy.ActionDestroy], x.AlertingDecisions, x.FlushStarts, x.RestoreWaitP50, x.RestoreWaitP99, x.WaitMax)
		fmt.Fprintf(w, "files written %d, lost %d (a file counts as safe only once a flush barrier after it succeeded)\n", x.FilesWritten, x.FilesLost)
	}
	if x, ok := r.Result(NaiveDestroy); ok && x.FilesLost > 0 {
		fmt.Fprintf(w, "naive-destroy lost %d files (initial workspaces included): what destroying idle sandboxes without sandkeep costs\n", x.FilesLost)
	}
	return nil
}
