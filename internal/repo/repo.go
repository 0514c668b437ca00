// Package repo is the coordinator's view of one project's repository: the
// blob index in the metadata store, the pack objects in the blob store, and
// the Merkle trees that versions name. It holds the rules that make a version
// trustworthy: a pack is indexed only after its object is verified in the
// store, a tree is stored only when everything it names is stored, and a
// version is committed only on the current head.
package repo

import (
	"bytes"
	"cmp"
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"path"
	"time"

	"github.com/sandkeep/sandkeep/internal/blobstore"
	"github.com/sandkeep/sandkeep/internal/id"
	"github.com/sandkeep/sandkeep/internal/metastore"
	"github.com/sandkeep/sandkeep/internal/pack"
	"github.com/sandkeep/sandkeep/internal/tree"
)

var (
	// ErrInvalid: the request is malformed (bad id, size out of range, a
	// tree that does not decode). The same sentinel as metastore's: one per
	// meaning.
	ErrInvalid = metastore.ErrInvalid
	// ErrCorrupt: an uploaded object does not match what the agent claimed.
	ErrCorrupt = errors.New("uploaded object is corrupt")
	// ErrMissing: a tree or version names a blob the project does not store
	// (metastore's sentinel).
	ErrMissing = metastore.ErrMissing
	// ErrTooLarge: a request exceeds a limit.
	ErrTooLarge = errors.New("request too large")
	// ErrPackStored: an upload target was asked for a pack the project
	// already stores; there is nothing to upload (and no URL is ever signed
	// for an object a row names).
	ErrPackStored = errors.New("pack already stored")
)

// Limits.
const (
	// MaxPackSize is the largest pack an agent may upload.
	MaxPackSize = 64 << 20
	// MaxIDsPerCall bounds FindMissingChunks and similar calls.
	MaxIDsPerCall = 10000
	// MaxTreeBytesPerCall bounds one UploadTrees call.
	MaxTreeBytesPerCall = 16 << 20
)

// Options configure a Repo.
type Options struct {
	// URLTTL is the lifetime of signed URLs handed to agents (default 15m).
	URLTTL time.Duration
	// TreeCacheBytes bounds the decoded-tree cache (default 64 MiB).
	TreeCacheBytes int64
	Logger         *slog.Logger
	// VerifyConcurrency bounds how many uploaded packs are read back and
	// verified at once (default 4).
	VerifyConcurrency int
	// OnTokensRevoked, if set, is called by DeleteProject once the
	// project's tokens are revoked, before anything is deleted (the server
	// ends the project's agent sessions).
	OnTokensRevoked func(projectID string)
}

// Repo serves every project of one coordinator.
type Repo struct {
	meta   metastore.Store
	store  blobstore.Backend
	trees  *treeCache
	urlTTL time.Duration
	log    *slog.Logger
	// onRevoked is Options.OnTokensRevoked.
	onRevoked func(projectID string)
	// verifySem bounds concurrent pack verifications (verify.go).
	verifySem chan struct{}
	// expansions memoizes what trees expand to (limits.go).
	expansions expansionCache
}

// New returns a Repo over meta and store.
func New(meta metastore.Store, store blobstore.Backend, opts Options) *Repo {
	if opts.URLTTL <= 0 {
		opts.URLTTL = 15 * time.Minute
	}
	if opts.TreeCacheBytes <= 0 {
		opts.TreeCacheBytes = 64 << 20
	}
	if opts.Logger == nil {
		opts.Logger = slog.Default()
	}
	if opts.VerifyConcurrency <= 0 {
		opts.VerifyConcurrency = 4
	}
	return &Repo{meta: meta, store: store, trees: newTreeCache(opts.TreeCacheBytes), urlTTL: opts.URLTTL, log: opts.Logger,
		onRevoked: opts.OnTokensRevoked, verifySem: make(chan struct{}, opts.VerifyConcurrency)}
}

// Meta returns the metadata store.
func (r *Repo) Meta() metastore.Store { return r.meta }

// Store returns the blob store.
func (r *Repo) Store() blobstore.Backend { return r.store }

