package e2e

import (
	"bytes"
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/sandkeep/sandkeep/internal/agent"
	"github.com/sandkeep/sandkeep/internal/coordtest"
	"github.com/sandkeep/sandkeep/internal/workspacetest"
	pb "github.com/sandkeep/sandkeep/proto/sandkeep/v1"
)

// watchModes runs a test with inotify and with forced polling (what the
// agent falls back to on queue overflow, ENOSPC on watches, or a
// filesystem without inotify).
var watchModes = []struct {
	name string
	poll bool
}{{"inotify", false}, {"poll", true}}

func runOpts(poll bool) agent.RunOptions {
	return agent.RunOptions{ForcePoll: poll, PollInterval: 50 * time.Millisecond}
}

// autoCommitTimeout bounds how long a change may take to be committed by
// the agent on its own (debounce 250ms-2s + a scan), generous for a loaded
// test machine.
const autoCommitTimeout = 45 * time.Second

func newWorkspace(t *testing.T) string {
	t.Helper()
	ws := filepath.Join(t.TempDir(), "ws")
	mustDo(t, os.MkdirAll(ws, 0o755))
	t.Cleanup(func() { workspacetest.MakeWritable(ws) })
	return ws
}

// TestRunWatchesNewDirectoriesRecursively: a directory tree made at once
// (`mkdir -p a/b/c && echo x > a/b/c/f`) is never missed, and a file later
// written into a directory created while the agent ran is seen too: the
// head catches up with the disk without any flush.
func TestRunWatchesNewDirectoriesRecursively(t *testing.T) {
	for _, m := range watchModes {
		t.Run(m.name, func(t *testing.T) {
			c := coordtest.Start(t, coordtest.Options{})
			pid, token := c.Project(t, "mkdir-"+m.name)
			ws := newWorkspace(t)
			writeWS(t, ws, "start.txt", "start")
			startAgent(t, c, token, ws, runOpts(m.poll), "")
			waitHeadEquals(t, c, pid, token, ws, autoCommitTimeout)
			for i := range 5 {
				// mkdir -p + write at once.
				d := filepath.Join(ws, fmt.Sprintf("it%d/a/b/c", i))
				mustDo(t, os.MkdirAll(d, 0o755))
				mustDo(t, os.WriteFile(filepath.Join(d, "f"), []byte("x\n"), 0o644))
				waitHeadEquals(t, c, pid, token, ws, autoCommitTimeout)
				// The empty tree first, committed; then a file deep in it:
				// only the watch of the new leaf directory can see it.
				e := filepath.Join(ws, fmt.Sprintf("later%d/x/y/z", i))
				mustDo(t, os.MkdirAll(e, 0o755))
				waitHeadEquals(t, c, pid, token, ws, autoCommitTimeout)
				mustDo(t, os.WriteFile(filepath.Join(e, "g"), []byte(fmt.Sprintf("late %d\n", i)), 0o644))
				waitHeadEquals(t, c, pid, token, ws, autoCommitTimeout)
			}
		})
	}
}

// genFile is a file rewritten in place, block by block in order, by a
// writer: every block carries the generation that wrote it. On disk the
// file is therefore always a newer prefix over an older suffix (the
// writer's progress): block generations never increase along the file.
// A copy in which a later block is newer than an earlier one was read
// while the writer overtook the reader: a read that overlapped a write.
type genFile struct {
	path   string
	blocks int
	block  int
}

func (g genFile) blockContent(gen uint64, i int) []byte {
	blk := make([]byte, g.block)
	binary.LittleEndian.PutUint64(blk, gen)
	binary.LittleEndian.PutUint64(blk[8:], uint64(i))
	for j := 16; j < len(blk); j++ {
		blk[j] = byte(gen*31 + uint64(i) + uint64(j))
	}
	return blk
}

// rewrite overwrites the file in place with generation gen, one write per
// block, in order (no truncation: the file is never empty or short).
func (g genFile) rewrite(t testing.TB, gen uint64) {
	f, err := os.OpenFile(g.path, os.O_WRONLY|os.O_CREATE, 0o644)
	if err != nil {
		t.Error(err)
		return
	}
	defer f.Close()
	for i := 0; i < g.blocks; i++ {
		if _, err := f.WriteAt(g.blockContent(gen, i), int64(i*g.block)); err != nil {
			t.Error(err)
			return
		}
	}
}

