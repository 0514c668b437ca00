package e2e

import (
	"bytes"
	"context"
	"io/fs"
	"os"
	"path/filepath"
	"slices"
	"testing"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/sandkeep/sandkeep/internal/agent"
	"github.com/sandkeep/sandkeep/internal/coordtest"
	"github.com/sandkeep/sandkeep/internal/repo"
	"github.com/sandkeep/sandkeep/internal/workspacetest"
	pb "github.com/sandkeep/sandkeep/proto/sandkeep/v1"
)

// listAll pages ListFiles to the end.
func listAll(t *testing.T, c *coordtest.Coordinator, req *pb.ListFilesRequest) ([]*pb.FileInfo, int) {
	t.Helper()
	var out []*pb.FileInfo
	pages := 0
	for {
		resp, err := c.Admin.ListFiles(context.Background(), req)
		if err != nil {
			t.Fatalf("list files %v: %v", req, err)
		}
		pages++
		if int32(len(resp.GetFiles())) > req.GetPageSize() && req.GetPageSize() > 0 {
			t.Fatalf("page of %d files, page_size %d", len(resp.GetFiles()), req.GetPageSize())
		}
		out = append(out, resp.GetFiles()...)
		if resp.GetNextPageToken() == "" {
			return out, pages
		}
		req.PageToken = resp.GetNextPageToken()
	}
}

func diffAll(t *testing.T, c *coordtest.Coordinator, req *pb.DiffVersionsRequest) []*pb.FileChange {
	t.Helper()
	var out []*pb.FileChange
	for {
		resp, err := c.Admin.DiffVersions(context.Background(), req)
		if err != nil {
			t.Fatalf("diff %v: %v", req, err)
		}
		if req.GetPageSize() > 0 && int32(len(resp.GetChanges())) > req.GetPageSize() {
			t.Fatalf("page of %d changes, page_size %d", len(resp.GetChanges()), req.GetPageSize())
		}
		out = append(out, resp.GetChanges()...)
		if resp.GetNextPageToken() == "" {
			return out
		}
		req.PageToken = resp.GetNextPageToken()
	}
}

// nonDirs lists the non-directory entries of a snapshot in tree order.
func nonDirs(s map[string]workspacetest.Entry, prefix string) []string {
	var out []string
	for p, e := range s {
		if e.Type != fs.ModeDir && (prefix == "" || len(p) > len(prefix) && p[:len(prefix)+1] == prefix+"/") {
			out = append(out, p)
		}
	}
	slices.SortFunc(out, repo.ComparePaths)
	return out
}

// wantDiff derives a diff from two snapshots of the workspace.
func wantDiff(a, b map[string]workspacetest.Entry) []string {
	var paths []string
	for p := range a {
		paths = append(paths, p)
	}
	for p := range b {
		if _, ok := a[p]; !ok {
			paths = append(paths, p)
		}
	}
	slices.SortFunc(paths, repo.ComparePaths)
	var out []string
	for _, p := range paths {
		ea, inA := a[p]
		eb, inB := b[p]
		switch {
		case !inA:
			out = append(out, "added "+p)
		case !inB:
			out = append(out, "deleted "+p)
		case ea.Type == fs.ModeDir && eb.Type == fs.ModeDir:
		case ea.Type != eb.Type || ea.Mode != eb.Mode || ea.MtimeNs != eb.MtimeNs || ea.Target != eb.Target || !bytes.Equal(ea.Content, eb.Content):
			out = append(out, "modified "+p)
		}
	}
	return out
}

func describeChanges(cs []*pb.FileChange) []string {
	out := make([]string, len(cs))
	for i, c := range cs {
		k := map[pb.ChangeKind]string{pb.ChangeKind_CHANGE_KIND_ADDED: "added", pb.ChangeKind_CHANGE_KIND_MODIFIED: "modified", pb.ChangeKind_CHANGE_KIND_DELETED: "deleted"}[c.GetKind()]
		out[i] = k + " " + c.GetPath()
	}
	return out
}

