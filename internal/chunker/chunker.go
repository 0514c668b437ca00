// Package chunker splits byte streams into content-defined chunks with
// FastCDC (Xia et al., "The Design of Fast Content-Defined Chunking for
// Data Deduplication Based Storage Systems", IEEE TPDS 2020).
//
// # Algorithm
//
// A Gear rolling hash is computed over the data:
//
//	fp = fp<<1 + gear[b]
//
// for every byte b, where gear is a fixed table of 256 pseudo-random 64-bit
// words (generated once with splitmix64 from the seed "sandkeep", see
// gear.go). Because every step shifts the hash left by one, a byte stops
// influencing the hash 64 bytes after it was added: the hash after byte i,
//
//	h(i) = sum over k in 0..63 of gear[data[i-k]] << k   (mod 2^64),
//
// is a function of the window data[i-63..i] only, and its bits 0..62 of
// data[i-62..i]. A chunk may end after byte i when the masked bits of h(i)
// are all zero:
//
//	h(i) & mask == 0
//
// The masks are runs of high bits ending at bit 62 (bit 63 is left out for
// the two-bytes-at-a-time loop, see below): high bits are the best mixed
// (carries flow upwards) and depend on the most bytes, 42 to 63 of them for
// the default masks.
//
// Chunks are never shorter than Params.Min (hashing of a chunk starts just
// far enough before Min to fill the window at Min: FastCDC's sub-minimum
// cut-point skipping) and never longer than Params.Max (a chunk that reaches
// Max bytes without a cut point is cut there).
//
// # Normalized chunking
//
// FastCDC's normalized chunking, level 2, pulls chunk sizes towards
// Params.Avg: while the chunk is shorter than Avg, the hash must match a
// harder mask of log2(Avg)+2 bits; from Avg bytes on, an easier mask of
// log2(Avg)-2 bits. With the default Avg of 1 MiB (2^20) these are 22 bits,
// 0x7ffffe0000000000 (a cut point every 4 MiB of random data on average),
// before Avg, and 18 bits, 0x7fffe00000000000 (every 256 KiB), after it. The
// easy mask's bits are a subset of the hard mask's. On random data with
// DefaultParams the mean chunk is about 1.1 MiB.
//
// Precisely: the first chunk of data has the smallest length L in [Min, Max]
// such that h(L-1)&mask(L) == 0, where mask(L) is the hard mask when L < Avg
// and the easy mask otherwise, with h computed over the chunk's own bytes
// (Min >= 64, so the window at L-1 never reaches before the chunk). If
// there is no such L, the chunk has length Max, or, at the end of the stream,
// all the remaining bytes.
//
// The inner loop uses FastCDC 2020's "rolling two bytes each time": with a
// second table gearLS = gear<<1, two steps become fp<<2 + gearLS[b0], tested
// against mask<<1, then + gear[b1], tested against mask. That only reorders
// the arithmetic (and is why the masks avoid bit 63). Since h(i) depends on
// a fixed window, the loop also hashes two adjacent 8 KiB blocks at once, as
// two independent dependency chains, which the CPU overlaps. The result is
// identical to the byte-at-a-time definition above, which the tests check.
//
// # Compatibility
//
// Chunk boundaries are a compatibility contract: deduplication against data
// already stored works only if the same content is cut at the same places.
// The gear table, the masks, the window and the definition above must never
// change (nor DefaultParams, for existing repositories); tests pin a checksum
// of the table and the cut points of fixed pseudo-random inputs. A different
// algorithm would need a new repository format version.
package chunker

import (
	"errors"
	"fmt"
	"io"
	"math/bits"
)

// Params are the chunk size bounds, in bytes. Changing them for an existing
// repository changes every chunk boundary.
type Params struct {
	// Min is the smallest chunk length, except for the last chunk of a
	// stream (so a stream shorter than Min is one chunk). At least
	// MinSizeLimit.
	Min int
	// Avg is the target average chunk length, a power of two, at least Min.
	// It chooses the normalized masks; the mean chunk size on random data
	// comes out somewhat above it (about 1.1*Avg with Min = Avg/4).
	Avg int
	// Max is the largest chunk length, at least Avg and at most MaxSizeLimit.
	Max int
}

// DefaultParams are the chunk size bounds sandkeep uses: 256 KiB minimum,
// 1 MiB average, 4 MiB maximum.
var DefaultParams = Params{Min: 256 << 10, Avg: 1 << 20, Max: 4 << 20}

const (
	// MinSizeLimit is the smallest allowed Params.Min: the hash window is 64
	// bytes, so a chunk of Min bytes holds a whole window.
	MinSizeLimit = 64
	// MaxSizeLimit is the largest allowed Params.Max, 64 MiB.
	MaxSizeLimit = 64 << 20
)

