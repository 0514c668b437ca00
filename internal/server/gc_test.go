package server

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/sandkeep/sandkeep/internal/agent"
	"github.com/sandkeep/sandkeep/internal/blobstore"
	"github.com/sandkeep/sandkeep/internal/dial"
	"github.com/sandkeep/sandkeep/internal/gc"
	"github.com/sandkeep/sandkeep/internal/metastore"
	"github.com/sandkeep/sandkeep/internal/remote"
	"github.com/sandkeep/sandkeep/internal/repo"
	"github.com/sandkeep/sandkeep/internal/testclock"
	"github.com/sandkeep/sandkeep/internal/testenv"
	"github.com/sandkeep/sandkeep/internal/workspacetest"
	pb "github.com/sandkeep/sandkeep/proto/sandkeep/v1"
)

// wait is how long a test waits for an event before failing (never how it
// synchronises: every wait is on a channel).
const wait = 60 * time.Second

func receive[T any](t *testing.T, ch <-chan T, what string) T {
	t.Helper()
	select {
	case v := <-ch:
		return v
	case <-time.After(wait):
		t.Fatalf("no %s within %s", what, wait)
		panic("unreachable")
	}
}

// TestGCLoop: the loop collects once per tick, on the leader only, goes on
// after a failure, and stops when its context ends.
func TestGCLoop(t *testing.T) {
	ticks := make(chan time.Time)
	ran := make(chan gcRun)
	var mu sync.Mutex
	lead, leadErr, collectErr := true, error(nil), error(nil)
	collected := 0
	l := &jobLoop[gc.Report]{
		name:  "gc",
		ticks: ticks,
		log:   slog.New(slog.DiscardHandler),
		ran:   func(r gcRun) { ran <- r },
		lead: func(context.Context) (bool, error) {
			mu.Lock()
			defer mu.Unlock()
			return lead, leadErr
		},
		work: func(context.Context) (gc.Report, error) {
			mu.Lock()
			defer mu.Unlock()
			collected++
			return gc.Report{Projects: collected, PacksDeleted: 1}, collectErr
		},
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() {
		defer close(done)
		l.run(ctx)
	}()
	set := func(f func()) {
		mu.Lock()
		defer mu.Unlock()
		f()
	}
	tick := func() gcRun {
		t.Helper()
		select {
		case ticks <- time.Now():
		case <-time.After(wait):
			t.Fatal("the loop does not take ticks")
		}
		return receive(t, ran, "run")
	}

	if r := tick(); !r.led || r.err != nil || r.report.Projects != 1 {
		t.Fatalf("first tick: %+v", r)
	}
	if r := tick(); !r.led || r.report.Projects != 2 {
		t.Fatalf("second tick: %+v", r)
	}
	set(func() { lead = false })
	if r := tick(); r.led || r.report.Projects != 0 {
		t.Fatalf("tick while another replica leads: %+v", r)
	}
	set(func() { lead, leadErr = true, errors.New("database down") })
	if r := tick(); r.led || r.err == nil {
		t.Fatalf("tick while the election fails: %+v", r)
	}
	set(func() { leadErr, collectErr = nil, errors.New("some project failed") })
	if r := tick(); !r.led || r.err == nil || r.report.Projects != 3 {
		t.Fatalf("failing run: %+v", r)
	}
	set(func() { collectErr = nil })
	if r := tick(); !r.led || r.err != nil || r.report.Projects != 4 {
		t.Fatalf("run after a failure: %+v", r)
	}
	set(func() {
		if collected != 4 {
			t.Errorf("collected %d times, want 4 (never while not leading)", collected)
		}
	})
	cancel()
	receive(t, done, "end of the loop")
}

// testServer runs a coordinator with cfg (on loopback, in a temporary data
// directory) after prepare has set its test hooks, until the test ends.
func testServer(t *testing.T, cfg Config, prepare func(*Server)) (*Server, pb.AdminServiceClient) {
	t.Helper()
	if cfg.DataDir == "" {
		cfg.DataDir = t.TempDir()
	}
	cfg.Listen, cfg.HTTPListen = "127.0.0.1:0", "127.0.0.1:0"
	log := slog.New(slog.NewTextHandler(io.Discard, nil))
	if os.Getenv("SANDKEEP_TEST_VERBOSE") != "" {
		log = slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelDebug}))
	}
	ctx, cancel := context.WithCancel(context.Background())
	s, err := New(ctx, cfg, log)
	if err != nil {
		cancel()
		t.Fatal(err)
	}
	if prepare != nil {
		prepare(s)
	}
	done := make(chan error, 1)
	go func() { done <- s.Serve(ctx) }()
	conn, err := dial.Dial(s.GRPCAddr(), dial.Options{Token: s.AdminToken})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		conn.Close()
		cancel()
		if err := <-done; err != nil {
			t.Errorf("serve: %v", err)
		}
	})
	return s, pb.NewAdminServiceClient(conn)
}

