package e2e

import (
	"context"
	"io"
	"net/http"
	"net/http/cookiejar"
	"net/url"
	"regexp"
	"strings"
	"testing"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/types/known/durationpb"

	"github.com/sandkeep/sandkeep/internal/coordtest"
	pb "github.com/sandkeep/sandkeep/proto/sandkeep/v1"
)

// browserless is an HTTP client with a cookie jar that does not follow
// redirects (the tests look at them).
func browserless(t *testing.T) *http.Client {
	t.Helper()
	jar, err := cookiejar.New(nil)
	if err != nil {
		t.Fatal(err)
	}
	return &http.Client{Jar: jar, Timeout: 30 * time.Second, CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }}
}

func consoleLink(t *testing.T, c *coordtest.Coordinator, project string, ttl time.Duration) string {
	t.Helper()
	resp, err := c.Admin.CreateConsoleLink(context.Background(), &pb.CreateConsoleLinkRequest{ProjectId: project, Ttl: durationpb.New(ttl)})
	if err != nil {
		t.Fatal(err)
	}
	return resp.GetUrl()
}

type webPage struct {
	code int
	body string
	hdr  http.Header
}

func get(t *testing.T, cl *http.Client, u string) webPage {
	t.Helper()
	resp, err := cl.Get(u)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return webPage{resp.StatusCode, string(b), resp.Header}
}

func post(t *testing.T, cl *http.Client, u string, form url.Values) webPage {
	t.Helper()
	resp, err := cl.PostForm(u, form)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return webPage{resp.StatusCode, string(b), resp.Header}
}

var csrfRE = regexp.MustCompile(`name="csrf" value="([^"]+)"`)

