package restore

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"strconv"
	"strings"
	"time"

	"github.com/sandkeep/sandkeep/internal/redact"
	pb "github.com/sandkeep/sandkeep/proto/sandkeep/v1"
)

var (
	// stallTimeout cancels a GET that receives no byte for this long.
	stallTimeout = 60 * time.Second
	// backoffBase and backoffMax bound the wait between retries:
	// base·2^attempt, at most max, with jitter.
	backoffBase = 200 * time.Millisecond
	backoffMax  = 10 * time.Second
)

var errStalled = errors.New("download stalled")

// DefaultHTTPClient returns the client used when Options.HTTPClient is nil:
// bounded connect, TLS and response-header times, no overall timeout (a body
// may be large; stalls are caught separately), no transparent gzip.
func DefaultHTTPClient(parallel int) *http.Client {
	if parallel <= 0 {
		parallel = 8
	}
	return &http.Client{
		Transport: &http.Transport{
			Proxy:                 http.ProxyFromEnvironment,
			DialContext:           (&net.Dialer{Timeout: 10 * time.Second, KeepAlive: 30 * time.Second}).DialContext,
			ForceAttemptHTTP2:     true,
			TLSHandshakeTimeout:   10 * time.Second,
			ResponseHeaderTimeout: 30 * time.Second,
			ExpectContinueTimeout: time.Second,
			IdleConnTimeout:       90 * time.Second,
			MaxIdleConns:          4 * parallel,
			MaxIdleConnsPerHost:   2 * parallel,
			DisableCompression:    true,
		},
	}
}

// newRangeRequest builds the GET of bytes [start, end) of a signed object.
func newRangeRequest(ctx context.Context, sr *pb.SignedRequest, start, end int64) (*http.Request, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, sr.GetUrl(), nil)
	if err != nil {
		return nil, err
	}
	for k, v := range sr.GetHeaders() {
		switch {
		case strings.EqualFold(k, "Host"):
			req.Host = v
		case strings.EqualFold(k, "Range"), strings.EqualFold(k, "Accept-Encoding"):
			// Ours.
		default:
			req.Header.Set(k, v)
		}
	}
	req.Header.Set("Range", "bytes="+strconv.FormatInt(start, 10)+"-"+strconv.FormatInt(end-1, 10))
	// Byte ranges of the stored object, never a transparently compressed body.
	req.Header.Set("Accept-Encoding", "identity")
	return req, nil
}

// checkResponse accepts 206 for [start, end) (or a prefix of it, reported by
// a smaller avail) or 200 when the range is the whole object. Everything
// else is an error; only 5xx and 429 are worth retrying.
func checkResponse(resp *http.Response, sr *pb.SignedRequest, start, end int64) (avail int64, err error) {
	switch resp.StatusCode {
	case http.StatusPartialContent:
		first, last, ok := parseContentRange(resp.Header.Get("Content-Range"))
		if !ok || first != start || last < first {
			return 0, permanent(fmt.Errorf("%w: GET %s bytes=%d-%d: got Content-Range %q", ErrShortRange,
				redact.URL(sr.GetUrl()), start, end-1, resp.Header.Get("Content-Range")))
		}
		return min(last+1, end), nil
	case http.StatusOK:
		if start == 0 && (resp.ContentLength == end || resp.ContentLength < 0) {
			return end, nil
		}
		return 0, permanent(fmt.Errorf("GET %s bytes=%d-%d: the server ignored the range (200 with %d bytes)",
			redact.URL(sr.GetUrl()), start, end-1, resp.ContentLength))
	}
	body, _ := io.ReadAll(io.LimitReader(resp.Body, 2048))
	he := &HTTPError{StatusCode: resp.StatusCode, Status: resp.Status, URL: redact.URL(sr.GetUrl()), Code: errorCode(body)}
	if sr.GetExpireTime() != nil {
		he.Expire = sr.GetExpireTime().AsTime()
	}
	switch {
	case resp.StatusCode >= 500, resp.StatusCode == http.StatusTooManyRequests:
		return 0, he
	case resp.StatusCode == http.StatusRequestedRangeNotSatisfiable:
		return 0, permanent(fmt.Errorf("%w: %w", ErrShortRange, he))
	}
	return 0, permanent(he)
}

// parseContentRange parses "bytes first-last/total" (total may be "*").
func parseContentRange(s string) (first, last int64, ok bool) {
	s, found := strings.CutPrefix(s, "bytes ")
	if !found {
		return 0, 0, false
	}
	rng, _, found := strings.Cut(s, "/")
	if !found {
		return 0, 0, false
	}
	a, b, found := strings.Cut(rng, "-")
	if !found {
		return 0, 0, false
	}
	first, err1 := strconv.ParseInt(a, 10, 64)
	last, err2 := strconv.ParseInt(b, 10, 64)
	if err1 != nil || err2 != nil || first < 0 {
		return 0, 0, false
	}
	return first, last, true
}

// stallReader cancels its request when a Read waits longer than the stall
// timeout, and counts the bytes it delivers.
type stallReader struct {
	r      io.Reader
	timer  *time.Timer
	count  func(int)
	cancel context.CancelCauseFunc
}

func newStallReader(r io.Reader, cancel context.CancelCauseFunc, count func(int)) *stallReader {
	t := time.AfterFunc(stallTimeout, func() { cancel(errStalled) })
	t.Stop()
	return &stallReader{r: r, timer: t, count: count, cancel: cancel}
}

func (s *stallReader) Read(p []byte) (int, error) {
	s.timer.Reset(stallTimeout)
	n, err := s.r.Read(p)
	s.timer.Stop()
	if n > 0 {
		s.count(n)
	}
	return n, err
}

func discard(r io.Reader, n int64) error {
	got, err := io.CopyN(io.Discard, r, n)
	if errors.Is(err, io.EOF) || (err == nil && got < n) {
		err = io.ErrUnexpectedEOF
	}
	return err
}
