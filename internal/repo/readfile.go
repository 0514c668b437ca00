package repo

import (
	"context"
	"errors"
	"fmt"
	"io"
	"time"

	"github.com/sandkeep/sandkeep/internal/id"
	"github.com/sandkeep/sandkeep/internal/metastore"
	"github.com/sandkeep/sandkeep/internal/pack"
	"github.com/sandkeep/sandkeep/internal/retry"
	"github.com/sandkeep/sandkeep/internal/tree"
)

// readFile limits.
const (
	// readLocateBatch is how many chunk locations one LocateBlobs call asks.
	readLocateBatch = 256
	// readMaxRange bounds one ranged GET that covers neighbouring chunks.
	readMaxRange = 16 << 20
)

// ReadFile calls fn with the plaintext of bytes [off, off+length) of the
// file n, in order, one piece per chunk. Chunks stored next to each other in
// a pack are fetched with one ranged GET and decoded one at a time, so
// memory stays at about two chunks whatever the size of the file. Every
// chunk is verified against its id (pack.DecodeBlob) before any byte of it
// reaches fn: a corrupt chunk ends ReadFile with an error wrapping
// pack.ErrCorrupt, and fn has then seen exactly the correct bytes before
// it. fn must not keep the slice after it returns.
func (r *Repo) ReadFile(ctx context.Context, projectID string, n *tree.Node, off, length int64, fn func([]byte) error) error {
	if n.Type != tree.File {
		return fmt.Errorf("%w: %s is a %s, not a file", ErrInvalid, n.Name, n.Type)
	}
	if off < 0 || length < 0 || off > n.Size || length > n.Size-off {
		return fmt.Errorf("%w: range %d+%d outside a file of %d bytes", ErrInvalid, off, length, n.Size)
	}
	end := off + length
	// The chunks that overlap [off, end), with their offsets in the file.
	type span struct {
		ref   tree.ChunkRef
		start int64
	}
	var spans []span
	pos := int64(0)
	for _, c := range n.Chunks {
		cend := pos + int64(c.Size)
		if cend > off && pos < end {
			spans = append(spans, span{c, pos})
		}
		if cend >= end {
			break
		}
		pos = cend
	}
	var stored, plain []byte
	for len(spans) > 0 {
		batch := spans[:min(len(spans), readLocateBatch)]
		spans = spans[len(batch):]
		ids := make([]id.ID, len(batch))
		for i, s := range batch {
			ids[i] = s.ref.ID
		}
		locs, err := r.meta.LocateBlobs(ctx, projectID, ids)
		if err != nil {
			return fmt.Errorf("locate chunks: %w", err)
		}
		for i := 0; i < len(batch); {
			// One GET for a run of chunks stored back to back in one pack.
			first, ok := locs[batch[i].ref.ID]
			if !ok || first.Type != metastore.BlobData {
				return fmt.Errorf("%w: chunk %s of %s", ErrMissing, batch[i].ref.ID.Short(), n.Name)
			}
			j, rangeEnd := i+1, first.Offset+first.Length
			for j < len(batch) {
				l, ok := locs[batch[j].ref.ID]
				if !ok || l.PackID != first.PackID || l.Offset != rangeEnd || l.Offset+l.Length-first.Offset > readMaxRange {
					break
				}
				rangeEnd += l.Length
				j++
			}
			if err := r.readRun(ctx, projectID, first, rangeEnd, func(rc io.Reader) error {
				for k := i; k < j; k++ {
					s := batch[k]
					l := locs[s.ref.ID]
					if l.RawLength != int64(s.ref.Size) {
						return fmt.Errorf("%w: chunk %s is indexed with %d bytes, the tree says %d", pack.ErrCorrupt, s.ref.ID.Short(), l.RawLength, s.ref.Size)
					}
					if int64(cap(stored)) < l.Length {
						stored = make([]byte, l.Length)
					}
					buf := stored[:l.Length]
					if _, err := io.ReadFull(rc, buf); err != nil {
						return fmt.Errorf("read chunk %s: %w", s.ref.ID.Short(), err)
					}
					e := EntryOf(l)
					out, err := pack.DecodeBlob(e, buf, plain)
					if err != nil {
						if out, err = r.chunkFromReplica(ctx, projectID, e, l.PackID, plain, err); err != nil {
							return fmt.Errorf("chunk %s of %s: %w", s.ref.ID.Short(), n.Name, err)
						}
					}
					plain = out
					lo := max(off-s.start, 0)
					hi := min(end-s.start, int64(len(out)))
					if err := fn(out[lo:hi]); err != nil {
						return err
					}
				}
				return nil
			}); err != nil {
				return err
			}
			i = j
		}
	}
	return nil
}

