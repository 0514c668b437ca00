package gc

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/sandkeep/sandkeep/internal/blobstore"
	"github.com/sandkeep/sandkeep/internal/id"
	"github.com/sandkeep/sandkeep/internal/metastore"
	"github.com/sandkeep/sandkeep/internal/pack"
	"github.com/sandkeep/sandkeep/internal/progress"
	"github.com/sandkeep/sandkeep/internal/repo"
	"github.com/sandkeep/sandkeep/internal/tree"
)

// Defaults of Options.
const (
	DefaultGrace           = time.Hour
	DefaultRepackThreshold = 0.5
	DefaultMergeBelow      = 1 << 20
	// treePackTarget is the size at which repacking finishes a tree pack:
	// smaller than data packs, since LoadTree reads a whole tree pack.
	treePackTarget = 4 << 20
	// locateBatch is the number of ids per LocateBlobs call.
	locateBatch = repo.MaxIDsPerCall
)

// Options configure a Run.
type Options struct {
	// ProjectID limits the run to one project; "" runs every project, one
	// after the other.
	ProjectID string
	// DryRun computes the report without changing anything.
	DryRun bool
	// Grace is how long a condemned pack stays before it is deleted, and
	// how old a pack must be before it is condemned or repacked (default
	// 1h). It must exceed the longest upload-to-commit of an agent and the
	// longest restore. Zero means the default; use a negative value for
	// none (tests).
	Grace time.Duration
	// RepackThreshold: a pack whose live bytes are less than this fraction
	// of its size is repacked (default 0.5). Zero means the default; a
	// negative value disables repacking.
	RepackThreshold float64
	// MergeBelow: packs smaller than this are merged with each other
	// (default 1 MiB). Zero means the default; a negative value disables
	// merging.
	MergeBelow int64
	// URLTTL is the lifetime of the signed upload URLs the coordinator hands
	// out (default 15m): a deleted project's prefix is swept until no URL of
	// it can be valid.
	URLTTL time.Duration
	// Now is the clock (default time.Now).
	Now func() time.Time
	// Logger (default slog.Default()).
	Logger *slog.Logger
}

func (o Options) withDefaults() Options {
	switch {
	case o.Grace == 0:
		o.Grace = DefaultGrace
	case o.Grace < 0:
		o.Grace = 0
	}
	if o.RepackThreshold == 0 {
		o.RepackThreshold = DefaultRepackThreshold
	}
	if o.MergeBelow == 0 {
		o.MergeBelow = DefaultMergeBelow
	}
	if o.Now == nil {
		o.Now = time.Now
	}
	if o.URLTTL <= 0 {
		o.URLTTL = 15 * time.Minute
	}
	if o.Logger == nil {
		o.Logger = slog.Default()
	}
	return o
}

// Report says what a run did (or, for a dry run, would do). Byte counts are
// of pack objects, from the packs table (version records are not counted).
type Report struct {
	DryRun bool
	Grace  time.Duration
	// Projects is the number of projects collected without error.
	Projects int
	// VersionsDeleted counts versions the retention policy dropped.
	VersionsDeleted int
	// PacksDeleted counts pack objects deleted (condemned in an earlier run
	// at least Grace ago).
	PacksDeleted int
	// PacksRepacked counts packs whose live blobs were copied into new
	// packs (mostly dead, or small and merged); they are condemned.
	PacksRepacked int
	// PacksWritten counts the new packs repacking wrote.
	PacksWritten int
	// PacksCondemned counts packs condemned by this run (dead ones and
	// repacked ones), to be deleted by a run at least Grace later.
	PacksCondemned int
	// PacksRescued counts condemned packs made live again because a kept
	// version references one of their blobs after all.
	PacksRescued int
	// BlobsMissing counts live blobs (reachable from a kept version) that
	// the index does not hold: data lost before this run. Should be 0.
	BlobsMissing int
	// BlobsCorrupt counts live blobs whose stored bytes failed verification
	// while being repacked (their packs are kept). Should be 0.
	BlobsCorrupt int
	// BytesFreed is the size of the deleted pack objects.
	BytesFreed int64
	// BytesWritten is the size of the packs repacking wrote.
	BytesWritten int64
	// BytesBefore and BytesAfter are the total size of the pack objects
	// before and after the run.
	BytesBefore, BytesAfter int64
	// BytesCondemned is the size of the packs that are condemned after the
	// run, awaiting deletion.
	BytesCondemned int64
	// OrphansDeleted and OrphanBytes count objects no row named: uploads
	// never completed, and objects stored under a deleted project.
	OrphansDeleted int
	OrphanBytes    int64
	// Failed lists the projects whose collection failed ("id: error") when
	// Options.ProjectID is "".
	Failed []string
}

