package remote

import (
	"errors"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync/atomic"
	"testing"
	"testing/synctest"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	pb "github.com/sandkeep/sandkeep/proto/sandkeep/v1"
)

// put: 5xx and 429 are retried, 412 means the object is there already (a
// create-only URL), other 4xx end at once; a signed URL never appears in
// an error.
func TestPut(t *testing.T) {
	tests := []struct {
		name      string
		answers   []int
		wantCalls int
		wantErr   error  // errors.Is
		wantText  string // in the error, when no sentinel
	}{
		{"ok", []int{200}, 1, nil, ""},
		{"5xx then ok", []int{503, 500, 200}, 3, nil, ""},
		{"429 then ok", []int{429, 200}, 2, nil, ""},
		{"exists", []int{412}, 1, errObjectExists, ""},
		{"forbidden ends at once", []int{403}, 1, nil, "403 Forbidden"},
		{"5xx every time", []int{503, 503, 503}, 3, nil, "after 3 attempts"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var calls atomic.Int32
			srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
				n := int(calls.Add(1)) - 1
				b, _ := io.ReadAll(r.Body)
				if string(b) != "pack" || r.Header.Get("If-None-Match") != "*" {
					t.Errorf("request body %q header %q", b, r.Header.Get("If-None-Match"))
				}
				w.WriteHeader(tt.answers[min(n, len(tt.answers)-1)])
			}))
			defer srv.Close()
			c := &Client{http: srv.Client(), retries: 3}
			url := srv.URL + "/packs/ab?X-Amz-Signature=secret-signature"
			err := c.put(t.Context(), &pb.SignedRequest{Method: http.MethodPut, Url: url, Headers: map[string]string{"If-None-Match": "*"}}, []byte("pack"))
			switch {
			case tt.wantErr != nil && !errors.Is(err, tt.wantErr):
				t.Fatalf("err %v, want %v", err, tt.wantErr)
			case tt.wantErr == nil && tt.wantText == "" && err != nil:
				t.Fatalf("err %v", err)
			case tt.wantText != "" && (err == nil || !strings.Contains(err.Error(), tt.wantText)):
				t.Fatalf("err %v, want %q", err, tt.wantText)
			}
			if int(calls.Load()) != tt.wantCalls {
				t.Fatalf("%d calls, want %d", calls.Load(), tt.wantCalls)
			}
			if err != nil && strings.Contains(err.Error(), "secret-signature") {
				t.Fatalf("the signed URL leaked into the error: %v", err)
			}
		})
	}
}

// A network error names the host, never the signature.
func TestPutNetworkErrorIsRedacted(t *testing.T) {
	srv := httptest.NewServer(http.NotFoundHandler())
	url := srv.URL + "/packs/ab?X-Amz-Signature=secret-signature"
	srv.Close() // connection refused from now on
	c := &Client{http: http.DefaultClient, retries: 2}
	err := c.put(t.Context(), &pb.SignedRequest{Method: http.MethodPut, Url: url}, []byte("x"))
	if err == nil || strings.Contains(err.Error(), "secret-signature") {
		t.Fatalf("err %v", err)
	}
}

func TestIsTokenRefused(t *testing.T) {
	for code, want := range map[codes.Code]bool{codes.Unauthenticated: true, codes.PermissionDenied: true, codes.Unavailable: false, codes.OK: false} {
		if got := IsTokenRefused(status.Error(code, "x")); got != want {
			t.Errorf("%s: %v", code, got)
		}
	}
	wrapped := &statusError{st: status.New(codes.Unauthenticated, "unknown token"), msg: "the coordinator refused the token"}
	if !IsTokenRefused(wrapped) || wrapped.Error() != "the coordinator refused the token" {
		t.Errorf("statusError: %v", wrapped)
	}
}

// lateReader is a RoundTripper that answers at once, as a server sending
// 412 before it read the body does, and reads and closes the body only
// when told: what net/http's transport may do after RoundTrip returned.
type lateReader struct {
	status  int
	release chan struct{}
	read    chan []byte
}

func (l *lateReader) RoundTrip(req *http.Request) (*http.Response, error) {
	go func() {
		<-l.release
		b, _ := io.ReadAll(req.Body)
		req.Body.Close()
		l.read <- b
	}()
	return &http.Response{StatusCode: l.status, Status: http.StatusText(l.status), Body: http.NoBody, Request: req}, nil
}

// put returns only once the transport closed the body: until then the
// caller must not reuse data's buffer (the snapshot builds its next pack
// in it).
func TestPutWaitsForTheBody(t *testing.T) {
	for _, status := range []int{http.StatusOK, http.StatusPreconditionFailed} {
		t.Run(http.StatusText(status), func(t *testing.T) {
			synctest.Test(t, func(t *testing.T) {
				rt := &lateReader{status: status, release: make(chan struct{}), read: make(chan []byte, 1)}
				c := &Client{http: &http.Client{Transport: rt}, retries: 1}
				returned := make(chan error, 1)
				go func() {
					returned <- c.put(t.Context(), &pb.SignedRequest{Method: http.MethodPut, Url: "http://s3.invalid/packs/ab"}, []byte("pack"))
				}()
				synctest.Wait()
				select {
				case err := <-returned:
					t.Fatalf("put returned (%v) while the transport still held the body", err)
				default:
				}
				close(rt.release)
				if b := <-rt.read; string(b) != "pack" {
					t.Errorf("the transport read %q", b)
				}
				err := <-returned
				if status == http.StatusOK && err != nil || status != http.StatusOK && !errors.Is(err, errObjectExists) {
					t.Errorf("put: %v", err)
				}
			})
		})
	}
}
