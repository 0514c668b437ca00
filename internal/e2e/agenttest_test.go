package e2e

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/sandkeep/sandkeep/internal/agent"
	"github.com/sandkeep/sandkeep/internal/control"
	"github.com/sandkeep/sandkeep/internal/coordtest"
	"github.com/sandkeep/sandkeep/internal/workspacetest"
	pb "github.com/sandkeep/sandkeep/proto/sandkeep/v1"
)

// runningAgent is `sandkeep-agent run` in-process.
type runningAgent struct {
	t      *testing.T
	stop   chan struct{}
	cancel context.CancelFunc
	done   chan error
	ctl    *control.Client
	cfg    agent.Config
}

func startAgent(t *testing.T, c *coordtest.Coordinator, token, ws string, opts agent.RunOptions, cacheDir string) *runningAgent {
	t.Helper()
	cfg := agentConfig(c, token, ws, t)
	if cacheDir != "" {
		cfg.CacheDir = cacheDir
	}
	return startAgentConfig(t, cfg, opts)
}

// startAgentConfig runs the agent with cfg as given (e.g. a coordinator
// address behind a proxy) and waits until its control socket answers.
func startAgentConfig(t *testing.T, cfg agent.Config, opts agent.RunOptions) *runningAgent {
	t.Helper()
	if cfg.CacheDir == "" {
		cfg.CacheDir = filepath.Join(t.TempDir(), "cache")
	}
	if opts.Socket == "" {
		opts.Socket = filepath.Join(t.TempDir(), "agent.sock")
	}
	if opts.RetryMax == 0 {
		opts.RetryMax = time.Second
	}
	ctx, cancel := context.WithCancel(context.Background())
	a := &runningAgent{t: t, stop: make(chan struct{}), cancel: cancel, done: make(chan error, 1), ctl: control.NewClient(opts.Socket), cfg: cfg}
	go func() { a.done <- agent.Run(ctx, a.stop, cfg, opts) }()
	t.Cleanup(func() {
		cancel()
		select {
		case <-a.done:
		case <-time.After(30 * time.Second):
			t.Errorf("agent did not exit")
		}
	})
	// Wait until it answers on its socket and has reached the coordinator
	// (bounded; the socket answers before that, saying "connecting").
	deadline := time.Now().Add(60 * time.Second)
	for {
		if st, err := a.ctl.Status(context.Background()); err == nil && st.State != "connecting" {
			break
		}
		select {
		case err := <-a.done:
			t.Fatalf("agent exited: %v", err)
		default:
		}
		if time.Now().After(deadline) {
			t.Fatal("agent did not start")
		}
		time.Sleep(20 * time.Millisecond) // readiness poll of the agent's socket, not synchronisation of test logic
	}
	return a
}

// flush is `sandkeep-agent flush`.
func (a *runningAgent) flush() int64 {
	a.t.Helper()
	v, err := a.ctl.Flush(context.Background(), 60*time.Second)
	if err != nil {
		a.t.Fatalf("flush: %v", err)
	}
	return v
}

// stopGracefully is SIGTERM: flush then exit.
func (a *runningAgent) stopGracefully() error {
	close(a.stop)
	return a.wait(90 * time.Second)
}

// abort is a second SIGTERM (or the process dying): exit at once, no flush.
func (a *runningAgent) abort() error {
	a.cancel()
	return a.wait(30 * time.Second)
}

func (a *runningAgent) wait(d time.Duration) error {
	select {
	case err := <-a.done:
		a.done <- err
		return err
	case <-time.After(d):
		a.t.Fatal("agent did not stop")
		return nil
	}
}

// writeWS writes data at rel under ws, making parent directories.
func writeWS(t testing.TB, ws, rel, data string) {
	t.Helper()
	p := filepath.Join(ws, filepath.FromSlash(rel))
	if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(p, []byte(data), 0o644); err != nil {
		t.Fatal(err)
	}
}

func mustDo(t testing.TB, err error) {
	t.Helper()
	if err != nil {
		t.Fatal(err)
	}
}

// allVersions returns every version of the project, newest first (admin
// API).
func allVersions(t testing.TB, c *coordtest.Coordinator, projectID string) []*pb.Version {
	t.Helper()
	var out []*pb.Version
	tok := ""
	for range 1000 {
		resp, err := c.Admin.ListVersions(context.Background(), &pb.ListVersionsRequest{ProjectId: projectID, PageSize: 1000, PageToken: tok})
		if err != nil {
			t.Fatalf("list versions: %v", err)
		}
		out = append(out, resp.GetVersions()...)
		if tok = resp.GetNextPageToken(); tok == "" {
			return out
		}
	}
	t.Fatal("list versions: too many pages")
	return nil
}

