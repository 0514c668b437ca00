package restore

import (
	"fmt"
	"net/url"
	"os"
	"path"
	"strings"
	"sync"
	"sync/atomic"

	"github.com/sandkeep/sandkeep/internal/id"
	"github.com/sandkeep/sandkeep/internal/pack"
	"github.com/sandkeep/sandkeep/internal/redact"
	"github.com/sandkeep/sandkeep/internal/tree"
	pb "github.com/sandkeep/sandkeep/proto/sandkeep/v1"
)

const (
	// MaxRangeLength is the longest pack range a plan may ask for. Longer
	// ranges are refused before anything is allocated or fetched.
	MaxRangeLength = 64 << 20
	// MaxChunkSize is the largest chunk a plan may name.
	MaxChunkSize = MaxRangeLength
	// maxPackOffset keeps offset arithmetic far from overflow.
	maxPackOffset   = 1 << 50
	maxSymlinkLen   = 4095
	maxHeaderValues = 64
)

// planState is what the restore keeps across batches: one record per
// directory of the plan, for the parent checks and the final pass that
// applies directory modes and times. It is O(directories), never O(files).
type planState struct {
	dirs   []dirRec
	dirIdx map[string]int
}

type dirRec struct {
	path   string
	mode   uint32
	mtime  int64
	failed bool
	fresh  bool // created by this restore: nothing was in it
}

func newPlanState() *planState { return &planState{dirIdx: make(map[string]int)} }

// inFreshDir reports whether p's parent was created by this restore.
func (st *planState) inFreshDir(p string) bool {
	parent := path.Dir(p)
	if parent == "." {
		return false
	}
	i, ok := st.dirIdx[parent]
	return ok && st.dirs[i].fresh && !st.dirs[i].failed
}

// batch is one validated plan message.
type batch struct {
	items  []item
	ranges []planRange
}

type item struct {
	kind   pb.EntryType
	path   string
	mode   uint32
	mtime  int64
	target string   // symlinks
	dir    int      // directories: index into planState.dirs
	file   *fileJob // files
}

type planRange struct {
	packID id.ID
	req    *pb.SignedRequest
	// fallback is the same pack in the replica bucket (may be nil).
	fallback *pb.SignedRequest
	offset   int64
	length   int64
	blobs    []planBlob
}

type planBlob struct {
	id     id.ID
	off    int64 // within the range
	length int64
	rawLen int64
	codec  pack.Codec
	rawOff int64 // a group member's start in its frame's plaintext
}

// fileJob is one regular file of the current batch and its restore state.
type fileJob struct {
	path  string
	size  int64
	mode  uint32
	mtime int64
	refs  []*pb.ChunkRef
	ids   []id.ID
	offs  []int64 // offset of each chunk in the file

	// What was on disk (phase A) and what of it is right (phase B).
	fresh     bool       // nothing usable at path: the first write creates the file
	createMu  sync.Mutex // serialises the creation of a fresh file
	created   bool       // a fresh file was created (guarded by createMu)
	onDisk    bool       // a regular file exists at path
	diskSize  int64
	diskMode  uint32 // unix permission bits incl. setuid/setgid/sticky
	diskMtime int64
	nlink     uint64
	matched   []bool // chunk i already on disk at its offset, verified
	nMatched  int
	scanErr   error

	pending atomic.Int64 // chunks still to write
	// fi is set by the write that completed the file, after giving it its
	// mode and times.
	fi os.FileInfo

	mu  sync.Mutex
	err error // first failure; the file is removed at the end of the batch
}

// finish gives the file, just completed by a write on fh, its mode and
// times, and records its stat.
func (f *fileJob) finish(fh *os.File) error {
	if err := fh.Chmod(fileMode(f.mode)); err != nil {
		return err
	}
	if err := futimens(fh, f.mtime); err != nil {
		return err
	}
	fi, err := fh.Stat()
	if err != nil {
		return err
	}
	f.fi = fi
	return nil
}

func (f *fileJob) fail(err error) {
	f.mu.Lock()
	if f.err == nil {
		f.err = err
	}
	f.mu.Unlock()
}

func (f *fileJob) failure() error {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.err
}

func invalid(format string, args ...any) error {
	return fmt.Errorf("%w: %s", ErrInvalidPlan, fmt.Sprintf(format, args...))
}

