package pack

import (
	"encoding/binary"
	"errors"
	"fmt"
	"hash/crc32"
	"io"
	"runtime"
	"slices"
	"sync"

	"github.com/klauspost/compress/zstd"

	"github.com/sandkeep/sandkeep/internal/id"
)

// BlobType says what a blob holds.
type BlobType uint8

// Blob types, as stored in the type byte of an entry.
const (
	// Data is a chunk of a file.
	Data BlobType = 1
	// Tree is an encoded directory (package tree).
	Tree BlobType = 2
)

// String returns "data", "tree" or the number of an unknown type.
func (t BlobType) String() string {
	switch t {
	case Data:
		return "data"
	case Tree:
		return "tree"
	}
	return fmt.Sprintf("BlobType(%d)", uint8(t))
}

func (t BlobType) valid() bool { return t == Data || t == Tree }

// Codec says how a blob's plaintext was turned into its stored bytes.
type Codec uint8

// Codecs, as stored in the codec byte of an entry.
const (
	// None stores the plaintext as is.
	None Codec = 0
	// Zstd stores one zstd frame of the plaintext.
	Zstd Codec = 1
	// Group stores the plaintext as a slice of one zstd frame shared with
	// the blobs next to it in the pack (see Group): the entry's Offset and
	// Length are the frame's, RawOffset where the blob starts in the
	// frame's plaintext. Only packs with the magic MagicGroups hold them.
	Group Codec = 2
)

// String returns "none", "zstd" or the number of an unknown codec.
func (c Codec) String() string {
	switch c {
	case None:
		return "none"
	case Zstd:
		return "zstd"
	case Group:
		return "zstd-group"
	}
	return fmt.Sprintf("Codec(%d)", uint8(c))
}

func (c Codec) valid() bool { return c == None || c == Zstd || c == Group }

// Entry locates and describes one blob of a pack.
type Entry struct {
	// ID is the BLAKE3-256 of the blob's plaintext.
	ID id.ID
	// Offset is where the stored bytes start in the pack.
	Offset uint64
	// Length is the number of stored bytes.
	Length uint32
	// RawLength is the plaintext length.
	RawLength uint32
	// Type says whether the blob is a file chunk or a tree.
	Type BlobType
	// Codec says how the stored bytes decode to the plaintext.
	Codec Codec
	// RawOffset is, for codec Group, where the blob's plaintext starts in
	// the plaintext of its frame; 0 for the other codecs.
	RawOffset uint32
}

// End returns the offset just past the blob's stored bytes (for a Group
// member, its frame's).
func (e Entry) End() uint64 { return e.Offset + uint64(e.Length) }

// SameFrame reports whether e is a Group member stored in the same frame
// as prev, the entry before it: readers that stream a pack reuse the
// frame's bytes (and its plaintext, see Decoder) instead of reading on.
func (e Entry) SameFrame(prev Entry) bool {
	return e.Codec == Group && prev.Codec == Group && e.Offset == prev.Offset && e.Length == prev.Length
}

const (
	// EntrySize is the size of one encoded entry in the footer.
	EntrySize = 56
	// TrailerSize is the size of the trailer that ends every pack.
	TrailerSize = 16
	// TargetSize is the stored size at which writers finish a pack.
	TargetSize = 16 << 20
	// MaxBlobSize is the largest blob, raw or stored, accepted anywhere.
	MaxBlobSize = 64 << 20
	// MaxEntries is the largest number of blobs in one pack (a footer of
	// 56 MiB). Writers refuse to add more; readers reject larger counts
	// before fetching the footer.
	MaxEntries = 1 << 20
	// MaxGroupSize is the largest plaintext of a Group frame, all its
	// members together: what reading one member may cost to decode.
	MaxGroupSize = 1 << 20
	// GroupTarget is the plaintext size at which writers close a group.
	GroupTarget = 512 << 10
	// MaxGroupMember is the largest blob writers put in a group; larger
	// ones are compressed on their own.
	MaxGroupMember = 256 << 10
)

// Magic ends every pack without Group members (every pack before groups).
const Magic = "SKPACK01"

// MagicGroups ends every pack that holds Group members: readers that
// predate the codec stop at the magic instead of misreading the footer.
const MagicGroups = "SKPACK02"

var (
	// ErrCorrupt is wrapped by every decode failure: bad footer, bad zstd
	// frame, wrong length, hash mismatch.
	ErrCorrupt = errors.New("corrupt pack")
	// ErrEmpty is returned by Writer.Finish when no blob was added.
	ErrEmpty = errors.New("empty pack")
)

// compressed output must be smaller than raw - raw/minSavingsDiv (~3%) to be kept.
const minSavingsDiv = 32

var castagnoli = crc32.MakeTable(crc32.Castagnoli)

// coderConcurrency is how many zstd encodes (and decodes) may run at once;
// EncodeAll/DecodeAll on one Encoder/Decoder block when all are busy.
func coderConcurrency() int {
	return min(max(runtime.GOMAXPROCS(0), 1), 8)
}

var (
	encOnce sync.Once
	encoder *zstd.Encoder
	encErr  error

	decOnce sync.Once
	decoder *zstd.Decoder
	decErr  error
)

