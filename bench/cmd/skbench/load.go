package main

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/jackc/pgx/v5"
	"golang.org/x/sync/errgroup"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"

	"github.com/sandkeep/sandkeep/internal/dial"
	"github.com/sandkeep/sandkeep/internal/id"
	"github.com/sandkeep/sandkeep/internal/pack"
	"github.com/sandkeep/sandkeep/internal/remote"
	"github.com/sandkeep/sandkeep/internal/server"
	"github.com/sandkeep/sandkeep/internal/tree"
	pb "github.com/sandkeep/sandkeep/proto/sandkeep/v1"
)

// The load part (-only load): N coordinator replicas (`sandkeep serve`
// processes) on one database and one versitygw bucket, M simulated agents
// in this process over real gRPC, each committing small random changes
// through the agent's data path (find missing, pack, signed PUT, verify,
// trees, compare-and-set commit) in a closed loop and heartbeating on its
// session stream; then the same while one replica is killed (SIGKILL) and
// restarted every -load-kill-every.

type loadOptions struct {
	agents    int
	replicas  []int
	duration  time.Duration
	heartbeat time.Duration
	killEvery time.Duration
	pg        string // admin DSN of the PostgreSQL server
	// idle agents only hold a session stream and heartbeat (no commits):
	// how many connected agents the replicas carry.
	idle int
}

// loadRun is one measured configuration.
type loadRun struct {
	DB         string  `json:"db"`
	Replicas   int     `json:"replicas"`
	Agents     int     `json:"agents"`
	Kills      int     `json:"kills"`
	Seconds    float64 `json:"seconds"`
	Commits    int64   `json:"commits"`
	PerSecond  float64 `json:"commits_per_second"`
	P50ms      float64 `json:"commit_p50_ms"`
	P99ms      float64 `json:"commit_p99_ms"`
	CycleP50ms float64 `json:"cycle_p50_ms"` // write → committed: pack, PUT, verify, trees, commit
	Heartbeats float64 `json:"heartbeats_per_second"`
	Errors     int64   `json:"errors"`
	Lost       int64   `json:"acknowledged_versions_lost"`
	PGCPU      float64 `json:"postgres_cpu_seconds,omitempty"`
	PGConns    int     `json:"postgres_connections,omitempty"`
	// Database work per commit: transactions and rows read (fetched) and
	// written (inserted, updated, deleted) per commit, all traffic included.
	PGXactPerCommit float64 `json:"postgres_transactions_per_commit,omitempty"`
	PGRowsRead      float64 `json:"postgres_rows_read_per_commit,omitempty"`
	PGRowsWritten   float64 `json:"postgres_rows_written_per_commit,omitempty"`
	RSSMiB          []int64 `json:"replica_rss_mib"`
	// Idle agents (-load-idle): heartbeats/s they sent, their errors
	// (a stream refused or broken), and how many streams the replicas
	// counted connected at the end.
	Idle           int     `json:"idle_agents,omitempty"`
	IdleHeartbeats float64 `json:"idle_heartbeats_per_second,omitempty"`
	IdleErrors     int64   `json:"idle_errors,omitempty"`
	IdleConnected  int64   `json:"agents_connected_at_end,omitempty"`
	// CPU per commit (ms) of each process: where the machine's two cores
	// go. Replicas killed during the run take their CPU with them.
	CPUms map[string]float64 `json:"cpu_ms_per_commit"`
}

// loadPart runs the load part and prints it (-json: as JSON).
func (b *bench) loadPart(vgw, logsDir string) error {
	runs, err := b.runLoad(b.o.load, vgw, logsDir)
	if b.o.json {
		enc := json.NewEncoder(os.Stdout)
		enc.SetIndent("", "  ")
		_ = enc.Encode(map[string]any{"load": runs})
	} else {
		printLoad(runs)
	}
	return err
}