// check returns an error unless data is a state the file had on disk at
// some instant: whole blocks, generations non-increasing along the file.
// whole also requires a single generation.
func (g genFile) check(data []byte, whole bool) error {
	if len(data) != g.blocks*g.block {
		return fmt.Errorf("size %d, want %d", len(data), g.blocks*g.block)
	}
	first := binary.LittleEndian.Uint64(data)
	prev := first
	for i := 0; i < g.blocks; i++ {
		blk := data[i*g.block : (i+1)*g.block]
		gen := binary.LittleEndian.Uint64(blk)
		if !bytes.Equal(blk, g.blockContent(gen, i)) {
			return fmt.Errorf("block %d: corrupt content (generation %d)", i, gen)
		}
		if gen > prev {
			return fmt.Errorf("torn by a concurrent write: block %d has generation %d after generation %d", i, gen, prev)
		}
		if whole && gen != first {
			return fmt.Errorf("half-written: block 0 has generation %d, block %d has %d", first, i, gen)
		}
		prev = gen
	}
	return nil
}

// TestRunCoalescesRewritesAndNeverCommitsTornFiles: a process rewriting a
// file 1000 times over ~4s makes a handful of versions, not 1000 (per-path
// debounce: quiet 250ms, cap 2s), while a large file rewritten in place
// continuously is never committed half-written (a file that changes while
// read is read again, or kept at its previous version).
func TestRunCoalescesRewritesAndNeverCommitsTornFiles(t *testing.T) {
	for _, m := range watchModes {
		t.Run(m.name, func(t *testing.T) {
			c := coordtest.Start(t, coordtest.Options{})
			pid, token := c.Project(t, "coalesce-"+m.name)
			ws := newWorkspace(t)
			hot := genFile{path: filepath.Join(ws, "hot.dat"), blocks: 16, block: 4096}
			big := genFile{path: filepath.Join(ws, "big.dat"), blocks: 128, block: 64 << 10}
			hot.rewrite(t, 0)
			big.rewrite(t, 0)
			writeWS(t, ws, "other.txt", "other")
			a := startAgent(t, c, token, ws, runOpts(m.poll), "")
			before := a.flush()

			const rewrites = 1000
			const span = 4 * time.Second
			var wg sync.WaitGroup
			done := make(chan struct{})
			wg.Add(2)
			go func() {
				defer wg.Done()
				defer close(done)
				start := time.Now()
				for i := 1; i <= rewrites; i++ {
					hot.rewrite(t, uint64(i))
					// Pace the writer over the span (workload shape, not
					// synchronisation).
					if d := time.Until(start.Add(span * time.Duration(i) / rewrites)); d > 0 {
						time.Sleep(d)
					}
				}
			}()
			go func() {
				defer wg.Done()
				for gen := uint64(1); ; gen++ {
					select {
					case <-done:
						return
					default:
					}
					big.rewrite(t, gen)
				}
			}()
			wg.Wait()
			after := a.flush()
			restoreHeadAndCompare(t, c, token, ws)
			if n := after - before; n > 10 || n < 1 {
				t.Errorf("%d rewrites over %v made %d versions (%d..%d), want 1..10", rewrites, span, n, before, after)
			}
			t.Logf("%d rewrites over %v made %d versions", rewrites, span, after-before)
			// No version holds a copy read while it was being written;
			// the last one (writers stopped) holds whole generations.
			// (A version may hold a file caught between two of the
			// writer's block writes: that state was on disk, stable
			// while read, and no scan can tell it from a finished file.)
			restoreEveryVersion(t, c, pid, token, func(v *pb.Version, dir string) {
				for _, g := range []genFile{hot, big} {
					data, err := os.ReadFile(filepath.Join(dir, filepath.Base(g.path)))
					if err != nil {
						t.Errorf("version %d: %v", v.GetNumber(), err)
						continue
					}
					if err := g.check(data, v.GetNumber() == after); err != nil {
						t.Errorf("version %d: %s: %v", v.GetNumber(), filepath.Base(g.path), err)
					} else {
						t.Logf("version %d: %s starts with generation %d", v.GetNumber(), filepath.Base(g.path), binary.LittleEndian.Uint64(data))
					}
				}
			})
		})
	}
}

