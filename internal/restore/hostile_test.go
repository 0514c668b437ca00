package restore

import (
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"

	pb "github.com/sandkeep/sandkeep/proto/sandkeep/v1"
)

// sandbox makes parent/{ws, outside/...} and returns ws, outside and a
// check that outside (and parent) were not touched.
func sandbox(t *testing.T) (ws, outside string, check func()) {
	t.Helper()
	parent := t.TempDir()
	ws = filepath.Join(parent, "ws")
	outside = filepath.Join(parent, "outside")
	must(t, os.MkdirAll(ws, 0o755))
	must(t, os.MkdirAll(filepath.Join(outside, "sub"), 0o755))
	must(t, os.WriteFile(filepath.Join(outside, "file"), []byte("precious"), 0o644))
	must(t, os.WriteFile(filepath.Join(outside, "sub", "file2"), []byte("precious too"), 0o600))
	before := snapshotDir(t, outside)
	return ws, outside, func() {
		t.Helper()
		if after := snapshotDir(t, outside); !mapsEqual(before, after) {
			t.Errorf("outside was touched:\nbefore %v\nafter  %v", before, after)
		}
		ents, err := os.ReadDir(parent)
		if err != nil {
			t.Fatal(err)
		}
		if len(ents) != 2 {
			t.Errorf("parent holds %d entries, want ws and outside", len(ents))
		}
		for _, p := range []string{"/etc/x", "/tmp/x"} {
			if _, err := os.Lstat(p); err == nil {
				t.Errorf("%s exists", p)
			}
		}
	}
}

func TestHostilePathsAreRefused(t *testing.T) {
	bad := []string{"../x", "/etc/x", "a/../../x", "a/../x", "..", ".", "./x", "a/./x", "x/", "a//x", "", "x\x00y", "/tmp/x", "../outside/file"}
	kinds := []func(p string) *pb.PlanEntry{
		func(p string) *pb.PlanEntry { return dirE(p, 0o755, baseNs) },
		func(p string) *pb.PlanEntry { return fileE(p, 0o644, baseNs) },
		func(p string) *pb.PlanEntry { return linkE(p, "target", baseNs) },
	}
	for _, p := range bad {
		for k, mk := range kinds {
			t.Run(fmt.Sprintf("%q/%d", p, k), func(t *testing.T) {
				ws, _, check := sandbox(t)
				msg := &pb.GetRestorePlanResponse{Entries: []*pb.PlanEntry{dirE("a", 0o755, baseNs), mk(p)}}
				_, err := Run(t.Context(), source(msg), Options{Workspace: ws})
				if !errors.Is(err, ErrInvalidPlan) {
					t.Fatalf("err = %v, want ErrInvalidPlan", err)
				}
				if !strings.Contains(err.Error(), fmt.Sprintf("%q", p)) {
					t.Errorf("error does not name the path %q: %v", p, err)
				}
				check()
				// The batch is refused as a whole, before touching the disk.
				if ents, _ := os.ReadDir(ws); len(ents) != 0 {
					t.Errorf("workspace holds %d entries", len(ents))
				}
			})
		}
	}
}