// encoderWindow is the zstd window of the blobs writers compress. A blob
// of at most this size is one segment whatever the window; a larger one
// (a chunk of up to 4 MiB) loses only matches further back than this. Each
// of the shared encoders keeps a history of the window's size, so the
// fastest level's default of 4 MiB would cost the agent 4 MiB per encoder.
const encoderWindow = 1 << 20

func getEncoder() (*zstd.Encoder, error) {
	encOnce.Do(func() {
		encoder, encErr = zstd.NewWriter(nil,
			zstd.WithEncoderLevel(zstd.SpeedFastest),
			zstd.WithWindowSize(encoderWindow),
			zstd.WithEncoderConcurrency(coderConcurrency()),
			zstd.WithLowerEncoderMem(true),
			zstd.WithEncoderCRC(false),
		)
	})
	return encoder, encErr
}

func getDecoder() (*zstd.Decoder, error) {
	decOnce.Do(func() {
		decoder, decErr = zstd.NewReader(nil,
			zstd.WithDecoderConcurrency(coderConcurrency()),
			zstd.WithDecoderLowmem(true),
			zstd.WithDecoderMaxMemory(MaxBlobSize),
			zstd.WithDecodeAllCapLimit(true),
		)
	})
	return decoder, decErr
}

// Compressor turns plaintexts into the stored bytes of blobs, by the policy
// every writer follows: zstd at the fastest level, kept only when it saves at
// least ~3%. It reuses one output buffer, so compressing allocates nothing
// once that buffer has grown to the largest blob. A Compressor is not safe
// for concurrent use; the zstd encoders behind it are shared and concurrent.
type Compressor struct {
	buf []byte
}

// Compress returns the stored form of plaintext and its codec. The stored
// bytes are plaintext itself when it is kept raw (codec None), otherwise
// they live in the Compressor's buffer and are valid until the next call.
func (c *Compressor) Compress(plaintext []byte) (stored []byte, codec Codec, err error) {
	if len(plaintext) > MaxBlobSize {
		return nil, None, fmt.Errorf("pack: compress: %d bytes, more than the maximum %d", len(plaintext), MaxBlobSize)
	}
	enc, err := getEncoder()
	if err != nil {
		return nil, None, fmt.Errorf("pack: zstd encoder: %w", err)
	}
	// Room for the worst case, so that the buffer grows once to the
	// largest blob instead of step by step.
	if bound := compressBound(len(plaintext)); cap(c.buf) < bound {
		c.buf = make([]byte, 0, bound)
	}
	c.buf = enc.EncodeAll(plaintext, c.buf[:0])
	clen := len(c.buf)
	if clen == 0 || clen >= len(plaintext)-len(plaintext)/minSavingsDiv {
		return plaintext, None, nil
	}
	return c.buf, Zstd, nil
}

// Writer builds one pack at a time. It is not safe for concurrent use (but
// for Recycle); use one Writer per goroutine, or share one under a lock and
// compress outside it with a Compressor per goroutine and AddStored. Add
// compresses straight into the pack buffer when it has room for the worst
// case, else through a scratch buffer of the writer's.
//
// A Writer's packs are meant to be finished once Size reaches its target
// (NewWriterSize, NewWriterCap). Each pack is built in a buffer of a fixed
// capacity, target + target/4 or the one given to NewWriterCap, that
// Finish hands to the caller with the pack and Recycle gives back for a
// later pack: a stream of packs allocates a few buffers in all, and no
// pack is ever copied to grow. The footer's room is
// kept free as blobs are added. A caller that checks Fits before adding
// never outgrows the capacity; a blob that does not fit gets a larger,
// one-off buffer, never recycled. The first pack starts in a small buffer,
// moved (at most smallPack bytes) to a full-capacity one if it outgrows it,
// so that a writer making one small pack never allocates a large one.
type Writer struct {
	buf      []byte // stored bytes so far, with room for the footer
	entries  []Entry
	index    map[id.ID]int // id -> position in entries
	comp     Compressor    // for Add
	target   int
	capacity int
	free     chan []byte // recycled buffers of capacity bytes
	checkIDs bool        // re-hash plaintext in Add (tests)
}

// smallPack is the capacity of the first buffer of a writer's pack when no
// recycled buffer is at hand and the first blob needs less.
const smallPack = 256 << 10

// recycledBuffers is how many buffers a Writer keeps for its next packs.
const recycledBuffers = 2

// NewWriter returns an empty Writer for packs of about TargetSize bytes.
func NewWriter() *Writer { return NewWriterSize(TargetSize) }

// NewWriterSize returns an empty Writer for packs of about target bytes
// (TargetSize if target <= 0): its buffers hold target + target/4 bytes,
// footer included.
func NewWriterSize(target int) *Writer {
	if target <= 0 {
		target = TargetSize
	}
	return NewWriterCap(target, target+target/4)
}

