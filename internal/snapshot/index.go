package snapshot

import (
	"bufio"
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path"
	"path/filepath"
	"slices"
	"sort"
	"strings"

	"github.com/sandkeep/sandkeep/internal/id"
	"github.com/sandkeep/sandkeep/internal/tree"
)

// Index is the agent's cache of what the last successful Run (or a restore)
// saw: for every regular file its (size, mtime, ctime, inode, mode) and its
// chunk refs, and for every directory the id of its tree. A file whose stat
// still matches is not read again, and a directory whose tree id is
// unchanged is not offered to the remote again.
//
// Everything an Index names is assumed stored on the remote: save the Index
// of a Run only after the Run succeeded (Run returns none otherwise), and
// drop it if the remote ever reports a blob it names as missing.
//
// An Index is not safe for concurrent mutation; Run only reads prev.
type Index struct {
	dirs map[string]*dirIndex // workspace-relative directory path ("" = root)
}

// dirIndex is one directory's part of an Index.
type dirIndex struct {
	tree   id.ID // tree id of the directory at the last Run; zero if unknown
	files  []fileEntry
	sorted bool // files are sorted by name (RecordFile appends)
}

// fileEntry is one regular file of an Index.
type fileEntry struct {
	name string
	st   fileStat
	// racy: the file changed so shortly before it was read that a later
	// change could leave its stat identical, so it must be read again.
	racy   bool
	chunks []tree.ChunkRef
}

// FileState is what an Index knows about one file.
type FileState struct {
	Size    int64
	MtimeNs int64
	CtimeNs int64
	Inode   uint64
	Mode    uint32 // tree mode bits
	Chunks  []tree.ChunkRef
}

// NewIndex returns an empty Index.
func NewIndex() *Index { return &Index{dirs: make(map[string]*dirIndex)} }

// Len returns the number of files in the index.
func (x *Index) Len() int {
	if x == nil {
		return 0
	}
	n := 0
	for _, d := range x.dirs {
		n += len(d.files)
	}
	return n
}

// RecordFile records that the regular file at relPath (slash-separated,
// relative to the workspace) has the stat fi and the content chunks, as
// restore knows after writing it and setting its mode and mtime. fi must be
// an lstat of the file taken after the last change to it. Invalid paths (see
// tree.CleanPath) and non-regular files are ignored. A file recorded less
// than a moment after its last change is read once more by the next Run
// (see isRacy).
func (x *Index) RecordFile(relPath string, fi fs.FileInfo, chunks []tree.ChunkRef) {
	if fi == nil || !fi.Mode().IsRegular() {
		return
	}
	if _, err := tree.CleanPath(relPath); err != nil {
		return
	}
	dir, name := path.Split(relPath)
	dir = strings.TrimSuffix(dir, "/")
	d := x.dirs[dir]
	if d == nil {
		d = &dirIndex{sorted: true}
		x.dirs[dir] = d
	}
	// The trees of the directory and its parents are no longer known.
	for p := dir; ; p = parentDir(p) {
		if pd := x.dirs[p]; pd != nil {
			pd.tree = id.ID{}
		}
		if p == "" {
			break
		}
	}
	// Restore sets the mtime just before calling: the entry is settled only
	// if its ctime is old enough; otherwise the next Run re-reads it once.
	e := fileEntry{name: name, st: statOf(fi), chunks: slices.Clone(chunks)}
	e.racy = isRacy(e.st, nowNs())
	if n := len(d.files); n > 0 && d.sorted && d.files[n-1].name >= name {
		d.sorted = false
	}
	d.files = append(d.files, e)
}

// Lookup returns what the index knows about the file at relPath.
func (x *Index) Lookup(relPath string) (FileState, bool) {
	if x == nil {
		return FileState{}, false
	}
	relPath = strings.Trim(relPath, "/")
	dir, name := path.Split(relPath)
	d := x.dirs[strings.TrimSuffix(dir, "/")]
	e := d.lookup(name)
	if e == nil {
		return FileState{}, false
	}
	return FileState{Size: e.st.size, MtimeNs: e.st.mtimeNs, CtimeNs: e.st.ctimeNs, Inode: e.st.inode, Mode: e.st.mode, Chunks: e.chunks}, true
}

