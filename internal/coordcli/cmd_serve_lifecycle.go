package coordcli

import (
	"fmt"
	"strconv"
	"strings"
	"time"

	"github.com/spf13/pflag"

	"github.com/sandkeep/sandkeep/internal/cost"
	"github.com/sandkeep/sandkeep/internal/policy"
	"github.com/sandkeep/sandkeep/internal/server"
)

// lifecycleFlags adds serve's provider, policy and rate flags.
func lifecycleFlags(f *pflag.FlagSet, lc *server.LifecycleConfig) {
	def := policy.Default()
	rates := cost.DefaultRates()
	lc.Policy, lc.Rates = def, rates
	f.StringVar(&lc.Provider, "provider", "", "sandbox provider: local or daytona (default: none; sandbox operations then fail with \"no provider configured\")")
	f.StringVar(&lc.DaytonaAPIURL, "daytona-api-url", "", "Daytona API base URL (default https://app.daytona.io/api)")
	f.StringVar(&lc.DaytonaAPIKey, "daytona-api-key", "", "Daytona API key")
	f.StringVar(&lc.DaytonaOrg, "daytona-org", "", "Daytona organization id (X-Daytona-Organization-ID)")
	f.StringVar(&lc.DaytonaSnapshot, "daytona-snapshot", "", "Daytona snapshot of new sandboxes (one with sandkeep-agent installed by install.sh --boot)")
	f.StringVar(&lc.DaytonaTarget, "daytona-target", "", "Daytona region of new sandboxes (default: the organization's)")
	f.StringVar(&lc.LocalRoot, "local-root", "", "local provider: directory of the sandboxes (default <data>/sandboxes)")
	f.StringVar(&lc.LocalAgent, "local-agent", "", "local provider: the sandkeep-agent binary (default: beside sandkeep, else in PATH)")
	f.StringVar(&lc.AgentCoordinator, "agent-coordinator", "", "gRPC address the agents of created sandboxes reach (default: the --listen address)")
	f.DurationVar(&lc.Policy.StopAfter, "stop-after", def.StopAfter, "global policy: stop a sandbox after this long idle (0: never)")
	f.DurationVar(&lc.Policy.DestroyAfter, "destroy-after", def.DestroyAfter, "global policy: destroy after this long idle, once flushed and verified (0: never)")
	f.DurationVar(&lc.Policy.ArchiveAfter, "archive-after", def.ArchiveAfter, "global policy: archive a stopped sandbox after this long idle (0: never)")
	f.DurationVar(&lc.Policy.DeleteHistoryAfter, "delete-history-after", def.DeleteHistoryAfter, "global policy: delete a project's whole history this long after it went idle, once its sandbox is destroyed (0: never)")
	f.DurationVar(&lc.Policy.NotifyGrace, "notify-grace", def.NotifyGrace, "global policy: call the webhook this long before each cleanup (0: no webhook)")
	f.StringVar(&lc.Webhook, "lifecycle-webhook", "", "global cleanup webhook URL (projects may set their own with 'sandkeep policy set --webhook')")
	f.Var((*rate)(&lc.Rates.StartedPerHour), "rate-started", "USD per hour of a running sandbox (Daytona's list price for 1 vCPU, 1 GiB, 3 GiB disk)")
	f.Var((*rate)(&lc.Rates.StoppedPerHour), "rate-stopped", "USD per hour of a stopped sandbox (its disk)")
	f.Var((*rate)(&lc.Rates.ArchivedPerHour), "rate-archived", "USD per hour of an archived sandbox")
	f.Var((*rate)(&lc.Rates.StoragePerGBMonth), "rate-storage", "USD per GiB-month of bucket storage (S3 Standard's list price)")
	f.DurationVar(&lc.TickEvery, "lifecycle-tick", 5*time.Second, "how often the lifecycle manager looks at every sandbox")
	f.DurationVar(&lc.ReconcileEvery, "reconcile-every", time.Minute, "how often the database is reconciled with the provider")
	f.DurationVar(&lc.ProviderCallTimeout, "provider-timeout", 30*time.Second, "bound on one provider call attempt (a call that hangs counts as a provider failure; 5 in a row open the circuit for 30s)")
	f.DurationVar(&lc.AgentTimeout, "agent-timeout", 2*time.Minute, "a started sandbox whose agent has not answered for this long is replaced by 'sandkeep sandbox ensure'")
	f.DurationVar(&lc.StuckAfter, "stuck-after", 15*time.Minute, "a sandbox in the error state or in a transition for this long is flushed if its agent answers, then destroyed (the next ensure creates another)")
}

// rate is a float flag whose default prints as a price (6 significant
// decimals at most), not as 9.452054794520548e-05.
type rate float64

func (r *rate) String() string {
	return strings.TrimRight(strings.TrimRight(strconv.FormatFloat(float64(*r), 'f', 8, 64), "0"), ".")
}

func (r *rate) Type() string { return "usd" }

func (r *rate) Set(s string) error {
	v, err := strconv.ParseFloat(s, 64)
	if err != nil || v < 0 {
		return fmt.Errorf("want a non-negative number, got %q", s)
	}
	*r = rate(v)
	return nil
}
