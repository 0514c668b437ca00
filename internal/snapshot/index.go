package snapshot

import (
	"encoding/binary"
	"errors"
	"fmt"
	"io/fs"
	"math/bits"
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
