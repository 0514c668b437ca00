package blobstore

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"strconv"
)

// NewRequest builds the HTTP request u describes, carrying u.Headers. For a
// PUT, body must yield exactly size bytes; the request is sent with that
// Content-Length (never chunked), which both the S3 and the local signed URLs
// require. For a GET, body must be nil and size is ignored; add a Range
// header to read part of the object.
func (u SignedURL) NewRequest(ctx context.Context, body io.Reader, size int64) (*http.Request, error) {
	req, err := http.NewRequestWithContext(ctx, u.Method, u.URL, body)
	if err != nil {
		return nil, fmt.Errorf("blobstore: signed %s request: %w", u.Method, err)
	}
	for k, v := range u.Headers {
		if http.CanonicalHeaderKey(k) == "Content-Length" {
			if want := strconv.FormatInt(size, 10); v != want {
				return nil, fmt.Errorf("blobstore: signed %s request: URL was signed for %s bytes, body has %d", u.Method, v, size)
			}
			continue
		}
		req.Header.Set(k, v)
	}
	if u.Method == http.MethodPut {
		req.ContentLength = size
		if size == 0 {
			// An explicit zero length, not "unknown" (which would be chunked).
			req.Body = http.NoBody
		}
	}
	return req, nil
}
