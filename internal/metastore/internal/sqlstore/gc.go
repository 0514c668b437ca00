package sqlstore

import (
	"context"
	"fmt"
	"slices"
	"time"

	"github.com/sandkeep/sandkeep/internal/id"
	"github.com/sandkeep/sandkeep/internal/metastore"
	"github.com/sandkeep/sandkeep/internal/metastore/internal/storeutil"
)

// Garbage collection, retention and project deletion.
//
// Fencing: every garbage collection transaction that changes packs or the
// blob index holds the project's lock exclusively (gcTx); AddPack, and
// CommitVersion when it checks required blobs, hold it shared (SQLite has no
// such lock: its one writer runs the transactions one at a time). So an
// upload or a commit sees a pack either before or after a GC change, never
// in between, and a commit's check of its required blobs holds until it
// commits: the serialisation package gc's safety argument relies on.

// gcTx runs fn in a transaction holding the project's lock exclusively,
// after checking that the project exists.
func (s *Store) gcTx(ctx context.Context, projectID string, fn func(Querier) error) error {
	if !storeutil.Storable(projectID) {
		return storeutil.NotFound("project %q", projectID)
	}
	return s.d.Write(ctx, func(q Querier) error {
		if err := s.d.LockProject(ctx, q, projectID, true); err != nil {
			return err
		}
		if err := needProject(ctx, q, projectID); err != nil {
			return err
		}
		return fn(q)
	})
}

// claimPack checks p.Epoch against the project's pack epoch and makes p's
// row live: it inserts it, or un-condemns it, or refuses a pack being
// deleted. The caller holds the project's lock (shared or exclusive).
func (s *Store) claimPack(ctx context.Context, q Querier, p metastore.Pack) error {
	var epoch int64
	err := q.QueryRow(ctx, `SELECT pack_epoch FROM projects WHERE id = $1`, p.ProjectID).Scan(&epoch)
	if noRows(err) {
		return storeutil.NotFound("project %q", p.ProjectID)
	}
	if err != nil {
		return err
	}
	if epoch > p.Epoch {
		return storeutil.StaleEpochErr(p, epoch)
	}
	var deleting bool
	var condemned *time.Time
	err = q.QueryRow(ctx, `SELECT deleting, condemned_at FROM packs WHERE project_id = $1 AND id = $2`+s.dl.ForUpdate,
		p.ProjectID, p.ID.Bytes()).Scan(&deleting, &condemned)
	switch {
	case noRows(err):
		_, err = q.Exec(ctx, `INSERT INTO packs (project_id, id, type, size, created_at) VALUES ($1, $2, $3, $4, $5)
			ON CONFLICT (project_id, id) DO NOTHING`, p.ProjectID, p.ID.Bytes(), int16(p.Type), p.Size, p.CreatedAt)
		if s.d.IsForeignKey(err) {
			return storeutil.NotFound("project %q", p.ProjectID)
		}
		return err
	case err != nil:
		return err
	case deleting:
		return storeutil.DeletingErr(p)
	case condemned != nil:
		_, err = q.Exec(ctx, `UPDATE packs SET condemned_at = NULL WHERE project_id = $1 AND id = $2`, p.ProjectID, p.ID.Bytes())
		return err
	}
	return nil
}

// PackEpoch returns the project's pack epoch.
func (s *Store) PackEpoch(ctx context.Context, projectID string) (int64, error) {
	if !storeutil.Storable(projectID) {
		return 0, storeutil.NotFound("project %q", projectID)
	}
	var epoch int64
	err := s.d.Reader().QueryRow(ctx, `SELECT pack_epoch FROM projects WHERE id = $1`, projectID).Scan(&epoch)
	if noRows(err) {
		return 0, storeutil.NotFound("project %q", projectID)
	}
	if err != nil {
		return 0, fmt.Errorf("pack epoch of %s: %w", projectID, err)
	}
	return epoch, nil
}

func scanPack(r Row) (metastore.Pack, error) {
	var p metastore.Pack
	var pid []byte
	var typ int16
	var condemned *time.Time
	if err := r.Scan(&p.ProjectID, &pid, &typ, &p.Size, &p.CreatedAt, &condemned, &p.Deleting); err != nil {
		return p, err
	}
	p.Type, p.CondemnedAt = metastore.BlobType(typ), deref(condemned)
	var err error
	p.ID, err = storeutil.ParseID(pid, "pack id")
	return p, err
}

