package pack

import (
	"bytes"
	"testing"

	"github.com/sandkeep/sandkeep/internal/id"
)

// A stream of packs built by a caller that checks Fits and finishes at the
// target is built in buffers of the writer's fixed capacity, recycled from
// pack to pack: no pack is ever copied to grow, and every pack decodes.
func TestWriterFixedCapacityAndRecycle(t *testing.T) {
	const target = 1 << 20
	w := NewWriterSize(target)
	w.checkIDs = true
	capacity := target + target/4
	var arrays = map[*byte]int{} // backing arrays seen, by first byte
	packs := 0
	var want [][]byte
	finish := func() {
		t.Helper()
		data, pid, entries, err := w.Finish()
		if err != nil {
			t.Fatal(err)
		}
		if len(data) > capacity {
			t.Fatalf("pack %d: %d bytes, capacity %d", packs, len(data), capacity)
		}
		if packs > 0 && cap(data) != capacity {
			t.Fatalf("pack %d: buffer of capacity %d, want %d", packs, cap(data), capacity)
		}
		if id.Sum(data) != pid || len(entries) != len(want) {
			t.Fatalf("pack %d: bad id or %d entries for %d blobs", packs, len(entries), len(want))
		}
		for i, e := range entries {
			out, err := DecodeBlob(e, data[e.Offset:e.End()], nil)
			if err != nil || !bytes.Equal(out, want[i]) {
				t.Fatalf("pack %d blob %d: %v", packs, i, err)
			}
		}
		arrays[&data[:1][0]]++
		packs++
		want = want[:0]
		w.Recycle(data)
	}
	for i := range 400 {
		var p []byte
		switch i % 3 {
		case 0:
			p = randomBytes(uint64(i), 1000+i*397%150000)
		default:
			p = append(textBytes(2000+i*7919%200000), byte(i), byte(i>>8))
		}
		if w.Len() > 0 && !w.Fits(len(p)) {
			finish()
		}
		if _, err := w.Add(Data, id.Sum(p), p); err != nil {
			t.Fatal(err)
		}
		want = append(want, p)
		if w.Size() >= w.Target() {
			finish()
		}
	}
	if w.Len() > 0 {
		finish()
	}
	// The first pack may start in a small buffer; the others share one
	// recycled buffer.
	if packs < 10 || len(arrays) > 2 {
		t.Fatalf("%d packs in %d distinct buffers", packs, len(arrays))
	}
}

// A blob larger than the capacity goes into a one-off buffer, which is not
// recycled.
func TestWriterOversizedBlob(t *testing.T) {
	w := NewWriterSize(64 << 10)
	p := randomBytes(3, 200<<10)
	if w.Fits(len(p)) {
		t.Fatal("Fits accepts a blob larger than the capacity")
	}
	if _, err := w.Add(Data, id.Sum(p), p); err != nil {
		t.Fatal(err)
	}
	data, _, entries, err := w.Finish()
	if err != nil || len(entries) != 1 {
		t.Fatal(err)
	}
	if err := decodeAll(data); err != nil {
		t.Fatal(err)
	}
	w.Recycle(data)
	if len(w.free) != 0 {
		t.Fatal("an oversized buffer was kept for reuse")
	}
}