func (r *Report) add(o Report) {
	r.VersionsDeleted += o.VersionsDeleted
	r.PacksDeleted += o.PacksDeleted
	r.PacksRepacked += o.PacksRepacked
	r.PacksWritten += o.PacksWritten
	r.PacksCondemned += o.PacksCondemned
	r.PacksRescued += o.PacksRescued
	r.BlobsMissing += o.BlobsMissing
	r.BlobsCorrupt += o.BlobsCorrupt
	r.BytesFreed += o.BytesFreed
	r.BytesWritten += o.BytesWritten
	r.OrphansDeleted += o.OrphansDeleted
	r.OrphanBytes += o.OrphanBytes
	r.BytesBefore += o.BytesBefore
	r.BytesAfter += o.BytesAfter
	r.BytesCondemned += o.BytesCondemned
}

// String is the report for people (what `sandkeep gc` prints), e.g.
//
//	gc: 3 projects: 12 versions deleted; 4 packs deleted, 8.0 MiB freed; 2 packs repacked into 1 (1.1 MiB written); 5 packs condemned, 10.2 MiB awaiting deletion after 1h; bucket 45.6 MiB -> 38.7 MiB
func (r Report) String() string {
	var b strings.Builder
	b.WriteString("gc")
	if r.DryRun {
		b.WriteString(" (dry run, nothing changed)")
	}
	fmt.Fprintf(&b, ": %s: %s deleted; %s deleted, %s freed", plural(r.Projects, "project"), plural(r.VersionsDeleted, "version"),
		plural(r.PacksDeleted, "pack"), progress.Bytes(r.BytesFreed))
	if r.PacksRepacked > 0 {
		fmt.Fprintf(&b, "; %s repacked into %d (%s written)", plural(r.PacksRepacked, "pack"), r.PacksWritten, progress.Bytes(r.BytesWritten))
	}
	if r.PacksCondemned > 0 || r.BytesCondemned > 0 {
		fmt.Fprintf(&b, "; %s condemned, %s awaiting deletion after %s", plural(r.PacksCondemned, "pack"), progress.Bytes(r.BytesCondemned),
			shortDuration(r.Grace))
	}
	if r.PacksRescued > 0 {
		fmt.Fprintf(&b, "; %s rescued", plural(r.PacksRescued, "pack"))
	}
	if r.OrphansDeleted > 0 {
		fmt.Fprintf(&b, "; %s no row named deleted (%s)", plural(r.OrphansDeleted, "uploaded object"), progress.Bytes(r.OrphanBytes))
	}
	fmt.Fprintf(&b, "; bucket %s -> %s", progress.Bytes(r.BytesBefore), progress.Bytes(r.BytesAfter))
	if r.BlobsMissing > 0 {
		fmt.Fprintf(&b, "; WARNING: %s referenced by kept versions are missing", plural(r.BlobsMissing, "blob"))
	}
	if r.BlobsCorrupt > 0 {
		fmt.Fprintf(&b, "; WARNING: %s are corrupt", plural(r.BlobsCorrupt, "blob"))
	}
	if len(r.Failed) > 0 {
		fmt.Fprintf(&b, "; FAILED: %s", strings.Join(r.Failed, "; "))
	}
	return b.String()
}

// shortDuration prints 1h for 1h0m0s, 1h30m for 1h30m0s and 10m for
// 10m0s.
func shortDuration(d time.Duration) string {
	s := d.String()
	if d == 0 || d%time.Minute != 0 {
		return s
	}
	s = strings.TrimSuffix(s, "0s")
	if d%time.Hour == 0 {
		s = strings.TrimSuffix(s, "0m")
	}
	return s
}

func plural(n int, what string) string {
	if n == 1 {
		return "1 " + what
	}
	return strconv.Itoa(n) + " " + what + "s"
}