// replica is the replica bucket of the blob store (package replication),
// or nil.
func (r *Repo) replica() blobstore.Backend {
	if rs, ok := r.store.(interface{ Replica() blobstore.Backend }); ok {
		return rs.Replica()
	}
	return nil
}

// PackKey is the object key of a pack.
func PackKey(projectID string, packID id.ID) string {
	h := packID.String()
	return "projects/" + projectID + "/packs/" + h[:2] + "/" + h
}

// ParsePackKey returns the pack id a pack key of the project names; false
// for any other key.
func ParsePackKey(projectID, key string) (id.ID, bool) {
	p, err := id.Parse(path.Base(key))
	if err != nil || key != PackKey(projectID, p) {
		return id.ID{}, false
	}
	return p, true
}

// VersionKey is the object key of a version record.
func VersionKey(projectID string, number int64) string {
	return fmt.Sprintf("projects/%s/versions/%020d", projectID, number)
}

// ProjectPrefix is the key prefix holding every object of a project.
func ProjectPrefix(projectID string) string { return "projects/" + projectID + "/" }

// MissingBlobs returns the ids the project does not store.
func (r *Repo) MissingBlobs(ctx context.Context, projectID string, ids []id.ID) ([]id.ID, error) {
	if len(ids) > MaxIDsPerCall {
		return nil, fmt.Errorf("%w: %d ids, at most %d per call", ErrTooLarge, len(ids), MaxIDsPerCall)
	}
	return r.meta.MissingBlobs(ctx, projectID, ids)
}

// PackRef names an uploaded (or to be uploaded) pack.
type PackRef struct {
	ID   id.ID
	Size int64
}

func checkPackRef(p PackRef) error {
	if p.ID.IsZero() {
		return fmt.Errorf("%w: zero pack id", ErrInvalid)
	}
	if p.Size < pack.TrailerSize || p.Size > MaxPackSize {
		return fmt.Errorf("%w: pack %s size %d out of range [%d, %d]", ErrInvalid, p.ID.Short(), p.Size, pack.TrailerSize, MaxPackSize)
	}
	return nil
}

// UploadTargets signs one create-only PUT URL per pack. A pack the project
// already stores (live in the index) is refused with ErrPackStored: no URL is
// ever signed for an object that a row names, and the store refuses a signed
// PUT over any existing object (see blobstore.Signer), so an agent can
// neither replace nor remove a committed pack.
func (r *Repo) UploadTargets(ctx context.Context, projectID string, packs []PackRef) ([]blobstore.SignedURL, error) {
	if len(packs) > 1000 {
		return nil, fmt.Errorf("%w: %d packs, at most 1000 per call", ErrTooLarge, len(packs))
	}
	ids := make([]id.ID, len(packs))
	for i, p := range packs {
		if err := checkPackRef(p); err != nil {
			return nil, err
		}
		ids[i] = p.ID
	}
	known, err := r.meta.GetPacks(ctx, projectID, ids)
	if err != nil {
		return nil, fmt.Errorf("look up packs: %w", err)
	}
	out := make([]blobstore.SignedURL, 0, len(packs))
	for _, p := range packs {
		if k, ok := known[p.ID]; ok && k.CondemnedAt.IsZero() && !k.Deleting {
			return nil, fmt.Errorf("%w: pack %s", ErrPackStored, p.ID.Short())
		}
		u, err := r.store.SignPut(ctx, PackKey(projectID, p.ID), p.Size, r.urlTTL)
		if err != nil {
			return nil, fmt.Errorf("sign upload of pack %s: %w", p.ID.Short(), err)
		}
		out = append(out, u)
	}
	return out, nil
}

