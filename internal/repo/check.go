package repo

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"slices"
	"strconv"
	"time"

	"github.com/sandkeep/sandkeep/internal/blobstore"
	"github.com/sandkeep/sandkeep/internal/id"
	"github.com/sandkeep/sandkeep/internal/metastore"
	"github.com/sandkeep/sandkeep/internal/pack"
	"github.com/sandkeep/sandkeep/internal/retry"
	"github.com/sandkeep/sandkeep/internal/tree"
)

// Checking what is stored (`sandkeep check`, and the periodic scrub of
// `serve --scrub-interval`), like restic check: from the database, every
// blob the project's versions reach (trees and chunks) must be indexed, and
// every pack holding one must exist in the bucket, long enough; with
// ReadDataPercent, that share of those packs is read back and each of their
// indexed chunks decoded and hashed. A problem names the pack, the chunk,
// the versions that need it and, at the newest of them, the files. Repair
// forgets a bad chunk's index row (metastore.Store.ForgetBlobs): it is then
// missing, so an agent whose workspace still has the file uploads it again
// at its next full read (a fresh `sandkeep-agent sync --once`, or any sync
// whose trees name it), and the versions that name it restore again.

// Problem kinds.
const (
	ProblemMissingBlob   = "missing_blob"   // a version reaches a blob the index does not know
	ProblemMissingPack   = "missing_pack"   // the pack object is gone
	ProblemShortPack     = "short_pack"     // the pack object is shorter than its indexed chunks reach
	ProblemBadChunk      = "bad_chunk"      // the stored bytes do not decode to the chunk's id
	ProblemBadTree       = "bad_tree"       // a version's tree cannot be read
	ProblemBadFooter     = "bad_footer"     // the pack's footer is unreadable: its chunks are fine, but a rebuild from the bucket could not index it
	ProblemNotReplicated = "not_replicated" // the replica bucket lacks a needed pack (or holds another length)
)

// CheckOptions choose what a check does.
type CheckOptions struct {
	ProjectID       string  // "" checks every project
	ReadDataPercent float64 // 0..100: share of the packs read back
	Repair          bool
	// Replica also compares the replica bucket (serve --replica-s3-bucket):
	// every needed pack must be there with its length. Repair queues a
	// copy of those that are not.
	Replica bool
	// RateBytesPerSecond bounds the bytes read per second (0: no bound).
	RateBytesPerSecond int64
	Progress           func(RepairProgress)
	// Sample decides whether a pack is read (default: at random with
	// probability ReadDataPercent/100).
	Sample func(packID id.ID) bool
}

// CheckReport says what a check found.
type CheckReport struct {
	Projects, Packs, PacksRead int
	BytesRead                  int64
	Problems                   []CheckProblem
	ChunksDropped              int
	ReadDataPercent            float64
}

// CheckProblem is one thing wrong with what is stored.
type CheckProblem struct {
	ProjectID, Kind string
	PackID, ChunkID id.ID
	Detail          string
	Versions        []int64  // kept versions that need the chunk, newest first (at most maxNamed)
	Paths           []string // files (or directories) needing it at the newest of them (at most maxNamed)
	Repaired        bool
	// blobs are the indexed chunks of a missing, short or unreplicated
	// pack; size is the pack's length on the primary.
	blobs []id.ID
	size  int64
}

const maxNamed = 100

// ProblemKinds lists the kind of each problem (what the metrics count).
func (rep CheckReport) ProblemKinds() []string {
	out := make([]string, len(rep.Problems))
	for i, p := range rep.Problems {
		out[i] = p.Kind
	}
	return out
}