// NewWriterCap returns an empty Writer for packs of about target bytes
// (TargetSize if target <= 0) built in buffers of capacity bytes, footer
// included (at least target + EntrySize + TrailerSize). A caller that
// checks Fits finishes a pack before it outgrows the capacity, so the room
// above target only decides how far a pack can go past its target, and
// how many blobs' footer entries fit; a blob of n plaintext bytes fits in
// an empty pack if the capacity is at least EmptyPackNeeds(n). The buffers
// are what a Writer costs in memory.
func NewWriterCap(target, capacity int) *Writer {
	if target <= 0 {
		target = TargetSize
	}
	return &Writer{
		index:    make(map[id.ID]int),
		target:   target,
		capacity: max(capacity, target+EntrySize+TrailerSize),
		free:     make(chan []byte, recycledBuffers),
	}
}

// EmptyPackNeeds returns the buffer capacity an empty pack needs to take a
// blob of n plaintext bytes, whatever its stored size (up to the
// worst-case expansion of compression) without a one-off buffer: the
// blob, its footer entry and the trailer.
func EmptyPackNeeds(n int) int { return compressBound(n) + EntrySize + TrailerSize }

// Target returns the size at which the caller should finish a pack.
func (w *Writer) Target() int { return w.target }

// Fits reports whether a blob of n stored bytes can be added to the current
// pack without outgrowing the writer's buffer capacity (footer included). A
// blob's stored length is at most its plaintext length, so checking Fits
// with the plaintext length before Add is safe. An empty writer always
// accepts a blob (in a larger buffer if need be).
func (w *Writer) Fits(n int) bool { return w.need(n) <= w.capacity }

// FitsDirect reports whether Add of a plaintext of n bytes compresses it
// straight into the current pack, with room for the worst case, rather than
// through the writer's scratch buffer (which then keeps the size of the
// largest such blob for the writer's life).
func (w *Writer) FitsDirect(n int) bool { return w.Fits(compressBound(n)) }

// need is the buffer size the pack needs with one more blob of n bytes.
func (w *Writer) need(n int) int {
	return len(w.buf) + n + (len(w.entries)+1)*EntrySize + TrailerSize
}

// reserve makes room in w.buf for one more blob of n stored bytes and the
// footer entry that goes with it.
func (w *Writer) reserve(n int) {
	need := w.need(n)
	if need <= cap(w.buf) {
		return
	}
	var nb []byte
	switch {
	case need > w.capacity:
		nb = make([]byte, 0, need) // one oversized pack
	default:
		select {
		case b := <-w.free:
			nb = b[:0]
		default:
			if len(w.buf) == 0 && need <= smallPack && smallPack < w.capacity {
				nb = make([]byte, 0, smallPack)
			} else {
				nb = make([]byte, 0, w.capacity)
			}
		}
	}
	w.buf = append(nb, w.buf...)
}

// Recycle gives back the data of a pack returned by Finish once the caller
// is done with it (uploaded), for a later pack to be built in. The caller
// must not touch data afterwards. Buffers the writer did not allocate at
// its capacity, and any beyond the few it keeps, are left to the garbage
// collector. Recycle may be called concurrently with the other methods.
func (w *Writer) Recycle(data []byte) {
	if cap(data) != w.capacity {
		return
	}
	select {
	case w.free <- data[:0]:
	default:
	}
}

// Add appends one blob of type t whose plaintext is plaintext and whose id is
// blobID, which must be id.Sum(plaintext): Add does not re-hash. The blob is
// compressed with zstd unless that saves less than ~3%, in which case it is
// stored raw. Adding an id already in the writer is a no-op that returns the
// existing entry (an error if it was added with another type). plaintext is
// not retained.
func (w *Writer) Add(t BlobType, blobID id.ID, plaintext []byte) (Entry, error) {
	if e, done, err := w.check(t, blobID, len(plaintext)); done || err != nil {
		return e, err
	}
	if w.checkIDs {
		if got := id.Sum(plaintext); got != blobID {
			return Entry{}, fmt.Errorf("pack: add blob %s: plaintext hashes to %s", blobID.Short(), got.Short())
		}
	}
	if bound := compressBound(len(plaintext)); w.Fits(bound) {
		// Room for the worst case: compress straight into the pack.
		w.reserve(bound)
		enc, err := getEncoder()
		if err != nil {
			return Entry{}, fmt.Errorf("pack: zstd encoder: %w", err)
		}
		start := len(w.buf)
		e := Entry{ID: blobID, Offset: uint64(start), RawLength: uint32(len(plaintext)), Type: t, Codec: Zstd}
		w.buf = enc.EncodeAll(plaintext, w.buf)
		if clen := len(w.buf) - start; clen == 0 || clen >= len(plaintext)-len(plaintext)/minSavingsDiv {
			w.buf = append(w.buf[:start], plaintext...)
			e.Codec = None
		}
		e.Length = uint32(len(w.buf) - start)
		w.index[blobID] = len(w.entries)
		w.entries = append(w.entries, e)
		return e, nil
	}
	stored, codec, err := w.comp.Compress(plaintext)
	if err != nil {
		return Entry{}, err
	}
	return w.add(t, blobID, codec, len(plaintext), stored), nil
}

// GroupBuilder gathers the plaintexts of small blobs to be compressed
// together, as one zstd frame, and added to a pack by Writer.AddGroup:
// neighbouring small files share their redundancy (a fresh zstd frame per
// file finds none across files), and a frame costs one encode and one
// decode for all of them. Members are at most MaxGroupMember bytes and a
// group at most MaxGroupSize; writers close one at GroupTarget. A
// GroupBuilder is reused after Reset and is not safe for concurrent use.
type GroupBuilder struct {
	plain   []byte
	members []groupMember
}