func TestListingsPageAndMatchTheWorkspace(t *testing.T) {
	c := coordtest.Start(t, coordtest.Options{})
	ctx := context.Background()
	pid, token := c.Project(t, "listings")
	ws := filepath.Join(t.TempDir(), "ws")
	workspacetest.Generate(t, ws, workspacetest.Options{SmallFiles: 2500, LargeSize: 5 << 20, Seed: 3})
	t.Cleanup(func() { workspacetest.MakeWritable(ws) })
	cfg := agentConfig(c, token, ws, t)
	if _, err := agent.SyncOnce(ctx, cfg); err != nil {
		t.Fatal(err)
	}
	snap1 := workspacetest.Snapshot(t, ws)

	// files: every page size gives the workspace's files in tree order.
	want := nonDirs(snap1, "")
	for _, size := range []int32{7, 333, 0, 20000} {
		got, pages := listAll(t, c, &pb.ListFilesRequest{ProjectId: pid, PageSize: size})
		var paths []string
		for _, f := range got {
			paths = append(paths, f.GetPath())
			e := snap1[f.GetPath()]
			if f.GetSize() != e.Size || f.GetMtimeNs() != e.MtimeNs || f.GetMode()&0o777 != uint32(e.Mode.Perm()) {
				t.Fatalf("%s: listed %v, workspace %+v", f.GetPath(), f, e)
			}
			if (e.Type == fs.ModeSymlink) != (f.GetType() == pb.EntryType_ENTRY_TYPE_SYMLINK) || e.Target != f.GetTarget() {
				t.Fatalf("%s: listed type %v target %q", f.GetPath(), f.GetType(), f.GetTarget())
			}
		}
		if !slices.Equal(paths, want) {
			t.Fatalf("page size %d: %d files listed, want %d", size, len(paths), len(want))
		}
		if wantPages := (len(want) + int(size) - 1) / max(int(size), 1); size > 0 && size < 10000 && pages != wantPages && pages != wantPages+1 {
			t.Errorf("page size %d: %d pages for %d files", size, pages, len(want))
		}
	}
	// Under a prefix (with or without a trailing slash).
	for _, prefix := range []string{"src/m07", "src/m07/"} {
		got, _ := listAll(t, c, &pb.ListFilesRequest{ProjectId: pid, Prefix: prefix, PageSize: 10})
		var paths []string
		for _, f := range got {
			paths = append(paths, f.GetPath())
		}
		if w := nonDirs(snap1, "src/m07"); !slices.Equal(paths, w) || len(w) == 0 {
			t.Fatalf("prefix %s: %d files, want %d", prefix, len(paths), len(w))
		}
	}
	if _, err := c.Admin.ListFiles(ctx, &pb.ListFilesRequest{ProjectId: pid, Prefix: "no/such/dir"}); status.Code(err) != codes.NotFound {
		t.Errorf("missing prefix: %v", err)
	}

	// A head listing stays on the version of its first page.
	first, err := c.Admin.ListFiles(ctx, &pb.ListFilesRequest{ProjectId: pid, PageSize: 100})
	if err != nil {
		t.Fatal(err)
	}
	writeFile(t, ws, "README.md", "# version 2\n")
	writeFile(t, ws, "zz-new/file.txt", "new")
	if err := os.RemoveAll(filepath.Join(ws, "src/m30")); err != nil {
		t.Fatal(err)
	}
	if err := os.Remove(filepath.Join(ws, "bin/run.sh")); err != nil {
		t.Fatal(err)
	}
	if err := os.Chmod(filepath.Join(ws, "empty.txt"), 0o600); err != nil {
		t.Fatal(err)
	}
	if _, err := agent.SyncOnce(ctx, cfg); err != nil {
		t.Fatal(err)
	}
	snap2 := workspacetest.Snapshot(t, ws)
	rest, _ := listAll(t, c, &pb.ListFilesRequest{ProjectId: pid, PageSize: 1000, PageToken: first.GetNextPageToken()})
	if n := len(first.GetFiles()) + len(rest); n != len(want) {
		t.Fatalf("head listing across a commit: %d files, want version 1's %d", n, len(want))
	}
	if got, _ := listAll(t, c, &pb.ListFilesRequest{ProjectId: pid, Version: 1}); len(got) != len(want) {
		t.Fatalf("version 1 listing: %d files", len(got))
	}
	if got, _ := listAll(t, c, &pb.ListFilesRequest{ProjectId: pid}); len(got) != len(nonDirs(snap2, "")) {
		t.Fatalf("head listing: %d files, want %d", len(got), len(nonDirs(snap2, "")))
	}
	// Tokens are checked.
	for _, tc := range []*pb.ListFilesRequest{
		{ProjectId: pid, PageToken: "garbage!"},
		{ProjectId: pid, PageToken: first.GetNextPageToken(), Prefix: "src"},
		{ProjectId: pid, PageToken: first.GetNextPageToken(), Version: 2},
		{ProjectId: pid, PageSize: -1},
		{ProjectId: pid, Prefix: "../etc"},
		{ProjectId: pid, Version: -1},
	} {
		if _, err := c.Admin.ListFiles(ctx, tc); status.Code(err) != codes.InvalidArgument {
			t.Errorf("ListFiles %v: %v, want InvalidArgument", tc, err)
		}
	}
	if _, err := c.Admin.ListFiles(ctx, &pb.ListFilesRequest{ProjectId: pid, Version: 3}); status.Code(err) != codes.NotFound {
		t.Errorf("ListFiles of a missing version: %v", err)
	}

	// diff: the same as the workspace's change, whatever the page size.
	wantD := wantDiff(snap1, snap2)
	if len(wantD) < 50 {
		t.Fatalf("only %d changes; the test wants a larger diff", len(wantD))
	}
	for _, size := range []int32{1, 13, 0} {
		got := describeChanges(diffAll(t, c, &pb.DiffVersionsRequest{ProjectId: pid, FromVersion: 1, ToVersion: 2, PageSize: size}))
		if !slices.Equal(got, wantD) {
			t.Fatalf("diff 1 2 (page size %d):\n%v\nwant\n%v", size, head(got), head(wantD))
		}
	}
	changes := diffAll(t, c, &pb.DiffVersionsRequest{ProjectId: pid, FromVersion: 1, ToVersion: 2})
	for _, ch := range changes {
		if ch.GetPath() == "README.md" {
			if ch.GetOldFile().GetSize() != int64(len("# hello\n")) || ch.GetNewFile().GetSize() != int64(len("# version 2\n")) || ch.GetOldFile().GetChecksum() == ch.GetNewFile().GetChecksum() {
				t.Errorf("README.md change: %v", ch)
			}
		}
	}
	// From the empty tree: everything, added.
	all := diffAll(t, c, &pb.DiffVersionsRequest{ProjectId: pid, FromVersion: 0, ToVersion: 1})
	if len(all) != len(snap1) {
		t.Errorf("diff 0 1: %d changes, want %d entries", len(all), len(snap1))
	}
	tok := ""
	if resp, err := c.Admin.DiffVersions(ctx, &pb.DiffVersionsRequest{ProjectId: pid, FromVersion: 1, ToVersion: 2, PageSize: 1}); err == nil {
		tok = resp.GetNextPageToken()
	}
	for _, tc := range []*pb.DiffVersionsRequest{
		{ProjectId: pid, FromVersion: 2, ToVersion: 1, PageToken: tok},
		{ProjectId: pid, FromVersion: -1, ToVersion: 1},
		{ProjectId: pid, FromVersion: 1, ToVersion: 2, PageToken: "x"},
	} {
		if _, err := c.Admin.DiffVersions(ctx, tc); status.Code(err) != codes.InvalidArgument {
			t.Errorf("DiffVersions %v: %v, want InvalidArgument", tc, err)
		}
	}
	if _, err := c.Admin.DiffVersions(ctx, &pb.DiffVersionsRequest{ProjectId: pid, FromVersion: 1, ToVersion: 9}); status.Code(err) != codes.NotFound {
		t.Errorf("diff with a missing version: %v", err)
	}
}

