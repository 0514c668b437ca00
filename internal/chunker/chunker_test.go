package chunker

import (
	"bytes"
	"crypto/sha256"
	"encoding/binary"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"slices"
	"testing"
	"testing/iotest"

	"github.com/sandkeep/sandkeep/internal/id"
)

// smallParams are tiny bounds that produce many chunks from little data.
var smallParams = Params{Min: 64, Avg: 256, Max: 1024}

// splitmix64 is the generator of the gear table, also used for test data
// (math/rand's streams are not promised to stay the same across Go releases).
type splitmix64 uint64

func (s *splitmix64) next() uint64 {
	*s += 0x9e3779b97f4a7c15
	z := uint64(*s)
	z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9
	z = (z ^ (z >> 27)) * 0x94d049bb133111eb
	return z ^ (z >> 31)
}

// randBytes returns n pseudo-random bytes determined by seed.
func randBytes(seed uint64, n int) []byte {
	s := splitmix64(seed)
	b := make([]byte, (n+7)&^7)
	for i := 0; i < len(b); i += 8 {
		binary.LittleEndian.PutUint64(b[i:], s.next())
	}
	return b[:n]
}

// refCut is the byte-at-a-time definition of Cut from the package doc, with
// the masks written out independently of Params.masks.
func refCut(data []byte, p Params, final bool) int {
	if len(data) < p.Min {
		if final {
			return len(data)
		}
		return 0
	}
	log2 := 0
	for 1<<log2 < p.Avg {
		log2++
	}
	var hard, easy uint64 // bits 62 down
	for k := 0; k < log2+2; k++ {
		hard |= 1 << (62 - k)
	}
	for k := 0; k < log2-2; k++ {
		easy |= 1 << (62 - k)
	}
	var fp uint64
	for i := 0; i < len(data) && i < p.Max; i++ {
		fp = fp<<1 + gear[data[i]]
		l := i + 1
		if l < p.Min {
			continue
		}
		m := easy
		if l < p.Avg {
			m = hard
		}
		if fp&m == 0 {
			return l
		}
	}
	if len(data) >= p.Max {
		return p.Max
	}
	if final {
		return len(data)
	}
	return 0
}

// splitWith returns the chunk lengths of data by repeated calls of cut.
func splitWith(data []byte, p Params, cut func([]byte, Params, bool) int) []int {
	var lens []int
	for len(data) > 0 {
		n := cut(data, p, true)
		if n <= 0 || n > len(data) {
			panic(fmt.Sprintf("cut returned %d for %d bytes", n, len(data)))
		}
		lens = append(lens, n)
		data = data[n:]
	}
	return lens
}

// chunkAll returns copies of all chunks of r.
func chunkAll(t testing.TB, r io.Reader, p Params) [][]byte {
	t.Helper()
	c := New(r, p)
	var out [][]byte
	for {
		b, err := c.Next()
		if err == io.EOF {
			if b != nil {
				t.Fatalf("Next returned %d bytes with io.EOF", len(b))
			}
			return out
		}
		if err != nil {
			t.Fatal(err)
		}
		if len(b) == 0 {
			t.Fatal("Next returned an empty chunk")
		}
		out = append(out, bytes.Clone(b))
	}
}

func lengths(chunks [][]byte) []int {
	lens := make([]int, len(chunks))
	for i, c := range chunks {
		lens[i] = len(c)
	}
	return lens
}

// checkChunks verifies that chunks concatenate to data and respect p.
func checkChunks(t testing.TB, data []byte, chunks [][]byte, p Params) {
	t.Helper()
	if got := bytes.Join(chunks, nil); !bytes.Equal(got, data) {
		t.Fatalf("chunks concatenate to %d bytes that differ from the %d input bytes", len(got), len(data))
	}
	if len(data) == 0 && len(chunks) != 0 {
		t.Fatalf("empty input gave %d chunks", len(chunks))
	}
	if len(data) > 0 && len(data) < p.Min && len(chunks) != 1 {
		t.Fatalf("input of %d < Min bytes gave %d chunks", len(data), len(chunks))
	}
	for i, c := range chunks {
		last := i == len(chunks)-1
		if len(c) > p.Max || len(c) == 0 || (!last && len(c) < p.Min) {
			t.Fatalf("chunk %d/%d has length %d, outside [%d, %d]", i, len(chunks), len(c), p.Min, p.Max)
		}
	}
}

