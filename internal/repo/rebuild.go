package repo

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	"golang.org/x/sync/errgroup"

	"github.com/sandkeep/sandkeep/internal/blobstore"
	"github.com/sandkeep/sandkeep/internal/id"
	"github.com/sandkeep/sandkeep/internal/metastore"
	"github.com/sandkeep/sandkeep/internal/pack"
)

// Rebuilding the database from the bucket (`sandkeep repair rebuild
// --from-bucket`): one LIST of the prefix finds every project's packs,
// version records and project record. Each pack's footer is read and its
// chunks verified (unless TrustFooters) before the pack is indexed, exactly
// as an upload is; then the versions are recorded as they were, the head is
// the newest version, and the head's file listing is rebuilt from its tree.
// Every step is idempotent: a rebuild interrupted or run twice leaves the
// same database. Tokens are not in the bucket and are not rebuilt; neither
// are sandboxes (the reconciler finds the provider's).

// RebuildOptions choose what a rebuild does.
type RebuildOptions struct {
	ProjectID string // "" rebuilds every project in the bucket
	DryRun    bool   // read and check everything, write nothing
	// TrustFooters indexes packs from their footers without reading and
	// hashing their chunks (faster; a pack altered in the bucket is then
	// found by `check --read-data`, not here).
	TrustFooters bool
	Concurrency  int // packs read at once (default 8)
	// Progress, if set, is called as work is done (from one goroutine at a
	// time).
	Progress func(RepairProgress)
}

// RepairProgress is how far a rebuild is.
type RepairProgress struct {
	Project     string
	Phase       string // "list", "packs", "versions", "files"
	Done, Total int
	Bytes       int64 // pack bytes read so far in this project
}

// RebuildReport says what a rebuild found and did.
type RebuildReport struct {
	DryRun   bool
	Projects []ProjectRebuild
	// Skipped projects whose deletion had begun (a tombstone), with why.
	Skipped []string
	// Objects is the number of objects the listing returned.
	Objects int
}

// ProjectRebuild is one project's part of a rebuild.
type ProjectRebuild struct {
	ID, Name string
	Record   bool // the project record was found (else the name is made up and the settings are defaults)
	Packs    int
	// PacksBad could not be indexed at all (unreadable footer, mixed
	// types); BlobsBad are chunks that failed verification in packs
	// otherwise indexed (the good chunks are).
	PacksBad, BlobsBad int
	Blobs              int
	Bytes              int64
	Versions           int
	Head               int64
	Files              int64
	Problems           []string
}

// bucketProject is what the listing found of one project.
type bucketProject struct {
	packs    []blobstore.Object
	versions []int64
	record   bool
	other    int
}

// Rebuild recreates the database's rows of the bucket's projects.
func (r *Repo) Rebuild(ctx context.Context, opts RebuildOptions) (RebuildReport, error) {
	if opts.Concurrency <= 0 {
		opts.Concurrency = 8
	}
	rep := RebuildReport{DryRun: opts.DryRun}
	progress := func(p RepairProgress) {
		if opts.Progress != nil {
			opts.Progress(p)
		}
	}
	progress(RepairProgress{Phase: "list"})
	prefix := "projects/"
	if opts.ProjectID != "" {
		prefix = ProjectPrefix(opts.ProjectID)
	}
	found, n, err := r.listBucket(ctx, prefix)
	if err != nil {
		return rep, err
	}
	rep.Objects = n
	tombs := map[string]bool{}
	if err := r.store.List(ctx, "deleted/", func(o blobstore.Object) error {
		tombs[strings.TrimPrefix(o.Key, "deleted/")] = true
		return nil
	}); err != nil {
		return rep, fmt.Errorf("list deletion marks: %w", err)
	}
	ids := make([]string, 0, len(found))
	for pid := range found {
		ids = append(ids, pid)
	}
	slices.Sort(ids)
	if opts.ProjectID != "" && len(ids) == 0 {
		return rep, fmt.Errorf("%w: no object of project %s in the bucket", metastore.ErrNotFound, opts.ProjectID)
	}
	for _, pid := range ids {
		if tombs[pid] {
			rep.Skipped = append(rep.Skipped, pid+": its deletion began and did not finish (delete it again to remove what is left)")
			continue
		}
		pr, err := r.rebuildProject(ctx, pid, found[pid], opts, progress)
		rep.Projects = append(rep.Projects, pr)
		if err != nil {
			return rep, fmt.Errorf("project %s: %w", pid, err)
		}
	}
	return rep, nil
}

