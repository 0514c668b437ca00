// Package tree implements the canonical encoding of one directory of a
// workspace snapshot. A tree is a blob addressed by the BLAKE3-256 of its
// encoding; directories refer to their subdirectories by tree id, so the
// trees of a snapshot form a Merkle tree and two snapshots differ exactly
// where their subtree ids differ.
//
// # Encoding (compatibility contract)
//
// The encoding is canonical: one tree has exactly one encoding, and Decode
// accepts nothing that Encode would not produce, so Encode(Decode(b)) == b
// for every accepted b and tree ids are stable. "uvarint" is the unsigned
// LEB128 varint of encoding/binary in its shortest form; "varint" is the
// zigzag signed varint of encoding/binary, also shortest.
//
//	magic      "SKT1"
//	count      uvarint, number of entries (<= MaxEntries)
//	count times, entries sorted by name, bytewise, names unique:
//	  nameLen  uvarint (1..MaxNameLen)
//	  name     nameLen bytes
//	  type     u8: 1 = file, 2 = directory, 3 = symlink
//	  mode     uvarint, permission bits incl. setuid/setgid/sticky (<= 0o7777)
//	  mtime    varint, modification time in Unix nanoseconds
//	  file:
//	    size     uvarint, == the sum of the chunk sizes
//	    nchunks  uvarint
//	    nchunks times: id [32]byte (BLAKE3-256 of the chunk, not zero),
//	                   size uvarint (1..MaxChunkSize)
//	  directory:
//	    subtree  [32]byte, id of the subdirectory's tree (not zero)
//	  symlink:
//	    targetLen uvarint (1..MaxTargetLen)
//	    target    targetLen bytes, no NUL, stored verbatim
//
// Nothing may follow the last entry, and the whole encoding is at most
// MaxEncodedSize bytes (the largest blob a pack holds).
//
// Names are single path elements: not empty, not "." or "..", no '/' or NUL.
// They are bytes, not necessarily UTF-8, as Linux allows.
package tree

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"math"
	"math/bits"
	"strings"

	"github.com/sandkeep/sandkeep/internal/id"
)

// NodeType is the kind of a directory entry.
type NodeType uint8

// Node types, as stored in the type byte of an entry.
const (
	// File is a regular file.
	File NodeType = 1
	// Dir is a directory.
	Dir NodeType = 2
	// Symlink is a symbolic link, stored and never followed.
	Symlink NodeType = 3
)

// String returns "file", "dir", "symlink" or the number of an unknown type.
func (t NodeType) String() string {
	switch t {
	case File:
		return "file"
	case Dir:
		return "dir"
	case Symlink:
		return "symlink"
	}
	return fmt.Sprintf("NodeType(%d)", uint8(t))
}

// Limits of the encoding.
const (
	// Magic starts every encoded tree.
	Magic = "SKT1"
	// MaxEntries is the largest number of entries in one directory.
	MaxEntries = 1_000_000
	// MaxNameLen is the longest name, in bytes.
	MaxNameLen = 1024
	// MaxTargetLen is the longest symlink target, in bytes.
	MaxTargetLen = 4096
	// MaxChunkSize is the largest chunk a file may refer to; it equals
	// pack.MaxBlobSize.
	MaxChunkSize = 64 << 20
	// MaxEncodedSize is the largest encoded tree; it equals
	// pack.MaxBlobSize, since a tree is stored as one blob. It also bounds
	// the number of chunks of one file (about 1.8 million).
	MaxEncodedSize = 64 << 20
	// ModeMask selects the mode bits a tree keeps.
	ModeMask = 0o7777
)

// ErrInvalid is wrapped by every validation and decoding failure.
var ErrInvalid = errors.New("invalid tree")

// ChunkRef is one chunk of a file, in file order.
type ChunkRef struct {
	// ID is the BLAKE3-256 of the chunk's plaintext.
	ID id.ID
	// Size is the plaintext size of the chunk, at least 1.
	Size uint32
}

// Node is one entry of a directory.
type Node struct {
	// Name is one path element (see CheckName).
	Name string
	// Type is the kind of entry.
	Type NodeType
	// Mode holds the permission bits including setuid, setgid and sticky
	// (mode & 0o7777); the type bits live in Type.
	Mode uint32
	// MtimeNs is the modification time in Unix nanoseconds.
	MtimeNs int64
	// Size is the file size, the sum of its chunk sizes; 0 for others.
	Size int64
	// Chunks lists a file's chunks in order; empty for an empty file and
	// for other types.
	Chunks []ChunkRef
	// Subtree is the tree id of a directory; zero for other types.
	Subtree id.ID
	// Target is a symlink's target, verbatim; empty for other types.
	Target string
}

