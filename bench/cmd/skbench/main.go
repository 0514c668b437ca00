// Command skbench is sandkeep's side-by-side benchmark: it backs up,
// changes and restores the same workspace with sandkeep and with restic,
// both against one local versitygw (S3) server, and prints the timings and
// the bytes each one stores next to the targets of DESIGN.md. See
// bench/README.md. `make bench` builds the binaries and runs it.
package main

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"runtime"
	"sort"
	"strconv"
	"strings"
	"syscall"
	"time"
)

type options struct {
	workspace string
	sizeMB    int
	runs      int
	keep      bool
	json      bool
	restic    string
	versitygw string
	only      string
	sizes     string
	cont      contOptions
	load      loadOptions
	loadReps  string
	dbscale   dbscaleOptions
	replica   bool
}

// The parts of the benchmark -only selects.
const (
	partTable   = "table"   // initial sync, one-file change, restore, bytes stored (sync --once vs restic)
	partLatency = "latency" // continuous sync: change-to-committed latency, agent RSS and CPU
	partLoad    = "load"    // replicas on PostgreSQL under many simulated agents (not in the default set)
	partDBScale = "dbscale" // EXPLAIN of the store's statements on a generated large PostgreSQL database (not in the default set)
	partEnsure  = "ensure"  // sandbox ensure to ready on a 1 GiB / 20k-file head, local provider, vs restic restore (not in the default set)
)

var started = time.Now()

func logf(format string, args ...any) {
	fmt.Fprintf(os.Stderr, "skbench %6.1fs: %s\n", time.Since(started).Seconds(), fmt.Sprintf(format, args...))
}

func main() {
	var o options
	flag.StringVar(&o.workspace, "workspace", "", "benchmark this tree instead of the reference workspace (one of its files gets a line appended, then put back)")
	flag.IntVar(&o.sizeMB, "size-mb", 1024, "cap on the reference workspace size in MB (10^6 bytes)")
	flag.IntVar(&o.runs, "runs", 1, "repeat the whole sequence N times (fresh project and repository each time) and report medians")
	flag.BoolVar(&o.keep, "keep", false, "keep the temporary directories (S3 data, caches, restored trees) under .bench/")
	flag.BoolVar(&o.json, "json", false, "print the results as JSON instead of a table")
	flag.StringVar(&o.restic, "restic", "", "restic binary (default: PATH, then $(go env GOPATH)/bin)")
	flag.StringVar(&o.versitygw, "versitygw", "", "versitygw binary (default: PATH, then $(go env GOPATH)/bin)")
	flag.StringVar(&o.only, "only", "", "run only these parts, comma-separated: "+partTable+" (sync --once, restore, bytes vs restic), "+partLatency+" (continuous sync), "+partLoad+" (replicas under many agents), "+partDBScale+" (query plans on a large database), "+partEnsure+" (sandbox ensure to ready on a 1 GiB / 20k-file head vs restic restore; these three are not in the default); default table and latency")
	flag.StringVar(&o.sizes, "sizes", "1k,10k,100k", "latency: file counts of the generated trees (cached under .bench/trees)")
	flag.IntVar(&o.cont.changes, "changes", 20, "latency: one-file changes timed per tree")
	flag.DurationVar(&o.cont.interval, "change-interval", time.Second, "latency: spacing between changes (each should make its own version)")
	flag.IntVar(&o.cont.resticChanges, "restic-changes", 3, "latency: restic backups of a one-file change per tree (median)")
	flag.DurationVar(&o.cont.idle, "idle", 10*time.Second, "latency: idle window after the initial sync for the agent's CPU and RSS")
	flag.IntVar(&o.load.agents, "load-agents", 200, "load: simulated agents (one project each)")
	flag.StringVar(&o.loadReps, "load-replicas", "1,3", "load: replica counts to measure on PostgreSQL (SQLite: always 1)")
	flag.DurationVar(&o.load.duration, "load-duration", 20*time.Second, "load: how long each configuration runs")
	flag.BoolVar(&o.replica, "replica", false, "keep a second bucket (another versitygw) as the coordinator's --replica-s3-bucket and report the replication lag during continuous sync")
	flag.IntVar(&o.dbscale.projects, "dbscale-projects", 10000, "dbscale: generated projects")
	flag.IntVar(&o.dbscale.versions, "dbscale-versions", 100, "dbscale: versions per project")
	flag.IntVar(&o.dbscale.files, "dbscale-files", 10000, "dbscale: files in each project's head listing")
	flag.IntVar(&o.dbscale.blobs, "dbscale-blobs", 0, "dbscale: indexed blobs per project (0: as many as files)")
	flag.IntVar(&o.load.idle, "load-idle", 0, "load: agents that only hold a session and heartbeat (no commits), besides -load-agents")
	flag.DurationVar(&o.load.heartbeat, "load-heartbeat", 10*time.Second, "load: heartbeat period of each agent")
	flag.DurationVar(&o.load.killEvery, "load-kill-every", 20*time.Second, "load: in the last run, kill (SIGKILL) and restart one replica this often (0: no such run)")
	flag.StringVar(&o.load.pg, "load-pg", "postgres://postgres@127.0.0.1:5432/test?sslmode=disable", "load: PostgreSQL server (a database is created and dropped on it)")
	flag.Parse()
	for _, s := range strings.Split(o.loadReps, ",") {
		n, err := strconv.Atoi(strings.TrimSpace(s))
		if err != nil || n < 1 {
			fmt.Fprintf(os.Stderr, "skbench: -load-replicas: %q is not a replica count\n", s)
			os.Exit(2)
		}
		o.load.replicas = append(o.load.replicas, n)
	}
	var err error
	o.cont.sizes, err = parseSizes(o.sizes)
	if err != nil {
		fmt.Fprintln(os.Stderr, "skbench:", err)
		os.Exit(2)
	}
	if o.runs < 1 || o.cont.changes < 1 || o.cont.resticChanges < 1 || o.cont.idle <= 0 || flag.NArg() > 0 || o.parts() == nil {
		flag.Usage()
		os.Exit(2)
	}
	// On Ctrl-C or SIGTERM the context is canceled: the running step is
	// killed and run's deferred cleanup stops the servers.
	ctx, cancel := context.WithCancel(context.Background())
	sigs := make(chan os.Signal, 1)
	signal.Notify(sigs, os.Interrupt, syscall.SIGTERM)
	go func() {
		s := <-sigs
		logf("got %v; stopping the servers and cleaning up", s)
		cancel()
	}()
	err = run(ctx, o)
	cancel()
	if err != nil {
		fmt.Fprintf(os.Stderr, "skbench: FAILED: %v\n", err)
		os.Exit(1)
	}
}

