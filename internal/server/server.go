package server

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/health"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	"google.golang.org/grpc/reflection"

	"github.com/sandkeep/sandkeep/internal/api"
	"github.com/sandkeep/sandkeep/internal/atomicfile"
	"github.com/sandkeep/sandkeep/internal/auth"
	"github.com/sandkeep/sandkeep/internal/blobstore"
	"github.com/sandkeep/sandkeep/internal/blobstore/fsstore"
	"github.com/sandkeep/sandkeep/internal/blobstore/s3store"
	"github.com/sandkeep/sandkeep/internal/cluster"
	"github.com/sandkeep/sandkeep/internal/console"
	"github.com/sandkeep/sandkeep/internal/lifecycle"
	"github.com/sandkeep/sandkeep/internal/links"
	"github.com/sandkeep/sandkeep/internal/metastore"
	"github.com/sandkeep/sandkeep/internal/metastore/pgstore"
	"github.com/sandkeep/sandkeep/internal/metastore/sqlitestore"
	"github.com/sandkeep/sandkeep/internal/metrics"
	"github.com/sandkeep/sandkeep/internal/provider"
	"github.com/sandkeep/sandkeep/internal/replication"
	"github.com/sandkeep/sandkeep/internal/repo"
	"github.com/sandkeep/sandkeep/internal/sessions"
	"github.com/sandkeep/sandkeep/internal/urlsign"
	pb "github.com/sandkeep/sandkeep/proto/sandkeep/v1"
)

// Server is a configured coordinator, not yet serving.
type Server struct {
	cfg        Config
	log        *slog.Logger
	Meta       metastore.Store
	Blobs      blobstore.Backend
	Repo       *repo.Repo
	URLSigner  *urlsign.Signer
	Sessions   *sessions.Registry
	Cluster    *cluster.Node // this replica's part of the cluster
	Metrics    *metrics.Metrics
	AdminToken string // the admin token, when this server made or was given it
	NewAdmin   bool   // the admin token was made on this start
	// Lifecycle is the sandbox lifecycle manager (lifecycle.go). // lifecycle
	Lifecycle *lifecycle.Manager
	provider  provider.Provider // lifecycle
	lock      *os.File          // <data>/serve.lock, flocked

	grpcLn net.Listener
	httpLn net.Listener
	// metricsLn serves /metrics without credentials (Config.MetricsListen).
	metricsLn  net.Listener
	metricsSrv *http.Server
	grpc       *grpc.Server
	http       *http.Server
	health     *health.Server
	fs         *fsstore.Store
	// publicURL is how clients reach the HTTP listener (file links).
	publicURL string

	// leader elects the replica running the background jobs (gc.go).
	leader metastore.Leader
	// Tests of the periodic GC (gc.go): gcTicks replaces its ticker, gcNow
	// its clock, and gcRan is told what each tick did.
	gcTicks <-chan time.Time
	gcNow   func() time.Time
	gcRan   func(gcRun)
	// replicated is s.Blobs when a replica bucket is configured
	// (replication.go).
	replicated *replication.Store
	// Tests of the periodic scrub (scrub.go), likewise.
	scrubTicks <-chan time.Time
	scrubRan   func(scrubRun)
}

