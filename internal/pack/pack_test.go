package pack

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"hash/crc32"
	"io"
	"math/rand/v2"
	"runtime"
	"sync"
	"testing"

	"github.com/klauspost/compress/zstd"

	"github.com/sandkeep/sandkeep/internal/id"
)

// checkedWriter returns a Writer that re-hashes every plaintext in Add.
func checkedWriter() *Writer {
	w := NewWriter()
	w.checkIDs = true
	return w
}

func randomBytes(seed uint64, n int) []byte {
	r := rand.New(rand.NewPCG(seed, seed^0x9e3779b97f4a7c15))
	b := make([]byte, n)
	for i := 0; i < n; i += 8 {
		var w [8]byte
		binary.LittleEndian.PutUint64(w[:], r.Uint64())
		copy(b[i:], w[:])
	}
	return b
}

func textBytes(n int) []byte {
	var buf bytes.Buffer
	for i := 0; buf.Len() < n; i++ {
		fmt.Fprintf(&buf, "func handler%d(w http.ResponseWriter, r *http.Request) { fmt.Fprintf(w, %q, r.URL.Path) }\n", i, "hello %s")
	}
	return buf.Bytes()[:n]
}

type blob struct {
	typ   BlobType
	plain []byte
	codec Codec // expected codec
}

func buildPack(t testing.TB, blobs []blob) ([]byte, id.ID, []Entry) {
	t.Helper()
	w := checkedWriter()
	for i, b := range blobs {
		e, err := w.Add(b.typ, id.Sum(b.plain), b.plain)
		if err != nil {
			t.Fatalf("Add %d: %v", i, err)
		}
		if e.Codec != b.codec {
			t.Errorf("blob %d (%d bytes): codec %s, want %s", i, len(b.plain), e.Codec, b.codec)
		}
	}
	data, pid, entries, err := w.Finish()
	if err != nil {
		t.Fatalf("Finish: %v", err)
	}
	return data, pid, entries
}

func TestRoundTrip(t *testing.T) {
	tests := []struct {
		name  string
		blobs []blob
	}{
		{"one small text", []blob{{Data, []byte("hello, hello, hello, hello, hello, hello"), Zstd}}},
		{"one tiny", []blob{{Data, []byte("x"), None}}},
		{"empty blob", []blob{{Data, nil, None}, {Tree, []byte("SKT1\x00"), None}}},
		{"random", []blob{{Data, randomBytes(1, 1<<20), None}}},
		{"zeros", []blob{{Data, make([]byte, 4<<20), Zstd}}},
		{"mixed", []blob{
			{Data, textBytes(300 << 10), Zstd},
			{Data, randomBytes(2, 1000), None},
			{Tree, textBytes(5000), Zstd},
			{Data, randomBytes(3, 2<<20), None},
			{Data, append(randomBytes(4, 1<<20), make([]byte, 1<<20)...), Zstd},
			{Tree, []byte("short tree"), None},
		}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			data, pid, entries := buildPack(t, tt.blobs)
			if pid != id.Sum(data) {
				t.Fatal("pack id is not the hash of the pack")
			}
			if len(entries) != len(tt.blobs) {
				t.Fatalf("%d entries, want %d", len(entries), len(tt.blobs))
			}
			// Index rebuilt from the object alone, both ways.
			got, err := ReadIndex(bytes.NewReader(data), int64(len(data)))
			if err != nil {
				t.Fatalf("ReadIndex: %v", err)
			}
			if fmt.Sprint(got) != fmt.Sprint(entries) {
				t.Fatalf("ReadIndex entries differ:\n got %v\nwant %v", got, entries)
			}
			count, footerLen, err := ParseTrailer(data[len(data)-TrailerSize:])
			if err != nil || count != len(entries) || footerLen != count*EntrySize+TrailerSize {
				t.Fatalf("ParseTrailer = %d, %d, %v", count, footerLen, err)
			}
			if _, err := ParseFooter(data[len(data)-footerLen:], int64(len(data))); err != nil {
				t.Fatalf("ParseFooter: %v", err)
			}
			var buf []byte
			for i, e := range got {
				b := tt.blobs[i]
				if e.ID != id.Sum(b.plain) || e.Type != b.typ || e.RawLength != uint32(len(b.plain)) {
					t.Fatalf("entry %d = %+v", i, e)
				}
				plain, err := DecodeBlob(e, data[e.Offset:e.End()], buf)
				if err != nil {
					t.Fatalf("DecodeBlob %d: %v", i, err)
				}
				if !bytes.Equal(plain, b.plain) {
					t.Fatalf("blob %d differs after round trip", i)
				}
				buf = plain
			}
		})
	}
}