// Check checks opts.ProjectID, or every project.
func (r *Repo) Check(ctx context.Context, opts CheckOptions) (CheckReport, error) {
	rep := CheckReport{ReadDataPercent: min(max(opts.ReadDataPercent, 0), 100)}
	if opts.Sample == nil {
		pct := rep.ReadDataPercent
		opts.Sample = func(id.ID) bool { return pct >= 100 || rand.Float64()*100 < pct }
	}
	if opts.Progress == nil {
		opts.Progress = func(RepairProgress) {}
	}
	projects := []string{opts.ProjectID}
	if opts.ProjectID == "" {
		ps, err := r.meta.ListProjects(ctx)
		if err != nil {
			return rep, fmt.Errorf("list projects: %w", err)
		}
		projects = projects[:0]
		for _, p := range ps {
			projects = append(projects, p.ID)
		}
	}
	c := &checker{r: r, opts: opts, rep: &rep, start: time.Now()}
	if opts.Replica {
		rs, ok := r.store.(replicated)
		if !ok {
			return rep, fmt.Errorf("%w: no replica bucket is configured (serve --replica-s3-bucket)", ErrInvalid)
		}
		c.replica = rs
	}
	for _, pid := range projects {
		if err := c.project(ctx, pid); err != nil {
			if opts.ProjectID == "" && errors.Is(err, metastore.ErrNotFound) {
				continue // deleted while we went through the list
			}
			return rep, fmt.Errorf("check project %s: %w", pid, err)
		}
		rep.Projects++
	}
	return rep, nil
}

// checker is one check run.
type checker struct {
	r       *Repo
	opts    CheckOptions
	rep     *CheckReport
	start   time.Time
	replica replicated // with CheckOptions.Replica
}

// replicated is a blob store with a replica bucket (package replication).
type replicated interface {
	Replica() blobstore.Backend
	blobstore.Tracker
}

func (c *checker) project(ctx context.Context, pid string) error {
	versions, err := c.r.allVersions(ctx, pid)
	if err != nil {
		return err
	}
	byPack, problems, err := c.locate(ctx, pid, versions)
	if err != nil {
		return err
	}
	ps, err := c.packs(ctx, pid, byPack)
	if err != nil {
		return err
	}
	if problems = append(problems, ps...); len(problems) == 0 {
		return nil
	}
	// Who needs what is wrong; repair.
	if err := c.r.nameProblems(ctx, pid, versions, problems); err != nil {
		return err
	}
	if c.opts.Repair {
		if err := c.repair(ctx, pid, problems); err != nil {
			return err
		}
	}
	c.rep.Problems = append(c.rep.Problems, problems...)
	return nil
}

// locate finds every blob the versions reach and where the index puts
// it, by pack.
func (c *checker) locate(ctx context.Context, pid string, versions []metastore.Version) (map[id.ID][]metastore.BlobLocation, []CheckProblem, error) {
	var problems []CheckProblem
	w := refWalker{r: c.r, ctx: ctx, project: pid, seen: map[id.ID]bool{}, pairs: map[[2]id.ID]bool{}}
	for _, v := range versions {
		if err := w.walk(id.ID{}, v.Root); err != nil {
			if ctx.Err() != nil {
				return nil, nil, ctx.Err()
			}
			problems = append(problems, CheckProblem{ProjectID: pid, Kind: ProblemBadTree, Versions: []int64{v.Number},
				Detail: fmt.Sprintf("version %d: %v", v.Number, err)})
		}
	}
	byPack := map[id.ID][]metastore.BlobLocation{}
	for batch := range slices.Chunk(w.out, 10_000) {
		locs, err := c.r.meta.LocateBlobs(ctx, pid, batch)
		if err != nil {
			return nil, nil, err
		}
		for _, x := range batch {
			l, ok := locs[x]
			if !ok {
				problems = append(problems, CheckProblem{ProjectID: pid, Kind: ProblemMissingBlob, ChunkID: x, Detail: "no pack holds it"})
				continue
			}
			byPack[l.PackID] = append(byPack[l.PackID], l)
		}
	}
	return byPack, problems, nil
}