// prepare sorts what RecordFile appended, dropping duplicates (the last
// record of a name wins).
func (x *Index) prepare() {
	for _, d := range x.dirs {
		if d.sorted {
			continue
		}
		sort.SliceStable(d.files, func(i, j int) bool { return d.files[i].name < d.files[j].name })
		out := d.files[:0]
		for i, e := range d.files {
			if i+1 < len(d.files) && d.files[i+1].name == e.name {
				continue
			}
			out = append(out, e)
		}
		d.files = out
		d.sorted = true
	}
}

// parentDir returns the directory holding the workspace-relative path p
// ("" for a top-level entry).
func parentDir(p string) string {
	if i := strings.LastIndexByte(p, '/'); i >= 0 {
		return p[:i]
	}
	return ""
}

// lookup finds a file of a sorted dirIndex; d may be nil.
func (d *dirIndex) lookup(name string) *fileEntry {
	if d == nil {
		return nil
	}
	if !d.sorted {
		for i := len(d.files) - 1; i >= 0; i-- {
			if d.files[i].name == name {
				return &d.files[i]
			}
		}
		return nil
	}
	i, ok := slices.BinarySearchFunc(d.files, name, func(e fileEntry, name string) int { return strings.Compare(e.name, name) })
	if !ok {
		return nil
	}
	return &d.files[i]
}

// Index file format, version 1 (all integers varints from encoding/binary):
//
//	magic    "SKIDX" 0x00, version byte
//	ndirs    uvarint
//	ndirs times:
//	  path   uvarint length + bytes (workspace-relative, "" = root)
//	  tree   32 bytes (zero if unknown)
//	  nfiles uvarint
//	  nfiles times, sorted by name:
//	    name      uvarint length + bytes
//	    flags     uvarint (bit 0: racy)
//	    size      uvarint
//	    mtime     varint (ns)
//	    ctime     varint (ns)
//	    inode     uvarint
//	    mode      uvarint
//	    nchunks   uvarint
//	    nchunks times: id 32 bytes, size uvarint
//	checksum 32 bytes: BLAKE3-256 of everything before
const (
	indexMagic   = "SKIDX\x00"
	indexVersion = 1
	maxPathLen   = 1 << 16
	maxCount     = 1 << 28
)

// ErrCorruptIndex is returned (wrapped) by LoadIndex for an index file that
// does not decode.
var ErrCorruptIndex = errors.New("corrupt agent index")

// Save writes the index to the file p atomically: a temporary file in the
// same directory is written, synced and renamed over p, and the directory
// is synced.
func (x *Index) Save(p string) (err error) {
	x.prepare()
	dir := filepath.Dir(p)
	f, err := os.CreateTemp(dir, "."+filepath.Base(p)+".tmp-*")
	if err != nil {
		return fmt.Errorf("save index: %w", err)
	}
	tmp := f.Name()
	defer func() {
		if err != nil {
			f.Close()
			os.Remove(tmp)
		}
	}()
	if err := x.write(f); err != nil {
		return fmt.Errorf("save index: %w", err)
	}
	if err := f.Sync(); err != nil {
		return fmt.Errorf("save index: %w", err)
	}
	if err := f.Close(); err != nil {
		return fmt.Errorf("save index: %w", err)
	}
	if err := os.Rename(tmp, p); err != nil {
		return fmt.Errorf("save index: %w", err)
	}
	if d, err := os.Open(dir); err == nil {
		d.Sync() // best effort: the rename is durable once the directory is
		d.Close()
	}
	return nil
}

