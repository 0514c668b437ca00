package errinfo

import (
	"errors"
	"fmt"
	"testing"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
)

func TestReasonRoundTrip(t *testing.T) {
	for _, tt := range []struct {
		name string
		err  error
		want string
	}{
		{"head moved", Error(codes.FailedPrecondition, "x", HeadMoved), HeadMoved},
		{"blob missing", Error(codes.FailedPrecondition, "x", BlobMissing), BlobMissing},
		{"wrapped", fmt.Errorf("commit: %w", Error(codes.FailedPrecondition, "x", BlobMissing)), BlobMissing},
		{"no reason", Error(codes.FailedPrecondition, "x", ""), ""},
		{"plain status", status.Error(codes.FailedPrecondition, "x"), ""},
		{"not a status", errors.New("x"), ""},
		{"nil", nil, ""},
	} {
		if got := Reason(tt.err); got != tt.want {
			t.Errorf("%s: Reason = %q, want %q", tt.name, got, tt.want)
		}
	}
	if c := status.Code(Error(codes.FailedPrecondition, "x", HeadMoved)); c != codes.FailedPrecondition {
		t.Errorf("code %v", c)
	}
}
