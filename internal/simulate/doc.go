// Package simulate replays an activity trace through sandkeep's lifecycle
// engine (policy.Decide, the same function the coordinator's lifecycle
// manager calls) and reports sandbox-hours, cost, restores, waits and files
// lost for four strategies:
//
//   - always-on: every project's sandbox runs from its creation to the end
//     of the trace (what platforms do today, because destroying loses files).
//   - timers: Daytona's defaults: auto-stop after 15 min idle, auto-archive
//     7 days after that, never destroy; a run that finds its sandbox stopped
//     waits for a start (archived: a slower start).
//   - sandkeep: policy.Decide with the configured policy (default: notify at
//     5 min idle, flush, stop at 10 min, verify, destroy at 1 h). A run that
//     finds its project destroyed waits for EnsureSandbox: create + restore,
//     restore time modelled from the workspace size.
//   - naive-destroy: the same stop/destroy timers with no backup, destroying
//     whatever is in the workspace: the baseline that shows "files lost"
//     measures something.
//
// # The model
//
// The clock is simulated and event-driven: it jumps to the next run start,
// run end, transition end (create, start, stop, restore), flush/verify end,
// or the NotBefore of the engine's last decision. Nothing sleeps; a 14-day
// trace of 200 projects replays in well under a second.
//
// A run holds a run lease from the moment its sandbox is ready until it ends
// (so the engine never reaps it); a run that arrives while its sandbox is
// not started waits, and that wait is reported (the first creation of each
// project is the same for every strategy and is not counted). Activity is
// the run's start and end, as agent heartbeats would report it. A run's
// files are written at its end; they count as durable only once a flush
// barrier that began after they were written has succeeded — the agent's
// continuous sync, which in practice makes them durable within seconds, is
// given no credit, so the engine's flush → verify → destroy gate is the only
// thing between a destroy and lost files. Files lost = files written (the
// initial workspace included) and not flushed when a sandbox is destroyed;
// it is counted, not assumed. Flushes and verifies fail inside the trace's
// outages and, seeded, with Options.FailureRate elsewhere; a failed flush
// or verify backs off as the engine says. A stopped sandbox that must be
// flushed is started for it (counted as flush starts).
//
// Time in creating, starting, started (restoring included) and stopping is
// billed at the started rate; stopped and archived at theirs (see package
// cost). sandkeep alone pays for bucket storage: the initial workspace
// plus every byte written, uncompressed, never deduplicated or collected —
// an overestimate.
//
// # Trace format
//
// One JSON document:
//
//	{
//	  "start": "2026-03-02T00:00:00Z",        // optional: default the earliest project creation
//	  "end":   "2026-03-16T00:00:00Z",        // optional: default the latest run end
//	  "outages": [{"start": "…", "end": "…"}], // optional: the bucket is down, flushes and verifies fail
//	  "projects": [
//	    {"id": "p001",
//	     "created": "2026-03-02T09:12:00Z",  // optional: default its first run's start
//	     "initial_files": 1200, "initial_bytes": 41943040,   // optional workspace at creation
//	     "policy": {"stop_after": "5m", "destroy_after": "30m"}, // optional override (sandkeep only)
//	     "runs": [{"start": "2026-03-02T09:12:00Z", "duration": "6m30s", "files": 4, "bytes": 81920}]}
//	  ]
//	}
//
// or JSON lines, one run per line, each naming its project, with an
// optional first line holding start, end and outages:
//
//	{"end": "2026-03-16T00:00:00Z"}
//	{"project": "p001", "start": "2026-03-02T09:12:00Z", "duration": "6m30s", "files": 4, "bytes": 81920}
//	{"project": "p001", "start": "2026-03-02T09:25:00Z", "duration": 240}
//
// Times are RFC 3339; durations are Go duration strings or seconds. Runs of
// one project may overlap (they share the sandbox). `sandkeep simulate
// --synthetic --write-trace FILE` writes the synthetic trace in this format.
package simulate
