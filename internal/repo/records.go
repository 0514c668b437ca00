package repo

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"time"

	"github.com/sandkeep/sandkeep/internal/blobstore"
	"github.com/sandkeep/sandkeep/internal/id"
	"github.com/sandkeep/sandkeep/internal/metastore"
	"github.com/sandkeep/sandkeep/internal/policy"
)

// The bucket holds, beside the packs, what a rebuild of the database needs
// that no pack footer says: a record per version (written at commit) and a
// record per project (written when the project is created and whenever its
// name-independent settings change: retention, limits, lifecycle policy,
// pins). A deleted project leaves a tombstone outside its prefix until its
// deletion is complete, so an interrupted deletion is not rebuilt.

// ProjectRecordKey is the object key of a project record.
func ProjectRecordKey(projectID string) string { return ProjectPrefix(projectID) + "project.json" }

// tombstoneKey marks a project whose deletion has begun.
func tombstoneKey(projectID string) string { return "deleted/" + projectID }

// projectRecord is the project record's JSON.
type projectRecord struct {
	Format    int               `json:"format"`
	ID        string            `json:"id"`
	Name      string            `json:"name"`
	CreatedAt time.Time         `json:"created_at"`
	Retention *retentionRecord  `json:"retention,omitempty"`
	Limits    *metastore.Limits `json:"limits,omitempty"`
	Policy    *policyRecord     `json:"lifecycle_policy,omitempty"`
	Pinned    []int64           `json:"pinned,omitempty"`
	Written   time.Time         `json:"written"`
}

type retentionRecord struct {
	KeepLast     int   `json:"keep_last"`
	KeepWithinUS int64 `json:"keep_within_us"`
}

type policyRecord struct {
	Override   policy.Override `json:"override"`
	WebhookURL string          `json:"webhook_url,omitempty"`
}

// versionRecord is the small object kept per version in the bucket.
type versionRecord struct {
	Format    int       `json:"format"`
	Project   string    `json:"project"`
	Number    int64     `json:"number"`
	Parent    int64     `json:"parent"`
	Root      id.ID     `json:"root"`
	Kind      string    `json:"kind"`
	SandboxID string    `json:"sandbox_id,omitempty"`
	Time      time.Time `json:"time"`
	Files     int64     `json:"files"`
	Bytes     int64     `json:"bytes"`
}

func (r *Repo) writeVersionRecord(ctx context.Context, v metastore.Version) error {
	b, err := json.Marshal(versionRecord{
		Format: 1, Project: v.ProjectID, Number: v.Number, Parent: v.Parent, Root: v.Root,
		Kind: string(v.Kind), SandboxID: v.SandboxID, Time: v.CreatedAt.UTC(), Files: v.Files, Bytes: v.Bytes,
	})
	if err != nil {
		return err
	}
	return r.store.Put(ctx, VersionKey(v.ProjectID, v.Number), bytes.NewReader(b), int64(len(b)))
}

// WriteProjectRecord writes the project's record from the database as it
// is now. Callers that change what it holds call it after the change; a
// failure leaves the previous record, which garbage collection rewrites
// (RefreshProjectRecord).
func (r *Repo) WriteProjectRecord(ctx context.Context, projectID string) error {
	p, err := r.meta.GetProject(ctx, projectID)
	if err != nil {
		return err
	}
	rec := projectRecord{Format: 1, ID: p.ID, Name: p.Name, CreatedAt: p.CreatedAt.UTC(), Written: time.Now().UTC()}
	ret, err := r.meta.GetRetention(ctx, projectID)
	if err != nil {
		return err
	}
	rec.Retention = &retentionRecord{KeepLast: ret.KeepLast, KeepWithinUS: ret.KeepWithin.Microseconds()}
	lim, err := r.meta.GetLimits(ctx, projectID)
	if err != nil {
		return err
	}
	if lim != (metastore.Limits{}) {
		rec.Limits = &lim
	}
	if ss, ok := r.meta.(interface {
		GetLifecyclePolicy(ctx context.Context, projectID string) (metastore.LifecyclePolicy, error)
	}); ok {
		lp, err := ss.GetLifecyclePolicy(ctx, projectID)
		switch {
		case err == nil:
			rec.Policy = &policyRecord{Override: lp.Override, WebhookURL: lp.WebhookURL}
		case !errors.Is(err, metastore.ErrNotFound):
			return err
		}
	}
	if rec.Pinned, err = r.pinned(ctx, projectID); err != nil {
		return err
	}
	b, err := json.Marshal(rec)
	if err != nil {
		return err
	}
	if err := r.store.Put(ctx, ProjectRecordKey(projectID), bytes.NewReader(b), int64(len(b))); err != nil {
		return fmt.Errorf("write the record of project %s: %w", projectID, err)
	}
	return nil
}

// ProjectChanged rewrites the project record after a change the caller
// made (creation, retention, pins, limits, lifecycle policy); a failure is
// logged (the change itself stands, and garbage collection rewrites a
// record it finds missing).
func (r *Repo) ProjectChanged(ctx context.Context, projectID, what string) {
	if err := r.WriteProjectRecord(context.WithoutCancel(ctx), projectID); err != nil {
		r.log.Warn("project record not rewritten after a change", "project", projectID, "change", what, "err", err)
	}
}

// RefreshProjectRecord writes the project's record if the bucket lacks it
// (projects created before records existed, or whose last write failed).
func (r *Repo) RefreshProjectRecord(ctx context.Context, projectID string) error {
	_, err := r.store.Stat(ctx, ProjectRecordKey(projectID))
	if !errors.Is(err, blobstore.ErrNotFound) {
		return err
	}
	return r.WriteProjectRecord(ctx, projectID)
}

// pinned lists the project's pinned version numbers.
func (r *Repo) pinned(ctx context.Context, projectID string) ([]int64, error) {
	vs, err := r.allVersions(ctx, projectID)
	if errors.Is(err, metastore.ErrNotFound) {
		return nil, nil // no versions yet
	}
	if err != nil {
		return nil, err
	}
	var out []int64
	for _, v := range vs {
		if v.Pinned {
			out = append(out, v.Number)
		}
	}
	return out, nil
}

// readJSON reads a small object (at most max bytes) into v.
func (r *Repo) readJSON(ctx context.Context, key string, max int64, v any) error {
	rc, err := r.store.Get(ctx, key, 0, -1)
	if err != nil {
		return err
	}
	defer rc.Close()
	b, err := io.ReadAll(io.LimitReader(rc, max+1))
	if err != nil {
		return fmt.Errorf("read %s: %w", key, err)
	}
	if int64(len(b)) > max {
		return fmt.Errorf("%w: %s is larger than %d bytes", ErrCorrupt, key, max)
	}
	if err := json.Unmarshal(b, v); err != nil {
		return fmt.Errorf("%w: %s: %v", ErrCorrupt, key, err)
	}
	return nil
}