// chunkIDs returns the ids of all chunks of data, via a Chunker.
func chunkIDs(t testing.TB, data []byte, p Params) []id.ID {
	t.Helper()
	c := New(bytes.NewReader(data), p)
	var ids []id.ID
	for {
		b, err := c.Next()
		if err == io.EOF {
			return ids
		}
		if err != nil {
			t.Fatal(err)
		}
		ids = append(ids, id.Sum(b))
	}
}

// countNew returns how many of b's ids are not in a.
func countNew(a, b []id.ID) int {
	set := make(map[id.ID]bool, len(a))
	for _, x := range a {
		set[x] = true
	}
	n := 0
	for _, x := range b {
		if !set[x] {
			n++
		}
	}
	return n
}

func TestGearTableMatchesGenerator(t *testing.T) {
	s := splitmix64(gearSeed)
	for i := range gear {
		if want := s.next(); gear[i] != want {
			t.Fatalf("gear[%d] = %#x, splitmix64 from the seed gives %#x", i, gear[i], want)
		}
	}
}

func TestGearTableChecksum(t *testing.T) {
	// Pinned: changing the table breaks deduplication against every
	// existing repository.
	const want = "2f4c337e8ecf7faa32b1ecde9edd57f37b0a42c94708693398b9a6dafb0ca970"
	var buf [8 * 256]byte
	for i, g := range gear {
		binary.LittleEndian.PutUint64(buf[8*i:], g)
	}
	sum := sha256.Sum256(buf[:])
	if got := hex.EncodeToString(sum[:]); got != want {
		t.Fatalf("sha256 of the gear table = %s, pinned %s", got, want)
	}
}

func TestMasks(t *testing.T) {
	hard, easy := DefaultParams.masks()
	if hard != 0x7ffffe0000000000 || easy != 0x7fffe00000000000 {
		t.Fatalf("DefaultParams masks = %#x, %#x; want 22 and 18 bits from bit 62 down", hard, easy)
	}
	for _, avg := range []int{64, 1 << 10, 1 << 20, 64 << 20} {
		hard, easy := Params{Min: 64, Avg: avg, Max: avg}.masks()
		log2 := log2Of(avg)
		if n := ones(hard); n != log2+2 || hard>>62 != 1 {
			t.Errorf("Avg %d: hard mask %#x", avg, hard)
		}
		if n := ones(easy); n != log2-2 || easy>>62 != 1 || easy&hard != easy {
			t.Errorf("Avg %d: easy mask %#x", avg, easy)
		}
	}
}

func log2Of(n int) int {
	b := 0
	for 1<<b < n {
		b++
	}
	return b
}

func ones(x uint64) int {
	n := 0
	for ; x != 0; x &= x - 1 {
		n++
	}
	return n
}

// rollingHashes returns the Gear hash after each byte of data, hashed from
// the start: for i >= 63 it is h(i).
func rollingHashes(data []byte) []uint64 {
	hs := make([]uint64, len(data))
	var fp uint64
	for i, b := range data {
		fp = fp<<1 + gear[b]
		hs[i] = fp
	}
	return hs
}

func TestScan(t *testing.T) {
	// Every match of every mask from several starts and ends, so that
	// matches fall in both lanes, in the 8-bytes loop and in the byte loop,
	// next to block and group boundaries.
	data := randBytes(5, 6*laneBlock+1000)
	hs := rollingHashes(data)
	scanRef := func(lo, hi int, mask uint64) int {
		for i := lo; i < hi; i++ {
			if hs[i]&mask == 0 {
				return i
			}
		}
		return -1
	}
	los := []int{63, 64, 65, 70, 71, 1000, laneBlock - 5, laneBlock + 63, 2*laneBlock - 1, 2 * laneBlock, 2*laneBlock + 3}
	for _, bits := range []int{1, 4, 8, 10, 11, 12, 13, 14, 15, 16, 20, 28} {
		mask := topMask(bits)
		for _, lo := range los {
			for _, hi := range []int{len(data), lo + 1, lo + 8, lo + 9, lo + 2*laneBlock - 1, lo + 2*laneBlock, lo + 2*laneBlock + 7, lo + 4*laneBlock + 3} {
				hi = min(hi, len(data))
				for from := lo; from < hi; {
					got, want := scan(data, from, hi, mask), scanRef(from, hi, mask)
					if got != want {
						t.Fatalf("scan(lo=%d, hi=%d, %d bits) = %d, want %d", from, hi, bits, got, want)
					}
					if got < 0 {
						break
					}
					from = got + 1
				}
			}
		}
	}
}

