package pack

import (
	"bytes"
	"errors"
	"testing"

	"github.com/sandkeep/sandkeep/internal/id"
)

func FuzzParseFooter(f *testing.F) {
	data, _ := testPack(f)
	_, footerLen, err := ParseTrailer(data[len(data)-TrailerSize:])
	if err != nil {
		f.Fatal(err)
	}
	f.Add(data[len(data)-footerLen:], int64(len(data)))
	f.Add(data[len(data)-footerLen:], int64(footerLen))
	f.Add(trailer(1, 0), int64(100))
	f.Add(trailer(MaxEntries, 0), int64(1<<40))
	f.Add([]byte{}, int64(0))
	f.Fuzz(func(t *testing.T, footer []byte, packSize int64) {
		entries, err := ParseFooter(footer, packSize)
		if err != nil {
			if !errors.Is(err, ErrCorrupt) {
				t.Fatalf("error does not wrap ErrCorrupt: %v", err)
			}
			return
		}
		// Allocation is bounded by the input: one entry per 56 bytes given.
		if len(entries)*EntrySize+TrailerSize != len(footer) {
			t.Fatalf("%d entries from %d bytes", len(entries), len(footer))
		}
		// Whatever is accepted re-encodes to the same bytes.
		if got := appendFooter(nil, entries); !bytes.Equal(got, footer) {
			t.Fatalf("accepted footer does not re-encode identically")
		}
		if last := entries[len(entries)-1]; int64(last.End())+int64(len(footer)) != packSize {
			t.Fatalf("blobs end at %d, footer of %d, pack of %d", last.End(), len(footer), packSize)
		}
	})
}

// FuzzDecodeBlob corrupts a genuine stored blob (one byte, the entry's raw
// length, its codec) and checks that DecodeBlob either fails with ErrCorrupt
// or returns exactly the original plaintext.
func FuzzDecodeBlob(f *testing.F) {
	f.Add(textBytes(3000), uint32(0), byte(0), int8(0), false)
	f.Add(textBytes(3000), uint32(17), byte(1), int8(0), false)
	f.Add(textBytes(300), uint32(5), byte(0), int8(3), false)
	f.Add(make([]byte, 20000), uint32(30), byte(0x55), int8(0), false)
	f.Add(randomBytes(9, 100), uint32(0), byte(0), int8(0), true)
	f.Add([]byte{}, uint32(0), byte(0), int8(1), true)
	f.Fuzz(func(t *testing.T, plain []byte, at uint32, x byte, rawDelta int8, flipCodec bool) {
		w := NewWriter()
		e, err := w.Add(Data, id.Sum(plain), plain)
		if err != nil {
			t.Fatal(err)
		}
		stored := bytes.Clone(w.buf[e.Offset:e.End()])
		if len(stored) > 0 {
			stored[int(at%uint32(len(stored)))] ^= x
		}
		e.RawLength = uint32(int64(e.RawLength) + int64(rawDelta))
		if flipCodec {
			e.Codec ^= 1
		}
		out, err := DecodeBlob(e, stored, nil)
		if err != nil {
			if !errors.Is(err, ErrCorrupt) {
				t.Fatalf("error does not wrap ErrCorrupt: %v", err)
			}
			if x == 0 && rawDelta == 0 && !flipCodec {
				t.Fatalf("untouched blob failed: %v", err)
			}
			return
		}
		if !bytes.Equal(out, plain) {
			t.Fatalf("DecodeBlob returned different plaintext without an error")
		}
	})
}

// FuzzDecodeBlobStored feeds arbitrary stored bytes: no panic, only
// ErrCorrupt, and any success is verified plaintext.
func FuzzDecodeBlobStored(f *testing.F) {
	enc, err := getEncoder()
	if err != nil {
		f.Fatal(err)
	}
	zeros := make([]byte, 5000)
	f.Add(enc.EncodeAll(zeros, nil), uint32(5000), byte(Zstd), id.Sum(zeros).Bytes())
	f.Add(enc.EncodeAll(textBytes(2000), nil), uint32(2000), byte(Zstd), id.Sum(textBytes(2000)).Bytes())
	f.Add([]byte("abc"), uint32(3), byte(None), id.Sum([]byte("abc")).Bytes())
	f.Add([]byte{0x28, 0xb5, 0x2f, 0xfd}, uint32(1<<20), byte(Zstd), make([]byte, 32))
	f.Fuzz(func(t *testing.T, stored []byte, rawLen uint32, codec byte, sum []byte) {
		e := Entry{Length: uint32(len(stored)), RawLength: rawLen % (4 << 20), Type: Data, Codec: Codec(codec)}
		copy(e.ID[:], sum)
		out, err := DecodeBlob(e, stored, nil)
		if err != nil {
			if !errors.Is(err, ErrCorrupt) {
				t.Fatalf("error does not wrap ErrCorrupt: %v", err)
			}
			return
		}
		if len(out) != int(e.RawLength) || id.Sum(out) != e.ID {
			t.Fatal("unverified plaintext returned")
		}
	})
}
