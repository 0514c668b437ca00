// Package metrics holds the coordinator's Prometheus metrics. They are
// registered on a private registry served at /metrics on the HTTP listener.
package metrics

import (
	"net/http"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"
)

// Metrics are the coordinator's instruments.
type Metrics struct {
	Registry *prometheus.Registry
	started  time.Time

	Commits         *prometheus.CounterVec // result: ok, conflict, error; kind: sync, flush, rollback
	CommitSeconds   prometheus.Histogram   // coordinator-side commit latency
	PacksCompleted  *prometheus.CounterVec // result: ok, error
	PackBytes       prometheus.Counter     // bytes of verified uploaded packs
	ChunksIndexed   prometheus.Counter     // chunks newly indexed
	ChunksAsked     prometheus.Counter     // chunk ids asked about by FindMissingChunks
	ChunksMissing   prometheus.Counter     // of those, how many were missing (dedup ratio = 1 - missing/asked)
	RestorePlans    *prometheus.CounterVec // result: ok, error
	RestoreSeconds  prometheus.Histogram   // time to stream a restore plan
	AgentSessions   prometheus.Gauge       // connected agent session streams
	Heartbeats      prometheus.Counter     // heartbeats received
	ReaperActions   *prometheus.CounterVec // action: stop, destroy, ...; result
	CostDollars     *prometheus.GaugeVec   // project, kind (compute, storage)
	HTTPRequests    *prometheus.CounterVec // handler, code
	GCRuns          *prometheus.CounterVec // periodic garbage collections, result: ok, error
	GCBytesFreed    prometheus.Counter     // pack bytes they deleted
	GCVersions      prometheus.Counter     // versions their retention deleted
	GCLastSuccess   prometheus.Gauge       // unix time of the last one that succeeded
	ScrubBytes      prometheus.Counter     // pack bytes read back and verified by checks (scrubs)
	ScrubProblems   *prometheus.CounterVec // kind: missing_pack, bad_chunk, ...
	ScrubRuns       *prometheus.CounterVec // result: ok (no problem), problems, error
	Replicated      *prometheus.CounterVec // op: put, delete; done on the replica bucket
	ReplicatedBytes prometheus.Counter     // bytes copied to the replica bucket

	ProviderCalls       *prometheus.CounterVec   // op, result (guard.Result)
	ProviderCallSeconds *prometheus.HistogramVec // op: a call with its retries
	ProviderCircuitOpen prometheus.Gauge         // 1 while the provider's circuit breaker is open
	EnsureSeconds       *prometheus.HistogramVec // result: ok, error; EnsureSandbox as a whole
	SandboxesReplaced   *prometheus.CounterVec   // reason: lost, failed, silent, stuck
}

