package e2e

import (
	"bytes"
	"encoding/json"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/sandkeep/sandkeep/internal/workspacetest"
)

// TestCLIBrowseContract: diff, files, history, get, rollback and link (and,
// in cliMaintenance, version pin|unpin, retention, gc and project delete)
// through the built binaries: their text outputs against golden files
// (testdata/golden/browse-*.txt), their JSON and their effects checked here.
func TestCLIBrowseContract(t *testing.T) {
	coord, agentBin := buildBinaries(t)
	s := serveBinary(t, coord)
	admin := []string{"SANDKEEP_COORDINATOR=" + s.grpc, "SANDKEEP_DATA=" + s.data}
	type result struct{ stdout, stderr string }
	runRes := func(env []string, wantOK bool, name string, args ...string) result {
		t.Helper()
		cmd := exec.Command(name, args...)
		cmd.Env = append(os.Environ(), env...)
		var out, errb bytes.Buffer
		cmd.Stdout, cmd.Stderr = &out, &errb
		err := cmd.Run()
		if wantOK && err != nil {
			t.Fatalf("%s %v: %v\nstdout: %s\nstderr: %s", filepath.Base(name), args, err, out.String(), errb.String())
		}
		if !wantOK && err == nil {
			t.Fatalf("%s %v succeeded, want a failure\nstdout: %s", filepath.Base(name), args, out.String())
		}
		return result{out.String(), errb.String()}
	}
	run := func(env []string, name string, args ...string) string {
		t.Helper()
		return runRes(env, true, name, args...).stdout
	}
	project := strings.TrimSpace(run(admin, coord, "project", "create", "browse"))
	token := strings.TrimSpace(run(admin, coord, "token", "create", "--project", project))
	ws := filepath.Join(t.TempDir(), "ws")
	workspacetest.Generate(t, ws, workspacetest.Options{SmallFiles: 40, LargeSize: 3 << 20, Seed: 4})
	t.Cleanup(func() { workspacetest.MakeWritable(ws) })
	agentEnv := []string{"SANDKEEP_COORDINATOR=" + s.grpc, "SANDKEEP_TOKEN=" + token, "SANDKEEP_CACHE_DIR=" + t.TempDir()}
	if last := lastLine(run(agentEnv, agentBin, "sync", "--once", "--workspace", ws)); last != "1" {
		t.Fatalf("first sync printed %q", last)
	}
	big1, err := os.ReadFile(filepath.Join(ws, "large/big.bin"))
	if err != nil {
		t.Fatal(err)
	}
	writeFile(t, ws, "README.md", "# version two\n")
	writeFile(t, ws, "notes/new.txt", "added in 2")
	if err := os.Remove(filepath.Join(ws, "empty.txt")); err != nil {
		t.Fatal(err)
	}
	if last := lastLine(run(agentEnv, agentBin, "sync", "--once", "--workspace", ws)); last != "2" {
		t.Fatalf("second sync printed %q", last)
	}

	// files: the table (golden), JSON, --prefix, --version.
	golden(t, "browse-files", run(admin, coord, "files", "--project", project))
	var files []struct {
		Path, Type, Checksum, Mode string
		Size                       int64
		ContentType                string `json:"content_type"`
		Mtime                      time.Time
	}
	jsonOut := run(admin, coord, "files", "--project", project, "--json")
	if err := json.Unmarshal([]byte(jsonOut), &files); err != nil {
		t.Fatalf("files --json: %v\n%s", err, jsonOut)
	}
	found := false
	for _, f := range files {
		if f.Path == "README.md" {
			found = f.Size == int64(len("# version two\n")) && f.Type == "file" && strings.HasPrefix(f.Checksum, "blake3:") && f.ContentType != "" && f.Mode == "0644" && !f.Mtime.IsZero()
		}
	}
	if !found || len(files) < 40 {
		t.Fatalf("files --json: %d files, README.md right: %v", len(files), found)
	}
	out := run(admin, coord, "files", "--project", project, "--prefix", "bin", "--json")
	files = nil
	if err := json.Unmarshal([]byte(out), &files); err != nil || len(files) != 4 { // run.sh, setuid-tool, setgid-tool, link-up
		t.Fatalf("files --prefix bin: %v\n%s", err, out)
	}
	for _, f := range files {
		if !strings.HasPrefix(f.Path, "bin/") {
			t.Fatalf("files --prefix bin lists %s", f.Path)
		}
	}
	if out := run(admin, coord, "files", "--project", project, "--version", "1"); strings.Contains(out, "notes/new.txt") || !strings.Contains(out, "empty.txt") {
		t.Fatalf("files --version 1:\n%s", out)
	}

	// diff: added / modified / deleted with sizes (golden), and JSON.
	golden(t, "browse-diff", run(admin, coord, "diff", "--project", project, "1", "2"))
	var changes []struct {
		Change, Path, Type string
		Size               int64
		OldSize            *int64 `json:"old_size"`
		NewSize            *int64 `json:"new_size"`
	}
	if err := json.Unmarshal([]byte(run(admin, coord, "diff", "--project", project, "1", "head", "--json")), &changes); err != nil {
		t.Fatal(err)
	}
	if len(changes) != 4 {
		t.Fatalf("diff --json: %+v", changes)
	}
	for _, c := range changes {
		if c.Path == "README.md" && (c.Change != "modified" || *c.OldSize != 8 || *c.NewSize != 14) {
			t.Fatalf("diff --json README.md: %+v", c)
		}
	}
	if out := run(admin, coord, "diff", "--project", project, "2", "2", "--json"); strings.TrimSpace(out) != "[]" {
		t.Fatalf("empty diff --json: %q", out)
	}

	// history: newest first.
	var hist []struct {
		Version int64
		Change  string
		Kind    string
		Size    int64
	}
	if err := json.Unmarshal([]byte(run(admin, coord, "history", "--project", project, "README.md", "--json")), &hist); err != nil {
		t.Fatal(err)
	}
	if len(hist) != 2 || hist[0].Version != 2 || hist[0].Change != "modified" || hist[1].Version != 1 || hist[1].Change != "added" || hist[0].Kind != "sync" {
		t.Fatalf("history --json: %+v", hist)
	}
	golden(t, "browse-history-deleted", run(admin, coord, "history", "--project", project, "empty.txt"))

	// get: stdout and -o, head and --version.
	if out := run(admin, coord, "get", "--project", project, "README.md"); out != "# version two\n" {
		t.Fatalf("get README.md = %q", out)
	}
	dst := filepath.Join(t.TempDir(), "big.bin")
	run(admin, coord, "get", "--project", project, "large/big.bin", "--version", "1", "-o", dst)
	if got, err := os.ReadFile(dst); err != nil || !bytes.Equal(got, big1) {
		t.Fatalf("get -o: %d bytes, %v", len(got), err)
	}
	missing := filepath.Join(t.TempDir(), "missing.txt")
	if r := runRes(admin, false, coord, "get", "--project", project, "nope.txt", "-o", missing); !strings.Contains(r.stderr, "NotFound") {
		t.Fatalf("get of a missing file: %q", r.stderr)
	}
	if _, err := os.Stat(missing); !os.IsNotExist(err) {
		t.Fatalf("a failed get left %s behind: %v", missing, err)
	}
	if entries, _ := os.ReadDir(filepath.Dir(missing)); len(entries) != 0 {
		t.Fatalf("a failed get left files behind: %v", entries)
	}

	// link: a URL alone that serves the file with no credential.
	link := strings.TrimSpace(run(admin, coord, "link", "--project", project, "README.md", "--version", "1", "--ttl", "1h"))
	if !strings.HasPrefix(link, "http://"+s.http+"/v1/projects/"+project+"/files/README.md?") || strings.Contains(link, "\n") {
		t.Fatalf("link printed %q", link)
	}
	resp, err := http.Get(link)
	if err != nil {
		t.Fatal(err)
	}
	var body bytes.Buffer
	_, _ = body.ReadFrom(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != 200 || body.String() != "# hello\n" {
		t.Fatalf("GET link: %d %q", resp.StatusCode, body.String())
	}

	// rollback: prints the new version number alone.
	r := runRes(admin, true, coord, "rollback", "--project", project, "--version", "1")
	if r.stdout != "3\n" || !strings.Contains(r.stderr, "no agent is connected") {
		t.Fatalf("rollback printed %q / %q", r.stdout, r.stderr)
	}
	var versions []struct {
		Number int64
		Kind   string
		Parent int64
	}
	if err := json.Unmarshal([]byte(run(admin, coord, "versions", "--project", project, "--json")), &versions); err != nil {
		t.Fatal(err)
	}
	if len(versions) != 3 || versions[0].Number != 3 || versions[0].Kind != "rollback" || versions[0].Parent != 2 {
		t.Fatalf("versions after rollback: %+v", versions)
	}
	golden(t, "browse-versions", run(admin, coord, "versions", "--project", project))
	restored := filepath.Join(t.TempDir(), "restored")
	t.Cleanup(func() { workspacetest.MakeWritable(restored) })
	run(agentEnv, agentBin, "restore", "--workspace", restored)
	if b, err := os.ReadFile(filepath.Join(restored, "README.md")); err != nil || string(b) != "# hello\n" {
		t.Fatalf("restore after rollback: README.md = %q, %v", b, err)
	}
	if _, err := os.Stat(filepath.Join(restored, "notes/new.txt")); !os.IsNotExist(err) {
		t.Fatalf("restore after rollback has notes/new.txt: %v", err)
	}

	t.Run("maintenance", func(t *testing.T) { cliMaintenance(t, coord, agentBin, s) })

	// Usage errors: non-zero, a message on stderr.
	for _, args := range [][]string{
		{"diff", "1", "2"},
		{"diff", "--project", project, "1"},
		{"files"},
		{"history", "--project", project},
		{"get", "--project", project},
		{"rollback", "--project", project},
		{"link", "--project", project},
		{"rollback", "--project", project, "--version", "99"},
	} {
		if r := runRes(admin, false, coord, args...); !strings.Contains(r.stderr, "sandkeep") && !strings.Contains(r.stderr, "Error") {
			t.Errorf("%v: stderr %q", args, r.stderr)
		}
	}
}