// Run collects opts.ProjectID, or every project. With every project, a
// project that fails is reported in Report.Failed and the others are still
// collected; the error then joins the failures. See the package
// documentation for what a run does and why it is safe beside agents that
// keep syncing.
func Run(ctx context.Context, r *repo.Repo, opts Options) (Report, error) {
	opts = opts.withDefaults()
	rep := Report{DryRun: opts.DryRun, Grace: opts.Grace}
	projects := []string{opts.ProjectID}
	if opts.ProjectID == "" {
		ps, err := r.Meta().ListProjects(ctx)
		if err != nil {
			return rep, fmt.Errorf("list projects: %w", err)
		}
		projects = projects[:0]
		for _, p := range ps {
			projects = append(projects, p.ID)
		}
	}
	var errs []error
	if opts.ProjectID == "" {
		if err := sweepDeletedProjects(ctx, r, opts, &rep); err != nil {
			errs = append(errs, err)
		}
	}
	for _, pid := range projects {
		if err := ctx.Err(); err != nil {
			return rep, err
		}
		pr, err := runProject(ctx, r, opts, pid)
		rep.add(pr)
		switch {
		case err == nil:
			rep.Projects++
		case opts.ProjectID != "":
			return rep, fmt.Errorf("gc of project %s: %w", pid, err)
		case errors.Is(err, metastore.ErrNotFound) && ctx.Err() == nil:
			// Deleted while we went through the list.
		default:
			rep.Failed = append(rep.Failed, pid+": "+err.Error())
			errs = append(errs, fmt.Errorf("gc of project %s: %w", pid, err))
		}
	}
	return rep, errors.Join(errs...)
}

// run is the collection of one project.
type run struct {
	r     *repo.Repo
	meta  metastore.Store
	store blobstore.Backend
	opts  Options
	pid   string
	log   *slog.Logger
	rep   Report
}

func runProject(ctx context.Context, r *repo.Repo, opts Options, pid string) (Report, error) {
	unlock, err := r.LockMaintenance(ctx, pid)
	if err != nil {
		return Report{}, err
	}
	defer unlock()
	g := &run{r: r, meta: r.Meta(), store: r.Store(), opts: opts, pid: pid, log: opts.Logger.With("project", pid)}
	err = g.collect(ctx)
	if err == nil {
		err = g.sweepOrphans(ctx, opts.Now().UTC().Add(-max(opts.Grace, 0)))
	}
	if err == nil && !opts.DryRun {
		// A project created before project records existed, or whose
		// last record write failed, gets one (a rebuild needs it).
		if rerr := r.RefreshProjectRecord(ctx, pid); rerr != nil {
			g.log.Warn("gc: project record not written", "err", rerr)
		}
	}
	g.rep.BytesAfter = g.rep.BytesBefore - g.rep.BytesFreed + g.rep.BytesWritten
	return g.rep, err
}

// collect is one project's collection, in the order the safety argument
// (package documentation) needs: list packs, then versions; apply
// retention; mark and locate the live blobs; decide pack by pack; act.
func (g *run) collect(ctx context.Context) error {
	start := g.opts.Now().UTC()
	cutoff := start.Add(-g.opts.Grace)

	// 1. Packs, then versions: the order the safety argument needs.
	packs, err := g.listPacks(ctx)
	if err != nil {
		return err
	}
	for _, p := range packs {
		g.rep.BytesBefore += p.Size
	}
	versions, err := g.listVersions(ctx)
	if err != nil {
		return err
	}
	// 2. Retention.
	kept, err := g.retain(ctx, versions, start)
	if err != nil {
		return err
	}
	// 3. Mark, then locate the live blobs.
	live, err := g.mark(ctx, kept)
	if err != nil {
		return err
	}
	byPack, err := g.locate(ctx, live)
	if err != nil {
		return err
	}
	// 4. Decide, pack by pack; 5. act.
	d := g.decide(packs, byPack, cutoff)
	if err := g.act(ctx, d, byPack); err != nil {
		return err
	}
	g.log.Info("gc: project collected", "dry_run", g.opts.DryRun, "versions_deleted", g.rep.VersionsDeleted,
		"packs_deleted", g.rep.PacksDeleted, "bytes_freed", g.rep.BytesFreed, "packs_condemned", g.rep.PacksCondemned,
		"packs_repacked", g.rep.PacksRepacked, "packs_written", g.rep.PacksWritten, "packs_rescued", g.rep.PacksRescued,
		"live_blobs", len(live), "missing_blobs", g.rep.BlobsMissing)
	return nil
}

