package e2e

import (
	"bytes"
	"context"
	"fmt"
	"math/rand/v2"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/sandkeep/sandkeep/internal/control"
	"github.com/sandkeep/sandkeep/internal/coordtest"
)

// buildAgent builds the static sandkeep-agent binary.
func buildAgent(t *testing.T) string {
	t.Helper()
	if testing.Short() {
		t.Skip("builds the agent binary; skipped with -short")
	}
	bin := filepath.Join(t.TempDir(), "sandkeep-agent")
	cmd := exec.Command("go", "build", "-trimpath", "-o", bin, "./agent")
	cmd.Dir = moduleRoot(t)
	cmd.Env = append(os.Environ(), "CGO_ENABLED=0")
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("build agent: %v\n%s", err, out)
	}
	return bin
}

// agentProcess is `sandkeep-agent run` as a child process.
type agentProcess struct {
	cmd    *exec.Cmd
	stderr *syncBuffer
	done   chan struct{}
	err    error
}

type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

func startAgentProcess(t *testing.T, bin, addr, token, ws, sock, cache string, args ...string) *agentProcess {
	t.Helper()
	cmd := exec.Command(bin, append([]string{"run", "--workspace", ws, "--socket", sock, "--cache-dir", cache}, args...)...)
	cmd.Env = append(os.Environ(), "SANDKEEP_COORDINATOR="+addr, "SANDKEEP_TOKEN="+token)
	p := &agentProcess{cmd: cmd, stderr: &syncBuffer{}, done: make(chan struct{})}
	cmd.Stdout, cmd.Stderr = p.stderr, p.stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	go func() {
		p.err = cmd.Wait()
		close(p.done)
	}()
	t.Cleanup(func() {
		_ = cmd.Process.Kill()
		<-p.done
		if t.Failed() {
			t.Logf("agent pid %d output:\n%s", cmd.Process.Pid, p.stderr.String())
		}
	})
	return p
}

// waitSocket waits (bounded) until the agent process answers on its
// control socket.
func waitSocket(t *testing.T, ctl *control.Client, p *agentProcess) {
	t.Helper()
	deadline := time.Now().Add(60 * time.Second)
	for {
		if _, err := ctl.Status(context.Background()); err == nil {
			return
		}
		select {
		case <-p.done:
			t.Fatalf("agent exited: %v\n%s", p.err, p.stderr.String())
		default:
		}
		if time.Now().After(deadline) {
			t.Fatalf("agent did not answer on its socket")
		}
		time.Sleep(20 * time.Millisecond) // readiness poll of the agent's socket
	}
}

func (p *agentProcess) kill9(t *testing.T) {
	t.Helper()
	mustDo(t, p.cmd.Process.Signal(syscall.SIGKILL))
	<-p.done
}

// waitExit waits (bounded) for the process to exit and returns its error.
func (p *agentProcess) waitExit(t *testing.T, d time.Duration) error {
	t.Helper()
	select {
	case <-p.done:
		return p.err
	case <-time.After(d):
		t.Fatalf("agent did not exit within %v", d)
		return nil
	}
}

// churn writes, overwrites, renames and deletes files and directories
// under ws/w continuously, from a seeded random source, until stopped.
type churn struct {
	t     *testing.T
	root  string
	rng   *rand.Rand
	files map[string]bool // paths relative to root
	dirs  []string
	n     int
	stop  chan struct{}
	done  chan struct{}
	ops   int
}

func startChurn(t *testing.T, ws string, seed uint64) *churn {
	w := &churn{t: t, root: filepath.Join(ws, "w"), rng: rand.New(rand.NewPCG(seed, 7)), files: make(map[string]bool),
		stop: make(chan struct{}), done: make(chan struct{})}
	mustDo(t, os.MkdirAll(w.root, 0o755))
	for i := range 6 {
		w.mkdir(fmt.Sprintf("d%d", i))
	}
	go w.run()
	return w
}

func (w *churn) halt() int {
	close(w.stop)
	<-w.done
	return w.ops
}

func (w *churn) abs(rel string) string { return filepath.Join(w.root, filepath.FromSlash(rel)) }

func (w *churn) check(err error) {
	if err != nil {
		w.t.Errorf("churn: %v", err)
	}
}

func (w *churn) mkdir(rel string) {
	w.check(os.MkdirAll(w.abs(rel), 0o755))
	w.dirs = append(w.dirs, rel)
}

func (w *churn) data() []byte {
	n := 1 + w.rng.IntN(32<<10)
	if w.rng.IntN(20) == 0 {
		n = 1<<20 + w.rng.IntN(2<<20) // sometimes big: uploads take a while
	}
	b := make([]byte, n)
	for i := range b {
		b[i] = byte(w.rng.Uint32())
	}
	return b
}