// New opens the stores and binds the listeners. Close it if Serve is not
// called.
func New(ctx context.Context, cfg Config, log *slog.Logger) (_ *Server, err error) {
	if err := cfg.setDefaults(); err != nil {
		return nil, err
	}
	if log == nil {
		log = slog.Default()
	}
	s := &Server{cfg: cfg, log: log}
	defer func() {
		if err != nil {
			s.Close()
		}
	}()
	// The data dir holds the admin token, the URL-signing key and the
	// database: owner only, whatever the umask and whether it existed.
	if err := os.MkdirAll(cfg.DataDir, 0o700); err != nil {
		return nil, fmt.Errorf("data dir: %w", err)
	}
	if err := os.Chmod(cfg.DataDir, 0o700); err != nil {
		return nil, fmt.Errorf("data dir: %w", err)
	}
	if s.lock, err = lockDataDir(cfg.DataDir); err != nil {
		return nil, err
	}
	key, err := s.secretKey()
	if err != nil {
		return nil, err
	}
	if s.URLSigner, err = urlsign.New(key); err != nil {
		return nil, fmt.Errorf("url signer: %w", err)
	}

	if cfg.DatabaseURL != "" {
		if s.Meta, err = pgstore.Open(ctx, cfg.DatabaseURL); err != nil {
			return nil, fmt.Errorf("open postgres: %w", err)
		}
	} else {
		if s.Meta, err = sqlitestore.Open(ctx, filepath.Join(cfg.DataDir, "sandkeep.db")); err != nil {
			return nil, fmt.Errorf("open sqlite: %w", err)
		}
	}

	// Bind the HTTP listener first: the local store's URLs point at it.
	if s.httpLn, err = net.Listen("tcp", cfg.HTTPListen); err != nil {
		return nil, fmt.Errorf("listen http: %w", err)
	}
	if s.grpcLn, err = net.Listen("tcp", cfg.Listen); err != nil {
		return nil, fmt.Errorf("listen grpc: %w", err)
	}
	if cfg.MetricsListen != "" {
		if s.metricsLn, err = net.Listen("tcp", cfg.MetricsListen); err != nil {
			return nil, fmt.Errorf("listen metrics: %w", err)
		}
	}
	public := cfg.PublicURL
	if public == "" {
		public = "http://" + s.httpLn.Addr().String()
	}
	public = strings.TrimRight(public, "/")
	s.publicURL = public

	if cfg.S3Bucket != "" {
		st, err := s3store.New(ctx, s3store.Config{
			Bucket: cfg.S3Bucket, Endpoint: cfg.S3Endpoint, Region: cfg.S3Region,
			Prefix: cfg.S3Prefix, PathStyle: cfg.S3PathStyle, CreateBucket: true, InstanceCredentials: cfg.S3InstanceCredentials,
		})
		if err != nil {
			return nil, fmt.Errorf("open s3: %w", err)
		}
		s.Blobs = st
	} else {
		st, err := fsstore.New(filepath.Join(cfg.DataDir, "blobs"), fsstore.Options{BaseURL: public, URLSigner: s.URLSigner, AllowPut: s.allowPut})
		if err != nil {
			return nil, fmt.Errorf("open blob dir: %w", err)
		}
		s.fs = st
		s.Blobs = st
	}
	if err := s.openReplica(ctx); err != nil {
		return nil, err
	}
	s.Repo = repo.New(s.Meta, s.Blobs, repo.Options{URLTTL: cfg.URLTTL, Logger: log, OnTokensRevoked: func(projectID string) {
		// A deleted project's agents are cut off at once, open streams too.
		if s.Sessions != nil {
			if n := s.Sessions.Disconnect(projectID); n > 0 {
				s.log.Info("agent sessions of a deleted project closed", "project", projectID, "sessions", n)
			}
		}
	}})
	if err := s.ensureAdminToken(ctx); err != nil {
		return nil, err
	}
	if err := s.build(); err != nil {
		return nil, err
	}
	return s, nil
}

// secretKey loads or makes the URL-signing key.
func (s *Server) secretKey() ([]byte, error) {
	if s.cfg.SecretKey != "" {
		k, err := hex.DecodeString(strings.TrimSpace(s.cfg.SecretKey))
		if err != nil || len(k) < 32 {
			return nil, errors.New("secret key must be at least 32 bytes, hex encoded")
		}
		return k, nil
	}
	path := filepath.Join(s.cfg.DataDir, "secret.key")
	if b, err := os.ReadFile(path); err == nil {
		k, err := hex.DecodeString(strings.TrimSpace(string(b)))
		if err != nil || len(k) < 32 {
			return nil, fmt.Errorf("%s is not a valid key", path)
		}
		return k, nil
	} else if !errors.Is(err, os.ErrNotExist) {
		return nil, fmt.Errorf("read secret key: %w", err)
	}
	k := make([]byte, 32)
	if _, err := rand.Read(k); err != nil {
		return nil, err
	}
	if err := atomicfile.WriteFile(path, []byte(hex.EncodeToString(k)+"\n"), 0o600); err != nil {
		return nil, fmt.Errorf("write secret key: %w", err)
	}
	return k, nil
}

// AdminTokenFile is where serve keeps the admin token in the data dir.
func AdminTokenFile(dataDir string) string { return filepath.Join(dataDir, "admin.token") }

