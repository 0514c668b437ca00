package blobstore

import (
	"io"
	"net/http"
	"strings"
	"testing"
)

func TestSignedURLNewRequest(t *testing.T) {
	put := SignedURL{
		Method:  http.MethodPut,
		URL:     "http://example.com/b/k?sig=1",
		Headers: map[string]string{"content-length": "5", "X-Amz-Meta": "m"},
	}
	req, err := put.NewRequest(t.Context(), io.NopCloser(strings.NewReader("hello")), 5)
	if err != nil {
		t.Fatal(err)
	}
	if req.Method != "PUT" || req.ContentLength != 5 || req.Header.Get("X-Amz-Meta") != "m" || req.Header.Get("Content-Length") != "" {
		t.Errorf("request %s, length %d, headers %v", req.Method, req.ContentLength, req.Header)
	}
	if _, err := put.NewRequest(t.Context(), strings.NewReader("hell"), 4); err == nil {
		t.Error("NewRequest accepted a size the URL was not signed for")
	}

	empty := SignedURL{Method: http.MethodPut, URL: "http://example.com/b/k"}
	req, err = empty.NewRequest(t.Context(), strings.NewReader(""), 0)
	if err != nil {
		t.Fatal(err)
	}
	if req.ContentLength != 0 || req.Body != http.NoBody {
		t.Errorf("empty PUT: length %d, body %v; want an explicit 0", req.ContentLength, req.Body)
	}

	get := SignedURL{Method: http.MethodGet, URL: "http://example.com/b/k?x=1"}
	req, err = get.NewRequest(t.Context(), nil, 0)
	if err != nil {
		t.Fatal(err)
	}
	if req.Method != "GET" || req.URL.RawQuery != "x=1" {
		t.Errorf("GET request %s %s", req.Method, req.URL)
	}
	if _, err := (SignedURL{Method: "GET", URL: "://bad"}).NewRequest(t.Context(), nil, 0); err == nil {
		t.Error("NewRequest accepted a bad URL")
	}
}

func TestCheckRange(t *testing.T) {
	tests := []struct {
		size, off, n, want int64
		ok                 bool
	}{
		{10, 0, -1, 10, true},
		{10, 0, 10, 10, true},
		{10, 10, -1, 0, true},
		{10, 10, 0, 0, true},
		{10, 3, 4, 4, true},
		{0, 0, -1, 0, true},
		{10, 11, -1, 0, false},
		{10, 10, 1, 0, false},
		{10, -1, 1, 0, false},
		{10, 5, 1 << 62, 0, false},
	}
	for _, tt := range tests {
		got, err := CheckRange(tt.size, tt.off, tt.n)
		if tt.ok && (err != nil || got != tt.want) {
			t.Errorf("CheckRange(%d, %d, %d) = %d, %v; want %d", tt.size, tt.off, tt.n, got, err, tt.want)
		}
		if !tt.ok && err == nil {
			t.Errorf("CheckRange(%d, %d, %d) = %d, want an error", tt.size, tt.off, tt.n, got)
		}
	}
}