// retain applies the project's retention policy: it deletes the versions
// the policy drops (unless a dry run) and returns those kept (a version
// pinned meanwhile is kept).
func (g *run) retain(ctx context.Context, versions []metastore.Version, now time.Time) ([]metastore.Version, error) {
	policy, err := g.meta.GetRetention(ctx, g.pid)
	if err != nil {
		return nil, fmt.Errorf("retention: %w", err)
	}
	kept, drop := Select(versions, policy, now)
	if len(drop) == 0 || g.opts.DryRun {
		g.rep.VersionsDeleted = len(drop)
		return kept, nil
	}
	numbers := make([]int64, len(drop))
	for i, v := range drop {
		numbers[i] = v.Number
	}
	deleted, err := g.meta.DeleteVersions(ctx, g.pid, numbers)
	if err != nil {
		return nil, fmt.Errorf("delete versions: %w", err)
	}
	// Versions pinned meanwhile were not deleted: they are kept, and
	// marked.
	gone := make(map[int64]bool, len(deleted))
	for _, n := range deleted {
		gone[n] = true
	}
	kept = kept[:0]
	for _, v := range versions {
		if !gone[v.Number] {
			kept = append(kept, v)
		}
	}
	for _, n := range deleted {
		if err := g.store.Delete(ctx, repo.VersionKey(g.pid, n)); err != nil {
			g.log.Warn("gc: delete version record", "version", n, "err", err)
		}
	}
	g.rep.VersionsDeleted = len(deleted)
	return kept, nil
}

// decisions sorts a project's packs by what becomes of them.
type decisions struct {
	finish, expired, rescue, dead []metastore.Pack
	repack                        map[metastore.BlobType][]metastore.Pack
}

// decide sorts the packs: deletions to finish, condemned packs whose grace
// expired, condemned packs holding live blobs again (rescued), dead packs
// to condemn, and packs to repack (mostly dead, or small ones to merge).
func (g *run) decide(packs []metastore.Pack, byPack map[id.ID][]metastore.BlobLocation, cutoff time.Time) decisions {
	d := decisions{repack: map[metastore.BlobType][]metastore.Pack{}}
	small := map[metastore.BlobType][]metastore.Pack{}
	for _, p := range packs {
		liveBlobs := byPack[p.ID]
		switch {
		case p.Deleting: // an earlier run stopped half way
			d.finish = append(d.finish, p)
		case !p.CondemnedAt.IsZero() && len(liveBlobs) > 0:
			d.rescue = append(d.rescue, p)
		case !p.CondemnedAt.IsZero() && !p.CondemnedAt.After(cutoff):
			d.expired = append(d.expired, p)
		case !p.CondemnedAt.IsZero():
			g.rep.BytesCondemned += p.Size // waiting out its grace period
		case p.CreatedAt.After(cutoff):
			// Young: may hold chunks of a commit still on its way.
		case len(liveBlobs) == 0:
			d.dead = append(d.dead, p)
		case g.opts.RepackThreshold > 0 && liveFraction(p, liveBlobs) < g.opts.RepackThreshold:
			d.repack[p.Type] = append(d.repack[p.Type], p)
		case g.opts.MergeBelow > 0 && p.Size < g.opts.MergeBelow:
			small[p.Type] = append(small[p.Type], p)
		}
	}
	for typ, ps := range small {
		if len(ps) >= 2 || len(d.repack[typ]) > 0 {
			d.repack[typ] = append(d.repack[typ], ps...)
		}
	}
	return d
}

// act carries the decisions out: delete, rescue, condemn, repack.
func (g *run) act(ctx context.Context, d decisions, byPack map[id.ID][]metastore.BlobLocation) error {
	if err := g.delete(ctx, d.finish, d.expired); err != nil {
		return err
	}
	if len(d.rescue) > 0 {
		n := len(d.rescue)
		if !g.opts.DryRun {
			var err error
			if n, err = g.meta.UncondemnPacks(ctx, g.pid, ids(d.rescue)); err != nil {
				return fmt.Errorf("un-condemn packs: %w", err)
			}
		}
		g.rep.PacksRescued += n
		g.log.Info("gc: condemned packs hold live blobs; kept", "packs", n)
	}
	if err := g.condemn(ctx, d.dead); err != nil {
		return err
	}
	for _, typ := range []metastore.BlobType{metastore.BlobData, metastore.BlobTree} {
		if err := g.repack(ctx, typ, d.repack[typ], byPack); err != nil {
			return err
		}
	}
	return nil
}

