// Package errinfo names the reasons the coordinator attaches to gRPC
// errors (as a google.rpc.ErrorInfo detail) where one status code covers
// cases a client must tell apart: a commit on a parent that is no longer
// the head and a tree naming a blob the project does not store are both
// FailedPrecondition, but an agent merges the new head in the first case
// and re-reads its files in the second.
package errinfo

import (
	"time"

	"google.golang.org/genproto/googleapis/rpc/errdetails"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/types/known/durationpb"
)

// Domain is the ErrorInfo domain of sandkeep's reasons.
const Domain = "sandkeep.dev"

// Reasons.
const (
	// HeadMoved: the commit's parent is not the project's head.
	HeadMoved = "HEAD_MOVED"
	// BlobMissing: a tree, version or request names a chunk, tree or pack
	// the project does not store (never uploaded, or collected).
	BlobMissing = "BLOB_MISSING"
	// PackStored: an upload target was asked for a pack the project already
	// stores; the agent has nothing to upload.
	PackStored = "PACK_STORED"
	// LimitExceeded: a commit would exceed one of the project's limits
	// (files, logical bytes, path depth).
	LimitExceeded = "LIMIT_EXCEEDED"
)

// Error returns a status error with code, msg and, if reason is not empty,
// an ErrorInfo detail carrying it.
func Error(code codes.Code, msg, reason string) error {
	st := status.New(code, msg)
	if reason == "" {
		return st.Err()
	}
	if d, err := st.WithDetails(&errdetails.ErrorInfo{Reason: reason, Domain: Domain}); err == nil {
		st = d
	}
	return st.Err()
}

// Reason returns the sandkeep reason attached to a gRPC error, or "".
func Reason(err error) string {
	st, ok := status.FromError(err)
	if !ok {
		return ""
	}
	for _, d := range st.Details() {
		if info, ok := d.(*errdetails.ErrorInfo); ok && info.GetDomain() == Domain {
			return info.GetReason()
		}
	}
	return ""
}

// Retryable returns an Unavailable (or other code) status error carrying a
// google.rpc.RetryInfo detail: the client may try again after delay.
func Retryable(code codes.Code, msg string, delay time.Duration) error {
	st := status.New(code, msg)
	if delay > 0 {
		if d, err := st.WithDetails(&errdetails.RetryInfo{RetryDelay: durationpb.New(delay)}); err == nil {
			st = d
		}
	}
	return st.Err()
}

// RetryDelay returns the RetryInfo delay of a gRPC error, if it has one.
func RetryDelay(err error) (time.Duration, bool) {
	st, ok := status.FromError(err)
	if !ok {
		return 0, false
	}
	for _, d := range st.Details() {
		if ri, ok := d.(*errdetails.RetryInfo); ok && ri.GetRetryDelay() != nil {
			return ri.GetRetryDelay().AsDuration(), true
		}
	}
	return 0, false
}