func (b *bench) runLoad(lo loadOptions, vgw, logsDir string) ([]loadRun, error) {
	ctx := b.r.ctx
	gw, endpoint, err := startVersitygw(ctx, vgw, mkdir(b.tmp, "load-s3"), filepath.Join(logsDir, "load-versitygw.log"))
	if err != nil {
		return nil, err
	}
	defer gw.stop(syscall.SIGTERM, 5*time.Second)
	b.loadGW = gw.cmd.Process.Pid
	var out []loadRun
	configs := []struct {
		db       string
		replicas int
		kill     bool
	}{{"sqlite", 1, false}}
	for _, n := range lo.replicas {
		configs = append(configs, struct {
			db       string
			replicas int
			kill     bool
		}{"postgres", n, false})
	}
	if lo.killEvery > 0 && slices.Max(lo.replicas) > 1 {
		configs = append(configs, struct {
			db       string
			replicas int
			kill     bool
		}{"postgres", slices.Max(lo.replicas), true})
	}
	for i, c := range configs {
		logf("load %d/%d: %s, %d replica(s), %d agents, %s%s", i+1, len(configs), c.db, c.replicas, lo.agents, lo.duration,
			map[bool]string{true: ", killing a replica every " + lo.killEvery.String()}[c.kill])
		r, err := b.loadOnce(ctx, lo, endpoint, logsDir, fmt.Sprintf("load%d", i), c.db, c.replicas, c.kill)
		if err != nil {
			return out, fmt.Errorf("load %s x%d: %w", c.db, c.replicas, err)
		}
		out = append(out, r)
	}
	return out, nil
}

// loadCluster is the replicas of one configuration.
type loadCluster struct {
	b        *bench
	ctx      context.Context
	endpoint string
	bucket   string
	logsDir  string
	name     string
	extra    []string
	addrs    []string
	data     []string
	procs    []*coordinator
}

func (lc *loadCluster) start(i int) error {
	c, err := startCoordinator(lc.ctx, lc.b.sandkeep, lc.data[i], lc.endpoint, lc.bucket,
		filepath.Join(lc.logsDir, fmt.Sprintf("%s-replica%d.log", lc.name, i)), append(slices.Clone(lc.extra), "--listen", lc.addrs[i])...)
	if err != nil {
		return err
	}
	lc.procs[i] = c
	return nil
}

// startAll starts n replicas on free ports (stopping those started if one
// fails).
func (lc *loadCluster) startAll(n int) error {
	for i := range n {
		port, err := freePort()
		if err != nil {
			lc.stop()
			return err
		}
		lc.addrs = append(lc.addrs, fmt.Sprintf("127.0.0.1:%d", port))
		lc.data = append(lc.data, mkdir(lc.b.tmp, lc.name, fmt.Sprintf("replica%d", i)))
		if err := lc.start(i); err != nil {
			lc.stop()
			return err
		}
	}
	return nil
}

// postgresFigures records the database's CPU, connections and work per
// commit since cpu0 and db0 were read.
func (run *loadRun) postgresFigures(ctx context.Context, dsn string, cpu0 float64, db0 [3]int64) {
	run.PGCPU = postgresCPU() - cpu0
	run.PGConns = postgresConnections(ctx, dsn)
	if db1 := postgresWork(ctx, dsn); run.Commits > 0 {
		n := float64(run.Commits)
		run.PGXactPerCommit = float64(db1[0]-db0[0]) / n
		run.PGRowsRead = float64(db1[1]-db0[1]) / n
		run.PGRowsWritten = float64(db1[2]-db0[2]) / n
	}
}

// cpu returns the CPU seconds used so far by the replicas (together), the
// S3 server (pid gw) and this harness (its simulated agents).
func (lc *loadCluster) cpu(gw int) map[string]float64 {
	out := map[string]float64{}
	for _, p := range lc.procs {
		if p != nil && !p.exited() {
			s, _ := procCPU(p.cmd.Process.Pid)
			out["replicas"] += s
		}
	}
	out["versitygw"], _ = procCPU(gw)
	var ru syscall.Rusage
	if syscall.Getrusage(syscall.RUSAGE_SELF, &ru) == nil {
		out["harness"] = tvSeconds(ru.Utime) + tvSeconds(ru.Stime)
	}
	return out
}

