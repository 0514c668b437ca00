package e2e

import (
	"bytes"
	"context"
	"encoding/base64"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/chromedp/chromedp"

	"github.com/sandkeep/sandkeep/internal/blobstore"
	"github.com/sandkeep/sandkeep/internal/repo"
	"github.com/sandkeep/sandkeep/internal/workspacetest"
	pb "github.com/sandkeep/sandkeep/proto/sandkeep/v1"
)

// chromium finds the headless browser: $SANDKEEP_CHROMIUM, else chromium on
// PATH. Without one the browser tests skip, unless SANDKEEP_REQUIRE_BROWSER
// is set (as .ci/run sets it, after installing Debian's chromium).
func chromium(t *testing.T) string {
	t.Helper()
	if testing.Short() {
		t.Skip("drives a real headless Chromium; skipped with -short")
	}
	for _, c := range []string{os.Getenv("SANDKEEP_CHROMIUM"), "chromium", "chromium-browser", "google-chrome"} {
		if c == "" {
			continue
		}
		if p, err := exec.LookPath(c); err == nil {
			return p
		}
	}
	if os.Getenv("SANDKEEP_REQUIRE_BROWSER") != "" {
		t.Fatal("no chromium found and SANDKEEP_REQUIRE_BROWSER is set (apt-get install chromium)")
	}
	t.Skip("no chromium on PATH (apt-get install chromium, or set SANDKEEP_CHROMIUM)")
	return ""
}

// browser starts a headless Chromium at width×height and returns its
// context.
func browser(t *testing.T, width, height int) context.Context {
	t.Helper()
	opts := append(chromedp.DefaultExecAllocatorOptions[:],
		chromedp.ExecPath(chromium(t)),
		chromedp.NoSandbox, // the test may run as root
		chromedp.Flag("disable-dev-shm-usage", true),
		chromedp.WindowSize(width, height),
		chromedp.UserDataDir(t.TempDir()),
	)
	actx, cancelA := chromedp.NewExecAllocator(context.Background(), opts...)
	ctx, cancelC := chromedp.NewContext(actx)
	t.Cleanup(func() { cancelC(); cancelA() })
	if err := chromedp.Do(ctx); err != nil {
		t.Fatalf("start chromium: %v", err)
	}
	return ctx
}

// do runs steps with a bound, failing the test with what it was doing and
// the page it was on.
func do(t *testing.T, ctx context.Context, what string, steps ...chromedp.Action[chromedp.Void]) {
	t.Helper()
	c, cancel := context.WithTimeout(ctx, 90*time.Second)
	defer cancel()
	if err := chromedp.Do(c, steps...); err != nil {
		loc, _ := chromedp.Run(ctx, chromedp.Location())
		body, _ := chromedp.Run(ctx, chromedp.Text(chromedp.CSS("body")))
		t.Fatalf("%s: %v\n(at %s)\n%s", what, err, loc, body)
	}
}

// value runs one action and returns its value.
func value[T any](t *testing.T, ctx context.Context, what string, a chromedp.Action[T]) T {
	t.Helper()
	c, cancel := context.WithTimeout(ctx, 90*time.Second)
	defer cancel()
	v, err := chromedp.Run(c, a)
	if err != nil {
		t.Fatalf("%s: %v", what, err)
	}
	return v
}

// screenshot saves the page as dir/name.png (and, with
// SANDKEEP_SCREENSHOTS set, there too: how the README's are made).
func screenshot(t *testing.T, ctx context.Context, dir, name string) {
	t.Helper()
	png := value(t, ctx, "screenshot "+name, chromedp.FullScreenshot(100))
	for _, d := range []string{dir, os.Getenv("SANDKEEP_SCREENSHOTS")} {
		if d == "" {
			continue
		}
		if err := os.WriteFile(filepath.Join(d, name+".png"), png, 0o644); err != nil {
			t.Fatal(err)
		}
	}
}