func TestFileHistoryAndRead(t *testing.T) {
	c := coordtest.Start(t, coordtest.Options{})
	ctx := context.Background()
	pid, token := c.Project(t, "history")
	ws := filepath.Join(t.TempDir(), "ws")
	cfg := agentConfig(c, token, ws, t)
	sync := func() int64 {
		t.Helper()
		r, err := agent.SyncOnce(ctx, cfg)
		if err != nil {
			t.Fatal(err)
		}
		return r.Version.GetNumber()
	}
	// Versions: 1 adds h.txt, 2 touches another file, 3 modifies h.txt,
	// 4 deletes it, 5 another file, 6 re-creates it.
	writeFile(t, ws, "dir/h.txt", "one")
	writeFile(t, ws, "other.txt", "o1")
	sync()
	writeFile(t, ws, "other.txt", "o2")
	sync()
	writeFile(t, ws, "dir/h.txt", "three!")
	sync()
	if err := os.Remove(filepath.Join(ws, "dir/h.txt")); err != nil {
		t.Fatal(err)
	}
	sync()
	writeFile(t, ws, "other.txt", "o5")
	sync()
	writeFile(t, ws, "dir/h.txt", "six")
	if v := sync(); v != 6 {
		t.Fatalf("made %d versions, want 6", v)
	}
	type rev struct {
		version int64
		kind    pb.ChangeKind
		size    int64
	}
	want := []rev{
		{6, pb.ChangeKind_CHANGE_KIND_ADDED, 3},
		{4, pb.ChangeKind_CHANGE_KIND_DELETED, 0},
		{3, pb.ChangeKind_CHANGE_KIND_MODIFIED, 6},
		{1, pb.ChangeKind_CHANGE_KIND_ADDED, 3},
	}
	for _, size := range []int32{1, 2, 0} {
		var got []rev
		req := &pb.ListFileHistoryRequest{ProjectId: pid, Path: "dir/h.txt", PageSize: size}
		for {
			resp, err := c.Admin.ListFileHistory(ctx, req)
			if err != nil {
				t.Fatal(err)
			}
			for _, r := range resp.GetRevisions() {
				got = append(got, rev{r.GetVersion().GetNumber(), r.GetKind(), r.GetFile().GetSize()})
			}
			if req.PageToken = resp.GetNextPageToken(); req.PageToken == "" {
				break
			}
		}
		if !slices.Equal(got, want) {
			t.Fatalf("history (page size %d) = %v, want %v", size, got, want)
		}
	}
	for _, tc := range []*pb.ListFileHistoryRequest{
		{ProjectId: pid, Path: "/abs"}, {ProjectId: pid, Path: ""}, {ProjectId: pid, Path: "a/../b"},
		{ProjectId: pid, Path: "dir/h.txt", PageToken: "bogus"},
	} {
		if _, err := c.Admin.ListFileHistory(ctx, tc); status.Code(err) != codes.InvalidArgument {
			t.Errorf("history %v: %v", tc, err)
		}
	}
	if _, err := c.Admin.ListFileHistory(ctx, &pb.ListFileHistoryRequest{ProjectId: "prj_missing", Path: "x"}); status.Code(err) != codes.NotFound {
		t.Errorf("history of a missing project: %v", err)
	}

	// ReadFile: every version's content, ranges, refusals.
	for v, content := range map[int64]string{1: "one", 3: "three!", 6: "six", 0: "six"} {
		if b, err := readFileRPC(t, c, pid, "dir/h.txt", v); err != nil || string(b) != content {
			t.Errorf("read version %d: %q, %v", v, b, err)
		}
	}
	if _, err := readFileRPC(t, c, pid, "dir/h.txt", 4); status.Code(err) != codes.NotFound {
		t.Errorf("read a deleted file: %v", err)
	}
	workspacetest.RandomFile(t, filepath.Join(ws, "big.bin"), 6<<20+17, 8)
	big, _ := os.ReadFile(filepath.Join(ws, "big.bin"))
	sync()
	if b, err := readFileRPC(t, c, pid, "big.bin", 0); err != nil || !bytes.Equal(b, big) {
		t.Fatalf("read big.bin: %d bytes, %v", len(b), err)
	}
	for _, rg := range [][2]int64{{0, 1}, {1 << 20, 3 << 20}, {6<<20 + 10, 0}, {6<<20 + 17, 0}} {
		stream, err := c.Admin.ReadFile(ctx, &pb.ReadFileRequest{ProjectId: pid, Path: "big.bin", Offset: rg[0], Length: rg[1]})
		if err != nil {
			t.Fatal(err)
		}
		var buf bytes.Buffer
		for {
			msg, err := stream.Recv()
			if err != nil {
				break
			}
			if len(msg.GetData()) > 1<<20 {
				t.Fatalf("a message of %d bytes", len(msg.GetData()))
			}
			buf.Write(msg.GetData())
		}
		end := rg[0] + rg[1]
		if rg[1] == 0 {
			end = int64(len(big))
		}
		if !bytes.Equal(buf.Bytes(), big[rg[0]:end]) {
			t.Fatalf("range %v: %d bytes", rg, buf.Len())
		}
	}
	for _, tc := range []struct {
		req  *pb.ReadFileRequest
		want codes.Code
	}{
		{&pb.ReadFileRequest{ProjectId: pid, Path: "dir"}, codes.InvalidArgument},
		{&pb.ReadFileRequest{ProjectId: pid, Path: "big.bin", Offset: 7 << 20}, codes.OutOfRange},
		{&pb.ReadFileRequest{ProjectId: pid, Path: "big.bin", Offset: -1}, codes.InvalidArgument},
		{&pb.ReadFileRequest{ProjectId: pid, Path: "../../etc/passwd"}, codes.InvalidArgument},
		{&pb.ReadFileRequest{ProjectId: pid, Path: "nope"}, codes.NotFound},
		{&pb.ReadFileRequest{ProjectId: "prj_missing", Path: "big.bin"}, codes.NotFound},
	} {
		if _, err := readFileRPC(t, c, tc.req.GetProjectId(), tc.req.GetPath(), tc.req.GetVersion()); tc.req.GetOffset() == 0 && status.Code(err) != tc.want {
			t.Errorf("ReadFile %v: %v, want %v", tc.req, err, tc.want)
		}
		stream, err := c.Admin.ReadFile(ctx, tc.req)
		if err == nil {
			_, err = stream.Recv()
		}
		if status.Code(err) != tc.want {
			t.Errorf("ReadFile %v: %v, want %v", tc.req, err, tc.want)
		}
	}
}
