package restore

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"runtime"
	"slices"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/sandkeep/sandkeep/internal/id"
	"github.com/sandkeep/sandkeep/internal/pack"
	"github.com/sandkeep/sandkeep/internal/progress"
	pb "github.com/sandkeep/sandkeep/proto/sandkeep/v1"
)

const baseNs = int64(1_700_000_000_123_456_789)

// A sandbox file must not become a setuid or setgid binary of whoever
// restores it: the bits are dropped unless KeepSetuid asks for them (the
// sticky bit of a directory stays).
func TestSetuidDroppedByDefault(t *testing.T) {
	e := newEnv(t)
	ws := filepath.Join(t.TempDir(), "ws")
	data := textBytes(6, 300)
	e.addPack(data)
	mustRun(t, ws, Options{}, e.batch(
		fileE("suid", 0o4755, baseNs+1, data),
		fileE("sgid", 0o2750, baseNs+2, data),
		dirE("tmp", 0o1777, baseNs+3),
	))
	wantFile(t, filepath.Join(ws, "suid"), data, 0o755, baseNs+1)
	wantFile(t, filepath.Join(ws, "sgid"), data, 0o750, baseNs+2)
	if fi, err := os.Lstat(filepath.Join(ws, "tmp")); err != nil || fi.Mode()&os.ModeSticky == 0 {
		t.Fatalf("tmp: %v, %v; want the sticky bit kept", fi.Mode(), err)
	}
}

// A version larger than the target's free space is refused before anything
// is written, with the numbers.
func TestRestoreRefusesWithoutSpace(t *testing.T) {
	e := newEnv(t)
	ws := filepath.Join(t.TempDir(), "ws")
	data := textBytes(7, 1000)
	e.addPack(data)
	b := e.batch(fileE("huge", 0o644, baseNs+1, data))
	free, err := freeSpace(filepath.Dir(ws))
	if err != nil {
		t.Fatal(err)
	}
	b.Version = &pb.Version{Number: 3, Bytes: free * 2}
	_, err = Run(t.Context(), &sliceSource{msgs: []*pb.GetRestorePlanResponse{b}}, Options{Workspace: ws})
	var se *SpaceError
	if !errors.As(err, &se) || !errors.Is(err, ErrNoSpace) || se.Need != free*2 || se.Version != 3 {
		t.Fatalf("Run = %v, want a SpaceError for version 3 needing %d bytes", err, free*2)
	}
	if !strings.Contains(err.Error(), "free") {
		t.Errorf("error %q does not say what is free", err)
	}
	if _, err := os.Lstat(filepath.Join(ws, "huge")); !os.IsNotExist(err) {
		t.Fatalf("a file was written despite the refusal: %v", err)
	}
	// What the target holds already counts as available.
	_, err = Run(t.Context(), &sliceSource{msgs: []*pb.GetRestorePlanResponse{b}}, Options{Workspace: ws, ExistingBytes: free * 2})
	if errors.Is(err, ErrNoSpace) {
		t.Fatalf("Run with the bytes on disk already = %v", err)
	}
}

