// Package coordtest runs a real coordinator inside a test: real gRPC and
// HTTP listeners on loopback, SQLite or PostgreSQL, a local blob directory
// or S3 (versitygw).
package coordtest

import (
	"context"
	"io"
	"log/slog"
	"net/http"
	"os"
	"sync"
	"testing"

	"google.golang.org/grpc"

	"github.com/sandkeep/sandkeep/internal/dial"
	"github.com/sandkeep/sandkeep/internal/server"
	"github.com/sandkeep/sandkeep/internal/testenv"
	pb "github.com/sandkeep/sandkeep/proto/sandkeep/v1"
)

// Options choose the backends.
type Options struct {
	S3       bool // blobs in versitygw instead of a local dir
	Postgres bool // metadata in PostgreSQL instead of SQLite
	// Config is applied on top (DataDir, Listen and HTTPListen are set).
	Config server.Config
	// ReplicaOf, if set, makes this coordinator another replica of that
	// one: the same PostgreSQL database and bucket (S3 and Postgres are
	// then taken from it).
	ReplicaOf *Coordinator
	// BucketOf, if set, serves that coordinator's S3 bucket (taken from
	// it) on a database of its own: a fresh PostgreSQL database with
	// Postgres, else SQLite in the data directory.
	BucketOf *Coordinator
	// DataDir, if set, is used instead of a fresh directory: a
	// coordinator restarted on the data (the local blob store, the admin
	// token) of one stopped.
	DataDir string
}

// Coordinator is a running coordinator.
type Coordinator struct {
	Server  *server.Server
	Addr    string // gRPC
	HTTP    string // base URL
	DataDir string
	Admin   pb.AdminServiceClient
	S3      *testenv.S3Env
	Bucket  string
	// DatabaseURL is the PostgreSQL database ("" for SQLite).
	DatabaseURL string
	stop        func() // Stop
}

// Stop shuts the coordinator down now (the test's end would).
func (c *Coordinator) Stop() { c.stop() }

// Start runs a coordinator until the test ends.
func Start(t testing.TB, opts Options) *Coordinator {
	t.Helper()
	cfg := opts.Config
	cfg.DataDir = opts.DataDir
	if cfg.DataDir == "" {
		cfg.DataDir = t.TempDir()
	}
	cfg.Listen = "127.0.0.1:0"
	cfg.HTTPListen = "127.0.0.1:0"
	c := &Coordinator{DataDir: cfg.DataDir}
	if r := opts.ReplicaOf; r != nil {
		if r.DatabaseURL == "" || r.S3 == nil {
			t.Fatal("coordtest: a replica shares PostgreSQL and S3: start the first with S3 and Postgres")
		}
		c.S3, c.Bucket, c.DatabaseURL = r.S3, r.Bucket, r.DatabaseURL
		cfg.S3Bucket, cfg.S3Endpoint, cfg.S3Region, cfg.S3PathStyle = r.Bucket, r.S3.Endpoint, r.S3.Region, true
		cfg.DatabaseURL = r.DatabaseURL
	}
	if b := opts.BucketOf; b != nil {
		if b.S3 == nil {
			t.Fatal("coordtest: BucketOf needs a coordinator on S3 (restart one on its DataDir for the local store)")
		}
		c.S3, c.Bucket = b.S3, b.Bucket
		cfg.S3Bucket, cfg.S3Endpoint, cfg.S3Region, cfg.S3PathStyle = b.Bucket, b.S3.Endpoint, b.S3.Region, true
	}
	if opts.S3 && opts.ReplicaOf == nil && opts.BucketOf == nil {
		env := testenv.S3(t)
		c.S3 = &env
		c.Bucket = testenv.NewBucketName(t)
		cfg.S3Bucket = c.Bucket
		cfg.S3Endpoint = env.Endpoint
		cfg.S3Region = env.Region
		cfg.S3PathStyle = true
		t.Setenv("AWS_ACCESS_KEY_ID", env.AccessKey)
		t.Setenv("AWS_SECRET_ACCESS_KEY", env.SecretKey)
	}
	if opts.Postgres && opts.ReplicaOf == nil {
		cfg.DatabaseURL = testenv.Postgres(t)
		c.DatabaseURL = cfg.DatabaseURL
	}
	log := slog.New(slog.NewTextHandler(testWriter{t}, &slog.HandlerOptions{Level: slog.LevelWarn}))
	if os.Getenv("SANDKEEP_TEST_VERBOSE") != "" {
		log = slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelDebug}))
	}
	ctx, cancel := context.WithCancel(context.Background())
	srv, err := server.New(ctx, cfg, log)
	if err != nil {
		cancel()
		t.Fatalf("start coordinator: %v", err)
	}
	c.Server = srv
	c.Addr = srv.GRPCAddr()
	c.HTTP = "http://" + srv.HTTPAddr()
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		if err := srv.Serve(ctx); err != nil {
			t.Errorf("coordinator: %v", err)
		}
	}()
	conn, err := dial.Dial(c.Addr, dial.Options{Token: srv.AdminToken})
	if err != nil {
		t.Fatal(err)
	}
	c.Admin = pb.NewAdminServiceClient(conn)
	var once sync.Once
	c.stop = func() {
		once.Do(func() {
			conn.Close()
			cancel()
			wg.Wait()
		})
	}
	t.Cleanup(c.stop)
	return c
}

// Project makes a project and a sandbox token for it.
func (c *Coordinator) Project(t testing.TB, name string) (projectID, token string) {
	t.Helper()
	ctx := context.Background()
	p, err := c.Admin.CreateProject(ctx, &pb.CreateProjectRequest{Name: name})
	if err != nil {
		t.Fatalf("create project: %v", err)
	}
	tok, err := c.Admin.CreateSandboxToken(ctx, &pb.CreateSandboxTokenRequest{ProjectId: p.GetProject().GetId()})
	if err != nil {
		t.Fatalf("create token: %v", err)
	}
	return p.GetProject().GetId(), tok.GetToken()
}

// Metrics returns the body of /metrics, fetched with the admin token.
func (c *Coordinator) Metrics(t testing.TB) string {
	t.Helper()
	req, err := http.NewRequest(http.MethodGet, c.HTTP+"/metrics", nil)
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set("Authorization", "Bearer "+c.Server.AdminToken)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	if err != nil || resp.StatusCode != http.StatusOK {
		t.Fatalf("GET /metrics: %d %v", resp.StatusCode, err)
	}
	return string(body)
}

// AgentConn dials the coordinator with a token.
func (c *Coordinator) AgentConn(t testing.TB, token string) pb.AgentServiceClient {
	t.Helper()
	conn, err := dial.Dial(c.Addr, dial.Options{Token: token})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close() })
	return pb.NewAgentServiceClient(conn)
}

// Conn dials the coordinator with a token and returns the raw connection.
func (c *Coordinator) Conn(t testing.TB, token string) *grpc.ClientConn {
	t.Helper()
	conn, err := dial.Dial(c.Addr, dial.Options{Token: token})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close() })
	return conn
}

type testWriter struct{ t testing.TB }

func (w testWriter) Write(p []byte) (int, error) {
	w.t.Helper()
	w.t.Log(string(p))
	return len(p), nil
}

var _ io.Writer = testWriter{}
