package api

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"strings"
	"testing"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/sandkeep/sandkeep/internal/auth"
	"github.com/sandkeep/sandkeep/internal/blobstore"
	"github.com/sandkeep/sandkeep/internal/errinfo"
	"github.com/sandkeep/sandkeep/internal/metastore"
	"github.com/sandkeep/sandkeep/internal/pack"
	"github.com/sandkeep/sandkeep/internal/repo"
	"github.com/sandkeep/sandkeep/internal/tree"
)

// The edge: every domain error becomes the code (and reason) a client
// acts on; anything unforeseen is Internal without its message.
func TestToStatus(t *testing.T) {
	tests := []struct {
		err    error
		code   codes.Code
		reason string
	}{
		{context.Canceled, codes.Canceled, ""},
		{fmt.Errorf("x: %w", context.DeadlineExceeded), codes.DeadlineExceeded, ""},
		{auth.ErrUnauthenticated, codes.Unauthenticated, ""},
		{auth.ErrPermissionDenied, codes.PermissionDenied, ""},
		{fmt.Errorf("commit: %w", metastore.ErrConflict), codes.FailedPrecondition, errinfo.HeadMoved},
		{fmt.Errorf("tree: %w", repo.ErrMissing), codes.FailedPrecondition, errinfo.BlobMissing},
		{metastore.ErrNotFound, codes.NotFound, ""},
		{blobstore.ErrNotFound, codes.NotFound, ""},
		{repo.ErrPackStored, codes.AlreadyExists, errinfo.PackStored},
		{metastore.ErrAlreadyExists, codes.AlreadyExists, ""},
		{repo.ErrLimit, codes.ResourceExhausted, errinfo.LimitExceeded},
		{repo.ErrTooLarge, codes.ResourceExhausted, ""},
		{fmt.Errorf("bad: %w", repo.ErrInvalid), codes.InvalidArgument, ""},
		{tree.ErrInvalid, codes.InvalidArgument, ""},
		{repo.ErrCorrupt, codes.InvalidArgument, ""},
		{blobstore.ErrInvalidKey, codes.InvalidArgument, ""},
		{pack.ErrCorrupt, codes.DataLoss, ""},
		{status.Error(codes.Aborted, "already a status"), codes.Aborted, ""},
		{errors.New("disk on fire at /secret/path"), codes.Internal, ""},
	}
	log := slog.New(slog.DiscardHandler)
	for _, tt := range tests {
		got := toStatus(t.Context(), log, "op", tt.err)
		if status.Code(got) != tt.code || errinfo.Reason(got) != tt.reason {
			t.Errorf("%v: %s/%q, want %s/%q", tt.err, status.Code(got), errinfo.Reason(got), tt.code, tt.reason)
		}
		if tt.code == codes.Internal && strings.Contains(status.Convert(got).Message(), "secret") {
			t.Errorf("an internal error's message reached the client: %v", got)
		}
	}
	if toStatus(t.Context(), log, "op", nil) != nil {
		t.Error("nil error mapped to a status")
	}
}
