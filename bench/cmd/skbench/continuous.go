package main

// The continuous-sync part of skbench (-only latency): how long after a
// one-file change `sandkeep-agent run` has a committed version holding it,
// on generated trees of 1k, 10k and 100k files, next to what `restic backup`
// of the same change takes, plus the agent's RSS and CPU while syncing and
// while idle. See bench/README.md.

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math"
	"math/rand/v2"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"syscall"
	"time"
)

// contOptions are the knobs of the continuous-sync part.
type contOptions struct {
	sizes         []int
	changes       int           // one-file changes per tree
	interval      time.Duration // spacing between changes
	resticChanges int           // restic backups of a one-file change per tree (median)
	idle          time.Duration // idle window after the initial sync
}

const (
	changeTimeout = 30 * time.Second      // a change not committed by then is a failed sample
	pollEvery     = 10 * time.Millisecond // status polling while waiting for a commit
	smallFile     = 8 << 10               // changed files are at most this big
	rssTargetMiB  = 64
	idleCPUTarget = 1.0 // percent of one core: "≈ 0"
)

// contReport is the continuous-sync section of the report.
type contReport struct {
	Changes         int          `json:"changes_per_tree"`
	IntervalSeconds float64      `json:"change_interval_seconds"`
	ResticChanges   int          `json:"restic_changes_per_tree"`
	AgentBinaryMB   float64      `json:"agent_binary_mb"`
	Trees           []treeResult `json:"trees"`
}

// treeResult is one row of the continuous-sync table.
type treeResult struct {
	Label string `json:"label"`
	Path  string `json:"path"`
	Files int    `json:"files"`
	Dirs  int    `json:"dirs"`
	Bytes int64  `json:"bytes"`

	// sandkeep: change-to-committed latency, one sample per change.
	Latencies []float64 `json:"latency_seconds"`
	Versions  []int64   `json:"versions"` // the version seen committed for each change
	Timeouts  int       `json:"timeouts"`
	P50       float64   `json:"p50_seconds"`
	P99       float64   `json:"p99_seconds"` // nearest rank: with 20 samples, the largest
	Max       float64   `json:"max_seconds"`
	Met       bool      `json:"met"` // p50 <= 1 s and p99 <= 2 s, no timeouts
	Notes     []string  `json:"notes,omitempty"`

	// restic: backup of the tree after a one-file change, warm cache.
	ResticInitial sample   `json:"restic_initial_backup"`
	ResticChange  []sample `json:"restic_change_backups"`
	ResticMedian  float64  `json:"restic_change_median_seconds"`
	Ratio         float64  `json:"ratio"` // sandkeep p50 / restic median

	Agent agentFigures `json:"agent"`
	// Replica: the replication lag during the run (-replica).
	Replica *replicaFigures `json:"replica,omitempty"`
}

// agentFigures are read from /proc/PID of the running agent.
type agentFigures struct {
	InitialSyncSeconds float64  `json:"initial_sync_seconds"` // process start to idle and clean
	InitialVersion     int64    `json:"initial_version"`
	InitialPeakRSSMiB  float64  `json:"initial_sync_peak_rss_mib"` // VmHWM once clean
	InitialCPUSeconds  float64  `json:"initial_sync_cpu_seconds"`  // utime + stime once clean
	IdleSeconds        float64  `json:"idle_seconds"`
	IdleCPUSeconds     float64  `json:"idle_cpu_seconds"`
	IdleCPUPercent     float64  `json:"idle_cpu_percent"` // of one core
	IdleRSSMiB         float64  `json:"idle_rss_mib"`     // VmRSS at the end of the idle window
	IdleCommits        int64    `json:"idle_commits"`     // versions made during the idle window (want 0)
	EndRSSMiB          float64  `json:"end_rss_mib"`      // VmRSS after the changes
	EndPeakRSSMiB      float64  `json:"end_peak_rss_mib"` // VmHWM after the changes
	EndCPUSeconds      float64  `json:"end_cpu_seconds"`
	StopSeconds        float64  `json:"stop_seconds"` // SIGTERM to exit (final flush)
	ExitCode           int      `json:"exit_code"`
	WatchMode          string   `json:"watch_mode"`
	WatchedDirs        int      `json:"watched_dirs"`
	Overflows          int64    `json:"overflows"`
	Log                string   `json:"log"`
	Problems           []string `json:"log_problems"`
	ProblemN           int      `json:"log_problem_count"`
}