// craft returns n bytes whose window hashes h(i), i >= 63, match mask
// exactly at the given positions. mask must have few bits (4 is plenty).
func craft(t *testing.T, n int, mask uint64, hits ...int) []byte {
	t.Helper()
	want := make(map[int]bool)
	for _, h := range hits {
		want[h] = true
	}
	s := splitmix64(uint64(n) + uint64(len(hits)))
	data := make([]byte, n)
	var fp uint64
	for i := range data {
		for try := 0; ; try++ {
			if try == 4096 {
				t.Fatalf("cannot craft a byte at %d", i)
			}
			b := byte(s.next())
			h := fp<<1 + gear[b]
			if i < 63 || (h&mask == 0) == want[i] {
				data[i], fp = b, h
				break
			}
		}
	}
	return data
}

func TestScanCrafted(t *testing.T) {
	// A single match, or two, placed at the edges of lanes and groups.
	const lo, lb = 63, laneBlock
	mask := topMask(4)
	tests := [][]int{
		{0}, {1}, {7}, {8}, {9}, {lb - 8}, {lb - 1},
		{lb}, {lb + 1}, {lb + 7}, {lb + 8}, {2*lb - 9}, {2*lb - 8}, {2*lb - 1},
		{2 * lb}, {3*lb - 1}, {3 * lb}, {3*lb + 5}, {4*lb - 1}, {4 * lb}, {4*lb + 3},
		{lb + 16, 100}, {lb + 16, 23}, {lb + 16, 16}, {lb + 16, 24}, {lb + 3, 5}, {lb + 5, 3},
		{lb + 100, lb - 1}, {3*lb + 8, 2*lb + 8}, {},
	}
	for k := range 16 { // every byte of the first two groups of each block
		tests = append(tests, []int{k}, []int{lb + k}, []int{2*lb + k}, []int{3*lb + k}, []int{lb + k, k + 1})
	}
	for _, offs := range tests {
		var hits []int
		for _, o := range offs {
			hits = append(hits, lo+o)
		}
		data := craft(t, lo+4*lb+40, mask, hits...)
		want := -1
		if len(hits) > 0 {
			want = slices.Min(hits)
		}
		for _, hi := range []int{len(data), want + 1, want + 2} {
			if hi <= lo || hi > len(data) {
				continue
			}
			if got := scan(data, lo, hi, mask); got != want {
				t.Errorf("matches at %v, hi %d: scan = %d, want %d", hits, hi, got, want)
			}
		}
		if want >= lo+1 {
			if got := scan(data, lo, want, mask); got != -1 {
				t.Errorf("matches at %v, hi %d: scan = %d, want -1", hits, want, got)
			}
		}
	}
}

func TestPinnedCutPoints(t *testing.T) {
	// Pinned chunk lengths of fixed pseudo-random inputs. If this test
	// fails, chunk boundaries changed: that breaks deduplication against
	// existing repositories and must not happen.
	tests := []struct {
		name string
		p    Params
		data []byte
		want []int
	}{
		{"default", DefaultParams, randBytes(1, 24<<20), []int{
			1692707, 1264643, 562520, 1191753, 2123182, 1138924, 1203652,
			1130683, 1316940, 931130, 329378, 1204759, 1639826, 267886,
			767815, 1243992, 1295169, 1232793, 1251817, 2122623, 1253632}},
		{"small", smallParams, randBytes(2, 8<<10), []int{
			268, 282, 142, 290, 359, 315, 266, 130, 363, 327, 338, 304, 297,
			287, 276, 381, 292, 83, 312, 274, 409, 276, 256, 331, 268, 263,
			305, 283, 215}},
		{"64KiB", Params{Min: 16 << 10, Avg: 64 << 10, Max: 256 << 10}, randBytes(3, 1<<20), []int{
			98351, 21887, 69503, 73303, 97941, 65775, 71692, 107884, 65648,
			81590, 69023, 71813, 89070, 26970, 35858, 2268}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := splitWith(tt.data, tt.p, Cut); !slices.Equal(got, tt.want) {
				t.Errorf("Cut chunk lengths\n got %#v\nwant %#v", got, tt.want)
			}
			if got := lengths(chunkAll(t, bytes.NewReader(tt.data), tt.p)); !slices.Equal(got, tt.want) {
				t.Errorf("Chunker chunk lengths\n got %#v\nwant %#v", got, tt.want)
			}
		})
	}
}