func newProject(t *testing.T, admin pb.AdminServiceClient, name string) (projectID, token string) {
	t.Helper()
	ctx := context.Background()
	p, err := admin.CreateProject(ctx, &pb.CreateProjectRequest{Name: name})
	if err != nil {
		t.Fatal(err)
	}
	tok, err := admin.CreateSandboxToken(ctx, &pb.CreateSandboxTokenRequest{ProjectId: p.GetProject().GetId()})
	if err != nil {
		t.Fatal(err)
	}
	return p.GetProject().GetId(), tok.GetToken()
}

func agentCfg(s *Server, token, ws, cache string) agent.Config {
	return agent.Config{Remote: remote.Config{Addr: s.GRPCAddr(), Token: token, Version: "test"}, Workspace: ws, CacheDir: cache,
		Logger: slog.New(slog.DiscardHandler)}
}

// TestPeriodicGC: the coordinator's periodic collection applies retention
// and frees the space of dropped versions, with the configured grace period
// (not gc's default), every project at each tick, while the head stays whole.
func TestPeriodicGC(t *testing.T) {
	const grace = 10 * time.Minute // the default is an hour: this proves the setting is used
	ticks := make(chan time.Time)
	ran := make(chan gcRun)
	// Packs written now are older than the grace period at the first run.
	clock := testclock.New(time.Now().Add(time.Hour))
	s, admin := testServer(t, Config{GC: GCConfig{Interval: time.Hour, Grace: grace}}, func(s *Server) {
		s.gcTicks, s.gcNow, s.gcRan = ticks, clock.Now, func(r gcRun) { ran <- r }
	})
	tick := func() gc.Report {
		t.Helper()
		select {
		case ticks <- time.Now():
		case <-time.After(wait):
			t.Fatal("the periodic GC does not take ticks")
		}
		r := receive(t, ran, "periodic GC run")
		if !r.led || r.err != nil {
			t.Fatalf("periodic GC: led %v, %v", r.led, r.err)
		}
		t.Logf("%v", r.report)
		return r.report
	}
	ctx := context.Background()

	// Two projects, each with three versions of a 2 MiB file; one keeps
	// only its head, the other has the default retention (keeps all three).
	type project struct{ id, token, ws string }
	var ps []project
	for i, name := range []string{"trimmed", "default"} {
		pid, token := newProject(t, admin, name)
		p := project{pid, token, filepath.Join(t.TempDir(), "ws")}
		for v := range 3 {
			workspacetest.RandomFile(t, filepath.Join(p.ws, "big.bin"), 2<<20, uint64(10*i+v))
			if res, err := agent.SyncOnce(ctx, agentCfg(s, token, p.ws, t.TempDir())); err != nil || !res.Changed {
				t.Fatalf("sync: %+v, %v", res, err)
			}
		}
		ps = append(ps, p)
	}
	if err := s.Repo.SetRetention(ctx, ps[0].id, metastore.Retention{KeepLast: 1}); err != nil {
		t.Fatal(err)
	}
	bucket := func(pid string) int64 {
		var n int64
		if err := s.Blobs.List(ctx, repo.ProjectPrefix(pid)+"packs/", func(o blobstore.Object) error { n += o.Size; return nil }); err != nil {
			t.Fatal(err)
		}
		return n
	}
	before := bucket(ps[0].id)

	first := tick()
	if first.Projects != 2 || first.VersionsDeleted != 2 || first.PacksCondemned == 0 || first.PacksDeleted != 0 {
		t.Fatalf("first run: %v", first)
	}
	// Within the grace period: nothing is deleted.
	clock.Advance(grace - time.Minute)
	if r := tick(); r.PacksDeleted != 0 {
		t.Fatalf("a run within the grace period deleted packs: %v", r)
	}
	clock.Advance(time.Minute)
	third := tick()
	if third.PacksDeleted == 0 || third.BytesFreed < 4<<20 {
		t.Fatalf("a run after the grace period: %v", third)
	}
	// The trimmed project's packs come down to about its head's 2 MiB.
	if after := bucket(ps[0].id); before < 6<<20 || after > 2<<20+64<<10 {
		t.Fatalf("project %s: %d bytes of packs before, %d after", ps[0].id, before, after)
	}
	for i, want := range [][]int64{{3}, {3, 2, 1}} {
		vs, err := s.Meta.ListVersions(ctx, ps[i].id, metastore.ListOptions{})
		if err != nil {
			t.Fatal(err)
		}
		var got []int64
		for _, v := range vs {
			got = append(got, v.Number)
		}
		if fmt.Sprint(got) != fmt.Sprint(want) {
			t.Fatalf("project %d keeps versions %v, want %v", i, got, want)
		}
	}
	// Both heads restore byte for byte.
	for _, p := range ps {
		dir := filepath.Join(t.TempDir(), "restored")
		if _, err := agent.Restore(ctx, agentCfg(s, p.token, dir, t.TempDir()), 0); err != nil {
			t.Fatal(err)
		}
		workspacetest.RequireEqual(t, p.ws, dir)
	}
	// The runs are counted in /metrics.
	req, _ := http.NewRequest(http.MethodGet, "http://"+s.HTTPAddr()+"/metrics", nil)
	req.Header.Set("Authorization", "Bearer "+s.AdminToken)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	body, err := io.ReadAll(resp.Body)
	resp.Body.Close()
	if err != nil {
		t.Fatal(err)
	}
	metric := func(name string) float64 {
		for _, line := range strings.Split(string(body), "\n") {
			if v, ok := strings.CutPrefix(line, name+" "); ok {
				f, err := strconv.ParseFloat(v, 64)
				if err != nil {
					t.Fatalf("%s: %v", line, err)
				}
				return f
			}
		}
		t.Fatalf("/metrics lacks %s", name)
		return 0
	}
	if got := metric(`sandkeep_gc_runs_total{result="ok"}`); got != 3 {
		t.Errorf("gc_runs_total ok = %v, want 3", got)
	}
	if got := metric("sandkeep_gc_bytes_freed_total"); got != float64(third.BytesFreed) {
		t.Errorf("gc_bytes_freed_total = %v, want %d", got, third.BytesFreed)
	}
	if got := metric("sandkeep_gc_versions_deleted_total"); got != 2 {
		t.Errorf("gc_versions_deleted_total = %v, want 2", got)
	}
	if got := metric("sandkeep_gc_last_success_timestamp_seconds"); time.Since(time.Unix(int64(got), 0)) > time.Hour {
		t.Errorf("gc_last_success_timestamp_seconds = %v", got)
	}
}

