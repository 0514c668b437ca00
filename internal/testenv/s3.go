// Package testenv starts the external services tests need.
package testenv

import (
	"bytes"
	"context"
	"crypto/rand"
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/credentials"
	"github.com/aws/aws-sdk-go-v2/service/s3"
)

// S3Env is an S3-compatible server tests may use: create buckets (see
// NewBucketName) and objects freely, it is theirs alone.
type S3Env struct {
	Endpoint  string // e.g. "http://127.0.0.1:40123"; needs path-style addressing
	AccessKey string
	SecretKey string
	Region    string
}

// Environment variables S3 reads.
const (
	// EnvVersityGW names the versitygw binary to run.
	EnvVersityGW = "SANDKEEP_VERSITYGW"
	// EnvRequireS3, set to 1, makes a missing versitygw fail tests instead
	// of skipping them (as does CI being set).
	EnvRequireS3 = "SANDKEEP_REQUIRE_S3"
	// EnvS3Endpoint, when set, points tests at an existing S3-compatible
	// server instead of starting versitygw; EnvS3AccessKey, EnvS3SecretKey
	// and EnvS3Region (default us-east-1) go with it.
	EnvS3Endpoint  = "SANDKEEP_S3_ENDPOINT"
	EnvS3AccessKey = "SANDKEEP_S3_ACCESS_KEY"
	EnvS3SecretKey = "SANDKEEP_S3_SECRET_KEY"
	EnvS3Region    = "SANDKEEP_S3_REGION"
)

const (
	vgwAccessKey = "sandkeep-test"
	vgwSecretKey = "sandkeep-test-secret-key"
	vgwRegion    = "us-east-1"

	readyAttempts = 150                    // readiness polls of the new server...
	readyInterval = 100 * time.Millisecond // ...this far apart: 15 s at most
	startAttempts = 3                      // a free port can be taken before we use it
)

var (
	s3Once sync.Once
	s3Env  S3Env
	s3Err  error
	// s3Proc keeps the server's stdin pipe referenced for the life of the
	// test binary: the server is stopped when that pipe closes.
	//lint:ignore U1000 written only: it keeps the pipe reachable
	s3Proc *vgwProcess

	bucketSeq atomic.Uint64
)

// errNoBinary marks "versitygw is not installed", which skips tests.
var errNoBinary = errors.New("versitygw not found")

// S3 returns the S3 server of this test binary, starting it on first use.
//
// Unless EnvS3Endpoint is set, that is a versitygw process (posix backend,
// data in a fresh temporary directory) listening on a free loopback port. It
// is shared by all tests of the binary and stops, and its directory is
// removed, when the test binary exits for any reason: it watches a pipe from
// the test process and quits when the pipe closes.
//
// The binary is $SANDKEEP_VERSITYGW, else versitygw on $PATH, else
// $(go env GOPATH)/bin/versitygw. When there is none the test is skipped,
// or fails if CI or SANDKEEP_REQUIRE_S3=1 is set. Install it with
//
//	go install github.com/versity/versitygw/cmd/versitygw@v1.8.0
func S3(t testing.TB) S3Env {
	t.Helper()
	s3Once.Do(func() { s3Env, s3Err = startS3() })
	if s3Err != nil {
		if errors.Is(s3Err, errNoBinary) && !requireS3() {
			t.Skipf("testenv: %v; skipping (install: go install github.com/versity/versitygw/cmd/versitygw@v1.8.0, or set %s)", s3Err, EnvVersityGW)
		}
		t.Fatalf("testenv: S3 server: %v", s3Err)
	}
	return s3Env
}

func requireS3() bool {
	return os.Getenv("CI") != "" || os.Getenv(EnvRequireS3) == "1"
}

// NewBucketName returns a bucket name no other call in this test binary
// returns, derived from the test's name: valid for S3 (3 to 63 lowercase
// letters, digits and hyphens).
func NewBucketName(t testing.TB) string {
	var b strings.Builder
	for _, r := range strings.ToLower(t.Name()) {
		switch {
		case r >= 'a' && r <= 'z', r >= '0' && r <= '9':
			b.WriteRune(r)
		case b.Len() > 0 && !strings.HasSuffix(b.String(), "-"):
			b.WriteByte('-')
		}
	}
	name := strings.Trim(b.String(), "-")
	if len(name) > 30 {
		name = strings.Trim(name[:30], "-")
	}
	// The random part keeps names apart on a shared external server.
	return fmt.Sprintf("sk-%s-%d-%s", name, bucketSeq.Add(1), strings.ToLower(rand.Text()[:6]))
}

