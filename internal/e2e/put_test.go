package e2e

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/durationpb"

	"github.com/sandkeep/sandkeep/internal/agent"
	"github.com/sandkeep/sandkeep/internal/coordtest"
	"github.com/sandkeep/sandkeep/internal/workspacetest"
	pb "github.com/sandkeep/sandkeep/proto/sandkeep/v1"
)

// putMsg is one message of a PutFiles stream.
func putHeader(project, path string) *pb.PutFilesRequest {
	return &pb.PutFilesRequest{Msg: &pb.PutFilesRequest_Header{Header: &pb.PutFileHeader{ProjectId: project, Path: path, AgentTimeout: durationpb.New(30 * time.Second)}}}
}

func putData(b []byte) *pb.PutFilesRequest {
	return &pb.PutFilesRequest{Msg: &pb.PutFilesRequest_Data{Data: b}}
}

// putStream sends msgs as one PutFiles call.
func putStream(ctx context.Context, c *coordtest.Coordinator, msgs ...*pb.PutFilesRequest) (*pb.PutFilesResponse, error) {
	s, err := c.Admin.PutFiles(ctx)
	if err != nil {
		return nil, err
	}
	for _, m := range msgs {
		if err := s.Send(m); err != nil {
			break // the answer says why
		}
	}
	return s.CloseAndRecv()
}

// putFiles puts path=data pairs in one call, data in 1 MiB messages.
func putFiles(t *testing.T, c *coordtest.Coordinator, project string, files ...[2]string) *pb.PutFilesResponse {
	t.Helper()
	var msgs []*pb.PutFilesRequest
	for _, f := range files {
		msgs = append(msgs, putHeader(project, f[0]))
		for b := []byte(f[1]); len(b) > 0; {
			n := min(len(b), 1<<20)
			msgs = append(msgs, putData(b[:n]))
			b = b[n:]
		}
	}
	resp, err := putStream(context.Background(), c, msgs...)
	if err != nil {
		t.Fatalf("put: %v", err)
	}
	return resp
}

