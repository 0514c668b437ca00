package metrics

import (
	"fmt"
	"sort"
	"time"

	dto "github.com/prometheus/client_model/go"
)

// Activity is what the coordinator's background work did since it started,
// read back from the metrics (the web console's overview and `sandkeep
// activity` show it).
type Activity struct {
	Since             time.Time
	GCRunsOK          int64
	GCRunsFailed      int64
	GCBytesFreed      int64
	GCVersionsDeleted int64
	GCLastSuccess     time.Time // zero: none yet
	ReaperActions     []Count   // What: action (stop, destroy, ...), Result
	Replaced          []Count   // What: reason (lost, failed, silent, stuck)
	PacksFailed       int64     // uploaded packs that failed verification
}

// Count is one labelled counter value.
type Count struct {
	What, Result string
	N            int64
}

// Activity reads the activity counters.
func (m *Metrics) Activity() (Activity, error) {
	a := Activity{Since: m.started}
	fams, err := m.Registry.Gather()
	if err != nil {
		return a, fmt.Errorf("metrics: %w", err)
	}
	for _, f := range fams {
		for _, mt := range f.GetMetric() {
			v := mt.GetCounter().GetValue()
			if mt.GetGauge() != nil {
				v = mt.GetGauge().GetValue()
			}
			n := int64(v)
			switch f.GetName() {
			case "sandkeep_gc_runs_total":
				if label(mt, "result") == "ok" {
					a.GCRunsOK += n
				} else {
					a.GCRunsFailed += n
				}
			case "sandkeep_gc_bytes_freed_total":
				a.GCBytesFreed = n
			case "sandkeep_gc_versions_deleted_total":
				a.GCVersionsDeleted = n
			case "sandkeep_gc_last_success_timestamp_seconds":
				if v > 0 {
					a.GCLastSuccess = time.Unix(n, 0)
				}
			case "sandkeep_reaper_actions_total":
				a.ReaperActions = append(a.ReaperActions, Count{label(mt, "action"), label(mt, "result"), n})
			case "sandkeep_sandboxes_replaced_total":
				a.Replaced = append(a.Replaced, Count{What: label(mt, "reason"), N: n})
			case "sandkeep_packs_completed_total":
				if label(mt, "result") != "ok" {
					a.PacksFailed += n
				}
			}
		}
	}
	for _, cs := range [][]Count{a.ReaperActions, a.Replaced} {
		sort.Slice(cs, func(i, j int) bool {
			if cs[i].What != cs[j].What {
				return cs[i].What < cs[j].What
			}
			return cs[i].Result < cs[j].Result
		})
	}
	return a, nil
}

func label(m *dto.Metric, name string) string {
	for _, l := range m.GetLabel() {
		if l.GetName() == name {
			return l.GetValue()
		}
	}
	return ""
}