// listBucket lists prefix once and sorts what it finds by project.
func (r *Repo) listBucket(ctx context.Context, prefix string) (map[string]*bucketProject, int, error) {
	found := map[string]*bucketProject{}
	n := 0
	err := r.store.List(ctx, prefix, func(o blobstore.Object) error {
		n++
		rest, ok := strings.CutPrefix(o.Key, "projects/")
		if !ok {
			return nil
		}
		pid, rel, ok := strings.Cut(rest, "/")
		if !ok || pid == "" {
			return nil
		}
		bp := found[pid]
		if bp == nil {
			bp = &bucketProject{}
			found[pid] = bp
		}
		switch {
		case rel == "project.json":
			bp.record = true
		case strings.HasPrefix(rel, "packs/"):
			if _, ok := ParsePackKey(pid, o.Key); ok {
				bp.packs = append(bp.packs, o)
				return nil
			}
			bp.other++
		case strings.HasPrefix(rel, "versions/"):
			num, err := strconv.ParseInt(strings.TrimPrefix(rel, "versions/"), 10, 64)
			if err == nil && num > 0 && o.Key == VersionKey(pid, num) {
				bp.versions = append(bp.versions, num)
				return nil
			}
			bp.other++
		default:
			bp.other++
		}
		return nil
	})
	if err != nil {
		return nil, n, fmt.Errorf("list %s: %w", prefix, err)
	}
	return found, n, nil
}

func (r *Repo) rebuildProject(ctx context.Context, pid string, bp *bucketProject, opts RebuildOptions, progress func(RepairProgress)) (ProjectRebuild, error) {
	pr := ProjectRebuild{ID: pid, Name: "rebuilt-" + pid, Packs: len(bp.packs), Record: bp.record}
	if bp.other > 0 {
		pr.Problems = append(pr.Problems, fmt.Sprintf("%d objects under the prefix are not sandkeep's (ignored)", bp.other))
	}
	var rec projectRecord
	if bp.record {
		if err := r.readJSON(ctx, ProjectRecordKey(pid), 1<<20, &rec); err != nil {
			pr.Record = false
			pr.Problems = append(pr.Problems, "project record unreadable: "+err.Error())
		} else if rec.ID != pid {
			pr.Record = false
			pr.Problems = append(pr.Problems, fmt.Sprintf("project record names project %q (ignored)", rec.ID))
		} else {
			pr.Name = rec.Name
		}
	}
	if !pr.Record {
		pr.Problems = append(pr.Problems, "no project record: named "+pr.Name+", default retention, limits and policy")
		rec = projectRecord{ID: pid, Name: pr.Name}
	}
	if !opts.DryRun {
		if err := r.importProject(ctx, &pr, rec); err != nil {
			return pr, err
		}
	}
	if err := r.rebuildPacks(ctx, pid, bp.packs, opts, &pr, progress); err != nil {
		return pr, err
	}
	if err := r.rebuildVersions(ctx, pid, bp.versions, rec.Pinned, opts, &pr, progress); err != nil {
		return pr, err
	}
	return pr, nil
}

// importProject creates the project row and applies the record's settings.
func (r *Repo) importProject(ctx context.Context, pr *ProjectRebuild, rec projectRecord) error {
	created := rec.CreatedAt
	if created.IsZero() {
		created = time.Now()
	}
	err := r.meta.ImportProject(ctx, metastore.Project{ID: pr.ID, Name: pr.Name, CreatedAt: created})
	if errors.Is(err, metastore.ErrAlreadyExists) {
		// Another project holds the name (created since the loss).
		pr.Problems = append(pr.Problems, fmt.Sprintf("the name %q is taken: imported as %q", pr.Name, pr.Name+"-"+pr.ID))
		pr.Name += "-" + pr.ID
		err = r.meta.ImportProject(ctx, metastore.Project{ID: pr.ID, Name: pr.Name, CreatedAt: created})
	}
	if err != nil {
		return fmt.Errorf("import project: %w", err)
	}
	if rec.Retention != nil {
		ret := metastore.Retention{KeepLast: rec.Retention.KeepLast, KeepWithin: time.Duration(rec.Retention.KeepWithinUS) * time.Microsecond}
		if err := r.meta.SetRetention(ctx, pr.ID, ret); err != nil {
			return fmt.Errorf("retention: %w", err)
		}
	}
	if rec.Limits != nil {
		if err := r.meta.SetLimits(ctx, pr.ID, *rec.Limits); err != nil {
			return fmt.Errorf("limits: %w", err)
		}
	}
	if rec.Policy != nil {
		if ss, ok := r.meta.(interface {
			SetLifecyclePolicy(ctx context.Context, p metastore.LifecyclePolicy) error
		}); ok {
			lp := metastore.LifecyclePolicy{ProjectID: pr.ID, Override: rec.Policy.Override, WebhookURL: rec.Policy.WebhookURL, UpdatedAt: time.Now()}
			if err := ss.SetLifecyclePolicy(ctx, lp); err != nil {
				return fmt.Errorf("lifecycle policy: %w", err)
			}
		}
	}
	return nil
}