type groupMember struct {
	id   id.ID
	size uint32
}

// Fits reports whether a blob of n bytes may join the group.
func (g *GroupBuilder) Fits(n int) bool {
	return n > 0 && n <= MaxGroupMember && len(g.plain)+n <= MaxGroupSize
}

// Add copies a blob into the group; blobID must be id.Sum(plaintext), and
// Fits(len(plaintext)) true.
func (g *GroupBuilder) Add(blobID id.ID, plaintext []byte) error {
	if !g.Fits(len(plaintext)) {
		return fmt.Errorf("pack: group: a blob of %d bytes does not fit a group of %d", len(plaintext), len(g.plain))
	}
	g.members = append(g.members, groupMember{id: blobID, size: uint32(len(plaintext))})
	g.plain = append(g.plain, plaintext...)
	return nil
}

// Size returns the plaintext bytes in the group; Len its members.
func (g *GroupBuilder) Size() int { return len(g.plain) }

// Len returns the number of members.
func (g *GroupBuilder) Len() int { return len(g.members) }

// Plaintext returns the members' plaintexts back to back, what to
// compress; valid until the next Add or Reset.
func (g *GroupBuilder) Plaintext() []byte { return g.plain }

// Reset empties the group, keeping its buffers.
func (g *GroupBuilder) Reset() {
	g.plain, g.members = g.plain[:0], g.members[:0]
}

// GroupNeeds bounds the pack bytes AddGroup takes for g stored in n
// bytes: what to pass to Fits.
func GroupNeeds(g *GroupBuilder, n int) int {
	return max(n, g.Size()) + max(g.Len()-1, 0)*EntrySize
}

// AddGroup appends the members of g, whose plaintext compressed to stored
// with codec (a Compressor's output for g.Plaintext()). A group the
// compressor kept raw, or whose frame does not give its content size, is
// stored as raw blobs, one per member; a group of one blob as a zstd blob;
// else one frame with an entry of codec Group per
// member. Members already in the pack get no second entry (their bytes
// stay in the frame, unreferenced). The writer trusts stored (DecodeBlob
// checks it on read).
func (w *Writer) AddGroup(t BlobType, g *GroupBuilder, codec Codec, stored []byte) error {
	if !t.valid() {
		return fmt.Errorf("pack: add group: unknown type %d", uint8(t))
	}
	switch {
	case g.Len() == 0:
		return nil
	case codec != None && codec != Zstd:
		return fmt.Errorf("pack: add group: codec %s", codec)
	case codec == Zstd && g.Len() == 1:
		_, err := w.AddStored(t, g.members[0].id, Zstd, int(g.members[0].size), stored)
		return err
	case codec == None || !holdsGroup(stored, g.Size()):
		// zstd writes no content size in a frame of under 256 bytes,
		// and decodeGroup needs it (it bounds the output): such a
		// small group is stored as raw members.
		off := 0
		for _, m := range g.members {
			if _, err := w.AddStored(t, m.id, None, int(m.size), g.plain[off:off+int(m.size)]); err != nil {
				return err
			}
			off += int(m.size)
		}
		return nil
	case len(stored) == 0 || len(stored) > MaxBlobSize:
		return fmt.Errorf("pack: add group: %d stored bytes", len(stored))
	}
	fresh := 0
	for _, m := range g.members {
		if _, dup := w.index[m.id]; !dup {
			fresh++
		}
	}
	if fresh == 0 {
		return nil
	}
	if len(w.entries)+fresh > MaxEntries {
		return fmt.Errorf("pack: add group: pack already holds %d blobs", len(w.entries))
	}
	w.reserve(len(stored) + (fresh-1)*EntrySize)
	start := uint64(len(w.buf))
	w.buf = append(w.buf, stored...)
	var rawOff uint32
	for _, m := range g.members {
		if _, dup := w.index[m.id]; !dup {
			w.index[m.id] = len(w.entries)
			w.entries = append(w.entries, Entry{ID: m.id, Offset: start, Length: uint32(len(stored)), RawLength: m.size, Type: t, Codec: Group, RawOffset: rawOff})
		}
		rawOff += m.size
	}
	return nil
}

// holdsGroup reports whether stored is a zstd frame whose header gives its
// content size as n, what decodeGroup requires of a group frame.
func holdsGroup(stored []byte, n int) bool {
	var h zstd.Header
	return h.Decode(stored) == nil && h.HasFCS && h.FrameContentSize == uint64(n)
}

// compressBound bounds the stored size of a blob of n bytes compressed by
// the writers' encoder: zstd's worst case is raw blocks with their headers.
func compressBound(n int) int { return n + n>>8 + 1<<10 }