func TestEveryEntryKind(t *testing.T) {
	e := newEnv(t)
	ws := filepath.Join(t.TempDir(), "ws") // created by Run
	// Four chunks of one file in two packs, each pack holding them out of order.
	c0, c1, c2, c3 := randBytes(1, 70_000), textBytes(2, 90_000), randBytes(3, 50_000), textBytes(4, 10_001)
	e.addPack(c3, c1, textBytes(9, 1000))
	e.addPack(c2, c0)
	small := textBytes(5, 1234)
	script := []byte("#!/bin/sh\necho hi\n")
	suid := textBytes(6, 300)
	e.addPack(small, script, suid)

	entries := []*pb.PlanEntry{
		dirE("src", 0o755, baseNs+1),
		fileE("src/big.bin", 0o644, baseNs+2, c0, c1, c2, c3),
		fileE("src/empty", 0o600, baseNs+3),
		fileE("src/run.sh", 0o755, baseNs+4, script),
		dirE("src/ro", 0o555, baseNs+5),
		fileE("src/ro/small.txt", 0o444, baseNs+6, small),
		dirE("src/ro/deeper", 0o500, baseNs+7),
		fileE("src/ro/deeper/suid", 0o4755, baseNs+8, suid),
		fileE("src/ro/deeper/sgid", 0o2750, baseNs+9, suid),
		dirE("tmp", 0o1777, baseNs+10),
		dirE("empty", 0o700, baseNs+11),
		linkE("link-rel", "src/big.bin", baseNs+12),
		linkE("src/link-abs", "/etc/passwd", baseNs+13),
		linkE("dangling", "does/not/exist", baseNs+14),
		linkE("link-up", "../outside", baseNs+15),
	}
	var got []FileInfo
	res := mustRun(t, ws, Options{KeepSetuid: true, OnFile: func(fi FileInfo, st os.FileInfo) {
		if fi.Size != st.Size() || st.ModTime().UnixNano() != fi.MtimeNs {
			t.Errorf("OnFile(%s): stat %d bytes %d ns, info %d bytes %d ns", fi.Path, st.Size(), st.ModTime().UnixNano(), fi.Size, fi.MtimeNs)
		}
		got = append(got, fi)
	}}, e.batch(entries[:5]...), e.batch(entries[5:]...))

	wantFile(t, filepath.Join(ws, "src/big.bin"), cat(c0, c1, c2, c3), 0o644, baseNs+2)
	wantFile(t, filepath.Join(ws, "src/empty"), nil, 0o600, baseNs+3)
	wantFile(t, filepath.Join(ws, "src/run.sh"), script, 0o755, baseNs+4)
	wantFile(t, filepath.Join(ws, "src/ro/small.txt"), small, 0o444, baseNs+6)
	wantFile(t, filepath.Join(ws, "src/ro/deeper/suid"), suid, 0o755|os.ModeSetuid, baseNs+8)
	wantFile(t, filepath.Join(ws, "src/ro/deeper/sgid"), suid, 0o750|os.ModeSetgid, baseNs+9)
	for _, d := range []struct {
		p     string
		mode  os.FileMode
		mtime int64
	}{
		{"src", 0o755, baseNs + 1}, {"src/ro", 0o555, baseNs + 5}, {"src/ro/deeper", 0o500, baseNs + 7},
		{"tmp", 0o777 | os.ModeSticky, baseNs + 10}, {"empty", 0o700, baseNs + 11},
	} {
		fi, err := os.Lstat(filepath.Join(ws, d.p))
		if err != nil {
			t.Fatal(err)
		}
		if !fi.IsDir() || fi.Mode()&^os.ModeDir != d.mode || fi.ModTime().UnixNano() != d.mtime {
			t.Errorf("%s: %v %d, want dir %v %d", d.p, fi.Mode(), fi.ModTime().UnixNano(), d.mode, d.mtime)
		}
	}
	for _, l := range []struct {
		p, target string
		mtime     int64
	}{
		{"link-rel", "src/big.bin", baseNs + 12}, {"src/link-abs", "/etc/passwd", baseNs + 13},
		{"dangling", "does/not/exist", baseNs + 14}, {"link-up", "../outside", baseNs + 15},
	} {
		p := filepath.Join(ws, l.p)
		fi, err := os.Lstat(p)
		if err != nil {
			t.Fatal(err)
		}
		target, _ := os.Readlink(p)
		if fi.Mode()&os.ModeSymlink == 0 || target != l.target || fi.ModTime().UnixNano() != l.mtime {
			t.Errorf("%s: %v -> %q at %d, want symlink -> %q at %d", l.p, fi.Mode(), target, fi.ModTime().UnixNano(), l.target, l.mtime)
		}
	}
	if res.Files != 6 || res.Dirs != 5 || res.Symlinks != 4 {
		t.Errorf("result %+v", res)
	}
	if want := int64(len(c0) + len(c1) + len(c2) + len(c3) + len(script) + len(small) + 2*len(suid)); res.Bytes != want {
		t.Errorf("Bytes %d, want %d", res.Bytes, want)
	}
	if res.BytesDownloaded == 0 || res.Ranges == 0 || res.Reused != 0 {
		t.Errorf("result %+v", res)
	}
	var paths []string
	for _, fi := range got {
		paths = append(paths, fi.Path)
	}
	if want := []string{"src/big.bin", "src/empty", "src/run.sh", "src/ro/small.txt", "src/ro/deeper/suid", "src/ro/deeper/sgid"}; !slices.Equal(paths, want) {
		t.Errorf("OnFile paths %q, want %q", paths, want)
	}
	if len(got) > 0 && (got[0].Mode != 0o644 || len(got[0].Chunks) != 4 || got[0].Size != int64(len(c0)+len(c1)+len(c2)+len(c3))) {
		t.Errorf("OnFile %+v", got[0])
	}

	// Restoring again over the result changes nothing and fetches nothing.
	e.srv.reset()
	before := snapshotDir(t, ws)
	res = mustRun(t, ws, Options{KeepSetuid: true}, e.batch(entries[:5]...), e.batch(entries[5:]...))
	if n := e.srv.requests.Load(); n != 0 {
		t.Errorf("second restore made %d requests", n)
	}
	if res.Reused != 8 || res.Files != 6 {
		t.Errorf("second restore: %+v", res)
	}
	if after := snapshotDir(t, ws); !mapsEqual(before, after) {
		t.Errorf("second restore changed the workspace:\n%v\n%v", before, after)
	}
}

