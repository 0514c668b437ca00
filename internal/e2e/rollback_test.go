package e2e

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"testing"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/types/known/durationpb"

	"github.com/sandkeep/sandkeep/internal/agent"
	"github.com/sandkeep/sandkeep/internal/coordtest"
	"github.com/sandkeep/sandkeep/internal/workspacetest"
	pb "github.com/sandkeep/sandkeep/proto/sandkeep/v1"
)

// withoutDirTimes drops directory mtimes from a snapshot: a workspace
// brought to a version in place gets its files' mtimes from the version, but
// its directories' mtimes are those of the changes made to them.
func withoutDirTimes(s map[string]workspacetest.Entry) map[string]workspacetest.Entry {
	for k, e := range s {
		if e.Type == fs.ModeDir {
			e.MtimeNs = 0
			s[k] = e
		}
	}
	return s
}

func writeFile(t *testing.T, ws, rel, data string) {
	t.Helper()
	p := filepath.Join(ws, rel)
	if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(p, []byte(data), 0o644); err != nil {
		t.Fatal(err)
	}
}

func readFileRPC(t *testing.T, c *coordtest.Coordinator, project, path string, version int64) ([]byte, error) {
	t.Helper()
	stream, err := c.Admin.ReadFile(context.Background(), &pb.ReadFileRequest{ProjectId: project, Path: path, Version: version})
	if err != nil {
		return nil, err
	}
	var buf bytes.Buffer
	for {
		msg, err := stream.Recv()
		if errors.Is(err, io.EOF) {
			return buf.Bytes(), nil
		}
		if err != nil {
			return nil, err
		}
		buf.Write(msg.GetData())
	}
}

func listVersions(t *testing.T, c *coordtest.Coordinator, project string) []*pb.Version {
	t.Helper()
	resp, err := c.Admin.ListVersions(context.Background(), &pb.ListVersionsRequest{ProjectId: project, PageSize: 1000})
	if err != nil {
		t.Fatal(err)
	}
	return resp.GetVersions()
}

