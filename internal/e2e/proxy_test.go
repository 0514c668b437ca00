package e2e

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"net/http/httputil"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"

	"github.com/sandkeep/sandkeep/internal/agent"
	"github.com/sandkeep/sandkeep/internal/coordtest"
	"github.com/sandkeep/sandkeep/internal/server"
	"github.com/sandkeep/sandkeep/internal/testenv"
	"github.com/sandkeep/sandkeep/internal/workspacetest"
)

// tcpProxy forwards loopback TCP connections to a target. down closes the
// listener and every open connection (the coordinator becomes unreachable:
// connections are refused); up listens again on the same port.
type tcpProxy struct {
	t      testing.TB
	target string
	Addr   string

	mu    sync.Mutex
	ln    net.Listener
	conns map[net.Conn]struct{}
	wg    sync.WaitGroup
}

func startProxy(t testing.TB, target string) *tcpProxy {
	t.Helper()
	p := &tcpProxy{t: t, target: target, Addr: "127.0.0.1:0", conns: make(map[net.Conn]struct{})}
	p.up()
	t.Cleanup(func() {
		p.down()
		p.wg.Wait()
	})
	return p
}

func (p *tcpProxy) up() {
	p.t.Helper()
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.ln != nil {
		return
	}
	ln, err := net.Listen("tcp", p.Addr)
	if err != nil {
		p.t.Fatalf("proxy listen %s: %v", p.Addr, err)
	}
	p.ln, p.Addr = ln, ln.Addr().String()
	p.wg.Add(1)
	go p.accept(ln)
}

func (p *tcpProxy) down() {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.ln != nil {
		p.ln.Close()
		p.ln = nil
	}
	for c := range p.conns {
		c.Close()
	}
	clear(p.conns)
}

func (p *tcpProxy) track(c net.Conn) bool {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.ln == nil {
		return false
	}
	p.conns[c] = struct{}{}
	return true
}

func (p *tcpProxy) accept(ln net.Listener) {
	defer p.wg.Done()
	for {
		in, err := ln.Accept()
		if err != nil {
			return
		}
		out, err := net.DialTimeout("tcp", p.target, 5*time.Second)
		if err != nil {
			in.Close()
			continue
		}
		if !p.track(in) || !p.track(out) {
			in.Close()
			out.Close()
			continue
		}
		p.wg.Add(2)
		pipe := func(dst, src net.Conn) {
			defer p.wg.Done()
			_, _ = io.Copy(dst, src)
			dst.Close()
			src.Close()
		}
		go pipe(in, out)
		go pipe(out, in)
	}
}

// agentBehindProxy runs an agent whose coordinator address is a proxy.
func agentBehindProxy(t *testing.T, c *coordtest.Coordinator, token, ws, cache string, opts agent.RunOptions) (*runningAgent, *tcpProxy) {
	t.Helper()
	px := startProxy(t, c.Addr)
	cfg := agentConfig(c, token, ws, t)
	cfg.Remote.Addr = px.Addr
	if cache != "" {
		cfg.CacheDir = cache
	}
	opts.RetryMin, opts.RetryMax = 100*time.Millisecond, time.Second
	return startAgentConfig(t, cfg, opts), px
}