// runContinuous runs the continuous-sync part on every tree size.
func (b *bench) runContinuous(benchDir string) (*contReport, error) {
	co := b.o.cont
	rep := &contReport{Changes: co.changes, IntervalSeconds: co.interval.Seconds(), ResticChanges: co.resticChanges}
	if fi, err := os.Stat(b.agent); err == nil {
		rep.AgentBinaryMB = float64(fi.Size()) / 1e6
	}
	// Generate (or find) every tree first, so a missing 100k tree shows up
	// as generation time, not as part of a measurement.
	dirs := make([]string, len(co.sizes))
	infos := make([]treeInfo, len(co.sizes))
	for i, n := range co.sizes {
		var err error
		if dirs[i], infos[i], err = syntheticTree(b.r.ctx, benchDir, n); err != nil {
			return nil, fmt.Errorf("generating the %s tree: %w", sizeLabel(n), err)
		}
	}
	for i, n := range co.sizes {
		t := treeResult{Label: sizeLabel(n), Path: dirs[i], Files: infos[i].Files, Dirs: infos[i].Dirs, Bytes: infos[i].Bytes}
		if err := b.continuousTree(&t); err != nil {
			return nil, fmt.Errorf("continuous sync, %s tree: %w", t.Label, err)
		}
		rep.Trees = append(rep.Trees, t)
	}
	return rep, nil
}

// continuousTree measures one tree: the agent (initial sync, idle, changes),
// then restic (initial backup, changes). Every changed file is put back at
// the end, so the cached tree stays as generated.
func (b *bench) continuousTree(t *treeResult) (err error) {
	ctx := b.r.ctx
	logf("%s tree: reading every file (warms the page cache for both tools)", t.Label)
	m, err := scan(ctx, t.Path)
	if err != nil {
		return err
	}
	picks := pickSmallFiles(m, t.Files, b.o.cont.changes+b.o.cont.resticChanges)
	if len(picks) < b.o.cont.changes+b.o.cont.resticChanges {
		return fmt.Errorf("the tree has only %d small files to change", len(picks))
	}
	var changed []*change
	defer func() {
		for i := len(changed) - 1; i >= 0; i-- {
			if rerr := changed[i].revert(); rerr != nil && err == nil {
				err = fmt.Errorf("putting back %s: %w", changed[i].path, rerr)
			}
		}
	}()
	edit := func(rel, line string) error {
		c, err := applyChange(filepath.Join(t.Path, filepath.FromSlash(rel)), line)
		if c != nil {
			changed = append(changed, c)
		}
		return err
	}
	if err := b.continuousSandkeep(t, picks[:b.o.cont.changes], edit); err != nil {
		return err
	}
	return b.continuousRestic(t, picks[b.o.cont.changes:], edit)
}

// pickSmallFiles picks n distinct small regular files, spread over the tree
// by a seeded shuffle (the same files every run).
func pickSmallFiles(m manifest, seed, n int) []string {
	var small []string
	for _, p := range sortedKeys(m) {
		if e := m[p]; e.Mode.IsRegular() && e.Size <= smallFile && e.Mode.Perm()&0o200 != 0 {
			small = append(small, p)
		}
	}
	rng := rand.New(rand.NewPCG(uint64(seed), 42))
	rng.Shuffle(len(small), func(i, j int) { small[i], small[j] = small[j], small[i] })
	return small[:min(n, len(small))]
}

// agentStatus is the part of the agent's `status --json` the bench reads.
type agentStatus struct {
	State        string    `json:"state"`
	Version      int64     `json:"version"`
	PendingPaths int64     `json:"pending_paths"`
	LastWrite    time.Time `json:"last_write"`
	LastCommit   time.Time `json:"last_commit"`
	LastError    string    `json:"last_error"`
	Clean        bool      `json:"clean"`
	WatchMode    string    `json:"watch_mode"`
	WatchedDirs  int       `json:"watched_dirs"`
	Overflows    int64     `json:"overflows"`
	Commits      int64     `json:"commits"`
}