// cpuFigures records each process's CPU per commit between cpu0 and cpu1
// (and PostgreSQL's, measured before).
func (run *loadRun) cpuFigures(cpu0, cpu1 map[string]float64) {
	run.CPUms = map[string]float64{}
	if run.Commits == 0 {
		return
	}
	for k, v := range cpu1 {
		run.CPUms[k] = (v - cpu0[k]) * 1000 / float64(run.Commits)
	}
	run.CPUms["postgres"] = run.PGCPU * 1000 / float64(run.Commits)
}

// rssMiB is each replica's resident memory (0 for one not running).
func (lc *loadCluster) rssMiB() []int64 {
	out := make([]int64, 0, len(lc.procs))
	for _, p := range lc.procs {
		if p == nil || p.exited() {
			out = append(out, 0)
			continue
		}
		rss, _, _ := procMem(p.cmd.Process.Pid)
		out = append(out, rss/1024)
	}
	return out
}

func (lc *loadCluster) stop() {
	for _, p := range lc.procs {
		if p != nil && !p.exited() {
			p.stop(syscall.SIGINT, 15*time.Second)
		}
	}
}

func (b *bench) loadOnce(ctx context.Context, lo loadOptions, endpoint, logsDir, name, db string, replicas int, kill bool) (loadRun, error) {
	run := loadRun{DB: db, Replicas: replicas, Agents: lo.agents}
	key := make([]byte, 32)
	_, _ = rand.Read(key)
	lc := &loadCluster{b: b, ctx: ctx, endpoint: endpoint, bucket: "sk-" + name + "-" + started.Format("150405"), logsDir: logsDir, name: name,
		extra: []string{"--secret-key", hex.EncodeToString(key), "--gc-interval", "0"}, procs: make([]*coordinator, replicas)}
	var dsn, dbName string
	if db == "postgres" {
		var err error
		dbName = "sk_load_" + name + "_" + strings.ToLower(hex.EncodeToString(key[:4]))
		if dsn, err = createDatabase(ctx, lo.pg, dbName); err != nil {
			return run, err
		}
		defer dropDatabase(lo.pg, dbName)
		lc.extra = append(lc.extra, "--database-url", dsn)
	}
	if err := lc.startAll(replicas); err != nil {
		return run, err
	}
	defer lc.stop()
	tok, err := os.ReadFile(server.AdminTokenFile(lc.data[0]))
	if err != nil {
		return run, err
	}
	conn, err := dial.Dial(lc.addrs[0], dial.Options{Token: strings.TrimSpace(string(tok))})
	if err != nil {
		return run, err
	}
	defer conn.Close()
	admin := pb.NewAdminServiceClient(conn)
	agents, err := lc.makeAgents(ctx, admin, "load", lo.agents)
	if err != nil {
		return run, err
	}
	idle, err := lc.makeAgents(ctx, admin, "idle", lo.idle)
	if err != nil {
		return run, err
	}
	idleConns, err := idleConnections(lc.addrs, len(idle))
	if err != nil {
		return run, err
	}
	defer func() {
		for _, c := range idleConns {
			c.Close()
		}
	}()
	run.Idle = len(idle)
	cpu0 := postgresCPU()
	db0 := postgresWork(ctx, dsn)
	procs0 := lc.cpu(b.loadGW)
	lctx, cancel := context.WithTimeout(ctx, lo.duration)
	defer cancel()
	var st loadStats
	var wg sync.WaitGroup
	start := time.Now()
	for _, a := range agents {
		wg.Go(func() { a.run(lctx, lo.heartbeat, &st) })
	}
	var idleSt idleStats
	for i, a := range idle {
		conn := idleConns[i%len(idleConns)]
		// Spread the first heartbeats over one period.
		delay := time.Duration(int64(lo.heartbeat) * int64(i) / int64(len(idle)))
		wg.Go(func() { a.idle(lctx, conn, delay, lo.heartbeat, &idleSt) })
	}
	if len(idle) > 0 {
		wg.Go(func() { run.IdleConnected = lc.connectedBefore(lctx, admin, lo.duration) })
	}
	if kill {
		wg.Go(func() { run.Kills = lc.killLoop(lctx, lo.killEvery) })
	}
	wg.Wait()
	run.Seconds = time.Since(start).Seconds()
	run.Commits = st.commits.Load()
	run.PerSecond = float64(run.Commits) / run.Seconds
	run.Heartbeats = float64(st.heartbeats.Load()) / run.Seconds
	run.Errors = st.errors.Load()
	run.IdleHeartbeats = float64(idleSt.heartbeats.Load()) / run.Seconds
	run.IdleErrors = idleSt.errors.Load()
	commit, cycle := st.latencies()
	run.P50ms, run.P99ms, run.CycleP50ms = pct(commit, 50), pct(commit, 99), pct(cycle, 50)
	if db == "postgres" {
		run.postgresFigures(ctx, dsn, cpu0, db0)
	}
	run.cpuFigures(procs0, lc.cpu(b.loadGW))
	run.RSSMiB = lc.rssMiB()
	// Every commit an agent saw acknowledged is in the history (the head
	// is at or past it: a commit whose answer was lost to a dying replica
	// is there too, one past what the agent knows). A version cannot be
	// doubled: each names its parent (compare-and-set).
	for _, a := range agents {
		resp, err := admin.GetProject(ctx, &pb.GetProjectRequest{ProjectId: a.project})
		if err != nil {
			return run, err
		}
		if h := resp.GetProject().GetHead(); h < a.head {
			run.Lost += a.head - h
		}
	}
	logf("load: %.0f commits/s, commit p50 %.1f ms p99 %.1f ms, %d errors, %d acknowledged versions lost", run.PerSecond, run.P50ms, run.P99ms, run.Errors, run.Lost)
	return run, nil
}