// submit clicks sel and waits for the page the POST ends on (its status
// message): the message of the page before is removed first, so it cannot
// be taken for the answer.
func submit(sel string) chromedp.Action[chromedp.Void] {
	return chromedp.Steps(
		chromedp.Evaluate[chromedp.Void](`document.querySelector(".flash")?.remove()`),
		chromedp.Click(chromedp.CSS(sel)),
		chromedp.WaitVisible(chromedp.CSS(".flash")),
	)
}

// acceptConfirms makes the page's confirmation dialogs answer yes.
func acceptConfirms() chromedp.Action[chromedp.Void] {
	return chromedp.Evaluate[chromedp.Void](`window.confirm = () => true`)
}

// TestConsoleBrowser walks the console in a real headless Chromium: log in
// through a console URL, see the project and its sandbox (local provider),
// stop and start it, upload a file and find it in the running sandbox's
// workspace, browse a version, download a file and compare bytes, roll
// back, and delete the project and see the bucket emptied. Screenshots of
// the main pages go to the test's temp dir.
func TestConsoleBrowser(t *testing.T) {
	e := startLifecycle(t, nil)
	c := e.c
	pid, _ := c.Project(t, "webapp")
	data := workspacetest.RandomBytes(21, 300<<10)
	putFiles(t, c, pid, [2]string{"README.md", "# webapp\n\nhello from version 1\n"}, [2]string{"data/blob.bin", string(data)})
	shots := t.TempDir()
	ctx := browser(t, 1280, 800)
	base := c.HTTP
	text := func(what string, sel string) string { return value(t, ctx, what, chromedp.Text(chromedp.CSS(sel))) }

	do(t, ctx, "log in", chromedp.Navigate(consoleLink(t, c, "", 15*time.Minute)), chromedp.WaitVisible(chromedp.CSS(`a[href="/ui/projects"]`)))
	if loc := value(t, ctx, "location", chromedp.Location()); loc != base+"/ui/" {
		t.Fatalf("after login at %s", loc)
	}
	screenshot(t, ctx, shots, "overview")
	do(t, ctx, "projects", chromedp.Navigate(base+"/ui/projects"), chromedp.WaitVisible(chromedp.CSS("table.projects")))
	if s := text("projects table", "table.projects"); !strings.Contains(s, "webapp") || !strings.Contains(s, pid) {
		t.Fatalf("projects table: %q", s)
	}
	screenshot(t, ctx, shots, "projects")

	// The project: no sandbox yet; Start makes one (ensure).
	do(t, ctx, "open the project", chromedp.Click(chromedp.CSS(`a[href="/ui/p/`+pid+`"]`)), chromedp.WaitVisible(chromedp.ID("btn-start")))
	do(t, ctx, "start", submit("#btn-start"))
	if s := text("state", "#sandbox-state"); s != "started" {
		t.Fatalf("after Start: sandbox %q", s)
	}
	screenshot(t, ctx, shots, "project")
	sbs, err := e.lc.ListSandboxes(t.Context(), &pb.ListSandboxesRequest{ProjectId: pid})
	if err != nil || len(sbs.GetSandboxes()) != 1 {
		t.Fatalf("sandboxes: %v, %v", sbs, err)
	}
	ws := e.prov.Workspace(sbs.GetSandboxes()[0].GetProviderId())
	if b, err := os.ReadFile(filepath.Join(ws, "data/blob.bin")); err != nil || !bytes.Equal(b, data) {
		t.Fatalf("the started sandbox's workspace lacks data/blob.bin: %v", err)
	}

	// Stop, then Start again.
	do(t, ctx, "stop", submit("#btn-stop"))
	if s := text("state", "#sandbox-state"); s != "stopped" {
		t.Fatalf("after Stop: %q", s)
	}
	do(t, ctx, "start again", submit("#btn-start"))
	if s := text("state", "#sandbox-state"); s != "started" {
		t.Fatalf("after Start: %q", s)
	}

	// Upload into the running sandbox.
	up := filepath.Join(t.TempDir(), "upload.txt")
	if err := os.WriteFile(up, []byte("uploaded through the console\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	do(t, ctx, "upload", chromedp.Navigate(base+"/ui/p/"+pid+"/files"), chromedp.WaitVisible(chromedp.ID("file")),
		chromedp.SetUploadFiles(chromedp.ID("file"), []string{up}), submit("#btn-upload"))
	if s := text("upload", ".flash"); !strings.Contains(s, "committed as version") || !strings.Contains(s, "the running sandbox has it") {
		t.Fatalf("upload said %q", s)
	}
	if b, err := os.ReadFile(filepath.Join(ws, "upload.txt")); err != nil || string(b) != "uploaded through the console\n" {
		t.Fatalf("upload.txt in the running sandbox: %q, %v", b, err)
	}
	screenshot(t, ctx, shots, "files")

	// Browse version 1 and download a file, bytes compared.
	do(t, ctx, "browse version 1", chromedp.Navigate(base+"/ui/p/"+pid+"/files?v=1&dir=data"), chromedp.WaitVisible(chromedp.CSS(`a[href*="blob.bin"]`)),
		chromedp.Click(chromedp.CSS(`a[href*="blob.bin"]`)), chromedp.WaitVisible(chromedp.ID("download")))
	screenshot(t, ctx, shots, "file")
	b64 := value(t, ctx, "download", chromedp.Evaluate[string](`(async () => {
		const r = await fetch(document.getElementById("download").href, {credentials: "same-origin"});
		const b = new Uint8Array(await r.arrayBuffer());
		let s = ""; for (let i = 0; i < b.length; i += 8192) s += String.fromCharCode(...b.subarray(i, i + 8192));
		return btoa(s);
	})()`, chromedp.EvalAwaitPromise))
	got, err := base64.StdEncoding.DecodeString(b64)
	if err != nil || !bytes.Equal(got, data) {
		t.Fatalf("downloaded %d bytes (%v), want the %d put", len(got), err, len(data))
	}

	// Roll back to version 1 (the confirmation answered yes): the upload
	// leaves the running sandbox's workspace.
	do(t, ctx, "roll back", chromedp.Navigate(base+"/ui/p/"+pid+"/versions"), chromedp.WaitVisible(chromedp.ID("v1")), acceptConfirms(),
		submit(`#v1 button.rollback`))
	if s := text("rollback", ".flash"); !strings.Contains(s, "rolled back to version 1") {
		t.Fatalf("rollback said %q", s)
	}
	screenshot(t, ctx, shots, "versions")
	if _, err := os.Stat(filepath.Join(ws, "upload.txt")); !os.IsNotExist(err) {
		t.Fatalf("upload.txt still in the workspace after rolling back to version 1: %v", err)
	}

	// Phone width: the project page still shows its actions.
	do(t, ctx, "phone width", chromedp.EmulateViewport(390, 844), chromedp.Navigate(base+"/ui/p/"+pid), chromedp.WaitVisible(chromedp.ID("btn-stop")))
	screenshot(t, ctx, shots, "project-phone")
	do(t, ctx, "desktop width", chromedp.EmulateViewport(1280, 800))

	// Delete the project: typed confirmation, then the bucket is empty.
	do(t, ctx, "delete", chromedp.Navigate(base+"/ui/p/"+pid), chromedp.WaitVisible(chromedp.ID("confirm")),
		chromedp.SendKeys(chromedp.ID("confirm"), "webapp"), submit("#btn-delete"))
	if s := text("delete", ".flash"); !strings.Contains(s, "project webapp deleted") {
		t.Fatalf("delete said %q", s)
	}
	left := 0
	if err := c.Server.Repo.Store().List(t.Context(), repo.ProjectPrefix(pid), func(blobstore.Object) error { left++; return nil }); err != nil {
		t.Fatal(err)
	}
	if left != 0 {
		t.Fatalf("%d objects of the deleted project are still in the bucket", left)
	}
	t.Logf("screenshots in %s", shots)
}