func (w *churn) anyFile() (string, bool) {
	if len(w.files) == 0 {
		return "", false
	}
	keys := make([]string, 0, len(w.files))
	for k := range w.files {
		keys = append(keys, k)
	}
	slices.Sort(keys) // deterministic choice for a given seed
	return keys[w.rng.IntN(len(keys))], true
}

func (w *churn) newName() string {
	w.n++
	return fmt.Sprintf("%s/f%05d", w.dirs[w.rng.IntN(len(w.dirs))], w.n)
}

func (w *churn) run() {
	defer close(w.done)
	for {
		select {
		case <-w.stop:
			return
		default:
		}
		w.step()
		w.ops++
		time.Sleep(time.Duration(w.rng.IntN(3000)) * time.Microsecond) // workload pacing
	}
}

func (w *churn) step() {
	op := w.rng.IntN(100)
	f, ok := w.anyFile()
	if !ok || len(w.files) < 50 {
		op = 0
	}
	if len(w.files) > 400 {
		op = 60
	}
	switch {
	case op < 35: // create or overwrite
		p := w.newName()
		if op%2 == 1 && ok {
			p = f
		}
		w.check(os.WriteFile(w.abs(p), w.data(), 0o644))
		w.files[p] = true
	case op < 50: // atomic save over an existing file
		tmp := w.abs(f) + ".tmp"
		w.check(os.WriteFile(tmp, w.data(), 0o600))
		w.check(os.Rename(tmp, w.abs(f)))
	case op < 60: // rename a file, maybe to another directory
		p := w.newName()
		w.check(os.Rename(w.abs(f), w.abs(p)))
		delete(w.files, f)
		w.files[p] = true
	case op < 75: // delete
		w.check(os.Remove(w.abs(f)))
		delete(w.files, f)
	case op < 85: // a new nested directory with a file
		w.n++
		d := fmt.Sprintf("%s/n%d/a/b", w.dirs[w.rng.IntN(len(w.dirs))], w.n)
		w.mkdir(d)
		p := d + "/f"
		w.check(os.WriteFile(w.abs(p), w.data(), 0o644))
		w.files[p] = true
	case op < 95: // rename a directory
		i := w.rng.IntN(len(w.dirs))
		d := w.dirs[i]
		if strings.Count(d, "/") > 0 {
			// nested: rename its top-level directory instead
			d = d[:strings.IndexByte(d, '/')]
		}
		w.n++
		nd := fmt.Sprintf("r%d", w.n)
		w.check(os.Rename(w.abs(d), w.abs(nd)))
		w.renamePrefix(d, nd)
	default: // delete a directory tree (not the last top-level one)
		i := w.rng.IntN(len(w.dirs))
		d := w.dirs[i]
		if !strings.Contains(d, "/") {
			return
		}
		w.check(os.RemoveAll(w.abs(d)))
		w.renamePrefix(d, "")
	}
}

// renamePrefix moves (or, to "", forgets) every known path under from.
func (w *churn) renamePrefix(from, to string) {
	under := func(p string) (string, bool) {
		if p == from {
			return "", true
		}
		if strings.HasPrefix(p, from+"/") {
			return p[len(from):], true
		}
		return "", false
	}
	nf := make(map[string]bool, len(w.files))
	for p := range w.files {
		if rest, ok := under(p); ok {
			if to != "" {
				nf[to+rest] = true
			}
			continue
		}
		nf[p] = true
	}
	w.files = nf
	var nd []string
	for _, d := range w.dirs {
		if rest, ok := under(d); ok {
			if to != "" {
				nd = append(nd, to+rest)
			}
			continue
		}
		nd = append(nd, d)
	}
	w.dirs = nd
}

