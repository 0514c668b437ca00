package s3store

import (
	"bytes"
	"errors"
	"io"
	"net"
	"net/http"
	"net/url"
	"strconv"
	"testing"
	"time"

	"github.com/sandkeep/sandkeep/internal/blobstore"
)

// truncatingTransport sends the first cut bytes of every PUT body and then
// fails the body, so the server sees a connection that dies mid-upload.
type truncatingTransport struct {
	cut int
}

func (tt truncatingTransport) RoundTrip(req *http.Request) (*http.Response, error) {
	if req.Method == http.MethodPut && req.Body != nil {
		req = req.Clone(req.Context())
		req.Body = io.NopCloser(&failAfter{r: req.Body, left: tt.cut})
	}
	return http.DefaultTransport.RoundTrip(req)
}

type failAfter struct {
	r    io.Reader
	left int
}

func (f *failAfter) Read(p []byte) (int, error) {
	if f.left <= 0 {
		return 0, errors.New("connection lost (test)")
	}
	if len(p) > f.left {
		p = p[:f.left]
	}
	n, err := f.r.Read(p)
	f.left -= n
	return n, err
}

// TestAbortedUploadNotStored checks that a Put whose connection dies half
// way stores nothing: the signed payload lets the server detect it.
func TestAbortedUploadNotStored(t *testing.T) {
	s := newTestStore(t, Config{
		HTTPClient:  &http.Client{Transport: truncatingTransport{cut: 50000}},
		MaxAttempts: 1,
	})
	b := bytes.Repeat([]byte("x"), 100000)
	for name, r := range map[string]io.Reader{
		"seekable": bytes.NewReader(b),
		"buffered": struct{ io.Reader }{bytes.NewReader(b)},
	} {
		key := "aborted/" + name
		if err := s.Put(t.Context(), key, r, int64(len(b))); err == nil {
			t.Fatalf("Put(%q) over a dying connection succeeded", key)
		}
		if _, err := s.Stat(t.Context(), key); !errors.Is(err, blobstore.ErrNotFound) {
			t.Errorf("after an aborted Put(%q): Stat = %v, want ErrNotFound", key, err)
		}
	}
}

// TestAbortedPresignedPut documents a server quirk: presigned PUTs carry no
// payload hash, so only the server's own Content-Length check can reject a
// truncated upload. versitygw v1.8.0 lacks it (versity/versitygw#2414, fixed
// after v1.8.0): a truncated body is published as a shorter object.
// Coordinators must therefore check the size of agent uploads (Stat) before
// trusting them.
func TestAbortedPresignedPut(t *testing.T) {
	s := newTestStore(t, Config{})
	const key, size = "aborted/presigned", 100000
	u, err := s.SignPut(t.Context(), key, size, time.Minute)
	if err != nil {
		t.Fatal(err)
	}
	pu, err := url.Parse(u.URL)
	if err != nil {
		t.Fatal(err)
	}
	// Send the headers and half the body by hand, then hang up.
	conn, err := net.Dial("tcp", pu.Host)
	if err != nil {
		t.Fatal(err)
	}
	var req bytes.Buffer
	req.WriteString("PUT " + pu.RequestURI() + " HTTP/1.1\r\nHost: " + pu.Host + "\r\n")
	for k, v := range u.Headers {
		req.WriteString(k + ": " + v + "\r\n")
	}
	if u.Headers["Content-Length"] == "" {
		req.WriteString("Content-Length: " + strconv.Itoa(size) + "\r\n")
	}
	req.WriteString("\r\n")
	req.Write(bytes.Repeat([]byte("y"), size/2))
	if _, err := conn.Write(req.Bytes()); err != nil {
		t.Fatal(err)
	}
	conn.(*net.TCPConn).CloseWrite()
	io.Copy(io.Discard, conn) // wait for the server to answer or hang up
	conn.Close()

	n, err := s.Stat(t.Context(), key)
	switch {
	case errors.Is(err, blobstore.ErrNotFound):
		// What S3 does.
	case err == nil:
		t.Skipf("server published a truncated presigned PUT as a %d-byte object (versitygw#2414); callers must check sizes", n)
	default:
		t.Fatalf("Stat: %v", err)
	}
}