func TestCodecChoice(t *testing.T) {
	// Half random, half zeros compresses to about half: zstd. Random with a
	// 1% zero tail saves under 3%: raw.
	halfZero := append(randomBytes(5, 64<<10), make([]byte, 64<<10)...)
	slightly := append(randomBytes(6, 99<<10), make([]byte, 1<<10)...)
	w := checkedWriter()
	for _, tc := range []struct {
		plain []byte
		want  Codec
	}{{halfZero, Zstd}, {slightly, None}, {textBytes(2000), Zstd}, {[]byte("abc"), None}} {
		e, err := w.Add(Data, id.Sum(tc.plain), tc.plain)
		if err != nil {
			t.Fatal(err)
		}
		if e.Codec != tc.want {
			t.Errorf("%d bytes: codec %s, want %s (stored %d)", len(tc.plain), e.Codec, tc.want, e.Length)
		}
		if e.Codec == Zstd && int(e.Length) >= len(tc.plain)-len(tc.plain)/32 {
			t.Errorf("%d bytes kept compressed at %d bytes", len(tc.plain), e.Length)
		}
	}
}

func TestWriterFinishAndReuse(t *testing.T) {
	w := checkedWriter()
	if _, _, _, err := w.Finish(); !errors.Is(err, ErrEmpty) {
		t.Fatalf("Finish on empty writer: %v, want ErrEmpty", err)
	}
	a := textBytes(10000)
	if _, err := w.Add(Data, id.Sum(a), a); err != nil {
		t.Fatal(err)
	}
	data1, pid1, ent1, err := w.Finish()
	if err != nil {
		t.Fatal(err)
	}
	keep := bytes.Clone(data1)
	if w.Len() != 0 || w.Size() != 0 {
		t.Fatalf("writer not reset: Len %d Size %d", w.Len(), w.Size())
	}
	// The same id is not a duplicate in the next pack.
	b := randomBytes(7, 20000)
	for _, p := range [][]byte{a, b} {
		if _, err := w.Add(Data, id.Sum(p), p); err != nil {
			t.Fatal(err)
		}
	}
	data2, pid2, ent2, err := w.Finish()
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(data1, keep) || id.Sum(data1) != pid1 || len(ent1) != 1 {
		t.Fatal("first pack changed after the writer was reused")
	}
	if pid2 == pid1 || len(ent2) != 2 {
		t.Fatalf("second pack: %d entries", len(ent2))
	}
	if _, err := ReadIndex(bytes.NewReader(data2), int64(len(data2))); err != nil {
		t.Fatal(err)
	}
}

func TestAddRules(t *testing.T) {
	w := checkedWriter()
	p := textBytes(4000)
	e1, err := w.Add(Data, id.Sum(p), p)
	if err != nil {
		t.Fatal(err)
	}
	size := w.Size()
	e2, err := w.Add(Data, id.Sum(p), p)
	if err != nil || e2 != e1 || w.Len() != 1 || w.Size() != size {
		t.Fatalf("duplicate Add = %+v, %v; Len %d", e2, err, w.Len())
	}
	if _, err := w.Add(Tree, id.Sum(p), p); err == nil {
		t.Fatal("same id with another type accepted")
	}
	if _, err := w.Add(BlobType(3), id.Sum([]byte("y")), []byte("y")); err == nil {
		t.Fatal("unknown type accepted")
	}
	if _, err := w.Add(Data, id.Sum([]byte("a")), []byte("b")); err == nil {
		t.Fatal("checked writer accepted a wrong id")
	}
	big := make([]byte, MaxBlobSize+1)
	if _, err := w.Add(Data, id.Sum(big), big); err == nil {
		t.Fatal("blob over MaxBlobSize accepted")
	}
	if w.Len() != 1 || w.Size() != size {
		t.Fatal("failed Add changed the writer")
	}
}