// rebuildPacks reads every pack's footer (and, unless TrustFooters, its
// chunks) and indexes what verifies.
func (r *Repo) rebuildPacks(ctx context.Context, pid string, packs []blobstore.Object, opts RebuildOptions, pr *ProjectRebuild, progress func(RepairProgress)) error {
	var mu sync.Mutex
	done := 0
	g, gctx := errgroup.WithContext(ctx)
	g.SetLimit(opts.Concurrency)
	for _, o := range packs {
		g.Go(func() error {
			blobs, bad, problem, err := r.rebuildPack(gctx, pid, o, opts)
			if err != nil {
				return err
			}
			mu.Lock()
			defer mu.Unlock()
			done++
			pr.Bytes += o.Size
			pr.Blobs += blobs
			pr.BlobsBad += bad
			if problem != "" {
				pr.Problems = append(pr.Problems, problem)
				if blobs == 0 {
					pr.PacksBad++
				}
			}
			progress(RepairProgress{Project: pid, Phase: "packs", Done: done, Total: len(packs), Bytes: pr.Bytes})
			return nil
		})
	}
	return g.Wait()
}

// rebuildPack indexes one pack: the number of blobs indexed and found bad,
// and a problem to report. Only the store failing is an error.
func (r *Repo) rebuildPack(ctx context.Context, pid string, o blobstore.Object, opts RebuildOptions) (blobs, bad int, problem string, err error) {
	packID, _ := ParsePackKey(pid, o.Key) // listBucket kept pack keys only
	ref := PackRef{ID: packID, Size: o.Size}
	entries, err := r.readFooter(ctx, pid, ref)
	var typ metastore.BlobType
	if err == nil {
		typ, err = packType(packID, entries)
	}
	var locs []metastore.BlobLocation
	// good verifies (unless TrustFooters) and keeps the chunks that pass;
	// inside indexPack, so the pack epoch is read before the pack is.
	good := func() ([]metastore.BlobLocation, error) {
		locs, bad, problem = locs[:0], 0, ""
		ok := entries
		if !opts.TrustFooters {
			sc, err := r.scanPack(ctx, o.Key, ref, entries)
			if err != nil {
				return nil, err
			}
			ok, bad = dropBad(entries, sc.Bad), len(sc.Bad)
			if bad > 0 {
				problem = fmt.Sprintf("pack %s: %d of %d chunks fail verification (%v); the others are indexed", packID.Short(), bad, len(entries), sc.Bad[0].Err)
			}
		}
		if len(ok) == 0 {
			return nil, fmt.Errorf("%w: pack %s: no chunk verifies", ErrCorrupt, packID.Short())
		}
		for _, e := range ok {
			locs = append(locs, LocationOf(packID, e))
		}
		return locs, nil
	}
	switch {
	case err != nil:
	case opts.DryRun:
		_, err = good()
	default:
		err = r.indexPack(ctx, metastore.Pack{ProjectID: pid, ID: packID, Type: typ, Size: o.Size, CreatedAt: time.Now()}, good)
	}
	switch {
	case err == nil:
		return len(locs), bad, problem, nil
	case errors.Is(err, ErrCorrupt), errors.Is(err, ErrMissing):
		return 0, bad, fmt.Sprintf("pack %s not indexed: %v", packID.Short(), err), nil
	default:
		return 0, bad, "", fmt.Errorf("pack %s: %w", packID.Short(), err)
	}
}

