package e2e

import (
	"bytes"
	"context"
	"crypto/rand"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/types/known/durationpb"

	"github.com/sandkeep/sandkeep/internal/agent"
	"github.com/sandkeep/sandkeep/internal/coordtest"
	"github.com/sandkeep/sandkeep/internal/id"
	"github.com/sandkeep/sandkeep/internal/links"
	"github.com/sandkeep/sandkeep/internal/repo"
	"github.com/sandkeep/sandkeep/internal/server"
	"github.com/sandkeep/sandkeep/internal/testclock"
	"github.com/sandkeep/sandkeep/internal/urlsign"
	"github.com/sandkeep/sandkeep/internal/workspacetest"
	pb "github.com/sandkeep/sandkeep/proto/sandkeep/v1"
)

// noRedirects never follows a redirect: a link answers itself or not at all.
var noRedirects = &http.Client{
	CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse },
	Timeout:       60 * time.Second,
}

type httpResult struct {
	status int
	header http.Header
	body   []byte
	err    error // reading the body
}

func httpDo(t *testing.T, method, rawURL string, hdr map[string]string) httpResult {
	t.Helper()
	req, err := http.NewRequest(method, rawURL, nil)
	if err != nil {
		t.Fatalf("request %s: %v", rawURL, err)
	}
	for k, v := range hdr {
		req.Header.Set(k, v)
	}
	resp, err := noRedirects.Do(req)
	if err != nil {
		t.Fatalf("%s %s: %v", method, rawURL, err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	return httpResult{status: resp.StatusCode, header: resp.Header, body: b, err: err}
}

func createLink(t *testing.T, c *coordtest.Coordinator, project, path string, version int64) string {
	t.Helper()
	resp, err := c.Admin.CreateFileLink(context.Background(), &pb.CreateFileLinkRequest{ProjectId: project, Path: path, Version: version})
	if err != nil {
		t.Fatalf("link %s: %v", path, err)
	}
	return resp.GetUrl()
}

// TestFileLinksOutliveTheSandbox: files downloaded by link after the agent
// stopped and its workspace was deleted are byte-identical, with the
// headers a browser or a download manager needs.
func TestFileLinksOutliveTheSandbox(t *testing.T) {
	for _, b := range backends {
		t.Run(b.name, func(t *testing.T) {
			c := coordtest.Start(t, b.opts)
			pid, token := c.Project(t, "links-"+b.name)
			ws := filepath.Join(t.TempDir(), "ws")
			workspacetest.Generate(t, ws, workspacetest.Options{SmallFiles: 30, LargeSize: 9<<20 + 4321, Seed: 21})
			t.Cleanup(func() { workspacetest.MakeWritable(ws) })
			writeFile(t, ws, "docs/report v1.pdf", "%PDF-1.4 not really a pdf")
			writeFile(t, ws, "data/sheet.csv", "a,b\n1,2\n")
			a := startAgent(t, c, token, ws, agent.RunOptions{}, "")
			v := a.flush()
			want := map[string][]byte{}
			for _, p := range []string{"large/big.bin", "docs/report v1.pdf", "data/sheet.csv", "ünïcödé/日本語.txt", "with space/file name.txt", "empty.txt", "README.md"} {
				data, err := os.ReadFile(filepath.Join(ws, p))
				if err != nil {
					t.Fatal(err)
				}
				want[p] = data
			}
			urls := map[string]string{}
			for p := range want {
				urls[p] = createLink(t, c, pid, p, 0)
				if !strings.HasPrefix(urls[p], c.HTTP+"/v1/projects/"+pid+"/files/") || !strings.Contains(urls[p], fmt.Sprintf("version=%d", v)) {
					t.Fatalf("link of %s = %s", p, urls[p])
				}
			}
			// The sandbox goes away entirely.
			if err := a.stopGracefully(); err != nil {
				t.Fatal(err)
			}
			workspacetest.MakeWritable(ws)
			if err := os.RemoveAll(ws); err != nil {
				t.Fatal(err)
			}

			files, err := c.Admin.ListFiles(context.Background(), &pb.ListFilesRequest{ProjectId: pid, PageSize: 10000})
			if err != nil {
				t.Fatal(err)
			}
			checksum := map[string]string{}
			for _, f := range files.GetFiles() {
				checksum[f.GetPath()] = f.GetChecksum()
			}
			for p, data := range want {
				r := httpDo(t, "GET", urls[p], nil)
				if r.status != 200 || r.err != nil || !bytes.Equal(r.body, data) {
					t.Fatalf("GET %s: status %d, %d bytes (want %d), err %v", p, r.status, len(r.body), len(data), r.err)
				}
				if got := r.header.Get("Content-Length"); got != fmt.Sprint(len(data)) {
					t.Errorf("%s: Content-Length %s, want %d", p, got, len(data))
				}
				if got, w := r.header.Get("ETag"), `"`+checksum[p]+`"`; got != w || checksum[p] == "" {
					t.Errorf("%s: ETag %s, want %s", p, got, w)
				}
				if got, w := r.header.Get("Content-Type"), repo.ContentType(filepath.Base(p)); got != w {
					t.Errorf("%s: Content-Type %s, want %s", p, got, w)
				}
				if r.header.Get("Accept-Ranges") != "bytes" || r.header.Get("Last-Modified") == "" {
					t.Errorf("%s: headers %v", p, r.header)
				}
				// HEAD: the same headers, no body.
				h := httpDo(t, "HEAD", urls[p], nil)
				if h.status != 200 || len(h.body) != 0 || h.header.Get("ETag") != r.header.Get("ETag") || h.header.Get("Content-Length") != r.header.Get("Content-Length") {
					t.Errorf("HEAD %s: %d %v", p, h.status, h.header)
				}
				// If-None-Match with the ETag: 304; with another: the file.
				nm := httpDo(t, "GET", urls[p], map[string]string{"If-None-Match": r.header.Get("ETag")})
				if nm.status != http.StatusNotModified || len(nm.body) != 0 || nm.header.Get("ETag") != r.header.Get("ETag") {
					t.Errorf("If-None-Match %s: %d", p, nm.status)
				}
				other := httpDo(t, "GET", urls[p], map[string]string{"If-None-Match": `"blake3:other", W/"x"`})
				if other.status != 200 || !bytes.Equal(other.body, data) {
					t.Errorf("If-None-Match another tag %s: %d", p, other.status)
				}
			}
			// The pdf's ETag is b3sum of its content (one chunk).
			if got := checksum["docs/report v1.pdf"]; got != "blake3:"+id.Sum(want["docs/report v1.pdf"]).String() {
				t.Errorf("checksum of a small file = %s", got)
			}

			// Ranges of the large file, across chunk boundaries.
			big := want["large/big.bin"]
			size := int64(len(big))
			for _, rg := range []struct {
				header     string
				start, end int64 // inclusive
			}{
				{"bytes=0-0", 0, 0},
				{"bytes=100-199", 100, 199},
				{"bytes=1000000-3999999", 1000000, 3999999},
				{fmt.Sprintf("bytes=%d-", size-5000), size - 5000, size - 1},
				{"bytes=-10", size - 10, size - 1},
				{fmt.Sprintf("bytes=5-%d", size+100), 5, size - 1},
				{fmt.Sprintf("bytes=-%d", size+100), 0, size - 1},
			} {
				r := httpDo(t, "GET", urls["large/big.bin"], map[string]string{"Range": rg.header})
				if r.status != http.StatusPartialContent || r.err != nil {
					t.Fatalf("Range %s: status %d, err %v", rg.header, r.status, r.err)
				}
				if !bytes.Equal(r.body, big[rg.start:rg.end+1]) {
					t.Fatalf("Range %s: wrong bytes (%d of them)", rg.header, len(r.body))
				}
				if got, w := r.header.Get("Content-Range"), fmt.Sprintf("bytes %d-%d/%d", rg.start, rg.end, size); got != w {
					t.Errorf("Range %s: Content-Range %s, want %s", rg.header, got, w)
				}
				if got := r.header.Get("Content-Length"); got != fmt.Sprint(rg.end-rg.start+1) {
					t.Errorf("Range %s: Content-Length %s", rg.header, got)
				}
			}
			for _, unsat := range []string{fmt.Sprintf("bytes=%d-", size), fmt.Sprintf("bytes=%d-%d", size+10, size+20), "bytes=-0"} {
				r := httpDo(t, "GET", urls["large/big.bin"], map[string]string{"Range": unsat})
				if r.status != http.StatusRequestedRangeNotSatisfiable || r.header.Get("Content-Range") != fmt.Sprintf("bytes */%d", size) {
					t.Errorf("Range %s: %d %v", unsat, r.status, r.header)
				}
			}
			// Several ranges, another unit, bad syntax, a stale If-Range: the
			// whole file.
			for _, hdr := range []map[string]string{
				{"Range": "bytes=0-1,5-6"}, {"Range": "items=0-1"}, {"Range": "bytes=x-y"}, {"Range": "bytes=5-1"},
				{"Range": "bytes=0-1", "If-Range": `"blake3:stale"`},
			} {
				r := httpDo(t, "GET", urls["large/big.bin"], hdr)
				if r.status != 200 || !bytes.Equal(r.body, big) {
					t.Errorf("%v: status %d, %d bytes", hdr, r.status, len(r.body))
				}
			}
			r := httpDo(t, "GET", urls["large/big.bin"], map[string]string{"Range": "bytes=0-1", "If-Range": checksumTag(checksum["large/big.bin"])})
			if r.status != http.StatusPartialContent || !bytes.Equal(r.body, big[:2]) {
				t.Errorf("matching If-Range: %d", r.status)
			}
			// The empty file: 200 with no body; any range is unsatisfiable.
			if r := httpDo(t, "GET", urls["empty.txt"], map[string]string{"Range": "bytes=0-"}); r.status != http.StatusRequestedRangeNotSatisfiable {
				t.Errorf("range of an empty file: %d", r.status)
			}
		})
	}
}

func checksumTag(c string) string { return `"` + c + `"` }

// TestFileLinkAccess: who may read what, and that refusals reveal nothing.
func TestFileLinkAccess(t *testing.T) {
	// Links expire by this clock (it starts at the real now; the links
	// signed below with real-time expiries are seconds or more apart from it).
	clock := testclock.New(time.Now())
	c := coordtest.Start(t, coordtest.Options{Config: server.Config{Now: clock.Now}})
	ctx := context.Background()
	pidA, tokA := c.Project(t, "a")
	pidB, tokB := c.Project(t, "b")
	for _, p := range []struct{ token, content string }{{tokA, "A's secret"}, {tokB, "B's secret"}} {
		ws := filepath.Join(t.TempDir(), "ws")
		writeFile(t, ws, "secret.txt", p.content)
		writeFile(t, ws, "dir/inner.txt", "inner")
		if _, err := agent.SyncOnce(ctx, agentConfig(c, p.token, ws, t)); err != nil {
			t.Fatal(err)
		}
	}
	linkA := createLink(t, c, pidA, "secret.txt", 1)
	if r := httpDo(t, "GET", linkA, nil); r.status != 200 || string(r.body) != "A's secret" {
		t.Fatalf("A's link: %d %q", r.status, r.body)
	}
	u, err := url.Parse(linkA)
	if err != nil {
		t.Fatal(err)
	}
	with := func(mod func(u *url.URL, q url.Values)) string {
		v := *u
		q := v.Query()
		mod(&v, q)
		v.RawQuery = q.Encode()
		return v.String()
	}
	base := c.HTTP + "/v1/projects/"
	admin := map[string]string{"Authorization": "Bearer " + c.Server.AdminToken}

	// Refused, whatever exists: the same status and body for an existing
	// and a missing file, project or version.
	type probe struct {
		name string
		url  string
		hdr  map[string]string
	}
	refusals := []struct {
		status int
		probes []probe
	}{
		{http.StatusForbidden, []probe{
			{"A's link with B's project id", with(func(u *url.URL, _ url.Values) { u.Path = strings.Replace(u.Path, pidA, pidB, 1) }), nil},
			{"A's link with a missing project id", with(func(u *url.URL, _ url.Values) { u.Path = strings.Replace(u.Path, pidA, "prj_missing", 1) }), nil},
			{"A's link to another existing file", with(func(u *url.URL, _ url.Values) { u.Path = strings.Replace(u.Path, "secret.txt", "dir/inner.txt", 1) }), nil},
			{"A's link to a missing file", with(func(u *url.URL, _ url.Values) { u.Path = strings.Replace(u.Path, "secret.txt", "nope.txt", 1) }), nil},
			{"version changed", with(func(_ *url.URL, q url.Values) { q.Set("version", "2") }), nil},
			{"version removed", with(func(_ *url.URL, q url.Values) { q.Del("version") }), nil},
			{"parameter added", with(func(_ *url.URL, q url.Values) { q.Set("download", "1") }), nil},
			{"expiry extended", with(func(_ *url.URL, q url.Values) { q.Set("exp", fmt.Sprint(time.Now().Add(1000*time.Hour).Unix())) }), nil},
			{"signature flipped", with(func(_ *url.URL, q url.Values) {
				s := []byte(q.Get("sig"))
				s[3] ^= 1
				q.Set("sig", string(s))
			}), nil},
			{"signature of another file", with(func(_ *url.URL, q url.Values) {
				other, _ := url.Parse(createLink(t, c, pidA, "dir/inner.txt", 1))
				q.Set("sig", other.Query().Get("sig"))
			}), nil},
			{"signature without expiry", with(func(_ *url.URL, q url.Values) { q.Del("exp") }), nil},
			{"A's sandbox token as bearer on A", base + pidA + "/files/secret.txt", map[string]string{"Authorization": "Bearer " + tokA}},
			{"A's sandbox token as bearer on B", base + pidB + "/files/secret.txt", map[string]string{"Authorization": "Bearer " + tokA}},
			{"B's sandbox token on a missing file", base + pidB + "/files/nope.txt", map[string]string{"Authorization": "Bearer " + tokB}},
		}},
		{http.StatusUnauthorized, []probe{
			{"no credentials, existing file", base + pidA + "/files/secret.txt", nil},
			{"no credentials, missing file", base + pidA + "/files/nope.txt", nil},
			{"no credentials, missing project", base + "prj_missing/files/secret.txt", nil},
			{"unknown token", base + pidA + "/files/secret.txt", map[string]string{"Authorization": "Bearer ska_unknown"}},
			{"garbage authorization", base + pidA + "/files/secret.txt", map[string]string{"Authorization": "Basic Zm9vOmJhcg=="}},
		}},
	}
	for _, group := range refusals {
		var first *httpResult
		for _, p := range group.probes {
			r := httpDo(t, "GET", p.url, p.hdr)
			if r.status != group.status {
				t.Errorf("%s: status %d, want %d (%q)", p.name, r.status, group.status, r.body)
				continue
			}
			if strings.Contains(string(r.body), "secret") {
				t.Errorf("%s: body %q", p.name, r.body)
			}
			if first == nil {
				first = &r
			} else if !bytes.Equal(first.body, r.body) || first.header.Get("Content-Type") != r.header.Get("Content-Type") || first.header.Get("Content-Length") != r.header.Get("Content-Length") {
				t.Errorf("%s: answer %q differs from %q: it reveals something", p.name, r.body, first.body)
			}
		}
	}

	// Expired: a link signed by this server with a past expiry.
	linker := links.NewLinker(c.Server.URLSigner, c.HTTP)
	expired := linker.Sign(pidA, "secret.txt", 1, time.Now().Add(-time.Second))
	if r := httpDo(t, "GET", expired, nil); r.status != http.StatusForbidden || strings.Contains(string(r.body), "secret") {
		t.Errorf("expired link: %d %q", r.status, r.body)
	}
	if r := httpDo(t, "GET", linker.Sign(pidA, "secret.txt", 1, time.Now().Add(time.Minute)), nil); r.status != 200 {
		t.Errorf("fresh link from the same signer: %d", r.status)
	}
	// And one made by the RPC with a short TTL, once it has passed.
	short, err := c.Admin.CreateFileLink(ctx, &pb.CreateFileLinkRequest{ProjectId: pidA, Path: "secret.txt", Ttl: durationpb.New(time.Second)})
	if err != nil {
		t.Fatal(err)
	}
	if r := httpDo(t, "GET", short.GetUrl(), nil); r.status != 200 {
		t.Errorf("link within its lifetime: %d", r.status)
	}
	clock.Advance(short.GetExpireTime().AsTime().Sub(clock.Now()) + time.Second) // past the link's expiry
	if r := httpDo(t, "GET", short.GetUrl(), nil); r.status != http.StatusForbidden {
		t.Errorf("link past its expiry: %d", r.status)
	}
	// A key other than the server's.
	otherSigner := links.NewLinker(mustSigner(t), c.HTTP)
	if r := httpDo(t, "GET", otherSigner.Sign(pidA, "secret.txt", 1, time.Now().Add(time.Hour)), nil); r.status != http.StatusForbidden {
		t.Errorf("link signed with another key: %d", r.status)
	}

	// The admin token reads any project, head or a version; an authorized
	// request for something missing is 404, one body for every kind.
	if r := httpDo(t, "GET", base+pidB+"/files/secret.txt", admin); r.status != 200 || string(r.body) != "B's secret" {
		t.Errorf("admin bearer: %d %q", r.status, r.body)
	}
	if r := httpDo(t, "GET", base+pidA+"/files/secret.txt?version=1", admin); r.status != 200 || string(r.body) != "A's secret" {
		t.Errorf("admin bearer, version 1: %d %q", r.status, r.body)
	}
	var notFound []byte
	for _, p := range []string{pidA + "/files/nope.txt", pidA + "/files/secret.txt?version=9", "prj_missing/files/secret.txt", pidA + "/files/dir", pidA + "/files/secret.txt/below"} {
		r := httpDo(t, "GET", base+p, admin)
		if r.status != http.StatusNotFound {
			t.Errorf("admin GET %s: %d, want 404", p, r.status)
		}
		if notFound == nil {
			notFound = r.body
		} else if !bytes.Equal(notFound, r.body) {
			t.Errorf("admin GET %s: 404 body %q differs from %q", p, r.body, notFound)
		}
	}

	// Hostile paths are refused (never served, never redirected), with
	// credentials that could read anything.
	for _, p := range []string{
		pidA + "/files/../../" + pidB + "/files/secret.txt",
		pidA + "/files/%2e%2e/%2e%2e/" + pidB + "/files/secret.txt",
		pidA + "/files/dir/../secret.txt",
		pidA + "/files/./secret.txt",
		pidA + "/files//etc/passwd",
		pidA + "/files/dir//inner.txt",
		pidA + "/files/secret.txt%00.png",
		pidA + "/files/dir/",
		pidA + "/files/",
		pidA + "/files/%2fetc%2fpasswd",
		pidA + "/files/secret.txt?version=-1",
		pidA + "/files/secret.txt?version=1&version=2",
		pidA + "/files/secret.txt?version=abc",
	} {
		r := httpDo(t, "GET", base+p, admin)
		if r.status != http.StatusBadRequest {
			t.Errorf("GET %s: %d (%q), want 400", p, r.status, r.body)
		}
	}
	// Only GET and HEAD.
	if r := httpDo(t, "POST", linkA, nil); r.status != http.StatusMethodNotAllowed {
		t.Errorf("POST: %d", r.status)
	}

	// The RPC refuses what it cannot link.
	for _, tc := range []struct {
		req  *pb.CreateFileLinkRequest
		want codes.Code
	}{
		{&pb.CreateFileLinkRequest{ProjectId: pidA, Path: "nope.txt"}, codes.NotFound},
		{&pb.CreateFileLinkRequest{ProjectId: pidA, Path: "dir"}, codes.InvalidArgument},
		{&pb.CreateFileLinkRequest{ProjectId: pidA, Path: "../x"}, codes.InvalidArgument},
		{&pb.CreateFileLinkRequest{ProjectId: pidA, Path: "secret.txt", Version: 7}, codes.NotFound},
		{&pb.CreateFileLinkRequest{ProjectId: "prj_missing", Path: "secret.txt"}, codes.NotFound},
		{&pb.CreateFileLinkRequest{ProjectId: pidA, Path: "secret.txt", Ttl: durationpb.New(400 * 24 * time.Hour)}, codes.InvalidArgument},
	} {
		if _, err := c.Admin.CreateFileLink(ctx, tc.req); status.Code(err) != tc.want {
			t.Errorf("CreateFileLink %v: %v, want %v", tc.req, err, tc.want)
		}
	}
}

// TestFileLinkCorruptChunkAbortsTheDownload: a chunk that fails its hash
// mid-stream aborts the connection: the client gets a short body (and an
// error), never wrong bytes.
func TestFileLinkCorruptChunkAbortsTheDownload(t *testing.T) {
	c := coordtest.Start(t, coordtest.Options{})
	ctx := context.Background()
	pid, token := c.Project(t, "corrupt-link")
	ws := filepath.Join(t.TempDir(), "ws")
	workspacetest.RandomFile(t, filepath.Join(ws, "big.bin"), 12<<20, 5)
	want, err := os.ReadFile(filepath.Join(ws, "big.bin"))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := agent.SyncOnce(ctx, agentConfig(c, token, ws, t)); err != nil {
		t.Fatal(err)
	}
	v, err := c.Server.Repo.ResolveVersion(ctx, pid, 0)
	if err != nil {
		t.Fatal(err)
	}
	n, err := c.Server.Repo.Lookup(ctx, pid, v.Root, "big.bin")
	if err != nil {
		t.Fatal(err)
	}
	if len(n.Chunks) < 4 {
		t.Fatalf("big.bin has %d chunks; the test needs at least 4", len(n.Chunks))
	}
	// Corrupt the third chunk where it is stored.
	victim := n.Chunks[2].ID
	locs, err := c.Server.Meta.LocateBlobs(ctx, pid, []id.ID{victim})
	if err != nil {
		t.Fatal(err)
	}
	l := locs[victim]
	key := repo.PackKey(pid, l.PackID)
	rc, err := c.Server.Blobs.Get(ctx, key, 0, -1)
	if err != nil {
		t.Fatal(err)
	}
	data, err := io.ReadAll(rc)
	rc.Close()
	if err != nil {
		t.Fatal(err)
	}
	data[l.Offset+l.Length/2] ^= 0x40
	if err := c.Server.Blobs.Put(ctx, key, bytes.NewReader(data), int64(len(data))); err != nil {
		t.Fatal(err)
	}
	good := int64(n.Chunks[0].Size) + int64(n.Chunks[1].Size)

	r := httpDo(t, "GET", createLink(t, c, pid, "big.bin", 0), nil)
	if r.status != 200 || r.err == nil {
		t.Fatalf("download of a corrupt file: status %d, body error %v (want a broken body)", r.status, r.err)
	}
	if int64(len(r.body)) > good || !bytes.Equal(r.body, want[:len(r.body)]) {
		t.Fatalf("got %d bytes before the abort; want at most the %d good ones, all correct", len(r.body), good)
	}
	// A range that starts in the corrupt chunk: refused before any byte.
	rg := fmt.Sprintf("bytes=%d-%d", good+10, good+20)
	if r := httpDo(t, "GET", createLink(t, c, pid, "big.bin", 0), map[string]string{"Range": rg}); r.status != http.StatusInternalServerError || bytes.Contains(r.body, want[good+10:good+21]) {
		t.Fatalf("range in the corrupt chunk: %d", r.status)
	}
	// A range before it is still served.
	if r := httpDo(t, "GET", createLink(t, c, pid, "big.bin", 0), map[string]string{"Range": "bytes=0-99"}); r.status != http.StatusPartialContent || !bytes.Equal(r.body, want[:100]) {
		t.Fatalf("range before the corrupt chunk: %d", r.status)
	}
	// Through gRPC: DATA_LOSS, and the bytes before it are correct.
	if _, err := readFileRPC(t, c, pid, "big.bin", 0); status.Code(err) != codes.DataLoss {
		t.Fatalf("ReadFile of a corrupt file: %v", err)
	}
}

func mustSigner(t *testing.T) *urlsign.Signer {
	t.Helper()
	key := make([]byte, 32)
	if _, err := rand.Read(key); err != nil {
		t.Fatal(err)
	}
	s, err := urlsign.New(key)
	if err != nil {
		t.Fatal(err)
	}
	return s
}