// parts returns the parts -only selects (nil if it names an unknown one).
func (o options) parts() map[string]bool {
	if o.only == "" {
		return map[string]bool{partTable: true, partLatency: true}
	}
	parts := map[string]bool{}
	for _, p := range strings.Split(o.only, ",") {
		switch p = strings.TrimSpace(p); p {
		case partTable, partLatency, partLoad, partDBScale, partEnsure:
			parts[p] = true
		case "continuous":
			parts[partLatency] = true
		default:
			fmt.Fprintf(os.Stderr, "skbench: -only: unknown part %q (want %s, %s, %s, %s or %s)\n", p, partTable, partLatency, partLoad, partDBScale, partEnsure)
			return nil
		}
	}
	return parts
}

// toolResult holds one tool's samples over all runs.
type toolResult struct {
	Initial []sample `json:"initial"`
	Change  []sample `json:"change"`
	Restore []sample `json:"restore"`
	Stored  []int64  `json:"stored_bytes"` // what the "bytes stored" row counts
	Usage   []usage  `json:"bucket_usage"` // everything under the run's prefix
	// ServerCPU is, for sandkeep's initial syncs, the CPU seconds the
	// coordinator and versitygw spent while the agent ran (the agent's
	// own is in Initial): where the machine's cores went.
	ServerCPU []serverCPU `json:"initial_server_cpu,omitempty"`
}

type serverCPU struct {
	Coordinator float64 `json:"coordinator_seconds"`
	S3          float64 `json:"versitygw_seconds"`
}

// bench is the state of one skbench invocation.
type bench struct {
	o               options
	r               *runner
	tmp             string
	ws              string
	want            manifest
	changeFile      string
	sandkeep, agent string
	restic          string
	endpoint        string
	coord           *coordinator
	coordData       string
	sk, rs          toolResult
	resticVersion   string
	loadStart       string
	loadGW          int // pid of the load part's S3 server
	gwPID           int // pid of the table and latency parts' S3 server
	coordLog        string
	cont            *contReport
	ensure          *ensureResult
}