func mapsEqual(a, b map[string]string) bool {
	if len(a) != len(b) {
		return false
	}
	for k, v := range a {
		if b[k] != v {
			return false
		}
	}
	return true
}

func TestSharedChunksAndRangeDedup(t *testing.T) {
	e := newEnv(t)
	ws := t.TempDir()
	a, b, c, d := randBytes(11, 40_000), textBytes(12, 30_000), randBytes(13, 20_000), textBytes(14, 5000)
	p1 := e.addPack(a, b, c)
	e.addPack(d)
	entries := []*pb.PlanEntry{
		fileE("one", 0o644, baseNs, a, b, a), // a twice in one file
		fileE("two", 0o644, baseNs, b, c, d),
		fileE("three", 0o644, baseNs, a),
	}
	// One range per blob, neighbours in the same pack, one listed twice, and
	// a range of the first pack that repeats chunk b.
	rs := e.rangesFor(true, chunkIDs(entries...)...)
	rs = append(rs, rs[0])
	rs = append(rs, e.rangesFor(false, id.Sum(b), id.Sum(c))...)
	msg := &pb.GetRestorePlanResponse{Entries: entries, Ranges: rs}
	res := mustRun(t, ws, Options{}, msg)
	wantFile(t, filepath.Join(ws, "one"), cat(a, b, a), 0o644, baseNs)
	wantFile(t, filepath.Join(ws, "two"), cat(b, c, d), 0o644, baseNs)
	wantFile(t, filepath.Join(ws, "three"), a, 0o644, baseNs)
	// The three neighbouring blobs of the first pack come in one GET, the
	// second pack in another.
	if n := e.srv.requests.Load(); n != 2 || res.Ranges != 2 {
		t.Errorf("%d requests, %d ranges, want 2: %q", n, res.Ranges, e.srv.rangeHeaders())
	}
	if want := int64(len(e.data[p1])-3*pack.EntrySize-pack.TrailerSize) + int64(e.loc[id.Sum(d)].e.Length); e.srv.bytes.Load() != want || res.BytesDownloaded != want {
		t.Errorf("served %d bytes, downloaded %d, want %d", e.srv.bytes.Load(), res.BytesDownloaded, want)
	}
}

// TestLargeFileFromManyPacks restores a file of more than preallocMin whose
// chunks lie in three packs, so the workers write its parts out of order
// into the preallocated file, and a small one beside it.
func TestLargeFileFromManyPacks(t *testing.T) {
	e := newEnv(t)
	ws := t.TempDir()
	a, b, c := randBytes(21, 600_000), textBytes(22, 500_000), randBytes(23, 300_001)
	e.addPack(c)
	e.addPack(b)
	e.addPack(a)
	entries := []*pb.PlanEntry{fileE("big", 0o644, baseNs, a, b, c, b), fileE("small", 0o600, baseNs, c)}
	msg := &pb.GetRestorePlanResponse{Entries: entries, Ranges: e.rangesFor(true, chunkIDs(entries...)...)}
	mustRun(t, ws, Options{}, msg)
	big := cat(a, b, c, b)
	if len(big) < preallocMin {
		t.Fatalf("the big file has %d bytes, not more than preallocMin", len(big))
	}
	wantFile(t, filepath.Join(ws, "big"), big, 0o644, baseNs)
	wantFile(t, filepath.Join(ws, "small"), c, 0o600, baseNs)
}

