package e2e

import (
	"bufio"
	"bytes"
	"debug/elf"
	"encoding/json"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"runtime"
	"strings"
	"testing"
	"time"

	"github.com/sandkeep/sandkeep/internal/workspacetest"
)

// buildBinaries builds bin/sandkeep and the static bin/sandkeep-agent the
// way `make build` does.
func buildBinaries(t *testing.T) (coord, agent string) {
	t.Helper()
	if testing.Short() {
		t.Skip("builds binaries; skipped with -short")
	}
	dir := t.TempDir()
	root := moduleRoot(t)
	coord = filepath.Join(dir, "sandkeep")
	agent = filepath.Join(dir, "sandkeep-agent")
	for _, b := range []struct {
		out, pkg string
		cgo      string
	}{{coord, "./coordinator", ""}, {agent, "./agent", "CGO_ENABLED=0"}} {
		cmd := exec.Command("go", "build", "-trimpath", "-ldflags", "-s -w", "-o", b.out, b.pkg)
		cmd.Dir = root
		cmd.Env = os.Environ()
		if b.cgo != "" {
			cmd.Env = append(cmd.Env, b.cgo)
		}
		if out, err := cmd.CombinedOutput(); err != nil {
			t.Fatalf("build %s: %v\n%s", b.pkg, err, out)
		}
	}
	return coord, agent
}

func moduleRoot(t *testing.T) string {
	_, file, _, _ := runtime.Caller(0)
	return filepath.Join(filepath.Dir(file), "..", "..")
}

// servedCoordinator is `sandkeep serve` run from the built binary on a fresh
// data directory.
type servedCoordinator struct {
	bin, data, grpc, http string
	adminToken            string // as printed on first start
	pid                   int
}

// serveBinary runs `coord serve` on loopback ports until the test ends (then
// SIGINT, which it must obey) and waits for it to report its addresses.
func serveBinary(t *testing.T, coord string, extra ...string) servedCoordinator {
	t.Helper()
	data := t.TempDir()
	serve := exec.Command(coord, append([]string{"serve", "--data", data, "--listen", "127.0.0.1:0", "--http-listen", "127.0.0.1:0"}, extra...)...)
	stdout, err := serve.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	var serveErr bytes.Buffer
	serve.Stderr = &serveErr
	if err := serve.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		_ = serve.Process.Signal(os.Interrupt)
		done := make(chan error, 1)
		go func() { done <- serve.Wait() }()
		select {
		case <-done:
		case <-time.After(15 * time.Second):
			_ = serve.Process.Kill()
			<-done
			t.Errorf("serve did not stop on SIGINT")
		}
		if t.Failed() {
			t.Logf("serve stderr:\n%s", serveErr.String())
		}
	})
	// serve prints the admin token (first start) and then its addresses.
	lines := make(chan string, 16)
	go func() {
		sc := bufio.NewScanner(stdout)
		for sc.Scan() {
			lines <- sc.Text()
		}
		close(lines)
	}()
	s := servedCoordinator{bin: coord, data: data, pid: serve.Process.Pid}
	listening := regexp.MustCompile(`grpc (127\.0\.0\.1:\d+), http (127\.0\.0\.1:\d+)`)
	timeout := time.After(60 * time.Second)
	for {
		select {
		case l, ok := <-lines:
			if !ok {
				t.Fatalf("serve exited early:\n%s", serveErr.String())
			}
			if tok, ok := strings.CutPrefix(l, "admin token: "); ok {
				s.adminToken = tok
			}
			if m := listening.FindStringSubmatch(l); m != nil {
				go func() { // keep draining
					for range lines {
					}
				}()
				s.grpc, s.http = m[1], m[2]
				return s
			}
		case <-timeout:
			t.Fatalf("serve did not report its addresses:\n%s", serveErr.String())
		}
	}
}

