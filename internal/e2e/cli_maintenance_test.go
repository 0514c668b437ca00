package e2e

import (
	"bytes"
	"context"
	"encoding/json"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/types/known/durationpb"

	"github.com/sandkeep/sandkeep/internal/agent"
	"github.com/sandkeep/sandkeep/internal/coordtest"
	pb "github.com/sandkeep/sandkeep/proto/sandkeep/v1"
)

// cliMaintenance checks version pin|unpin, retention set|show, gc and
// project delete through the built binaries (a part of
// TestCLIBrowseContract, which builds them).
func cliMaintenance(t *testing.T, coord, agentBin string, s servedCoordinator) {
	admin := []string{"SANDKEEP_COORDINATOR=" + s.grpc, "SANDKEEP_DATA=" + s.data}
	run := func(env []string, wantOK bool, name string, args ...string) (string, string) {
		t.Helper()
		cmd := exec.Command(name, args...)
		cmd.Env = append(os.Environ(), env...)
		var out, errb bytes.Buffer
		cmd.Stdout, cmd.Stderr = &out, &errb
		err := cmd.Run()
		if wantOK != (err == nil) {
			t.Fatalf("%s %v: err %v (want ok=%v)\nstdout: %s\nstderr: %s", filepath.Base(name), args, err, wantOK, out.String(), errb.String())
		}
		return out.String(), errb.String()
	}
	project, _ := run(admin, true, coord, "project", "create", "maint")
	project = strings.TrimSpace(project)
	token, _ := run(admin, true, coord, "token", "create", "--project", project)
	token = strings.TrimSpace(token)
	ws := filepath.Join(t.TempDir(), "ws")
	agentEnv := []string{"SANDKEEP_COORDINATOR=" + s.grpc, "SANDKEEP_TOKEN=" + token, "SANDKEEP_CACHE_DIR=" + t.TempDir()}
	for i := 1; i <= 3; i++ {
		writeFile(t, ws, "f.txt", strings.Repeat("version "+strconv.Itoa(i)+" ", 1000))
		out, _ := run(agentEnv, true, agentBin, "sync", "--once", "--workspace", ws)
		if lastLine(out) != strconv.Itoa(i) {
			t.Fatalf("sync %d printed %q", i, out)
		}
	}

	// Pin version 1; keep only the newest otherwise.
	if out, _ := run(admin, true, coord, "version", "pin", "--project", project, "--version", "1"); strings.TrimSpace(out) != "version 1 pinned" {
		t.Fatalf("version pin printed %q", out)
	}
	var pol struct {
		KeepLast int64   `json:"keep_last"`
		KeepDays float64 `json:"keep_days"`
	}
	out, _ := run(admin, true, coord, "retention", "show", "--project", project, "--json")
	if err := json.Unmarshal([]byte(out), &pol); err != nil || pol.KeepLast != 50 || pol.KeepDays != 30 {
		t.Fatalf("default retention: %q, %v", out, err)
	}
	if out, _ := run(admin, true, coord, "retention", "set", "--project", project, "--keep-last", "1", "--keep-days", "0"); out != "keep-last 1\nkeep-days 0\n" {
		t.Fatalf("retention set printed %q", out)
	}
	if out, _ := run(admin, true, coord, "retention", "set", "--project", project, "--keep-last", "2"); out != "keep-last 2\nkeep-days 0\n" {
		t.Fatalf("retention set --keep-last alone printed %q (keep-days must be kept)", out)
	}
	run(admin, true, coord, "retention", "set", "--project", project, "--keep-last", "1")
	run(admin, false, coord, "retention", "set", "--project", project)

	// gc --dry-run changes nothing; gc drops version 2 (neither pinned,
	// nor the newest, nor young enough).
	countVersions := func() []int64 {
		out, _ := run(admin, true, coord, "versions", "--project", project, "--json")
		var vs []struct{ Number int64 }
		if err := json.Unmarshal([]byte(out), &vs); err != nil {
			t.Fatal(err)
		}
		var n []int64
		for _, v := range vs {
			n = append(n, v.Number)
		}
		return n
	}
	if out, _ := run(admin, true, coord, "gc", "--project", project, "--dry-run"); !strings.Contains(out, "dry run") || !strings.Contains(out, "1 version deleted") ||
		!strings.Contains(out, "freed") {
		t.Fatalf("gc --dry-run printed %q", out)
	}
	if n := countVersions(); len(n) != 3 {
		t.Fatalf("versions after a dry run: %v", n)
	}
	// versions --limit N: the N newest, in the table and in JSON.
	out, _ = run(admin, true, coord, "versions", "--project", project, "--limit", "2", "--json")
	var limited []struct{ Number int64 }
	if err := json.Unmarshal([]byte(out), &limited); err != nil || len(limited) != 2 || limited[0].Number != 3 || limited[1].Number != 2 {
		t.Fatalf("versions --limit 2 --json: %q, %v", out, err)
	}
	if out, _ := run(admin, true, coord, "versions", "--project", project, "--limit", "1"); len(strings.Split(strings.TrimSpace(out), "\n")) != 2 ||
		!strings.HasPrefix(out, "NUMBER") || !strings.HasPrefix(strings.Split(out, "\n")[1], "3 ") {
		t.Fatalf("versions --limit 1:\n%s", out)
	}
	if out, _ := run(admin, true, coord, "gc", "--project", project); strings.Contains(out, "dry run") || !strings.Contains(out, "1 version deleted") ||
		!strings.Contains(out, "freed") || strings.Count(out, "\n") != 1 {
		t.Fatalf("gc printed %q", out)
	}
	if n := countVersions(); len(n) != 2 || n[0] != 3 || n[1] != 1 {
		t.Fatalf("versions after gc: %v, want [3 1]", n)
	}
	if out, _ := run(admin, true, coord, "get", "--project", project, "f.txt", "--version", "1"); out != strings.Repeat("version 1 ", 1000) {
		t.Fatalf("pinned version 1 after gc: %d bytes", len(out))
	}
	if out, _ := run(admin, true, coord, "version", "unpin", "--project", project, "--version", "1"); strings.TrimSpace(out) != "version 1 unpinned" {
		t.Fatalf("version unpin printed %q", out)
	}
	run(admin, true, coord, "gc") // every project

	// project delete: prints the bytes freed; links and tokens stop at once.
	link, _ := run(admin, true, coord, "link", "--project", project, "f.txt")
	if r := httpDo(t, "GET", strings.TrimSpace(link), nil); r.status != 200 || r.err != nil {
		t.Fatalf("link before delete: %d %v", r.status, r.err)
	}
	out, errOut := run(admin, true, coord, "project", "delete", project)
	if n, err := strconv.ParseInt(strings.TrimSpace(out), 10, 64); err != nil || n <= 0 {
		t.Fatalf("project delete printed %q (stderr %q), want the bytes freed", out, errOut)
	}
	if r := httpDo(t, "GET", strings.TrimSpace(link), nil); r.status != http.StatusNotFound {
		t.Fatalf("link after delete: %d", r.status)
	}
	if _, errOut := run(admin, false, coord, "versions", "--project", project); !strings.Contains(errOut, "NotFound") {
		t.Fatalf("versions of a deleted project: %q", errOut)
	}
	if _, errOut := run(agentEnv, false, agentBin, "sync", "--once", "--workspace", ws); !strings.Contains(errOut, "Unauthenticated") {
		t.Fatalf("sync with a deleted project's token: %q", errOut)
	}
	if entries, err := os.ReadDir(filepath.Join(s.data, "blobs", "projects", project)); err == nil && len(entries) > 0 {
		t.Fatalf("objects left under the deleted project's prefix: %v", entries)
	}
}