func TestRollbackWithoutAgent(t *testing.T) {
	for _, b := range backends {
		t.Run(b.name, func(t *testing.T) {
			c := coordtest.Start(t, b.opts)
			pid, token := c.Project(t, "rollback-"+b.name)
			ctx := context.Background()
			ws := filepath.Join(t.TempDir(), "ws")
			workspacetest.Generate(t, ws, workspacetest.Options{SmallFiles: 300, LargeSize: 3 << 20, Seed: 5})
			t.Cleanup(func() { workspacetest.MakeWritable(ws) })
			cfg := agentConfig(c, token, ws, t)
			r1, err := agent.SyncOnce(ctx, cfg)
			if err != nil {
				t.Fatal(err)
			}
			v1 := workspacetest.Snapshot(t, ws)
			// Version 2: a modification, an addition, a deleted directory.
			writeFile(t, ws, "README.md", "# changed\n")
			writeFile(t, ws, "added/later.txt", "written after version 1")
			if err := os.RemoveAll(filepath.Join(ws, "src/m03")); err != nil {
				t.Fatal(err)
			}
			r2, err := agent.SyncOnce(ctx, cfg)
			if err != nil || r2.Version.GetNumber() != 2 {
				t.Fatalf("second sync: %v (version %d)", err, r2.Version.GetNumber())
			}

			resp, err := c.Admin.RollbackProject(ctx, &pb.RollbackProjectRequest{ProjectId: pid, Version: 1})
			if err != nil {
				t.Fatal(err)
			}
			rv := resp.GetVersion()
			if rv.GetNumber() != 3 || rv.GetParent() != 2 || rv.GetKind() != pb.VersionKind_VERSION_KIND_ROLLBACK ||
				!bytes.Equal(rv.GetRoot(), r1.Version.GetRoot()) || rv.GetFiles() != r1.Version.GetFiles() || rv.GetBytes() != r1.Version.GetBytes() {
				t.Fatalf("rollback version = %v, want number 3, parent 2, kind rollback, version 1's root and totals", rv)
			}
			if resp.GetAgentConnected() || resp.GetAgentApplied() {
				t.Fatalf("no agent runs, yet the response says connected=%v applied=%v", resp.GetAgentConnected(), resp.GetAgentApplied())
			}
			// The version list shows the rollback as a new version.
			vs := listVersions(t, c, pid)
			if len(vs) != 3 || vs[0].GetNumber() != 3 || vs[0].GetKind() != pb.VersionKind_VERSION_KIND_ROLLBACK {
				t.Fatalf("versions after rollback: %v", vs)
			}
			// Restoring the head gives exactly version 1's tree.
			dir := filepath.Join(t.TempDir(), "restored")
			t.Cleanup(func() { workspacetest.MakeWritable(dir) })
			rcfg := agentConfig(c, token, dir, t)
			res, err := agent.Restore(ctx, rcfg, 0)
			if err != nil {
				t.Fatal(err)
			}
			if res.Version.GetNumber() != 3 {
				t.Fatalf("restored version %d, want 3", res.Version.GetNumber())
			}
			if d := workspacetest.Diff(v1, workspacetest.Snapshot(t, dir)); len(d) > 0 {
				t.Fatalf("head after rollback differs from version 1: %v", head(d))
			}
			// Nothing differs between 1 and 3; 2 -> 3 undoes 1 -> 2.
			d13, err := c.Admin.DiffVersions(ctx, &pb.DiffVersionsRequest{ProjectId: pid, FromVersion: 1, ToVersion: 3})
			if err != nil || len(d13.GetChanges()) != 0 {
				t.Fatalf("diff 1 3 = %v, %v", d13.GetChanges(), err)
			}
			d12, err := c.Admin.DiffVersions(ctx, &pb.DiffVersionsRequest{ProjectId: pid, FromVersion: 1, ToVersion: 2})
			if err != nil {
				t.Fatal(err)
			}
			d23, err := c.Admin.DiffVersions(ctx, &pb.DiffVersionsRequest{ProjectId: pid, FromVersion: 2, ToVersion: 3})
			if err != nil {
				t.Fatal(err)
			}
			if len(d12.GetChanges()) == 0 || len(d12.GetChanges()) != len(d23.GetChanges()) {
				t.Fatalf("diff 1 2 has %d changes, 2 3 has %d", len(d12.GetChanges()), len(d23.GetChanges()))
			}
			for i, ch := range d12.GetChanges() {
				back := d23.GetChanges()[i]
				if back.GetPath() != ch.GetPath() || (ch.GetKind() == pb.ChangeKind_CHANGE_KIND_ADDED) != (back.GetKind() == pb.ChangeKind_CHANGE_KIND_DELETED) {
					t.Fatalf("change %d: %v then %v", i, ch, back)
				}
			}
			// Refusals.
			for _, tc := range []struct {
				req  *pb.RollbackProjectRequest
				want codes.Code
			}{
				{&pb.RollbackProjectRequest{ProjectId: pid, Version: 99}, codes.NotFound},
				{&pb.RollbackProjectRequest{ProjectId: pid, Version: 0}, codes.InvalidArgument},
				{&pb.RollbackProjectRequest{ProjectId: "prj_nope", Version: 1}, codes.NotFound},
				{&pb.RollbackProjectRequest{ProjectId: pid, Version: 1, AgentTimeout: durationpb.New(-time.Second)}, codes.InvalidArgument},
			} {
				if _, err := c.Admin.RollbackProject(ctx, tc.req); status.Code(err) != tc.want {
					t.Errorf("rollback %v: %v, want %v", tc.req, err, tc.want)
				}
			}
			// A sandbox token may not roll back.
			conn := c.Conn(t, token)
			if _, err := pb.NewAdminServiceClient(conn).RollbackProject(ctx, &pb.RollbackProjectRequest{ProjectId: pid, Version: 1}); status.Code(err) != codes.PermissionDenied {
				t.Errorf("rollback with a sandbox token: %v", err)
			}
		})
	}
}