// packs checks the packs: present, long enough, on the replica (with
// CheckOptions.Replica) and, sampled, every chunk sound.
func (c *checker) packs(ctx context.Context, pid string, byPack map[id.ID][]metastore.BlobLocation) ([]CheckProblem, error) {
	sizes, err := c.r.packSizes(ctx, c.r.store, pid)
	if err != nil {
		return nil, err
	}
	var replicaSizes map[id.ID]int64
	if c.replica != nil {
		if replicaSizes, err = c.r.packSizes(ctx, c.replica.Replica(), pid); err != nil {
			return nil, fmt.Errorf("replica: %w", err)
		}
	}
	packIDs := make([]id.ID, 0, len(byPack))
	for p := range byPack {
		packIDs = append(packIDs, p)
	}
	slices.SortFunc(packIDs, func(a, b id.ID) int { return cmp.Compare(a.String(), b.String()) })
	var problems []CheckProblem
	for i, p := range packIDs {
		ps, err := c.pack(ctx, pid, p, byPack[p], sizes)
		if err != nil {
			return nil, err
		}
		problems = append(problems, ps...)
		if size, ok := sizes[p]; ok && replicaSizes != nil && replicaSizes[p] != size {
			problems = append(problems, CheckProblem{ProjectID: pid, Kind: ProblemNotReplicated, PackID: p, blobs: locIDs(byPack[p]), size: size,
				Detail: fmt.Sprintf("pack %s is not on the replica bucket with its %d bytes (it may still be queued: sandkeep replication status)", p.Short(), size)})
		}
		c.opts.Progress(RepairProgress{Project: pid, Phase: "packs", Done: i + 1, Total: len(packIDs), Bytes: c.rep.BytesRead})
	}
	c.rep.Packs += len(packIDs)
	return problems, nil
}

// pack checks one pack holding the chunks locs.
func (c *checker) pack(ctx context.Context, pid string, p id.ID, locs []metastore.BlobLocation, sizes map[id.ID]int64) ([]CheckProblem, error) {
	ids := locIDs(locs)
	size, ok := sizes[p]
	if !ok {
		return []CheckProblem{{ProjectID: pid, Kind: ProblemMissingPack, PackID: p, blobs: ids,
			Detail: fmt.Sprintf("pack %s is not in the bucket; %d chunks in it are needed", p.Short(), len(locs))}}, nil
	}
	slices.SortFunc(locs, ComparePlace)
	last := locs[len(locs)-1]
	if end := last.Offset + last.Length; end > size {
		return []CheckProblem{{ProjectID: pid, Kind: ProblemShortPack, PackID: p, blobs: ids,
			Detail: fmt.Sprintf("pack %s is %d bytes; its chunks reach byte %d", p.Short(), size, end)}}, nil
	}
	if !c.opts.Sample(p) {
		return nil, nil
	}
	entries := make([]pack.Entry, len(locs))
	for i, l := range locs {
		entries[i] = EntryOf(l)
	}
	sc, err := c.r.scanPack(ctx, PackKey(pid, p), PackRef{ID: p, Size: size}, entries)
	if errors.Is(err, ErrMissing) {
		return []CheckProblem{{ProjectID: pid, Kind: ProblemMissingPack, PackID: p, blobs: ids, Detail: fmt.Sprintf("pack %s vanished while checked", p.Short())}}, nil
	}
	if err != nil {
		return nil, err
	}
	c.rep.PacksRead++
	c.rep.BytesRead += sc.Read
	var out []CheckProblem
	for _, b := range sc.Bad {
		out = append(out, CheckProblem{ProjectID: pid, Kind: ProblemBadChunk, PackID: p, ChunkID: b.Entry.ID,
			Detail: fmt.Sprintf("chunk %s in pack %s at offset %d: %v", b.Entry.ID.Short(), p.Short(), b.Entry.Offset, b.Err)})
	}
	if len(sc.Bad) == 0 && !sc.HashOK {
		// Bytes outside the indexed chunks changed: a chunk forgotten by
		// an earlier repair, or the footer a rebuild needs.
		if _, err := c.r.readFooter(ctx, pid, PackRef{ID: p, Size: size}); errors.Is(err, ErrCorrupt) {
			out = append(out, CheckProblem{ProjectID: pid, Kind: ProblemBadFooter, PackID: p,
				Detail: fmt.Sprintf("pack %s: %v (its chunks verify; only a rebuild of the database from the bucket needs the footer)", p.Short(), err)})
		}
	}
	return out, c.throttle(ctx)
}