// TestAgentKill9DuringHeavyWrites: the agent process is killed with
// SIGKILL at seeded random moments while a writer creates, overwrites,
// renames and deletes files and directories, each time after it committed
// at least once, and started again. In the end (writer stopped, flush) the
// head equals the disk; no restart invented a conflict copy (one sandbox
// only); and every version committed during the test restores, which
// verifies every chunk: no version references a chunk the bucket lacks.
func TestAgentKill9DuringHeavyWrites(t *testing.T) {
	bin := buildAgent(t)
	seed := uint64(20261127)
	if v := os.Getenv("SANDKEEP_CRASH_SEED"); v != "" { // to explore other interleavings
		n, err := strconv.ParseUint(v, 10, 64)
		mustDo(t, err)
		seed = n
	}
	t.Logf("seed %d (SANDKEEP_CRASH_SEED)", seed)
	rng := rand.New(rand.NewPCG(seed, 1))
	c := coordtest.Start(t, coordtest.Options{})
	pid, token := c.Project(t, "kill9")
	ws := newWorkspace(t)
	branchTree(t, filepath.Join(ws, "seed"), 200, 0)
	cache := t.TempDir()
	sock := filepath.Join(t.TempDir(), "agent.sock")
	w := startChurn(t, ws, seed)
	stopped := false
	defer func() {
		if !stopped {
			w.halt()
		}
	}()
	const kills = 5
	for i := 0; i < kills; i++ {
		before := headNumber(t, c, pid)
		p := startAgentProcess(t, bin, c.Addr, token, ws, sock, cache, "--log-level", "info")
		deadline := time.Now().Add(90 * time.Second)
		for headNumber(t, c, pid) <= before {
			if time.Now().After(deadline) {
				t.Fatalf("run %d: no commit within 90s", i)
			}
			select {
			case <-p.done:
				t.Fatalf("run %d: agent exited: %v\n%s", i, p.err, p.stderr.String())
			default:
			}
			time.Sleep(20 * time.Millisecond) // bounded poll of the coordinator
		}
		// Kill at a seeded random moment after that commit, within the
		// next debounce round or two: maybe idle, mid scan, mid upload or
		// mid commit.
		time.Sleep(time.Duration(rng.IntN(4000)) * time.Millisecond)
		p.kill9(t)
		t.Logf("run %d: killed after version %d", i, headNumber(t, c, pid))
	}
	ops := w.halt()
	stopped = true
	p := startAgentProcess(t, bin, c.Addr, token, ws, sock, cache, "--log-level", "info")
	ctl := control.NewClient(sock)
	waitSocket(t, ctl, p)
	v, err := ctl.Flush(context.Background(), 120*time.Second)
	if err != nil {
		t.Fatalf("final flush: %v", err)
	}
	t.Logf("%d writer operations, %d kills, final version %d", ops, kills, v)
	restoreHeadAndCompare(t, c, token, ws)
	// One sandbox, no concurrent commits: a restart must never have
	// merged its own commits as if another sandbox made them.
	requireNoConflictCopies(t, ws)
	// SIGTERM: final flush, exit 0.
	mustDo(t, p.cmd.Process.Signal(syscall.SIGTERM))
	if err := p.waitExit(t, 90*time.Second); err != nil {
		t.Errorf("agent exited with %v after SIGTERM", err)
	}
	n := restoreEveryVersion(t, c, pid, token, nil)
	t.Logf("restored all %d versions", n)
	if n < kills+1 {
		t.Errorf("only %d versions", n)
	}
}

// TestAgentSIGTERMWhileCoordinatorUnreachable: the agent process given
// SIGTERM while the coordinator cannot be reached tries its final flush
// for --stop-timeout, then exits non-zero naming what was not saved.
func TestAgentSIGTERMWhileCoordinatorUnreachable(t *testing.T) {
	bin := buildAgent(t)
	c := coordtest.Start(t, coordtest.Options{})
	_, token := c.Project(t, "sigterm")
	ws := newWorkspace(t)
	writeWS(t, ws, "a.txt", "a")
	px := startProxy(t, c.Addr)
	sock := filepath.Join(t.TempDir(), "agent.sock")
	cache := t.TempDir()
	p := startAgentProcess(t, bin, px.Addr, token, ws, sock, cache, "--stop-timeout", "3s")
	ctl := control.NewClient(sock)
	waitSocket(t, ctl, p)
	if _, err := ctl.Flush(context.Background(), 60*time.Second); err != nil {
		t.Fatal(err)
	}
	px.down()
	writeWS(t, ws, "unsaved.txt", "not saved")
	start := time.Now()
	mustDo(t, p.cmd.Process.Signal(syscall.SIGTERM))
	err := p.waitExit(t, 60*time.Second)
	took := time.Since(start)
	out := p.stderr.String()
	if err == nil {
		t.Fatalf("agent exited 0 after SIGTERM with the coordinator unreachable:\n%s", out)
	}
	if !strings.Contains(out, "unsaved.txt") || !strings.Contains(out, "not saved") {
		t.Errorf("exit message does not name what was not saved:\n%s", out)
	}
	if took > 15*time.Second {
		t.Errorf("exit took %v with --stop-timeout 3s", took)
	}
	t.Logf("exited after %v with %v: %s", took, err, lastLine(out))

	// The next run saves it.
	px.up()
	p = startAgentProcess(t, bin, px.Addr, token, ws, sock, cache)
	waitSocket(t, ctl, p)
	if _, err := ctl.Flush(context.Background(), 60*time.Second); err != nil {
		t.Fatal(err)
	}
	restoreHeadAndCompare(t, c, token, ws)
}