// TestPeriodicGCTicker: with no test hook, the interval's own ticker drives
// the runs.
func TestPeriodicGCTicker(t *testing.T) {
	ran := make(chan gcRun, 1)
	testServer(t, Config{GC: GCConfig{Interval: 20 * time.Millisecond}}, func(s *Server) {
		s.gcRan = func(r gcRun) {
			select {
			case ran <- r:
			default:
			}
		}
	})
	for range 2 {
		if r := receive(t, ran, "periodic GC run"); !r.led || r.err != nil {
			t.Fatalf("run: %+v", r)
		}
	}
}

// TestPeriodicGCOneLeader: two coordinators over one PostgreSQL database;
// a tick on each collects on one of them only, the leader of the
// background jobs (whose lock the lifecycle loop shares).
func TestPeriodicGCOneLeader(t *testing.T) {
	dsn := testenv.Postgres(t)
	key := strings.Repeat("ab", 32)
	type replica struct {
		ticks chan time.Time
		ran   chan gcRun
	}
	var rs []replica
	for range 2 {
		r := replica{make(chan time.Time), make(chan gcRun)}
		testServer(t, Config{DatabaseURL: dsn, SecretKey: key, AdminToken: "ska_" + strings.Repeat("z", 40), GC: GCConfig{Interval: time.Hour}},
			func(s *Server) { s.gcTicks, s.gcRan = r.ticks, func(g gcRun) { r.ran <- g } })
		rs = append(rs, r)
	}
	for round := range 3 {
		led := 0
		for i, r := range rs {
			select {
			case r.ticks <- time.Now():
			case <-time.After(wait):
				t.Fatalf("replica %d does not take ticks", i)
			}
			g := receive(t, r.ran, "periodic GC run")
			if g.err != nil {
				t.Fatalf("replica %d: %v", i, g.err)
			}
			if g.led {
				led++
			}
		}
		if led != 1 {
			t.Fatalf("round %d: %d replicas collected, want exactly 1", round, led)
		}
	}
}

// TestGCTickerFirstTickEarly: the first periodic run does not wait a whole
// interval (a coordinator restarted more often than --gc-interval would
// otherwise never collect).
func TestGCTickerFirstTickEarly(t *testing.T) {
	ticks, stop := gcTicker(time.Millisecond, time.Hour)
	defer stop()
	select {
	case <-ticks:
	case <-time.After(30 * time.Second):
		t.Fatal("no first tick long before the interval")
	}
	stop() // idempotent
}