// TestDeleteProjectStopsLinksAtOnce: over gRPC and HTTP, a deleted project's
// signed links and admin-bearer URLs answer 404 at once, its token is
// refused, the session stream its agent holds open is ended, the admin API
// knows it no more, and the other project is untouched.
func TestDeleteProjectStopsLinksAtOnce(t *testing.T) {
	c := coordtest.Start(t, coordtest.Options{})
	ctx := context.Background()
	pidA, tokA := c.Project(t, "a")
	pidB, tokB := c.Project(t, "b")
	for _, tok := range []string{tokA, tokB} {
		ws := filepath.Join(t.TempDir(), "ws")
		writeFile(t, ws, "x.txt", "data of "+tok[:8])
		if _, err := agent.SyncOnce(ctx, agentConfig(c, tok, ws, t)); err != nil {
			t.Fatal(err)
		}
	}
	linkA, linkB := createLink(t, c, pidA, "x.txt", 0), createLink(t, c, pidB, "x.txt", 0)
	admin := map[string]string{"Authorization": "Bearer " + c.Server.AdminToken}
	bearerA := c.HTTP + "/v1/projects/" + pidA + "/files/x.txt"
	bearerB := c.HTTP + "/v1/projects/" + pidB + "/files/x.txt"
	for _, u := range []struct {
		url string
		hdr map[string]string
	}{{linkA, nil}, {bearerA, admin}} {
		if r := httpDo(t, "GET", u.url, u.hdr); r.status != 200 {
			t.Fatalf("GET %s before deletion: %d", u.url, r.status)
		}
	}
	// A's agent holds a session stream open (authenticated before the
	// deletion), as does B's.
	openSession := func(token, id string) pb.AgentService_SessionClient {
		t.Helper()
		sctx, cancel := context.WithCancel(ctx)
		t.Cleanup(cancel)
		st, err := c.AgentConn(t, token).Session(sctx)
		if err != nil {
			t.Fatal(err)
		}
		if err := st.Send(&pb.SessionRequest{Msg: &pb.SessionRequest_Heartbeat{Heartbeat: &pb.Heartbeat{SessionId: id}}}); err != nil {
			t.Fatal(err)
		}
		return st
	}
	sessA, sessB := openSession(tokA, "session-a"), openSession(tokB, "session-b")
	// Both are registered and served: a flush of each project reaches its
	// agent (A's stays unanswered: the deletion must end it).
	flushA := make(chan error, 1)
	go func() {
		_, err := c.Admin.FlushProject(ctx, &pb.FlushProjectRequest{ProjectId: pidA, Timeout: durationpb.New(time.Hour)})
		flushA <- err
	}()
	if m, err := sessA.Recv(); err != nil || m.GetCommand().GetFlush() == nil {
		t.Fatalf("A's session before the deletion: %v, %v", m, err)
	}

	resp, err := c.Admin.DeleteProject(ctx, &pb.DeleteProjectRequest{ProjectId: pidA})
	if err != nil || resp.GetBytesFreed() <= 0 || resp.GetObjectsDeleted() <= 0 {
		t.Fatalf("delete: %v, %v", resp, err)
	}
	// A's open session stream ends at once, Unauthenticated, and the flush
	// that waited for it fails.
	if _, err := sessA.Recv(); status.Code(err) != codes.Unauthenticated {
		t.Fatalf("A's open session after the deletion: %v, want Unauthenticated", err)
	}
	select {
	case err := <-flushA:
		if err == nil {
			t.Fatal("a flush of the deleted project's agent succeeded")
		}
	case <-time.After(time.Minute):
		t.Fatal("a flush of the deleted project's agent still waits")
	}
	if r := httpDo(t, "GET", linkA, nil); r.status != http.StatusNotFound {
		t.Errorf("A's link after deletion: %d", r.status)
	}
	if r := httpDo(t, "GET", bearerA, admin); r.status != http.StatusNotFound {
		t.Errorf("A's file with the admin token after deletion: %d", r.status)
	}
	if r := httpDo(t, "GET", linkB, nil); r.status != 200 {
		t.Errorf("B's link after A's deletion: %d", r.status)
	}
	if r := httpDo(t, "GET", bearerB, admin); r.status != 200 {
		t.Errorf("B's file with the admin token after A's deletion: %d", r.status)
	}
	// The admin API knows A no more.
	if _, err := c.Admin.ListVersions(ctx, &pb.ListVersionsRequest{ProjectId: pidA}); status.Code(err) != codes.NotFound {
		t.Errorf("ListVersions of the deleted project: %v", err)
	}
	if _, err := c.Admin.CreateFileLink(ctx, &pb.CreateFileLinkRequest{ProjectId: pidA, Path: "x.txt"}); status.Code(err) != codes.NotFound {
		t.Errorf("CreateFileLink in the deleted project: %v", err)
	}
	if _, err := readFileRPC(t, c, pidA, "x.txt", 0); status.Code(err) != codes.NotFound {
		t.Errorf("ReadFile of the deleted project: %v", err)
	}
	// B's session is still open: it gets B's flush command.
	go func() { _, _ = c.Admin.FlushProject(ctx, &pb.FlushProjectRequest{ProjectId: pidB}) }()
	if m, err := sessB.Recv(); err != nil || m.GetCommand().GetFlush() == nil {
		t.Fatalf("B's session after A's deletion: %v, %v", m, err)
	}
	if _, err := c.Admin.DeleteProject(ctx, &pb.DeleteProjectRequest{ProjectId: pidA}); status.Code(err) != codes.NotFound {
		t.Errorf("deleting again: %v", err)
	}
	if _, err := c.AgentConn(t, tokA).OpenSession(ctx, &pb.OpenSessionRequest{}); status.Code(err) != codes.Unauthenticated {
		t.Errorf("A's token after deletion: %v", err)
	}
}