// TestRunCoordinatorUnreachable: while the coordinator cannot be reached
// the agent keeps the changes and retries with backoff; a flush waits and
// then FAILS (it never returns a version that lacks them); once the
// coordinator is back, a flush returns a version equal to the disk.
func TestRunCoordinatorUnreachable(t *testing.T) {
	c := coordtest.Start(t, coordtest.Options{})
	pid, token := c.Project(t, "unreachable")
	ws := newWorkspace(t)
	writeWS(t, ws, "a.txt", "before")
	a, px := agentBehindProxy(t, c, token, ws, "", runOpts(false))
	v1 := a.flush()

	px.down()
	writeWS(t, ws, "a.txt", "changed while unreachable")
	writeWS(t, ws, "dir/new.txt", "new while unreachable")
	big := genFile{path: ws + "/big.dat", blocks: 32, block: 64 << 10}
	big.rewrite(t, 7)
	start := time.Now()
	v, err := a.ctl.Flush(context.Background(), 3*time.Second)
	if err == nil {
		t.Fatalf("flush while the coordinator is unreachable returned version %d, want an error", v)
	}
	if took := time.Since(start); took < 3*time.Second {
		t.Errorf("flush gave up after %v, before its 3s timeout", took)
	}
	t.Logf("flush while unreachable: %v", err)
	// The status says so (once the RPCs' own retries gave up).
	deadline := time.Now().Add(30 * time.Second)
	for {
		st, err := a.ctl.Status(context.Background())
		if err != nil {
			t.Fatal(err)
		}
		if st.Clean || st.Version != v1 {
			t.Fatalf("status while unreachable: clean=%v version=%d, want not clean at %d", st.Clean, st.Version, v1)
		}
		if st.LastError != "" && !st.CoordinatorUp {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("status while unreachable: last_error=%q coordinator_up=%v", st.LastError, st.CoordinatorUp)
		}
		time.Sleep(20 * time.Millisecond) // bounded poll of the agent's status
	}
	if h := headNumber(t, c, pid); h != v1 {
		t.Fatalf("head moved to %d while unreachable", h)
	}
	writeWS(t, ws, "after-failed-flush.txt", "still unreachable")

	px.up()
	back := time.Now()
	v2 := a.flush()
	t.Logf("flush after the coordinator came back took %v", time.Since(back))
	if v2 <= v1 {
		t.Fatalf("flush after reconnect returned %d, want > %d", v2, v1)
	}
	restoreHeadAndCompare(t, c, token, ws)

	// Down again in the middle of syncing on its own: nothing is lost.
	px.down()
	for i := 0; i < 20; i++ {
		writeWS(t, ws, "burst/"+strings.Repeat("x", i+1), "burst")
	}
	px.up()
	a.flush()
	restoreHeadAndCompare(t, c, token, ws)
}

// TestRunStopWhileCoordinatorUnreachable: SIGTERM (closing stop) while the
// coordinator is unreachable makes Run give up after StopTimeout with an
// error naming what was not saved; the next run saves it.
func TestRunStopWhileCoordinatorUnreachable(t *testing.T) {
	c := coordtest.Start(t, coordtest.Options{})
	_, token := c.Project(t, "stop-unreachable")
	ws := newWorkspace(t)
	cache := t.TempDir()
	writeWS(t, ws, "a.txt", "a")
	opts := runOpts(false)
	opts.StopTimeout = 2 * time.Second
	a, px := agentBehindProxy(t, c, token, ws, cache, opts)
	a.flush()
	px.down()
	writeWS(t, ws, "unsaved.txt", "written while the coordinator is unreachable")
	start := time.Now()
	close(a.stop)
	err := a.wait(60 * time.Second)
	took := time.Since(start)
	if err == nil {
		t.Fatal("Run returned nil after stopping with unsaved changes")
	}
	if !errors.Is(err, agent.ErrNotSaved) || !strings.Contains(err.Error(), "unsaved.txt") {
		t.Errorf("Run returned %v, want ErrNotSaved naming unsaved.txt", err)
	}
	if took > opts.StopTimeout+10*time.Second {
		t.Errorf("stopping took %v with a stop timeout of %v", took, opts.StopTimeout)
	}
	t.Logf("stopped after %v: %v", took, err)

	px.up()
	b := startAgent(t, c, token, ws, runOpts(false), cache)
	b.flush()
	restoreHeadAndCompare(t, c, token, ws)
}

// rawCodec passes gRPC messages through as bytes.
type rawCodec struct{}

func (rawCodec) Marshal(v any) ([]byte, error) { return *(v.(*[]byte)), nil }
func (rawCodec) Unmarshal(data []byte, v any) error {
	*(v.(*[]byte)) = append([]byte(nil), data...)
	return nil
}
func (rawCodec) Name() string { return "proto" }