// testPack is a pack with zstd, raw and empty blobs of both types.
func testPack(t testing.TB) ([]byte, []blob) {
	blobs := []blob{
		{Data, textBytes(3000), Zstd},
		{Data, randomBytes(8, 500), None},
		{Tree, textBytes(700), Zstd},
		{Data, nil, None},
		{Tree, []byte("tree!"), None},
	}
	data, _, _ := buildPack(t, blobs)
	return data, blobs
}

// decodeAll parses a pack's footer and decodes every blob, returning the
// first error.
func decodeAll(data []byte) error {
	entries, err := ReadIndex(bytes.NewReader(data), int64(len(data)))
	if err != nil {
		return err
	}
	for _, e := range entries {
		if _, err := DecodeBlob(e, data[e.Offset:e.End()], nil); err != nil {
			return err
		}
	}
	return nil
}

func footerStart(data []byte) int {
	n := int(binary.LittleEndian.Uint32(data[len(data)-TrailerSize:]))
	return len(data) - n*EntrySize - TrailerSize
}

func TestFooterByteFlips(t *testing.T) {
	data, _ := testPack(t)
	start := footerStart(data)
	for i := start; i < len(data); i++ {
		for _, x := range []byte{0x01, 0x80, 0xff} {
			bad := bytes.Clone(data)
			bad[i] ^= x
			if _, err := ReadIndex(bytes.NewReader(bad), int64(len(bad))); !errors.Is(err, ErrCorrupt) {
				t.Fatalf("flip %#x at footer byte %d: ReadIndex err = %v, want ErrCorrupt", x, i-start, err)
			}
		}
	}
}

// TestForgedEntries changes each entry byte and recomputes the crc, as a
// hostile or buggy writer would: the field rules or the blob hash must
// still catch every change.
func TestForgedEntries(t *testing.T) {
	data, _ := testPack(t)
	start := footerStart(data)
	end := len(data) - TrailerSize
	for i := start; i < end; i++ {
		for _, x := range []byte{0x01, 0x02, 0x10, 0x80, 0xff} {
			bad := bytes.Clone(data)
			bad[i] ^= x
			binary.LittleEndian.PutUint32(bad[end+4:], crc32.Checksum(bad[start:end], castagnoli))
			if err := decodeAll(bad); !errors.Is(err, ErrCorrupt) {
				off := i - start
				t.Fatalf("forged entry %d byte %d (^%#x): err = %v, want ErrCorrupt", off/EntrySize, off%EntrySize, x, err)
			}
		}
	}
}

func TestTruncatedAndResized(t *testing.T) {
	data, _ := testPack(t)
	for n := 0; n < len(data); n++ {
		if _, err := ReadIndex(bytes.NewReader(data[:n]), int64(n)); !errors.Is(err, ErrCorrupt) {
			t.Fatalf("truncated to %d bytes: %v", n, err)
		}
		// Tail kept, head lost.
		if _, err := ReadIndex(bytes.NewReader(data[n+1:]), int64(len(data)-n-1)); !errors.Is(err, ErrCorrupt) {
			t.Fatalf("first %d bytes cut: %v", n+1, err)
		}
	}
	// Size claims more than the reader holds.
	if _, err := ReadIndex(bytes.NewReader(data), int64(len(data)+1)); !errors.Is(err, ErrCorrupt) {
		t.Fatalf("size too large: %v", err)
	}
	// Junk prepended: offsets no longer end where the footer starts.
	junk := append([]byte("junk"), data...)
	if _, err := ReadIndex(bytes.NewReader(junk), int64(len(junk))); !errors.Is(err, ErrCorrupt) {
		t.Fatalf("junk before the pack: %v", err)
	}
	_, footerLen, err := ParseTrailer(data[len(data)-TrailerSize:])
	if err != nil {
		t.Fatal(err)
	}
	footer := data[len(data)-footerLen:]
	for _, size := range []int64{int64(len(data)) - 1, int64(len(data)) + 1, int64(footerLen) - 1, 0, -1, 1 << 62} {
		if _, err := ParseFooter(footer, size); !errors.Is(err, ErrCorrupt) {
			t.Errorf("ParseFooter with pack size %d: %v", size, err)
		}
	}
	// Footer slices that are not exactly footerLen bytes.
	for _, f := range [][]byte{footer[1:], data[len(data)-footerLen-1:], nil, footer[len(footer)-TrailerSize:]} {
		if _, err := ParseFooter(f, int64(len(data))); !errors.Is(err, ErrCorrupt) {
			t.Errorf("ParseFooter of %d bytes: %v", len(f), err)
		}
	}
}

