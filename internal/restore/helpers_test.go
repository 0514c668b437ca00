package restore

import (
	"bytes"
	"encoding/binary"
	"encoding/hex"
	"io"
	"math/rand/v2"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/sandkeep/sandkeep/internal/id"
	"github.com/sandkeep/sandkeep/internal/pack"
	pb "github.com/sandkeep/sandkeep/proto/sandkeep/v1"
)

func TestMain(m *testing.M) {
	backoffBase = 2 * time.Millisecond
	backoffMax = 20 * time.Millisecond
	os.Exit(m.Run())
}

// ---- plan source ----

type sliceSource struct {
	msgs []*pb.GetRestorePlanResponse
	err  error // returned after the messages instead of io.EOF
}

func (s *sliceSource) Recv() (*pb.GetRestorePlanResponse, error) {
	if len(s.msgs) == 0 {
		if s.err != nil {
			return nil, s.err
		}
		return nil, io.EOF
	}
	m := s.msgs[0]
	s.msgs = s.msgs[1:]
	return m, nil
}

func source(msgs ...*pb.GetRestorePlanResponse) *sliceSource {
	return &sliceSource{msgs: msgs}
}

// ---- storage server ----

// server serves pack objects and honours Range headers with http.ServeContent.
type server struct {
	*httptest.Server
	t        testing.TB
	mu       sync.Mutex
	objs     map[string][]byte
	requests atomic.Int64
	bytes    atomic.Int64 // body bytes served
	ranges   []string     // Range headers received
	// hook, if set, may answer a request itself (returning true).
	hook func(w http.ResponseWriter, r *http.Request, n int64) bool
}

func newServer(t testing.TB) *server {
	s := &server{t: t, objs: make(map[string][]byte)}
	s.Server = httptest.NewServer(http.HandlerFunc(s.serve))
	t.Cleanup(s.Close)
	return s
}

type countingWriter struct {
	http.ResponseWriter
	n *atomic.Int64
}

// Write counts before writing: the client may have everything (and the
// test may look) before Write returns.
func (c countingWriter) Write(p []byte) (int, error) {
	c.n.Add(int64(len(p)))
	n, err := c.ResponseWriter.Write(p)
	c.n.Add(int64(n - len(p)))
	return n, err
}

func (s *server) serve(w http.ResponseWriter, r *http.Request) {
	n := s.requests.Add(1)
	s.mu.Lock()
	s.ranges = append(s.ranges, r.Header.Get("Range"))
	obj, ok := s.objs[r.URL.Path]
	hook := s.hook
	s.mu.Unlock()
	if r.URL.Query().Get("sig") != "secret" || r.Header.Get("X-Test-Signed") != "yes" {
		http.Error(w, "unsigned", http.StatusBadRequest)
		return
	}
	if hook != nil && hook(w, r, n) {
		return
	}
	if !ok {
		http.NotFound(w, r)
		return
	}
	http.ServeContent(countingWriter{w, &s.bytes}, r, "", time.Time{}, bytes.NewReader(obj))
}

func (s *server) put(path string, data []byte) {
	s.mu.Lock()
	s.objs[path] = data
	s.mu.Unlock()
}

func (s *server) reset() {
	s.requests.Store(0)
	s.bytes.Store(0)
	s.mu.Lock()
	s.ranges = nil
	s.mu.Unlock()
}

func (s *server) rangeHeaders() []string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return slices.Clone(s.ranges)
}

// ---- packs and plans ----

type blobLoc struct {
	packID id.ID
	e      pack.Entry
}

// env builds packs on a server and plans that reference them.
type env struct {
	t    testing.TB
	srv  *server
	loc  map[id.ID]blobLoc
	data map[id.ID][]byte // pack objects by id
}

func newEnv(t testing.TB) *env {
	return &env{t: t, srv: newServer(t), loc: make(map[id.ID]blobLoc), data: make(map[id.ID][]byte)}
}

func packPath(p id.ID) string { return "/packs/" + p.String()[:2] + "/" + p.String() }

// addPack stores one pack holding chunks, in the given order.
func (e *env) addPack(chunks ...[]byte) id.ID {
	e.t.Helper()
	w := pack.NewWriter()
	for _, c := range chunks {
		if _, err := w.Add(pack.Data, id.Sum(c), c); err != nil {
			e.t.Fatal(err)
		}
	}
	data, pid, entries, err := w.Finish()
	if err != nil {
		e.t.Fatal(err)
	}
	for _, en := range entries {
		e.loc[en.ID] = blobLoc{pid, en}
	}
	e.data[pid] = data
	e.srv.put(packPath(pid), data)
	return pid
}

func (e *env) request(pid id.ID) *pb.SignedRequest {
	return &pb.SignedRequest{
		Method:  "GET",
		Url:     e.srv.URL + packPath(pid) + "?sig=secret",
		Headers: map[string]string{"X-Test-Signed": "yes"},
	}
}

func codecOf(c pack.Codec) pb.Codec {
	if c == pack.Zstd {
		return pb.Codec_CODEC_ZSTD
	}
	return pb.Codec_CODEC_NONE
}