const commitMethod = "/sandkeep.v1.AgentService/CommitVersion"

// grpcProxy forwards every gRPC call to the coordinator, and can lose the
// answer of the next CommitVersion after the coordinator committed it:
// onCommit runs then, and the caller gets an error (lose) or no answer
// until it gives up (hang).
type grpcProxy struct {
	Addr string
	up   *grpc.ClientConn

	mu       sync.Mutex
	mode     string // "", "lose", "hang"
	onCommit func()
}

func startGRPCProxy(t *testing.T, target string) *grpcProxy {
	t.Helper()
	up, err := grpc.NewClient(target, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	p := &grpcProxy{Addr: ln.Addr().String(), up: up}
	srv := grpc.NewServer(grpc.UnknownServiceHandler(p.handle), grpc.ForceServerCodec(rawCodec{}))
	go func() { _ = srv.Serve(ln) }()
	t.Cleanup(func() {
		srv.Stop()
		up.Close()
	})
	return p
}

// loseNextCommit makes the next CommitVersion's answer get lost (mode
// "lose" or "hang"), running f once the coordinator has committed.
func (p *grpcProxy) loseNextCommit(mode string, f func()) {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.mode, p.onCommit = mode, f
}

func (p *grpcProxy) takeMode() (string, func()) {
	p.mu.Lock()
	defer p.mu.Unlock()
	m, f := p.mode, p.onCommit
	p.mode, p.onCommit = "", nil
	return m, f
}

func (p *grpcProxy) handle(_ any, ss grpc.ServerStream) error {
	method, _ := grpc.MethodFromServerStream(ss)
	in, _ := metadata.FromIncomingContext(ss.Context())
	md := metadata.MD{}
	for k, v := range in {
		if !strings.HasPrefix(k, ":") && !strings.HasPrefix(k, "grpc-") && k != "content-type" && k != "user-agent" && k != "te" {
			md[k] = v
		}
	}
	ctx, cancel := context.WithCancel(metadata.NewOutgoingContext(ss.Context(), md))
	defer cancel()
	cs, err := p.up.NewStream(ctx, &grpc.StreamDesc{ServerStreams: true, ClientStreams: true}, method, grpc.ForceCodec(rawCodec{}))
	if err != nil {
		return err
	}
	go func() {
		for {
			var m []byte
			if err := ss.RecvMsg(&m); err != nil {
				if errors.Is(err, io.EOF) {
					_ = cs.CloseSend()
				} else {
					cancel()
				}
				return
			}
			if err := cs.SendMsg(&m); err != nil {
				return
			}
		}
	}()
	if hdr, err := cs.Header(); err == nil {
		_ = ss.SendHeader(hdr)
	}
	for {
		var m []byte
		if err := cs.RecvMsg(&m); err != nil {
			ss.SetTrailer(cs.Trailer())
			if errors.Is(err, io.EOF) {
				return nil
			}
			return err
		}
		if method == commitMethod {
			switch mode, f := p.takeMode(); mode {
			case "lose":
				if f != nil {
					f()
				}
				return status.Error(codes.Internal, "test proxy: the commit's answer was lost")
			case "hang":
				if f != nil {
					f()
				}
				<-ss.Context().Done()
				return ss.Context().Err()
			}
		}
		if err := ss.SendMsg(&m); err != nil {
			return err
		}
	}
}

// requireNoConflictCopies fails if the workspace holds a conflict copy:
// with one sandbox there is nothing to conflict with.
func requireNoConflictCopies(t *testing.T, ws string) {
	t.Helper()
	mustDo(t, filepath.WalkDir(ws, func(p string, d os.DirEntry, err error) error {
		if err == nil && strings.Contains(d.Name(), agent.ConflictSuffix) {
			t.Errorf("conflict copy with a single sandbox: %s", p)
		}
		return err
	}))
}

// TestRunCommitAnswerLost: the coordinator commits a version but its
// answer never reaches the agent, and the disk changes before the agent
// tries again (so its next commit has another root and finds the head
// moved). The new head is the agent's own commit: it must not be merged
// as another sandbox's (no conflict copies, no deleted file brought back).
func TestRunCommitAnswerLost(t *testing.T) {
	c := coordtest.Start(t, coordtest.Options{})
	pid, token := c.Project(t, "lost-answer")
	gp := startGRPCProxy(t, c.Addr)
	ws := newWorkspace(t)
	writeWS(t, ws, "f.txt", "f1")
	writeWS(t, ws, "h.txt", "h1")
	cfg := agentConfig(c, token, ws, t)
	cfg.Remote.Addr = gp.Addr
	opts := runOpts(false)
	opts.RetryMin, opts.RetryMax = 100*time.Millisecond, time.Second
	a := startAgentConfig(t, cfg, opts)
	v1 := a.flush()

	lost := make(chan struct{})
	var want map[string]workspacetest.Entry
	gp.loseNextCommit("lose", func() {
		// The coordinator committed; before the agent hears anything the
		// user goes on.
		defer close(lost)
		if err := os.WriteFile(filepath.Join(ws, "g.txt"), []byte("g3, changed after the lost commit"), 0o644); err != nil {
			t.Error(err)
		}
		for _, p := range []string{"k.txt", "f.txt"} {
			if err := os.Remove(filepath.Join(ws, p)); err != nil {
				t.Error(err)
			}
		}
		want = workspacetest.Snapshot(t, ws)
	})
	writeWS(t, ws, "f.txt", "f2")
	writeWS(t, ws, "g.txt", "g2")
	writeWS(t, ws, "k.txt", "k2")
	mustDo(t, os.Remove(filepath.Join(ws, "h.txt")))
	v := a.flush()
	<-lost
	if d := workspacetest.Diff(want, workspacetest.Snapshot(t, ws)); len(d) > 0 {
		t.Errorf("the agent merged its own commit as another sandbox's: %v", d)
	}
	requireNoConflictCopies(t, ws)
	if v < v1+2 {
		t.Errorf("flush returned %d, want >= %d (the lost commit, then the disk)", v, v1+2)
	}
	restoreHeadAndCompare(t, c, token, ws)
	_ = pid
}

// TestRunRestartAfterCrashInCommit: the agent dies while its commit is in
// flight; the coordinator committed it. On restart the head is the
// agent's own commit, not another sandbox's: no conflict copy is made, and
// files deleted since are not brought back.
func TestRunRestartAfterCrashInCommit(t *testing.T) {
	c := coordtest.Start(t, coordtest.Options{})
	pid, token := c.Project(t, "crash-in-commit")
	gp := startGRPCProxy(t, c.Addr)
	ws := newWorkspace(t)
	cache := filepath.Join(t.TempDir(), "cache")
	writeWS(t, ws, "f.txt", "f1")
	writeWS(t, ws, "h.txt", "h1")
	cfg := agentConfig(c, token, ws, t)
	cfg.Remote.Addr, cfg.CacheDir = gp.Addr, cache
	a := startAgentConfig(t, cfg, runOpts(false))
	v1 := a.flush()

	committed := make(chan struct{})
	gp.loseNextCommit("hang", func() { close(committed) })
	writeWS(t, ws, "f.txt", "f2 (in version 2)")
	writeWS(t, ws, "g.txt", "g2 (new in version 2)")
	writeWS(t, ws, "k.txt", "k2 (new in version 2)")
	mustDo(t, os.Remove(filepath.Join(ws, "h.txt")))
	<-committed
	if h := headNumber(t, c, pid); h != v1+1 {
		t.Fatalf("head is %d, want %d", h, v1+1)
	}
	// The agent dies before it hears of the commit.
	_ = a.abort()
	// Changes after version 2, while no agent runs.
	writeWS(t, ws, "g.txt", "g3 (changed after version 2)")
	mustDo(t, os.Remove(filepath.Join(ws, "f.txt")))
	mustDo(t, os.Remove(filepath.Join(ws, "k.txt")))
	want := workspacetest.Snapshot(t, ws)

	a = startAgent(t, c, token, ws, runOpts(false), cache)
	if v := a.flush(); v <= v1+1 {
		t.Fatalf("flush returned %d, want > %d", v, v1+1)
	}
	if d := workspacetest.Diff(want, workspacetest.Snapshot(t, ws)); len(d) > 0 {
		t.Errorf("the restart merged the agent's own commit as another sandbox's: %v", d)
	}
	requireNoConflictCopies(t, ws)
	restoreHeadAndCompare(t, c, token, ws)
}

// faultyS3 is a reverse proxy in front of an S3 server that answers 503
// SlowDown to the next n PUTs (packs uploaded by the agent through
// presigned URLs, and the coordinator's own writes).
type faultyS3 struct {
	URL string

	mu       sync.Mutex
	failNext int
	failed   int
	puts     int
}

func startFaultyS3(t *testing.T, target string) *faultyS3 {
	t.Helper()
	u, err := url.Parse(target)
	if err != nil {
		t.Fatal(err)
	}
	f := &faultyS3{}
	rp := httputil.NewSingleHostReverseProxy(u) // keeps the Host header: signatures stay valid
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Method == http.MethodPut {
			f.mu.Lock()
			f.puts++
			fail := f.failNext > 0
			if fail {
				f.failNext--
				f.failed++
			}
			f.mu.Unlock()
			if fail {
				_, _ = io.Copy(io.Discard, r.Body)
				w.Header().Set("Content-Type", "application/xml")
				w.WriteHeader(http.StatusServiceUnavailable)
				_, _ = io.WriteString(w, `<?xml version="1.0" encoding="UTF-8"?><Error><Code>SlowDown</Code><Message>injected by the test</Message></Error>`)
				return
			}
		}
		rp.ServeHTTP(w, r)
	}))
	t.Cleanup(srv.Close)
	f.URL = srv.URL
	return f
}