// makeAgents makes n projects (named prefix-i), a token each, and their
// agents, spread over the replicas (each agent's list starts at another
// replica); eight at a time.
func (lc *loadCluster) makeAgents(ctx context.Context, admin pb.AdminServiceClient, prefix string, n int) ([]*loadAgent, error) {
	agents := make([]*loadAgent, n)
	g, gctx := errgroup.WithContext(ctx)
	g.SetLimit(8)
	for i := range agents {
		g.Go(func() error {
			p, err := admin.CreateProject(gctx, &pb.CreateProjectRequest{Name: fmt.Sprintf("%s-%d", prefix, i)})
			if err != nil {
				return err
			}
			t, err := admin.CreateSandboxToken(gctx, &pb.CreateSandboxTokenRequest{ProjectId: p.GetProject().GetId()})
			if err != nil {
				return err
			}
			k := i % len(lc.addrs)
			order := slices.Concat(lc.addrs[k:], lc.addrs[:k])
			agents[i] = &loadAgent{project: p.GetProject().GetId(), token: t.GetToken(), addr: strings.Join(order, ",")}
			return nil
		})
	}
	if err := g.Wait(); err != nil {
		return nil, fmt.Errorf("make %s agents: %w", prefix, err)
	}
	if n >= 1000 {
		logf("load: %d %s agents made", n, prefix)
	}
	return agents, nil
}

// idleConnections opens the client connections the idle agents share
// (one per 250 agents, spread over the replicas; each stream carries its
// own agent's token).
func idleConnections(addrs []string, n int) ([]*grpc.ClientConn, error) {
	var out []*grpc.ClientConn
	for i := 0; i < (n+249)/250; i++ {
		k := i % len(addrs)
		c, err := dial.Dial(strings.Join(slices.Concat(addrs[k:], addrs[:k]), ","), dial.Options{})
		if err != nil {
			for _, o := range out {
				o.Close()
			}
			return nil, err
		}
		out = append(out, c)
	}
	return out, nil
}

type idleStats struct{ heartbeats, errors atomic.Int64 }

