// Package control is the running agent's local control socket: a small
// HTTP/JSON API on a unix socket through which `sandkeep-agent flush` and
// `sandkeep-agent status` reach the agent started by `sandkeep-agent run`.
package control

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"syscall"
	"time"
)

// DefaultSocket is where `run` listens and `flush`/`status` look unless
// --socket or SANDKEEP_SOCKET say otherwise.
const DefaultSocket = "/run/sandkeep/agent.sock"

// Status is what `sandkeep-agent status` shows.
type Status struct {
	State         string    `json:"state"` // connecting, restoring, idle, syncing, error, stopping, token_refused
	Project       string    `json:"project"`
	Workspace     string    `json:"workspace"`
	Version       int64     `json:"version"` // the head version the workspace was last committed as / restored to
	PendingPaths  int64     `json:"pending_paths"`
	PendingBytes  int64     `json:"pending_bytes"`
	LastWrite     time.Time `json:"last_write,omitzero"`
	LastCommit    time.Time `json:"last_commit,omitzero"`
	LastError     string    `json:"last_error,omitempty"`
	LastErrorTime time.Time `json:"last_error_time,omitzero"`
	WatchMode     string    `json:"watch_mode"` // inotify or poll
	WatchReason   string    `json:"watch_reason,omitempty"`
	WatchedDirs   int       `json:"watched_dirs"`
	Overflows     int64     `json:"overflows"`
	Commits       int64     `json:"commits"`
	Clean         bool      `json:"clean"` // nothing pending (the watcher's reports during a round count) and no error
	CoordinatorUp bool      `json:"coordinator_up"`
	// Coordinator is the address the agent reaches (or waits for).
	Coordinator string `json:"coordinator,omitempty"`
	// TokenRefused: the coordinator refused the agent's token (revoked, or
	// the project deleted). Final: nothing more can be saved.
	TokenRefused    bool      `json:"token_refused,omitempty"`
	StartedAt       time.Time `json:"started_at"`
	PendingExamples []string  `json:"pending_examples,omitempty"`
}

// Agent is what the socket serves.
type Agent interface {
	// Flush returns once every change made before the call is committed,
	// with the version that holds them.
	Flush(ctx context.Context) (int64, error)
	Status() Status
}

// ErrAlreadyRunning: another agent answers on the socket.
var ErrAlreadyRunning = errors.New("an agent is already running on this socket")

// Listen binds the socket, replacing a stale one left by a dead agent.
func Listen(path string) (net.Listener, error) {
	if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
		return nil, fmt.Errorf("control socket dir: %w", err)
	}
	if _, err := os.Lstat(path); err == nil {
		c, err := net.DialTimeout("unix", path, time.Second)
		if err == nil {
			c.Close()
			return nil, fmt.Errorf("%w: %s", ErrAlreadyRunning, path)
		}
		if !errors.Is(err, syscall.ECONNREFUSED) && !errors.Is(err, syscall.ENOENT) {
			return nil, fmt.Errorf("control socket %s: %w", path, err)
		}
		if err := os.Remove(path); err != nil && !errors.Is(err, os.ErrNotExist) {
			return nil, fmt.Errorf("remove stale control socket: %w", err)
		}
	}
	ln, err := net.Listen("unix", path)
	if err != nil {
		return nil, fmt.Errorf("control socket: %w", err)
	}
	// Only the agent's user (root in a sandbox) may flush or read status.
	if err := os.Chmod(path, 0o600); err != nil {
		ln.Close()
		return nil, err
	}
	return ln, nil
}

// MaxFlushTimeout bounds a flush request.
const MaxFlushTimeout = time.Hour

