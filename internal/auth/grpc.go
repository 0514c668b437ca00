package auth

import (
	"context"
	"errors"
	"strings"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"

	"github.com/sandkeep/sandkeep/internal/metastore"
)

// Rule says which token kind a gRPC method needs. Methods not matched by any
// rule are refused (deny by default), except those under Open prefixes.
type Rule struct {
	Prefix string // e.g. "/sandkeep.v1.AgentService/"
	Kind   metastore.TokenKind
}

// Policy is the method → token-kind table of a server.
type Policy struct {
	Rules []Rule
	Open  []string // method prefixes that need no token (health, reflection)
}

func (p Policy) lookup(method string) (metastore.TokenKind, bool, bool) {
	for _, o := range p.Open {
		if strings.HasPrefix(method, o) {
			return "", true, true
		}
	}
	for _, r := range p.Rules {
		if strings.HasPrefix(method, r.Prefix) {
			return r.Kind, false, true
		}
	}
	return "", false, false
}

func (a *Authenticator) authorize(ctx context.Context, pol Policy, method string) (context.Context, error) {
	kind, open, known := pol.lookup(method)
	if open {
		return ctx, nil
	}
	if !known {
		return nil, status.Error(codes.PermissionDenied, "method not allowed")
	}
	p, err := a.Authenticate(ctx, bearerOf(ctx))
	if err != nil {
		if errors.Is(err, ErrUnauthenticated) {
			return nil, status.Error(codes.Unauthenticated, err.Error())
		}
		if errors.Is(err, context.Canceled) || errors.Is(err, context.DeadlineExceeded) {
			return nil, status.FromContextError(err).Err()
		}
		return nil, status.Error(codes.Unavailable, "token lookup failed")
	}
	if p.Kind != kind {
		return nil, status.Errorf(codes.PermissionDenied, "a %s token may not call %s", p.Kind, method)
	}
	return WithPrincipal(ctx, p), nil
}

// bearerOf returns the bearer token of an incoming call ("" if none).
func bearerOf(ctx context.Context) string {
	if md, ok := metadata.FromIncomingContext(ctx); ok {
		if v := md.Get("authorization"); len(v) > 0 {
			return BearerFrom(v[0])
		}
	}
	return ""
}

// Recheck authenticates the bearer token of an incoming call again: a
// stream was authenticated when it opened, and its token may have been
// revoked (or have expired) since. Errors wrap ErrUnauthenticated unless
// the store itself failed.
func (a *Authenticator) Recheck(ctx context.Context) (Principal, error) {
	return a.Authenticate(ctx, bearerOf(ctx))
}

// UnaryInterceptor enforces pol on unary calls.
func (a *Authenticator) UnaryInterceptor(pol Policy) grpc.UnaryServerInterceptor {
	return func(ctx context.Context, req any, info *grpc.UnaryServerInfo, handler grpc.UnaryHandler) (any, error) {
		ctx, err := a.authorize(ctx, pol, info.FullMethod)
		if err != nil {
			return nil, err
		}
		return handler(ctx, req)
	}
}

// StreamInterceptor enforces pol on streaming calls.
func (a *Authenticator) StreamInterceptor(pol Policy) grpc.StreamServerInterceptor {
	return func(srv any, ss grpc.ServerStream, info *grpc.StreamServerInfo, handler grpc.StreamHandler) error {
		ctx, err := a.authorize(ss.Context(), pol, info.FullMethod)
		if err != nil {
			return err
		}
		return handler(srv, &wrappedStream{ServerStream: ss, ctx: ctx})
	}
}

type wrappedStream struct {
	grpc.ServerStream
	ctx context.Context
}

func (w *wrappedStream) Context() context.Context { return w.ctx }

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