// New makes and registers the metrics.
func New() *Metrics {
	r := prometheus.NewRegistry()
	r.MustRegister(collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	m := &Metrics{
		Registry: r,
		started:  time.Now(),
		Commits: prometheus.NewCounterVec(prometheus.CounterOpts{
			Namespace: "sandkeep", Name: "commits_total", Help: "Version commits (backups) by result and kind.",
		}, []string{"result", "kind"}),
		CommitSeconds: prometheus.NewHistogram(prometheus.HistogramOpts{
			Namespace: "sandkeep", Name: "commit_seconds", Help: "Coordinator-side commit latency.",
			Buckets: prometheus.ExponentialBuckets(0.001, 2, 14),
		}),
		PacksCompleted: prometheus.NewCounterVec(prometheus.CounterOpts{
			Namespace: "sandkeep", Name: "packs_completed_total", Help: "Uploaded packs verified and indexed, by result.",
		}, []string{"result"}),
		PackBytes: prometheus.NewCounter(prometheus.CounterOpts{
			Namespace: "sandkeep", Name: "pack_bytes_total", Help: "Bytes of uploaded packs verified.",
		}),
		ChunksIndexed: prometheus.NewCounter(prometheus.CounterOpts{
			Namespace: "sandkeep", Name: "chunks_indexed_total", Help: "Chunks newly indexed.",
		}),
		ChunksAsked: prometheus.NewCounter(prometheus.CounterOpts{
			Namespace: "sandkeep", Name: "chunks_asked_total", Help: "Chunk ids agents asked about (FindMissingChunks).",
		}),
		ChunksMissing: prometheus.NewCounter(prometheus.CounterOpts{
			Namespace: "sandkeep", Name: "chunks_missing_total", Help: "Asked chunk ids that had to be uploaded; 1 - missing/asked is the dedup ratio.",
		}),
		RestorePlans: prometheus.NewCounterVec(prometheus.CounterOpts{
			Namespace: "sandkeep", Name: "restore_plans_total", Help: "Restore plans served, by result.",
		}, []string{"result"}),
		RestoreSeconds: prometheus.NewHistogram(prometheus.HistogramOpts{
			Namespace: "sandkeep", Name: "restore_plan_seconds", Help: "Time to stream a restore plan (the agent's restore runs alongside).",
			Buckets: prometheus.ExponentialBuckets(0.01, 2, 14),
		}),
		AgentSessions: prometheus.NewGauge(prometheus.GaugeOpts{
			Namespace: "sandkeep", Name: "agent_sessions", Help: "Connected agent session streams.",
		}),
		Heartbeats: prometheus.NewCounter(prometheus.CounterOpts{
			Namespace: "sandkeep", Name: "heartbeats_total", Help: "Agent heartbeats received.",
		}),
		ReaperActions: prometheus.NewCounterVec(prometheus.CounterOpts{
			Namespace: "sandkeep", Name: "reaper_actions_total", Help: "Lifecycle actions taken on sandboxes, by action and result.",
		}, []string{"action", "result"}),
		CostDollars: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Namespace: "sandkeep", Name: "cost_dollars", Help: "Accumulated cost per project and kind (compute, storage).",
		}, []string{"project", "kind"}),
		HTTPRequests: prometheus.NewCounterVec(prometheus.CounterOpts{
			Namespace: "sandkeep", Name: "http_requests_total", Help: "HTTP requests by handler and status code.",
		}, []string{"handler", "code"}),
		GCRuns: prometheus.NewCounterVec(prometheus.CounterOpts{
			Namespace: "sandkeep", Name: "gc_runs_total", Help: "Periodic garbage collections of every project, by result.",
		}, []string{"result"}),
		GCBytesFreed: prometheus.NewCounter(prometheus.CounterOpts{
			Namespace: "sandkeep", Name: "gc_bytes_freed_total", Help: "Bytes of pack objects deleted by periodic garbage collections.",
		}),
		GCVersions: prometheus.NewCounter(prometheus.CounterOpts{
			Namespace: "sandkeep", Name: "gc_versions_deleted_total", Help: "Versions deleted by the retention policies in periodic garbage collections.",
		}),
		GCLastSuccess: prometheus.NewGauge(prometheus.GaugeOpts{
			Namespace: "sandkeep", Name: "gc_last_success_timestamp_seconds", Help: "Unix time at which the last successful periodic garbage collection ended (0: none yet).",
		}),
		ScrubBytes: prometheus.NewCounter(prometheus.CounterOpts{
			Namespace: "sandkeep", Name: "scrub_bytes_verified_total", Help: "Pack bytes read back and verified chunk by chunk by checks (sandkeep check --read-data, --scrub-interval).",
		}),
		ScrubProblems: prometheus.NewCounterVec(prometheus.CounterOpts{
			Namespace: "sandkeep", Name: "scrub_problems_total", Help: "Problems checks found in what is stored, by kind (missing_pack, short_pack, bad_chunk, missing_blob, bad_tree, bad_footer).",
		}, []string{"kind"}),
		ScrubRuns: prometheus.NewCounterVec(prometheus.CounterOpts{
			Namespace: "sandkeep", Name: "scrub_runs_total", Help: "Checks of what is stored, by result (ok, problems, error).",
		}, []string{"result"}),
		Replicated: prometheus.NewCounterVec(prometheus.CounterOpts{
			Namespace: "sandkeep", Name: "replicated_objects_total", Help: "Objects copied to (put) or deleted from (delete) the replica bucket.",
		}, []string{"op"}),
		ReplicatedBytes: prometheus.NewCounter(prometheus.CounterOpts{
			Namespace: "sandkeep", Name: "replicated_bytes_total", Help: "Bytes copied to the replica bucket.",
		}),
		ProviderCalls: prometheus.NewCounterVec(prometheus.CounterOpts{
			Namespace: "sandkeep", Name: "provider_calls_total", Help: "Sandbox provider calls by operation and result (ok, not_found, unavailable, circuit_open, …).",
		}, []string{"op", "result"}),
		ProviderCallSeconds: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Namespace: "sandkeep", Name: "provider_call_seconds", Help: "Sandbox provider call latency (retries included) by operation.",
			Buckets: prometheus.ExponentialBuckets(0.005, 2, 16),
		}, []string{"op"}),
		ProviderCircuitOpen: prometheus.NewGauge(prometheus.GaugeOpts{
			Namespace: "sandkeep", Name: "provider_circuit_open", Help: "1 while the provider's circuit breaker is open (calls fail at once).",
		}),
		EnsureSeconds: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Namespace: "sandkeep", Name: "ensure_seconds", Help: "EnsureSandbox latency by result.",
			Buckets: prometheus.ExponentialBuckets(0.05, 2, 14),
		}, []string{"result"}),
		SandboxesReplaced: prometheus.NewCounterVec(prometheus.CounterOpts{
			Namespace: "sandkeep", Name: "sandboxes_replaced_total", Help: "Sandboxes EnsureSandbox or the loop found lost, failed, silent or stuck and replaced, by reason.",
		}, []string{"reason"}),
	}
	r.MustRegister(m.Commits, m.CommitSeconds, m.PacksCompleted, m.PackBytes, m.ChunksIndexed, m.ChunksAsked,
		m.ChunksMissing, m.RestorePlans, m.RestoreSeconds, m.AgentSessions, m.Heartbeats, m.ReaperActions,
		m.CostDollars, m.HTTPRequests, m.GCRuns, m.GCBytesFreed, m.GCVersions, m.GCLastSuccess, m.ScrubBytes, m.ScrubProblems, m.ScrubRuns, m.Replicated, m.ReplicatedBytes,
		m.ProviderCalls, m.ProviderCallSeconds, m.ProviderCircuitOpen, m.EnsureSeconds, m.SandboxesReplaced)
	return m
}