// CompletePacks verifies uploaded data packs and indexes their chunks. Each
// pack is read back whole and checked (verifyPack): its size, its footer
// (only data chunks, within the chunk size limit), every chunk's BLAKE3
// against its id and the object's hash against the pack id. Nothing of a pack
// is indexed unless all of it verifies. A pack that fails and that no row
// names is deleted, so an honest upload can take its key. A pack already live
// in the index is skipped (it was verified when indexed).
func (r *Repo) CompletePacks(ctx context.Context, projectID string, packs []PackRef) (int, error) {
	if len(packs) > 1000 {
		return 0, fmt.Errorf("%w: %d packs, at most 1000 per call", ErrTooLarge, len(packs))
	}
	ids := make([]id.ID, len(packs))
	for i, p := range packs {
		if err := checkPackRef(p); err != nil {
			return 0, err
		}
		ids[i] = p.ID
	}
	known, err := r.meta.GetPacks(ctx, projectID, ids)
	if err != nil {
		return 0, fmt.Errorf("look up packs: %w", err)
	}
	total := 0
	for _, p := range packs {
		k, indexed := known[p.ID]
		if indexed && k.CondemnedAt.IsZero() && !k.Deleting {
			if k.Size != p.Size {
				return total, fmt.Errorf("%w: pack %s is stored with %d bytes, %d claimed", ErrInvalid, p.ID.Short(), k.Size, p.Size)
			}
			continue
		}
		n := 0
		err := r.indexPack(ctx, metastore.Pack{ProjectID: projectID, ID: p.ID, Type: metastore.BlobData, Size: p.Size}, func() ([]metastore.BlobLocation, error) {
			entries, err := r.readFooter(ctx, projectID, p)
			if err != nil {
				return nil, err
			}
			locs := make([]metastore.BlobLocation, 0, len(entries))
			for _, e := range entries {
				if e.Type != pack.Data {
					return nil, fmt.Errorf("%w: pack %s holds a blob of type %d; agents upload data packs only", ErrCorrupt, p.ID.Short(), e.Type)
				}
				locs = append(locs, LocationOf(p.ID, e))
			}
			if err := r.verifyPack(ctx, PackKey(projectID, p.ID), p, entries); err != nil {
				return nil, err
			}
			n = len(entries)
			return locs, nil
		})
		if err != nil {
			if errors.Is(err, ErrCorrupt) && !indexed {
				r.dropUnindexed(ctx, projectID, p.ID)
			}
			return total, fmt.Errorf("index pack %s: %w", p.ID.Short(), err)
		}
		if t, ok := r.store.(blobstore.Tracker); ok {
			// Replication copies it: once verified, so that what a
			// sandbox claims cannot fill the queue.
			if err := t.Written(ctx, PackKey(projectID, p.ID), p.Size); err != nil {
				return total, err
			}
		}
		total += n
	}
	return total, nil
}

// dropUnindexed deletes the object of a pack that failed verification, if
// still no row names it (a bad upload must not block the key for an honest
// one; the signed PUTs are create-only).
func (r *Repo) dropUnindexed(ctx context.Context, projectID string, packID id.ID) {
	known, err := r.meta.GetPacks(ctx, projectID, []id.ID{packID})
	if err != nil || len(known) > 0 {
		return
	}
	if err := r.store.Delete(ctx, PackKey(projectID, packID)); err != nil {
		r.log.Warn("delete a pack that failed verification", "project", projectID, "pack", packID.Short(), "err", err)
		return
	}
	r.log.Warn("deleted an uploaded pack that failed verification", "project", projectID, "pack", packID.Short())
}

// EntryOf is the pack entry of an indexed blob (LocationOf's inverse).
func EntryOf(l metastore.BlobLocation) pack.Entry {
	return pack.Entry{ID: l.ID, Offset: uint64(l.Offset), Length: uint32(l.Length), RawLength: uint32(l.RawLength), Type: pack.BlobType(l.Type), Codec: pack.Codec(l.Codec), RawOffset: uint32(l.RawOffset)}
}

// LocationOf is the index location of blob e of pack packID (EntryOf's
// inverse).
func LocationOf(packID id.ID, e pack.Entry) metastore.BlobLocation {
	return metastore.BlobLocation{
		ID: e.ID, Type: metastore.BlobType(e.Type), PackID: packID,
		Offset: int64(e.Offset), Length: int64(e.Length), RawLength: int64(e.RawLength), Codec: uint8(e.Codec), RawOffset: int64(e.RawOffset),
	}
}

// ComparePlace orders blob locations as their bytes lie in a pack: by
// offset, then the members of a group frame by where they start in it.
func ComparePlace(a, b metastore.BlobLocation) int {
	return cmp.Or(cmp.Compare(a.Offset, b.Offset), cmp.Compare(a.RawOffset, b.RawOffset))
}