// branchTree writes version variant (0 or 1) of a source tree of n files
// under dir the way `git checkout` switches branches: in variant 1 a third
// of the files changed (unlinked and written again), a third removed
// (with directories that became empty), and n/3 new files in new
// directories.
func branchTree(t *testing.T, dir string, n, variant int) {
	t.Helper()
	path := func(i int) string {
		return filepath.Join(dir, fmt.Sprintf("pkg%02d/sub%d/file%04d.go", i%17, i%5, i))
	}
	content := func(i, v int) []byte {
		return []byte(strings.Repeat(fmt.Sprintf("// file %d variant %d\n", i, v), 1+i%40))
	}
	for i := 0; i < n; i++ {
		p := path(i)
		switch {
		case variant == 0 || i%3 == 0:
			_ = os.Remove(p)
			mustDo(t, os.MkdirAll(filepath.Dir(p), 0o755))
			mustDo(t, os.WriteFile(p, content(i, variant), 0o644))
		case i%3 == 1:
			mustDo(t, os.Remove(p))
			_ = os.Remove(filepath.Dir(p)) // if it became empty
		}
	}
	if variant == 1 {
		for i := n; i < n+n/3; i++ {
			p := filepath.Join(dir, fmt.Sprintf("newpkg%02d/file%04d.go", i%11, i))
			mustDo(t, os.MkdirAll(filepath.Dir(p), 0o755))
			mustDo(t, os.WriteFile(p, content(i, 1), 0o644))
		}
	}
}

// scenario is a running agent on a workspace and the steps done to it.
type scenario struct {
	t        *testing.T
	c        *coordtest.Coordinator
	pid, tok string
	ws       string
	a        *runningAgent
	last     int64
	t0       time.Time
}

// startScenario starts a coordinator and an agent on ws (already filled)
// and waits until the agent committed the workspace on its own.
func startScenario(t *testing.T, name string, poll bool, ws string) *scenario {
	t.Helper()
	s := &scenario{t: t, c: coordtest.Start(t, coordtest.Options{}), ws: ws, t0: time.Now()}
	s.pid, s.tok = s.c.Project(t, name)
	s.a = startAgent(t, s.c, s.tok, ws, runOpts(poll), "")
	s.last = waitHeadEquals(t, s.c, s.pid, s.tok, ws, autoCommitTimeout)
	return s
}

// step does f, then waits until the agent committed on its own a version
// equal to the disk.
func (s *scenario) step(name string, f func()) {
	s.t.Helper()
	f()
	s.last = waitHeadEquals(s.t, s.c, s.pid, s.tok, s.ws, autoCommitTimeout)
	s.t.Logf("%s: version %d (%v)", name, s.last, time.Since(s.t0).Round(time.Millisecond))
}

// end checks the flush barrier agrees with the last version seen.
func (s *scenario) end() {
	s.t.Helper()
	if v := s.a.flush(); v != s.last {
		restoreHeadAndCompare(s.t, s.c, s.tok, s.ws)
	}
}

// TestRunEditorSavesAndDirectoryMoves: editor atomic saves (temp + rename
// over, and vim's backup-rename dance), directory renames and moves
// (inside, out of and into the workspace), and deleting a large tree: after
// each, the agent commits on its own a version equal to the disk.
func TestRunEditorSavesAndDirectoryMoves(t *testing.T) {
	for _, m := range watchModes {
		t.Run(m.name, func(t *testing.T) {
			ws := filepath.Join(t.TempDir(), "ws")
			workspacetest.Generate(t, ws, workspacetest.Options{SmallFiles: 300, LargeSize: 3 << 20, Seed: 5})
			t.Cleanup(func() { workspacetest.MakeWritable(ws) })
			outside := t.TempDir()
			s := startScenario(t, "edit-"+m.name, m.poll, ws)
			s.step("atomic saves", func() {
				for i := 0; i < 20; i++ {
					p := filepath.Join(ws, fmt.Sprintf("src/m%02d/p%02d/f%05d.go", i%37, i%13, i))
					if i%2 == 0 {
						// write a temp file beside it, rename over
						tmp := filepath.Join(filepath.Dir(p), "."+filepath.Base(p)+".swp")
						mustDo(t, os.WriteFile(tmp, []byte(fmt.Sprintf("saved %d\n", i)), 0o644))
						mustDo(t, os.Rename(tmp, p))
					} else {
						// vim with backupcopy=no: move the original away,
						// write the new one, delete the backup
						mustDo(t, os.Rename(p, p+"~"))
						mustDo(t, os.WriteFile(p, []byte(fmt.Sprintf("vim %d\n", i)), 0o644))
						mustDo(t, os.Remove(p+"~"))
					}
				}
			})
			s.step("directory renames and moves", func() {
				mustDo(t, os.Rename(filepath.Join(ws, "src/m01"), filepath.Join(ws, "src/m01-renamed")))
				mustDo(t, os.Rename(filepath.Join(ws, "src/m02"), filepath.Join(ws, "src/m03/m02-moved")))
				mustDo(t, os.Rename(filepath.Join(ws, "src/m04"), filepath.Join(outside, "m04")))
				// a tree built outside, moved in
				for i := 0; i < 30; i++ {
					writeWS(t, outside, fmt.Sprintf("incoming/d%d/e/f%d.txt", i%4, i), fmt.Sprintf("incoming %d", i))
				}
				mustDo(t, os.Rename(filepath.Join(outside, "incoming"), filepath.Join(ws, "incoming")))
				// a renamed directory changed right after the move
				writeWS(t, ws, "src/m01-renamed/after-move.txt", "after")
			})
			s.step("move back and forth", func() {
				mustDo(t, os.Rename(filepath.Join(ws, "incoming"), filepath.Join(ws, "src/m05/incoming")))
				mustDo(t, os.Rename(filepath.Join(outside, "m04"), filepath.Join(ws, "src/m05/incoming/m04")))
				writeWS(t, ws, "src/m05/incoming/m04/new.txt", "new in a moved-in tree")
			})
			s.step("delete a large tree", func() {
				mustDo(t, os.RemoveAll(filepath.Join(ws, "src")))
			})
			s.end()
		})
	}
}

