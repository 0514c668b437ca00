package repo

import (
	"context"
	"fmt"
	"slices"
	"sort"
	"time"

	"github.com/sandkeep/sandkeep/internal/blobstore"
	"github.com/sandkeep/sandkeep/internal/id"
	"github.com/sandkeep/sandkeep/internal/metastore"
	"github.com/sandkeep/sandkeep/internal/tree"
)

func timeOf(ns int64) time.Time { return time.Unix(0, ns).UTC() }

// PlanEntry is one workspace entry to create.
type PlanEntry struct {
	Path string
	Node *tree.Node
}

// PlanBlob is one blob inside a PlanRange.
type PlanBlob struct {
	ID        id.ID
	Offset    int64 // within the range
	Length    int64
	RawLength int64
	Codec     uint8
	RawOffset int64 // a group member's start in its frame's plaintext
}

// PlanRange is one ranged read of a pack.
type PlanRange struct {
	PackID id.ID
	Offset int64
	Length int64
	Blobs  []PlanBlob
	URL    blobstore.SignedURL
	// Fallback is the pack in the replica bucket, if there is one (a
	// chunk failing verification is read again from there).
	Fallback *blobstore.SignedURL
}

// PlanBatch is a bounded part of a restore plan: entries (parents first) and
// the ranges holding every chunk their files need.
type PlanBatch struct {
	Entries []PlanEntry
	Ranges  []PlanRange
}

// PlanOptions bound the batches.
type PlanOptions struct {
	MaxEntries int   // default 2000
	MaxBytes   int64 // file bytes per batch, default 256 MiB
	// MaxGap: neighbouring chunks of one pack closer than this are fetched
	// in one range (default 1 MiB).
	MaxGap int64
	// MaxRange bounds one merged range (default 16 MiB).
	MaxRange int64
}

// Plan walks version v's tree depth-first and calls emit with batches. The
// memory it holds is one batch plus the current path of trees.
func (r *Repo) Plan(ctx context.Context, projectID string, v metastore.Version, opts PlanOptions, emit func(PlanBatch) error) error {
	if opts.MaxEntries <= 0 {
		opts.MaxEntries = 2000
	}
	if opts.MaxBytes <= 0 {
		opts.MaxBytes = 256 << 20
	}
	if opts.MaxGap <= 0 {
		opts.MaxGap = 1 << 20
	}
	if opts.MaxRange <= 0 {
		opts.MaxRange = 16 << 20
	}
	p := &planner{r: r, ctx: ctx, project: projectID, opts: opts, emit: emit}
	if err := p.walk(v.Root, ""); err != nil {
		return err
	}
	return p.flush()
}

type planner struct {
	r       *Repo
	ctx     context.Context
	project string
	opts    PlanOptions
	emit    func(PlanBatch) error
	entries []PlanEntry
	bytes   int64
}

func (p *planner) walk(tid id.ID, dir string) error {
	if err := p.ctx.Err(); err != nil {
		return err
	}
	t, err := p.r.LoadTree(p.ctx, p.project, tid)
	if err != nil {
		return err
	}
	for i := range t.Nodes {
		n := &t.Nodes[i]
		path := join(dir, n.Name)
		p.entries = append(p.entries, PlanEntry{Path: path, Node: n})
		p.bytes += n.Size
		if len(p.entries) >= p.opts.MaxEntries || p.bytes >= p.opts.MaxBytes {
			if err := p.flush(); err != nil {
				return err
			}
		}
		if n.Type == tree.Dir {
			if err := p.walk(n.Subtree, path); err != nil {
				return err
			}
		}
	}
	return nil
}

func (p *planner) flush() error {
	if len(p.entries) == 0 {
		return nil
	}
	var ids []id.ID
	seen := make(map[id.ID]bool)
	for _, e := range p.entries {
		for _, c := range e.Node.Chunks {
			if !seen[c.ID] {
				seen[c.ID] = true
				ids = append(ids, c.ID)
			}
		}
	}
	locs, err := p.r.locateAll(p.ctx, p.project, ids)
	if err != nil {
		return err
	}
	for _, cid := range ids {
		if l, ok := locs[cid]; !ok || l.Type != metastore.BlobData {
			return fmt.Errorf("%w: chunk %s", ErrMissing, cid.Short())
		}
	}
	ranges, err := p.ranges(locs)
	if err != nil {
		return err
	}
	b := PlanBatch{Entries: p.entries, Ranges: ranges}
	p.entries, p.bytes = nil, 0
	return p.emit(b)
}

// ranges groups chunk locations by pack, sorts them by offset and merges
// neighbours into ranged reads.
func (p *planner) ranges(locs map[id.ID]metastore.BlobLocation) ([]PlanRange, error) {
	byPack := make(map[id.ID][]metastore.BlobLocation)
	for _, l := range locs {
		byPack[l.PackID] = append(byPack[l.PackID], l)
	}
	packIDs := make([]id.ID, 0, len(byPack))
	for k := range byPack {
		packIDs = append(packIDs, k)
	}
	sort.Slice(packIDs, func(i, j int) bool { return packIDs[i].String() < packIDs[j].String() })
	var out []PlanRange
	for _, pid := range packIDs {
		ls := byPack[pid]
		slices.SortFunc(ls, ComparePlace)
		url, err := p.r.store.SignGet(p.ctx, PackKey(p.project, pid), p.r.urlTTL)
		if err != nil {
			return nil, fmt.Errorf("sign pack %s: %w", pid.Short(), err)
		}
		var fallback *blobstore.SignedURL
		if replica := p.r.replica(); replica != nil {
			if fb, err := replica.SignGet(p.ctx, PackKey(p.project, pid), p.r.urlTTL); err == nil && fb.URL != url.URL {
				fallback = &fb
			}
		}
		var cur *PlanRange
		for i, l := range ls {
			if cur != nil {
				end := cur.Offset + cur.Length
				// ls[i-1] is the last blob of cur.
				sameFrame := EntryOf(l).SameFrame(EntryOf(ls[i-1]))
				if sameFrame || l.Offset-end <= p.opts.MaxGap && l.Offset+l.Length-cur.Offset <= p.opts.MaxRange && l.Offset >= end {
					cur.Length = max(cur.Length, l.Offset+l.Length-cur.Offset)
					cur.Blobs = append(cur.Blobs, planBlob(l, l.Offset-cur.Offset))
					continue
				}
				out = append(out, *cur)
			}
			cur = &PlanRange{PackID: pid, Offset: l.Offset, Length: l.Length, URL: url, Fallback: fallback,
				Blobs: []PlanBlob{planBlob(l, 0)}}
		}
		if cur != nil {
			out = append(out, *cur)
		}
	}
	return out, nil
}

// planBlob is the plan's entry for l at off in its range.
func planBlob(l metastore.BlobLocation, off int64) PlanBlob {
	return PlanBlob{ID: l.ID, Offset: off, Length: l.Length, RawLength: l.RawLength, Codec: l.Codec, RawOffset: l.RawOffset}
}