// AddStored appends one blob already turned into its stored form by a
// Compressor: stored holds the bytes to store, codec how they decode, and
// rawLen the plaintext length, whose BLAKE3-256 must be blobID. The writer
// trusts all of this (DecodeBlob checks it on read). Duplicates are handled
// as by Add. stored is not retained.
func (w *Writer) AddStored(t BlobType, blobID id.ID, codec Codec, rawLen int, stored []byte) (Entry, error) {
	if e, done, err := w.check(t, blobID, rawLen); done || err != nil {
		return e, err
	}
	switch {
	case !codec.valid() || codec == Group:
		return Entry{}, fmt.Errorf("pack: add blob %s: codec %s (group members are added by AddGroup)", blobID.Short(), codec)
	case codec == None && len(stored) != rawLen:
		return Entry{}, fmt.Errorf("pack: add blob %s: %d raw bytes stored for a plaintext of %d", blobID.Short(), len(stored), rawLen)
	case codec == Zstd && (len(stored) == 0 || len(stored) > MaxBlobSize):
		return Entry{}, fmt.Errorf("pack: add blob %s: %d stored bytes", blobID.Short(), len(stored))
	}
	if w.checkIDs {
		e := Entry{ID: blobID, Length: uint32(len(stored)), RawLength: uint32(rawLen), Type: t, Codec: codec}
		if _, err := DecodeBlob(e, stored, nil); err != nil {
			return Entry{}, fmt.Errorf("pack: add blob %s: %w", blobID.Short(), err)
		}
	}
	return w.add(t, blobID, codec, rawLen, stored), nil
}

// check validates a blob about to be added; done reports a duplicate, whose
// entry is e.
func (w *Writer) check(t BlobType, blobID id.ID, rawLen int) (e Entry, done bool, err error) {
	if !t.valid() {
		return Entry{}, false, fmt.Errorf("pack: add blob %s: unknown type %d", blobID.Short(), uint8(t))
	}
	if rawLen > MaxBlobSize || rawLen < 0 {
		return Entry{}, false, fmt.Errorf("pack: add blob %s: %d bytes, more than the maximum %d", blobID.Short(), rawLen, MaxBlobSize)
	}
	if i, ok := w.index[blobID]; ok {
		e := w.entries[i]
		if e.Type != t {
			return Entry{}, false, fmt.Errorf("pack: add blob %s as %s: already added as %s", blobID.Short(), t, e.Type)
		}
		return e, true, nil
	}
	if len(w.entries) >= MaxEntries {
		return Entry{}, false, fmt.Errorf("pack: add blob %s: pack already holds %d blobs", blobID.Short(), MaxEntries)
	}
	return Entry{}, false, nil
}

func (w *Writer) add(t BlobType, blobID id.ID, codec Codec, rawLen int, stored []byte) Entry {
	w.reserve(len(stored))
	e := Entry{ID: blobID, Offset: uint64(len(w.buf)), Length: uint32(len(stored)), RawLength: uint32(rawLen), Type: t, Codec: codec}
	w.buf = append(w.buf, stored...)
	w.index[blobID] = len(w.entries)
	w.entries = append(w.entries, e)
	return e
}

// Len returns the number of blobs added since the last Finish.
func (w *Writer) Len() int { return len(w.entries) }

// Size returns the number of stored bytes added since the last Finish, not
// counting the footer that Finish will append (EntrySize per blob plus
// TrailerSize).
func (w *Writer) Size() int { return len(w.buf) }

// Finish appends the footer and trailer and returns the whole pack object,
// its id and its entries. The writer is then empty and may be reused; the
// returned slices belong to the caller and are never touched again by the
// writer, unless the caller hands data back with Recycle. Finish on an empty
// writer returns ErrEmpty.
func (w *Writer) Finish() (data []byte, packID id.ID, entries []Entry, err error) {
	if len(w.entries) == 0 {
		return nil, id.ID{}, nil, fmt.Errorf("pack: finish: %w", ErrEmpty)
	}
	data = appendFooter(w.buf, w.entries)
	entries = w.entries
	packID = id.Sum(data)

	w.buf = nil
	w.entries = nil
	clear(w.index)
	return data, packID, entries, nil
}

// appendFooter appends the entries and the trailer to dst; the magic is
// MagicGroups if an entry is a Group member.
func appendFooter(dst []byte, entries []Entry) []byte {
	dst = growCap(dst, len(entries)*EntrySize+TrailerSize)
	start := len(dst)
	magic := Magic
	for _, e := range entries {
		dst = appendEntry(dst, e)
		if e.Codec == Group {
			magic = MagicGroups
		}
	}
	crc := crc32.Checksum(dst[start:], castagnoli)
	dst = binary.LittleEndian.AppendUint32(dst, uint32(len(entries)))
	dst = binary.LittleEndian.AppendUint32(dst, crc)
	return append(dst, magic...)
}

func growCap(b []byte, n int) []byte {
	if cap(b)-len(b) >= n {
		return b
	}
	nb := make([]byte, len(b), len(b)+n)
	copy(nb, b)
	return nb
}

func appendEntry(dst []byte, e Entry) []byte {
	dst = append(dst, e.ID[:]...)
	dst = binary.LittleEndian.AppendUint64(dst, e.Offset)
	dst = binary.LittleEndian.AppendUint32(dst, e.Length)
	dst = binary.LittleEndian.AppendUint32(dst, e.RawLength)
	dst = append(dst, byte(e.Type), byte(e.Codec))
	dst = binary.LittleEndian.AppendUint32(dst, e.RawOffset)
	return append(dst, 0, 0)
}

