package e2e

import (
	"bytes"
	"context"
	"errors"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/sandkeep/sandkeep/internal/agent"
	"github.com/sandkeep/sandkeep/internal/control"
	"github.com/sandkeep/sandkeep/internal/coordtest"
	"github.com/sandkeep/sandkeep/internal/workspacetest"
)

// freeAddr returns a loopback address nothing listens on.
func freeAddr(t *testing.T) string {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := l.Addr().String()
	l.Close()
	return addr
}

// Item 12: with the coordinator down, the one-shot commands say at once what
// they wait for and give up after --connect-timeout; `run` answers on its
// socket at once, says the coordinator is unreachable, and ends on the first
// SIGTERM.
func TestAgentFailsClosedWithoutCoordinator(t *testing.T) {
	_, agentBin := buildBinaries(t)
	down := freeAddr(t)
	ws := filepath.Join(t.TempDir(), "ws")
	writeWS(t, ws, "a.txt", "unsaved")
	env := append(os.Environ(), "SANDKEEP_TOKEN=skt_"+strings.Repeat("a", 52), "SANDKEEP_CACHE_DIR="+t.TempDir())
	oneShot := func(args ...string) (string, error) {
		ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
		defer cancel()
		cmd := exec.CommandContext(ctx, agentBin, append([]string{"--coordinator", down, "--connect-timeout", "2s"}, args...)...)
		cmd.Env = env
		var stderr bytes.Buffer
		cmd.Stderr = &stderr
		err := cmd.Run()
		if ctx.Err() != nil {
			t.Fatalf("%v did not give up: %s", args, stderr.String())
		}
		return stderr.String(), err
	}
	for _, args := range [][]string{{"sync", "--once", "--workspace", ws}, {"restore", "--workspace", filepath.Join(t.TempDir(), "target")}} {
		stderr, err := oneShot(args...)
		var exit *exec.ExitError
		if !errors.As(err, &exit) || exit.ExitCode() == 0 {
			t.Fatalf("%v with the coordinator down: %v, want a non-zero exit", args, err)
		}
		for _, want := range []string{"waiting for the coordinator at " + down, "--connect-timeout", "sandkeep serve"} {
			if !strings.Contains(stderr, want) {
				t.Errorf("%v stderr does not say %q:\n%s", args, want, stderr)
			}
		}
	}
	if _, err := os.Lstat(filepath.Join(filepath.Dir(ws), "target")); !os.IsNotExist(err) {
		t.Errorf("restore left a target behind: %v", err)
	}

	sock := filepath.Join(t.TempDir(), "agent.sock")
	run := exec.Command(agentBin, "run", "--coordinator", down, "--workspace", ws, "--socket", sock, "--stop-timeout", "3s")
	run.Env = env
	var stderr bytes.Buffer
	run.Stderr = &stderr
	if err := run.Start(); err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() { done <- run.Wait() }()
	t.Cleanup(func() { _ = run.Process.Kill() })
	ctl := control.NewClient(sock)
	deadline := time.Now().Add(30 * time.Second)
	var st control.Status
	for {
		var err error
		if st, err = ctl.Status(context.Background()); err == nil {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("run did not answer on its socket with the coordinator down: %v\n%s", err, stderr.String())
		}
		time.Sleep(20 * time.Millisecond) // readiness poll of the agent's socket
	}
	if st.CoordinatorUp || st.Coordinator != down || (st.State != "connecting" && st.State != "error") {
		t.Fatalf("status with the coordinator down = %+v", st)
	}
	out, err := exec.Command(agentBin, "status", "--socket", sock).CombinedOutput()
	if err != nil || !strings.Contains(string(out), "coordinator unreachable") {
		t.Fatalf("status: %v\n%s", err, out)
	}
	start := time.Now()
	if err := run.Process.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	select {
	case err := <-done:
		var exit *exec.ExitError
		if !errors.As(err, &exit) || exit.ExitCode() == 0 || !strings.Contains(stderr.String(), "stopped before the coordinator answered") {
			t.Fatalf("run stopped before reaching the coordinator: %v, want a non-zero exit saying so\n%s", err, stderr.String())
		}
		if d := time.Since(start); d > 15*time.Second {
			t.Errorf("run took %v to stop on SIGTERM", d)
		}
	case <-time.After(30 * time.Second):
		t.Fatalf("run did not stop on SIGTERM with the coordinator down:\n%s", stderr.String())
	}
}

