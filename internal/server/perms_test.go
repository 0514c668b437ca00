package server

import (
	"context"
	"io/fs"
	"net/http"
	"os"
	"path/filepath"
	"syscall"
	"testing"

	"github.com/prometheus/client_golang/prometheus/testutil"
)

// Item 9 of the security issue: the data dir and everything secret in it are
// owner-only whatever the umask, and whether or not the dir existed.
func TestDataDirIsOwnerOnly(t *testing.T) {
	old := syscall.Umask(0)
	defer syscall.Umask(old)
	for _, existed := range []bool{false, true} {
		dir := filepath.Join(t.TempDir(), "data")
		if existed {
			if err := os.Mkdir(dir, 0o777); err != nil {
				t.Fatal(err)
			}
			if err := os.Chmod(dir, 0o777); err != nil {
				t.Fatal(err)
			}
		}
		s, err := New(context.Background(), Config{DataDir: dir, Listen: "127.0.0.1:0", HTTPListen: "127.0.0.1:0"}, nil)
		if err != nil {
			t.Fatal(err)
		}
		want := map[string]fs.FileMode{
			".": 0o700, "blobs": 0o700, "sandkeep.db": 0o600, "sandkeep.db-wal": 0o600, "sandkeep.db-shm": 0o600,
			"admin.token": 0o600, "secret.key": 0o600,
		}
		for name, mode := range want {
			fi, err := os.Stat(filepath.Join(dir, name))
			if err != nil {
				t.Errorf("existed=%v: %s: %v", existed, name, err)
				continue
			}
			if got := fi.Mode().Perm(); got != mode {
				t.Errorf("existed=%v: %s has mode %v, want %v", existed, name, got, mode)
			}
		}
		s.Close()
	}
}

// /metrics names every project: the shared listener needs the admin token,
// --metrics-listen serves it alone without one.
func TestMetricsListener(t *testing.T) {
	s, err := New(context.Background(), Config{DataDir: t.TempDir(), Listen: "127.0.0.1:0", HTTPListen: "127.0.0.1:0", MetricsListen: "127.0.0.1:0"}, nil)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- s.Serve(ctx) }()
	defer func() { cancel(); <-done }()
	get := func(url, bearer string) int {
		req, _ := http.NewRequest(http.MethodGet, url, nil)
		if bearer != "" {
			req.Header.Set("Authorization", "Bearer "+bearer)
		}
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		return resp.StatusCode
	}
	shared, own := "http://"+s.HTTPAddr()+"/metrics", "http://"+s.MetricsAddr()+"/metrics"
	for _, tt := range []struct {
		url, bearer string
		want        int
	}{
		{shared, "", http.StatusUnauthorized},
		{shared, "ska_wrong", http.StatusUnauthorized},
		{shared, s.AdminToken, http.StatusOK},
		{own, "", http.StatusOK},
		{"http://" + s.MetricsAddr() + "/v1/blobs/x", "", http.StatusNotFound},
	} {
		if got := get(tt.url, tt.bearer); got != tt.want {
			t.Errorf("GET %s (token %q): %d, want %d", tt.url, tt.bearer, got, tt.want)
		}
	}
	// The shared listener counts its requests by handler and code.
	if got := testutil.ToFloat64(s.Metrics.HTTPRequests.WithLabelValues("metrics", "401")); got != 2 {
		t.Errorf("sandkeep_http_requests_total{handler=metrics,code=401} = %v, want 2", got)
	}
	if got := testutil.ToFloat64(s.Metrics.HTTPRequests.WithLabelValues("metrics", "200")); got != 1 {
		t.Errorf("sandkeep_http_requests_total{handler=metrics,code=200} = %v, want 1", got)
	}
}