// TestPutFiles: files put without a sandbox read back byte-identical, in a
// version of kind upload on the head; deletes likewise; every bad request
// is refused with a clear error and leaves the head as it was.
func TestPutFiles(t *testing.T) {
	c := coordtest.Start(t, coordtest.Options{})
	pid, _ := c.Project(t, "put")
	ctx := context.Background()
	big := workspacetest.RandomBytes(7, 5<<20+123)
	resp := putFiles(t, c, pid, [2]string{"docs/big.bin", string(big)}, [2]string{"a.txt", "hello"}, [2]string{"empty", ""})
	v1 := resp.GetVersion()
	if v1.GetNumber() != 1 || v1.GetKind() != pb.VersionKind_VERSION_KIND_UPLOAD || resp.GetFiles() != 3 || resp.GetBytes() != int64(len(big))+5 {
		t.Fatalf("put answered %v", resp)
	}
	if resp.GetNewChunks() == 0 || resp.GetPackedBytes() == 0 || resp.GetAgent().GetConnected() {
		t.Fatalf("put answered %v", resp)
	}
	for path, want := range map[string][]byte{"docs/big.bin": big, "a.txt": []byte("hello"), "empty": nil} {
		got, err := readFileRPC(t, c, pid, path, 0)
		if err != nil || !bytes.Equal(got, want) {
			t.Fatalf("%s: read %d bytes (%v), want %d", path, len(got), err, len(want))
		}
	}
	// The same bytes again: nothing new stored.
	resp = putFiles(t, c, pid, [2]string{"copy/big.bin", string(big)})
	if resp.GetNewChunks() != 0 || resp.GetVersion().GetParent() != 1 {
		t.Fatalf("second put of the same bytes answered %v", resp)
	}
	del, err := c.Admin.DeleteFiles(ctx, &pb.DeleteFilesRequest{ProjectId: pid, Paths: []string{"docs"}})
	if err != nil || del.GetDeleted() != 1 {
		t.Fatalf("delete: %v, %v", del, err)
	}
	if _, err := readFileRPC(t, c, pid, "docs/big.bin", 0); status.Code(err) != codes.NotFound {
		t.Fatalf("docs/big.bin after deleting docs: %v", err)
	}
	if got, err := readFileRPC(t, c, pid, "docs/big.bin", 1); err != nil || !bytes.Equal(got, big) {
		t.Fatalf("version 1 lost docs/big.bin: %v", err)
	}
	head := headNumber(t, c, pid)

	refused := []struct {
		name string
		msgs []*pb.PutFilesRequest
		code codes.Code
		want string
	}{
		{"dot-dot", []*pb.PutFilesRequest{putHeader(pid, "../escape"), putData([]byte("x"))}, codes.InvalidArgument, `".."`},
		{"empty element", []*pb.PutFilesRequest{putHeader(pid, "a//b"), putData([]byte("x"))}, codes.InvalidArgument, "empty name"},
		{"NUL", []*pb.PutFilesRequest{putHeader(pid, "a\x00b"), putData([]byte("x"))}, codes.InvalidArgument, "path"},
		{"under a file", []*pb.PutFilesRequest{putHeader(pid, "a.txt/x"), putData([]byte("x"))}, codes.InvalidArgument, "not a directory"},
		{"twice", []*pb.PutFilesRequest{putHeader(pid, "t"), putData([]byte("x")), putHeader(pid, "t")}, codes.InvalidArgument, "named twice"},
		{"inside another", []*pb.PutFilesRequest{putHeader(pid, "d"), putHeader(pid, "d/x")}, codes.InvalidArgument, "inside"},
		{"data first", []*pb.PutFilesRequest{putData([]byte("x"))}, codes.InvalidArgument, "before its header"},
		{"empty stream", nil, codes.InvalidArgument, "empty PutFiles stream"},
		{"other project", []*pb.PutFilesRequest{putHeader(pid, "x"), putData([]byte("x")), putHeader("prj_other", "y")}, codes.InvalidArgument, "names project"},
		{"unknown project", []*pb.PutFilesRequest{putHeader("prj_nope", "x")}, codes.NotFound, "prj_nope"},
		{"oversized message", []*pb.PutFilesRequest{putHeader(pid, "x"), putData(make([]byte, 1<<20+1))}, codes.InvalidArgument, "at most"},
	}
	for _, tt := range refused {
		t.Run(tt.name, func(t *testing.T) {
			_, err := putStream(ctx, c, tt.msgs...)
			if status.Code(err) != tt.code || !strings.Contains(err.Error(), tt.want) {
				t.Fatalf("got %v, want %s mentioning %q", err, tt.code, tt.want)
			}
		})
	}
	if _, err := c.Admin.DeleteFiles(ctx, &pb.DeleteFilesRequest{ProjectId: pid, Paths: []string{"no/such"}}); status.Code(err) != codes.NotFound {
		t.Fatalf("delete of a missing path: %v", err)
	}
	// The project's byte limit bounds a put, while it streams.
	if _, err := c.Admin.SetProjectLimits(ctx, &pb.SetProjectLimitsRequest{ProjectId: pid, Limits: &pb.ProjectLimits{MaxBytes: proto.Int64(6 << 20)}}); err != nil {
		t.Fatal(err)
	}
	_, err = putStream(ctx, c, putHeader(pid, "too/big"), putData(make([]byte, 1<<20)), putData(make([]byte, 1<<20)), putData(make([]byte, 1<<20)),
		putData(make([]byte, 1<<20)), putData(make([]byte, 1<<20)), putData(make([]byte, 1<<20)), putData(make([]byte, 1<<20)))
	if code := status.Code(err); code != codes.ResourceExhausted && code != codes.InvalidArgument {
		t.Fatalf("put past the byte limit: %v", err)
	}
	if h := headNumber(t, c, pid); h != head {
		t.Fatalf("refused puts moved the head from %d to %d", head, h)
	}
}

// TestPutIntoLiveAgent: a file put while an agent runs is in its workspace
// when the call returns (the agent applies the new head as it applies a
// rollback); put racing a local edit of the same path keeps both.
func TestPutIntoLiveAgent(t *testing.T) {
	c := coordtest.Start(t, coordtest.Options{})
	pid, token := c.Project(t, "put-live")
	ws := filepath.Join(t.TempDir(), "ws")
	writeFile(t, ws, "a.txt", "a1")
	writeFile(t, ws, "b.txt", "b1")
	// Nothing is committed unless flushed: a local edit is certainly
	// pending when the put lands.
	a := startAgent(t, c, token, ws, agent.RunOptions{Quiet: time.Hour, Cap: time.Hour}, "")
	a.flush()

	resp := putFiles(t, c, pid, [2]string{"uploads/new.txt", "from the platform"})
	if !resp.GetAgent().GetApplied() {
		t.Fatalf("the running agent did not apply the put: %v", resp)
	}
	if b, err := os.ReadFile(filepath.Join(ws, "uploads/new.txt")); err != nil || string(b) != "from the platform" {
		t.Fatalf("uploads/new.txt in the workspace: %q, %v", b, err)
	}

	// A local edit, pending, then a put of the same path: the disk's
	// content stays, the put's is kept beside it.
	writeFile(t, ws, "b.txt", "b-local")
	resp = putFiles(t, c, pid, [2]string{"b.txt", "b-put"})
	pv := resp.GetVersion().GetNumber()
	if !resp.GetAgent().GetApplied() {
		t.Fatalf("the running agent did not apply the put: %v", resp)
	}
	want := map[string]string{"b.txt": "b-local", fmt.Sprintf("b.txt.sandkeep-conflict-v%d", pv): "b-put", "a.txt": "a1"}
	for name, content := range want {
		if b, err := os.ReadFile(filepath.Join(ws, name)); err != nil || string(b) != content {
			t.Fatalf("%s = %q (%v), want %q", name, b, err, content)
		}
	}
	v := a.flush()
	if v <= pv {
		t.Fatalf("flush after the merge returned %d, want above the put's %d", v, pv)
	}
	if b, err := readFileRPC(t, c, pid, "b.txt", pv); err != nil || string(b) != "b-put" {
		t.Fatalf("b.txt in the put's version: %q, %v", b, err)
	}
	restoreHeadAndCompare(t, c, token, ws)
	if err := a.stopGracefully(); err != nil {
		t.Fatal(err)
	}
}