func TestPlanSymlinksCannotBeFollowed(t *testing.T) {
	e := newEnv(t)
	a := textBytes(501, 100)
	e.addPack(a)
	for name, tc := range map[string]struct {
		batches [][]*pb.PlanEntry
		invalid bool
	}{
		"file under absolute link":             {batches: [][]*pb.PlanEntry{{linkE("l", "OUTSIDE", baseNs), fileE("l/f", 0o644, baseNs, a)}}, invalid: true},
		"file under link to ..":                {batches: [][]*pb.PlanEntry{{linkE("l", "..", baseNs), fileE("l/f", 0o644, baseNs, a)}}, invalid: true},
		"dir under link, next batch":           {batches: [][]*pb.PlanEntry{{linkE("l", "../outside", baseNs)}, {dirE("l/sub", 0o755, baseNs)}}, invalid: true},
		"link under link":                      {batches: [][]*pb.PlanEntry{{linkE("l", "OUTSIDE", baseNs), linkE("l/x", "y", baseNs)}}, invalid: true},
		"file named like link's child via dir": {batches: [][]*pb.PlanEntry{{dirE("d", 0o755, baseNs), linkE("d/l", "OUTSIDE/sub", baseNs), fileE("d/l/file2", 0o644, baseNs, a)}}, invalid: true},
		// A directory entry replaces the link; its children land inside.
		"dir replaces link": {batches: [][]*pb.PlanEntry{{linkE("l", "OUTSIDE", baseNs)}, {dirE("l", 0o755, baseNs), fileE("l/file", 0o644, baseNs, a)}}},
		// A file entry replaces the link; nothing is written through it.
		"file replaces link": {batches: [][]*pb.PlanEntry{{linkE("file", "OUTSIDE/file", baseNs)}, {fileE("file", 0o644, baseNs, a)}}},
	} {
		t.Run(name, func(t *testing.T) {
			ws, outside, check := sandbox(t)
			var msgs []*pb.GetRestorePlanResponse
			for _, b := range tc.batches {
				for _, en := range b {
					en.Target = strings.ReplaceAll(en.Target, "OUTSIDE", outside)
				}
				msgs = append(msgs, e.batch(b...))
			}
			_, err := Run(t.Context(), source(msgs...), Options{Workspace: ws})
			if tc.invalid {
				if !errors.Is(err, ErrInvalidPlan) || !strings.Contains(err.Error(), "not a directory of the plan") {
					t.Fatalf("err = %v", err)
				}
			} else if err != nil {
				t.Fatal(err)
			}
			check()
		})
	}
	t.Run("dir replaces link: content", func(t *testing.T) {
		ws, outside, check := sandbox(t)
		mustRun(t, ws, Options{}, e.batch(linkE("l", outside, baseNs)), e.batch(dirE("l", 0o755, baseNs), fileE("l/file", 0o600, baseNs, a)))
		wantFile(t, filepath.Join(ws, "l/file"), a, 0o600, baseNs)
		check()
	})
}

func TestSymlinksOnDiskCannotBeFollowed(t *testing.T) {
	e := newEnv(t)
	a, b := textBytes(601, 8), textBytes(602, 12)
	e.addPack(a, b)
	ws, outside, check := sandbox(t)
	// Links already in the workspace, named like entries of the plan.
	must(t, os.Symlink(outside, filepath.Join(ws, "d")))                           // plan: dir d
	must(t, os.Symlink("../outside", filepath.Join(ws, "e")))                      // plan: dir e
	must(t, os.Symlink(filepath.Join(outside, "file"), filepath.Join(ws, "file"))) // plan: file, same size
	must(t, os.Symlink("../outside/sub/file2", filepath.Join(ws, "file2")))        // plan: file, same size
	must(t, os.Symlink("../outside/sub", filepath.Join(ws, "s")))                  // plan: symlink
	must(t, os.Mkdir(filepath.Join(ws, "x"), 0o755))
	must(t, os.Symlink(outside, filepath.Join(ws, "x", "y"))) // plan: dir x/y
	// A hard link to a file outside, where the plan has a file of the same size.
	must(t, os.Link(filepath.Join(outside, "file"), filepath.Join(ws, "hard")))

	mustRun(t, ws, Options{}, e.batch(
		dirE("d", 0o755, baseNs),
		fileE("d/file", 0o644, baseNs, a),
		dirE("e", 0o755, baseNs),
		dirE("e/sub", 0o755, baseNs),
		fileE("e/sub/file2", 0o644, baseNs, b),
		fileE("file", 0o644, baseNs, a),
		fileE("file2", 0o644, baseNs, b),
		linkE("s", "elsewhere", baseNs),
		dirE("x", 0o755, baseNs),
		dirE("x/y", 0o755, baseNs),
		fileE("x/y/file", 0o644, baseNs, a),
		fileE("hard", 0o644, baseNs, a),
	))
	check()
	wantFile(t, filepath.Join(ws, "d/file"), a, 0o644, baseNs)
	wantFile(t, filepath.Join(ws, "e/sub/file2"), b, 0o644, baseNs)
	wantFile(t, filepath.Join(ws, "file"), a, 0o644, baseNs)
	wantFile(t, filepath.Join(ws, "file2"), b, 0o644, baseNs)
	wantFile(t, filepath.Join(ws, "x/y/file"), a, 0o644, baseNs)
	wantFile(t, filepath.Join(ws, "hard"), a, 0o644, baseNs)
	for _, d := range []string{"d", "e", "x/y"} {
		if fi, err := os.Lstat(filepath.Join(ws, d)); err != nil || !fi.IsDir() {
			t.Errorf("%s is not a directory", d)
		}
	}
	if l, _ := os.Readlink(filepath.Join(ws, "s")); l != "elsewhere" {
		t.Errorf("s -> %q", l)
	}
}