func TestCorruptChunkFailsExactlyItsFiles(t *testing.T) {
	e := newEnv(t)
	ws := t.TempDir()
	good1, bad, good2, other := textBytes(21, 50_000), randBytes(22, 60_000), randBytes(23, 40_000), textBytes(24, 3000)
	pid := e.addPack(good1, bad, good2)
	e.addPack(other)
	// Flip a byte in the middle of the stored bytes of "bad".
	l := e.loc[id.Sum(bad)]
	data := bytes.Clone(e.data[pid])
	data[l.e.Offset+uint64(l.e.Length)/2] ^= 0x40
	e.srv.put(packPath(pid), data)

	entries := []*pb.PlanEntry{
		dirE("d", 0o755, baseNs),
		fileE("d/ok1", 0o644, baseNs, good1),
		fileE("d/broken1", 0o644, baseNs, good1, bad),
		fileE("d/ok2", 0o644, baseNs, good2, other),
		fileE("d/broken2", 0o600, baseNs, bad, other),
		fileE("ok3", 0o644, baseNs, other),
	}
	// A stale file at a broken path must not survive either.
	if err := os.WriteFile(filepath.Join(ws, "stale"), []byte("x"), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.Mkdir(filepath.Join(ws, "d"), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(ws, "d/broken2"), make([]byte, len(bad)+len(other)), 0o644); err != nil {
		t.Fatal(err)
	}
	res, err := Run(t.Context(), source(e.batch(entries[:3]...), e.batch(entries[3:]...)), Options{Workspace: ws})
	var fe *FileError
	if !errors.As(err, &fe) {
		t.Fatalf("err = %v, want a *FileError", err)
	}
	if !slices.Equal(fe.Paths, []string{"d/broken1", "d/broken2"}) {
		t.Errorf("failed paths %q", fe.Paths)
	}
	if !errors.Is(err, pack.ErrCorrupt) {
		t.Errorf("errors.Is(err, pack.ErrCorrupt) = false: %v", err)
	}
	if !strings.Contains(err.Error(), `"d/broken1"`) || !strings.Contains(err.Error(), `"d/broken2"`) {
		t.Errorf("error does not name the files: %v", err)
	}
	t.Log(err)
	wantAbsent(t, filepath.Join(ws, "d/broken1"))
	wantAbsent(t, filepath.Join(ws, "d/broken2"))
	wantFile(t, filepath.Join(ws, "d/ok1"), good1, 0o644, baseNs)
	wantFile(t, filepath.Join(ws, "d/ok2"), cat(good2, other), 0o644, baseNs)
	wantFile(t, filepath.Join(ws, "ok3"), other, 0o644, baseNs)
	if _, err := os.Stat(filepath.Join(ws, "stale")); err != nil {
		t.Errorf("an entry outside the plan was touched: %v", err)
	}
	if res.Files != 3 || res.Dirs != 1 {
		t.Errorf("result %+v", res)
	}
	// The directory still gets its mtime after its files were removed.
	if fi, _ := os.Stat(filepath.Join(ws, "d")); fi.ModTime().UnixNano() != baseNs {
		t.Errorf("d mtime %d", fi.ModTime().UnixNano())
	}
}

func TestMissingChunkAndShortRange(t *testing.T) {
	e := newEnv(t)
	ws := t.TempDir()
	a, b, c := randBytes(31, 30_000), randBytes(32, 30_000), randBytes(33, 30_000)
	pid := e.addPack(a, b)
	// The stored object is cut in the middle of b: the plan's range is longer.
	lb := e.loc[id.Sum(b)]
	e.srv.put(packPath(pid), e.data[pid][:lb.e.Offset+uint64(lb.e.Length)/2])
	entries := []*pb.PlanEntry{
		fileE("a", 0o644, baseNs, a),
		fileE("b", 0o644, baseNs, b),
		fileE("c", 0o644, baseNs, c), // in no range
	}
	msg := &pb.GetRestorePlanResponse{Entries: entries, Ranges: e.rangesFor(false, id.Sum(a), id.Sum(b))}
	_, err := Run(t.Context(), source(msg), Options{Workspace: ws})
	var fe *FileError
	if !errors.As(err, &fe) || !slices.Equal(fe.Paths, []string{"b", "c"}) {
		t.Fatalf("err = %v", err)
	}
	if !errors.Is(err, ErrMissingChunk) || !errors.Is(err, ErrShortRange) || errors.Is(err, pack.ErrCorrupt) {
		t.Errorf("err = %v", err)
	}
	wantFile(t, filepath.Join(ws, "a"), a, 0o644, baseNs)
	wantAbsent(t, filepath.Join(ws, "b"))
	wantAbsent(t, filepath.Join(ws, "c"))
	if n := e.srv.requests.Load(); n != 1 {
		t.Errorf("%d requests: a short range is not retried", n)
	}
}

func TestChunkSizeDisagreesWithPack(t *testing.T) {
	e := newEnv(t)
	ws := t.TempDir()
	a := randBytes(41, 1000)
	e.addPack(a)
	f := fileE("f", 0o644, baseNs, a)
	msg := e.batch(f)
	msg.Ranges[0].Blobs[0].RawLength = 999
	_, err := Run(t.Context(), source(msg), Options{Workspace: ws})
	if !errors.Is(err, pack.ErrCorrupt) {
		t.Fatalf("err = %v", err)
	}
	wantAbsent(t, filepath.Join(ws, "f"))
}

func TestRetryAfter500(t *testing.T) {
	e := newEnv(t)
	ws := t.TempDir()
	a := randBytes(51, 100_000)
	e.addPack(a)
	e.srv.hook = func(w http.ResponseWriter, r *http.Request, n int64) bool {
		if n <= 2 {
			http.Error(w, "<Error><Code>InternalError</Code></Error>", http.StatusInternalServerError)
			return true
		}
		return false
	}
	res := mustRun(t, ws, Options{}, e.batch(fileE("a", 0o644, baseNs, a)))
	wantFile(t, filepath.Join(ws, "a"), a, 0o644, baseNs)
	if n := e.srv.requests.Load(); n != 3 || res.Ranges != 1 {
		t.Errorf("%d requests, %d ranges", n, res.Ranges)
	}

	// Retries run out: the file is reported, not left behind.
	e.srv.reset()
	e.srv.hook = func(w http.ResponseWriter, r *http.Request, n int64) bool {
		w.WriteHeader(http.StatusServiceUnavailable)
		return true
	}
	ws2 := t.TempDir()
	_, err := Run(t.Context(), source(e.batch(fileE("a", 0o644, baseNs, a))), Options{Workspace: ws2, Retries: 2})
	var he *HTTPError
	if !errors.As(err, &he) || he.StatusCode != 503 {
		t.Fatalf("err = %v", err)
	}
	if n := e.srv.requests.Load(); n != 3 {
		t.Errorf("%d requests, want 1 + 2 retries", n)
	}
	wantAbsent(t, filepath.Join(ws2, "a"))
}

func TestForbiddenIsNotRetried(t *testing.T) {
	e := newEnv(t)
	ws := t.TempDir()
	a, b := randBytes(61, 1000), randBytes(62, 1000)
	e.addPack(a, b)
	e.srv.hook = func(w http.ResponseWriter, r *http.Request, n int64) bool {
		w.Header().Set("Content-Type", "application/xml")
		w.WriteHeader(http.StatusForbidden)
		io.WriteString(w, `<?xml version="1.0"?><Error><Code>AccessDenied</Code><Message>Request has expired</Message></Error>`)
		return true
	}
	msg := e.batch(fileE("a", 0o644, baseNs, a), fileE("b", 0o644, baseNs, b))
	expired := time.Now().Add(-time.Minute)
	for _, r := range msg.Ranges {
		r.Request.ExpireTime = timestamppb.New(expired)
	}
	_, err := Run(t.Context(), source(msg), Options{Workspace: ws})
	if !errors.Is(err, ErrURLExpired) {
		t.Fatalf("err = %v, want ErrURLExpired", err)
	}
	msgText := err.Error()
	for _, s := range []string{"403", "AccessDenied", "expired", `"a"`, `"b"`, "new restore plan"} {
		if !strings.Contains(msgText, s) {
			t.Errorf("error %q does not mention %q", msgText, s)
		}
	}
	if strings.Contains(msgText, "secret") {
		t.Errorf("error leaks the URL signature: %q", msgText)
	}
	t.Log(msgText)
	if n := e.srv.requests.Load(); n != 1 {
		t.Errorf("%d requests, a 403 must not be retried", n)
	}
	wantAbsent(t, filepath.Join(ws, "a"))
}

func TestRetryResumesAfterCutConnection(t *testing.T) {
	e := newEnv(t)
	ws := t.TempDir()
	var chunks [][]byte
	for i := range 6 {
		chunks = append(chunks, randBytes(uint64(70+i), 50_000))
	}
	pid := e.addPack(chunks...)
	obj := e.data[pid]
	e.srv.hook = func(w http.ResponseWriter, r *http.Request, n int64) bool {
		if n > 1 {
			return false
		}
		// Send the first 3.5 chunks of the range, then drop the connection.
		first, last, _ := parseContentRange("bytes " + strings.TrimPrefix(r.Header.Get("Range"), "bytes=") + "/*")
		w.Header().Set("Content-Range", fmt.Sprintf("bytes %d-%d/%d", first, last, len(obj)))
		w.Header().Set("Content-Length", fmt.Sprint(last-first+1))
		w.WriteHeader(http.StatusPartialContent)
		w.Write(obj[first : first+175_000])
		w.(http.Flusher).Flush()
		conn, _, _ := w.(http.Hijacker).Hijack()
		conn.Close()
		return true
	}
	f := fileE("f", 0o644, baseNs, chunks...)
	res := mustRun(t, ws, Options{}, e.batch(f))
	wantFile(t, filepath.Join(ws, "f"), cat(chunks...), 0o644, baseNs)
	rh := e.srv.rangeHeaders()
	if len(rh) != 2 {
		t.Fatalf("ranges requested: %q", rh)
	}
	want := fmt.Sprintf("bytes=%d-", e.loc[id.Sum(chunks[3])].e.Offset)
	if !strings.HasPrefix(rh[1], want) {
		t.Errorf("retry asked for %q, want %q… (resume at the first chunk not received)", rh[1], want)
	}
	if res.Ranges != 1 {
		t.Errorf("result %+v", res)
	}
}

func TestStalledDownloadIsRetried(t *testing.T) {
	old := stallTimeout
	stallTimeout = 200 * time.Millisecond
	t.Cleanup(func() { stallTimeout = old })
	e := newEnv(t)
	ws := t.TempDir()
	a := randBytes(81, 10_000)
	e.addPack(a)
	release := make(chan struct{})
	t.Cleanup(func() { close(release) })
	e.srv.hook = func(w http.ResponseWriter, r *http.Request, n int64) bool {
		if n == 1 {
			w.Header().Set("Content-Range", "bytes 0-9999/99999")
			w.WriteHeader(http.StatusPartialContent)
			w.(http.Flusher).Flush()
			select {
			case <-release:
			case <-r.Context().Done():
			}
			return true
		}
		return false
	}
	start := time.Now()
	mustRun(t, ws, Options{}, e.batch(fileE("a", 0o644, baseNs, a)))
	wantFile(t, filepath.Join(ws, "a"), a, 0o644, baseNs)
	if d := time.Since(start); d > 5*time.Second {
		t.Errorf("took %v", d)
	}
}

func TestServerIgnoringRange(t *testing.T) {
	e := newEnv(t)
	ws := t.TempDir()
	a, b := randBytes(85, 1000), randBytes(86, 1000)
	pid := e.addPack(a, b)
	e.srv.hook = func(w http.ResponseWriter, r *http.Request, n int64) bool {
		w.Write(e.data[pid]) // 200, whole object
		return true
	}
	_, err := Run(t.Context(), source(e.batch(fileE("b", 0o644, baseNs, b))), Options{Workspace: ws})
	if err == nil || !strings.Contains(err.Error(), "ignored the range") {
		t.Fatalf("err = %v", err)
	}
	wantAbsent(t, filepath.Join(ws, "b"))
}

func TestCancelStopsPromptly(t *testing.T) {
	e := newEnv(t)
	ws := t.TempDir()
	a := randBytes(91, 1000)
	e.addPack(a)
	started := make(chan struct{}, 16)
	e.srv.hook = func(w http.ResponseWriter, r *http.Request, n int64) bool {
		started <- struct{}{}
		<-r.Context().Done()
		return true
	}
	ctx, cancel := context.WithCancel(t.Context())
	go func() {
		<-started
		time.Sleep(20 * time.Millisecond)
		cancel()
	}()
	start := time.Now()
	_, err := Run(ctx, source(e.batch(fileE("a", 0o644, baseNs, a))), Options{Workspace: ws})
	if !errors.Is(err, context.Canceled) {
		t.Fatalf("err = %v", err)
	}
	if d := time.Since(start); d > 2*time.Second {
		t.Errorf("Run took %v after cancel", d)
	}
}

func TestPlanStreamError(t *testing.T) {
	e := newEnv(t)
	ws := t.TempDir()
	a := randBytes(95, 1000)
	e.addPack(a)
	src := source(e.batch(fileE("a", 0o644, baseNs, a)))
	src.err = errors.New("stream broke")
	res, err := Run(t.Context(), src, Options{Workspace: ws})
	if err == nil || !strings.Contains(err.Error(), "stream broke") {
		t.Fatalf("err = %v", err)
	}
	if res.Files != 1 {
		t.Errorf("result %+v", res)
	}
}

func TestHugeRangeRefusedWithoutAllocating(t *testing.T) {
	e := newEnv(t)
	ws := t.TempDir()
	a := randBytes(101, 1000)
	e.addPack(a)
	msg := e.batch(dirE("d", 0o755, baseNs), fileE("d/a", 0o644, baseNs, a))
	msg.Ranges[0].Length = 1 << 30
	msg.Ranges[0].Blobs[0].Length = 1<<30 - 1
	var before, after runtime.MemStats
	runtime.GC()
	runtime.ReadMemStats(&before)
	_, err := Run(t.Context(), source(msg), Options{Workspace: ws})
	runtime.ReadMemStats(&after)
	if !errors.Is(err, ErrInvalidPlan) || !strings.Contains(err.Error(), "range length") {
		t.Fatalf("err = %v", err)
	}
	if n := e.srv.requests.Load(); n != 0 {
		t.Errorf("%d requests", n)
	}
	if grew := after.TotalAlloc - before.TotalAlloc; grew > 8<<20 {
		t.Errorf("allocated %d bytes", grew)
	}
	// The batch was refused as a whole: nothing of it was created.
	wantAbsent(t, filepath.Join(ws, "d"))
}

func TestSeedFetchesOnlyWhatChanged(t *testing.T) {
	e := newEnv(t)
	ws := t.TempDir()
	// Chunks of 300 KB, incompressible, all in one pack.
	var ch [][]byte
	for i := range 7 {
		ch = append(ch, randBytes(uint64(200+i), 300_000))
	}
	e.addPack(ch...)
	entries := []*pb.PlanEntry{
		fileE("big", 0o644, baseNs, ch[0], ch[1], ch[2]),
		fileE("other", 0o640, baseNs+1, ch[3], ch[4]),
		fileE("copy-of-2", 0o644, baseNs+2, ch[2]),
		fileE("last", 0o644, baseNs+3, ch[5], ch[6]),
	}
	msg := func() *pb.GetRestorePlanResponse { return e.batch(entries...) }
	mustRun(t, ws, Options{}, msg())

	big := filepath.Join(ws, "big")
	st0 := statT(t, big)
	// Damage the middle chunk of big in place.
	f, err := os.OpenFile(big, os.O_WRONLY, 0)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := f.WriteAt([]byte("edited by the user"), 300_000+1234); err != nil {
		t.Fatal(err)
	}
	f.Close()
	otherBefore := lstat(t, filepath.Join(ws, "other"))

	e.srv.reset()
	var reported []string
	res := mustRun(t, ws, Options{OnFile: func(fi FileInfo, _ os.FileInfo) { reported = append(reported, fi.Path) }}, msg())
	wantFile(t, big, cat(ch[0], ch[1], ch[2]), 0o644, baseNs)
	l := e.loc[id.Sum(ch[1])]
	if n, b := e.srv.requests.Load(), e.srv.bytes.Load(); n != 1 || b != int64(l.e.Length) {
		t.Errorf("%d requests, %d bytes; want 1 request of %d bytes (%q)", n, b, l.e.Length, e.srv.rangeHeaders())
	}
	if res.Reused != 7 || res.Files != 4 || res.BytesDownloaded != int64(l.e.Length) {
		t.Errorf("result %+v", res)
	}
	if st := statT(t, big); st.Ino != st0.Ino {
		t.Errorf("big was replaced, not repaired in place")
	}
	// A file that was right is left untouched (same ctime) but still reported.
	if fi := lstat(t, filepath.Join(ws, "other")); ctimeOf(fi) != ctimeOf(otherBefore) {
		t.Errorf("other was touched")
	}
	if len(reported) != 4 {
		t.Errorf("OnFile for %q", reported)
	}

	// A file removed, another truncated, another grown, another replaced by
	// a symlink: chunks come from the other files on disk, then the network.
	os.Remove(filepath.Join(ws, "copy-of-2"))
	if err := os.Truncate(filepath.Join(ws, "other"), 300_000+17); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(ws, "last"), cat(ch[5], ch[6], []byte("appended")), 0o644); err != nil {
		t.Fatal(err)
	}
	e.srv.reset()
	res = mustRun(t, ws, Options{}, msg())
	wantFile(t, filepath.Join(ws, "copy-of-2"), ch[2], 0o644, baseNs+2)
	wantFile(t, filepath.Join(ws, "other"), cat(ch[3], ch[4]), 0o640, baseNs+1)
	wantFile(t, filepath.Join(ws, "last"), cat(ch[5], ch[6]), 0o644, baseNs+3)
	l = e.loc[id.Sum(ch[4])]
	if n, b := e.srv.requests.Load(), e.srv.bytes.Load(); n != 1 || b != int64(l.e.Length) {
		t.Errorf("%d requests, %d bytes; want only chunk 4 (%q)", n, b, e.srv.rangeHeaders())
	}
	if res.Reused != 7 {
		t.Errorf("result %+v", res)
	}
}