// rangesFor returns, per pack, one range from the first to the end of the
// last of the given chunks (as the coordinator merges them), or one range
// per chunk when perBlob is set.
func (e *env) rangesFor(perBlob bool, ids ...id.ID) []*pb.PackRange {
	e.t.Helper()
	seen := make(map[id.ID]bool)
	byPack := make(map[id.ID][]pack.Entry)
	var packs []id.ID
	for _, c := range ids {
		if seen[c] {
			continue
		}
		seen[c] = true
		l, ok := e.loc[c]
		if !ok {
			e.t.Fatalf("chunk %s is in no pack", c.Short())
		}
		if _, ok := byPack[l.packID]; !ok {
			packs = append(packs, l.packID)
		}
		byPack[l.packID] = append(byPack[l.packID], l.e)
	}
	var out []*pb.PackRange
	for _, p := range packs {
		es := byPack[p]
		slices.SortFunc(es, func(a, b pack.Entry) int { return int(a.Offset) - int(b.Offset) })
		groups := [][]pack.Entry{es}
		if perBlob {
			groups = nil
			for _, en := range es {
				groups = append(groups, []pack.Entry{en})
			}
		}
		for _, g := range groups {
			start, end := g[0].Offset, g[len(g)-1].End()
			r := &pb.PackRange{PackId: p.Bytes(), Request: e.request(p), Offset: int64(start), Length: int64(end - start)}
			for _, en := range g {
				r.Blobs = append(r.Blobs, &pb.RangeBlob{
					Id: en.ID.Bytes(), Offset: int64(en.Offset - start), Length: int64(en.Length),
					RawLength: int64(en.RawLength), Codec: codecOf(en.Codec),
				})
			}
			out = append(out, r)
		}
	}
	return out
}

// batch makes a plan message of entries with the ranges of all their chunks.
func (e *env) batch(entries ...*pb.PlanEntry) *pb.GetRestorePlanResponse {
	return &pb.GetRestorePlanResponse{Entries: entries, Ranges: e.rangesFor(false, chunkIDs(entries...)...)}
}

func chunkIDs(entries ...*pb.PlanEntry) []id.ID {
	var ids []id.ID
	for _, en := range entries {
		for _, c := range en.Chunks {
			ids = append(ids, id.ID(c.Id))
		}
	}
	return ids
}

func dirE(p string, mode uint32, mtime int64) *pb.PlanEntry {
	return &pb.PlanEntry{Path: p, Type: pb.EntryType_ENTRY_TYPE_DIRECTORY, Mode: mode, MtimeNs: mtime}
}

func linkE(p, target string, mtime int64) *pb.PlanEntry {
	return &pb.PlanEntry{Path: p, Type: pb.EntryType_ENTRY_TYPE_SYMLINK, Target: target, MtimeNs: mtime, Mode: 0o777}
}

func fileE(p string, mode uint32, mtime int64, chunks ...[]byte) *pb.PlanEntry {
	e := &pb.PlanEntry{Path: p, Type: pb.EntryType_ENTRY_TYPE_FILE, Mode: mode, MtimeNs: mtime}
	for _, c := range chunks {
		sum := id.Sum(c)
		e.Chunks = append(e.Chunks, &pb.ChunkRef{Id: sum[:], Size: int64(len(c))})
		e.Size += int64(len(c))
	}
	return e
}

// randBytes returns n incompressible bytes.
func randBytes(seed uint64, n int) []byte {
	r := rand.New(rand.NewPCG(seed, seed*0x9e3779b97f4a7c15+1))
	b := make([]byte, n+8)
	for i := 0; i < n; i += 8 {
		binary.LittleEndian.PutUint64(b[i:], r.Uint64())
	}
	return b[:n]
}

// textBytes returns n compressible bytes.
func textBytes(seed, n int) []byte {
	var b strings.Builder
	for i := 0; b.Len() < n; i++ {
		b.WriteString("line ")
		b.WriteString(hex.EncodeToString([]byte{byte(seed), byte(i), byte(i >> 8)}))
		b.WriteString(" of some compressible text in a workspace file\n")
	}
	return []byte(b.String()[:n])
}

func cat(parts ...[]byte) []byte { return bytes.Join(parts, nil) }

// ---- assertions ----

func mustRun(t testing.TB, ws string, opts Options, msgs ...*pb.GetRestorePlanResponse) Result {
	t.Helper()
	opts.Workspace = ws
	res, err := Run(t.Context(), source(msgs...), opts)
	if err != nil {
		t.Fatalf("Run: %v", err)
	}
	return res
}

func wantFile(t testing.TB, path string, data []byte, mode os.FileMode, mtime int64) {
	t.Helper()
	fi, err := os.Lstat(path)
	if err != nil {
		t.Fatal(err)
	}
	if !fi.Mode().IsRegular() {
		t.Fatalf("%s: mode %v, want a regular file", path, fi.Mode())
	}
	got, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(got, data) {
		t.Fatalf("%s: content differs (%d bytes, want %d)", path, len(got), len(data))
	}
	if fi.Mode()&(os.ModePerm|os.ModeSetuid|os.ModeSetgid|os.ModeSticky) != mode {
		t.Errorf("%s: mode %v, want %v", path, fi.Mode(), mode)
	}
	if fi.ModTime().UnixNano() != mtime {
		t.Errorf("%s: mtime %d, want %d", path, fi.ModTime().UnixNano(), mtime)
	}
}

func wantAbsent(t testing.TB, path string) {
	t.Helper()
	if _, err := os.Lstat(path); !os.IsNotExist(err) {
		t.Errorf("%s: exists (err %v), want absent", path, err)
	}
}

// snapshotDir lists everything under dir with mode, size, mtime and content
// hash, to check that a directory was not touched.
func snapshotDir(t testing.TB, dir string) map[string]string {
	t.Helper()
	out := make(map[string]string)
	err := filepath.Walk(dir, func(p string, fi os.FileInfo, err error) error {
		if err != nil {
			return err
		}
		s := fi.Mode().String() + " " + fi.ModTime().String()
		switch {
		case fi.Mode().IsRegular():
			b, err := os.ReadFile(p)
			if err != nil {
				return err
			}
			s += " " + id.Sum(b).Short()
		case fi.Mode()&os.ModeSymlink != 0:
			l, _ := os.Readlink(p)
			s += " -> " + l
		}
		out[p] = s
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	return out
}