// ObserveGC records a periodic garbage collection: what it freed and
// whether it succeeded (for every project).
func (m *Metrics) ObserveGC(bytesFreed int64, versionsDeleted int, ok bool) {
	m.GCBytesFreed.Add(float64(bytesFreed))
	m.GCVersions.Add(float64(versionsDeleted))
	if !ok {
		m.GCRuns.WithLabelValues("error").Inc()
		return
	}
	m.GCRuns.WithLabelValues("ok").Inc()
	m.GCLastSuccess.SetToCurrentTime()
}

// ObserveCheck records a check of what is stored: bytes verified, the
// problems by kind, and the run's result.
func (m *Metrics) ObserveCheck(bytesRead int64, problemKinds []string, err error) {
	m.ScrubBytes.Add(float64(bytesRead))
	for _, k := range problemKinds {
		m.ScrubProblems.WithLabelValues(k).Inc()
	}
	switch {
	case err != nil:
		m.ScrubRuns.WithLabelValues("error").Inc()
	case len(problemKinds) > 0:
		m.ScrubRuns.WithLabelValues("problems").Inc()
	default:
		m.ScrubRuns.WithLabelValues("ok").Inc()
	}
}

// ObserveReplicated counts an object copied to (or deleted from) the
// replica bucket.
func (m *Metrics) ObserveReplicated(op string, bytes int64) {
	m.Replicated.WithLabelValues(op).Inc()
	m.ReplicatedBytes.Add(float64(bytes))
}

// Handler serves the registry in the Prometheus text format.
func (m *Metrics) Handler() http.Handler {
	return promhttp.HandlerFor(m.Registry, promhttp.HandlerOpts{Registry: m.Registry})
}