func TestRollbackWithLiveAgent(t *testing.T) {
	c := coordtest.Start(t, coordtest.Options{})
	pid, token := c.Project(t, "rollback-live")
	ws := filepath.Join(t.TempDir(), "ws")
	workspacetest.Generate(t, ws, workspacetest.Options{SmallFiles: 100, LargeSize: 2 << 20, Seed: 11})
	t.Cleanup(func() { workspacetest.MakeWritable(ws) })
	a := startAgent(t, c, token, ws, agent.RunOptions{}, "")
	v1 := a.flush()
	snap1 := withoutDirTimes(workspacetest.Snapshot(t, ws))

	// Later work: modified, added, deleted files and directories.
	writeFile(t, ws, "README.md", "# rewritten\n")
	writeFile(t, ws, "new/dir/file.txt", "new file")
	workspacetest.RandomFile(t, filepath.Join(ws, "large/big.bin"), 2<<20, 99)
	if err := os.RemoveAll(filepath.Join(ws, "src/m05")); err != nil {
		t.Fatal(err)
	}
	if err := os.Remove(filepath.Join(ws, "empty.txt")); err != nil {
		t.Fatal(err)
	}
	v2 := a.flush()
	if v2 <= v1 {
		t.Fatalf("flush after changes returned %d, first was %d", v2, v1)
	}

	ctx := context.Background()
	resp, err := c.Admin.RollbackProject(ctx, &pb.RollbackProjectRequest{ProjectId: pid, Version: v1, AgentTimeout: durationpb.New(60 * time.Second)})
	if err != nil {
		t.Fatal(err)
	}
	rv := resp.GetVersion().GetNumber()
	if !resp.GetAgentConnected() || !resp.GetAgentApplied() || resp.GetAgentVersion() < rv || resp.GetAgentError() != "" {
		t.Fatalf("rollback response: %v", resp)
	}
	// The workspace is version 1 again, without a restart: files written
	// after it are gone, older contents are back.
	if d := workspacetest.Diff(snap1, withoutDirTimes(workspacetest.Snapshot(t, ws))); len(d) > 0 {
		t.Fatalf("workspace after the rollback differs from version %d: %v", v1, head(d))
	}
	// The agent stays on the rollback (nothing to commit) ...
	if v := a.flush(); v != rv {
		t.Fatalf("flush right after the rollback returned %d, want %d", v, rv)
	}
	// ... and keeps syncing from there.
	writeFile(t, ws, "after-rollback.txt", "still syncing")
	v4 := a.flush()
	vs := listVersions(t, c, pid)
	if v4 != rv+1 || vs[0].GetNumber() != v4 || vs[0].GetParent() != rv || vs[1].GetKind() != pb.VersionKind_VERSION_KIND_ROLLBACK {
		t.Fatalf("after the rollback: flush %d, versions %v", v4, vs[:2])
	}
	restoreHeadAndCompare(t, c, token, ws)
	if err := a.stopGracefully(); err != nil {
		t.Fatal(err)
	}
}

// TestRollbackWhileAgentStopped: a rollback made while the sandbox's agent
// is stopped is applied when it starts again on the old workspace (the
// restart rule: the head moved since the agent's base, so unchanged paths
// take the head's state).
func TestRollbackWhileAgentStopped(t *testing.T) {
	c := coordtest.Start(t, coordtest.Options{})
	pid, token := c.Project(t, "rollback-stopped")
	ws := filepath.Join(t.TempDir(), "ws")
	workspacetest.Generate(t, ws, workspacetest.Options{SmallFiles: 50, Seed: 12})
	t.Cleanup(func() { workspacetest.MakeWritable(ws) })
	cache := filepath.Join(t.TempDir(), "cache")
	a := startAgent(t, c, token, ws, agent.RunOptions{}, cache)
	v1 := a.flush()
	snap1 := withoutDirTimes(workspacetest.Snapshot(t, ws))
	writeFile(t, ws, "README.md", "# later\n")
	writeFile(t, ws, "later/file.txt", "later")
	a.flush()
	if err := a.stopGracefully(); err != nil {
		t.Fatal(err)
	}
	resp, err := c.Admin.RollbackProject(context.Background(), &pb.RollbackProjectRequest{ProjectId: pid, Version: v1})
	if err != nil {
		t.Fatal(err)
	}
	if resp.GetAgentConnected() {
		t.Fatalf("the agent is stopped, yet the response says connected: %v", resp)
	}
	b := startAgent(t, c, token, ws, agent.RunOptions{}, cache)
	if v := b.flush(); v != resp.GetVersion().GetNumber() {
		t.Fatalf("restarted agent flushed %d, want to stay on the rollback %d", v, resp.GetVersion().GetNumber())
	}
	if d := workspacetest.Diff(snap1, withoutDirTimes(workspacetest.Snapshot(t, ws))); len(d) > 0 {
		t.Fatalf("workspace after restarting on the rollback differs from version %d: %v", v1, head(d))
	}
	if err := b.stopGracefully(); err != nil {
		t.Fatal(err)
	}
}