func ids(ps []metastore.Pack) []id.ID {
	out := make([]id.ID, len(ps))
	for i, p := range ps {
		out[i] = p.ID
	}
	return out
}

// liveFraction is the share of p's bytes that its live blobs take: their
// stored bytes and footer entries, over everything but the trailer (1 for a
// pack whose blobs are all live, however small).
func liveFraction(p metastore.Pack, live []metastore.BlobLocation) float64 {
	var n int64
	for _, l := range live {
		n += l.Length + pack.EntrySize
	}
	total := p.Size - pack.TrailerSize
	if total <= 0 {
		return 1
	}
	return float64(n) / float64(total)
}

func (g *run) listPacks(ctx context.Context) ([]metastore.Pack, error) {
	var out []metastore.Pack
	opts := metastore.ListOptions{Limit: 5000}
	for {
		page, err := g.meta.ListPacks(ctx, g.pid, opts)
		if err != nil {
			return nil, fmt.Errorf("list packs: %w", err)
		}
		out = append(out, page...)
		if len(page) < opts.Limit {
			return out, nil
		}
		opts.After = page[len(page)-1].ID.String()
	}
}

func (g *run) listVersions(ctx context.Context) ([]metastore.Version, error) {
	var out []metastore.Version
	opts := metastore.ListOptions{Limit: 5000}
	for {
		page, err := g.meta.ListVersions(ctx, g.pid, opts)
		if err != nil {
			return nil, fmt.Errorf("list versions: %w", err)
		}
		out = append(out, page...)
		if len(page) < opts.Limit {
			return out, nil
		}
		opts.After = strconv.FormatInt(page[len(page)-1].Number, 10)
	}
}

// mark returns every blob reachable from the versions: their trees and the
// chunks of their files. Each tree is loaded once, however many versions
// share it. A tree that cannot be loaded stops the run: sweeping with an
// incomplete mark could delete live data.
func (g *run) mark(ctx context.Context, versions []metastore.Version) (map[id.ID]struct{}, error) {
	live := make(map[id.ID]struct{})
	var walk func(tid id.ID) error
	walk = func(tid id.ID) error {
		if _, seen := live[tid]; seen || tid.IsZero() {
			return nil
		}
		if err := ctx.Err(); err != nil {
			return err
		}
		live[tid] = struct{}{}
		t, err := g.r.LoadTree(ctx, g.pid, tid)
		if err != nil {
			return err
		}
		for i := range t.Nodes {
			n := &t.Nodes[i]
			switch n.Type {
			case tree.Dir:
				if err := walk(n.Subtree); err != nil {
					return err
				}
			case tree.File:
				for _, c := range n.Chunks {
					live[c.ID] = struct{}{}
				}
			}
		}
		return nil
	}
	for _, v := range versions {
		if err := walk(v.Root); err != nil {
			return nil, fmt.Errorf("mark version %d: %w", v.Number, err)
		}
	}
	return live, nil
}

// locate groups the live blobs by the pack the index puts them in.
func (g *run) locate(ctx context.Context, live map[id.ID]struct{}) (map[id.ID][]metastore.BlobLocation, error) {
	byPack := make(map[id.ID][]metastore.BlobLocation)
	batch := make([]id.ID, 0, locateBatch)
	flush := func() error {
		if len(batch) == 0 {
			return nil
		}
		locs, err := g.meta.LocateBlobs(ctx, g.pid, batch)
		if err != nil {
			return fmt.Errorf("locate live blobs: %w", err)
		}
		for _, x := range batch {
			l, ok := locs[x]
			if !ok {
				g.rep.BlobsMissing++
				g.log.Error("gc: a kept version references a blob that is not stored", "blob", x.String())
				continue
			}
			byPack[l.PackID] = append(byPack[l.PackID], l)
		}
		batch = batch[:0]
		return nil
	}
	for x := range live {
		batch = append(batch, x)
		if len(batch) == cap(batch) {
			if err := flush(); err != nil {
				return nil, err
			}
		}
	}
	return byPack, flush()
}