func (s *Server) ensureAdminToken(ctx context.Context) error {
	secret := s.cfg.AdminToken
	path := AdminTokenFile(s.cfg.DataDir)
	if secret == "" {
		if b, err := os.ReadFile(path); err == nil {
			secret = strings.TrimSpace(string(b))
		} else if !errors.Is(err, os.ErrNotExist) {
			return fmt.Errorf("read admin token: %w", err)
		}
	}
	if secret == "" {
		var err error
		if secret, err = auth.NewSecret(metastore.TokenAdmin); err != nil {
			return err
		}
		if err := atomicfile.WriteFile(path, []byte(secret+"\n"), 0o600); err != nil {
			return fmt.Errorf("write admin token: %w", err)
		}
		s.NewAdmin = true
	}
	if !strings.HasPrefix(secret, auth.AdminPrefix) {
		return fmt.Errorf("admin token must start with %q", auth.AdminPrefix)
	}
	err := s.Meta.CreateToken(ctx, metastore.Token{Hash: auth.Hash(secret), Kind: metastore.TokenAdmin, CreatedAt: time.Now().UTC(), Note: "admin"})
	if err != nil && !errors.Is(err, metastore.ErrAlreadyExists) {
		return fmt.Errorf("register admin token: %w", err)
	}
	s.AdminToken = secret
	return nil
}

// allowPut refuses a signed PUT into a project that no longer exists (its
// URL was handed out before the deletion).
func (s *Server) allowPut(ctx context.Context, key string) error {
	rest, ok := strings.CutPrefix(key, "projects/")
	if !ok {
		return nil
	}
	pid, _, _ := strings.Cut(rest, "/")
	if _, err := s.Meta.GetProject(ctx, pid); err != nil {
		if errors.Is(err, metastore.ErrNotFound) {
			return fmt.Errorf("project %s was deleted; its upload URLs are void", pid)
		}
		return fmt.Errorf("cannot check project %s; try again", pid)
	}
	return nil
}

// adminOnly serves h to requests carrying an admin token
// ("Authorization: Bearer ska_...") and answers 401 to others.
func adminOnly(authn *auth.Authenticator, h http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		p, err := authn.Authenticate(r.Context(), auth.BearerFrom(r.Header.Get("Authorization")))
		if err != nil || !p.IsAdmin() {
			w.Header().Set("WWW-Authenticate", `Bearer realm="sandkeep"`)
			http.Error(w, "the admin token is needed here (Authorization: Bearer ska_...), or serve metrics on their own address with --metrics-listen", http.StatusUnauthorized)
			return
		}
		h.ServeHTTP(w, r)
	})
}

// MetricsAddr is the address of the --metrics-listen listener ("" if none).
func (s *Server) MetricsAddr() string {
	if s.metricsLn == nil {
		return ""
	}
	return s.metricsLn.Addr().String()
}

// Policy is the token rule table of the gRPC API.
var Policy = auth.Policy{
	Rules: []auth.Rule{
		{Prefix: "/sandkeep.v1.AgentService/", Kind: metastore.TokenSandbox},
		{Prefix: "/sandkeep.v1.AdminService/", Kind: metastore.TokenAdmin},
		{Prefix: "/sandkeep.v1.LifecycleService/", Kind: metastore.TokenAdmin}, // lifecycle
		// Any valid token: no gRPC call reads a byte of its message before
		// its token is checked. Probes without a token use HTTP /healthz.
		{Prefix: "/grpc.health.v1.Health/", Kind: auth.AnyKind},
		{Prefix: "/grpc.reflection.", Kind: auth.AnyKind},
	},
}

// MaxMessageSize bounds one gRPC message either way: the largest request is
// an UploadTrees of repo.MaxTreeBytesPerCall (16 MiB) plus framing.
const MaxMessageSize = 20 << 20