// Serve answers on ln until ctx is done.
func Serve(ctx context.Context, ln net.Listener, a Agent, log *slog.Logger) error {
	mux := http.NewServeMux()
	mux.HandleFunc("GET /v1/status", func(w http.ResponseWriter, _ *http.Request) {
		writeJSON(w, http.StatusOK, a.Status())
	})
	mux.HandleFunc("POST /v1/flush", func(w http.ResponseWriter, r *http.Request) {
		timeout := 60 * time.Second
		if s := r.URL.Query().Get("timeout"); s != "" {
			d, err := time.ParseDuration(s)
			if err != nil || d <= 0 || d > MaxFlushTimeout {
				writeJSON(w, http.StatusBadRequest, map[string]string{"error": "timeout must be a duration in (0, 1h]"})
				return
			}
			timeout = d
		}
		fctx, cancel := context.WithTimeout(r.Context(), timeout)
		defer cancel()
		v, err := a.Flush(fctx)
		if err != nil {
			st := a.Status()
			writeJSON(w, http.StatusServiceUnavailable, map[string]any{"error": err.Error(), "pending_paths": st.PendingPaths, "pending_examples": st.PendingExamples})
			return
		}
		writeJSON(w, http.StatusOK, map[string]int64{"version": v})
	})
	srv := &http.Server{Handler: mux, ReadHeaderTimeout: 5 * time.Second}
	go func() {
		<-ctx.Done()
		sctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
		defer cancel()
		_ = srv.Shutdown(sctx)
	}()
	err := srv.Serve(ln)
	if errors.Is(err, http.ErrServerClosed) || errors.Is(err, net.ErrClosed) {
		return nil // shut down, or the listener was closed by its owner
	}
	return err
}

func writeJSON(w http.ResponseWriter, code int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(code)
	_ = json.NewEncoder(w).Encode(v)
}

// Client talks to a running agent.
type Client struct {
	path string
	http *http.Client
}

// NewClient returns a client of the agent listening on path.
func NewClient(path string) *Client {
	return &Client{path: path, http: &http.Client{Transport: &http.Transport{
		DialContext: func(ctx context.Context, _, _ string) (net.Conn, error) {
			var d net.Dialer
			return d.DialContext(ctx, "unix", path)
		},
	}}}
}

// ErrNoAgent: nothing listens on the socket.
var ErrNoAgent = errors.New("no agent is running")

func (c *Client) do(ctx context.Context, method, url string, out any) error {
	req, err := http.NewRequestWithContext(ctx, method, "http://agent"+url, nil)
	if err != nil {
		return err
	}
	resp, err := c.http.Do(req)
	if err != nil {
		if errors.Is(err, syscall.ENOENT) || errors.Is(err, syscall.ECONNREFUSED) {
			return fmt.Errorf("%w (socket %s)", ErrNoAgent, c.path)
		}
		return err
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(io.LimitReader(resp.Body, 1<<20))
	if err != nil {
		return err
	}
	if resp.StatusCode != http.StatusOK {
		var e struct {
			Error           string   `json:"error"`
			PendingPaths    int64    `json:"pending_paths"`
			PendingExamples []string `json:"pending_examples"`
		}
		if json.Unmarshal(body, &e) == nil && e.Error != "" {
			return &FlushError{Msg: e.Error, PendingPaths: e.PendingPaths, Examples: e.PendingExamples}
		}
		return fmt.Errorf("agent answered %s", resp.Status)
	}
	return json.Unmarshal(body, out)
}

// FlushError is a refused or timed-out flush.
type FlushError struct {
	Msg          string
	PendingPaths int64
	Examples     []string
}

func (e *FlushError) Error() string {
	if e.PendingPaths > 0 {
		return fmt.Sprintf("%s (%d paths not saved, e.g. %q)", e.Msg, e.PendingPaths, e.Examples)
	}
	return e.Msg
}

// Status returns the agent's status.
func (c *Client) Status(ctx context.Context) (Status, error) {
	var s Status
	err := c.do(ctx, http.MethodGet, "/v1/status", &s)
	return s, err
}

// Flush asks for a flush and waits up to timeout.
func (c *Client) Flush(ctx context.Context, timeout time.Duration) (int64, error) {
	ctx, cancel := context.WithTimeout(ctx, timeout+5*time.Second)
	defer cancel()
	var out struct {
		Version int64 `json:"version"`
	}
	err := c.do(ctx, http.MethodPost, "/v1/flush?timeout="+url.QueryEscape(timeout.String()), &out)
	return out.Version, err
}
