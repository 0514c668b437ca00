// Package auth issues and checks the bearer tokens of the coordinator's API.
//
// Two kinds exist: admin tokens ("ska_...") for the platform backend and the
// `sandkeep` CLI, and sandbox tokens ("skt_...") that an agent uses and that
// act on one project only. Only the SHA-256 of a token is stored.
package auth

import (
	"context"
	"crypto/rand"
	"crypto/sha256"
	"encoding/base32"
	"encoding/hex"
	"errors"
	"fmt"
	"strings"
	"sync"
	"time"

	"github.com/sandkeep/sandkeep/internal/metastore"
)

// Token prefixes.
const (
	AdminPrefix   = "ska_"
	SandboxPrefix = "skt_"
)

var (
	// ErrUnauthenticated: no token, a malformed one, an unknown, revoked or
	// expired one.
	ErrUnauthenticated = errors.New("unauthenticated")
	// ErrPermissionDenied: a valid token that may not do this.
	ErrPermissionDenied = errors.New("permission denied")
)

var b32 = base32.StdEncoding.WithPadding(base32.NoPadding)

// NewSecret returns a fresh random token of the given kind.
func NewSecret(kind metastore.TokenKind) (string, error) {
	var buf [32]byte
	if _, err := rand.Read(buf[:]); err != nil {
		return "", fmt.Errorf("read random: %w", err)
	}
	prefix := SandboxPrefix
	if kind == metastore.TokenAdmin {
		prefix = AdminPrefix
	}
	return prefix + strings.ToLower(b32.EncodeToString(buf[:])), nil
}

// Hash returns the stored form of a secret: hex SHA-256.
func Hash(secret string) string {
	sum := sha256.Sum256([]byte(secret))
	return hex.EncodeToString(sum[:])
}

// Principal is who made a request.
type Principal struct {
	Kind      metastore.TokenKind
	ProjectID string // sandbox tokens only
	// TokenHash is the stored hash of the bearer token (what per-token
	// limits and revocation key on).
	TokenHash string
	// SandboxID is the lifecycle sandbox the token was made for, if any.
	SandboxID string
}

// Who names the principal for records such as a version's sandbox: its
// sandbox id when the token was made for a sandbox, else its token id. It is
// the server's word, never the caller's.
func (p Principal) Who() string {
	if p.SandboxID != "" {
		return p.SandboxID
	}
	if p.TokenHash == "" {
		return ""
	}
	return metastore.TokenID(p.TokenHash)
}

// IsAdmin reports whether p holds an admin token.
func (p Principal) IsAdmin() bool { return p.Kind == metastore.TokenAdmin }

// CanAccessProject reports whether p may act on projectID.
func (p Principal) CanAccessProject(projectID string) bool {
	return p.IsAdmin() || (p.Kind == metastore.TokenSandbox && p.ProjectID == projectID && projectID != "")
}

type ctxKey struct{}

// WithPrincipal returns ctx carrying p.
func WithPrincipal(ctx context.Context, p Principal) context.Context {
	return context.WithValue(ctx, ctxKey{}, p)
}

// FromContext returns the principal of the request, if authenticated.
func FromContext(ctx context.Context) (Principal, bool) {
	p, ok := ctx.Value(ctxKey{}).(Principal)
	return p, ok
}

// TokenSource looks tokens up by hash (metastore.Store satisfies it).
type TokenSource interface {
	GetToken(ctx context.Context, hash string) (metastore.Token, error)
}

// toucher records a token's last use (metastore.Store satisfies it).
type toucher interface {
	TouchToken(ctx context.Context, hash string, at time.Time) error
}

// touchEvery is how often at most a token's last use is written.
const touchEvery = time.Minute

// Authenticator resolves bearer strings to principals.
type Authenticator struct {
	tokens TokenSource
	now    func() time.Time

	mu       sync.Mutex
	touched  map[string]time.Time // hash -> last TouchToken
	tapCache map[string]tapEntry  // hash -> recent valid lookup (TapHandle)
}

// NewAuthenticator returns an Authenticator over tokens. If tokens can
// record a token's last use (TouchToken), a successful authentication does
// so at most once a minute per token.
func NewAuthenticator(tokens TokenSource) *Authenticator {
	return &Authenticator{tokens: tokens, now: time.Now, touched: make(map[string]time.Time), tapCache: make(map[string]tapEntry)}
}

// touch records t's use, at most once per touchEvery; failures only cost the
// "last used" column its precision.
func (a *Authenticator) touch(ctx context.Context, hash string) {
	tc, ok := a.tokens.(toucher)
	if !ok {
		return
	}
	now := a.now()
	a.mu.Lock()
	if last, ok := a.touched[hash]; ok && now.Sub(last) < touchEvery {
		a.mu.Unlock()
		return
	}
	if len(a.touched) > 100_000 {
		clear(a.touched)
	}
	a.touched[hash] = now
	a.mu.Unlock()
	_ = tc.TouchToken(context.WithoutCancel(ctx), hash, now)
}

// maxTokenLen bounds what is hashed and looked up.
const maxTokenLen = 256

// Authenticate resolves a bearer secret. Errors wrap ErrUnauthenticated
// unless the store itself failed.
func (a *Authenticator) Authenticate(ctx context.Context, secret string) (Principal, error) {
	if secret == "" {
		return Principal{}, fmt.Errorf("%w: no token", ErrUnauthenticated)
	}
	if len(secret) > maxTokenLen || !(strings.HasPrefix(secret, AdminPrefix) || strings.HasPrefix(secret, SandboxPrefix)) {
		return Principal{}, fmt.Errorf("%w: malformed token", ErrUnauthenticated)
	}
	t, err := a.tokens.GetToken(ctx, Hash(secret))
	if errors.Is(err, metastore.ErrNotFound) {
		return Principal{}, fmt.Errorf("%w: unknown token", ErrUnauthenticated)
	}
	if err != nil {
		return Principal{}, fmt.Errorf("look up token: %w", err)
	}
	if t.Revoked {
		return Principal{}, fmt.Errorf("%w: token revoked", ErrUnauthenticated)
	}
	if !t.ExpiresAt.IsZero() && !a.now().Before(t.ExpiresAt) {
		return Principal{}, fmt.Errorf("%w: token expired", ErrUnauthenticated)
	}
	switch t.Kind {
	case metastore.TokenAdmin:
		a.touch(ctx, t.Hash)
		return Principal{Kind: t.Kind, TokenHash: t.Hash}, nil
	case metastore.TokenSandbox:
		if t.ProjectID == "" {
			return Principal{}, fmt.Errorf("%w: sandbox token without project", ErrUnauthenticated)
		}
		a.touch(ctx, t.Hash)
		return Principal{Kind: t.Kind, ProjectID: t.ProjectID, TokenHash: t.Hash, SandboxID: t.SandboxID}, nil
	default:
		return Principal{}, fmt.Errorf("%w: unknown token kind", ErrUnauthenticated)
	}
}

// BearerFrom extracts the token from an "authorization" header value.
func BearerFrom(header string) string {
	const p = "bearer "
	if len(header) > len(p) && strings.EqualFold(header[:len(p)], p) {
		return strings.TrimSpace(header[len(p):])
	}
	return ""
}
