package replication

import (
	"bytes"
	"context"
	"errors"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"path/filepath"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/sandkeep/sandkeep/internal/blobstore"
	"github.com/sandkeep/sandkeep/internal/blobstore/blobstoretest"
	"github.com/sandkeep/sandkeep/internal/blobstore/fsstore"
	"github.com/sandkeep/sandkeep/internal/metastore"
	"github.com/sandkeep/sandkeep/internal/metastore/sqlitestore"
	"github.com/sandkeep/sandkeep/internal/retry"
	"github.com/sandkeep/sandkeep/internal/urlsign"
)

func fsBackend(t *testing.T, name string) *fsstore.Store {
	t.Helper()
	signer, err := urlsign.New(bytes.Repeat([]byte(name[:1]), urlsign.MinKeyLen))
	if err != nil {
		t.Fatal(err)
	}
	mux := http.NewServeMux()
	srv := httptest.NewServer(mux)
	t.Cleanup(srv.Close)
	s, err := fsstore.New(filepath.Join(t.TempDir(), name), fsstore.Options{BaseURL: srv.URL, URLSigner: signer})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Close() })
	mux.Handle(fsstore.BlobPath, s.Handler())
	return s
}

func queue(t *testing.T) *sqlitestore.Store {
	t.Helper()
	q, err := sqlitestore.Open(context.Background(), filepath.Join(t.TempDir(), "meta.db"))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { q.Close() })
	return q
}

// flaky is a backend that fails every call while down is set.
type flaky struct {
	blobstore.Backend
	down atomic.Bool
}

var errDown = errors.New("connection refused")

func (f *flaky) Put(ctx context.Context, key string, r io.Reader, size int64) error {
	if f.down.Load() {
		return errDown
	}
	return f.Backend.Put(ctx, key, r, size)
}

func (f *flaky) Get(ctx context.Context, key string, off, n int64) (io.ReadCloser, error) {
	if f.down.Load() {
		return nil, errDown
	}
	return f.Backend.Get(ctx, key, off, n)
}

func (f *flaky) Delete(ctx context.Context, key string) error {
	if f.down.Load() {
		return errDown
	}
	return f.Backend.Delete(ctx, key)
}

func (f *flaky) Stat(ctx context.Context, key string) (int64, error) {
	if f.down.Load() {
		return 0, errDown
	}
	return f.Backend.Stat(ctx, key)
}

// TestConformance: the replicated store is a blob store like any other.
func TestConformance(t *testing.T) {
	blobstoretest.Run(t, func(t *testing.T) blobstore.Backend {
		return New(fsBackend(t, "primary"), fsBackend(t, "replica"), queue(t))
	})
}

func content(t *testing.T, s blobstore.Store, key string) (string, error) {
	t.Helper()
	rc, err := s.Get(context.Background(), key, 0, -1)
	if err != nil {
		return "", err
	}
	defer rc.Close()
	b, err := io.ReadAll(rc)
	return string(b), err
}

