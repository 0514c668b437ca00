package snapshot

import (
	"bufio"
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"github.com/sandkeep/sandkeep/internal/atomicfile"
	"io"
	"io/fs"
	"maps"
	"math/bits"
	"os"
	"path"
	"slices"
	"sort"
	"strings"

	"github.com/sandkeep/sandkeep/internal/id"
	"github.com/sandkeep/sandkeep/internal/tree"
)

// Index is the agent's cache of what the last successful Run (or a restore)
// saw: for every regular file its (size, mtime, ctime, inode, mode) and its
// chunk refs, and for every directory its tree. A file whose stat still
// matches is not read again; a directory whose tree is known is not offered
// to the remote again, and an incremental Run (Options.Dirty) rebuilds it
// from the index without listing it.
//
// The index mirrors the workspace as a tree of directories. A directory a
// Run built is "complete": it keeps its encoded tree (the very bytes the
// remote stores, about 70-100 bytes per entry), a few varints per file for
// what the tree lacks (ctime, inode, racy), its subdirectories' entries, its
// own inode and ctime, and totals of its subtree. Successive indexes share
// the entries of directories that did not change, so an incremental Run
// allocates only along the changed paths. A directory seeded by RecordFile
// is "loose": it keeps file records only, and the next Run lists it.
//
// Everything an Index names is assumed stored on the remote: save the Index
// of a Run only after the Run succeeded (Run returns none otherwise), and
// drop it if the remote ever reports a blob it names as missing.
//
// An Index is not safe for concurrent mutation; Run only reads prev (it
// shares prev's entries with the Index it returns, which RecordFile and
// Save never modify).
type Index struct {
	root     *dirIndex // nil: empty
	unsorted bool      // RecordFile appended out of order: prepare sorts
}

// dirIndex is one directory of an Index, complete (enc != nil) or loose
// (loose != nil). A complete entry is never modified once built: Runs and
// Indexes share it.
type dirIndex struct {
	tree id.ID  // id.Sum(enc); zero for a loose entry
	enc  []byte // the encoded tree
	// ext holds, for each file node of enc in order, what the tree lacks
	// to compare stats (see appendExt).
	ext []byte
	// subs holds the entry of each directory node of enc, in order; the
	// k-th names the tree of the k-th directory node.
	subs []*dirIndex
	// ino and ctime are the directory's own, as the scan of its parent
	// saw them (zero: unknown). An incremental Run trusts a subdirectory
	// it was not told about only if both are unchanged.
	ino   uint64
	ctime int64
	tot   totals // the subtree below this directory
	loose *looseDir
}

// totals count the entries of a subtree, its root excluded.
type totals struct{ files, dirs, links, bytes int64 }

func (t *totals) add(o totals) {
	t.files += o.files
	t.dirs += o.dirs
	t.links += o.links
	t.bytes += o.bytes
}

// looseDir is a directory known only from RecordFile (or an index file of
// version 1): its files' records and its subdirectories.
type looseDir struct {
	recs   []byte   // file records (appendRec), in the order recorded
	offs   []uint32 // offsets of the records; by name once sorted
	sorted bool
	kids   map[string]*dirIndex
}