// Tree is one directory: its entries sorted by Name (bytewise), names unique.
type Tree struct {
	Nodes []Node
}

// CheckName reports whether name is a valid single path element: not empty,
// at most MaxNameLen bytes, not "." or "..", and without '/' or NUL. Any
// other bytes, including backslashes and invalid UTF-8, are allowed.
func CheckName(name string) error {
	if err := checkName(name); err != nil {
		return fmt.Errorf("%w: %v", ErrInvalid, err)
	}
	return nil
}

func checkName(name string) error {
	switch {
	case name == "":
		return errors.New("empty name")
	case len(name) > MaxNameLen:
		return fmt.Errorf("name of %d bytes is longer than %d", len(name), MaxNameLen)
	case name == "." || name == "..":
		return fmt.Errorf("name %q", name)
	case strings.IndexByte(name, '/') >= 0:
		return fmt.Errorf("name %s contains '/'", quote(name))
	case strings.IndexByte(name, 0) >= 0:
		return fmt.Errorf("name %s contains NUL", quote(name))
	}
	return nil
}

// Validate checks one node on its own (not its place in a tree); errors
// wrap ErrInvalid.
func (n *Node) Validate() error {
	if err := n.validate(); err != nil {
		return fmt.Errorf("%w: %s: %v", ErrInvalid, quote(n.Name), err)
	}
	return nil
}

func (n *Node) validate() error {
	if err := checkName(n.Name); err != nil {
		return err
	}
	if n.Mode&^ModeMask != 0 {
		return fmt.Errorf("mode %#o has bits outside %#o", n.Mode, ModeMask)
	}
	switch n.Type {
	case File:
		if !n.Subtree.IsZero() || n.Target != "" {
			return errors.New("file with a subtree or target")
		}
		var sum int64
		for i, c := range n.Chunks {
			if c.Size == 0 || c.Size > MaxChunkSize {
				return fmt.Errorf("chunk %d has size %d, want 1..%d", i, c.Size, MaxChunkSize)
			}
			if c.ID.IsZero() {
				return fmt.Errorf("chunk %d has a zero id", i)
			}
			sum += int64(c.Size) // cannot overflow: len(Chunks) < 2^37 in any real memory
		}
		if n.Size != sum {
			return fmt.Errorf("file size %d, chunks sum to %d", n.Size, sum)
		}
	case Dir:
		if n.Subtree.IsZero() {
			return errors.New("directory without a subtree")
		}
		if n.Size != 0 || len(n.Chunks) != 0 || n.Target != "" {
			return errors.New("directory with a size, chunks or target")
		}
	case Symlink:
		switch {
		case n.Target == "":
			return errors.New("symlink without a target")
		case len(n.Target) > MaxTargetLen:
			return fmt.Errorf("symlink target of %d bytes is longer than %d", len(n.Target), MaxTargetLen)
		case strings.IndexByte(n.Target, 0) >= 0:
			return errors.New("symlink target contains NUL")
		}
		if n.Size != 0 || len(n.Chunks) != 0 || !n.Subtree.IsZero() {
			return errors.New("symlink with a size, chunks or subtree")
		}
	default:
		return fmt.Errorf("unknown type %d", uint8(n.Type))
	}
	return nil
}

// Validate checks every node, the number of nodes, and that names are
// sorted and unique; errors wrap ErrInvalid and name the entry.
func (t *Tree) Validate() error {
	if len(t.Nodes) > MaxEntries {
		return fmt.Errorf("%w: %d entries, more than %d", ErrInvalid, len(t.Nodes), MaxEntries)
	}
	for i := range t.Nodes {
		n := &t.Nodes[i]
		if err := n.validate(); err != nil {
			return fmt.Errorf("%w: entry %d %s: %v", ErrInvalid, i, quote(n.Name), err)
		}
		if i > 0 && t.Nodes[i-1].Name >= n.Name {
			return fmt.Errorf("%w: entry %d %s: not sorted after %s, or a duplicate", ErrInvalid, i, quote(n.Name), quote(t.Nodes[i-1].Name))
		}
	}
	return nil
}

// Encode validates t and returns its canonical encoding.
func (t *Tree) Encode() ([]byte, error) {
	if err := t.Validate(); err != nil {
		return nil, err
	}
	size := len(Magic) + uvarintLen(uint64(len(t.Nodes)))
	for i := range t.Nodes {
		size += nodeLen(&t.Nodes[i])
		if size > MaxEncodedSize {
			return nil, fmt.Errorf("%w: encoding longer than %d bytes", ErrInvalid, MaxEncodedSize)
		}
	}
	b := make([]byte, 0, size)
	b = append(b, Magic...)
	b = binary.AppendUvarint(b, uint64(len(t.Nodes)))
	for i := range t.Nodes {
		b = appendNode(b, &t.Nodes[i])
	}
	return b, nil
}