// idle holds a session stream on conn and heartbeats on it every hb, the
// first after delay; a broken stream is reopened.
func (a *loadAgent) idle(ctx context.Context, conn *grpc.ClientConn, delay, hb time.Duration, st *idleStats) {
	if sleepCtx(ctx, delay) != nil {
		return
	}
	api := pb.NewAgentServiceClient(conn)
	sid := "ses_" + a.project[4:]
	for ctx.Err() == nil {
		sctx := metadata.AppendToOutgoingContext(ctx, "authorization", "Bearer "+a.token)
		stream, err := api.Session(sctx)
		for err == nil && ctx.Err() == nil {
			err = stream.Send(&pb.SessionRequest{Msg: &pb.SessionRequest_Heartbeat{Heartbeat: &pb.Heartbeat{SessionId: sid, State: pb.AgentState_AGENT_STATE_IDLE}}})
			if err == nil {
				st.heartbeats.Add(1)
				err = sleepCtx(ctx, hb)
			}
		}
		if ctx.Err() != nil {
			return
		}
		st.errors.Add(1)
		_ = sleepCtx(ctx, time.Second)
	}
}

// connectedBefore returns the agents the replicas count connected shortly
// before the run ends (the sum over ListReplicas).
func (lc *loadCluster) connectedBefore(ctx context.Context, admin pb.AdminServiceClient, d time.Duration) int64 {
	if sleepCtx(ctx, d*9/10) != nil {
		return 0
	}
	resp, err := admin.ListReplicas(context.WithoutCancel(ctx), &pb.ListReplicasRequest{})
	if err != nil {
		return 0
	}
	var n int64
	for _, r := range resp.GetReplicas() {
		n += r.GetAgents()
	}
	return n
}

// killLoop kills (SIGKILL) one replica after another every interval and
// restarts it on the same address.
func (lc *loadCluster) killLoop(ctx context.Context, every time.Duration) int {
	kills := 0
	for i := 0; ; i = (i + 1) % len(lc.procs) {
		if sleepCtx(ctx, every) != nil {
			return kills
		}
		p := lc.procs[i]
		p.stop(syscall.SIGKILL, time.Second)
		kills++
		logf("load: killed replica %d (%s)", i, lc.addrs[i])
		if err := lc.start(i); err != nil {
			logf("load: restarting replica %d: %v", i, err)
		}
	}
}

type loadStats struct {
	commits, heartbeats, errors atomic.Int64
	mu                          sync.Mutex
	commit, cycle               []time.Duration
}

func (s *loadStats) latencies() ([]time.Duration, []time.Duration) {
	s.mu.Lock()
	defer s.mu.Unlock()
	slices.Sort(s.commit)
	slices.Sort(s.cycle)
	return s.commit, s.cycle
}

func pct(d []time.Duration, p int) float64 {
	if len(d) == 0 {
		return 0
	}
	return float64(d[min(len(d)-1, len(d)*p/100)].Microseconds()) / 1000
}

// loadAgent is one simulated agent: a project, its token, its replicas.
type loadAgent struct {
	project, token, addr string
	head                 int64 // the last version it saw committed
}

func (a *loadAgent) run(ctx context.Context, hb time.Duration, st *loadStats) {
	var c *remote.Client
	defer func() {
		if c != nil {
			c.Close()
		}
	}()
	stopHB := func() {}
	defer func() { stopHB() }()
	for ctx.Err() == nil {
		if c == nil {
			var err error
			if c, err = remote.Open(ctx, remote.Config{Addr: a.addr, Token: a.token, Version: "skbench-load"}); err != nil {
				st.errors.Add(1)
				_ = sleepCtx(ctx, 100*time.Millisecond)
				continue
			}
			stopHB()
			stopHB = a.heartbeat(ctx, c, hb, st)
		}
		// A commit once started runs to its end (bounded), so that every
		// version the agent made is one it knows of when the run stops.
		cctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 60*time.Second)
		err := a.commit(cctx, c, st)
		cancel()
		if err != nil {
			if ctx.Err() != nil {
				return
			}
			st.errors.Add(1)
			if status.Code(err) == codes.Unavailable {
				// its replica died: the connection moves to the next.
				_ = sleepCtx(ctx, 50*time.Millisecond)
			}
		}
	}
}