// delete finishes the deletion of packs an earlier run left deleting and
// deletes the expired condemned packs: DeletePacks (only those still
// condemned as listed), the objects, then DropPacks.
func (g *run) delete(ctx context.Context, finish, expired []metastore.Pack) error {
	if len(finish)+len(expired) == 0 {
		return nil
	}
	size := make(map[id.ID]int64, len(finish)+len(expired))
	for _, p := range append(slices.Clone(finish), expired...) {
		size[p.ID] = p.Size
	}
	if g.opts.DryRun {
		for _, n := range size {
			g.rep.PacksDeleted++
			g.rep.BytesFreed += n
		}
		return nil
	}
	deleting, err := g.meta.DeletePacks(ctx, g.pid, append(slices.Clone(finish), expired...))
	if err != nil {
		return fmt.Errorf("delete packs: %w", err)
	}
	gone := make([]id.ID, 0, len(deleting))
	for _, pid := range deleting {
		if err := g.store.Delete(ctx, repo.PackKey(g.pid, pid)); err != nil && !errors.Is(err, blobstore.ErrNotFound) {
			// Left deleting: the next run tries again.
			g.log.Warn("gc: delete pack object", "pack", pid.String(), "err", err)
			continue
		}
		gone = append(gone, pid)
	}
	if len(gone) > 0 {
		if err := g.meta.DropPacks(ctx, g.pid, gone); err != nil {
			return fmt.Errorf("drop packs: %w", err)
		}
	}
	for _, pid := range gone {
		g.rep.PacksDeleted++
		g.rep.BytesFreed += size[pid]
	}
	if len(gone) < len(deleting) {
		for _, pid := range deleting {
			if !slices.Contains(gone, pid) {
				g.rep.BytesCondemned += size[pid]
			}
		}
	}
	return nil
}

// condemn condemns packs, stamped with the time of the call.
func (g *run) condemn(ctx context.Context, ps []metastore.Pack) error {
	if len(ps) == 0 {
		return nil
	}
	var bytes int64
	for _, p := range ps {
		bytes += p.Size
	}
	n := len(ps)
	if !g.opts.DryRun {
		var err error
		if n, err = g.meta.CondemnPacks(ctx, g.pid, ids(ps), g.opts.Now().UTC()); err != nil {
			return fmt.Errorf("condemn packs: %w", err)
		}
	}
	g.rep.PacksCondemned += n
	g.rep.BytesCondemned += bytes
	return nil
}

