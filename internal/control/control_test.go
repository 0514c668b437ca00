package control

import (
	"context"
	"errors"
	"path/filepath"
	"sync/atomic"
	"testing"
	"time"
)

type fakeAgent struct {
	version atomic.Int64
	fail    error
	block   chan struct{}
}

func (f *fakeAgent) Flush(ctx context.Context) (int64, error) {
	if f.block != nil {
		select {
		case <-f.block:
		case <-ctx.Done():
			return 0, ctx.Err()
		}
	}
	if f.fail != nil {
		return 0, f.fail
	}
	return f.version.Load(), nil
}

func (f *fakeAgent) Status() Status {
	return Status{State: "idle", Version: f.version.Load(), PendingPaths: 2, PendingExamples: []string{"a", "b"}}
}

func serve(t *testing.T, a Agent) string {
	t.Helper()
	sock := filepath.Join(t.TempDir(), "agent.sock")
	ln, err := Listen(sock)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- Serve(ctx, ln, a, nil) }()
	t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("serve: %v", err)
		}
	})
	return sock
}

func TestFlushAndStatus(t *testing.T) {
	a := &fakeAgent{}
	a.version.Store(7)
	c := NewClient(serve(t, a))
	ctx := context.Background()
	v, err := c.Flush(ctx, 5*time.Second)
	if err != nil || v != 7 {
		t.Fatalf("flush = %d, %v", v, err)
	}
	s, err := c.Status(ctx)
	if err != nil || s.Version != 7 || s.State != "idle" {
		t.Fatalf("status = %+v, %v", s, err)
	}
}

func TestFlushFailureNamesPending(t *testing.T) {
	a := &fakeAgent{fail: errors.New("coordinator unreachable")}
	c := NewClient(serve(t, a))
	_, err := c.Flush(context.Background(), time.Second)
	var fe *FlushError
	if !errors.As(err, &fe) || fe.PendingPaths != 2 || len(fe.Examples) != 2 {
		t.Fatalf("flush error = %v", err)
	}
}

func TestFlushTimeout(t *testing.T) {
	a := &fakeAgent{block: make(chan struct{})}
	defer close(a.block)
	c := NewClient(serve(t, a))
	_, err := c.Flush(context.Background(), 50*time.Millisecond)
	var fe *FlushError
	if !errors.As(err, &fe) {
		t.Fatalf("flush with a blocked agent: %v, want a FlushError", err)
	}
}

func TestSecondAgentRefusedStaleSocketReplaced(t *testing.T) {
	sock := serve(t, &fakeAgent{})
	if _, err := Listen(sock); !errors.Is(err, ErrAlreadyRunning) {
		t.Fatalf("second Listen: %v, want ErrAlreadyRunning", err)
	}
	// A socket file nobody listens on is replaced.
	stale := filepath.Join(t.TempDir(), "stale.sock")
	ln, err := Listen(stale)
	if err != nil {
		t.Fatal(err)
	}
	ln.(interface{ SetUnlinkOnClose(bool) }).SetUnlinkOnClose(false)
	ln.Close()
	ln2, err := Listen(stale)
	if err != nil {
		t.Fatalf("Listen over a stale socket: %v", err)
	}
	ln2.Close()
}

func TestNoAgent(t *testing.T) {
	c := NewClient(filepath.Join(t.TempDir(), "none.sock"))
	if _, err := c.Status(context.Background()); !errors.Is(err, ErrNoAgent) {
		t.Fatalf("status with no agent: %v, want ErrNoAgent", err)
	}
}
