package main

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"syscall"
	"time"
)

// proc is a long-running child (versitygw, the coordinator) in its own
// process group, so stopping it also stops anything it started.
type proc struct {
	name string
	cmd  *exec.Cmd
	done chan struct{}
}

func startProc(name string, cmd *exec.Cmd) (*proc, error) {
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	if err := cmd.Start(); err != nil {
		return nil, fmt.Errorf("start %s: %w", name, err)
	}
	p := &proc{name: name, cmd: cmd, done: make(chan struct{})}
	go func() { _ = cmd.Wait(); close(p.done) }()
	return p, nil
}

func (p *proc) exited() bool {
	select {
	case <-p.done:
		return true
	default:
		return false
	}
}

// stop sends sig to the process group, waits up to grace, then kills the
// group. It never returns with the process still running.
func (p *proc) stop(sig syscall.Signal, grace time.Duration) {
	pgid := p.cmd.Process.Pid
	if !p.exited() {
		_ = syscall.Kill(-pgid, sig)
		select {
		case <-p.done:
		case <-time.After(grace):
			logf("%s did not stop within %v after %v; killing it", p.name, grace, sig)
		}
	}
	// Kill whatever is left in the group (a no-op when it is empty).
	_ = syscall.Kill(-pgid, syscall.SIGKILL)
	<-p.done
}

func freePort() (int, error) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return 0, err
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port, nil
}