// ParseTrailer parses the last TrailerSize bytes of a pack. It returns the
// number of entries and the length of the footer (count*EntrySize +
// TrailerSize), which is how many bytes to fetch from the end of the object
// and pass to ParseFooter. The crc can only be checked by ParseFooter.
func ParseTrailer(trailer []byte) (count int, footerLen int, err error) {
	if len(trailer) != TrailerSize {
		return 0, 0, fmt.Errorf("%w: trailer is %d bytes, want %d", ErrCorrupt, len(trailer), TrailerSize)
	}
	if m := string(trailer[8:]); m != Magic && m != MagicGroups {
		return 0, 0, fmt.Errorf("%w: bad magic %q", ErrCorrupt, trailer[8:])
	}
	n := binary.LittleEndian.Uint32(trailer[0:4])
	if n == 0 {
		return 0, 0, fmt.Errorf("%w: no entries", ErrCorrupt)
	}
	if n > MaxEntries {
		return 0, 0, fmt.Errorf("%w: %d entries, more than the maximum %d", ErrCorrupt, n, MaxEntries)
	}
	return int(n), int(n)*EntrySize + TrailerSize, nil
}

// ParseFooter parses and fully validates the footer of a pack of packSize
// bytes: footer must be exactly the last footerLen bytes of the object, as
// returned by ParseTrailer. Every violation of the format (see the package
// documentation) is reported as ErrCorrupt. The entries are returned in
// storage order.
func ParseFooter(footer []byte, packSize int64) ([]Entry, error) {
	if len(footer) < TrailerSize {
		return nil, fmt.Errorf("%w: footer is %d bytes, shorter than the trailer", ErrCorrupt, len(footer))
	}
	count, footerLen, err := ParseTrailer(footer[len(footer)-TrailerSize:])
	if err != nil {
		return nil, err
	}
	if footerLen != len(footer) {
		return nil, fmt.Errorf("%w: trailer says %d entries (footer of %d bytes), got %d footer bytes", ErrCorrupt, count, footerLen, len(footer))
	}
	if packSize < int64(footerLen) {
		return nil, fmt.Errorf("%w: footer of %d bytes in a pack of %d bytes", ErrCorrupt, footerLen, packSize)
	}
	raw := footer[:count*EntrySize]
	wantCRC := binary.LittleEndian.Uint32(footer[len(footer)-TrailerSize+4:])
	if got := crc32.Checksum(raw, castagnoli); got != wantCRC {
		return nil, fmt.Errorf("%w: footer crc %08x, trailer says %08x", ErrCorrupt, got, wantCRC)
	}
	groups := string(footer[len(footer)-8:]) == MagicGroups
	dataEnd := uint64(packSize) - uint64(footerLen)
	entries := make([]Entry, count)
	seen := make(map[id.ID]struct{}, count)
	var next uint64
	for i := range entries {
		b := raw[i*EntrySize : (i+1)*EntrySize]
		e, err := parseEntry(b)
		if err != nil {
			return nil, fmt.Errorf("%w: entry %d: %v", ErrCorrupt, i, err)
		}
		if e.Codec == Group && !groups {
			return nil, fmt.Errorf("%w: entry %d (blob %s) is a group member in a pack whose magic is %s", ErrCorrupt, i, e.ID.Short(), Magic)
		}
		if i > 0 && e.SameFrame(entries[i-1]) {
			// A later member of the frame before: after the one before it
			// in the frame's plaintext, without overlap.
			if prev := entries[i-1]; uint64(e.RawOffset) < uint64(prev.RawOffset)+uint64(prev.RawLength) {
				return nil, fmt.Errorf("%w: entry %d (blob %s) overlaps the member before it in its group", ErrCorrupt, i, e.ID.Short())
			}
		} else {
			if e.Offset != next {
				return nil, fmt.Errorf("%w: entry %d (blob %s) at offset %d, want %d", ErrCorrupt, i, e.ID.Short(), e.Offset, next)
			}
			next += uint64(e.Length)
			if next > dataEnd {
				return nil, fmt.Errorf("%w: entry %d (blob %s) ends at %d, past the end of the blobs at %d", ErrCorrupt, i, e.ID.Short(), next, dataEnd)
			}
		}
		if _, dup := seen[e.ID]; dup {
			return nil, fmt.Errorf("%w: entry %d: blob %s appears twice", ErrCorrupt, i, e.ID.Short())
		}
		seen[e.ID] = struct{}{}
		entries[i] = e
	}
	if next != dataEnd {
		return nil, fmt.Errorf("%w: blobs end at %d but the footer starts at %d", ErrCorrupt, next, dataEnd)
	}
	if groups && !slices.ContainsFunc(entries, func(e Entry) bool { return e.Codec == Group }) {
		return nil, fmt.Errorf("%w: magic %s but no group member", ErrCorrupt, MagicGroups)
	}
	return entries, nil
}