func TestValidate(t *testing.T) {
	tests := []struct {
		p  Params
		ok bool
	}{
		{DefaultParams, true},
		{smallParams, true},
		{Params{64, 64, 64}, true},
		{Params{Min: 1 << 20, Avg: 64 << 20, Max: 64 << 20}, true},
		{Params{}, false},
		{Params{63, 64, 64}, false},
		{Params{128, 64, 1024}, false},
		{Params{64, 256, 255}, false},
		{Params{64, 384, 1024}, false},
		{Params{64, 256, 64<<20 + 1}, false},
		{Params{64, 128 << 20, 128 << 20}, false},
		{Params{-1, 256, 1024}, false},
	}
	for _, tt := range tests {
		err := tt.p.Validate()
		if (err == nil) != tt.ok {
			t.Errorf("%+v.Validate() = %v, want ok=%v", tt.p, err, tt.ok)
		}
		if err != nil && !errors.Is(err, ErrInvalidParams) {
			t.Errorf("%+v.Validate() = %v, not wrapping ErrInvalidParams", tt.p, err)
		}
	}
}

func TestInvalidParams(t *testing.T) {
	p := Params{Min: 64, Avg: 100, Max: 1024}
	c := New(bytes.NewReader([]byte("hello")), p)
	for range 2 {
		if _, err := c.Next(); !errors.Is(err, ErrInvalidParams) {
			t.Fatalf("Next with invalid params: %v", err)
		}
		c.Reset(bytes.NewReader(nil))
	}
	defer func() {
		if recover() == nil {
			t.Fatal("Cut with invalid params did not panic")
		}
	}()
	Cut([]byte("hello"), p, true)
}

func TestCutSemantics(t *testing.T) {
	p := smallParams
	data := randBytes(7, 4096)
	first := refCut(data, p, true)
	if first < p.Min || first > p.Max {
		t.Fatalf("first chunk %d", first)
	}
	tests := []struct {
		name  string
		data  []byte
		final bool
		want  int
	}{
		{"nil final", nil, true, 0},
		{"nil", nil, false, 0},
		{"short final", data[:p.Min-1], true, p.Min - 1},
		{"short", data[:p.Min-1], false, 0},
		{"up to cut", data[:first], false, first},
		{"before cut", data[:first-1], false, 0},
		{"before cut final", data[:first-1], true, first - 1},
		{"all", data, false, first},
		{"all final", data, true, first},
	}
	for _, tt := range tests {
		if got := Cut(tt.data, p, tt.final); got != tt.want {
			t.Errorf("%s: Cut(%d bytes, final=%v) = %d, want %d", tt.name, len(tt.data), tt.final, got, tt.want)
		}
	}
	// Without a cut point: Max bytes or more give Max.
	zeros := make([]byte, 3*p.Max)
	for _, n := range []int{p.Max - 1, p.Max, p.Max + 1, 3 * p.Max} {
		want := refCut(zeros[:n], p, false)
		if got := Cut(zeros[:n], p, false); got != want {
			t.Errorf("Cut(%d zeros) = %d, want %d", n, got, want)
		}
	}
}

// variableReader returns 1..7 bytes per Read, varying deterministically.
type variableReader struct {
	data []byte
	s    splitmix64
}