func statT(t *testing.T, p string) *syscall.Stat_t {
	t.Helper()
	return lstat(t, p).Sys().(*syscall.Stat_t)
}

func lstat(t *testing.T, p string) os.FileInfo {
	t.Helper()
	fi, err := os.Lstat(p)
	if err != nil {
		t.Fatal(err)
	}
	return fi
}

func TestReplacesWrongKinds(t *testing.T) {
	e := newEnv(t)
	ws := t.TempDir()
	a := textBytes(301, 5000)
	e.addPack(a)
	// A directory (with contents) where the plan has a file, a file where it
	// has a directory, a directory where it has a symlink, a symlink with
	// another target.
	must(t, os.MkdirAll(filepath.Join(ws, "f/sub"), 0o755))
	must(t, os.WriteFile(filepath.Join(ws, "f/sub/x"), []byte("x"), 0o644))
	must(t, os.WriteFile(filepath.Join(ws, "d"), []byte("not a dir"), 0o644))
	must(t, os.Mkdir(filepath.Join(ws, "l"), 0o755))
	must(t, os.Symlink("elsewhere", filepath.Join(ws, "l2")))
	must(t, os.WriteFile(filepath.Join(ws, "keep"), []byte("not in the plan"), 0o644))
	mustRun(t, ws, Options{}, e.batch(
		fileE("f", 0o644, baseNs, a),
		dirE("d", 0o755, baseNs),
		fileE("d/a", 0o644, baseNs, a),
		linkE("l", "d/a", baseNs),
		linkE("l2", "d", baseNs),
	))
	wantFile(t, filepath.Join(ws, "f"), a, 0o644, baseNs)
	wantFile(t, filepath.Join(ws, "d/a"), a, 0o644, baseNs)
	for l, target := range map[string]string{"l": "d/a", "l2": "d"} {
		if got, err := os.Readlink(filepath.Join(ws, l)); err != nil || got != target {
			t.Errorf("%s -> %q (%v)", l, got, err)
		}
	}
	if b, err := os.ReadFile(filepath.Join(ws, "keep")); err != nil || string(b) != "not in the plan" {
		t.Errorf("keep: %q %v", b, err)
	}
}