func (r *Repo) readFooter(ctx context.Context, projectID string, p PackRef) ([]pack.Entry, error) {
	key := PackKey(projectID, p.ID)
	size, err := r.store.Stat(ctx, key)
	if errors.Is(err, blobstore.ErrNotFound) {
		return nil, fmt.Errorf("%w: pack %s was not uploaded", ErrMissing, p.ID.Short())
	}
	if err != nil {
		return nil, fmt.Errorf("stat pack %s: %w", p.ID.Short(), err)
	}
	if size != p.Size {
		return nil, fmt.Errorf("%w: pack %s is %d bytes in the store, %d claimed", ErrCorrupt, p.ID.Short(), size, p.Size)
	}
	trailer, err := r.readRange(ctx, key, size-pack.TrailerSize, pack.TrailerSize)
	if err != nil {
		return nil, err
	}
	_, footerLen, err := pack.ParseTrailer(trailer)
	if err != nil {
		return nil, fmt.Errorf("%w: pack %s: %v", ErrCorrupt, p.ID.Short(), err)
	}
	if int64(footerLen) > size {
		return nil, fmt.Errorf("%w: pack %s footer longer than the pack", ErrCorrupt, p.ID.Short())
	}
	footer, err := r.readRange(ctx, key, size-int64(footerLen), int64(footerLen))
	if err != nil {
		return nil, err
	}
	entries, err := pack.ParseFooter(footer, size)
	if err != nil {
		return nil, fmt.Errorf("%w: pack %s: %v", ErrCorrupt, p.ID.Short(), err)
	}
	return entries, nil
}

func (r *Repo) readRange(ctx context.Context, key string, off, n int64) ([]byte, error) {
	return readRangeFrom(ctx, r.store, key, off, n)
}

// readRangeFrom reads n bytes of key at off from st.
func readRangeFrom(ctx context.Context, st blobstore.Store, key string, off, n int64) ([]byte, error) {
	rc, err := st.Get(ctx, key, off, n)
	if err != nil {
		return nil, fmt.Errorf("read %s: %w", key, err)
	}
	defer rc.Close()
	buf := make([]byte, n)
	if _, err := io.ReadFull(rc, buf); err != nil {
		return nil, fmt.Errorf("read %s: %w", key, err)
	}
	return buf, nil
}

// PutTrees validates and stores encoded trees. Each must decode canonically,
// and every chunk and subtree it names must be stored already or come earlier
// in encoded. Trees already stored are skipped. It returns the ids in order.
// Three phases: decode (and collect what they name), check that every name
// is stored with the right type and size, store the new trees in one pack.
func (r *Repo) PutTrees(ctx context.Context, projectID string, encoded [][]byte) ([]id.ID, error) {
	total := 0
	for _, b := range encoded {
		total += len(b)
	}
	if total > MaxTreeBytesPerCall {
		return nil, fmt.Errorf("%w: %d bytes of trees, at most %d per call", ErrTooLarge, total, MaxTreeBytesPerCall)
	}
	b, err := decodeTreeBatch(encoded)
	if err != nil {
		return nil, err
	}
	locs, err := r.locateAll(ctx, projectID, b.refs)
	if err != nil {
		return nil, err
	}
	if err := b.checkRefs(locs); err != nil {
		return nil, err
	}
	if err := r.storeTrees(ctx, projectID, b); err != nil {
		return nil, err
	}
	return b.ids, nil
}

// treeBatch is one PutTrees call's trees, decoded.
type treeBatch struct {
	encoded [][]byte
	ids     []id.ID
	trees   []*tree.Tree
	inBatch map[id.ID]int // tree id -> its first index in the batch
	refs    []id.ID       // every chunk and subtree named, once, not counting subtrees earlier in the batch
}