// TestRunBranchSwitch: switching branches rewrites a tree of hundreds of
// files at once (some changed, some removed, some added), simulated and
// with real git; the agent commits on its own a version equal to the disk.
func TestRunBranchSwitch(t *testing.T) {
	for _, m := range watchModes {
		t.Run(m.name, func(t *testing.T) {
			ws := newWorkspace(t)
			proj := filepath.Join(ws, "proj")
			branchTree(t, proj, 300, 0)
			s := startScenario(t, "branch-"+m.name, m.poll, ws)
			s.step("checkout branch b (simulated)", func() { branchTree(t, proj, 300, 1) })
			s.step("checkout branch a (simulated)", func() {
				mustDo(t, os.RemoveAll(proj))
				branchTree(t, proj, 300, 0)
			})
			if _, err := exec.LookPath("git"); err != nil {
				t.Logf("git not installed: real checkout skipped")
				s.end()
				return
			}
			repo := filepath.Join(ws, "repo")
			home := t.TempDir()
			git := func(args ...string) {
				t.Helper()
				cmd := exec.Command("git", append([]string{"-c", "user.name=t", "-c", "user.email=t@example.com", "-c", "init.defaultBranch=main", "-c", "commit.gpgsign=false", "-c", "gc.auto=0"}, args...)...)
				cmd.Dir = repo
				cmd.Env = append(os.Environ(), "HOME="+home, "GIT_CONFIG_NOSYSTEM=1")
				if out, err := cmd.CombinedOutput(); err != nil {
					t.Fatalf("git %v: %v\n%s", args, err, out)
				}
			}
			s.step("git repo on main", func() {
				mustDo(t, os.RemoveAll(proj))
				mustDo(t, os.MkdirAll(repo, 0o755))
				git("init", "-q")
				branchTree(t, repo, 240, 0)
				git("add", "-A")
				git("commit", "-q", "-m", "a")
				git("checkout", "-q", "-b", "b")
				branchTree(t, repo, 240, 1)
				git("add", "-A")
				git("commit", "-q", "-m", "b")
				git("checkout", "-q", "main")
			})
			s.step("git checkout b", func() { git("checkout", "-q", "b") })
			s.step("git checkout main", func() { git("checkout", "-q", "main") })
			s.end()
		})
	}
}

// TestRunNpmInstallBurst: thousands of small files written fast in a deep
// node_modules tree (directories created and filled faster than they can
// be watched), then removed: the agent commits on its own a version equal
// to the disk.
func TestRunNpmInstallBurst(t *testing.T) {
	for _, m := range watchModes {
		t.Run(m.name, func(t *testing.T) {
			ws := newWorkspace(t)
			writeWS(t, ws, "package.json", "{}\n")
			s := startScenario(t, "npm-"+m.name, m.poll, ws)
			n := 3000
			if m.poll {
				n = 1000 // each poll walks the whole tree: keep it cheap
			}
			s.step("npm install", func() {
				for i := 0; i < n; i++ {
					p := filepath.Join(ws, fmt.Sprintf("node_modules/@scope%d/pkg%03d/node_modules/dep%d/lib/sub/index%d.js", i%3, i%97, i%7, i))
					if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
						t.Fatal(err)
					}
					if err := os.WriteFile(p, []byte(fmt.Sprintf("module.exports = %d;\n", i)), 0o644); err != nil {
						t.Fatal(err)
					}
				}
			})
			s.step("rm -rf node_modules", func() { mustDo(t, os.RemoveAll(filepath.Join(ws, "node_modules"))) })
			s.end()
		})
	}
}