func run(ctx context.Context, o options) (err error) {
	root, err := moduleRoot()
	if err != nil {
		return err
	}
	benchDir := filepath.Join(root, ".bench")
	stamp := started.Format("20060102-150405")
	b := &bench{o: o,
		tmp:      filepath.Join(benchDir, "run-"+stamp),
		sandkeep: filepath.Join(root, "bin", "sandkeep"),
		agent:    filepath.Join(root, "bin", "sandkeep-agent"),
	}
	logsDir := filepath.Join(benchDir, "logs", stamp)
	b.r = &runner{ctx: ctx, dir: logsDir}
	b.loadStart = loadAverage()
	for _, p := range []string{b.sandkeep, b.agent} {
		if _, err := os.Stat(p); err != nil {
			return fmt.Errorf("%s is missing; run `make build` (or `make bench`)", p)
		}
	}
	if sel := o.parts(); sel[partTable] || sel[partLatency] || sel[partEnsure] { // the load part needs no restic
		if b.restic, err = findTool(o.restic, "restic"); err != nil {
			return err
		}
	}
	vgw, err := findTool(o.versitygw, "versitygw")
	if err != nil {
		return err
	}
	if out, err := exec.Command(b.restic, "version").Output(); b.restic != "" && err == nil && len(strings.Fields(string(out))) >= 2 {
		b.resticVersion = strings.Join(strings.Fields(string(out))[:2], " ") // "restic 0.18.1"
		if !strings.Contains(b.resticVersion, "0.18.1") {
			logf("warning: the targets were set against restic 0.18.1; this is %s", b.resticVersion)
		}
	}
	for _, d := range []string{logsDir, b.tmp} {
		if err := os.MkdirAll(d, 0o755); err != nil {
			return err
		}
	}
	logf("logs in %s", logsDir)
	defer func() {
		if o.keep {
			logf("kept %s (-keep)", b.tmp)
		} else if rmErr := removeAll(b.tmp); rmErr != nil && err == nil {
			err = rmErr
		}
	}()

	parts := o.parts()
	if parts[partDBScale] {
		o.dbscale.pg = o.load.pg
		if o.dbscale.blobs == 0 {
			o.dbscale.blobs = o.dbscale.files
		}
		if err := b.dbscalePart(o.dbscale); err != nil || len(parts) == 1 {
			return err
		}
	}
	if parts[partLoad] {
		if err := b.loadPart(vgw, logsDir); err != nil || (!parts[partTable] && !parts[partLatency]) {
			return err
		}
	}
	// 1. The workspace, and what a correct restore must reproduce.
	var info wsInfo
	if !parts[partTable] {
		// The continuous-sync part generates its own trees.
	} else if o.workspace != "" {
		if b.ws, err = filepath.Abs(o.workspace); err != nil {
			return err
		}
		info.Sources = []string{b.ws}
	} else if b.ws, info, err = referenceWorkspace(ctx, benchDir, o.sizeMB); err != nil {
		return fmt.Errorf("reference workspace: %w", err)
	}
	if parts[partTable] {
		logf("scanning %s (this also warms the page cache for both tools)", b.ws)
		if b.want, err = scan(ctx, b.ws); err != nil {
			return err
		}
		files, bytes := b.want.stats()
		logf("workspace: %d files, %.1f MB", files, float64(bytes)/1e6)
		if b.changeFile = pickChangeFile(b.ws, b.want); b.changeFile == "" {
			return errors.New("the workspace has no writable file to change")
		}
	}

	// 2. versitygw, then 3. the coordinator on it.
	stopServers, err := b.startServers(ctx, vgw, logsDir)
	if err != nil {
		return err
	}
	defer stopServers()

	for i := 1; parts[partTable] && i <= o.runs; i++ {
		if err := b.runSandkeep(i); err != nil {
			return fmt.Errorf("sandkeep (run %d): %w", i, err)
		}
		if err := b.runRestic(i); err != nil {
			return fmt.Errorf("restic (run %d): %w", i, err)
		}
	}
	if parts[partLatency] {
		if b.cont, err = b.runContinuous(benchDir); err != nil {
			return err
		}
	}
	if parts[partEnsure] {
		if b.ensure, err = b.ensurePart(benchDir); err != nil {
			return fmt.Errorf("ensure: %w", err)
		}
	}
	rep := b.report(info, logsDir)
	if o.json {
		enc := json.NewEncoder(os.Stdout)
		enc.SetIndent("", "  ")
		enc.SetEscapeHTML(false)
		return enc.Encode(rep)
	}
	printReport(rep)
	return nil
}