// write writes the encoded index and its checksum to w.
func (x *Index) write(w io.Writer) error {
	h := id.NewHasher()
	bw := bufio.NewWriterSize(io.MultiWriter(w, h), 256<<10)
	x.encode(bw)
	if err := bw.Flush(); err != nil {
		return err
	}
	sum := h.Sum()
	_, err := w.Write(sum[:])
	return err
}

// encode writes the index body; bufio.Writer keeps the first write error
// for Flush to report.
func (x *Index) encode(w *bufio.Writer) {
	var buf [binary.MaxVarintLen64]byte
	uv := func(v uint64) { w.Write(buf[:binary.PutUvarint(buf[:], v)]) }
	sv := func(v int64) { w.Write(buf[:binary.PutVarint(buf[:], v)]) }
	str := func(s string) { uv(uint64(len(s))); w.WriteString(s) }
	w.WriteString(indexMagic)
	w.WriteByte(indexVersion)
	paths := make([]string, 0, len(x.dirs))
	for p := range x.dirs {
		paths = append(paths, p)
	}
	sort.Strings(paths)
	uv(uint64(len(paths)))
	for _, p := range paths {
		d := x.dirs[p]
		str(p)
		w.Write(d.tree[:])
		uv(uint64(len(d.files)))
		for i := range d.files {
			e := &d.files[i]
			str(e.name)
			var flags uint64
			if e.racy {
				flags |= 1
			}
			uv(flags)
			uv(uint64(e.st.size))
			sv(e.st.mtimeNs)
			sv(e.st.ctimeNs)
			uv(e.st.inode)
			uv(uint64(e.st.mode))
			uv(uint64(len(e.chunks)))
			for _, c := range e.chunks {
				w.Write(c.ID[:])
				uv(uint64(c.Size))
			}
		}
	}
}

// LoadIndex reads an index saved by Save. It always returns a usable Index:
// a missing file gives an empty one and no error; a file that cannot be read
// or does not decode gives an empty one and an error wrapping
// ErrCorruptIndex (or the read error) for the caller to log. Either way the
// next Run simply reads every file again.
func LoadIndex(p string) (*Index, error) {
	f, err := os.Open(p)
	if errors.Is(err, fs.ErrNotExist) {
		return NewIndex(), nil
	}
	if err != nil {
		return NewIndex(), fmt.Errorf("load index: %w", err)
	}
	defer f.Close()
	fi, err := f.Stat()
	if err != nil {
		return NewIndex(), fmt.Errorf("load index: %w", err)
	}
	x, err := readIndex(f, fi.Size())
	if err != nil {
		return NewIndex(), fmt.Errorf("%w: %s: %v", ErrCorruptIndex, p, err)
	}
	return x, nil
}

// readIndex decodes an index of size bytes (checksum included) from r.
func readIndex(r io.Reader, size int64) (*Index, error) {
	if size < int64(len(indexMagic)+1+id.Size) {
		return nil, fmt.Errorf("%d bytes", size)
	}
	h := id.NewHasher()
	body := io.TeeReader(io.LimitReader(r, size-id.Size), h)
	x, err := decodeIndex(bufio.NewReaderSize(body, 256<<10), size)
	if err != nil {
		return nil, err
	}
	var sum id.ID
	if _, err := io.ReadFull(r, sum[:]); err != nil {
		return nil, fmt.Errorf("checksum: %v", err)
	}
	if sum != h.Sum() {
		return nil, errors.New("checksum mismatch")
	}
	return x, nil
}

type indexReader struct {
	r    *bufio.Reader
	size int64 // file size: bounds every count
}

func (r *indexReader) uv() (uint64, error) { return binary.ReadUvarint(r.r) }
func (r *indexReader) sv() (int64, error)  { return binary.ReadVarint(r.r) }

// count reads a count of items of at least minLen encoded bytes each.
func (r *indexReader) count(limit uint64, minLen int64) (int, error) {
	v, err := r.uv()
	if err != nil {
		return 0, err
	}
	if v > limit || v > uint64(r.size/minLen) {
		return 0, fmt.Errorf("count %d out of range", v)
	}
	return int(v), nil
}