// versionPaths lists the paths in a restored version.
func versionPaths(t *testing.T, dir string) map[string]bool {
	out := make(map[string]bool)
	for p := range workspacetest.Snapshot(t, dir) {
		out[p] = true
	}
	return out
}

// TestRunSandkeepIgnore: paths matched by .sandkeepignore (gitignore
// syntax, at the workspace root) never appear in any version; when the
// file changes it is reloaded, and paths it no longer ignores are backed
// up, both by the watcher on its own and by a flush asked right after the
// change.
func TestRunSandkeepIgnore(t *testing.T) {
	for _, m := range watchModes {
		t.Run(m.name, func(t *testing.T) {
			c := coordtest.Start(t, coordtest.Options{})
			pid, token := c.Project(t, "ignore-"+m.name)
			ws := newWorkspace(t)
			writeWS(t, ws, ".sandkeepignore", "# build output\n*.log\n!keep.log\nbuild/\n/tmp\n")
			writeWS(t, ws, "a.txt", "a")
			writeWS(t, ws, "x.log", "ignored")
			writeWS(t, ws, "keep.log", "re-included")
			writeWS(t, ws, "build/out.bin", "ignored dir")
			writeWS(t, ws, "sub/build/deep.o", "ignored dir at depth")
			writeWS(t, ws, "sub/z.log", "ignored at depth")
			writeWS(t, ws, "tmp/t", "anchored")
			writeWS(t, ws, "sub/tmp/t", "not anchored here: kept")
			ignored1 := []string{"x.log", "build", "sub/build", "sub/z.log", "tmp"}
			a := startAgent(t, c, token, ws, runOpts(m.poll), "")
			a.flush()
			restoreHeadAndCompareSkip(t, c, token, ws, ignored1...)

			// Ignored paths written while running stay out; the watcher
			// does not even need to watch inside ignored directories.
			writeWS(t, ws, "build/more/deep/x", "ignored")
			writeWS(t, ws, "new.log", "ignored")
			writeWS(t, ws, "b.txt", "b")
			ignored1 = append(ignored1, "new.log")
			waitHeadEquals(t, c, pid, token, ws, autoCommitTimeout, ignored1...)

			// Un-ignore build/: picked up without a flush.
			writeWS(t, ws, ".sandkeepignore", "*.log\n!keep.log\n/tmp\n")
			ignored2 := []string{"x.log", "sub/z.log", "new.log", "tmp"}
			waitHeadEquals(t, c, pid, token, ws, autoCommitTimeout, ignored2...)

			// Un-ignore everything with an editor-style save, and flush at
			// once: the flush covers the change of the ignore file too.
			tmp := filepath.Join(ws, ".sandkeepignore.tmp")
			mustDo(t, os.WriteFile(tmp, []byte("# nothing ignored\n"), 0o644))
			mustDo(t, os.Rename(tmp, filepath.Join(ws, ".sandkeepignore")))
			a.flush()
			restoreHeadAndCompare(t, c, token, ws)

			// Ignore again: the files leave the next version (they are
			// not deleted from disk, and old versions keep them).
			writeWS(t, ws, ".sandkeepignore", "*.log\n")
			a.flush()
			restoreHeadAndCompareSkip(t, c, token, ws, "x.log", "keep.log", "sub/z.log", "new.log")

			// No version before the un-ignoring ever held an ignored path.
			restoreEveryVersion(t, c, pid, token, func(v *pb.Version, dir string) {
				paths := versionPaths(t, dir)
				rules, _ := os.ReadFile(filepath.Join(dir, ".sandkeepignore"))
				var never []string
				switch string(rules) {
				case "# build output\n*.log\n!keep.log\nbuild/\n/tmp\n":
					never = []string{"x.log", "new.log", "sub/z.log", "build", "sub/build", "tmp", "build/out.bin", "tmp/t"}
				case "*.log\n!keep.log\n/tmp\n":
					never = []string{"x.log", "new.log", "sub/z.log", "tmp", "tmp/t"}
				case "*.log\n":
					never = []string{"x.log", "new.log", "sub/z.log", "keep.log"}
				}
				for _, p := range never {
					if paths[p] {
						t.Errorf("version %d (rules %q) holds ignored path %s", v.GetNumber(), rules, p)
					}
				}
			})
		})
	}
}