func (r *variableReader) Read(p []byte) (int, error) {
	if len(r.data) == 0 {
		return 0, io.EOF
	}
	n := min(int(r.s.next()%7)+1, len(p), len(r.data))
	copy(p, r.data[:n])
	r.data = r.data[n:]
	return n, nil
}

// zeroThenReader returns (0, nil) every other call.
type zeroThenReader struct {
	r    io.Reader
	flip bool
}

func (z *zeroThenReader) Read(p []byte) (int, error) {
	z.flip = !z.flip
	if z.flip {
		return 0, nil
	}
	return z.r.Read(p)
}

func TestSplitSizes(t *testing.T) {
	for _, p := range []Params{DefaultParams, smallParams, {Min: 64, Avg: 64, Max: 64}, {Min: 100, Avg: 128, Max: 128}, {Min: 512, Avg: 512, Max: 4096}} {
		sizes := []int{0, 1, 63, 64, 65, p.Min - 1, p.Min, p.Min + 1, p.Avg - 1, p.Avg, p.Avg + 1,
			p.Max - 1, p.Max, p.Max + 1, 2*p.Max - 1, 2 * p.Max, 2*p.Max + 1, 10 * p.Max}
		s := splitmix64(42)
		for range 4 {
			sizes = append(sizes, int(s.next()%uint64(12*p.Max)))
		}
		slices.Sort(sizes)
		for _, size := range slices.Compact(sizes) {
			t.Run(fmt.Sprintf("%d-%d-%d/%d", p.Min, p.Avg, p.Max, size), func(t *testing.T) {
				data := randBytes(uint64(size)^0xabcdef, size)
				chunks := chunkAll(t, bytes.NewReader(data), p)
				checkChunks(t, data, chunks, p)
				got := lengths(chunks)
				if cuts := splitWith(data, p, Cut); !slices.Equal(got, cuts) {
					t.Fatalf("Chunker lengths %v, repeated Cut %v", got, cuts)
				}
				if ref := splitWith(data, p, refCut); !slices.Equal(got, ref) {
					t.Fatalf("Chunker lengths %v, reference %v", got, ref)
				}
				readers := map[string]io.Reader{
					"Half":     iotest.HalfReader(bytes.NewReader(data)),
					"DataErr":  iotest.DataErrReader(bytes.NewReader(data)),
					"zeroThen": &zeroThenReader{r: iotest.HalfReader(bytes.NewReader(data))},
				}
				// Byte-wise readers are slow; small params cover large sizes.
				if size <= 2*p.Max+1 || p.Max < 1<<20 {
					readers["OneByte"] = iotest.OneByteReader(bytes.NewReader(data))
					readers["1to7"] = &variableReader{data: data, s: splitmix64(size)}
				}
				for name, r := range readers {
					if l := lengths(chunkAll(t, r, p)); !slices.Equal(l, got) {
						t.Fatalf("%s reader gives lengths %v, want %v", name, l, got)
					}
				}
			})
		}
	}
}

func TestLowEntropy(t *testing.T) {
	// Data with no cut points at all, and data with cut points everywhere.
	for _, p := range []Params{DefaultParams, smallParams} {
		for _, data := range [][]byte{make([]byte, 5*p.Max+17), bytes.Repeat([]byte("abc"), 3*p.Max)} {
			chunks := chunkAll(t, bytes.NewReader(data), p)
			checkChunks(t, data, chunks, p)
			if want := splitWith(data, p, refCut); !slices.Equal(lengths(chunks), want) {
				t.Fatalf("lengths %v, reference %v", lengths(chunks), want)
			}
		}
	}
}