// headNumber is the project's head version (0: none).
func headNumber(t testing.TB, c *coordtest.Coordinator, projectID string) int64 {
	t.Helper()
	return headVersion(t, c, projectID).GetNumber()
}

// headVersion is the project's newest version (nil: none).
func headVersion(t testing.TB, c *coordtest.Coordinator, projectID string) *pb.Version {
	t.Helper()
	resp, err := c.Admin.ListVersions(context.Background(), &pb.ListVersionsRequest{ProjectId: projectID, PageSize: 1})
	if err != nil {
		t.Fatalf("list versions: %v", err)
	}
	if len(resp.GetVersions()) == 0 {
		return nil
	}
	return resp.GetVersions()[0]
}

// restoreVersion restores version (0 = head) into a fresh directory; the
// restore verifies every chunk's hash, so a version that references a
// chunk missing from the bucket (or a corrupt one) fails it.
func restoreVersion(t testing.TB, c *coordtest.Coordinator, token string, version int64) string {
	t.Helper()
	dir := filepath.Join(t.TempDir(), fmt.Sprintf("v%d", version))
	t.Cleanup(func() { workspacetest.MakeWritable(dir) })
	cfg := agent.Config{Workspace: dir, CacheDir: filepath.Join(t.TempDir(), "cache"), KeepSetuid: true}
	cfg.Remote.Addr, cfg.Remote.Token, cfg.Remote.Version = c.Addr, token, "test"
	res, err := agent.Restore(context.Background(), cfg, version)
	if err != nil {
		t.Fatalf("restore version %d: %v", version, err)
	}
	if version != 0 && res.Version.GetNumber() != version {
		t.Fatalf("restore version %d restored %d", version, res.Version.GetNumber())
	}
	if err := os.MkdirAll(dir, 0o755); err != nil { // an empty version makes no directory
		t.Fatal(err)
	}
	return dir
}

// waitHeadEquals waits, without a flush, until the agent has committed on
// its own a head equal to ws (the watcher saw everything and the debounce
// fired), restoring each new head into a fresh directory to compare. It
// fails after timeout with the last differences. skip names paths (and
// their subtrees) left out of the comparison on both sides.
func waitHeadEquals(t testing.TB, c *coordtest.Coordinator, projectID, token, ws string, timeout time.Duration, skip ...string) int64 {
	t.Helper()
	want := workspacetest.Snapshot(t, ws, skip...)
	var files, bytes int64
	for _, e := range want {
		if e.Type.IsRegular() {
			files++
			bytes += e.Size
		}
	}
	deadline := time.Now().Add(timeout)
	var checked int64 = -1
	var last []string
	for {
		v := headVersion(t, c, projectID)
		if h := v.GetNumber(); h != checked && h > 0 {
			checked = h
			if v.GetFiles() != files || v.GetBytes() != bytes {
				// Not there yet: spare the restore.
				last = []string{fmt.Sprintf("version %d has %d files, %d bytes; the workspace %d files, %d bytes", h, v.GetFiles(), v.GetBytes(), files, bytes)}
				continue
			}
			dir := restoreVersion(t, c, token, h)
			d := workspacetest.Diff(want, workspacetest.Snapshot(t, dir, skip...))
			removeTree(t, dir)
			if len(d) == 0 {
				return h
			}
			last = d
		}
		if time.Now().After(deadline) {
			t.Fatalf("head (version %d) did not become equal to the workspace within %v without a flush:\n  %s", checked, timeout, strings.Join(head(last), "\n  "))
		}
		time.Sleep(50 * time.Millisecond) // bounded readiness poll of the coordinator's head
	}
}

// restoreEveryVersion restores every version of the project into a fresh
// directory (each restore verifies every chunk's hash) and passes it to
// check, if not nil.
func restoreEveryVersion(t testing.TB, c *coordtest.Coordinator, projectID, token string, check func(v *pb.Version, dir string)) int {
	t.Helper()
	vs := allVersions(t, c, projectID)
	for _, v := range vs {
		dir := restoreVersion(t, c, token, v.GetNumber())
		if check != nil {
			check(v, dir)
		}
		removeTree(t, dir)
	}
	return len(vs)
}

// removeTree removes a restored copy at once: a test that restores many
// versions would otherwise leave them all to the end of the test.
func removeTree(t testing.TB, dir string) {
	t.Helper()
	workspacetest.MakeWritable(dir)
	if err := os.RemoveAll(dir); err != nil {
		t.Fatal(err)
	}
}