// GetPacks returns the project's packs among ids.
func (s *Store) GetPacks(ctx context.Context, projectID string, ids []id.ID) (map[id.ID]metastore.Pack, error) {
	if !storeutil.Storable(projectID) {
		return nil, storeutil.NotFound("project %q", projectID)
	}
	ids = storeutil.Dedup(ids)
	out := make(map[id.ID]metastore.Pack, len(ids))
	err := s.d.Read(ctx, func(q Querier) error {
		if err := needProject(ctx, q, projectID); err != nil || len(ids) == 0 {
			return err
		}
		return s.d.In([]any{projectID}, storeutil.IDBytes(ids), func(in string, args []any) error {
			return q.Query(ctx, func(r Row) error {
				p, err := scanPack(r)
				if err != nil {
					return err
				}
				out[p.ID] = p
				return nil
			}, `SELECT project_id, id, type, size, created_at, condemned_at, deleting
				FROM packs WHERE project_id = $1 AND id `+in, args...)
		})
	})
	if err != nil {
		return nil, fmt.Errorf("get packs of %s: %w", projectID, err)
	}
	return out, nil
}

// ListPacks lists the project's packs in id order; opts.After is a hex id.
func (s *Store) ListPacks(ctx context.Context, projectID string, opts metastore.ListOptions) ([]metastore.Pack, error) {
	limit, err := storeutil.Limit(opts)
	if err != nil {
		return nil, err
	}
	after, err := storeutil.PacksAfter(opts)
	if err != nil {
		return nil, err
	}
	if !storeutil.Storable(projectID) {
		return nil, storeutil.NotFound("project %q", projectID)
	}
	out, err := listOf(ctx, s, projectID, scanPack, `SELECT project_id, id, type, size, created_at, condemned_at, deleting
		FROM packs WHERE project_id = $1 AND id > $2 ORDER BY id LIMIT $3`, projectID, after, limit)
	if err != nil {
		return nil, fmt.Errorf("list packs of %s: %w", projectID, err)
	}
	return out, nil
}

// updatePacks runs `UPDATE packs SET set WHERE ... AND cond` on the
// project's packs of ids in a garbage collection transaction, and returns
// how many rows it changed. $1 is the project id; set may use $2, ... (setArgs).
func (s *Store) updatePacks(ctx context.Context, projectID string, ids []id.ID, set string, setArgs []any, cond string) (int, error) {
	var n int64
	err := s.gcTx(ctx, projectID, func(q Querier) error {
		return s.d.In(append([]any{projectID}, setArgs...), storeutil.IDBytes(storeutil.SortIDs(ids)), func(in string, args []any) error {
			k, err := q.Exec(ctx, `UPDATE packs SET `+set+` WHERE project_id = $1 AND id `+in+` AND `+cond, args...)
			n += k
			return err
		})
	})
	return int(n), err
}

// CondemnPacks marks live packs condemned at time at.
func (s *Store) CondemnPacks(ctx context.Context, projectID string, ids []id.ID, at time.Time) (int, error) {
	at, err := storeutil.Time(at)
	if err != nil {
		return 0, err
	}
	n, err := s.updatePacks(ctx, projectID, ids, `condemned_at = $2`, []any{at}, `condemned_at IS NULL AND NOT deleting`)
	if err != nil {
		return 0, fmt.Errorf("condemn packs of %s: %w", projectID, err)
	}
	return n, nil
}

// UncondemnPacks makes condemned packs live again.
func (s *Store) UncondemnPacks(ctx context.Context, projectID string, ids []id.ID) (int, error) {
	n, err := s.updatePacks(ctx, projectID, ids, `condemned_at = NULL`, nil, `condemned_at IS NOT NULL AND NOT deleting`)
	if err != nil {
		return 0, fmt.Errorf("un-condemn packs of %s: %w", projectID, err)
	}
	return n, nil
}

// MoveBlobs records pack p and points at it the blobs of blobs indexed in a
// pack of from or in a condemned pack.
func (s *Store) MoveBlobs(ctx context.Context, p metastore.Pack, blobs []metastore.BlobLocation, from []id.ID) (int, error) {
	p, blobs, err := storeutil.CheckPack(p, blobs)
	if err != nil {
		return 0, err
	}
	var moved int64
	err = s.gcTx(ctx, p.ProjectID, func(q Querier) error {
		if err := s.claimPack(ctx, q, p); err != nil {
			return err
		}
		if len(blobs) == 0 {
			return nil
		}
		var err error
		moved, err = s.d.MoveBlobs(ctx, q, p, blobs, storeutil.SortIDs(from))
		return err
	})
	if err != nil {
		return 0, fmt.Errorf("move blobs to pack %s of %s: %w", p.ID.Short(), p.ProjectID, err)
	}
	return int(moved), nil
}