// chunkFromReplica reads a chunk that failed verification (bad) again
// from the replica store, if the blob store has one (package
// replication), and verifies it there.
func (r *Repo) chunkFromReplica(ctx context.Context, projectID string, e pack.Entry, packID id.ID, plain []byte, bad error) ([]byte, error) {
	replica := r.replica()
	if replica == nil {
		return nil, bad
	}
	buf, err := readRangeFrom(ctx, replica, PackKey(projectID, packID), int64(e.Offset), int64(e.Length))
	if err != nil {
		return nil, bad
	}
	out, err := pack.DecodeBlob(e, buf, plain)
	if err != nil {
		return nil, bad
	}
	r.log.Warn("a chunk failed verification on the primary and was read from the replica; run `sandkeep check --read-data`",
		"project", projectID, "pack", packID.Short(), "chunk", e.ID.Short(), "err", bad)
	return out, nil
}

// readRun opens a ranged GET of the pack holding first, from first's offset
// to rangeEnd, and hands it to read.
func (r *Repo) readRun(ctx context.Context, projectID string, first metastore.BlobLocation, rangeEnd int64, read func(io.Reader) error) error {
	rc, err := r.store.Get(ctx, PackKey(projectID, first.PackID), first.Offset, rangeEnd-first.Offset)
	if err != nil {
		return fmt.Errorf("read pack %s: %w", first.PackID.Short(), err)
	}
	defer rc.Close()
	return read(rc)
}

// Rollback makes a new head version, of kind rollback, whose root is the
// root of version number: O(1), nothing is copied, and every version
// before it stays in the history. It commits on the current head, retrying
// when a concurrent commit moved the head in between, so a rollback is never
// lost and never overwrites a committed version: a commit that wins the race
// is kept in the history below the rollback.
func (r *Repo) Rollback(ctx context.Context, projectID string, number int64) (metastore.Version, error) {
	if number <= 0 {
		return metastore.Version{}, fmt.Errorf("%w: version must be positive", ErrInvalid)
	}
	target, err := r.meta.GetVersion(ctx, projectID, number)
	if err != nil {
		return metastore.Version{}, err // names the version and the ones that exist
	}
	var v metastore.Version
	err = onHead(ctx, func(ctx context.Context) error {
		p, err := r.meta.GetProject(ctx, projectID)
		if err != nil {
			return fmt.Errorf("project %s: %w", projectID, err)
		}
		v, err = r.Commit(ctx, projectID, CommitRequest{Parent: p.Head, Root: target.Root, Kind: metastore.KindRollback})
		return err
	})
	if err != nil {
		return metastore.Version{}, err
	}
	r.log.Info("rolled back", "project", projectID, "to", number, "version", v.Number)
	return v, nil
}

// headRetry is how a commit made on the head by the coordinator itself (a
// rollback, a put) retries when a concurrent commit moved the head.
var headRetry = retry.Policy{
	Attempts:  50,
	Backoff:   retry.Backoff{Min: 5 * time.Millisecond, Max: 200 * time.Millisecond},
	Retryable: func(err error) bool { return errors.Is(err, metastore.ErrConflict) }, // the head moved: again on the new one
}

// onHead runs commit, which commits on the current head, until it does not
// lose the race (headRetry). If ctx ends before the attempts do, it waits
// for that and returns ctx's error, not the last conflict.
func onHead(ctx context.Context, commit func(context.Context) error) error {
	attempts := 0
	err := retry.Do(ctx, headRetry, func(ctx context.Context) error {
		attempts++
		return commit(ctx)
	})
	if errors.Is(err, metastore.ErrConflict) && attempts < headRetry.Attempts {
		<-ctx.Done() // retry.Do stopped early: ctx ends before the next attempt
		return ctx.Err()
	}
	return err
}
