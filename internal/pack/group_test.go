package pack

import (
	"bytes"
	"encoding/binary"
	"errors"
	"hash/crc32"
	"testing"

	"github.com/sandkeep/sandkeep/internal/id"
)

// groupPack builds a pack of a raw blob, a group of members (one of them
// a copy of the raw blob, which gets no second entry) and a text blob of
// its own, and returns it with the members' plaintexts by id.
func groupPack(t testing.TB) ([]byte, []Entry, map[id.ID][]byte) {
	t.Helper()
	plain := map[id.ID][]byte{}
	w := NewWriter()
	rnd := randomBytes(1, 5000)
	if _, err := w.Add(Data, id.Sum(rnd), rnd); err != nil {
		t.Fatal(err)
	}
	plain[id.Sum(rnd)] = rnd
	var g GroupBuilder
	for i := range 6 {
		b := append([]byte("package x // file "), textBytes(700+i*300)...)
		b = append(b, byte(i))
		if i == 3 {
			b = rnd
		}
		if err := g.Add(id.Sum(b), b); err != nil {
			t.Fatal(err)
		}
		plain[id.Sum(b)] = b
	}
	var c Compressor
	stored, codec, err := c.Compress(g.Plaintext())
	if err != nil || codec != Zstd {
		t.Fatalf("compress group: %v %v", codec, err)
	}
	if err := w.AddGroup(Data, &g, codec, stored); err != nil {
		t.Fatal(err)
	}
	txt := textBytes(9000)
	if _, err := w.Add(Data, id.Sum(txt), txt); err != nil {
		t.Fatal(err)
	}
	plain[id.Sum(txt)] = txt
	data, _, entries, err := w.Finish()
	if err != nil {
		t.Fatal(err)
	}
	return data, entries, plain
}

func TestGroupRoundTrip(t *testing.T) {
	data, entries, plain := groupPack(t)
	if got := string(data[len(data)-8:]); got != MagicGroups {
		t.Fatalf("magic %q, want %q", got, MagicGroups)
	}
	read, err := ReadIndex(bytes.NewReader(data), int64(len(data)))
	if err != nil {
		t.Fatal(err)
	}
	if len(read) != len(entries) || len(read) != 7 {
		t.Fatalf("%d entries read, %d written, want 7", len(read), len(entries))
	}
	members := 0
	var d Decoder
	for i, e := range read {
		if e != entries[i] {
			t.Fatalf("entry %d read as %+v, written %+v", i, e, entries[i])
		}
		if e.Codec == Group {
			members++
		}
		stored := data[e.Offset:e.End()]
		for _, dec := range []func() ([]byte, error){
			func() ([]byte, error) { return DecodeBlob(e, stored, nil) },
			func() ([]byte, error) { return d.Decode(e, stored, nil) },
		} {
			out, err := dec()
			if err != nil || !bytes.Equal(out, plain[e.ID]) {
				t.Fatalf("entry %d (%s): %d bytes, %v", i, e.Codec, len(out), err)
			}
		}
	}
	if members != 5 {
		t.Fatalf("%d group members, want 5 (the copy of the raw blob has no entry)", members)
	}
}

func TestPackWithoutGroupsKeepsOldMagic(t *testing.T) {
	data, _ := testPack(t)
	if got := string(data[len(data)-8:]); got != Magic {
		t.Fatalf("magic %q, want %q", got, Magic)
	}
	// A group of one blob is a plain zstd blob; a raw group raw blobs.
	w := NewWriter()
	var g GroupBuilder
	b := textBytes(4000)
	_ = g.Add(id.Sum(b), b)
	var c Compressor
	stored, codec, _ := c.Compress(g.Plaintext())
	if err := w.AddGroup(Data, &g, codec, stored); err != nil {
		t.Fatal(err)
	}
	g.Reset()
	for i := range 3 {
		r := randomBytes(uint64(10+i), 3000)
		_ = g.Add(id.Sum(r), r)
	}
	stored, codec, _ = c.Compress(g.Plaintext())
	if codec != None {
		t.Fatalf("random bytes compressed")
	}
	if err := w.AddGroup(Data, &g, codec, stored); err != nil {
		t.Fatal(err)
	}
	data, _, entries, err := w.Finish()
	if err != nil {
		t.Fatal(err)
	}
	if got := string(data[len(data)-8:]); got != Magic || len(entries) != 4 || entries[0].Codec != Zstd || entries[1].Codec != None {
		t.Fatalf("magic %q, entries %+v", got, entries)
	}
	if err := decodeAll(data); err != nil {
		t.Fatal(err)
	}
}