// restoreHeadAndCompareSkip is restoreHeadAndCompare leaving out paths
// (and their subtrees) on both sides.
func restoreHeadAndCompareSkip(t *testing.T, c *coordtest.Coordinator, token, ws string, skip ...string) {
	t.Helper()
	dir := restoreVersion(t, c, token, 0)
	workspacetest.RequireEqual(t, ws, dir, skip...)
	for _, s := range skip {
		if _, err := os.Lstat(filepath.Join(dir, s)); err == nil {
			t.Fatalf("the head holds ignored path %s", s)
		}
	}
}

// lastHeartbeat is the heartbeat of the project's connected agent, if any.
func lastHeartbeat(t *testing.T, c *coordtest.Coordinator, projectID string) *pb.Heartbeat {
	t.Helper()
	resp, err := c.Admin.ListAgents(context.Background(), &pb.ListAgentsRequest{ProjectId: projectID})
	if err != nil {
		t.Fatalf("list agents: %v", err)
	}
	for _, a := range resp.GetAgents() {
		if a.GetConnected() && a.GetHeartbeat() != nil {
			return a.GetHeartbeat()
		}
	}
	return nil
}

// waitHeartbeat polls ListAgents until ok accepts the agent's heartbeat.
func waitHeartbeat(t *testing.T, c *coordtest.Coordinator, projectID, what string, ok func(*pb.Heartbeat) bool) *pb.Heartbeat {
	t.Helper()
	deadline := time.Now().Add(20 * time.Second)
	for {
		hb := lastHeartbeat(t, c, projectID)
		if hb != nil && ok(hb) {
			return hb
		}
		if time.Now().After(deadline) {
			t.Fatalf("no heartbeat with %s within 20s; last: %v", what, hb)
		}
		time.Sleep(20 * time.Millisecond) // bounded readiness poll of the coordinator
	}
}

// TestRunHeartbeatsCarryActivity: heartbeats (sent on every change of
// state, not only every HeartbeatInterval) tell the coordinator about
// writes, and after a flush that the agent is clean with nothing pending.
func TestRunHeartbeatsCarryActivity(t *testing.T) {
	c := coordtest.Start(t, coordtest.Options{})
	pid, token := c.Project(t, "heartbeat")
	ws := newWorkspace(t)
	writeWS(t, ws, "a.txt", "a")
	opts := runOpts(false)
	opts.HeartbeatInterval = time.Hour // only the prompt heartbeats count here
	a := startAgent(t, c, token, ws, opts, "")
	v1 := a.flush()
	waitHeartbeat(t, c, pid, "clean, version 1", func(hb *pb.Heartbeat) bool {
		return hb.GetClean() && hb.GetPendingPaths() == 0 && hb.GetVersion() == v1
	})
	for i := range 3 {
		before := time.Now()
		writeWS(t, ws, fmt.Sprintf("w%d.txt", i), "write")
		waitHeartbeat(t, c, pid, "last_write_time after the write", func(hb *pb.Heartbeat) bool {
			return hb.GetLastWriteTime() != nil && !hb.GetLastWriteTime().AsTime().Before(before.Add(-time.Millisecond))
		})
		v := a.flush()
		hb := waitHeartbeat(t, c, pid, fmt.Sprintf("clean, nothing pending, version %d", v), func(hb *pb.Heartbeat) bool {
			return hb.GetClean() && hb.GetPendingPaths() == 0 && hb.GetVersion() == v
		})
		if hb.GetLastCommitTime() == nil || hb.GetLastCommitTime().AsTime().Before(before) || hb.GetWatchMode() != "inotify" || hb.GetLastError() != "" {
			t.Errorf("heartbeat after flush: %v", hb)
		}
	}
	restoreHeadAndCompare(t, c, token, ws)
}

func readWS(t *testing.T, ws, rel string) string {
	t.Helper()
	b, err := os.ReadFile(filepath.Join(ws, filepath.FromSlash(rel)))
	if err != nil {
		t.Fatalf("read %s: %v", rel, err)
	}
	return string(b)
}

