package auth

import (
	"context"
	"errors"
	"strings"
	"sync"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"
	"google.golang.org/grpc/tap"

	"github.com/sandkeep/sandkeep/internal/metastore"
)

// Rule says which token kind a gRPC method needs. Methods not matched by any
// rule are refused (deny by default), except those under Open prefixes.
type Rule struct {
	Prefix string // e.g. "/sandkeep.v1.AgentService/"
	// Kind is the token kind the methods need; AnyKind accepts every valid
	// token.
	Kind metastore.TokenKind
}

// AnyKind in a Rule accepts any valid token (health, reflection).
const AnyKind metastore.TokenKind = "*"

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
	if kind != AnyKind && p.Kind != kind {
		return nil, status.Errorf(codes.PermissionDenied, "a %s token may not call %s", p.Kind, method)
	}
	return WithPrincipal(ctx, p), nil
}

// CallLimits bound the calls (unary and streams) in flight at once.
type CallLimits struct {
	PerSandboxToken int // default 8
	PerAdminToken   int // default 256
	Anonymous       int // calls of Open methods, all callers together; default 8
}

func (l CallLimits) withDefaults() CallLimits {
	if l.PerSandboxToken <= 0 {
		l.PerSandboxToken = 8
	}
	if l.PerAdminToken <= 0 {
		l.PerAdminToken = 256
	}
	if l.Anonymous <= 0 {
		l.Anonymous = 8
	}
	return l
}

// tapCacheTTL is how long the tap trusts an earlier lookup of a token. The
// tap only decides whether a call's body is read at all; the interceptors
// authenticate every call afresh, so a revoked token is refused there.
const tapCacheTTL = 5 * time.Second

type tapEntry struct {
	p     Principal
	until time.Time
}

// TapHandle returns a gRPC InTapHandle that runs on a call's headers,
// before any of its message is read: a call without a valid token of the
// right kind, to an unknown method, or past its token's concurrency bound
// is refused there, so no unauthenticated byte is ever buffered and no
// token can hold more than its share of the server. The interceptors still
// authenticate every call (UnaryInterceptor, StreamInterceptor).
func (a *Authenticator) TapHandle(pol Policy, lim CallLimits) tap.ServerInHandle {
	lim = lim.withDefaults()
	var mu sync.Mutex
	inflight := make(map[string]int) // token hash ("" for anonymous) -> calls
	acquire := func(key string, max int) (func(), bool) {
		mu.Lock()
		defer mu.Unlock()
		if inflight[key] >= max {
			return nil, false
		}
		inflight[key]++
		var once sync.Once
		return func() {
			once.Do(func() {
				mu.Lock()
				if inflight[key]--; inflight[key] <= 0 {
					delete(inflight, key)
				}
				mu.Unlock()
			})
		}, true
	}
	return func(ctx context.Context, info *tap.Info) (context.Context, error) {
		kind, open, known := pol.lookup(info.FullMethodName)
		if !known {
			return nil, status.Error(codes.PermissionDenied, "method not allowed")
		}
		key, max := "", lim.Anonymous
		if !open {
			var bearer string
			if v := info.Header.Get("authorization"); len(v) > 0 {
				bearer = BearerFrom(v[0])
			}
			p, err := a.tapAuthenticate(ctx, bearer)
			if err != nil {
				if errors.Is(err, ErrUnauthenticated) {
					return nil, status.Error(codes.Unauthenticated, err.Error())
				}
				return nil, status.Error(codes.Unavailable, "token lookup failed")
			}
			if kind != AnyKind && p.Kind != kind {
				return nil, status.Errorf(codes.PermissionDenied, "a %s token may not call %s", p.Kind, info.FullMethodName)
			}
			key, max = p.TokenHash, lim.PerSandboxToken
			if p.IsAdmin() {
				max = lim.PerAdminToken
			}
		}
		release, ok := acquire(key, max)
		if !ok {
			return nil, status.Errorf(codes.ResourceExhausted, "too many calls in flight for this token (at most %d); wait for some to finish", max)
		}
		// The stream's context ends with the call, however it ends.
		context.AfterFunc(ctx, release)
		return ctx, nil
	}
}

// tapAuthenticate is Authenticate with a short cache of valid tokens.
func (a *Authenticator) tapAuthenticate(ctx context.Context, secret string) (Principal, error) {
	h := Hash(secret)
	now := a.now()
	a.mu.Lock()
	e, ok := a.tapCache[h]
	a.mu.Unlock()
	if ok && now.Before(e.until) {
		return e.p, nil
	}
	p, err := a.Authenticate(ctx, secret)
	if err != nil {
		return p, err
	}
	a.mu.Lock()
	if len(a.tapCache) > 10_000 {
		clear(a.tapCache)
	}
	a.tapCache[h] = tapEntry{p: p, until: now.Add(tapCacheTTL)}
	a.mu.Unlock()
	return p, nil
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