func (s *Server) build() error {
	authn := auth.NewAuthenticator(s.Meta)
	var opts []grpc.ServerOption
	if s.cfg.TLSCert != "" {
		creds, err := credentials.NewServerTLSFromFile(s.cfg.TLSCert, s.cfg.TLSKey)
		if err != nil {
			return fmt.Errorf("tls: %w", err)
		}
		opts = append(opts, grpc.Creds(creds))
	}
	opts = append(opts,
		grpc.ChainUnaryInterceptor(recoverUnary(s.log), authn.UnaryInterceptor(Policy)),
		grpc.ChainStreamInterceptor(recoverStream(s.log), authn.StreamInterceptor(Policy)),
		grpc.MaxRecvMsgSize(MaxMessageSize),
		grpc.MaxSendMsgSize(MaxMessageSize),
		// Credentials and per-token call bounds are checked on the headers,
		// before any message is read.
		grpc.InTapHandle(authn.TapHandle(Policy, s.cfg.CallLimits)),
	)
	s.grpc = grpc.NewServer(opts...)
	s.Sessions = sessions.New(s.log)
	s.Metrics = metrics.New()
	s.Sessions.OnConnect = func(d int) { s.Metrics.AgentSessions.Add(float64(d)) }
	// A token revoked or a project deleted through another replica ends
	// this replica's streams too (within SessionRecheck).
	s.Sessions.RecheckEvery = s.cfg.SessionRecheck
	s.Sessions.Recheck = func(ctx context.Context, projectID string) error {
		p, err := authn.Recheck(ctx)
		switch {
		case errors.Is(err, auth.ErrUnauthenticated):
			return fmt.Errorf("%w: %v", sessions.ErrRevoked, err)
		case err != nil:
			return err
		case p.ProjectID != projectID:
			return fmt.Errorf("%w: the token is not of project %s", sessions.ErrRevoked, projectID)
		}
		return nil
	}
	s.buildCluster()
	// lifecycle: heartbeats also update the sandbox registry.
	if err := s.buildLifecycle(); err != nil {
		return err
	}
	s.Sessions.OnHeartbeat = func(project string, hb *pb.Heartbeat) {
		s.Metrics.Heartbeats.Inc()
		s.Lifecycle.OnHeartbeat(project, hb)
	}
	lifeSrv := api.NewLifecycleServer(s.Lifecycle, s.log)
	pb.RegisterLifecycleServiceServer(s.grpc, lifeSrv) // lifecycle
	agentSrv := api.NewAgentServer(s.Repo, s.Sessions, s.log)
	agentSrv.SetMetrics(s.Metrics)
	pb.RegisterAgentServiceServer(s.grpc, agentSrv)
	adminSrv := api.NewAdminServer(s.Repo, s.Sessions, s.log).WithLinks(links.NewLinker(s.URLSigner, s.publicURL).WithClock(s.now)).
		WithGCGrace(s.cfg.GC.grace()).WithMetrics(s.Metrics).WithCommander(s.Cluster).WithCluster(s.Cluster)
	// The web console calls these same two services in process.
	ui, err := console.New(console.Config{Admin: adminSrv, Lifecycle: lifeSrv, Signer: s.URLSigner, PublicURL: s.publicURL, Log: s.log, Now: s.now})
	if err != nil {
		return err
	}
	adminSrv.WithConsole(ui)
	pb.RegisterAdminServiceServer(s.grpc, adminSrv)
	s.health = health.NewServer()
	healthpb.RegisterHealthServer(s.grpc, s.health)
	reflection.Register(s.grpc)

	mux := http.NewServeMux()
	if s.fs != nil {
		mux.Handle("/v1/blobs/", s.fs.Handler())
	}
	// /metrics names every project: on the shared listener it needs the
	// admin token; --metrics-listen serves it without one on its own address
	// (for a scraper on a private network).
	mux.Handle("GET /metrics", adminOnly(authn, s.Metrics.Handler()))
	if s.metricsLn != nil {
		mm := http.NewServeMux()
		mm.Handle("GET /metrics", s.Metrics.Handler())
		s.metricsSrv = &http.Server{Handler: mm, ReadHeaderTimeout: 10 * time.Second}
	}
	mux.Handle(console.Prefix, ui)
	mux.HandleFunc("GET /healthz", func(w http.ResponseWriter, _ *http.Request) {
		w.Header().Set("Content-Type", "text/plain")
		_, _ = w.Write([]byte("ok\n"))
	})
	// File links bypass the mux, which would answer a path holding ".."
	// with a redirect to a cleaned path: the links handler refuses it.
	fileLinks := links.NewHandler(s.Repo, s.URLSigner, s.log).WithClock(s.now)
	handler := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		rec := &statusRecorder{ResponseWriter: w, code: http.StatusOK}
		name := "other"
		switch {
		case strings.HasPrefix(r.URL.Path, links.Prefix):
			name = "links"
		case strings.HasPrefix(r.URL.Path, "/v1/blobs/"):
			name = "blobs"
		case r.URL.Path == "/metrics":
			name = "metrics"
		case r.URL.Path == "/healthz":
			name = "healthz"
		case strings.HasPrefix(r.URL.Path, console.Prefix):
			name = "console"
		}
		if name == "links" {
			fileLinks.ServeHTTP(rec, r)
		} else {
			mux.ServeHTTP(rec, r)
		}
		s.Metrics.HTTPRequests.WithLabelValues(name, strconv.Itoa(rec.code)).Inc()
	})
	s.http = &http.Server{Handler: handler, ReadHeaderTimeout: 10 * time.Second}
	return nil
}