// TestCLIPut drives `sandkeep put` and `sandkeep get` (the contract the
// console issue spells out): byte-identical round trip, --delete, --json,
// stdin, and a clear error for a bad path.
func TestCLIPut(t *testing.T) {
	coord, _ := buildBinaries(t)
	s := serveBinary(t, coord)
	env := append(os.Environ(), "SANDKEEP_COORDINATOR="+s.grpc, "SANDKEEP_DATA="+s.data)
	run := func(wantOK bool, stdin io.Reader, args ...string) (string, string) {
		t.Helper()
		cmd := exec.Command(coord, args...)
		cmd.Env, cmd.Stdin = env, stdin
		var out, errb bytes.Buffer
		cmd.Stdout, cmd.Stderr = &out, &errb
		err := cmd.Run()
		if (err == nil) != wantOK {
			t.Fatalf("sandkeep %v: %v\nstdout: %s\nstderr: %s", args, err, out.String(), errb.String())
		}
		return out.String(), errb.String()
	}
	project, _ := run(true, nil, "project", "create", "cli-put")
	project = strings.TrimSpace(project)
	dir := t.TempDir()
	local := filepath.Join(dir, "report.bin")
	data := workspacetest.RandomBytes(3, 2<<20+77)
	if err := os.WriteFile(local, data, 0o640); err != nil {
		t.Fatal(err)
	}
	out, errOut := run(true, nil, "put", "--project", project, local, "docs/report.bin")
	if out != "1\n" || !strings.Contains(errOut, "no agent is connected") {
		t.Fatalf("put printed %q / %q", out, errOut)
	}
	got := filepath.Join(dir, "got.bin")
	run(true, nil, "get", "--project", project, "docs/report.bin", "-o", got)
	if b, err := os.ReadFile(got); err != nil || !bytes.Equal(b, data) {
		t.Fatalf("get after put: %d bytes, %v; want %d identical", len(b), err, len(data))
	}
	out, _ = run(true, strings.NewReader("from stdin\n"), "put", "--project", project, "--json", "-", "notes/in.txt")
	if !strings.Contains(out, `"version": 2`) || !strings.Contains(out, `"path": "notes/in.txt"`) || !strings.Contains(out, `"bytes": 11`) {
		t.Fatalf("put --json printed %s", out)
	}
	out, _ = run(true, nil, "put", "--project", project, "--delete", "docs/report.bin")
	if out != "3\n" {
		t.Fatalf("put --delete printed %q", out)
	}
	files, _ := run(true, nil, "files", "--project", project)
	if strings.Contains(files, "report.bin") || !strings.Contains(files, "notes/in.txt") {
		t.Fatalf("files after put --delete:\n%s", files)
	}
	_, errOut = run(false, nil, "put", "--project", project, local, "../x")
	if !strings.Contains(errOut, "InvalidArgument") || !strings.Contains(errOut, `".."`) {
		t.Fatalf("put to ../x: %q", errOut)
	}
	_, errOut = run(false, nil, "put", "--project", project, filepath.Join(dir, "missing"), "x")
	if !strings.Contains(errOut, "no such file") {
		t.Fatalf("put of a missing local file: %q", errOut)
	}
	out, _ = run(true, nil, "replicas", "--json")
	if !strings.Contains(out, `"self": true`) || !strings.Contains(out, `"leader": true`) || !strings.Contains(out, `"addr": "`+s.grpc+`"`) {
		t.Fatalf("replicas --json on SQLite printed %s", out)
	}
	out, _ = run(true, nil, "activity", "--json")
	if !strings.Contains(out, `"packs_failed_verification": 0`) || !strings.Contains(out, `"lifecycle_actions": []`) {
		t.Fatalf("activity --json printed %s", out)
	}
	_, errOut = run(false, nil, "flush", "--project", project)
	if !strings.Contains(errOut, "no agent of this project is connected") || !strings.Contains(errOut, "sandbox ensure") || strings.Contains(errOut, "max retries") {
		t.Fatalf("flush without an agent: %q", errOut)
	}
}
