package snapshot

import (
	"context"

	"github.com/sandkeep/sandkeep/internal/id"
)

// Remote is the part of the coordinator API a snapshot needs. The agent's
// gRPC client implements it; tests use an in-memory fake.
//
// Guarantees a Remote gives:
//   - FindMissing returns the subset of ids (chunks or trees) the project
//     does not store, in input order; it accepts at most MaxIDs ids per call.
//   - UploadPack stores a finished pack (as produced by pack.Writer.Finish)
//     and returns only once its chunks are indexed (signed PUT + CompletePacks).
//     It is idempotent: uploading the same pack twice is harmless. sent,
//     when not nil, is called at most once, as soon as the Remote no longer
//     needs data (the object store holds the bytes; the index follows):
//     from then on the snapshot builds a later pack in data's buffer. Once
//     UploadPack has returned successfully it keeps no reference to data,
//     whether it called sent or not.
//   - UploadTrees stores encoded trees. Every chunk and subtree a tree names
//     must already be stored or come earlier in the same call. Trees must be
//     sent children first. At most MaxTreeBytes of encoded trees per call.
//     It may run while UploadPack calls do (a Run sends trees whose chunks
//     are stored while later packs go up).
//   - Every method may fail transiently; callers retry whole steps, which is
//     safe because everything is content-addressed.
type Remote interface {
	FindMissing(ctx context.Context, ids []id.ID) ([]id.ID, error)
	UploadPack(ctx context.Context, packID id.ID, data []byte, sent func()) error
	UploadTrees(ctx context.Context, trees [][]byte) error
}

// Limits of one Remote call.
const (
	MaxIDs       = 10000
	MaxTreeBytes = 8 << 20
)