func trailer(count uint32, crc uint32) []byte {
	b := binary.LittleEndian.AppendUint32(nil, count)
	b = binary.LittleEndian.AppendUint32(b, crc)
	return append(b, Magic...)
}

func TestParseTrailer(t *testing.T) {
	tests := []struct {
		name string
		in   []byte
		ok   bool
	}{
		{"one entry", trailer(1, 0), true},
		{"max entries", trailer(MaxEntries, 0), true},
		{"zero entries", trailer(0, 0), false},
		{"too many entries", trailer(MaxEntries+1, 0), false},
		{"huge count", trailer(0xffffffff, 0), false},
		{"bad magic", append(trailer(1, 0)[:8], "SKPACK03"...), false},
		{"group magic", append(trailer(1, 0)[:8], MagicGroups...), true},
		{"short", trailer(1, 0)[1:], false},
		{"long", append([]byte{0}, trailer(1, 0)...), false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			count, footerLen, err := ParseTrailer(tt.in)
			if tt.ok {
				if err != nil || footerLen != count*EntrySize+TrailerSize {
					t.Fatalf("= %d, %d, %v", count, footerLen, err)
				}
			} else if !errors.Is(err, ErrCorrupt) {
				t.Fatalf("err = %v, want ErrCorrupt", err)
			}
		})
	}
}

// countingReader records ReadAt calls and can pretend to be any size.
type countingReader struct {
	r     io.ReaderAt
	calls int
}

func (c *countingReader) ReadAt(p []byte, off int64) (int, error) {
	c.calls++
	return c.r.ReadAt(p, off)
}

func TestReadIndexReads(t *testing.T) {
	// Small footer: one read. Large footer: two.
	for _, n := range []int{1, 500} {
		w := NewWriter()
		for i := range n {
			p := []byte(fmt.Sprintf("blob %d", i))
			if _, err := w.Add(Data, id.Sum(p), p); err != nil {
				t.Fatal(err)
			}
		}
		data, _, entries, err := w.Finish()
		if err != nil {
			t.Fatal(err)
		}
		cr := &countingReader{r: bytes.NewReader(data)}
		got, err := ReadIndex(cr, int64(len(data)))
		if err != nil || len(got) != len(entries) {
			t.Fatalf("%d blobs: %d entries, %v", n, len(got), err)
		}
		want := 1
		if n*EntrySize+TrailerSize > initialTailRead {
			want = 2
		}
		if cr.calls != want {
			t.Errorf("%d blobs: %d ReadAt calls, want %d", n, cr.calls, want)
		}
	}
}

type errReader struct{}

func (errReader) ReadAt([]byte, int64) (int, error) { return 0, errors.New("network down") }

func TestReadIndexIOError(t *testing.T) {
	_, err := ReadIndex(errReader{}, 1000)
	if err == nil || errors.Is(err, ErrCorrupt) {
		t.Fatalf("I/O error reported as %v", err)
	}
}

// allocated returns the bytes allocated while running f.
func allocated(f func()) uint64 {
	var a, b runtime.MemStats
	runtime.GC()
	runtime.ReadMemStats(&a)
	f()
	runtime.ReadMemStats(&b)
	return b.TotalAlloc - a.TotalAlloc
}