// Item 16: a revoked token is final: status says so, and a stop exits at
// once naming what was not saved instead of waiting out --stop-timeout.
func TestAgentTokenRefusedIsFinal(t *testing.T) {
	c := coordtest.Start(t, coordtest.Options{})
	pid, token := c.Project(t, "revoked")
	ws := filepath.Join(t.TempDir(), "ws")
	writeWS(t, ws, "a.txt", "saved\n")
	a := startAgent(t, c, token, ws, agent.RunOptions{StopTimeout: time.Minute}, "")
	a.flush()
	if _, err := c.Server.Meta.RevokeProjectTokens(context.Background(), pid); err != nil {
		t.Fatal(err)
	}
	writeWS(t, ws, "b.txt", "written after the revocation\n")
	deadline := time.Now().Add(30 * time.Second)
	for {
		st, err := a.ctl.Status(context.Background())
		if err != nil {
			t.Fatal(err)
		}
		if st.TokenRefused && st.State == "token_refused" {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("agent never reported its token refused: %+v", st)
		}
		time.Sleep(20 * time.Millisecond) // polling the agent's status, bounded
	}
	start := time.Now()
	err := a.stopGracefully()
	if !errors.Is(err, agent.ErrNotSaved) || !strings.Contains(err.Error(), "b.txt") || !strings.Contains(err.Error(), "token") {
		t.Fatalf("stop with a refused token: %v, want ErrNotSaved naming b.txt and the token", err)
	}
	if d := time.Since(start); d > 10*time.Second {
		t.Fatalf("stop with a refused token took %v; it must not wait out the stop timeout", d)
	}
}

// Item 13: the boot entrypoint never starts the image's command on a
// workspace that was not restored, unless SANDKEEP_ALLOW_UNRESTORED=1.
func TestEntrypointFailsClosed(t *testing.T) {
	_, agentBin := buildBinaries(t)
	prefix := filepath.Join(t.TempDir(), "bin")
	if out, err := exec.Command("sh", filepath.Join(moduleRoot(t), "install.sh"), "--prefix", prefix, "--boot", agentBin).CombinedOutput(); err != nil {
		t.Fatalf("install --boot: %v\n%s", err, out)
	}
	c := coordtest.Start(t, coordtest.Options{})
	_, token := c.Project(t, "boot")
	seed := filepath.Join(t.TempDir(), "seed")
	writeWS(t, seed, "kept.txt", "from the last run\n")
	if _, err := agent.SyncOnce(context.Background(), agentConfig(c, token, seed, t)); err != nil {
		t.Fatal(err)
	}
	boot := func(coordinator, tok string, extra ...string) (ws, mark, stderr string, code int) {
		ws = filepath.Join(t.TempDir(), "workspace")
		mark = filepath.Join(t.TempDir(), "command-ran")
		ctx, cancel := context.WithTimeout(context.Background(), 90*time.Second)
		defer cancel()
		cmd := exec.CommandContext(ctx, filepath.Join(prefix, "sandkeep-entrypoint"), "sh", "-c", `test -f "$SANDKEEP_WORKSPACE/kept.txt" && echo restored > "$MARK" || echo unrestored > "$MARK"`)
		cmd.Env = append(os.Environ(), "SANDKEEP_COORDINATOR="+coordinator, "SANDKEEP_TOKEN="+tok, "SANDKEEP_WORKSPACE="+ws,
			"SANDKEEP_SOCKET="+filepath.Join(t.TempDir(), "agent.sock"), "SANDKEEP_CACHE_DIR="+t.TempDir(), "MARK="+mark, "SANDKEEP_RESTORE_TIMEOUT=3",
			// With the coordinator down, the stopped agent keeps trying to
			// reach it for its final flush, by default for a minute.
			"SANDKEEP_STOP_TIMEOUT=2s")
		cmd.Env = append(cmd.Env, extra...)
		var eb bytes.Buffer
		cmd.Stderr = &eb
		err := cmd.Run()
		if ctx.Err() != nil {
			t.Fatalf("entrypoint did not finish:\n%s", eb.String())
		}
		var exit *exec.ExitError
		if errors.As(err, &exit) {
			code = exit.ExitCode()
		} else if err != nil {
			t.Fatal(err)
		}
		return ws, mark, eb.String(), code
	}
	ranWith := func(mark string) string {
		b, err := os.ReadFile(mark)
		if err != nil {
			return ""
		}
		return strings.TrimSpace(string(b))
	}

	// Restored: the command runs on the restored workspace.
	if _, mark, stderr, code := boot(c.Addr, token); code != 0 || ranWith(mark) != "restored" {
		t.Fatalf("boot with a good token: exit %d, command saw %q\n%s", code, ranWith(mark), stderr)
	}
	for _, tt := range []struct {
		name, coordinator, token, want string
	}{
		{"wrong token", c.Addr, "skt_" + strings.Repeat("b", 52), "not starting the command"},
		{"coordinator down", freeAddr(t), token, "not restored within 3s"},
	} {
		t.Run(tt.name, func(t *testing.T) {
			_, mark, stderr, code := boot(tt.coordinator, tt.token)
			if code == 0 || ranWith(mark) != "" || !strings.Contains(stderr, tt.want) || !strings.Contains(stderr, "SANDKEEP_ALLOW_UNRESTORED") {
				t.Fatalf("exit %d, command ran: %q; want a non-zero exit saying %q and the command not started\n%s", code, ranWith(mark), tt.want, stderr)
			}
			// Asked for explicitly, it starts anyway, and says so.
			_, mark, stderr, _ = boot(tt.coordinator, tt.token, "SANDKEEP_ALLOW_UNRESTORED=1")
			if ranWith(mark) != "unrestored" || !strings.Contains(stderr, "UNRESTORED") {
				t.Fatalf("with SANDKEEP_ALLOW_UNRESTORED=1 the command did not run, or silently: %q\n%s", ranWith(mark), stderr)
			}
		})
	}
}