// decodeTreeBatch decodes every tree strictly and collects what they name.
func decodeTreeBatch(encoded [][]byte) (*treeBatch, error) {
	b := &treeBatch{encoded: encoded, ids: make([]id.ID, len(encoded)), trees: make([]*tree.Tree, len(encoded)),
		inBatch: make(map[id.ID]int, len(encoded))}
	seen := make(map[id.ID]bool)
	ref := func(x id.ID) {
		if !seen[x] {
			seen[x] = true
			b.refs = append(b.refs, x)
		}
	}
	for i, enc := range encoded {
		t, err := tree.Decode(enc)
		if err != nil {
			return nil, fmt.Errorf("%w: tree %d: %v", ErrInvalid, i, err)
		}
		b.ids[i] = id.Sum(enc)
		b.trees[i] = t
		for _, n := range t.Nodes {
			switch n.Type {
			case tree.Dir:
				if !b.earlier(n.Subtree, i) {
					ref(n.Subtree)
				}
			case tree.File:
				for _, c := range n.Chunks {
					ref(c.ID)
				}
			}
		}
		if _, dup := b.inBatch[b.ids[i]]; !dup {
			b.inBatch[b.ids[i]] = i
		}
	}
	return b, nil
}

// earlier reports whether subtree x comes before tree i in the batch.
func (b *treeBatch) earlier(x id.ID, i int) bool {
	j, ok := b.inBatch[x]
	return ok && j < i
}

// checkRefs: every subtree a tree names is a stored tree (or an earlier one
// of the batch), every chunk a stored data blob of the size the tree says.
func (b *treeBatch) checkRefs(locs map[id.ID]metastore.BlobLocation) error {
	for i, t := range b.trees {
		for _, n := range t.Nodes {
			switch n.Type {
			case tree.Dir:
				if b.earlier(n.Subtree, i) {
					continue
				}
				if l, ok := locs[n.Subtree]; !ok || l.Type != metastore.BlobTree {
					return fmt.Errorf("%w: tree %d entry %q names subtree %s", ErrMissing, i, n.Name, n.Subtree.Short())
				}
			case tree.File:
				for _, c := range n.Chunks {
					l, ok := locs[c.ID]
					if !ok || l.Type != metastore.BlobData {
						return fmt.Errorf("%w: tree %d file %q names chunk %s", ErrMissing, i, n.Name, c.ID.Short())
					}
					if l.RawLength != int64(c.Size) {
						return fmt.Errorf("%w: tree %d file %q says chunk %s has %d bytes, stored %d", ErrInvalid, i, n.Name, c.ID.Short(), c.Size, l.RawLength)
					}
				}
			}
		}
	}
	return nil
}

// storeTrees stores the batch's trees not stored yet in one tree pack (a
// tree stored only in a pack garbage collection condemned is stored again:
// see gchooks.go) and caches every tree of the batch.
func (r *Repo) storeTrees(ctx context.Context, projectID string, b *treeBatch) error {
	have, err := r.storedLive(ctx, projectID, b.ids)
	if err != nil {
		return err
	}
	w := pack.NewWriter()
	added := make(map[id.ID]bool)
	for i, enc := range b.encoded {
		if have[b.ids[i]] || added[b.ids[i]] {
			continue
		}
		added[b.ids[i]] = true
		if _, err := w.Add(pack.Tree, b.ids[i], enc); err != nil {
			return fmt.Errorf("pack tree: %w", err)
		}
	}
	for i, t := range b.trees {
		r.trees.put(projectID, b.ids[i], t, int64(len(b.encoded[i])))
	}
	if w.Len() == 0 {
		return nil
	}
	data, packID, entries, err := w.Finish()
	if err != nil {
		return fmt.Errorf("finish tree pack: %w", err)
	}
	locsOut := make([]metastore.BlobLocation, len(entries))
	for i, e := range entries {
		locsOut[i] = LocationOf(packID, e)
	}
	err = r.indexPack(ctx, metastore.Pack{ProjectID: projectID, ID: packID, Type: metastore.BlobTree, Size: int64(len(data))}, func() ([]metastore.BlobLocation, error) {
		if err := r.store.Put(ctx, PackKey(projectID, packID), bytes.NewReader(data), int64(len(data))); err != nil {
			return nil, fmt.Errorf("store tree pack: %w", err)
		}
		return locsOut, nil
	})
	if err != nil {
		return fmt.Errorf("index tree pack: %w", err)
	}
	return nil
}