func must(t testing.TB, err error) {
	t.Helper()
	if err != nil {
		t.Fatal(err)
	}
}

func TestProgress(t *testing.T) {
	// Not a terminal: nothing drawn in place (a line every few seconds
	// at most; this restore is shorter).
	var buf bytes.Buffer
	e := newEnv(t)
	a := randBytes(401, 100)
	e.addPack(a)
	mustRun(t, t.TempDir(), Options{Progress: &buf}, e.batch(fileE("a", 0o644, baseNs, a)))
	if bytes.Contains(buf.Bytes(), []byte("\r")) {
		t.Errorf("redrew %q on a non-terminal", buf.String())
	}
}

func TestProgressOnTerminal(t *testing.T) {
	master, slave, err := openPTY()
	if err != nil {
		t.Skip("no pty:", err)
	}
	defer master.Close()
	defer slave.Close()
	if !progress.IsTerminal(slave) {
		t.Fatal("pty slave is not a terminal")
	}
	// The terminal's output as it comes; redrawn is closed at the first
	// redraw of the line (a \r), which the downloads wait for, so that the
	// restore is still running when the ticker draws.
	out := make(chan []byte)
	redrawn := make(chan struct{})
	sawRedraw := sync.OnceFunc(func() { close(redrawn) })
	go func() {
		var all []byte
		buf := make([]byte, 4096)
		for {
			n, err := master.Read(buf)
			if bytes.Contains(buf[:n], []byte("\r")) {
				sawRedraw()
			}
			all = append(all, buf[:n]...)
			if err != nil {
				out <- all
				return
			}
		}
	}()
	e := newEnv(t)
	a := randBytes(402, 100)
	e.addPack(a)
	e.srv.hook = func(w http.ResponseWriter, r *http.Request, n int64) bool {
		select {
		case <-redrawn:
		case <-time.After(time.Minute): // bounded; the check below then fails
		}
		return false
	}
	mustRun(t, t.TempDir(), Options{Progress: slave}, e.batch(fileE("a", 0o644, baseNs, a)))
	slave.Close()
	b := <-out
	if !bytes.Contains(b, []byte("restore: 1/1 files")) || bytes.Count(b, []byte("\r")) < 2 {
		t.Errorf("progress output %q", b)
	}
}