// ID returns the id of t: the BLAKE3-256 of its encoding.
func (t *Tree) ID() (id.ID, error) {
	b, err := t.Encode()
	if err != nil {
		return id.ID{}, err
	}
	return id.Sum(b), nil
}

// Find returns the entry called name, by binary search (t must be sorted,
// as Decode and Validate guarantee). The pointer is into t.Nodes.
func (t *Tree) Find(name string) (*Node, bool) {
	lo, hi := 0, len(t.Nodes)
	for lo < hi {
		m := int(uint(lo+hi) >> 1)
		if t.Nodes[m].Name < name {
			lo = m + 1
		} else {
			hi = m
		}
	}
	if lo < len(t.Nodes) && t.Nodes[lo].Name == name {
		return &t.Nodes[lo], true
	}
	return nil, false
}

func nodeLen(n *Node) int {
	l := uvarintLen(uint64(len(n.Name))) + len(n.Name) + 1 +
		uvarintLen(uint64(n.Mode)) + uvarintLen(zigzag(n.MtimeNs))
	switch n.Type {
	case File:
		l += uvarintLen(uint64(n.Size)) + uvarintLen(uint64(len(n.Chunks)))
		for _, c := range n.Chunks {
			l += id.Size + uvarintLen(uint64(c.Size))
		}
	case Dir:
		l += id.Size
	case Symlink:
		l += uvarintLen(uint64(len(n.Target))) + len(n.Target)
	}
	return l
}

func appendNode(b []byte, n *Node) []byte {
	b = binary.AppendUvarint(b, uint64(len(n.Name)))
	b = append(b, n.Name...)
	b = append(b, byte(n.Type))
	b = binary.AppendUvarint(b, uint64(n.Mode))
	b = binary.AppendVarint(b, n.MtimeNs)
	switch n.Type {
	case File:
		b = binary.AppendUvarint(b, uint64(n.Size))
		b = binary.AppendUvarint(b, uint64(len(n.Chunks)))
		for _, c := range n.Chunks {
			b = append(b, c.ID[:]...)
			b = binary.AppendUvarint(b, uint64(c.Size))
		}
	case Dir:
		b = append(b, n.Subtree[:]...)
	case Symlink:
		b = binary.AppendUvarint(b, uint64(len(n.Target)))
		b = append(b, n.Target...)
	}
	return b
}

func uvarintLen(v uint64) int { return (bits.Len64(v|1) + 6) / 7 }

func zigzag(v int64) uint64 { return uint64(v<<1) ^ uint64(v>>63) }

// Smallest encodings, used to bound allocations by the input size.
const (
	minNodeLen  = 1 + 1 + 1 + 1 + 1 + 2 // name len, name, type, mode, mtime, 2 bytes of the smallest body
	minChunkLen = id.Size + 1
)

// Decode parses an encoded tree strictly: it accepts exactly the encodings
// Encode produces. Errors wrap ErrInvalid and name the entry. Decode does not
// retain b.
func Decode(b []byte) (*Tree, error) {
	if len(b) > MaxEncodedSize {
		return nil, fmt.Errorf("%w: encoding of %d bytes, longer than %d", ErrInvalid, len(b), MaxEncodedSize)
	}
	if !bytes.HasPrefix(b, []byte(Magic)) {
		return nil, fmt.Errorf("%w: bad magic", ErrInvalid)
	}
	d := decoder{b: b, off: len(Magic)}
	count, err := d.uvarint()
	if err != nil {
		return nil, fmt.Errorf("%w: entry count: %v", ErrInvalid, err)
	}
	if count > MaxEntries || count > uint64(d.left()/minNodeLen) {
		return nil, fmt.Errorf("%w: %d entries in %d bytes", ErrInvalid, count, d.left())
	}
	t := &Tree{Nodes: make([]Node, count)}
	for i := range t.Nodes {
		n := &t.Nodes[i]
		if err := d.node(n); err != nil {
			if n.Name != "" {
				return nil, fmt.Errorf("%w: entry %d %s: %v", ErrInvalid, i, quote(n.Name), err)
			}
			return nil, fmt.Errorf("%w: entry %d: %v", ErrInvalid, i, err)
		}
		if err := n.validate(); err != nil {
			return nil, fmt.Errorf("%w: entry %d %s: %v", ErrInvalid, i, quote(n.Name), err)
		}
		if i > 0 && t.Nodes[i-1].Name >= n.Name {
			return nil, fmt.Errorf("%w: entry %d %s: not sorted after %s, or a duplicate", ErrInvalid, i, quote(n.Name), quote(t.Nodes[i-1].Name))
		}
	}
	if d.left() != 0 {
		return nil, fmt.Errorf("%w: %d bytes after the last entry", ErrInvalid, d.left())
	}
	return t, nil
}