func mkdir(parts ...string) string {
	p := filepath.Join(parts...)
	_ = os.MkdirAll(p, 0o755)
	return p
}

// withChange applies the run's one-file change and returns the manifest a
// restore must then reproduce.
func (b *bench) withChange(i int, tool string) (*change, manifest, error) {
	c, err := applyChange(b.changeFile, fmt.Sprintf("// skbench: %s run %d", tool, i))
	if err != nil {
		return nil, nil, err
	}
	rel, _ := filepath.Rel(b.ws, b.changeFile)
	rel = filepath.ToSlash(rel)
	h, err := hashFile(b.changeFile)
	if err != nil {
		return c, nil, err
	}
	fi, err := os.Stat(b.changeFile)
	if err != nil {
		return c, nil, err
	}
	want := make(manifest, len(b.want))
	for k, v := range b.want {
		want[k] = v
	}
	e := want[rel]
	e.Size, e.Hash = fi.Size(), h
	want[rel] = e
	return c, want, nil
}

func (b *bench) runSandkeep(i int) (err error) {
	n := strconv.Itoa(i)
	project, token, err := b.newProject("sk-"+n, "bench-"+n)
	if err != nil {
		return err
	}
	env := b.agentEnv(token, "sk-cache-"+n)

	logf("sandkeep run %d: initial sync", i)
	coord0, _ := procCPU(b.coord.cmd.Process.Pid)
	gw0, _ := procCPU(b.gwPID)
	out, s, err := b.r.run("sk-initial-sync-"+n, "", env, b.agent, "sync", "--once", "--workspace", b.ws)
	if err != nil {
		return err
	}
	coord1, _ := procCPU(b.coord.cmd.Process.Pid)
	gw1, _ := procCPU(b.gwPID)
	b.sk.ServerCPU = append(b.sk.ServerCPU, serverCPU{Coordinator: coord1 - coord0, S3: gw1 - gw0})
	first, err := versionNumber(out)
	if err != nil {
		return fmt.Errorf("initial sync (log %s): %w", s.Log, err)
	}
	b.sk.Initial = append(b.sk.Initial, s)
	logf("sandkeep run %d: initial sync %.2f s (version %d)", i, s.Seconds, first)

	c, want, err := b.withChange(i, "sandkeep")
	if c != nil {
		defer func() {
			if rerr := c.revert(); rerr != nil && err == nil {
				err = rerr
			}
		}()
	}
	if err != nil {
		return err
	}
	out, s, err = b.r.run("sk-change-sync-"+n, "", env, b.agent, "sync", "--once", "--workspace", b.ws)
	if err != nil {
		return err
	}
	second, err := versionNumber(out)
	if err != nil {
		return fmt.Errorf("one-file change sync (log %s): %w", s.Log, err)
	}
	if second <= first {
		return fmt.Errorf("the one-file change made no new version (version %d after %d; log %s)", second, first, s.Log)
	}
	b.sk.Change = append(b.sk.Change, s)
	logf("sandkeep run %d: one-file change %.2f s (version %d)", i, s.Seconds, second)

	dst := filepath.Join(b.tmp, "sk-restore-"+n)
	_, s, err = b.r.run("sk-restore-"+n, "", b.agentEnv(token, "sk-restore-cache-"+n), b.agent, "restore", "--workspace", dst)
	if err != nil {
		return err
	}
	logf("sandkeep run %d: restore %.2f s; verifying", i, s.Seconds)
	if err := verify(b.r.ctx, "sandkeep", dst, want); err != nil {
		return err
	}
	b.sk.Restore = append(b.sk.Restore, s)
	if !b.o.keep {
		_ = removeAll(dst)
	}

	u, err := sandkeepUsage(b.r.ctx, s3Client(b.endpoint), "sk-bench", "projects/"+project+"/")
	if err != nil {
		return fmt.Errorf("listing bucket sk-bench and its packs' footers: %w", err)
	}
	if u.ByKind["packs"] == 0 {
		return fmt.Errorf("bucket sk-bench holds no packs under projects/%s/ (is the coordinator really on S3? it said: blobs %s)", project, b.coord.blobs)
	}
	b.sk.Stored = append(b.sk.Stored, u.ByKind["packs"]+u.ByKind["versions"])
	b.sk.Usage = append(b.sk.Usage, u)
	return nil
}