// ErrInvalidParams is returned (wrapped) by Params.Validate and Chunker.Next
// for unusable chunk size bounds.
var ErrInvalidParams = errors.New("chunker: invalid params")

// Validate reports whether p is usable: MinSizeLimit <= Min <= Avg <= Max <=
// MaxSizeLimit, and Avg a power of two. The error wraps ErrInvalidParams.
func (p Params) Validate() error {
	switch {
	case p.Min < MinSizeLimit:
		return fmt.Errorf("%w: Min %d is below %d", ErrInvalidParams, p.Min, MinSizeLimit)
	case p.Avg < p.Min:
		return fmt.Errorf("%w: Avg %d is below Min %d", ErrInvalidParams, p.Avg, p.Min)
	case p.Max < p.Avg:
		return fmt.Errorf("%w: Max %d is below Avg %d", ErrInvalidParams, p.Max, p.Avg)
	case p.Max > MaxSizeLimit:
		return fmt.Errorf("%w: Max %d is above %d", ErrInvalidParams, p.Max, MaxSizeLimit)
	case p.Avg&(p.Avg-1) != 0:
		return fmt.Errorf("%w: Avg %d is not a power of two", ErrInvalidParams, p.Avg)
	}
	return nil
}

// masks returns the hard mask (used for chunk lengths below Avg) and the easy
// mask (from Avg on): log2(Avg)+2 and log2(Avg)-2 bits, ending at bit 62.
// p must be valid, so 6 <= log2(Avg) <= 26.
func (p Params) masks() (hard, easy uint64) {
	b := bits.TrailingZeros64(uint64(p.Avg))
	return topMask(b + 2), topMask(b - 2)
}

// topMask returns n one bits at positions 62, 61, ..., 63-n.
func topMask(n int) uint64 {
	return (1<<n - 1) << (63 - n)
}

// Cut returns the length of the first chunk of data.
//
// If data holds a cut point (see the package documentation) at or before
// Max bytes, Cut returns its length; if it holds none and is at least Max
// bytes long, Cut returns Max. Otherwise the answer depends on final, which
// tells whether data is all that is left of the stream: if final, the chunk
// is the whole of data (in particular when data is shorter than Min); if not,
// Cut returns 0, meaning more data is needed to decide. Cut(nil, p, true) is 0.
//
// Cut looks at no more than the first Max bytes of data. Splitting a stream
// by calling Cut repeatedly on what is left gives the same chunks as a
// Chunker. Cut panics if p is invalid (see Params.Validate).
func Cut(data []byte, p Params, final bool) int {
	if err := p.Validate(); err != nil {
		panic(err.Error())
	}
	return cut(data, p, 0, final)
}

// cut is Cut with valid p, without validation. The first "from" bytes of data
// are known to contain no cut point: no chunk length L <= from qualifies (the
// data was scanned before, when it ended there).
func cut(data []byte, p Params, from int, final bool) int {
	n := len(data)
	if n < p.Min {
		if final {
			return n
		}
		return 0
	}
	hard, easy := p.masks()
	// Chunk length L ends at byte index i = L-1. Check L in [lo+1, end].
	lo := max(p.Min-1, from)
	end := min(n, p.Max)
	if lo < p.Avg-1 {
		if i := scan(data, lo, min(p.Avg-1, end), hard); i >= 0 {
			return i + 1
		}
	}
	if i := scan(data, max(lo, p.Avg-1), end, easy); i >= 0 {
		return i + 1
	}
	if n >= p.Max {
		return p.Max
	}
	if final {
		return n
	}
	return 0
}