// parseEntry decodes and checks one entry on its own (not its offset).
func parseEntry(b []byte) (Entry, error) {
	var e Entry
	copy(e.ID[:], b[0:32])
	e.Offset = binary.LittleEndian.Uint64(b[32:40])
	e.Length = binary.LittleEndian.Uint32(b[40:44])
	e.RawLength = binary.LittleEndian.Uint32(b[44:48])
	e.Type = BlobType(b[48])
	e.Codec = Codec(b[49])
	e.RawOffset = binary.LittleEndian.Uint32(b[50:54])
	for _, r := range b[54:56] {
		if r != 0 {
			return e, fmt.Errorf("blob %s: reserved bytes not zero", e.ID.Short())
		}
	}
	if err := checkEntry(e); err != nil {
		return e, err
	}
	return e, nil
}

// checkEntry checks the fields of an entry that do not depend on its place.
func checkEntry(e Entry) error {
	if !e.Type.valid() {
		return fmt.Errorf("blob %s: unknown type %d", e.ID.Short(), uint8(e.Type))
	}
	if !e.Codec.valid() {
		return fmt.Errorf("blob %s: unknown codec %d", e.ID.Short(), uint8(e.Codec))
	}
	if e.Length > MaxBlobSize || e.RawLength > MaxBlobSize {
		return fmt.Errorf("blob %s: length %d / raw length %d over the maximum %d", e.ID.Short(), e.Length, e.RawLength, MaxBlobSize)
	}
	if e.Codec == None && e.Length != e.RawLength {
		return fmt.Errorf("blob %s: stored raw but length %d != raw length %d", e.ID.Short(), e.Length, e.RawLength)
	}
	if e.Codec != None && e.Length == 0 {
		return fmt.Errorf("blob %s: empty zstd frame", e.ID.Short())
	}
	if e.Codec != Group && e.RawOffset != 0 {
		return fmt.Errorf("blob %s: raw offset %d outside a group", e.ID.Short(), e.RawOffset)
	}
	if e.Codec == Group && (e.RawLength == 0 || uint64(e.RawOffset)+uint64(e.RawLength) > MaxGroupSize) {
		return fmt.Errorf("blob %s: group member at %d+%d, past the largest group (%d)", e.ID.Short(), e.RawOffset, e.RawLength, MaxGroupSize)
	}
	return nil
}

// initialTailRead is how much of the end of a pack ReadIndex fetches first;
// footers up to this size (about 145 entries) need a single read.
const initialTailRead = 8 << 10

// ReadIndex reads and validates the footer of the pack of size bytes in r,
// with at most two ReadAt calls, and returns its entries. Errors from r are
// returned wrapped; a pack shorter than size is ErrCorrupt.
func ReadIndex(r io.ReaderAt, size int64) ([]Entry, error) {
	if size < TrailerSize {
		return nil, fmt.Errorf("%w: pack of %d bytes is shorter than the trailer", ErrCorrupt, size)
	}
	tail := make([]byte, min(size, initialTailRead))
	if err := readFull(r, tail, size-int64(len(tail))); err != nil {
		return nil, err
	}
	_, footerLen, err := ParseTrailer(tail[len(tail)-TrailerSize:])
	if err != nil {
		return nil, err
	}
	if int64(footerLen) > size {
		return nil, fmt.Errorf("%w: footer of %d bytes in a pack of %d bytes", ErrCorrupt, footerLen, size)
	}
	var footer []byte
	if footerLen <= len(tail) {
		footer = tail[len(tail)-footerLen:]
	} else {
		footer = make([]byte, footerLen)
		if err := readFull(r, footer, size-int64(footerLen)); err != nil {
			return nil, err
		}
	}
	return ParseFooter(footer, size)
}

func readFull(r io.ReaderAt, p []byte, off int64) error {
	n, err := r.ReadAt(p, off)
	if n == len(p) {
		return nil
	}
	if err == nil || errors.Is(err, io.EOF) || errors.Is(err, io.ErrUnexpectedEOF) {
		return fmt.Errorf("%w: short read of %d bytes at %d, got %d", ErrCorrupt, len(p), off, n)
	}
	return fmt.Errorf("pack: read %d bytes at %d: %w", len(p), off, err)
}

// DecodeBlob turns the stored bytes of the blob described by e into its
// plaintext, appended to dst[:0] when dst has room for e.RawLength bytes (a
// new slice is allocated otherwise; dst must not overlap stored). It checks
// that the plaintext is exactly e.RawLength bytes and hashes to e.ID; every
// failure wraps ErrCorrupt and names the blob. For a Group member, stored
// is its whole frame. Memory use is bounded by e.RawLength (MaxGroupSize
// for a Group member) whatever the zstd frame claims. A reader of several
// members of a group uses a Decoder.
func DecodeBlob(e Entry, stored []byte, dst []byte) ([]byte, error) {
	var d Decoder
	return d.Decode(e, stored, dst)
}

// Decoder decodes blobs as DecodeBlob does, and keeps the plaintext of the
// last Group frame it decoded, so that the members of one group read one
// after the other cost one zstd decode. The frame is recognised by the
// address and length of the stored bytes and its offset in the pack; a
// member that does not hash to its id from a kept frame is decoded again
// from stored before it is called corrupt, so a caller that refills its
// buffer with another frame gets the right bytes, never stale ones. The
// zero value is ready; a Decoder is not safe for concurrent use.
type Decoder struct {
	key   frameKey
	plain []byte
}

type frameKey struct {
	ptr *byte
	n   int
	off uint64
}

