package repo

import (
	"context"

	"github.com/sandkeep/sandkeep/internal/metastore"
)

// SetRetention sets the project's retention policy: which versions garbage
// collection keeps (see metastore.Retention; the head and pinned versions
// are always kept). Negative values are metastore.ErrInvalid.
func (r *Repo) SetRetention(ctx context.Context, projectID string, p metastore.Retention) error {
	if err := r.meta.SetRetention(ctx, projectID, p); err != nil {
		return err
	}
	r.ProjectChanged(ctx, projectID, "retention")
	return nil
}

// GetRetention returns the project's retention policy, or
// metastore.DefaultRetention() (keep the last 50 versions and those of the
// last 30 days) when none was set.
func (r *Repo) GetRetention(ctx context.Context, projectID string) (metastore.Retention, error) {
	return r.meta.GetRetention(ctx, projectID)
}

// Pin pins (pinned true) or unpins a version. Garbage collection never
// deletes a pinned version, whatever the retention policy says. An unknown
// version is metastore.ErrNotFound.
func (r *Repo) Pin(ctx context.Context, projectID string, version int64, pinned bool) error {
	if err := r.meta.SetPinned(ctx, projectID, version, pinned); err != nil {
		return err
	}
	r.ProjectChanged(ctx, projectID, "pin")
	return nil
}