// validate checks one plan message completely before any of it touches the
// disk, and records its directories in st. Everything in a plan is treated
// as hostile: paths must be clean relative paths whose parent is a directory
// named earlier by the plan (so no entry can be placed under a symlink),
// sizes must add up, ranges must be bounded and self-consistent.
func (st *planState) validate(msg *pb.GetRestorePlanResponse) (*batch, error) {
	b := &batch{items: make([]item, 0, len(msg.GetEntries()))}
	seen := make(map[string]struct{}, len(msg.GetEntries()))
	added := 0 // directories added by this message, undone on error
	undo := func() {
		for _, d := range st.dirs[len(st.dirs)-added:] {
			delete(st.dirIdx, d.path)
		}
		st.dirs = st.dirs[:len(st.dirs)-added]
	}
	for _, e := range msg.GetEntries() {
		it, err := st.validateEntry(e, seen)
		if err != nil {
			undo()
			return nil, err
		}
		if it.kind == pb.EntryType_ENTRY_TYPE_DIRECTORY {
			added++
		}
		b.items = append(b.items, it)
	}
	for i, r := range msg.GetRanges() {
		pr, err := validateRange(r)
		if err != nil {
			undo()
			return nil, fmt.Errorf("range %d: %w", i, err)
		}
		b.ranges = append(b.ranges, pr)
	}
	return b, nil
}

func (st *planState) validateEntry(e *pb.PlanEntry, seen map[string]struct{}) (item, error) {
	if e == nil {
		return item{}, invalid("nil entry")
	}
	p := e.GetPath()
	clean, err := tree.CleanPath(p)
	if err != nil || clean != p {
		if err == nil {
			err = fmt.Errorf("not canonical (%q)", clean)
		}
		return item{}, invalid("entry %q: %v", p, err)
	}
	if _, dup := seen[p]; dup {
		return item{}, invalid("entry %q appears twice", p)
	}
	if _, dup := st.dirIdx[p]; dup {
		return item{}, invalid("entry %q repeats an earlier directory", p)
	}
	if parent := path.Dir(p); parent != "." {
		if _, ok := st.dirIdx[parent]; !ok {
			return item{}, invalid("entry %q: parent %q is not a directory of the plan (or comes after it)", p, parent)
		}
	}
	it := item{kind: e.GetType(), path: p, mode: e.GetMode() & 0o7777, mtime: e.GetMtimeNs()}
	switch e.GetType() {
	case pb.EntryType_ENTRY_TYPE_DIRECTORY:
		if len(e.GetChunks()) != 0 {
			return item{}, invalid("directory %q has chunks", p)
		}
		it.dir = len(st.dirs)
		st.dirs = append(st.dirs, dirRec{path: p, mode: it.mode, mtime: it.mtime})
		st.dirIdx[p] = it.dir
	case pb.EntryType_ENTRY_TYPE_SYMLINK:
		t := e.GetTarget()
		if t == "" || len(t) > maxSymlinkLen || strings.IndexByte(t, 0) >= 0 {
			return item{}, invalid("symlink %q: bad target (%d bytes)", p, len(t))
		}
		if len(e.GetChunks()) != 0 {
			return item{}, invalid("symlink %q has chunks", p)
		}
		it.target = t
	case pb.EntryType_ENTRY_TYPE_FILE:
		f, err := validateFile(e)
		if err != nil {
			return item{}, err
		}
		f.mode, f.mtime = it.mode, it.mtime
		it.file = f
	default:
		return item{}, invalid("entry %q: unknown type %d", p, e.GetType())
	}
	seen[p] = struct{}{}
	return it, nil
}

func validateFile(e *pb.PlanEntry) (*fileJob, error) {
	p, size := e.GetPath(), e.GetSize()
	if size < 0 {
		return nil, invalid("file %q: negative size %d", p, size)
	}
	refs := e.GetChunks()
	f := &fileJob{path: p, size: size, refs: refs, ids: make([]id.ID, len(refs)), offs: make([]int64, len(refs))}
	var off int64
	for i, c := range refs {
		if c == nil {
			return nil, invalid("file %q: nil chunk %d", p, i)
		}
		cid, err := id.FromBytes(c.GetId())
		if err != nil {
			return nil, invalid("file %q: chunk %d: %v", p, i, err)
		}
		cs := c.GetSize()
		if cs <= 0 || cs > MaxChunkSize {
			return nil, invalid("file %q: chunk %d has size %d (want 1..%d)", p, i, cs, MaxChunkSize)
		}
		if cs > size-off {
			return nil, invalid("file %q: chunks add up to more than its size %d", p, size)
		}
		f.ids[i], f.offs[i] = cid, off
		off += cs
	}
	if off != size {
		return nil, invalid("file %q: chunks add up to %d bytes, size is %d", p, off, size)
	}
	return f, nil
}