// Decode is DecodeBlob, with the kept frame.
func (d *Decoder) Decode(e Entry, stored []byte, dst []byte) ([]byte, error) {
	if err := checkEntry(e); err != nil {
		return nil, fmt.Errorf("%w: %v", ErrCorrupt, err)
	}
	if len(stored) != int(e.Length) {
		return nil, fmt.Errorf("%w: blob %s: %d stored bytes, entry says %d", ErrCorrupt, e.ID, len(stored), e.Length)
	}
	raw := int(e.RawLength)
	if cap(dst) < raw {
		dst = make([]byte, 0, raw)
	}
	var out []byte
	switch e.Codec {
	case None:
		out = append(dst[:0], stored...)
	case Zstd:
		var err error
		out, err = decodeZstd(stored, dst[:0:raw])
		if err != nil {
			return nil, fmt.Errorf("%w: blob %s: %v", ErrCorrupt, e.ID, err)
		}
		// Decoding into dst[:0:raw] cannot grow past raw without failing, so
		// on success out shares dst's array: give back dst's full capacity.
		if len(out) > 0 && cap(dst) > 0 && &out[0] == &dst[:1][0] {
			out = dst[:len(out)]
		}
	case Group:
		return d.member(e, stored, dst)
	}
	if len(out) != raw {
		return nil, fmt.Errorf("%w: blob %s: plaintext is %d bytes, entry says %d", ErrCorrupt, e.ID, len(out), raw)
	}
	if got := id.Sum(out); got != e.ID {
		return nil, fmt.Errorf("%w: blob %s: plaintext hashes to %s", ErrCorrupt, e.ID, got)
	}
	return out, nil
}

// member decodes a Group member: its slice of the frame's plaintext, from
// the kept frame if stored is it, else decoded now.
func (d *Decoder) member(e Entry, stored, dst []byte) ([]byte, error) {
	key := frameKey{ptr: &stored[0], n: len(stored), off: e.Offset}
	for fresh := d.plain == nil || d.key != key; ; fresh = true {
		if fresh {
			d.key = frameKey{}
			plain, err := decodeGroup(stored, d.plain[:0])
			if err != nil {
				return nil, fmt.Errorf("%w: blob %s: %v", ErrCorrupt, e.ID, err)
			}
			d.plain, d.key = plain, key
		}
		end := uint64(e.RawOffset) + uint64(e.RawLength)
		if end > uint64(len(d.plain)) {
			if !fresh {
				continue
			}
			return nil, fmt.Errorf("%w: blob %s: at %d+%d in a group of %d bytes", ErrCorrupt, e.ID, e.RawOffset, e.RawLength, len(d.plain))
		}
		out := append(dst[:0], d.plain[e.RawOffset:end]...)
		if got := id.Sum(out); got != e.ID {
			if !fresh {
				continue
			}
			return nil, fmt.Errorf("%w: blob %s: plaintext hashes to %s", ErrCorrupt, e.ID, got)
		}
		return out, nil
	}
}

// decodeGroup decodes a Group frame into dst: it must say its content
// size, at most MaxGroupSize, and hold exactly that.
func decodeGroup(stored, dst []byte) ([]byte, error) {
	var h zstd.Header
	if err := h.Decode(stored); err != nil {
		return nil, fmt.Errorf("zstd header: %w", err)
	}
	if !h.HasFCS || h.FrameContentSize == 0 || h.FrameContentSize > MaxGroupSize {
		return nil, fmt.Errorf("zstd: group frame of %d bytes (content size given: %v), want 1..%d", h.FrameContentSize, h.HasFCS, MaxGroupSize)
	}
	n := int(h.FrameContentSize)
	if cap(dst) < n {
		dst = make([]byte, 0, n)
	}
	out, err := decodeZstd(stored, dst[:0:n])
	if err != nil {
		return nil, err
	}
	if len(out) != n {
		return nil, fmt.Errorf("zstd: group frame decoded to %d bytes, its header says %d", len(out), n)
	}
	return out, nil
}

// decodeZstd decodes one zstd frame into dst, whose capacity bounds the
// output. The header is checked first so that frames sandkeep never writes
// (skippable frames, dictionaries, a content size other than cap(dst)) are
// rejected before any decoding work.
func decodeZstd(stored, dst []byte) ([]byte, error) {
	var h zstd.Header
	if err := h.Decode(stored); err != nil {
		return nil, fmt.Errorf("zstd header: %w", err)
	}
	switch {
	case h.Skippable:
		return nil, errors.New("zstd: skippable frame")
	case h.DictionaryID != 0:
		return nil, fmt.Errorf("zstd: frame needs dictionary %d", h.DictionaryID)
	case h.HasFCS && h.FrameContentSize != uint64(cap(dst)):
		return nil, fmt.Errorf("zstd: frame holds %d bytes, entry says %d", h.FrameContentSize, cap(dst))
	}
	dec, err := getDecoder()
	if err != nil {
		return nil, fmt.Errorf("zstd decoder: %w", err)
	}
	out, err := dec.DecodeAll(stored, dst)
	if err != nil {
		return nil, fmt.Errorf("zstd: %w", err)
	}
	return out, nil
}