// TestUnprivileged re-runs TestReadOnlyEntries as an unprivileged user when
// the tests run as root (permission bits do not stop root).
func TestUnprivileged(t *testing.T) {
	if os.Getuid() != 0 || os.Getenv("RESTORE_TEST_CHILD") != "" {
		t.Skip("not root")
	}
	const nobody = 65534
	dir := t.TempDir()
	for d := dir; d != os.TempDir() && d != "/"; d = filepath.Dir(d) {
		must(t, os.Chmod(d, 0o755))
	}
	bin := filepath.Join(dir, "restore.test")
	copyFile(t, os.Args[0], bin)
	tmp := filepath.Join(dir, "tmp")
	must(t, os.Mkdir(tmp, 0o755))
	must(t, os.Chown(tmp, nobody, nobody))
	cmd := exec.Command(bin, "-test.run=^TestReadOnlyEntries$", "-test.v", "-test.count=1")
	cmd.Env = append(os.Environ(), "RESTORE_TEST_CHILD=1", "TMPDIR="+tmp, "HOME="+tmp)
	cmd.Dir = tmp
	cmd.SysProcAttr = &syscall.SysProcAttr{Credential: &syscall.Credential{Uid: nobody, Gid: nobody}}
	out, err := cmd.CombinedOutput()
	if err != nil || !strings.Contains(string(out), "--- PASS: TestReadOnlyEntries") {
		t.Fatalf("as uid %d: %v\n%s", nobody, err, out)
	}
	t.Logf("as uid %d:\n%s", nobody, out)
}

func copyFile(t *testing.T, from, to string) {
	t.Helper()
	in, err := os.Open(from)
	if err != nil {
		t.Fatal(err)
	}
	defer in.Close()
	out, err := os.OpenFile(to, os.O_CREATE|os.O_WRONLY|os.O_TRUNC, 0o755)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := io.Copy(out, in); err != nil {
		t.Fatal(err)
	}
	must(t, out.Close())
}

