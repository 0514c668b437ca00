// Package api implements the coordinator's gRPC services on top of package
// repo and the metadata store. It is the edge where domain errors become
// gRPC status codes; nothing below it knows about gRPC.
package api

import (
	"context"
	"errors"
	"log/slog"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/sandkeep/sandkeep/internal/auth"
	"github.com/sandkeep/sandkeep/internal/blobstore"
	"github.com/sandkeep/sandkeep/internal/errinfo"
	"github.com/sandkeep/sandkeep/internal/id"
	"github.com/sandkeep/sandkeep/internal/metastore"
	"github.com/sandkeep/sandkeep/internal/pack"
	"github.com/sandkeep/sandkeep/internal/repo"
	"github.com/sandkeep/sandkeep/internal/tree"
)

// toStatus maps an error from the layers below to a gRPC status. Messages of
// internal errors are logged, not sent.
func toStatus(ctx context.Context, log *slog.Logger, op string, err error) error {
	if err == nil {
		return nil
	}
	if _, ok := status.FromError(err); ok && status.Code(err) != codes.Unknown {
		return err
	}
	var code codes.Code
	var reason string
	switch {
	case errors.Is(err, context.Canceled):
		code = codes.Canceled
	case errors.Is(err, context.DeadlineExceeded):
		code = codes.DeadlineExceeded
	case errors.Is(err, auth.ErrUnauthenticated):
		code = codes.Unauthenticated
	case errors.Is(err, auth.ErrPermissionDenied):
		code = codes.PermissionDenied
	case errors.Is(err, metastore.ErrConflict):
		code, reason = codes.FailedPrecondition, errinfo.HeadMoved
	case errors.Is(err, repo.ErrMissing):
		code, reason = codes.FailedPrecondition, errinfo.BlobMissing
	case errors.Is(err, metastore.ErrNotFound), errors.Is(err, blobstore.ErrNotFound):
		code = codes.NotFound
	case errors.Is(err, repo.ErrPackStored):
		code, reason = codes.AlreadyExists, errinfo.PackStored
	case errors.Is(err, metastore.ErrAlreadyExists):
		code = codes.AlreadyExists
	case errors.Is(err, repo.ErrLimit):
		code, reason = codes.ResourceExhausted, errinfo.LimitExceeded
	case errors.Is(err, repo.ErrTooLarge):
		code = codes.ResourceExhausted
	case errors.Is(err, repo.ErrInvalid), errors.Is(err, metastore.ErrInvalid), errors.Is(err, id.ErrInvalid),
		errors.Is(err, tree.ErrInvalid), errors.Is(err, repo.ErrCorrupt), errors.Is(err, blobstore.ErrInvalidKey):
		code = codes.InvalidArgument
	case errors.Is(err, pack.ErrCorrupt):
		code = codes.DataLoss
	default:
		log.ErrorContext(ctx, "request failed", "op", op, "err", err)
		return status.Error(codes.Internal, op+": internal error")
	}
	return errinfo.Error(code, err.Error(), reason)
}

func parseID(b []byte, what string) (id.ID, error) {
	v, err := id.FromBytes(b)
	if err != nil {
		return id.ID{}, status.Errorf(codes.InvalidArgument, "%s: %v", what, err)
	}
	return v, nil
}

func parseIDs(bs [][]byte, what string, max int) ([]id.ID, error) {
	if len(bs) > max {
		return nil, status.Errorf(codes.ResourceExhausted, "%d %s, at most %d per call", len(bs), what, max)
	}
	out := make([]id.ID, len(bs))
	for i, b := range bs {
		v, err := parseID(b, what)
		if err != nil {
			return nil, err
		}
		out[i] = v
	}
	return out, nil
}

func principal(ctx context.Context) (auth.Principal, error) {
	p, ok := auth.FromContext(ctx)
	if !ok {
		return auth.Principal{}, status.Error(codes.Unauthenticated, "no credentials")
	}
	return p, nil
}