// TestConsoleAuth attacks the console's sessions: login links work once,
// not after expiry, not altered; cookies are HttpOnly and SameSite=Strict;
// a project-scoped session gets 404 for another project's pages and
// actions; a POST without the CSRF token is refused and changes nothing;
// nothing of the admin token reaches the browser; logout ends the session.
func TestConsoleAuth(t *testing.T) {
	c := coordtest.Start(t, coordtest.Options{})
	pa, _ := c.Project(t, "alpha")
	pbID, _ := c.Project(t, "beta")
	putFiles(t, c, pbID, [2]string{"secret.txt", "beta's secret"})
	ctx := context.Background()

	// No session: 401 with what to do.
	anon := browserless(t)
	if p := get(t, anon, c.HTTP+"/ui/"); p.code != 401 || !strings.Contains(p.body, "sandkeep console-url") {
		t.Fatalf("no session: %d %q", p.code, p.body)
	}

	// A project-scoped login.
	link := consoleLink(t, c, pa, time.Minute)
	if !strings.HasPrefix(link, c.HTTP+"/ui/login?") {
		t.Fatalf("link %q", link)
	}
	owner := browserless(t)
	p := get(t, owner, link)
	if p.code != 200 || !strings.Contains(p.body, `url=/ui/p/`+pa) {
		t.Fatalf("login: %d %q", p.code, p.body)
	}
	ck := p.hdr.Get("Set-Cookie")
	for _, want := range []string{"HttpOnly", "SameSite=Strict", "Path=/ui/"} {
		if !strings.Contains(ck, want) {
			t.Fatalf("session cookie %q lacks %s", ck, want)
		}
	}
	if strings.Contains(ck, "Secure") {
		t.Fatalf("cookie %q is Secure on plain HTTP (the browser would drop it)", ck)
	}
	// Single use, even by another browser.
	if p := get(t, browserless(t), link); p.code != 403 || !strings.Contains(p.body, "used already") {
		t.Fatalf("second use of a login link: %d %q", p.code, p.body)
	}
	// Altered scope: the signature no longer matches.
	if p := get(t, browserless(t), strings.Replace(link, "p="+pa, "p="+pbID, 1)); p.code != 403 || !strings.Contains(p.body, "not valid") {
		t.Fatalf("altered link: %d %q", p.code, p.body)
	}
	// Expired.
	short := consoleLink(t, c, pa, time.Second)
	u, _ := url.Parse(short)
	q := u.Query()
	q.Set("exp", "1")
	u.RawQuery = q.Encode()
	if p := get(t, browserless(t), u.String()); p.code != 403 {
		t.Fatalf("link with an earlier expiry: %d", p.code)
	}
	if _, err := c.Admin.CreateConsoleLink(ctx, &pb.CreateConsoleLinkRequest{ProjectId: "prj_nope"}); status.Code(err) != codes.NotFound {
		t.Fatalf("link for an unknown project: %v", err)
	}
	if _, err := c.Admin.CreateConsoleLink(ctx, &pb.CreateConsoleLinkRequest{Ttl: durationpb.New(48 * time.Hour)}); status.Code(err) != codes.InvalidArgument {
		t.Fatalf("link ttl of 48h: %v", err)
	}

	// The owner sees its project ...
	p = get(t, owner, c.HTTP+"/ui/p/"+pa)
	if p.code != 200 || !strings.Contains(p.body, "alpha") {
		t.Fatalf("own project page: %d", p.code)
	}
	if strings.Contains(p.body, c.Server.AdminToken) || strings.Contains(ck, c.Server.AdminToken) {
		t.Fatal("the admin token reached the browser")
	}
	m := csrfRE.FindStringSubmatch(p.body)
	if m == nil {
		t.Fatal("no CSRF token in the page's forms")
	}
	csrf := m[1]
	// ... and nothing of another's: pages, files, links and actions are 404.
	for _, path := range []string{"/ui/p/" + pbID, "/ui/p/" + pbID + "/versions", "/ui/p/" + pbID + "/files", "/ui/p/" + pbID + "/file?path=secret.txt",
		"/ui/p/" + pbID + "/raw?path=secret.txt", "/ui/p/" + pbID + "/cost.svg", "/ui/p/" + pbID + "/diff?a=0&b=1"} {
		if p := get(t, owner, c.HTTP+path); p.code != 404 || strings.Contains(p.body, "secret") {
			t.Fatalf("GET %s as alpha's owner: %d", path, p.code)
		}
	}
	for _, action := range []string{"ensure", "stop", "destroy", "flush", "rollback", "pin", "policy", "delete", "remove", "upload"} {
		if p := post(t, owner, c.HTTP+"/ui/p/"+pbID+"/"+action, url.Values{"csrf": {csrf}, "version": {"1"}, "path": {"secret.txt"}, "confirm": {"beta"}}); p.code != 404 {
			t.Fatalf("POST %s on beta as alpha's owner: %d", action, p.code)
		}
	}
	// The admin pages send a project session to its project.
	if p := get(t, owner, c.HTTP+"/ui/projects"); p.code != 303 || p.hdr.Get("Location") != "/ui/p/"+pa {
		t.Fatalf("projects as an owner: %d %s", p.code, p.hdr.Get("Location"))
	}
	// A POST without (or with a wrong) CSRF token is refused and does nothing.
	for _, form := range []url.Values{{"confirm": {"alpha"}}, {"confirm": {"alpha"}, "csrf": {"x" + csrf}}} {
		if p := post(t, owner, c.HTTP+"/ui/p/"+pa+"/delete", form); p.code != 403 || !strings.Contains(p.body, "CSRF") {
			t.Fatalf("delete without the CSRF token: %d %q", p.code, p.body)
		}
	}
	if _, err := c.Admin.GetProject(ctx, &pb.GetProjectRequest{ProjectId: pa}); err != nil {
		t.Fatalf("the project went with a refused POST: %v", err)
	}
	// Delete needs the typed name.
	if p := post(t, owner, c.HTTP+"/ui/p/"+pa+"/delete", url.Values{"csrf": {csrf}, "confirm": {"alph"}}); p.code != 400 {
		t.Fatalf("delete with the wrong name typed: %d", p.code)
	}

	// An admin session sees both; the beta page lists its file.
	admin := browserless(t)
	get(t, admin, consoleLink(t, c, "", time.Minute))
	if p := get(t, admin, c.HTTP+"/ui/"); p.code != 200 || !strings.Contains(p.body, "Background work since") || !strings.Contains(p.body, "Sandboxes by state") {
		t.Fatalf("overview as admin: %d %q", p.code, p.body)
	}
	if p := get(t, admin, c.HTTP+"/ui/projects"); p.code != 200 || !strings.Contains(p.body, "alpha") || !strings.Contains(p.body, "beta") {
		t.Fatalf("projects as admin: %d", p.code)
	}
	if p := get(t, admin, c.HTTP+"/ui/p/"+pbID+"/files"); p.code != 200 || !strings.Contains(p.body, "secret.txt") {
		t.Fatalf("beta's files as admin: %d", p.code)
	}
	if p := get(t, admin, c.HTTP+"/ui/p/"+pbID+"/cost.svg"); p.code != 200 || !strings.HasPrefix(p.body, "<svg") || p.hdr.Get("Content-Type") != "image/svg+xml" {
		t.Fatalf("cost chart: %d %q", p.code, p.body[:min(len(p.body), 40)])
	}

	// Logout ends the session.
	if p := post(t, owner, c.HTTP+"/ui/logout", url.Values{"csrf": {csrf}}); p.code != 200 {
		t.Fatalf("logout: %d", p.code)
	}
	if p := get(t, owner, c.HTTP+"/ui/p/"+pa); p.code != 401 {
		t.Fatalf("after logout: %d", p.code)
	}
	// Every page carries a CSP that loads nothing from elsewhere.
	if csp := get(t, anon, c.HTTP+"/ui/").hdr.Get("Content-Security-Policy"); !strings.Contains(csp, "default-src 'self'") || !strings.Contains(csp, "frame-ancestors 'none'") {
		t.Fatalf("CSP %q", csp)
	}
}