// TestReadOnlyEntries restores read-only directories and files, then
// restores again over them after damage. It matters when not run as root.
func TestReadOnlyEntries(t *testing.T) {
	t.Logf("uid %d", os.Getuid())
	e := newEnv(t)
	ws := t.TempDir()
	t.Cleanup(func() { // let TempDir's cleanup remove it
		filepath.Walk(ws, func(p string, fi os.FileInfo, err error) error {
			if err == nil && fi.IsDir() {
				os.Chmod(p, 0o755)
			}
			return nil
		})
	})
	a, b, c := randBytes(701, 20_000), randBytes(702, 20_000), textBytes(703, 5000)
	e.addPack(a, b, c)
	plan := func() []*pb.GetRestorePlanResponse {
		return []*pb.GetRestorePlanResponse{
			e.batch(dirE("ro", 0o555, baseNs), fileE("ro/r", 0o444, baseNs+1, a, b), dirE("ro/sub", 0o500, baseNs+2)),
			e.batch(fileE("ro/sub/secret", 0o000, baseNs+3, c), dirE("ro/sub/locked", 0o000, baseNs+4), fileE("ro/w", 0o200, baseNs+5, b)),
		}
	}
	mustRun(t, ws, Options{}, plan()...)
	check := func() {
		t.Helper()
		for p, m := range map[string]os.FileMode{"ro": 0o555, "ro/sub": 0o500, "ro/sub/locked": 0o000} {
			fi, err := os.Lstat(filepath.Join(ws, p))
			if err != nil || fi.Mode() != os.ModeDir|m {
				t.Errorf("%s: %v %v", p, fi.Mode(), err)
			}
		}
		for p, m := range map[string]os.FileMode{"ro/r": 0o444, "ro/sub/secret": 0o000, "ro/w": 0o200} {
			fi, err := os.Lstat(filepath.Join(ws, p))
			if err != nil || fi.Mode() != m {
				t.Errorf("%s: %v %v", p, fi.Mode(), err)
			}
		}
	}
	check()

	// Damage: a read-only file changed in place, an unreadable one too.
	must(t, os.Chmod(filepath.Join(ws, "ro"), 0o755))
	must(t, os.Chmod(filepath.Join(ws, "ro/sub"), 0o755))
	for _, p := range []string{"ro/r", "ro/sub/secret"} {
		full := filepath.Join(ws, p)
		must(t, os.Chmod(full, 0o600))
		f, err := os.OpenFile(full, os.O_WRONLY, 0)
		must(t, err)
		_, err = f.WriteAt([]byte("damage"), 100)
		must(t, err)
		f.Close()
	}
	must(t, os.Chmod(filepath.Join(ws, "ro/r"), 0o444))
	must(t, os.Chmod(filepath.Join(ws, "ro/sub/secret"), 0o000))
	must(t, os.Chmod(filepath.Join(ws, "ro/sub"), 0o500))
	must(t, os.Chmod(filepath.Join(ws, "ro"), 0o555))
	e.srv.reset()
	res := mustRun(t, ws, Options{}, plan()...)
	check()
	for p, data := range map[string][]byte{"ro/r": cat(a, b), "ro/sub/secret": c, "ro/w": b} {
		full := filepath.Join(ws, p)
		fi, _ := os.Lstat(full)
		os.Chmod(filepath.Join(ws, "ro"), 0o755)
		os.Chmod(filepath.Join(ws, "ro/sub"), 0o755)
		os.Chmod(full, 0o600)
		got, err := os.ReadFile(full)
		if err != nil || string(got) != string(data) {
			t.Errorf("%s: wrong content (%v)", p, err)
		}
		os.Chmod(full, fi.Mode())
	}
	if os.Getuid() != 0 {
		// ro/r: chunk a re-fetched, b kept; secret and w (write-only) are
		// unreadable: recreated and fetched.
		if res.Reused != 1 {
			t.Errorf("result %+v", res)
		}
	}
}

// A path named twice by a plan (in different batches, so that validation
// cannot see it) is replaced, never written through: not even inside the
// workspace.
func TestPathRepeatedAcrossBatches(t *testing.T) {
	e := newEnv(t)
	victim, long, short := textBytes(801, 3000), randBytes(802, 9000), randBytes(803, 100)
	e.addPack(victim, long, short)
	ws, outside, check := sandbox(t)
	mustRun(t, ws, Options{}, e.batch(
		fileE("victim", 0o644, baseNs, victim),
		dirE("d", 0o755, baseNs),
		linkE("d/x", "../victim", baseNs),
		linkE("d/e", "../victim", baseNs),
		linkE("d/out", outside+"/file", baseNs),
		fileE("d/f", 0o644, baseNs, long),
	), e.batch(
		fileE("d/x", 0o600, baseNs+1, short),
		fileE("d/e", 0o600, baseNs+2),
		fileE("d/out", 0o600, baseNs+3, short),
		fileE("d/f", 0o600, baseNs+4, short),
	))
	check()
	wantFile(t, filepath.Join(ws, "victim"), victim, 0o644, baseNs)
	wantFile(t, filepath.Join(ws, "d/x"), short, 0o600, baseNs+1)
	wantFile(t, filepath.Join(ws, "d/e"), nil, 0o600, baseNs+2)
	wantFile(t, filepath.Join(ws, "d/out"), short, 0o600, baseNs+3)
	wantFile(t, filepath.Join(ws, "d/f"), short, 0o600, baseNs+4)
}