// Item 15: files the agent cannot read make `sync --once` exit 4 naming
// them; the version holds what was saved, and the summary counts only that.
func TestSyncNamesUnreadableFiles(t *testing.T) {
	_, agentBin := buildBinaries(t)
	c := coordtest.Start(t, coordtest.Options{})
	_, token := c.Project(t, "unreadable")
	base := t.TempDir()
	ws := filepath.Join(base, "ws")
	writeWS(t, ws, "ok.txt", "readable\n")
	writeWS(t, ws, "secret/key.pem", "private\n")
	writeWS(t, ws, "locked.txt", "private\n")
	cache := filepath.Join(base, "cache")
	if err := os.MkdirAll(cache, 0o777); err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(agentBin, "sync", "--once", "--workspace", ws, "--coordinator", c.Addr, "--cache-dir", cache)
	cmd.Env = append(os.Environ(), "SANDKEEP_TOKEN="+token)
	if os.Geteuid() == 0 {
		// root reads everything: run the agent as nobody, with the two
		// private entries left to root alone.
		const nobody = 65534
		for _, d := range []string{filepath.Dir(base), base, ws, cache} {
			if err := os.Chmod(d, 0o777); err != nil {
				t.Fatal(err)
			}
		}
		cmd.SysProcAttr = &syscall.SysProcAttr{Credential: &syscall.Credential{Uid: nobody, Gid: nobody}}
	}
	if err := os.Chmod(filepath.Join(ws, "locked.txt"), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.Chmod(filepath.Join(ws, "secret"), 0o700); err != nil {
		t.Fatal(err)
	}
	if os.Geteuid() != 0 {
		_ = os.Chmod(filepath.Join(ws, "locked.txt"), 0)
		_ = os.Chmod(filepath.Join(ws, "secret"), 0)
		t.Cleanup(func() { _ = os.Chmod(filepath.Join(ws, "secret"), 0o700) })
	}
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	err := cmd.Run()
	var exit *exec.ExitError
	if !errors.As(err, &exit) || exit.ExitCode() != 4 {
		t.Fatalf("sync with unreadable paths: %v, want exit 4\n%s", err, stderr.String())
	}
	for _, want := range []string{"2 path(s) could not be read", "locked.txt", "secret"} {
		if !strings.Contains(stderr.String(), want) {
			t.Errorf("stderr does not say %q:\n%s", want, stderr.String())
		}
	}
	if !strings.Contains(stderr.String(), "committed version 1: 1 files") {
		t.Errorf("the summary counts what was not saved:\n%s", stderr.String())
	}
	dir := restoreVersion(t, c, token, 1)
	got := workspacetest.Snapshot(t, dir)
	if _, ok := got["ok.txt"]; !ok || len(got) != 1 {
		t.Fatalf("version 1 holds %v, want ok.txt alone", got)
	}
}
