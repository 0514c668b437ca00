package coordcli

import (
	"errors"
	"fmt"
	"io"
	"os"
	"time"

	"github.com/spf13/cobra"

	"github.com/sandkeep/sandkeep/internal/simulate"
)

// newSimulate is `sandkeep simulate`: replay an activity trace through the
// lifecycle policy engine, offline (no coordinator needed).
func newSimulate(g *globals) *cobra.Command {
	opt := simulate.DefaultOptions()
	syn := simulate.DefaultSynthetic()
	var (
		synthetic  bool
		traceFile  string
		writeTrace string
		asJSON     bool
		timersStop time.Duration
		restoreMiB float64
	)
	cmd := &cobra.Command{
		Use:   "simulate --synthetic [--seed N] | --trace FILE",
		Short: "Replay an activity trace through the lifecycle policy: sandbox-hours, cost, restores, files lost",
		Long: `Replay an activity trace (projects with agent runs) through sandkeep's lifecycle
policy engine, and through always-on, Daytona-style timers (15 min auto-stop) and a
naive destroy-without-backup baseline. Prints, per strategy, sandbox-hours by state,
cost (compute + storage) and savings against always-on, restores needed and how long
runs waited, and files lost. The clock is simulated: it runs in well under a second.

--synthetic generates a seeded trace (200 projects over 14 days by default);
--trace reads one (a JSON document or JSON lines, "-" for stdin; the format is
described in internal/simulate/README.md). Needs no coordinator.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if synthetic == (traceFile != "") {
				return errors.New("give exactly one of --synthetic and --trace FILE")
			}
			f := cmd.Flags()
			opt.Seed = syn.Seed
			opt.TimersStopAfter = simulate.Duration(timersStop)
			opt.RestoreBytesPerSecond = restoreMiB * (1 << 20)
			if err := opt.Validate(); err != nil {
				return err
			}
			var tr simulate.Trace
			var err error
			if synthetic {
				if tr, err = simulate.Synthetic(syn); err != nil {
					return err
				}
			} else {
				if tr, err = readTrace(traceFile); err != nil {
					return err
				}
				if f.Changed("projects") || f.Changed("days") {
					return errors.New("--projects and --days shape a --synthetic trace only")
				}
			}
			if writeTrace != "" {
				if err := writeTraceFile(writeTrace, tr); err != nil {
					return err
				}
			}
			rep, err := simulate.Replay(&tr, opt)
			if err != nil {
				return err
			}
			if asJSON {
				return printJSON(g.stdout, rep)
			}
			return rep.WriteTable(g.stdout)
		},
	}
	f := cmd.Flags()
	f.BoolVar(&synthetic, "synthetic", false, "replay a seeded synthetic trace")
	f.StringVar(&traceFile, "trace", "", `replay this trace file ("-": stdin)`)
	f.Uint64Var(&syn.Seed, "seed", syn.Seed, "seed of the synthetic trace and of the simulated flush failures")
	f.IntVar(&syn.Projects, "projects", syn.Projects, "projects in the synthetic trace")
	f.IntVar(&syn.Days, "days", syn.Days, "days of the synthetic trace")
	f.StringVar(&writeTrace, "write-trace", "", "also write the replayed trace to this file (JSON)")
	f.BoolVar(&asJSON, "json", false, "print JSON")
	f.DurationVar(&opt.Policy.StopAfter, "stop-after", opt.Policy.StopAfter, "sandkeep policy: stop after this long idle")
	f.DurationVar(&opt.Policy.DestroyAfter, "destroy-after", opt.Policy.DestroyAfter, "sandkeep policy: destroy after this long idle, once flushed and verified")
	f.DurationVar(&opt.Policy.ArchiveAfter, "archive-after", opt.Policy.ArchiveAfter, "sandkeep policy: archive a stopped sandbox after this long idle (0: never)")
	f.DurationVar(&opt.Policy.NotifyGrace, "notify-grace", opt.Policy.NotifyGrace, "sandkeep policy: webhook this long before each cleanup (0: none)")
	f.DurationVar(&timersStop, "timers-stop-after", time.Duration(opt.TimersStopAfter), "timers strategy: auto-stop after this long idle")
	f.Float64Var(&opt.FailureRate, "failure-rate", opt.FailureRate, "probability that a flush or verify fails (besides the trace's outages)")
	f.Float64Var(&opt.StartSeconds, "start-seconds", opt.StartSeconds, "seconds to start a stopped sandbox")
	f.Float64Var(&opt.CreateSeconds, "create-seconds", opt.CreateSeconds, "seconds to create a sandbox")
	f.Float64Var(&restoreMiB, "restore-mib-per-second", opt.RestoreBytesPerSecond/(1<<20), "restore throughput, MiB/s")
	f.Float64Var(&opt.Rates.StartedPerHour, "rate-started", opt.Rates.StartedPerHour, "USD per hour of a running sandbox (default: Daytona's list price for 1 vCPU, 1 GiB, 3 GiB disk)")
	f.Float64Var(&opt.Rates.StoppedPerHour, "rate-stopped", opt.Rates.StoppedPerHour, "USD per hour of a stopped sandbox (its disk)")
	f.Float64Var(&opt.Rates.ArchivedPerHour, "rate-archived", opt.Rates.ArchivedPerHour, "USD per hour of an archived sandbox")
	f.Float64Var(&opt.Rates.StoragePerGBMonth, "rate-storage", opt.Rates.StoragePerGBMonth, "USD per GiB-month of bucket storage (default: S3 Standard's list price)")
	return cmd
}

func readTrace(name string) (simulate.Trace, error) {
	var r io.Reader = os.Stdin
	if name != "-" {
		f, err := os.Open(name)
		if err != nil {
			return simulate.Trace{}, err
		}
		defer f.Close()
		r = f
	}
	tr, err := simulate.Parse(r)
	if err != nil {
		return simulate.Trace{}, fmt.Errorf("%s: %w", name, err)
	}
	return tr, nil
}

func writeTraceFile(name string, tr simulate.Trace) error {
	f, err := os.Create(name)
	if err != nil {
		return err
	}
	if err := tr.Write(f); err != nil {
		f.Close()
		return err
	}
	return f.Close()
}