// TestRollbackRacingAWrite pins down the defined state of a workspace change
// racing a rollback (see api.AdminServer.RollbackProject):
//   - a change not committed yet when the rollback lands is kept and
//     committed on top of the rollback (a file changed on both sides keeps
//     the disk's content, the rollback's beside it as a conflict copy);
//   - a change committed before the rollback stays in the history, and the
//     workspace follows the rollback.
func TestRollbackRacingAWrite(t *testing.T) {
	c := coordtest.Start(t, coordtest.Options{})
	pid, token := c.Project(t, "rollback-race")
	ctx := context.Background()
	ws := filepath.Join(t.TempDir(), "ws")
	writeFile(t, ws, "a.txt", "a1")
	writeFile(t, ws, "b.txt", "b1")
	// A debounce far longer than the test: nothing is committed unless
	// flushed, so a change is certainly pending when the rollback lands.
	a := startAgent(t, c, token, ws, agent.RunOptions{Quiet: time.Hour, Cap: time.Hour}, "")
	v1 := a.flush()
	writeFile(t, ws, "b.txt", "b2")
	writeFile(t, ws, "c.txt", "c2")
	v2 := a.flush()

	// Pending (uncommitted) changes, then the rollback to v1.
	writeFile(t, ws, "a.txt", "a-pending")
	writeFile(t, ws, "pending.txt", "pending")
	writeFile(t, ws, "b.txt", "b-pending")
	resp, err := c.Admin.RollbackProject(ctx, &pb.RollbackProjectRequest{ProjectId: pid, Version: v1})
	if err != nil {
		t.Fatal(err)
	}
	rv := resp.GetVersion().GetNumber()
	if !resp.GetAgentApplied() {
		t.Fatalf("agent did not apply the rollback: %v", resp)
	}
	want := map[string]string{
		"a.txt":       "a-pending", // changed on disk only: kept
		"pending.txt": "pending",   // new on disk: kept
		"b.txt":       "b-pending", // changed on both sides: disk wins ...
		fmt.Sprintf("b.txt.sandkeep-conflict-v%d", rv): "b1", // ... the rollback's beside it
		// c.txt (committed in v2, untouched since): follows the rollback.
	}
	checkDir := func(what string) {
		t.Helper()
		got := map[string]string{}
		entries, err := os.ReadDir(ws)
		if err != nil {
			t.Fatal(err)
		}
		for _, e := range entries {
			b, err := os.ReadFile(filepath.Join(ws, e.Name()))
			if err != nil {
				t.Fatal(err)
			}
			got[e.Name()] = string(b)
		}
		if fmt.Sprint(got) != fmt.Sprint(want) {
			t.Fatalf("%s: workspace = %v\nwant %v", what, got, want)
		}
	}
	checkDir("after the rollback")
	v4 := a.flush()
	if v4 != rv+1 {
		t.Fatalf("the kept changes were committed as %d, want %d on top of the rollback", v4, rv+1)
	}
	checkDir("after the flush")
	restoreHeadAndCompare(t, c, token, ws)
	// The rollback itself is in the history with v1's tree, and v2's
	// committed write still reads back.
	vs := listVersions(t, c, pid)
	if vs[1].GetNumber() != rv || vs[1].GetKind() != pb.VersionKind_VERSION_KIND_ROLLBACK || vs[1].GetParent() != v2 {
		t.Fatalf("versions = %v", vs)
	}
	if b, err := readFileRPC(t, c, pid, "c.txt", v2); err != nil || string(b) != "c2" {
		t.Fatalf("c.txt at version %d = %q, %v", v2, b, err)
	}

	// A write committed just before a rollback: in the history, not in
	// the workspace.
	writeFile(t, ws, "committed.txt", "committed")
	vc := a.flush()
	resp, err = c.Admin.RollbackProject(ctx, &pb.RollbackProjectRequest{ProjectId: pid, Version: v1})
	if err != nil || !resp.GetAgentApplied() {
		t.Fatalf("second rollback: %v, %v", resp, err)
	}
	if _, err := os.Stat(filepath.Join(ws, "committed.txt")); !errors.Is(err, os.ErrNotExist) {
		t.Fatalf("committed.txt is still in the workspace after rolling back to before it: %v", err)
	}
	if b, err := readFileRPC(t, c, pid, "committed.txt", vc); err != nil || string(b) != "committed" {
		t.Fatalf("committed.txt at version %d = %q, %v", vc, b, err)
	}
	if err := a.stopGracefully(); err != nil {
		t.Fatal(err)
	}
}

