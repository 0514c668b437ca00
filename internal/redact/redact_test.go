package redact

import (
	"context"
	"errors"
	"net/http"
	"strings"
	"testing"
)

func TestRedact(t *testing.T) {
	for _, tt := range []struct{ in, want string }{
		{"http://127.0.0.1:7421/v1/blobs/projects/p/packs/ab/x?exp=1&sig=SECRET", "http://127.0.0.1:7421/v1/blobs/projects/p/packs/ab/x"},
		{"https://user:pw@bucket.s3.amazonaws.com/k?X-Amz-Signature=SECRET", "https://bucket.s3.amazonaws.com/k"},
		{"://bad", "(unparsable URL)"},
	} {
		if got := URL(tt.in); got != tt.want {
			t.Errorf("URL(%q) = %q, want %q", tt.in, got, tt.want)
		}
	}
	// A real client error quotes the URL; after RedactError it does not.
	req, err := http.NewRequestWithContext(context.Background(), http.MethodPut, "http://127.0.0.1:1/x?sig=SECRET", nil)
	if err != nil {
		t.Fatal(err)
	}
	_, err = http.DefaultClient.Do(req)
	if err == nil || !strings.Contains(err.Error(), "SECRET") {
		t.Fatalf("client error %v does not quote the URL (test premise)", err)
	}
	err = Error(err)
	if strings.Contains(err.Error(), "SECRET") {
		t.Fatalf("RedactError left the signature: %v", err)
	}
	var ue interface{ Timeout() bool }
	if !errors.As(err, &ue) {
		t.Fatal("RedactError lost the error chain")
	}
}
