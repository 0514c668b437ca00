package restore

import (
	"errors"
	"os"
	"path"
	"path/filepath"
	"strconv"
	"strings"
	"testing"

	"github.com/sandkeep/sandkeep/internal/id"
	"github.com/sandkeep/sandkeep/internal/tree"
	pb "github.com/sandkeep/sandkeep/proto/sandkeep/v1"
)

// FuzzPlanEntry feeds random entries (after directory entries for their
// parents) and a random range to the validation layer: it must never panic,
// and what it accepts must be safe to act on.
func FuzzPlanEntry(f *testing.F) {
	f.Add("a/b", int32(1), uint32(0o644), int64(10), int64(10), uint8(1), "", int64(0), int64(100), int64(0), int64(10), int64(10), int32(1))
	f.Add("../x", int32(2), uint32(0o755), int64(0), int64(0), uint8(0), "", int64(0), int64(1), int64(0), int64(1), int64(1), int32(2))
	f.Add("a/../../x", int32(3), uint32(0o777), int64(0), int64(0), uint8(0), "/etc", int64(0), int64(1<<30), int64(0), int64(1), int64(1), int32(1))
	f.Add("/etc/x", int32(1), uint32(0o4755), int64(1<<62), int64(1<<61), uint8(2), "", int64(-1), int64(-1), int64(-5), int64(-1), int64(0), int32(7))
	f.Add("l/f", int32(3), uint32(0), int64(0), int64(0), uint8(0), "..", int64(1<<60), int64(64<<20), int64(64<<20), int64(1), int64(1), int32(0))
	f.Add("x\x00y", int32(1), uint32(0), int64(5), int64(5), uint8(255), "", int64(0), int64(10), int64(9), int64(2), int64(5), int32(1))
	f.Fuzz(func(t *testing.T, p string, typ int32, mode uint32, size, chunkSize int64, nChunks uint8, target string,
		rOff, rLen, bOff, bLen, bRaw int64, codec int32) {
		var entries []*pb.PlanEntry
		if parts := strings.Split(p, "/"); len(parts) > 1 {
			for i := 1; i < len(parts); i++ {
				entries = append(entries, dirE(strings.Join(parts[:i], "/"), 0o755, 0))
			}
		}
		e := &pb.PlanEntry{Path: p, Type: pb.EntryType(typ), Mode: mode, Size: size, Target: target}
		cid := id.Sum([]byte(p))
		for range nChunks {
			e.Chunks = append(e.Chunks, &pb.ChunkRef{Id: cid[:], Size: chunkSize})
		}
		entries = append(entries, e)
		r := &pb.PackRange{
			PackId: cid[:], Offset: rOff, Length: rLen,
			Request: &pb.SignedRequest{Method: "GET", Url: "http://127.0.0.1:1/p?" + target, Headers: map[string]string{"x-" + strconv.Itoa(int(codec)): target}},
			Blobs:   []*pb.RangeBlob{{Id: cid[:], Offset: bOff, Length: bLen, RawLength: bRaw, Codec: pb.Codec(codec)}},
		}
		st := newPlanState()
		b, err := st.validate(&pb.GetRestorePlanResponse{Entries: entries, Ranges: []*pb.PackRange{r}})
		if err != nil {
			if !errors.Is(err, ErrInvalidPlan) {
				t.Fatalf("error does not wrap ErrInvalidPlan: %v", err)
			}
			if len(st.dirs) != 0 || len(st.dirIdx) != 0 {
				t.Fatalf("a refused batch left %d directories in the state", len(st.dirs))
			}
			return
		}
		for _, it := range b.items {
			if _, err := tree.CleanPath(it.path); err != nil || path.IsAbs(it.path) || path.Clean(it.path) != it.path ||
				it.path == ".." || strings.HasPrefix(it.path, "../") {
				t.Fatalf("accepted path %q", it.path)
			}
			if it.mode&^0o7777 != 0 {
				t.Fatalf("accepted mode %o", it.mode)
			}
			switch it.kind {
			case pb.EntryType_ENTRY_TYPE_FILE:
				var sum int64
				for i, c := range it.file.refs {
					if c.Size <= 0 || c.Size > MaxChunkSize || it.file.offs[i] != sum {
						t.Fatalf("accepted chunk %d of %d bytes at %d", i, c.Size, it.file.offs[i])
					}
					sum += c.Size
				}
				if sum != it.file.size || it.file.size < 0 {
					t.Fatalf("accepted a file of %d bytes with chunks of %d", it.file.size, sum)
				}
			case pb.EntryType_ENTRY_TYPE_SYMLINK:
				if it.target == "" || strings.IndexByte(it.target, 0) >= 0 {
					t.Fatalf("accepted target %q", it.target)
				}
			case pb.EntryType_ENTRY_TYPE_DIRECTORY:
			default:
				t.Fatalf("accepted type %v", it.kind)
			}
		}
		for _, pr := range b.ranges {
			if pr.length <= 0 || pr.length > MaxRangeLength || pr.offset < 0 {
				t.Fatalf("accepted range %d+%d", pr.offset, pr.length)
			}
			for _, bl := range pr.blobs {
				if bl.off < 0 || bl.length <= 0 || bl.off+bl.length > pr.length || bl.rawLen <= 0 || bl.rawLen > MaxChunkSize {
					t.Fatalf("accepted blob %d+%d (raw %d) in a range of %d", bl.off, bl.length, bl.rawLen, pr.length)
				}
			}
		}
	})
}