// repack copies the live blobs of sources (all of type typ) into new packs,
// points the index at them, and then condemns the sources. A source that
// cannot be read, or holds a live blob that fails verification, is not
// condemned.
func (g *run) repack(ctx context.Context, typ metastore.BlobType, sources []metastore.Pack, byPack map[id.ID][]metastore.BlobLocation) error {
	if len(sources) == 0 {
		return nil
	}
	slices.SortFunc(sources, func(a, b metastore.Pack) int { return strings.Compare(a.ID.String(), b.ID.String()) })
	target := int64(pack.TargetSize)
	if typ == metastore.BlobTree {
		target = treePackTarget
	}
	if g.opts.DryRun {
		var bytes int64
		for _, s := range sources {
			for _, l := range byPack[s.ID] {
				bytes += l.Length + pack.EntrySize
			}
		}
		packs := int((bytes + target - 1) / target)
		g.rep.PacksRepacked += len(sources)
		g.rep.PacksWritten += packs
		g.rep.BytesWritten += bytes + int64(packs)*pack.TrailerSize
		g.rep.PacksCondemned += len(sources)
		for _, s := range sources {
			g.rep.BytesCondemned += s.Size
		}
		return nil
	}

	from := ids(sources)
	w := pack.NewWriter()
	var waiting, done []metastore.Pack // sources whose blobs are all in w or flushed
	flush := func() error {
		if w.Len() == 0 {
			return nil
		}
		data, packID, entries, err := w.Finish()
		if err != nil {
			return fmt.Errorf("finish pack: %w", err)
		}
		locs := make([]metastore.BlobLocation, len(entries))
		for i, e := range entries {
			locs[i] = repo.LocationOf(packID, e)
		}
		if err := g.writePack(ctx, metastore.Pack{ProjectID: g.pid, ID: packID, Type: typ, Size: int64(len(data))}, data, locs, from); err != nil {
			return err
		}
		g.rep.PacksWritten++
		g.rep.BytesWritten += int64(len(data))
		done = append(done, waiting...)
		waiting = nil
		return nil
	}
	var buf []byte
	for _, src := range sources {
		if err := ctx.Err(); err != nil {
			return err
		}
		data, err := g.readPack(ctx, src)
		if err != nil {
			g.log.Warn("gc: cannot read a pack to repack; left as is", "pack", src.ID.String(), "err", err)
			continue
		}
		locs := slices.Clone(byPack[src.ID])
		slices.SortFunc(locs, repo.ComparePlace)
		var dec pack.Decoder // the members of a group frame: one decode
		ok := true
		for _, l := range locs {
			if l.Offset < 0 || l.Length < 0 || l.Offset+l.Length > int64(len(data)) {
				g.rep.BlobsCorrupt++
				g.log.Error("gc: live blob lies outside its pack", "pack", src.ID.String(), "blob", l.ID.String())
				ok = false
				continue
			}
			e := repo.EntryOf(l)
			plain, err := dec.Decode(e, data[l.Offset:l.Offset+l.Length], buf)
			if err != nil {
				g.rep.BlobsCorrupt++
				g.log.Error("gc: live blob fails verification; its pack is kept", "pack", src.ID.String(), "blob", l.ID.String(), "err", err)
				ok = false
				continue
			}
			buf = plain
			if _, err := w.Add(pack.BlobType(l.Type), l.ID, plain); err != nil {
				return fmt.Errorf("repack blob %s: %w", l.ID.Short(), err)
			}
			if int64(w.Size()) >= target {
				if err := flush(); err != nil {
					return err
				}
			}
		}
		if ok {
			waiting = append(waiting, src)
		}
	}
	if err := flush(); err != nil {
		return err
	}
	done = append(done, waiting...) // sources without live blobs left to write
	g.rep.PacksRepacked += len(done)
	return g.condemn(ctx, done)
}

// writePack stores a pack written by repacking and points the index at it
// (MoveBlobs), with the pack epoch read before the object was written.
func (g *run) writePack(ctx context.Context, p metastore.Pack, data []byte, locs []metastore.BlobLocation, from []id.ID) error {
	key := repo.PackKey(g.pid, p.ID)
	for attempt := 1; ; attempt++ {
		epoch, err := g.meta.PackEpoch(ctx, g.pid)
		if err != nil {
			return fmt.Errorf("pack epoch: %w", err)
		}
		if err := g.store.Put(ctx, key, bytes.NewReader(data), int64(len(data))); err != nil {
			return fmt.Errorf("store repacked pack %s: %w", p.ID.Short(), err)
		}
		p.Epoch = epoch
		moved, err := g.meta.MoveBlobs(ctx, p, locs, from)
		if errors.Is(err, metastore.ErrStale) && attempt < 3 {
			continue
		}
		if err != nil {
			return fmt.Errorf("index repacked pack %s: %w", p.ID.Short(), err)
		}
		if moved < len(locs) {
			// Some blobs were moved or dropped meanwhile; they stay where
			// the index says. Harmless: the new pack holds copies.
			g.log.Info("gc: repacked pack indexes fewer blobs than it holds", "pack", p.ID.String(), "moved", moved, "blobs", len(locs))
		}
		return nil
	}
}

// readPack reads a whole pack object.
func (g *run) readPack(ctx context.Context, p metastore.Pack) ([]byte, error) {
	rc, err := g.store.Get(ctx, repo.PackKey(g.pid, p.ID), 0, -1)
	if err != nil {
		return nil, err
	}
	defer rc.Close()
	data, err := io.ReadAll(io.LimitReader(rc, repo.MaxPackSize+1))
	if err != nil {
		return nil, err
	}
	if int64(len(data)) != p.Size {
		return nil, fmt.Errorf("%w: pack %s is %d bytes, indexed as %d", pack.ErrCorrupt, p.ID.Short(), len(data), p.Size)
	}
	return data, nil
}