func requireAbsent(t *testing.T, ws, rel string) {
	t.Helper()
	if _, err := os.Lstat(filepath.Join(ws, filepath.FromSlash(rel))); err == nil {
		t.Errorf("%s exists, want it gone", rel)
	}
}

// TestRunRestartKeepsUncommittedChanges: changes made while the agent was
// down (or that it had not committed when it died) are kept and committed
// by the next run: the disk wins.
func TestRunRestartKeepsUncommittedChanges(t *testing.T) {
	c := coordtest.Start(t, coordtest.Options{})
	pid, token := c.Project(t, "restart")
	ws := newWorkspace(t)
	cache := filepath.Join(t.TempDir(), "cache")
	writeWS(t, ws, "a.txt", "a1")
	writeWS(t, ws, "gone.txt", "will be deleted")
	writeWS(t, ws, "d/x.txt", "x")
	a := startAgent(t, c, token, ws, runOpts(false), cache)
	v1 := a.flush()
	// Written just before the agent dies without a flush (second signal).
	writeWS(t, ws, "dying.txt", "written as the agent died")
	if err := a.abort(); err != nil && !errors.Is(err, agent.ErrNotSaved) {
		t.Fatalf("abort: %v", err)
	}
	// Changed while no agent runs.
	writeWS(t, ws, "a.txt", "a2, while down")
	mustDo(t, os.Remove(filepath.Join(ws, "gone.txt")))
	mustDo(t, os.Rename(filepath.Join(ws, "d"), filepath.Join(ws, "d2")))
	writeWS(t, ws, "new/while/down.txt", "new")
	want := workspacetest.Snapshot(t, ws)

	a = startAgent(t, c, token, ws, runOpts(false), cache)
	// The head did not move: nothing is restored over the disk, and the
	// startup scan commits the changes without a flush.
	waitHeadEquals(t, c, pid, token, ws, autoCommitTimeout)
	if d := workspacetest.Diff(want, workspacetest.Snapshot(t, ws)); len(d) > 0 {
		t.Fatalf("the restart changed the workspace: %v", d)
	}
	if v := a.flush(); v <= v1 {
		t.Fatalf("flush after restart returned %d, want > %d", v, v1)
	}
	restoreHeadAndCompare(t, c, token, ws)
}