// A group of under 256 bytes that zstd still compresses gets a frame
// without its content size; AddGroup stores its members raw, so that the
// pack decodes (a frame without it fails decodeGroup).
func TestTinyGroupStoredRaw(t *testing.T) {
	var g GroupBuilder
	for i := range 3 {
		b := bytes.Repeat([]byte{'a' + byte(i)}, 60)
		if err := g.Add(id.Sum(b), b); err != nil {
			t.Fatal(err)
		}
	}
	var c Compressor
	stored, codec, err := c.Compress(g.Plaintext())
	if err != nil || codec != Zstd {
		t.Fatalf("the tiny group did not compress (%s, %v): the case is not exercised", codec, err)
	}
	if holdsGroup(stored, g.Size()) {
		t.Fatal("zstd gave a frame of 180 bytes its content size: the case is not exercised")
	}
	w := NewWriter()
	if err := w.AddGroup(Data, &g, codec, stored); err != nil {
		t.Fatal(err)
	}
	data, _, entries, err := w.Finish()
	if err != nil {
		t.Fatal(err)
	}
	if len(entries) != 3 {
		t.Fatalf("%d entries, want 3", len(entries))
	}
	for _, e := range entries {
		if e.Codec != None {
			t.Fatalf("entry %+v, want a raw member", e)
		}
	}
	if err := decodeAll(data); err != nil {
		t.Fatal(err)
	}
}

// reFooter re-encodes a pack's footer after mod changed its entries, with
// a valid crc, as a forger would.
func reFooter(data []byte, mod func([]Entry)) []byte {
	start := footerStart(data)
	entries, err := ParseFooter(data[start:], int64(len(data)))
	if err != nil {
		panic(err)
	}
	mod(entries)
	out := bytes.Clone(data[:start])
	magic := data[len(data)-8:]
	for _, e := range entries {
		out = appendEntry(out, e)
	}
	crc := crc32.Checksum(out[start:], castagnoli)
	out = binary.LittleEndian.AppendUint32(out, uint32(len(entries)))
	out = binary.LittleEndian.AppendUint32(out, crc)
	return append(out, magic...)
}

func firstMember(entries []Entry) int {
	for i, e := range entries {
		if e.Codec == Group {
			return i
		}
	}
	panic("no group member")
}

// TestForgedGroups: footers a hostile uploader could write around a group
// are refused by ParseFooter, or their members by DecodeBlob; none decodes
// to bytes that do not hash to its id.
func TestForgedGroups(t *testing.T) {
	data, _, _ := groupPack(t)
	tests := []struct {
		name   string
		mod    func([]Entry)
		footer bool // refused by ParseFooter (else by DecodeBlob)
	}{
		{"member overlaps the one before", func(es []Entry) { i := firstMember(es); es[i+1].RawOffset = es[i].RawOffset }, true},
		{"member before the one before", func(es []Entry) { i := firstMember(es); es[i+1].RawOffset, es[i].RawOffset = 0, 50 }, true},
		{"member with another frame length", func(es []Entry) { i := firstMember(es); es[i+1].Length-- }, true},
		{"member past the largest group", func(es []Entry) { i := firstMember(es); es[i+4].RawOffset = MaxGroupSize }, true},
		{"empty member", func(es []Entry) { i := firstMember(es); es[i+4].RawLength = 0 }, true},
		{"group member as a plain blob", func(es []Entry) { i := firstMember(es); es[i].Codec = Zstd }, true},
		{"member claims part of its bytes", func(es []Entry) { i := firstMember(es); es[i+1].RawOffset += 7; es[i+1].RawLength -= 7 }, false},
		{"member longer than its frame", func(es []Entry) { i := firstMember(es); es[i+4].RawLength += 100000 }, false},
		{"member's id swapped", func(es []Entry) { i := firstMember(es); es[i].ID, es[i+1].ID = es[i+1].ID, es[i].ID }, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			forged := reFooter(data, tt.mod)
			entries, err := ParseFooter(forged[footerStart(forged):], int64(len(forged)))
			if tt.footer {
				if !errors.Is(err, ErrCorrupt) {
					t.Fatalf("footer accepted: %v", err)
				}
				return
			}
			if err != nil {
				t.Fatalf("footer refused: %v", err)
			}
			bad := 0
			var d Decoder
			for _, e := range entries {
				out, err := d.Decode(e, forged[e.Offset:e.End()], nil)
				switch {
				case errors.Is(err, ErrCorrupt):
					bad++
				case err != nil:
					t.Fatalf("error without ErrCorrupt: %v", err)
				case id.Sum(out) != e.ID:
					t.Fatalf("blob %s decoded to other bytes", e.ID.Short())
				}
			}
			if bad == 0 {
				t.Fatal("every blob decoded")
			}
		})
	}
	t.Run("group member in an SKPACK01 pack", func(t *testing.T) {
		forged := bytes.Clone(data)
		copy(forged[len(forged)-8:], Magic)
		if _, err := ParseFooter(forged[footerStart(forged):], int64(len(forged))); !errors.Is(err, ErrCorrupt) {
			t.Fatalf("accepted: %v", err)
		}
	})
	t.Run("SKPACK02 without a group", func(t *testing.T) {
		plain, _ := testPack(t)
		forged := bytes.Clone(plain)
		copy(forged[len(forged)-8:], MagicGroups)
		if _, err := ParseFooter(forged[footerStart(forged):], int64(len(forged))); !errors.Is(err, ErrCorrupt) {
			t.Fatalf("accepted: %v", err)
		}
	})
}