func (r *indexReader) str(limit uint64) (string, error) {
	n, err := r.count(limit, 1)
	if err != nil {
		return "", err
	}
	b := make([]byte, n)
	if _, err := io.ReadFull(r.r, b); err != nil {
		return "", err
	}
	return string(b), nil
}

func (r *indexReader) id() (id.ID, error) {
	var v id.ID
	_, err := io.ReadFull(r.r, v[:])
	return v, err
}

func decodeIndex(br *bufio.Reader, size int64) (*Index, error) {
	r := &indexReader{r: br, size: size}
	head := make([]byte, len(indexMagic)+1)
	if _, err := io.ReadFull(br, head); err != nil {
		return nil, err
	}
	if !bytes.Equal(head[:len(indexMagic)], []byte(indexMagic)) {
		return nil, errors.New("bad magic")
	}
	if head[len(indexMagic)] != indexVersion {
		return nil, fmt.Errorf("unknown version %d", head[len(indexMagic)])
	}
	ndirs, err := r.count(maxCount, 1+id.Size+1)
	if err != nil {
		return nil, err
	}
	x := NewIndex()
	for range ndirs {
		p, err := r.str(maxPathLen)
		if err != nil {
			return nil, err
		}
		if _, dup := x.dirs[p]; dup {
			return nil, fmt.Errorf("directory %q twice", p)
		}
		d := &dirIndex{sorted: true}
		if d.tree, err = r.id(); err != nil {
			return nil, err
		}
		nfiles, err := r.count(maxCount, 9)
		if err != nil {
			return nil, err
		}
		d.files = make([]fileEntry, 0, min(nfiles, 1<<12))
		for range nfiles {
			e, err := r.file()
			if err != nil {
				return nil, err
			}
			if n := len(d.files); n > 0 && d.files[n-1].name >= e.name {
				return nil, fmt.Errorf("directory %q: files not sorted", p)
			}
			d.files = append(d.files, e)
		}
		x.dirs[p] = d
	}
	if _, err := br.ReadByte(); err != io.EOF {
		return nil, errors.New("trailing bytes")
	}
	return x, nil
}

func (r *indexReader) file() (fileEntry, error) {
	var e fileEntry
	var err error
	if e.name, err = r.str(tree.MaxNameLen); err != nil {
		return e, err
	}
	if e.name == "" {
		return e, errors.New("empty name")
	}
	flags, err := r.uv()
	if err != nil {
		return e, err
	}
	e.racy = flags&1 != 0
	size, err := r.uv()
	if err != nil {
		return e, err
	}
	if size > 1<<62 {
		return e, errors.New("size out of range")
	}
	e.st.size = int64(size)
	if e.st.mtimeNs, err = r.sv(); err != nil {
		return e, err
	}
	if e.st.ctimeNs, err = r.sv(); err != nil {
		return e, err
	}
	if e.st.inode, err = r.uv(); err != nil {
		return e, err
	}
	mode, err := r.uv()
	if err != nil {
		return e, err
	}
	if mode > tree.ModeMask {
		return e, errors.New("mode out of range")
	}
	e.st.mode = uint32(mode)
	n, err := r.count(maxCount, id.Size+1)
	if err != nil {
		return e, err
	}
	var sum uint64
	e.chunks = make([]tree.ChunkRef, n)
	for i := range e.chunks {
		c := &e.chunks[i]
		if c.ID, err = r.id(); err != nil {
			return e, err
		}
		s, err := r.uv()
		if err != nil {
			return e, err
		}
		if s == 0 || s > tree.MaxChunkSize {
			return e, errors.New("chunk size out of range")
		}
		c.Size = uint32(s)
		sum += s
	}
	if sum != size {
		return e, fmt.Errorf("file %q: chunks sum to %d, size %d", e.name, sum, size)
	}
	return e, nil
}