// agentEnv is the environment of a sandkeep-agent command of the project
// whose token is given, with an agent cache dir of that name in the run
// dir.
func (b *bench) agentEnv(token, cacheDir string) []string {
	return []string{"SANDKEEP_COORDINATOR=" + b.coord.addr, "SANDKEEP_TOKEN=" + token,
		"SANDKEEP_CACHE_DIR=" + mkdir(b.tmp, cacheDir)}
}

// resticEnv is the environment of a restic command on the repository
// s3:…/restic-bench/repo of the bench's versitygw.
func (b *bench) resticEnv(repo string) []string {
	return []string{"RESTIC_REPOSITORY=s3:" + b.endpoint + "/restic-bench/" + repo, "RESTIC_PASSWORD=bench",
		"AWS_ACCESS_KEY_ID=" + s3Key, "AWS_SECRET_ACCESS_KEY=" + s3Secret, "AWS_DEFAULT_REGION=us-east-1"}
}

// resticBackup is the arguments of every restic backup of the bench, run
// from inside the tree.
func resticBackup(cache string) []string {
	return []string{"backup", "--no-scan", "-q", "--compression", "auto", "--cache-dir", cache, "."}
}

// resticRestore is the arguments of a restore of the latest snapshot into
// dst.
func resticRestore(dst, cache string) []string {
	return []string{"restore", "latest", "-q", "--target", dst, "--cache-dir", cache}
}

// versionNumber parses the last line of `sync --once` output.
func versionNumber(out string) (int64, error) {
	lines := strings.Split(strings.TrimSpace(out), "\n")
	last := strings.TrimSpace(lines[len(lines)-1])
	v, err := strconv.ParseInt(last, 10, 64)
	if err != nil {
		return 0, fmt.Errorf("sync printed %q last, want a version number", last)
	}
	return v, nil
}

func (b *bench) runRestic(i int) (err error) {
	n := strconv.Itoa(i)
	prefix := "run-" + n
	cache := filepath.Join(b.tmp, "restic-cache")
	env := b.resticEnv(prefix)
	backup := resticBackup(cache)
	if _, _, err := b.r.run("restic-init-"+n, "", env, b.restic, "init", "--cache-dir", cache); err != nil {
		return err
	}

	logf("restic run %d: initial backup", i)
	_ = removeAll(cache) // cold cache
	_, s, err := b.r.run("restic-initial-backup-"+n, b.ws, env, b.restic, backup...)
	if err != nil {
		return err
	}
	b.rs.Initial = append(b.rs.Initial, s)
	logf("restic run %d: initial backup %.2f s", i, s.Seconds)

	c, want, err := b.withChange(i, "restic")
	if c != nil {
		defer func() {
			if rerr := c.revert(); rerr != nil && err == nil {
				err = rerr
			}
		}()
	}
	if err != nil {
		return err
	}
	_, s, err = b.r.run("restic-change-backup-"+n, b.ws, env, b.restic, backup...) // warm cache
	if err != nil {
		return err
	}
	b.rs.Change = append(b.rs.Change, s)
	logf("restic run %d: one-file change %.2f s", i, s.Seconds)

	_ = removeAll(cache) // cold cache, as on a fresh machine
	dst := filepath.Join(b.tmp, "restic-restore-"+n)
	_, s, err = b.r.run("restic-restore-"+n, "", env, b.restic, resticRestore(dst, cache)...)
	if err != nil {
		return err
	}
	logf("restic run %d: restore %.2f s; verifying", i, s.Seconds)
	if err := verify(b.r.ctx, "restic", dst, want); err != nil {
		return err
	}
	b.rs.Restore = append(b.rs.Restore, s)
	if !b.o.keep {
		_ = removeAll(dst)
	}

	u, err := bucketUsage(b.r.ctx, s3Client(b.endpoint), "restic-bench", prefix+"/", nil)
	if err != nil {
		return fmt.Errorf("listing bucket restic-bench: %w", err)
	}
	b.rs.Stored = append(b.rs.Stored, u.Bytes)
	b.rs.Usage = append(b.rs.Usage, u)
	return nil
}

