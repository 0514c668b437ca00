package e2e

import (
	"context"
	"path/filepath"
	"testing"
	"time"

	"github.com/sandkeep/sandkeep/internal/agent"
	"github.com/sandkeep/sandkeep/internal/control"
	"github.com/sandkeep/sandkeep/internal/coordtest"
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
	if cacheDir == "" {
		cacheDir = filepath.Join(t.TempDir(), "cache")
	}
	if opts.Socket == "" {
		opts.Socket = filepath.Join(t.TempDir(), "agent.sock")
	}
	if opts.RetryMax == 0 {
		opts.RetryMax = time.Second
	}
	cfg := agentConfig(c, token, ws, t)
	cfg.CacheDir = cacheDir
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
	// Wait until it answers on its socket (bounded).
	deadline := time.Now().Add(60 * time.Second)
	for {
		if _, err := a.ctl.Status(context.Background()); err == nil {
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
	select {
	case err := <-a.done:
		a.done <- err
		return err
	case <-time.After(90 * time.Second):
		a.t.Fatal("agent did not stop")
		return nil
	}
}