// DeletePacks makes the given packs that are still condemned at exactly
// their CondemnedAt deleting and drops their blobs from the index; it returns
// the given ids that are deleting afterwards.
func (s *Store) DeletePacks(ctx context.Context, projectID string, packs []metastore.Pack) ([]id.ID, error) {
	var ids, stampIDs []id.ID
	var stamps []time.Time
	for _, p := range packs {
		ids = append(ids, p.ID)
		if !p.CondemnedAt.IsZero() {
			at, err := storeutil.Time(p.CondemnedAt)
			if err != nil {
				return nil, err
			}
			stampIDs, stamps = append(stampIDs, p.ID), append(stamps, at)
		}
	}
	var out []id.ID
	err := s.gcTx(ctx, projectID, func(q Querier) error {
		if len(stampIDs) > 0 {
			if err := s.d.MarkDeleting(ctx, q, projectID, stampIDs, stamps); err != nil {
				return err
			}
		}
		return s.d.In([]any{projectID}, storeutil.IDBytes(storeutil.SortIDs(ids)), func(in string, args []any) error {
			if _, err := q.Exec(ctx, `DELETE FROM blobs WHERE project_id = $1 AND pack_id IN
				(SELECT id FROM packs WHERE project_id = $1 AND deleting AND id `+in+`)`, args...); err != nil {
				return err
			}
			return q.Query(ctx, func(r Row) error {
				x, err := scanID(r, "pack id")
				out = append(out, x)
				return err
			}, `SELECT id FROM packs WHERE project_id = $1 AND deleting AND id `+in+` ORDER BY id`, args...)
		})
	})
	if err != nil {
		return nil, fmt.Errorf("delete packs of %s: %w", projectID, err)
	}
	return out, nil
}

// DropPacks forgets deleting packs and advances the pack epoch.
func (s *Store) DropPacks(ctx context.Context, projectID string, ids []id.ID) error {
	err := s.gcTx(ctx, projectID, func(q Querier) error {
		var dropped int64
		err := s.d.In([]any{projectID}, storeutil.IDBytes(storeutil.SortIDs(ids)), func(in string, args []any) error {
			n, err := q.Exec(ctx, `DELETE FROM packs WHERE project_id = $1 AND deleting AND id `+in, args...)
			dropped += n
			return err
		})
		if err != nil || dropped == 0 {
			return err
		}
		_, err = q.Exec(ctx, `UPDATE projects SET pack_epoch = pack_epoch + 1 WHERE id = $1`, projectID)
		return err
	})
	if err != nil {
		return fmt.Errorf("drop packs of %s: %w", projectID, err)
	}
	return nil
}

// ---- retention and pins ----

// GetRetention returns the project's retention or the default.
func (s *Store) GetRetention(ctx context.Context, projectID string) (metastore.Retention, error) {
	if !storeutil.Storable(projectID) {
		return metastore.Retention{}, storeutil.NotFound("project %q", projectID)
	}
	r := metastore.DefaultRetention()
	err := s.d.Read(ctx, func(q Querier) error {
		var last int
		var within int64
		err := q.QueryRow(ctx, `SELECT keep_last, keep_within_us FROM retention WHERE project_id = $1`, projectID).Scan(&last, &within)
		if noRows(err) {
			return needProject(ctx, q, projectID)
		}
		if err != nil {
			return err
		}
		r = metastore.Retention{KeepLast: last, KeepWithin: time.Duration(within) * time.Microsecond}
		return nil
	})
	if err != nil {
		return metastore.Retention{}, fmt.Errorf("retention of %s: %w", projectID, err)
	}
	return r, nil
}

// SetRetention stores the project's retention.
func (s *Store) SetRetention(ctx context.Context, projectID string, r metastore.Retention) error {
	if err := storeutil.CheckRetention(r); err != nil {
		return err
	}
	if !storeutil.Storable(projectID) {
		return storeutil.NotFound("project %q", projectID)
	}
	_, err := s.d.Writer().Exec(ctx, `INSERT INTO retention (project_id, keep_last, keep_within_us, updated_at) VALUES ($1, $2, $3, $4)
		ON CONFLICT (project_id) DO UPDATE SET keep_last = excluded.keep_last, keep_within_us = excluded.keep_within_us,
			updated_at = excluded.updated_at`,
		projectID, r.KeepLast, r.KeepWithin.Microseconds(), storeutil.Now())
	if s.d.IsForeignKey(err) {
		return storeutil.NotFound("project %q", projectID)
	}
	if err != nil {
		return fmt.Errorf("set retention of %s: %w", projectID, err)
	}
	return nil
}