func (s agentStatus) settled() bool {
	return s.State == "idle" && s.Clean && s.PendingPaths == 0 && s.Version > 0
}

// agentSocket talks to the agent's control socket with net/http (one kept-
// alive connection: a status poll costs well under a millisecond, where
// spawning `sandkeep-agent status` would cost several).
type agentSocket struct {
	tr *http.Transport
	hc *http.Client
}

func newAgentSocket(path string) *agentSocket {
	tr := &http.Transport{
		DialContext: func(ctx context.Context, _, _ string) (net.Conn, error) {
			var d net.Dialer
			return d.DialContext(ctx, "unix", path)
		},
		MaxIdleConnsPerHost: 1,
	}
	return &agentSocket{tr: tr, hc: &http.Client{Transport: tr}}
}

func (a *agentSocket) close() { a.tr.CloseIdleConnections() }

func (a *agentSocket) do(ctx context.Context, method, path string, timeout time.Duration, out any) error {
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, method, "http://agent"+path, nil)
	if err != nil {
		return err
	}
	resp, err := a.hc.Do(req)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	if err != nil {
		return err
	}
	if resp.StatusCode != http.StatusOK {
		return fmt.Errorf("%s %s: %s: %s", method, path, resp.Status, strings.TrimSpace(string(body)))
	}
	return json.Unmarshal(body, out)
}

func (a *agentSocket) status(ctx context.Context) (agentStatus, error) {
	var s agentStatus
	err := a.do(ctx, http.MethodGet, "/v1/status", 5*time.Second, &s)
	return s, err
}

func (a *agentSocket) flush(ctx context.Context, timeout time.Duration) (int64, error) {
	var out struct {
		Version int64 `json:"version"`
	}
	err := a.do(ctx, http.MethodPost, "/v1/flush?timeout="+timeout.String(), timeout+5*time.Second, &out)
	return out.Version, err
}

// newProject makes a project and a sandbox token for it.
func (b *bench) newProject(logName, name string) (project, token string, err error) {
	admin := []string{"--coordinator", b.coord.addr, "--data", b.coordData}
	out, _, err := b.r.run(logName+"-project-create", "", nil, b.sandkeep, append([]string{"project", "create", name}, admin...)...)
	if err != nil {
		return "", "", err
	}
	project = strings.TrimSpace(out)
	out, _, err = b.r.run(logName+"-token-create", "", nil, b.sandkeep, append([]string{"token", "create", "--project", project}, admin...)...)
	if err != nil {
		return "", "", err
	}
	return project, strings.TrimSpace(out), nil
}