// TestGroupFrameBombs: a member's frame must state its size, within
// MaxGroupSize, before anything is decoded.
func TestGroupFrameBombs(t *testing.T) {
	e := Entry{ID: id.Sum([]byte("x")), RawLength: 1, Type: Data, Codec: Group}
	big := make([]byte, MaxGroupSize+1)
	var c Compressor
	tests := map[string][]byte{
		"larger than a group": func() []byte { s, _, _ := c.Compress(big); return bytes.Clone(s) }(),
		"not zstd":            []byte("not a zstd frame at all"),
	}
	for name, stored := range tests {
		t.Run(name, func(t *testing.T) {
			e.Length = uint32(len(stored))
			if _, err := DecodeBlob(e, stored, nil); !errors.Is(err, ErrCorrupt) {
				t.Fatalf("err = %v", err)
			}
		})
	}
}

// A group frame that does not give its content size is refused before it
// is decoded, even when its member would hash right (zstd omits the size
// in a frame of under 256 bytes; a forger may omit it in any).
func TestGroupFrameWithoutContentSize(t *testing.T) {
	plain := bytes.Repeat([]byte("ab"), 90)
	var c Compressor
	stored, codec, err := c.Compress(plain)
	if err != nil || codec != Zstd || holdsGroup(stored, len(plain)) {
		t.Fatalf("want a zstd frame without its content size: %s, %v", codec, err)
	}
	e := Entry{ID: id.Sum(plain), Length: uint32(len(stored)), RawLength: uint32(len(plain)), Type: Data, Codec: Group}
	_, err = DecodeBlob(e, stored, nil)
	if !errors.Is(err, ErrCorrupt) || !bytes.Contains([]byte(err.Error()), []byte("content size given: false")) {
		t.Fatalf("err = %v, want the frame refused for its missing content size", err)
	}
}

// rawFrame is a zstd frame of one raw block holding plain, with its
// content size: what a group frame may be.
func rawFrame(plain []byte) []byte {
	b := binary.LittleEndian.AppendUint32(nil, 0xFD2FB528)
	b = append(b, 0xA0) // single segment, 4-byte content size
	b = binary.LittleEndian.AppendUint32(b, uint32(len(plain)))
	h := uint32(1) | uint32(len(plain))<<3 // last block, raw
	b = append(b, byte(h), byte(h>>8), byte(h>>16))
	return append(b, plain...)
}

// TestDecoderKeepsNoStaleFrame: a Decoder whose caller refills the same
// buffer with another frame of the same length at the same offset decodes
// the new frame, not the one it kept.
func TestDecoderKeepsNoStaleFrame(t *testing.T) {
	m1, m2 := textBytes(3000), randomBytes(4, 3000)
	a, b := rawFrame(append(bytes.Clone(m1), m2...)), rawFrame(append(bytes.Clone(m2), m1...))
	entry := func(plain []byte) Entry {
		return Entry{ID: id.Sum(plain), Offset: 100, Length: uint32(len(a)), RawLength: uint32(len(plain)), Type: Data, Codec: Group}
	}
	buf := bytes.Clone(a)
	var d Decoder
	if out, err := d.Decode(entry(m1), buf, nil); err != nil || !bytes.Equal(out, m1) {
		t.Fatalf("m1 from frame a: %v", err)
	}
	copy(buf, b) // m2 now starts the frame
	if out, err := d.Decode(entry(m2), buf, nil); err != nil || !bytes.Equal(out, m2) {
		t.Fatalf("m2 from frame b in the same buffer: %v", err)
	}
	// And a member the kept frame does not hold at all is refused.
	if _, err := d.Decode(entry(textBytes(2999)), buf, nil); !errors.Is(err, ErrCorrupt) {
		t.Fatalf("a blob of neither frame: %v", err)
	}
}

func FuzzDecodeGroup(f *testing.F) {
	data, entries, _ := groupPack(f)
	i := firstMember(entries)
	f.Add(bytes.Clone(data[entries[i].Offset:entries[i].End()]), uint32(0), uint32(300), uint32(0), byte(0))
	f.Add(bytes.Clone(data[entries[i].Offset:entries[i].End()]), uint32(5), uint32(30), uint32(9), byte(7))
	f.Fuzz(func(t *testing.T, stored []byte, rawOff, rawLen, at uint32, x byte) {
		if len(stored) == 0 {
			return
		}
		stored[int(at%uint32(len(stored)))] ^= x
		e := Entry{ID: id.Sum([]byte("whatever")), Length: uint32(len(stored)), RawLength: rawLen, RawOffset: rawOff, Type: Data, Codec: Group}
		var d Decoder
		out, err := d.Decode(e, stored, nil)
		if err == nil && id.Sum(out) != e.ID {
			t.Fatal("decoded bytes that do not hash to the id")
		}
		if err != nil && !errors.Is(err, ErrCorrupt) {
			t.Fatalf("error without ErrCorrupt: %v", err)
		}
	})
}
