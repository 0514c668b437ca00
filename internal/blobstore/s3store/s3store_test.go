package s3store

import (
	"context"
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/sandkeep/sandkeep/internal/blobstore"
	"github.com/sandkeep/sandkeep/internal/blobstore/blobstoretest"
	"github.com/sandkeep/sandkeep/internal/testenv"
)

// newTestStore returns a store on a fresh bucket of the test S3 server.
func newTestStore(t *testing.T, cfg Config) *Store {
	t.Helper()
	env := testenv.S3(t)
	cfg.Bucket = testenv.NewBucketName(t)
	cfg.Endpoint = env.Endpoint
	cfg.Region = env.Region
	cfg.AccessKeyID = env.AccessKey
	cfg.SecretAccessKey = env.SecretKey
	cfg.PathStyle = true
	cfg.CreateBucket = true
	s, err := New(t.Context(), cfg)
	if err != nil {
		t.Fatalf("New: %v", err)
	}
	return s
}

func TestConformance(t *testing.T) {
	for _, tt := range []struct {
		name string
		cfg  Config
	}{
		// Small non-seekable Puts are buffered and signed.
		{"prefix", Config{Prefix: "sandkeep/test"}},
		// Non-seekable Puts are spooled to a temporary file.
		{"spool", Config{MaxBufferedPut: -1, TempDir: t.TempDir()}},
	} {
		t.Run(tt.name, func(t *testing.T) {
			blobstoretest.Run(t, func(t *testing.T) blobstore.Backend {
				return newTestStore(t, tt.cfg)
			})
		})
	}
}

func TestPrefixIsolation(t *testing.T) {
	ctx := t.Context()
	a := newTestStore(t, Config{Prefix: "tenant/a"})
	// A second store on the same bucket with another prefix.
	env := testenv.S3(t)
	b, err := New(ctx, Config{
		Bucket: a.bucket, Endpoint: env.Endpoint, Region: env.Region, PathStyle: true,
		AccessKeyID: env.AccessKey, SecretAccessKey: env.SecretKey, Prefix: "tenant/ab/",
	})
	if err != nil {
		t.Fatal(err)
	}
	if a.Name() != "s3://"+a.bucket+"/tenant/a" || b.Name() != "s3://"+a.bucket+"/tenant/ab" {
		t.Errorf("names %q, %q", a.Name(), b.Name())
	}
	if err := a.Put(ctx, "k", strings.NewReader("a"), 1); err != nil {
		t.Fatal(err)
	}
	if err := b.Put(ctx, "k", strings.NewReader("b"), 1); err != nil {
		t.Fatal(err)
	}
	var keys []string
	if err := a.List(ctx, "", func(o blobstore.Object) error { keys = append(keys, o.Key); return nil }); err != nil {
		t.Fatal(err)
	}
	if len(keys) != 1 || keys[0] != "k" {
		t.Errorf("store a lists %v, want [k]", keys)
	}
	if n, _, err := blobstore.DeletePrefix(ctx, a, "k"); err != nil || n != 1 {
		t.Errorf("DeletePrefix(k) on a = %d, %v", n, err)
	}
	if _, err := b.Stat(ctx, "k"); err != nil {
		t.Errorf("store b lost its object: %v", err)
	}
}

func TestNewErrors(t *testing.T) {
	env := testenv.S3(t)
	ctx := t.Context()
	base := Config{
		Endpoint: env.Endpoint, Region: env.Region, PathStyle: true,
		AccessKeyID: env.AccessKey, SecretAccessKey: env.SecretKey,
	}
	tests := []struct {
		name string
		edit func(*Config)
	}{
		{"no bucket", func(c *Config) { c.Bucket = "" }},
		{"missing bucket", func(c *Config) { c.Bucket = testenv.NewBucketName(t) }},
		{"bad prefix", func(c *Config) { c.Bucket = "x"; c.Prefix = "../up" }},
		{"long prefix", func(c *Config) { c.Bucket = "x"; c.Prefix = strings.Repeat("p", MaxPrefixLen+1) }},
		{"half credentials", func(c *Config) { c.Bucket = "x"; c.SecretAccessKey = "" }},
		{"wrong secret", func(c *Config) {
			c.Bucket = testenv.NewBucketName(t)
			c.SecretAccessKey = "wrong"
			c.CreateBucket = true
		}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			cfg := base
			tt.edit(&cfg)
			if _, err := New(ctx, cfg); err == nil {
				t.Error("New succeeded")
			}
		})
	}
	// Creating an existing bucket is fine, twice.
	cfg := base
	cfg.Bucket = testenv.NewBucketName(t)
	cfg.CreateBucket = true
	for range 2 {
		if _, err := New(ctx, cfg); err != nil {
			t.Fatalf("New with CreateBucket: %v", err)
		}
	}
}

func TestSignTTL(t *testing.T) {
	s := newTestStore(t, Config{})
	if _, err := s.SignGet(t.Context(), "k", MaxPresignTTL+time.Second); err == nil {
		t.Error("SignGet with a ttl over 7 days succeeded")
	}
	u, err := s.SignGet(t.Context(), "k", MaxPresignTTL)
	if err != nil {
		t.Fatalf("SignGet(7 days): %v", err)
	}
	if !strings.Contains(u.URL, "X-Amz-Expires=604800") {
		t.Errorf("URL %s does not expire in 604800 s", u.URL)
	}
	pu, err := s.SignPut(t.Context(), "k", 42, time.Minute)
	if err != nil {
		t.Fatal(err)
	}
	if pu.Headers["Content-Length"] != "42" {
		t.Errorf("signed PUT headers %v lack Content-Length: 42", pu.Headers)
	}
	t.Logf("signed PUT: %s %v", pu.URL, pu.Headers)
}

func TestPresignWindow(t *testing.T) {
	now := time.Unix(1000, 400_000_000)
	tests := []struct {
		ttl       time.Duration
		at        int64
		valid     time.Duration
		expiresAt int64
	}{
		{time.Minute, 1000, time.Minute, 1060},
		{1500 * time.Millisecond, 1000, 2 * time.Second, 1002},
		{0, 998, time.Second, 999},
		{-time.Minute, 938, time.Second, 939},
	}
	for _, tt := range tests {
		at, valid := presignWindow(now, tt.ttl)
		if at.Unix() != tt.at || valid != tt.valid || at.Add(valid).Unix() != tt.expiresAt {
			t.Errorf("presignWindow(%v) = %v, %v; want %d, %v", tt.ttl, at.Unix(), valid, tt.at, tt.valid)
		}
	}
}

func TestMissingBucketIsNotNotFound(t *testing.T) {
	s := newTestStore(t, Config{})
	gone := *s
	gone.bucket = testenv.NewBucketName(t)
	if _, err := gone.Stat(t.Context(), "k"); err == nil || errors.Is(err, blobstore.ErrNotFound) {
		// HEAD has no error body, so a missing bucket is only a 404 there.
		t.Logf("Stat in a missing bucket = %v", err)
	}
	_, err := gone.Get(t.Context(), "k", 0, -1)
	if err == nil || errors.Is(err, blobstore.ErrNotFound) {
		t.Errorf("Get in a missing bucket = %v, want an error that is not ErrNotFound", err)
	}
	_ = context.Background
}