// TestWorker: puts, a signed-URL write and deletes reach the replica in
// order; a replica that fails keeps the entries queued (and says why)
// until it answers again.
func TestWorker(t *testing.T) {
	ctx := context.Background()
	primary := fsBackend(t, "primary")
	replica := &flaky{Backend: fsBackend(t, "replica")}
	q := queue(t)
	s := New(primary, replica, q)
	w := &Worker{Store: s, Backoff: retry.Backoff{Min: time.Millisecond, Max: time.Millisecond}, Log: slog.New(slog.DiscardHandler)}
	put := func(key, data string) {
		t.Helper()
		if err := s.Put(ctx, key, strings.NewReader(data), int64(len(data))); err != nil {
			t.Fatal(err)
		}
	}
	put("projects/p/a", "alpha")
	put("projects/p/b", "beta")
	if err := s.Delete(ctx, "projects/p/a"); err != nil {
		t.Fatal(err)
	}
	// Written through a signed URL: the primary has it; Written queues it.
	if err := primary.Put(ctx, "projects/p/c", strings.NewReader("gamma"), 5); err != nil {
		t.Fatal(err)
	}
	if err := s.Written(ctx, "projects/p/c", 5); err != nil {
		t.Fatal(err)
	}
	if lag, _ := q.ReplicationLag(ctx, "projects/p/"); lag.Objects != 3 {
		t.Fatalf("lag before the worker: %+v (the delete superseded a's put)", lag)
	}
	replica.down.Store(true)
	if n, err := w.Pass(ctx); err != nil || n != 3 {
		t.Fatalf("pass with the replica down: %d, %v", n, err)
	}
	lag, _ := q.ReplicationLag(ctx, "")
	if lag.Objects != 3 || lag.Failing != 3 || !strings.Contains(lag.LastError, "connection refused") {
		t.Fatalf("lag with the replica down: %+v", lag)
	}
	replica.down.Store(false)
	for range 100 { // retries fall due a millisecond later
		if _, err := w.Pass(ctx); err != nil {
			t.Fatal(err)
		}
		if lag, _ = q.ReplicationLag(ctx, ""); lag.Objects == 0 {
			break
		}
		time.Sleep(time.Millisecond) // the entries' next attempt is a millisecond away
	}
	if lag.Objects != 0 {
		t.Fatalf("lag after the replica came back: %+v", lag)
	}
	for key, want := range map[string]string{"projects/p/b": "beta", "projects/p/c": "gamma"} {
		if got, err := content(t, replica, key); err != nil || got != want {
			t.Fatalf("replica %s: %q, %v", key, got, err)
		}
	}
	if _, err := replica.Stat(ctx, "projects/p/a"); !errors.Is(err, blobstore.ErrNotFound) {
		t.Fatalf("a deleted object on the replica: %v", err)
	}
}

// TestReadsFallBack: an object the primary lost, or all of them while the
// primary is down, is read from the replica; signed GETs point at the
// replica while the primary does not answer.
func TestReadsFallBack(t *testing.T) {
	ctx := context.Background()
	primary := &flaky{Backend: fsBackend(t, "primary")}
	replica := fsBackend(t, "replica")
	s := New(primary, replica, queue(t))
	if err := replica.Put(ctx, "k", strings.NewReader("on the replica"), 14); err != nil {
		t.Fatal(err)
	}
	if got, err := content(t, s, "k"); err != nil || got != "on the replica" {
		t.Fatalf("Get of an object the primary lacks: %q, %v", got, err)
	}
	if n, err := s.Stat(ctx, "k"); err != nil || n != 14 {
		t.Fatalf("Stat: %d, %v", n, err)
	}
	if _, err := s.Get(ctx, "nowhere", 0, -1); !errors.Is(err, blobstore.ErrNotFound) {
		t.Fatalf("Get of an object neither has: %v", err)
	}
	u, err := s.SignGet(ctx, "k", time.Minute)
	if err != nil || !strings.HasPrefix(u.URL, primaryURL(t, primary)) {
		t.Fatalf("SignGet with the primary up: %v, %v", u.URL, err)
	}
	primary.down.Store(true)
	s.mu.Lock()
	s.probedAt = time.Time{} // probe again now
	s.mu.Unlock()
	u, err = s.SignGet(ctx, "k", time.Minute)
	if err != nil || strings.HasPrefix(u.URL, primaryURL(t, primary)) {
		t.Fatalf("SignGet with the primary down: %v, %v (want the replica's URL)", u.URL, err)
	}
	resp, err := http.Get(u.URL)
	if err != nil {
		t.Fatal(err)
	}
	b, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if string(b) != "on the replica" {
		t.Fatalf("GET of the signed URL: %d %q", resp.StatusCode, b)
	}
	var _ metastore.ReplicationStore = (*sqlitestore.Store)(nil)
}

func primaryURL(t *testing.T, f *flaky) string {
	t.Helper()
	down := f.down.Swap(false)
	defer f.down.Store(down)
	u, err := f.Backend.SignGet(context.Background(), "x", time.Minute)
	if err != nil {
		t.Fatal(err)
	}
	return u.URL[:strings.Index(u.URL, "/blobs")]
}
