// Package dial opens gRPC connections to the coordinator for the agent and
// the admin CLI: bearer-token credentials, optional TLS, retries of
// UNAVAILABLE with backoff, and keepalives.
package dial

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"os"
	"strings"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/keepalive"
	"google.golang.org/grpc/resolver"
	"google.golang.org/grpc/resolver/manual"
)

// Options configure a connection.
type Options struct {
	Token string
	// TLS enables transport security; CAFile adds a CA to trust.
	TLS    bool
	CAFile string
	// MaxMessageSize bounds messages either way (default 32 MiB).
	MaxMessageSize int
}

// retryConfig retries UNAVAILABLE (coordinator restarting, network blip)
// with exponential backoff. Every sandkeep RPC is safe to retry: uploads are
// content-addressed and a commit names its parent, so a duplicate commit
// fails with FAILED_PRECONDITION instead of committing twice.
const retryConfig = `{
  "methodConfig": [{
    "name": [{"service": "sandkeep.v1.AgentService"}, {"service": "sandkeep.v1.AdminService"}],
    "retryPolicy": {
      "maxAttempts": 5,
      "initialBackoff": "0.2s",
      "maxBackoff": "5s",
      "backoffMultiplier": 2.0,
      "retryableStatusCodes": ["UNAVAILABLE"]
    }
  }]
}`

// Dial returns a client connection to addr. It does not block. addr is
// host:port; a comma-separated list of them (the replicas of one
// coordinator: the connection uses one and moves to the next when it
// fails); or a gRPC target such as dns:///name:port, whose every address is
// tried in turn likewise.
func Dial(addr string, o Options) (*grpc.ClientConn, error) {
	if addr == "" {
		return nil, errors.New("no coordinator address (set SANDKEEP_COORDINATOR or --coordinator)")
	}
	if o.MaxMessageSize <= 0 {
		o.MaxMessageSize = 32 << 20
	}
	var tc credentials.TransportCredentials
	if o.TLS || o.CAFile != "" {
		cfg := &tls.Config{MinVersion: tls.VersionTLS12}
		if o.CAFile != "" {
			pem, err := os.ReadFile(o.CAFile)
			if err != nil {
				return nil, fmt.Errorf("read CA: %w", err)
			}
			pool := x509.NewCertPool()
			if !pool.AppendCertsFromPEM(pem) {
				return nil, fmt.Errorf("%s holds no PEM certificate", o.CAFile)
			}
			cfg.RootCAs = pool
		}
		tc = credentials.NewTLS(cfg)
	} else {
		tc = insecure.NewCredentials()
	}
	opts := []grpc.DialOption{
		grpc.WithTransportCredentials(tc),
		grpc.WithDefaultServiceConfig(retryConfig),
		grpc.WithDefaultCallOptions(grpc.MaxCallRecvMsgSize(o.MaxMessageSize), grpc.MaxCallSendMsgSize(o.MaxMessageSize)),
		grpc.WithKeepaliveParams(keepalive.ClientParameters{Time: 30 * time.Second, Timeout: 10 * time.Second}),
	}
	if o.Token != "" {
		opts = append(opts, grpc.WithPerRPCCredentials(BearerCredentials{Token: o.Token, Secure: o.TLS || o.CAFile != ""}))
	}
	target := addr
	if addrs := strings.Split(addr, ","); len(addrs) > 1 {
		// Several replicas: one connection at a time (pick_first), to the
		// next address when the current one's replica goes away.
		r := manual.NewBuilderWithScheme("sandkeep-replicas")
		var state resolver.State
		for _, a := range addrs {
			if a = strings.TrimSpace(a); a == "" {
				return nil, fmt.Errorf("coordinator list %q has an empty address", addr)
			}
			state.Endpoints = append(state.Endpoints, resolver.Endpoint{Addresses: []resolver.Address{{Addr: a}}})
		}
		r.InitialState(state)
		opts = append(opts, grpc.WithResolvers(r))
		target = r.Scheme() + ":///replicas"
	}
	conn, err := grpc.NewClient(target, opts...)
	if err != nil {
		return nil, fmt.Errorf("dial %s: %w", addr, err)
	}
	return conn, nil
}

// BearerCredentials is a grpc.PerRPCCredentials sending a bearer token.
type BearerCredentials struct {
	Token string
	// Secure requires transport security; false allows plaintext (loopback,
	// or a network the operator trusts).
	Secure bool
}

// GetRequestMetadata implements credentials.PerRPCCredentials.
func (b BearerCredentials) GetRequestMetadata(context.Context, ...string) (map[string]string, error) {
	return map[string]string{"authorization": "Bearer " + b.Token}, nil
}

// RequireTransportSecurity implements credentials.PerRPCCredentials.
func (b BearerCredentials) RequireTransportSecurity() bool { return b.Secure }