// TestRollbackConcurrentWrites races rollbacks against a writer on a live
// agent (bounded) and checks the invariants whatever the interleaving:
// every rollback is a version with its target's tree, every write is in some
// version (in the head if it was not committed before a rollback, in the
// history otherwise), and the workspace ends equal to the head.
func TestRollbackConcurrentWrites(t *testing.T) {
	c := coordtest.Start(t, coordtest.Options{})
	pid, token := c.Project(t, "rollback-concurrent")
	ctx := context.Background()
	ws := filepath.Join(t.TempDir(), "ws")
	writeFile(t, ws, "base.txt", "base")
	a := startAgent(t, c, token, ws, agent.RunOptions{Quiet: 20 * time.Millisecond, Cap: 100 * time.Millisecond}, "")
	v1 := a.flush()
	const writes = 40
	done := make(chan struct{})
	go func() {
		defer close(done)
		for i := range writes {
			p := filepath.Join(ws, fmt.Sprintf("w/%03d.txt", i))
			if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
				t.Error(err)
				return
			}
			if err := os.WriteFile(p, []byte(fmt.Sprint("write ", i)), 0o644); err != nil {
				t.Error(err)
				return
			}
			time.Sleep(15 * time.Millisecond) // pace the writer so commits and rollbacks interleave
		}
	}()
	var rollbacks []*pb.Version
	for range 4 {
		time.Sleep(100 * time.Millisecond) // let some writes land between rollbacks
		resp, err := c.Admin.RollbackProject(ctx, &pb.RollbackProjectRequest{ProjectId: pid, Version: v1})
		if err != nil {
			t.Fatal(err)
		}
		rollbacks = append(rollbacks, resp.GetVersion())
	}
	<-done
	final := a.flush()
	vs := listVersions(t, c, pid)
	if vs[0].GetNumber() != final {
		t.Fatalf("head %d, flush returned %d", vs[0].GetNumber(), final)
	}
	byNumber := map[int64]*pb.Version{}
	for _, v := range vs {
		byNumber[v.GetNumber()] = v
	}
	root1 := byNumber[v1].GetRoot()
	for _, rb := range rollbacks {
		got := byNumber[rb.GetNumber()]
		if got == nil || got.GetKind() != pb.VersionKind_VERSION_KIND_ROLLBACK || !bytes.Equal(got.GetRoot(), root1) {
			t.Fatalf("rollback version %d: %v", rb.GetNumber(), got)
		}
	}
	for i := range writes {
		p := fmt.Sprintf("w/%03d.txt", i)
		h, err := c.Admin.ListFileHistory(ctx, &pb.ListFileHistoryRequest{ProjectId: pid, Path: p})
		if err != nil {
			t.Fatal(err)
		}
		found := false
		for _, r := range h.GetRevisions() {
			if r.GetFile() != nil {
				if b, err := readFileRPC(t, c, pid, p, r.GetVersion().GetNumber()); err == nil && string(b) == fmt.Sprint("write ", i) {
					found = true
				}
			}
		}
		if !found {
			t.Errorf("write %s is in no version: lost", p)
		}
	}
	restoreHeadAndCompare(t, c, token, ws)
	t.Logf("%d versions, rollbacks at %v", len(vs), func() []int64 {
		var n []int64
		for _, r := range rollbacks {
			n = append(n, r.GetNumber())
		}
		return n
	}())
	if err := a.stopGracefully(); err != nil {
		t.Fatal(err)
	}
}
