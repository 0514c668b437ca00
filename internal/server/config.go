// Package server assembles a running coordinator: metadata store, blob
// store, the gRPC API and the HTTP endpoints, from a Config.
package server

import (
	"errors"
	"fmt"
	"time"

	"github.com/sandkeep/sandkeep/internal/auth"
)

// Config is everything `sandkeep serve` is told.
type Config struct {
	// DataDir holds the SQLite database, the local blob store, the admin
	// token and the URL-signing key. Default "./data".
	DataDir string
	// Listen is the gRPC address. Default 127.0.0.1:7420.
	Listen string
	// HTTPListen is the HTTP address (blob URLs of the local store, file
	// links, health, metrics). Default 127.0.0.1:7421.
	HTTPListen string
	// PublicURL is the base URL agents use to reach HTTPListen (default
	// http://<HTTPListen>).
	PublicURL string

	// DatabaseURL selects PostgreSQL ("postgres://..."); empty means SQLite
	// in DataDir.
	DatabaseURL string

	// S3: when S3Bucket is set, blobs go to S3 instead of DataDir/blobs.
	S3Bucket    string
	S3Endpoint  string
	S3Region    string
	S3Prefix    string
	S3PathStyle bool
	// ReplicaS3*: a second bucket every object is copied to (package
	// replication); the same credential chain as the primary.
	ReplicaS3Bucket, ReplicaS3Endpoint, ReplicaS3Region, ReplicaS3Prefix string
	ReplicaS3PathStyle                                                   bool
	// S3InstanceCredentials lets the AWS chain use the EC2 instance
	// metadata endpoint (off: it is not probed).
	S3InstanceCredentials bool

	// AdminToken, if set, is registered as an admin token (for several
	// coordinators over one database). Otherwise one is made on first start
	// and kept in DataDir/admin.token.
	AdminToken string
	// SecretKey signs URLs (hex, >= 32 bytes); default: DataDir/secret.key,
	// made on first start. Replicas behind one load balancer share it.
	SecretKey string

	// URLTTL is the lifetime of signed URLs given to agents.
	URLTTL time.Duration

	// TLSCert and TLSKey enable TLS on the gRPC listener.
	TLSCert string
	TLSKey  string

	// Lifecycle configures the sandbox lifecycle manager (lifecycle.go). // lifecycle
	Lifecycle LifecycleConfig

	// GC configures garbage collection (gc.go): periodic runs and the grace
	// period. Left at zero, the coordinator runs no periodic collection
	// (`sandkeep serve` defaults to one every hour).
	GC GCConfig

	// Scrub configures the periodic check of what is stored (scrub.go);
	// off when Interval is 0.
	Scrub ScrubConfig

	// SessionRecheck is how often at most an agent's session stream checks
	// its token again (default sessions.DefaultRecheckEvery, a minute): a
	// token revoked, or a project deleted, through another replica ends
	// this replica's streams within it.
	SessionRecheck time.Duration
	// ReplicaID names this coordinator among the replicas on one database
	// (default: a fresh id per start).
	ReplicaID string

	// MetricsListen, if set, serves /metrics without credentials on its own
	// address (default: none; /metrics on HTTPListen needs the admin token).
	MetricsListen string

	// CallLimits bound the gRPC calls in flight per token (defaults: 8 per
	// sandbox token, 256 per admin token).
	CallLimits auth.CallLimits

	// Now is the clock of file links, which expire (nil: time.Now; tests
	// move a fake clock instead of waiting a link's lifetime out).
	Now func() time.Time
}

// Defaults.
const (
	DefaultDataDir    = "data"
	DefaultListen     = "127.0.0.1:7420"
	DefaultHTTPListen = "127.0.0.1:7421"
)

func (c *Config) setDefaults() error {
	if c.DataDir == "" {
		c.DataDir = DefaultDataDir
	}
	if c.Listen == "" {
		c.Listen = DefaultListen
	}
	if c.HTTPListen == "" {
		c.HTTPListen = DefaultHTTPListen
	}
	if c.URLTTL <= 0 {
		c.URLTTL = 15 * time.Minute
	}
	if c.S3Region == "" {
		c.S3Region = "us-east-1"
	}
	if (c.TLSCert == "") != (c.TLSKey == "") {
		return errors.New("--tls-cert and --tls-key go together")
	}
	if c.GC.Grace < 0 {
		return fmt.Errorf("--gc-grace must be positive, not %s", c.GC.Grace)
	}
	if p := c.Scrub.ReadDataPercent; p < 0 || p > 100 || p != p {
		return fmt.Errorf("--scrub-read-data must be a percentage from 0 to 100, not %v", p)
	}
	if c.Scrub.RateBytesPerSecond < 0 || c.Scrub.Interval < 0 {
		return fmt.Errorf("--scrub-interval and --scrub-rate must not be negative")
	}
	if c.ReplicaS3Region == "" {
		c.ReplicaS3Region = "us-east-1"
	}
	if c.ReplicaS3Bucket == "" && (c.ReplicaS3Endpoint != "" || c.ReplicaS3Prefix != "") {
		return fmt.Errorf("--replica-s3-endpoint and --replica-s3-prefix need --replica-s3-bucket")
	}
	if c.S3Bucket == "" && (c.S3Endpoint != "" || c.S3Prefix != "") {
		return fmt.Errorf("--s3-endpoint and --s3-prefix need --s3-bucket")
	}
	return nil
}