// packType is the one blob type of a pack's entries.
func packType(packID id.ID, entries []pack.Entry) (metastore.BlobType, error) {
	var typ metastore.BlobType
	for _, e := range entries {
		t := metastore.BlobType(e.Type)
		if (t != metastore.BlobData && t != metastore.BlobTree) || (typ != 0 && t != typ) {
			return 0, fmt.Errorf("%w: pack %s mixes blob types or holds an unknown one", ErrCorrupt, packID.Short())
		}
		typ = t
	}
	if typ == 0 {
		return 0, fmt.Errorf("%w: pack %s lists no blob", ErrCorrupt, packID.Short())
	}
	return typ, nil
}

// dropBad returns entries without the bad ones.
func dropBad(entries []pack.Entry, bad []badBlob) []pack.Entry {
	if len(bad) == 0 {
		return entries
	}
	skip := make(map[pack.Entry]bool, len(bad))
	for _, b := range bad {
		skip[b.Entry] = true
	}
	out := make([]pack.Entry, 0, len(entries)-len(bad))
	for _, e := range entries {
		if !skip[e] {
			out = append(out, e)
		}
	}
	return out
}

// rebuildVersions records every version record's version (pins from the
// project record), makes the newest the head and rebuilds its file
// listing from its tree.
func (r *Repo) rebuildVersions(ctx context.Context, pid string, numbers, pinned []int64, opts RebuildOptions, pr *ProjectRebuild, progress func(RepairProgress)) error {
	slices.Sort(numbers)
	var head metastore.Version
	for i, n := range numbers {
		var rec versionRecord
		if err := r.readJSON(ctx, VersionKey(pid, n), 64<<10, &rec); err != nil {
			if errors.Is(err, ErrCorrupt) || errors.Is(err, blobstore.ErrNotFound) {
				pr.Problems = append(pr.Problems, fmt.Sprintf("version %d: %v", n, err))
				continue
			}
			return fmt.Errorf("version record %d: %w", n, err)
		}
		v := metastore.Version{ProjectID: pid, Number: n, Parent: rec.Parent, Root: rec.Root, Kind: metastore.VersionKind(rec.Kind),
			SandboxID: rec.SandboxID, CreatedAt: rec.Time, Files: rec.Files, Bytes: rec.Bytes, Pinned: slices.Contains(pinned, n)}
		if rec.Project != pid || rec.Number != n {
			pr.Problems = append(pr.Problems, fmt.Sprintf("version %d: its record names version %d of %q (skipped)", n, rec.Number, rec.Project))
			continue
		}
		if !opts.DryRun {
			err := r.meta.ImportVersion(ctx, v)
			if errors.Is(err, metastore.ErrInvalid) {
				pr.Problems = append(pr.Problems, fmt.Sprintf("version %d: %v (skipped)", n, err))
				continue
			}
			if err != nil {
				return err
			}
		}
		pr.Versions++
		head = v
		progress(RepairProgress{Project: pid, Phase: "versions", Done: i + 1, Total: len(numbers)})
	}
	pr.Head = head.Number
	if head.Number == 0 || opts.DryRun {
		return nil
	}
	if cur, err := r.meta.GetProject(ctx, pid); err != nil {
		return err
	} else if cur.Head >= head.Number {
		// The database already has this head or a newer one (a rebuild
		// run again, or over a database that was not lost): keep it.
		pr.Head = cur.Head
		return nil
	}
	progress(RepairProgress{Project: pid, Phase: "files"})
	var files []metastore.ProjectFile
	locs, err := r.meta.LocateBlobs(ctx, pid, []id.ID{head.Root})
	if err != nil {
		return err
	}
	if l, ok := locs[head.Root]; !ok || l.Type != metastore.BlobTree {
		pr.Problems = append(pr.Problems, fmt.Sprintf("the head (version %d) has no stored root tree: it cannot be restored, and the file listing is empty", head.Number))
	} else if ch, n, _, err := r.fileChanges(ctx, pid, metastore.Version{}, head.Root); err != nil {
		pr.Problems = append(pr.Problems, fmt.Sprintf("the head (version %d) cannot be read (%v): the file listing is empty", head.Number, err))
	} else {
		files, pr.Files = ch.Upsert, n
	}
	if err := r.meta.SetHead(ctx, pid, head.Number, files); err != nil {
		return fmt.Errorf("set head: %w", err)
	}
	return nil
}