// report is what skbench prints (-json prints it as is).
type report struct {
	Workspace struct {
		Path    string   `json:"path"`
		Files   int      `json:"files"`
		Bytes   int64    `json:"bytes"`
		Sources []string `json:"sources"`
	} `json:"workspace"`
	ChangedFile   string     `json:"changed_file"`
	Runs          int        `json:"runs"`
	Rows          []row      `json:"rows"`
	Sandkeep      toolResult `json:"sandkeep"`
	Restic        toolResult `json:"restic"`
	ResticVersion string     `json:"restic_version"`
	Logs          string     `json:"logs"`
	CoordProblems []string   `json:"coordinator_log_problems"`
	CoordProblemN int        `json:"coordinator_log_problem_count"`
	WallSeconds   float64    `json:"wall_seconds"`
	CPUs          int        `json:"cpus"`
	LoadStart     string     `json:"load_average_start"`
	LoadEnd       string     `json:"load_average_end"`
	// Continuous is the continuous-sync part (-only latency); nil when it
	// did not run. The fields above it are empty when -only skips the table.
	Continuous *contReport `json:"continuous,omitempty"`
	// Ensure is the ensure part (-only ensure); nil when it did not run.
	Ensure *ensureResult `json:"ensure,omitempty"`
}

// row is one line of the table: medians over the runs.
type row struct {
	Name     string  `json:"name"`
	Unit     string  `json:"unit"` // "s" or "bytes"
	Sandkeep float64 `json:"sandkeep"`
	Restic   float64 `json:"restic"`
	Ratio    float64 `json:"ratio"` // sandkeep / restic
	Target   string  `json:"target"`
	Met      bool    `json:"met"`
}

func (b *bench) report(info wsInfo, logsDir string) report {
	var rep report
	rep.Workspace.Path = b.ws
	rep.Workspace.Files, rep.Workspace.Bytes = b.want.stats()
	rep.Workspace.Sources = info.Sources
	rep.ChangedFile = b.changeFile
	rep.Runs = b.o.runs
	rep.Sandkeep, rep.Restic = b.sk, b.rs
	rep.ResticVersion = b.resticVersion
	rep.Logs = logsDir
	rep.CoordProblems, rep.CoordProblemN = problems(b.coordLog, 10)
	secs := func(ss []sample) float64 {
		v := make([]float64, len(ss))
		for i, s := range ss {
			v[i] = s.Seconds
		}
		return median(v)
	}
	ints := func(xs []int64) float64 {
		v := make([]float64, len(xs))
		for i, x := range xs {
			v[i] = float64(x)
		}
		return median(v)
	}
	mk := func(name, unit string, sk, rs float64, target string, met func(sk, ratio float64) bool) row {
		r := row{Name: name, Unit: unit, Sandkeep: sk, Restic: rs, Target: target}
		if rs > 0 {
			r.Ratio = sk / rs
		}
		r.Met = met(sk, r.Ratio)
		return r
	}
	atMost := func(r float64) func(_, ratio float64) bool { return func(_, ratio float64) bool { return ratio <= r } }
	rep.Continuous, rep.Ensure = b.cont, b.ensure
	rep.WallSeconds = time.Since(started).Seconds()
	rep.CPUs, rep.LoadStart, rep.LoadEnd = runtime.NumCPU(), b.loadStart, loadAverage()
	if len(b.sk.Initial) == 0 {
		return rep // the table part did not run
	}
	rep.Rows = []row{
		mk("initial sync", "s", secs(b.sk.Initial), secs(b.rs.Initial), "<= 0.50x", atMost(0.5)),
		mk("one-file change", "s", secs(b.sk.Change), secs(b.rs.Change), "p50 <= 1 s", func(sk, _ float64) bool { return sk <= 1 }),
		mk("restore", "s", secs(b.sk.Restore), secs(b.rs.Restore), "<= 0.25x", atMost(0.25)),
		mk("bytes stored", "bytes", ints(b.sk.Stored), ints(b.rs.Stored), "<= 0.97x", atMost(0.97)),
	}
	return rep
}

