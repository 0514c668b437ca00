package fakedaytona_test

import (
	"encoding/json"
	"io"
	"net/http"
	"net/url"
	"strings"
	"testing"

	"github.com/sandkeep/sandkeep/internal/provider/daytona/fakedaytona"
)

type client struct {
	t    *testing.T
	base string
	key  string
}

func (c client) do(method, path, body string) (int, map[string]any, http.Header) {
	c.t.Helper()
	var rd io.Reader
	if body != "" {
		rd = strings.NewReader(body)
	}
	req, err := http.NewRequestWithContext(c.t.Context(), method, c.base+path, rd)
	if err != nil {
		c.t.Fatal(err)
	}
	if c.key != "" {
		req.Header.Set("Authorization", "Bearer "+c.key)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		c.t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	var out map[string]any
	if len(b) > 0 && b[0] == '{' {
		if err := json.Unmarshal(b, &out); err != nil {
			c.t.Fatalf("%s %s: %v: %s", method, path, err, b)
		}
	}
	return resp.StatusCode, out, resp.Header
}

func TestErrorShapes(t *testing.T) {
	fake, base := fakedaytona.Start(t, fakedaytona.Options{Manual: true})
	anon := client{t, base, ""}
	st, body, _ := anon.do("GET", "/sandbox", "")
	if st != 401 || body["statusCode"] != float64(401) || body["message"] != "Unauthorized" || body["path"] != "/api/sandbox" || body["timestamp"] == nil {
		t.Fatalf("401: %d %v", st, body)
	}
	c := client{t, base, fake.APIKey()}
	if st, body, _ := c.do("GET", "/nothing", ""); st != 404 || !strings.Contains(body["message"].(string), "Cannot GET") {
		t.Fatalf("unknown path: %d %v", st, body)
	}
	if st, body, _ := c.do("GET", "/sandbox/abc", ""); st != 404 || body["message"] != "Sandbox with ID abc not found" || body["error"] != "Not Found" {
		t.Fatalf("missing sandbox: %d %v", st, body)
	}
	if st, body, _ := c.do("POST", "/sandbox", `{"snapshot":"s","cpu":2}`); st != 400 || body["message"] != "Cannot specify Sandbox resources when using a snapshot" {
		t.Fatalf("resources with a snapshot: %d %v", st, body)
	}
	st, body, _ = c.do("POST", "/sandbox", `{"labels":{"k":"v"},"env":{"A":"1"}}`)
	if st != 200 || body["state"] != "creating" || body["desiredState"] != "started" || body["autoStopInterval"] != float64(15) || body["createdAt"] == nil {
		t.Fatalf("create: %d %v", st, body)
	}
	id := body["id"].(string)
	if st, body, _ := c.do("POST", "/sandbox/"+id+"/stop", ""); st != 409 || body["code"] != "SANDBOX_STATE_CHANGE_IN_PROGRESS" {
		t.Fatalf("stop while creating: %d %v", st, body)
	}
	fake.Advance(id)
	if st, body, _ := c.do("POST", "/sandbox/"+id+"/archive", ""); st != 400 || body["code"] != "SANDBOX_STATE_ERROR" || body["message"] != "Sandbox is not stopped" {
		t.Fatalf("archive while started: %d %v", st, body)
	}
	// Faults: limited to matching requests, counted down.
	fake.FailNext(fakedaytona.Fault{Status: 503, Count: 2, RetryAfter: "2", Match: func(mp string) bool { return strings.HasPrefix(mp, "GET /sandbox/") }})
	if st, _, _ := c.do("GET", "/sandbox", ""); st != 200 {
		t.Fatalf("unmatched request failed: %d", st)
	}
	for range 2 {
		if st, _, h := c.do("GET", "/sandbox/"+id, ""); st != 503 || h.Get("Retry-After") != "2" {
			t.Fatalf("fault: %d %v", st, h)
		}
	}
	if st, _, _ := c.do("GET", "/sandbox/"+id, ""); st != 200 {
		t.Fatalf("after the faults: %d", st)
	}
	// Another organization is forbidden.
	req, _ := http.NewRequestWithContext(t.Context(), "GET", base+"/sandbox", nil)
	req.Header.Set("Authorization", "Bearer "+fake.APIKey())
	req.Header.Set(fakedaytona.OrganizationHeader, "other")
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != 403 {
		t.Fatalf("other organization: %d", resp.StatusCode)
	}
	reqs := fake.Requests()
	if last := reqs[len(reqs)-1]; last.Authorized || last.Status != 403 || last.Organization != "other" {
		t.Fatalf("request log: %+v", last)
	}
}

func TestPollsAndList(t *testing.T) {
	fake, base := fakedaytona.Start(t, fakedaytona.Options{Polls: 2})
	c := client{t, base, fake.APIKey()}
	_, body, _ := c.do("POST", "/sandbox", `{"labels":{"p":"1","q":"x"}}`)
	id := body["id"].(string)
	var seen []string
	for range 3 {
		_, b, _ := c.do("GET", "/sandbox/"+id, "")
		seen = append(seen, b["state"].(string))
	}
	if strings.Join(seen, ",") != "creating,creating,started" {
		t.Fatalf("states %v", seen)
	}
	c.do("POST", "/sandbox", `{"labels":{"p":"2"}}`)
	list := func(sel string) int {
		req, _ := http.NewRequestWithContext(t.Context(), "GET", base+"/sandbox?labels="+url.QueryEscape(sel), nil)
		req.Header.Set("Authorization", "Bearer "+fake.APIKey())
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		var out []map[string]any
		if err := json.NewDecoder(resp.Body).Decode(&out); err != nil {
			t.Fatal(err)
		}
		return len(out)
	}
	if n := list(`{"p":"1"}`); n != 1 {
		t.Fatalf("list p=1: %d", n)
	}
	if n := list(`{}`); n != 2 {
		t.Fatalf("list all: %d", n)
	}
	if n := list(`{"p":"1","q":"y"}`); n != 0 {
		t.Fatalf("list p=1,q=y: %d", n)
	}
	// Destroyed sandboxes leave the list and become "not found".
	c.do("DELETE", "/sandbox/"+id, "")
	for range 2 {
		c.do("GET", "/sandbox/"+id, "")
	}
	if st, _, _ := c.do("GET", "/sandbox/"+id, ""); st != 404 {
		t.Fatalf("destroyed sandbox: %d", st)
	}
	if n := list(`{"p":"1"}`); n != 0 {
		t.Fatalf("destroyed sandbox listed")
	}
}