// startVersitygw runs versitygw's posix backend on dataDir and waits until it
// answers HTTP.
func startVersitygw(ctx context.Context, bin, dataDir, logPath string) (*proc, string, error) {
	port, err := freePort()
	if err != nil {
		return nil, "", err
	}
	logFile, err := os.Create(logPath)
	if err != nil {
		return nil, "", err
	}
	defer logFile.Close() // the child keeps its own descriptor
	addr := fmt.Sprintf("127.0.0.1:%d", port)
	cmd := exec.Command(bin, "--port", addr, "posix", dataDir)
	cmd.Env = append(os.Environ(), "ROOT_ACCESS_KEY="+s3Key, "ROOT_SECRET_KEY="+s3Secret)
	cmd.Stdout, cmd.Stderr = logFile, logFile
	p, err := startProc("versitygw", cmd)
	if err != nil {
		return nil, "", err
	}
	endpoint := "http://" + addr
	client := &http.Client{Timeout: time.Second}
	deadline := time.Now().Add(30 * time.Second)
	for {
		resp, err := client.Get(endpoint + "/")
		if err == nil {
			resp.Body.Close()
			return p, endpoint, nil // any answer (403 without credentials) means it is up
		}
		if p.exited() || time.Now().After(deadline) || ctx.Err() != nil {
			p.stop(syscall.SIGTERM, time.Second)
			return nil, "", fmt.Errorf("versitygw did not come up on %s (log: %s): %v", addr, logPath, err)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

var listeningRE = regexp.MustCompile(`listening: grpc (\S+), http (\S+), blobs (.*)$`)

// coordinator is a running `sandkeep serve`.
type coordinator struct {
	*proc
	addr, blobs string
}

// startCoordinator runs `sandkeep serve` on S3 bucket `bucket` (and the
// extra flags, which win over the defaults) and waits for its "listening"
// line. stdout and stderr go to logPath.
func startCoordinator(ctx context.Context, bin, dataDir, endpoint, bucket, logPath string, extra ...string) (*coordinator, error) {
	logFile, err := os.OpenFile(logPath, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644) // a restarted replica appends
	if err != nil {
		return nil, err
	}
	cmd := exec.Command(bin, "serve", "--data", dataDir,
		"--listen", "127.0.0.1:0", "--http-listen", "127.0.0.1:0",
		"--s3-bucket", bucket, "--s3-endpoint", endpoint, "--s3-path-style", "--s3-region", "us-east-1")
	cmd.Args = append(cmd.Args, extra...)
	cmd.Env = append(os.Environ(), "AWS_ACCESS_KEY_ID="+s3Key, "AWS_SECRET_ACCESS_KEY="+s3Secret)
	cmd.Stderr = logFile
	found := make(chan []string, 1)
	cmd.Stdout = &lineWriter{fn: func(line string) {
		if strings.HasPrefix(line, "admin token: ") {
			line = "admin token: (hidden)"
		}
		fmt.Fprintln(logFile, line)
		if m := listeningRE.FindStringSubmatch(line); m != nil {
			select {
			case found <- m:
			default:
			}
		}
	}}
	p, err := startProc("coordinator", cmd)
	if err != nil {
		logFile.Close()
		return nil, err
	}
	go func() { <-p.done; logFile.Close() }() // done: after stdout is copied
	select {
	case m := <-found:
		return &coordinator{proc: p, addr: m[1], blobs: m[3]}, nil
	case <-p.done:
		return nil, fmt.Errorf("coordinator exited before listening; log %s:\n%s", logPath, tail(logPath, 20))
	case <-time.After(60 * time.Second):
	case <-ctx.Done():
	}
	p.stop(syscall.SIGINT, 10*time.Second)
	return nil, fmt.Errorf("coordinator did not report its address (log %s):\n%s", logPath, tail(logPath, 20))
}

// lineWriter calls fn with each complete line written to it.
type lineWriter struct {
	buf []byte
	fn  func(string)
}

func (w *lineWriter) Write(p []byte) (int, error) {
	w.buf = append(w.buf, p...)
	for {
		i := bytes.IndexByte(w.buf, '\n')
		if i < 0 {
			return len(p), nil
		}
		w.fn(string(w.buf[:i]))
		w.buf = w.buf[i+1:]
	}
}

// sample is one timed run of a command.
type sample struct {
	Seconds    float64 `json:"seconds"`
	CPUSeconds float64 `json:"cpu_seconds"` // user + system
	MaxRSSMiB  float64 `json:"max_rss_mib"`
	Log        string  `json:"log"`
}

// runner runs the commands of one benchmark; every command's stdout and
// stderr go to a log file of its own under dir.
type runner struct {
	ctx context.Context
	dir string
}

// run runs a command to completion and times it. It returns its stdout. A
// failure returns an error that names the log and quotes its tail.
func (r *runner) run(logName, dir string, env []string, name string, args ...string) (string, sample, error) {
	logPath := filepath.Join(r.dir, logName+".log")
	logFile, err := os.Create(logPath)
	if err != nil {
		return "", sample{}, err
	}
	defer logFile.Close()
	fmt.Fprintf(logFile, "$ %s %s\n", filepath.Base(name), strings.Join(args, " "))
	var out bytes.Buffer
	cmd := exec.CommandContext(r.ctx, name, args...)
	cmd.Dir = dir
	cmd.Env = append(os.Environ(), env...)
	cmd.Stdout = io.MultiWriter(&out, logFile)
	cmd.Stderr = logFile
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	cmd.Cancel = func() error { return syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL) }
	start := time.Now()
	var hwm chan int64
	if err = cmd.Start(); err == nil {
		hwm = make(chan int64, 1)
		stop := make(chan struct{})
		go func() { hwm <- watchHWM(cmd.Process.Pid, stop) }()
		err = cmd.Wait()
		close(stop)
	}
	s := sample{Seconds: time.Since(start).Seconds(), Log: logPath}
	if hwm != nil {
		s.MaxRSSMiB = float64(<-hwm) / 1024
	}
	if st := cmd.ProcessState; st != nil {
		if ru, ok := st.SysUsage().(*syscall.Rusage); ok {
			s.CPUSeconds = tvSeconds(ru.Utime) + tvSeconds(ru.Stime)
		}
	}
	fmt.Fprintf(logFile, "# wall %.3f s, cpu %.3f s, max rss %.1f MiB, err %v\n", s.Seconds, s.CPUSeconds, s.MaxRSSMiB, err)
	if err != nil {
		if r.ctx.Err() != nil {
			return "", s, r.ctx.Err()
		}
		logFile.Sync()
		return "", s, fmt.Errorf("%s %s: %w (log %s):\n%s", filepath.Base(name), strings.Join(args, " "), err, logPath, tail(logPath, 20))
	}
	return out.String(), s, nil
}

// watchHWM samples the peak RSS (VmHWM, KiB) of a running process every
// 20 ms until stop is closed or the process is gone, and returns the largest.
// (rusage's ru_maxrss cannot be used: Go starts children with CLONE_VM, so
// Linux charges them skbench's own peak RSS as of the exec.)
func watchHWM(pid int, stop <-chan struct{}) int64 {
	var peak int64
	path := fmt.Sprintf("/proc/%d/status", pid)
	for {
		if b, err := os.ReadFile(path); err == nil {
			for line := range strings.Lines(string(b)) {
				if rest, ok := strings.CutPrefix(line, "VmHWM:"); ok {
					var kib int64
					fmt.Sscan(rest, &kib)
					peak = max(peak, kib)
				}
			}
		}
		select {
		case <-stop:
			return peak
		case <-time.After(20 * time.Millisecond):
		}
	}
}

func tvSeconds(tv syscall.Timeval) float64 { return float64(tv.Sec) + float64(tv.Usec)/1e6 }

// tail returns the last n lines of a file, indented.
func tail(path string, n int) string {
	b, err := os.ReadFile(path)
	if err != nil {
		return "  (" + err.Error() + ")"
	}
	lines := strings.Split(strings.TrimRight(string(b), "\n"), "\n")
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return "  " + strings.Join(lines, "\n  ")
}

// problems returns the lines of a log that report warnings or errors
// (slog's text and JSON formats), at most max of them, and their count.
func problems(path string, max int) ([]string, int) {
	f, err := os.Open(path)
	if err != nil {
		return nil, 0
	}
	defer f.Close()
	var lines []string
	n := 0
	sc := bufio.NewScanner(f)
	sc.Buffer(make([]byte, 64<<10), 1<<20)
	for sc.Scan() {
		l := sc.Text()
		if strings.Contains(l, "level=WARN") || strings.Contains(l, "level=ERROR") ||
			strings.Contains(l, `"level":"WARN"`) || strings.Contains(l, `"level":"ERROR"`) || strings.Contains(l, "panic:") {
			n++
			if len(lines) < max {
				lines = append(lines, l)
			}
		}
	}
	return lines, n
}

// findTool returns the path of a tool: the flag value if set, else PATH,
// else $(go env GOPATH)/bin.
func findTool(flagValue, name string) (string, error) {
	if flagValue != "" {
		return flagValue, nil
	}
	if p, err := exec.LookPath(name); err == nil {
		return p, nil
	}
	out, err := exec.Command("go", "env", "GOPATH").Output()
	if err == nil {
		for _, dir := range filepath.SplitList(strings.TrimSpace(string(out))) {
			p := filepath.Join(dir, "bin", name)
			if _, err := os.Stat(p); err == nil {
				return p, nil
			}
		}
	}
	return "", errors.New(name + " not found on PATH or in $(go env GOPATH)/bin; `make bench` installs it")
}