// throttle sleeps as long as the bytes read so far are ahead of the rate.
func (c *checker) throttle(ctx context.Context) error {
	if c.opts.RateBytesPerSecond <= 0 {
		return nil
	}
	due := time.Duration(float64(c.rep.BytesRead) / float64(c.opts.RateBytesPerSecond) * float64(time.Second))
	if ahead := due - time.Since(c.start); ahead > 0 {
		return retry.Sleep(ctx, ahead)
	}
	return nil
}

// repair forgets the index rows of the chunks the problems name, pack by
// pack.
func (c *checker) repair(ctx context.Context, pid string, problems []CheckProblem) error {
	for i := range problems {
		pr := &problems[i]
		var ids []id.ID
		switch pr.Kind {
		case ProblemNotReplicated:
			// Copy it again (from the primary, which has it).
			if err := c.replica.Written(ctx, PackKey(pid, pr.PackID), pr.size); err != nil {
				return err
			}
			pr.Repaired = true
			continue
		case ProblemBadChunk:
			ids = []id.ID{pr.ChunkID}
		case ProblemMissingPack, ProblemShortPack:
			ids = pr.blobs
		default:
			continue // nothing in the index to forget
		}
		n, err := c.r.meta.ForgetBlobs(ctx, pid, pr.PackID, ids)
		if err != nil {
			return err
		}
		pr.Repaired = true
		c.rep.ChunksDropped += n
	}
	return nil
}

// locIDs returns the ids of locs.
func locIDs(locs []metastore.BlobLocation) []id.ID {
	out := make([]id.ID, len(locs))
	for i, l := range locs {
		out[i] = l.ID
	}
	return out
}

// packSizes lists the project's pack objects in st (one LIST).
func (r *Repo) packSizes(ctx context.Context, st blobstore.Store, pid string) (map[id.ID]int64, error) {
	out := map[id.ID]int64{}
	err := st.List(ctx, ProjectPrefix(pid)+"packs/", func(o blobstore.Object) error {
		if p, ok := ParsePackKey(pid, o.Key); ok {
			out[p] = o.Size
		}
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("list the packs of %s: %w", pid, err)
	}
	return out, nil
}

// allVersions lists every version of the project, newest first.
func (r *Repo) allVersions(ctx context.Context, pid string) ([]metastore.Version, error) {
	var out []metastore.Version
	after := ""
	for {
		vs, err := r.meta.ListVersions(ctx, pid, metastore.ListOptions{Limit: 1000, After: after})
		if err != nil {
			return nil, err
		}
		out = append(out, vs...)
		if len(vs) < 1000 {
			return out, nil
		}
		after = strconv.FormatInt(vs[len(vs)-1].Number, 10)
	}
}

// nameProblems fills each problem's versions (newest first) and, at the
// newest, the paths that need its chunk: for a chunk, the files made of
// it; for a tree, the directories it is.
func (r *Repo) nameProblems(ctx context.Context, pid string, versions []metastore.Version, problems []CheckProblem) error {
	want := map[id.ID][]int{} // chunk or tree id -> problems
	for i, p := range problems {
		if !p.ChunkID.IsZero() {
			want[p.ChunkID] = append(want[p.ChunkID], i)
		}
		for _, x := range p.blobs {
			want[x] = append(want[x], i)
		}
	}
	if len(want) == 0 {
		return nil
	}
	for _, v := range versions {
		found := map[int]bool{}
		err := r.Walk(ctx, pid, v.Root, "", "", func(p string, n *tree.Node) error {
			hit := func(x id.ID) {
				for _, i := range want[x] {
					found[i] = true
					if len(problems[i].Versions) == 0 && len(problems[i].Paths) < maxNamed && !slices.Contains(problems[i].Paths, p) {
						problems[i].Paths = append(problems[i].Paths, p)
					}
				}
			}
			for _, ch := range n.Chunks {
				hit(ch.ID)
			}
			if n.Type == tree.Dir {
				hit(n.Subtree)
			}
			return nil
		})
		if err != nil && ctx.Err() != nil {
			return ctx.Err()
		}
		for i := range found {
			if len(problems[i].Versions) < maxNamed {
				problems[i].Versions = append(problems[i].Versions, v.Number)
			}
		}
	}
	return nil
}
