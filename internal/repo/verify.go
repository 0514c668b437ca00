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
	select {
	case r.verifySem <- struct{}{}:
	case <-ctx.Done():
		return ctx.Err()
	}
	defer func() { <-r.verifySem }()

	for _, e := range entries {
		if e.RawLength > MaxChunkSize || e.Length > maxStoredChunk(e.RawLength) {
			return fmt.Errorf("%w: pack %s: blob %s of %d bytes (%d stored) is larger than a chunk may be (%d)",
				ErrCorrupt, p.ID.Short(), e.ID.Short(), e.RawLength, e.Length, MaxChunkSize)
		}
	}
	rc, err := r.store.Get(ctx, key, 0, -1)
	if errors.Is(err, blobstore.ErrNotFound) {
		return fmt.Errorf("%w: pack %s was not uploaded", ErrMissing, p.ID.Short())
	}
	if err != nil {
		return fmt.Errorf("read pack %s: %w", p.ID.Short(), err)
	}
	defer rc.Close()
	h := id.NewHasher()
	in := bufio.NewReaderSize(io.TeeReader(io.LimitReader(rc, p.Size+1), h), 256<<10)
	buf := verifyBufs.Get().(*verifyBuf)
	defer verifyBufs.Put(buf)
	var read int64
	for _, e := range entries {
		if cap(buf.stored) < int(e.Length) {
			buf.stored = make([]byte, e.Length)
		}
		stored := buf.stored[:e.Length]
		if _, err := io.ReadFull(in, stored); err != nil {
			return fmt.Errorf("%w: pack %s: reading blob %s: %v", ErrCorrupt, p.ID.Short(), e.ID.Short(), err)
		}
		read += int64(e.Length)
		plain, err := pack.DecodeBlob(e, stored, buf.plain)
		if err != nil {
			return fmt.Errorf("%w: pack %s: %v", ErrCorrupt, p.ID.Short(), err)
		}
		if cap(plain) > cap(buf.plain) {
			buf.plain = plain[:0]
		}
	}
	rest, err := io.Copy(io.Discard, in)
	if err != nil {
		return fmt.Errorf("read pack %s: %w", p.ID.Short(), err)
	}
	if read+rest != p.Size {
		return fmt.Errorf("%w: pack %s: read %d bytes, %d claimed", ErrCorrupt, p.ID.Short(), read+rest, p.Size)
	}
	if got := h.Sum(); got != p.ID {
		return fmt.Errorf("%w: pack %s: the object hashes to %s, not to its id", ErrCorrupt, p.ID.Short(), got.Short())
	}
	return nil
}