func TestHugeCountsDoNotAllocate(t *testing.T) {
	// A 16-byte object claiming a million entries, and a 1 TB object
	// claiming 2^32-1: both rejected without allocating the footer.
	tr := trailer(MaxEntries, 0)
	n := allocated(func() {
		if _, err := ReadIndex(bytes.NewReader(tr), int64(len(tr))); !errors.Is(err, ErrCorrupt) {
			t.Errorf("ReadIndex: %v", err)
		}
		if _, err := ParseFooter(tr, 1<<40); !errors.Is(err, ErrCorrupt) {
			t.Errorf("ParseFooter: %v", err)
		}
		huge := trailer(0xffffffff, 0)
		if _, err := ReadIndex(&zeroTail{tail: huge, size: 1 << 40}, 1<<40); !errors.Is(err, ErrCorrupt) {
			t.Errorf("ReadIndex huge: %v", err)
		}
	})
	if n > 1<<20 {
		t.Fatalf("rejecting huge counts allocated %d bytes", n)
	}
}

// zeroTail is a reader of size bytes of zeros that end with tail.
type zeroTail struct {
	tail []byte
	size int64
}

func (z *zeroTail) ReadAt(p []byte, off int64) (int, error) {
	for i := range p {
		pos := off + int64(i)
		if pos >= z.size {
			return i, io.EOF
		}
		if t := pos - (z.size - int64(len(z.tail))); t >= 0 {
			p[i] = z.tail[t]
		} else {
			p[i] = 0
		}
	}
	return len(p), nil
}

func TestStoredBlobCorruption(t *testing.T) {
	data, _ := testPack(t)
	entries, err := ReadIndex(bytes.NewReader(data), int64(len(data)))
	if err != nil {
		t.Fatal(err)
	}
	for _, e := range entries {
		want, err := DecodeBlob(e, data[e.Offset:e.End()], nil)
		if err != nil {
			t.Fatal(err)
		}
		benign := 0
		for i := e.Offset; i < e.End(); i++ {
			for _, x := range []byte{0x01, 0x04, 0x80} {
				stored := bytes.Clone(data[e.Offset:e.End()])
				stored[i-e.Offset] ^= x
				out, err := DecodeBlob(e, stored, nil)
				switch {
				case err == nil && bytes.Equal(out, want):
					// A few zstd bits are unused (the frame header's
					// "unused" flag, padding of bit streams): the
					// plaintext is still verified.
					benign++
				case !errors.Is(err, ErrCorrupt):
					t.Fatalf("blob %s (%s) byte %d ^%#x: err = %v", e.ID.Short(), e.Codec, i-e.Offset, x, err)
				}
			}
		}
		if e.Codec == None && benign > 0 || benign > int(e.Length)/10 {
			t.Errorf("blob %s (%s): %d of %d flips went unnoticed", e.ID.Short(), e.Codec, benign, 3*e.Length)
		}
		stored := data[e.Offset:e.End()]
		if len(stored) > 0 {
			if _, err := DecodeBlob(e, stored[:len(stored)-1], nil); !errors.Is(err, ErrCorrupt) {
				t.Fatalf("blob %s truncated: %v", e.ID.Short(), err)
			}
		}
		if _, err := DecodeBlob(e, append(bytes.Clone(stored), 0), nil); !errors.Is(err, ErrCorrupt) {
			t.Fatalf("blob %s extended: %v", e.ID.Short(), err)
		}
	}
}

func TestDecodeBlobBadEntries(t *testing.T) {
	plain := textBytes(5000)
	w := NewWriter()
	e, err := w.Add(Data, id.Sum(plain), plain)
	if err != nil || e.Codec != Zstd {
		t.Fatal(e, err)
	}
	data, _, _, _ := w.Finish()
	stored := data[e.Offset:e.End()]
	mod := func(f func(*Entry)) Entry { c := e; f(&c); return c }
	tests := []struct {
		name string
		e    Entry
	}{
		{"wrong id", mod(func(e *Entry) { e.ID[0] ^= 1 })},
		{"raw length short", mod(func(e *Entry) { e.RawLength-- })},
		{"raw length long", mod(func(e *Entry) { e.RawLength++ })},
		{"raw length huge", mod(func(e *Entry) { e.RawLength = MaxBlobSize + 1 })},
		{"codec none", mod(func(e *Entry) { e.Codec = None; e.RawLength = e.Length })},
		{"codec unknown", mod(func(e *Entry) { e.Codec = 3 })},
		{"raw offset outside a group", mod(func(e *Entry) { e.RawOffset = 1 })},
		{"type unknown", mod(func(e *Entry) { e.Type = 0 })},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if _, err := DecodeBlob(tt.e, stored, nil); !errors.Is(err, ErrCorrupt) {
				t.Fatalf("err = %v, want ErrCorrupt", err)
			}
		})
	}
	if _, err := DecodeBlob(e, stored, nil); err != nil {
		t.Fatal(err)
	}
}