type decoder struct {
	b   []byte
	off int
}

func (d *decoder) left() int { return len(d.b) - d.off }

var (
	errShort     = errors.New("truncated")
	errOverflow  = errors.New("varint overflows 64 bits")
	errNonMinVar = errors.New("varint not in its shortest form")
)

// uvarint reads a shortest-form uvarint.
func (d *decoder) uvarint() (uint64, error) {
	v, n := binary.Uvarint(d.b[d.off:])
	switch {
	case n == 0:
		return 0, errShort
	case n < 0:
		return 0, errOverflow
	case n != uvarintLen(v):
		return 0, errNonMinVar
	}
	d.off += n
	return v, nil
}

// length reads a uvarint that counts bytes still to come, at most max.
func (d *decoder) length(what string, max int) (int, error) {
	v, err := d.uvarint()
	if err != nil {
		return 0, fmt.Errorf("%s length: %w", what, err)
	}
	if v > uint64(max) {
		return 0, fmt.Errorf("%s of %d bytes, longer than %d", what, v, max)
	}
	if v > uint64(d.left()) {
		return 0, fmt.Errorf("%s: %w", what, errShort)
	}
	return int(v), nil
}

func (d *decoder) bytes(n int) []byte {
	s := d.b[d.off : d.off+n]
	d.off += n
	return s
}

func (d *decoder) id() (id.ID, error) {
	var out id.ID
	if d.left() < id.Size {
		return out, errShort
	}
	copy(out[:], d.bytes(id.Size))
	return out, nil
}

func (d *decoder) node(n *Node) error {
	nameLen, err := d.length("name", MaxNameLen)
	if err != nil {
		return err
	}
	n.Name = string(d.bytes(nameLen))
	if d.left() < 1 {
		return fmt.Errorf("type: %w", errShort)
	}
	n.Type = NodeType(d.bytes(1)[0])
	mode, err := d.uvarint()
	if err != nil {
		return fmt.Errorf("mode: %w", err)
	}
	if mode > ModeMask {
		return fmt.Errorf("mode %#o has bits outside %#o", mode, ModeMask)
	}
	n.Mode = uint32(mode)
	mt, err := d.uvarint()
	if err != nil {
		return fmt.Errorf("mtime: %w", err)
	}
	n.MtimeNs = int64(mt>>1) ^ -int64(mt&1) // zigzag, as binary.Varint
	switch n.Type {
	case File:
		size, err := d.uvarint()
		if err != nil {
			return fmt.Errorf("size: %w", err)
		}
		if size > math.MaxInt64 {
			return fmt.Errorf("size %d overflows", size)
		}
		n.Size = int64(size)
		nc, err := d.uvarint()
		if err != nil {
			return fmt.Errorf("chunk count: %w", err)
		}
		if nc > uint64(d.left()/minChunkLen) {
			return fmt.Errorf("%d chunks in %d bytes: %w", nc, d.left(), errShort)
		}
		if nc > 0 {
			n.Chunks = make([]ChunkRef, nc)
		}
		for j := range n.Chunks {
			c := &n.Chunks[j]
			if c.ID, err = d.id(); err != nil {
				return fmt.Errorf("chunk %d: %w", j, err)
			}
			cs, err := d.uvarint()
			if err != nil {
				return fmt.Errorf("chunk %d size: %w", j, err)
			}
			if cs == 0 || cs > MaxChunkSize {
				return fmt.Errorf("chunk %d has size %d, want 1..%d", j, cs, MaxChunkSize)
			}
			c.Size = uint32(cs)
		}
	case Dir:
		if n.Subtree, err = d.id(); err != nil {
			return fmt.Errorf("subtree: %w", err)
		}
	case Symlink:
		tl, err := d.length("target", MaxTargetLen)
		if err != nil {
			return err
		}
		n.Target = string(d.bytes(tl))
	default:
		return fmt.Errorf("unknown type %d", uint8(n.Type))
	}
	return nil
}

// quote quotes a name for an error message, shortened if long.
func quote(s string) string {
	if len(s) > 64 {
		return fmt.Sprintf("%q…", s[:64])
	}
	return fmt.Sprintf("%q", s)
}