// commit writes one small random file and commits it as the head.
func (a *loadAgent) commit(ctx context.Context, c *remote.Client, st *loadStats) error {
	start := time.Now()
	data := make([]byte, 256+int(start.UnixNano()%768))
	_, _ = rand.Read(data)
	cid := id.Sum(data)
	w := pack.NewWriter()
	if _, err := w.Add(pack.Data, cid, data); err != nil {
		return err
	}
	packData, packID, _, err := w.Finish()
	if err != nil {
		return err
	}
	if err := c.UploadPack(ctx, packID, packData, nil); err != nil {
		return err
	}
	t := &tree.Tree{Nodes: []tree.Node{{Name: "f.txt", Type: tree.File, Mode: 0o644, MtimeNs: start.UnixNano(), Size: int64(len(data)),
		Chunks: []tree.ChunkRef{{ID: cid, Size: uint32(len(data))}}}}}
	enc, err := t.Encode()
	if err != nil {
		return err
	}
	if err := c.UploadTrees(ctx, [][]byte{enc}); err != nil {
		return err
	}
	cstart := time.Now()
	v, err := c.Commit(ctx, a.head, id.Sum(enc), pb.VersionKind_VERSION_KIND_SYNC)
	if status.Code(err) == codes.FailedPrecondition {
		// The commit landed but its answer was lost (a replica died): the
		// head is ours; learn it and go on.
		return a.resync(ctx, c, err)
	}
	if err != nil {
		return err
	}
	now := time.Now()
	a.head = v.GetNumber()
	st.commits.Add(1)
	st.mu.Lock()
	st.commit = append(st.commit, now.Sub(cstart))
	st.cycle = append(st.cycle, now.Sub(start))
	st.mu.Unlock()
	return nil
}

func (a *loadAgent) resync(ctx context.Context, c *remote.Client, cause error) error {
	s, err := c.API().OpenSession(ctx, &pb.OpenSessionRequest{})
	if err != nil {
		return errors.Join(cause, err)
	}
	if h := s.GetHead().GetNumber(); h > a.head {
		a.head = h
	}
	return cause
}

// heartbeat opens the session stream and heartbeats on it every hb.
func (a *loadAgent) heartbeat(ctx context.Context, c *remote.Client, hb time.Duration, st *loadStats) (stop func()) {
	hctx, cancel := context.WithCancel(ctx)
	done := make(chan struct{})
	go func() {
		defer close(done)
		stream, err := c.API().Session(hctx)
		if err != nil {
			return
		}
		sid := "ses_" + a.project[4:]
		go func() { // commands: none expected; drain
			for {
				if _, err := stream.Recv(); err != nil {
					return
				}
			}
		}()
		for hctx.Err() == nil {
			if err := stream.Send(&pb.SessionRequest{Msg: &pb.SessionRequest_Heartbeat{Heartbeat: &pb.Heartbeat{SessionId: sid, State: pb.AgentState_AGENT_STATE_IDLE, Version: a.head}}}); err != nil {
				return
			}
			st.heartbeats.Add(1)
			if sleepCtx(hctx, hb) != nil {
				return
			}
		}
	}()
	return func() { cancel(); <-done }
}

func createDatabase(ctx context.Context, admin, name string) (string, error) {
	conn, err := pgx.Connect(ctx, admin)
	if err != nil {
		return "", fmt.Errorf("PostgreSQL at %s: %w", admin, err)
	}
	defer conn.Close(ctx)
	if _, err := conn.Exec(ctx, "CREATE DATABASE "+pgx.Identifier{name}.Sanitize()); err != nil {
		return "", err
	}
	cfg, err := pgx.ParseConfig(admin)
	if err != nil {
		return "", err
	}
	return fmt.Sprintf("postgres://%s@%s:%d/%s?sslmode=disable", cfg.User, cfg.Host, cfg.Port, name), nil
}

func dropDatabase(admin, name string) {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	conn, err := pgx.Connect(ctx, admin)
	if err != nil {
		return
	}
	defer conn.Close(ctx)
	_, _ = conn.Exec(ctx, "DROP DATABASE IF EXISTS "+pgx.Identifier{name}.Sanitize()+" WITH (FORCE)")
}

