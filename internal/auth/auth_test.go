package auth

import (
	"context"
	"errors"
	"strings"
	"testing"
	"time"

	"google.golang.org/grpc/metadata"

	"github.com/sandkeep/sandkeep/internal/metastore"
)

// tokens is an in-memory TokenSource.
type tokens map[string]metastore.Token

func (m tokens) GetToken(_ context.Context, hash string) (metastore.Token, error) {
	t, ok := m[hash]
	if !ok {
		return metastore.Token{}, metastore.ErrNotFound
	}
	return t, nil
}

type failingSource struct{}

func (failingSource) GetToken(context.Context, string) (metastore.Token, error) {
	return metastore.Token{}, errors.New("database is down")
}

func mustSecret(t *testing.T, kind metastore.TokenKind) string {
	t.Helper()
	s, err := NewSecret(kind)
	if err != nil {
		t.Fatal(err)
	}
	return s
}

// TestRecheck: Recheck authenticates an incoming call's bearer token again,
// as a long-lived session stream does; a token revoked, expired or gone
// since is refused with ErrUnauthenticated, a store failure is not.
func TestRecheck(t *testing.T) {
	now := time.Date(2026, 11, 27, 12, 0, 0, 0, time.UTC)
	valid := mustSecret(t, metastore.TokenSandbox)
	revoked := mustSecret(t, metastore.TokenSandbox)
	expired := mustSecret(t, metastore.TokenSandbox)
	gone := mustSecret(t, metastore.TokenSandbox)
	src := tokens{
		Hash(valid):   {Hash: Hash(valid), Kind: metastore.TokenSandbox, ProjectID: "prj_a"},
		Hash(revoked): {Hash: Hash(revoked), Kind: metastore.TokenSandbox, ProjectID: "prj_a", Revoked: true},
		Hash(expired): {Hash: Hash(expired), Kind: metastore.TokenSandbox, ProjectID: "prj_a", ExpiresAt: now},
	}
	withBearer := func(header string) context.Context {
		return metadata.NewIncomingContext(context.Background(), metadata.Pairs("authorization", header))
	}
	for _, tc := range []struct {
		name    string
		src     TokenSource
		ctx     context.Context
		project string // of the principal, when accepted
		unauth  string // else: a part of the ErrUnauthenticated error
		other   bool   // else: another error (the store failed)
	}{
		{name: "valid", src: src, ctx: withBearer("Bearer " + valid), project: "prj_a"},
		{name: "lower-case scheme", src: src, ctx: withBearer("bearer " + valid), project: "prj_a"},
		{name: "revoked since", src: src, ctx: withBearer("Bearer " + revoked), unauth: "revoked"},
		{name: "expired since", src: src, ctx: withBearer("Bearer " + expired), unauth: "expired"},
		{name: "deleted since", src: src, ctx: withBearer("Bearer " + gone), unauth: "unknown"},
		{name: "no metadata", src: src, ctx: context.Background(), unauth: "no token"},
		{name: "not a bearer", src: src, ctx: withBearer("Basic " + valid), unauth: "no token"},
		{name: "malformed", src: src, ctx: withBearer("Bearer x"), unauth: "malformed"},
		{name: "store down", src: failingSource{}, ctx: withBearer("Bearer " + valid), other: true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			a := NewAuthenticator(tc.src)
			a.now = func() time.Time { return now }
			p, err := a.Recheck(tc.ctx)
			switch {
			case tc.unauth != "":
				if !errors.Is(err, ErrUnauthenticated) || !strings.Contains(err.Error(), tc.unauth) {
					t.Fatalf("err = %v, want ErrUnauthenticated (%s)", err, tc.unauth)
				}
			case tc.other:
				if err == nil || errors.Is(err, ErrUnauthenticated) {
					t.Fatalf("err = %v, want a store error that is not ErrUnauthenticated", err)
				}
			default:
				if err != nil || p.ProjectID != tc.project || p.Kind != metastore.TokenSandbox {
					t.Fatalf("principal %+v, err %v; want project %s", p, err, tc.project)
				}
			}
		})
	}
}
