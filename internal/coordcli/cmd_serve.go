package coordcli

import (
	"fmt"
	"time"

	"github.com/spf13/cobra"

	"github.com/sandkeep/sandkeep/internal/envflag"
	"github.com/sandkeep/sandkeep/internal/server"
)

func newServe(g *globals) *cobra.Command {
	var cfg server.Config
	var logLevel, logFormat string
	cmd := &cobra.Command{
		Use:   "serve",
		Short: "Run the coordinator (gRPC API, HTTP blob and file endpoints)",
		Long: `Run the coordinator. With no flags it keeps everything in ./data: a SQLite
database, a local blob directory, the admin token (made and printed on first
start) and the URL-signing key. Every flag can also be given as an environment
variable: --s3-bucket as SANDKEEP_S3_BUCKET, and so on.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if err := envflag.Apply(cmd.Flags()); err != nil {
				return err
			}
			cfg.DataDir = g.dataDir
			if f := cmd.Flags().Lookup("gc-grace"); f.Changed && cfg.GC.Grace <= 0 {
				return fmt.Errorf("--gc-grace must be positive (it is what keeps a pack an agent is still uploading for from being deleted)")
			}
			log, err := newLogger(g.stderr, logLevel, logFormat)
			if err != nil {
				return err
			}
			srv, err := server.New(cmd.Context(), cfg, log)
			if err != nil {
				return err
			}
			if srv.NewAdmin {
				fmt.Fprintf(g.stdout, "admin token: %s\n(saved in %s; admin commands read it from there, or from SANDKEEP_ADMIN_TOKEN)\n", srv.AdminToken, server.AdminTokenFile(cfg.DataDir))
			}
			fmt.Fprintf(g.stdout, "sandkeep coordinator listening: grpc %s, http %s, blobs %s\n", srv.GRPCAddr(), srv.HTTPAddr(), srv.Blobs.Name())
			return srv.Serve(cmd.Context())
		},
	}
	f := cmd.Flags()
	f.StringVar(&cfg.Listen, "listen", server.DefaultListen, "gRPC listen address")
	f.StringVar(&cfg.HTTPListen, "http-listen", server.DefaultHTTPListen, "HTTP listen address (blob URLs, file links, /healthz)")
	f.StringVar(&cfg.MetricsListen, "metrics-listen", "", "serve /metrics without credentials on this address, e.g. 127.0.0.1:9464 (default: none; /metrics on --http-listen needs the admin token)")
	f.StringVar(&cfg.PublicURL, "public-url", "", "base URL agents use to reach --http-listen (default http://<http-listen>)")
	f.StringVar(&cfg.DatabaseURL, "database-url", "", "PostgreSQL URL (postgres://...); default SQLite in the data dir")
	f.StringVar(&cfg.S3Bucket, "s3-bucket", "", "keep blobs in this S3 bucket (created if missing) instead of <data>/blobs")
	f.StringVar(&cfg.S3Endpoint, "s3-endpoint", "", "S3 endpoint URL (MinIO, versitygw, R2, ...); default AWS")
	f.StringVar(&cfg.S3Region, "s3-region", "us-east-1", "S3 region")
	f.BoolVar(&cfg.S3PathStyle, "s3-path-style", false, "path-style S3 addressing (most non-AWS servers)")
	f.BoolVar(&cfg.S3InstanceCredentials, "s3-instance-credentials", false, "let the AWS credential chain ask the EC2 instance metadata endpoint (an instance role); off, it is never probed")
	f.StringVar(&cfg.S3Prefix, "s3-prefix", "", "key prefix inside the bucket")
	f.StringVar(&cfg.ReplicaS3Bucket, "replica-s3-bucket", "", "copy every object to this second S3 bucket too (another region or provider; created if missing): asynchronously, through a queue in the database; reads fall back to it when the primary fails")
	f.StringVar(&cfg.ReplicaS3Endpoint, "replica-s3-endpoint", "", "S3 endpoint URL of the replica bucket; default AWS")
	f.StringVar(&cfg.ReplicaS3Region, "replica-s3-region", "us-east-1", "S3 region of the replica bucket")
	f.StringVar(&cfg.ReplicaS3Prefix, "replica-s3-prefix", "", "key prefix inside the replica bucket")
	f.BoolVar(&cfg.ReplicaS3PathStyle, "replica-s3-path-style", false, "path-style addressing for the replica bucket")
	f.StringVar(&cfg.SecretKey, "secret-key", "", "hex key (>= 32 bytes) that signs URLs; default <data>/secret.key; share it between replicas")
	f.DurationVar(&cfg.URLTTL, "url-ttl", 15*time.Minute, "lifetime of signed URLs given to agents")
	f.StringVar(&cfg.TLSCert, "tls-cert", "", "PEM certificate for TLS on the gRPC listener")
	f.StringVar(&cfg.TLSKey, "tls-key", "", "PEM key for TLS on the gRPC listener")
	f.StringVar(&logLevel, "log-level", "info", "debug, info, warn or error")
	f.StringVar(&logFormat, "log-format", "text", "text or json")
	lifecycleFlags(f, &cfg.Lifecycle) // lifecycle: --provider, --daytona-*, --local-*, policy and rates
	f.DurationVar(&cfg.GC.Interval, "gc-interval", server.DefaultGCInterval, "collect garbage in every project this often: retention, then deletion of what no kept version references (0: never; 'sandkeep gc' still works)")
	f.DurationVar(&cfg.Scrub.Interval, "scrub-interval", 0, "check what is stored this often (0: never; 'sandkeep check' still works): every needed pack present, and --scrub-read-data of them read back and verified; problems are logged and counted in sandkeep_scrub_* metrics")
	f.Float64Var(&cfg.Scrub.ReadDataPercent, "scrub-read-data", server.DefaultScrubReadData, "percent of the packs each scrub reads back and verifies chunk by chunk")
	f.Int64Var(&cfg.Scrub.RateBytesPerSecond, "scrub-rate", server.DefaultScrubRate, "bytes per second a scrub reads at most (0: no bound)")
	f.DurationVar(&cfg.GC.Grace, "gc-grace", server.DefaultGCGrace, "how long a condemned pack waits before deletion, and how old a pack must be to be condemned; must exceed the longest agent upload and the longest restore")
	// --admin-token (global) doubles as the token serve registers.
	cmd.PreRunE = func(cmd *cobra.Command, _ []string) error {
		cfg.AdminToken = g.adminToken
		return nil
	}
	return cmd
}