// continuousSandkeep starts `sandkeep-agent run` on the tree, waits for its
// initial sync, measures it idle, then makes one-file changes and times
// each until a version holding it is committed.
func (b *bench) continuousSandkeep(t *treeResult, files []string, edit func(rel, line string) error) error {
	ctx := b.r.ctx
	name := "cont-" + t.Label
	_, token, err := b.newProject("sk-"+name, "bench-"+name)
	if err != nil {
		return err
	}
	sock := filepath.Join(b.tmp, "agent-"+t.Label+".sock")
	if len(sock) > 100 { // sun_path holds 108 bytes
		dir, err := os.MkdirTemp("", "skbench-")
		if err != nil {
			return err
		}
		defer os.RemoveAll(dir)
		sock = filepath.Join(dir, "agent.sock")
	}
	logPath := filepath.Join(b.r.dir, "sk-"+name+"-agent.log")
	t.Agent.Log = logPath
	logFile, err := os.Create(logPath)
	if err != nil {
		return err
	}
	defer logFile.Close()
	args := []string{"run", "--workspace", t.Path, "--socket", sock, "--cache-dir", mkdir(b.tmp, "agent-cache-"+t.Label)}
	fmt.Fprintf(logFile, "$ sandkeep-agent %s\n", strings.Join(args, " "))
	cmd := exec.Command(b.agent, args...)
	cmd.Env = append(os.Environ(), "SANDKEEP_COORDINATOR="+b.coord.addr, "SANDKEEP_TOKEN="+token)
	cmd.Stdout, cmd.Stderr = logFile, logFile
	logf("%s tree: starting sandkeep-agent run (initial sync of %d files)", t.Label, t.Files)
	start := time.Now()
	p, err := startProc("sandkeep-agent", cmd)
	if err != nil {
		return err
	}
	stopped := false
	defer func() {
		if !stopped {
			p.stop(syscall.SIGTERM, 30*time.Second)
		}
		t.Agent.Problems, t.Agent.ProblemN = problems(logPath, 10)
	}()
	pid := p.cmd.Process.Pid
	if b.o.replica {
		lag, err := b.startLagSampler(ctx)
		if err != nil {
			return err
		}
		defer func() {
			f := lag.finish(ctx)
			t.Replica = &f
			logf("%s tree: replication: at most %d objects (%.1f MB) queued, oldest %.2f s; drained %.2f s after the changes", t.Label, f.MaxObjects, float64(f.MaxBytes)/1e6, f.MaxLagSecs, f.DrainSeconds)
		}()
	}
	sk := newAgentSocket(sock)
	defer sk.close()
	fail := func(format string, args ...any) error {
		logFile.Sync()
		return fmt.Errorf("%s (agent log %s):\n%s", fmt.Sprintf(format, args...), logPath, tail(logPath, 20))
	}

	// 1. The initial sync: wait until the agent is idle and clean, and has
	// stayed so for a second (events queued during the first round make
	// another round right after it).
	bound := 2*time.Minute + time.Duration(t.Files)*2*time.Millisecond
	var st agentStatus
	var settledSince time.Time
	for {
		if err := sleepCtx(ctx, 50*time.Millisecond); err != nil {
			return err
		}
		if p.exited() {
			return fail("the agent exited during its initial sync")
		}
		now := time.Now()
		s, err := sk.status(ctx)
		if err == nil {
			st = s
		}
		if err == nil && s.settled() {
			if settledSince.IsZero() {
				settledSince = now
				cpu, _ := procCPU(pid)
				_, hwm, _ := procMem(pid)
				t.Agent.InitialSyncSeconds = now.Sub(start).Seconds()
				t.Agent.InitialCPUSeconds, t.Agent.InitialPeakRSSMiB = cpu, kib(hwm)
				t.Agent.InitialVersion = s.Version
			}
			if now.Sub(settledSince) >= time.Second {
				break
			}
		} else {
			settledSince = time.Time{}
		}
		if now.Sub(start) > bound {
			return fail("the agent was not idle and clean %v after it started (status: state %s, version %d, pending %d, last error %q)",
				bound.Round(time.Second), st.State, st.Version, st.PendingPaths, st.LastError)
		}
	}
	logf("%s tree: initial sync %.2f s (version %d), peak RSS %.0f MiB, CPU %.2f s; watching %d dirs (%s)",
		t.Label, t.Agent.InitialSyncSeconds, t.Agent.InitialVersion, t.Agent.InitialPeakRSSMiB, t.Agent.InitialCPUSeconds, st.WatchedDirs, st.WatchMode)

	// 2. Idle: no changes and no polling for the window.
	cpu0, _ := procCPU(pid)
	idleStart := time.Now()
	if err := sleepCtx(ctx, b.o.cont.idle); err != nil {
		return err
	}
	cpu1, _ := procCPU(pid)
	t.Agent.IdleSeconds = time.Since(idleStart).Seconds()
	rss, _, _ := procMem(pid)
	t.Agent.IdleCPUSeconds = cpu1 - cpu0
	t.Agent.IdleCPUPercent = 100 * t.Agent.IdleCPUSeconds / t.Agent.IdleSeconds
	t.Agent.IdleRSSMiB = kib(rss)
	if s, err := sk.status(ctx); err == nil {
		t.Agent.IdleCommits = s.Commits - st.Commits
		st = s
	}
	logf("%s tree: idle %.0f s: CPU %.2f s (%.2f%%), RSS %.0f MiB", t.Label, t.Agent.IdleSeconds, t.Agent.IdleCPUSeconds, t.Agent.IdleCPUPercent, t.Agent.IdleRSSMiB)

	// 3. One-file changes, each its own version.
	logf("%s tree: %d one-file changes, %v apart", t.Label, len(files), b.o.cont.interval)
	var lastT0 time.Time
	for i, rel := range files {
		// Wait for the spacing, then until the agent is settled again.
		if err := sleepCtx(ctx, time.Until(lastT0.Add(b.o.cont.interval))); err != nil {
			return err
		}
		waitStart := time.Now()
		for {
			s, err := sk.status(ctx)
			if err != nil {
				return fail("agent status: %v", err)
			}
			st = s
			if s.settled() {
				break
			}
			if time.Since(waitStart) > changeTimeout {
				return fail("the agent did not settle before change %d (state %s, pending %d, last error %q)", i+1, s.State, s.PendingPaths, s.LastError)
			}
			if err := sleepCtx(ctx, pollEvery); err != nil {
				return err
			}
		}
		prev := st.Version
		t0 := time.Now()
		lastT0 = t0
		if err := edit(rel, fmt.Sprintf("// skbench: continuous change %d", i+1)); err != nil {
			return err
		}
		// Committed: the version moved past prev, the agent has seen the
		// write (last_write after t0) and nothing is pending any more.
		var lat time.Duration
		for {
			if err := sleepCtx(ctx, pollEvery); err != nil {
				return err
			}
			s, err := sk.status(ctx)
			now := time.Now()
			if err != nil {
				return fail("agent status: %v", err)
			}
			st = s
			if s.Version > prev && s.PendingPaths == 0 && !s.LastWrite.Before(t0) {
				lat = now.Sub(t0)
				break
			}
			if now.Sub(t0) > changeTimeout {
				lat = now.Sub(t0)
				t.Timeouts++
				break
			}
		}
		t.Latencies = append(t.Latencies, lat.Seconds())
		t.Versions = append(t.Versions, st.Version)
		if t.Timeouts > 0 {
			t.Notes = append(t.Notes, fmt.Sprintf("change %d (%s) not committed after %v (state %s, version %d, pending %d, last error %q); stopped this tree's changes",
				i+1, rel, changeTimeout, st.State, st.Version, st.PendingPaths, st.LastError))
			logf("%s tree: %s", t.Label, t.Notes[len(t.Notes)-1])
			break
		}
		if st.Version != prev+1 {
			t.Notes = append(t.Notes, fmt.Sprintf("change %d made versions %d..%d, not one", i+1, prev+1, st.Version))
		}
	}
	t.summarize()
	logf("%s tree: change to committed p50 %.2f s, p99 %.2f s, max %.2f s (%d samples)", t.Label, t.P50, t.P99, t.Max, len(t.Latencies))

	// Every change must be in the last version seen: a flush now must not
	// make a new one.
	if v, err := sk.flush(ctx, 60*time.Second); err != nil {
		t.Notes = append(t.Notes, "flush after the changes failed: "+err.Error())
	} else if len(t.Versions) > 0 && v != t.Versions[len(t.Versions)-1] && t.Timeouts == 0 {
		t.Notes = append(t.Notes, fmt.Sprintf("flush after the changes made version %d; the last change was seen committed as version %d", v, t.Versions[len(t.Versions)-1]))
	}
	rss, hwm, _ := procMem(pid)
	t.Agent.EndRSSMiB, t.Agent.EndPeakRSSMiB = kib(rss), kib(hwm)
	t.Agent.EndCPUSeconds, _ = procCPU(pid)
	t.Agent.WatchMode, t.Agent.WatchedDirs, t.Agent.Overflows = st.WatchMode, st.WatchedDirs, st.Overflows

	// 4. SIGTERM: the agent flushes and exits 0.
	stopStart := time.Now()
	p.stop(syscall.SIGTERM, 30*time.Second)
	stopped = true
	t.Agent.StopSeconds = time.Since(stopStart).Seconds()
	t.Agent.ExitCode = p.cmd.ProcessState.ExitCode()
	if t.Agent.ExitCode != 0 {
		t.Notes = append(t.Notes, fmt.Sprintf("the agent exited %d on SIGTERM (log %s)", t.Agent.ExitCode, logPath))
	}
	for _, n := range t.Notes {
		logf("%s tree: note: %s", t.Label, n)
	}
	return nil
}