// TestRunRestartMergesMovedHead: while the agent was down, the workspace
// changed and another sandbox committed on the same project. On restart
// the agent follows Reconcile's rule: paths unchanged on disk take the
// head; locally changed paths are kept; a file changed on both sides is
// kept and the head's content is written beside it as
// NAME.sandkeep-conflict-vN. Both sides survive, in the disk and in the
// next version.
func TestRunRestartMergesMovedHead(t *testing.T) {
	for _, graceful := range []bool{true, false} {
		name := "after-graceful-stop"
		if !graceful {
			name = "after-abort"
		}
		t.Run(name, func(t *testing.T) {
			c := coordtest.Start(t, coordtest.Options{})
			pid, token := c.Project(t, "merge-"+name)
			ws := newWorkspace(t)
			cache := filepath.Join(t.TempDir(), "cache")
			files := map[string]string{
				"same.txt": "same", "local.txt": "base", "head.txt": "base", "both.txt": "base",
				"del-head.txt": "base", "del-local.txt": "base", "both-same.txt": "base",
				"dir-head/f.txt": "base", "del-both.txt": "base", "del-local-change-head.txt": "base",
			}
			for p, d := range files {
				writeWS(t, ws, p, d)
			}
			a := startAgent(t, c, token, ws, runOpts(false), cache)
			base := a.flush()
			if graceful {
				mustDo(t, a.stopGracefully())
			} else if err := a.abort(); err != nil {
				t.Fatalf("abort: %v", err)
			}

			// Local changes while the agent is down.
			writeWS(t, ws, "local.txt", "local")
			writeWS(t, ws, "both.txt", "both: local side")
			writeWS(t, ws, "both-same.txt", "same change on both sides")
			mustDo(t, os.Remove(filepath.Join(ws, "del-local.txt")))
			mustDo(t, os.Remove(filepath.Join(ws, "del-both.txt")))
			mustDo(t, os.Remove(filepath.Join(ws, "del-local-change-head.txt")))
			writeWS(t, ws, "new-local.txt", "new local")

			// Another sandbox commits on the same project meanwhile.
			ws2 := newWorkspace(t)
			cfg2 := agentConfig(c, token, ws2, t)
			if _, err := agent.Restore(context.Background(), cfg2, 0); err != nil {
				t.Fatal(err)
			}
			writeWS(t, ws2, "head.txt", "head")
			writeWS(t, ws2, "both.txt", "both: head side")
			writeWS(t, ws2, "both-same.txt", "same change on both sides")
			mustDo(t, os.Remove(filepath.Join(ws2, "del-head.txt")))
			mustDo(t, os.Remove(filepath.Join(ws2, "del-both.txt")))
			writeWS(t, ws2, "del-local-change-head.txt", "changed in head")
			writeWS(t, ws2, "dir-head/g.txt", "new in head")
			writeWS(t, ws2, "new-head/h.txt", "new head")
			r2, err := agent.SyncOnce(context.Background(), cfg2)
			if err != nil {
				t.Fatal(err)
			}
			h := r2.Version.GetNumber()
			if h != base+1 {
				t.Fatalf("second sandbox committed version %d, want %d", h, base+1)
			}

			a = startAgent(t, c, token, ws, runOpts(false), cache)
			v := a.flush()
			if v <= h {
				t.Fatalf("flush after the merge returned %d, want > %d", v, h)
			}
			conflict := func(p string) string { return fmt.Sprintf("%s%s%d", p, agent.ConflictSuffix, h) }
			for p, want := range map[string]string{
				"same.txt":       "same",
				"local.txt":      "local",
				"head.txt":       "head",
				"both.txt":       "both: local side",
				"both-same.txt":  "same change on both sides",
				"new-local.txt":  "new local",
				"dir-head/f.txt": "base",
				"dir-head/g.txt": "new in head",
				"new-head/h.txt": "new head",
				// changed on both sides: the head's side beside it
				conflict("both.txt"): "both: head side",
				// deleted here, changed in the head: the head's content kept
				conflict("del-local-change-head.txt"): "changed in head",
			} {
				if got := readWS(t, ws, p); got != want {
					t.Errorf("%s = %q, want %q", p, got, want)
				}
			}
			for _, p := range []string{"del-head.txt", "del-local.txt", "del-both.txt", "del-local-change-head.txt", conflict("local.txt"), conflict("head.txt"), conflict("same.txt")} {
				requireAbsent(t, ws, p)
			}
			// The same change on both sides: Reconcile judges by stat, not
			// content, so it may write a (needless but harmless) copy.
			if b, err := os.ReadFile(filepath.Join(ws, conflict("both-same.txt"))); err == nil && string(b) != "same change on both sides" {
				t.Errorf("%s = %q", conflict("both-same.txt"), b)
			}
			restoreHeadAndCompare(t, c, token, ws)
			// The other sandbox's version stays in the history as it was.
			old := restoreVersion(t, c, token, h)
			workspacetest.RequireEqual(t, ws2, old)
			_ = pid
		})
	}
}

// TestRunNeverSyncedWorkspaceKeepsDisk: an agent started over a non-empty
// workspace it never synced (no state), on a project that has versions,
// keeps the disk as it is and commits it on top; the old head stays in the
// history.
func TestRunNeverSyncedWorkspaceKeepsDisk(t *testing.T) {
	c := coordtest.Start(t, coordtest.Options{})
	_, token := c.Project(t, "unsynced")
	ws1 := newWorkspace(t)
	writeWS(t, ws1, "a.txt", "from elsewhere")
	writeWS(t, ws1, "only-there.txt", "x")
	if _, err := agent.SyncOnce(context.Background(), agentConfig(c, token, ws1, t)); err != nil {
		t.Fatal(err)
	}
	ws := newWorkspace(t)
	writeWS(t, ws, "a.txt", "local")
	writeWS(t, ws, "b.txt", "local only")
	want := workspacetest.Snapshot(t, ws)
	a := startAgent(t, c, token, ws, runOpts(false), "")
	if v := a.flush(); v != 2 {
		t.Fatalf("flush returned %d, want 2", v)
	}
	if d := workspacetest.Diff(want, workspacetest.Snapshot(t, ws)); len(d) > 0 {
		t.Fatalf("the agent changed a workspace it never synced: %v", d)
	}
	restoreHeadAndCompare(t, c, token, ws)
	workspacetest.RequireEqual(t, ws1, restoreVersion(t, c, token, 1))
}