func startS3() (S3Env, error) {
	if ep := os.Getenv(EnvS3Endpoint); ep != "" {
		env := S3Env{
			Endpoint:  ep,
			AccessKey: os.Getenv(EnvS3AccessKey),
			SecretKey: os.Getenv(EnvS3SecretKey),
			Region:    orDefault(os.Getenv(EnvS3Region), vgwRegion),
		}
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		if err := listBuckets(ctx, env); err != nil {
			return S3Env{}, fmt.Errorf("%s=%s: %w", EnvS3Endpoint, ep, err)
		}
		return env, nil
	}
	if runtime.GOOS == "windows" {
		return S3Env{}, fmt.Errorf("%w: starting versitygw needs a POSIX shell", errNoBinary)
	}
	bin, err := findVersityGW()
	if err != nil {
		return S3Env{}, err
	}
	var errs []error
	for range startAttempts {
		env, p, err := startVersityGW(bin)
		if err == nil {
			s3Proc = p
			return env, nil
		}
		errs = append(errs, err)
	}
	return S3Env{}, errors.Join(errs...)
}

func findVersityGW() (string, error) {
	if p := os.Getenv(EnvVersityGW); p != "" {
		if _, err := os.Stat(p); err != nil {
			// Explicitly configured but absent is an error, not a skip.
			return "", fmt.Errorf("%s=%s: %w", EnvVersityGW, p, err)
		}
		return p, nil
	}
	if p, err := exec.LookPath("versitygw"); err == nil {
		return p, nil
	}
	gopath := os.Getenv("GOPATH")
	if gopath == "" {
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		out, err := exec.CommandContext(ctx, "go", "env", "GOPATH").Output()
		if err == nil {
			gopath = strings.TrimSpace(string(out))
		}
	}
	for _, dir := range filepath.SplitList(gopath) {
		p := filepath.Join(dir, "bin", "versitygw")
		if fi, err := os.Stat(p); err == nil && !fi.IsDir() {
			return p, nil
		}
	}
	return "", fmt.Errorf("%w (looked at $%s, $PATH and $(go env GOPATH)/bin)", errNoBinary, EnvVersityGW)
}

// supervisor runs the server ("$@") with data under $1, stops it when its
// own stdin (a pipe from the test binary) reaches EOF, i.e. when the test
// binary exits, and then removes $1. It ignores terminal interrupts so that
// a ^C to the test cannot orphan the server: the pipe does the job.
const supervisor = `
set -u
dir=$1; shift
trap '' INT HUP
exec 3<&0
"$@" </dev/null 3<&- &
srv=$!
trap 'kill $srv 2>/dev/null' TERM
{ cat <&3 >/dev/null; kill $srv 2>/dev/null; } &
watcher=$!
exec 3<&-
st=0
while kill -0 $srv 2>/dev/null; do wait $srv; st=$?; done
kill $watcher 2>/dev/null
rm -rf "$dir"
exit $st
`

// vgwProcess is a running versitygw under its supervisor shell.
type vgwProcess struct {
	cmd    *exec.Cmd
	stdin  interface{ Close() error } // closing it stops the server
	exited chan struct{}
	out    *tailBuffer
}