// TestDecodeBlobBombs feeds zstd frames that expand far beyond the entry's
// RawLength, with and without a frame content size in the header.
func TestDecodeBlobBombs(t *testing.T) {
	zeros := make([]byte, 32<<20)
	enc, err := getEncoder()
	if err != nil {
		t.Fatal(err)
	}
	withFCS := enc.EncodeAll(zeros, nil)
	var stream bytes.Buffer
	sw, err := zstd.NewWriter(&stream, zstd.WithEncoderLevel(zstd.SpeedFastest))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := sw.Write(zeros); err != nil {
		t.Fatal(err)
	}
	if err := sw.Close(); err != nil {
		t.Fatal(err)
	}
	withoutFCS := stream.Bytes()
	if h := (zstd.Header{}); h.Decode(withoutFCS) != nil || h.HasFCS {
		t.Fatalf("stream frame has a content size: %+v", h)
	}
	for _, tc := range []struct {
		name   string
		stored []byte
	}{{"with content size", withFCS}, {"without content size", withoutFCS}} {
		t.Run(tc.name, func(t *testing.T) {
			e := Entry{ID: id.Sum(make([]byte, 1000)), Length: uint32(len(tc.stored)), RawLength: 1000, Type: Data, Codec: Zstd}
			n := allocated(func() {
				_, err := DecodeBlob(e, tc.stored, nil)
				if !errors.Is(err, ErrCorrupt) {
					t.Errorf("err = %v, want ErrCorrupt", err)
				}
				t.Log(err)
			})
			if n > 4<<20 {
				t.Errorf("decoding a bomb allocated %d bytes", n)
			}
		})
	}
}

func TestDecodeBlobReusesDst(t *testing.T) {
	plain := textBytes(100 << 10)
	for _, codec := range []Codec{Zstd, None} {
		stored := plain
		if codec == Zstd {
			enc, _ := getEncoder()
			stored = enc.EncodeAll(plain, nil)
		}
		e := Entry{ID: id.Sum(plain), Length: uint32(len(stored)), RawLength: uint32(len(plain)), Type: Data, Codec: codec}
		dst := make([]byte, 10, 1<<20)
		out, err := DecodeBlob(e, stored, dst)
		if err != nil {
			t.Fatal(err)
		}
		if &out[0] != &dst[0] || cap(out) != cap(dst) || !bytes.Equal(out, plain) {
			t.Errorf("%s: dst with room was not reused (cap %d)", codec, cap(out))
		}
		small := make([]byte, 0, 10)
		out, err = DecodeBlob(e, stored, small)
		if err != nil || !bytes.Equal(out, plain) {
			t.Fatalf("%s: small dst: %v", codec, err)
		}
	}
}

func TestConcurrentUse(t *testing.T) {
	var wg sync.WaitGroup
	for g := range 8 {
		wg.Go(func() {
			w := NewWriter()
			var plains [][]byte
			for i := range 20 {
				p := append(textBytes(10000+i), byte(g), byte(i))
				if i%3 == 0 {
					p = randomBytes(uint64(g*100+i), 5000)
				}
				plains = append(plains, p)
				if _, err := w.Add(Data, id.Sum(p), p); err != nil {
					t.Error(err)
					return
				}
			}
			data, _, entries, err := w.Finish()
			if err != nil {
				t.Error(err)
				return
			}
			for i, e := range entries {
				out, err := DecodeBlob(e, data[e.Offset:e.End()], nil)
				if err != nil || !bytes.Equal(out, plains[i]) {
					t.Errorf("goroutine %d blob %d: %v", g, i, err)
				}
			}
		})
	}
	wg.Wait()
}