func validateRange(r *pb.PackRange) (planRange, error) {
	if r == nil {
		return planRange{}, invalid("nil range")
	}
	pid, err := id.FromBytes(r.GetPackId())
	if err != nil {
		return planRange{}, invalid("pack id: %v", err)
	}
	if r.GetLength() <= 0 || r.GetLength() > MaxRangeLength {
		return planRange{}, invalid("pack %s: range length %d (want 1..%d)", pid.Short(), r.GetLength(), MaxRangeLength)
	}
	if r.GetOffset() < 0 || r.GetOffset() > maxPackOffset {
		return planRange{}, invalid("pack %s: range offset %d", pid.Short(), r.GetOffset())
	}
	if err := validateRequest(r.GetRequest()); err != nil {
		return planRange{}, invalid("pack %s: %v", pid.Short(), err)
	}
	if fb := r.GetFallback(); fb != nil {
		if err := validateRequest(fb); err != nil {
			return planRange{}, invalid("pack %s: fallback: %v", pid.Short(), err)
		}
	}
	pr := planRange{packID: pid, req: r.GetRequest(), fallback: r.GetFallback(), offset: r.GetOffset(), length: r.GetLength(), blobs: make([]planBlob, 0, len(r.GetBlobs()))}
	for j, bl := range r.GetBlobs() {
		b, err := validateBlob(pid, j, bl, pr.length)
		if err != nil {
			return planRange{}, err
		}
		pr.blobs = append(pr.blobs, b)
	}
	return pr, nil
}

// validateBlob checks blob j of a range of length bytes of pack pid.
func validateBlob(pid id.ID, j int, bl *pb.RangeBlob, length int64) (planBlob, error) {
	if bl == nil {
		return planBlob{}, invalid("pack %s: nil blob %d", pid.Short(), j)
	}
	bid, err := id.FromBytes(bl.GetId())
	if err != nil {
		return planBlob{}, invalid("pack %s: blob %d: %v", pid.Short(), j, err)
	}
	off, n, raw := bl.GetOffset(), bl.GetLength(), bl.GetRawLength()
	if off < 0 || n <= 0 || off > length || n > length-off {
		return planBlob{}, invalid("pack %s: blob %s at %d+%d outside the range's %d bytes", pid.Short(), bid.Short(), off, n, length)
	}
	if raw <= 0 || raw > MaxChunkSize {
		return planBlob{}, invalid("pack %s: blob %s raw length %d", pid.Short(), bid.Short(), raw)
	}
	var codec pack.Codec
	switch bl.GetCodec() {
	case pb.Codec_CODEC_NONE:
		codec = pack.None
	case pb.Codec_CODEC_ZSTD:
		codec = pack.Zstd
	case pb.Codec_CODEC_ZSTD_GROUP:
		codec = pack.Group
	default:
		return planBlob{}, invalid("pack %s: blob %s: unknown codec %d", pid.Short(), bid.Short(), bl.GetCodec())
	}
	rawOff := bl.GetRawOffset()
	switch {
	case codec != pack.Group && rawOff != 0:
		return planBlob{}, invalid("pack %s: blob %s: raw offset %d outside a group", pid.Short(), bid.Short(), rawOff)
	case codec == pack.Group && (rawOff < 0 || rawOff+raw > pack.MaxGroupSize):
		return planBlob{}, invalid("pack %s: blob %s: group member at %d+%d, past the largest group (%d)", pid.Short(), bid.Short(), rawOff, raw, pack.MaxGroupSize)
	}
	return planBlob{id: bid, off: off, length: n, rawLen: raw, codec: codec, rawOff: rawOff}, nil
}

func validateRequest(r *pb.SignedRequest) error {
	if r == nil {
		return fmt.Errorf("no request")
	}
	if m := r.GetMethod(); m != "" && !strings.EqualFold(m, "GET") {
		return fmt.Errorf("method %q is not GET", m)
	}
	u, err := url.Parse(r.GetUrl())
	if err != nil {
		return fmt.Errorf("bad URL")
	}
	if (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
		return fmt.Errorf("URL %s is not http(s)", redact.URL(r.GetUrl()))
	}
	if len(r.GetHeaders()) > maxHeaderValues {
		return fmt.Errorf("%d headers", len(r.GetHeaders()))
	}
	for k, v := range r.GetHeaders() {
		if !validHeaderName(k) || strings.ContainsAny(v, "\r\n\x00") {
			return fmt.Errorf("bad header %q", k)
		}
	}
	return nil
}

func validHeaderName(k string) bool {
	if k == "" || len(k) > 256 {
		return false
	}
	for i := 0; i < len(k); i++ {
		c := k[i]
		switch {
		case c >= 'a' && c <= 'z', c >= 'A' && c <= 'Z', c >= '0' && c <= '9':
		case strings.IndexByte("!#$%&'*+-.^_`|~", c) >= 0:
		default:
			return false
		}
	}
	return true
}