// fileEntry is what an index knows about one regular file.
type fileEntry struct {
	st fileStat
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
func NewIndex() *Index { return &Index{} }

// Len returns the number of files in the index.
func (x *Index) Len() int {
	if x == nil {
		return 0
	}
	x.prepare()
	var count func(d *dirIndex) int
	count = func(d *dirIndex) int {
		if d == nil {
			return 0
		}
		if d.loose == nil {
			return int(d.tot.files)
		}
		n := len(d.loose.offs)
		for _, k := range d.loose.kids {
			n += count(k)
		}
		return n
	}
	return count(x.root)
}

// RecordFile records that the regular file at relPath (slash-separated,
// relative to the workspace) has the stat fi and the content chunks, as
// restore knows after writing it and setting its mode and mtime. fi must be
// an lstat of the file taken after the last change to it. Invalid paths (see
// tree.CleanPath) and non-regular files are ignored. The directories on the
// way become loose: the next Run lists them. A file whose mtime is less than
// a moment old is read once more by the next Run (see isRacy); a restored
// file's mtime is its original one, so restored files are trusted.
func (x *Index) RecordFile(relPath string, fi fs.FileInfo, chunks []tree.ChunkRef) {
	if fi == nil || !fi.Mode().IsRegular() {
		return
	}
	elems, err := tree.SplitPath(relPath)
	if err != nil {
		return
	}
	st := statOf(fi)
	var l *looseDir
	x.root, l = loosePath(x.root, elems[:len(elems)-1])
	name := elems[len(elems)-1]
	if n := len(l.offs); n > 0 && string(recName(l.recs[l.offs[n-1]:])) >= name {
		l.sorted = false
		x.unsorted = true
	}
	l.offs = append(l.offs, uint32(len(l.recs)))
	l.recs = appendRec(l.recs, name, st, isRacy(st, nowNs()), chunks)
}

// loosePath makes the directories dirs below d loose (copies of complete
// ones: those may be shared) and returns d's new entry and the last one's
// records.
func loosePath(d *dirIndex, dirs []string) (*dirIndex, *looseDir) {
	d = d.loosened()
	if len(dirs) == 0 {
		return d, d.loose
	}
	kid, l := loosePath(d.loose.kids[dirs[0]], dirs[1:])
	d.loose.kids[dirs[0]] = kid
	return d, l
}

// loosened returns d if it is loose, else a loose copy of it (a new entry
// for nil).
func (d *dirIndex) loosened() *dirIndex {
	if d != nil && d.loose != nil {
		return d
	}
	l := &looseDir{sorted: true, kids: make(map[string]*dirIndex)}
	n := &dirIndex{loose: l}
	if d == nil {
		return n
	}
	n.ino, n.ctime = d.ino, d.ctime
	v, err := d.view()
	if err != nil {
		return n // cannot happen: complete entries are valid
	}
	for i := range v.nodes {
		nd := &v.nodes[i]
		switch nd.Type {
		case tree.File:
			l.offs = append(l.offs, uint32(len(l.recs)))
			l.recs = appendRec(l.recs, nd.Name, v.exts[i].stat(nd), v.exts[i].racy, nd.Chunks)
		case tree.Dir:
			l.kids[nd.Name] = v.subs[i]
		}
	}
	return n
}

// Lookup returns what the index knows about the file at relPath.
func (x *Index) Lookup(relPath string) (FileState, bool) {
	if x == nil {
		return FileState{}, false
	}
	relPath = strings.Trim(relPath, "/")
	dir, name := path.Split(relPath)
	e, ok := x.dir(strings.TrimSuffix(dir, "/")).file(name)
	if !ok {
		return FileState{}, false
	}
	return FileState{Size: e.st.size, MtimeNs: e.st.mtimeNs, CtimeNs: e.st.ctimeNs, Inode: e.st.inode, Mode: e.st.mode, Chunks: e.chunks}, true
}

// dir returns the entry of the directory at the workspace-relative path p
// ("" for the root), or nil.
func (x *Index) dir(p string) *dirIndex {
	d := x.root
	if p == "" {
		return d
	}
	for _, name := range strings.Split(p, "/") {
		if d = d.child(name); d == nil {
			return nil
		}
	}
	return d
}

// child returns the entry of the subdirectory name of d, or nil.
func (d *dirIndex) child(name string) *dirIndex {
	switch {
	case d == nil:
		return nil
	case d.loose != nil:
		return d.loose.kids[name]
	}
	v, err := d.view()
	if err != nil {
		return nil
	}
	if i, ok := v.find(name); ok {
		return v.subs[i]
	}
	return nil
}

// file returns what d knows about its file name.
func (d *dirIndex) file(name string) (fileEntry, bool) {
	switch {
	case d == nil:
		return fileEntry{}, false
	case d.loose != nil:
		return d.loose.file(name)
	}
	v, err := d.view()
	if err != nil {
		return fileEntry{}, false
	}
	if i, ok := v.find(name); ok && v.nodes[i].Type == tree.File {
		return v.fileAt(i), true
	}
	return fileEntry{}, false
}

// prepare sorts what RecordFile appended, dropping duplicates (the last
// record of a name wins).
func (x *Index) prepare() {
	if !x.unsorted {
		return
	}
	var walk func(d *dirIndex)
	walk = func(d *dirIndex) {
		if d == nil || d.loose == nil {
			return // complete entries hold no loose ones
		}
		d.loose.sort()
		for _, k := range d.loose.kids {
			walk(k)
		}
	}
	walk(x.root)
	x.unsorted = false
}

func (l *looseDir) name(i int) string { return string(recName(l.recs[l.offs[i]:])) }

func (l *looseDir) sort() {
	if l.sorted {
		return
	}
	sort.SliceStable(l.offs, func(i, j int) bool { return l.name(i) < l.name(j) })
	out := l.offs[:0]
	for i, off := range l.offs {
		if i+1 < len(l.offs) && l.name(i+1) == l.name(i) {
			continue
		}
		out = append(out, off)
	}
	l.offs = out
	l.sorted = true
}

// file finds a record by name: by binary search once sorted, else the last
// one recorded.
func (l *looseDir) file(name string) (fileEntry, bool) {
	at := -1
	if l.sorted {
		i, ok := sort.Find(len(l.offs), func(i int) int { return strings.Compare(name, l.name(i)) })
		if ok {
			at = i
		}
	} else {
		for i := len(l.offs) - 1; i >= 0; i-- {
			if l.name(i) == name {
				at = i
				break
			}
		}
	}
	if at < 0 {
		return fileEntry{}, false
	}
	_, e, _, err := parseRec(l.recs[l.offs[at]:])
	return e, err == nil
}

// fileExt is the part of a file's index entry its tree node lacks.
type fileExt struct {
	ctimeNs int64
	inode   uint64
	racy    bool
}

// stat combines a file node and its ext into the stat they were taken from.
func (e fileExt) stat(n *tree.Node) fileStat {
	return fileStat{size: n.Size, mtimeNs: n.MtimeNs, ctimeNs: e.ctimeNs, inode: e.inode, mode: n.Mode}
}

// appendExt appends the ext of one file: flags (bit 0: racy), ctime as a
// difference to the mtime (0 for most files) and inode, as varints.
func appendExt(b []byte, st fileStat, racy bool) []byte {
	var flags uint64
	if racy {
		flags = 1
	}
	b = binary.AppendUvarint(b, flags)
	b = binary.AppendVarint(b, st.ctimeNs-st.mtimeNs)
	return binary.AppendUvarint(b, st.inode)
}

// extSize is the length of what appendExt appends.
func extSize(st fileStat, racy bool) int {
	return 1 + uvarintLen(zigzag(st.ctimeNs-st.mtimeNs)) + uvarintLen(st.inode)
}

func zigzag(v int64) uint64 { return uint64(v<<1) ^ uint64(v>>63) }

// readExt reads the ext of a file of mtime mtimeNs at the start of b and
// returns it and its length.
func readExt(b []byte, mtimeNs int64) (fileExt, int, error) {
	flags, n1 := binary.Uvarint(b)
	if n1 <= 0 || flags > 1 || n1 != uvarintLen(flags) {
		return fileExt{}, 0, errors.New("bad file flags")
	}
	dc, n2 := binary.Varint(b[n1:])
	if n2 <= 0 {
		return fileExt{}, 0, errors.New("bad file ctime")
	}
	ino, n3 := binary.Uvarint(b[n1+n2:])
	if n3 <= 0 {
		return fileExt{}, 0, errors.New("bad file inode")
	}
	return fileExt{ctimeNs: mtimeNs + dc, inode: ino, racy: flags&1 != 0}, n1 + n2 + n3, nil
}

func uvarintLen(v uint64) int { return (bits.Len64(v|1) + 6) / 7 }

// dirView is a complete directory entry decoded for a Run that visits it:
// its tree's nodes, and for each node its ext (files) or entry (dirs).
type dirView struct {
	nodes []tree.Node
	exts  []fileExt
	subs  []*dirIndex
}

// view decodes a complete entry.
func (d *dirIndex) view() (*dirView, error) {
	t, err := tree.Decode(d.enc)
	if err != nil {
		return nil, err
	}
	v := &dirView{nodes: t.Nodes, exts: make([]fileExt, len(t.Nodes)), subs: make([]*dirIndex, len(t.Nodes))}
	ext, k := d.ext, 0
	for i := range v.nodes {
		switch v.nodes[i].Type {
		case tree.File:
			e, n, err := readExt(ext, v.nodes[i].MtimeNs)
			if err != nil {
				return nil, err
			}
			v.exts[i], ext = e, ext[n:]
		case tree.Dir:
			if k >= len(d.subs) {
				return nil, errors.New("fewer subdirectory entries than directories")
			}
			v.subs[i] = d.subs[k]
			k++
		}
	}
	if len(ext) != 0 || k != len(d.subs) {
		return nil, errors.New("entries do not match the tree")
	}
	return v, nil
}

func (v *dirView) find(name string) (int, bool) {
	return slices.BinarySearchFunc(v.nodes, name, func(n tree.Node, name string) int { return strings.Compare(n.Name, name) })
}

func (v *dirView) fileAt(i int) fileEntry {
	n := &v.nodes[i]
	return fileEntry{st: v.exts[i].stat(n), racy: v.exts[i].racy, chunks: n.Chunks}
}

// appendRec appends a file record, the per-file format of index files of
// version 1: name, flags (bit 0: racy), size, mtime, ctime, inode, mode,
// chunk count and chunks (id, size), integers as varints.
func appendRec(b []byte, name string, st fileStat, racy bool, chunks []tree.ChunkRef) []byte {
	var flags uint64
	if racy {
		flags = 1
	}
	b = binary.AppendUvarint(b, uint64(len(name)))
	b = append(b, name...)
	b = binary.AppendUvarint(b, flags)
	b = binary.AppendUvarint(b, uint64(st.size))
	b = binary.AppendVarint(b, st.mtimeNs)
	b = binary.AppendVarint(b, st.ctimeNs)
	b = binary.AppendUvarint(b, st.inode)
	b = binary.AppendUvarint(b, uint64(st.mode))
	b = binary.AppendUvarint(b, uint64(len(chunks)))
	for _, c := range chunks {
		b = append(b, c.ID[:]...)
		b = binary.AppendUvarint(b, uint64(c.Size))
	}
	return b
}

// recName returns the name of the record at the start of b (which must be
// valid).
func recName(b []byte) []byte {
	n, k := binary.Uvarint(b)
	return b[k : k+int(n)]
}

// parseRec parses and checks the record at the start of b.
func parseRec(b []byte) (name string, e fileEntry, n int, err error) {
	d := &byteReader{b: b}
	name = string(d.bytes(d.count(tree.MaxNameLen)))
	flags := d.uv()
	size := d.uv()
	e.st.mtimeNs = d.sv()
	e.st.ctimeNs = d.sv()
	e.st.inode = d.uv()
	mode := d.uv()
	nchunks := d.count(uint64(len(b)) / (id.Size + 1))
	if d.err != nil {
		return "", e, 0, d.err
	}
	switch {
	case name == "" || tree.CheckName(name) != nil:
		return "", e, 0, fmt.Errorf("bad name %q", name)
	case flags > 1:
		return "", e, 0, errors.New("unknown flags")
	case size > 1<<62:
		return "", e, 0, errors.New("size out of range")
	case mode > tree.ModeMask:
		return "", e, 0, errors.New("mode out of range")
	}
	e.racy = flags&1 != 0
	e.st.size, e.st.mode = int64(size), uint32(mode)
	var sum uint64
	e.chunks = make([]tree.ChunkRef, nchunks)
	for i := range e.chunks {
		c := &e.chunks[i]
		copy(c.ID[:], d.bytes(id.Size))
		s := d.uv()
		if d.err == nil && (s == 0 || s > tree.MaxChunkSize) {
			return "", e, 0, errors.New("chunk size out of range")
		}
		c.Size = uint32(s)
		sum += s
	}
	if d.err != nil {
		return "", e, 0, d.err
	}
	if sum != size {
		return "", e, 0, fmt.Errorf("file %q: chunks sum to %d, size %d", name, sum, size)
	}
	return name, e, d.off, nil
}

// byteReader decodes varints and bytes from memory; the first error sticks.
type byteReader struct {
	b   []byte
	off int
	err error
}

func (d *byteReader) fail(what string) {
	if d.err == nil {
		d.err = fmt.Errorf("bad %s at byte %d", what, d.off)
	}
}

func (d *byteReader) uv() uint64 {
	if d.err != nil {
		return 0
	}
	v, n := binary.Uvarint(d.b[d.off:])
	if n <= 0 || n != uvarintLen(v) {
		d.fail("uvarint")
		return 0
	}
	d.off += n
	return v
}

func (d *byteReader) sv() int64 {
	u := d.uv()
	return int64(u>>1) ^ -int64(u&1)
}

func (d *byteReader) count(limit uint64) int {
	v := d.uv()
	if v > limit || v > uint64(len(d.b)-d.off) {
		d.fail("count")
		return 0
	}
	return int(v)
}

func (d *byteReader) bytes(n int) []byte {
	if d.err != nil || n > len(d.b)-d.off {
		d.fail("length")
		return nil
	}
	b := d.b[d.off : d.off+n]
	d.off += n
	return b
}

// Index file format, version 2 (integers are varints of encoding/binary, in
// their shortest form):
//
//	magic    "SKIDX" 0x00, version byte 2
//	root     0x00 for an empty index, else the root directory:
//	dir      kind byte, then
//	  kind 1, complete:
//	    ino uvarint, ctime varint
//	    enc  uvarint length + the encoded tree
//	    ext  uvarint length + for each file node of enc in order: flags
//	         uvarint (bit 0: racy), ctime - mtime varint, inode uvarint
//	    for each directory node of enc in order: its dir (kind 1)
//	  kind 2, loose:
//	    ino uvarint, ctime varint
//	    nrecs uvarint, recs uvarint length + nrecs file records sorted
//	    by name (the file format of version 1, below)
//	    nkids uvarint, nkids times, sorted by name: name (uvarint length +
//	    bytes), dir
//	checksum 32 bytes: BLAKE3-256 of everything before
//
// Version 1 (still read; its directories load as loose ones):
//
//	magic, version byte 1, ndirs uvarint, ndirs times: path (uvarint
//	length + bytes, "" = root), tree (32 bytes), nfiles uvarint, nfiles
//	file records sorted by name: name (uvarint length + bytes), flags
//	uvarint, size uvarint, mtime varint, ctime varint, inode uvarint, mode
//	uvarint, nchunks uvarint, nchunks times: id (32 bytes), size uvarint;
//	checksum.
const (
	indexMagic   = "SKIDX\x00"
	indexVersion = 2
	maxPathLen   = 1 << 16
	maxCount     = 1 << 28
	maxDepth     = tree.MaxPathLen / 2 // deepest directory a path can name
)

const (
	kindNone     = 0
	kindComplete = 1
	kindLoose    = 2
)

// ErrCorruptIndex is returned (wrapped) by LoadIndex for an index file that
// does not decode.
var ErrCorruptIndex = errors.New("corrupt agent index")

// Save writes the index to the file p atomically: a temporary file in the
// same directory is written, synced and renamed over p, and the directory
// is synced.
func (x *Index) Save(p string) error {
	x.prepare()
	if err := atomicfile.Write(p, 0o600, x.write); err != nil {
		return fmt.Errorf("save index: %w", err)
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
	blob := func(b []byte) { uv(uint64(len(b))); w.Write(b) }
	w.WriteString(indexMagic)
	w.WriteByte(indexVersion)
	var dir func(d *dirIndex)
	dir = func(d *dirIndex) {
		if d.loose == nil {
			w.WriteByte(kindComplete)
			uv(d.ino)
			sv(d.ctime)
			blob(d.enc)
			blob(d.ext)
			for _, s := range d.subs {
				dir(s)
			}
			return
		}
		l := d.loose
		w.WriteByte(kindLoose)
		uv(d.ino)
		sv(d.ctime)
		uv(uint64(len(l.offs)))
		size := 0
		for i := range l.offs {
			size += recLen(l.recs[l.offs[i]:])
		}
		uv(uint64(size))
		for i := range l.offs {
			r := l.recs[l.offs[i]:]
			w.Write(r[:recLen(r)])
		}
		names := slices.Sorted(maps.Keys(l.kids))
		uv(uint64(len(names)))
		for _, name := range names {
			blob([]byte(name))
			dir(l.kids[name])
		}
	}
	if x.root == nil {
		w.WriteByte(kindNone)
		return
	}
	dir(x.root)
}

// recLen returns the length of the (valid) record at the start of b.
func recLen(b []byte) int {
	_, _, n, err := parseRec(b)
	if err != nil {
		panic("snapshot: invalid record in index: " + err.Error())
	}
	return n
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

// uv reads a uvarint in its shortest form.
func (r *indexReader) uv() (uint64, error) {
	var v uint64
	for i := 0; i < binary.MaxVarintLen64; i++ {
		b, err := r.r.ReadByte()
		if err != nil {
			return 0, err
		}
		if i == binary.MaxVarintLen64-1 && b > 1 {
			return 0, errors.New("varint overflows")
		}
		v |= uint64(b&0x7f) << (7 * i)
		if b < 0x80 {
			if i > 0 && b == 0 {
				return 0, errors.New("varint not in its shortest form")
			}
			return v, nil
		}
	}
	return 0, errors.New("varint overflows")
}

func (r *indexReader) sv() (int64, error) {
	u, err := r.uv()
	return int64(u>>1) ^ -int64(u&1), err
}

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

// bytes reads a length (at most limit) and that many bytes.
func (r *indexReader) bytes(limit uint64) ([]byte, error) {
	n, err := r.count(limit, 1)
	if err != nil {
		return nil, err
	}
	b := make([]byte, n)
	if _, err := io.ReadFull(r.r, b); err != nil {
		return nil, err
	}
	return b, nil
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
	x := NewIndex()
	var err error
	switch v := head[len(indexMagic)]; v {
	case 1:
		x.root, err = r.v1()
	case indexVersion:
		kind, kerr := br.ReadByte()
		switch {
		case kerr != nil:
			err = kerr
		case kind != kindNone:
			x.root, err = r.dir(kind, 0)
		}
	default:
		return nil, fmt.Errorf("unknown version %d", v)
	}
	if err != nil {
		return nil, err
	}
	if _, err := br.ReadByte(); err != io.EOF {
		return nil, errors.New("trailing bytes")
	}
	return x, nil
}

// dir reads one directory of kind kind (its kind byte already read) and
// everything below it, and checks it.
func (r *indexReader) dir(kind byte, depth int) (*dirIndex, error) {
	if depth > maxDepth {
		return nil, errors.New("directories nested too deep")
	}
	d := &dirIndex{}
	var err error
	if d.ino, err = r.uv(); err != nil {
		return nil, err
	}
	if d.ctime, err = r.sv(); err != nil {
		return nil, err
	}
	switch kind {
	case kindComplete:
		return d, r.complete(d, depth)
	case kindLoose:
		return d, r.loose(d, depth)
	}
	return nil, fmt.Errorf("unknown directory kind %d", kind)
}

func (r *indexReader) complete(d *dirIndex, depth int) error {
	var err error
	if d.enc, err = r.bytes(tree.MaxEncodedSize); err != nil {
		return err
	}
	if d.ext, err = r.bytes(maxCount); err != nil {
		return err
	}
	t, err := tree.Decode(d.enc)
	if err != nil {
		return err
	}
	d.tree = id.Sum(d.enc)
	ext := d.ext
	for i := range t.Nodes {
		n := &t.Nodes[i]
		switch n.Type {
		case tree.File:
			_, k, err := readExt(ext, n.MtimeNs)
			if err != nil {
				return fmt.Errorf("file %q: %v", n.Name, err)
			}
			ext = ext[k:]
			d.tot.files++
			d.tot.bytes += n.Size
		case tree.Symlink:
			d.tot.links++
		case tree.Dir:
			kind, err := r.r.ReadByte()
			if err != nil {
				return err
			}
			if kind != kindComplete {
				return fmt.Errorf("directory %q of a complete one is not complete", n.Name)
			}
			s, err := r.dir(kind, depth+1)
			if err != nil {
				return err
			}
			if s.tree != n.Subtree {
				return fmt.Errorf("directory %q: entry of another tree", n.Name)
			}
			d.subs = append(d.subs, s)
			d.tot.dirs++
			d.tot.add(s.tot)
		}
	}
	if len(ext) != 0 {
		return errors.New("more file entries than files")
	}
	return nil
}

func (r *indexReader) loose(d *dirIndex, depth int) error {
	l := &looseDir{sorted: true, kids: make(map[string]*dirIndex)}
	d.loose = l
	nrecs, err := r.count(maxCount, 9)
	if err != nil {
		return err
	}
	if l.recs, err = r.bytes(maxCount); err != nil {
		return err
	}
	l.offs = make([]uint32, 0, nrecs)
	var prev string
	for off := 0; off < len(l.recs); {
		name, _, n, err := parseRec(l.recs[off:])
		if err != nil {
			return err
		}
		if len(l.offs) > 0 && name <= prev {
			return fmt.Errorf("file %q: files not sorted", name)
		}
		l.offs = append(l.offs, uint32(off))
		prev, off = name, off+n
	}
	if len(l.offs) != nrecs {
		return fmt.Errorf("%d file records, header says %d", len(l.offs), nrecs)
	}
	nkids, err := r.count(maxCount, 3)
	if err != nil {
		return err
	}
	prev = ""
	for i := range nkids {
		b, err := r.bytes(tree.MaxNameLen)
		if err != nil {
			return err
		}
		name := string(b)
		if tree.CheckName(name) != nil || (i > 0 && name <= prev) {
			return fmt.Errorf("bad or unsorted subdirectory name %q", name)
		}
		kind, err := r.r.ReadByte()
		if err != nil {
			return err
		}
		if l.kids[name], err = r.dir(kind, depth+1); err != nil {
			return err
		}
		prev = name
	}
	return nil
}

// v1 reads the body of an index file of version 1; its directories become
// loose (their tree ids are dropped: the next Run lists them).
func (r *indexReader) v1() (*dirIndex, error) {
	ndirs, err := r.count(maxCount, 1+id.Size+1)
	if err != nil {
		return nil, err
	}
	x := NewIndex()
	seen := make(map[string]bool)
	for range ndirs {
		b, err := r.bytes(maxPathLen)
		if err != nil {
			return nil, err
		}
		p := string(b)
		if seen[p] {
			return nil, fmt.Errorf("directory %q twice", p)
		}
		seen[p] = true
		var elems []string
		if p != "" {
			if elems, err = tree.SplitPath(p); err != nil {
				return nil, err
			}
		}
		if _, err := r.id(); err != nil {
			return nil, err
		}
		nfiles, err := r.count(maxCount, 9)
		if err != nil {
			return nil, err
		}
		var recs []byte
		var prev string
		for i := range nfiles {
			rec, err := r.v1file()
			if err != nil {
				return nil, err
			}
			name, _, _, err := parseRec(rec)
			if err != nil {
				return nil, err
			}
			if i > 0 && name <= prev {
				return nil, fmt.Errorf("directory %q: files not sorted", p)
			}
			prev = name
			recs = append(recs, rec...)
		}
		var l *looseDir
		x.root, l = loosePath(x.root, elems)
		for off := 0; off < len(recs); {
			n := recLen(recs[off:])
			l.offs = append(l.offs, uint32(len(l.recs)))
			l.recs = append(l.recs, recs[off:off+n]...)
			off += n
		}
	}
	return x.root, nil
}

// v1file reads one file record of version 1 and returns its bytes.
func (r *indexReader) v1file() ([]byte, error) {
	var b []byte
	var buf [binary.MaxVarintLen64]byte
	uv := func() error {
		v, err := r.uv()
		b = append(b, buf[:binary.PutUvarint(buf[:], v)]...)
		return err
	}
	nameLen, err := r.count(tree.MaxNameLen, 1)
	if err != nil {
		return nil, err
	}
	b = binary.AppendUvarint(b, uint64(nameLen))
	name := make([]byte, nameLen)
	if _, err := io.ReadFull(r.r, name); err != nil {
		return nil, err
	}
	b = append(b, name...)
	for range 6 { // flags, size, mtime, ctime, inode, mode
		if err := uv(); err != nil {
			return nil, err
		}
	}
	n, err := r.count(maxCount, id.Size+1)
	if err != nil {
		return nil, err
	}
	b = binary.AppendUvarint(b, uint64(n))
	for range n {
		c, err := r.id()
		if err != nil {
			return nil, err
		}
		b = append(b, c[:]...)
		if err := uv(); err != nil {
			return nil, err
		}
	}
	return b, nil
}