// Ready does not change the chunks, and while it reports true the chunks
// returned before stay intact through the next call of Next: a caller may
// keep every chunk since the last time Ready reported false. Reads of odd
// sizes make the refills fall anywhere.
func TestReadyKeepsChunks(t *testing.T) {
	for _, p := range []Params{DefaultParams, smallParams} {
		data := randBytes(31, 7*p.Max+123)
		copy(data[2*p.Max:], bytes.Repeat([]byte{7}, p.Max+p.Max/2)) // no cut point: a chunk of Max
		want := lengths(chunkAll(t, bytes.NewReader(data), p))
		c := New(iotest.HalfReader(bytes.NewReader(data)), p)
		var kept [][]byte // chunks returned since Ready last reported false
		var keptAt []int  // their offsets in data
		var got []int
		off := 0
		for {
			if !c.Ready() {
				kept, keptAt = nil, nil
			}
			b, err := c.Next()
			for i, k := range kept {
				if !bytes.Equal(k, data[keptAt[i]:keptAt[i]+len(k)]) {
					t.Fatalf("chunk at %d overwritten although Ready reported true", keptAt[i])
				}
			}
			if err == io.EOF {
				break
			}
			if err != nil {
				t.Fatal(err)
			}
			kept, keptAt = append(kept, b), append(keptAt, off)
			got = append(got, len(b))
			off += len(b)
		}
		if !slices.Equal(got, want) {
			t.Fatalf("with Ready: lengths %v, want %v", got, want)
		}
		if off != len(data) {
			t.Fatalf("chunks cover %d bytes of %d", off, len(data))
		}
	}
}

func TestResetReusesBuffer(t *testing.T) {
	p := smallParams
	data := randBytes(9, 100<<10)
	c := New(bytes.NewReader(data), p)
	if len(c.buf) != bufferSize(p) {
		t.Fatalf("buffer %d bytes, want %d", len(c.buf), bufferSize(p))
	}
	buf := &c.buf[0]
	want := lengths(chunkAll(t, bytes.NewReader(data), p))
	r := bytes.NewReader(data)
	allocs := testing.AllocsPerRun(5, func() {
		r.Reset(data)
		c.Reset(r)
		i := 0
		for {
			b, err := c.Next()
			if err == io.EOF {
				break
			}
			if err != nil || len(b) != want[i] {
				panic(fmt.Sprintf("chunk %d: %d bytes, err %v", i, len(b), err))
			}
			i++
		}
		if c.Offset() != int64(len(data)) {
			panic("offset")
		}
	})
	if allocs != 0 {
		t.Errorf("%v allocations per stream after Reset", allocs)
	}
	if &c.buf[0] != buf {
		t.Error("buffer was reallocated")
	}
	if bufferSize(DefaultParams) != 5<<20 || bufferSize(Params{64, 1 << 20, 64 << 20}) != 65<<20 {
		t.Error("unexpected buffer sizes")
	}
}

func TestReadErrors(t *testing.T) {
	boom := errors.New("boom")
	data := randBytes(10, 10000)
	c := New(io.MultiReader(bytes.NewReader(data), iotest.ErrReader(boom)), smallParams)
	var err error
	for err == nil {
		_, err = c.Next()
	}
	if err != boom {
		t.Fatalf("got %v, want %v", err, boom)
	}
	if _, err := c.Next(); err != boom {
		t.Fatalf("error not sticky: %v", err)
	}
	c.Reset(bytes.NewReader(data))
	var got [][]byte
	for {
		b, err := c.Next()
		if err == io.EOF {
			break
		}
		if err != nil {
			t.Fatalf("after Reset: %v", err)
		}
		got = append(got, bytes.Clone(b))
	}
	checkChunks(t, data, got, smallParams)

	c.Reset(readerFunc(func([]byte) (int, error) { return 0, nil }))
	if _, err := c.Next(); err != io.ErrNoProgress {
		t.Fatalf("reader without progress: %v", err)
	}
}

type readerFunc func([]byte) (int, error)

func (f readerFunc) Read(p []byte) (int, error) { return f(p) }

func TestAverageSize(t *testing.T) {
	tests := []struct {
		p    Params
		size int
	}{
		{DefaultParams, 128 << 20},
		{Params{Min: 16 << 10, Avg: 64 << 10, Max: 256 << 10}, 64 << 20},
		{smallParams, 8 << 20},
	}
	for _, tt := range tests {
		data := randBytes(11, tt.size)
		lens := splitWith(data, tt.p, Cut)
		avg := float64(tt.size) / float64(len(lens))
		t.Logf("%+v: %d chunks, mean %.0f bytes (%.3f*Avg)", tt.p, len(lens), avg, avg/float64(tt.p.Avg))
		if r := avg / float64(tt.p.Avg); r < 0.75 || r > 1.25 {
			t.Errorf("%+v: mean chunk %.0f bytes, not within 25%% of Avg", tt.p, avg)
		}
	}
}