// scan returns the smallest i in [lo, hi) such that h(i)&mask == 0, where
// h(i) is the Gear hash of the window data[i-63..i], or -1 if there is none.
// It requires 63 <= lo, hi <= len(data) and mask>>63 == 0.
//
// Its three loops compute the same hashes and differ only in speed. The
// byte loop at the end is the definition. The 8-bytes loop rolls two bytes
// per step, as in the FastCDC 2020 paper: with gearLS[b] = gear[b]<<1 and
// maskLS = mask<<1,
//
//	fp<<2 + gearLS[b0] = (fp<<1 + gear[b0]) << 1 = h(i)<<1
//	h(i)<<1 + gear[b1] = h(i+1)
//
// so testing the first against maskLS tests h(i) against mask (bit 63 of
// h(i) is lost, which is why the masks leave it out), and a pair of bytes
// costs one LEA and one ADD on the loop-carried chain. The lanes loop runs
// two such chains at once over two adjacent blocks of laneBlock bytes; the
// second one starts with its own 63-byte warm-up, as the masked bits of h
// depend on the last 63 bytes only.
//
// The fast loops do not locate a match exactly: they stop at the start of
// the 8-byte group holding it (in the first block, for lanes) and leave the
// rest to the slower loops, which stop at the same match or, for a match in
// the second block, scan on to it.
func scan(data []byte, lo, hi int, mask uint64) int {
	if lo >= hi {
		return -1
	}
	data = data[:hi]
	// Warm up: after these 63 bytes fp equals h(lo-1) except in bit 63,
	// which the next shift discards, so h(lo) below is exact.
	var fp uint64
	for _, b := range data[lo-63 : lo] {
		fp = fp<<1 + gear[b]
	}
	i := lo
	for i+2*laneBlock <= len(data) {
		p := (*[2 * laneBlock]byte)(data[i:])
		var fb uint64
		for _, b := range p[laneBlock-63 : laneBlock] {
			fb = fb<<1 + gear[b]
		}
		j, fa, fb := lanes(p, fp, fb, mask)
		if j < laneBlock {
			i += j
			fp = fa
			break
		}
		i += 2 * laneBlock
		fp = fb
	}
	maskLS := mask << 1
	for ; i <= len(data)-8; i += 8 {
		b := (*[8]byte)(data[i:])
		f := fp<<2 + gearLS[b[0]]
		if f&maskLS == 0 {
			break
		}
		f += gear[b[1]]
		if f&mask == 0 {
			break
		}
		f = f<<2 + gearLS[b[2]]
		if f&maskLS == 0 {
			break
		}
		f += gear[b[3]]
		if f&mask == 0 {
			break
		}
		f = f<<2 + gearLS[b[4]]
		if f&maskLS == 0 {
			break
		}
		f += gear[b[5]]
		if f&mask == 0 {
			break
		}
		f = f<<2 + gearLS[b[6]]
		if f&maskLS == 0 {
			break
		}
		f += gear[b[7]]
		if f&mask == 0 {
			break
		}
		fp = f
	}
	for ; i < len(data); i++ {
		fp = fp<<1 + gear[data[i]]
		if fp&mask == 0 {
			return i
		}
	}
	return -1
}

// laneBlock is the block size of lanes. A match costs at most two blocks of
// slower scanning, and each pair of blocks one 63-byte warm-up.
const laneBlock = 8 << 10

// lanes rolls the hash through the two halves of p at once, from hashes fa
// and fb before each half, 8 bytes at a time (two per step, see scan). If
// some h matches mask in the 8-byte groups at offset j of either half, it
// returns that j with the hashes before those groups; otherwise it returns
// laneBlock and the hashes at the ends of the halves.
func lanes(p *[2 * laneBlock]byte, fa, fb, mask uint64) (int, uint64, uint64) {
	maskLS := mask << 1
	a := (*[laneBlock]byte)(p[:laneBlock])
	b := (*[laneBlock]byte)(p[laneBlock:])
	for j := 0; j <= laneBlock-8; j += 8 {
		x := (*[8]byte)(a[j:])
		y := (*[8]byte)(b[j:])
		f := fa<<2 + gearLS[x[0]]
		g := fb<<2 + gearLS[y[0]]
		if f&maskLS == 0 || g&maskLS == 0 {
			return j, fa, fb
		}
		f += gear[x[1]]
		g += gear[y[1]]
		if f&mask == 0 || g&mask == 0 {
			return j, fa, fb
		}
		f = f<<2 + gearLS[x[2]]
		g = g<<2 + gearLS[y[2]]
		if f&maskLS == 0 || g&maskLS == 0 {
			return j, fa, fb
		}
		f += gear[x[3]]
		g += gear[y[3]]
		if f&mask == 0 || g&mask == 0 {
			return j, fa, fb
		}
		f = f<<2 + gearLS[x[4]]
		g = g<<2 + gearLS[y[4]]
		if f&maskLS == 0 || g&maskLS == 0 {
			return j, fa, fb
		}
		f += gear[x[5]]
		g += gear[y[5]]
		if f&mask == 0 || g&mask == 0 {
			return j, fa, fb
		}
		f = f<<2 + gearLS[x[6]]
		g = g<<2 + gearLS[y[6]]
		if f&maskLS == 0 || g&maskLS == 0 {
			return j, fa, fb
		}
		f += gear[x[7]]
		g += gear[y[7]]
		if f&mask == 0 || g&mask == 0 {
			return j, fa, fb
		}
		fa, fb = f, g
	}
	return laneBlock, fa, fb
}

// gearLS is gear shifted left by one bit, for the two-bytes-at-a-time loop.
var gearLS = func() (t [256]uint64) {
	for i, g := range gear {
		t[i] = g << 1
	}
	return t
}()