// summarize computes the percentiles: p50 is the median, p99 the nearest
// rank (the largest sample when there are fewer than 100).
func (t *treeResult) summarize() {
	if len(t.Latencies) == 0 {
		return
	}
	v := append([]float64(nil), t.Latencies...)
	sort.Float64s(v)
	t.P50 = median(append([]float64(nil), v...))
	t.P99 = v[int(math.Ceil(0.99*float64(len(v))))-1]
	t.Max = v[len(v)-1]
	t.Met = t.Timeouts == 0 && t.P50 <= 1 && t.P99 <= 2
}

// continuousRestic backs the tree up with restic (cold cache), then times
// `restic backup` after each one-file change (warm cache).
func (b *bench) continuousRestic(t *treeResult, files []string, edit func(rel, line string) error) error {
	name := "cont-" + t.Label
	cache := filepath.Join(b.tmp, "restic-cache-"+name)
	env := b.resticEnv(name)
	backup := resticBackup(cache)
	if _, _, err := b.r.run("restic-"+name+"-init", "", env, b.restic, "init", "--cache-dir", cache); err != nil {
		return err
	}
	logf("%s tree: restic initial backup", t.Label)
	_, s, err := b.r.run("restic-"+name+"-initial-backup", t.Path, env, b.restic, backup...)
	if err != nil {
		return err
	}
	t.ResticInitial = s
	logf("%s tree: restic initial backup %.2f s; %d one-file changes", t.Label, s.Seconds, len(files))
	var secs []float64
	for i, rel := range files {
		if err := edit(rel, fmt.Sprintf("// skbench: restic change %d", i+1)); err != nil {
			return err
		}
		_, s, err := b.r.run("restic-"+name+"-change-"+strconv.Itoa(i+1), t.Path, env, b.restic, backup...)
		if err != nil {
			return err
		}
		t.ResticChange = append(t.ResticChange, s)
		secs = append(secs, s.Seconds)
	}
	t.ResticMedian = median(secs)
	if t.ResticMedian > 0 {
		t.Ratio = t.P50 / t.ResticMedian
	}
	logf("%s tree: restic one-file change %.2f s (median of %d)", t.Label, t.ResticMedian, len(secs))
	return nil
}