// SetPinned pins or unpins a version.
func (s *Store) SetPinned(ctx context.Context, projectID string, number int64, pinned bool) error {
	if !storeutil.Storable(projectID) {
		return storeutil.NotFound("project %q", projectID)
	}
	n, err := s.d.Writer().Exec(ctx, `UPDATE versions SET pinned = $3 WHERE project_id = $1 AND number = $2`, projectID, number, pinned)
	if err != nil {
		return fmt.Errorf("pin version %d of %s: %w", number, projectID, err)
	}
	if n == 0 {
		return s.noVersion(ctx, projectID, number)
	}
	return nil
}

// DeleteVersions deletes the listed versions but the head and pinned ones.
func (s *Store) DeleteVersions(ctx context.Context, projectID string, numbers []int64) ([]int64, error) {
	if !storeutil.Storable(projectID) {
		return nil, storeutil.NotFound("project %q", projectID)
	}
	numbers = storeutil.SortNumbers(numbers)
	var out []int64
	err := s.d.Write(ctx, func(q Querier) error {
		if err := needProject(ctx, q, projectID); err != nil || len(numbers) == 0 {
			return err
		}
		return s.d.In([]any{projectID}, numbers, func(in string, args []any) error {
			return q.Query(ctx, func(r Row) error {
				var n int64
				err := r.Scan(&n)
				out = append(out, n)
				return err
			}, `DELETE FROM versions WHERE project_id = $1 AND NOT pinned
				AND number <> (SELECT head FROM projects WHERE id = $1) AND number `+in+` RETURNING number`, args...)
		})
	})
	if err != nil {
		return nil, fmt.Errorf("delete versions of %s: %w", projectID, err)
	}
	slices.Sort(out)
	return out, nil
}

// ---- project deletion ----

// DeleteProject deletes the project and, by cascade, all its rows. It takes
// the project's lock so that no upload or commit is half way through.
func (s *Store) DeleteProject(ctx context.Context, projectID string) error {
	err := s.gcTx(ctx, projectID, func(q Querier) error {
		n, err := q.Exec(ctx, `DELETE FROM projects WHERE id = $1`, projectID)
		if err != nil || n == 0 {
			return err
		}
		_, err = q.Exec(ctx, `INSERT INTO deleted_projects (id, deleted_at) VALUES ($1, $2)
			ON CONFLICT (id) DO UPDATE SET deleted_at = excluded.deleted_at`, projectID, storeutil.Now())
		return err
	})
	if err != nil {
		return fmt.Errorf("delete project %s: %w", projectID, err)
	}
	return nil
}

// ClaimOrphans records packs without a row as deleting.
func (s *Store) ClaimOrphans(ctx context.Context, projectID string, packs []metastore.Pack) ([]id.ID, error) {
	var claimed []id.ID
	err := s.gcTx(ctx, projectID, func(q Querier) error {
		claimed = claimed[:0]
		for _, p := range packs {
			n, err := q.Exec(ctx, `INSERT INTO packs (project_id, id, type, size, created_at, deleting) VALUES ($1, $2, $3, $4, $5, true)
				ON CONFLICT (project_id, id) DO NOTHING`, projectID, p.ID.Bytes(), int16(p.Type), p.Size, p.CreatedAt.UTC())
			if err != nil {
				return err
			}
			if n == 1 {
				claimed = append(claimed, p.ID)
			}
		}
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("claim orphans of %s: %w", projectID, err)
	}
	return claimed, nil
}

// DeletedProjects lists recently deleted projects, oldest first.
func (s *Store) DeletedProjects(ctx context.Context) ([]metastore.DeletedProject, error) {
	var out []metastore.DeletedProject
	err := s.d.Reader().Query(ctx, func(r Row) error {
		var d metastore.DeletedProject
		if err := r.Scan(&d.ID, &d.DeletedAt); err != nil {
			return err
		}
		out = append(out, d)
		return nil
	}, `SELECT id, deleted_at FROM deleted_projects ORDER BY deleted_at, id LIMIT 100000`)
	if err != nil {
		return nil, fmt.Errorf("deleted projects: %w", err)
	}
	return out, nil
}

// ForgetDeletedProject drops a project from the deleted list.
func (s *Store) ForgetDeletedProject(ctx context.Context, projectID string) error {
	if _, err := s.d.Writer().Exec(ctx, `DELETE FROM deleted_projects WHERE id = $1`, projectID); err != nil {
		return fmt.Errorf("forget deleted project %s: %w", projectID, err)
	}
	return nil
}