func TestCLIContract(t *testing.T) {
	coord, agentBin := buildBinaries(t)

	// The agent is static (no ELF interpreter) and at most 20 MB.
	fi, err := os.Stat(agentBin)
	if err != nil {
		t.Fatal(err)
	}
	if fi.Size() > 20<<20 {
		t.Errorf("sandkeep-agent is %d bytes, want <= 20 MB", fi.Size())
	}
	ef, err := elf.Open(agentBin)
	if err != nil {
		t.Fatal(err)
	}
	for _, p := range ef.Progs {
		if p.Type == elf.PT_INTERP {
			t.Errorf("sandkeep-agent is dynamically linked")
		}
	}
	ef.Close()

	// serve prints the admin token on first start and keeps it in the data dir.
	s := serveBinary(t, coord)
	addr, data, adminToken := s.grpc, s.data, s.adminToken
	if !strings.HasPrefix(adminToken, "ska_") {
		t.Fatalf("serve printed no admin token on first start (got %q)", adminToken)
	}
	saved, err := os.ReadFile(filepath.Join(data, "admin.token"))
	if err != nil || strings.TrimSpace(string(saved)) != adminToken {
		t.Fatalf("admin token not kept in the data dir: %v", err)
	}

	run := func(env []string, name string, args ...string) string {
		t.Helper()
		cmd := exec.Command(name, args...)
		cmd.Env = append(os.Environ(), env...)
		var out, errb bytes.Buffer
		cmd.Stdout, cmd.Stderr = &out, &errb
		if err := cmd.Run(); err != nil {
			t.Fatalf("%s %v: %v\nstdout: %s\nstderr: %s", filepath.Base(name), args, err, out.String(), errb.String())
		}
		return out.String()
	}
	admin := []string{"SANDKEEP_COORDINATOR=" + addr, "SANDKEEP_DATA=" + data}
	// project create: the id alone on stdout (admin token read from --data).
	projOut := run(nil, coord, "project", "create", "demo", "--coordinator", addr, "--data", data)
	projectID := strings.TrimSpace(projOut)
	if !regexp.MustCompile(`^prj_[a-z0-9]+$`).MatchString(projectID) || strings.Count(projOut, "\n") != 1 {
		t.Fatalf("project create printed %q, want the id alone", projOut)
	}
	// token create via environment variables, admin token via SANDKEEP_ADMIN_TOKEN.
	tokOut := run([]string{"SANDKEEP_COORDINATOR=" + addr, "SANDKEEP_ADMIN_TOKEN=" + adminToken}, coord, "token", "create", "--project", projectID)
	token := strings.TrimSpace(tokOut)
	if !strings.HasPrefix(token, "skt_") || strings.Count(tokOut, "\n") != 1 {
		t.Fatalf("token create printed %q, want the token alone", tokOut)
	}

	ws := filepath.Join(t.TempDir(), "ws")
	workspacetest.Generate(t, ws, workspacetest.Options{SmallFiles: 200, LargeSize: 5 << 20, Seed: 9})
	t.Cleanup(func() { workspacetest.MakeWritable(ws) })
	agentEnv := []string{"SANDKEEP_COORDINATOR=" + addr, "SANDKEEP_TOKEN=" + token, "SANDKEEP_CACHE_DIR=" + t.TempDir()}
	out := run(agentEnv, agentBin, "sync", "--once", "--workspace", ws)
	if last := lastLine(out); last != "1" {
		t.Fatalf("sync printed %q last, want the version number 1", last)
	}
	out = run(agentEnv, agentBin, "sync", "--once", "--workspace", ws)
	if last := lastLine(out); last != "1" {
		t.Fatalf("unchanged sync printed %q last, want 1 (no new version)", last)
	}
	if err := os.WriteFile(filepath.Join(ws, "README.md"), []byte("v2\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	out = run(agentEnv, agentBin, "sync", "--once", "--workspace", ws)
	if last := lastLine(out); last != "2" {
		t.Fatalf("sync after a change printed %q last, want 2", last)
	}

	var versions []struct {
		Number int64     `json:"number"`
		Time   time.Time `json:"time"`
		Files  int64     `json:"files"`
		Bytes  int64     `json:"bytes"`
	}
	jsonOut := run(admin, coord, "versions", "--project", projectID, "--json")
	if err := json.Unmarshal([]byte(jsonOut), &versions); err != nil {
		t.Fatalf("versions --json: %v\n%s", err, jsonOut)
	}
	if len(versions) != 2 || versions[0].Number != 2 || versions[1].Number != 1 || versions[0].Files < 200 || versions[0].Bytes < 5<<20 || versions[0].Time.IsZero() {
		t.Fatalf("versions --json = %+v", versions)
	}
	table := run(admin, coord, "versions", "--project", projectID)
	if !strings.Contains(table, "NUMBER") || !strings.Contains(table, "FILES") {
		t.Fatalf("versions table:\n%s", table)
	}

	restored := filepath.Join(t.TempDir(), "restored")
	t.Cleanup(func() { workspacetest.MakeWritable(restored) })
	run(agentEnv, agentBin, "restore", "--workspace", restored, "--keep-setuid")
	workspacetest.RequireEqual(t, ws, restored)
	// By default setuid/setgid bits are dropped, and nothing else changes.
	plain := filepath.Join(t.TempDir(), "plain")
	t.Cleanup(func() { workspacetest.MakeWritable(plain) })
	run(agentEnv, agentBin, "restore", "--workspace", plain)
	noSetuid := filepath.Join(t.TempDir(), "nosetuid")
	t.Cleanup(func() { workspacetest.MakeWritable(noSetuid) })
	run(agentEnv, agentBin, "restore", "--workspace", noSetuid, "--keep-setuid")
	workspacetest.ClearSetuid(t, noSetuid)
	workspacetest.RequireEqual(t, noSetuid, plain)

	// --version N restores an older version: README.md as it was.
	old := filepath.Join(t.TempDir(), "old")
	t.Cleanup(func() { workspacetest.MakeWritable(old) })
	run(agentEnv, agentBin, "restore", "--workspace", old, "--version", "1")
	if b, err := os.ReadFile(filepath.Join(old, "README.md")); err != nil || string(b) != "# hello\n" {
		t.Fatalf("version 1 README.md = %q, %v", b, err)
	}

	// A wrong token is refused with a clear error and a non-zero exit.
	cmd := exec.Command(agentBin, "sync", "--once", "--workspace", ws)
	cmd.Env = append(os.Environ(), "SANDKEEP_COORDINATOR="+addr, "SANDKEEP_TOKEN=skt_wrong", "SANDKEEP_CACHE_DIR="+t.TempDir())
	b, err := cmd.CombinedOutput()
	if err == nil || !strings.Contains(string(b), "Unauthenticated") {
		t.Fatalf("sync with a wrong token: err=%v output=%s", err, b)
	}
}

func lastLine(s string) string {
	lines := strings.Split(strings.TrimRight(s, "\n"), "\n")
	return strings.TrimSpace(lines[len(lines)-1])
}