// locateAll calls LocateBlobs in bounded batches.
func (r *Repo) locateAll(ctx context.Context, projectID string, ids []id.ID) (map[id.ID]metastore.BlobLocation, error) {
	out := make(map[id.ID]metastore.BlobLocation, len(ids))
	for start := 0; start < len(ids); start += MaxIDsPerCall {
		end := min(start+MaxIDsPerCall, len(ids))
		m, err := r.meta.LocateBlobs(ctx, projectID, ids[start:end])
		if err != nil {
			return nil, fmt.Errorf("locate blobs: %w", err)
		}
		for k, v := range m {
			out[k] = v
		}
	}
	return out, nil
}

// CommitRequest asks for a new version.
type CommitRequest struct {
	Parent    int64
	Root      id.ID
	Kind      metastore.VersionKind
	SandboxID string
}

// Commit makes a new head version with root req.Root, if req.Parent is the
// current head; otherwise it fails with metastore.ErrConflict. It updates the
// project_files listing in the same transaction and writes a version record
// to the bucket so the database can be rebuilt from the bucket alone.
func (r *Repo) Commit(ctx context.Context, projectID string, req CommitRequest) (metastore.Version, error) {
	if req.Root.IsZero() {
		return metastore.Version{}, fmt.Errorf("%w: zero root", ErrInvalid)
	}
	if req.Parent < 0 {
		return metastore.Version{}, fmt.Errorf("%w: negative parent", ErrInvalid)
	}
	proj, err := r.meta.GetProject(ctx, projectID)
	if err != nil {
		return metastore.Version{}, fmt.Errorf("project %s: %w", projectID, err)
	}
	if proj.Head != req.Parent {
		return metastore.Version{}, fmt.Errorf("commit on version %d, head is %d: %w", req.Parent, proj.Head, metastore.ErrConflict)
	}
	locs, err := r.meta.LocateBlobs(ctx, projectID, []id.ID{req.Root})
	if err != nil {
		return metastore.Version{}, fmt.Errorf("locate root: %w", err)
	}
	if l, ok := locs[req.Root]; !ok || l.Type != metastore.BlobTree {
		return metastore.Version{}, fmt.Errorf("%w: root tree %s", ErrMissing, req.Root.Short())
	}
	// A forged tree can name one chunk or subtree many times over: refuse a
	// version that expands past the project's limits before anything walks
	// it. (A rollback re-commits a root that was accepted once.)
	if req.Kind != metastore.KindRollback {
		lim, err := r.Limits(ctx, projectID)
		if err != nil {
			return metastore.Version{}, err
		}
		if _, err := r.CheckExpansion(ctx, projectID, req.Root, lim); err != nil {
			return metastore.Version{}, err
		}
	}
	var old metastore.Version
	if req.Parent > 0 {
		if old, err = r.meta.GetVersion(ctx, projectID, req.Parent); err != nil {
			return metastore.Version{}, fmt.Errorf("parent version: %w", err)
		}
	}
	changes, files, bytes, err := r.fileChanges(ctx, projectID, old, req.Root)
	if err != nil {
		return metastore.Version{}, err
	}
	// What garbage collection needs (see gchooks.go): the store commits only
	// if every blob the new tree adds to the parent's is in a live pack.
	if changes.Requires, err = r.newRefs(ctx, projectID, old.Root, req.Root); err != nil {
		return metastore.Version{}, fmt.Errorf("references of the new tree: %w", err)
	}
	v, err := r.meta.CommitVersion(ctx, metastore.Version{
		ProjectID: projectID, Parent: req.Parent, Root: req.Root, Kind: req.Kind,
		SandboxID: req.SandboxID, Files: files, Bytes: bytes,
	}, changes)
	if errors.Is(err, metastore.ErrMissing) {
		return metastore.Version{}, fmt.Errorf("commit: %w: %w", ErrMissing, err)
	}
	if err != nil {
		return metastore.Version{}, fmt.Errorf("commit: %w", err)
	}
	if err := r.writeVersionRecord(ctx, v); err != nil {
		// The version is committed and every blob it names is stored; the
		// record only serves a rebuild of the database from the bucket.
		r.log.Warn("write version record", "project", projectID, "version", v.Number, "err", err)
	}
	return v, nil
}