func startVersityGW(bin string) (S3Env, *vgwProcess, error) {
	base, err := os.MkdirTemp("", "sandkeep-versitygw-")
	if err != nil {
		return S3Env{}, nil, err
	}
	data := filepath.Join(base, "data")
	if err := os.Mkdir(data, 0o700); err != nil {
		os.RemoveAll(base)
		return S3Env{}, nil, err
	}
	addr, err := freeLoopbackAddr()
	if err != nil {
		os.RemoveAll(base)
		return S3Env{}, nil, err
	}
	cmd := exec.Command("sh", "-c", supervisor, "sh", base,
		bin, "--port", addr, "--quiet", "posix", data)
	cmd.Env = append(os.Environ(),
		"ROOT_ACCESS_KEY="+vgwAccessKey,
		"ROOT_SECRET_KEY="+vgwSecretKey,
		"VGW_REGION="+vgwRegion,
	)
	out := &tailBuffer{max: 16 << 10}
	cmd.Stdout, cmd.Stderr = out, out
	stdin, err := cmd.StdinPipe()
	if err != nil {
		os.RemoveAll(base)
		return S3Env{}, nil, err
	}
	if err := cmd.Start(); err != nil {
		os.RemoveAll(base)
		return S3Env{}, nil, fmt.Errorf("starting %s: %w", bin, err)
	}
	p := &vgwProcess{cmd: cmd, stdin: stdin, exited: make(chan struct{}), out: out}
	go func() {
		_ = cmd.Wait()
		close(p.exited)
	}()
	env := S3Env{
		Endpoint:  "http://" + addr,
		AccessKey: vgwAccessKey,
		SecretKey: vgwSecretKey,
		Region:    vgwRegion,
	}
	if err := p.waitReady(env, addr); err != nil {
		stdin.Close() // the supervisor stops the server and cleans up
		select {
		case <-p.exited:
		case <-time.After(10 * time.Second):
		}
		return S3Env{}, nil, fmt.Errorf("%s on %s: %w; output:\n%s", bin, addr, err, out.String())
	}
	return env, p, nil
}

// waitReady polls the new server, a bounded number of times, until it
// accepts connections and answers ListBuckets.
func (p *vgwProcess) waitReady(env S3Env, addr string) error {
	var last error
	for range readyAttempts {
		select {
		case <-p.exited:
			return fmt.Errorf("exited during startup: %v", p.cmd.ProcessState)
		default:
		}
		conn, err := net.DialTimeout("tcp", addr, time.Second)
		if err == nil {
			conn.Close()
			ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
			err = listBuckets(ctx, env)
			cancel()
			if err == nil {
				return nil
			}
		}
		last = err
		time.Sleep(readyInterval) // polling an external process, not our code
	}
	return fmt.Errorf("not ready after %d attempts: %w", readyAttempts, last)
}

func listBuckets(ctx context.Context, env S3Env) error {
	c := s3.New(s3.Options{
		BaseEndpoint:     aws.String(env.Endpoint),
		Region:           env.Region,
		UsePathStyle:     true,
		Credentials:      credentials.NewStaticCredentialsProvider(env.AccessKey, env.SecretKey, ""),
		RetryMaxAttempts: 1,
	})
	_, err := c.ListBuckets(ctx, &s3.ListBucketsInput{})
	return err
}

func freeLoopbackAddr() (string, error) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return "", err
	}
	defer l.Close()
	return l.Addr().String(), nil
}

func orDefault(s, def string) string {
	if s == "" {
		return def
	}
	return s
}

// tailBuffer keeps the last max bytes written to it.
type tailBuffer struct {
	mu  sync.Mutex
	max int
	b   bytes.Buffer
}

func (t *tailBuffer) Write(p []byte) (int, error) {
	t.mu.Lock()
	defer t.mu.Unlock()
	t.b.Write(p)
	if over := t.b.Len() - t.max; over > 0 {
		t.b.Next(over)
	}
	return len(p), nil
}

func (t *tailBuffer) String() string {
	t.mu.Lock()
	defer t.mu.Unlock()
	return t.b.String()
}

// OwnS3 starts a versitygw server for the calling test alone (one it may
// stop, unlike the shared one of S3): stop ends it, as does the test's end.
// It skips or fails like S3 when there is no versitygw.
func OwnS3(t testing.TB) (env S3Env, stop func()) {
	t.Helper()
	bin, err := findVersityGW()
	if err != nil {
		if !requireS3() {
			t.Skipf("testenv: %v; skipping", err)
		}
		t.Fatalf("testenv: %v", err)
	}
	var p *vgwProcess
	var errs []error
	for range startAttempts {
		if env, p, err = startVersityGW(bin); err == nil {
			break
		}
		errs = append(errs, err)
	}
	if p == nil {
		t.Fatalf("testenv: S3 server: %v", errors.Join(errs...))
	}
	var once sync.Once
	stop = func() {
		once.Do(func() {
			p.stdin.Close() // the supervisor stops the server and cleans up
			select {
			case <-p.exited:
			case <-time.After(30 * time.Second):
				t.Errorf("testenv: versitygw on %s did not stop", env.Endpoint)
			}
		})
	}
	t.Cleanup(stop)
	return env, stop
}