func TestShiftResistance(t *testing.T) {
	if testing.Short() {
		t.Skip("64 MiB")
	}
	p := DefaultParams
	data := randBytes(12, 64<<20)
	orig := chunkIDs(t, data, p)
	for _, pos := range []int{0, 1, 1000, p.Min - 1, p.Min + 3} {
		shifted := slices.Insert(slices.Clone(data), pos, 0x5a)
		ids := chunkIDs(t, shifted, p)
		if n := countNew(orig, ids); n == 0 || n > 2 {
			t.Errorf("inserting a byte at %d: %d new chunks of %d", pos, n, len(ids))
		}
		if n := countNew(ids, orig); n > 2 {
			t.Errorf("inserting a byte at %d: %d old chunks lost of %d", pos, n, len(orig))
		}
	}
}

func TestEditResistance(t *testing.T) {
	if testing.Short() {
		t.Skip("100 MiB")
	}
	p := DefaultParams
	data := randBytes(13, 100<<20)
	orig := chunkIDs(t, data, p)
	for _, pos := range []int{50 << 20, 50<<20 + 12345, len(data) - 1} {
		edited := slices.Clone(data)
		edited[pos] ^= 0xff
		ids := chunkIDs(t, edited, p)
		if n := countNew(orig, ids); n == 0 || n > 2 {
			t.Errorf("editing byte %d: %d new chunks of %d", pos, n, len(ids))
		}
		if n := countNew(ids, orig); n > 2 {
			t.Errorf("editing byte %d: %d old chunks lost of %d", pos, n, len(orig))
		}
	}
}

func FuzzChunker(f *testing.F) {
	f.Add([]byte{}, uint64(0), uint8(0))
	f.Add([]byte("hello, world"), uint64(1), uint8(1))
	f.Add(randBytes(1, 5000), uint64(2), uint8(0))
	f.Add(make([]byte, 3000), uint64(3), uint8(2))
	f.Add(bytes.Repeat([]byte{1, 2, 3}, 1000), uint64(4), uint8(3))
	f.Add(randBytes(5, 40<<10), uint64(5), uint8(4)) // two lanes (2×8 KiB) past Min, twice
	paramSets := []Params{
		smallParams,
		{Min: 64, Avg: 64, Max: 64},
		{Min: 64, Avg: 128, Max: 2048},
		{Min: 200, Avg: 256, Max: 300},
		{Min: 64, Avg: 8 << 10, Max: 64 << 10}, // long enough for two lanes
	}
	cs := make([]*Chunker, len(paramSets))
	for i, p := range paramSets {
		cs[i] = New(nil, p)
	}
	f.Fuzz(func(t *testing.T, data []byte, seed uint64, which uint8) {
		i := int(which) % len(paramSets)
		p, c := paramSets[i], cs[i]
		c.Reset(&variableReader{data: data, s: splitmix64(seed)})
		var chunks [][]byte
		for {
			b, err := c.Next()
			if err == io.EOF {
				break
			}
			if err != nil {
				t.Fatal(err)
			}
			chunks = append(chunks, bytes.Clone(b))
		}
		checkChunks(t, data, chunks, p)
		got := lengths(chunks)
		if cuts := splitWith(data, p, Cut); !slices.Equal(got, cuts) {
			t.Fatalf("Chunker lengths %v, repeated Cut %v", got, cuts)
		}
		if ref := splitWith(data, p, refCut); !slices.Equal(got, ref) {
			t.Fatalf("Chunker lengths %v, reference %v", got, ref)
		}
		// Cut on a prefix that is not final: 0, or the same first chunk.
		if len(data) > 0 {
			k := int(seed % uint64(len(data)+1))
			n := Cut(data[:k], p, false)
			if n != 0 && (len(got) == 0 || n != got[0]) {
				t.Fatalf("Cut(%d-byte prefix, false) = %d, first chunk %v", k, n, got[:1])
			}
			if n == 0 && k >= p.Max {
				t.Fatalf("Cut(%d-byte prefix, false) = 0 with Max %d", k, p.Max)
			}
		}
	})
}