// FuzzRun restores random plans of directories, symlinks and files (whose
// one chunk is in no range) into a workspace beside a directory that must
// stay untouched. Plan lines are "kind|path|extra": d (extra: octal mode),
// l (extra: target), f (extra: anything for a chunk, empty for no chunk).
func FuzzRun(f *testing.F) {
	for _, s := range []string{
		"d|a|755\nf|a/f|\nl|a/l|../../outside",
		"l|l|OUTSIDE\nf|l/f|x",
		"l|l|..\nd|l/d|755",
		"l|l|..\nd|l|755\nf|l/f|",
		"d|a|555\nd|a/b|0\nf|a/b/c|\nl|a/b/l|OUTSIDE/file",
		"f|../x|\n",
		"d|x|755\nf|x/../../y|",
		"f|outside|\nd|d|7777\nl|d/x|/",
		"PRE l|d|OUTSIDE\nd|d|755\nf|d/file|",
		"PRE l|file|OUTSIDE/file\nf|file|",
	} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, plan string) {
		ws, outside, check := sandbox(t)
		t.Cleanup(func() {
			filepath.Walk(ws, func(p string, fi os.FileInfo, err error) error {
				if err == nil && fi.IsDir() {
					os.Chmod(p, 0o755)
				}
				return nil
			})
		})
		var entries []*pb.PlanEntry
		for line := range strings.Lines(plan) {
			line = strings.TrimSuffix(line, "\n")
			line = strings.ReplaceAll(line, "OUTSIDE", outside)
			if rest, ok := strings.CutPrefix(line, "PRE l|"); ok {
				// A symlink already in the workspace.
				name, target, _ := strings.Cut(rest, "|")
				if name != "" && !strings.ContainsAny(name, "/\x00") && name != "." && name != ".." {
					os.Symlink(target, filepath.Join(ws, name))
				}
				continue
			}
			fields := strings.SplitN(line, "|", 3)
			if len(fields) != 3 {
				continue
			}
			switch fields[0] {
			case "d":
				m, _ := strconv.ParseUint(fields[2], 8, 32)
				entries = append(entries, dirE(fields[1], uint32(m), baseNs))
			case "l":
				entries = append(entries, linkE(fields[1], fields[2], baseNs))
			case "f":
				if fields[2] == "" {
					entries = append(entries, fileE(fields[1], 0o644, baseNs))
				} else {
					entries = append(entries, fileE(fields[1], 0o644, baseNs, []byte(fields[2])))
				}
			}
		}
		msg := &pb.GetRestorePlanResponse{Entries: entries}
		_, err := Run(t.Context(), source(msg), Options{Workspace: ws, Retries: -1})
		var fe *FileError
		if err != nil && !errors.Is(err, ErrInvalidPlan) && !errors.As(err, &fe) {
			t.Fatalf("unexpected error: %v", err)
		}
		check()
	})
}