// Chunker splits a stream read from an io.Reader into content-defined
// chunks, the same ones as repeated calls of Cut. Its buffer (Max plus a
// read size of Max clamped to [64 KiB, 1 MiB]: 5 MiB with DefaultParams) is
// allocated once by New and reused across Reset. A Chunker is not safe for
// concurrent use.
type Chunker struct {
	r       io.Reader
	p       Params
	invalid error // Params.Validate error, permanent
	err     error // read error, sticky until Reset
	buf     []byte
	start   int   // buf[start:end] is read but not yet returned
	end     int   // end of the data read into buf
	scanned int   // buf[start:start+scanned] holds no cut point
	eof     bool  // r has returned io.EOF
	off     int64 // stream offset of buf[start]
	ready   int   // > 0: the length of the next chunk, found by Ready
}

// bufferSize is the Chunker buffer length for valid p: Max plus a read size
// of Max clamped to [64 KiB, 1 MiB]. Data of an unfinished chunk (less than
// Max bytes) is moved to the front only when the buffer end is reached; it
// is shorter than the average chunk most of the time, so a refill reads
// several MiB and moves far less (and memmove is several times faster
// than finding cut points). A larger read size would cost the agent, which
// keeps a Chunker while it reads a large file, memory for no measurable
// speed.
func bufferSize(p Params) int {
	return p.Max + min(max(p.Max, 64<<10), 1<<20)
}

// New returns a Chunker that splits the stream r with params p. If p is
// invalid, New does not panic: the Chunker's Next returns the
// Params.Validate error.
func New(r io.Reader, p Params) *Chunker {
	c := &Chunker{p: p}
	if err := p.Validate(); err != nil {
		c.invalid = err
	} else {
		c.buf = make([]byte, bufferSize(p))
	}
	c.Reset(r)
	return c
}

// Reset makes c split the stream r (which must not be nil) from its
// beginning, reusing c's buffer. Chunks returned before are invalidated.
func (c *Chunker) Reset(r io.Reader) {
	c.r = r
	c.err = nil
	c.start, c.end, c.scanned = 0, 0, 0
	c.eof = false
	c.off = 0
	c.ready = 0
}

// Offset returns the position in the stream of the next chunk Next returns:
// the total length of the chunks returned since New or Reset.
func (c *Chunker) Offset() int64 { return c.off }

// errInvalidRead reports an io.Reader returning an impossible count.
var errInvalidRead = errors.New("chunker: reader returned invalid count")

// Next returns the next chunk of the stream. The slice aliases c's buffer
// and is valid only until the next call of Next or Reset. After the last
// chunk, Next returns (nil, io.EOF); an empty stream has no chunk at all, and
// a stream shorter than Min is one chunk. A read error other than io.EOF is
// returned as is (and again by later calls until Reset); invalid params give
// the Params.Validate error.
func (c *Chunker) Next() ([]byte, error) {
	if c.invalid != nil {
		return nil, c.invalid
	}
	for {
		if c.err != nil {
			return nil, c.err
		}
		data := c.buf[c.start:c.end]
		n := c.ready
		if n == 0 {
			n = cut(data, c.p, c.scanned, c.eof)
		}
		c.ready = 0
		if n > 0 {
			c.start += n
			c.scanned = 0
			c.off += int64(n)
			return data[:n:n], nil
		}
		if c.eof {
			return nil, io.EOF
		}
		// No cut point in data, which is shorter than Max: read more.
		c.scanned = len(data)
		if c.end == len(c.buf) {
			copy(c.buf, data)
			c.start, c.end = 0, len(data)
		}
		c.fill()
	}
}

// Ready reports whether the next call of Next returns without reading from
// the stream, and so without overwriting the buffer: the chunks Next
// returned before stay valid until a call of Next made when Ready is false
// (or Reset, once the stream is read again). A caller that hands chunks to
// another goroutine without copying them waits for it to be done with them
// only when Ready is false. Ready does the search for the next cut point
// that the next call of Next then skips.
func (c *Chunker) Ready() bool {
	if c.invalid != nil || c.err != nil || c.eof || c.ready > 0 {
		return true
	}
	data := c.buf[c.start:c.end]
	if n := cut(data, c.p, c.scanned, false); n > 0 {
		c.ready = n
		return true
	}
	// No cut point in data, which is shorter than Max: Next must read.
	c.scanned = len(data)
	return false
}

// fill reads into the free end of the buffer until it is full, r reports
// io.EOF, or r fails.
func (c *Chunker) fill() {
	empty := 0
	for c.end < len(c.buf) {
		n, err := c.r.Read(c.buf[c.end:])
		if n < 0 || n > len(c.buf)-c.end {
			c.err = errInvalidRead
			return
		}
		c.end += n
		switch {
		case err == io.EOF:
			c.eof = true
			return
		case err != nil:
			c.err = err
			return
		case n == 0:
			if empty++; empty >= 100 {
				c.err = io.ErrNoProgress
				return
			}
		default:
			empty = 0
		}
	}
}