func (f *faultyS3) fail(n int) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.failNext = n
}

func (f *faultyS3) counts() (failed, puts, left int) {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.failed, f.puts, f.failNext
}

// TestRunS3Errors: S3 answering 503 to PUTs (more of them than one
// upload's retries) delays the sync but loses nothing: the flush returns
// a version equal to the disk, and every version restores.
func TestRunS3Errors(t *testing.T) {
	env := testenv.S3(t)
	t.Setenv("AWS_ACCESS_KEY_ID", env.AccessKey)
	t.Setenv("AWS_SECRET_ACCESS_KEY", env.SecretKey)
	fs3 := startFaultyS3(t, env.Endpoint)
	c := coordtest.Start(t, coordtest.Options{Config: server.Config{
		S3Bucket: testenv.NewBucketName(t), S3Endpoint: fs3.URL, S3Region: env.Region, S3PathStyle: true,
	}})
	pid, token := c.Project(t, "s3-errors")
	ws := newWorkspace(t)
	writeWS(t, ws, "a.txt", "a")
	a := startAgent(t, c, token, ws, runOpts(false), "")
	a.flush()

	fs3.fail(8) // more than the 5 attempts of one pack upload
	workspacetest.RandomFile(t, filepath.Join(ws, "big.bin"), 5<<20, 11)
	for i := 0; i < 50; i++ {
		writeWS(t, ws, fmt.Sprintf("small/f%02d.txt", i), strings.Repeat("x", i+1))
	}
	a.flush()
	failed, puts, left := fs3.counts()
	t.Logf("%d PUTs, %d answered 503", puts, failed)
	if failed == 0 || left != 0 {
		t.Errorf("%d PUTs answered 503, %d injections left: the test did not exercise the retries", failed, left)
	}
	restoreHeadAndCompare(t, c, token, ws)
	restoreEveryVersion(t, c, pid, token, nil)
}