// now is the clock of file links (Config.Now, else time.Now).
func (s *Server) now() time.Time {
	if s.cfg.Now != nil {
		return s.cfg.Now()
	}
	return time.Now()
}

// GRPCAddr is the bound gRPC address.
func (s *Server) GRPCAddr() string { return s.grpcLn.Addr().String() }

// HTTPAddr is the bound HTTP address.
func (s *Server) HTTPAddr() string { return s.httpLn.Addr().String() }

// Serve runs until ctx is done, then shuts down gracefully.
func (s *Server) Serve(ctx context.Context) error {
	errc := make(chan error, 2)
	go func() { errc <- s.grpc.Serve(s.grpcLn) }()
	go func() {
		if err := s.http.Serve(s.httpLn); err != nil && !errors.Is(err, http.ErrServerClosed) {
			errc <- err
			return
		}
		errc <- nil
	}()
	if s.metricsSrv != nil {
		go func() {
			if err := s.metricsSrv.Serve(s.metricsLn); err != nil && !errors.Is(err, http.ErrServerClosed) {
				s.log.Error("metrics listener", "err", err)
			}
		}()
	}
	s.health.SetServingStatus("", healthpb.HealthCheckResponse_SERVING)
	lcCtx, lcStop := context.WithCancel(ctx) // lifecycle
	lcWait := s.runLifecycle(lcCtx)
	gcWait := s.runGC(lcCtx)
	scrubWait := s.runScrub(lcCtx)
	replWait := s.runReplication(lcCtx)
	clusterDone := make(chan struct{})
	go func() {
		defer close(clusterDone)
		if err := s.Cluster.Run(lcCtx); err != nil {
			s.log.Error("cluster", "err", err)
		}
	}()
	s.log.Info("coordinator serving", "grpc", s.GRPCAddr(), "http", s.HTTPAddr(), "blobs", s.Blobs.Name())
	var err error
	select {
	case <-ctx.Done():
	case err = <-errc:
	}
	s.health.Shutdown()
	lcStop() // lifecycle, gc, cluster
	lcWait()
	gcWait()
	scrubWait()
	replWait()
	<-clusterDone
	if s.leader != nil {
		s.leader.Resign()
	}
	shutCtx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	_ = s.http.Shutdown(shutCtx)
	if s.metricsSrv != nil {
		_ = s.metricsSrv.Shutdown(shutCtx)
	}
	stopped := make(chan struct{})
	go func() { s.grpc.GracefulStop(); close(stopped) }()
	select {
	case <-stopped:
	case <-shutCtx.Done():
		s.grpc.Stop()
	}
	s.Close()
	return err
}

// Close releases the stores and listeners.
func (s *Server) Close() {
	if s.grpcLn != nil {
		s.grpcLn.Close()
	}
	if s.httpLn != nil {
		s.httpLn.Close()
	}
	if s.metricsLn != nil {
		s.metricsLn.Close()
	}
	s.closeProvider() // lifecycle
	if s.Meta != nil {
		s.Meta.Close()
	}
	if s.lock != nil {
		s.lock.Close() // releases the flock
		s.lock = nil
	}
}

// statusRecorder notes the status code a handler answered (for
// sandkeep_http_requests_total); it passes Flush through for streaming.
type statusRecorder struct {
	http.ResponseWriter
	code int
}

func (r *statusRecorder) WriteHeader(code int) {
	r.code = code
	r.ResponseWriter.WriteHeader(code)
}

func (r *statusRecorder) Flush() {
	if f, ok := r.ResponseWriter.(http.Flusher); ok {
		f.Flush()
	}
}

// Unwrap lets http.ResponseController reach the real writer.
func (r *statusRecorder) Unwrap() http.ResponseWriter { return r.ResponseWriter }