func median(v []float64) float64 {
	if len(v) == 0 {
		return 0
	}
	sort.Float64s(v)
	if len(v)%2 == 1 {
		return v[len(v)/2]
	}
	return (v[len(v)/2-1] + v[len(v)/2]) / 2
}

// printReport prints the tables of the parts that ran, then where the logs are.
func printReport(rep report) {
	if len(rep.Rows) > 0 {
		printTable(rep)
	} else {
		fmt.Printf("%s vs sandkeep, both on one versitygw (loopback); %d CPUs, load average %s at start, %s at end\n\n",
			rep.ResticVersion, rep.CPUs, rep.LoadStart, rep.LoadEnd)
	}
	if rep.Continuous != nil {
		printContinuous(rep.Continuous)
		fmt.Println()
	}
	if rep.Ensure != nil {
		printEnsure(rep.Ensure)
		fmt.Println()
	}
	fmt.Printf("logs: %s; coordinator log: %d warning/error lines\n", rep.Logs, rep.CoordProblemN)
	for _, l := range rep.CoordProblems {
		fmt.Printf("  %s\n", l)
	}
	fmt.Printf("took %s\n", time.Duration(rep.WallSeconds*float64(time.Second)).Round(100*time.Millisecond))
}

// printTable prints the side-by-side table (sync --once, restore, bytes).
func printTable(rep report) {
	fmt.Printf("workspace: %d files, %.1f MB (%s: %s)\n", rep.Workspace.Files, float64(rep.Workspace.Bytes)/1e6,
		rep.Workspace.Path, strings.Join(rep.Workspace.Sources, " + "))
	runs := "1 run"
	if rep.Runs > 1 {
		runs = fmt.Sprintf("median of %d runs", rep.Runs)
	}
	fmt.Printf("%s; %s vs sandkeep, both on one versitygw (loopback); %d CPUs, load average %s at start, %s at end\n\n",
		runs, rep.ResticVersion, rep.CPUs, rep.LoadStart, rep.LoadEnd)
	fmt.Printf("%-22s %-13s %-13s %-19s %s\n", "", "sandkeep", "restic", "ratio (sk/restic)", "target")
	for _, r := range rep.Rows {
		status := "ok"
		if !r.Met {
			status = "MISSED"
		}
		fmt.Printf("%-22s %-13s %-13s %-19s %-11s %s\n", r.Name, value(r.Unit, r.Sandkeep), value(r.Unit, r.Restic),
			fmt.Sprintf("%.2fx", r.Ratio), r.Target, status)
	}
	fmt.Println()
	detail := func(tool string, t toolResult) {
		last := func(ss []sample) sample { return ss[len(ss)-1] }
		fmt.Printf("%-9s peak RSS / CPU (last run): initial %.0f MiB / %.2f s, change %.0f MiB / %.2f s, restore %.0f MiB / %.2f s\n",
			tool, last(t.Initial).MaxRSSMiB, last(t.Initial).CPUSeconds, last(t.Change).MaxRSSMiB, last(t.Change).CPUSeconds,
			last(t.Restore).MaxRSSMiB, last(t.Restore).CPUSeconds)
	}
	detail("sandkeep", rep.Sandkeep)
	if sc := rep.Sandkeep.ServerCPU; len(sc) > 0 {
		last, init := sc[len(sc)-1], rep.Sandkeep.Initial[len(rep.Sandkeep.Initial)-1]
		fmt.Printf("%-9s initial sync, CPU of each process (last run): agent %.2f s, coordinator %.2f s, versitygw %.2f s; %.2f s wall on %d cores\n",
			"", init.CPUSeconds, last.Coordinator, last.S3, init.Seconds, runtime.NumCPU())
	}
	detail("restic", rep.Restic)
	u := rep.Sandkeep.Usage[len(rep.Sandkeep.Usage)-1]
	fmt.Printf("bytes stored: S3 ListObjectsV2 sums after both versions/snapshots; sandkeep = packs + version records\n"+
		"  (%s; %d objects), restic = its whole repository (%s; %d objects)\n",
		kinds(u), u.Objects, kinds(rep.Restic.Usage[len(rep.Restic.Usage)-1]), rep.Restic.Usage[len(rep.Restic.Usage)-1].Objects)
	if u.Packs != nil {
		fmt.Printf("  sandkeep's packs hold %s (restic's data packs hold its trees too; its index is the footers' counterpart)\n", u.Packs)
	}
	fmt.Printf("caches: sandkeep agent cache empty for the initial sync, kept for the change, fresh for the restore;\n" +
		"  restic cache cold for the initial backup and the restore, warm (from the initial backup) for the change\n")
	fmt.Printf("changed file: %s\n\n", rep.ChangedFile)
}