func postgresConnections(ctx context.Context, dsn string) int {
	conn, err := pgx.Connect(ctx, dsn)
	if err != nil {
		return 0
	}
	defer conn.Close(ctx)
	var n int
	_ = conn.QueryRow(ctx, `SELECT count(*) FROM pg_stat_activity WHERE datname = current_database()`).Scan(&n)
	return n - 1 // not this one
}

// postgresWork reads the database's counters: transactions committed,
// rows fetched, rows inserted+updated+deleted (zeros without a database).
func postgresWork(ctx context.Context, dsn string) [3]int64 {
	var w [3]int64
	if dsn == "" {
		return w
	}
	conn, err := pgx.Connect(ctx, dsn)
	if err != nil {
		return w
	}
	defer conn.Close(ctx)
	// The statistics are per backend until flushed: ask for a fresh snapshot.
	_, _ = conn.Exec(ctx, `SELECT pg_stat_clear_snapshot()`)
	_ = conn.QueryRow(ctx, `SELECT xact_commit, tup_fetched, tup_inserted + tup_updated + tup_deleted FROM pg_stat_database WHERE datname = current_database()`).
		Scan(&w[0], &w[1], &w[2])
	return w
}

// postgresCPU sums the CPU seconds of every postgres process on the machine.
func postgresCPU() float64 {
	ents, _ := os.ReadDir("/proc")
	total := 0.0
	for _, e := range ents {
		pid := 0
		if _, err := fmt.Sscanf(e.Name(), "%d", &pid); err != nil || pid <= 0 {
			continue
		}
		comm, err := os.ReadFile(filepath.Join("/proc", e.Name(), "comm"))
		if err != nil || !strings.HasPrefix(strings.TrimSpace(string(comm)), "postgres") {
			continue
		}
		if s, err := procCPU(pid); err == nil {
			total += s
		}
	}
	return total
}

func printLoad(runs []loadRun) {
	fmt.Println()
	fmt.Println("load: small commits by simulated agents over real gRPC (closed loop), heartbeats on session streams")
	fmt.Printf("%-9s %8s %6s %5s %9s %8s %8s %9s %7s %6s %5s %7s %6s %8s %s\n", "db", "replicas", "agents", "kills", "commits/s", "p50 ms", "p99 ms", "cycle p50", "hb/s", "errors", "lost", "pg cpu", "pg cx", "xact/cmt", "rss MiB")
	for _, r := range runs {
		fmt.Printf("%-9s %8d %6d %5d %9.0f %8.1f %8.1f %9.1f %7.1f %6d %5d %7.1f %6d %8.1f %v\n", r.DB, r.Replicas, r.Agents, r.Kills, r.PerSecond, r.P50ms, r.P99ms, r.CycleP50ms,
			r.Heartbeats, r.Errors, r.Lost, r.PGCPU, r.PGConns, r.PGXactPerCommit, r.RSSMiB)
	}
	for _, r := range runs {
		if len(r.CPUms) > 0 {
			fmt.Printf("%s x%d%s: CPU per commit: replicas %.1f ms, postgres %.1f ms, versitygw %.1f ms, harness (agents) %.1f ms\n", r.DB, r.Replicas,
				map[bool]string{true: " (kills)"}[r.Kills > 0], r.CPUms["replicas"], r.CPUms["postgres"], r.CPUms["versitygw"], r.CPUms["harness"])
		}
	}
	for _, r := range runs {
		if r.Idle > 0 {
			fmt.Printf("%s x%d: %d idle agents heartbeating: %.0f heartbeats/s, %d errors, %d agents connected near the end\n",
				r.DB, r.Replicas, r.Idle, r.IdleHeartbeats, r.IdleErrors, r.IdleConnected)
		}
	}
	for _, r := range runs {
		if r.PGXactPerCommit > 0 {
			fmt.Printf("postgres x%d%s: per commit %.1f transactions, %.0f rows read, %.1f rows written (all traffic, heartbeats included)\n",
				r.Replicas, map[bool]string{true: " (kills)"}[r.Kills > 0], r.PGXactPerCommit, r.PGRowsRead, r.PGRowsWritten)
		}
	}
}
