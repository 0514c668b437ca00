package snapshot

import (
	"bufio"
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"maps"
	"os"
	"slices"

	"github.com/sandkeep/sandkeep/internal/atomicfile"
	"github.com/sandkeep/sandkeep/internal/id"
	"github.com/sandkeep/sandkeep/internal/tree"
)

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