func TestDefaultClientWorks(t *testing.T) {
	c := DefaultHTTPClient(0)
	tr := c.Transport.(*http.Transport)
	if !tr.DisableCompression || tr.ResponseHeaderTimeout == 0 {
		t.Errorf("transport %+v", tr)
	}
}

// genSource generates batches on demand, so that the plan itself does not
// sit in memory.
type genSource struct {
	n, batches int
	gen        func(i int) *pb.GetRestorePlanResponse
}

func (g *genSource) Recv() (*pb.GetRestorePlanResponse, error) {
	if g.n == g.batches {
		return nil, io.EOF
	}
	g.n++
	return g.gen(g.n - 1), nil
}

// TestMemoryBounded checks that what the restore keeps does not grow with
// the number of files: only one record per directory survives a batch.
func TestMemoryBounded(t *testing.T) {
	e := newEnv(t)
	shared := textBytes(901, 1000)
	e.addPack(shared)
	const batches, perBatch = 8, 400
	src := &genSource{batches: batches, gen: func(i int) *pb.GetRestorePlanResponse {
		entries := []*pb.PlanEntry{dirE(fmt.Sprintf("dir%d", i), 0o755, baseNs)}
		for j := range perBatch {
			p := fmt.Sprintf("dir%d/%s-%d", i, strings.Repeat("long-name-", 8), j)
			if j%50 == 0 {
				entries = append(entries, fileE(p, 0o644, baseNs, shared))
			} else {
				entries = append(entries, fileE(p, 0o644, baseNs))
			}
		}
		return e.batch(entries...)
	}}
	var heap []uint64
	files := 0
	_, err := Run(t.Context(), src, Options{Workspace: t.TempDir(), OnFile: func(FileInfo, os.FileInfo) {
		files++
		if files%perBatch == 0 {
			runtime.GC()
			var ms runtime.MemStats
			runtime.ReadMemStats(&ms)
			heap = append(heap, ms.HeapAlloc)
		}
	}})
	if err != nil {
		t.Fatal(err)
	}
	if len(heap) != batches {
		t.Fatalf("%d samples", len(heap))
	}
	t.Logf("heap after each batch: %v", heap)
	if grew := int64(heap[batches-1]) - int64(heap[1]); grew > 256<<10 {
		t.Errorf("heap grew by %d bytes over %d batches of %d files", grew, batches-2, perBatch)
	}
}