// A writer of capacity EmptyPackNeeds(n) takes an incompressible blob of n
// bytes into an empty pack in its own recycled buffer, compressed straight
// into it (FitsDirect): no one-off buffer, no scratch. A caller that checks
// FitsDirect before adding such a blob to a pack that is not empty never
// needs the scratch either.
func TestWriterCapForLargestBlob(t *testing.T) {
	const n = 1 << 20
	capacity := EmptyPackNeeds(n)
	w := NewWriterCap(n/2, capacity)
	w.checkIDs = true
	big := randomBytes(7, n)
	small := textBytes(100 << 10)
	for round := range 3 {
		for _, p := range [][]byte{small, big, small, big} {
			if w.Len() > 0 && !w.FitsDirect(len(p)) {
				data, _, _, err := w.Finish()
				if err != nil {
					t.Fatal(err)
				}
				if round > 0 && cap(data) != capacity {
					t.Fatalf("pack in a buffer of %d bytes, want %d", cap(data), capacity)
				}
				if err := decodeAll(data); err != nil {
					t.Fatal(err)
				}
				w.Recycle(data)
			}
			if !w.FitsDirect(len(p)) {
				t.Fatalf("an empty pack cannot take %d bytes directly", len(p))
			}
			if _, err := w.Add(Data, id.Sum(p), append([]byte(nil), p...)); err != nil {
				t.Fatal(err)
			}
		}
		small = append(small, byte(round)) // new ids for the next round
		big = append(big[:0:0], big...)
		big[0] ^= 1
	}
	if cap(w.comp.buf) != 0 {
		t.Fatalf("the scratch buffer grew to %d bytes", cap(w.comp.buf))
	}
	if w := NewWriterCap(1<<20, 10); w.capacity < 1<<20+EntrySize+TrailerSize {
		t.Fatalf("capacity %d below the target", w.capacity)
	}
}

// Compressing outside the writer and adding with AddStored makes the same
// pack as Add.
func TestAddStoredMatchesAdd(t *testing.T) {
	plains := [][]byte{textBytes(5000), randomBytes(4, 3000), nil, textBytes(100), randomBytes(5, 70000)}
	a := checkedWriter()
	b := checkedWriter()
	var c Compressor
	for _, p := range plains {
		ea, err := a.Add(Data, id.Sum(p), p)
		if err != nil {
			t.Fatal(err)
		}
		stored, codec, err := c.Compress(p)
		if err != nil {
			t.Fatal(err)
		}
		eb, err := b.AddStored(Data, id.Sum(p), codec, len(p), stored)
		if err != nil {
			t.Fatal(err)
		}
		if ea != eb {
			t.Fatalf("Add %+v, AddStored %+v", ea, eb)
		}
	}
	da, pa, _, _ := a.Finish()
	db, pb, _, _ := b.Finish()
	if pa != pb || !bytes.Equal(da, db) {
		t.Fatal("packs differ")
	}
}

func TestAddStoredRules(t *testing.T) {
	w := checkedWriter()
	p := textBytes(4000)
	var c Compressor
	stored, codec, err := c.Compress(p)
	if err != nil || codec != Zstd {
		t.Fatalf("Compress: %s, %v", codec, err)
	}
	bad := []struct {
		name   string
		codec  Codec
		rawLen int
		stored []byte
	}{
		{"unknown codec", Codec(7), len(p), stored},
		{"raw length mismatch", None, len(p) + 1, p},
		{"empty zstd frame", Zstd, len(p), nil},
		{"wrong raw length", Zstd, len(p) - 1, stored},
		{"not the plaintext", Zstd, 4000, func() []byte { s, _, _ := (&Compressor{}).Compress(textBytes(4001)[1:]); return s }()},
	}
	for _, b := range bad {
		if _, err := w.AddStored(Data, id.Sum(p), b.codec, b.rawLen, b.stored); err == nil {
			t.Errorf("%s: accepted", b.name)
		}
	}
	if w.Len() != 0 || w.Size() != 0 {
		t.Fatal("failed AddStored changed the writer")
	}
}

// Recycle may run on an uploading goroutine while the writer fills the
// next pack (run with -race).
func TestRecycleConcurrent(t *testing.T) {
	w := NewWriterSize(256 << 10)
	done := make(chan []byte, 4)
	finished := make(chan struct{})
	go func() {
		for d := range done {
			w.Recycle(d)
		}
		close(finished)
	}()
	for i := range 300 {
		p := append(textBytes(3000+i*31), byte(i), byte(i>>8))
		if w.Len() > 0 && !w.Fits(len(p)) {
			data, _, _, err := w.Finish()
			if err != nil {
				t.Fatal(err)
			}
			if err := decodeAll(data); err != nil {
				t.Fatal(err)
			}
			done <- data
		}
		if _, err := w.Add(Data, id.Sum(p), p); err != nil {
			t.Fatal(err)
		}
	}
	close(done)
	<-finished
}