func value(unit string, v float64) string {
	if unit == "bytes" {
		return fmt.Sprintf("%.1f MB", v/1e6)
	}
	return fmt.Sprintf("%.2f s", v)
}

func kinds(u usage) string {
	var parts []string
	for _, k := range sortedKinds(u.ByKind) {
		parts = append(parts, fmt.Sprintf("%s %.1f MB", k, float64(u.ByKind[k])/1e6))
	}
	return strings.Join(parts, ", ")
}

func sortedKinds(m map[string]int64) []string {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	return keys
}

// loadAverage returns the 1-minute load average ("?" when unknown): timings
// on a busy machine are noisy, ratios less so.
func loadAverage() string {
	b, err := os.ReadFile("/proc/loadavg")
	if f := strings.Fields(string(b)); err == nil && len(f) > 0 {
		return f[0]
	}
	return "?"
}

// moduleRoot finds the sandkeep module root from the working directory.
func moduleRoot() (string, error) {
	dir, err := os.Getwd()
	if err != nil {
		return "", err
	}
	for {
		if b, err := os.ReadFile(filepath.Join(dir, "go.mod")); err == nil &&
			strings.Contains(string(b), "module github.com/sandkeep/sandkeep\n") {
			return dir, nil
		}
		parent := filepath.Dir(dir)
		if parent == dir {
			return "", errors.New("run skbench inside the sandkeep module (make bench)")
		}
		dir = parent
	}
}

// startServers starts versitygw (two with -replica) and the coordinator on
// it; stop stops them all.
func (b *bench) startServers(ctx context.Context, vgw, logsDir string) (stop func(), err error) {
	var stops []func()
	stop = func() {
		for i := len(stops) - 1; i >= 0; i-- {
			stops[i]()
		}
	}
	defer func() {
		if err != nil {
			stop()
		}
	}()
	gw, endpoint, err := startVersitygw(ctx, vgw, mkdir(b.tmp, "s3"), filepath.Join(logsDir, "versitygw.log"))
	if err != nil {
		return nil, err
	}
	stops = append(stops, func() { gw.stop(syscall.SIGTERM, 5*time.Second) })
	b.endpoint, b.gwPID = endpoint, gw.cmd.Process.Pid
	logf("versitygw on %s", endpoint)
	b.coordData = mkdir(b.tmp, "coordinator")
	b.coordLog = filepath.Join(logsDir, "coordinator.log")
	var extra []string
	if b.o.replica {
		gw2, endpoint2, err := startVersitygw(ctx, vgw, mkdir(b.tmp, "s3-replica"), filepath.Join(logsDir, "versitygw-replica.log"))
		if err != nil {
			return nil, err
		}
		stops = append(stops, func() { gw2.stop(syscall.SIGTERM, 5*time.Second) })
		extra = []string{"--replica-s3-bucket", "sk-bench-replica", "--replica-s3-endpoint", endpoint2, "--replica-s3-path-style"}
		logf("replica versitygw on %s", endpoint2)
	}
	if b.o.parts()[partEnsure] {
		extra = append(extra, "--provider", "local", "--local-root", mkdir(b.tmp, "sandboxes"), "--local-agent", b.agent)
	}
	if b.coord, err = startCoordinator(ctx, b.sandkeep, b.coordData, endpoint, "sk-bench", b.coordLog, extra...); err != nil {
		return nil, err
	}
	stops = append(stops, func() { b.coord.stop(syscall.SIGINT, 15*time.Second) })
	logf("coordinator on %s (blobs %s)", b.coord.addr, b.coord.blobs)
	return stop, nil
}