// procCPU returns a process's user + system CPU seconds from
// /proc/PID/stat (fields 14 and 15, in clock ticks; USER_HZ is 100 on
// Linux for every architecture Go supports).
func procCPU(pid int) (float64, error) {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return 0, err
	}
	s := string(b)
	i := strings.LastIndexByte(s, ')') // the command name may hold spaces
	if i < 0 {
		return 0, errors.New("unexpected /proc/PID/stat")
	}
	f := strings.Fields(s[i+1:]) // f[0] is field 3 (state)
	if len(f) < 13 {
		return 0, errors.New("unexpected /proc/PID/stat")
	}
	utime, err1 := strconv.ParseInt(f[11], 10, 64)
	stime, err2 := strconv.ParseInt(f[12], 10, 64)
	if err1 != nil || err2 != nil {
		return 0, errors.New("unexpected /proc/PID/stat")
	}
	return float64(utime+stime) / 100, nil
}

// procMem returns VmRSS and VmHWM (KiB) from /proc/PID/status.
func procMem(pid int) (rss, hwm int64, err error) {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		return 0, 0, err
	}
	for line := range strings.Lines(string(b)) {
		if rest, ok := strings.CutPrefix(line, "VmRSS:"); ok {
			fmt.Sscan(rest, &rss)
		} else if rest, ok := strings.CutPrefix(line, "VmHWM:"); ok {
			fmt.Sscan(rest, &hwm)
		}
	}
	return rss, hwm, nil
}

func kib(n int64) float64 { return float64(n) / 1024 }

func sleepCtx(ctx context.Context, d time.Duration) error {
	if d <= 0 {
		return ctx.Err()
	}
	tm := time.NewTimer(d)
	defer tm.Stop()
	select {
	case <-ctx.Done():
		return ctx.Err()
	case <-tm.C:
		return nil
	}
}

