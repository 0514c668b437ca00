package api

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"strings"
	"testing"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/sandkeep/sandkeep/internal/errinfo"
	"github.com/sandkeep/sandkeep/internal/lifecycle"
	"github.com/sandkeep/sandkeep/internal/metastore"
	"github.com/sandkeep/sandkeep/internal/provider"
)

// EnsureSandbox may be called again at will: nothing it meets is Internal.
func TestEnsureStatus(t *testing.T) {
	s := &LifecycleServer{log: slog.New(slog.DiscardHandler)}
	throttled := &provider.UnavailableError{Op: "create", Err: errors.New("429"), After: 7 * time.Second, NotActed: true}
	tests := []struct {
		name      string
		err       error
		code      codes.Code
		wantDelay time.Duration // 0: none expected
		contains  string
	}{
		{"outage", fmt.Errorf("create sandbox: %w", provider.ErrUnavailable), codes.Unavailable, 5 * time.Second, "retry later"},
		{"outage with retry-after", fmt.Errorf("create sandbox: %w", throttled), codes.Unavailable, 7 * time.Second, "unavailable"},
		{"its deadline", fmt.Errorf("%w: sandbox sbx_1: %w", lifecycle.ErrNotReady, context.DeadlineExceeded), codes.DeadlineExceeded, 0, "ensure again"},
		{"quota", fmt.Errorf("create: %w", provider.ErrQuota), codes.ResourceExhausted, 0, "quota"},
		{"no project", fmt.Errorf("%w: project x", metastore.ErrNotFound), codes.NotFound, 0, "project"},
		{"no provider", lifecycle.ErrNoProvider, codes.FailedPrecondition, 0, "no provider"},
		{"anything else", errors.New("database is locked"), codes.Unavailable, 5 * time.Second, "database is locked"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			err := s.ensureStatus(t.Context(), tt.err, []lifecycle.Replacement{{SandboxID: "sbx_old", Reason: "lost", Detail: "gone", Lost: "3 pending paths"}})
			if status.Code(err) != tt.code {
				t.Fatalf("code %s (%v), want %s", status.Code(err), err, tt.code)
			}
			msg := status.Convert(err).Message()
			if !strings.Contains(msg, tt.contains) || !strings.Contains(msg, "replaced sbx_old (lost: gone), may have lost: 3 pending paths") {
				t.Fatalf("message %q", msg)
			}
			d, ok := errinfo.RetryDelay(err)
			if tt.wantDelay != 0 && (!ok || d != tt.wantDelay) {
				t.Fatalf("retry delay %s %v, want %s", d, ok, tt.wantDelay)
			}
		})
	}
}
