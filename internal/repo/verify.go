package repo

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"sync"

	"github.com/sandkeep/sandkeep/internal/blobstore"
	"github.com/sandkeep/sandkeep/internal/id"
	"github.com/sandkeep/sandkeep/internal/pack"
)

// MaxChunkSize is the largest data chunk an agent may upload (its chunker
// cuts at 4 MiB; this leaves room for other chunker settings). It bounds the
// memory one pack verification needs.
const MaxChunkSize = 16 << 20

// maxStoredChunk bounds the stored (compressed) length of a data chunk: zstd
// never grows a chunk by more than this, and the agent stores incompressible
// chunks raw.
func maxStoredChunk(raw uint32) uint32 { return raw + raw>>7 + 1<<10 }

// maxStored bounds the stored length of blob e: its chunk's, or for a
// group member its frame's.
func maxStored(e pack.Entry) uint32 {
	if e.Codec == pack.Group {
		return maxStoredChunk(pack.MaxGroupSize)
	}
	return maxStoredChunk(e.RawLength)
}

// verifyBufs recycles the read and decode buffers of pack verification.
var verifyBufs = sync.Pool{New: func() any { return new(verifyBuf) }}

type verifyBuf struct{ stored, plain []byte }

// verifyPack reads the whole pack object back from the store and checks what
// the agent claimed: the object hashes to its pack id (so the key names this
// exact content), and every blob the footer lists decodes to plaintext that
// hashes to the blob's id with the stated length. A pack whose footer lies is
// refused with ErrCorrupt before any of its chunks is indexed, so no honest
// sync can later dedupe against garbage.
//
// At most Options.VerifyConcurrency verifications run at once in a Repo;
// each holds one chunk (stored and decoded) in memory.
func (r *Repo) verifyPack(ctx context.Context, key string, p PackRef, entries []pack.Entry) error {
	sc, err := r.scanPack(ctx, key, p, entries)
	if err != nil {
		return err
	}
	return sc.err(p)
}

// packScan is what reading a pack back found.
type packScan struct {
	// Bad lists the blobs whose stored bytes are missing or do not decode
	// to their id and length, in footer order.
	Bad []badBlob
	// Read is the object's length as read; HashOK says it hashes to the
	// pack's id.
	Read   int64
	HashOK bool
}

type badBlob struct {
	Entry pack.Entry
	Err   error
}

// err is the scan's verdict as verifyPack reports it: ErrCorrupt naming the
// first problem, or nil.
func (sc packScan) err(p PackRef) error {
	switch {
	case len(sc.Bad) > 0:
		return fmt.Errorf("%w: pack %s: %v", ErrCorrupt, p.ID.Short(), sc.Bad[0].Err)
	case sc.Read != p.Size:
		return fmt.Errorf("%w: pack %s: read %d bytes, %d claimed", ErrCorrupt, p.ID.Short(), sc.Read, p.Size)
	case !sc.HashOK:
		return fmt.Errorf("%w: pack %s: the object does not hash to its id", ErrCorrupt, p.ID.Short())
	}
	return nil
}

// scanPack reads the whole pack and checks every blob of entries (in
// offset order: a footer's, or the chunks the index locates in the pack)
// and the object's hash. Only a failure to read
// the object at all is an error; what the bytes say is in the packScan. It
// holds one of the Repo's verification slots.
func (r *Repo) scanPack(ctx context.Context, key string, p PackRef, entries []pack.Entry) (packScan, error) {
	var sc packScan
	for _, e := range entries {
		if e.RawLength > MaxChunkSize || e.Length > maxStored(e) {
			sc.Bad = append(sc.Bad, badBlob{e, fmt.Errorf("blob %s of %d bytes (%d stored) is larger than a chunk may be (%d)",
				e.ID.Short(), e.RawLength, e.Length, MaxChunkSize)})
			return sc, nil
		}
	}
	select {
	case r.verifySem <- struct{}{}:
	case <-ctx.Done():
		return sc, ctx.Err()
	}
	defer func() { <-r.verifySem }()
	rc, err := r.store.Get(ctx, key, 0, -1)
	if errors.Is(err, blobstore.ErrNotFound) {
		return sc, fmt.Errorf("%w: pack %s was not uploaded", ErrMissing, p.ID.Short())
	}
	if err != nil {
		return sc, fmt.Errorf("read pack %s: %w", p.ID.Short(), err)
	}
	defer rc.Close()
	h := id.NewHasher()
	in := bufio.NewReaderSize(io.TeeReader(io.LimitReader(rc, p.Size+1), h), 256<<10)
	buf := verifyBufs.Get().(*verifyBuf)
	defer verifyBufs.Put(buf)
	var dec pack.Decoder // a group's members: one decode of their frame
	var stored []byte    // the stored bytes of entries[i-1]
	for i, e := range entries {
		if i > 0 && stored != nil && e.SameFrame(entries[i-1]) {
			// The frame of the blob before, read already.
			sc.verify(&dec, e, stored, buf)
			continue
		}
		var err error
		if stored, err = sc.read(in, e, buf); err != nil {
			// Unreadable: this blob and every later one are gone.
			for _, rest := range entries[i:] {
				sc.Bad = append(sc.Bad, badBlob{rest, fmt.Errorf("reading blob %s: %v", rest.ID.Short(), err)})
			}
			return sc, nil
		}
		if stored != nil {
			sc.verify(&dec, e, stored, buf)
		}
	}
	rest, err := io.Copy(io.Discard, in)
	if err != nil {
		return sc, fmt.Errorf("read pack %s: %w", p.ID.Short(), err)
	}
	sc.Read += rest
	sc.HashOK = sc.Read == p.Size && h.Sum() == p.ID
	return sc, nil
}

// read reads the stored bytes of e from in, where sc.Read bytes of the pack
// are behind: nil if e overlaps the blob before it (noted in sc.Bad), an
// error if the pack ends or fails first.
func (sc *packScan) read(in io.Reader, e pack.Entry, buf *verifyBuf) ([]byte, error) {
	if gap := int64(e.Offset) - sc.Read; gap > 0 {
		// Bytes no entry of the list covers (a check passes the chunks
		// the index knows, not every footer entry).
		n, err := io.CopyN(io.Discard, in, gap)
		sc.Read += n
		if err != nil {
			return nil, err
		}
	} else if gap < 0 {
		sc.Bad = append(sc.Bad, badBlob{e, fmt.Errorf("blob %s overlaps the one before", e.ID.Short())})
		return nil, nil
	}
	if cap(buf.stored) < int(e.Length) {
		buf.stored = make([]byte, e.Length)
	}
	stored := buf.stored[:e.Length]
	n, err := io.ReadFull(in, stored)
	sc.Read += int64(n)
	return stored, err
}

// verify decodes e from stored, noting a failure in sc.Bad.
func (sc *packScan) verify(dec *pack.Decoder, e pack.Entry, stored []byte, buf *verifyBuf) {
	plain, err := dec.Decode(e, stored, buf.plain)
	if err != nil {
		sc.Bad = append(sc.Bad, badBlob{e, err})
		return
	}
	if cap(plain) > cap(buf.plain) {
		buf.plain = plain[:0]
	}
}
