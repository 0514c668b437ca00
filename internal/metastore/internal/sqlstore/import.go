package sqlstore

import (
	"context"
	"fmt"

	"github.com/sandkeep/sandkeep/internal/id"
	"github.com/sandkeep/sandkeep/internal/metastore"
	"github.com/sandkeep/sandkeep/internal/metastore/internal/storeutil"
)

// Rebuilding from the bucket: rows recreated as they were; and the repair
// of a check, which forgets bad chunks.

// ForgetBlobs implements metastore.Store.
func (s *Store) ForgetBlobs(ctx context.Context, projectID string, packID id.ID, ids []id.ID) (int, error) {
	ids = storeutil.Dedup(ids)
	total := 0
	err := s.gcTx(ctx, projectID, func(q Querier) error {
		return s.d.In([]any{projectID, packID.Bytes()}, storeutil.IDBytes(ids), func(in string, args []any) error {
			n, err := q.Exec(ctx, `DELETE FROM blobs WHERE project_id = $1 AND pack_id = $2 AND id `+in, args...)
			total += int(n)
			return err
		})
	})
	if err != nil {
		return 0, fmt.Errorf("forget blobs of %s in pack %s: %w", projectID, packID.Short(), err)
	}
	return total, nil
}

// ImportProject implements metastore.Store.
func (s *Store) ImportProject(ctx context.Context, p metastore.Project) error {
	if !storeutil.Storable(p.ID) || p.ID == "" {
		return fmt.Errorf("%w: project id %q", metastore.ErrInvalid, p.ID)
	}
	if err := storeutil.CheckName(p.Name); err != nil {
		return err
	}
	at, err := storeutil.Time(p.CreatedAt)
	if err != nil {
		return err
	}
	return s.d.Write(ctx, func(q Querier) error {
		var exists bool
		if err := q.QueryRow(ctx, `SELECT EXISTS (SELECT 1 FROM projects WHERE id = $1)`, p.ID).Scan(&exists); err != nil {
			return err
		}
		if exists {
			return nil
		}
		_, err := q.Exec(ctx, `INSERT INTO projects (id, name, created_at, head) VALUES ($1, $2, $3, 0)`, p.ID, p.Name, at)
		if s.d.IsUnique(err) {
			return fmt.Errorf("%w: a project named %q (importing %s)", metastore.ErrAlreadyExists, p.Name, p.ID)
		}
		if err != nil {
			return fmt.Errorf("import project %s: %w", p.ID, err)
		}
		return nil
	})
}

// ImportVersion implements metastore.Store.
func (s *Store) ImportVersion(ctx context.Context, v metastore.Version) error {
	if err := storeutil.CheckVersion(v); err != nil {
		return err
	}
	if v.Number <= v.Parent {
		return fmt.Errorf("%w: version %d with parent %d", metastore.ErrInvalid, v.Number, v.Parent)
	}
	at, err := storeutil.Time(v.CreatedAt)
	if err != nil {
		return err
	}
	err = s.d.Write(ctx, func(q Querier) error {
		if err := needProject(ctx, q, v.ProjectID); err != nil {
			return err
		}
		_, err := q.Exec(ctx, `INSERT INTO versions (`+versionCols+`) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10)
			ON CONFLICT (project_id, number) DO NOTHING`,
			v.ProjectID, v.Number, v.Parent, v.Root.Bytes(), string(v.Kind), v.SandboxID, at, v.Files, v.Bytes, v.Pinned)
		return err
	})
	if err != nil {
		return fmt.Errorf("import version %d of %s: %w", v.Number, v.ProjectID, err)
	}
	return nil
}

// SetHead implements metastore.Store.
func (s *Store) SetHead(ctx context.Context, projectID string, head int64, files []metastore.ProjectFile) error {
	if head < 0 {
		return fmt.Errorf("%w: head %d", metastore.ErrInvalid, head)
	}
	ups, _, err := storeutil.Changes(projectID, metastore.FileChanges{Upsert: files}, storeutil.Now())
	if err != nil {
		return err
	}
	err = s.d.Write(ctx, func(q Querier) error {
		if err := needProject(ctx, q, projectID); err != nil {
			return err
		}
		if head > 0 {
			var ok bool
			if err := q.QueryRow(ctx, `SELECT EXISTS (SELECT 1 FROM versions WHERE project_id = $1 AND number = $2)`, projectID, head).Scan(&ok); err != nil {
				return err
			}
			if !ok {
				return storeutil.NotFound("version %d of project %q", head, projectID)
			}
		} else if len(ups) > 0 {
			return fmt.Errorf("%w: files without a head version", metastore.ErrInvalid)
		}
		if _, err := q.Exec(ctx, `UPDATE projects SET head = $1 WHERE id = $2`, head, projectID); err != nil {
			return err
		}
		if _, err := q.Exec(ctx, `DELETE FROM project_files WHERE project_id = $1`, projectID); err != nil {
			return err
		}
		if len(ups) > 0 {
			return s.d.UpsertFiles(ctx, q, ups)
		}
		return nil
	})
	if err != nil {
		return fmt.Errorf("set head of %s to %d: %w", projectID, head, err)
	}
	return nil
}