// printContinuous prints the continuous-sync table.
func printContinuous(c *contReport) {
	fmt.Printf("continuous sync (sandkeep-agent run: %d one-file changes per tree, %v apart, change to committed version;\n"+
		"  restic: backup of the tree after a one-file change, warm cache, median of %d)\n",
		c.Changes, time.Duration(c.IntervalSeconds*float64(time.Second)), c.ResticChanges)
	fmt.Printf("%-8s %-9s %-9s %-9s %-10s %-8s %-26s\n", "files", "p50", "p99", "max", "restic", "ratio", "target p50 <= 1 s, p99 <= 2 s")
	for _, t := range c.Trees {
		status := "ok"
		if !t.Met {
			status = "MISSED"
		}
		gt := ""
		if t.Timeouts > 0 {
			gt, status = ">", fmt.Sprintf("MISSED (%d timeout)", t.Timeouts)
		}
		fmt.Printf("%-8s %-9s %-9s %-9s %-10s %-8s %s\n", t.Label, fmt.Sprintf("%.2f s", t.P50), fmt.Sprintf("%s%.2f s", gt, t.P99),
			fmt.Sprintf("%s%.2f s", gt, t.Max), fmt.Sprintf("%.2f s", t.ResticMedian), fmt.Sprintf("%.2fx", t.Ratio), status)
	}
	if len(c.Trees) > 1 {
		first, last := c.Trees[0], c.Trees[len(c.Trees)-1]
		if first.P50 > 0 {
			fmt.Printf("growth %s -> %s files: sandkeep p50 x%.2f, restic x%.2f (target: flat)\n",
				first.Label, last.Label, last.P50/first.P50, last.ResticMedian/max(first.ResticMedian, 1e-9))
		}
	}
	big := c.Trees[len(c.Trees)-1]
	rssOK, cpuOK := "ok", "ok"
	if big.Agent.InitialPeakRSSMiB > rssTargetMiB {
		rssOK = "MISSED"
	}
	if big.Agent.IdleCPUPercent > idleCPUTarget {
		cpuOK = "MISSED"
	}
	fmt.Printf("agent: idle %.0f s: CPU %.2f%%, RSS %.0f MiB; initial sync of %s files: peak RSS %.0f MiB, CPU %.1f s\n"+
		"  (targets: RSS <= %d MiB syncing 100k files %s; idle CPU ~0 (< %.0f%% of a core) %s; binary %.1f MB)\n",
		big.Agent.IdleSeconds, big.Agent.IdleCPUPercent, big.Agent.IdleRSSMiB, big.Label, big.Agent.InitialPeakRSSMiB,
		big.Agent.InitialCPUSeconds, rssTargetMiB, rssOK, idleCPUTarget, cpuOK, c.AgentBinaryMB)
	fmt.Println("per tree (agent figures from /proc/PID: initial sync = start to idle+clean, VmHWM, utime+stime; idle = VmRSS, CPU % of one core):")
	for _, t := range c.Trees {
		fmt.Printf("  %-5s %6d files in %5d dirs, %6.1f MB: initial sync %.2f s (restic %.2f s), peak RSS %.0f MiB, CPU %.2f s;"+
			" idle CPU %.2f%%, RSS %.0f MiB; after changes RSS %.0f MiB; %s, %d dirs watched, %d overflows; stop %.2f s, exit %d\n",
			t.Label, t.Files, t.Dirs, float64(t.Bytes)/1e6, t.Agent.InitialSyncSeconds, t.ResticInitial.Seconds,
			t.Agent.InitialPeakRSSMiB, t.Agent.InitialCPUSeconds, t.Agent.IdleCPUPercent, t.Agent.IdleRSSMiB, t.Agent.EndRSSMiB,
			t.Agent.WatchMode, t.Agent.WatchedDirs, t.Agent.Overflows, t.Agent.StopSeconds, t.Agent.ExitCode)
		if r := t.Replica; r != nil {
			fmt.Printf("        replication (second bucket): at most %d objects, %.1f MB queued; oldest queued entry %.2f s; drained %.2f s after the changes (%d samples)\n",
				r.MaxObjects, float64(r.MaxBytes)/1e6, r.MaxLagSecs, r.DrainSeconds, r.Samples)
		}
		for _, n := range t.Notes {
			fmt.Printf("        note: %s\n", n)
		}
		if t.Agent.ProblemN > 0 {
			fmt.Printf("        agent log %s: %d warning/error lines\n", t.Agent.Log, t.Agent.ProblemN)
			for _, l := range t.Agent.Problems {
				fmt.Printf("          %s\n", l)
			}
		}
	}
}
